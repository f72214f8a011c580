//! Byte format 3, the storage of the `encrypted_text` type.
//!
//! ```text
//! offset  size  field
//! 0       1     format, 0x01
//! 1       1     L = length of the key version name (1..=64)
//! 2       L     key version name (ASCII [A-Za-z0-9_.-])
//! 2+L     12    nonce
//! 14+L    n     AES-256-GCM ciphertext of the UTF-8 plaintext (n bytes)
//! 14+L+n  16    GCM tag
//! ```
//!
//! The header (bytes 0..2+L) is the GCM associated data, so changing the
//! version or the format byte makes authentication fail. The version is
//! readable without a key, so stale rows can be found and re-encrypted.
//!
//! The text form (used by `pazpaz.encrypted_text_io = envelope`, e.g. for a
//! keyless `pg_dump`) is `pazpaz:` followed by the standard base64 of the bytes.

use aes_gcm::Aes256Gcm;
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;

use crate::error::{Error, Result};
use crate::field::{self, OVERHEAD};
use crate::keyring::validate_version;
use crate::nonce::NONCE_LEN;

pub const FORMAT: u8 = 1;
pub const TEXT_PREFIX: &str = "pazpaz:";

/// A parsed envelope: borrowed pieces of the stored bytes.
#[derive(Debug, Clone, Copy)]
pub struct Stored<'a> {
    pub version: &'a str,
    /// Bytes 0..2+L, the associated data.
    pub header: &'a [u8],
    /// `nonce ‖ ciphertext ‖ tag`, i.e. format 1.
    pub sealed: &'a [u8],
}

