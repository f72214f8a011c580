//! Keeps keys and decrypted values out of the server log.
//!
//! An `emit_log_hook` sees every message before it is written. It only
//! exists in backends that loaded the library, which is one reason the
//! production setup preloads it.
//!
//! 1. Statements that set a key: with `log_statement = all`, PostgreSQL logs
//!    `SET pazpaz.encryption_key = '…'` verbatim and, for the recommended
//!    `set_config('pazpaz.encryption_key', $1, false)`, the bind parameters
//!    (`DETAIL: parameters: $1 = '…'`). A statement counts as setting a key
//!    when its text, its parameter details, or the prepared statement that an
//!    `EXECUTE` runs names a `pazpaz` key setting. For those, the statement
//!    text in the message, parameter and `prepare:` details, the context and
//!    the `STATEMENT:` line are replaced by markers. Other messages are
//!    untouched (a LOG line of the postmaster about a refused setting, say).
//! 2. Row values: for NOT NULL / CHECK / partition violations PostgreSQL
//!    writes "Failing row contains (…)" built with each column's output
//!    function. Once this backend has decrypted anything, that detail is
//!    replaced in the server log (`detail_log`); the client, which holds the
//!    key, still receives it.
//! 3. COPY input: an error during COPY FROM adds the offending input line or
//!    value to the context (`COPY t, line 1, column c: "…"`). Once this
//!    backend has encrypted text input, the quoted data is removed from such
//!    contexts (for the client too: PostgreSQL has no log-only context).

use std::cell::Cell;
use std::ffi::{c_char, CStr};

use pgrx::pg_sys;

use crate::backend_local::{BackendLocal, LocalFlag};
use pgrx::prelude::*;

const STATEMENT_MARK: &[u8] = b"[statement redacted by pazpaz_crypto: it sets a key]";
const PARAMS_MARK: &[u8] = b"[parameters redacted by pazpaz_crypto]";
const CONTEXT_MARK: &[u8] = b"[context redacted by pazpaz_crypto]";
const ROW_MARK: &[u8] = b"Failing row contains (values hidden by pazpaz_crypto).";
const PARTITION_ROW_MARK: &[u8] = b"Partition key of the failing row contains (values hidden by pazpaz_crypto).";
const COPY_DATA_MARK: &[u8] = b": [data hidden by pazpaz_crypto]";

static mut PREV_HOOK: pg_sys::emit_log_hook_type = None;

static PLAINTEXT_OUTPUT: LocalFlag = BackendLocal::new(Cell::new(false));
static PLAINTEXT_INPUT: LocalFlag = BackendLocal::new(Cell::new(false));

pub fn init() {
    unsafe {
        PREV_HOOK = pg_sys::emit_log_hook;
        pg_sys::emit_log_hook = Some(emit_log_hook);
    }
}

/// Called whenever this backend produces decrypted text.
pub fn plaintext_was_output() {
    PLAINTEXT_OUTPUT.set(true);
}

/// Called whenever this backend encrypts text given as input.
pub fn plaintext_was_input() {
    PLAINTEXT_INPUT.set(true);
}

/// Case-insensitive: does `s` name one of the key settings?
pub fn mentions_key_setting(s: &[u8]) -> bool {
    let lower = s.to_ascii_lowercase();
    let has = |needle: &[u8]| lower.windows(needle.len()).any(|w| w == needle);
    has(b"pazpaz") && has(b"encryption_key")
}

unsafe fn cstr<'a>(p: *const c_char) -> Option<&'a [u8]> {
    (!p.is_null()).then(|| unsafe { CStr::from_ptr(p) }.to_bytes())
}

