//! Tests that need the inside of a backend (the key cache, the nonce
//! generator's process tag). Behaviour seen by users is tested by the SQL
//! regression suite in tests/pg_regress.

#[pgrx::pg_schema]
mod tests {
    use pgrx::prelude::*;

    use crate::index_keys;
    use crate::key_cache;
    use crate::nonces;

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
        assert!(!key_cache::is_cached(), "a SET must not leave a parsed key behind");
        assert_eq!(text("SELECT decrypt_field(encrypt_field('x'))").as_deref(), Some("x"));
        assert!(key_cache::is_cached(), "first use parses and caches");
        let first = key_cache::keyring().map(|r| std::rc::Rc::as_ptr(&r) as usize).unwrap();
        text("SELECT decrypt_field(encrypt_field('y'))");
        let again = key_cache::keyring().map(|r| std::rc::Rc::as_ptr(&r) as usize).unwrap();
        assert_eq!(first, again, "no re-parse without a change");

        run(&format!("SET pazpaz.encryption_key = '{K2}'"));
        assert!(!key_cache::is_cached(), "SET drops (and so zeroizes) the cached key");
        text("SELECT encrypt_field('x')::text");
        assert!(key_cache::is_cached());
        run("RESET pazpaz.encryption_key");
        assert!(!key_cache::is_cached(), "RESET drops the cached key");
        run(&format!("SET pazpaz.encryption_keys = '{{\"v1\": \"{K1}\"}}'"));
        text("SELECT encrypt_field('x')::text");
        assert!(key_cache::is_cached());
        run("RESET ALL");
        assert!(!key_cache::is_cached(), "RESET ALL (and so DISCARD ALL) drops the cached key");
    }

    #[pg_test]
    fn index_key_is_parsed_once_and_dropped_on_every_change() {
        run(&format!("SET pazpaz.index_key = '{K1}'"));
        assert!(!index_keys::is_cached(), "a SET must not leave a parsed index key behind");
        text("SELECT encode(blind_index('x', 'ctx'), 'hex')");
        assert!(index_keys::is_cached(), "first use parses and caches");
        run(&format!("SET pazpaz.index_key_next = '{K2}'"));
        assert!(!index_keys::is_cached(), "a change of the next key drops both");
        text("SELECT encode(blind_index('x', 'ctx'), 'hex')");
        run("RESET pazpaz.index_key");
        assert!(!index_keys::is_cached(), "RESET drops the parsed keys");
        text("SELECT count(*)::text FROM index_key_status()");
        assert!(index_keys::is_cached());
        run("RESET ALL");
        assert!(!index_keys::is_cached(), "RESET ALL (and so DISCARD ALL) drops them");
    }

    #[pg_test]
    fn each_backend_registers_its_own_exit_wipe() {
        // The postmaster's on_proc_exit list is discarded in every child, so a
        // registration in _PG_init (postmaster, library preloaded) would
        // never run; the first key change in this backend registers it here.
        run(&format!("SET pazpaz.encryption_key = '{K1}'"));
        assert!(key_cache::exit_wipe_registered());
    }

    #[pg_test]
    fn a_key_change_replans_cached_encrypted_text_literals() {
        run(&format!("SET pazpaz.encryption_keys = '{{\"v1\": \"{K1}\", \"v2\": \"{K2}\"}}'"));
        run("SET pazpaz.encryption_key_version = 'v1'");
        run("CREATE TEMP TABLE lit (c encrypted_text)");
        run("PREPARE ins AS INSERT INTO lit VALUES ('same literal')");
        run("EXECUTE ins");
        run("SET pazpaz.encryption_key_version = 'v2'");
        run("EXECUTE ins");
        assert_eq!(
            text("SELECT string_agg(key_version(c), ',' ORDER BY key_version(c)) FROM lit").as_deref(),
            Some("v1,v2"),
            "the cached plan's literal is encrypted again under the new write key"
        );
    }

    #[pg_test(
        error = "No encryption key is set: set pazpaz.encryption_key (or pazpaz.encryption_keys and pazpaz.encryption_key_version) for this session"
    )]
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
        assert!(key_cache::is_cached());
    }

    #[pg_test]
    fn nonce_generator_is_tagged_with_this_backend() {
        let a = nonces::next().unwrap();
        let b = nonces::next().unwrap();
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
            let got: Option<String> =
                Spi::get_one_with_args("SELECT decrypt_field(decode($1, 'hex'))", &[hex.into()]).unwrap();
            assert_eq!(got.as_deref(), Some(want));
        }
    }

    /// The container bytes (after the varlena header) PostgreSQL's jsonb
    /// input builds for `text`.
    fn jsonb_in(text: &str) -> Vec<u8> {
        let c = std::ffi::CString::new(text).unwrap();
        // SAFETY: jsonb_in on a NUL-terminated string returns a jsonb
        // varlena datum (or raises); it is read and copied at once.
        unsafe {
            let d = pg_sys::OidInputFunctionCall(
                pg_sys::Oid::from(pg_sys::F_JSONB_IN),
                c.as_ptr().cast_mut(),
                pg_sys::JSONBOID,
                -1,
            );
            pgrx::varlena::varlena_to_byte_slice(d.cast_mut_ptr::<pg_sys::varlena>()).to_vec()
        }
    }

    #[pg_test]
    fn the_jsonb_reader_finds_members_in_containers_postgresql_built() {
        use pazpaz_core::jsonb;
        use pazpaz_core::versioned::Member;
        use serde_json::{json, Map, Value};
        // A deterministic generator (xorshift): objects with 0–90 extra
        // members of every JSON kind (nested, numbers, booleans, nulls),
        // keys of 1–14 characters so that "version" and "ciphertext" land
        // anywhere in the sorted order and past the 32-entry offset stride.
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move |n: u64| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state % n
        };
        let leaf = |r: u64, i: u64| match r {
            0 => Value::Null,
            1 => json!(i.is_multiple_of(2)),
            2 => json!(i as f64 / 7.0),
            3 => json!({"nested": [i, "x", {"version": "inner"}]}),
            4 => json!([1, "ciphertext", null]),
            _ => json!("s".repeat((i % 40) as usize)),
        };
        for case in 0..300u64 {
            let mut m = Map::new();
            for i in 0..next(91) {
                let key: String = (0..1 + next(14)).map(|_| (b'a' + next(26) as u8) as char).collect();
                let kind = next(6);
                m.insert(key, leaf(kind, i));
            }
            for name in ["version", "ciphertext"] {
                m.remove(name);
                match next(4) {
                    0 => {}
                    1 => {
                        let kind = next(5);
                        m.insert(name.into(), leaf(kind, case));
                    }
                    _ => {
                        m.insert(name.into(), json!(format!("{name}-{case}")));
                    }
                }
            }
            let v = Value::Object(m);
            let bytes = jsonb_in(&v.to_string());
            let (is_object, version, ciphertext) = jsonb::versioned_members(&bytes).unwrap();
            assert!(is_object);
            for (name, got) in [("version", version), ("ciphertext", ciphertext)] {
                let want = v.get(name).map(|x| x.as_str().map(str::as_bytes));
                let got = match got {
                    Member::Missing => None,
                    Member::NotString => Some(None),
                    Member::Str(s) => Some(Some(s)),
                };
                assert_eq!(got, want, "case {case}: {name} in {v}");
            }
        }
        // Not objects: arrays and scalars.
        for text in ["[]", r#"["version", "v1"]"#, r#""version""#, "1", "null"] {
            let (is_object, _, _) = jsonb::versioned_members(&jsonb_in(text)).unwrap();
            assert!(!is_object, "{text}");
        }
    }

    #[pg_test]
    fn built_envelopes_are_byte_identical_to_jsonb_input() {
        use pazpaz_core::{jsonb, versioned};
        let long_name = "a".repeat(64);
        let cases = [("v1", 28usize), ("v2", 29), ("key-2026.1", 30), ("x", 128), (long_name.as_str(), 5000)];
        for (version, len) in cases {
            let sealed: Vec<u8> = (0..len).map(|i| (i * 7 + 3) as u8).collect();
            let mut built = vec![0u8; jsonb::versioned_size(version, len)];
            jsonb::write_versioned(&mut built, version, &sealed).unwrap();
            let text =
                format!(r#"{{"version": "{version}", "ciphertext": "{}"}}"#, versioned::encode_ciphertext(&sealed));
            let parsed = jsonb_in(&text);
            assert_eq!(parsed, built, "version {version}, {len} bytes");
        }
    }

    #[cfg(target_arch = "x86_64")]
    extern "C" {
        fn pazpaz_cpu_has(name: *const u8, len: usize) -> i32;
        fn pazpaz_cpu_build_features() -> *const std::ffi::c_char;
        fn pazpaz_cpu_feature(i: usize) -> *const std::ffi::c_char;
    }

    /// Rust's feature names checked by src/cpu_check.c, with Linux's names.
    #[cfg(target_arch = "x86_64")]
    #[rustfmt::skip] // a table, laid out by hand
    const CPU_FEATURES: &[(&str, &str)] = &[
        ("sse3", "pni"), ("pclmulqdq", "pclmulqdq"), ("ssse3", "ssse3"), ("fma", "fma"),
        ("cmpxchg16b", "cx16"), ("sse4.1", "sse4_1"), ("sse4.2", "sse4_2"), ("movbe", "movbe"),
        ("popcnt", "popcnt"), ("aes", "aes"), ("xsave", "xsave"), ("avx", "avx"), ("f16c", "f16c"),
        ("bmi1", "bmi1"), ("avx2", "avx2"), ("bmi2", "bmi2"), ("avx512f", "avx512f"),
        ("avx512dq", "avx512dq"), ("adx", "adx"), ("avx512ifma", "avx512ifma"), ("avx512cd", "avx512cd"),
        ("sha", "sha_ni"), ("avx512bw", "avx512bw"), ("avx512vl", "avx512vl"), ("avx512vbmi", "avx512vbmi"),
        ("avx512vbmi2", "avx512_vbmi2"), ("gfni", "gfni"), ("vaes", "vaes"), ("vpclmulqdq", "vpclmulqdq"),
        ("avx512vnni", "avx512_vnni"), ("avx512bitalg", "avx512_bitalg"),
        ("avx512vpopcntdq", "avx512_vpopcntdq"), ("avx512vp2intersect", "avx512_vp2intersect"),
        ("avx512fp16", "avx512_fp16"), ("avxvnni", "avx_vnni"), ("avx512bf16", "avx512_bf16"),
        ("avxifma", "avx_ifma"), ("xsaveopt", "xsaveopt"), ("xsavec", "xsavec"),
        ("lzcnt", "abm"), ("sse4a", "sse4a"), ("tbm", "tbm"),
    ];

    #[cfg(target_arch = "x86_64")]
    fn cpu_has(name: &str) -> i32 {
        // SAFETY: the C function reads `len` bytes at `name`, which `name` holds.
        unsafe { pazpaz_cpu_has(name.as_ptr(), name.len()) }
    }

    /// The load-time check (src/cpu_check.c) decodes CPUID and XCR0 as the
    /// kernel does, for every feature it knows (Linux hides what the OS does
    /// not save state for). RDRAND/RDSEED and XSAVES are left out: Linux
    /// hides them on CPUs with faulty implementations (e.g. AMD Zen 5's
    /// RDSEED; XSAVES on AMD Zen 1 and 2, erratum 1386) although CPUID
    /// reports them, and compilers never emit them unasked (XSAVES is a
    /// kernel-only instruction).
    #[cfg(target_arch = "x86_64")]
    #[pg_test]
    fn cpu_check_agrees_with_proc_cpuinfo() {
        let info = std::fs::read_to_string("/proc/cpuinfo").unwrap();
        let flags: std::collections::HashSet<&str> = info
            .lines()
            .find(|l| l.starts_with("flags"))
            .unwrap()
            .split(':')
            .nth(1)
            .unwrap()
            .split_whitespace()
            .collect();
        let disagree: Vec<String> = CPU_FEATURES
            .iter()
            .filter(|(name, linux)| (cpu_has(name) == 1) != flags.contains(linux))
            .map(|(name, linux)| format!("{name}: check says {}, cpuinfo {}", cpu_has(name), flags.contains(linux)))
            .collect();
        assert!(disagree.is_empty(), "{disagree:?}");
        // Every feature the C table knows is compared above (or is one of the
        // three the kernel may hide), so the lists cannot drift apart.
        let table: Vec<String> = (0..)
            // SAFETY: any index is valid; past the table's end it gives NULL.
            .map(|i| unsafe { pazpaz_cpu_feature(i) })
            .take_while(|p| !p.is_null())
            // SAFETY: non-null entries are static NUL-terminated names.
            .map(|p| unsafe { std::ffi::CStr::from_ptr(p) }.to_str().unwrap().to_owned())
            .collect();
        assert!(table.len() > 40, "{table:?}");
        let uncompared: Vec<&String> = table
            .iter()
            .filter(|n| {
                !["rdrand", "rdseed", "xsaves"].contains(&n.as_str()) && !CPU_FEATURES.iter().any(|(f, _)| f == n)
            })
            .collect();
        assert!(uncompared.is_empty(), "in the C table but not compared with /proc/cpuinfo: {uncompared:?}");
        assert_ne!(cpu_has("rdrand"), -1, "known to the table");
        assert_eq!(cpu_has("no-such-feature"), -1);
        assert_eq!(cpu_has("sse2"), 1, "baseline");
    }

    /// Every feature this build was compiled with is one the check knows, so
    /// none is let through unchecked, and this CPU has them all.
    #[cfg(target_arch = "x86_64")]
    #[pg_test]
    fn cpu_check_covers_the_build() {
        // SAFETY: returns a static NUL-terminated string.
        let c = unsafe { std::ffi::CStr::from_ptr(pazpaz_cpu_build_features()) }.to_str().unwrap();
        assert_eq!(c, env!("PAZPAZ_BUILD_FEATURES"));
        let names: Vec<&str> = c.split(',').filter(|f| !f.is_empty()).collect();
        assert!(names.contains(&"sse2"), "{c}");
        let unknown: Vec<&&str> = names.iter().filter(|f| cpu_has(f) == -1).collect();
        assert!(unknown.is_empty(), "not checked at load time: {unknown:?}");
        let missing: Vec<&&str> = names.iter().filter(|f| cpu_has(f) == 0).collect();
        assert!(missing.is_empty(), "{missing:?}");
    }
}
