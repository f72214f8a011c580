//! Known-answer tests of the wrapped data key form: vectors made by an
//! independent implementation (Python `cryptography`,
//! `tests/vectors/make_wrapped_key_vectors.py`) are unwrapped to their data
//! keys, which then decrypt a format-1 field made with them; every
//! `must_fail` entry is refused with its message and SQLSTATE class; and
//! wrapping with the vector's nonce gives the vector's bytes.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use serde_json::Value;

use pazpaz_core::error::ErrorClass;
use pazpaz_core::keyring::Keyring;
use pazpaz_core::wrapped_key::{self, KekRing, KeyPolicy};
use pazpaz_core::{field, Error};

fn vectors() -> Value {
    let p = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/vectors/wrapped_key_vectors.json");
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

fn ring(v: &Value) -> KekRing {
    KekRing::from_json(v["kek_ring"].to_string().as_bytes()).unwrap()
}

fn class_of(sqlstate: &str) -> ErrorClass {
    match sqlstate {
        "22000" => ErrorClass::AuthenticationFailed,
        "42704" => ErrorClass::UnknownVersion,
        "22023" => ErrorClass::InvalidParameter,
        other => panic!("unexpected SQLSTATE {other} in the vectors"),
    }
}

#[test]
fn vectors_unwrap_to_their_data_keys() {
    let v = vectors();
    let ring = ring(&v);
    assert_eq!(ring.current().id(), "k2");
    let list = v["vectors"].as_array().unwrap();
    assert!(list.len() >= 4);
    for t in list {
        let name = t["name"].as_str().unwrap();
        let wrapped = t["wrapped"].as_str().unwrap();
        let u = wrapped_key::unwrap(wrapped, Some(&ring)).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(STANDARD.encode(*u.raw), t["data_key"].as_str().unwrap(), "{name}");
        assert_eq!(u.kek_id, t["kek_id"].as_str().unwrap(), "{name}");

        // Our wrap with the vector's nonce gives the vector's bytes.
        let nonce: [u8; 12] = hex::decode(t["nonce_hex"].as_str().unwrap()).unwrap().try_into().unwrap();
        let kek = ring.get(&u.kek_id).unwrap();
        assert_eq!(wrapped_key::wrap_with_nonce(&u.raw, kek, &nonce), wrapped, "{name}");

        // The keyring built from the wrapped setting decrypts the field.
        let policy = KeyPolicy { keks: Some(&ring), require_wrapped: true, on_unwrap: None };
        let kr = Keyring::from_settings_with(Some(wrapped), None, None, &policy).unwrap();
        assert_eq!(kr.current().unwrap().wrapped_by(), Some(u.kek_id.as_str()));
        let ct = STANDARD.decode(t["field"]["ciphertext"].as_str().unwrap()).unwrap();
        let pt = field::decrypt(kr.current().unwrap().cipher(), &ct, b"").unwrap();
        assert_eq!(pt, t["field"]["plaintext"].as_str().unwrap().as_bytes(), "{name}");
    }
}

#[test]
fn must_fail_entries_are_refused_with_their_message() {
    let v = vectors();
    let ring = ring(&v);
    for t in v["must_fail"].as_array().unwrap() {
        let name = t["name"].as_str().unwrap();
        let wrapped = t["wrapped"].as_str().unwrap();
        let e = wrapped_key::unwrap(wrapped, Some(&ring)).err().unwrap_or_else(|| panic!("{name}: accepted"));
        assert_eq!(e.to_string(), t["error"].as_str().unwrap(), "{name}");
        assert_eq!(e.class(), class_of(t["sqlstate"].as_str().unwrap()), "{name}");
        let body = wrapped.rsplit(':').next().unwrap();
        assert!(!e.to_string().contains(&body[..12]), "{name}: message echoes the value");
    }
}

#[test]
fn keyring_of_wrapped_keys_keeps_each_kek_id() {
    let v = vectors();
    let ring = ring(&v);
    let list = v["vectors"].as_array().unwrap();
    let json = serde_json::json!({
        "t42.v1": list[0]["wrapped"], "t42.v2": list[2]["wrapped"], "raw": list[1]["data_key"],
    })
    .to_string();
    let lax = KeyPolicy { keks: Some(&ring), require_wrapped: false, on_unwrap: None };
    let kr = Keyring::from_settings_with(None, Some(&json), Some("t42.v2"), &lax).unwrap();
    let by: Vec<_> = kr.entries().iter().map(|e| (e.version(), e.wrapped_by())).collect();
    assert!(by.contains(&("t42.v1", Some("k1"))) && by.contains(&("t42.v2", Some("kek.2026-01"))));
    assert!(by.contains(&("raw", None)));
    let strict = KeyPolicy { require_wrapped: true, ..lax };
    let e = Keyring::from_settings_with(None, Some(&json), None, &strict).err().unwrap();
    assert_eq!(e, Error::RawKeyRefused);
    // Without a KEK ring a wrapped value is refused, naming what to set.
    let e = Keyring::from_settings_with(Some(list[0]["wrapped"].as_str().unwrap()), None, None, &KeyPolicy::default())
        .err()
        .unwrap();
    assert_eq!(e, Error::NoKek);
    assert!(e.to_string().contains("pazpaz.kek_file") && e.to_string().contains("pazpaz.kek_command"));
}

// ---- properties ----------------------------------------------------------------

mod properties {
    use super::*;
    use proptest::prelude::*;

    fn ring_of(id: &str, kek: &[u8; 32]) -> KekRing {
        let json = serde_json::json!({"keys": {id: STANDARD.encode(kek)}}).to_string();
        KekRing::from_json(json.as_bytes()).unwrap()
    }

    proptest! {
        #[test]
        fn wrap_then_unwrap_gives_the_key_back(
            id in "[A-Za-z0-9_.-]{1,64}", kek in any::<[u8; 32]>(), key in any::<[u8; 32]>(), nonce in any::<[u8; 12]>(),
        ) {
            let ring = ring_of(&id, &kek);
            let w = wrapped_key::wrap_with_nonce(&key, ring.current(), &nonce);
            prop_assert_eq!(w.len(), 5 + id.len() + 1 + wrapped_key::BODY_BASE64_LEN);
            let u = wrapped_key::unwrap(&w, Some(&ring)).unwrap();
            prop_assert_eq!(*u.raw, key);
            prop_assert_eq!(u.kek_id, id);
        }

        #[test]
        fn any_change_to_the_body_is_refused(
            key in any::<[u8; 32]>(), nonce in any::<[u8; 12]>(), at in 0usize..80, c in "[A-Za-z0-9+/=]",
        ) {
            let ring = ring_of("k1", &[7u8; 32]);
            let w = wrapped_key::wrap_with_nonce(&key, ring.current(), &nonce);
            let pos = "pzw1:k1:".len() + at;
            let mut changed = w.clone();
            changed.replace_range(pos..pos + 1, &c);
            prop_assume!(changed != w);
            let e = wrapped_key::unwrap(&changed, Some(&ring)).err();
            prop_assert!(matches!(e, Some(Error::WrappedKeyAuth { .. }) | Some(Error::WrappedKeyTruncated)), "{:?}", e);
        }

        #[test]
        fn unwrap_never_panics_nor_echoes(text in ".{0,200}", tail in "[A-Za-z0-9+/=]{0,100}") {
            let ring = ring_of("k1", &[7u8; 32]);
            for t in [text.clone(), format!("pzw1:k1:{tail}"), format!("pzw1:{text}"), format!("pzw1:k1:{text}")] {
                if let Err(e) = wrapped_key::unwrap(&t, Some(&ring)) {
                    let m = e.to_string();
                    if tail.len() >= 10 {
                        prop_assert!(!m.contains(&tail[..10]), "{}", m);
                    }
                }
            }
        }

        #[test]
        fn kek_ring_parser_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300), s in ".{0,200}") {
            let _ = KekRing::from_json(&bytes);
            let _ = KekRing::from_json(s.as_bytes());
            let _ = KekRing::from_json(format!(r#"{{"current": "k1", "keys": {s}}}"#).as_bytes());
        }
    }
}

#[test]
fn index_keys_follow_the_same_policy() {
    use pazpaz_core::blind_index::IndexKey;
    let v = vectors();
    let ring = ring(&v);
    let t = &v["vectors"][0];
    let raw_b64 = t["data_key"].as_str().unwrap();
    let lax = KeyPolicy { keks: Some(&ring), require_wrapped: false, on_unwrap: None };
    let from_wrapped = IndexKey::from_setting(t["wrapped"].as_str().unwrap(), &lax).unwrap();
    let from_raw = IndexKey::from_base64(raw_b64).unwrap();
    assert_eq!(from_wrapped.fingerprint(), from_raw.fingerprint());
    let strict = KeyPolicy { require_wrapped: true, ..lax };
    assert_eq!(IndexKey::from_setting(raw_b64, &strict).err(), Some(Error::RawKeyRefused));
    assert_eq!(IndexKey::from_setting(t["wrapped"].as_str().unwrap(), &KeyPolicy::default()).err(), Some(Error::NoKek));
}
