//! The per-backend cache of the index keys of search: `pazpaz.index_key`
//! (and `pazpaz.index_key_next` during an index key rotation), parsed once
//! per change, and the keys derived from them per context, derived once per
//! context for the life of the index key (an HKDF per row would cost more
//! than the HMAC itself).
//!
//! Where index key bytes live, as for the data keys (`key_cache.rs`):
//! PostgreSQL's copy of the setting strings (wiped at backend exit); short
//! `Zeroizing` copies while parsing; the parsed key (32 bytes, wiped on drop)
//! and the derived HMAC states (wiped on drop), dropped on every change of
//! either setting and at backend exit.

use std::cell::{Cell, RefCell};

use pazpaz_core::blind_index::{DerivedKey, IndexKey, Kind};
use pazpaz_core::Error;
use pgrx::pg_sys;
use pgrx::prelude::*;

use crate::backend_local::{BackendLocal, LocalCell};
use crate::gucs;
use crate::log_secrets;

/// Derived keys kept per index key; a session that searches more contexts
/// than this (per-tenant contexts) derives the least recently used again.
const MAX_DERIVED: usize = 256;

/// One parsed index key and the keys derived from it, most recently used first.
struct Loaded {
    key: IndexKey,
    derived: Vec<(Kind, Vec<u8>, DerivedKey)>,
}

impl Loaded {
    fn derived(&mut self, kind: Kind, context: &[u8]) -> &mut DerivedKey {
        let hit = self.derived.iter().position(|(k, c, _)| *k == kind && c.as_slice() == context);
        match hit {
            Some(0) => {}
            Some(i) => {
                let entry = self.derived.remove(i);
                self.derived.insert(0, entry);
            }
            None => {
                if self.derived.len() >= MAX_DERIVED {
                    self.derived.pop();
                }
                let d = self.key.derive(kind, context);
                self.derived.insert(0, (kind, context.to_vec(), d));
            }
        }
        &mut self.derived[0].2
    }
}

/// `pazpaz.index_key` and `pazpaz.index_key_next`, each unset, parsed, or
/// (should a value that passed the check hook fail to parse) the error.
struct Keys {
    slots: [Option<Result<Loaded, Error>>; 2],
}

/// `None` until first use after a change of an index key setting.
static KEYS: LocalCell<Option<Keys>> = BackendLocal::new(RefCell::new(None));
/// The process that registered the exit wipe (see `key_cache.rs`).
static EXIT_WIPE_PID: BackendLocal<Cell<i32>> = BackendLocal::new(Cell::new(0));

pub fn init() {
    gucs::on_index_key_change(index_key_changed);
}

/// Runs after every change of an index key setting (from its assign hook,
/// which must not fail).
fn index_key_changed() {
    invalidate();
    // SAFETY: MyProcPid is this process's id, set before any setting changes.
    let pid = unsafe { pg_sys::MyProcPid };
    if EXIT_WIPE_PID.get() != pid {
        EXIT_WIPE_PID.set(pid);
        // SAFETY: registers a callback that lives as long as the library.
        unsafe { pg_sys::on_proc_exit(Some(wipe_at_exit), pg_sys::Datum::from(0)) };
    }
}

/// Drops the parsed keys (zeroizing them); must not fail.
fn invalidate() {
    let old = KEYS.borrow_mut().take();
    drop(old);
}

fn load() -> Keys {
    let settings = gucs::index_key_settings();
    Keys {
        slots: settings.map(|s| {
            s.filter(|v| !v.trim().is_empty())
                .map(|v| IndexKey::from_setting(&v, &gucs::key_policy()).map(|key| Loaded { key, derived: Vec::new() }))
        }),
    }
}

/// Runs `f` with the parsed keys, loading them first if needed. `f` must not
/// call back into this module.
fn with_keys<R>(f: impl FnOnce(&mut Keys) -> R) -> R {
    let mut slot = KEYS.borrow_mut();
    let keys = slot.get_or_insert_with(load);
    f(keys)
}

/// Runs `f` with the derived key of `kind` for `context` under
/// `pazpaz.index_key`.
pub fn with_current<R>(kind: Kind, context: &[u8], f: impl FnOnce(&mut DerivedKey) -> R) -> Result<R, Error> {
    with_keys(|keys| match &mut keys.slots[0] {
        None => Err(Error::MissingIndexKey { name: "pazpaz.index_key" }),
        Some(Err(e)) => Err(e.clone()),
        Some(Ok(loaded)) => Ok(f(loaded.derived(kind, context))),
    })
}

/// Runs `f` with the derived key of `kind` for `context` under whichever of
/// the two index key settings holds the key with `fingerprint` (an index
/// names the key it was built with; `index` names the index in the error,
/// called only then).
pub fn with_fingerprint<R>(
    fingerprint: &str,
    index: &dyn Fn() -> String,
    kind: Kind,
    context: &[u8],
    f: impl FnOnce(&mut DerivedKey) -> R,
) -> Result<R, Error> {
    with_keys(|keys| {
        for slot in keys.slots.iter_mut() {
            match slot {
                Some(Ok(loaded)) if loaded.key.fingerprint() == fingerprint => {
                    return Ok(f(loaded.derived(kind, context)));
                }
                Some(Err(e)) => return Err(e.clone()),
                _ => {}
            }
        }
        if keys.slots.iter().all(Option::is_none) {
            return Err(Error::MissingIndexKey { name: "pazpaz.index_key" });
        }
        Err(Error::IndexKeyNotSet { index: index(), fingerprint: fingerprint.to_owned() })
    })
}

/// (setting name, fingerprint) of each index key that is set.
pub fn status() -> Result<Vec<(&'static str, String)>, Error> {
    with_keys(|keys| {
        let names = ["pazpaz.index_key", "pazpaz.index_key_next"];
        let mut out = Vec::new();
        for (name, slot) in names.iter().zip(keys.slots.iter()) {
            match slot {
                Some(Ok(loaded)) => out.push((*name, loaded.key.fingerprint().to_owned())),
                Some(Err(e)) => return Err(e.clone()),
                None => {}
            }
        }
        Ok(out)
    })
}

/// Whether index keys are currently parsed (for tests of the wiping rules).
#[cfg_attr(not(any(test, feature = "pg_test")), allow(dead_code))]
pub fn is_cached() -> bool {
    KEYS.borrow().is_some()
}

#[pg_guard]
unsafe extern "C-unwind" fn wipe_at_exit(_code: i32, _arg: pg_sys::Datum) {
    invalidate();
    log_secrets::forget_all();
    // SAFETY: at process exit, no GUC value will be restored or read after
    // this point.
    unsafe { gucs::wipe_key_strings() };
}
