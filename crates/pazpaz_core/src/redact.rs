//! The text rules of the extension's server-log filter, as pure functions.
//!
//! Two kinds of rule, both failing closed:
//!
//! - **By value** ([`Secrets`]): the backend knows every key string that was
//!   set in it (the settings' check hooks see each value), so any text that
//!   contains one of them, or a 20-character prefix of one, is scrubbed —
//!   whoever wrote the text (auto_explain, an input error, a plan, another
//!   extension's message).
//! - **By shape**: what value-scrubbing cannot see — the statement that sets
//!   a key is logged before the key is known, row values and bind parameters
//!   that hold plaintext. These rules are deliberately broad: a statement
//!   that so much as names `pazpaz` or `set_config`, or uses a Unicode
//!   escape, counts as setting a key.
//!
//! Every function returns `None` when the text needs no change.

use zeroize::Zeroizing;

use crate::error::Error;

pub const KEY_MARK: &[u8] = b"[key redacted by pazpaz_crypto]";
pub const STATEMENT_MARK: &[u8] = b"[statement redacted by pazpaz_crypto: it sets a key]";
pub const FIELD_MARK: &[u8] = b"[redacted by pazpaz_crypto: names a key setting]";
pub const PARAMS_MARK: &[u8] = b"[parameters redacted by pazpaz_crypto]";
pub const VALUE_MARK: &[u8] = b"[value redacted by pazpaz_crypto]";
pub const LITERAL_MARK: &[u8] = b"'[redacted]'";
pub const ROW_MARK: &[u8] = b"Failing row contains (values hidden by pazpaz_crypto).";
pub const PARTITION_ROW_MARK: &[u8] = b"Partition key of the failing row contains (values hidden by pazpaz_crypto).";
pub const KEY_VALUES_MARK: &[u8] = b"Key values redacted by pazpaz_crypto.";
pub const NESTED_MARK: &[u8] = b"[nested statement redacted by pazpaz_crypto]";
pub const CLIENT_ONLY_MARK: &[u8] = b"[message redacted by pazpaz_crypto; the client received it unredacted]";
pub const COPY_DATA_MARK: &[u8] = b": [data redacted by pazpaz_crypto]";

/// A secret fragment this long is enough to be scrubbed wherever it appears
/// (a log line cut short by a length limit still shows a key's prefix).
pub const PREFIX_LEN: usize = 20;
/// How many secret spellings a backend remembers (about six per key); the
/// oldest are forgotten first, so a backend keeps those of its last ~170
/// keys — a long-lived pooled backend that served many tenants included.
pub const MAX_SECRETS: usize = 1024;
/// Of a value handed to [`Secrets::remember`], only the first this many
/// bytes are looked at (the key settings refuse longer values anyway), so
/// that remembering one costs a bounded amount of memory whatever its size.
pub const MAX_REMEMBERED: usize = crate::keyring::MAX_SETTING_BYTES;
/// The most bytes of spellings remembered in all (each byte of a spelling
/// costs a digest of 8 bytes and its entry in the index); beyond it the
/// oldest are forgotten first, as beyond [`MAX_SECRETS`].
pub const MAX_SECRET_BYTES: usize = 1024 * 1024;

/// One remembered spelling: no bytes of it, only the keyed digests of its
/// windows.
struct Item {
    /// The digest of the whole spelling (to remember it once).
    id: u64,
    /// Its length in bytes.
    len: usize,
    /// The distinct digests of its [`PREFIX_LEN`]-byte windows.
    windows: Vec<u64>,
}

#[cfg(test)]
impl Item {
    fn len(&self) -> usize {
        self.len
    }
}

/// The index's hasher: its keys are keyed SipHash digests already.
#[derive(Default)]
struct Digest(u64);

impl std::hash::Hasher for Digest {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

type Index = std::collections::HashMap<u64, u32, std::hash::BuildHasherDefault<Digest>>;

/// What key strings this backend holds or held look like, for scrubbing them
/// from log messages — without a copy of them: for each spelling of a key
/// only a keyed digest (SipHash-2-4, under a random key drawn when the first
/// secret is remembered) of each of its [`PREFIX_LEN`]-byte windows, so that
/// the process's memory (read through `/proc/<pid>/mem`, a core file) shows
/// no key. A text is scrubbed wherever a window of it has the digest of a
/// remembered window; a run of such windows is one match.
///
/// Only windows that lie within one run of base64 characters are kept (the
/// runs of a value, a keyring's keys and their other spellings): a window
/// that crossed from known text (`{"current": "k1", "keys": {"k1": "`) into
/// a key would let whoever reads the digests (and the digest key, in the same
/// memory) guess the key a character at a time. Every window kept holds at
/// least 80 bits of a key (20 hex digits) when its spelling is a key's.
pub struct Secrets {
    key: Option<siphasher::sip::SipHasher24>,
    items: std::collections::VecDeque<Item>,
    /// Bytes of the spellings in `items`.
    bytes: usize,
    /// Every window digest of `items`, with the number of items that have it.
    index: Index,
}

impl Default for Secrets {
    fn default() -> Secrets {
        Secrets::new()
    }
}

fn is_b64(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'=' | b'-' | b'_')
}

/// An empty wiped-on-drop buffer with room for `n` bytes, or
/// [`Error::OutOfMemory`] (sizes here come from input: a failed allocation
/// must be an error the caller reports, not an abort of the process).
fn buffer(n: usize) -> Result<Zeroizing<Vec<u8>>, Error> {
    let mut v = Vec::new();
    v.try_reserve_exact(n).map_err(|_| Error::OutOfMemory)?;
    Ok(Zeroizing::new(v))
}

fn copy(bytes: impl ExactSizeIterator<Item = u8>) -> Result<Zeroizing<Vec<u8>>, Error> {
    let mut out = buffer(bytes.len())?;
    out.extend(bytes);
    Ok(out)
}

fn hex(bytes: &[u8], upper: bool) -> Result<Zeroizing<Vec<u8>>, Error> {
    let digits: &[u8; 16] = if upper { b"0123456789ABCDEF" } else { b"0123456789abcdef" };
    let mut out = buffer(bytes.len() * 2)?;
    for b in bytes {
        out.push(digits[usize::from(b >> 4)]);
        out.push(digits[usize::from(b & 15)]);
    }
    Ok(out)
}

/// `bytes` with each `from` byte replaced by its `to`.
fn swap(bytes: &[u8], pairs: [(u8, u8); 2]) -> Result<Zeroizing<Vec<u8>>, Error> {
    copy(bytes.iter().map(|&b| pairs.iter().find(|p| p.0 == b).map_or(b, |p| p.1)))
}

