//! Search on encrypted values: blind indexes (exact match) and keyed trigram
//! tokens (substring match), under keys derived from the session's index key
//! (`pazpaz.index_key`), which is separate from the data keys.
//!
//! Formats (pinned by `tests/blind_index.rs`, whose vectors come from an
//! independent Python implementation):
//!
//! - **Derivation.** For a context string `ctx` (by default the column's
//!   `schema.table.column`), `key(kind, ctx) = HKDF-SHA-256(ikm = index key,
//!   salt = none (32 zero bytes), info = domain(kind) ‖ 0x00 ‖ ctx, L = 32)`
//!   with the domain `"pazpaz_crypto blind index v1"` for exact match and
//!   `"pazpaz_crypto match tokens v1"` for tokens, so the two kinds never
//!   share a key, and neither do two contexts.
//! - **Blind index** of a value: `HMAC-SHA-256(key(exact, ctx),
//!   normalize(value))`, its first `bits` bits (1 ≤ bits ≤ 256): ⌈bits/8⌉
//!   bytes, the unused low bits of the last byte zero.
//! - **Tokens** of a value: for each distinct trigram (three consecutive
//!   characters, not bytes) of `normalize(value)`, the first 32 bits of
//!   `HMAC-SHA-256(key(tokens, ctx), trigram as UTF-8)` as a big-endian
//!   number, keeping its top `bits` bits (8 ≤ bits ≤ 32, default 20: a
//!   space of 2^20 positions); sorted and de-duplicated, as `int4` values
//!   (bit patterns of 32 bits wrap to negative). A value of fewer than three
//!   characters has no tokens; a *query* of fewer than three characters is an
//!   error, because it would match every row (or none).
//! - **Normalization** `none`: the value as given. `lower`: Unicode NFKC,
//!   then the lowercase mapping of each character (no context rules), NFKC
//!   again, leading and trailing whitespace removed and every run of
//!   whitespace replaced by one space. NFKC rather than NFC because search
//!   should treat compatibility forms (full-width letters, ligatures,
//!   non-breaking and other spaces, superscripts) as what they stand for,
//!   as a user typing the query does. The mapping is idempotent.
//!
//! Key material: the index key's 32 bytes are kept (in wiped memory) to
//! derive per-context keys; each derived key is kept as its HMAC state (the
//! hashes of the padded key), wiped on drop.

use std::borrow::Cow;

use sha2::{Digest, Sha256};
use unicode_normalization::UnicodeNormalization;
use zeroize::Zeroize;
use zeroize::Zeroizing;

use crate::data_key::{decode_key_base64, KEY_LEN};
use crate::error::{Error, Result};
use crate::mac::{hkdf_sha256, Wiped, WipedMac};

/// HKDF info prefix of exact-match keys.
pub const EXACT_DOMAIN: &[u8] = b"pazpaz_crypto blind index v1";
/// HKDF info prefix of token keys.
pub const TOKEN_DOMAIN: &[u8] = b"pazpaz_crypto match tokens v1";
/// Characters per token; also the shortest query.
pub const NGRAM: usize = 3;
pub const DEFAULT_INDEX_BITS: u32 = 256;
pub const DEFAULT_TOKEN_BITS: u32 = 20;
pub const MIN_TOKEN_BITS: u32 = 8;
pub const MAX_TOKEN_BITS: u32 = 32;

/// Which of the two derived keys of a context.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    Exact,
    Tokens,
}

impl Kind {
    fn domain(self) -> &'static [u8] {
        match self {
            Kind::Exact => EXACT_DOMAIN,
            Kind::Tokens => TOKEN_DOMAIN,
        }
    }
}

/// How a value is normalized before it is indexed (and a query before it is
/// looked up).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Normalize {
    /// The value as given (byte for byte).
    None,
    /// Case- and space-insensitive: NFKC, lowercase, trimmed, whitespace
    /// runs collapsed.
    Lower,
}

impl Normalize {
    pub fn parse(name: &str) -> Result<Normalize> {
        match name {
            "none" => Ok(Normalize::None),
            "lower" => Ok(Normalize::Lower),
            _ => Err(Error::UnknownNormalize),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Normalize::None => "none",
            Normalize::Lower => "lower",
        }
    }

