//! Pure core of `pazpaz_crypto`: the three byte formats (`field`: format 1;
//! `versioned` and its binary jsonb layout `jsonb`: format 2;
//! `encrypted_text`: format 3, the type's stored value and its text form),
//! data key and keyring parsing, wrapped data keys and the server's
//! key-encryption keys (`wrapped_key`), the nonce generator, the log
//! filter's text rules, and the blind indexes and match tokens of search
//! (`blind_index`).
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

pub mod blind_index;
pub mod data_key;
pub mod encrypted_text;
pub mod error;
pub mod field;
pub mod jsonb;
pub mod keyring;
mod mac;
pub mod nonce;
pub mod redact;
pub mod set_statement;
pub mod versioned;
pub mod wrapped_key;

pub use aes_gcm::Aes256Gcm as Cipher;
pub use error::Error;
