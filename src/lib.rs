//! `pazpaz_crypto`: AES-256-GCM field encryption inside PostgreSQL.
//!
//! The cryptography, formats and key parsing live in the pure `pazpaz_core`
//! crate; this crate is the PostgreSQL glue:
//!
//! - `gucs.rs`: the key settings, their check/assign/show hooks
//! - `keys.rs`: the per-backend keyring cache and the nonce generator
//! - `error.rs`: core errors → SQLSTATEs, in one place
//! - `field_functions.rs`: `encrypt_field`/`decrypt_field` (format 1)
//! - `versioned.rs`: the `jsonb` envelope functions (format 2)
//! - `encrypted_text.rs`: the `encrypted_text` type (format 3)
//! - `status.rs`: `generate_encryption_key()`, `encryption_status()`
//! - `log_filter.rs`: keeps keys and decrypted values out of the server log
//! - `sql/*.sql`: hand-written SQL (casts, rotation procedure, comments)

use pgrx::prelude::*;

::pgrx::pg_module_magic!(name, version);

mod backend_local;
mod encrypted_text;
mod error;
mod field_functions;
mod gucs;
mod keys;
mod log_filter;
mod status;
mod varlena;
mod versioned;

#[cfg(any(test, feature = "pg_test"))]
mod tests;

#[pg_guard]
pub extern "C-unwind" fn _PG_init() {
    require_cpu_features();
    gucs::init();
    keys::init();
    log_filter::init();
}

/// Builds are compiled for a CPU (the build machine's own, or the portable
/// x86_64 set in scripts/package.sh; see .cargo/config.toml). A library copied
/// to a CPU that lacks one of those features would fault on the first key and
/// take the server through crash recovery: refuse to load instead, naming
/// what is missing (see `pazpaz_core::cpu`).
fn require_cpu_features() {
    let missing = pazpaz_core::cpu::missing_features();
    if !missing.is_empty() {
        error::raise_cpu_features_missing(&missing);
    }
}

extension_sql_file!("../sql/rotation.sql", name = "rotation", requires = [
        "encrypted_text_casts",
        status::encryption_status,
        versioned::reencrypt_field_versioned_to,
        versioned::key_version_jsonb,
        encrypted_text::reencrypt_to_version,
        encrypted_text::key_version_encrypted_text
    ]);
extension_sql_file!("../sql/comments.sql", name = "comments", finalize);

/// Required by `cargo pgrx test`.
#[cfg(test)]
pub mod pg_test {
    pub fn setup(_options: Vec<&str>) {}

    #[must_use]
    pub fn postgresql_conf_options() -> Vec<&'static str> {
        // The production setup: the library preloaded in every backend.
        vec!["shared_preload_libraries = 'pazpaz_crypto'"]
    }
}
