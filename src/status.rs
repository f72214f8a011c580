//! Key generation and a key-free view of the session's keyring.

use pazpaz_core::Error;
use pgrx::prelude::*;

use crate::error::{raise, OrRaise};
use crate::key_cache;
use crate::varlena::{Text, VarlenaBuf};

/// Base64 of 32 bytes from the operating system's CSPRNG.
#[pg_extern(volatile, strict, parallel_safe)]
fn generate_encryption_key() -> Text {
    let k = pazpaz_core::data_key::generate_base64().or_raise();
    // Written straight into the result datum; the Rust copies are wiped.
    Text::from(VarlenaBuf::copy_of(k.as_bytes()))
}

/// One row per loaded key version: whether it is the write version, a
/// short fingerprint (8 hex digits of a domain-separated SHA-256) that tells
/// keys apart without revealing them, whether the key came wrapped and under
/// which key-encryption key. No rows when no key is set.
#[pg_extern(stable, strict, parallel_safe)]
pub fn encryption_status() -> TableIterator<
    'static,
    (
        name!(version, String),
        name!(is_current, bool),
        name!(fingerprint, String),
        name!(wrapped, bool),
        name!(kek_id, Option<String>),
    ),
> {
    let rows = match key_cache::keyring() {
        Ok(ring) => ring
            .entries()
            .iter()
            .map(|e| {
                (
                    e.version().to_owned(),
                    ring.current_version() == Some(e.version()),
                    e.fingerprint().to_owned(),
                    e.wrapped_by().is_some(),
                    e.wrapped_by().map(str::to_owned),
                )
            })
            .collect(),
        Err(Error::MissingKey) => Vec::new(),
        Err(e) => raise(e),
    };
    TableIterator::new(rows)
}
