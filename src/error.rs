//! Core errors → PostgreSQL errors. The one place where SQLSTATEs are chosen.
//!
//! Every error the Rust code reports is a `pazpaz_core::Error`, raised by
//! `raise` (or `warn` for a WARNING) with the SQLSTATE of its class, below.
//! The deliberate exceptions, each for a reason:
//! - `src/cpu_check.c` raises 0A000 itself from `_PG_init`: it runs before any
//!   Rust code, which may use instructions this CPU lacks.
//! - `sql/rotation.sql` and `sql/require_utf8.sql` are SQL (PL/pgSQL `RAISE …
//!   USING ERRCODE`), outside the Rust code.
//! - The GUC check hooks (`gucs.rs`) must not raise: they return false and set
//!   PostgreSQL's check message, hint and code (`GUC_check_errcode`), but
//!   that code and the hint come from `sqlstate` and `hint` here.

use pazpaz_core::error::{Error, ErrorClass};
use pgrx::pg_sys::panic::ErrorReport;
use pgrx::prelude::*;

/// The function name the extension's errors carry; the log filter leaves
/// their quoted parts alone (they quote only names, never values).
/// (The same name twice: `ErrorReport` takes a `&str`, the filter compares
/// the C string PostgreSQL stored.)
pub const FUNCNAME: &std::ffi::CStr = c"pazpaz_crypto";
const FUNCNAME_STR: &str = "pazpaz_crypto";

pub fn sqlstate(class: ErrorClass) -> PgSqlErrorCode {
    use PgSqlErrorCode::*;
    match class {
        ErrorClass::InvalidParameter => ERRCODE_INVALID_PARAMETER_VALUE,
        ErrorClass::MissingKey => ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
        ErrorClass::UnknownVersion => ERRCODE_UNDEFINED_OBJECT,
        ErrorClass::AuthenticationFailed => ERRCODE_DATA_EXCEPTION,
        ErrorClass::InvalidBinary => ERRCODE_INVALID_BINARY_REPRESENTATION,
        ErrorClass::InvalidText => ERRCODE_INVALID_TEXT_REPRESENTATION,
        ErrorClass::InvalidCharacter => ERRCODE_CHARACTER_NOT_IN_REPERTOIRE,
        ErrorClass::TooLong => ERRCODE_STRING_DATA_RIGHT_TRUNCATION,
        ErrorClass::TooLarge => ERRCODE_PROGRAM_LIMIT_EXCEEDED,
        ErrorClass::System => ERRCODE_SYSTEM_ERROR,
        ErrorClass::Unsupported => ERRCODE_FEATURE_NOT_SUPPORTED,
        ErrorClass::InsufficientPrivilege => ERRCODE_INSUFFICIENT_PRIVILEGE,
        ErrorClass::ObjectInUse => ERRCODE_OBJECT_IN_USE,
        ErrorClass::UndefinedObject => ERRCODE_UNDEFINED_OBJECT,
        ErrorClass::DatatypeMismatch => ERRCODE_DATATYPE_MISMATCH,
        ErrorClass::Warning => ERRCODE_WARNING,
        ErrorClass::OutOfMemory => ERRCODE_OUT_OF_MEMORY,
        ErrorClass::ConfigFile => ERRCODE_CONFIG_FILE_ERROR,
    }
}

