//! Every setting of the extension, in one place: definitions, hooks, typed
//! accessors. Nothing else touches a `GucSetting`.
//!
//! Key settings are secrets. They are:
//! - validated when SET by a check hook whose message never echoes the value;
//! - refused from every source that would store them in plain text outside the
//!   session (postgresql.conf, ALTER SYSTEM, ALTER ROLE/DATABASE … SET, a
//!   function's SET clause, the server command line);
//! - hidden: GUC_NO_SHOW_ALL (not in SHOW ALL / pg_settings / the sample
//!   file) and a show hook, so SHOW, current_setting() and set_config()'s
//!   result print "(hidden)" to every role, superusers included. (Not
//!   GUC_SUPERUSER_ONLY: it makes set_config() fail for ordinary roles,
//!   because set_config() returns the new value, and applications must be
//!   able to set their own keys without privileges.)
//! - parsed once per change: the assign hook only drops (and so zeroizes) the
//!   cached keyring; the next function call rebuilds it (`key_cache.rs`).
//! - raw or wrapped (`pzw1:…`, see `pazpaz_core::wrapped_key`): the check
//!   hook unwraps a wrapped value to validate it, so a tampered one fails at
//!   SET time, and hands both spellings to the log filter.
//!
//! The index keys of search (`pazpaz.index_key`, and `pazpaz.index_key_next`
//! during an index key rotation) follow the same rules; their cache is
//! `index_keys.rs`.

use std::ffi::{c_char, c_void, CStr, CString};

use pgrx::guc::{GucContext, GucFlags, GucRegistry, GucSetting};
use pgrx::pg_sys;
use pgrx::prelude::*;
use pgrx::{PgMemoryContexts, PostgresGucEnum};
use zeroize::Zeroizing;

use std::cell::Cell;

use crate::backend_local::BackendLocal;

use pazpaz_core::blind_index::IndexKey;
use pazpaz_core::keyring::{validate_version, Keyring, MAX_SETTING_BYTES};
use pazpaz_core::wrapped_key::KeyPolicy;
use pazpaz_core::Error;

use crate::error;
use crate::kek;
use crate::log_secrets;

pub const KEY: &CStr = c"pazpaz.encryption_key";
pub const KEYS: &CStr = c"pazpaz.encryption_keys";
pub const KEY_VERSION: &CStr = c"pazpaz.encryption_key_version";
pub const INDEX_KEY: &CStr = c"pazpaz.index_key";
pub const INDEX_KEY_NEXT: &CStr = c"pazpaz.index_key_next";
/// The per-transaction secret that binds transport forms of encrypted_text
/// (distributed.rs) to the transaction that made them; set by set_keys(…,
/// true) and forward_keys() with a fresh random value, and forwarded by
/// Citus with the keys. Its name starts like the key settings', so the log
/// filter treats every statement naming it as one that sets a key.
pub const TRANSPORT: &CStr = c"pazpaz.encryption_transport";

static ENCRYPTION_KEY: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);
static ENCRYPTION_KEYS: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);
static ENCRYPTION_KEY_VERSION: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);
static ENCRYPTED_TEXT_IO: GucSetting<TextIo> = GucSetting::<TextIo>::new(TextIo::Plaintext);
static LOG_REDACT_VALUES: GucSetting<bool> = GucSetting::<bool>::new(true);
static KEK_FILE: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);
static KEK_COMMAND: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);
static KEK_COMMAND_TIMEOUT: GucSetting<i32> = GucSetting::<i32>::new(30);
static REQUIRE_WRAPPED_KEYS: GucSetting<bool> = GucSetting::<bool>::new(false);
static INDEX_KEY_SETTING: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);
static INDEX_KEY_NEXT_SETTING: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);
static TRANSPORT_SETTING: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);

/// A function run after every change of a key setting.
type KeyChangeHook = Option<fn()>;

/// Called after every change of a key setting (see `on_key_change`).
static ON_KEY_CHANGE: BackendLocal<Cell<KeyChangeHook>> = BackendLocal::new(Cell::new(None));
/// Called after every change of an index key setting (see `on_index_key_change`).
static ON_INDEX_KEY_CHANGE: BackendLocal<Cell<KeyChangeHook>> = BackendLocal::new(Cell::new(None));

