//! The shipped binary jsonb reader (`jsonb::versioned_members`) against an
//! independent encoder of PostgreSQL's container layout (jsonb.h,
//! `convertJsonbValue` in jsonb_util.c), for arbitrary JSON values: objects
//! with up to 80 members (past the 32-entry offset stride), nested arrays
//! and objects (4-byte aligned), numbers (aligned), booleans, nulls, and
//! "version"/"ciphertext" of every kind. The reader must report exactly what
//! the JSON data model says, never read outside the container, and turn
//! every damaged container into an error or a result, never a panic.
//! (src/tests.rs checks the same reader on containers PostgreSQL built.)

use pazpaz_core::jsonb;
use pazpaz_core::versioned::Member;
use proptest::prelude::*;
use serde_json::{Map, Value};

const JB_FOBJECT: u32 = 0x2000_0000;
const JB_FARRAY: u32 = 0x4000_0000;
const JB_FSCALAR: u32 = 0x1000_0000;
const HAS_OFF: u32 = 0x8000_0000;
const STRIDE: usize = 32;
const IS_STRING: u32 = 0;
const IS_NUMERIC: u32 = 0x1000_0000;
const IS_FALSE: u32 = 0x2000_0000;
const IS_TRUE: u32 = 0x3000_0000;
const IS_NULL: u32 = 0x4000_0000;
const IS_CONTAINER: u32 = 0x5000_0000;

/// Appends the container of `v` to `buf` (which starts at the top-level
/// container, itself 4-byte aligned after the varlena header).
fn encode_container(v: &Value, buf: &mut Vec<u8>) {
    let (header, items): (u32, Vec<Item<'_>>) = match v {
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            // Keys sorted by length, then bytes (lengthCompareJsonbString).
            keys.sort_by(|a, b| a.len().cmp(&b.len()).then(a.as_bytes().cmp(b.as_bytes())));
            let mut items: Vec<Item<'_>> = keys.iter().map(|k| Item::Key(k)).collect();
            items.extend(keys.iter().map(|k| Item::Value(&m[k.as_str()])));
            (keys.len() as u32 | JB_FOBJECT, items)
        }
        Value::Array(a) => (a.len() as u32 | JB_FARRAY, a.iter().map(Item::Value).collect()),
        scalar => (1 | JB_FARRAY | JB_FSCALAR, vec![Item::Value(scalar)]),
    };
    buf.extend_from_slice(&header.to_ne_bytes());
    let entries_at = buf.len();
    buf.resize(entries_at + 4 * items.len(), 0);
    let data_start = buf.len();
    for (i, item) in items.iter().enumerate() {
        let before = buf.len();
        let kind = match item {
            Item::Key(k) => {
                buf.extend_from_slice(k.as_bytes());
                IS_STRING
            }
            Item::Value(Value::String(s)) => {
                buf.extend_from_slice(s.as_bytes());
                IS_STRING
            }
            Item::Value(Value::Bool(b)) => {
                if *b {
                    IS_TRUE
                } else {
                    IS_FALSE
                }
            }
            Item::Value(Value::Null) => IS_NULL,
            Item::Value(Value::Number(n)) => {
                pad(buf);
                // A numeric varlena's bytes; the reader skips them by length.
                let digits = n.to_string();
                buf.extend_from_slice(&(((4 + digits.len()) as u32) << 2).to_ne_bytes());
                buf.extend_from_slice(digits.as_bytes());
                IS_NUMERIC
            }
            Item::Value(c) => {
                pad(buf);
                encode_container(c, buf);
                IS_CONTAINER
            }
        };
        let len = (buf.len() - before) as u32;
        let end = (buf.len() - data_start) as u32;
        let meta = if i % STRIDE == 0 { HAS_OFF | end } else { len };
        buf[entries_at + 4 * i..entries_at + 4 * i + 4].copy_from_slice(&(kind | meta).to_ne_bytes());
    }
}