impl Secrets {
    pub const fn new() -> Secrets {
        Secrets {
            key: None,
            items: std::collections::VecDeque::new(),
            bytes: 0,
            index: Index::with_hasher(std::hash::BuildHasherDefault::new()),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    pub fn clear(&mut self) {
        self.items.clear();
        self.bytes = 0;
        self.index.clear();
    }

    /// The digest key, drawn on first use.
    fn key(&mut self) -> Result<siphasher::sip::SipHasher24, Error> {
        if let Some(k) = self.key {
            return Ok(k);
        }
        let mut seed = Zeroizing::new([0u8; 16]);
        getrandom::fill(&mut seed[..]).map_err(|_| Error::Rng)?;
        let k = siphasher::sip::SipHasher24::new_with_key(&seed);
        self.key = Some(k);
        Ok(k)
    }

    fn forget_oldest(&mut self) {
        let Some(old) = self.items.pop_front() else { return };
        self.bytes -= old.len;
        for w in &old.windows {
            if let Some(n) = self.index.get_mut(w) {
                *n -= 1;
                if *n == 0 {
                    self.index.remove(w);
                }
            }
        }
    }

    /// Remembers one spelling: a run of base64 characters, or a spelling
    /// derived from one (hex of its bytes, the other alphabet).
    fn add(&mut self, s: Zeroizing<Vec<u8>>) -> Result<(), Error> {
        if s.len() < PREFIX_LEN {
            return Ok(());
        }
        let key = self.key()?;
        let id = key.hash(&s);
        if self.items.iter().any(|i| i.id == id && i.len == s.len()) {
            return Ok(());
        }
        let mut windows = Vec::new();
        windows.try_reserve_exact(s.len() - PREFIX_LEN + 1).map_err(|_| Error::OutOfMemory)?;
        windows.extend(s.windows(PREFIX_LEN).map(|w| key.hash(w)));
        windows.sort_unstable();
        windows.dedup();
        windows.shrink_to_fit();
        while !self.items.is_empty() && (self.items.len() == MAX_SECRETS || self.bytes + s.len() > MAX_SECRET_BYTES) {
            self.forget_oldest();
        }
        self.items.try_reserve(1).map_err(|_| Error::OutOfMemory)?;
        self.index.try_reserve(windows.len()).map_err(|_| Error::OutOfMemory)?;
        for &w in &windows {
            *self.index.entry(w).or_insert(0) += 1;
        }
        self.bytes += s.len();
        self.items.push_back(Item { id, len: s.len(), windows });
        Ok(())
    }

    /// Remembers a value given to a key setting (valid or not): every run of
    /// base64 characters in it (the value itself, the keys of a keyring),
    /// and each key's other spellings (hex, unpadded, URL-safe base64). Only
    /// the first [`MAX_REMEMBERED`] bytes are looked at. On
    /// [`Error::OutOfMemory`] what was remembered before stays remembered.
    pub fn remember(&mut self, value: &[u8]) -> Result<(), Error> {
        let trimmed = value[..value.len().min(MAX_REMEMBERED)].trim_ascii();
        // A keyring may spell its keys with JSON escapes (`\/`, `\u0041`):
        // remember what they decode to as well. (The parse allocates
        // infallibly, but of at most MAX_REMEMBERED bytes of input.)
        if let Ok(mut parsed) = serde_json::from_slice::<serde_json::Value>(trimmed) {
            let mut result = Ok(());
            if let Some(map) = parsed.as_object() {
                for v in map.values().filter_map(|v| v.as_str()) {
                    result = result.and_then(|()| self.remember_plain(v.as_bytes()));
                }
            }
            crate::keyring::wipe_json(&mut parsed);
            result?;
        }
        self.remember_plain(trimmed)
    }

    /// Remembers a key given as its raw bytes (an unwrapped data key, a
    /// key-encryption key): its base64 and every other spelling.
    pub fn remember_raw_key(&mut self, raw: &[u8]) -> Result<(), Error> {
        use base64::Engine;
        let b64 = Zeroizing::new(base64::engine::general_purpose::STANDARD.encode(raw).into_bytes());
        self.remember_plain(&b64)
    }

    fn remember_plain(&mut self, trimmed: &[u8]) -> Result<(), Error> {
        for run in trimmed.split(|&b| !is_b64(b)) {
            self.add(copy(run.iter().copied())?)?;
            if run.len() < 40 {
                continue;
            }
            let mut unpadded = buffer(run.len())?;
            unpadded.extend(run.iter().copied().filter(|&b| b != b'='));
            // The two base64 alphabets differ in two characters.
            let std = swap(&unpadded, [(b'-', b'+'), (b'_', b'/')])?;
            let url = swap(&unpadded, [(b'+', b'-'), (b'/', b'_')])?;
            use base64::Engine;
            let mut raw = buffer(std.len() / 4 * 3 + 3)?;
            raw.resize(std.len() / 4 * 3 + 3, 0);
            let decoded = base64::engine::general_purpose::STANDARD_NO_PAD.decode_slice(&*std, &mut raw[..]);
            self.add(unpadded)?;
            self.add(std)?;
            self.add(url)?;
            if let Ok(n) = decoded {
                self.add(hex(&raw[..n], false)?)?;
                self.add(hex(&raw[..n], true)?)?;
            }
        }
        Ok(())
    }

    /// Whether the window of `text` at `at` is a remembered one.
    fn matches_at(&self, key: &siphasher::sip::SipHasher24, text: &[u8], at: usize) -> bool {
        let w = &text[at..at + PREFIX_LEN];
        // Only windows of base64 characters are remembered.
        w.iter().all(|&b| is_b64(b)) && self.index.contains_key(&key.hash(w))
    }

    /// The ranges of `text` covered by remembered windows, in order, merged.
    fn covered(&self, text: &[u8], stop_at_first: bool) -> Vec<(usize, usize)> {
        let mut runs: Vec<(usize, usize)> = Vec::new();
        let Some(key) = self.key.as_ref().filter(|_| !self.items.is_empty()) else { return runs };
        let mut at = 0;
        while at + PREFIX_LEN <= text.len() {
            // A byte that is not base64 ends every window that holds it.
            if let Some(p) = text[at..at + PREFIX_LEN].iter().rposition(|&b| !is_b64(b)) {
                at += p + 1;
                continue;
            }
            if self.matches_at(key, text, at) {
                match runs.last_mut() {
                    Some(last) if last.1 >= at => last.1 = at + PREFIX_LEN,
                    _ => runs.push((at, at + PREFIX_LEN)),
                }
                if stop_at_first {
                    break;
                }
            }
            at += 1;
        }
        runs
    }

    /// Does `text` contain a secret (or a [`PREFIX_LEN`]-byte part of one)?
    pub fn found_in(&self, text: &[u8]) -> bool {
        !self.covered(text, true).is_empty()
    }

    /// `text` with every secret, and every run covered by [`PREFIX_LEN`]-byte
    /// parts of one, replaced by [`KEY_MARK`].
    pub fn scrub(&self, text: &[u8]) -> Option<Vec<u8>> {
        let runs = self.covered(text, false);
        if runs.is_empty() {
            return None;
        }
        let mut out = Vec::new();
        let mut copied = 0;
        for (from, to) in runs {
            out.extend_from_slice(&text[copied..from]);
            out.extend_from_slice(KEY_MARK);
            copied = to;
        }
        out.extend_from_slice(&text[copied..]);
        Some(out)
    }
}

pub fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() || needle.len() > haystack.len() {
        return None;
    }
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn contains_ci(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w.eq_ignore_ascii_case(needle))
}

/// Does this text (a statement, or a field quoting one) possibly set a key?
/// Fails closed: a key setting's name (`pazpaz.encryption…`, `pazpaz.kek…`,
/// `pazpaz.index…`, with any quoting, spacing or comments around the dot), a
/// statement whose first word is `SET` or `RESET` in a text that names
/// `pazpaz` at all, any `set_config`, and any Unicode escape (which can
/// spell either) count, and so does a call of `wrap_encryption_key`,
/// `rewrap_encryption_key` or `set_keys` (their arguments are keys). The
/// bare word `pazpaz` (a schema or table of that name) does not.
///
/// The first word is looked for where PostgreSQL would see it: past
/// whitespace and comments (`--…` to the end of the line, `/*…*/` nested),
/// at the start of the text, after each `;`, and — for a LOG message that
/// quotes a statement (`statement: `, `execute <name>: `, `duration: … ms
/// statement: `, a pgaudit line; see [`quotes_statement`]) — where the quoted
/// statement starts.
pub fn names_key_setting(text: &[u8]) -> bool {
    if contains_ci(text, b"set_config")
        || contains_ci(text, b"wrap_encryption_key")
        || contains_ci(text, b"set_keys")
        || contains_ci(text, b"u&'")
        || contains_ci(text, b"u&\"")
    {
        return true;
    }
    // No lowercase copy of the text: a statement can be as large as a
    // query may be, and this runs on every one that is logged.
    if find_ci(text, b"pazpaz").is_none() {
        return false;
    }
    if starts_with_set(text) {
        return true;
    }
    let mut from = 0;
    while let Some(pos) = find_ci(&text[from..], b"pazpaz") {
        let after = skip_space(text, from + pos + 6, true);
        if text.get(after) == Some(&b'.') {
            let name = &text[skip_space(text, after + 1, true)..];
            let starts = |p: &[u8]| name.get(..p.len()).is_some_and(|n| n.eq_ignore_ascii_case(p));
            if [&b"encryption"[..], b"kek", b"index"].into_iter().any(starts) {
                return true;
            }
        }
        from += pos + 6;
    }
    false
}

/// The index of the first byte at or after `i` that is not whitespace or a
/// comment (nor a double quote, with `quotes`). An unterminated comment runs
/// to the end, as PostgreSQL's lexer would take it.
fn skip_space(text: &[u8], mut i: usize, quotes: bool) -> usize {
    loop {
        match text.get(i..).unwrap_or_default() {
            [b, ..] if b.is_ascii_whitespace() || (quotes && *b == b'"') => i += 1,
            [b'-', b'-', ..] => {
                i = text[i..].iter().position(|&b| b == b'\n' || b == b'\r').map_or(text.len(), |p| i + p + 1);
            }
            [b'/', b'*', ..] => {
                // Nested, as PostgreSQL's block comments are.
                let mut depth = 0usize;
                loop {
                    match text.get(i..).unwrap_or_default() {
                        [] => return text.len(),
                        [b'/', b'*', ..] => {
                            depth += 1;
                            i += 2;
                        }
                        [b'*', b'/', ..] => {
                            depth -= 1;
                            i += 2;
                            if depth == 0 {
                                break;
                            }
                        }
                        _ => i += 1,
                    }
                }
            }
            _ => return i,
        }
    }
}

/// Whether any statement in `text` may start with `SET` or `RESET` (see
/// [`names_key_setting`]). One pass: a `;` inside a comment skipped at a
/// statement's start does not start another statement.
fn starts_with_set(text: &[u8]) -> bool {
    let is_set = |at: usize| {
        let start = &text[skip_space(text, at, false)..];
        // An unterminated block comment (a syntax error, logged with the
        // statement): whatever it hides counts as a SET.
        if start.is_empty() && find(&text[at..], b"/*").is_some() {
            return true;
        }
        let word = &start[..start.iter().take_while(|b| b.is_ascii_alphabetic()).count()];
        word.eq_ignore_ascii_case(b"set") || word.eq_ignore_ascii_case(b"reset")
    };
    match quoted_statement_starts(text) {
        Some(starts) if !starts.iter().any(|&at| is_set(at)) => {}
        _ => return true,
    }
    let mut at = 0;
    loop {
        if is_set(at) {
            return true;
        }
        let scanned = skip_space(text, at, false);
        match text[scanned..].iter().position(|&b| b == b';') {
            Some(p) => at = scanned + p + 1,
            None => return false,
        }
    }
}

/// Where the statements a LOG message quotes may start: after `statement: `,
/// after any `: ` of an `execute`, `parse` or `bind` line (their statement
/// and portal names are printed as given and may hold `: ` themselves), each
/// optionally after `duration: … ms  `; a pgaudit line's statement field;
/// lines of a context or detail that quote one.
/// `None` (failing closed: count it as a SET) for more than 64 candidates.
fn quoted_statement_starts(text: &[u8]) -> Option<Vec<usize>> {
    const MAX: usize = 64;
    let mut starts = Vec::new();
    if let Some(rest) = text.strip_prefix(b"AUDIT: ") {
        let fields = csv_fields(rest);
        if let Some(&(a, _)) = fields.get(7) {
            let a = 7 + a;
            starts.push(if text.get(a) == Some(&b'"') { a + 1 } else { a });
        }
        // The command field of a SET or RESET statement.
        if let Some(&(a, _)) = fields.get(4) {
            starts.push(7 + a);
        }
        return Some(starts);
    }
    // Lines of a context or detail that quote a statement: SPI's `SQL
    // statement "…"`, a deadlock report's `Process 123: …`, the
    // postmaster's `Failed process was running: …`.
    let mut line = 0;
    loop {
        let l = &text[line..];
        let digits = l.strip_prefix(b"Process ").map(|r| r.iter().take_while(|b| b.is_ascii_digit()).count());
        let quoted = if l.starts_with(b"SQL statement \"") {
            Some(15)
        } else if let Some(n) = digits.filter(|&n| n > 0 && l[8 + n..].starts_with(b": ")) {
            Some(8 + n + 2)
        } else if l.starts_with(b"Failed process was running: ") {
            Some(28)
        } else {
            None
        };
        if let Some(q) = quoted {
            if starts.len() == MAX {
                return None;
            }
            starts.push(line + q);
        }
        match l.iter().position(|&b| b == b'\n') {
            Some(p) => line += p + 1,
            None => break,
        }
    }
    let mut base = 0;
    if let Some(rest) = text.strip_prefix(b"duration: ") {
        match find(rest, b"  ") {
            Some(p) => base = 10 + p + 2,
            None => return Some(starts),
        }
    }
    let m = &text[base..];
    if m.starts_with(b"statement: ") {
        starts.push(base + 11);
    } else if [&b"execute "[..], b"parse ", b"bind "].iter().any(|p| m.starts_with(p)) {
        let mut from = 0;
        while let Some(p) = find(&m[from..], b": ") {
            if starts.len() == MAX {
                return None;
            }
            starts.push(base + from + p + 2);
            from += p + 2;
        }
    }
    Some(starts)
}

/// `find`, ignoring ASCII case.
fn find_ci(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() || needle.len() > haystack.len() {
        return None;
    }
    haystack.windows(needle.len()).position(|w| w.eq_ignore_ascii_case(needle))
}

/// Could this statement run a prepared statement (`EXECUTE`, in any
/// spelling PostgreSQL accepts: quoted names, comments for spaces)?
pub fn may_execute(text: &[u8]) -> bool {
    contains_ci(text, b"execute")
}

/// Does a LOG message quote a statement (log_statement,
/// log_min_duration_statement, extended-protocol steps, auto_explain,
/// pgaudit)?
pub fn quotes_statement(message: &[u8]) -> bool {
    [&b"statement: "[..], b"execute ", b"duration: ", b"parse ", b"bind ", b"AUDIT: "]
        .iter()
        .any(|p| message.starts_with(p))
}

/// The replacement of a LOG message that quotes a key-setting statement. A
/// pgaudit line keeps its classification fields (up to the statement), so
/// the audit trail stays usable.
pub fn redact_statement_message(message: &[u8]) -> Vec<u8> {
    if let Some(rest) = message.strip_prefix(b"AUDIT: ") {
        let fields = csv_fields(rest);
        if fields.len() > 7 {
            let keep = fields[6].1;
            return [&message[..7 + keep], b",", STATEMENT_MARK].concat();
        }
    }
    let keep = match message.iter().position(|&b| b == b':') {
        Some(p) if quotes_statement(message) => &message[..=p],
        _ => &b""[..],
    };
    [keep, if keep.is_empty() { b"" } else { b" " }, STATEMENT_MARK].concat()
}

/// pgaudit's comma-separated fields: (start, end) of each, quotes honoured.
fn csv_fields(s: &[u8]) -> Vec<(usize, usize)> {
    let mut fields = Vec::new();
    let (mut i, mut start, mut quoted) = (0, 0, false);
    while i < s.len() {
        match s[i] {
            b'"' if quoted && s.get(i + 1) == Some(&b'"') => i += 1,
            b'"' => quoted = !quoted,
            b',' if !quoted => {
                fields.push((start, i));
                start = i + 1;
            }
            _ => {}
        }
        i += 1;
    }
    fields.push((start, s.len()));
    fields
}

/// pgaudit with `log_parameter = on` appends the bind parameters after the
/// statement field: keep the first eight fields, replace the rest.
pub fn redact_audit_parameters(message: &[u8]) -> Option<Vec<u8>> {
    let rest = message.strip_prefix(b"AUDIT: ")?;
    let fields = csv_fields(rest);
    let params = &rest[fields.get(8)?.0..];
    if params == b"<not logged>" || params == b"<none>" {
        return None;
    }
    Some([&message[..7 + fields[7].1], b",", PARAMS_MARK].concat())
}

/// Bind parameters in a detail or context (`parameters: $1 = '…'`, from
/// PostgreSQL 17 on `Parameters: $1 = '…'`, `unnamed portal with parameters:
/// …`, PL/pgSQL's `print_strict_params` `parameters: v = '…'`): everything
/// from the first one on is replaced, since a parameter value may itself span
/// lines.
pub fn redact_parameters(text: &[u8]) -> Option<Vec<u8>> {
    let pos = [find(text, b"parameters: "), find(text, b"Parameters: ")].into_iter().flatten().min()?;
    Some([&text[..pos + b"parameters: ".len()], PARAMS_MARK].concat())
}

/// A detail that shows row or key values (constraint violations, unique and
/// foreign keys, index builds): its replacement for the server log.
pub fn row_detail_mark(detail: &[u8]) -> Option<&'static [u8]> {
    if detail.starts_with(b"Failing row contains") {
        Some(ROW_MARK)
    } else if detail.starts_with(b"Partition key of the failing row contains") {
        Some(PARTITION_ROW_MARK)
    } else if detail.starts_with(b"Key (") {
        Some(KEY_VALUES_MARK)
    } else {
        None
    }
}