/// How `encrypted_text` values are written and read as text.
#[derive(PostgresGucEnum, Clone, Copy, PartialEq, Eq, Debug)]
pub enum TextIo {
    /// Text in, encrypt; decrypt, text out (the default).
    #[name = c"plaintext"]
    Plaintext,
    /// The envelope's text form `pazpaz:<base64>` in and out; no key needed
    /// (keyless pg_dump / restore).
    #[name = c"envelope"]
    Envelope,
}

pub fn init() {
    warn_if_set_before_load();
    // First: the key settings' check hooks read pazpaz.require_wrapped_keys.
    define_server_key_settings();
    let secret = GucFlags::NO_SHOW_ALL;
    // SAFETY: called once per process from _PG_init; the names and
    // descriptions are 'static C strings, the settings are 'static, and the
    // hooks have the signatures PostgreSQL's GUC machinery calls them with.
    unsafe {
        GucRegistry::define_string_guc_with_hooks(
            KEY,
            c"AES-256 key (base64 of 32 bytes) for this session; same as pazpaz.encryption_keys = {\"v1\": key}.",
            c"Set per session or transaction with set_config(); never stored in configuration files or role settings.",
            &ENCRYPTION_KEY,
            GucContext::Userset,
            secret,
            Some(check_key),
            Some(assign_key),
            Some(show_key),
        );
        GucRegistry::define_string_guc_with_hooks(
            KEYS,
            c"Keyring for this session: JSON object of key version to base64 AES-256 key.",
            c"Set per session or transaction with set_config(); never stored in configuration files or role settings.",
            &ENCRYPTION_KEYS,
            GucContext::Userset,
            secret,
            Some(check_keys),
            Some(assign_key),
            Some(show_keys),
        );
        GucRegistry::define_string_guc_with_hooks(
            KEY_VERSION,
            c"Key version that new encryptions use (with pazpaz.encryption_keys).",
            c"",
            &ENCRYPTION_KEY_VERSION,
            GucContext::Userset,
            GucFlags::default(),
            Some(check_version),
            Some(assign_key),
            None,
        );
        GucRegistry::define_string_guc_with_hooks(
            INDEX_KEY,
            c"Index key (base64 of 32 bytes) of blind indexes and match tokens for this session; separate from the data keys.",
            c"Set per session or transaction with set_config(); never stored in configuration files or role settings.",
            &INDEX_KEY_SETTING,
            GucContext::Userset,
            secret,
            Some(check_index_key),
            Some(assign_index_key),
            Some(show_index_key),
        );
        GucRegistry::define_string_guc_with_hooks(
            INDEX_KEY_NEXT,
            c"The next index key (base64 of 32 bytes), set beside pazpaz.index_key while search indexes are rebuilt under it.",
            c"Set per session or transaction with set_config(); never stored in configuration files or role settings.",
            &INDEX_KEY_NEXT_SETTING,
            GucContext::Userset,
            secret,
            Some(check_index_key_next),
            Some(assign_index_key),
            Some(show_index_key_next),
        );
        GucRegistry::define_string_guc_with_hooks(
            TRANSPORT,
            c"Per-transaction secret (base64 of 32 bytes) of the transport form of encrypted_text values between Citus nodes.",
            c"Set by set_keys(..., true) and forward_keys(); not meant to be set by hand.",
            &TRANSPORT_SETTING,
            GucContext::Userset,
            secret,
            Some(check_transport),
            None,
            Some(show_transport),
        );
        GucRegistry::define_enum_guc(
            c"pazpaz.encrypted_text_io",
            c"Text form of encrypted_text values: plaintext (encrypt on input, decrypt on output) or envelope (ciphertext as pazpaz:<base64>, no key needed).",
            c"Set to envelope for a keyless pg_dump and restore.",
            &ENCRYPTED_TEXT_IO,
            GucContext::Userset,
            GucFlags::default(),
        );
        GucRegistry::define_bool_guc(
            c"pazpaz.log_redact_values",
            c"Redact values (bind parameters, row values in details, input data, plan literals) from the server log.",
            c"Keys are always redacted. Turning this off lets plaintext that a session writes or reads reach the server log.",
            &LOG_REDACT_VALUES,
            GucContext::Suset,
            GucFlags::default(),
        );
        pg_sys::MarkGUCPrefixReserved(c"pazpaz".as_ptr());
    }
}

