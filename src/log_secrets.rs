//! The key strings this backend holds or held, for the log filter to scrub
//! by value (`pazpaz_core::redact::Secrets`).
//!
//! The key settings' check hooks hand every value they see here — valid or
//! not, from SET, set_config(), the startup packet or a parallel worker's
//! copy of the leader's settings — before anything else happens to it.

use std::cell::RefCell;

use pazpaz_core::redact::Secrets;

use crate::backend_local::{BackendLocal, LocalCell};

static SECRETS: LocalCell<Secrets> = BackendLocal::new(RefCell::new(Secrets::new()));

/// Remembers a value given to a key setting.
pub fn remember(value: &[u8]) {
    if let Ok(mut s) = SECRETS.try_borrow_mut() {
        s.remember(value);
    }
}

/// Runs `f` over the secrets; `None` if they are being changed right now
/// (an error raised from inside `remember`), which callers treat as "redact
/// everything".
pub fn with<R>(f: impl FnOnce(&Secrets) -> R) -> Option<R> {
    SECRETS.try_borrow().ok().map(|s| f(&s))
}

/// Wipes them (backend exit).
pub fn forget_all() {
    if let Ok(mut s) = SECRETS.try_borrow_mut() {
        s.clear();
    }
}
