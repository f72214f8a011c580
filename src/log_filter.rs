//! Keeps keys and decrypted values out of the server log.
//!
//! An `emit_log_hook` rewrites every message this backend sends to the server
//! log, before any other library's hook sees it (see "Order" below). The text
//! rules are pure functions in `pazpaz_core::redact`; this module applies
//! them to PostgreSQL's `ErrorData`:
//!
//! 1. **Keys, by value.** Every key string this backend holds or held (the
//!    settings' check hooks record each value, `log_secrets.rs`) is scrubbed
//!    from every field — message, detail, detail_log, hint, context, internal
//!    query — whoever wrote it: auto_explain's plan of the `set_config` call,
//!    an input error quoting a key, a deadlock report.
//! 2. **Key statements, by shape**, for what is logged before the key is
//!    known (`log_statement` logs a statement before it runs): a statement
//!    that names `pazpaz` or `set_config`, or uses a Unicode escape, has its
//!    text, parameters, context and `STATEMENT:` line replaced; so does any
//!    detail or context naming them (another process's report of a
//!    statement: "Failed process was running: …", deadlock details).
//! 3. **Values, always** (unless a superuser turns
//!    `pazpaz.log_redact_values` off): bind parameters (`parameters: $1 = …`,
//!    pgaudit's parameter field), row values in details (`Failing row
//!    contains`, `Key (…)=(…)`, partition keys; server log only, the client
//!    keeps them), input data in COPY and JSON error contexts, values quoted
//!    by data exceptions (SQLSTATE class 22), and the literals of
//!    auto_explain plans (constants and folded parameters are printed with
//!    the type's output function, which decrypts).
//!
//! **Failing closed.** Nothing in the hook can raise: replacement strings
//! are allocated with `MCXT_ALLOC_NO_OOM` and no other PostgreSQL function is
//! called, so the `catch_unwind` below only ever catches a Rust panic — and
//! then, or when memory is short, every text field is emptied in place.
//!
//! **Order.** The hook that PostgreSQL calls first is the one installed
//! last. A library loaded after this one (later in
//! `shared_preload_libraries`, in `session_preload_libraries`, by `LOAD`)
//! would see messages before they are redacted; so after the postmaster has
//! loaded every preloaded library (`shmem_request_hook`) and before every
//! parsed statement (`post_parse_analyze_hook`), the hook is re-installed on
//! top if something was put above it. Each installation is a separate entry
//! point with its own "previous hook", so the chain stays intact; only the
//! topmost one redacts.

use std::cell::Cell;
use std::ffi::{c_char, CStr};

use pazpaz_core::redact;
use pgrx::pg_sys;
use pgrx::PgSqlErrorCode;

use crate::backend_local::{BackendLocal, LocalFlag};
use crate::gucs;
use crate::log_secrets;
use crate::varlena::cstring_no_raise;

/// Re-installations on top of other hooks allowed per process (so two
/// libraries that both insist on being on top cannot grow the chain forever).
const POSITIONS: usize = 4;

// Only touched from the backend's single thread (hooks and _PG_init).
static mut PREV: [pg_sys::emit_log_hook_type; POSITIONS] = [None; POSITIONS];
static mut TOP: usize = 0;
static mut USED: usize = 0;
static mut PREV_SHMEM_REQUEST: pg_sys::shmem_request_hook_type = None;
static mut PREV_POST_PARSE_ANALYZE: pg_sys::post_parse_analyze_hook_type = None;
/// A statement naming a key setting was PREPAREd in this backend: from now
/// on an `EXECUTE` (which names only the prepared statement) counts as one.
static KEY_PREPARED: LocalFlag = BackendLocal::new(Cell::new(false));

macro_rules! positions {
    ($($name:ident = $i:expr),*) => {
        $(
            unsafe extern "C-unwind" fn $name(edata: *mut pg_sys::ErrorData) {
                // SAFETY: PostgreSQL passes the ErrorData being emitted.
                unsafe { run($i, edata) }
            }
        )*
        const ENTRY: [unsafe extern "C-unwind" fn(*mut pg_sys::ErrorData); POSITIONS] = [$($name),*];
    };
}
positions!(hook_0 = 0, hook_1 = 1, hook_2 = 2, hook_3 = 3);

pub fn init() {
    ensure_outermost();
    // SAFETY: _PG_init runs once per process, single-threaded; these are
    // PostgreSQL's hook variables, chained to their previous values.
    unsafe {
        PREV_SHMEM_REQUEST = pg_sys::shmem_request_hook;
        pg_sys::shmem_request_hook = Some(shmem_request);
        PREV_POST_PARSE_ANALYZE = pg_sys::post_parse_analyze_hook;
        pg_sys::post_parse_analyze_hook = Some(post_parse_analyze);
    }
}

