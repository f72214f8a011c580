//! Byte format 2, the existing application's versioned field:
//! `{"version": "<key version>", "ciphertext": "<standard base64 of format 1>"}`.

use crate::error::{Error, Result};
use crate::field::OVERHEAD;

/// Builds the envelope's JSON text. `version` is a validated version name, so
/// it needs no escaping beyond what serde_json does anyway.
#[cfg(any(test, feature = "test-support"))]
pub fn to_json(version: &str, sealed: &[u8]) -> serde_json::Value {
    serde_json::json!({ "version": version, "ciphertext": encode_ciphertext(sealed) })
}

/// One member of an envelope as found by a JSON reader (serde_json here, the
/// jsonb container in the extension), so both share the validation below.
#[derive(Debug, Clone, Copy)]
pub enum Member<'a> {
    Missing,
    NotString,
    Str(&'a [u8]),
}

fn member_str<'a>(m: Member<'a>, missing: &'static str, not_string: &'static str) -> Result<&'a [u8]> {
    match m {
        Member::Str(s) => Ok(s),
        Member::Missing => Err(Error::BadVersioned(missing)),
        Member::NotString => Err(Error::BadVersioned(not_string)),
    }
}

/// The envelope's key version. Any string is returned as is (an unknown or
/// odd version is reported when a key is looked up).
pub fn version_from(is_object: bool, version: Member<'_>) -> Result<&str> {
    if !is_object {
        return Err(Error::BadVersioned("not a JSON object"));
    }
    let v = member_str(version, "missing \"version\"", "\"version\" is not a string")?;
    std::str::from_utf8(v).map_err(|_| Error::BadVersioned("\"version\" is not valid UTF-8"))
}

/// Reads `(version, format-1 bytes)` from an envelope's members. Other members
/// are ignored, so envelopes may carry extra metadata.
pub fn parts_from<'a>(is_object: bool, version: Member<'a>, ciphertext: Member<'a>) -> Result<(&'a str, Vec<u8>)> {
    let version = version_from(is_object, version)?;
    let ct = member_str(ciphertext, "missing \"ciphertext\"", "\"ciphertext\" is not a string")?;
    let bytes = base64_simd::STANDARD
        .decode_to_vec(ct)
        .map_err(|_| Error::BadVersioned("\"ciphertext\" is not valid base64"))?;
    if bytes.len() < OVERHEAD {
        return Err(Error::CiphertextTooShort);
    }
    Ok((version, bytes))
}

#[cfg(any(test, feature = "test-support"))]
fn member<'a>(v: &'a serde_json::Value, name: &str) -> Member<'a> {
    match v.get(name) {
        None => Member::Missing,
        Some(serde_json::Value::String(s)) => Member::Str(s.as_bytes()),
        Some(_) => Member::NotString,
    }
}

/// `parts_from` for a serde_json value.
#[cfg(any(test, feature = "test-support"))]
pub fn from_json(v: &serde_json::Value) -> Result<(&str, Vec<u8>)> {
    parts_from(v.is_object(), member(v, "version"), member(v, "ciphertext"))
}

/// `version_from` for a serde_json value.
#[cfg(any(test, feature = "test-support"))]
pub fn version_of(v: &serde_json::Value) -> Result<&str> {
    version_from(v.is_object(), member(v, "version"))
}

/// Standard base64 of format 1, for the envelope's "ciphertext".
#[cfg(any(test, feature = "test-support"))]
pub fn encode_ciphertext(sealed: &[u8]) -> String {
    base64_simd::STANDARD.encode_to_string(sealed)
}

#[cfg(test)]
mod tests {
    use base64::engine::general_purpose::STANDARD;
    use base64::Engine as _;
    use proptest::prelude::*;

    /// The SIMD decoder used for envelopes accepts exactly what the reference
    /// base64 crate accepts (padded, canonical, no whitespace), with the
    /// same result.
    fn same_as_reference(s: &str) {
        let reference = STANDARD.decode(s).ok();
        let simd = base64_simd::STANDARD.decode_to_vec(s).ok();
        assert_eq!(simd, reference, "{s:?}");
    }

    #[test]
    fn simd_base64_matches_reference_on_edge_cases() {
        for s in [
            "",
            "=",
            "==",
            "A",
            "AB",
            "AB=",
            "AB==",
            "AA==",
            "AAA=",
            "AAB=",
            "AAAA",
            "AA=A",
            "A===",
            "AAAA====",
            "AAAA AAAA",
            "AAAA\nAAAA",
            "-_-_",
            "////",
            "++++",
            "AAAAAA==",
            "YQ==",
            "YR==",
            "YWI=",
            "YWJ=",
        ] {
            same_as_reference(s);
        }
    }

    proptest! {
        #[test]
        fn simd_base64_matches_reference(s in "[A-Za-z0-9+/=_\\- \n]{0,40}") {
            same_as_reference(&s);
        }

        #[test]
        fn simd_base64_round_trips(data in proptest::collection::vec(any::<u8>(), 0..300)) {
            prop_assert_eq!(super::encode_ciphertext(&data), STANDARD.encode(&data));
        }
    }
}
