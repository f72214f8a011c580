#![no_main]
//! Format 2, the jsonb envelope `{"version": …, "ciphertext": …}`, read two
//! ways: as JSON text through serde_json (`versioned::from_json`), and as raw
//! member bytes the way the jsonb glue hands them over (`parts_from`, where
//! the bytes need not even be UTF-8). Never a panic; an accepted envelope
//! opens only if it is exactly the encryption of its plaintext under the
//! fuzz key (which the fuzzer cannot forge except by replaying the seeds).

#[path = "common.rs"]
mod common;

use libfuzzer_sys::fuzz_target;
use pazpaz_core::error::ErrorClass;
use pazpaz_core::versioned::{self, Member};
use pazpaz_core::{field, Error};
use serde_json::Value;

fn check_error(e: &Error) {
    assert!(matches!(e.class(), ErrorClass::InvalidText | ErrorClass::InvalidBinary), "unexpected error {e:?}");
}

fn check_opens_only_if_genuine(sealed: &[u8]) {
    assert!(sealed.len() >= field::OVERHEAD);
    let cipher = common::cipher();
    match field::decrypt(&cipher, sealed, b"") {
        Ok(plain) => {
            let nonce: [u8; 12] = sealed[..12].try_into().unwrap();
            assert_eq!(field::encrypt(&cipher, &nonce, &plain, b"").unwrap(), sealed, "accepted a forged ciphertext");
        }
        Err(e) => assert_eq!(e, Error::DecryptionFailed),
    }
}

fuzz_target!(|data: &[u8]| {
    if let Ok(v) = serde_json::from_slice::<Value>(data) {
        match versioned::from_json(&v) {
            Ok((version, sealed)) => {
                assert_eq!(Some(version), v.get("version").and_then(Value::as_str));
                check_opens_only_if_genuine(&sealed);
            }
            Err(e) => check_error(&e),
        }
        if let Err(e) = versioned::version_of(&v) {
            check_error(&e);
        }
    }

    // Raw members: two control bytes choose each member's kind and where the
    // rest of the input is split between them.
    if let [flags, cut, rest @ ..] = data {
        let (a, b) = rest.split_at(*cut as usize * rest.len() / 256);
        let member = |kind: u8, s| match kind % 3 {
            0 => Member::Missing,
            1 => Member::NotString,
            _ => Member::Str(s),
        };
        match versioned::parts_from(flags & 1 == 1, member(flags >> 1, a), member(flags >> 3, b)) {
            Ok((version, sealed)) => {
                assert_eq!(version.as_bytes(), a);
                check_opens_only_if_genuine(&sealed);
            }
            Err(e) => check_error(&e),
        }
    }
});