/// Puts this filter on top of `emit_log_hook` if another library installed
/// its hook after it.
fn ensure_outermost() {
    // SAFETY: single-threaded access to our statics and PostgreSQL's hook
    // variable; every installed entry point stays valid for the life of the
    // process (the library is never unloaded).
    unsafe {
        let head = pg_sys::emit_log_hook;
        if USED > 0 && head.map(|f| f as usize) == Some(ENTRY[TOP] as usize) {
            return;
        }
        if USED == POSITIONS {
            return;
        }
        PREV[USED] = head;
        TOP = USED;
        pg_sys::emit_log_hook = Some(ENTRY[USED]);
        USED += 1;
    }
}

unsafe extern "C-unwind" fn shmem_request() {
    ensure_outermost();
    // SAFETY: our static, written only in _PG_init.
    if let Some(prev) = unsafe { PREV_SHMEM_REQUEST } {
        // SAFETY: the previous hook, called as PostgreSQL would have.
        unsafe { prev() };
    }
}

unsafe extern "C-unwind" fn post_parse_analyze(
    pstate: *mut pg_sys::ParseState,
    query: *mut pg_sys::Query,
    jstate: *mut pg_sys::JumbleState,
) {
    ensure_outermost();
    // SAFETY: PostgreSQL passes the Query it just analysed; a utility
    // statement's node is read for its tag only.
    let prepares = unsafe { query.as_ref() }
        .and_then(|q| unsafe { q.utilityStmt.as_ref() })
        .is_some_and(|u| u.type_ == pg_sys::NodeTag::T_PrepareStmt);
    // SAFETY: debug_query_string is NULL or the current statement's text.
    if prepares && unsafe { cstr(pg_sys::debug_query_string) }.is_some_and(redact::names_key_setting) {
        KEY_PREPARED.set(true);
    }
    // SAFETY: our static, written only in _PG_init.
    if let Some(prev) = unsafe { PREV_POST_PARSE_ANALYZE } {
        // SAFETY: the previous hook, with PostgreSQL's own arguments.
        unsafe { prev(pstate, query, jstate) };
    }
}

/// # Safety
/// `edata` is the message PostgreSQL is emitting (or NULL).
unsafe fn run(position: usize, edata: *mut pg_sys::ErrorData) {
    // SAFETY: single-threaded reads of our statics; `edata` as given.
    unsafe {
        if position == TOP {
            if let Some(e) = edata.as_mut() {
                filter(e);
            }
        }
        if let Some(prev) = PREV[position] {
            prev(edata);
        }
    }
}

fn filter(e: &mut pg_sys::ErrorData) {
    let done = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let mut m = Message { e: &mut *e, ok: true };
        m.redact();
        m.ok
    }));
    if !matches!(done, Ok(true)) {
        blank(e);
    }
}

/// Empties every text field in place (no allocation) and hides the
/// statement: used when redaction could not complete.
fn blank(e: &mut pg_sys::ErrorData) {
    for p in [e.message, e.detail, e.detail_log, e.hint, e.context, e.internalquery] {
        if !p.is_null() {
            // SAFETY: the fields are NUL-terminated strings owned by `e`.
            unsafe { *p = 0 };
        }
    }
    e.hide_stmt = true;
}

/// The fields of `ErrorData` that can carry text from anywhere.
#[derive(Clone, Copy)]
enum Field {
    Message,
    Detail,
    DetailLog,
    Hint,
    Context,
    InternalQuery,
}

const FIELDS: [Field; 6] =
    [Field::Message, Field::Detail, Field::DetailLog, Field::Hint, Field::Context, Field::InternalQuery];

struct Message<'a> {
    e: &'a mut pg_sys::ErrorData,
    /// False once a replacement could not be allocated.
    ok: bool,
}

