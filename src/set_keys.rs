//! `set_keys(…)`: the session's key settings in one call that parameter-
//! binding drivers can make (`SELECT set_keys($1, $2, $3, true)`), and that
//! Citus forwards to every node of the transaction.
//!
//! Citus forwards a setting to the workers only as the text of a `SET LOCAL`
//! statement run inside a transaction block (with
//! `citus.propagate_set_commands = 'local'`); a `set_config()` call never
//! reaches them. So each setting is made by a `SET LOCAL` (or `SET`) run
//! through SPI, with the value as a quoted literal. That text is what the
//! workers receive and log, and their log filter redacts it like any
//! key-setting statement; with wrapped keys it holds only wrapped forms.

use std::ffi::CStr;

use pgrx::prelude::*;
use zeroize::Zeroizing;

use crate::distributed::citus_is_loaded;
use crate::error::OrRaise;
use crate::gucs;

/// Runs `SET [LOCAL] name = 'value'` through SPI. The statement text is
/// wiped after use (SPI's own copies live in its memory contexts until the
/// statement ends, as any statement text does).
fn set(name: &CStr, value: &str, local: bool) {
    let _forwarded = crate::ddl_guard::ForwardedSet::begin();
    let quoted = quote_literal(value);
    let mut stmt = Zeroizing::new(String::with_capacity(quoted.len() + 64));
    stmt.push_str(if local { "SET LOCAL " } else { "SET " });
    stmt.push_str(name.to_str().expect("setting names are ASCII"));
    stmt.push_str(" = ");
    stmt.push_str(&quoted);
    Spi::run(&stmt).unwrap_or_else(|e| pgrx::error!("{e}"));
}

/// A SQL string literal of `value` (as quote_literal: doubled quotes, and an
/// E'' form with doubled backslashes when there are backslashes), in memory
/// that is wiped on drop.
fn quote_literal(value: &str) -> Zeroizing<String> {
    let mut out = Zeroizing::new(String::with_capacity(value.len() + 3));
    if value.contains('\\') {
        out.push('E');
    }
    out.push('\'');
    for c in value.chars() {
        match c {
            '\'' => out.push_str("''"),
            '\\' => out.push_str("\\\\"),
            c => out.push(c),
        }
    }
    out.push('\'');
    out
}

/// A fresh transport secret for this transaction and its nodes (see
/// `gucs::TRANSPORT`): transport forms made in it verify nowhere else.
fn new_transport_secret() {
    let raw = pazpaz_core::data_key::generate_base64().or_raise();
    set(gucs::TRANSPORT, &raw, true);
}

/// Sets the data-key settings (and the index key) of this session, or with
/// `is_local` of this transaction only. A NULL argument leaves its setting
/// as it is; '' unsets it (the values of the client package's
/// `key_settings`). With Citus loaded and `is_local`, the settings are
/// forwarded to every node the transaction uses (this also turns on
/// `citus.propagate_set_commands = 'local'` for the transaction).
#[pg_extern(volatile, parallel_unsafe, requires = ["encrypted_text_type"])]
fn set_keys(
    encryption_key: Option<&str>,
    encryption_keys: Option<&str>,
    key_version: Option<&str>,
    is_local: default!(bool, false),
    index_key: default!(Option<&str>, "NULL"),
) {
    if is_local && citus_is_loaded() {
        set(c"citus.propagate_set_commands", "local", true);
        new_transport_secret();
    }
    // The key and the keyring first cleared, then set: the extension refuses
    // both at once, and a keyring replacing a key (or the other way round)
    // would otherwise pass through that state.
    for (name, value) in [(gucs::KEY, encryption_key), (gucs::KEYS, encryption_keys)] {
        if value.is_some() {
            set(name, "", is_local);
        }
    }
    for (name, value) in [
        (gucs::KEY_VERSION, key_version),
        (gucs::KEY, encryption_key),
        (gucs::KEYS, encryption_keys),
        (gucs::INDEX_KEY, index_key),
    ] {
        if let Some(v) = value {
            if !v.is_empty() {
                set(name, v, is_local);
            }
        }
    }
}

/// Sets, for this transaction and every Citus node it uses, the key
/// settings this session has now (rotate_column on a distributed table runs
/// one transaction per batch, and a worker knows only what the transaction
/// told it). No effect without Citus. Returns nothing: no value leaves.
#[pg_extern(volatile, parallel_unsafe, requires = ["encrypted_text_type"])]
fn forward_keys() {
    if !citus_is_loaded() {
        return;
    }
    set(c"citus.propagate_set_commands", "local", true);
    new_transport_secret();
    for name in [gucs::KEY, gucs::KEYS, gucs::KEY_VERSION, gucs::INDEX_KEY, gucs::INDEX_KEY_NEXT] {
        // SAFETY: GetConfigOption returns the setting's own current value
        // (NULL never for a defined setting), valid until it next changes;
        // it is copied (into wiped memory) before the SET below changes it.
        let value = unsafe {
            let p = pgrx::pg_sys::GetConfigOption(name.as_ptr(), true, false);
            if p.is_null() {
                continue;
            }
            Zeroizing::new(CStr::from_ptr(p).to_bytes().to_vec())
        };
        if value.is_empty() {
            continue;
        }
        let Ok(text) = std::str::from_utf8(&value) else { continue };
        set(name, text, true);
    }
}