/// The server's key-encryption keys and the wrapped-keys policy.
///
/// - `pazpaz.kek_file`, `pazpaz.kek_command`: PGC_POSTMASTER. The KEK ring is
///   read once, by the postmaster, when the library is preloaded (`kek.rs`);
///   every process inherits it through fork. Not re-read on reload: running
///   a command or re-reading a file in every backend at SIGHUP would put the
///   KEKs through many more processes and could leave backends with
///   different rings; a restart is the one moment all of them agree.
///   GUC_SUPERUSER_ONLY: a command may carry a secret manager's address or
///   token.
/// - `pazpaz.require_wrapped_keys` (data keys and index keys alike):
///   PGC_SIGHUP, so it is one policy for every
///   session, set where the operator sets the KEK (postgresql.conf), and
///   changeable without a restart once the applications send wrapped keys;
///   neither an ordinary role nor a superuser's session can turn it off for
///   itself. Its change drops cached keyrings, so keys already set are judged
///   again at their next use.
fn define_server_key_settings() {
    // SAFETY: called once per process from _PG_init, as `init`; 'static
    // names, descriptions and settings, and a hook of the bool assign type.
    // The postmaster settings exist only when the library is preloaded:
    // PostgreSQL refuses (FATAL) to create them in a running server, when a
    // backend loads the library for CREATE EXTENSION or LOAD, and there
    // they would mean nothing (the KEK ring is read by the postmaster only).
    unsafe {
        GucRegistry::define_bool_guc_with_hooks(
            c"pazpaz.require_wrapped_keys",
            c"Refuse raw keys: the data key and index key settings accept only keys wrapped by the server's key-encryption key (pzw1:…).",
            c"Set in postgresql.conf; takes effect at reload, for keys already set at their next use.",
            &REQUIRE_WRAPPED_KEYS,
            GucContext::Sighup,
            GucFlags::default(),
            None,
            Some(assign_require_wrapped),
            None,
        );
        if !pg_sys::process_shared_preload_libraries_in_progress {
            return;
        }
        GucRegistry::define_string_guc(
            c"pazpaz.kek_file",
            c"File holding the server's key-encryption key ring (JSON), read once at server start.",
            c"Must be owned by the server's user with no group or other access (like server.key). Relative paths are relative to the data directory. Needs pazpaz_crypto in shared_preload_libraries.",
            &KEK_FILE,
            GucContext::Postmaster,
            GucFlags::SUPERUSER_ONLY,
        );
        GucRegistry::define_string_guc(
            c"pazpaz.kek_command",
            c"Command run once at server start that prints the key-encryption key ring (JSON) on its standard output.",
            c"Like ssl_passphrase_command: a non-zero exit stops the server. Needs pazpaz_crypto in shared_preload_libraries.",
            &KEK_COMMAND,
            GucContext::Postmaster,
            GucFlags::SUPERUSER_ONLY,
        );
        GucRegistry::define_int_guc(
            c"pazpaz.kek_command_timeout",
            c"How long the server waits at start for pazpaz.kek_command; past it the command's process group is killed and the server does not start.",
            c"The command must print the ring, close its standard output and exit within this time.",
            &KEK_COMMAND_TIMEOUT,
            1,
            3600,
            GucContext::Postmaster,
            GucFlags::UNIT_S,
        );
    }
}

/// `pazpaz.kek_file` and `pazpaz.kek_command` (unset or empty: `None`).
pub fn kek_sources() -> (Option<String>, Option<String>) {
    let read =
        |s: &GucSetting<Option<CString>>| s.get().and_then(|c| c.into_string().ok()).filter(|v| !v.trim().is_empty());
    (read(&KEK_FILE), read(&KEK_COMMAND))
}

/// `pazpaz.kek_command_timeout`.
pub fn kek_command_timeout() -> std::time::Duration {
    std::time::Duration::from_secs(u64::try_from(KEK_COMMAND_TIMEOUT.get()).unwrap_or(30).max(1))
}

/// `pazpaz.require_wrapped_keys`.
pub fn require_wrapped_keys() -> bool {
    REQUIRE_WRAPPED_KEYS.get()
}

