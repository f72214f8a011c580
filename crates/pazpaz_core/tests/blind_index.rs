//! Blind indexes and match tokens: known answers from an independent Python
//! implementation (`tests/vectors/search_vectors.py`, which writes
//! `search_vectors.json`), and the properties search relies on.

use proptest::prelude::*;
use serde_json::Value;

use pazpaz_core::blind_index::{check_index_bits, check_token_bits, index_len, IndexKey, Kind, Normalize};
use pazpaz_core::Error;

const KEY: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
const OTHER_KEY: &str = "HxwdGhsYGRYXFBUSExAREA4PDA0KCwgJBgcEBQIDAAE=";

fn vectors() -> Value {
    let p = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/vectors/search_vectors.json");
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

fn norm(v: &Value) -> Normalize {
    Normalize::parse(v["normalize"].as_str().unwrap()).unwrap()
}

#[test]
fn known_blind_indexes() {
    let all = vectors();
    let key = IndexKey::from_base64(all["index_key"].as_str().unwrap()).unwrap();
    let cases = all["blind_index"].as_array().unwrap();
    assert!(cases.len() >= 5);
    for c in cases {
        let value = c["value"].as_str().unwrap();
        let bits = check_index_bits(c["bits"].as_i64().unwrap() as i32).unwrap();
        let mut d = key.derive(Kind::Exact, c["context"].as_str().unwrap().as_bytes());
        let got = d.blind_index(norm(c).apply(value).as_bytes(), bits);
        assert_eq!(hex::encode(got), c["hex"].as_str().unwrap(), "{c}");
        let mut streamed = vec![0u8; index_len(bits)];
        d.blind_index_of(value, norm(c), bits, &mut streamed, &mut || ()).unwrap();
        assert_eq!(hex::encode(streamed), c["hex"].as_str().unwrap(), "{c}");
    }
}

#[test]
fn known_tokens() {
    let all = vectors();
    let key = IndexKey::from_base64(all["index_key"].as_str().unwrap()).unwrap();
    for c in all["tokens"].as_array().unwrap() {
        let value = c["value"].as_str().unwrap();
        let bits = check_token_bits(c["bits"].as_i64().unwrap() as i32).unwrap();
        let mut d = key.derive(Kind::Tokens, c["context"].as_str().unwrap().as_bytes());
        let want: Vec<i32> = c["tokens"].as_array().unwrap().iter().map(|t| t.as_i64().unwrap() as i32).collect();
        assert_eq!(d.tokens_of(value, norm(c), bits, &mut || ()).unwrap(), want, "{c}");
    }
}

#[test]
fn fingerprints_tell_keys_apart() {
    let a = IndexKey::from_base64(KEY).unwrap();
    let b = IndexKey::from_base64(OTHER_KEY).unwrap();
    assert_eq!(a.fingerprint().len(), 8);
    assert_ne!(a.fingerprint(), b.fingerprint());
    assert_eq!(a.fingerprint(), IndexKey::from_base64(KEY).unwrap().fingerprint());
}

#[test]
fn bad_keys_are_refused_like_data_keys() {
    assert_eq!(IndexKey::from_base64("AAEC").err(), Some(Error::KeySize));
    assert_eq!(IndexKey::from_base64("not base64!").err(), Some(Error::KeyBase64));
}

/// Text with ASCII letters of both cases, spaces and tabs, some Latin-1 and
/// Greek letters, combining marks, full-width forms, ligatures and odd spaces.
fn text() -> impl Strategy<Value = String> {
    prop::collection::vec(
        prop_oneof![
            4 => prop::char::range('a', 'e'),
            2 => prop::char::range('A', 'E'),
            2 => Just(' '),
            1 => prop::sample::select(vec!['\t', '\u{a0}', '\u{2003}', '\u{3000}', '\n']),
            1 => prop::sample::select(vec!['é', 'É', 'ß', 'ẞ', 'Σ', 'ς', 'İ', 'ı', 'ﬁ', 'Ａ', 'ａ', '²', 'Ω', 'Ω', 'Å', 'Å']),
            1 => prop::sample::select(vec!['\u{301}', '\u{308}', '\u{327}']),
            1 => any::<char>(),
        ],
        0..24,
    )
    .prop_map(|cs| cs.into_iter().collect())
}

fn mode() -> impl Strategy<Value = Normalize> {
    prop_oneof![Just(Normalize::None), Just(Normalize::Lower)]
}

proptest! {
    #[test]
    fn normalization_is_idempotent(s in text()) {
        let once = Normalize::Lower.apply(&s).into_owned();
        prop_assert_eq!(Normalize::Lower.apply(&once).into_owned(), once.clone());
        prop_assert!(!once.starts_with(' ') && !once.ends_with(' ') && !once.contains("  "));
    }

    /// Every substring (of at least three characters) of a normalized value
    /// is found by its tokens: no false negatives.
    #[test]
    fn every_substring_is_found(s in text(), m in mode(), bits in 8i32..=32) {
        let bits = check_token_bits(bits).unwrap();
        let key = IndexKey::from_base64(KEY).unwrap();
        let mut d = key.derive(Kind::Tokens, b"public.clients.last_name");
        let n = m.apply(&s).into_owned();
        let have = d.tokens(&n, bits).unwrap();
        prop_assert_eq!(&have, &d.tokens_of(&s, m, bits, &mut || ()).unwrap());
        prop_assert!(have.windows(2).all(|w| w[0] < w[1]), "sorted and distinct");
        let chars: Vec<char> = n.chars().collect();
        for i in 0..chars.len() {
            for j in i + 3..=chars.len() {
                let q: String = chars[i..j].iter().collect();
                // The query is normalized as the value was; for `lower`, a
                // substring of a normalized value is its own normal form
                // unless cutting it changed it (a space at an edge, or a
                // combining mark that now leads): those are looked up as the
                // normalized value's substring itself.
                let q = if m.apply(&q) == q.as_str() { q } else { continue };
                let want = d.query_tokens(&q, bits).unwrap();
                prop_assert!(want.iter().all(|t| have.binary_search(t).is_ok()), "{:?} in {:?}", q, n);
            }
        }
    }

    #[test]
    fn contexts_and_keys_separate(s in "[a-z]{3,12}") {
        let key = IndexKey::from_base64(KEY).unwrap();
        let other = IndexKey::from_base64(OTHER_KEY).unwrap();
        let a = key.derive(Kind::Exact, b"public.clients.email").blind_index(s.as_bytes(), 256);
        prop_assert_ne!(&a, &key.derive(Kind::Exact, b"public.clients.email_work").blind_index(s.as_bytes(), 256));
        prop_assert_ne!(&a, &other.derive(Kind::Exact, b"public.clients.email").blind_index(s.as_bytes(), 256));
        let t = key.derive(Kind::Tokens, b"public.clients.email").tokens(&s, 32).unwrap();
        prop_assert_ne!(&t, &key.derive(Kind::Tokens, b"tenant:7").tokens(&s, 32).unwrap());
        prop_assert_ne!(&t, &other.derive(Kind::Tokens, b"public.clients.email").tokens(&s, 32).unwrap());
    }

    #[test]
    fn equal_after_normalization_means_equal_index(s in text(), bits in 1i32..=256) {
        let bits = check_index_bits(bits).unwrap();
        let key = IndexKey::from_base64(KEY).unwrap();
        let mut d = key.derive(Kind::Exact, b"c");
        let a = d.blind_index(Normalize::Lower.apply(&s).as_bytes(), bits);
        let mut streamed = vec![0u8; index_len(bits)];
        d.blind_index_of(&s, Normalize::Lower, bits, &mut streamed, &mut || ()).unwrap();
        prop_assert_eq!(&a, &streamed);
        let upper = s.to_uppercase();
        let spaced = format!("  {}\t", s.replace(' ', "   "));
        prop_assert_eq!(a.len(), index_len(bits));
        prop_assert_eq!(&a, &d.blind_index(Normalize::Lower.apply(&spaced).as_bytes(), bits));
        if s.is_ascii() {
            prop_assert_eq!(&a, &d.blind_index(Normalize::Lower.apply(&upper).as_bytes(), bits));
        }
    }
}