enum Item<'a> {
    Key(&'a str),
    Value(&'a Value),
}

/// padBufferToInt: aligns to 4 bytes from the container's start.
fn pad(buf: &mut Vec<u8>) {
    while !buf.len().is_multiple_of(4) {
        buf.push(0);
    }
}

fn encode(v: &Value) -> Vec<u8> {
    let mut buf = Vec::new();
    encode_container(v, &mut buf);
    buf
}

/// What the JSON data model says the reader must find.
fn expected(v: &Value, name: &str) -> Option<Result<Vec<u8>, ()>> {
    match v.as_object()?.get(name)? {
        Value::String(s) => Some(Ok(s.as_bytes().to_vec())),
        _ => Some(Err(())),
    }
}

fn found(m: Member<'_>) -> Option<Result<Vec<u8>, ()>> {
    match m {
        Member::Missing => None,
        Member::NotString => Some(Err(())),
        Member::Str(s) => Some(Ok(s.to_vec())),
    }
}

fn json_leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        "[a-z0-9 ]{0,12}".prop_map(Value::String),
        "\\PC{0,8}".prop_map(Value::String),
    ]
}

fn json_value() -> impl Strategy<Value = Value> {
    json_leaf().prop_recursive(3, 40, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map("[a-z]{1,6}", inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

/// Objects shaped like envelopes with extra members: up to 80 other keys
/// (some longer than "ciphertext", so the two members land anywhere in the
/// sorted order), and each of the two members absent or of any kind.
fn envelope_like() -> impl Strategy<Value = Value> {
    let member = prop_oneof![
        2 => Just(None),
        2 => json_leaf().prop_map(Some),
        4 => "[A-Za-z0-9+/=]{0,60}".prop_map(|s| Some(Value::String(s))),
        1 => json_value().prop_map(Some),
    ];
    (prop::collection::btree_map("[a-z_]{1,14}", json_value(), 0..80), member.clone(), member).prop_map(
        |(extra, version, ciphertext)| {
            let mut m: Map<String, Value> = extra.into_iter().collect();
            m.remove("version");
            m.remove("ciphertext");
            if let Some(v) = version {
                m.insert("version".into(), v);
            }
            if let Some(c) = ciphertext {
                m.insert("ciphertext".into(), c);
            }
            Value::Object(m)
        },
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(600))]

    #[test]
    fn reader_finds_what_the_json_holds(v in prop_oneof![envelope_like(), json_value()]) {
        let container = encode(&v);
        let (is_object, version, ciphertext) = jsonb::versioned_members(&container).unwrap();
        prop_assert_eq!(is_object, v.is_object());
        prop_assert_eq!(found(version), expected(&v, "version"));
        prop_assert_eq!(found(ciphertext), expected(&v, "ciphertext"));
    }

    #[test]
    fn damaged_containers_never_panic(v in envelope_like(), cuts in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8), trunc in any::<prop::sample::Index>()) {
        let mut container = encode(&v);
        for (at, byte) in cuts {
            let i = at.index(container.len());
            container[i] = byte;
        }
        let end = trunc.index(container.len() + 1);
        // Members found are slices of the container (checked by the borrow);
        // any result is acceptable, a panic is not.
        let _ = jsonb::versioned_members(&container[..end]);
        let _ = jsonb::versioned_members(&container);
    }
}

#[test]
fn the_writer_matches_the_independent_encoder() {
    // The writer claims to produce byte for byte what PostgreSQL builds.
    for sealed_len in [0usize, 1, 28, 100, 3000] {
        let sealed: Vec<u8> = (0..sealed_len).map(|i| (i * 7) as u8).collect();
        let b64 = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, &sealed);
        let v = serde_json::json!({"version": "v-2.x", "ciphertext": b64});
        let mut out = vec![0u8; jsonb::versioned_size("v-2.x", sealed.len())];
        jsonb::write_versioned(&mut out, "v-2.x", &sealed).unwrap();
        assert_eq!(out, encode(&v), "{sealed_len} bytes");
    }
}
