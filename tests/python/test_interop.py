"""Byte formats 1 and 2 against the existing Python application layer.

The reference here is Python `cryptography`'s AESGCM used exactly as that
layer uses it: format 1 = nonce(12) || AESGCM.encrypt(nonce, utf8, aad) (the
ciphertext with its 16-byte tag appended); format 2 = {"version", "ciphertext":
standard base64 of format 1}; associated data = the aad's UTF-8 bytes.

Thousands of random strings (all Unicode planes, the empty string, multi-KB
values) cross in each direction, batched as arrays and unnested in one
statement per batch. The seed of the random data is in every failure message.
"""

import base64
import json
import os
import random
import secrets
from pathlib import Path

import psycopg
import pytest
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from conftest import ROOT, new_key
from pazpaz_crypto import Keyring, set_keys

CASES = 3000
VECTORS = json.loads(Path(ROOT, "tests/vectors/field_vectors.json").read_text())


# ---- the Python application layer's side -------------------------------------

def py_encrypt(key_b64: str, plaintext: str, aad: str | None = None) -> bytes:
    nonce = os.urandom(12)
    ad = aad.encode() if aad is not None else None
    return nonce + AESGCM(base64.b64decode(key_b64)).encrypt(nonce, plaintext.encode(), ad)


def py_decrypt(key_b64: str, blob: bytes, aad: str | None = None) -> str:
    ad = aad.encode() if aad is not None else None
    return AESGCM(base64.b64decode(key_b64)).decrypt(blob[:12], blob[12:], ad).decode()


def py_envelope(version: str, key_b64: str, plaintext: str, aad: str | None = None) -> dict:
    return {"version": version, "ciphertext": base64.b64encode(py_encrypt(key_b64, plaintext, aad)).decode()}


def py_open_envelope(keys: dict, envelope: dict, aad: str | None = None) -> str:
    assert set(envelope) == {"version", "ciphertext"}, envelope
    raw = base64.b64decode(envelope["ciphertext"], validate=True)
    # Standard base64 with padding, as the application writes it.
    assert base64.b64encode(raw).decode() == envelope["ciphertext"]
    return py_decrypt(keys[envelope["version"]], raw, aad)


# ---- random data ---------------------------------------------------------------

# (first, last) code point ranges with weights: ASCII, two-byte scripts, the
# rest of the BMP around the surrogates, and the astral planes (emoji, CJK
# extensions, private use). U+0000 cannot be in a PostgreSQL text.
RANGES = [((0x01, 0x7F), 40), ((0x80, 0x7FF), 20), ((0x800, 0xD7FF), 15), ((0xE000, 0xFFFF), 10), ((0x10000, 0x10FFFF), 15)]


def random_text(rng: random.Random, length: int) -> str:
    spans = rng.choices([r for r, _ in RANGES], weights=[w for _, w in RANGES], k=length)
    return "".join(chr(rng.randint(lo, hi)) for lo, hi in spans)


def corpus(rng: random.Random, count: int) -> list[str]:
    """The empty string, single characters of each width, mostly short values
    (names, notes) and a few multi-KB ones (clinical notes)."""
    fixed = ["", "a", "é", "€", "😀", " ", "John Doe", "line\nbreak\ttab", "'quote\" \\back"]
    big = [random_text(rng, rng.randint(2_000, 30_000)) for _ in range(8)]
    small = [random_text(rng, min(int(rng.expovariate(1 / 40)), 2_000)) for _ in range(count - len(fixed) - len(big))]
    values = fixed + big + small
    rng.shuffle(values)
    return values


@pytest.fixture
def rng():
    seed = secrets.randbits(32)
    r = random.Random(seed)
    r.seed_value = seed
    return r


@pytest.fixture
def keyring():
    return Keyring({"v1": new_key(), "v2": new_key()}, current="v2")


@pytest.fixture
def conn(cluster, db, keyring):
    with psycopg.connect(cluster.dsn(db), autocommit=True) as c:
        set_keys(c, keyring)
        yield c


def mismatches(got: list, want: list) -> list[int]:
    assert len(got) == len(want)
    return [i for i, (g, w) in enumerate(zip(got, want)) if g != w]


# ---- format 1: bytea nonce || ciphertext || tag ----------------------------------

@pytest.mark.every_version
def test_format1_python_encrypts_sql_decrypts(conn, keyring, rng):
    key = keyring.keys[keyring.current]  # format 1 uses the write key
    plain = corpus(rng, CASES)
    blobs = [py_encrypt(key, p) for p in plain]
    got = [r[0] for r in conn.execute(
        "SELECT decrypt_field(c) FROM unnest(%s::bytea[]) WITH ORDINALITY AS t(c, i) ORDER BY i", (blobs,))]
    assert mismatches(got, plain) == [], f"seed {rng.seed_value}"


