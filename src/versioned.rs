//! Byte format 2: the `jsonb` envelope `{"version": …, "ciphertext": …}`.
//!
//! Envelopes are read and built with PostgreSQL's jsonb container API (no
//! detour through JSON text), and an envelope that is already at the target
//! version is returned as the same datum.

use std::ptr::null_mut;

use pazpaz_core::versioned::{self, Member};
use pazpaz_core::{field, Error};
use pgrx::pg_sys;
use pgrx::prelude::*;

use crate::error::{raise, OrRaise};
use crate::field_functions::open_with;
use crate::keys;
use crate::varlena::Text;

/// A `jsonb` argument (fully detoasted, 4-byte header) or result.
pub struct Jsonb(*mut pg_sys::Jsonb);

impl pgrx::FromDatum for Jsonb {
    unsafe fn from_polymorphic_datum(d: pg_sys::Datum, is_null: bool, _: pg_sys::Oid) -> Option<Self> {
        (!is_null).then(|| Jsonb(unsafe { pg_sys::pg_detoast_datum(d.cast_mut_ptr()) }.cast()))
    }
}
impl pgrx::IntoDatum for Jsonb {
    fn into_datum(self) -> Option<pg_sys::Datum> {
        Some(pg_sys::Datum::from(self.0))
    }
    fn type_oid() -> pg_sys::Oid {
        pg_sys::JSONBOID
    }
}
unsafe impl<'fcx> pgrx::callconv::ArgAbi<'fcx> for Jsonb {
    unsafe fn unbox_arg_unchecked(arg: pgrx::callconv::Arg<'_, 'fcx>) -> Self {
        let i = arg.index();
        unsafe { arg.unbox_arg_using_from_datum() }.unwrap_or_else(|| panic!("argument {i} must not be null"))
    }
}
unsafe impl pgrx::callconv::BoxRet for Jsonb {
    unsafe fn box_into<'fcx>(self, f: &mut pgrx::callconv::FcInfo<'fcx>) -> pgrx::datum::Datum<'fcx> {
        unsafe { f.return_raw_datum(pg_sys::Datum::from(self.0)) }
    }
}
pgrx::impl_sql_translatable!(Jsonb, "jsonb");

impl Jsonb {
    fn is_object(&self) -> bool {
        unsafe { (*self.0).root.header & pg_sys::JB_FOBJECT != 0 }
    }

    /// A top-level member; borrowed from the container.
    fn member(&self, name: &str) -> Member<'_> {
        if !self.is_object() {
            return Member::Missing;
        }
        let mut v = std::mem::MaybeUninit::<pg_sys::JsonbValue>::zeroed();
        let found = unsafe {
            pg_sys::getKeyJsonValueFromContainer(
                &mut (*self.0).root,
                name.as_ptr().cast(),
                name.len() as i32,
                v.as_mut_ptr(),
            )
        };
        if found.is_null() {
            return Member::Missing;
        }
        let v = unsafe { v.assume_init() };
        if v.type_ != pg_sys::jbvType::jbvString {
            return Member::NotString;
        }
        let s = unsafe { v.val.string };
        Member::Str(unsafe { std::slice::from_raw_parts(s.val.cast::<u8>(), s.len as usize) })
    }

    fn version(&self) -> Result<&str, Error> {
        versioned::version_from(self.is_object(), self.member("version"))
    }

    fn parts(&self) -> Result<(&str, Vec<u8>), Error> {
        versioned::parts_from(self.is_object(), self.member("version"), self.member("ciphertext"))
    }

    /// `{"version": version, "ciphertext": base64(sealed)}`.
    fn build(version: &str, sealed: &[u8]) -> Jsonb {
        let ct = versioned::encode_ciphertext(sealed);
        let string = |s: &str| pg_sys::JsonbValue {
            type_: pg_sys::jbvType::jbvString,
            val: pg_sys::JsonbValue__bindgen_ty_1 {
                string: pg_sys::JsonbValue__bindgen_ty_1__bindgen_ty_1 { len: s.len() as i32, val: s.as_ptr().cast_mut().cast() },
            },
        };
        unsafe {
            use pg_sys::JsonbIteratorToken::*;
            let mut state: *mut pg_sys::JsonbParseState = null_mut();
            pg_sys::pushJsonbValue(&mut state, WJB_BEGIN_OBJECT, null_mut());
            for (k, v) in [("version", version), ("ciphertext", ct.as_str())] {
                pg_sys::pushJsonbValue(&mut state, WJB_KEY, &mut string(k));
                pg_sys::pushJsonbValue(&mut state, WJB_VALUE, &mut string(v));
            }
            let obj = pg_sys::pushJsonbValue(&mut state, WJB_END_OBJECT, null_mut());
            // Copies the strings; `ct` may be dropped afterwards.
            Jsonb(pg_sys::JsonbValueToJsonb(obj))
        }
    }
}

