#![no_main]
//! Format 1, `nonce ‖ ciphertext ‖ tag`, from arbitrary bytes (what
//! `decrypt_field(bytea [, aad])` receives). The first byte says how many of
//! the following bytes are associated data. Never a panic; short input is
//! "too short"; anything else opens only if it is exactly the encryption of
//! its plaintext under the fuzz key with that associated data. The input
//! also goes through `check_text` (the test a decrypted `text` must pass),
//! which must agree with the standard library's UTF-8 check and a NUL scan.

#[path = "common.rs"]
mod common;

use libfuzzer_sys::fuzz_target;
use pazpaz_core::{field, Error};

fuzz_target!(|data: &[u8]| {
    let text_ok = !data.contains(&0) && std::str::from_utf8(data).is_ok();
    assert_eq!(field::check_text(data).is_ok(), text_ok, "check_text disagrees with std");
    let Some((&n, rest)) = data.split_first() else { return };
    let (aad, sealed) = rest.split_at((n as usize).min(rest.len()));
    let cipher = common::cipher();
    match field::decrypt(&cipher, sealed, aad) {
        Ok(plain) => {
            let nonce: [u8; 12] = sealed[..12].try_into().unwrap();
            assert_eq!(field::encrypt(&cipher, &nonce, &plain, aad).unwrap(), sealed, "accepted a forged ciphertext");
        }
        Err(Error::CiphertextTooShort) => assert!(sealed.len() < field::OVERHEAD),
        Err(Error::DecryptionFailed) => assert!(sealed.len() >= field::OVERHEAD),
        Err(other) => panic!("unexpected error {other:?}"),
    }
});