impl Message<'_> {
    fn slot(&mut self, f: Field) -> &mut *mut c_char {
        match f {
            Field::Message => &mut self.e.message,
            Field::Detail => &mut self.e.detail,
            Field::DetailLog => &mut self.e.detail_log,
            Field::Hint => &mut self.e.hint,
            Field::Context => &mut self.e.context,
            Field::InternalQuery => &mut self.e.internalquery,
        }
    }

    fn get(&mut self, f: Field) -> Option<Vec<u8>> {
        let p = *self.slot(f);
        // SAFETY: a non-null field is a NUL-terminated string owned by the
        // ErrorData for the duration of the hook.
        (!p.is_null()).then(|| unsafe { CStr::from_ptr(p) }.to_bytes().to_vec())
    }

    /// Replaces a field with a copy of `text` in the message's memory
    /// context; PostgreSQL frees it with the message.
    fn set(&mut self, f: Field, text: &[u8]) {
        let text: Vec<u8> = text.iter().copied().filter(|&b| b != 0).collect();
        // SAFETY: a message's assoc_context is the memory context it lives
        // in (ErrorContext), live until the message has been emitted.
        match unsafe { cstring_no_raise(self.e.assoc_context, &text) } {
            Some(p) => *self.slot(f) = p.as_ptr(),
            None => self.ok = false,
        }
    }

    fn map(&mut self, f: Field, rule: impl FnOnce(&[u8]) -> Option<Vec<u8>>) {
        if let Some(new) = self.get(f).as_deref().and_then(rule) {
            self.set(f, &new);
        }
    }

    fn redact(&mut self) {
        // 1. Keys, by value.
        let mut holds_keys = false;
        for f in FIELDS {
            let Some(text) = self.get(f) else { continue };
            match log_secrets::with(|s| {
                holds_keys = !s.is_empty();
                s.scrub(&text)
            }) {
                Some(Some(new)) => self.set(f, &new),
                Some(None) => {}
                None => self.ok = false,
            }
        }
        // The server's key-encryption keys, by value, in every backend.
        for f in FIELDS {
            let Some(text) = self.get(f) else { continue };
            match log_secrets::with_server(|s| s.scrub(&text)) {
                Some(Some(new)) => self.set(f, &new),
                Some(None) => {}
                None => self.ok = false,
            }
        }
        // SAFETY: debug_query_string is NULL or the current statement's text.
        let query = unsafe { cstr(pg_sys::debug_query_string) };
        // The STATEMENT: line prints the statement itself, not a field.
        if holds_keys && query.is_some_and(|q| log_secrets::with(|s| s.found_in(q)).unwrap_or(true)) {
            self.e.hide_stmt = true;
        }
        if query.is_some_and(|q| log_secrets::with_server(|s| s.found_in(q)).unwrap_or(true)) {
            self.e.hide_stmt = true;
        }

        // The extension's own errors (raised through `error::raise`, which
        // names it as their function) quote only names, and so do the
        // messages of the key settings' check hooks, which PostgreSQL raises
        // from guc.c: "invalid value for pazpaz.…: <a core error>".
        // SAFETY: `funcname` is NULL or a static string.
        let funcname = unsafe { cstr(self.e.funcname) };
        let ours = funcname == Some(crate::error::FUNCNAME.to_bytes())
            || (funcname == Some(&b"call_string_check_hook"[..])
                && self.get(Field::Message).is_some_and(|m| m.starts_with(b"invalid value for pazpaz.")))
            // The RAISEs of the extension's own PL/pgSQL procedures (names of
            // tables and columns that exist, counts, versions). A session
            // could imitate this context only to log what it can read
            // anyway; the rule is against accidents, not its own keys.
            || (funcname == Some(&b"exec_stmt_raise"[..])
                && self.get(Field::Context).is_some_and(|c| redact::raised_by_own_procedure(&c)));
        let is_log = self.e.elevel == pg_sys::LOG as i32 || self.e.elevel == pg_sys::LOG_SERVER_ONLY as i32;
        let code = self.e.sqlerrcode;

        // 2. Key statements, by shape.
        let key_shaped = |t: &[u8]| redact::names_key_setting(t) || (KEY_PREPARED.get() && redact::may_execute(t));
        // Any level: at debug2 the extended protocol logs `parse S: <text>`.
        self.map(Field::Message, |m| {
            (redact::quotes_statement(m) && key_shaped(m)).then(|| redact::redact_statement_message(m))
        });
        if query.is_some_and(key_shaped) {
            self.e.hide_stmt = true;
            for f in [Field::Detail, Field::DetailLog, Field::Context] {
                self.map(f, redact::redact_parameters);
            }
            // An input or syntax error in such a statement may quote the key
            // it sets (before the check hook has seen it).
            if !is_log && !ours && (is_data_exception(code) || code == PgSqlErrorCode::ERRCODE_SYNTAX_ERROR as i32) {
                self.redact_message_for_log(redact::redact_quoted);
            }
        }
        // A detail naming a key setting stays with the client (its own
        // statement); the server log gets the mark. Reports quoting other
        // sessions' statements (deadlocks) are server-only details already.
        if self.get(Field::Detail).as_deref().is_some_and(key_shaped) && self.get(Field::DetailLog).is_none() {
            self.set(Field::DetailLog, redact::FIELD_MARK);
        }
        for f in [Field::DetailLog, Field::Context, Field::InternalQuery] {
            self.map(f, |t| key_shaped(t).then(|| redact::FIELD_MARK.to_vec()));
        }

        // 3. Values.
        if !gucs::log_redact_values() {
            return;
        }
        if is_log {
            self.map(Field::Message, redact::redact_audit_parameters);
            if redact::is_plan(self.get(Field::Message).as_deref().unwrap_or_default()) {
                // Plan constants and folded parameters are printed with the
                // type's output function, which decrypts; in a session that
                // holds keys any value in a plan may be decrypted text.
                self.map(Field::Message, if holds_keys { redact::redact_plan_values } else { redact::redact_literals });
            }
            if holds_keys {
                // A statement run inside a function or DO block is audited
                // with its text, which may carry decrypted values.
                self.map(Field::Message, redact::redact_audit_nested);
            }
        }
        for f in [Field::Detail, Field::DetailLog, Field::Context] {
            self.map(f, redact::redact_parameters);
        }
        if let Some(mark) = self.get(Field::Detail).as_deref().and_then(redact::row_detail_mark) {
            self.set(Field::DetailLog, mark);
        }
        self.map(Field::Context, redact::redact_input_context);
        if holds_keys {
            // Contexts and internal queries quote statements run inside
            // functions: dynamic SQL built from decrypted values.
            self.map(Field::Context, |c| {
                let q = redact::redact_quoted(c);
                redact::redact_literals(q.as_deref().unwrap_or(c)).or(q)
            });
            if self.get(Field::InternalQuery).is_some() {
                self.set(Field::InternalQuery, redact::VALUE_MARK);
            }
        }
        // Integrity violations (class 23) quote only catalog names in their
        // message; their values are in the details handled above.
        if is_log || ours || is_class(code, *b"23") {
            return;
        }
        // Errors, warnings and notices that quote values. A backend that
        // holds keys can feed decrypted text to anything (casts to regclass,
        // file names, setting names, parsers), so there every quoted part,
        // whatever follows the message's first ": " and every number go;
        // elsewhere, the quoted parts of data exceptions.
        if holds_keys {
            self.redact_message_for_log(|m| {
                let q = redact::redact_quoted(m);
                redact::redact_unquoted(q.as_deref().unwrap_or(m)).or(q)
            });
            self.map(Field::Hint, redact::redact_quoted);
        } else if is_data_exception(code) {
            self.redact_message_for_log(redact::redact_quoted);
        }
        if is_xml_error(code) {
            // libxml echoes the offending input lines, unquoted.
            self.set(Field::DetailLog, redact::VALUE_MARK);
        }
    }

    /// Redacts the message and detail for the server log. PostgreSQL sends
    /// one message text to the log and the client, so the client gets the
    /// original message (and detail) in DETAIL, and the log DETAIL_LOG.
    fn redact_message_for_log(&mut self, rule: impl Fn(&[u8]) -> Option<Vec<u8>>) {
        let Some(message) = self.get(Field::Message) else { return };
        let detail = self.get(Field::Detail);
        let detail_log = self.get(Field::DetailLog).or_else(|| detail.clone());
        let log_detail = detail_log.as_deref().map(|d| rule(d).unwrap_or_else(|| d.to_vec()));
        let Some(redacted) = rule(&message) else {
            if let (Some(new), Some(old)) = (log_detail, detail_log) {
                if new != old {
                    self.set(Field::DetailLog, &new);
                }
            }
            return;
        };
        let for_client = match detail {
            Some(d) => [&message[..], b"\n", &d].concat(),
            None => message,
        };
        self.set(Field::Message, &redacted);
        self.set(Field::Detail, &for_client);
        self.set(Field::DetailLog, log_detail.as_deref().unwrap_or(redact::CLIENT_ONLY_MARK));
    }
}

