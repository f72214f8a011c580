//! Core errors → PostgreSQL errors. The one place where SQLSTATEs are chosen.

use pazpaz_core::error::{Error, ErrorClass};
use pgrx::pg_sys::panic::ErrorReport;
use pgrx::prelude::*;

/// The function name the extension's errors carry; the log filter leaves
/// their quoted parts alone (they quote only names, never values).
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
    }
}

fn hint(e: &Error) -> Option<&'static str> {
    match e {
        Error::MissingKey => Some("An application sets its key per session or transaction with SELECT set_config('pazpaz.encryption_key', $1, false)."),
        Error::DecryptionFailed => Some("The value was encrypted with another key or associated data, or it was altered."),
        Error::EncryptedDefault => Some("Write DEFAULT 'value'::text::encrypted_text: the cast encrypts on every insert, under the key of the session that inserts."),
        Error::PlaintextIndex => Some("Index key_version(col) or the ciphertext itself; never an expression that decrypts."),
        Error::BothKeySettings => Some("Use pazpaz.encryption_keys with pazpaz.encryption_key_version for several keys, or pazpaz.encryption_key for one."),
        _ => None,
    }
}

/// Raises `e` as an ERROR. Messages come from the core and never contain
/// key material or plaintext.
#[track_caller]
pub fn raise(e: Error) -> ! {
    let mut report = ErrorReport::new(sqlstate(e.class()), e.to_string(), FUNCNAME_STR);
    if let Some(h) = hint(&e) {
        report = report.set_hint(h);
    }
    report.report(PgLogLevel::ERROR);
    unreachable!("ERROR does not return")
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
