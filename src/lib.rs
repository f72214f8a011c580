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

/// The x86_64 build uses AES-NI, PCLMULQDQ and AVX unconditionally (.cargo/config.toml):
/// refuse to load on a CPU without them rather than fault on the first key.
fn require_cpu_features() {
    #[cfg(target_arch = "x86_64")]
    {
        let ok = std::arch::is_x86_feature_detected!("aes")
            && std::arch::is_x86_feature_detected!("pclmulqdq")
            && std::arch::is_x86_feature_detected!("ssse3")
            && std::arch::is_x86_feature_detected!("sse4.1")
            && std::arch::is_x86_feature_detected!("avx");
        if !ok {
            ereport!(
                ERROR,
                PgSqlErrorCode::ERRCODE_FEATURE_NOT_SUPPORTED,
                "pazpaz_crypto needs a CPU with AES-NI, PCLMULQDQ and AVX (x86_64 since 2011)",
                "Build it without the target features in .cargo/config.toml to use the portable code."
            );
        }
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
