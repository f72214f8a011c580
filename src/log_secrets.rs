//! The key strings this backend holds or held, for the log filter to scrub
//! by value (`pazpaz_core::redact::Secrets`): kept as keyed digests of their
//! 20-byte windows, never as text.
//!
//! The key settings' check hooks hand every value they see here — valid or
//! not, from SET, set_config(), the startup packet or a parallel worker's
//! copy of the leader's settings — before anything else happens to it.

use std::cell::RefCell;

use pazpaz_core::redact::Secrets;
use pazpaz_core::Error;

use crate::backend_local::{BackendLocal, LocalCell};

static SECRETS: LocalCell<Secrets> = BackendLocal::new(RefCell::new(Secrets::new()));
/// The server's key-encryption keys (digests of the text of their ring and
/// of every key in every spelling), remembered by the postmaster and inherited by every
/// process. Kept apart from `SECRETS`: they are scrubbed the same way, but
/// do not make every session count as one that holds keys (which tightens
/// the filter's value rules).
static SERVER_SECRETS: LocalCell<Secrets> = BackendLocal::new(RefCell::new(Secrets::new()));

/// Remembers a value given to a key setting (its first
/// `redact::MAX_REMEMBERED` bytes). `Err` only when memory ran out: the
/// caller fails with that error rather than go on with a key that the filter
/// might not know.
pub fn remember(value: &[u8]) -> Result<(), Error> {
    match SECRETS.try_borrow_mut() {
        Ok(mut s) => s.remember(value),
        Err(_) => Ok(()),
    }
}

/// Remembers a data key given as raw bytes (one just unwrapped), in every
/// spelling: the session set only its wrapped form.
pub fn remember_raw(raw: &[u8; 32]) {
    if let Ok(mut s) = SECRETS.try_borrow_mut() {
        // A few dozen bytes; if even they cannot be had, PostgreSQL's next
        // allocation reports the shortage.
        let _ = s.remember_raw_key(raw);
    }
}

/// Remembers the text of the KEK ring (postmaster, at start-up).
pub fn remember_server(value: &[u8]) -> Result<(), Error> {
    match SERVER_SECRETS.try_borrow_mut() {
        Ok(mut s) => s.remember(value),
        Err(_) => Ok(()),
    }
}

/// Remembers one KEK, as raw bytes, in every spelling.
pub fn remember_server_key(raw: &[u8; 32]) {
    if let Ok(mut s) = SERVER_SECRETS.try_borrow_mut() {
        // As `remember_raw`.
        let _ = s.remember_raw_key(raw);
    }
}

/// Runs `f` over the server's secrets (`None`: being changed right now).
pub fn with_server<R>(f: impl FnOnce(&Secrets) -> R) -> Option<R> {
    SERVER_SECRETS.try_borrow().ok().map(|s| f(&s))
}

/// Runs `f` over the secrets; `None` if they are being changed right now
/// (an error raised from inside `remember`), which callers treat as "redact
/// everything".
pub fn with<R>(f: impl FnOnce(&Secrets) -> R) -> Option<R> {
    SECRETS.try_borrow().ok().map(|s| f(&s))
}

/// Forgets them (backend exit).
pub fn forget_all() {
    if let Ok(mut s) = SECRETS.try_borrow_mut() {
        s.clear();
    }
}
