#![no_main]
//! `Key::from_base64`, the parser of `pazpaz.encryption_key` and of every key
//! in a keyring: any string is a key or one of the two documented errors
//! (fixed messages, so nothing of the input can appear in them).

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use libfuzzer_sys::fuzz_target;
use pazpaz_core::data_key::Key;
use pazpaz_core::Error;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let decoded = STANDARD.decode(text.trim_matches(|c: char| c.is_ascii_whitespace()));
    match Key::from_base64(text) {
        Ok(key) => {
            assert_eq!(decoded.map(|b| b.len()), Ok(32), "accepted something that is not base64 of 32 bytes");
            assert_eq!(key.fingerprint().len(), 8);
        }
        Err(Error::KeyBase64) => assert!(decoded.is_err(), "valid base64 reported as invalid"),
        Err(Error::KeySize) => assert!(decoded.is_ok_and(|b| b.len() != 32), "wrong size reported wrongly"),
        Err(other) => panic!("unexpected error {other:?}"),
    }
});