    /// The normalized form of `value`; borrowed when nothing changes.
    pub fn apply(self, value: &str) -> Cow<'_, str> {
        match self {
            Normalize::None => Cow::Borrowed(value),
            Normalize::Lower => lower(value),
        }
    }
}

fn lower(value: &str) -> Cow<'_, str> {
    if value.is_ascii() {
        // NFKC is the identity on ASCII.
        let unchanged = !value.bytes().any(|b| b.is_ascii_uppercase()) && collapse_is_identity(value.chars());
        if unchanged {
            return Cow::Borrowed(value);
        }
    }
    let mut out = String::new();
    each_lower_char(value, |c| out.push(c));
    Cow::Owned(out)
}

/// Feeds the characters of the `lower` form of `value` to `f`, one by one,
/// without building the intermediate strings (NFKC, lowercase mapping, NFKC,
/// whitespace collapsed).
fn each_lower_char(value: &str, f: impl FnMut(char)) {
    if value.is_ascii() {
        Collapse::new(value.chars().map(|c| c.to_ascii_lowercase())).for_each(f);
    } else {
        Collapse::new(value.nfkc().flat_map(char::to_lowercase).nfkc()).for_each(f);
    }
}

fn collapse_is_identity(mut chars: impl Iterator<Item = char>) -> bool {
    let mut prev_space = true; // a leading space is not allowed either
    let mut last = None;
    for c in chars.by_ref() {
        if c.is_whitespace() {
            if c != ' ' || prev_space {
                return false;
            }
            prev_space = true;
        } else {
            prev_space = false;
        }
        last = Some(c);
    }
    last != Some(' ')
}

/// Trims whitespace and replaces each inner run of it with one space, as
/// the characters stream by.
struct Collapse<I> {
    inner: I,
    started: bool,
    pending_space: bool,
    next: Option<char>,
}

impl<I: Iterator<Item = char>> Collapse<I> {
    fn new(inner: I) -> Self {
        Collapse { inner, started: false, pending_space: false, next: None }
    }
}

impl<I: Iterator<Item = char>> Iterator for Collapse<I> {
    type Item = char;
    fn next(&mut self) -> Option<char> {
        if let Some(c) = self.next.take() {
            return Some(c);
        }
        loop {
            let c = self.inner.next()?;
            if c.is_whitespace() {
                self.pending_space = self.started;
                continue;
            }
            self.started = true;
            if self.pending_space {
                self.pending_space = false;
                self.next = Some(c);
                return Some(' ');
            }
            return Some(c);
        }
    }
}

/// Feeds the characters of `normalize(value)` to `f`.
fn each_char(normalize: Normalize, value: &str, mut f: impl FnMut(char)) {
    match normalize {
        Normalize::None => value.chars().for_each(f),
        Normalize::Lower => each_lower_char(value, &mut f),
    }
}

/// Checks the `bits` of a blind index: 1 to 256.
pub fn check_index_bits(bits: i32) -> Result<u32> {
    u32::try_from(bits).ok().filter(|b| (1..=256).contains(b)).ok_or(Error::IndexBits)
}

/// Checks the `bits` of a token (the size of the token space): 8 to 32.
pub fn check_token_bits(bits: i32) -> Result<u32> {
    u32::try_from(bits).ok().filter(|b| (MIN_TOKEN_BITS..=MAX_TOKEN_BITS).contains(b)).ok_or(Error::TokenBits)
}

/// Bytes of a blind index of `bits` bits.
pub fn index_len(bits: u32) -> usize {
    bits.div_ceil(8) as usize
}

/// The session's index key, parsed from `pazpaz.index_key`.
pub struct IndexKey {
    ikm: Zeroizing<[u8; KEY_LEN]>,
    fingerprint: String,
}

impl IndexKey {
    /// Standard base64 of 32 bytes (as data keys). Errors never contain the
    /// input.
    pub fn from_base64(text: &str) -> Result<IndexKey> {
        let ikm = decode_key_base64(text)?;
        let fingerprint = fingerprint(&ikm[..]);
        Ok(IndexKey { ikm, fingerprint })
    }

    /// From a setting's value, raw or wrapped (`pzw1:…`) under `policy`, as
    /// the data keys are (`wrapped_key::parse_key_bytes`).
    pub fn from_setting(text: &str, policy: &crate::wrapped_key::KeyPolicy) -> Result<IndexKey> {
        let (ikm, _) = crate::wrapped_key::parse_key_bytes(text, policy)?;
        let fingerprint = fingerprint(&ikm[..]);
        Ok(IndexKey { ikm, fingerprint })
    }

