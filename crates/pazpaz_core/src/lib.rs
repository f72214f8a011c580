//! Pure core of `pazpaz_crypto`: AES-256-GCM field formats, the `encrypted_text`
//! envelope, key and keyring parsing, and the nonce generator.
//!
//! Nothing here knows about PostgreSQL, so every rule can be tested with plain
//! `cargo test` and fuzzed. The pgrx glue in the extension crate only moves bytes
//! between Postgres datums and these functions.
//!
//! ```
//! use pazpaz_core::{field, keyring::Keyring, nonce::NonceRng};
//! // the public test vector key v1 (tests/vectors/field_vectors.json)
//! let ring = Keyring::from_single_key("bMz1Y4AHud4S70SS7t8UyrpTbNpwEC5kGFbDbyOoiTE=").unwrap(); // test vector
//! let mut rng = NonceRng::new();
//! let key = ring.current().unwrap();
//! let nonce = rng.nonce(std::process::id()).unwrap();
//! let ct = field::encrypt(key.cipher(), &nonce, b"John Doe", b"").unwrap();
//! assert_eq!(ct.len(), 8 + field::OVERHEAD);
//! assert_eq!(field::decrypt(key.cipher(), &ct, b"").unwrap(), b"John Doe");
//! ```
#![deny(unsafe_code)]

pub mod envelope;
pub mod error;
pub mod field;
pub mod jsonb;
pub mod key;
pub mod keyring;
pub mod nonce;
pub mod redact;
pub mod versioned;

pub use aes_gcm::Aes256Gcm as Cipher;
pub use error::Error;
