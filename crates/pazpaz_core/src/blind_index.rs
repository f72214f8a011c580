//! Search on encrypted values: blind indexes (exact match) and keyed trigram
//! tokens (substring match), under keys derived from the session's index key
//! (`pazpaz.index_key`), which is separate from the data keys.
//!
//! Formats (pinned by `tests/blind_index.rs`, whose vectors come from an
//! independent Python implementation):
//!
//! - **Derivation.** For a context string `ctx` (by default the column's
//!   `schema.table.column`), `key(kind, ctx) = HKDF-SHA-256(ikm = index key,
//!   salt = none (32 zero bytes), info = domain(kind) ‖ 0x00 ‖ ctx, L = 32)`
//!   with the domain `"pazpaz_crypto blind index v1"` for exact match and
//!   `"pazpaz_crypto match tokens v1"` for tokens, so the two kinds never
//!   share a key, and neither do two contexts.
//! - **Blind index** of a value: `HMAC-SHA-256(key(exact, ctx),
//!   normalize(value))`, its first `bits` bits (1 ≤ bits ≤ 256): ⌈bits/8⌉
//!   bytes, the unused low bits of the last byte zero.
//! - **Tokens** of a value: for each distinct trigram (three consecutive
//!   characters, not bytes) of `normalize(value)`, the first 32 bits of
//!   `HMAC-SHA-256(key(tokens, ctx), trigram as UTF-8)` as a big-endian
//!   number, keeping its top `bits` bits (8 ≤ bits ≤ 32, default 20: a
//!   space of 2^20 positions); sorted and de-duplicated, as `int4` values
//!   (bit patterns of 32 bits wrap to negative). A value of fewer than three
//!   characters has no tokens; a *query* of fewer than three characters is an
//!   error, because it would match every row (or none).
//! - **Normalization** `none`: the value as given. `lower`: Unicode NFKC,
//!   then the lowercase mapping of each character (no context rules), NFKC
//!   again, leading and trailing whitespace removed and every run of
//!   whitespace replaced by one space. NFKC rather than NFC because search
//!   should treat compatibility forms (full-width letters, ligatures,
//!   non-breaking and other spaces, superscripts) as what they stand for,
//!   as a user typing the query does. The mapping is idempotent.
//!
//! Key material: the index key's 32 bytes are kept (in wiped memory) to
//! derive per-context keys; each derived key is kept as its HMAC state (the
//! hashes of the padded key), wiped on drop.

use std::borrow::Cow;

use sha2::digest::generic_array::GenericArray;
use sha2::{Digest, Sha256};
use unicode_normalization::UnicodeNormalization;
use zeroize::Zeroize;
use zeroize::Zeroizing;

use crate::data_key::{decode_key_base64, KEY_LEN};
use crate::error::{Error, Result};

/// HKDF info prefix of exact-match keys.
pub const EXACT_DOMAIN: &[u8] = b"pazpaz_crypto blind index v1";
/// HKDF info prefix of token keys.
pub const TOKEN_DOMAIN: &[u8] = b"pazpaz_crypto match tokens v1";
/// Characters per token; also the shortest query.
pub const NGRAM: usize = 3;
pub const DEFAULT_INDEX_BITS: u32 = 256;
pub const DEFAULT_TOKEN_BITS: u32 = 20;
pub const MIN_TOKEN_BITS: u32 = 8;
pub const MAX_TOKEN_BITS: u32 = 32;

/// Which of the two derived keys of a context.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    Exact,
    Tokens,
}

impl Kind {
    fn domain(self) -> &'static [u8] {
        match self {
            Kind::Exact => EXACT_DOMAIN,
            Kind::Tokens => TOKEN_DOMAIN,
        }
    }
}

/// How a value is normalized before it is indexed (and a query before it is
/// looked up).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Normalize {
    /// The value as given (byte for byte).
    None,
    /// Case- and space-insensitive: NFKC, lowercase, trimmed, whitespace
    /// runs collapsed.
    Lower,
}