    /// First 32 bits of a domain-separated SHA-256 of the key, as 8 hex
    /// digits: names the key an index was built with (stored with the
    /// index, so that during a rotation each index finds its key), far too
    /// little to help an attacker.
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// The key of `kind` for `context` (an HKDF; cache the result).
    pub fn derive(&self, kind: Kind, context: &[u8]) -> DerivedKey {
        let okm = hkdf_sha256(&self.ikm[..], &[kind.domain(), b"\0", context]);
        DerivedKey { mac: WipedMac::new(&okm[..]) }
    }
}

fn fingerprint(bytes: &[u8]) -> String {
    let mut h = Sha256::new();
    h.update(b"pazpaz_crypto index key fingerprint v1\0");
    h.update(bytes);
    let d = h.finalize();
    d[..4].iter().map(|b| format!("{b:02x}")).collect()
}

/// The largest value (in bytes, before normalization) that match tokens or
/// the `lower` normalization take, and the most characters a normalized
/// value may have for tokens: 1 MiB. Longer values are refused (54000)
/// rather than allowed to make a backend allocate and hash without bound.
/// (A blind index with normalization `none` takes any size: its HMAC
/// streams over the value in place.)
pub const MAX_SEARCH_INPUT: usize = 1 << 20;

/// `tick` is called every this many trigrams, characters or 64-byte blocks
/// (PostgreSQL passes a check for interrupts: a long value stays
/// cancellable).
pub const TICK_EVERY: usize = 4096;

/// A per-context key, ready to MAC values.
pub struct DerivedKey {
    mac: WipedMac,
}

impl DerivedKey {
    /// The blind index of an already normalized value into `out`, which is
    /// `index_len(bits)` bytes long.
    pub fn blind_index_into(&mut self, normalized: &[u8], bits: u32, out: &mut [u8]) {
        self.blind_index_ticking(normalized, bits, out, &mut || ());
    }

    /// As `blind_index_into`, calling `tick` every `TICK_EVERY` blocks.
    pub fn blind_index_ticking(&mut self, normalized: &[u8], bits: u32, out: &mut [u8], tick: &mut dyn FnMut()) {
        let mut m = self.mac.stream();
        for chunk in normalized.chunks(TICK_EVERY * 64) {
            m.update(chunk);
            tick();
        }
        truncate_into(&self.mac.finish(m), bits, out);
    }

    /// The blind index of `value` normalized by `normalize`, into `out`
    /// (`index_len(bits)` bytes). The normalized form is hashed as it
    /// streams (never built as a string). `lower` refuses values longer
    /// than `MAX_SEARCH_INPUT` bytes (`SearchInputTooLarge`); `none` takes
    /// any size.
    pub fn blind_index_of(
        &mut self,
        value: &str,
        normalize: Normalize,
        bits: u32,
        out: &mut [u8],
        tick: &mut dyn FnMut(),
    ) -> Result<()> {
        match normalize {
            Normalize::None => self.blind_index_ticking(value.as_bytes(), bits, out, tick),
            Normalize::Lower => {
                if value.len() > MAX_SEARCH_INPUT {
                    return Err(Error::SearchInputTooLarge { max: MAX_SEARCH_INPUT });
                }
                let mut m = self.mac.stream();
                let mut n = 0usize;
                each_lower_char(value, |c| {
                    let mut b = [0u8; 4];
                    m.update(c.encode_utf8(&mut b).as_bytes());
                    n += 1;
                    if n.is_multiple_of(TICK_EVERY) {
                        tick();
                    }
                });
                truncate_into(&self.mac.finish(m), bits, out);
            }
        }
        Ok(())
    }

    /// The blind index of an already normalized value.
    pub fn blind_index(&mut self, normalized: &[u8], bits: u32) -> Vec<u8> {
        let mut out = vec![0u8; index_len(bits)];
        self.blind_index_into(normalized, bits, &mut out);
        out
    }

