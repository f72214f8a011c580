#![no_main]
//! `Keyring::from_json`, the parser of `pazpaz.encryption_keys`: never a
//! panic; an accepted keyring is a JSON object of valid version names to
//! keys; an error message never contains a value from the input. Its variable
//! parts may only be line/column numbers or a member *name* (a version name,
//! which is not secret), so the message is checked against its templates.

#[path = "common.rs"]
mod common;

use libfuzzer_sys::fuzz_target;
use pazpaz_core::error::ErrorClass;
use pazpaz_core::keyring::{Keyring, MAX_KEYS};
use pazpaz_core::Error;

/// `prefix<number> column <number>` with nothing else.
fn is_position(s: &str, prefix: &str) -> bool {
    let Some(rest) = s.strip_prefix(prefix) else { return false };
    let Some((line, col)) = rest.split_once(" column ") else { return false };
    !line.is_empty() && !col.is_empty() && line.bytes().chain(col.bytes()).all(|b| b.is_ascii_digit())
}

/// Every JSON string literal in the input that is followed by `:`, i.e. each
/// member name, decoded (escapes such as `\u0031` included). Works on broken
/// JSON too: it only lexes string literals.
fn member_names(input: &str) -> Vec<String> {
    let b = input.as_bytes();
    let mut names = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] != b'"' {
            i += 1;
            continue;
        }
        let start = i;
        i += 1;
        while i < b.len() && b[i] != b'"' {
            i += if b[i] == b'\\' { 2 } else { 1 };
        }
        if i >= b.len() {
            break;
        }
        i += 1;
        // Both ends are ASCII quotes, so both are char boundaries.
        let after = input[i..].trim_start_matches([' ', '\t', '\n', '\r']);
        if after.starts_with(':') {
            if let Ok(name) = serde_json::from_str::<String>(&input[start..i]) {
                names.push(name);
            }
        }
    }
    names
}

/// `<prefix>name<suffix>` where name is a valid version name that is a
/// member name of the input.
fn is_named(s: &str, prefix: &str, suffix: &str, input: &str) -> bool {
    let Some(name) = s.strip_prefix(prefix).and_then(|r| r.strip_suffix(suffix)) else { return false };
    common::is_valid_version(name) && member_names(input).iter().any(|n| n == name)
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    match Keyring::from_json(text) {
        Ok(ring) => {
            let entries = ring.entries();
            assert!(!entries.is_empty() && entries.len() <= MAX_KEYS);
            for (i, e) in entries.iter().enumerate() {
                assert!(common::is_valid_version(e.version()), "invalid version accepted");
                assert!(entries[..i].iter().all(|o| o.version() != e.version()), "duplicate version accepted");
            }
            assert_eq!(ring.current_version().is_some(), entries.len() == 1);
            let v: serde_json::Value = serde_json::from_str(text).expect("an accepted keyring is valid JSON");
            assert!(v.is_object());
        }
        Err(e) => {
            match &e {
                // A value that reads as a wrapped key (pzw…:…): refused
                // without a key-encryption key ring (the wrapped_key target
                // fuzzes unwrapping itself).
                Error::NoKek => assert_eq!(e.class(), ErrorClass::MissingKey),
                Error::WrappedKeyMalformed(_) => assert_eq!(e.class(), ErrorClass::InvalidParameter),
                _ => assert_eq!(e.class(), ErrorClass::InvalidParameter),
            }
            match &e {
                Error::NoKek | Error::WrappedKeyMalformed(_) => {}
                Error::KeySize | Error::KeyBase64 | Error::BadVersionName | Error::EmptyKeyring => {}
                Error::KeyringJson(detail) => assert!(
                    is_position(detail, "malformed JSON at line ")
                        || is_position(detail, "trailing characters at line ")
                        || detail == &format!("more than {MAX_KEYS} keys")
                        || is_named(detail, "version \"", "\" appears twice", text)
                        || is_named(detail, "the key of version \"", "\" must be a base64 string", text),
                    "unexpected keyring message: {detail}"
                ),
                other => panic!("unexpected error {other:?}"),
            }
        }
    }
});