@pytest.mark.every_version
def test_format1_sql_encrypts_python_decrypts(conn, keyring, rng):
    key = keyring.keys[keyring.current]
    plain = corpus(rng, CASES)
    blobs = [bytes(r[0]) for r in conn.execute(
        "SELECT encrypt_field(p) FROM unnest(%s::text[]) WITH ORDINALITY AS t(p, i) ORDER BY i", (plain,))]
    assert [len(b) for b in blobs] == [len(p.encode()) + 28 for p in plain], f"seed {rng.seed_value}"
    assert mismatches([py_decrypt(key, b) for b in blobs], plain) == [], f"seed {rng.seed_value}"
    # Random 96-bit nonces: a repeat among a few thousand would be a broken RNG.
    assert len({b[:12] for b in blobs}) == len(blobs)
    # The other key of the ring does not open them.
    with pytest.raises(InvalidTag):
        py_decrypt(keyring.keys["v1"], blobs[0])


def test_format1_with_aad_both_ways(conn, keyring, rng):
    key = keyring.keys[keyring.current]
    plain = corpus(rng, CASES)
    # Row-binding strings as an application would use them, plus odd ones.
    aads = [rng.choice([f"clients.medical_history:{i}", "", random_text(rng, rng.randint(1, 40))]) for i in range(CASES)]

    blobs = [py_encrypt(key, p, a) for p, a in zip(plain, aads)]
    got = [r[0] for r in conn.execute(
        "SELECT decrypt_field(c, a) FROM unnest(%s::bytea[], %s::text[]) WITH ORDINALITY AS t(c, a, i) ORDER BY i",
        (blobs, aads))]
    assert mismatches(got, plain) == [], f"seed {rng.seed_value}"

    sql_blobs = [bytes(r[0]) for r in conn.execute(
        "SELECT encrypt_field(p, a) FROM unnest(%s::text[], %s::text[]) WITH ORDINALITY AS t(p, a, i) ORDER BY i",
        (plain, aads))]
    assert mismatches([py_decrypt(key, b, a) for b, a in zip(sql_blobs, aads)], plain) == [], f"seed {rng.seed_value}"

    # The aad is bound in both directions: another row's aad fails.
    bound = next(i for i, a in enumerate(aads) if a)
    with pytest.raises(InvalidTag):
        py_decrypt(key, sql_blobs[bound], aads[bound] + "x")
    with pytest.raises(psycopg.errors.DataException, match="Decryption failed"):
        conn.execute("SELECT decrypt_field(%s, %s)", (blobs[bound], aads[bound] + "x"))
    with pytest.raises(psycopg.errors.DataException, match="Decryption failed"):
        conn.execute("SELECT decrypt_field(%s)", (blobs[bound],))


def test_sql_refuses_python_plaintext_that_is_not_text(conn, keyring):
    """The application could have encrypted a string with NUL or arbitrary
    bytes; PostgreSQL text holds neither: an error, never altered text."""
    aes = AESGCM(base64.b64decode(keyring.keys[keyring.current]))
    for raw in (b"a\x00b", b"\xff\xfe", b"\xed\xa0\x80"):  # NUL, not UTF-8, a UTF-8-encoded surrogate
        nonce = os.urandom(12)
        with pytest.raises(psycopg.errors.CharacterNotInRepertoire):
            conn.execute("SELECT decrypt_field(%s)", (nonce + aes.encrypt(nonce, raw, None),))


# ---- format 2: jsonb {"version", "ciphertext"} -----------------------------------

def test_format2_python_encrypts_sql_decrypts(conn, keyring, rng):
    plain = corpus(rng, CASES)
    versions = [rng.choice(["v1", "v2"]) for _ in plain]
    envs = [json.dumps(py_envelope(v, keyring.keys[v], p)) for v, p in zip(versions, plain)]
    rows = conn.execute(
        "SELECT decrypt_field_versioned(e::jsonb), key_version(e::jsonb), e::jsonb->>'version'"
        " FROM unnest(%s::text[]) WITH ORDINALITY AS t(e, i) ORDER BY i", (envs,)).fetchall()
    assert mismatches([r[0] for r in rows], plain) == [], f"seed {rng.seed_value}"
    assert [r[1] for r in rows] == versions
    assert [r[2] for r in rows] == versions


def test_format2_sql_encrypts_python_decrypts(conn, keyring, rng):
    plain = corpus(rng, CASES)
    rows = conn.execute(
        "SELECT encrypt_field_versioned(p), encrypt_field_versioned(p, 'v1')"
        " FROM unnest(%s::text[]) WITH ORDINALITY AS t(p, i) ORDER BY i", (plain,)).fetchall()
    current = [r[0] for r in rows]
    pinned = [r[1] for r in rows]
    assert {e["version"] for e in current} == {"v2"} and {e["version"] for e in pinned} == {"v1"}
    assert mismatches([py_open_envelope(keyring.keys, e) for e in current], plain) == [], f"seed {rng.seed_value}"
    assert mismatches([py_open_envelope(keyring.keys, e) for e in pinned], plain) == [], f"seed {rng.seed_value}"


