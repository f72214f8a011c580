//! Keeps keys and decrypted values out of the server log.
//!
//! An `emit_log_hook` sees every message before it is written. It only
//! exists in backends that loaded the library, which is one reason the
//! production setup preloads it.
//!
//! 1. Statements that set a key: with `log_statement = all`, PostgreSQL logs
//!    `SET pazpaz.encryption_key = '…'` verbatim and, for the recommended
//!    `set_config('pazpaz.encryption_key', $1, false)`, the bind parameters
//!    (`DETAIL: parameters: $1 = '…'`). When the statement being run mentions a
//!    `pazpaz` key setting, its text, its parameter details and the
//!    `STATEMENT:` line are replaced by a marker. Other messages are untouched.
//! 2. Row values: for NOT NULL / CHECK / partition violations PostgreSQL
//!    writes "Failing row contains (…)" built with each column's output
//!    function, and ours decrypts. Once this backend has output a decrypted
//!    value, that detail is replaced in the server log (`detail_log`); the
//!    client, which holds the key, still receives it.

use std::cell::Cell;
use std::ffi::{c_char, CStr};

use pgrx::pg_sys;
use pgrx::prelude::*;

const STATEMENT_MARK: &CStr = c"[statement redacted by pazpaz_crypto: it sets a key]";
const PARAMS_MARK: &CStr = c"parameters: [redacted by pazpaz_crypto]";
const CONTEXT_MARK: &CStr = c"[context redacted by pazpaz_crypto]";
const ROW_MARK: &CStr = c"Failing row contains (values hidden by pazpaz_crypto).";

static mut PREV_HOOK: pg_sys::emit_log_hook_type = None;

thread_local! {
    static PLAINTEXT_OUTPUT: Cell<bool> = const { Cell::new(false) };
}

pub fn init() {
    unsafe {
        PREV_HOOK = pg_sys::emit_log_hook;
        pg_sys::emit_log_hook = Some(emit_log_hook);
    }
}

/// Called by the type's output function whenever it returns plaintext.
pub fn plaintext_was_output() {
    PLAINTEXT_OUTPUT.with(|c| c.set(true));
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

fn replace(haystack: &[u8], needle: &[u8], with: &[u8]) -> Option<Vec<u8>> {
    if needle.is_empty() || needle.len() > haystack.len() {
        return None;
    }
    let pos = haystack.windows(needle.len()).position(|w| w == needle)?;
    Some([&haystack[..pos], with, &haystack[pos + needle.len()..]].concat())
}

unsafe fn redact(e: &mut pg_sys::ErrorData) {
    let query = unsafe { cstr(pg_sys::debug_query_string) };
    let query_sets_key = query.is_some_and(mentions_key_setting);
    let message = unsafe { cstr(e.message) };

    if query_sets_key || message.is_some_and(mentions_key_setting) {
        if let (Some(m), Some(q)) = (message, query) {
            if let Some(new) = replace(m, q, STATEMENT_MARK.to_bytes()) {
                e.message = pstrdup(&new);
            }
        }
        // A message that still quotes a key-setting statement (e.g. a
        // statement log line for a multi-statement string) is replaced whole;
        // our own errors never contain values and are ERROR/WARNING.
        if e.elevel == pg_sys::LOG as i32 && unsafe { cstr(e.message) }.is_some_and(mentions_key_setting) {
            e.message = pstrdup(STATEMENT_MARK.to_bytes());
        }
    }
    if query_sets_key {
        for field in [&mut e.detail, &mut e.detail_log] {
            if unsafe { cstr(*field) }.is_some_and(|d| d.starts_with(b"parameters:")) {
                *field = pstrdup(PARAMS_MARK.to_bytes());
            }
        }
        if unsafe { cstr(e.context) }.is_some() {
            e.context = pstrdup(CONTEXT_MARK.to_bytes());
        }
        e.internalquery = std::ptr::null_mut();
        e.hide_stmt = true;
    } else {
        // A key-setting statement inside a function: its text shows in the
        // context or internal query.
        if unsafe { cstr(e.context) }.is_some_and(mentions_key_setting) {
            e.context = pstrdup(CONTEXT_MARK.to_bytes());
        }
        if unsafe { cstr(e.internalquery) }.is_some_and(mentions_key_setting) {
            e.internalquery = std::ptr::null_mut();
        }
    }

    if PLAINTEXT_OUTPUT.with(|c| c.get())
        && unsafe { cstr(e.detail) }.is_some_and(|d| d.starts_with(b"Failing row contains"))
    {
        e.detail_log = pstrdup(ROW_MARK.to_bytes());
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
