//! Property tests of every parser and of the round trips of the three byte
//! formats.
//!
//! Each parser is fed arbitrary input (and, to get past the first checks,
//! input that is *almost* valid) and must return a result, never panic: inside
//! PostgreSQL a panic would become an error at best, and the glue trusts these
//! functions with untrusted column values and settings. Where the valid inputs
//! are easy to describe independently of the code, the property states exactly
//! which inputs are accepted, so a parser that became too lenient also fails.
//!
//! The case count is modest (proptest's default 256 per property, fewer for
//! the costlier ones) so `cargo test` stays fast; `PROPTEST_CASES=10000 cargo
//! test -p pazpaz_core --test properties` runs a longer campaign.

use aes_gcm::{Aes256Gcm, KeyInit};
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use proptest::prelude::*;
use serde_json::Value;

use pazpaz_core::data_key::Key;
use pazpaz_core::encrypted_text::{self, Stored};
use pazpaz_core::error::ErrorClass;
use pazpaz_core::keyring::Keyring;
use pazpaz_core::versioned::{self, Member};
use pazpaz_core::{field, Error};

// ---- helpers ------------------------------------------------------------------

fn cipher(key: &[u8; 32]) -> Aes256Gcm {
    Aes256Gcm::new_from_slice(key).unwrap()
}

/// The version-name rule as the error message states it, written out here
/// rather than calling `keyring::validate_version`, so the tests check the
/// parsers against the contract and not against themselves.
fn is_valid_version(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.')
}

/// True when `message` contains any 10-character run of `secret`. Shorter
/// runs could occur in the fixed English text of a message by chance; a
/// 10-character run of a random base64 string cannot.
fn leaks(message: &str, secret: &str) -> bool {
    let s = secret.as_bytes();
    if s.len() < 10 {
        return message.contains(secret);
    }
    s.windows(10).any(|w| message.contains(std::str::from_utf8(w).unwrap()))
}

fn valid_version() -> impl Strategy<Value = String> {
    "[A-Za-z0-9_.-]{1,64}"
}

/// Base64-looking strings of any length, as a secret that must not be echoed.
fn base64ish_secret() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<[u8; 32]>().prop_map(|b| STANDARD.encode(b)),
        prop::collection::vec(any::<u8>(), 9..80).prop_map(|b| STANDARD.encode(b)),
        "[A-Za-z0-9+/]{12,90}={0,2}",
    ]
}

/// Arbitrary JSON values, biased towards the member names and shapes the
/// envelope parser looks at.
fn arb_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_filter_map("finite", |f| serde_json::Number::from_f64(f).map(Value::Number)),
        ".{0,40}".prop_map(Value::String),
        prop::collection::vec(any::<u8>(), 0..80).prop_map(|b| Value::String(STANDARD.encode(b))),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        let name = prop_oneof![Just("version".to_string()), Just("ciphertext".to_string()), ".{0,12}"];
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec((name, inner), 0..6).prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
}

// ---- key parsing ----------------------------------------------------------------

proptest! {
    /// Any string: an error or a key, never a panic; and exactly the strings
    /// that are standard base64 of 32 bytes (after trimming ASCII whitespace)
    /// are accepted, with the documented error otherwise.
    #[test]
    fn key_from_arbitrary_string(text in prop_oneof![".*", "[A-Za-z0-9+/= \n]{0,60}"]) {
        let trimmed = text.trim_matches(|c: char| c.is_ascii_whitespace());
        let want = match STANDARD.decode(trimmed) {
            Err(_) => Err(Error::KeyBase64),
            Ok(b) if b.len() != 32 => Err(Error::KeySize),
            Ok(_) => Ok(()),
        };
        prop_assert_eq!(Key::from_base64(&text).map(|k| assert_eq!(k.fingerprint().len(), 8)), want);
    }

    /// Base64 of any length: accepted iff it is 32 bytes, with surrounding
    /// whitespace ignored; the same bytes give the same fingerprint.
    #[test]
    fn key_from_base64_of_any_length(bytes in prop::collection::vec(any::<u8>(), 0..70), pad in "[ \t\r\n]{0,3}") {
        let text = STANDARD.encode(&bytes);
        let padded = format!("{pad}{text}{pad}");
        match Key::from_base64(&padded) {
            Ok(k) => {
                prop_assert_eq!(bytes.len(), 32);
                let unpadded = Key::from_base64(&text).unwrap();
                prop_assert_eq!(k.fingerprint(), unpadded.fingerprint());
            }
            Err(e) => {
                prop_assert_ne!(bytes.len(), 32);
                prop_assert_eq!(e, Error::KeySize);
            }
        }
    }

    /// A key setting that is not accepted is reported without echoing it.
    #[test]
    fn key_errors_do_not_echo_the_value(secret in base64ish_secret(), junk in "[^A-Za-z0-9+/=]{0,2}") {
        for text in [secret.clone(), format!("{secret}{junk}"), format!("{junk}{secret}"), secret[1..].to_string()] {
            if let Err(e) = Key::from_base64(&text) {
                prop_assert_eq!(e.class(), ErrorClass::InvalidParameter);
                let msg = e.to_string();
                prop_assert!(!leaks(&msg, &secret), "{msg}");
            }
        }
    }
}

