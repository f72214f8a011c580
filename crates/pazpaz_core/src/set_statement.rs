//! The text of a `SET` of a key setting as other extensions see it.
//!
//! PostgreSQL hands each utility statement's source text to every
//! `ProcessUtility` hook: pg_stat_statements stores it (a literal SET of a
//! key, verbatim, readable by pg_read_all_stats), pgaudit logs it. The
//! extension passes them a copy in which the value is masked, the same length
//! as the original, so that the offsets PostgreSQL gives the hooks
//! (`stmt_location`, `stmt_len`) still delimit the statement.

/// Masks, in place, everything of one statement's text from its first quote
/// character (`'`, `"`, `$`: a string constant, a quoted identifier, a
/// dollar-quoted string) to its end, with `x`. A key, a wrapped key and a
/// keyring can only be written quoted (base64 padding, `:` and JSON need it),
/// so the value is always inside the masked part; a quoted setting name is
/// masked too, which fails closed.
pub fn mask_value(stmt: &mut [u8]) {
    if let Some(first) = stmt.iter().position(|&b| b == b'\'' || b == b'"' || b == b'$') {
        stmt[first..].fill(b'x');
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn masked(s: &str) -> String {
        let mut b = s.as_bytes().to_vec();
        mask_value(&mut b);
        String::from_utf8(b).unwrap()
    }

    #[test]
    fn masks_the_value_and_keeps_the_length() {
        let k = "SET LOCAL pazpaz.encryption_keys = '{\"v1\": \"pzw1:k1:AAAA\"}'";
        let m = masked(k);
        assert_eq!(m.len(), k.len());
        assert_eq!(m, format!("SET LOCAL pazpaz.encryption_keys = {}", "x".repeat(k.len() - 35)));
        assert_eq!(masked("SET pazpaz.index_key TO E'a\\'b'"), "SET pazpaz.index_key TO Exxxxxx");
        assert_eq!(masked("SET \"pazpaz\".encryption_key = 'k'"), format!("SET {}", "x".repeat(29)));
        assert_eq!(masked("SET pazpaz.encryption_key = $$k$$"), "SET pazpaz.encryption_key = xxxxx");
        assert_eq!(masked("RESET pazpaz.encryption_key"), "RESET pazpaz.encryption_key");
        // Multi-byte characters become single bytes each: still valid UTF-8.
        assert_eq!(masked("SET pazpaz.encryption_key = 'é'"), "SET pazpaz.encryption_key = xxxx");
    }
}
