//! State private to one backend process.
//!
//! A PostgreSQL backend runs our code on one thread only, so per-backend
//! state needs neither locks nor thread-local storage. `thread_local!` in a
//! shared library costs a `__tls_get_addr` call on every access, which is
//! measurable per row; a plain static with interior mutability is not.

use std::cell::{Cell, RefCell};

/// A value owned by the backend's single thread.
pub struct BackendLocal<T>(T);

// SAFETY: PostgreSQL backends (and parallel workers, which are processes)
// call extension code from one thread; pgrx's own guards assume the same.
// The wrapped values are never shared across threads.
unsafe impl<T> Sync for BackendLocal<T> {}

impl<T> BackendLocal<T> {
    pub const fn new(value: T) -> Self {
        BackendLocal(value)
    }
}

impl<T> std::ops::Deref for BackendLocal<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

pub type LocalFlag = BackendLocal<Cell<bool>>;
pub type LocalCell<T> = BackendLocal<RefCell<T>>;
