//! The `encrypted_text` type (byte format 3): input encrypts under the
//! session's write key, output decrypts; binary send/recv and the bytea casts
//! move the envelope and need no key.
//!
//! The SQL is laid out as: a shell type, the I/O functions generated below,
//! the full `CREATE TYPE`, then casts (`sql/encrypted_text.sql`).

use std::ffi::{c_char, CStr, CString};

use pazpaz_core::encrypted_text::{self as stored, Stored};
use pazpaz_core::{field, Error};
use pgrx::pg_sys;
use pgrx::pgrx_sql_entity_graph::metadata::{
    ArgumentError, ReturnsError, ReturnsRef, SqlMappingRef, SqlTranslatable, TypeOrigin,
};
use pgrx::prelude::*;
use pgrx::Internal;

use crate::distributed;
use crate::error::{raise, OrRaise};
use crate::gucs::{self, TextIo};
use crate::key_cache;
use crate::nonces;
use crate::varlena::{self, varlena_type, Bytea, Text, VarlenaBuf};

varlena_type!(
    /// An `encrypted_text` datum: the envelope bytes.
    EncryptedText, pgrx::regtypein("encrypted_text")
);

// SAFETY: the SQL type named here is the one whose datums this Rust type
// reads and returns (varlena envelopes, `varlena_type!`).
unsafe impl SqlTranslatable for EncryptedText {
    const TYPE_IDENT: &'static str = pgrx::pgrx_resolved_type!(EncryptedText);
    const TYPE_ORIGIN: TypeOrigin = TypeOrigin::ThisExtension;
    const ARGUMENT_SQL: Result<SqlMappingRef, ArgumentError> = Ok(SqlMappingRef::literal("encrypted_text"));
    const RETURN_SQL: Result<ReturnsRef, ReturnsError> = Ok(ReturnsRef::One(SqlMappingRef::literal("encrypted_text")));
}

/// A `cstring` result written in place in palloc'd memory. pgrx's own
/// `CString` result would copy a Rust heap string into palloc: for the output
/// function that is a second copy of the decrypted plaintext per row, left in
/// freed heap memory, and one more copy on every full-column read.
pub struct CStringOut(*mut c_char);
pgrx::impl_sql_translatable!(CStringOut, "cstring");
impl pgrx::IntoDatum for CStringOut {
    fn into_datum(self) -> Option<pg_sys::Datum> {
        Some(pg_sys::Datum::from(self.0))
    }
    fn type_oid() -> pg_sys::Oid {
        pg_sys::CSTRINGOID
    }
}
// SAFETY: the datum returned is a NUL-terminated string palloc'd in the
// call's memory context, as a `cstring` result must be.
unsafe impl pgrx::callconv::BoxRet for CStringOut {
    unsafe fn box_into<'fcx>(self, f: &mut pgrx::callconv::FcInfo<'fcx>) -> pgrx::datum::Datum<'fcx> {
        // SAFETY: as above; every `CStringOut` is made from such a pointer.
        unsafe { f.return_raw_datum(pg_sys::Datum::from(self.0)) }
    }
}

extension_sql!("CREATE TYPE encrypted_text;", name = "encrypted_text_shell", creates = [Type(EncryptedText)]);

/// Plaintext length limit from the typmod, in characters (like varchar(n)).
fn check_length(plaintext: &[u8], typmod: i32) -> Result<(), Error> {
    if typmod < 0 {
        return Ok(());
    }
    let max = typmod as usize;
    // Characters never outnumber bytes, so short values need no count.
    if plaintext.len() > max && utf8_chars(plaintext) > max {
        return Err(Error::TooLong { max: typmod });
    }
    Ok(())
}

fn utf8_chars(s: &[u8]) -> usize {
    s.iter().filter(|&&b| (b as i8) >= -0x40).count()
}

/// Encrypts `plaintext` (valid text) into a new envelope under the write key.
fn seal(plaintext: &[u8], typmod: i32) -> EncryptedText {
    check_length(plaintext, typmod).or_raise();
    let ring = key_cache::keyring().or_raise();
    let key = ring.current().or_raise();
    let mut out = VarlenaBuf::alloc(stored::sealed_len(key.version(), plaintext.len()).or_raise());
    let nonce = nonces::next().or_raise();
    stored::seal_into(key.cipher(), key.version(), &nonce, plaintext, out.data_mut()).or_raise();
    EncryptedText::from(out)
}

/// A structurally valid envelope copied into a new datum (no key needed).
fn from_envelope_bytes(bytes: &[u8]) -> EncryptedText {
    Stored::parse(bytes).or_raise();
    EncryptedText::from(VarlenaBuf::copy_of(bytes))
}

