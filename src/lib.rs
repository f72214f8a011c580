//! `pazpaz_crypto`: AES-256-GCM field encryption inside PostgreSQL.
//!
//! The cryptography, formats and key parsing live in the pure `pazpaz_core`
//! crate; this crate is the PostgreSQL glue:
//!
//! - `gucs.rs`: every setting, its check/assign/show hooks (knows nothing of
//!   the key cache: a key change calls the hook `key_cache.rs` registered)
//! - `key_cache.rs`: the session's keyring, parsed once per key change; the
//!   exit wipe; replanning after a key change
//! - `nonces.rs`: the per-process nonce generator
//! - `error.rs`: core errors → SQLSTATEs, in one place
//! - `field_functions.rs`: `encrypt_field`/`decrypt_field` (format 1)
//! - `versioned.rs`: the `jsonb` envelope functions (format 2)
//! - `encrypted_text.rs`: the `encrypted_text` type (format 3)
//! - `status.rs`: `generate_encryption_key()`, `encryption_status()`
//! - `index_keys.rs`: the session's index keys of search, parsed once per
//!   change, and the keys derived from them per context
//! - `search.rs`: blind indexes, match tokens, the trigger that maintains
//!   them, and the lookups by index (procedures in `sql/search.sql`)
//! - `distributed.rs`: Citus: when a value is written as text for another
//!   node; `citus_lookups.rs`: lookups' tokens computed on the coordinator
//! - `kek.rs`: the server's key-encryption keys, loaded by the postmaster
//! - `key_wrapping.rs`: `generate_wrapped_encryption_key()`,
//!   `wrap_encryption_key()`, `rewrap_encryption_key()`, `kek_status()`
//! - `log_filter.rs`: keeps keys and decrypted values out of the server log
//!   (rules in `pazpaz_core::redact`), on top of other log hooks
//! - `log_secrets.rs`: the key strings the filter scrubs by value
//! - `ddl_guard.rs`: refuses DDL that would store plaintext or freeze an
//!   envelope (defaults, indexes, statistics, views)
//! - `varlena.rs`: zero-copy arguments, results built in place
//! - `backend_local.rs`: per-backend state without thread-local storage
//! - `cpu_check.c`: the load-time CPU check, in C for baseline x86-64
//! - `sql/*.sql`: hand-written SQL (UTF8 check, casts, rotation procedure,
//!   comments)

use pgrx::prelude::*;

::pgrx::pg_module_magic!(name, version);

mod backend_local;
mod citus_lookups;
mod ddl_guard;
mod distributed;
mod encrypted_text;
mod error;
mod field_functions;
mod gucs;
mod index_keys;
mod inheritance;
mod kek;
mod key_cache;
mod key_wrapping;
mod log_filter;
mod log_secrets;
mod nonces;
mod rotation;
mod search;
mod set_keys;
mod status;
mod varlena;
mod versioned;

#[cfg(any(test, feature = "pg_test"))]
mod tests;

/// The library's entry point. Not `#[pg_guard]`, so that the CPU check is the
/// first code of ours that runs: it is C compiled for any x86_64 CPU
/// (src/cpu_check.c), because the Rust code, pgrx's guard included, is
/// compiled for the build's CPU and may use instructions this one lacks.
/// (PostgreSQL calls pgrx's `Pg_magic_func` before this: plain code.)
/// tests/python/test_cpu_check.py disassembles all three. The check raises
/// its ERROR with a longjmp over this frame only, which holds nothing to drop.
#[no_mangle]
pub extern "C" fn _PG_init() {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: plain C with no arguments, compiled for baseline x86_64; it
    // returns, or raises PostgreSQL's ERROR over a frame with nothing to drop.
    unsafe {
        pazpaz_require_cpu_features()
    };
    init();
}

#[cfg(target_arch = "x86_64")]
extern "C" {
    fn pazpaz_require_cpu_features();
}

#[pg_guard]
extern "C-unwind" fn init() {
    // Before the settings exist: defining them assigns values set earlier.
    key_cache::init();
    index_keys::init();
    gucs::init();
    // Before the key-encryption keys are read: the server's FATAL report of
    // a bad ring (or a command's output that stray messages quote) passes
    // through the filter, which scrubs every spelling of the ring's text and
    // keys (`kek.rs` remembers them before parsing).
    log_filter::init();
    // In the postmaster only (preloading): reads the key-encryption keys,
    // or stops the server with the reason.
    kek::load_at_server_start();
    ddl_guard::init();
    distributed::init();
}

extension_sql_file!("../sql/require_utf8.sql", name = "require_utf8", bootstrap);
extension_sql_file!(
    "../sql/rotation.sql",
    name = "rotation",
    requires = [
        "encrypted_text_casts",
        status::encryption_status,
        versioned::reencrypt_field_versioned_to,
        versioned::key_version_jsonb,
        versioned::verify_field_versioned,
        rotation::take_mislabelled_count,
        rotation::rotation_write_xid,
        search::blind_index_trigger,
        encrypted_text::reencrypt_to_version,
        encrypted_text::key_version_encrypted_text
    ]
);
extension_sql_file!(
    "../sql/search.sql",
    name = "search",
    requires = [
        "encrypted_text_casts",
        search::blind_index_with_key,
        search::blind_tokens_with_key,
        search::search_index_check,
        search::blind_index_trigger,
        search::blind_index_for,
        search::blind_search_tokens_for,
        search::search_backfill_exact,
        search::search_backfill_match,
        "rotation",
        field_functions::decrypt_field,
        versioned::decrypt_field_versioned,
        encrypted_text::encrypted_text_to_text
    ]
);
extension_sql_file!(
    "../sql/key_wrapping.sql",
    name = "key_wrapping",
    requires = [
        key_wrapping::generate_wrapped_encryption_key,
        key_wrapping::generate_wrapped_encryption_key_under,
        key_wrapping::wrap_encryption_key,
        key_wrapping::wrap_encryption_key_under,
        key_wrapping::rewrap_encryption_key,
        key_wrapping::rewrap_encryption_key_under,
        key_wrapping::kek_status
    ]
);
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