impl Normalize {
    pub fn parse(name: &str) -> Result<Normalize> {
        match name {
            "none" => Ok(Normalize::None),
            "lower" => Ok(Normalize::Lower),
            _ => Err(Error::UnknownNormalize),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Normalize::None => "none",
            Normalize::Lower => "lower",
        }
    }

    /// The normalized form of `value`; borrowed when nothing changes.
    pub fn apply(self, value: &str) -> Cow<'_, str> {
        match self {
            Normalize::None => Cow::Borrowed(value),
            Normalize::Lower => lower(value),
        }
    }
}

fn lower(value: &str) -> Cow<'_, str> {
    if value.is_ascii() {
        // NFKC is the identity on ASCII.
        let unchanged = !value.bytes().any(|b| b.is_ascii_uppercase()) && collapse_is_identity(value.chars());
        if unchanged {
            return Cow::Borrowed(value);
        }
        return Cow::Owned(collapse(value.chars().map(|c| c.to_ascii_lowercase())));
    }
    let lowered: String = value.nfkc().flat_map(char::to_lowercase).collect();
    Cow::Owned(collapse(lowered.nfkc()))
}

fn collapse_is_identity(mut chars: impl Iterator<Item = char>) -> bool {
    let mut prev_space = true; // a leading space is not allowed either
    let mut last = None;
    for c in chars.by_ref() {
        if c.is_whitespace() {
            if c != ' ' || prev_space {
                return false;
            }
            prev_space = true;
        } else {
            prev_space = false;
        }
        last = Some(c);
    }
    last != Some(' ')
}

/// Trims whitespace and replaces each inner run of it with one space.
fn collapse(chars: impl Iterator<Item = char>) -> String {
    let mut out = String::new();
    let mut pending_space = false;
    for c in chars {
        if c.is_whitespace() {
            pending_space = !out.is_empty();
        } else {
            if pending_space {
                out.push(' ');
                pending_space = false;
            }
            out.push(c);
        }
    }
    out
}

/// Checks the `bits` of a blind index: 1 to 256.
pub fn check_index_bits(bits: i32) -> Result<u32> {
    u32::try_from(bits).ok().filter(|b| (1..=256).contains(b)).ok_or(Error::IndexBits)
}

/// Checks the `bits` of a token (the size of the token space): 8 to 32.
pub fn check_token_bits(bits: i32) -> Result<u32> {
    u32::try_from(bits).ok().filter(|b| (MIN_TOKEN_BITS..=MAX_TOKEN_BITS).contains(b)).ok_or(Error::TokenBits)
}

/// Bytes of a blind index of `bits` bits.
pub fn index_len(bits: u32) -> usize {
    bits.div_ceil(8) as usize
}

/// HMAC-SHA-256 with its key schedule precomputed: the SHA-256 states after
/// the inner and outer padded key blocks (as good as the key; zeroed on
/// drop). A MAC of a short value then costs two compressions, with no
/// per-value setup; built on `sha2::compress256` directly (the `hmac` crate's
/// buffered path cost some fifty times that here).
struct WipedMac {
    inner: [u32; 8],
    outer: [u32; 8],
}

const SHA256_IV: [u32; 8] =
    [0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19];

impl WipedMac {
    fn new(key: &[u8]) -> WipedMac {
        let mut k = Zeroizing::new([0u8; 64]);
        if key.len() > 64 {
            k[..32].copy_from_slice(&Sha256::digest(key));
        } else {
            k[..key.len()].copy_from_slice(key);
        }
        let mut pad = Zeroizing::new([0u8; 64]);
        let mut mac = WipedMac { inner: SHA256_IV, outer: SHA256_IV };
        for (p, b) in pad.iter_mut().zip(k.iter()) {
            *p = b ^ 0x36;
        }
        compress_blocks(&mut mac.inner, &pad[..]);
        for (p, b) in pad.iter_mut().zip(k.iter()) {
            *p = b ^ 0x5c;
        }
        compress_blocks(&mut mac.outer, &pad[..]);
        mac
    }

