#!/usr/bin/env python3
"""Writes tests/vectors/wrapped_key_vectors.json: known-answer vectors for the
wrapped data key form, made with Python `cryptography` (an implementation
independent of the extension's Rust code).

    pzw1:<kek id>:<base64(nonce(12) || AES-256-GCM(KEK, data key(32), aad) || tag(16))>
    aad = b"pazpaz data key" || kek id

Every key and nonce is derived from a fixed label with SHA-256, so running
this again writes the same file (a test checks that the extension unwraps
each vector to its data key and refuses each must_fail entry with the named
message). These keys are public test vectors: never use them for data.

    python3 tests/vectors/make_wrapped_key_vectors.py
"""

import base64
import hashlib
import json
from pathlib import Path

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

OUT = Path(__file__).with_name("wrapped_key_vectors.json")
AAD_PREFIX = b"pazpaz data key"


def derive(label: str, n: int) -> bytes:
    return hashlib.sha256(f"pazpaz_crypto wrapped key vectors: {label}".encode()).digest()[:n]


def b64(b: bytes) -> str:
    return base64.b64encode(b).decode()


KEKS = {"k1": derive("kek k1", 32), "k2": derive("kek k2", 32), "kek.2026-01": derive("kek kek.2026-01", 32)}
RING = {"current": "k2", "keys": {k: b64(v) for k, v in KEKS.items()}}


def wrap(kek_id: str, data_key: bytes, nonce: bytes, aad: bytes | None = None, under: str | None = None) -> str:
    """The wrapped form; `aad` and `under` (the id written) exist to build
    invalid entries."""
    aad = AAD_PREFIX + kek_id.encode() if aad is None else aad
    body = nonce + AESGCM(KEKS[kek_id]).encrypt(nonce, data_key, aad)
    return f"pzw1:{under or kek_id}:{b64(body)}"


def field(data_key: bytes, plaintext: str, label: str) -> str:
    """Format 1 (nonce || ciphertext || tag, no associated data) under the
    data key, so that a test can prove the unwrapped key is the right one."""
    nonce = derive(f"field nonce {label}", 12)
    return b64(nonce + AESGCM(data_key).encrypt(nonce, plaintext.encode(), None))


def flip(wrapped: str, index: int) -> str:
    head, body = wrapped.rsplit(":", 1)
    raw = bytearray(base64.b64decode(body))
    raw[index] ^= 0x01
    return f"{head}:{b64(bytes(raw))}"


vectors = []
for kek_id, label in [("k1", "a"), ("k2", "b"), ("kek.2026-01", "c"), ("k1", "d")]:
    data_key = derive(f"data key {label}", 32)
    nonce = derive(f"wrap nonce {label}", 12)
    plaintext = f"Patient {label}: allergic to penicillin"
    vectors.append({
        "name": f"data key {label} under {kek_id}",
        "kek_id": kek_id,
        "nonce_hex": nonce.hex(),
        "data_key": b64(data_key),
        "wrapped": wrap(kek_id, data_key, nonce),
        "field": {"plaintext": plaintext, "ciphertext": field(data_key, plaintext, label)},
    })

base = vectors[0]["wrapped"]  # data key a under k1
key_a, nonce_a = derive("data key a", 32), derive("wrap nonce a", 12)
AUTH = 'Wrapped data key failed to authenticate under key-encryption key "{}" (wrong key-encryption key or tampering)'
TRUNC = "Wrapped data key is truncated or corrupt (its body must be the base64 of 60 bytes)"
must_fail = [
    {"name": "nonce altered", "wrapped": flip(base, 0), "error": AUTH.format("k1"), "sqlstate": "22000"},
    {"name": "encrypted key altered", "wrapped": flip(base, 20), "error": AUTH.format("k1"), "sqlstate": "22000"},
    {"name": "tag altered", "wrapped": flip(base, 59), "error": AUTH.format("k1"), "sqlstate": "22000"},
    {"name": "body moved under another loaded id", "wrapped": base.replace("pzw1:k1:", "pzw1:k2:", 1),
     "error": AUTH.format("k2"), "sqlstate": "22000"},
    {"name": "associated data without the id", "wrapped": wrap("k1", key_a, nonce_a, aad=AAD_PREFIX),
     "error": AUTH.format("k1"), "sqlstate": "22000"},
    {"name": "no associated data", "wrapped": wrap("k1", key_a, nonce_a, aad=b""),
     "error": AUTH.format("k1"), "sqlstate": "22000"},
    {"name": "wrapped with another KEK, labelled k1", "wrapped": wrap("k2", key_a, nonce_a, aad=AAD_PREFIX + b"k1", under="k1"),
     "error": AUTH.format("k1"), "sqlstate": "22000"},
    {"name": "truncated by 4 characters", "wrapped": base[:-4], "error": TRUNC, "sqlstate": "22000"},
    {"name": "truncated by 1 character", "wrapped": base[:-1], "error": TRUNC, "sqlstate": "22000"},
    {"name": "a 31-byte data key", "wrapped": wrap("k1", key_a[:31], nonce_a), "error": TRUNC, "sqlstate": "22000"},
    {"name": "a 33-byte data key", "wrapped": wrap("k1", key_a + b"\x00", nonce_a), "error": TRUNC, "sqlstate": "22000"},
    {"name": "unknown key-encryption key id", "wrapped": base.replace("pzw1:k1:", "pzw1:k9:", 1),
     "error": 'key-encryption key "k9" is not loaded (loaded key-encryption keys: k1, k2, kek.2026-01)',
     "sqlstate": "42704"},
    {"name": "unknown format version", "wrapped": base.replace("pzw1:", "pzw2:", 1),
     "error": "Wrapped data key is malformed: unknown format (this server reads pzw1)", "sqlstate": "22023"},
    {"name": "no id", "wrapped": "pzw1:" + base.rsplit(":", 1)[1],
     "error": "Wrapped data key is malformed: expected pzw1:<key-encryption key id>:<base64>", "sqlstate": "22023"},
]

doc = {
    "about": "Known-answer vectors for wrapped data keys, made with Python cryptography by "
             "tests/vectors/make_wrapped_key_vectors.py (deterministic: rerun it to check). Public test keys: never use them for data.",
    "format": "pzw1:<kek id>:<base64(nonce(12) || AES-256-GCM(KEK, data key(32), aad = 'pazpaz data key' || kek id) || tag(16))>",
    "kek_ring": RING,
    "vectors": vectors,
    "must_fail": must_fail,
}
OUT.write_text(json.dumps(doc, indent=2) + "\n")
print(f"wrote {OUT} ({len(vectors)} vectors, {len(must_fail)} must_fail)")
