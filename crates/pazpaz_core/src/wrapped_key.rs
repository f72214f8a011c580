//! Wrapped data keys and the server's key-encryption keys (KEKs).
//!
//! A data key reaches a session through the key settings either raw (the
//! base64 of its 32 bytes) or *wrapped*: encrypted under one of the server's
//! KEKs, which the postmaster loads at start-up and which never leave it.
//! A wrapped key is useless without the server that holds its KEK, so what
//! travels in SQL (and lands in logs, `pg_stat_statements`, poolers) is no
//! longer the key itself.
//!
//! The wrapped form, version 1:
//!
//! ```text
//! pzw1:<kek id>:<base64(nonce(12) ‖ AES-256-GCM(KEK, data key(32), aad) ‖ tag(16))>
//! aad = "pazpaz data key" ‖ <kek id>
//! ```
//!
//! The body is always 60 bytes, 80 characters of standard base64 (no
//! padding). The KEK id is bound as associated data, so a body moved under
//! another id does not authenticate. KEK ids follow the key-version name rule
//! (1–64 characters of `A-Z a-z 0-9 _ - .`).
//!
//! The KEK ring, as the server reads it from its file or command:
//!
//! ```text
//! {"current": "k2", "keys": {"k1": "<base64 of 32 bytes>", "k2": "<base64 of 32 bytes>"}}
//! ```
//!
//! `current` (the KEK that new wraps use) may be omitted when the ring holds
//! one key. No member other than these two is accepted.
//!
//! ```
//! use pazpaz_core::wrapped_key::{self, KekRing};
//! let ring = KekRing::from_json(br#"{"keys": {"k1": "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="}}"#).unwrap();
//! let data_key = [7u8; 32];
//! let wrapped = wrapped_key::wrap_with_nonce(&data_key, ring.current(), &[0u8; 12]);
//! assert!(wrapped.starts_with("pzw1:k1:"));
//! assert_eq!(*wrapped_key::unwrap(&wrapped, Some(&ring)).unwrap().raw, data_key);
//! ```

use std::cell::Cell;
use std::fmt;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, Visitor};
use zeroize::Zeroizing;

use crate::data_key::{self, Key, KEY_LEN};
use crate::error::{Error, Result};
use crate::field::{self, TAG_LEN};
use crate::keyring::{validate_version, wipe_json, MAX_KEYS};
use crate::nonce::NONCE_LEN;

/// The prefix of the wrapped form, version 1.
pub const PREFIX: &str = "pzw1:";
/// Associated data of a wrap: this, then the KEK id.
pub const AAD_PREFIX: &[u8] = b"pazpaz data key";
/// nonce ‖ encrypted data key ‖ tag.
pub const BODY_LEN: usize = NONCE_LEN + KEY_LEN + TAG_LEN;
/// `BODY_LEN` bytes in standard base64 (60 is a multiple of 3: no padding).
pub const BODY_BASE64_LEN: usize = BODY_LEN / 3 * 4;
/// A KEK ring larger than this is refused before it is parsed.
pub const MAX_RING_BYTES: usize = 64 * 1024;

/// One key-encryption key: its id and its AES key schedule (wiped on drop,
/// like every `Key`; the raw 32 bytes are not kept).
pub struct Kek {
    id: String,
    key: Key,
}

impl Kek {
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The same kind of fingerprint as a data key's: tells KEKs apart (and
    /// two servers' copies of one KEK) without revealing them.
    pub fn fingerprint(&self) -> &str {
        self.key.fingerprint()
    }
}

/// The server's KEKs by id, and the one new wraps use.
pub struct KekRing {
    keks: Vec<Kek>,
    current: usize,
}

impl KekRing {
    /// Parses the ring's JSON. Messages name positions, and the ids of keys
    /// that parsed: never a value, nor an id that could be a key pasted in
    /// the wrong place (an unpadded or URL-safe base64 key is a valid id).
    pub fn from_json(text: &[u8]) -> Result<KekRing> {
        Self::from_json_with(text, &mut |_| {})
    }

