//! The per-backend key cache: the session's keyring, parsed once per change
//! of a key setting, and the exit wipe.
//!
//! Where key bytes live (review note):
//! 1. PostgreSQL's copy of the setting strings (GUC memory, also on the GUC
//!    stack while a SET LOCAL or function SET is active). PostgreSQL frees
//!    those without wiping; we wipe the current ones at backend exit.
//! 2. Short-lived `Zeroizing` copies made here while building the keyring.
//! 3. The keyring: AES key schedules and GHASH keys only (the raw 32 bytes are
//!    not kept), wiped on drop by the `zeroize` features of `aes`/`aes-gcm`.
//!    Dropped on every change of a key setting and at backend exit.
//! 4. Transient copies inside the statement that set the key (query text,
//!    bind parameters), which PostgreSQL owns; see `log_filter.rs`.

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use pazpaz_core::keyring::Keyring;
use pazpaz_core::Error;
use pgrx::pg_sys;
use pgrx::prelude::*;

use crate::backend_local::{BackendLocal, LocalCell, LocalFlag};
use crate::gucs;
use crate::log_secrets;

/// `None` until first use after a change of a key setting.
static KEYRING: LocalCell<Option<Result<Rc<Keyring>, Error>>> = BackendLocal::new(RefCell::new(None));

/// The process that registered the exit wipe. `_PG_init` runs in the
/// postmaster when the library is preloaded, and every child forgets the
/// postmaster's exit callbacks (`on_exit_reset`), so each process registers
/// its own, the first time a key setting changes in it.
static EXIT_WIPE_PID: BackendLocal<Cell<i32>> = BackendLocal::new(Cell::new(0));
/// An `encrypted_text` literal or input value was encrypted since the last
/// key change (see `note_input_encryption`).
static INPUT_ENCRYPTED: LocalFlag = BackendLocal::new(Cell::new(false));

pub fn init() {
    gucs::on_key_change(key_changed);
}

/// Runs after every change of a key setting (from its assign hook, which
/// must not fail).
fn key_changed() {
    invalidate();
    // SAFETY: MyProcPid is this process's id, set before any setting changes.
    let pid = unsafe { pg_sys::MyProcPid };
    if EXIT_WIPE_PID.get() != pid {
        EXIT_WIPE_PID.set(pid);
        // SAFETY: registers a callback that lives as long as the library.
        unsafe { pg_sys::on_proc_exit(Some(wipe_at_exit), pg_sys::Datum::from(0)) };
    }
    if INPUT_ENCRYPTED.replace(false) {
        // Cached plans hold literals encrypted under the previous keys
        // (`encrypted_text` input runs at parse time); replanning encrypts
        // them again under the new ones. Only marks plans invalid.
        // SAFETY: plain list walk in plancache.c; no catalog access.
        unsafe { pg_sys::ResetPlanCache() };
    }
}

/// Called when the type's input function encrypts: that happens at parse
/// time for literals, whose ciphertext then lives in cached plans.
pub fn note_input_encryption() {
    INPUT_ENCRYPTED.set(true);
}

/// Whether this process has registered its exit wipe (for tests).
#[cfg_attr(not(any(test, feature = "pg_test")), allow(dead_code))]
pub fn exit_wipe_registered() -> bool {
    // SAFETY: reads this process's id.
    EXIT_WIPE_PID.get() == unsafe { pg_sys::MyProcPid }
}

/// Drops the cached keyring (zeroizing it); must not fail.
fn invalidate() {
    let old = KEYRING.borrow_mut().take();
    drop(old);
}

/// The session's keyring, parsed once per change of the key settings.
pub fn keyring() -> Result<Rc<Keyring>, Error> {
    {
        let mut slot = KEYRING.borrow_mut();
        if let Some(cached) = slot.as_ref() {
            return cached.clone();
        }
        let [key, keys, version] = gucs::key_settings();
        // Wrapped keys are unwrapped again here (the check hook only
        // validated them): once per change of the settings.
        let built = Keyring::from_settings_with(
            key.as_deref().map(|s| s.as_str()),
            keys.as_deref().map(|s| s.as_str()),
            version.as_deref().map(|s| s.as_str()),
            &gucs::key_policy(),
        )
        .map(Rc::new);
        *slot = Some(built.clone());
        built
    }
}

/// Whether a keyring is currently cached (for tests of the wiping rules).
#[cfg_attr(not(any(test, feature = "pg_test")), allow(dead_code))]
pub fn is_cached() -> bool {
    KEYRING.borrow().is_some()
}

#[pg_guard]
unsafe extern "C-unwind" fn wipe_at_exit(_code: i32, _arg: pg_sys::Datum) {
    invalidate();
    log_secrets::forget_all();
    // SAFETY: at process exit, no GUC value will be restored or read after
    // this point.
    unsafe { gucs::wipe_key_strings() };
}
