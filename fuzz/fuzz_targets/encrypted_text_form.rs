#![no_main]
//! The envelope's text form `pazpaz:<base64>` (keyless dump and restore):
//! `from_text` (plaintext mode's "is this an envelope?") and `parse_text`
//! (envelope mode) agree on every string and never panic.

use libfuzzer_sys::fuzz_target;
use pazpaz_core::encrypted_text::{self, Stored};
use pazpaz_core::error::ErrorClass;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let from = encrypted_text::from_text(text);
    let parsed = encrypted_text::parse_text(text);
    match (&from, &parsed) {
        (Some(a), Ok(b)) => {
            assert_eq!(a, b);
            assert!(text.starts_with(encrypted_text::TEXT_PREFIX));
            assert!(Stored::parse(a).is_ok());
        }
        (None, Err(e)) => assert_eq!(e.class(), ErrorClass::InvalidBinary),
        _ => panic!("from_text and parse_text disagree: {from:?} vs {parsed:?}"),
    }
});
