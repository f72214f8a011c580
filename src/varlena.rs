//! Zero-copy varlena arguments and in-place results.
//!
//! Arguments are detoasted (packed headers kept) and borrowed, not copied;
//! results are palloc'd once at their final size and encrypted or decrypted
//! straight into place. For a 100-byte field the copies pgrx's `Vec<u8>` and
//! `String` conversions make cost about as much as AES-GCM itself.
//!
//! Two types keep the two apart: a [`Varlena`] is read-only (an argument,
//! which may have a 1-byte header and point into a shared buffer, or a
//! finished result); a [`VarlenaBuf`] is made by [`VarlenaBuf::alloc`], is
//! the only one with writable data, and becomes a `Varlena` when it is done.
//! A function that returns its argument unchanged returns the same datum.

use std::ffi::c_int;
use std::ptr::NonNull;

use pazpaz_core::Error;
use pgrx::pg_sys;

use crate::error::{raise, raise_out_of_memory};

/// PostgreSQL's MaxAllocSize: the largest ordinary palloc (1 GB - 1).
const MAX_ALLOC_SIZE: usize = 0x3fff_ffff;
const MCXT_ALLOC_NO_OOM: c_int = pg_sys::MCXT_ALLOC_NO_OOM as c_int;
const MCXT_ALLOC_ZERO: c_int = pg_sys::MCXT_ALLOC_ZERO as c_int;

mod unguarded {
    use std::ffi::{c_int, c_void};

    extern "C" {
        /// PostgreSQL's palloc_extended (mcxt.c), declared without pgrx's
        /// FFI guard; see `palloc_zeroed` for why that is sound here.
        pub fn palloc_extended(size: usize, flags: c_int) -> *mut c_void;
        /// The same for an explicit memory context.
        pub fn MemoryContextAllocExtended(
            context: *mut pgrx::pg_sys::MemoryContextData,
            size: usize,
            flags: c_int,
        ) -> *mut c_void;
    }
}

/// `size` zeroed bytes in the current memory context (palloc0), or an ERROR
/// (too large, out of memory) raised from Rust.
pub fn palloc_zeroed(size: usize) -> NonNull<u8> {
    if size > MAX_ALLOC_SIZE {
        raise(Error::TooLarge);
    }
    // SAFETY: with MCXT_ALLOC_NO_OOM, palloc_extended reports running out of
    // memory by returning NULL; its only other ERROR is for a size above
    // MaxAllocSize, excluded above. So it cannot longjmp over our frames, and
    // needs none of the sigsetjmp guard pgrx puts around every PostgreSQL
    // call (a measurable share of a short field's cost).
    let p = unsafe { unguarded::palloc_extended(size, MCXT_ALLOC_NO_OOM | MCXT_ALLOC_ZERO) };
    NonNull::new(p.cast::<u8>()).unwrap_or_else(|| raise_out_of_memory())
}

/// A read-only varlena datum, valid for the current function call: an
/// argument (detoasted, or read in place with whatever header it has) or a
/// finished result.
pub struct Varlena(NonNull<pg_sys::varlena>);

impl Varlena {
    /// # Safety
    /// `d` must be a non-null datum of a varlena type, valid for the current
    /// function call.
    pub unsafe fn from_datum(d: pg_sys::Datum) -> Varlena {
        let p: *mut pg_sys::varlena = d.cast_mut_ptr();
        // Only TOAST pointers and compressed values need PostgreSQL's help;
        // inline values (short or 4-byte header) are read in place, without
        // the cost of a guarded FFI call per row.
        // SAFETY: `p` is a varlena datum (the caller's contract), so its
        // header can be read; pg_detoast_datum_packed takes any varlena and
        // returns an inline one (palloc'd in the current context when it had
        // to be fetched or decompressed).
        let p = unsafe {
            if pgrx::varlena::varatt_is_1b_e(p) || pgrx::varlena::varatt_is_4b_c(p) {
                pg_sys::pg_detoast_datum_packed(p)
            } else {
                p
            }
        };
        Varlena(NonNull::new(p).expect("detoast never returns NULL"))
    }

    pub fn as_bytes(&self) -> &[u8] {
        // SAFETY: the pointer is an inline (not external, not compressed)
        // varlena valid for this call (see `from_datum` and `VarlenaBuf`);
        // varlena_to_byte_slice reads its 1- or 4-byte header for the length.
        // Nothing writes to it while `self` is borrowed: no `Varlena` gives
        // out a mutable reference.
        unsafe { pgrx::varlena::varlena_to_byte_slice(self.0.as_ptr()) }
    }

    pub fn datum(&self) -> pg_sys::Datum {
        pg_sys::Datum::from(self.0.as_ptr())
    }
}

/// A varlena being built: palloc'd by `alloc` with a 4-byte header in the
/// current memory context, owned by this value alone, and writable until it
/// is turned into a [`Varlena`] (the result datum).
pub struct VarlenaBuf(NonNull<pg_sys::varlena>);

impl VarlenaBuf {
    /// A new varlena with `len` data bytes (zeroed), in the current memory
    /// context.
    pub fn alloc(len: usize) -> VarlenaBuf {
        let Some(total) = len.checked_add(pg_sys::VARHDRSZ) else { raise(Error::TooLarge) };
        let p = palloc_zeroed(total).cast::<pg_sys::varlena>();
        // SAFETY: `p` points to `total` writable bytes (at least VARHDRSZ),
        // suitably aligned by palloc for a 4-byte header; `total` is at most
        // MaxAllocSize, so it fits the header's 30 bits and an i32.
        unsafe { pgrx::varlena::set_varsize_4b(p.as_ptr(), total as i32) };
        VarlenaBuf(p)
    }

