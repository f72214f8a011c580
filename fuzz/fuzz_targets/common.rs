//! Shared by the fuzz targets: the fixed key under which the seed corpus was
//! sealed (a test constant, not a secret) and checks used by several targets.

use aes_gcm::{Aes256Gcm, KeyInit};

pub const KEY: &[u8; 32] = b"pazpaz_core fuzz key, not secret";

pub fn cipher() -> Aes256Gcm {
    Aes256Gcm::new_from_slice(KEY).unwrap()
}