/// Replacement strings must be palloc'd: PostgreSQL pfree()s the fields of
/// messages below ERROR after emitting them.
fn pstrdup(s: &[u8]) -> *mut c_char {
    unsafe {
        let p = pg_sys::palloc(s.len() + 1).cast::<u8>();
        std::ptr::copy_nonoverlapping(s.as_ptr(), p, s.len());
        *p.add(s.len()) = 0;
        p.cast()
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() || needle.len() > haystack.len() {
        return None;
    }
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Log lines whose message quotes the statement (log_statement,
/// log_min_duration_statement, extended-protocol steps).
fn quotes_statement(m: &[u8]) -> bool {
    [&b"statement: "[..], b"execute ", b"duration: ", b"parse ", b"bind "].iter().any(|p| m.starts_with(p))
}

/// Does an SQL-level `EXECUTE name(…)` in `query` run a prepared statement
/// whose text names a key setting? (`EXECUTE s('<key>')` itself does not.)
fn executes_key_statement(query: &[u8]) -> bool {
    let lower = query.to_ascii_lowercase();
    let mut from = 0;
    while let Some(pos) = find(&lower[from..], b"execute") {
        let at = from + pos;
        from = at + 7;
        if at > 0 && (lower[at - 1].is_ascii_alphanumeric() || lower[at - 1] == b'_') {
            continue;
        }
        let rest = &query[from..];
        let rest = &rest[rest.iter().take_while(|b| b.is_ascii_whitespace()).count()..];
        let name: Vec<u8> = if let Some(q) = rest.strip_prefix(b"\"") {
            q.iter().take_while(|&&b| b != b'"').copied().collect()
        } else {
            rest.iter()
                .take_while(|b| b.is_ascii_alphanumeric() || **b == b'_' || **b >= 0x80)
                .map(|b| b.to_ascii_lowercase())
                .collect()
        };
        if name.is_empty() || name.len() >= 64 || name.contains(&0) {
            continue;
        }
        let mut cname = name;
        cname.push(0);
        let stmt = unsafe { pg_sys::FetchPreparedStatement(cname.as_ptr().cast(), false) };
        if stmt.is_null() {
            continue;
        }
        let source = unsafe { (*stmt).plansource };
        if !source.is_null() && unsafe { cstr((*source).query_string) }.is_some_and(mentions_key_setting) {
            return true;
        }
    }
    false
}

/// `COPY t, line 1, column c: "<data>"` → `COPY t, line 1, column c: [data hidden…]`, per line.
fn strip_copy_data(context: &[u8]) -> Option<Vec<u8>> {
    let mut changed = false;
    let lines: Vec<Vec<u8>> = context
        .split(|&b| b == b'\n')
        .map(|line| match (line.starts_with(b"COPY "), find(line, b": \"")) {
            (true, Some(pos)) => {
                changed = true;
                [&line[..pos], COPY_DATA_MARK].concat()
            }
            _ => line.to_vec(),
        })
        .collect();
    changed.then(|| lines.join(&b'\n'))
}

unsafe fn redact(e: &mut pg_sys::ErrorData) {
    let query = unsafe { cstr(pg_sys::debug_query_string) };
    let detail = unsafe { cstr(e.detail) };
    let detail_log = unsafe { cstr(e.detail_log) };
    let context = unsafe { cstr(e.context) };

    let names_key_in = |d: Option<&[u8]>, prefix: &[u8]| d.is_some_and(|d| find(d, prefix).is_some() && mentions_key_setting(d));
    let sets_key = query.is_some_and(mentions_key_setting)
        || query.is_some_and(executes_key_statement)
        || [detail, detail_log, context].into_iter().any(|d| names_key_in(d, b"parameters:"))
        || [detail, detail_log].into_iter().any(|d| d.is_some_and(|d| d.starts_with(b"prepare:") && mentions_key_setting(d)));

    if sets_key {
        if let Some(m) = unsafe { cstr(e.message) } {
            let log_level = e.elevel == pg_sys::LOG as i32 || e.elevel == pg_sys::LOG_SERVER_ONLY as i32;
            if let Some(pos) = query.and_then(|q| find(m, q)) {
                // The statement and everything after it (pgaudit appends the
                // bind parameters to the same line).
                e.message = pstrdup(&[&m[..pos], STATEMENT_MARK].concat());
            } else if quotes_statement(m) || (log_level && mentions_key_setting(m)) {
                // A statement log line, or a LOG line quoting another
                // statement that names a key setting (pgaudit, auto_explain
                // on a statement inside a DO block or function). pgaudit's
                // `AUDIT: class,…,"statement",parameters` keeps its fields
                // up to the statement, so the audit trail stays usable.
                let keep = match (m.starts_with(b"AUDIT: "), m.iter().position(|&b| b == b'"')) {
                    (true, Some(q)) => &m[..=q],
                    _ => &b""[..],
                };
                e.message = pstrdup(&[keep, STATEMENT_MARK].concat());
            }
        }
        for field in [&mut e.detail, &mut e.detail_log] {
            if unsafe { cstr(*field) }.is_some() {
                *field = pstrdup(PARAMS_MARK);
            }
        }
        if context.is_some() {
            e.context = pstrdup(CONTEXT_MARK);
        }
        e.internalquery = std::ptr::null_mut();
        e.hide_stmt = true;
    } else {
        // A key-setting statement inside a function: its text shows in the
        // context or internal query.
        if context.is_some_and(mentions_key_setting) {
            e.context = pstrdup(CONTEXT_MARK);
        }
        if unsafe { cstr(e.internalquery) }.is_some_and(mentions_key_setting) {
            e.internalquery = std::ptr::null_mut();
        }
    }

    if PLAINTEXT_OUTPUT.get() {
        if let Some(d) = unsafe { cstr(e.detail) } {
            if d.starts_with(b"Failing row contains") {
                e.detail_log = pstrdup(ROW_MARK);
            } else if d.starts_with(b"Partition key of the failing row contains") {
                e.detail_log = pstrdup(PARTITION_ROW_MARK);
            }
        }
    }
    if PLAINTEXT_INPUT.get() || PLAINTEXT_OUTPUT.get() {
        if let Some(new) = unsafe { cstr(e.context) }.and_then(strip_copy_data) {
            e.context = pstrdup(&new);
        }
    }
}

#[pg_guard]
unsafe extern "C-unwind" fn emit_log_hook(edata: *mut pg_sys::ErrorData) {
    if !edata.is_null() {
        // Never raise from inside error reporting.
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| unsafe { redact(&mut *edata) }));
    }
    if let Some(prev) = unsafe { PREV_HOOK } {
        unsafe { prev(edata) };
    }
}
