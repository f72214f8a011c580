#![no_main]
//! Format 3, the `encrypted_text` envelope, from arbitrary bytes (what
//! `encrypted_text_recv` and the `bytea` cast receive): never a panic; a
//! parsed envelope is made of the documented slices; it opens only if it is
//! exactly the sealing of its plaintext under the fuzz key and its header;
//! its text form round-trips.

#[path = "common.rs"]
mod common;

use libfuzzer_sys::fuzz_target;
use pazpaz_core::encrypted_text::{self, Stored};
use pazpaz_core::error::ErrorClass;
use pazpaz_core::{field, Error};

fuzz_target!(|data: &[u8]| {
    match Stored::parse(data) {
        Ok(e) => {
            let l = data[1] as usize;
            assert_eq!(data[0], 1);
            assert!(common::is_valid_version(e.version));
            assert_eq!(e.header, &data[..2 + l]);
            assert_eq!(e.sealed, &data[2 + l..]);
            assert_eq!(e.plaintext_len() + field::OVERHEAD + 2 + l, data.len());
            let cipher = common::cipher();
            match e.open(&cipher) {
                Ok(plain) => {
                    let nonce: [u8; 12] = e.sealed[..12].try_into().unwrap();
                    let again = encrypted_text::seal(&cipher, e.version, &nonce, &plain).unwrap();
                    assert_eq!(again, data, "accepted a forged envelope");
                }
                Err(err) => assert_eq!(err, Error::DecryptionFailed),
            }
            assert_eq!(encrypted_text::from_text(&encrypted_text::to_text(data)).as_deref(), Some(data));
        }
        Err(err) => assert_eq!(err.class(), ErrorClass::InvalidBinary),
    }
});