def test_format2_with_aad_both_ways(conn, keyring, rng):
    plain = corpus(rng, CASES)
    versions = [rng.choice(["v1", "v2"]) for _ in plain]
    aads = [f"clients.notes:{i}" if i % 3 else random_text(rng, rng.randint(0, 20)) for i in range(CASES)]

    envs = [json.dumps(py_envelope(v, keyring.keys[v], p, a)) for v, p, a in zip(versions, plain, aads)]
    got = [r[0] for r in conn.execute(
        "SELECT decrypt_field_versioned(e::jsonb, a) FROM unnest(%s::text[], %s::text[]) WITH ORDINALITY AS t(e, a, i)"
        " ORDER BY i", (envs, aads))]
    assert mismatches(got, plain) == [], f"seed {rng.seed_value}"

    made = [r[0] for r in conn.execute(
        "SELECT encrypt_field_versioned(p, v, a) FROM unnest(%s::text[], %s::text[], %s::text[])"
        " WITH ORDINALITY AS t(p, v, a, i) ORDER BY i", (plain, versions, aads))]
    assert [e["version"] for e in made] == versions
    assert mismatches([py_open_envelope(keyring.keys, e, a) for e, a in zip(made, aads)], plain) == [], \
        f"seed {rng.seed_value}"
    with pytest.raises(InvalidTag):
        py_open_envelope(keyring.keys, made[1], aads[1] + "x")


def test_sql_rotates_python_envelopes(conn, keyring, rng):
    """Rows the application wrote under v1 are moved to v2 in SQL, and the
    application reads the result; rows already on v2 are left as they are."""
    plain = corpus(rng, CASES)
    old = [py_envelope("v1", keyring.keys["v1"], p) for p in plain[: CASES // 2]]
    current = [py_envelope("v2", keyring.keys["v2"], p) for p in plain[CASES // 2:]]
    rotated = [r[0] for r in conn.execute(
        "SELECT reencrypt_field_versioned(e::jsonb) FROM unnest(%s::text[]) WITH ORDINALITY AS t(e, i) ORDER BY i",
        ([json.dumps(e) for e in old + current],))]
    assert {e["version"] for e in rotated} == {"v2"}
    assert rotated[len(old):] == current
    assert mismatches([py_open_envelope({"v2": keyring.keys["v2"]}, e) for e in rotated], plain) == [], \
        f"seed {rng.seed_value}"


# ---- known-answer vectors ------------------------------------------------------------

def test_vectors_decrypt_in_python_and_sql(cluster, db):
    keys = VECTORS["keys_base64"]
    vectors = VECTORS["vectors"]
    # The reference implementation agrees with the file (so the checks below
    # compare like with like).
    for v in vectors:
        raw = bytes.fromhex(v["bytea_hex"])
        assert py_decrypt(keys[v["key_version"]], raw) == v["plaintext"]
        assert py_open_envelope(keys, v["envelope"]) == v["plaintext"]
        assert base64.b64decode(v["envelope"]["ciphertext"]) == raw

    with psycopg.connect(cluster.dsn(db), autocommit=True) as c:
        for version in sorted(keys):
            mine = [v for v in vectors if v["key_version"] == version]
            # Single-key mode (the key is "v1") and keyring mode agree.
            modes = [Keyring(keys, current=version)] + ([keys["v1"]] if version == "v1" else [])
            for mode in modes:
                set_keys(c, mode)
                rows = c.execute(
                    "SELECT decrypt_field(decode(h, 'hex')), decrypt_field_versioned(e::jsonb)"
                    " FROM unnest(%s::text[], %s::text[]) WITH ORDINALITY AS t(h, e, i) ORDER BY i",
                    ([v["bytea_hex"] for v in mine], [json.dumps(v["envelope"]) for v in mine])).fetchall()
                assert rows == [(v["plaintext"], v["plaintext"]) for v in mine]


@pytest.mark.parametrize("case", VECTORS["must_fail"], ids=lambda c: c["why"])
def test_vectors_that_must_fail(cluster, db, case):
    keys = VECTORS["keys_base64"]
    with psycopg.connect(cluster.dsn(db), autocommit=True) as c:
        set_keys(c, Keyring(keys, current=case["key_version"]))
        with pytest.raises(psycopg.Error) as err:
            c.execute("SELECT decrypt_field(decode(%s, 'hex'))", (case["bytea_hex"],))
        assert case["error_contains"] in str(err.value)
        assert err.value.sqlstate not in (None, "XX000")
        # The envelope form of the same bytes fails the same way.
        env = {"version": case["key_version"], "ciphertext": base64.b64encode(bytes.fromhex(case["bytea_hex"])).decode()}
        with pytest.raises(psycopg.Error, match=case["error_contains"]):
            c.execute("SELECT decrypt_field_versioned(%s::jsonb)", (json.dumps(env),))