/// What a key setting's value may be right now: raw or wrapped under the
/// server's KEKs, as `pazpaz.require_wrapped_keys` says.
pub fn key_policy() -> KeyPolicy<'static> {
    KeyPolicy { keks: kek::ring(), require_wrapped: require_wrapped_keys(), on_unwrap: None }
}

/// The policy of the check hooks: each unwrapped data key is remembered for
/// the log filter too, so that the raw key is scrubbed in every spelling
/// wherever it might appear, though only its wrapped form was SET.
fn checking_policy() -> KeyPolicy<'static> {
    KeyPolicy { on_unwrap: Some(&log_secrets::remember_raw), ..key_policy() }
}

#[pg_guard]
unsafe extern "C-unwind" fn assign_require_wrapped(_newval: bool, _extra: *mut c_void) {
    for hook in [&ON_KEY_CHANGE, &ON_INDEX_KEY_CHANGE] {
        if let Some(f) = hook.get() {
            f();
        }
    }
}

/// Before the library is loaded in a backend, PostgreSQL keeps `SET pazpaz.*`
/// as an unvalidated placeholder that any role can read back. Say so loudly.
fn warn_if_set_before_load() {
    for name in [KEY, KEYS, INDEX_KEY, INDEX_KEY_NEXT] {
        // SAFETY: a NUL-terminated name; missing_ok, so an unknown name gives
        // NULL rather than an ERROR. The result is NULL or a C string owned by
        // the GUC machinery, read at once.
        let v = unsafe { pg_sys::GetConfigOption(name.as_ptr(), true, false) };
        // SAFETY: non-null, so it points to at least its NUL terminator.
        if !v.is_null() && unsafe { *v } != 0 {
            error::warn(Error::SetBeforeLoad { name: name.to_string_lossy().into_owned() });
        }
    }
    // SAFETY: a plain flag of PostgreSQL's, set around the preload loop.
    if unsafe { pg_sys::process_shared_preload_libraries_in_progress } {
        return; // preloaded: the KEK settings are about to be defined, and read
    }
    // Loaded by a backend: postgresql.conf may still set the KEK settings,
    // which then never took effect, and, never defined by this library, are
    // placeholders that any role can read with SHOW (a kek_command may hold
    // a secret manager's token).
    for name in [c"pazpaz.kek_file", c"pazpaz.kek_command"] {
        // SAFETY: as above.
        let v = unsafe { pg_sys::GetConfigOption(name.as_ptr(), true, false) };
        // SAFETY: non-null, so it points to at least its NUL terminator.
        if !v.is_null() && unsafe { *v } != 0 {
            error::warn(Error::KekSettingWithoutPreload { name: name.to_string_lossy().into_owned() });
        }
    }
}

/// Current text I/O mode of `encrypted_text`.
pub fn text_io() -> TextIo {
    ENCRYPTED_TEXT_IO.get()
}

/// Whether the log filter redacts values (`pazpaz.log_redact_values`).
pub fn log_redact_values() -> bool {
    LOG_REDACT_VALUES.get()
}

/// Registers the function that runs after every change of a key setting
/// (the key cache drops its keyring there). Settings know nothing else of it.
pub fn on_key_change(f: fn()) {
    ON_KEY_CHANGE.set(Some(f));
}

/// Registers the function that runs after every change of an index key
/// setting (the index key cache drops its keys there).
pub fn on_index_key_change(f: fn()) {
    ON_INDEX_KEY_CHANGE.set(Some(f));
}

/// A zeroizing copy of a string setting's current value.
fn zeroizing_copy(s: &GucSetting<Option<CString>>) -> Option<Zeroizing<String>> {
    // SAFETY: `as_ptr` is the address of the setting's C string variable,
    // which PostgreSQL keeps NULL or pointing to the current value.
    let raw = unsafe { *s.as_ptr() };
    if raw.is_null() {
        return None;
    }
    // SAFETY: a non-null GUC value is a NUL-terminated string that lives
    // until the setting changes, after this copy.
    let bytes = unsafe { CStr::from_ptr(raw) }.to_bytes();
    // Invalid UTF-8 cannot pass the check hook; treat it as unset.
    std::str::from_utf8(bytes).ok().map(|s| Zeroizing::new(s.to_owned()))
}

/// Zeroizing copies of the three key settings, for building the keyring.
pub fn key_settings() -> [Option<Zeroizing<String>>; 3] {
    [&ENCRYPTION_KEY, &ENCRYPTION_KEYS, &ENCRYPTION_KEY_VERSION].map(zeroizing_copy)
}