impl<'a> Stored<'a> {
    /// Structural checks only (no key): format byte, version, minimum length.
    pub fn parse(bytes: &'a [u8]) -> Result<Stored<'a>> {
        if bytes.len() < 2 {
            return Err(Error::CiphertextTooShort);
        }
        if bytes[0] != FORMAT {
            return Err(Error::BadEncryptedText("unknown format byte"));
        }
        let l = bytes[1] as usize;
        if bytes.len() < 2 + l + OVERHEAD {
            return Err(Error::CiphertextTooShort);
        }
        let version =
            std::str::from_utf8(&bytes[2..2 + l]).map_err(|_| Error::BadEncryptedText("invalid key version name"))?;
        validate_version(version).map_err(|_| Error::BadEncryptedText("invalid key version name"))?;
        Ok(Stored { version, header: &bytes[..2 + l], sealed: &bytes[2 + l..] })
    }

    /// Plaintext length in bytes, known without a key.
    pub fn plaintext_len(&self) -> usize {
        self.sealed.len() - OVERHEAD
    }

    pub fn open_into(&self, cipher: &Aes256Gcm, out: &mut [u8]) -> Result<()> {
        field::decrypt_into(cipher, self.sealed, self.header, out)
    }

    #[cfg(any(test, feature = "test-support"))]
    pub fn open(&self, cipher: &Aes256Gcm) -> Result<Vec<u8>> {
        field::decrypt(cipher, self.sealed, self.header)
    }
}

pub fn header_len(version: &str) -> usize {
    2 + version.len()
}

/// Total envelope size for a plaintext of `len` bytes.
pub fn sealed_len(version: &str, len: usize) -> Result<usize> {
    Ok(header_len(version) + field::sealed_len(len)?)
}

/// Writes the header for `version` at the start of `out`; returns its length.
fn write_header(out: &mut [u8], version: &str) -> Result<usize> {
    validate_version(version)?;
    let h = header_len(version);
    out[0] = FORMAT;
    out[1] = version.len() as u8;
    out[2..h].copy_from_slice(version.as_bytes());
    Ok(h)
}

/// Writes an envelope into `out` (exactly `sealed_len(version, plaintext.len())` bytes).
pub fn seal_into(
    cipher: &Aes256Gcm,
    version: &str,
    nonce: &[u8; NONCE_LEN],
    plaintext: &[u8],
    out: &mut [u8],
) -> Result<()> {
    let h = write_header(out, version)?;
    let (header, rest) = out.split_at_mut(h);
    field::encrypt_into(cipher, nonce, plaintext, header, rest)
}

#[cfg(any(test, feature = "test-support"))]
pub fn seal(cipher: &Aes256Gcm, version: &str, nonce: &[u8; NONCE_LEN], plaintext: &[u8]) -> Result<Vec<u8>> {
    let mut out = vec![0u8; sealed_len(version, plaintext.len())?];
    seal_into(cipher, version, nonce, plaintext, &mut out)?;
    Ok(out)
}

/// Re-encrypts `env` (under `from`) into `out` as an envelope of version
/// `version` under `to` with `nonce`; `out` is exactly
/// `sealed_len(version, env.plaintext_len())` bytes. The plaintext exists
/// only in `out`'s body between decryption and re-encryption; on an
/// authentication failure `out` holds ciphertext only.
pub fn reseal_into(
    env: &Stored<'_>,
    from: &Aes256Gcm,
    to: &Aes256Gcm,
    version: &str,
    nonce: &[u8; NONCE_LEN],
    out: &mut [u8],
) -> Result<()> {
    let h = write_header(out, version)?;
    let (header, body) = out.split_at_mut(h);
    body.copy_from_slice(env.sealed);
    // The old header authenticates the old body; the new one the new body.
    field::reseal_in_place(from, to, nonce, env.header, header, body)
}

/// Longest text form the extension returns: the text and its terminating NUL
/// must fit in one PostgreSQL allocation (MaxAllocSize, 1 GB - 1).
pub const MAX_TEXT_LEN: usize = (1 << 30) - 2;

/// Longest envelope that has a text form (805,306,359 bytes: base64 grows by
/// 4/3). Binary COPY moves longer ones.
pub const MAX_TEXT_ENVELOPE: usize = (MAX_TEXT_LEN - TEXT_PREFIX.len()) / 4 * 3;

/// Length of the text form of an envelope of `len` bytes, or
/// `TooLargeForText` when it would exceed `MAX_TEXT_LEN`; computed before
/// anything is allocated.
pub fn text_len(len: usize) -> Result<usize> {
    if len > MAX_TEXT_ENVELOPE {
        return Err(Error::TooLargeForText { len, max: MAX_TEXT_ENVELOPE });
    }
    Ok(TEXT_PREFIX.len() + len.div_ceil(3) * 4)
}

/// Writes the text form of `bytes` into `out` (exactly `text_len(bytes.len())` bytes).
pub fn write_text(bytes: &[u8], out: &mut [u8]) -> Result<()> {
    assert_eq!(out.len(), text_len(bytes.len())?, "output buffer size");
    let (prefix, b64) = out.split_at_mut(TEXT_PREFIX.len());
    prefix.copy_from_slice(TEXT_PREFIX.as_bytes());
    let written = STANDARD.encode_slice(bytes, b64).expect("length checked above");
    debug_assert_eq!(written, b64.len());
    Ok(())
}

/// The text form as a `String`, for callers outside PostgreSQL (no size
/// limit; the extension uses `text_len` and `write_text`).
#[cfg(any(test, feature = "test-support"))]
pub fn to_text(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(TEXT_PREFIX.len() + bytes.len().div_ceil(3) * 4);
    s.push_str(TEXT_PREFIX);
    STANDARD.encode_string(bytes, &mut s);
    s
}

/// `Some(bytes)` when `text` is a structurally valid envelope in text form,
/// `None` when it is not one (then it is ordinary plaintext).
pub fn from_text(text: &str) -> Option<Vec<u8>> {
    let b64 = text.strip_prefix(TEXT_PREFIX)?;
    let bytes = STANDARD.decode(b64).ok()?;
    Stored::parse(&bytes).ok()?;
    Some(bytes)
}

/// Prefix of the transport form: how a node that encrypted a value hands it
/// to another node holding the same keys (a Citus coordinator deparsing a
/// constant into a worker's query) without the plaintext travelling.
pub const TRANSPORT_PREFIX: &str = "pazpaz-transport:";

/// Bytes of the transport form's MAC (the first half of an HMAC-SHA-256).
const TRANSPORT_TAG_LEN: usize = 16;

/// Length of the transport form of an envelope of `len` bytes:
/// `pazpaz-transport:` ‖ base64(envelope ‖ tag), where tag is the first 16
/// bytes of HMAC-SHA-256(transport key of the envelope's data key,
/// transaction secret ‖ envelope) (`Key::transport_mac`). The tag is what
/// makes accepting this form in a text input safe: it verifies only in the
/// transaction that made it (the secret is fresh per transaction, and only
/// that transaction's nodes have it), so a transport form copied from a log
/// and offered later as a plaintext is refused, never adopted (which would
/// let someone who can read logs and submit values have another row's
/// ciphertext decrypted for them).
pub fn transport_text_len(len: usize) -> Result<usize> {
    let with_tag = len + TRANSPORT_TAG_LEN;
    if with_tag > (MAX_TEXT_LEN - TRANSPORT_PREFIX.len()) / 4 * 3 {
        return Err(Error::TooLargeForText { len, max: MAX_TEXT_ENVELOPE - TRANSPORT_TAG_LEN });
    }
    Ok(TRANSPORT_PREFIX.len() + with_tag.div_ceil(3) * 4)
}

/// Writes the transport form of the envelope `bytes`, made under `key` (the
/// key of its version), into `out` (exactly `transport_text_len` bytes).
pub fn write_transport_text(key: &crate::data_key::Key, secret: &[u8], bytes: &[u8], out: &mut [u8]) -> Result<()> {
    assert_eq!(out.len(), transport_text_len(bytes.len())?, "output buffer size");
    let mut body = Vec::with_capacity(bytes.len() + TRANSPORT_TAG_LEN);
    body.extend_from_slice(bytes);
    body.extend_from_slice(&key.transport_mac(secret, bytes)[..TRANSPORT_TAG_LEN]);
    let (prefix, b64) = out.split_at_mut(TRANSPORT_PREFIX.len());
    prefix.copy_from_slice(TRANSPORT_PREFIX.as_bytes());
    let written = STANDARD.encode_slice(&body, b64).expect("length checked above");
    debug_assert_eq!(written, b64.len());
    Ok(())
}

/// Whether a text input is meant as the transport form (then it is never
/// taken as plaintext: it is an envelope whose tag must verify).
pub fn is_transport_text(text: &[u8]) -> bool {
    text.starts_with(TRANSPORT_PREFIX.as_bytes())
}

/// The envelope of a transport form whose tag verifies under the key that
/// `key_for` returns for the envelope's version and this transaction's
/// `secret`. A form that does not
/// verify is an error (`BadTransport`), never taken as plaintext.
pub fn parse_transport_text<'k>(
    text: &[u8],
    secret: &[u8],
    key_for: impl FnOnce(&str) -> Result<&'k crate::keyring::KeyEntry>,
) -> Result<Vec<u8>> {
    let b64 = text.strip_prefix(TRANSPORT_PREFIX.as_bytes()).ok_or(Error::BadTransport)?;
    let mut body = STANDARD.decode(b64).map_err(|_| Error::BadTransport)?;
    if body.len() < TRANSPORT_TAG_LEN {
        return Err(Error::BadTransport);
    }
    let tag = body.split_off(body.len() - TRANSPORT_TAG_LEN);
    let version = Stored::parse(&body)?.version;
    let expected = key_for(version)?.key().transport_mac(secret, &body);
    // Constant time: the comparison does not stop at the first difference.
    let diff = expected[..TRANSPORT_TAG_LEN].iter().zip(&tag).fold(0u8, |d, (a, b)| d | (a ^ b));
    if diff != 0 {
        return Err(Error::BadTransport);
    }
    Ok(body)
}

/// Like `from_text`, but says why a value in envelope mode is not an envelope.
pub fn parse_text(text: &str) -> Result<Vec<u8>> {
    let b64 = text.strip_prefix(TEXT_PREFIX).ok_or(Error::BadEncryptedText("text form must start with \"pazpaz:\""))?;
    let bytes = STANDARD.decode(b64).map_err(|_| Error::BadEncryptedText("text form is not valid base64"))?;
    Stored::parse(&bytes)?;
    Ok(bytes)
}
