//! Tests that need the inside of a backend (the key cache, the nonce
//! generator's process tag). Behaviour seen by users is tested by the SQL
//! regression suite in tests/pg_regress.

#[pgrx::pg_schema]
mod tests {
    use pgrx::prelude::*;

    use crate::keys;


    const K1: &str = "bMz1Y4AHud4S70SS7t8UyrpTbNpwEC5kGFbDbyOoiTE=";
    const K2: &str = "Z/TsZIiTccYEKunb7MB/oeQGL2uW5CyHQnwYj9xtvEU=";

    fn run(sql: &str) {
        Spi::run(sql).expect(sql);
    }

    fn text(sql: &str) -> Option<String> {
        Spi::get_one::<String>(sql).expect(sql)
    }

    #[pg_test]
    fn keyring_is_parsed_once_and_dropped_on_every_change() {
        run(&format!("SET pazpaz.encryption_key = '{K1}'"));
        assert!(!keys::is_cached(), "a SET must not leave a parsed key behind");
        assert_eq!(text("SELECT decrypt_field(encrypt_field('x'))").as_deref(), Some("x"));
        assert!(keys::is_cached(), "first use parses and caches");
        let first = keys::keyring().map(|r| std::rc::Rc::as_ptr(&r) as usize).unwrap();
        text("SELECT decrypt_field(encrypt_field('y'))");
        let again = keys::keyring().map(|r| std::rc::Rc::as_ptr(&r) as usize).unwrap();
        assert_eq!(first, again, "no re-parse without a change");

        run(&format!("SET pazpaz.encryption_key = '{K2}'"));
        assert!(!keys::is_cached(), "SET drops (and so zeroizes) the cached key");
        text("SELECT encrypt_field('x')::text");
        assert!(keys::is_cached());
        run("RESET pazpaz.encryption_key");
        assert!(!keys::is_cached(), "RESET drops the cached key");
        run(&format!("SET pazpaz.encryption_keys = '{{\"v1\": \"{K1}\"}}'"));
        text("SELECT encrypt_field('x')::text");
        assert!(keys::is_cached());
        run("RESET ALL");
        assert!(!keys::is_cached(), "RESET ALL (and so DISCARD ALL) drops the cached key");
    }

    #[pg_test(error = "No encryption key is set: set pazpaz.encryption_key (or pazpaz.encryption_keys and pazpaz.encryption_key_version) for this session")]
    fn no_key_after_reset() {
        run(&format!("SET pazpaz.encryption_key = '{K1}'"));
        run("RESET ALL");
        text("SELECT encrypt_field('x')::text");
    }

    #[pg_test]
    fn set_local_is_undone_at_transaction_end() {
        // pg_test bodies run inside one transaction; a subtransaction's SET LOCAL
        // ends with it, and the assign hook drops the cache then as well.
        run(&format!("SET pazpaz.encryption_key = '{K1}'"));
        let fp1 = text("SELECT fingerprint FROM encryption_status()");
        run(&format!("SELECT set_config('pazpaz.encryption_key', '{K2}', true)"));
        let fp2 = text("SELECT fingerprint FROM encryption_status()");
        assert_ne!(fp1, fp2);
        assert!(keys::is_cached());
    }

    #[pg_test]
    fn nonce_generator_is_tagged_with_this_backend() {
        let a = keys::nonce().unwrap();
        let b = keys::nonce().unwrap();
        assert_ne!(a, b);
    }

    #[pg_test]
    fn decrypts_every_known_answer_vector() {
        let v: serde_json::Value = serde_json::from_str(include_str!("../tests/vectors/field_vectors.json")).unwrap();
        let ring = v["keys_base64"].to_string();
        Spi::run_with_args("SELECT set_config('pazpaz.encryption_keys', $1, false)", &[ring.as_str().into()]).unwrap();
        for t in v["vectors"].as_array().unwrap() {
            let want = t["plaintext"].as_str().unwrap();
            let env = t["envelope"].to_string();
            let got: Option<String> =
                Spi::get_one_with_args("SELECT decrypt_field_versioned($1::jsonb)", &[env.as_str().into()]).unwrap();
            assert_eq!(got.as_deref(), Some(want));
            let ver = t["key_version"].as_str().unwrap();
            Spi::run_with_args("SELECT set_config('pazpaz.encryption_key_version', $1, false)", &[ver.into()]).unwrap();
            let hex = t["bytea_hex"].as_str().unwrap();
            let got: Option<String> = Spi::get_one_with_args(
                "SELECT decrypt_field(decode($1, 'hex'))",
                &[hex.into()],
            )
            .unwrap();
            assert_eq!(got.as_deref(), Some(want));
        }
    }

    #[pg_test]
    fn built_envelopes_are_byte_identical_to_jsonb_input() {
        use pazpaz_core::{jsonb, versioned};
        let long_name = "a".repeat(64);
        let cases = [("v1", 28usize), ("v2", 29), ("key-2026.1", 30), ("x", 128), (long_name.as_str(), 5000)];
        for (version, len) in cases {
            let sealed: Vec<u8> = (0..len).map(|i| (i * 7 + 3) as u8).collect();
            let mut built = vec![0u8; jsonb::envelope_size(version, len)];
            jsonb::write_envelope(&mut built, version, &sealed).unwrap();
            let text = format!(r#"{{"version": "{version}", "ciphertext": "{}"}}"#, versioned::encode_ciphertext(&sealed));
            let c = std::ffi::CString::new(text).unwrap();
            let parsed = unsafe {
                let d = pg_sys::OidInputFunctionCall(pg_sys::Oid::from(pg_sys::F_JSONB_IN), c.as_ptr().cast_mut(), pg_sys::JSONBOID, -1);
                pgrx::varlena::varlena_to_byte_slice(d.cast_mut_ptr::<pg_sys::varlena>()).to_vec()
            };
            assert_eq!(parsed, built, "version {version}, {len} bytes");
        }
    }
}