/// Input data quoted in an error context: COPY's `COPY t, line 1, column c:
/// "…"` / `COPY t, line 1: "…"` and the JSON parser's `JSON data, line 1: …`.
/// Everything from the quoted data on is removed (CSV data may span lines).
pub fn redact_input_context(context: &[u8]) -> Option<Vec<u8>> {
    let mut line_start = 0;
    for line in context.split(|&b| b == b'\n') {
        let cut = if line.starts_with(b"COPY ") {
            find(line, b": \"")
        } else if line.starts_with(b"JSON data, line ") {
            find(line, b": ")
        } else {
            None
        };
        if let Some(p) = cut {
            return Some([&context[..line_start + p], COPY_DATA_MARK].concat());
        }
        line_start += line.len() + 1;
    }
    None
}

/// Errors quote the offending input in double quotes (`invalid input
/// syntax for type integer: "…"`). The value itself may contain quotes, so
/// everything from the first quote to the last one goes (to the end, if
/// there is only one).
pub fn redact_quoted(message: &[u8]) -> Option<Vec<u8>> {
    let first = message.iter().position(|&b| b == b'"')?;
    let last = message.iter().rposition(|&b| b == b'"').filter(|&l| l > first);
    let end = last.map_or(message.len(), |l| l + 1);
    Some([&message[..first], b"\"", VALUE_MARK, b"\"", &message[end..]].concat())
}

