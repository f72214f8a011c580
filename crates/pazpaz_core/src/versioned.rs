//! Byte format 2, the existing application's versioned field:
//! `{"version": "<key version>", "ciphertext": "<standard base64 of format 1>"}`.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;

use crate::error::{Error, Result};
use crate::field::OVERHEAD;

/// Builds the envelope's JSON text. `version` is a validated version name, so
/// it needs no escaping beyond what serde_json does anyway.
pub fn to_json(version: &str, sealed: &[u8]) -> serde_json::Value {
    serde_json::json!({ "version": version, "ciphertext": STANDARD.encode(sealed) })
}

/// Reads `(version, format-1 bytes)` from an envelope. Other members are
/// ignored, so envelopes may carry extra metadata.
pub fn from_json(v: &serde_json::Value) -> Result<(&str, Vec<u8>)> {
    let obj = v.as_object().ok_or(Error::BadJsonEnvelope("not a JSON object"))?;
    let version = match obj.get("version") {
        Some(serde_json::Value::String(s)) => s.as_str(),
        Some(_) => return Err(Error::BadJsonEnvelope("\"version\" is not a string")),
        None => return Err(Error::BadJsonEnvelope("missing \"version\"")),
    };
    let ct = match obj.get("ciphertext") {
        Some(serde_json::Value::String(s)) => s.as_str(),
        Some(_) => return Err(Error::BadJsonEnvelope("\"ciphertext\" is not a string")),
        None => return Err(Error::BadJsonEnvelope("missing \"ciphertext\"")),
    };
    let bytes = STANDARD
        .decode(ct.as_bytes())
        .map_err(|_| Error::BadJsonEnvelope("\"ciphertext\" is not valid base64"))?;
    if bytes.len() < OVERHEAD {
        return Err(Error::CiphertextTooShort);
    }
    Ok((version, bytes))
}

/// The version of an envelope without any key (for `key_version(jsonb)`).
pub fn version_of(v: &serde_json::Value) -> Result<&str> {
    match v.get("version") {
        Some(serde_json::Value::String(s)) => Ok(s.as_str()),
        Some(_) => Err(Error::BadJsonEnvelope("\"version\" is not a string")),
        None if v.is_object() => Err(Error::BadJsonEnvelope("missing \"version\"")),
        None => Err(Error::BadJsonEnvelope("not a JSON object")),
    }
}