fn encrypt_to(version: Option<&str>, plaintext: &[u8], aad: &[u8]) -> Jsonb {
    let ring = keys::keyring().or_raise();
    let key = match version {
        Some(v) => ring.get(v),
        None => ring.current(),
    }
    .or_raise();
    let nonce = keys::nonce().or_raise();
    let sealed = field::encrypt(key.cipher(), &nonce, plaintext, aad).or_raise();
    Jsonb::build(key.version(), &sealed)
}

fn decrypt(envelope: &Jsonb, aad: &[u8]) -> Text {
    let (version, sealed) = envelope.parts().or_raise();
    let ring = keys::keyring().or_raise();
    open_with(ring.get(version).or_raise().cipher(), &sealed, aad)
}

fn reencrypt(envelope: Jsonb, target: Option<&str>, aad: &[u8]) -> Jsonb {
    let ring = keys::keyring().or_raise();
    let target = match target {
        Some(v) => ring.get(v).or_raise(),
        None => ring.current().or_raise(),
    };
    let (version, sealed) = envelope.parts().or_raise();
    if version == target.version() {
        return envelope; // already there: same datum, no new nonce
    }
    // The plaintext exists only in this zeroizing buffer between the two keys.
    let mut plain = zeroize::Zeroizing::new(vec![0u8; field::opened_len(&sealed).or_raise()]);
    field::decrypt_into(ring.get(version).or_raise().cipher(), &sealed, aad, &mut plain).or_raise();
    let nonce = keys::nonce().or_raise();
    let resealed = field::encrypt(target.cipher(), &nonce, &plain, aad).or_raise();
    Jsonb::build(target.version(), &resealed)
}

#[pg_extern(volatile, strict, parallel_safe, cost = 20)]
fn encrypt_field_versioned(plaintext: Text) -> Jsonb {
    encrypt_to(None, plaintext.0.as_bytes(), b"")
}

#[pg_extern(volatile, strict, parallel_safe, cost = 20, name = "encrypt_field_versioned")]
fn encrypt_field_versioned_to(plaintext: Text, key_version: &str) -> Jsonb {
    encrypt_to(Some(key_version), plaintext.0.as_bytes(), b"")
}

#[pg_extern(volatile, strict, parallel_safe, cost = 20, name = "encrypt_field_versioned")]
fn encrypt_field_versioned_aad(plaintext: Text, key_version: &str, aad: Text) -> Jsonb {
    encrypt_to(Some(key_version), plaintext.0.as_bytes(), aad.0.as_bytes())
}

#[pg_extern(stable, strict, parallel_safe, cost = 20)]
fn decrypt_field_versioned(envelope: Jsonb) -> Text {
    decrypt(&envelope, b"")
}

#[pg_extern(stable, strict, parallel_safe, cost = 20, name = "decrypt_field_versioned")]
fn decrypt_field_versioned_aad(envelope: Jsonb, aad: Text) -> Text {
    decrypt(&envelope, aad.0.as_bytes())
}

#[pg_extern(volatile, strict, parallel_safe, cost = 40)]
pub fn reencrypt_field_versioned(envelope: Jsonb) -> Jsonb {
    reencrypt(envelope, None, b"")
}

#[pg_extern(volatile, strict, parallel_safe, cost = 40, name = "reencrypt_field_versioned")]
pub fn reencrypt_field_versioned_to(envelope: Jsonb, key_version: &str) -> Jsonb {
    reencrypt(envelope, Some(key_version), b"")
}

#[pg_extern(volatile, strict, parallel_safe, cost = 40, name = "reencrypt_field_versioned")]
fn reencrypt_field_versioned_aad(envelope: Jsonb, key_version: &str, aad: Text) -> Jsonb {
    reencrypt(envelope, Some(key_version), aad.0.as_bytes())
}

/// The envelope's version, without a key. IMMUTABLE so that
/// `CREATE INDEX … (key_version(col))` can find stale rows.
#[pg_extern(immutable, strict, parallel_safe, name = "key_version")]
pub fn key_version_jsonb(envelope: Jsonb) -> String {
    match envelope.version() {
        Ok(v) => v.to_owned(),
        Err(e) => raise(e),
    }
}