    /// The tokens of `value` normalized by `normalize`: sorted, distinct;
    /// empty for fewer than three characters. Trigrams are hashed as the
    /// normalized characters stream by (a window of three, never a list of
    /// them); only the tokens are kept, in memory reserved fallibly. A value
    /// longer than `MAX_SEARCH_INPUT` bytes, or whose normalized form has
    /// more characters than that, is refused (`SearchInputTooLarge`); memory
    /// that cannot be had is `SearchOutOfMemory`, never an abort.
    pub fn tokens_of(
        &mut self,
        value: &str,
        normalize: Normalize,
        bits: u32,
        tick: &mut dyn FnMut(),
    ) -> Result<Vec<i32>> {
        self.tokens_counted(value, normalize, bits, tick).map(|(t, _)| t)
    }

    /// The tokens of a query: as `tokens_of`, but a query of fewer than three
    /// characters (after normalization) is an error rather than the empty
    /// set (which every row's tokens contain).
    pub fn query_tokens_of(
        &mut self,
        query: &str,
        normalize: Normalize,
        bits: u32,
        tick: &mut dyn FnMut(),
    ) -> Result<Vec<i32>> {
        let (tokens, chars) = self.tokens_counted(query, normalize, bits, tick)?;
        if chars < NGRAM {
            return Err(Error::QueryTooShort);
        }
        Ok(tokens)
    }

    /// The tokens of an already normalized value (`tokens_of` with `none`).
    pub fn tokens(&mut self, normalized: &str, bits: u32) -> Result<Vec<i32>> {
        self.tokens_of(normalized, Normalize::None, bits, &mut || ())
    }

    /// The tokens of an already normalized query (`query_tokens_of` with `none`).
    pub fn query_tokens(&mut self, normalized: &str, bits: u32) -> Result<Vec<i32>> {
        self.query_tokens_of(normalized, Normalize::None, bits, &mut || ())
    }

    /// The tokens and the number of normalized characters.
    fn tokens_counted(
        &mut self,
        value: &str,
        normalize: Normalize,
        bits: u32,
        tick: &mut dyn FnMut(),
    ) -> Result<(Vec<i32>, usize)> {
        debug_assert!((MIN_TOKEN_BITS..=MAX_TOKEN_BITS).contains(&bits));
        if value.len() > MAX_SEARCH_INPUT {
            return Err(Error::SearchInputTooLarge { max: MAX_SEARCH_INPUT });
        }
        let mut out: Vec<i32> = Vec::new();
        let mut failed: Option<Error> = None;
        let mut window = ['\0'; NGRAM];
        let mut chars = 0usize;
        let mac = &mut self.mac;
        each_char(normalize, value, |c| {
            if failed.is_some() {
                return;
            }
            chars += 1;
            if chars > MAX_SEARCH_INPUT {
                failed = Some(Error::SearchInputTooLarge { max: MAX_SEARCH_INPUT });
                return;
            }
            window.rotate_left(1);
            window[NGRAM - 1] = c;
            if chars < NGRAM {
                return;
            }
            let mut gram = Wiped([0u8; 4 * NGRAM]);
            let mut len = 0;
            for w in window {
                len += w.encode_utf8(&mut gram[len..]).len();
            }
            let tag = Wiped(mac.mac(&gram[..len]));
            let top = u32::from_be_bytes([tag[0], tag[1], tag[2], tag[3]]);
            if out.len() == out.capacity() && out.try_reserve(out.len().max(16)).is_err() {
                failed = Some(Error::SearchOutOfMemory);
                return;
            }
            // bits ≤ 32, so the shift is at most 24 and never overflows.
            out.push((top >> (32 - bits)) as i32);
            if chars.is_multiple_of(TICK_EVERY) {
                tick();
            }
        });
        window.zeroize();
        if let Some(e) = failed {
            return Err(e);
        }
        out.sort_unstable();
        out.dedup();
        Ok((out, chars))
    }
}

/// The first `bits` bits of a tag into `out` (`index_len(bits)` bytes), the
/// unused low bits of the last byte zero.
fn truncate_into(tag: &[u8; 32], bits: u32, out: &mut [u8]) {
    debug_assert!((1..=256).contains(&bits) && out.len() == index_len(bits));
    out.copy_from_slice(&tag[..out.len()]);
    if !bits.is_multiple_of(8) {
        if let Some(last) = out.last_mut() {
            *last &= 0xffu8 << (8 - bits % 8);
        }
    }
}