    /// As `from_json`, handing each KEK's raw bytes to `on_key` first (the
    /// extension remembers their spellings, so that a stray copy of one is
    /// scrubbed from the server log).
    pub fn from_json_with(text: &[u8], on_key: &mut dyn FnMut(&[u8; KEY_LEN])) -> Result<KekRing> {
        if text.len() > MAX_RING_BYTES {
            return Err(Error::KekRing(format!("larger than {MAX_RING_BYTES} bytes")));
        }
        KEK_ERROR.with(|c| c.set(None));
        let mut de = serde_json::Deserializer::from_slice(text);
        let (current, keks) = de.deserialize_map(TopVisitor { on_key }).map_err(|e| {
            // serde_json's own messages may quote a value: only ours, or a
            // position, are shown.
            KEK_ERROR.with(|c| c.take()).unwrap_or_else(|| {
                Error::KekRing(format!("malformed JSON or not an object, at line {} column {}", e.line(), e.column()))
            })
        })?;
        de.end()
            .map_err(|e| Error::KekRing(format!("trailing characters at line {} column {}", e.line(), e.column())))?;
        let keks = keks.ok_or_else(|| Error::KekRing("no \"keys\" member".into()))?;
        if keks.is_empty() {
            return Err(Error::KekRing("\"keys\" holds no keys".into()));
        }
        let current = match current {
            Some(id) => keks
                .iter()
                .position(|k| k.id == id)
                // Not echoed: "current" is where a key is most easily
                // pasted by mistake. The ids listed are those of keys whose
                // values parsed, which the start-up line logs anyway.
                .ok_or_else(|| {
                    Error::KekRing(format!(
                        "\"current\" names an id that is not in \"keys\" (the ids in \"keys\": {})",
                        keks.iter().map(|k| k.id.as_str()).collect::<Vec<_>>().join(", ")
                    ))
                })?,
            None if keks.len() == 1 => 0,
            None => return Err(Error::KekRing("\"current\" must name the key that new wraps use".into())),
        };
        Ok(KekRing { keks, current })
    }

    /// The KEK that new wraps use.
    pub fn current(&self) -> &Kek {
        &self.keks[self.current]
    }

    pub fn get(&self, id: &str) -> Result<&Kek> {
        self.keks.iter().find(|k| k.id == id).ok_or_else(|| Error::UnknownKek {
            // Shown only when it is a valid id (it could be any text otherwise).
            id: if validate_version(id).is_ok() { id.to_owned() } else { "(invalid id)".into() },
            loaded: self.ids(),
        })
    }

    /// The named KEK, or the current one.
    pub fn target(&self, id: Option<&str>) -> Result<&Kek> {
        match id {
            Some(id) => self.get(id),
            None => Ok(self.current()),
        }
    }

    pub fn keks(&self) -> &[Kek] {
        &self.keks
    }

    /// The loaded ids, comma-separated (for messages).
    pub fn ids(&self) -> String {
        self.keks.iter().map(|k| k.id.as_str()).collect::<Vec<_>>().join(", ")
    }
}

thread_local! {
    // Our precise error from inside the visitors (see `from_json_with`).
    static KEK_ERROR: Cell<Option<Error>> = const { Cell::new(None) };
}

fn fail<E: de::Error>(msg: String) -> E {
    KEK_ERROR.with(|c| c.set(Some(Error::KekRing(msg))));
    E::custom("kek ring")
}

struct TopVisitor<'f> {
    on_key: &'f mut dyn FnMut(&[u8; KEY_LEN]),
}

