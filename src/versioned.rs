//! Byte format 2: the `jsonb` envelope `{"version": …, "ciphertext": …}`.
//!
//! Envelopes are read and built directly in PostgreSQL's binary jsonb layout
//! (`pazpaz_core::jsonb`, no detour through JSON text or PostgreSQL's jsonb
//! API), and an envelope already at the target version is returned as the
//! same datum.

use pazpaz_core::keyring::{KeyEntry, Keyring};
use pazpaz_core::versioned::{self, Member};
use pazpaz_core::{field, jsonb, Cipher, Error};
use pgrx::prelude::*;
use zeroize::Zeroizing;

use crate::error::{raise, OrRaise};
use crate::field_functions::open_with;
use crate::key_cache;
use crate::nonces;
use crate::rotation;
use crate::varlena::{varlena_type, Text, VarlenaBuf};

varlena_type!(
    /// A `jsonb` argument (read in place, packed or not) or result.
    Jsonb, pgrx::pg_sys::JSONBOID
);
pgrx::impl_sql_translatable!(Jsonb, "jsonb");

impl Jsonb {
    /// (is an object, "version", "ciphertext"), borrowed from the datum.
    fn members(&self) -> Result<(bool, Member<'_>, Member<'_>), Error> {
        jsonb::versioned_members(self.0.as_bytes())
    }

    fn version(&self) -> Result<&str, Error> {
        let (obj, version, _) = self.members()?;
        versioned::version_from(obj, version)
    }

    fn parts(&self) -> Result<(&str, Vec<u8>), Error> {
        let (obj, version, ciphertext) = self.members()?;
        versioned::parts_from(obj, version, ciphertext)
    }

    /// `{"version": version, "ciphertext": base64(sealed)}`, built in place in
    /// PostgreSQL's binary layout.
    fn build(version: &str, sealed: &[u8]) -> Jsonb {
        let mut out = VarlenaBuf::alloc(jsonb::versioned_size(version, sealed.len()));
        jsonb::write_versioned(out.data_mut(), version, sealed).or_raise();
        Jsonb::from(out)
    }
}

fn encrypt_to(version: Option<&str>, plaintext: &[u8], aad: &[u8]) -> Jsonb {
    let ring = key_cache::keyring().or_raise();
    let key = ring.target(version).or_raise();
    let nonce = nonces::next().or_raise();
    let sealed = field::encrypt(key.cipher(), &nonce, plaintext, aad).or_raise();
    Jsonb::build(key.version(), &sealed)
}

fn decrypt(envelope: &Jsonb, aad: &[u8]) -> Text {
    let (version, sealed) = envelope.parts().or_raise();
    let ring = key_cache::keyring().or_raise();
    open_with(ring.get(version).or_raise().cipher(), &sealed, aad)
}

/// Whether format-1 `sealed` authenticates under `cipher` with `aad`. The
/// plaintext goes to a scratch buffer that is wiped when dropped.
fn authenticates(cipher: &Cipher, sealed: &[u8], aad: &[u8]) -> bool {
    let mut scratch = Zeroizing::new(vec![0u8; field::opened_len(sealed).or_raise()]);
    match field::decrypt_into(cipher, sealed, aad, &mut scratch) {
        Ok(()) => true,
        Err(Error::DecryptionFailed) => false,
        Err(e) => raise(e),
    }
}

fn reencrypt(envelope: Jsonb, target: Option<&str>, aad: &[u8]) -> Jsonb {
    let ring = key_cache::keyring().or_raise();
    let target = ring.target(target).or_raise();
    let (version, sealed) = envelope.parts().or_raise();
    if version == target.version() {
        // Format 2 does not authenticate its "version" label, so an envelope
        // relabelled to the target is checked, not passed over.
        if authenticates(target.cipher(), &sealed, aad) {
            return envelope; // already there: same datum, no new nonce
        }
        return reencrypt_mislabelled(&ring, target, sealed, aad);
    }
    let from = ring.get(version).or_raise();
    // Decrypted and re-encrypted in this one buffer, wiped when dropped.
    let mut buf = Zeroizing::new(sealed);
    let nonce = nonces::next().or_raise();
    field::reseal_in_place(from.cipher(), target.cipher(), &nonce, aad, aad, &mut buf).or_raise();
    Jsonb::build(target.version(), &buf)
}