    /// HMAC of `data`.
    fn mac(&mut self, data: &[u8]) -> [u8; 32] {
        let mut st = Zeroizing::new(self.inner);
        let inner = Zeroizing::new(finish(&mut st, data));
        let mut st = Zeroizing::new(self.outer);
        finish(&mut st, &inner[..])
    }
}

impl Drop for WipedMac {
    fn drop(&mut self) {
        self.inner.zeroize();
        self.outer.zeroize();
    }
}

/// Runs SHA-256 compressions over whole 64-byte blocks.
fn compress_blocks(state: &mut [u32; 8], blocks: &[u8]) {
    debug_assert!(blocks.len().is_multiple_of(64));
    #[cfg(all(target_arch = "x86_64", target_feature = "avx"))]
    #[allow(unsafe_code)]
    // SAFETY: VZEROUPPER only clears the upper halves of the vector
    // registers, which hold no live values across this call boundary.
    unsafe {
        std::arch::x86_64::_mm256_zeroupper()
    };
    for b in blocks.chunks_exact(64) {
        sha2::compress256(state, std::slice::from_ref(GenericArray::from_slice(b)));
    }
}

/// Finishes a SHA-256 whose state has absorbed one 64-byte block (the padded
/// key) with `data` and the padding, and returns the digest.
fn finish(state: &mut [u32; 8], data: &[u8]) -> [u8; 32] {
    let whole = data.len() - data.len() % 64;
    compress_blocks(state, &data[..whole]);
    let rem = &data[whole..];
    let mut last = Zeroizing::new([0u8; 128]);
    last[..rem.len()].copy_from_slice(rem);
    last[rem.len()] = 0x80;
    let n = if rem.len() < 56 { 64 } else { 128 };
    let bits = (64 + data.len() as u64) * 8;
    last[n - 8..n].copy_from_slice(&bits.to_be_bytes());
    compress_blocks(state, &last[..n]);
    let mut out = [0u8; 32];
    for (o, w) in out.chunks_exact_mut(4).zip(state.iter()) {
        o.copy_from_slice(&w.to_be_bytes());
    }
    out
}

/// HKDF-SHA-256 (RFC 5869) with no salt and one 32-byte output block:
/// `PRK = HMAC(0^32, ikm)`, `OKM = HMAC(PRK, info ‖ 0x01)`.
fn hkdf_sha256(ikm: &[u8], info: &[&[u8]]) -> Zeroizing<[u8; 32]> {
    let prk = Zeroizing::new(WipedMac::new(&[0u8; 32]).mac(ikm));
    let mut message = Zeroizing::new(info.concat());
    message.push(1);
    Zeroizing::new(WipedMac::new(&prk[..]).mac(&message))
}

/// The session's index key, parsed from `pazpaz.index_key`.
pub struct IndexKey {
    ikm: Zeroizing<[u8; KEY_LEN]>,
    fingerprint: String,
}

impl IndexKey {
    /// Standard base64 of 32 bytes (as data keys). Errors never contain the
    /// input.
    pub fn from_base64(text: &str) -> Result<IndexKey> {
        let ikm = decode_key_base64(text)?;
        let fingerprint = fingerprint(&ikm[..]);
        Ok(IndexKey { ikm, fingerprint })
    }

    /// From a setting's value, raw or wrapped (`pzw1:…`) under `policy`, as
    /// the data keys are (`wrapped_key::parse_key_bytes`).
    pub fn from_setting(text: &str, policy: &crate::wrapped_key::KeyPolicy) -> Result<IndexKey> {
        let (ikm, _) = crate::wrapped_key::parse_key_bytes(text, policy)?;
        let fingerprint = fingerprint(&ikm[..]);
        Ok(IndexKey { ikm, fingerprint })
    }