/// Every window of three consecutive characters, as string slices (tests).
#[cfg(test)]
fn trigrams(s: &str) -> Vec<&str> {
    let starts: Vec<usize> = s.char_indices().map(|(i, _)| i).chain(std::iter::once(s.len())).collect();
    if starts.len() <= NGRAM {
        return Vec::new();
    }
    (0..starts.len() - NGRAM).map(|i| &s[starts[i]..starts[i + NGRAM]]).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

    #[test]
    fn hkdf_rfc5869_case_3() {
        // RFC 5869 A.3: IKM = 0x0b * 22, no salt, no info; first 32 bytes.
        let okm = hkdf_sha256(&[0x0b; 22], &[]);
        assert_eq!(hex::encode(&okm[..]), "8da4e775a563c18f715f802a063c5a31b8a11f5c5ee1879ec3454e5f3c738d2d");
    }

    #[test]
    fn truncation_masks_the_last_byte() {
        let k = IndexKey::from_base64(KEY).unwrap();
        let mut d = k.derive(Kind::Exact, b"ctx");
        let full = d.blind_index(b"value", 256);
        for bits in 1..=256u32 {
            let t = d.blind_index(b"value", bits);
            assert_eq!(t.len(), index_len(bits));
            let whole = (bits / 8) as usize;
            assert_eq!(&t[..whole], &full[..whole]);
            if bits % 8 != 0 {
                let mask = 0xffu8 << (8 - bits % 8);
                assert_eq!(t[whole], full[whole] & mask);
            }
        }
    }

    #[test]
    fn bits_ranges() {
        assert_eq!(check_index_bits(0), Err(Error::IndexBits));
        assert_eq!(check_index_bits(257), Err(Error::IndexBits));
        assert_eq!(check_index_bits(-8), Err(Error::IndexBits));
        assert_eq!(check_index_bits(1), Ok(1));
        assert_eq!(check_index_bits(256), Ok(256));
        assert_eq!(check_token_bits(7), Err(Error::TokenBits));
        assert_eq!(check_token_bits(33), Err(Error::TokenBits));
        assert_eq!(check_token_bits(32), Ok(32));
    }

    #[test]
    fn normalization() {
        let l = |s: &str| Normalize::Lower.apply(s).into_owned();
        assert_eq!(l("  Jane   DOE\t"), "jane doe");
        assert_eq!(l("jane doe"), "jane doe");
        assert!(matches!(Normalize::Lower.apply("jane doe"), Cow::Borrowed(_)));
        assert_eq!(l("Ｊａｎｅ\u{00a0}Ｄｏｅ"), "jane doe");
        assert_eq!(l("ÉCOLE\u{2003}ﬁne"), "école fine");
        assert_eq!(l("ΣΊΣΥΦΟΣ"), "σίσυφοσ");
        assert_eq!(l("\u{0b}x\u{0b}"), "x");
        assert_eq!(Normalize::None.apply(" A "), " A ");
        assert_eq!(Normalize::parse("upper"), Err(Error::UnknownNormalize));
    }

    #[test]
    fn trigram_windows_are_characters() {
        assert_eq!(trigrams("ab"), Vec::<&str>::new());
        assert_eq!(trigrams("abc"), vec!["abc"]);
        assert_eq!(trigrams("jöhn"), vec!["jöh", "öhn"]);
    }

    #[test]
    fn short_queries_are_refused_short_values_have_no_tokens() {
        let k = IndexKey::from_base64(KEY).unwrap();
        let mut d = k.derive(Kind::Tokens, b"ctx");
        assert_eq!(d.tokens("ab", 20).unwrap(), Vec::<i32>::new());
        assert_eq!(d.query_tokens("ab", 20), Err(Error::QueryTooShort));
        assert_eq!(d.query_tokens("öäü", 20).unwrap().len(), 1);
    }

    #[test]
    fn kinds_and_contexts_get_different_keys() {
        let k = IndexKey::from_base64(KEY).unwrap();
        let a = k.derive(Kind::Exact, b"public.clients.email").blind_index(b"x", 256);
        let b = k.derive(Kind::Exact, b"public.clients.email2").blind_index(b"x", 256);
        let c = k.derive(Kind::Tokens, b"public.clients.email").blind_index(b"x", 256);
        assert_ne!(a, b);
        assert_ne!(a, c);
    }

    #[test]
    fn streamed_hmac_equals_one_shot() {
        let k = IndexKey::from_base64(KEY).unwrap();
        let d = k.derive(Kind::Exact, b"ctx");
        let data: Vec<u8> = (0..1000u32).map(|i| (i * 7 % 251) as u8).collect();
        for len in [0, 1, 55, 56, 63, 64, 65, 119, 120, 128, 1000] {
            let one = d.mac.mac(&data[..len]);
            for step in [1, 3, 64, 100] {
                let mut m = d.mac.stream();
                for c in data[..len].chunks(step) {
                    m.update(c);
                }
                assert_eq!(d.mac.finish(m), one, "len {len} step {step}");
            }
        }
    }

    #[test]
    fn streamed_normalization_equals_the_string_form() {
        let k = IndexKey::from_base64(KEY).unwrap();
        let mut e = k.derive(Kind::Exact, b"ctx");
        let mut t = k.derive(Kind::Tokens, b"ctx");
        for v in [
            "  Jane   DOE\t",
            "jane doe",
            "ÉCOLE\u{2003}ﬁne ",
            "Ｊａｎｅ\u{00a0}Ｄｏｅ",
            "",
            " ",
            "ab",
            "a\u{301}\u{301}bc",
        ] {
            for n in [Normalize::None, Normalize::Lower] {
                let s = n.apply(v).into_owned();
                let mut out = [0u8; 32];
                e.blind_index_of(v, n, 256, &mut out, &mut || ()).unwrap();
                assert_eq!(out.to_vec(), e.blind_index(s.as_bytes(), 256), "{v:?}");
                let mut grams: Vec<i32> = trigrams(&s)
                    .iter()
                    .map(|g| {
                        let tag = t.mac.mac(g.as_bytes());
                        (u32::from_be_bytes([tag[0], tag[1], tag[2], tag[3]]) >> 12) as i32
                    })
                    .collect();
                grams.sort_unstable();
                grams.dedup();
                assert_eq!(t.tokens_of(v, n, 20, &mut || ()).unwrap(), grams, "{v:?}");
            }
        }
    }

    #[test]
    fn sizes_are_bounded_and_long_values_tick() {
        let k = IndexKey::from_base64(KEY).unwrap();
        let mut t = k.derive(Kind::Tokens, b"ctx");
        let mut e = k.derive(Kind::Exact, b"ctx");
        let at_max: String = (0..MAX_SEARCH_INPUT).map(|i| char::from(b'a' + (i % 26) as u8)).collect();
        let mut ticks = 0;
        let tokens = t.tokens_of(&at_max, Normalize::Lower, 20, &mut || ticks += 1).unwrap();
        assert_eq!(tokens.len(), 26);
        assert_eq!(ticks, MAX_SEARCH_INPUT / TICK_EVERY);
        let over = format!("{at_max}a");
        let too_large = Err(Error::SearchInputTooLarge { max: MAX_SEARCH_INPUT });
        assert_eq!(t.tokens_of(&over, Normalize::None, 20, &mut || ()), too_large);
        assert_eq!(t.query_tokens_of(&over, Normalize::Lower, 20, &mut || ()), too_large);
        let mut out = [0u8; 32];
        assert_eq!(e.blind_index_of(&over, Normalize::Lower, 256, &mut out, &mut || ()), too_large.clone().map(drop));
        // Normalization that expands (U+FDFA is 18 characters in NFKC) is
        // bounded by its output too.
        let expands: String = std::iter::repeat_n('\u{fdfa}', MAX_SEARCH_INPUT / 3).collect();
        assert_eq!(t.tokens_of(&expands, Normalize::Lower, 20, &mut || ()), too_large);
        // `none` blind indexes take any size, hashed in place, ticking.
        let big = vec![b'x'; 3 * TICK_EVERY * 64 + 5];
        let mut ticks = 0;
        e.blind_index_ticking(&big, 256, &mut out, &mut || ticks += 1);
        assert_eq!(ticks, 4);
        assert_eq!(out.to_vec(), e.blind_index(&big, 256));
        // A tick that raises (PostgreSQL's ERROR arrives as a panic) stops
        // the computation.
        let stopped = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            t.tokens_of(&at_max, Normalize::None, 20, &mut || panic!("cancelled"))
        }));
        assert!(stopped.is_err());
    }

    #[test]
    fn errors_do_not_echo_the_key() {
        let msg = IndexKey::from_base64("c2VjcmV0LXZhbHVl").err().unwrap().to_string();
        assert!(!msg.contains("c2Vj"));
    }
}