impl<'de> Visitor<'de> for TopVisitor<'_> {
    type Value = (Option<String>, Option<Vec<Kek>>);

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> std::result::Result<Self::Value, A::Error> {
        let (mut current, mut keys) = (None, None);
        while let Some(member) = map.next_key::<String>()? {
            match member.as_str() {
                "current" if current.is_none() => match map.next_value::<serde_json::Value>()? {
                    serde_json::Value::String(id) if validate_version(&id).is_ok() => current = Some(id),
                    mut other => {
                        wipe_json(&mut other);
                        return Err(fail("\"current\" must be a key-encryption key id".into()));
                    }
                },
                "keys" if keys.is_none() => keys = Some(map.next_value_seed(KeysSeed { on_key: &mut *self.on_key })?),
                "current" | "keys" => return Err(fail(format!("\"{member}\" appears twice"))),
                // The name is not echoed: it could be a key pasted in the wrong place.
                _ => return Err(fail("unknown member (only \"current\" and \"keys\" are allowed)".into())),
            }
        }
        Ok((current, keys))
    }
}

struct KeysSeed<'f> {
    on_key: &'f mut dyn FnMut(&[u8; KEY_LEN]),
}

impl<'de> DeserializeSeed<'de> for KeysSeed<'_> {
    type Value = Vec<Kek>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> std::result::Result<Vec<Kek>, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for KeysSeed<'_> {
    type Value = Vec<Kek>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object of key-encryption keys")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> std::result::Result<Vec<Kek>, A::Error> {
        let mut out: Vec<Kek> = Vec::new();
        while let Some(id) = map.next_key::<String>()? {
            // Members are named by position: an id is echoed nowhere, since
            // it might be a key pasted in the wrong place.
            let at = out.len() + 1;
            if validate_version(&id).is_err() {
                return Err(fail(
                    "key-encryption key ids must be 1 to 64 characters of A-Z, a-z, 0-9, '_', '-' or '.'".into(),
                ));
            }
            if out.iter().any(|k| k.id == id) {
                return Err(fail(format!("the id of member {at} of \"keys\" appears twice")));
            }
            if out.len() == MAX_KEYS {
                return Err(fail(format!("more than {MAX_KEYS} key-encryption keys")));
            }
            let value: Zeroizing<String> = match map.next_value::<serde_json::Value>()? {
                serde_json::Value::String(s) => Zeroizing::new(s),
                mut other => {
                    wipe_json(&mut other);
                    return Err(fail(format!("member {at} of \"keys\" must be a base64 string")));
                }
            };
            let raw = data_key::decode_key_base64(&value)
                .map_err(|_| fail(format!("member {at} of \"keys\" is not the base64 of 32 bytes")))?;
            (self.on_key)(&raw);
            out.push(Kek { id, key: Key::from_raw(&raw) });
        }
        Ok(out)
    }
}

/// A data key taken out of its wrapping.
pub struct Unwrapped {
    pub kek_id: String,
    pub raw: Zeroizing<[u8; KEY_LEN]>,
}

/// Does this setting value claim to be a wrapped key? Base64 has no `:`, so
/// a value that starts with `pzw` and holds one cannot be a raw key; it is
/// judged as a wrapped one (and an unknown format version said so).
pub fn looks_wrapped(text: &str) -> bool {
    let t = text.trim_matches(|c: char| c.is_ascii_whitespace());
    t.starts_with("pzw") && t.contains(':')
}

/// The KEK id and base64 body of a wrapped key.
fn split(text: &str) -> Result<(&str, &str)> {
    let t = text.trim_matches(|c: char| c.is_ascii_whitespace());
    let rest = t.strip_prefix(PREFIX).ok_or(Error::WrappedKeyMalformed("unknown format (this server reads pzw1)"))?;
    let (id, body) =
        rest.split_once(':').ok_or(Error::WrappedKeyMalformed("expected pzw1:<key-encryption key id>:<base64>"))?;
    validate_version(id).map_err(|_| {
        Error::WrappedKeyMalformed(
            "the key-encryption key id must be 1 to 64 characters of A-Z, a-z, 0-9, '_', '-' or '.'",
        )
    })?;
    Ok((id, body))
}

