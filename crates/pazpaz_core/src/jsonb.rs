//! PostgreSQL's binary `jsonb` layout, for the one shape this crate needs:
//! reading two string members of an envelope, and writing
//! `{"version": …, "ciphertext": …}` directly (no JSON text on the way).
//!
//! Layout of a container (after the 4-byte varlena header; `jsonb.h`):
//!
//! ```text
//! u32 header        count | JB_FOBJECT (0x20000000) | JB_FARRAY | JB_FSCALAR
//! u32 entries[n]    objects: n = 2 × count, all keys first, then the values
//! data…             the entries' data in the same order
//! ```
//!
//! An entry holds a type (bits 28–30), and either the length of its data or,
//! when bit 31 (HAS_OFF) is set, the end offset of its data; PostgreSQL sets
//! HAS_OFF on every 32nd entry, counting keys then values. Object keys are
//! sorted by length, then bytes. Strings are stored unpadded.
//!
//! The reader checks every offset against the buffer, so a corrupt datum is an
//! error, never an out-of-bounds read.

use crate::error::{Error, Result};
use crate::versioned::Member;

const JB_CMASK: u32 = 0x0FFF_FFFF;
const JB_FOBJECT: u32 = 0x2000_0000;
const JENTRY_OFFLENMASK: u32 = 0x0FFF_FFFF;
const JENTRY_TYPEMASK: u32 = 0x7000_0000;
const JENTRY_HAS_OFF: u32 = 0x8000_0000;
const JENTRY_ISSTRING: u32 = 0x0000_0000;
const JB_OFFSET_STRIDE: usize = 32;

// The errors are made by functions (`ok_or_else(corrupt)`), not constants
// (`ok_or(CORRUPT)`): an `Error` built eagerly is dropped through its drop
// glue on every check that passes, about 180 instructions per envelope read.
fn corrupt() -> Error {
    Error::BadVersioned("corrupt jsonb value")
}

fn too_large() -> Error {
    Error::TooLarge
}

fn u32_at(b: &[u8], pos: usize) -> Result<u32> {
    let s = b.get(pos..pos + 4).ok_or_else(corrupt)?;
    Ok(u32::from_ne_bytes([s[0], s[1], s[2], s[3]]))
}

/// The top-level members "version" and "ciphertext" of a jsonb container,
/// and whether it is an object at all.
pub fn versioned_members(container: &[u8]) -> Result<(bool, Member<'_>, Member<'_>)> {
    let header = u32_at(container, 0)?;
    if header & JB_FOBJECT == 0 {
        return Ok((false, Member::Missing, Member::Missing));
    }
    let count = (header & JB_CMASK) as usize;
    let n = count.checked_mul(2).ok_or_else(corrupt)?;
    let data_start = n.checked_mul(4).and_then(|x| x.checked_add(4)).ok_or_else(corrupt)?;
    if data_start > container.len() {
        return Err(corrupt());
    }
    let entry = |i: usize| u32_at(container, 4 + 4 * i);
    // End offset of every entry, in one pass; envelopes have few entries, so
    // no allocation for them.
    let mut small = [0usize; 16];
    let mut large = Vec::new();
    let ends: &mut [usize] = if n <= small.len() {
        &mut small[..n]
    } else {
        large.resize(n, 0);
        &mut large
    };
    let mut end = 0usize;
    for (i, slot) in ends.iter_mut().enumerate() {
        let e = entry(i)?;
        let field = (e & JENTRY_OFFLENMASK) as usize;
        end = if e & JENTRY_HAS_OFF != 0 { field } else { end.checked_add(field).ok_or_else(corrupt)? };
        *slot = end;
    }
    let ends = &*ends;
    let data = &container[data_start..];
    let slice = |i: usize| -> Result<&[u8]> {
        let start = if i == 0 { 0 } else { ends[i - 1] };
        data.get(start..ends[i]).ok_or_else(corrupt)
    };
    let mut version = Member::Missing;
    let mut ciphertext = Member::Missing;
    for k in 0..count {
        let key = slice(k)?;
        let slot = match key {
            b"version" => &mut version,
            b"ciphertext" => &mut ciphertext,
            _ => continue,
        };
        let v = entry(count + k)?;
        *slot = if v & JENTRY_TYPEMASK == JENTRY_ISSTRING { Member::Str(slice(count + k)?) } else { Member::NotString };
    }
    Ok((true, version, ciphertext))
}