    /// First 32 bits of a domain-separated SHA-256 of the key, as 8 hex
    /// digits: names the key an index was built with (stored with the
    /// index, so that during a rotation each index finds its key), far too
    /// little to help an attacker.
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// The key of `kind` for `context` (an HKDF; cache the result).
    pub fn derive(&self, kind: Kind, context: &[u8]) -> DerivedKey {
        let okm = hkdf_sha256(&self.ikm[..], &[kind.domain(), b"\0", context]);
        DerivedKey { mac: WipedMac::new(&okm[..]) }
    }
}

fn fingerprint(bytes: &[u8]) -> String {
    let mut h = Sha256::new();
    h.update(b"pazpaz_crypto index key fingerprint v1\0");
    h.update(bytes);
    let d = h.finalize();
    d[..4].iter().map(|b| format!("{b:02x}")).collect()
}

/// A per-context key, ready to MAC values.
pub struct DerivedKey {
    mac: WipedMac,
}

impl DerivedKey {
    /// The blind index of an already normalized value into `out`, which is
    /// `index_len(bits)` bytes long.
    pub fn blind_index_into(&mut self, normalized: &[u8], bits: u32, out: &mut [u8]) {
        debug_assert!((1..=256).contains(&bits) && out.len() == index_len(bits));
        let tag = Zeroizing::new(self.mac.mac(normalized));
        out.copy_from_slice(&tag[..out.len()]);
        if !bits.is_multiple_of(8) {
            if let Some(last) = out.last_mut() {
                *last &= 0xffu8 << (8 - bits % 8);
            }
        }
    }

    /// The blind index of an already normalized value.
    pub fn blind_index(&mut self, normalized: &[u8], bits: u32) -> Vec<u8> {
        let mut out = vec![0u8; index_len(bits)];
        self.blind_index_into(normalized, bits, &mut out);
        out
    }

    /// The tokens of an already normalized value: sorted, distinct; empty for
    /// fewer than three characters.
    pub fn tokens(&mut self, normalized: &str, bits: u32) -> Vec<i32> {
        debug_assert!((MIN_TOKEN_BITS..=MAX_TOKEN_BITS).contains(&bits));
        let mut grams = trigrams(normalized);
        grams.sort_unstable();
        grams.dedup();
        let mut out: Vec<i32> = grams
            .iter()
            .map(|g| {
                let tag = self.mac.mac(g.as_bytes());
                let top = u32::from_be_bytes([tag[0], tag[1], tag[2], tag[3]]);
                // bits ≤ 32, so the shift is at most 24 and never overflows.
                (top >> (32 - bits)) as i32
            })
            .collect();
        out.sort_unstable();
        out.dedup();
        out
    }

    /// The tokens of a query: as `tokens`, but a query of fewer than three
    /// characters is an error rather than the empty set (which every row's
    /// tokens contain).
    pub fn query_tokens(&mut self, normalized: &str, bits: u32) -> Result<Vec<i32>> {
        if normalized.chars().nth(NGRAM - 1).is_none() {
            return Err(Error::QueryTooShort);
        }
        Ok(self.tokens(normalized, bits))
    }
}