/// The KEK id a wrapped key names (for messages and status; not a secret).
pub fn kek_id_of(text: &str) -> Result<&str> {
    split(text).map(|(id, _)| id)
}

fn aad(kek_id: &str) -> Vec<u8> {
    [AAD_PREFIX, kek_id.as_bytes()].concat()
}

/// Unwraps a wrapped key with the ring's KEK of the id it names. The checks,
/// in order: the form, a ring at all (`NoKek`), the id (`UnknownKek`), the
/// body's length (`WrappedKeyTruncated`), the GCM tag (`WrappedKeyAuth`).
/// Messages never contain the value.
pub fn unwrap(text: &str, ring: Option<&KekRing>) -> Result<Unwrapped> {
    let (id, body) = split(text)?;
    let kek = ring.ok_or(Error::NoKek)?.get(id)?;
    if body.len() != BODY_BASE64_LEN {
        return Err(Error::WrappedKeyTruncated);
    }
    let mut sealed = [0u8; BODY_LEN + 3];
    let n = STANDARD.decode_slice(body.as_bytes(), &mut sealed).map_err(|_| Error::WrappedKeyTruncated)?;
    if n != BODY_LEN {
        return Err(Error::WrappedKeyTruncated);
    }
    let mut raw = Zeroizing::new([0u8; KEY_LEN]);
    field::decrypt_into(kek.key.cipher(), &sealed[..BODY_LEN], &aad(id), &mut raw[..]).map_err(|e| match e {
        Error::DecryptionFailed => Error::WrappedKeyAuth { kek: id.to_owned() },
        other => other,
    })?;
    Ok(Unwrapped { kek_id: id.to_owned(), raw })
}

/// Wraps a data key under `kek` with the given nonce (which must never repeat
/// under this KEK: `wrap` draws it from the operating system).
pub fn wrap_with_nonce(raw: &[u8; KEY_LEN], kek: &Kek, nonce: &[u8; NONCE_LEN]) -> String {
    let mut sealed = [0u8; BODY_LEN];
    field::encrypt_into(kek.key.cipher(), nonce, raw, &aad(&kek.id), &mut sealed)
        .expect("a 32-byte plaintext is far below GCM's limit");
    format!("{PREFIX}{}:{}", kek.id, STANDARD.encode(sealed))
}

/// Wraps a data key under `kek` with a fresh random nonce. Wraps are rare
/// (one per data key per KEK), far below the 2^32 random-nonce limit.
pub fn wrap(raw: &[u8; KEY_LEN], kek: &Kek) -> Result<String> {
    let mut nonce = [0u8; NONCE_LEN];
    getrandom::fill(&mut nonce).map_err(|_| Error::Rng)?;
    Ok(wrap_with_nonce(raw, kek, &nonce))
}

/// Sees an unwrapped data key's raw bytes.
pub type UnwrapObserver<'a> = &'a dyn Fn(&[u8; KEY_LEN]);

/// What a key setting's value may be, where it is parsed.
#[derive(Clone, Copy, Default)]
pub struct KeyPolicy<'a> {
    /// The server's KEKs (none: wrapped keys are refused with `NoKek`).
    pub keks: Option<&'a KekRing>,
    /// `pazpaz.require_wrapped_keys`: raw keys are refused.
    pub require_wrapped: bool,
    /// Sees each unwrapped data key before it is expanded (the extension
    /// remembers its spellings for the log filter).
    pub on_unwrap: Option<UnwrapObserver<'a>>,
}

/// The 32 bytes of a key setting's value, raw (base64) or wrapped, and the
/// id of the KEK it was wrapped under. Shared by the data keys and the index
/// keys of search, so that both follow one policy.
pub fn parse_key_bytes(text: &str, policy: &KeyPolicy) -> Result<(Zeroizing<[u8; KEY_LEN]>, Option<String>)> {
    if looks_wrapped(text) {
        let u = unwrap(text, policy.keks)?;
        if let Some(f) = policy.on_unwrap {
            f(&u.raw);
        }
        Ok((u.raw, Some(u.kek_id)))
    } else if policy.require_wrapped {
        Err(Error::RawKeyRefused)
    } else {
        Ok((data_key::decode_key_base64(text)?, None))
    }
}

