//! Known-answer tests: NIST AES-256-GCM vectors (96-bit IVs) and the field
//! vectors made by the existing application's implementation (Python
//! `cryptography`), kept in `tests/vectors/field_vectors.json`.

use aes_gcm::{Aes256Gcm, KeyInit};
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use pazpaz_core::keyring::Keyring;
use pazpaz_core::{field, versioned, Error};

struct Nist {
    key: &'static str,
    iv: &'static str,
    pt: &'static str,
    aad: &'static str,
    ct: &'static str,
    tag: &'static str,
}

/// NIST CAVP `gcmEncryptExtIV256.rsp` entries and the GCM specification's
/// test cases 13-16 (McGrew & Viega).
const NIST: &[Nist] = &[
    Nist { key: "b52c505a37d78eda5dd34f20c22540ea1b58963cf8e5bf8ffa85f9f2492505b4", iv: "516c33929df5a3284ff463d7", pt: "", aad: "", ct: "", tag: "bdc1ac884d332457a1d2664f168c76f0" },
    Nist { key: "78dc4e0aaf52d935c3c01eea57428f00ca1fd475f5da86a49c8dd73d68c8e223", iv: "d79cf22d504cc793c3fb6c8a", pt: "", aad: "b96baa8c1c75a671bfb2d08d06be5f36", ct: "", tag: "3e5d486aa2e30b22e040b85723a06e76" },
    Nist { key: "9f953b9f2f3bb4103a4b34d8ca2ec3720df7fedf8c69cac900bd75338beababe", iv: "eb731ae04e39f3eb88cc77fa",
        pt: "3b80d5ac12ba9dad9d9ff30a73732674e11c9edf9bb057fd1c6adc97cf6c5fa3ee8690ad4c51b10b3bd5da9a28e6275cbe28cb",
        aad: "d44a07d869ac0d89b15262a1e8e1aa74f09bcb82",
        ct: "1533ce8e2fc6ab485aef6fcfb08ded83ae549a7111fce2a1d8a3f691f35182ce46fce6204d7dafb8d3206c4e4b645bc3f5afd1",
        tag: "f09265c21f90ef79b309a93db73d9290" },
    Nist { key: "463b412911767d57a0b33969e674ffe7845d313b88c6fe312f3d724be68e1fca", iv: "611ce6f9a6880750de7da6cb",
        pt: "e7d1dcf668e2876861940e012fe52a98dacbd78ab63c08842cc9801ea581682ad54af0c34d0d7f6f59e8ee0bf4900e0fd85042",
        aad: "0a682fbc6192e1b47a5e0868787ffdafe5a50cead3575849990cdd2ea9b3597749403efb4a56684f0c6bde352d4aeec5",
        ct: "8886e196010cb3849d9c1a182abe1eeab0a5f3ca423c3669a4a8703c0f146e8e956fb122e0d721b869d2b6fcd4216d7d4d3758",
        tag: "2469cecd70fd98fec9264f71df1aee9a" },
    Nist { key: "0000000000000000000000000000000000000000000000000000000000000000", iv: "000000000000000000000000", pt: "", aad: "", ct: "", tag: "530f8afbc74536b9a963b4f1c4cb738b" },
    Nist { key: "0000000000000000000000000000000000000000000000000000000000000000", iv: "000000000000000000000000",
        pt: "00000000000000000000000000000000", aad: "", ct: "cea7403d4d606b6e074ec5d3baf39d18", tag: "d0d1c8a799996bf0265b98b5d48ab919" },
    Nist { key: "feffe9928665731c6d6a8f9467308308feffe9928665731c6d6a8f9467308308", iv: "cafebabefacedbaddecaf888",
        pt: "d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a721c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b391aafd255",
        aad: "",
        ct: "522dc1f099567d07f47f37a32a84427d643a8cdcbfe5c0c97598a2bd2555d1aa8cb08e48590dbb3da7b08b1056828838c5f61e6393ba7a0abcc9f662898015ad",
        tag: "b094dac5d93471bdec1a502270e3cc6c" },
    Nist { key: "feffe9928665731c6d6a8f9467308308feffe9928665731c6d6a8f9467308308", iv: "cafebabefacedbaddecaf888",
        pt: "d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a721c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b39",
        aad: "feedfacedeadbeeffeedfacedeadbeefabaddad2",
        ct: "522dc1f099567d07f47f37a32a84427d643a8cdcbfe5c0c97598a2bd2555d1aa8cb08e48590dbb3da7b08b1056828838c5f61e6393ba7a0abcc9f662",
        tag: "76fc6ece0f4e1768cddf8853bb2d551b" },
];

fn h(s: &str) -> Vec<u8> {
    hex::decode(s).unwrap()
}

#[test]
fn nist_vectors_encrypt_and_decrypt() {
    for (i, v) in NIST.iter().enumerate() {
        let cipher = Aes256Gcm::new_from_slice(&h(v.key)).unwrap();
        let nonce: [u8; 12] = h(v.iv).try_into().unwrap();
        let sealed = field::encrypt(&cipher, &nonce, &h(v.pt), &h(v.aad)).unwrap();
        let want = [h(v.iv), h(v.ct), h(v.tag)].concat();
        assert_eq!(sealed, want, "vector {i} encrypt");
        assert_eq!(field::decrypt(&cipher, &want, &h(v.aad)).unwrap(), h(v.pt), "vector {i} decrypt");
        // Any other associated data must fail.
        let mut aad = h(v.aad);
        aad.push(0);
        assert_eq!(field::decrypt(&cipher, &want, &aad).err(), Some(Error::DecryptionFailed), "vector {i} aad");
    }
}