/// Zeroizing copies of `pazpaz.index_key` and `pazpaz.index_key_next`.
pub fn index_key_settings() -> [Option<Zeroizing<String>>; 2] {
    [&INDEX_KEY_SETTING, &INDEX_KEY_NEXT_SETTING].map(zeroizing_copy)
}

/// The transport secret of this transaction (`TRANSPORT`), decoded; `None`
/// when it is not set.
pub fn transport_secret() -> Option<Zeroizing<[u8; 32]>> {
    let text = zeroizing_copy(&TRANSPORT_SETTING)?;
    pazpaz_core::data_key::decode_key_base64(&text).ok()
}

/// Wipes the current values of the key settings in place.
///
/// # Safety
/// Only for backend exit, when no saved value will be restored and nothing
/// reads the settings again (see `keys.rs`).
pub unsafe fn wipe_key_strings() {
    for s in [&ENCRYPTION_KEY, &ENCRYPTION_KEYS, &INDEX_KEY_SETTING, &INDEX_KEY_NEXT_SETTING, &TRANSPORT_SETTING] {
        // SAFETY: the setting's C string variable, NULL or the current value.
        let raw = unsafe { *s.as_ptr() };
        if !raw.is_null() {
            // SAFETY: a non-null GUC value is a NUL-terminated string.
            let len = unsafe { CStr::from_ptr(raw) }.to_bytes().len();
            // SAFETY: its `len` bytes before the NUL are PostgreSQL's own
            // malloc'd copy, writable, and nothing else reads them while we
            // wipe (single-threaded backend at exit; the caller's contract).
            let bytes = unsafe { std::slice::from_raw_parts_mut(raw.cast::<u8>(), len) };
            zeroize::Zeroize::zeroize(bytes);
        }
    }
}

// ---- hooks -----------------------------------------------------------------

/// Sources that would keep a key in plain text outside the session.
fn forbidden_source(source: pg_sys::GucSource::Type) -> Option<&'static str> {
    use pg_sys::GucSource::*;
    match source {
        PGC_S_FILE => Some("a configuration file or ALTER SYSTEM"),
        PGC_S_ARGV | PGC_S_ENV_VAR => Some("the server command line or environment"),
        PGC_S_GLOBAL | PGC_S_DATABASE | PGC_S_USER | PGC_S_DATABASE_USER => {
            Some("ALTER ROLE or ALTER DATABASE settings")
        }
        // ALTER ROLE/DATABASE … SET and CREATE FUNCTION … SET validate with PGC_S_TEST.
        PGC_S_TEST => Some("ALTER ROLE, ALTER DATABASE or a function's SET clause"),
        _ => None,
    }
}

/// Fails a check hook with `msg`, and the SQLSTATE and hint of `e` (a check
/// hook must not raise). Postgres frees the strings; they must be palloc'd.
///
/// # Safety
/// Only inside a GUC check hook.
unsafe fn check_fail(e: &Error, msg: &str) -> bool {
    let code = error::sqlstate(e.class());
    let hint = error::hint(e);
    // pgrx's pstrdup panics on a NUL, and a panic message would quote the
    // string: NULs are replaced first.
    let c_safe = |s: &str| s.replace('\0', "?");
    // SAFETY: called from a check hook (the caller's contract), where
    // PostgreSQL reads and frees GUC_check_errmsg_string and
    // GUC_check_errhint_string; pstrdup copies the strings into the current
    // (palloc) context as it expects.
    unsafe {
        pg_sys::GUC_check_errcode(code as i32);
        pg_sys::GUC_check_errmsg_string = PgMemoryContexts::CurrentMemoryContext.pstrdup(&c_safe(msg));
        if let Some(h) = hint {
            pg_sys::GUC_check_errhint_string = PgMemoryContexts::CurrentMemoryContext.pstrdup(&c_safe(h));
        }
    }
    false
}