/// Every window of three consecutive characters, as string slices.
fn trigrams(s: &str) -> Vec<&str> {
    let starts: Vec<usize> = s.char_indices().map(|(i, _)| i).chain(std::iter::once(s.len())).collect();
    if starts.len() <= NGRAM {
        return Vec::new();
    }
    (0..starts.len() - NGRAM).map(|i| &s[starts[i]..starts[i + NGRAM]]).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

    #[test]
    fn hkdf_rfc5869_case_3() {
        // RFC 5869 A.3: IKM = 0x0b * 22, no salt, no info; first 32 bytes.
        let okm = hkdf_sha256(&[0x0b; 22], &[]);
        assert_eq!(hex::encode(&okm[..]), "8da4e775a563c18f715f802a063c5a31b8a11f5c5ee1879ec3454e5f3c738d2d");
    }

    #[test]
    fn truncation_masks_the_last_byte() {
        let k = IndexKey::from_base64(KEY).unwrap();
        let mut d = k.derive(Kind::Exact, b"ctx");
        let full = d.blind_index(b"value", 256);
        for bits in 1..=256u32 {
            let t = d.blind_index(b"value", bits);
            assert_eq!(t.len(), index_len(bits));
            let whole = (bits / 8) as usize;
            assert_eq!(&t[..whole], &full[..whole]);
            if bits % 8 != 0 {
                let mask = 0xffu8 << (8 - bits % 8);
                assert_eq!(t[whole], full[whole] & mask);
            }
        }
    }

    #[test]
    fn bits_ranges() {
        assert_eq!(check_index_bits(0), Err(Error::IndexBits));
        assert_eq!(check_index_bits(257), Err(Error::IndexBits));
        assert_eq!(check_index_bits(-8), Err(Error::IndexBits));
        assert_eq!(check_index_bits(1), Ok(1));
        assert_eq!(check_index_bits(256), Ok(256));
        assert_eq!(check_token_bits(7), Err(Error::TokenBits));
        assert_eq!(check_token_bits(33), Err(Error::TokenBits));
        assert_eq!(check_token_bits(32), Ok(32));
    }

    #[test]
    fn normalization() {
        let l = |s: &str| Normalize::Lower.apply(s).into_owned();
        assert_eq!(l("  Jane   DOE\t"), "jane doe");
        assert_eq!(l("jane doe"), "jane doe");
        assert!(matches!(Normalize::Lower.apply("jane doe"), Cow::Borrowed(_)));
        assert_eq!(l("Ｊａｎｅ\u{00a0}Ｄｏｅ"), "jane doe");
        assert_eq!(l("ÉCOLE\u{2003}ﬁne"), "école fine");
        assert_eq!(l("ΣΊΣΥΦΟΣ"), "σίσυφοσ");
        assert_eq!(l("\u{0b}x\u{0b}"), "x");
        assert_eq!(Normalize::None.apply(" A "), " A ");
        assert_eq!(Normalize::parse("upper"), Err(Error::UnknownNormalize));
    }

    #[test]
    fn trigram_windows_are_characters() {
        assert_eq!(trigrams("ab"), Vec::<&str>::new());
        assert_eq!(trigrams("abc"), vec!["abc"]);
        assert_eq!(trigrams("jöhn"), vec!["jöh", "öhn"]);
    }

    #[test]
    fn short_queries_are_refused_short_values_have_no_tokens() {
        let k = IndexKey::from_base64(KEY).unwrap();
        let mut d = k.derive(Kind::Tokens, b"ctx");
        assert_eq!(d.tokens("ab", 20), Vec::<i32>::new());
        assert_eq!(d.query_tokens("ab", 20), Err(Error::QueryTooShort));
        assert_eq!(d.query_tokens("öäü", 20).unwrap().len(), 1);
    }

    #[test]
    fn kinds_and_contexts_get_different_keys() {
        let k = IndexKey::from_base64(KEY).unwrap();
        let a = k.derive(Kind::Exact, b"public.clients.email").blind_index(b"x", 256);
        let b = k.derive(Kind::Exact, b"public.clients.email2").blind_index(b"x", 256);
        let c = k.derive(Kind::Tokens, b"public.clients.email").blind_index(b"x", 256);
        assert_ne!(a, b);
        assert_ne!(a, c);
    }

    #[test]
    fn errors_do_not_echo_the_key() {
        let msg = IndexKey::from_base64("c2VjcmV0LXZhbHVl").err().unwrap().to_string();
        assert!(!msg.contains("c2Vj"));
    }
}
