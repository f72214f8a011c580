//! The keyring: versioned keys from the session's GUCs, and which one writes.
//!
//! Built once per change of a key GUC (the extension caches it), never per row.

use std::fmt;

use serde::de::{self, Deserializer, MapAccess, Visitor};
use zeroize::Zeroizing;

use crate::data_key::Key;
use crate::error::{Error, Result};
use crate::wrapped_key::{parse_data_key, KeyPolicy};

/// Version used for `pazpaz.encryption_key` (single-key mode).
pub const SINGLE_KEY_VERSION: &str = "v1";
pub const MAX_VERSION_LEN: usize = 64;
pub const MAX_KEYS: usize = 256;
/// The longest value a key setting accepts (`pazpaz.encryption_key`,
/// `pazpaz.encryption_keys`, `pazpaz.index_key`, `pazpaz.index_key_next`),
/// checked before anything else is done with it: a value is copied a few
/// times to be remembered by the log filter and parsed, and an unbounded one
/// (any role can set these) could exhaust the backend's memory. 64 KiB holds
/// a keyring of [`MAX_KEYS`] wrapped keys with the longest version names and
/// KEK ids (about 57 KiB written compactly), with room for whitespace.
pub const MAX_SETTING_BYTES: usize = 64 * 1024;

pub struct KeyEntry {
    version: String,
    key: Key,
    /// The KEK id this key came wrapped under; `None` for a raw key.
    wrapped_by: Option<String>,
}

impl KeyEntry {
    pub fn version(&self) -> &str {
        &self.version
    }
    pub fn cipher(&self) -> &aes_gcm::Aes256Gcm {
        self.key.cipher()
    }
    pub fn fingerprint(&self) -> &str {
        self.key.fingerprint()
    }
    pub fn wrapped_by(&self) -> Option<&str> {
        self.wrapped_by.as_deref()
    }
    pub fn key(&self) -> &Key {
        &self.key
    }
}

pub struct Keyring {
    entries: Vec<KeyEntry>,
    current: Option<usize>,
}

/// Version names appear in envelopes, in `key_version()` results and in error
/// messages, so they are restricted to a short, printable alphabet.
pub fn validate_version(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= MAX_VERSION_LEN
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.');
    if ok {
        Ok(())
    } else {
        Err(Error::BadVersionName)
    }
}

fn set(v: Option<&str>) -> Option<&str> {
    v.filter(|s| !s.trim().is_empty())
}

impl Keyring {
    pub fn from_single_key(base64: &str) -> Result<Keyring> {
        Self::from_single_key_with(base64, &KeyPolicy::default())
    }

    /// A single key, raw or wrapped (`pzw1:…`), under `policy`.
    pub fn from_single_key_with(text: &str, policy: &KeyPolicy) -> Result<Keyring> {
        let (key, wrapped_by) = parse_data_key(text, policy)?;
        Ok(Keyring {
            entries: vec![KeyEntry { version: SINGLE_KEY_VERSION.into(), key, wrapped_by }],
            current: Some(0),
        })
    }

    /// Parses `{"v1": "<base64>", …}`. Messages never echo a value.
    pub fn from_json(json: &str) -> Result<Keyring> {
        Self::from_json_with(json, &KeyPolicy::default())
    }

    /// Parses `{"v1": "<base64 or pzw1:…>", …}` under `policy`.
    pub fn from_json_with(json: &str, policy: &KeyPolicy) -> Result<Keyring> {
        let mut de = serde_json::Deserializer::from_str(json);
        let entries = de.deserialize_map(RingVisitor { policy }).map_err(|e| {
            // A serde_json message can quote the offending value: keep only our
            // own message, or the position for a syntax error.
            match RING_ERROR.with(|c| c.take()) {
                Some(err) => err,
                None => Error::KeyringJson(format!("malformed JSON at line {} column {}", e.line(), e.column())),
            }
        })?;
        de.end().map_err(|e| {
            Error::KeyringJson(format!("trailing characters at line {} column {}", e.line(), e.column()))
        })?;
        if entries.is_empty() {
            return Err(Error::EmptyKeyring);
        }
        let current = (entries.len() == 1).then_some(0);
        Ok(Keyring { entries, current })
    }

    /// The keyring the session's settings describe. `key` is
    /// `pazpaz.encryption_key`, `keys` is `pazpaz.encryption_keys`, `version`
    /// is `pazpaz.encryption_key_version`; empty strings count as unset. The
    /// version applies to keyring mode only: a single key is always "v1".
    pub fn from_settings(key: Option<&str>, keys: Option<&str>, version: Option<&str>) -> Result<Keyring> {
        Self::from_settings_with(key, keys, version, &KeyPolicy::default())
    }

