"""An independent implementation of the search formats of pazpaz_crypto
(blind indexes and match tokens, README "Search on encrypted columns"), with
Python's hmac, hashlib and unicodedata only. Run it to write
search_vectors.json, the known-answer vectors that
crates/pazpaz_core/tests/blind_index.rs and tests/python/test_search.py
check the Rust code against:

    python3 tests/vectors/search_vectors.py
"""
import base64
import hashlib
import hmac
import json
import os
import unicodedata

EXACT_DOMAIN = b"pazpaz_crypto blind index v1"
TOKEN_DOMAIN = b"pazpaz_crypto match tokens v1"
# Unicode's White_Space property (PropList.txt); str.isspace() differs from it.
WHITE_SPACE = set(map(chr, [*range(0x09, 0x0E), 0x20, 0x85, 0xA0, 0x1680, *range(0x2000, 0x200B),
                            0x2028, 0x2029, 0x202F, 0x205F, 0x3000]))


def derive(index_key: bytes, domain: bytes, context: bytes) -> bytes:
    """HKDF-SHA-256 (RFC 5869), no salt, info = domain || 0x00 || context, 32 bytes."""
    prk = hmac.new(b"\0" * 32, index_key, hashlib.sha256).digest()
    return hmac.new(prk, domain + b"\0" + context + b"\x01", hashlib.sha256).digest()


def normalize(value: str, mode: str) -> str:
    if mode == "none":
        return value
    assert mode == "lower"
    s = unicodedata.normalize("NFKC", value)
    s = "".join(c.lower() for c in s)  # per character: no final-sigma rule
    s = unicodedata.normalize("NFKC", s)
    out, pending = [], False
    for c in s:
        if c in WHITE_SPACE:
            pending = bool(out)
        else:
            if pending:
                out.append(" ")
                pending = False
            out.append(c)
    return "".join(out)


def blind_index(index_key: bytes, value: str, context: str, mode: str = "none", bits: int = 256) -> bytes:
    key = derive(index_key, EXACT_DOMAIN, context.encode())
    tag = hmac.new(key, normalize(value, mode).encode(), hashlib.sha256).digest()
    out = bytearray(tag[: (bits + 7) // 8])
    if bits % 8:
        out[-1] &= (0xFF << (8 - bits % 8)) & 0xFF
    return bytes(out)


def tokens(index_key: bytes, value: str, context: str, mode: str = "none", bits: int = 20) -> list:
    key = derive(index_key, TOKEN_DOMAIN, context.encode())
    s = normalize(value, mode)
    out = set()
    for i in range(len(s) - 2):
        tag = hmac.new(key, s[i : i + 3].encode(), hashlib.sha256).digest()
        top = int.from_bytes(tag[:4], "big") >> (32 - bits)
        out.add(top - (1 << 32) if top >= 1 << 31 else top)
    return sorted(out)


KEY_B64 = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="
CASES = [
    ("jane.doe@example.com", "public.clients.email", "none", 256),
    ("Jane.Doe@Example.COM ", "public.clients.email", "lower", 256),
    ("jane.doe@example.com", "public.clients.email", "lower", 12),
    ("jane.doe@example.com", "tenant:42", "none", 64),
    ("", "public.clients.email", "none", 256),
    ("Ｊｏｈｎ\u00a0 ÉCOLE ﬁne  ΣΊΣΥΦΟΣ", "public.clients.last_name", "lower", 256),
    ("e\u0301x", "c", "lower", 1),
    ("x" * 55, "c", "none", 256),    # the padding fits the last block exactly
    ("x" * 56, "c", "none", 256),    # the padding needs one more block
    ("y" * 64, "c", "none", 256),
    ("A long clinical-sounding value of well over one hundred bytes, to take several SHA-256 blocks.",
     "public.clients.notes", "lower", 256),
]
TOKEN_CASES = [
    ("Johnson", "public.clients.last_name", "lower", 20),
    ("Johnson", "public.clients.last_name", "none", 32),
    ("jö", "public.clients.last_name", "lower", 20),
    ("  Mary  Ann O'Brien-Łukasiewicz ", "public.clients.last_name", "lower", 8),
    ("ＡＢＣ abc", "c", "lower", 24),
]


def vectors() -> dict:
    key = base64.b64decode(KEY_B64)
    return {
        "_comment": "made by tests/vectors/search_vectors.py (Python hmac/hashlib/unicodedata)",
        "index_key": KEY_B64,
        "blind_index": [
            {"value": v, "context": c, "normalize": m, "bits": b, "hex": blind_index(key, v, c, m, b).hex()}
            for v, c, m, b in CASES
        ],
        "tokens": [
            {"value": v, "context": c, "normalize": m, "bits": b, "tokens": tokens(key, v, c, m, b)}
            for v, c, m, b in TOKEN_CASES
        ],
    }


if __name__ == "__main__":
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "search_vectors.json")
    with open(path, "w", encoding="utf-8") as f:
        json.dump(vectors(), f, ensure_ascii=False, indent=1)
        f.write("\n")
    print(path)
