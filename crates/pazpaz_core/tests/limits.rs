//! Size limits at their exact boundaries: every value the extension returns
//! must be one PostgreSQL can represent, dump and restore.

use pazpaz_core::{envelope, field, jsonb, Error};

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
    let size = |version: &str, plaintext: usize| jsonb::checked_envelope_size(version, field::sealed_len(plaintext).unwrap());
    assert_eq!(size("v1", MAX_PLAINTEXT_V1), Ok(JENTRY_OFFLENMASK));
    assert_eq!(jsonb::envelope_size("v1", field::sealed_len(MAX_PLAINTEXT_V1).unwrap()), JENTRY_OFFLENMASK);
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
    assert_eq!(jsonb::checked_envelope_size("v1", usize::MAX), Err(Error::TooLarge));
}

#[test]
fn versioned_envelope_is_written_up_to_the_limit_and_refused_beyond() {
    let sealed_len = field::sealed_len(MAX_PLAINTEXT_V1).unwrap();
    // Largest accepted: written in full and read back.
    let sealed = vec![0xA5u8; sealed_len + 1];
    let mut out = vec![0u8; jsonb::envelope_size("v1", sealed_len)];
    jsonb::write_envelope(&mut out, "v1", &sealed[..sealed_len]).unwrap();
    assert_eq!(out.len(), JENTRY_OFFLENMASK);
    match jsonb::envelope_members(&out).unwrap() {
        (true, pazpaz_core::versioned::Member::Str(b"v1"), pazpaz_core::versioned::Member::Str(c)) => {
            assert_eq!(c.len(), 268_435_416);
            assert!(c.starts_with(b"paWl"), "base64 of 0xA5 0xA5 0xA5");
        }
        other => panic!("{:?}", other.0),
    }
    drop(out);
    // One byte more: refused, where PostgreSQL's own jsonb input would refuse it.
    let mut out = vec![0u8; jsonb::envelope_size("v1", sealed_len + 1)];
    assert_eq!(jsonb::write_envelope(&mut out, "v1", &sealed), Err(Error::TooLarge));
}