    /// A new varlena holding a copy of `bytes`.
    pub fn copy_of(bytes: &[u8]) -> VarlenaBuf {
        let mut out = VarlenaBuf::alloc(bytes.len());
        out.data_mut().copy_from_slice(bytes);
        out
    }

    /// The data bytes.
    pub fn data(&self) -> &[u8] {
        // SAFETY: made by `alloc`: an inline varlena with a 4-byte header,
        // valid for this call.
        unsafe { pgrx::varlena::varlena_to_byte_slice(self.0.as_ptr()) }
    }

    /// The data bytes, writable.
    pub fn data_mut(&mut self) -> &mut [u8] {
        let p = self.0.as_ptr();
        // SAFETY: made by `alloc`, so the header is a 4-byte one and the
        // allocation holds VARSIZE bytes; `self` owns it alone (it is neither
        // `Clone` nor shared with PostgreSQL before `finish`) and `&mut self`
        // makes this the only reference for the slice's lifetime.
        unsafe {
            let len = pgrx::varlena::varsize_4b(p) - pg_sys::VARHDRSZ;
            std::slice::from_raw_parts_mut(p.cast::<u8>().add(pg_sys::VARHDRSZ), len)
        }
    }

    /// The finished value, read-only from here on.
    pub fn finish(self) -> Varlena {
        Varlena(self.0)
    }
}

impl From<VarlenaBuf> for Varlena {
    fn from(buf: VarlenaBuf) -> Varlena {
        buf.finish()
    }
}

/// A NUL-terminated copy of `bytes` in `context`, or `None` when memory is
/// short. Never raises: for code that must not longjmp (the log hook).
/// `bytes` must not contain NUL (the copy would end there).
///
/// # Safety
/// `context` must be a live memory context.
pub unsafe fn cstring_no_raise(context: pg_sys::MemoryContext, bytes: &[u8]) -> Option<NonNull<std::ffi::c_char>> {
    let size = bytes.len().checked_add(1).filter(|&t| t <= MAX_ALLOC_SIZE)?;
    // SAFETY: `context` is a live memory context (the caller's contract);
    // with MCXT_ALLOC_NO_OOM and a size below MaxAllocSize the call returns
    // NULL instead of raising.
    let p =
        NonNull::new(unsafe { unguarded::MemoryContextAllocExtended(context, size, MCXT_ALLOC_NO_OOM) }.cast::<u8>())?;
    // SAFETY: `p` points to `size` writable bytes just allocated.
    unsafe {
        std::ptr::copy_nonoverlapping(bytes.as_ptr(), p.as_ptr(), bytes.len());
        *p.as_ptr().add(bytes.len()) = 0;
    }
    Some(p.cast())
}

/// Declares a varlena newtype usable as a `#[pg_extern]` argument and result.
macro_rules! varlena_type {
    ($(#[$m:meta])* $name:ident, $oid:expr) => {
        $(#[$m])*
        pub struct $name(pub $crate::varlena::Varlena);

        impl From<$crate::varlena::VarlenaBuf> for $name {
            fn from(buf: $crate::varlena::VarlenaBuf) -> $name {
                $name(buf.finish())
            }
        }

        impl ::pgrx::FromDatum for $name {
            unsafe fn from_polymorphic_datum(d: ::pgrx::pg_sys::Datum, is_null: bool, _: ::pgrx::pg_sys::Oid) -> Option<Self> {
                // SAFETY: a non-null datum of this varlena type (the caller's
                // contract for `from_polymorphic_datum`), valid for the call.
                (!is_null).then(|| $name(unsafe { $crate::varlena::Varlena::from_datum(d) }))
            }
        }
        impl ::pgrx::IntoDatum for $name {
            fn into_datum(self) -> Option<::pgrx::pg_sys::Datum> {
                Some(self.0.datum())
            }
            fn type_oid() -> ::pgrx::pg_sys::Oid {
                $oid
            }
        }
        // SAFETY: the argument is read through `FromDatum` above, which
        // only borrows the datum read-only for the call.
        unsafe impl<'fcx> ::pgrx::callconv::ArgAbi<'fcx> for $name {
            unsafe fn unbox_arg_unchecked(arg: ::pgrx::callconv::Arg<'_, 'fcx>) -> Self {
                let i = arg.index();
                // SAFETY: the argument is of this type (pgrx declared the SQL
                // function with it); NULL is handled below.
                unsafe { arg.unbox_arg_using_from_datum() }.unwrap_or_else(|| panic!("argument {i} must not be null"))
            }
        }
        // SAFETY: the datum returned is a varlena of this type, either an
        // argument of this call or one palloc'd in the call's memory context.
        unsafe impl ::pgrx::callconv::BoxRet for $name {
            unsafe fn box_into<'fcx>(self, f: &mut ::pgrx::callconv::FcInfo<'fcx>) -> ::pgrx::datum::Datum<'fcx> {
                // SAFETY: as above: a non-null varlena datum of the declared
                // result type that outlives the call.
                unsafe { f.return_raw_datum(self.0.datum()) }
            }
        }
    };
}
pub(crate) use varlena_type;

varlena_type!(
    /// A `bytea` argument or result.
    Bytea, pgrx::pg_sys::BYTEAOID
);
pgrx::impl_sql_translatable!(Bytea, "bytea");

varlena_type!(
    /// A `text` argument or result. Results must hold valid UTF-8 without NUL
    /// (checked by the caller before returning).
    Text, pgrx::pg_sys::TEXTOID
);
pgrx::impl_sql_translatable!(Text, "text");
