//! The `encrypted_text` envelope (format 3): layout, header authentication,
//! text form.

use pazpaz_core::encrypted_text::{self, Stored};
use pazpaz_core::keyring::Keyring;
use pazpaz_core::{field, Error};

const K1: &str = "bMz1Y4AHud4S70SS7t8UyrpTbNpwEC5kGFbDbyOoiTE=";
const K2: &str = "Z/TsZIiTccYEKunb7MB/oeQGL2uW5CyHQnwYj9xtvEU=";

fn ring() -> Keyring {
    Keyring::from_json(&format!(r#"{{"v1": "{K1}", "v2": "{K2}"}}"#)).unwrap()
}

#[test]
fn layout_is_as_documented() {
    let r = ring();
    let k = r.get("v2").unwrap();
    let nonce = [7u8; 12];
    let e = encrypted_text::seal(k.cipher(), "v2", &nonce, b"abc").unwrap();
    assert_eq!(e.len(), 2 + 2 + 12 + 3 + 16);
    assert_eq!(&e[..4], &[1, 2, b'v', b'2']);
    assert_eq!(&e[4..16], &nonce);
    // The body is format 1 with the header as associated data.
    assert_eq!(field::decrypt(k.cipher(), &e[4..], &e[..4]).unwrap(), b"abc");
    let p = Stored::parse(&e).unwrap();
    assert_eq!(p.version, "v2");
    assert_eq!(p.plaintext_len(), 3);
    assert_eq!(p.open(k.cipher()).unwrap(), b"abc");
}

#[test]
fn header_changes_are_detected() {
    let r = ring();
    let e = encrypted_text::seal(r.get("v1").unwrap().cipher(), "v1", &[1; 12], b"secret").unwrap();
    // Rename v1 -> v2 in the header: parses, but the v2 key (or the v1 key with
    // the altered header) must fail authentication.
    let mut renamed = e.clone();
    renamed[3] = b'2';
    let p = Stored::parse(&renamed).unwrap();
    assert_eq!(p.version, "v2");
    assert_eq!(p.open(r.get("v2").unwrap().cipher()).err(), Some(Error::DecryptionFailed));
    assert_eq!(field::decrypt(r.get("v1").unwrap().cipher(), p.sealed, p.header).err(), Some(Error::DecryptionFailed));
    // Every single-bit change anywhere fails (parse error or authentication).
    for pos in 0..e.len() {
        let mut bad = e.clone();
        bad[pos] ^= 0x04;
        let ok = Stored::parse(&bad)
            .and_then(|p| r.get(p.version).map_err(|_| Error::DecryptionFailed).and_then(|k| p.open(k.cipher())));
        assert!(ok.is_err(), "pos {pos}");
    }
}

#[test]
fn malformed_envelopes() {
    let r = ring();
    let e = encrypted_text::seal(r.get("v1").unwrap().cipher(), "v1", &[1; 12], b"").unwrap();
    for len in 0..e.len() {
        assert_eq!(Stored::parse(&e[..len]).err(), Some(Error::CiphertextTooShort), "len {len}");
    }
    let mut bad = e.clone();
    bad[0] = 2;
    assert!(matches!(Stored::parse(&bad), Err(Error::BadEncryptedText(_))));
    let mut bad = e.clone();
    bad[2] = b' ';
    assert!(matches!(Stored::parse(&bad), Err(Error::BadEncryptedText(_))));
    let mut bad = e.clone();
    bad[1] = 0;
    assert!(Stored::parse(&bad).is_err());
}

#[test]
fn text_form_round_trips() {
    let r = ring();
    let e = encrypted_text::seal(r.get("v1").unwrap().cipher(), "v1", &[3; 12], "ünï".as_bytes()).unwrap();
    let t = encrypted_text::to_text(&e);
    assert!(t.starts_with("pazpaz:"));
    assert_eq!(encrypted_text::from_text(&t), Some(e.clone()));
    assert_eq!(encrypted_text::parse_text(&t).unwrap(), e);
    assert_eq!(encrypted_text::from_text("pazpaz:not an envelope"), None);
    assert_eq!(encrypted_text::from_text("hello"), None);
    assert!(encrypted_text::parse_text("hello").is_err());
}

#[test]
fn reseal_moves_a_value_to_another_key_and_version() {
    let r = ring();
    let (k1, k2) = (r.get("v1").unwrap(), r.get("v2").unwrap());
    let old = encrypted_text::seal(k1.cipher(), "v1", &[5; 12], "Zoë".as_bytes()).unwrap();
    let env = Stored::parse(&old).unwrap();
    let mut out = vec![0u8; encrypted_text::sealed_len("v2", env.plaintext_len()).unwrap()];
    encrypted_text::reseal_into(&env, k1.cipher(), k2.cipher(), "v2", &[6; 12], &mut out).unwrap();
    let new = Stored::parse(&out).unwrap();
    assert_eq!(new.version, "v2");
    assert_eq!(&out[4..16], &[6; 12]);
    assert_eq!(new.open(k2.cipher()).unwrap(), "Zoë".as_bytes());
    // A tampered source fails authentication and leaves no plaintext behind.
    let mut bad = old.clone();
    let last = bad.len() - 1;
    bad[last] ^= 1;
    let env = Stored::parse(&bad).unwrap();
    let mut out = vec![0u8; encrypted_text::sealed_len("v2", env.plaintext_len()).unwrap()];
    assert_eq!(
        encrypted_text::reseal_into(&env, k1.cipher(), k2.cipher(), "v2", &[6; 12], &mut out),
        Err(Error::DecryptionFailed)
    );
    assert!(!out.windows(4).any(|w| w == "Zoë".as_bytes()));
}

const SECRET: [u8; 32] = [9; 32];

fn transport(r: &Keyring, version: &str, e: &[u8]) -> Vec<u8> {
    let mut out = vec![0u8; encrypted_text::transport_text_len(e.len()).unwrap()];
    encrypted_text::write_transport_text(r.get(version).unwrap().key(), &SECRET, e, &mut out).unwrap();
    out
}

#[test]
fn transport_form_verifies_only_under_the_same_key() {
    let r = ring();
    let e = encrypted_text::seal(r.get("v1").unwrap().cipher(), "v1", &[5; 12], b"PLAINTEXT").unwrap();
    let t = transport(&r, "v1", &e);
    assert!(encrypted_text::is_transport_text(&t));
    assert!(!t.windows(9).any(|w| w == b"PLAINTEXT"));
    let back = encrypted_text::parse_transport_text(&t, &SECRET, |v| r.get(v)).unwrap();
    assert_eq!(back, e);

    // Another transaction's secret (a form copied from a log and replayed
    // later): refused.
    assert!(matches!(encrypted_text::parse_transport_text(&t, &[8; 32], |v| r.get(v)), Err(Error::BadTransport)));

    // The same envelope under another keyring (v1 → a different key): refused.
    let other = Keyring::from_json(&format!(r#"{{"v1": "{K2}"}}"#)).unwrap();
    assert!(matches!(encrypted_text::parse_transport_text(&t, &SECRET, |v| other.get(v)), Err(Error::BadTransport)));

    // A flipped bit anywhere in the body or tag: refused.
    let b64 = &t[encrypted_text::TRANSPORT_PREFIX.len()..];
    use base64::Engine as _;
    let body = base64::engine::general_purpose::STANDARD.decode(b64).unwrap();
    for i in [0, 5, body.len() / 2, body.len() - 1] {
        let mut bad = body.clone();
        bad[i] ^= 1;
        let s =
            format!("{}{}", encrypted_text::TRANSPORT_PREFIX, base64::engine::general_purpose::STANDARD.encode(&bad));
        assert!(encrypted_text::parse_transport_text(s.as_bytes(), &SECRET, |v| r.get(v)).is_err(), "byte {i}");
    }

    // An envelope's ordinary text form, with the transport prefix, is no
    // transport form (no tag): an attacker who copied a ciphertext cannot
    // make one.
    let plain_form = encrypted_text::to_text(&e).replacen("pazpaz:", encrypted_text::TRANSPORT_PREFIX, 1);
    assert!(encrypted_text::parse_transport_text(plain_form.as_bytes(), &SECRET, |v| r.get(v)).is_err());
    assert!(encrypted_text::parse_transport_text(b"pazpaz-transport:", &SECRET, |v| r.get(v)).is_err());
    assert!(encrypted_text::parse_transport_text(b"pazpaz-transport:!!", &SECRET, |v| r.get(v)).is_err());
    assert!(!encrypted_text::is_transport_text(b"pazpaz:abc"));
}