/// The check hook of a key setting.
///
/// # Safety
/// Only inside a GUC check hook, with the `newval` PostgreSQL passed to it.
unsafe fn check_secret(
    name: &CStr,
    newval: *mut *mut c_char,
    source: pg_sys::GucSource::Type,
    parse: fn(&str) -> Result<(), Error>,
) -> bool {
    // SAFETY: `newval` is the check hook's argument (the caller's contract):
    // a valid pointer to the proposed value, NULL or a C string.
    let raw = unsafe { *newval };
    if raw.is_null() {
        return true;
    }
    // SAFETY: non-null, so a NUL-terminated string alive during the hook.
    let bytes = unsafe { CStr::from_ptr(raw) }.to_bytes();
    if bytes.iter().all(|b| b.is_ascii_whitespace()) {
        return true; // empty: no key, nothing secret to protect
    }
    let name = name.to_string_lossy();
    // First of all, so that the log filter scrubs this value from every
    // later message — including the refusals below and PostgreSQL's report
    // of the statement that carried it. A value longer than any valid one
    // is refused, having been remembered by its first MAX_SETTING_BYTES
    // only (remembering copies what it looks at several times; any role can
    // set these): its statement is hidden by the shape rule, and its start
    // scrubbed wherever it appears.
    let remembered = log_secrets::remember(bytes);
    if bytes.len() > MAX_SETTING_BYTES {
        let e = Error::SettingTooLong { max: MAX_SETTING_BYTES };
        // SAFETY: inside a check hook (this function's contract).
        return unsafe { check_fail(&e, &format!("invalid value for {name}: {e}")) };
    }
    if let Err(e) = remembered {
        // SAFETY: inside a check hook (this function's contract).
        return unsafe { check_fail(&e, &format!("invalid value for {name}: {e}")) };
    }
    if let Some(where_) = forbidden_source(source) {
        let e = Error::KeySettingSource { name: name.into_owned(), origin: where_ };
        // SAFETY: inside a check hook (this function's contract).
        return unsafe { check_fail(&e, &e.to_string()) };
    }
    let Ok(text) = std::str::from_utf8(bytes) else {
        let e = Error::SettingNotUtf8;
        // SAFETY: inside a check hook (this function's contract).
        return unsafe { check_fail(&e, &format!("invalid value for {name}: {e}")) };
    };
    match parse(text) {
        Ok(()) => true,
        // Core messages never contain the value.
        // SAFETY: inside a check hook (this function's contract).
        Err(e) => unsafe { check_fail(&e, &format!("invalid value for {name}: {e}")) },
    }
}

#[pg_guard]
unsafe extern "C-unwind" fn check_key(
    newval: *mut *mut c_char,
    _extra: *mut *mut c_void,
    source: pg_sys::GucSource::Type,
) -> bool {
    // SAFETY: PostgreSQL calls this check hook with a valid `newval`.
    unsafe { check_secret(KEY, newval, source, |t| Keyring::from_single_key_with(t, &checking_policy()).map(drop)) }
}

#[pg_guard]
unsafe extern "C-unwind" fn check_keys(
    newval: *mut *mut c_char,
    _extra: *mut *mut c_void,
    source: pg_sys::GucSource::Type,
) -> bool {
    // SAFETY: PostgreSQL calls this check hook with a valid `newval`.
    unsafe { check_secret(KEYS, newval, source, |t| Keyring::from_json_with(t, &checking_policy()).map(drop)) }
}

#[pg_guard]
unsafe extern "C-unwind" fn check_index_key(
    newval: *mut *mut c_char,
    _extra: *mut *mut c_void,
    source: pg_sys::GucSource::Type,
) -> bool {
    // SAFETY: PostgreSQL calls this check hook with a valid `newval`.
    unsafe { check_secret(INDEX_KEY, newval, source, |t| IndexKey::from_setting(t, &checking_policy()).map(drop)) }
}

#[pg_guard]
unsafe extern "C-unwind" fn check_index_key_next(
    newval: *mut *mut c_char,
    _extra: *mut *mut c_void,
    source: pg_sys::GucSource::Type,
) -> bool {
    // SAFETY: PostgreSQL calls this check hook with a valid `newval`.
    unsafe { check_secret(INDEX_KEY_NEXT, newval, source, |t| IndexKey::from_setting(t, &checking_policy()).map(drop)) }
}