/// A value in the transport form another node wrote (see `distributed.rs`):
/// taken only where Citus can be the sender (`receiving_from_other_nodes`),
/// and stored as it is once its MAC verifies under this session's key of its
/// version and this transaction's transport secret (none set: refused). It never needs the plaintext, so the typmod was enforced where
/// the value was encrypted.
fn from_transport(text: &[u8]) -> EncryptedText {
    if !distributed::receiving_from_other_nodes() {
        raise(Error::BadTransport);
    }
    let secret = gucs::transport_secret().ok_or(Error::BadTransport).or_raise();
    let ring = key_cache::keyring().or_raise();
    let bytes = stored::parse_transport_text(text, &secret[..], |v| ring.get(v)).or_raise();
    from_envelope_bytes(&bytes)
}

/// Decrypts a parsed envelope into `out` (`env.plaintext_len()` bytes) with
/// the session's key for its version. Callers parse once and size `out`
/// from that parse: each parse checks the version name again (UTF-8 and
/// alphabet), about 100 instructions a row (callgrind).
fn open_into(env: &Stored<'_>, out: &mut [u8]) -> Result<(), Error> {
    let ring = key_cache::keyring()?;
    env.open_into(ring.get(env.version)?.cipher(), out)?;
    field::check_text(out)?;
    Ok(())
}

// STABLE, not VOLATILE: PostgreSQL expects type input functions to be at
// most stable (CREATE TYPE warns otherwise), and calls them at parse time for
// literals whatever their marking. The per-row encrypting path, the
// text → encrypted_text cast, is VOLATILE.
#[pg_extern(stable, strict, parallel_safe)]
fn encrypted_text_in(input: &CStr, _typioparam: pg_sys::Oid, typmod: i32) -> EncryptedText {
    let text = input.to_bytes();
    match gucs::text_io() {
        TextIo::Envelope if stored::is_transport_text(text) => from_transport(text),
        TextIo::Envelope => {
            let s = std::str::from_utf8(text).map_err(|_| Error::TextFormNotUtf8).or_raise();
            // The plaintext cannot be seen here, so the typmod was enforced
            // when the value was first encrypted.
            from_envelope_bytes(&stored::parse_text(s).or_raise())
        }
        TextIo::Plaintext if stored::is_transport_text(text) => from_transport(text),
        TextIo::Plaintext => {
            // An envelope in text form arriving in plaintext mode is almost
            // certainly a keyless dump restored without the setting:
            // encrypting it again would bury the data one layer deeper.
            if text.starts_with(stored::TEXT_PREFIX.as_bytes())
                && std::str::from_utf8(text).ok().and_then(stored::from_text).is_some()
            {
                raise(Error::BadEncryptedText(
                    "input is an envelope in text form; SET pazpaz.encrypted_text_io = 'envelope' to load envelopes",
                ));
            }
            key_cache::note_input_encryption();
            seal(text, typmod)
        }
    }
}

#[pg_extern(stable, strict, parallel_safe)]
fn encrypted_text_out(value: EncryptedText) -> CStringOut {
    let bytes = value.0.as_bytes();
    match gucs::text_io() {
        TextIo::Envelope => {
            Stored::parse(bytes).or_raise();
            // Sized before anything is allocated: base64 grows by 4/3, so an
            // envelope over 768 MiB has no text form within MaxAllocSize
            // (54000 naming binary COPY, rather than palloc's XX000).
            let len = stored::text_len(bytes.len()).or_raise();
            // SAFETY: `len + 1` is at most MaxAllocSize (`text_len` checked);
            // palloc raises on failure and never returns NULL.
            let p = unsafe { pg_sys::palloc(len + 1) }.cast::<u8>();
            // SAFETY: `p` points to `len + 1` bytes just allocated, owned here;
            // every byte is written below before it is read.
            let out = unsafe { std::slice::from_raw_parts_mut(p, len + 1) };
            stored::write_text(bytes, &mut out[..len]).or_raise();
            out[len] = 0;
            CStringOut(p.cast())
        }
        // Text for another node (a Citus coordinator deparsing a constant or
        // sending a parameter): the envelope with a MAC, never the plaintext.
        TextIo::Plaintext if distributed::sending_to_other_nodes() => {
            let env = Stored::parse(bytes).or_raise();
            let secret = gucs::transport_secret().ok_or(Error::NoTransportSecret).or_raise();
            let ring = key_cache::keyring().or_raise();
            let key = ring.get(env.version).or_raise();
            let len = stored::transport_text_len(bytes.len()).or_raise();
            // SAFETY: `len + 1` is at most MaxAllocSize (`transport_text_len`
            // checked); palloc raises on failure and never returns NULL.
            let p = unsafe { pg_sys::palloc(len + 1) }.cast::<u8>();
            // SAFETY: `p` points to `len + 1` bytes just allocated, owned here;
            // every byte is written below before it is read.
            let out = unsafe { std::slice::from_raw_parts_mut(p, len + 1) };
            stored::write_transport_text(key.key(), &secret[..], bytes, &mut out[..len]).or_raise();
            out[len] = 0;
            CStringOut(p.cast())
        }
        TextIo::Plaintext => {
            let env = Stored::parse(bytes).or_raise();
            let len = env.plaintext_len();
            // Shorter than the envelope, so `len + 1` cannot overflow.
            let p = varlena::palloc_zeroed(len + 1);
            // SAFETY: `p` points to `len + 1` zeroed bytes just allocated and
            // owned here; the last one stays NUL.
            let out = unsafe { std::slice::from_raw_parts_mut(p.as_ptr(), len) };
            open_into(&env, out).or_raise();
            CStringOut(p.as_ptr().cast())
        }
    }
}

