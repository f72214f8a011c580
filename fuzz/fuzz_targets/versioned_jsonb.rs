#![no_main]
//! Format 2 as the extension reads it: the bytes of a `jsonb` datum (after
//! the varlena header) through the shipped binary reader
//! (`jsonb::versioned_members`) and the validation it shares with every
//! reader (`versioned::parts_from`); also the members as raw bytes, and the
//! writer's output read back. Never a panic or an out-of-bounds member; an
//! accepted envelope opens only if it is exactly the encryption of its
//! plaintext under the fuzz key (which the fuzzer cannot forge except by
//! replaying the seeds).

#[path = "common.rs"]
mod common;

use libfuzzer_sys::fuzz_target;
use pazpaz_core::error::ErrorClass;
use pazpaz_core::versioned::{self, Member};
use pazpaz_core::{field, jsonb, Error};

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

/// A member the reader found must be a slice of the container itself.
fn check_inside(m: Member<'_>, container: &[u8]) {
    if let Member::Str(s) = m {
        let range = container.as_ptr_range();
        assert!(s.is_empty() || (range.contains(&s.as_ptr()) && s.as_ptr_range().end <= range.end));
    }
}

fn check_parts(obj: bool, version: Member<'_>, ciphertext: Member<'_>) {
    match versioned::parts_from(obj, version, ciphertext) {
        Ok((v, sealed)) => {
            assert!(matches!(version, Member::Str(b) if b == v.as_bytes()));
            check_opens_only_if_genuine(&sealed);
        }
        Err(e) => check_error(&e),
    }
    if let Err(e) = versioned::version_from(obj, version) {
        check_error(&e);
    }
}

fuzz_target!(|data: &[u8]| {
    // 1. The input as a jsonb container.
    match jsonb::versioned_members(data) {
        Ok((obj, version, ciphertext)) => {
            assert!(obj || (matches!(version, Member::Missing) && matches!(ciphertext, Member::Missing)));
            check_inside(version, data);
            check_inside(ciphertext, data);
            check_parts(obj, version, ciphertext);
        }
        Err(e) => check_error(&e),
    }

    // 2. Raw members: two control bytes choose each member's kind and where
    // the rest of the input is split between them.
    if let [flags, cut, rest @ ..] = data {
        let (a, b) = rest.split_at(*cut as usize * rest.len() / 256);
        let member = |kind: u8, s| match kind % 3 {
            0 => Member::Missing,
            1 => Member::NotString,
            _ => Member::Str(s),
        };
        check_parts(flags & 1 == 1, member(flags >> 1, a), member(flags >> 3, b));
    }

    // 3. The writer: a version name (length from the first byte) and a
    // format-1 value from the rest, written and read back.
    if let [len, rest @ ..] = data {
        let (name, sealed) = rest.split_at((*len as usize % 65).min(rest.len()));
        if let Ok(name) = std::str::from_utf8(name) {
            if common::is_valid_version(name) {
                let mut out = vec![0u8; jsonb::versioned_size(name, sealed.len())];
                jsonb::write_versioned(&mut out, name, sealed).unwrap();
                let (obj, v, c) = jsonb::versioned_members(&out).unwrap();
                assert!(obj);
                assert!(matches!(v, Member::Str(b) if b == name.as_bytes()));
                match c {
                    Member::Str(b) => assert_eq!(base64_decode(b), sealed),
                    other => panic!("ciphertext member {other:?}"),
                }
            }
        }
    }
});

fn base64_decode(b: &[u8]) -> Vec<u8> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.decode(b).unwrap()
}