/// An envelope labelled with the target version that does not authenticate
/// under the target key: re-encrypted under the target from whichever other
/// loaded key it authenticates under, or "Decryption failed".
#[cold]
fn reencrypt_mislabelled(ring: &Keyring, target: &KeyEntry, sealed: Vec<u8>, aad: &[u8]) -> Jsonb {
    let mut buf = Zeroizing::new(sealed);
    let nonce = nonces::next().or_raise();
    for from in ring.entries().iter().filter(|e| e.version() != target.version()) {
        // On an authentication failure `buf` is left unchanged.
        match field::reseal_in_place(from.cipher(), target.cipher(), &nonce, aad, aad, &mut buf) {
            Ok(()) => {
                rotation::note_mislabelled();
                return Jsonb::build(target.version(), &buf);
            }
            Err(Error::DecryptionFailed) => continue,
            Err(e) => raise(e),
        }
    }
    raise(Error::DecryptionFailed)
}

/// Whether an envelope authenticates under the key its "version" names
/// (false when that version is not loaded); a malformed envelope or a missing
/// keyring is an error.
fn verify(envelope: &Jsonb, aad: &[u8]) -> bool {
    let (version, sealed) = envelope.parts().or_raise();
    let ring = key_cache::keyring().or_raise();
    match ring.get(version) {
        Ok(key) => authenticates(key.cipher(), &sealed, aad),
        Err(Error::UnknownVersion { .. }) => false,
        Err(e) => raise(e),
    }
}

#[pg_extern(volatile, strict, parallel_safe, cost = 20)]
fn encrypt_field_versioned(plaintext: Text) -> Jsonb {
    encrypt_to(None, plaintext.0.as_bytes(), b"")
}

#[pg_extern(volatile, strict, parallel_safe, cost = 20, name = "encrypt_field_versioned")]
fn encrypt_field_versioned_to(plaintext: Text, key_version: &str) -> Jsonb {
    encrypt_to(Some(key_version), plaintext.0.as_bytes(), b"")
}

#[pg_extern(volatile, strict, parallel_safe, cost = 20, name = "encrypt_field_versioned")]
fn encrypt_field_versioned_aad(plaintext: Text, key_version: &str, aad: Text) -> Jsonb {
    encrypt_to(Some(key_version), plaintext.0.as_bytes(), aad.0.as_bytes())
}

#[pg_extern(stable, strict, parallel_safe, cost = 20)]
pub(crate) fn decrypt_field_versioned(envelope: Jsonb) -> Text {
    decrypt(&envelope, b"")
}

#[pg_extern(stable, strict, parallel_safe, cost = 20, name = "decrypt_field_versioned")]
fn decrypt_field_versioned_aad(envelope: Jsonb, aad: Text) -> Text {
    decrypt(&envelope, aad.0.as_bytes())
}

#[pg_extern(volatile, strict, parallel_safe, cost = 40)]
pub fn reencrypt_field_versioned(envelope: Jsonb) -> Jsonb {
    reencrypt(envelope, None, b"")
}

#[pg_extern(volatile, strict, parallel_safe, cost = 40, name = "reencrypt_field_versioned")]
pub fn reencrypt_field_versioned_to(envelope: Jsonb, key_version: &str) -> Jsonb {
    reencrypt(envelope, Some(key_version), b"")
}

#[pg_extern(volatile, strict, parallel_safe, cost = 40, name = "reencrypt_field_versioned")]
fn reencrypt_field_versioned_aad(envelope: Jsonb, key_version: &str, aad: Text) -> Jsonb {
    reencrypt(envelope, Some(key_version), aad.0.as_bytes())
}

/// Whether the envelope authenticates under its labelled version's key: the
/// check that `key_version(col) = 'v2'` alone cannot make, because format 2
/// does not authenticate the label.
#[pg_extern(stable, strict, parallel_safe, cost = 20)]
fn verify_field_versioned(envelope: Jsonb) -> bool {
    verify(&envelope, b"")
}

#[pg_extern(stable, strict, parallel_safe, cost = 20, name = "verify_field_versioned")]
fn verify_field_versioned_aad(envelope: Jsonb, aad: Text) -> bool {
    verify(&envelope, aad.0.as_bytes())
}

/// The envelope's version, without a key. IMMUTABLE so that
/// `CREATE INDEX … (key_version(col))` can find stale rows. The `text` is
/// built in place (`VarlenaBuf`), not through a `String`: scans for stale
/// rows call this on every row.
#[pg_extern(immutable, strict, parallel_safe, name = "key_version")]
pub fn key_version_jsonb(envelope: Jsonb) -> Text {
    match envelope.version() {
        Ok(v) => Text::from(VarlenaBuf::copy_of(v.as_bytes())),
        Err(e) => raise(e),
    }
}