fn vectors() -> serde_json::Value {
    let p = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/vectors/field_vectors.json");
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

fn ring(v: &serde_json::Value) -> Keyring {
    Keyring::from_json(&v["keys_base64"].to_string()).unwrap()
}

#[test]
fn in_repo_vectors_match_the_shared_copy() {
    // The repository carries a copy so that tests run from any clone; when the
    // shared original is present, the copy must not have drifted.
    let shared = concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/vectors/field_vectors.json");
    if let Ok(orig) = std::fs::read_to_string(shared) {
        let orig: serde_json::Value = serde_json::from_str(&orig).unwrap();
        assert_eq!(orig, vectors());
    }
}

#[test]
fn field_vectors_decrypt_in_both_formats() {
    let v = vectors();
    let ring = ring(&v);
    let list = v["vectors"].as_array().unwrap();
    assert_eq!(list.len(), 12);
    for t in list {
        let key = ring.get(t["key_version"].as_str().unwrap()).unwrap();
        let want = t["plaintext"].as_str().unwrap().as_bytes();
        let sealed = h(t["bytea_hex"].as_str().unwrap());
        assert_eq!(sealed.len(), want.len() + field::OVERHEAD);
        assert_eq!(field::decrypt(key.cipher(), &sealed, b"").unwrap(), want);
        let (ver, bytes) = versioned::from_json(&t["envelope"]).unwrap();
        assert_eq!(ver, t["key_version"].as_str().unwrap());
        assert_eq!(bytes, sealed);
        let pt = field::decrypt(ring.get(ver).unwrap().cipher(), &bytes, b"").unwrap();
        assert_eq!(pt, want);
        field::check_text(&pt).unwrap();
    }
}

#[test]
fn field_must_fail_vectors_fail_with_their_message() {
    let v = vectors();
    let ring = ring(&v);
    let list = v["must_fail"].as_array().unwrap();
    assert!(!list.is_empty());
    for t in list {
        let key = ring.get(t["key_version"].as_str().unwrap()).unwrap();
        let err = field::decrypt(key.cipher(), &h(t["bytea_hex"].as_str().unwrap()), b"").unwrap_err();
        let want = t["error_contains"].as_str().unwrap();
        assert!(err.to_string().contains(want), "{}: got {err}", t["why"]);
    }
}

#[test]
fn every_byte_position_is_authenticated() {
    let v = vectors();
    let ring = ring(&v);
    let key = ring.get("v1").unwrap();
    for t in v["vectors"].as_array().unwrap().iter().take(10) {
        let sealed = h(t["bytea_hex"].as_str().unwrap());
        for pos in 0..sealed.len() {
            for bit in [0x01u8, 0x80] {
                let mut bad = sealed.clone();
                bad[pos] ^= bit;
                if t["key_version"] == "v1" {
                    assert_eq!(
                        field::decrypt(key.cipher(), &bad, b"").err(),
                        Some(Error::DecryptionFailed),
                        "pos {pos}"
                    );
                }
            }
        }
    }
}

#[test]
fn every_truncation_below_28_bytes_is_too_short() {
    let v = vectors();
    let ring = ring(&v);
    let key = ring.get("v1").unwrap();
    let sealed = h(v["vectors"][0]["bytea_hex"].as_str().unwrap());
    for len in 0..field::OVERHEAD {
        let e = field::decrypt(key.cipher(), &sealed[..len], b"").unwrap_err();
        assert_eq!(e.to_string(), "Ciphertext too short", "len {len}");
    }
    // Truncations of 28 bytes or more are not "too short" but fail authentication.
    for len in field::OVERHEAD..sealed.len() {
        assert_eq!(field::decrypt(key.cipher(), &sealed[..len], b"").err(), Some(Error::DecryptionFailed));
    }
}

#[test]
fn versioned_envelopes_round_trip_and_reject_malformed() {
    let v = vectors();
    let ring = ring(&v);
    let key = ring.get("v2").unwrap();
    let sealed = field::encrypt(key.cipher(), &[9; 12], "héllo".as_bytes(), b"").unwrap();
    let env = versioned::to_json("v2", &sealed);
    assert_eq!(env["version"], "v2");
    assert_eq!(STANDARD.decode(env["ciphertext"].as_str().unwrap()).unwrap(), sealed);
    let bad: &[(&str, &str)] = &[
        (r#"[1,2]"#, "not a JSON object"),
        (r#""x""#, "not a JSON object"),
        (r#"{"ciphertext": "AAAA"}"#, "missing \"version\""),
        (r#"{"version": 1, "ciphertext": "AAAA"}"#, "\"version\" is not a string"),
        (r#"{"version": "v1"}"#, "missing \"ciphertext\""),
        (r#"{"version": "v1", "ciphertext": 5}"#, "\"ciphertext\" is not a string"),
        (r#"{"version": "v1", "ciphertext": "!!!"}"#, "not valid base64"),
        (r#"{"version": "v1", "ciphertext": "AAAA"}"#, "Ciphertext too short"),
    ];
    for (json, want) in bad {
        let j: serde_json::Value = serde_json::from_str(json).unwrap();
        let e = versioned::from_json(&j).unwrap_err().to_string();
        assert!(e.contains(want), "{json}: {e}");
    }
}