#[pg_guard]
unsafe extern "C-unwind" fn check_transport(
    newval: *mut *mut c_char,
    _extra: *mut *mut c_void,
    source: pg_sys::GucSource::Type,
) -> bool {
    // Not `check_secret`: a transport secret is fresh in every transaction
    // and worthless after it, so the log filter need not remember it (its
    // statements are redacted by name), and remembering one per transaction
    // would push the keys' own spellings out of the filter's bounded memory.
    // SAFETY: PostgreSQL calls this check hook with a valid pointer to the
    // proposed value, NULL or a C string alive during the hook.
    let raw = unsafe { *newval };
    if raw.is_null() {
        return true;
    }
    // SAFETY: non-null, so a NUL-terminated string.
    let bytes = unsafe { CStr::from_ptr(raw) }.to_bytes();
    if bytes.is_empty() {
        return true;
    }
    let checked = match forbidden_source(source) {
        Some(where_) => Err(Error::KeySettingSource { name: TRANSPORT.to_string_lossy().into_owned(), origin: where_ }),
        None => std::str::from_utf8(bytes)
            .map_err(|_| Error::SettingNotUtf8)
            .and_then(|t| pazpaz_core::data_key::decode_key_base64(t).map(drop)),
    };
    match checked {
        Ok(()) => true,
        // SAFETY: inside a check hook.
        Err(e) => unsafe { check_fail(&e, &format!("invalid value for pazpaz.encryption_transport: {e}")) },
    }
}

#[pg_guard]
unsafe extern "C-unwind" fn check_version(
    newval: *mut *mut c_char,
    _extra: *mut *mut c_void,
    _source: pg_sys::GucSource::Type,
) -> bool {
    // SAFETY: PostgreSQL calls this check hook with a valid pointer to the
    // proposed value, NULL or a C string.
    let raw = unsafe { *newval };
    if raw.is_null() {
        return true;
    }
    // SAFETY: non-null, so a NUL-terminated string alive during the hook.
    let v = unsafe { CStr::from_ptr(raw) }.to_bytes();
    if v.is_empty() {
        return true;
    }
    match std::str::from_utf8(v).map_err(|_| Error::BadVersionName).and_then(validate_version) {
        Ok(()) => true,
        // SAFETY: inside a check hook.
        Err(e) => unsafe { check_fail(&e, &format!("invalid value for pazpaz.encryption_key_version: {e}")) },
    }
}

/// Any change of a key setting (SET, SET LOCAL, RESET, DISCARD ALL, the end of
/// a transaction that had SET LOCAL, a parallel worker restoring the leader's
/// settings) drops the cached keyring; dropping it zeroizes the key schedule.
#[pg_guard]
unsafe extern "C-unwind" fn assign_key(_newval: *const c_char, _extra: *mut c_void) {
    if let Some(f) = ON_KEY_CHANGE.get() {
        f();
    }
}

/// As `assign_key`, for the index key settings.
#[pg_guard]
unsafe extern "C-unwind" fn assign_index_key(_newval: *const c_char, _extra: *mut c_void) {
    if let Some(f) = ON_INDEX_KEY_CHANGE.get() {
        f();
    }
}

// Even a role allowed to read a key setting sees only whether it is set.
// (Parallel workers still get the real value: GUC serialization reads the
// variable, not the show hook.)
fn mask(setting: &GucSetting<Option<CString>>) -> *const c_char {
    // SAFETY: the setting's C string variable, NULL or the current value.
    let raw = unsafe { *setting.as_ptr() };
    // SAFETY: non-null, so it points to at least its NUL terminator.
    if raw.is_null() || unsafe { *raw } == 0 {
        c"".as_ptr()
    } else {
        c"(hidden)".as_ptr()
    }
}

#[pg_guard]
unsafe extern "C-unwind" fn show_key() -> *const c_char {
    mask(&ENCRYPTION_KEY)
}

#[pg_guard]
unsafe extern "C-unwind" fn show_keys() -> *const c_char {
    mask(&ENCRYPTION_KEYS)
}

#[pg_guard]
unsafe extern "C-unwind" fn show_index_key() -> *const c_char {
    mask(&INDEX_KEY_SETTING)
}

#[pg_guard]
unsafe extern "C-unwind" fn show_index_key_next() -> *const c_char {
    mask(&INDEX_KEY_NEXT_SETTING)
}

#[pg_guard]
unsafe extern "C-unwind" fn show_transport() -> *const c_char {
    mask(&TRANSPORT_SETTING)
}
