#![no_main]
//! `Key::from_base64`, the parser of `pazpaz.encryption_key`: any string is
//! a key or one of the two documented errors, never a panic.

use libfuzzer_sys::fuzz_target;
use pazpaz_core::key::Key;

fuzz_target!(|data: &[u8]| {
    let _ = Key::from_base64(std::str::from_utf8(data).unwrap_or(""));
});
