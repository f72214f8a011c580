#![no_main]
//! Wrapped data keys (`wrapped_key::unwrap`) and the key-encryption key
//! ring's parser (`KekRing::from_json`): never a panic; a value that unwraps
//! is exactly what wrapping its data key with its own nonce gives (so
//! nothing else is accepted); every error is one of the documented ones,
//! whose only variable part is a key-encryption key id (a valid id, not a
//! secret), so nothing of the input's body can appear in a message.

#[path = "common.rs"]
mod common;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use libfuzzer_sys::fuzz_target;
use pazpaz_core::wrapped_key::{self, KekRing};
use pazpaz_core::Error;

const RING: &[u8] = br#"{"current": "k1", "keys": {"k1": "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=", "k.2": "ICEiIyQlJicoKSorLC0uLzAxMjM0NTY3ODk6Ozw9Pj8="}}"#;

fuzz_target!(|data: &[u8]| {
    if let Err(e) = KekRing::from_json(data) {
        assert!(matches!(e, Error::KekRing(_)), "unexpected ring error {e:?}");
    }
    let Ok(text) = std::str::from_utf8(data) else { return };
    let ring = KekRing::from_json(RING).unwrap();
    for t in [text.to_owned(), format!("pzw1:k1:{text}"), format!("pzw1:{text}")] {
        match wrapped_key::unwrap(&t, Some(&ring)) {
            Ok(u) => {
                let canonical = t.trim_matches(|c: char| c.is_ascii_whitespace());
                let body = STANDARD.decode(canonical.rsplit(':').next().unwrap()).unwrap();
                let nonce: [u8; 12] = body[..12].try_into().unwrap();
                let again = wrapped_key::wrap_with_nonce(&u.raw, ring.get(&u.kek_id).unwrap(), &nonce);
                assert_eq!(again, canonical, "accepted a value that is not a wrap of its key");
            }
            Err(Error::WrappedKeyMalformed(_) | Error::WrappedKeyTruncated) => {}
            Err(Error::WrappedKeyAuth { kek }) => assert!(ring.get(&kek).is_ok(), "auth failure names {kek:?}"),
            Err(Error::UnknownKek { id, loaded }) => {
                assert!(common::is_valid_version(&id), "unknown id shown: {id:?}");
                assert_eq!(loaded, "k1, k.2");
            }
            Err(other) => panic!("unexpected error {other:?}"),
        }
    }
});
