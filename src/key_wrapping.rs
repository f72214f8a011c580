//! SQL functions of wrapped data keys (`pazpaz_core::wrapped_key`): new keys
//! made and returned only wrapped, existing keys wrapped once, wrapped keys
//! moved to another key-encryption key (KEK), and the loaded KEK ids.
//!
//! Privileges (`sql/key_wrapping.sql`): revoked from PUBLIC are
//! - `wrap_encryption_key`: it takes a raw key (which should travel in SQL
//!   once, by an operator's hand) and would let any role turn raw keys into
//!   wrapped ones, defeating `pazpaz.require_wrapped_keys`;
//! - `rewrap_encryption_key`: a KEK rotation makes every copy of a wrapped
//!   key that the operator did not rewrap useless (the way to be sure a
//!   destroyed tenant key has no stray copy left); a role that could rewrap
//!   a stray copy under the new KEK would carry it past the rotation.
//!
//! - `generate_wrapped_encryption_key`: each call is one AES-GCM encryption
//!   under the KEK with a random 96-bit nonce, of the 2^32 a KEK allows
//!   (NIST SP 800-38D); any role calling it in a loop would spend them.
//!
//! `kek_status` (ids and fingerprints) stays with PUBLIC.

use pazpaz_core::data_key;
use pazpaz_core::wrapped_key::{self, KekRing};
use pazpaz_core::Error;
use pgrx::prelude::*;

use crate::error::{raise, OrRaise};
use crate::kek;
use crate::log_secrets;

fn keks() -> &'static KekRing {
    kek::ring().ok_or(Error::NoKek).or_raise()
}

/// A fresh data key from the OS CSPRNG, returned only wrapped; its raw bytes
/// are wiped when this returns and never reach a client or the log.
fn wrap_new(kek_id: Option<&str>) -> String {
    let kek = keks().target(kek_id).or_raise();
    let raw = data_key::generate_raw().or_raise();
    wrapped_key::wrap(&raw, kek).or_raise()
}

/// A new data key, wrapped under the current KEK.
#[pg_extern(volatile, strict, parallel_safe)]
fn generate_wrapped_encryption_key() -> String {
    wrap_new(None)
}

/// A new data key, wrapped under the named KEK.
#[pg_extern(volatile, strict, parallel_safe, name = "generate_wrapped_encryption_key")]
fn generate_wrapped_encryption_key_under(kek_id: &str) -> String {
    wrap_new(Some(kek_id))
}

fn wrap_raw(raw: &str, kek_id: Option<&str>) -> String {
    // First: from here on the log filter scrubs this value (a literal
    // argument, an auto_explain plan of this call, an error's context).
    log_secrets::remember(raw.as_bytes()).or_raise();
    if wrapped_key::looks_wrapped(raw) {
        raise(Error::AlreadyWrapped);
    }
    let kek = keks().target(kek_id).or_raise();
    let bytes = data_key::decode_key_base64(raw).or_raise();
    wrapped_key::wrap(&bytes, kek).or_raise()
}

/// Wraps an existing raw key (base64 of 32 bytes) under the current KEK.
#[pg_extern(volatile, strict, parallel_safe)]
fn wrap_encryption_key(raw_key: &str) -> String {
    wrap_raw(raw_key, None)
}

/// Wraps an existing raw key under the named KEK.
#[pg_extern(volatile, strict, parallel_safe, name = "wrap_encryption_key")]
fn wrap_encryption_key_under(raw_key: &str, kek_id: &str) -> String {
    wrap_raw(raw_key, Some(kek_id))
}

fn rewrap(wrapped: &str, kek_id: Option<&str>) -> String {
    log_secrets::remember(wrapped.as_bytes()).or_raise();
    let ring = keks();
    let target = ring.target(kek_id).or_raise();
    let u = wrapped_key::unwrap(wrapped, Some(ring)).or_raise();
    log_secrets::remember_raw(&u.raw);
    wrapped_key::wrap(&u.raw, target).or_raise()
}

/// The same data key, wrapped under the current KEK (KEK rotation).
#[pg_extern(volatile, strict, parallel_safe)]
fn rewrap_encryption_key(wrapped_key: &str) -> String {
    rewrap(wrapped_key, None)
}

/// The same data key, wrapped under the named KEK.
#[pg_extern(volatile, strict, parallel_safe, name = "rewrap_encryption_key")]
fn rewrap_encryption_key_under(wrapped_key: &str, kek_id: &str) -> String {
    rewrap(wrapped_key, Some(kek_id))
}

/// The KEKs the server loaded at start-up: id, whether new wraps use it, and
/// a fingerprint (never key material). No rows when none is loaded.
#[pg_extern(stable, strict, parallel_safe)]
fn kek_status() -> TableIterator<'static, (name!(kek_id, String), name!(is_current, bool), name!(fingerprint, String))>
{
    let rows: Vec<_> = match kek::ring() {
        Some(ring) => ring
            .keks()
            .iter()
            .map(|k| (k.id().to_owned(), k.id() == ring.current().id(), k.fingerprint().to_owned()))
            .collect(),
        None => Vec::new(),
    };
    TableIterator::new(rows)
}