// ---- keyring parsing ------------------------------------------------------------

/// One member of a generated keyring, with what the parser must make of it.
#[derive(Debug, Clone)]
enum RingValue {
    /// Base64 of 32 bytes: a key.
    Key([u8; 32]),
    /// Valid base64 of another length.
    WrongSize(Vec<u8>),
    /// A JSON string that is not base64.
    NotBase64(String),
    /// Any JSON value that is not a string.
    NotString(Value),
}

impl RingValue {
    fn json(&self) -> String {
        match self {
            RingValue::Key(b) => serde_json::to_string(&STANDARD.encode(b)).unwrap(),
            RingValue::WrongSize(b) => serde_json::to_string(&STANDARD.encode(b)).unwrap(),
            RingValue::NotBase64(s) => serde_json::to_string(s).unwrap(),
            RingValue::NotString(v) => v.to_string(),
        }
    }
}

fn ring_value() -> impl Strategy<Value = RingValue> {
    prop_oneof![
        4 => any::<[u8; 32]>().prop_map(RingValue::Key),
        1 => prop::collection::vec(any::<u8>(), 0..60).prop_filter("not 32", |b| b.len() != 32).prop_map(RingValue::WrongSize),
        1 => ".{0,20}[^A-Za-z0-9+/=]".prop_map(RingValue::NotBase64),
        1 => arb_json().prop_filter("not a string", |v| !v.is_string()).prop_map(RingValue::NotString),
    ]
}

fn ring_name() -> impl Strategy<Value = String> {
    prop_oneof![
        6 => "[a-z][a-z0-9]{0,2}",
        1 => valid_version(),
        1 => ".{0,66}",
        1 => Just(String::new()),
    ]
}

/// `{"name": value, …}` written by hand, so that duplicate names survive
/// (a serde_json map would merge them), with arbitrary whitespace.
fn ring_text(members: &[(String, RingValue)], ws: &str) -> String {
    let body: Vec<String> = members
        .iter()
        .map(|(n, v)| format!("{ws}{}{ws}:{ws}{}{ws}", serde_json::to_string(n).unwrap(), v.json()))
        .collect();
    format!("{ws}{{{}}}{ws}", body.join(","))
}

