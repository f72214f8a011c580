//! Byte format 1, the existing application's unversioned field:
//! `nonce(12) ‖ ciphertext ‖ tag(16)`, AES-256-GCM, associated data optional
//! (empty for the application's own format).

use aes_gcm::aead::inout::InOutBuf;
use aes_gcm::{AeadInOut, Aes256Gcm, Nonce, Tag};

use crate::error::{Error, Result};
use crate::nonce::NONCE_LEN;

pub const TAG_LEN: usize = 16;
pub const OVERHEAD: usize = NONCE_LEN + TAG_LEN;

/// Largest plaintext accepted: keeps every result under PostgreSQL's 1 GB
/// datum limit with room for the longest envelope header.
pub const MAX_PLAINTEXT: usize = (1 << 30) - 1 - 4 - OVERHEAD - 66 - 2048;

/// Length of format 1 for a plaintext of `len` bytes.
pub fn sealed_len(len: usize) -> Result<usize> {
    if len > MAX_PLAINTEXT {
        return Err(Error::TooLarge);
    }
    Ok(len + OVERHEAD)
}

/// Encrypts into `out`, which must be exactly `plaintext.len() + OVERHEAD`
/// bytes; lets callers write straight into a PostgreSQL allocation.
/// The nonce must be fresh for this key (see `nonce.rs`).
pub fn encrypt_into(
    cipher: &Aes256Gcm,
    nonce: &[u8; NONCE_LEN],
    plaintext: &[u8],
    aad: &[u8],
    out: &mut [u8],
) -> Result<()> {
    assert_eq!(out.len(), plaintext.len() + OVERHEAD, "output buffer size");
    let (n, rest) = out.split_at_mut(NONCE_LEN);
    let (body, tag_out) = rest.split_at_mut(plaintext.len());
    n.copy_from_slice(nonce);
    // Out of place: the plaintext is read once, the ciphertext written once.
    let io = InOutBuf::new(plaintext, body).expect("lengths checked above");
    let tag = cipher.encrypt_inout_detached(&Nonce::from(*nonce), aad, io).map_err(|_| Error::TooLarge)?;
    tag_out.copy_from_slice(&tag);
    Ok(())
}

pub fn encrypt(cipher: &Aes256Gcm, nonce: &[u8; NONCE_LEN], plaintext: &[u8], aad: &[u8]) -> Result<Vec<u8>> {
    let mut out = vec![0u8; sealed_len(plaintext.len())?];
    encrypt_into(cipher, nonce, plaintext, aad, &mut out)?;
    Ok(out)
}

/// Plaintext length of a format-1 value, or "Ciphertext too short".
pub fn opened_len(sealed: &[u8]) -> Result<usize> {
    sealed.len().checked_sub(OVERHEAD).ok_or(Error::CiphertextTooShort)
}

/// Decrypts into `out` (exactly `opened_len(sealed)` bytes). The tag is checked
/// before any keystream is applied, so on failure `out` is left untouched.
pub fn decrypt_into(cipher: &Aes256Gcm, sealed: &[u8], aad: &[u8], out: &mut [u8]) -> Result<()> {
    let len = opened_len(sealed)?;
    assert_eq!(out.len(), len, "output buffer size");
    let (nonce, rest) = sealed.split_at(NONCE_LEN);
    let (body, tag) = rest.split_at(len);
    // aes-gcm checks the tag over `body` before it applies any keystream, so
    // `out` is written only when the value is authentic.
    let io = InOutBuf::new(body, out).expect("lengths checked above");
    cipher.decrypt_inout_detached(&nonce_array(nonce), aad, io, &tag_array(tag)).map_err(|_| Error::DecryptionFailed)
}

pub fn decrypt(cipher: &Aes256Gcm, sealed: &[u8], aad: &[u8]) -> Result<Vec<u8>> {
    let mut out = vec![0u8; opened_len(sealed)?];
    decrypt_into(cipher, sealed, aad, &mut out)?;
    Ok(out)
}

/// PostgreSQL `text` must be valid UTF-8 (the server encoding we require)
/// without NUL bytes; a foreign writer could have encrypted anything.
pub fn check_text(plaintext: &[u8]) -> Result<()> {
    // Fast path, one pass: ASCII without NUL, eight bytes at a time (most
    // fields); anything else takes the full check.
    let mut chunks = plaintext.chunks_exact(8);
    let plain_ascii = chunks.all(|c| {
        let x = u64::from_ne_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]);
        let has_zero = x.wrapping_sub(0x0101_0101_0101_0101) & !x & 0x8080_8080_8080_8080;
        (x & 0x8080_8080_8080_8080) | has_zero == 0
    }) && chunks.remainder().iter().all(|&b| b != 0 && b < 0x80);
    if plain_ascii {
        return Ok(());
    }
    if plaintext.contains(&0) || std::str::from_utf8(plaintext).is_err() {
        return Err(Error::NotUtf8);
    }
    Ok(())
}

/// Re-encrypts format 1 in place: `buf` holds `nonce ‖ ciphertext ‖ tag`
/// under `from` with associated data `old_aad`; afterwards it holds the same
/// plaintext under `to`, `nonce` and `new_aad`. The plaintext exists only in
/// `buf`, between the two steps (the caller owns and wipes `buf`). On an
/// authentication failure `buf` is unchanged.
pub fn reseal_in_place(
    from: &Aes256Gcm,
    to: &Aes256Gcm,
    nonce: &[u8; NONCE_LEN],
    old_aad: &[u8],
    new_aad: &[u8],
    buf: &mut [u8],
) -> Result<()> {
    let len = opened_len(buf)?;
    let (n, rest) = buf.split_at_mut(NONCE_LEN);
    let (body, tag) = rest.split_at_mut(len);
    from.decrypt_inout_detached(&nonce_array(n), old_aad, InOutBuf::from(&mut *body), &tag_array(tag))
        .map_err(|_| Error::DecryptionFailed)?;
    n.copy_from_slice(nonce);
    let new_tag =
        to.encrypt_inout_detached(&Nonce::from(*nonce), new_aad, InOutBuf::from(body)).map_err(|_| Error::TooLarge)?;
    tag.copy_from_slice(&new_tag);
    Ok(())
}

fn nonce_array(n: &[u8]) -> Nonce<aes_gcm::aead::consts::U12> {
    let n: [u8; NONCE_LEN] = n.try_into().expect("split at NONCE_LEN");
    Nonce::from(n)
}

fn tag_array(t: &[u8]) -> Tag {
    let t: [u8; TAG_LEN] = t.try_into().expect("split at TAG_LEN");
    Tag::from(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_text_accepts_text_and_refuses_nul_and_bad_utf8() {
        for ok in ["", "a", "abcdefgh", "abcdefghi", "Ünïcødé — 患者 🩺", "0123456789abcdef0123456789"] {
            assert!(check_text(ok.as_bytes()).is_ok(), "{ok}");
        }
        for len in 1..40 {
            for pos in 0..len {
                let mut v = vec![b'x'; len];
                v[pos] = 0;
                assert_eq!(check_text(&v), Err(Error::NotUtf8), "NUL at {pos} of {len}");
                v[pos] = 0xff;
                assert_eq!(check_text(&v), Err(Error::NotUtf8), "0xff at {pos} of {len}");
                v[pos] = 0x80;
                assert_eq!(check_text(&v), Err(Error::NotUtf8), "0x80 at {pos} of {len}");
            }
        }
    }
}