// STRICT: PostgreSQL calls a non-strict receive function for NULL fields of
// a binary COPY or binary parameters (pgrx does not mark `Internal` functions
// strict by itself).
#[pg_extern(immutable, strict, parallel_safe)]
fn encrypted_text_recv(mut buf: Internal, _typioparam: pg_sys::Oid, _typmod: i32) -> EncryptedText {
    // SAFETY: a type's receive function gets a StringInfo as its `internal`
    // argument.
    let sid =
        unsafe { buf.get_mut::<pg_sys::StringInfoData>() }.unwrap_or_else(|| raise(Error::BadEncryptedText("no data")));
    let (start, end) = (sid.cursor as usize, sid.len as usize);
    // SAFETY: PostgreSQL's StringInfo holds `len` bytes at `data`, and
    // `cursor <= len`; the buffer outlives this call.
    let data = unsafe { std::slice::from_raw_parts(sid.data.cast::<u8>().add(start), end - start) };
    let v = from_envelope_bytes(data);
    sid.cursor = sid.len;
    v
}

#[pg_extern(immutable, strict, parallel_safe)]
fn encrypted_text_send(value: EncryptedText) -> Bytea {
    Bytea::from(VarlenaBuf::copy_of(value.0.as_bytes()))
}

#[pg_extern(immutable, strict, parallel_safe)]
fn encrypted_text_typmod_in(modifiers: pgrx::Array<&CStr>) -> i32 {
    let bad = || raise(Error::BadTypmod);
    if modifiers.len() != 1 {
        bad();
    }
    match modifiers.get(0).flatten().and_then(|m| m.to_str().ok()).and_then(|m| m.trim().parse::<i32>().ok()) {
        Some(n) if (1..=10_485_760).contains(&n) => n,
        _ => bad(),
    }
}

#[pg_extern(immutable, strict, parallel_safe)]
fn encrypted_text_typmod_out(typmod: i32) -> CString {
    let s = if typmod >= 0 { format!("({typmod})") } else { String::new() };
    CString::new(s).expect("digits and parentheses only")
}

extension_sql!(
    r#"
CREATE TYPE encrypted_text (
    INPUT = encrypted_text_in,
    OUTPUT = encrypted_text_out,
    RECEIVE = encrypted_text_recv,
    SEND = encrypted_text_send,
    TYPMOD_IN = encrypted_text_typmod_in,
    TYPMOD_OUT = encrypted_text_typmod_out,
    INTERNALLENGTH = VARIABLE,
    -- Ciphertext does not compress: store large values out of line without
    -- trying to.
    STORAGE = external,
    CATEGORY = 'U'
);
"#,
    name = "encrypted_text_type",
    requires = [
        "encrypted_text_shell",
        encrypted_text_in,
        encrypted_text_out,
        encrypted_text_recv,
        encrypted_text_send,
        encrypted_text_typmod_in,
        encrypted_text_typmod_out
    ]
);

// ---- casts and functions on the type ---------------------------------------

