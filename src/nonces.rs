//! The backend's nonce generator (see `pazpaz_core::nonce`): one per
//! process, never shared, and keyed to the process id so that a state
//! inherited across a fork is never used.

use std::cell::RefCell;

use pazpaz_core::nonce::{NonceRng, NONCE_LEN};
use pazpaz_core::Error;
use pgrx::pg_sys;

use crate::backend_local::{BackendLocal, LocalCell};

static NONCES: LocalCell<NonceRng> = BackendLocal::new(RefCell::new(NonceRng::new()));

/// A fresh 96-bit nonce. `MyProcPid` differs in every process forked from
/// the postmaster, so the generator reseeds in a child before its first use.
pub fn next() -> Result<[u8; NONCE_LEN], Error> {
    // SAFETY: reads this process's id, set at process start.
    let pid = unsafe { pg_sys::MyProcPid } as u32;
    NONCES.borrow_mut().nonce(pid)
}