/// SQLSTATEs 2200L/M/N/S/T: XML errors, whose detail echoes the input.
fn is_xml_error(sqlerrcode: i32) -> bool {
    use PgSqlErrorCode::*;
    [
        ERRCODE_NOT_AN_XML_DOCUMENT,
        ERRCODE_INVALID_XML_DOCUMENT,
        ERRCODE_INVALID_XML_CONTENT,
        ERRCODE_INVALID_XML_COMMENT,
        ERRCODE_INVALID_XML_PROCESSING_INSTRUCTION,
    ]
    .iter()
    .any(|&c| c as i32 == sqlerrcode)
}

/// Is the SQLSTATE in this class (its first two characters)?
fn is_class(sqlerrcode: i32, class: [u8; 2]) -> bool {
    // MAKE_SQLSTATE: six bits per character; ERRCODE_TO_CATEGORY keeps two.
    let six = |c: u8| i32::from(c.wrapping_sub(b'0')) & 0x3F;
    sqlerrcode & 0xFFF == six(class[0]) | (six(class[1]) << 6)
}

/// SQLSTATE class 22, data exceptions.
fn is_data_exception(sqlerrcode: i32) -> bool {
    is_class(sqlerrcode, *b"22")
}

/// # Safety
/// `p` is NULL or a NUL-terminated string valid for `'a`.
unsafe fn cstr<'a>(p: *const c_char) -> Option<&'a [u8]> {
    // SAFETY: per the contract.
    (!p.is_null()).then(|| unsafe { CStr::from_ptr(p) }.to_bytes())
}