/// In a session that holds keys, an error's message may carry a decrypted
/// value without quotes (`date field value out of range: 1987-13-45`,
/// `setseed parameter 42 is out of allowed range`): everything after the
/// first `": "` and every run of digits go.
pub fn redact_unquoted(message: &[u8]) -> Option<Vec<u8>> {
    let head = match find(message, b": ") {
        Some(p) => [&message[..p + 2], VALUE_MARK].concat(),
        None => message.to_vec(),
    };
    let mut out = Vec::with_capacity(head.len());
    let mut i = 0;
    while i < head.len() {
        if head[i].is_ascii_digit() {
            while i < head.len() && head[i].is_ascii_alphanumeric() {
                i += 1;
            }
            out.push(b'#');
        } else {
            out.push(head[i]);
            i += 1;
        }
    }
    (out != message).then_some(out)
}

/// A pgaudit line of a statement run inside a function or DO block (its
/// substatement number is not 1): the statement text goes, since dynamic SQL
/// built from decrypted values carries them.
pub fn redact_audit_nested(message: &[u8]) -> Option<Vec<u8>> {
    let rest = message.strip_prefix(b"AUDIT: ")?;
    let fields = csv_fields(rest);
    let (start, end) = *fields.get(7)?;
    (&rest[fields[2].0..fields[2].1] != b"1")
        .then(|| [&message[..7 + start], NESTED_MARK, &message[7 + end..]].concat())
}