/// Largest container PostgreSQL builds: `convertJsonbObject` (jsonb_util.c)
/// raises 54000 ("total size of jsonb object elements exceeds the maximum")
/// when the container's total size, header and entries included, exceeds
/// `JENTRY_OFFLENMASK`, because that size is stored in a JEntry's 28-bit
/// field. (Its check of the entries' data alone, 20 bytes smaller, is the
/// weaker one.) Every length and end offset an envelope stores is smaller
/// than its container, so this one bound covers them all.
pub const MAX_CONTAINER: usize = JENTRY_OFFLENMASK as usize;

/// Container size of `{"version": version, "ciphertext": base64(sealed)}`.
pub fn versioned_size(version: &str, sealed_len: usize) -> usize {
    4 + 4 * 4 + "version".len() + "ciphertext".len() + version.len() + base64_len(sealed_len)
}

/// `versioned_size`, or `TooLarge` when PostgreSQL could not represent the
/// container (see `MAX_CONTAINER`).
pub fn checked_versioned_size(version: &str, sealed_len: usize) -> Result<usize> {
    let size = sealed_len
        .checked_add(2)
        .and_then(|n| (n / 3).checked_mul(4))
        .and_then(|b64| b64.checked_add(versioned_size(version, 0)))
        .ok_or_else(too_large)?;
    if size > MAX_CONTAINER {
        return Err(Error::TooLarge);
    }
    Ok(size)
}

fn base64_len(n: usize) -> usize {
    n.div_ceil(3) * 4
}

/// Writes the container of an envelope into `out` (exactly `versioned_size`
/// bytes), byte for byte what PostgreSQL's own jsonb input would produce.
pub fn write_versioned(out: &mut [u8], version: &str, sealed: &[u8]) -> Result<()> {
    let b64 = base64_len(sealed.len());
    assert_eq!(out.len(), versioned_size(version, sealed.len()), "output buffer size");
    // The whole container must fit, not only the base64 string: PostgreSQL's
    // jsonb input refuses anything larger, so such a value could not be
    // dumped and restored.
    checked_versioned_size(version, sealed.len())?;
    // Keys sorted by length: "version" (7) before "ciphertext" (10).
    let lens = [7usize, 10, version.len(), b64];
    let mut put = |pos: usize, v: u32| out[pos..pos + 4].copy_from_slice(&v.to_ne_bytes());
    put(0, 2 | JB_FOBJECT);
    for (i, len) in lens.iter().enumerate() {
        // PostgreSQL stores an end offset (HAS_OFF) instead of a length on
        // key i when i % 32 == 0 and on value i when (i + count) % 32 == 0:
        // with two pairs, on the first key only, whose end offset is its length.
        let meta = if i % JB_OFFSET_STRIDE == 0 { JENTRY_HAS_OFF | *len as u32 } else { *len as u32 };
        put(4 + 4 * i, JENTRY_ISSTRING | meta);
    }
    let mut pos = 4 + 16;
    for s in [&b"version"[..], b"ciphertext", version.as_bytes()] {
        out[pos..pos + s.len()].copy_from_slice(s);
        pos += s.len();
    }
    let dst = base64_simd::Out::from_slice(&mut out[pos..]);
    let written = base64_simd::STANDARD.encode(sealed, dst).len();
    debug_assert_eq!(written, b64);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::engine::general_purpose::STANDARD;
    use base64::Engine as _;

    #[test]
    fn written_envelopes_read_back() {
        for sealed_len in [0usize, 1, 2, 3, 28, 100, 5000] {
            let sealed: Vec<u8> = (0..sealed_len).map(|i| i as u8).collect();
            let mut out = vec![0u8; versioned_size("v2", sealed.len())];
            write_versioned(&mut out, "v2", &sealed).unwrap();
            let (obj, v, c) = versioned_members(&out).unwrap();
            assert!(obj);
            assert!(matches!(v, Member::Str(b"v2")));
            match c {
                Member::Str(b) => assert_eq!(STANDARD.decode(b).unwrap(), sealed),
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn corrupt_containers_are_errors() {
        let mut out = vec![0u8; versioned_size("v1", 40)];
        write_versioned(&mut out, "v1", &[7; 40]).unwrap();
        for len in 0..out.len() {
            // Truncated: an error or, if the members still fit, a result; never a panic.
            let _ = versioned_members(&out[..len]);
        }
        let mut bad = out.clone();
        bad[4..8].copy_from_slice(&(JENTRY_OFFLENMASK).to_ne_bytes());
        assert!(versioned_members(&bad).is_err());
        let mut bad = out.clone();
        bad[0..4].copy_from_slice(&(JB_FOBJECT | JB_CMASK).to_ne_bytes());
        assert!(versioned_members(&bad).is_err());
    }
}