pub fn hint(e: &Error) -> Option<&'static str> {
    match e {
        Error::MissingKey => Some("An application sets its key per session or transaction with SELECT set_config('pazpaz.encryption_key', $1, false)."),
        Error::DecryptionFailed => Some("The value was encrypted with another key or associated data, or it was altered."),
        Error::EncryptedDefault => Some("Write DEFAULT 'value'::text::encrypted_text: the cast encrypts on every insert, under the key of the session that inserts."),
        Error::PlaintextIndex => Some("Index key_version(col) or the ciphertext itself; never an expression that decrypts."),
        Error::MissingIndexKey { .. } | Error::IndexKeyNotSet { .. } => Some("An application sets its index key per session or transaction with SELECT set_config('pazpaz.index_key', $1, false), like its data keys."),
        Error::TriggerAfterSearchIndex { .. } => Some("BEFORE triggers fire in the byte order of their names: rename it to sort before zz_pazpaz_ (ALTER TRIGGER … RENAME TO …), or make it an AFTER trigger."),
        Error::SearchTriggersInUse { .. } => Some("Change the triggers in a statement of their own, not from a function or trigger that runs inside a statement on the table."),
        Error::SearchIndexInTree { .. } => Some("Drop the search index first (drop_blind_index / drop_match_index), or keep the table out of inheritance trees."),
        Error::TriggerOfAnotherRole { .. } => Some("The UPDATE would run that code in this session, with its keys: drop the trigger, or have its functions owned by the table's owner; and revoke TRIGGER on the table from other roles (GRANT ALL includes it)."),
        Error::TableOfAnotherOwner { .. } => Some("The UPDATE would run that table's triggers and index expressions in this session, with its keys: give every partition and child the owner of the table (ALTER TABLE … OWNER TO), or run the procedure on each table as its owner."),
        Error::SearchColumnChanged { .. } => Some("Drop the search index first (drop_blind_index / drop_match_index), change the column, then add the index again."),
        Error::QueryTooShort => Some("Trigram tokens cannot narrow a shorter query down; search such values with the exact blind index, or scan."),
        Error::BothKeySettings => Some("Use pazpaz.encryption_keys with pazpaz.encryption_key_version for several keys, or pazpaz.encryption_key for one."),
        Error::NoKek => Some("See the README, \"Wrapped keys\": the postmaster loads the key-encryption keys at start-up. kek_status() lists the loaded ones."),
        Error::UnknownKek { .. } => Some("A wrapped key works only on a server that loaded the key-encryption key it names; rewrap_encryption_key moves it to another loaded one."),
        Error::WrappedKeyAuth { .. } => Some("The wrapped key was altered, or it was made by a server whose key-encryption key of that id is another key."),
        Error::WrappedKeyTruncated => Some("Copy the wrapped key whole: pzw1:, the key-encryption key id, a colon and 80 base64 characters."),
        Error::RawKeyRefused => Some("Wrap each key once (a superuser runs SELECT wrap_encryption_key($1)), store the wrapped form in the secret manager and set that; generate_wrapped_encryption_key() makes new keys."),
        Error::KeySettingSource { .. } => Some("Keys are session state: a key stored there would sit in plain text in a file or in pg_db_role_setting. Have the application run SELECT set_config('pazpaz.encryption_key', $1, false) when it opens or checks out a connection (is_local = true per transaction behind a transaction-mode pooler)."),
        _ => None,
    }
}

fn detail(e: &Error) -> Option<&'static str> {
    match e {
        Error::SetBeforeLoad { .. } => Some("Until the library is loaded the value is an unprotected placeholder that SHOW and current_setting() reveal to any role. Add pazpaz_crypto to shared_preload_libraries."),
        Error::KekSettingWithoutPreload { .. } => Some("The key-encryption keys are read by the postmaster at start-up only. Add pazpaz_crypto to shared_preload_libraries and restart; until then keep no secret in the setting (a kek_command should read its token from a file only the server's user can read)."),
        _ => None,
    }
}

#[track_caller]
fn report(e: &Error) -> ErrorReport {
    let mut report = ErrorReport::new(sqlstate(e.class()), e.to_string(), FUNCNAME_STR);
    if let Some(d) = detail(e) {
        report = report.set_detail(d);
    }
    if let Some(h) = hint(e) {
        report = report.set_hint(h);
    }
    report
}

/// Raises `e` as an ERROR. Messages come from the core and never contain
/// key material or plaintext.
#[track_caller]
pub fn raise(e: Error) -> ! {
    report(&e).report(PgLogLevel::ERROR);
    unreachable!("ERROR does not return")
}

/// Reports `e` as a WARNING and returns.
#[track_caller]
pub fn warn(e: Error) {
    report(&e).report(PgLogLevel::WARNING);
}

/// Runs a PostgreSQL call that waits for a lock. An ERROR that interrupts
/// the wait (lock_timeout, statement_timeout, a cancel, a deadlock) is
/// raised again as PostgreSQL raised it (its SQLSTATE, message, detail and
/// hint) but without the Rust backtrace that pgrx's FFI guard would add to
/// its DETAIL, and under PostgreSQL's function name, not the extension's
/// (the log filter treats it as any other server error).
pub fn waiting<R>(wait: impl FnOnce() -> R + std::panic::UnwindSafe) -> R {
    PgTryBuilder::new(wait)
        .catch_others(|caught| match caught {
            pg_sys::panic::CaughtError::PostgresError(e) => {
                let mut again = ErrorReport::new(e.sql_error_code(), e.message().to_owned(), "");
                if let Some(d) = e.detail() {
                    again = again.set_detail(d);
                }
                if let Some(h) = e.hint() {
                    again = again.set_hint(h);
                }
                again.report(PgLogLevel::ERROR);
                unreachable!("ERROR does not return")
            }
            other => other.rethrow(),
        })
        .execute()
}

/// Raises PostgreSQL's "out of memory" ERROR (53200).
pub fn raise_out_of_memory() -> ! {
    ErrorReport::new(PgSqlErrorCode::ERRCODE_OUT_OF_MEMORY, "out of memory", FUNCNAME_STR).report(PgLogLevel::ERROR);
    unreachable!("ERROR does not return")
}

pub trait OrRaise<T> {
    fn or_raise(self) -> T;
}

impl<T> OrRaise<T> for Result<T, Error> {
    #[track_caller]
    fn or_raise(self) -> T {
        match self {
            Ok(v) => v,
            Err(e) => raise(e),
        }
    }
}
