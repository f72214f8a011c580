//! One AES-256 key: parsing from base64, the cipher built from it, and a
//! fingerprint that identifies it without revealing it.

use aes_gcm::{Aes256Gcm, KeyInit};
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::error::{Error, Result};
use crate::mac::{hkdf_sha256, WipedMac};

/// HKDF info of the transport MAC key (see `Key::transport_mac`).
const TRANSPORT_DOMAIN: &[u8] = b"pazpaz_crypto transport v1";

pub const KEY_LEN: usize = 32;

/// A parsed key. The raw bytes are not kept: only the expanded cipher, wiped
/// on drop (see `WipedCipher`).
pub struct Key {
    cipher: WipedCipher,
    /// The MAC of the transport form of `encrypted_text` values made under
    /// this key (`encrypted_text::write_transport_text`), under a key derived
    /// from this one (HKDF, its own domain: never the AES key itself).
    transport: WipedMac,
    fingerprint: String,
}

/// An `Aes256Gcm` whose memory is entirely zeroed when it is dropped.
///
/// With aes-gcm 0.11 the `zeroize` features of `aes` and `polyval` already
/// wipe the AES round keys and the GHASH key H = AES_K(0). The earlier
/// runtime-dispatched POLYVAL (0.6) kept its state in a `ManuallyDrop` union
/// that was never dropped, leaving H in freed memory. So, whatever a backend
/// does, after the cipher's own drop every byte of it is overwritten here with
/// volatile writes (not elided as dead stores); it costs nothing per row.
/// tests/zeroize.rs checks the memory after a drop.
struct WipedCipher(std::mem::ManuallyDrop<Aes256Gcm>);

impl Drop for WipedCipher {
    #[allow(unsafe_code)]
    fn drop(&mut self) {
        let p = (&mut *self.0 as *mut Aes256Gcm).cast::<u8>();
        // SAFETY: the cipher is dropped exactly once, here; afterwards its
        // bytes are only written through a raw pointer, within its own
        // allocation, and never read as an `Aes256Gcm` again.
        unsafe {
            std::mem::ManuallyDrop::drop(&mut self.0);
            for i in 0..std::mem::size_of::<Aes256Gcm>() {
                std::ptr::write_volatile(p.add(i), 0u8);
            }
        }
        std::sync::atomic::compiler_fence(std::sync::atomic::Ordering::SeqCst);
    }
}

impl Key {
    /// Parses standard base64 (with padding) of exactly 32 bytes. Surrounding
    /// ASCII whitespace is ignored (keys are often read from files). Errors
    /// never contain the input.
    pub fn from_base64(text: &str) -> Result<Key> {
        Ok(Key::from_raw(&*decode_key_base64(text)?))
    }

    /// A key from its 32 raw bytes (an unwrapped data key, a KEK); the
    /// caller wipes its copy.
    pub fn from_raw(bytes: &[u8; KEY_LEN]) -> Key {
        Key::from_bytes(bytes)
    }

    fn from_bytes(bytes: &[u8]) -> Key {
        debug_assert_eq!(bytes.len(), KEY_LEN);
        let cipher = Aes256Gcm::new_from_slice(bytes).expect("length checked by the caller");
        let transport = WipedMac::new(&hkdf_sha256(bytes, &[TRANSPORT_DOMAIN])[..]);
        Key { cipher: WipedCipher(std::mem::ManuallyDrop::new(cipher)), transport, fingerprint: fingerprint(bytes) }
    }

    pub fn cipher(&self) -> &Aes256Gcm {
        &self.cipher.0
    }

    /// HMAC-SHA-256 of `secret ‖ data` under this key's transport MAC key.
    pub(crate) fn transport_mac(&self, secret: &[u8], data: &[u8]) -> [u8; 32] {
        let mut m = self.transport.stream();
        m.update(secret);
        m.update(data);
        self.transport.finish(m)
    }

    /// First 32 bits of a domain-separated SHA-256 of the key, as 8 hex digits:
    /// enough to tell keys apart in `encryption_status()`, far too little to
    /// help an attacker (and a hash, so not related to the GHASH key).
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }
}