    /// As `from_settings`, with keys raw or wrapped under `policy`.
    pub fn from_settings_with(
        key: Option<&str>,
        keys: Option<&str>,
        version: Option<&str>,
        policy: &KeyPolicy,
    ) -> Result<Keyring> {
        let mut ring = match (set(key), set(keys)) {
            (Some(_), Some(_)) => return Err(Error::BothKeySettings),
            (None, None) => return Err(Error::MissingKey),
            (Some(k), None) => return Keyring::from_single_key_with(k, policy),
            (None, Some(j)) => Keyring::from_json_with(j, policy)?,
        };
        if let Some(v) = set(version) {
            let v = v.trim();
            let idx = ring
                .index_of(v)
                .ok_or_else(|| Error::UnknownVersion { version: v.to_string(), loaded: ring.loaded_versions() })?;
            ring.current = Some(idx);
        }
        Ok(ring)
    }

    fn index_of(&self, version: &str) -> Option<usize> {
        self.entries.iter().position(|e| e.version == version)
    }

    pub fn get(&self, version: &str) -> Result<&KeyEntry> {
        match self.index_of(version) {
            Some(i) => Ok(&self.entries[i]),
            None => Err(Error::UnknownVersion {
                // An unknown name from an envelope is shown only if it is a
                // valid version name (it could be any bytes otherwise).
                version: if validate_version(version).is_ok() { version.to_string() } else { "(invalid name)".into() },
                loaded: self.loaded_versions(),
            }),
        }
    }

    /// The write key.
    pub fn current(&self) -> Result<&KeyEntry> {
        match self.current {
            Some(i) => Ok(&self.entries[i]),
            None => Err(Error::NoCurrentVersion { loaded: self.loaded_versions() }),
        }
    }

    /// The key to write under: the named version, or the current one.
    pub fn target(&self, version: Option<&str>) -> Result<&KeyEntry> {
        match version {
            Some(v) => self.get(v),
            None => self.current(),
        }
    }

    pub fn current_version(&self) -> Option<&str> {
        self.current.map(|i| self.entries[i].version.as_str())
    }

    pub fn entries(&self) -> &[KeyEntry] {
        &self.entries
    }

    pub fn loaded_versions(&self) -> String {
        self.entries.iter().map(|e| e.version.as_str()).collect::<Vec<_>>().join(", ")
    }
}

thread_local! {
    // The precise error from inside the visitor, so that serde's own message
    // (which may quote a value) is never shown.
    static RING_ERROR: std::cell::Cell<Option<Error>> = const { std::cell::Cell::new(None) };
}

struct RingVisitor<'p> {
    policy: &'p KeyPolicy<'p>,
}

fn fail<E: de::Error>(err: Error) -> E {
    let e = E::custom("keyring");
    RING_ERROR.with(|c| c.set(Some(err)));
    e
}

impl<'de> Visitor<'de> for RingVisitor<'_> {
    type Value = Vec<KeyEntry>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> std::result::Result<Self::Value, A::Error> {
        let mut out: Vec<KeyEntry> = Vec::new();
        while let Some(version) = map.next_key::<String>()? {
            if validate_version(&version).is_err() {
                return Err(fail(Error::BadVersionName));
            }
            if out.iter().any(|e| e.version == version) {
                return Err(fail(Error::KeyringJson(format!("version \"{version}\" appears twice"))));
            }
            if out.len() == MAX_KEYS {
                return Err(fail(Error::KeyringJson(format!("more than {MAX_KEYS} keys"))));
            }
            let value: Zeroizing<String> = match map.next_value::<serde_json::Value>() {
                Ok(serde_json::Value::String(s)) => Zeroizing::new(s),
                Ok(mut other) => {
                    wipe_json(&mut other);
                    return Err(fail(Error::KeyringJson(format!(
                        "the key of version \"{version}\" must be a base64 string"
                    ))));
                }
                Err(e) => return Err(e),
            };
            let (key, wrapped_by) = parse_data_key(&value, self.policy).map_err(fail)?;
            out.push(KeyEntry { version, key, wrapped_by });
        }
        Ok(out)
    }
}

