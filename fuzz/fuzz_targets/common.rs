//! Shared by the fuzz targets: the fixed key under which the seed corpus was
//! sealed (a test constant, not a secret).
#![allow(dead_code)] // each target uses only part of it

use aes_gcm::{Aes256Gcm, KeyInit};

pub const KEY: &[u8; 32] = b"pazpaz_core fuzz key, not secret";

pub fn cipher() -> Aes256Gcm {
    Aes256Gcm::new_from_slice(KEY).unwrap()
}

/// The version-name rule as documented (1 to 64 of A-Z a-z 0-9 _ - .).
pub fn is_valid_version(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.')
}