proptest! {
    /// Any string: never a panic. Whatever is accepted holds at least one key,
    /// under valid version names.
    #[test]
    fn keyring_from_arbitrary_string(text in prop_oneof![
        ".*",
        r#"[{}\[\]":, a-z0-9A-Z+/=]{0,80}"#,
    ]) {
        if let Ok(ring) = Keyring::from_json(&text) {
            prop_assert!(!ring.entries().is_empty());
            prop_assert!(ring.entries().iter().all(|e| is_valid_version(e.version())));
        }
    }

    /// Structured keyrings: accepted exactly when every name is a valid,
    /// unique version name and every value is base64 of 32 bytes; then the
    /// ring holds those keys in order, and a single key is the write key.
    #[test]
    fn keyring_from_structured_json(
        members in prop::collection::vec((ring_name(), ring_value()), 0..6),
        ws in "[ \t\n]{0,2}",
    ) {
        let text = ring_text(&members, &ws);
        let names: Vec<&str> = members.iter().map(|(n, _)| n.as_str()).collect();
        let unique = names.iter().enumerate().all(|(i, n)| !names[..i].contains(n));
        let valid = !members.is_empty()
            && unique
            && names.iter().all(|n| is_valid_version(n))
            && members.iter().all(|(_, v)| matches!(v, RingValue::Key(_)));
        match Keyring::from_json(&text) {
            Ok(ring) => {
                prop_assert!(valid, "accepted {}", text);
                let got: Vec<&str> = ring.entries().iter().map(|e| e.version()).collect();
                prop_assert_eq!(&got, &names);
                for (entry, (_, v)) in ring.entries().iter().zip(&members) {
                    let RingValue::Key(b) = v else { unreachable!() };
                    let want = Key::from_base64(&STANDARD.encode(b)).unwrap();
                    prop_assert_eq!(entry.fingerprint(), want.fingerprint());
                }
                let want_current = (members.len() == 1).then(|| names[0]);
                prop_assert_eq!(ring.current_version(), want_current);
            }
            Err(e) => {
                prop_assert!(!valid, "refused {}: {}", text, e);
                prop_assert_eq!(e.class(), ErrorClass::InvalidParameter);
            }
        }
    }

    /// Truncated or extended keyring text: never a panic, and a keyring whose
    /// closing brace was cut off is never accepted.
    #[test]
    fn keyring_from_damaged_json(
        members in prop::collection::vec((ring_name(), ring_value()), 1..4),
        cut in any::<prop::sample::Index>(),
        tail in ".{0,4}",
    ) {
        let text = ring_text(&members, "");
        let mut end = cut.index(text.len());
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        prop_assert!(Keyring::from_json(&text[..end]).is_err(), "{}", &text[..end]);
        let extended = format!("{text}{tail}");
        let _ = Keyring::from_json(&extended);
    }

    /// Keyring errors never contain a key, whichever way the JSON is wrong.
    #[test]
    fn keyring_errors_do_not_echo_values(secret in base64ish_secret(), good in any::<[u8; 32]>()) {
        let good = STANDARD.encode(good);
        let cases = [
            format!(r#"{{"v1": "{secret}"}}"#),
            format!(r#"{{"v1": "{good}", "v2": "{secret}"}}"#),
            format!(r#"{{"v1": "{secret}", "v1": "{secret}"}}"#),
            format!(r#"{{"v1": ["{secret}"]}}"#),
            format!(r#"{{"v1": {{"k": "{secret}"}}}}"#),
            format!(r#"{{"v1": "{secret}""#),
            format!(r#"{{"v1": "{secret}"}} "{secret}""#),
            format!(r#"{{"v1": "{secret}" "v2": 1}}"#),
            format!(r#"{{"v1": {secret}}}"#),
            format!(r#"{{"v 1": "{secret}"}}"#),
            format!(r#"{{"{good}": "{secret}"}}"#),
            format!(r#"["{secret}"]"#),
            format!(r#""{secret}""#),
            secret.clone(),
            format!(r#"{{"v1": "{secret}\u00"}}"#),
        ];
        for json in cases {
            if let Err(e) = Keyring::from_json(&json) {
                let msg = e.to_string();
                prop_assert!(!leaks(&msg, &secret) && !leaks(&msg, &good), "{}: {}", json, msg);
            }
        }
    }

    /// The three settings together: never a panic; both key settings set is
    /// always the documented error, and neither set is "missing key".
    #[test]
    fn keyring_from_arbitrary_settings(
        key in prop::option::of(prop_oneof![".{0,50}", any::<[u8; 32]>().prop_map(|b| STANDARD.encode(b))]),
        keys in prop::option::of(prop_oneof![".{0,50}", any::<[u8; 32]>().prop_map(|b| format!(r#"{{"v1":"{}"}}"#, STANDARD.encode(b)))]),
        version in prop::option::of(prop_oneof![".{0,10}", Just("v1".to_string())]),
    ) {
        let set = |s: &Option<String>| s.as_deref().is_some_and(|s| !s.trim().is_empty());
        let r = Keyring::from_settings(key.as_deref(), keys.as_deref(), version.as_deref());
        match (set(&key), set(&keys)) {
            (true, true) => prop_assert_eq!(r.err(), Some(Error::BothKeySettings)),
            (false, false) => prop_assert_eq!(r.err(), Some(Error::MissingKey)),
            _ => {
                if let Ok(ring) = r {
                    prop_assert!(!ring.entries().is_empty());
                }
            }
        }
    }

    /// Looking up any version (an envelope's version member can hold any
    /// text): never a panic, and the message repeats the name only when it
    /// is a valid version name.
    #[test]
    fn keyring_lookup_of_any_version(name in prop_oneof![".{0,80}", valid_version()], key in any::<[u8; 32]>()) {
        let ring = Keyring::from_json(&format!(r#"{{"v1": "{}"}}"#, STANDARD.encode(key))).unwrap();
        match ring.get(&name) {
            Ok(entry) => prop_assert!(name == "v1" && entry.version() == "v1"),
            Err(e) => {
                prop_assert_ne!(name.as_str(), "v1");
                let shown = if is_valid_version(&name) { name.as_str() } else { "(invalid name)" };
                prop_assert_eq!(e.to_string(), format!("Key version \"{shown}\" is not loaded (loaded versions: v1)"));
            }
        }
    }
}

/// The documented cap on the number of keys in a keyring.
#[test]
fn keyring_holds_at_most_256_keys() {
    let key = STANDARD.encode([9u8; 32]);
    let ring = |n: usize| {
        let members: Vec<String> = (0..n).map(|i| format!(r#""v{i}": "{key}""#)).collect();
        Keyring::from_json(&format!("{{{}}}", members.join(",")))
    };
    assert_eq!(ring(256).unwrap().entries().len(), 256);
    assert!(ring(257).err().unwrap().to_string().contains("more than 256 keys"));
}

// ---- format 2: the jsonb envelope ----------------------------------------------

/// Versioned-envelope-shaped objects: `version` and `ciphertext` present or not, of
/// the right type or not, ciphertext of any length, plus extra members.
fn envelope_like_json() -> impl Strategy<Value = Value> {
    let version = prop::option::of(prop_oneof![3 => valid_version().prop_map(Value::String), 1 => arb_json()]);
    let ciphertext = prop::option::of(prop_oneof![
        3 => prop::collection::vec(any::<u8>(), 0..80).prop_map(|b| Value::String(STANDARD.encode(b))),
        1 => "[A-Za-z0-9+/=]{0,60}".prop_map(Value::String),
        1 => arb_json(),
    ]);
    let extra = prop::collection::vec((".{0,8}", arb_json()), 0..3);
    (version, ciphertext, extra).prop_map(|(v, c, extra)| {
        let mut m: serde_json::Map<String, Value> = extra.into_iter().collect();
        match v {
            Some(v) => m.insert("version".into(), v),
            None => m.remove("version"),
        };
        match c {
            Some(c) => m.insert("ciphertext".into(), c),
            None => m.remove("ciphertext"),
        };
        Value::Object(m)
    })
}

proptest! {
    /// Any JSON value: never a panic; accepted exactly when it is an object
    /// whose "version" is a string and whose "ciphertext" is standard base64
    /// of at least 28 bytes, and then it returns those.
    #[test]
    fn versioned_from_arbitrary_json(v in prop_oneof![arb_json(), envelope_like_json()]) {
        let version = v.get("version").and_then(Value::as_str);
        let ct = v.get("ciphertext").and_then(Value::as_str).map(|s| STANDARD.decode(s));
        let result = versioned::from_json(&v);
        match (v.is_object(), version, ct) {
            (true, Some(version), Some(Ok(bytes))) if bytes.len() >= field::OVERHEAD => {
                let (got_v, got_b) = result.unwrap();
                prop_assert_eq!(got_v, version);
                prop_assert_eq!(got_b, bytes);
            }
            (true, Some(_), Some(Ok(_))) => prop_assert_eq!(result.err(), Some(Error::CiphertextTooShort)),
            _ => prop_assert_eq!(result.err().map(|e| e.class()), Some(ErrorClass::InvalidText)),
        }
        // key_version() needs only the version member.
        match versioned::version_of(&v) {
            Ok(got) => prop_assert_eq!(Some(got), version.filter(|_| v.is_object())),
            Err(e) => {
                prop_assert!(!v.is_object() || version.is_none());
                prop_assert_eq!(e.class(), ErrorClass::InvalidText);
            }
        }
    }

    /// The jsonb glue hands members over as raw bytes: any bytes, including
    /// invalid UTF-8, are an error or a result, never a panic.
    #[test]
    fn versioned_parts_from_arbitrary_members(
        is_object in any::<bool>(),
        version in prop_oneof![Just(None), Just(Some(None)), prop::collection::vec(any::<u8>(), 0..20).prop_map(|b| Some(Some(b)))],
        ciphertext in prop_oneof![
            Just(None),
            Just(Some(None)),
            prop::collection::vec(any::<u8>(), 0..60).prop_map(|b| Some(Some(b))),
            prop::collection::vec(any::<u8>(), 0..60).prop_map(|b| Some(Some(STANDARD.encode(b).into_bytes()))),
        ],
    ) {
        fn member(m: &Option<Option<Vec<u8>>>) -> Member<'_> {
            match m {
                None => Member::Missing,
                Some(None) => Member::NotString,
                Some(Some(b)) => Member::Str(b),
            }
        }
        match versioned::parts_from(is_object, member(&version), member(&ciphertext)) {
            Ok((v, bytes)) => {
                prop_assert!(is_object);
                prop_assert_eq!(Some(v.as_bytes()), version.as_ref().and_then(|m| m.as_deref()));
                let ct = ciphertext.as_ref().and_then(|m| m.as_deref()).unwrap();
                prop_assert_eq!(Some(bytes.clone()), STANDARD.decode(ct).ok());
                prop_assert!(bytes.len() >= field::OVERHEAD);
            }
            Err(e) => prop_assert!(matches!(e.class(), ErrorClass::InvalidText | ErrorClass::InvalidBinary)),
        }
    }

    /// Format 2 round trip: encrypt, wrap, serialise as JSON text, parse,
    /// unwrap, decrypt.
    #[test]
    fn versioned_round_trip(key in any::<[u8; 32]>(), nonce in any::<[u8; 12]>(), version in valid_version(), plaintext in ".{0,100}") {
        let c = cipher(&key);
        let sealed = field::encrypt(&c, &nonce, plaintext.as_bytes(), b"").unwrap();
        let text = versioned::to_json(&version, &sealed).to_string();
        let parsed: Value = serde_json::from_str(&text).unwrap();
        let (v, bytes) = versioned::from_json(&parsed).unwrap();
        prop_assert_eq!(v, version.as_str());
        prop_assert_eq!(field::decrypt(&c, &bytes, b"").unwrap(), plaintext.as_bytes());
    }
}

// ---- format 1: the unversioned field --------------------------------------------

proptest! {
    /// Random bytes are never accepted as a ciphertext: short ones are "too
    /// short", the others fail authentication. No plaintext comes out.
    #[test]
    fn field_decrypt_rejects_arbitrary_bytes(key in any::<[u8; 32]>(), bytes in prop::collection::vec(any::<u8>(), 0..200), aad in prop::collection::vec(any::<u8>(), 0..20)) {
        let want = if bytes.len() < field::OVERHEAD { Error::CiphertextTooShort } else { Error::DecryptionFailed };
        prop_assert_eq!(field::decrypt(&cipher(&key), &bytes, &aad).err(), Some(want));
    }

    /// encrypt → decrypt is the identity for any bytes and associated data,
    /// and the length is plaintext + 28.
    #[test]
    fn field_round_trip(key in any::<[u8; 32]>(), nonce in any::<[u8; 12]>(), plaintext in prop::collection::vec(any::<u8>(), 0..300), aad in prop::collection::vec(any::<u8>(), 0..40)) {
        let c = cipher(&key);
        let sealed = field::encrypt(&c, &nonce, &plaintext, &aad).unwrap();
        prop_assert_eq!(sealed.len(), plaintext.len() + field::OVERHEAD);
        prop_assert_eq!(&sealed[..12], &nonce[..]);
        prop_assert_eq!(field::decrypt(&c, &sealed, &aad).unwrap(), plaintext);
    }

    /// Any single-bit change of the ciphertext or of the associated data, or
    /// another key, fails authentication; and on failure the output buffer
    /// is left as it was, with no plaintext (the tag is checked before
    /// decrypting).
    #[test]
    fn field_any_change_fails(
        key in any::<[u8; 32]>(),
        other_key in any::<[u8; 32]>(),
        nonce in any::<[u8; 12]>(),
        plaintext in prop::collection::vec(any::<u8>(), 0..100),
        aad in prop::collection::vec(any::<u8>(), 0..20),
        bit in any::<prop::sample::Index>(),
    ) {
        let c = cipher(&key);
        let sealed = field::encrypt(&c, &nonce, &plaintext, &aad).unwrap();

        let mut bad = sealed.clone();
        let i = bit.index(bad.len() * 8);
        bad[i / 8] ^= 1 << (i % 8);
        let mut out = vec![0xA5u8; plaintext.len()];
        prop_assert_eq!(field::decrypt_into(&c, &bad, &aad, &mut out).err(), Some(Error::DecryptionFailed));
        prop_assert!(out.iter().all(|&b| b == 0xA5), "output written although the tag did not match");

        if !aad.is_empty() {
            let mut bad_aad = aad.clone();
            let i = bit.index(aad.len() * 8);
            bad_aad[i / 8] ^= 1 << (i % 8);
            prop_assert_eq!(field::decrypt(&c, &sealed, &bad_aad).err(), Some(Error::DecryptionFailed));
        }
        let mut longer_aad = aad.clone();
        longer_aad.push(0);
        prop_assert_eq!(field::decrypt(&c, &sealed, &longer_aad).err(), Some(Error::DecryptionFailed));
        if other_key != key {
            prop_assert_eq!(field::decrypt(&cipher(&other_key), &sealed, &aad).err(), Some(Error::DecryptionFailed));
        }
        // Truncation by any amount fails too.
        let cut = bit.index(sealed.len());
        prop_assert!(field::decrypt(&c, &sealed[..cut], &aad).is_err());
    }

    /// check_text accepts exactly NUL-free UTF-8 (what a PostgreSQL text can hold).
    #[test]
    fn check_text_accepts_exactly_nul_free_utf8(bytes in prop_oneof![prop::collection::vec(any::<u8>(), 0..40), ".{0,20}".prop_map(String::into_bytes)]) {
        let want = std::str::from_utf8(&bytes).is_ok() && !bytes.contains(&0);
        prop_assert_eq!(field::check_text(&bytes).is_ok(), want);
    }
}

// ---- format 3: the encrypted_text envelope ----------------------------------------

/// Bytes that get past the first checks of `Stored::parse` often: format
/// byte usually 1, a length byte, a name of that length (valid or not), and a
/// body of any length.
fn envelope_like_bytes() -> impl Strategy<Value = Vec<u8>> {
    (
        prop_oneof![4 => Just(1u8), 1 => any::<u8>()],
        prop_oneof![valid_version().prop_map(String::into_bytes), prop::collection::vec(any::<u8>(), 0..70)],
        prop_oneof![3 => Just(None), 1 => any::<u8>().prop_map(Some)],
        prop::collection::vec(any::<u8>(), 0..60),
    )
        .prop_map(|(format, name, len_override, body)| {
            let len = len_override.unwrap_or(name.len() as u8);
            let mut b = vec![format, len];
            b.extend_from_slice(&name);
            b.extend_from_slice(&body);
            b
        })
}

/// A keyring holding `key` under `version` and, when `renamed` is another
/// valid name, the *same* key under `renamed` too: a header edit that renames
/// the version then still finds a key that would decrypt the body, so only
/// the header's authentication can catch it.
fn ring_with_same_key(version: &str, renamed: Option<&str>, key: &[u8; 32]) -> Keyring {
    let key = STANDARD.encode(key);
    let mut members = vec![format!(r#""{version}": "{key}""#)];
    if let Some(n) = renamed.filter(|n| *n != version && is_valid_version(n)) {
        members.push(format!(r#""{n}": "{key}""#));
    }
    Keyring::from_json(&format!("{{{}}}", members.join(","))).unwrap()
}

proptest! {
    /// Any bytes: never a panic; accepted exactly when the format byte is 1,
    /// the name is a valid version name and at least 28 bytes follow it; and
    /// then the pieces are the documented slices.
    #[test]
    fn envelope_parse_arbitrary_bytes(bytes in prop_oneof![prop::collection::vec(any::<u8>(), 0..120), envelope_like_bytes()]) {
        let want_ok = bytes.len() >= 2
            && bytes[0] == 1
            && bytes.len() >= 2 + bytes[1] as usize + field::OVERHEAD
            && std::str::from_utf8(&bytes[2..2 + bytes[1] as usize]).is_ok_and(is_valid_version);
        match Stored::parse(&bytes) {
            Ok(e) => {
                prop_assert!(want_ok);
                let l = bytes[1] as usize;
                prop_assert_eq!(e.version.as_bytes(), &bytes[2..2 + l]);
                prop_assert_eq!(e.header, &bytes[..2 + l]);
                prop_assert_eq!(e.sealed, &bytes[2 + l..]);
                prop_assert_eq!(e.plaintext_len(), bytes.len() - 2 - l - field::OVERHEAD);
            }
            Err(e) => {
                prop_assert!(!want_ok);
                prop_assert_eq!(e.class(), ErrorClass::InvalidBinary);
            }
        }
    }

    /// Random bytes that happen to parse never open, whatever key is loaded
    /// for their version.
    #[test]
    fn envelope_open_rejects_arbitrary_bytes(bytes in envelope_like_bytes(), key in any::<[u8; 32]>()) {
        if let Ok(e) = Stored::parse(&bytes) {
            prop_assert_eq!(e.open(&cipher(&key)).err(), Some(Error::DecryptionFailed));
        }
    }

    /// The text form: `from_text` and `parse_text` agree on every string,
    /// and accept exactly `pazpaz:` + base64 of bytes that parse.
    #[test]
    fn envelope_text_form_arbitrary(text in prop_oneof![
        ".*",
        ".*".prop_map(|s| format!("pazpaz:{s}")),
        prop::collection::vec(any::<u8>(), 0..90).prop_map(|b| encrypted_text::to_text(&b)),
        envelope_like_bytes().prop_map(|b| encrypted_text::to_text(&b)),
    ]) {
        let from = encrypted_text::from_text(&text);
        let parsed = encrypted_text::parse_text(&text);
        prop_assert_eq!(&from, &parsed.clone().ok());
        let want = text
            .strip_prefix("pazpaz:")
            .and_then(|b64| STANDARD.decode(b64).ok())
            .filter(|b| Stored::parse(b).is_ok());
        prop_assert_eq!(&from, &want);
        if let Err(e) = parsed {
            prop_assert_eq!(e.class(), ErrorClass::InvalidBinary);
        }
    }

    /// seal → bytes → parse → open is the identity; the version is readable
    /// without the key; the text form round-trips too.
    #[test]
    fn envelope_round_trip(key in any::<[u8; 32]>(), nonce in any::<[u8; 12]>(), version in valid_version(), plaintext in prop::collection::vec(any::<u8>(), 0..300)) {
        let c = cipher(&key);
        let sealed = encrypted_text::seal(&c, &version, &nonce, &plaintext).unwrap();
        prop_assert_eq!(sealed.len(), encrypted_text::sealed_len(&version, plaintext.len()).unwrap());
        let e = Stored::parse(&sealed).unwrap();
        prop_assert_eq!(e.version, version.as_str());
        prop_assert_eq!(e.plaintext_len(), plaintext.len());
        prop_assert_eq!(e.open(&c).unwrap(), plaintext.clone());
        let text = encrypted_text::to_text(&sealed);
        prop_assert_eq!(encrypted_text::from_text(&text), Some(sealed.clone()));
        prop_assert_eq!(encrypted_text::parse_text(&text).unwrap(), sealed);
    }

    /// Any single-bit change anywhere in an envelope (format byte, length,
    /// version name, nonce, body, tag) makes it unreadable, even when the
    /// altered version name is loaded with the same key.
    #[test]
    fn envelope_any_bit_flip_fails(
        key in any::<[u8; 32]>(),
        nonce in any::<[u8; 12]>(),
        version in valid_version(),
        plaintext in prop::collection::vec(any::<u8>(), 0..64),
        bit in any::<prop::sample::Index>(),
    ) {
        let sealed = encrypted_text::seal(&cipher(&key), &version, &nonce, &plaintext).unwrap();
        let mut bad = sealed.clone();
        let i = bit.index(bad.len() * 8);
        bad[i / 8] ^= 1 << (i % 8);
        // Whatever version the altered envelope claims (a flip in the name or
        // in its length byte), the ring holds the same key under that name.
        let renamed = Stored::parse(&bad).ok().map(|e| e.version.to_string());
        let ring = ring_with_same_key(&version, renamed.as_deref(), &key);
        let open = |b: &[u8]| -> Result<Vec<u8>, Error> {
            let e = Stored::parse(b)?;
            e.open(ring.get(e.version)?.cipher())
        };
        prop_assert_eq!(open(&sealed).unwrap(), plaintext);
        prop_assert!(open(&bad).is_err(), "bit {} accepted", i);
    }
}
