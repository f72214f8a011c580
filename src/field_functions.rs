//! Byte format 1: `encrypt_field` / `decrypt_field`, the existing
//! application's `nonce ‖ ciphertext ‖ tag`, under the session's write key.

use pazpaz_core::{field, Cipher};
use pgrx::prelude::*;

use crate::error::OrRaise;
use crate::key_cache;
use crate::nonces;
use crate::varlena::{Bytea, Text, VarlenaBuf};

/// Encrypts into a new bytea; `aad` is bound as GCM associated data.
pub(crate) fn seal(plaintext: &[u8], aad: &[u8]) -> Bytea {
    let ring = key_cache::keyring().or_raise();
    let key = ring.current().or_raise();
    let mut out = VarlenaBuf::alloc(field::sealed_len(plaintext.len()).or_raise());
    let nonce = nonces::next().or_raise();
    field::encrypt_into(key.cipher(), &nonce, plaintext, aad, out.data_mut()).or_raise();
    Bytea::from(out)
}

/// Decrypts format 1 with `cipher` into a new text value.
pub(crate) fn open_with(cipher: &Cipher, sealed: &[u8], aad: &[u8]) -> Text {
    let mut out = VarlenaBuf::alloc(field::opened_len(sealed).or_raise());
    field::decrypt_into(cipher, sealed, aad, out.data_mut()).or_raise();
    field::check_text(out.data()).or_raise();
    Text::from(out)
}

fn open(sealed: &[u8], aad: &[u8]) -> Text {
    let ring = key_cache::keyring().or_raise();
    open_with(ring.current().or_raise().cipher(), sealed, aad)
}

#[pg_extern(volatile, strict, parallel_safe, cost = 10)]
fn encrypt_field(plaintext: Text) -> Bytea {
    seal(plaintext.0.as_bytes(), b"")
}

#[pg_extern(stable, strict, parallel_safe, cost = 10)]
pub(crate) fn decrypt_field(ciphertext: Bytea) -> Text {
    open(ciphertext.0.as_bytes(), b"")
}

#[pg_extern(volatile, strict, parallel_safe, cost = 10, name = "encrypt_field")]
fn encrypt_field_aad(plaintext: Text, aad: Text) -> Bytea {
    seal(plaintext.0.as_bytes(), aad.0.as_bytes())
}

#[pg_extern(stable, strict, parallel_safe, cost = 10, name = "decrypt_field")]
fn decrypt_field_aad(ciphertext: Bytea, aad: Text) -> Text {
    open(ciphertext.0.as_bytes(), aad.0.as_bytes())
}
