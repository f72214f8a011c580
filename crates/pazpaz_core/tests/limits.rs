//! Size limits at their exact boundaries: every value the extension returns
//! must be one PostgreSQL can represent, dump and restore.

use pazpaz_core::{encrypted_text, field, jsonb, Error};

/// PostgreSQL's `JENTRY_OFFLENMASK` (utils/jsonb.h).
const JENTRY_OFFLENMASK: usize = 0x0FFF_FFFF;

/// jsonb container of `{"version": "v1", "ciphertext": base64(format 1)}`:
/// 4 (header) + 4 × 4 (entries) + 7 + 10 (keys) + 2 ("v1") + base64.
/// `convertJsonbObject` refuses a container over `JENTRY_OFFLENMASK`:
/// base64 ≤ 268,435,416 = 4 × 67,108,854, so format 1 ≤ 201,326,562 bytes
/// and the plaintext ≤ 201,326,534 bytes.
const MAX_PLAINTEXT_V1: usize = 201_326_534;

#[test]
fn versioned_envelope_limit_is_postgres_container_limit() {
    let size =
        |version: &str, plaintext: usize| jsonb::checked_versioned_size(version, field::sealed_len(plaintext).unwrap());
    assert_eq!(size("v1", MAX_PLAINTEXT_V1), Ok(JENTRY_OFFLENMASK));
    assert_eq!(jsonb::versioned_size("v1", field::sealed_len(MAX_PLAINTEXT_V1).unwrap()), JENTRY_OFFLENMASK);
    // One byte more is a base64 quantum more: over the limit. This includes
    // sizes whose base64 string alone, or whose entries' data alone, would fit.
    for plaintext in MAX_PLAINTEXT_V1 + 1..=201_326_561 + 3 {
        assert_eq!(size("v1", plaintext), Err(Error::TooLarge), "{plaintext} bytes");
    }
    assert_eq!(size("v1", 201_326_561 + 4_000_000), Err(Error::TooLarge));
    assert_eq!(size("v1", field::MAX_PLAINTEXT), Err(Error::TooLarge));
    // The longest version name (64): 37 + 64 + base64 ≤ 268,435,455, so
    // base64 ≤ 268,435,352 = 4 × 67,108,838: format 1 ≤ 201,326,514 bytes.
    let long = "a".repeat(64);
    assert_eq!(size(&long, 201_326_486), Ok(JENTRY_OFFLENMASK - 2));
    assert_eq!(size(&long, 201_326_487), Err(Error::TooLarge));
    assert_eq!(jsonb::checked_versioned_size("v1", usize::MAX), Err(Error::TooLarge));
}

#[test]
fn versioned_envelope_is_written_up_to_the_limit_and_refused_beyond() {
    let sealed_len = field::sealed_len(MAX_PLAINTEXT_V1).unwrap();
    // Largest accepted: written in full and read back.
    let sealed = vec![0xA5u8; sealed_len + 1];
    let mut out = vec![0u8; jsonb::versioned_size("v1", sealed_len)];
    jsonb::write_versioned(&mut out, "v1", &sealed[..sealed_len]).unwrap();
    assert_eq!(out.len(), JENTRY_OFFLENMASK);
    match jsonb::versioned_members(&out).unwrap() {
        (true, pazpaz_core::versioned::Member::Str(b"v1"), pazpaz_core::versioned::Member::Str(c)) => {
            assert_eq!(c.len(), 268_435_416);
            assert!(c.starts_with(b"paWl"), "base64 of 0xA5 0xA5 0xA5");
        }
        other => panic!("{:?}", other.0),
    }
    drop(out);
    // One byte more: refused, where PostgreSQL's own jsonb input would refuse it.
    let mut out = vec![0u8; jsonb::versioned_size("v1", sealed_len + 1)];
    assert_eq!(jsonb::write_versioned(&mut out, "v1", &sealed), Err(Error::TooLarge));
}

/// PostgreSQL's MaxAllocSize (utils/memutils.h): 1 GB - 1.
const MAX_ALLOC_SIZE: usize = 0x3FFF_FFFF;

#[test]
fn text_envelope_form_fits_one_postgres_allocation() {
    // The text form and its NUL: 7 + 4 × 268,435,453 + 1 = 1,073,741,820 ≤ MaxAllocSize.
    assert_eq!(encrypted_text::MAX_TEXT_ENVELOPE, 805_306_359);
    assert_eq!(encrypted_text::text_len(805_306_359), Ok(1_073_741_819));
    assert!(encrypted_text::text_len(805_306_359).unwrap() < MAX_ALLOC_SIZE);
    // One more byte is one more base64 quantum: 7 + 1,073,741,816 + 1 > MaxAllocSize.
    for len in [805_306_360, 805_306_361, 805_306_362, 805_306_363, 1 << 30] {
        let err = encrypted_text::text_len(len).unwrap_err();
        assert_eq!(err, Error::TooLargeForText { len, max: 805_306_359 });
        assert_eq!(err.class(), pazpaz_core::error::ErrorClass::TooLarge);
        let msg = err.to_string();
        assert!(msg.contains("too large for the text envelope form") && msg.contains("(FORMAT binary)"), "{msg}");
    }
    // For a v1 envelope (32 bytes of overhead), that is a plaintext of
    // 805,306,327 bytes (768 MiB less 41 bytes); the plaintext path has room.
    assert_eq!(encrypted_text::sealed_len("v1", 805_306_327).unwrap(), encrypted_text::MAX_TEXT_ENVELOPE);
    assert!(encrypted_text::text_len(encrypted_text::sealed_len("v1", 805_306_328).unwrap()).is_err());
    // Every envelope the extension can store is under MaxAllocSize with its
    // varlena header, and so is its plaintext with a NUL.
    let largest = encrypted_text::sealed_len(&"a".repeat(64), field::MAX_PLAINTEXT).unwrap();
    assert!(largest + 4 <= MAX_ALLOC_SIZE);
    assert_eq!(encrypted_text::sealed_len("v1", field::MAX_PLAINTEXT + 1), Err(Error::TooLarge));
}

#[test]
fn text_form_writer_matches_to_text_and_refuses_oversize() {
    for n in [0usize, 1, 2, 3, 4, 31, 32, 33, 1000] {
        let bytes: Vec<u8> = (0..n).map(|i| (i * 31 + 7) as u8).collect();
        let mut out = vec![0u8; encrypted_text::text_len(n).unwrap()];
        encrypted_text::write_text(&bytes, &mut out).unwrap();
        assert_eq!(out, encrypted_text::to_text(&bytes).into_bytes(), "{n} bytes");
    }
    // Refused before the output is touched (zeroed pages, never written).
    let big = vec![0u8; encrypted_text::MAX_TEXT_ENVELOPE + 1];
    assert!(matches!(encrypted_text::write_text(&big, &mut []), Err(Error::TooLargeForText { .. })));
}