/// text → encrypted_text (and varchar → encrypted_text): encrypts. Takes the
/// target typmod so `encrypted_text(n)` is enforced in the same call. The
/// typmod and explicit arguments have defaults (no limit, implicit): Citus
/// builds casts of INSERT … SELECT as one-argument calls of the cast function
/// and fills in the rest from the defaults.
#[pg_extern(volatile, strict, parallel_safe, cost = 10, name = "encrypted_text", requires = ["encrypted_text_type"])]
fn text_to_encrypted_text(
    plaintext: Text,
    typmod: default!(i32, -1),
    _explicit: default!(bool, false),
) -> EncryptedText {
    seal(plaintext.0.as_bytes(), typmod)
}

/// encrypted_text → encrypted_text(n): the length check of a typmod. Decrypts
/// only when the byte length alone cannot prove the value fits.
#[pg_extern(stable, strict, parallel_safe, cost = 10, name = "encrypted_text", requires = ["encrypted_text_type"])]
fn encrypted_text_length(value: EncryptedText, typmod: i32, _explicit: bool) -> EncryptedText {
    let env = Stored::parse(value.0.as_bytes()).or_raise();
    let len = env.plaintext_len();
    if typmod >= 0 && len > typmod as usize {
        let mut plain = zeroize::Zeroizing::new(vec![0u8; len]);
        open_into(&env, &mut plain).or_raise();
        check_length(&plain, typmod).or_raise();
    }
    value
}

/// bytea → encrypted_text: the raw envelope, checked for structure (no key).
/// STABLE, not IMMUTABLE, although it is: an immutable call on a constant is
/// folded into an `encrypted_text` constant, and printing a plan (EXPLAIN
/// VERBOSE, auto_explain) prints constants with the decrypting output
/// function — which fails without a key, and would show plaintext with one.
#[pg_extern(stable, strict, parallel_safe, name = "encrypted_text", requires = ["encrypted_text_type"])]
fn bytea_to_encrypted_text(envelope: Bytea) -> EncryptedText {
    from_envelope_bytes(envelope.0.as_bytes())
}

/// encrypted_text → text: decrypts.
#[pg_extern(stable, strict, parallel_safe, cost = 10, name = "text", requires = ["encrypted_text_type"])]
pub(crate) fn encrypted_text_to_text(value: EncryptedText) -> Text {
    let env = Stored::parse(value.0.as_bytes()).or_raise();
    let mut out = VarlenaBuf::alloc(env.plaintext_len());
    open_into(&env, out.data_mut()).or_raise();
    Text::from(out)
}

fn reencrypt_to(value: EncryptedText, version: Option<&str>) -> EncryptedText {
    let bytes = value.0.as_bytes();
    let env = Stored::parse(bytes).or_raise();
    let ring = key_cache::keyring().or_raise();
    let target = ring.target(version).or_raise();
    if env.version == target.version() {
        return value; // already there: same datum, no new nonce
    }
    let from = ring.get(env.version).or_raise();
    // Copy the envelope under the new header, then decrypt and re-encrypt the
    // body in place: the plaintext exists only inside the new datum, between
    // the two steps (and the datum holds ciphertext when it is returned).
    let mut out = VarlenaBuf::alloc(stored::sealed_len(target.version(), env.plaintext_len()).or_raise());
    let nonce = nonces::next().or_raise();
    stored::reseal_into(&env, from.cipher(), target.cipher(), target.version(), &nonce, out.data_mut()).or_raise();
    EncryptedText::from(out)
}

/// Re-encrypts under the current write key; a value already there is
/// returned unchanged.
#[pg_extern(volatile, strict, parallel_safe, cost = 20, requires = ["encrypted_text_type"])]
pub fn reencrypt(value: EncryptedText) -> EncryptedText {
    reencrypt_to(value, None)
}

/// Re-encrypts under the given key version.
#[pg_extern(volatile, strict, parallel_safe, cost = 20, name = "reencrypt", requires = ["encrypted_text_type"])]
pub fn reencrypt_to_version(value: EncryptedText, key_version: &str) -> EncryptedText {
    reencrypt_to(value, Some(key_version))
}

/// The key version in the envelope's header, without a key (a `text` built
/// in place, as for the jsonb envelope's).
#[pg_extern(immutable, strict, parallel_safe, name = "key_version", requires = ["encrypted_text_type"])]
pub fn key_version_encrypted_text(value: EncryptedText) -> Text {
    Text::from(VarlenaBuf::copy_of(Stored::parse(value.0.as_bytes()).or_raise().version.as_bytes()))
}

extension_sql_file!(
    "../sql/encrypted_text.sql",
    name = "encrypted_text_casts",
    requires = [
        "encrypted_text_type",
        text_to_encrypted_text,
        encrypted_text_length,
        bytea_to_encrypted_text,
        encrypted_text_to_text
    ]
);