/// An auto_explain plan in a session that holds keys: the first line and
/// the plan's shape stay; everything after the first `:` of every other
/// line (`Output:`, `Filter:`, `Query Text:`, JSON/YAML values) goes.
pub fn redact_plan_values(message: &[u8]) -> Option<Vec<u8>> {
    let mut lines = message.split(|&b| b == b'\n');
    let mut out = lines.next()?.to_vec();
    for line in lines {
        out.push(b'\n');
        match line.iter().position(|&b| b == b':') {
            Some(p) => {
                out.extend_from_slice(&line[..=p]);
                out.extend_from_slice(b" ");
                out.extend_from_slice(VALUE_MARK);
            }
            None => out.extend_from_slice(line),
        }
    }
    (out != message).then_some(out)
}

/// auto_explain's `duration: … plan:` messages.
pub fn is_plan(message: &[u8]) -> bool {
    message.starts_with(b"duration: ") && find(message, b"plan:").is_some()
}

/// Every single-quoted SQL literal in a plan (constants, bound parameters
/// folded into a custom plan, `Query Parameters`), replaced by
/// [`LITERAL_MARK`]. An unterminated literal runs to the end.
pub fn redact_literals(text: &[u8]) -> Option<Vec<u8>> {
    let first = text.iter().position(|&b| b == b'\'')?;
    let mut out = text[..first].to_vec();
    let mut i = first;
    while i < text.len() {
        if text[i] != b'\'' {
            out.push(text[i]);
            i += 1;
            continue;
        }
        // Skip to the closing quote ('' is an escaped quote).
        let mut j = i + 1;
        loop {
            match text.get(j) {
                None => break,
                Some(b'\'') if text.get(j + 1) == Some(&b'\'') => j += 2,
                Some(b'\'') => break,
                Some(_) => j += 1,
            }
        }
        out.extend_from_slice(LITERAL_MARK);
        i = j + 1;
    }
    Some(out)
}

/// The extension's PL/pgSQL routines whose RAISEs quote only names of
/// tables and columns that exist, counts and key versions (never a
/// caller's string as given, never a value): `sql/rotation.sql`,
/// `sql/search.sql`.
const OWN_PROCEDURES: [&[u8]; 5] = [
    b"rotate_column(regclass,name,integer,text)",
    b"search_index_add(text,regclass,name,text,integer,integer,text,name,text)",
    b"search_index_drop(text,regclass,name,name)",
    b"search_index_register(regclass,text[])",
    b"search_index_unregister(regclass,name)",
];