pub(crate) fn wipe_json(v: &mut serde_json::Value) {
    use zeroize::Zeroize;
    match v {
        serde_json::Value::String(s) => s.zeroize(),
        serde_json::Value::Array(a) => a.iter_mut().for_each(wipe_json),
        serde_json::Value::Object(o) => o.values_mut().for_each(wipe_json),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    // The public test vector keys of tests/vectors/field_vectors.json.
    const K1: &str = "bMz1Y4AHud4S70SS7t8UyrpTbNpwEC5kGFbDbyOoiTE="; // test vector key v1
    const K2: &str = "Z/TsZIiTccYEKunb7MB/oeQGL2uW5CyHQnwYj9xtvEU="; // test vector key v2

    fn err(r: Result<Keyring>) -> Error {
        r.err().expect("expected an error")
    }

    #[test]
    fn the_largest_keyring_fits_the_setting_bound() {
        // MAX_KEYS wrapped keys, 64-character versions and KEK ids, written
        // with the usual ", " and ": " separators.
        let version = |i: usize| format!("{i:03}{}", "v".repeat(MAX_VERSION_LEN - 3));
        let wrapped = format!("pzw1:{}:{}", "k".repeat(MAX_VERSION_LEN), "A".repeat(80));
        let members: Vec<String> = (0..MAX_KEYS).map(|i| format!("\"{}\": \"{wrapped}\"", version(i))).collect();
        let ring = format!("{{{}}}", members.join(", "));
        assert!(ring.len() < MAX_SETTING_BYTES, "{} bytes", ring.len());
        assert!(ring.len() * 9 / 8 < MAX_SETTING_BYTES, "too little room for whitespace");
    }

    #[test]
    fn single_key_is_v1() {
        let r = Keyring::from_settings(Some(K1), None, None).unwrap();
        assert_eq!(r.current_version(), Some("v1"));
        assert_eq!(r.loaded_versions(), "v1");
        // pazpaz.encryption_key_version is for keyring mode only.
        let r = Keyring::from_settings(Some(K1), None, Some("v7")).unwrap();
        assert_eq!(r.current_version(), Some("v1"));
    }

    #[test]
    fn keyring_with_version() {
        let j = format!(r#"{{"v1": "{K1}", "v2": "{K2}"}}"#);
        let r = Keyring::from_settings(None, Some(&j), Some("v2")).unwrap();
        assert_eq!(r.current_version(), Some("v2"));
        assert!(r.get("v1").is_ok());
        let r = Keyring::from_settings(None, Some(&j), None).unwrap();
        assert!(matches!(r.current().err(), Some(Error::NoCurrentVersion { .. })));
        let one = format!(r#"{{"k": "{K2}"}}"#);
        assert_eq!(Keyring::from_settings(None, Some(&one), None).unwrap().current_version(), Some("k"));
    }

    #[test]
    fn both_settings_is_an_error() {
        let j = format!(r#"{{"v1": "{K1}"}}"#);
        assert_eq!(err(Keyring::from_settings(Some(K1), Some(&j), None)), Error::BothKeySettings);
    }

    #[test]
    fn nothing_set_is_missing_key() {
        assert_eq!(err(Keyring::from_settings(None, None, Some("v1"))), Error::MissingKey);
        assert_eq!(err(Keyring::from_settings(Some(""), Some("  "), None)), Error::MissingKey);
    }

    #[test]
    fn unknown_current_version_lists_loaded() {
        let j = format!(r#"{{"v1": "{K1}", "v2": "{K2}"}}"#);
        let e = err(Keyring::from_settings(None, Some(&j), Some("v3")));
        assert_eq!(e.to_string(), "Key version \"v3\" is not loaded (loaded versions: v1, v2)");
    }

    #[test]
    fn bad_keyrings() {
        let cases = [
            ("[]".to_string(), "JSON object"),
            ("{}".into(), "holds no keys"),
            (format!(r#"{{"v1": "{K1}", "v1": "{K2}"}}"#), "appears twice"),
            (format!(r#"{{"": "{K1}"}}"#), "Key version name"),
            (format!(r#"{{"v 1": "{K1}"}}"#), "Key version name"),
            (r#"{"v1": 12345}"#.into(), "must be a base64 string"),
            (r#"{"v1": "AAAA"}"#.into(), "32 bytes"),
            (r#"{"v1": "not base64!!"}"#.into(), "not valid base64"),
            (r#"{"v1": "#.into(), "malformed JSON"),
            (format!(r#"{{"v1": "{K1}"}} x"#), "trailing"),
        ];
        for (json, want) in cases {
            let e = err(Keyring::from_json(&json)).to_string();
            assert!(e.contains(want), "{json}: {e}");
        }
    }

    #[test]
    fn keyring_errors_never_echo_values() {
        let secret = "U0VDUkVUU0VDUkVUU0VDUkVUU0VDUkVUU0VDUkVUU0VDUkVU";
        for json in [
            format!(r#"{{"v1": "{secret}"}}"#),
            format!(r#"{{"v1": ["{secret}"]}}"#),
            format!(r#"{{"v1": {{"k": "{secret}"}}}}"#),
            format!(r#"{{"v1": "{secret}""#),
            format!(r#"["{secret}"]"#),
            format!(r#""{secret}""#),
            format!(r#"{{"v1": {secret}}}"#),
        ] {
            let e = err(Keyring::from_json(&json)).to_string();
            assert!(!e.contains("U0VD"), "{json}: {e}");
        }
    }
}