/// Decodes standard base64 (with padding) of exactly 32 bytes into memory
/// that is wiped on drop; surrounding ASCII whitespace is ignored. Shared by
/// data keys and the index key (`blind_index.rs`). Errors never contain the
/// input.
pub fn decode_key_base64(text: &str) -> Result<Zeroizing<[u8; KEY_LEN]>> {
    let text = text.trim_matches(|c: char| c.is_ascii_whitespace());
    // Decode into a buffer that is wiped on drop, whatever happens next.
    let mut buf = Zeroizing::new(vec![0u8; text.len() / 4 * 3 + 3]);
    let n = STANDARD.decode_slice(text.as_bytes(), &mut buf[..]).map_err(|_| Error::KeyBase64)?;
    if n != KEY_LEN {
        return Err(Error::KeySize);
    }
    let mut key = Zeroizing::new([0u8; KEY_LEN]);
    key.copy_from_slice(&buf[..KEY_LEN]);
    Ok(key)
}

fn fingerprint(bytes: &[u8]) -> String {
    let mut h = Sha256::new();
    h.update(b"pazpaz_crypto key fingerprint v1\0");
    h.update(bytes);
    let d = h.finalize();
    d[..4].iter().map(|b| format!("{b:02x}")).collect()
}

/// 32 fresh bytes from the operating system's CSPRNG, wiped on drop.
pub fn generate_raw() -> Result<Zeroizing<[u8; KEY_LEN]>> {
    let mut bytes = Zeroizing::new([0u8; KEY_LEN]);
    getrandom::fill(&mut bytes[..]).map_err(|_| Error::Rng)?;
    Ok(bytes)
}

/// 32 fresh bytes from the operating system's CSPRNG, base64-encoded.
pub fn generate_base64() -> Result<Zeroizing<String>> {
    let bytes = generate_raw()?;
    Ok(Zeroizing::new(STANDARD.encode(&bytes[..])))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(n: usize) -> String {
        STANDARD.encode(vec![7u8; n])
    }

    #[test]
    fn accepts_32_bytes_and_whitespace() {
        assert!(Key::from_base64(&b64(32)).is_ok());
        assert!(Key::from_base64(&format!(" {}\n", b64(32))).is_ok());
    }

    #[test]
    fn rejects_wrong_sizes() {
        for n in [0, 1, 16, 31, 33, 64] {
            assert_eq!(Key::from_base64(&b64(n)).err(), Some(Error::KeySize), "{n} bytes");
        }
    }

    #[test]
    fn rejects_bad_base64() {
        for s in [
            "garbage!",
            "%%%%",
            "abc",
            "bMz1Y4AHud4S70SS7t8UyrpTbNpwEC5kGFbDbyOoiTE",
            "bMz1Y4AHud4S70SS7t8UyrpTbNpwEC5kGFbDbyOoiT==",
        ] {
            assert_eq!(Key::from_base64(s).err(), Some(Error::KeyBase64), "{s}");
        }
    }

    #[test]
    fn error_messages_do_not_echo_input() {
        let secret = "c2VjcmV0LXZhbHVlLXRoYXQtc2hvdWxkLW5vdC1sZWFr";
        let msg = Key::from_base64(secret).err().unwrap().to_string();
        assert!(!msg.contains(secret) && !msg.contains("c2Vj"));
    }

    #[test]
    fn fingerprint_is_short_and_stable() {
        let a = Key::from_base64(&b64(32)).unwrap();
        let b = Key::from_base64(&b64(32)).unwrap();
        assert_eq!(a.fingerprint(), b.fingerprint());
        assert_eq!(a.fingerprint().len(), 8);
        let c = Key::from_base64(&STANDARD.encode([8u8; 32])).unwrap();
        assert_ne!(a.fingerprint(), c.fingerprint());
    }

    #[test]
    fn generated_keys_parse_and_differ() {
        let a = generate_base64().unwrap();
        let b = generate_base64().unwrap();
        assert_ne!(*a, *b);
        assert!(Key::from_base64(&a).is_ok());
    }
}