/// Whether a message's context says it was raised by a RAISE of one of
/// `OWN_PROCEDURES` (its first line; the name is schema-qualified when the
/// extension's schema is not in the search_path).
pub fn raised_by_own_procedure(context: &[u8]) -> bool {
    let Some(rest) = context.strip_prefix(b"PL/pgSQL function ") else { return false };
    let line = rest.split(|&b| b == b'\n').next().unwrap_or_default();
    OWN_PROCEDURES.iter().any(|p| {
        let Some(at) = line.windows(p.len()).position(|w| w == *p) else { return false };
        let (schema, after) = (&line[..at], &line[at + p.len()..]);
        let qualified = schema.is_empty() || (schema.ends_with(b".") && !schema.contains(&b'('));
        qualified && after.starts_with(b" line ") && after.ends_with(b" at RAISE")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "bMz1Y4AHud4S70SS7t8UyrpTbNpwEC5kGFbDbyOoiTE="; // test vector key

    fn s(v: Option<Vec<u8>>) -> String {
        String::from_utf8(v.expect("changed")).unwrap()
    }

    #[test]
    fn scrubs_keys_and_their_prefixes_and_spellings() {
        let mut secrets = Secrets::new();
        secrets.remember(format!(" {{\"v1\": \"{KEY}\"}} ").as_bytes()).unwrap();
        let plan = format!("Output: set_config('pazpaz.encryption_key'::text, '{KEY}'::text, false)");
        assert_eq!(
            s(secrets.scrub(plan.as_bytes())),
            "Output: set_config('pazpaz.encryption_key'::text, '[key redacted by pazpaz_crypto]'::text, false)"
        );
        let cut = format!("$1 = '{}...'", &KEY[..25]);
        assert_eq!(s(secrets.scrub(cut.as_bytes())), "$1 = '[key redacted by pazpaz_crypto]...'");
        use base64::Engine;
        let raw = base64::engine::general_purpose::STANDARD.decode(KEY).unwrap();
        let hex: String = raw.iter().map(|b| format!("{b:02x}")).collect();
        assert!(secrets.scrub(format!("\\x{hex}").as_bytes()).is_some());
        assert!(secrets.scrub(format!("\\x{}", hex.to_uppercase()).as_bytes()).is_some());
        let url = KEY.trim_end_matches('=').replace('+', "-").replace('/', "_");
        assert!(secrets.scrub(url.as_bytes()).is_some());
        assert_eq!(secrets.scrub(b"nothing secret here"), None);
        // Keys written with JSON escapes are remembered as they decode.
        let mut escaped = Secrets::new();
        escaped
            .remember(format!("{{\"v1\": \"{}\"}}", KEY.replace('/', "\\/").replacen('b', "\\u0062", 1)).as_bytes())
            .unwrap();
        assert!(escaped.found_in(format!("decode('{KEY}', 'base64')").as_bytes()));
        // A value that is not valid still counts (it was refused, but logged).
        let mut bad = Secrets::new();
        bad.remember(b"not-a-key-but-something-set-as-one").unwrap();
        assert!(bad.scrub(b"x not-a-key-but-something-set-as-one y").is_some());
    }

    #[test]
    fn a_big_keyring_and_many_key_changes_are_all_remembered() {
        use base64::Engine;
        let keys: Vec<String> = (0u8..150).map(|i| base64::engine::general_purpose::STANDARD.encode([i; 32])).collect();
        let mut secrets = Secrets::new();
        for chunk in keys.chunks(17) {
            let ring: Vec<String> = chunk.iter().enumerate().map(|(i, k)| format!("\"v{i}\": \"{k}\"")).collect();
            secrets.remember(format!("{{{}}}", ring.join(", ")).as_bytes()).unwrap();
        }
        for k in &keys {
            let line = format!("ERROR: relation \"{k}\" does not exist");
            assert!(secrets.found_in(line.as_bytes()));
            assert!(!String::from_utf8(secrets.scrub(line.as_bytes()).unwrap()).unwrap().contains(&k[..PREFIX_LEN]));
        }
        // One pass over a long text, whatever the number of secrets.
        let long = "x".repeat(5_000_000);
        let t = std::time::Instant::now();
        assert_eq!(secrets.scrub(long.as_bytes()), None);
        assert!(t.elapsed().as_secs() < 5, "{:?}", t.elapsed());
    }

    #[test]
    fn raw_keys_are_remembered_in_every_spelling() {
        let raw = [0xfbu8; 32];
        let mut secrets = Secrets::new();
        secrets.remember_raw_key(&raw).unwrap();
        use base64::Engine;
        let b64 = base64::engine::general_purpose::STANDARD.encode(raw);
        let url = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw);
        let lower: String = raw.iter().map(|b| format!("{b:02x}")).collect();
        for s in [b64.clone(), url, lower.clone(), lower.to_uppercase(), b64[..PREFIX_LEN].to_string()] {
            assert!(secrets.found_in(format!("x {s} y").as_bytes()), "{s}");
        }
    }

    /// Every byte the structure keeps (digests, ids, the index).
    fn kept_bytes(secrets: &Secrets) -> Vec<u8> {
        let mut out = Vec::new();
        for i in &secrets.items {
            out.extend(i.id.to_ne_bytes());
            i.windows.iter().for_each(|w| out.extend(w.to_ne_bytes()));
        }
        secrets.index.keys().for_each(|w| out.extend(w.to_ne_bytes()));
        out
    }

    #[test]
    fn no_spelling_of_a_key_is_kept_only_digests_of_its_windows() {
        use base64::Engine;
        let raw = [0x5au8, 0x17, 0xc3, 0x88, 0x01, 0xfe, 0x42, 0x9d].repeat(4);
        let ring = format!(
            "{{\"current\": \"k1\", \"keys\": {{\"k1\": \"{KEY}\", \"k2\": \"{}\"}}}}",
            base64::engine::general_purpose::STANDARD.encode(&raw)
        );
        let mut secrets = Secrets::new();
        secrets.remember(ring.as_bytes()).unwrap();
        secrets.remember_raw_key(&raw).unwrap();
        let kept = kept_bytes(&secrets);
        assert!(!kept.is_empty());
        let b64 = base64::engine::general_purpose::STANDARD.encode(&raw);
        let hex: String = raw.iter().map(|b| format!("{b:02x}")).collect();
        for spelling in [KEY.as_bytes(), b64.as_bytes(), hex.as_bytes(), hex.to_uppercase().as_bytes(), &raw[..]] {
            for part in spelling.windows(6) {
                assert!(!kept.windows(6).any(|w| w == part), "a part of a key is kept as it is");
            }
        }
        // Still scrubbed: the key, a prefix, any other 20-byte part of it,
        // every spelling; text around it is kept.
        let tail = &KEY[KEY.len() - 22..];
        assert_eq!(s(secrets.scrub(format!("a {KEY} b").as_bytes())), "a [key redacted by pazpaz_crypto] b");
        assert_eq!(s(secrets.scrub(format!("a {tail} b").as_bytes())), "a [key redacted by pazpaz_crypto] b");
        assert!(secrets.found_in(format!("({})", &KEY[7..27]).as_bytes()));
        assert!(secrets.found_in(hex.to_uppercase().as_bytes()));
        // Known text next to a key in the value is not remembered (a digest
        // of it would give the key away a character at a time)...
        assert!(!secrets.found_in(b"{\"current\": \"k1\", \"keys\": {\"k1\": \""));
        // ...and after clear() nothing is.
        secrets.clear();
        assert!(secrets.is_empty() && kept_bytes(&secrets).is_empty());
        assert_eq!(secrets.scrub(KEY.as_bytes()), None);
    }

    #[test]
    fn forgets_the_oldest_beyond_the_limit() {
        let mut secrets = Secrets::new();
        for i in 0..MAX_SECRETS + 5 {
            secrets.remember(format!("secret-number-{i:04}-padding-padding").as_bytes()).unwrap();
        }
        assert!(secrets.items.len() <= MAX_SECRETS);
        assert!(secrets.scrub(format!("secret-number-{:04}-padding-padding", MAX_SECRETS + 4).as_bytes()).is_some());
    }

    #[test]
    fn remembering_a_huge_value_costs_a_bounded_amount() {
        // One base64 run of 8 MiB: before the bound, each spelling of it
        // (the run, unpadded, both alphabets, the decoded bytes, two hex
        // forms) was a full-size copy.
        let huge = vec![b'A'; 8 * 1024 * 1024];
        let mut secrets = Secrets::new();
        secrets.remember(&huge).unwrap();
        assert!(secrets.bytes <= MAX_SECRET_BYTES);
        assert!(secrets.items.iter().all(|i| i.len() <= 2 * MAX_REMEMBERED), "a copy beyond the bound");
        assert_eq!(secrets.bytes, secrets.items.iter().map(|i| i.len()).sum::<usize>());
        // Its start is still scrubbed (by prefix, wherever it appears).
        assert!(secrets.found_in(&huge[..100]));
    }

    #[test]
    fn the_total_is_bounded_and_the_newest_kept() {
        let mut secrets = Secrets::new();
        for i in 0..200 {
            let mut v = format!("{i:04}").into_bytes();
            v.resize(MAX_REMEMBERED, b'x');
            secrets.remember(&v).unwrap();
        }
        assert!(secrets.bytes <= MAX_SECRET_BYTES);
        // Probes of exactly PREFIX_LEN bytes: any 20-byte part of a secret
        // is scrubbed, and a run of x's is part of the newest ones too.
        assert!(secrets.found_in(b"0199xxxxxxxxxxxxxxxx"));
        assert!(!secrets.found_in(b"0000xxxxxxxxxxxxxxxx"));
    }

    #[test]
    fn shape_rules_fail_closed() {
        for stmt in [
            "SET pazpaz.encryption_key = 'k'",
            "select SET_CONFIG($1, $2, false)",
            "SELECT set_config(U&'\\0070azpaz.encryption_key', 'k', false)",
            "SET U&\"\\0070azpaz\".encryption_key = 'k'",
            "SELECT set_config('paz' || 'paz.encryption_key', 'k', false)",
            "SET \"pazpaz\" . \"encryption_key\" = 'k'",
            "set pazpaz.encrpytion_key = 'k'",
            "ALTER ROLE app SET pazpaz.encryption_kye = 'k'",
            "SELECT wrap_encryption_key('k')",
            "select public.REWRAP_ENCRYPTION_KEY('pzw1:k1:…', 'k2')",
        ] {
            assert!(names_key_setting(stmt.as_bytes()), "{stmt}");
        }
        for stmt in
            ["SELECT decrypt_field(c) FROM t", "SELECT * FROM pazpaz.clients", "INSERT INTO pazpaz_audit VALUES (1)"]
        {
            assert!(!names_key_setting(stmt.as_bytes()), "{stmt}");
        }
    }

    #[test]
    fn log_messages_comments_and_set_keys() {
        let key = KEY;
        for stmt in [
            format!("/* tenant 42 */ SET pazpaz --\n.index_key = '{key}';"),
            format!("SET pazpaz/**/.encryption_key = '{key}';"),
            "SELECT pazpaz /* a */ . /* b /* nested */ */ kek_file".to_string(),
            "SELECT \"pazpaz\" -- x\n . -- y\n \"index_key\"".to_string(),
            format!("statement: /* tenant 42 */ SET pazpaz --\n.index_key = '{key}';"),
            format!("statement: SET pazpaz/**/.encryption_key = '{key}';"),
            format!("statement: SET pazpaz.encrpytion_key = '{key}'"),
            "statement:  -- c\n  reset pazpaz.x".to_string(),
            format!("execute <unnamed>: SET pazpaz.encrpytion_key = '{key}'"),
            "execute S_1/C_1: /* c */ SET pazpaz.encrpytion_key = $1".to_string(),
            "execute a: b: SET pazpaz.encrpytion_key = $1".to_string(),
            format!("duration: 0.042 ms  statement: /**/SET pazpaz.encrpytion_key = '{key}'"),
            format!("duration: 0.042 ms  execute S_1: SET pazpaz.encrpytion_key = '{key}'"),
            format!("duration: 0.042 ms  parse <unnamed>: SET pazpaz.encrpytion_key = '{key}'"),
            format!("bind <unnamed>: SET pazpaz.encrpytion_key = '{key}'"),
            format!("AUDIT: SESSION,1,1,MISC,SET,,,\"/* c */ SET pazpaz.encrpytion_key = '{key}'\",<not logged>"),
            format!("SELECT 1; /* ; */ SET pazpaz.encrpytion_key = '{key}'"),
            format!("/* unterminated SET pazpaz.encrpytion_key = '{key}'"),
            format!("statement: /* /* nested */ still a comment */ SET pazpaz.encrpytion_key = '{key}'"),
            format!("select public.set_keys('{key}', '{key}')"),
            "SELECT SET_KEYS($1)".to_string(),
            "PL/pgSQL function f() line 3 at EXECUTE\nSQL statement \"/* c */ SET pazpaz.encrpytion_key = 'k'\""
                .to_string(),
            "Process 12: SELECT 1\nProcess 34: -- x\nSET pazpaz.encrpytion_key = 'k'".to_string(),
            "Failed process was running: SET pazpaz.encrpytion_key = 'k'".to_string(),
        ] {
            assert!(names_key_setting(stmt.as_bytes()), "{stmt}");
        }
        // Many `: ` in an execute line: fail closed.
        let many = format!("execute {}x: SELECT 1 FROM pazpaz.t", "a: ".repeat(70));
        assert!(names_key_setting(many.as_bytes()));
        for stmt in [
            "statement: SELECT * FROM pazpaz.clients",
            "/* SET */ SELECT * FROM pazpaz.clients",
            "statement: UPDATE pazpaz.clients SET name = 'x'",
            "duration: 0.1 ms  statement: SELECT 1 FROM pazpaz.t",
            "execute S_1: SELECT 1 FROM pazpaz.t -- set",
            "SET search_path = public",
            "SQL statement \"SELECT 1 FROM pazpaz.t\"\nProcess 12: SELECT 2 FROM pazpaz.t",
        ] {
            assert!(!names_key_setting(stmt.as_bytes()), "{stmt}");
        }
    }

    #[test]
    fn statement_messages() {
        assert_eq!(
            String::from_utf8(redact_statement_message(b"statement: SET pazpaz.encryption_key = 'k'")).unwrap(),
            "statement: [statement redacted by pazpaz_crypto: it sets a key]"
        );
        let audit = b"AUDIT: SESSION,1,1,MISC,SET,,,\"SET pazpaz.encryption_key = 'k'\",<not logged>";
        assert_eq!(
            String::from_utf8(redact_statement_message(audit)).unwrap(),
            "AUDIT: SESSION,1,1,MISC,SET,,,[statement redacted by pazpaz_crypto: it sets a key]"
        );
    }

    #[test]
    fn audit_parameters() {
        let line =
            b"AUDIT: SESSION,2,1,WRITE,INSERT,TABLE,public.t,\"INSERT INTO t VALUES ($1, $2)\",\"PHI, with comma\",x";
        assert_eq!(
            s(redact_audit_parameters(line)),
            "AUDIT: SESSION,2,1,WRITE,INSERT,TABLE,public.t,\"INSERT INTO t VALUES ($1, $2)\",[parameters redacted by pazpaz_crypto]"
        );
        assert_eq!(redact_audit_parameters(b"AUDIT: SESSION,2,1,READ,SELECT,,,SELECT 1,<not logged>"), None);
    }

    #[test]
    fn parameters_rows_and_inputs() {
        assert_eq!(
            s(redact_parameters(b"parameters: $1 = 'PHI\nmore'")),
            "parameters: [parameters redacted by pazpaz_crypto]"
        );
        assert_eq!(
            s(redact_parameters(b"Parameters: $1 = 'PHI', $2 = 'parameters: x'")),
            "Parameters: [parameters redacted by pazpaz_crypto]"
        );
        assert_eq!(
            s(redact_parameters(b"SQL function \"f\"\nunnamed portal with parameters: $1 = 'x'")),
            "SQL function \"f\"\nunnamed portal with parameters: [parameters redacted by pazpaz_crypto]"
        );
        assert_eq!(row_detail_mark(b"Key (p)=(PHI) already exists."), Some(KEY_VALUES_MARK));
        assert_eq!(row_detail_mark(b"Failing row contains (1, PHI)."), Some(ROW_MARK));
        assert_eq!(row_detail_mark(b"Some other detail"), None);
        assert_eq!(
            s(redact_input_context(b"COPY cp, line 1: \"PHI\tx\"")),
            "COPY cp, line 1: [data redacted by pazpaz_crypto]"
        );
        assert_eq!(
            s(redact_input_context(b"COPY cp, line 2, column c: \"multi\nline\"\nSQL statement")),
            "COPY cp, line 2, column c: [data redacted by pazpaz_crypto]"
        );
        assert_eq!(
            s(redact_input_context(b"JSON data, line 1: {\"PHI")),
            "JSON data, line 1: [data redacted by pazpaz_crypto]"
        );
        assert_eq!(redact_input_context(b"COPY cp, line 1, column c: null input"), None);
        assert_eq!(
            s(redact_quoted(b"invalid input syntax for type integer: \"{\"diagnosis\": \"HIV\", \"x\": 1}\"")),
            "invalid input syntax for type integer: \"[value redacted by pazpaz_crypto]\""
        );
        assert_eq!(
            s(redact_quoted(b"value \"PHI\" is out of range for type integer")),
            "value \"[value redacted by pazpaz_crypto]\" is out of range for type integer"
        );
        assert_eq!(s(redact_quoted(b"bad: \"unterminated PHI")), "bad: \"[value redacted by pazpaz_crypto]\"");
        assert_eq!(redact_quoted(b"no quotes"), None);
    }

    #[test]
    fn unquoted_nested_and_plan_values() {
        assert_eq!(
            s(redact_unquoted(b"date field value out of range: 1987-13-45")),
            "date field value out of range: [value redacted by pazpaz_crypto]"
        );
        assert_eq!(
            s(redact_unquoted(b"setseed parameter 42 is out of allowed range")),
            "setseed parameter # is out of allowed range"
        );
        assert_eq!(redact_unquoted(b"division by zero"), None);
        let nested = b"AUDIT: SESSION,3,2,WRITE,INSERT,TABLE,public.c,\"insert into c values ('PHI')\",<not logged>";
        assert_eq!(
            s(redact_audit_nested(nested)),
            "AUDIT: SESSION,3,2,WRITE,INSERT,TABLE,public.c,[nested statement redacted by pazpaz_crypto],<not logged>"
        );
        assert_eq!(redact_audit_nested(b"AUDIT: SESSION,3,1,READ,SELECT,,,select 1,<not logged>"), None);
        let plan = b"duration: 0.1 ms  plan:\nQuery Text: SELECT 1 AS \"PHI\"\nResult  (cost=0.00..0.01 rows=1 width=4)\n  Output: 987654321";
        assert_eq!(
            s(redact_plan_values(plan)),
            "duration: 0.1 ms  plan:\nQuery Text: [value redacted by pazpaz_crypto]\nResult  (cost=0.00..0.01 rows=1 width=4)\n  Output: [value redacted by pazpaz_crypto]"
        );
    }

    #[test]
    fn plan_literals() {
        let plan = b"duration: 0.1 ms  plan:\nQuery Text: INSERT INTO t VALUES ($1)\nInsert on t\n  Output: 'It''s PHI'::encrypted_text, 'x'";
        assert!(is_plan(plan));
        assert_eq!(
            s(redact_literals(plan)),
            "duration: 0.1 ms  plan:\nQuery Text: INSERT INTO t VALUES ($1)\nInsert on t\n  Output: '[redacted]'::encrypted_text, '[redacted]'"
        );
        assert_eq!(s(redact_literals(b"a 'open")), "a '[redacted]'");
        assert!(!is_plan(b"duration: 0.1 ms  statement: SELECT 1"));
    }
}

#[cfg(test)]
mod own_procedure_tests {
    use super::raised_by_own_procedure;

    #[test]
    fn only_the_first_line_and_only_raise() {
        let add = b"PL/pgSQL function search_index_add(text,regclass,name,text,integer,integer,text,name,text) line 7 at RAISE";
        assert!(raised_by_own_procedure(add));
        assert!(raised_by_own_procedure(
            b"PL/pgSQL function pazpaz.search_index_drop(text,regclass,name,name) line 3 at RAISE\nSQL statement \"CALL\""
        ));
        assert!(raised_by_own_procedure(
            b"PL/pgSQL function rotate_column(regclass,name,integer,text) line 9 at RAISE"
        ));
        // Another function's RAISE inside ours, or ours at another statement.
        assert!(!raised_by_own_procedure(
            b"PL/pgSQL function my_trigger() line 2 at RAISE\nPL/pgSQL function search_index_add(text,regclass,name,text,integer,integer,text,name,text) line 7 at RAISE"
        ));
        assert!(!raised_by_own_procedure(
            b"PL/pgSQL function search_index_add(text,regclass,name,text,integer,integer,text,name,text) line 7 at EXECUTE"
        ));
        assert!(!raised_by_own_procedure(
            b"PL/pgSQL function f(x search_index_drop(text,regclass,name,name) line 1 at RAISE"
        ));
    }
}