/// A data key from a setting's value, raw or wrapped, and the id of the KEK
/// it was wrapped under.
pub fn parse_data_key(text: &str, policy: &KeyPolicy) -> Result<(Key, Option<String>)> {
    let (raw, wrapped_by) = parse_key_bytes(text, policy)?;
    Ok((Key::from_raw(&raw), wrapped_by))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorClass;

    const K1: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
    const K2: &str = "ICEiIyQlJicoKSorLC0uLzAxMjM0NTY3ODk6Ozw9Pj8=";

    fn ring() -> KekRing {
        KekRing::from_json(format!(r#"{{"current": "k2", "keys": {{"k1": "{K1}", "k2": "{K2}"}}}}"#).as_bytes())
            .unwrap()
    }

    fn ring_err(json: &str) -> String {
        KekRing::from_json(json.as_bytes()).err().expect("expected an error").to_string()
    }

    #[test]
    fn ring_current_and_lookup() {
        let r = ring();
        assert_eq!(r.current().id(), "k2");
        assert_eq!(r.ids(), "k1, k2");
        assert_eq!(r.target(Some("k1")).unwrap().id(), "k1");
        assert_eq!(
            r.get("k3").err().unwrap().to_string(),
            "key-encryption key \"k3\" is not loaded (loaded key-encryption keys: k1, k2)"
        );
        assert_ne!(r.keks()[0].fingerprint(), r.keks()[1].fingerprint());
        let one = KekRing::from_json(format!(r#"{{"keys": {{"only": "{K1}"}}}}"#).as_bytes()).unwrap();
        assert_eq!(one.current().id(), "only");
    }

    #[test]
    fn bad_rings() {
        let cases = [
            ("[]".to_string(), "malformed JSON or not an object"),
            ("{}".into(), "no \"keys\""),
            (r#"{"keys": {}}"#.into(), "holds no keys"),
            (format!(r#"{{"keys": {{"k1": "{K1}", "k2": "{K2}"}}}}"#), "\"current\" must name"),
            (
                format!(r#"{{"current": "k9", "keys": {{"k1": "{K1}"}}}}"#),
                "names an id that is not in \"keys\" (the ids in \"keys\": k1)",
            ),
            (format!(r#"{{"current": 3, "keys": {{"k1": "{K1}"}}}}"#), "\"current\" must be"),
            (format!(r#"{{"keys": {{"k1": "{K1}", "k1": "{K2}"}}}}"#), "the id of member 2 of \"keys\" appears twice"),
            (format!(r#"{{"keys": {{"k 1": "{K1}"}}}}"#), "ids must be"),
            (r#"{"keys": {"k1": 7}}"#.into(), "member 1 of \"keys\" must be a base64 string"),
            (r#"{"keys": {"k1": "AAAA"}}"#.into(), "member 1 of \"keys\" is not the base64 of 32 bytes"),
            (format!(r#"{{"keys": {{"k1": "{K1}"}}, "extra": 1}}"#), "unknown member"),
            (format!(r#"{{"keys": {{"k1": "{K1}"}}}} x"#), "trailing"),
            (format!(r#"{{"k1": "{K1}"}}"#), "unknown member"),
        ];
        for (json, want) in cases {
            let e = ring_err(&json);
            assert!(e.contains(want), "{json}: {e}");
            assert!(!e.contains(&K1[..10]) && !e.contains(&K2[..10]), "{json}: {e}");
        }
        let big = format!(r#"{{"keys": {{"k1": "{K1}"}}, "pad": "{}"}}"#, " ".repeat(MAX_RING_BYTES));
        assert!(ring_err(&big).contains("larger than"));
        assert_eq!(KekRing::from_json(b"{}").err().unwrap().class(), ErrorClass::ConfigFile);
    }

    #[test]
    fn ring_errors_never_echo_ids() {
        // A valid id can be a key: the unpadded standard or URL-safe base64
        // of 32 bytes is 43 characters of the id alphabet.
        let url = K2.trim_end_matches('=').replace('+', "-").replace('/', "_");
        let std = K2.trim_end_matches('=');
        for pasted in [url.as_str(), std] {
            assert!(validate_version(pasted).is_ok());
            for json in [
                format!(r#"{{"current": "{pasted}", "keys": {{"k1": "{K1}"}}}}"#),
                format!(r#"{{"keys": {{"{pasted}": "{K1}", "{pasted}": "{K1}"}}}}"#),
                format!(r#"{{"keys": {{"{pasted}": 7}}}}"#),
                format!(r#"{{"keys": {{"{pasted}": "AAAA"}}}}"#),
            ] {
                let e = ring_err(&json);
                assert!(!e.contains(&pasted[..20]), "{json}: {e}");
            }
        }
    }

    #[test]
    fn ring_errors_never_echo_values() {
        let secret = "U0VDUkVUU0VDUkVUU0VDUkVUU0VDUkVUU0VDUkVUU0VDUkVU";
        for json in [
            format!(r#"{{"keys": {{"k1": "{secret}"}}}}"#),
            format!(r#"{{"keys": ["{secret}"]}}"#),
            format!(r#"{{"keys": "{secret}"}}"#),
            format!(r#"{{"{secret}": 1}}"#),
            format!(r#"{{"current": "{secret}x!", "keys": {{}}}}"#),
            format!(r#"{{"keys": {{"k1": {{"x": "{secret}"}}}}}}"#),
            format!(r#""{secret}""#),
            format!(r#"{{"keys": {{"k1": "{secret}""#),
        ] {
            let e = ring_err(&json);
            assert!(!e.contains("U0VD"), "{json}: {e}");
        }
    }

    #[test]
    fn on_key_sees_every_kek() {
        let mut seen = Vec::new();
        let json = format!(r#"{{"current": "k1", "keys": {{"k1": "{K1}", "k2": "{K2}"}}}}"#);
        KekRing::from_json_with(json.as_bytes(), &mut |raw| seen.push(STANDARD.encode(raw))).unwrap();
        assert_eq!(seen, [K1, K2]);
    }

    #[test]
    fn wrap_round_trip_and_binding() {
        let r = ring();
        let key = [42u8; 32];
        let w = wrap(&key, r.current()).unwrap();
        assert!(w.starts_with("pzw1:k2:"));
        assert_eq!(w.len(), "pzw1:k2:".len() + BODY_BASE64_LEN);
        let u = unwrap(&w, Some(&r)).unwrap();
        assert_eq!((*u.raw, u.kek_id.as_str()), (key, "k2"));
        assert_eq!(*unwrap(&format!("  {w}\n"), Some(&r)).unwrap().raw, key);
        // Fresh nonces: two wraps of one key differ.
        assert_ne!(w, wrap(&key, r.current()).unwrap());
        // The id is authenticated: the same body under another loaded id fails.
        let moved = w.replacen("pzw1:k2:", "pzw1:k1:", 1);
        assert_eq!(unwrap(&moved, Some(&r)).err(), Some(Error::WrappedKeyAuth { kek: "k1".into() }));
    }

    #[test]
    fn unwrap_errors_in_order() {
        let r = ring();
        let w = wrap(&[1u8; 32], r.target(Some("k1")).unwrap()).unwrap();
        let e = |t: &str, ring: Option<&KekRing>| unwrap(t, ring).err().expect("expected an error");
        assert_eq!(e(&w, None), Error::NoKek);
        assert!(matches!(e("pzw2:k1:AAAA", Some(&r)), Error::WrappedKeyMalformed(_)));
        assert!(matches!(e("pzw1:k1", Some(&r)), Error::WrappedKeyMalformed(_)));
        assert!(matches!(e("pzw1:k 1:AAAA", Some(&r)), Error::WrappedKeyMalformed(_)));
        assert_eq!(
            e(&w.replacen("k1", "k7", 1), Some(&r)),
            Error::UnknownKek { id: "k7".into(), loaded: "k1, k2".into() }
        );
        for cut in [1, 2, 4, 40, 79] {
            assert_eq!(e(&w[..w.len() - cut], Some(&r)), Error::WrappedKeyTruncated, "cut {cut}");
        }
        assert_eq!(e(&format!("{w}AAAA"), Some(&r)), Error::WrappedKeyTruncated);
        let mut bad = w.clone().into_bytes();
        let last = bad.len() - 1;
        bad[last] = if bad[last] == b'A' { b'B' } else { b'A' };
        let tampered = String::from_utf8(bad).unwrap();
        assert!(matches!(e(&tampered, Some(&r)), Error::WrappedKeyAuth { .. } | Error::WrappedKeyTruncated));
        for err in [Error::WrappedKeyAuth { kek: "k1".into() }, Error::WrappedKeyTruncated] {
            assert_eq!(err.class(), ErrorClass::AuthenticationFailed);
        }
        assert_eq!(Error::NoKek.class(), ErrorClass::MissingKey);
        assert_eq!(Error::UnknownKek { id: "k".into(), loaded: String::new() }.class(), ErrorClass::UnknownVersion);
    }

    #[test]
    fn every_byte_of_the_body_is_authenticated() {
        let r = ring();
        let w = wrap(&[9u8; 32], r.current()).unwrap();
        let (head, body) = w.split_at("pzw1:k2:".len());
        let mut bytes = STANDARD.decode(body).unwrap();
        for i in 0..bytes.len() {
            bytes[i] ^= 0x01;
            let t = format!("{head}{}", STANDARD.encode(&bytes));
            assert_eq!(unwrap(&t, Some(&r)).err(), Some(Error::WrappedKeyAuth { kek: "k2".into() }), "byte {i}");
            bytes[i] ^= 0x01;
        }
    }

    #[test]
    fn policy() {
        let r = ring();
        let w = wrap(&[3u8; 32], r.current()).unwrap();
        let seen = std::cell::RefCell::new(Vec::new());
        let note = |raw: &[u8; 32]| seen.borrow_mut().push(*raw);
        let strict = KeyPolicy { keks: Some(&r), require_wrapped: true, on_unwrap: Some(&note) };
        let (key, by) = parse_data_key(&w, &strict).unwrap();
        assert_eq!(by.as_deref(), Some("k2"));
        assert_eq!(key.fingerprint(), Key::from_raw(&[3u8; 32]).fingerprint());
        assert_eq!(*seen.borrow(), [[3u8; 32]]);
        assert_eq!(parse_data_key(K1, &strict).err(), Some(Error::RawKeyRefused));
        assert_eq!(Error::RawKeyRefused.class(), ErrorClass::InsufficientPrivilege);
        let lax = KeyPolicy::default();
        assert_eq!(parse_data_key(K1, &lax).unwrap().1, None);
        assert_eq!(parse_data_key(&w, &lax).err(), Some(Error::NoKek));
        assert!(!looks_wrapped(K1) && looks_wrapped(&w) && looks_wrapped(" pzw9:x"));
        assert_eq!(kek_id_of(&w).unwrap(), "k2");
    }

    #[test]
    fn messages_never_echo_the_value() {
        let r = ring();
        let w = wrap(&[5u8; 32], r.current()).unwrap();
        let body = &w["pzw1:k2:".len()..];
        for t in [w[..w.len() - 3].to_string(), w.replacen("k2", "k9", 1), format!("{w}x"), format!("pzw1:k2:{body}=")]
        {
            let m = unwrap(&t, Some(&r)).err().unwrap().to_string();
            assert!(!m.contains(&body[..10]), "{t}: {m}");
        }
    }
}
