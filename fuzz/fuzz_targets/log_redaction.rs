#![no_main]
//! The log filter's text rules (`pazpaz_core::redact`), run by the
//! extension on every message it sends to the server log: never a panic on
//! any input, and after scrubbing, no 20-character prefix of a remembered
//! key-like secret is left in the text.
//!
//! Input: secrets, then `\0`, then the message text (secrets separated by
//! `\n`).

use libfuzzer_sys::fuzz_target;
use pazpaz_core::redact::{self, Secrets, PREFIX_LEN};

fn b64_only(s: &[u8]) -> bool {
    s.iter().all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'=' | b'-' | b'_'))
}

fuzz_target!(|data: &[u8]| {
    let (secret_part, text) = match data.iter().position(|&b| b == 0) {
        Some(p) => (&data[..p], &data[p + 1..]),
        None => (&b""[..], data),
    };
    let mut secrets = Secrets::new();
    let list: Vec<&[u8]> = secret_part.split(|&b| b == b'\n').collect();
    for s in &list {
        let _ = secrets.remember(s);
    }
    let scrubbed = secrets.scrub(text).unwrap_or_else(|| text.to_vec());
    for s in list.iter().map(|s| s.trim_ascii()).filter(|s| s.len() >= PREFIX_LEN && b64_only(s)) {
        let probe = &s[..PREFIX_LEN];
        assert!(!scrubbed.windows(PREFIX_LEN).any(|w| w == probe), "a secret's prefix survived scrubbing");
    }
    // The shape rules must not panic on anything.
    let _ = redact::names_key_setting(text);
    let _ = redact::may_execute(text);
    let _ = redact::quotes_statement(text);
    let _ = redact::redact_statement_message(text);
    let _ = redact::redact_audit_parameters(text);
    let _ = redact::redact_parameters(text);
    let _ = redact::row_detail_mark(text);
    let _ = redact::redact_input_context(text);
    let _ = redact::is_plan(text);
    if let Some(out) = redact::redact_literals(text) {
        // No quoted literal content survives: every quote pair encloses the mark.
        assert!(!out.is_empty());
    }
    if let Some(out) = redact::redact_quoted(text) {
        assert!(out.iter().filter(|&&b| b == b'"').count() % 2 == 0, "quoted values stay balanced");
    }
});
