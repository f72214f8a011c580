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
    // The OR of all bytes has its top bit set when any byte is not ASCII,
    // and their minimum is 0 when any byte is NUL. Plain ASCII (most fields)
    // is then done; other text takes a SIMD UTF-8 validation, which accepts
    // exactly what `std::str::from_utf8` accepts (the tests compare them) at
    // a fraction of its cost on multibyte text: the standard library's goes
    // byte by byte there (about 9 instructions a byte on 5,000 bytes of
    // Hebrew, against under 1).
    let (any, min) = or_and_min(plaintext);
    if min == 0 {
        return Err(Error::NotUtf8);
    }
    if any < 0x80 {
        return Ok(());
    }
    simdutf8::basic::from_utf8(plaintext).map(|_| ()).map_err(|_| Error::NotUtf8)
}

/// The OR and the minimum of all bytes (0 and 255 for none), in one pass
/// without a branch per byte: `N` lanes at a time (one vector register),
/// and a last, overlapping group for the tail (bytes seen twice change
/// neither result).
fn or_and_min(bytes: &[u8]) -> (u8, u8) {
    fn lanes<const N: usize>(bytes: &[u8]) -> (u8, u8) {
        let mut any = [0u8; N];
        let mut min = [u8::MAX; N];
        let mut fold = |group: &[u8]| {
            let group: &[u8; N] = group.try_into().expect("a group of N bytes");
            for i in 0..N {
                any[i] |= group[i];
                min[i] = min[i].min(group[i]);
            }
        };
        let mut groups = bytes.chunks_exact(N);
        groups.by_ref().for_each(&mut fold);
        if !groups.remainder().is_empty() {
            fold(&bytes[bytes.len() - N..]);
        }
        (any.into_iter().fold(0, |a, b| a | b), min.into_iter().fold(u8::MAX, u8::min))
    }
    match bytes.len() {
        32.. => lanes::<32>(bytes),
        16.. => lanes::<16>(bytes),
        8.. => lanes::<8>(bytes),
        _ => bytes.iter().fold((0, u8::MAX), |(a, m), &b| (a | b, m.min(b))),
    }
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

    /// What `check_text` must accept: valid UTF-8 (by the standard library's
    /// definition) without NUL.
    fn reference(v: &[u8]) -> bool {
        !v.contains(&0) && std::str::from_utf8(v).is_ok()
    }

    #[test]
    fn check_text_agrees_with_std_on_multibyte_edge_cases() {
        // Sequences around every boundary UTF-8 has: overlong forms,
        // surrogates, the last code point, truncated and stray bytes.
        let pieces: &[&[u8]] = &[
            b"a",
            "é".as_bytes(),
            "患".as_bytes(),
            "🩺".as_bytes(),
            "\u{7f}".as_bytes(),
            "\u{80}".as_bytes(),
            "\u{7ff}".as_bytes(),
            "\u{800}".as_bytes(),
            "\u{ffff}".as_bytes(),
            "\u{10000}".as_bytes(),
            "\u{10ffff}".as_bytes(),
            &[0xc0, 0x80],
            &[0xc1, 0xbf],
            &[0xe0, 0x80, 0x80],
            &[0xe0, 0x9f, 0xbf],
            &[0xed, 0xa0, 0x80],
            &[0xed, 0xbf, 0xbf],
            &[0xf0, 0x8f, 0xbf, 0xbf],
            &[0xf4, 0x90, 0x80, 0x80],
            &[0xf5, 0x80, 0x80, 0x80],
            &[0xff],
            &[0xfe],
            &[0x80],
            &[0xbf],
            &[0xc3],
            &[0xe6, 0x82],
            &[0xf0, 0x9f, 0xa9],
            &[0],
        ];
        // Each piece alone and at every offset of 0..70 ASCII bytes before
        // and after it (across the validator's 64-byte blocks), once after
        // valid multibyte text and once after ASCII.
        for p in pieces {
            for prefix in [&b""[..], "Ünïcødé — 患者 🩺 ".as_bytes()] {
                for pad in 0..70 {
                    for tail in [0, 1, 63, 64, 65] {
                        let mut v = prefix.to_vec();
                        v.extend(std::iter::repeat_n(b'x', pad));
                        v.extend_from_slice(p);
                        v.extend(std::iter::repeat_n(b'y', tail));
                        assert_eq!(check_text(&v).is_ok(), reference(&v), "{v:?}");
                    }
                }
            }
        }
    }

    proptest::proptest! {
        #[test]
        fn check_text_agrees_with_std_on_random_bytes(v in proptest::collection::vec(proptest::num::u8::ANY, 0..300)) {
            proptest::prop_assert_eq!(check_text(&v).is_ok(), reference(&v));
        }

        #[test]
        fn check_text_agrees_with_std_on_mutated_text(
            s in "[a-z \\u{e9}\\u{5d0}-\\u{5ea}\\u{60a8}\\u{1fa7a}]{0,200}",
            edits in proptest::collection::vec((proptest::num::usize::ANY, proptest::num::u8::ANY), 0..3),
        ) {
            let mut v = s.into_bytes();
            proptest::prop_assert!(check_text(&v).is_ok());
            for (at, b) in edits {
                if !v.is_empty() {
                    let i = at % v.len();
                    v[i] = b;
                }
            }
            proptest::prop_assert_eq!(check_text(&v).is_ok(), reference(&v));
        }
    }
}
