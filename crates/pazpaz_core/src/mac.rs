//! HMAC-SHA-256 and HKDF-SHA-256 on precomputed SHA-256 states, with every
//! key-derived state wiped on drop: the MACs of search (`blind_index`) and
//! of the transport form of `encrypted_text` (`encrypted_text`).

use std::ops::{Deref, DerefMut};

use sha2::digest::generic_array::GenericArray;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

/// Zeroes `buf` with ordinary (wide) stores that the compiler cannot drop as
/// dead: the empty asm block below is handed the buffer and may read it.
/// `zeroize` writes arrays a byte at a time (volatile), which for the 200-odd
/// bytes a MAC wipes cost a third of a blind index, and 28 times that for the
/// match tokens of a 30-byte value.
#[inline(always)]
pub(crate) fn wipe<T: Copy + Default>(buf: &mut [T]) {
    buf.fill(T::default());
    // The asm only takes the buffer's address; without `nomem` the compiler
    // must assume it reads the zeroed bytes, so the fill is done before it.
    #[allow(unsafe_code)]
    // SAFETY: an empty asm block: it reads and writes nothing, keeps the stack and flags.
    unsafe {
        std::arch::asm!("/* {0} */", in(reg) buf.as_ptr(), options(nostack, preserves_flags, readonly))
    };
}

/// A fixed-size buffer wiped (`wipe`) when dropped, unwinding included: the
/// key-derived states and value bytes of a MAC.
pub(crate) struct Wiped<T: Copy + Default, const N: usize>(pub(crate) [T; N]);

impl<T: Copy + Default, const N: usize> Drop for Wiped<T, N> {
    fn drop(&mut self) {
        wipe(&mut self.0);
    }
}

impl<T: Copy + Default, const N: usize> Deref for Wiped<T, N> {
    type Target = [T; N];
    fn deref(&self) -> &[T; N] {
        &self.0
    }
}

impl<T: Copy + Default, const N: usize> DerefMut for Wiped<T, N> {
    fn deref_mut(&mut self) -> &mut [T; N] {
        &mut self.0
    }
}

/// HMAC-SHA-256 with its key schedule precomputed: the SHA-256 states after
/// the inner and outer padded key blocks (as good as the key; zeroed on
/// drop). A MAC of a short value then costs two compressions, with no
/// per-value setup; built on `sha2::compress256` directly (the `hmac` crate's
/// buffered path cost some fifty times that here).
pub(crate) struct WipedMac {
    inner: [u32; 8],
    outer: [u32; 8],
}

const SHA256_IV: [u32; 8] =
    [0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19];

impl WipedMac {
    pub(crate) fn new(key: &[u8]) -> WipedMac {
        let mut k = Wiped([0u8; 64]);
        if key.len() > 64 {
            k[..32].copy_from_slice(&Sha256::digest(key));
        } else {
            k[..key.len()].copy_from_slice(key);
        }
        let mut pad = Wiped([0u8; 64]);
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
    pub(crate) fn mac(&self, data: &[u8]) -> [u8; 32] {
        let mut st = Wiped(self.inner);
        let inner = Wiped(finish(&mut st, data));
        let mut st = Wiped(self.outer);
        finish(&mut st, &inner[..])
    }
}

impl WipedMac {
    /// An HMAC computation to feed piece by piece (`finish` ends it).
    pub(crate) fn stream(&self) -> MacStream {
        MacStream { state: Wiped(self.inner), buf: Wiped([0u8; 64]), used: 0, len: 0 }
    }

    /// The HMAC of everything fed to `m`.
    pub(crate) fn finish(&self, mut m: MacStream) -> [u8; 32] {
        let mut last = Wiped([0u8; 128]);
        last[..m.used].copy_from_slice(&m.buf[..m.used]);
        last[m.used] = 0x80;
        let n = if m.used < 56 { 64 } else { 128 };
        let bits = (64 + m.len) * 8;
        last[n - 8..n].copy_from_slice(&bits.to_be_bytes());
        compress_blocks(&mut m.state, &last[..n]);
        let mut inner = Wiped([0u8; 32]);
        for (o, w) in inner.chunks_exact_mut(4).zip(m.state.iter()) {
            o.copy_from_slice(&w.to_be_bytes());
        }
        let mut st = Wiped(self.outer);
        finish(&mut st, &inner[..])
    }
}

/// The inner hash of an HMAC being fed: the SHA-256 state after the padded
/// key and the whole blocks so far, and the partial block (wiped on drop).
pub(crate) struct MacStream {
    state: Wiped<u32, 8>,
    buf: Wiped<u8, 64>,
    used: usize,
    /// Bytes fed so far.
    len: u64,
}

impl MacStream {
    pub(crate) fn update(&mut self, mut data: &[u8]) {
        self.len += data.len() as u64;
        if self.used > 0 {
            let take = (64 - self.used).min(data.len());
            self.buf[self.used..self.used + take].copy_from_slice(&data[..take]);
            self.used += take;
            data = &data[take..];
            if self.used < 64 {
                return;
            }
            compress_blocks(&mut self.state, &self.buf[..]);
            self.used = 0;
        }
        let whole = data.len() - data.len() % 64;
        if whole > 0 {
            compress_blocks(&mut self.state, &data[..whole]);
        }
        let rem = &data[whole..];
        self.buf[..rem.len()].copy_from_slice(rem);
        self.used = rem.len();
    }
}

impl Drop for WipedMac {
    fn drop(&mut self) {
        wipe(&mut self.inner);
        wipe(&mut self.outer);
    }
}

/// Runs SHA-256 compressions over whole 64-byte blocks.
///
/// Never inlined: `sha2`'s SHA-NI code is legacy-SSE encoded, and inlined
/// among the AVX code around it (the crate is built for the CPU, with AVX),
/// a MAC of a short value took 6 µs instead of 0.3 µs on an AMD EPYC (the
/// SSE/AVX transition on every SHA instruction). A call of its own starts
/// with the upper vector halves clean.
#[inline(never)]
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
    let mut last = Wiped([0u8; 128]);
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
pub(crate) fn hkdf_sha256(ikm: &[u8], info: &[&[u8]]) -> Zeroizing<[u8; 32]> {
    let prk = Zeroizing::new(WipedMac::new(&[0u8; 32]).mac(ikm));
    let mut message = Zeroizing::new(info.concat());
    message.push(1);
    Zeroizing::new(WipedMac::new(&prk[..]).mac(&message))
}
