//! Inheritance trees (partitions and inheritance children), from
//! catalog/pg_inherits.h.

use pgrx::pg_sys;

// catalog/pg_inherits.h, the same in PostgreSQL 15 to 18 (not in pgrx's
// bindings).
extern "C-unwind" {
    #[link_name = "has_subclass"]
    fn has_subclass_unguarded(relation_id: pg_sys::Oid) -> bool;
    #[link_name = "has_superclass"]
    fn has_superclass_unguarded(relation_id: pg_sys::Oid) -> bool;
    #[link_name = "find_inheritance_children"]
    fn find_inheritance_children_unguarded(parent_relid: pg_sys::Oid, lockmode: pg_sys::LOCKMODE) -> *mut pg_sys::List;
    #[link_name = "find_all_inheritors"]
    fn find_all_inheritors_unguarded(
        parent_relid: pg_sys::Oid,
        lockmode: pg_sys::LOCKMODE,
        numparents: *mut *mut pg_sys::List,
    ) -> *mut pg_sys::List;
}

/// Whether the relation may have inheritance children or partitions
/// (`relhassubclass`: it may stay set after the last is gone, until a
/// VACUUM or ANALYZE of the relation).
pub fn has_subclass(relation_id: pg_sys::Oid) -> bool {
    // SAFETY: a syscache lookup by OID; an ERROR becomes a Rust panic
    // at the guard, which pgrx raises again at the SQL boundary.
    unsafe { pg_sys::ffi::pg_guard_ffi_boundary(|| has_subclass_unguarded(relation_id)) }
}

/// Whether the relation is an inheritance child or a partition (a scan of
/// pg_inherits under the catalog snapshot: what is committed now, and this
/// transaction's own changes).
pub fn has_superclass(relation_id: pg_sys::Oid) -> bool {
    // SAFETY: as for has_subclass.
    unsafe { pg_sys::ffi::pg_guard_ffi_boundary(|| has_superclass_unguarded(relation_id)) }
}

/// Whether the relation has inheritance children or partitions now (a scan
/// of pg_inherits, as for has_superclass; none is locked).
pub fn has_children(relation_id: pg_sys::Oid) -> bool {
    // SAFETY: as for has_subclass; the list is left to the memory context.
    let list = unsafe {
        pg_sys::ffi::pg_guard_ffi_boundary(|| {
            find_inheritance_children_unguarded(relation_id, pg_sys::NoLock as pg_sys::LOCKMODE)
        })
    };
    !list.is_null()
}

/// Locks every descendant of the relation in `lockmode`, waiting as
/// LOCK TABLE does (lock_timeout applies), and returns the relation and
/// its descendants.
pub fn lock_all_inheritors(relation_id: pg_sys::Oid, lockmode: pg_sys::LOCKMODE) -> Vec<pg_sys::Oid> {
    // The returned list is palloc'd in the current memory context and
    // left to it; its OIDs are copied.
    // SAFETY: as for has_subclass.
    let list = crate::error::waiting(|| unsafe {
        pg_sys::ffi::pg_guard_ffi_boundary(|| {
            find_all_inheritors_unguarded(relation_id, lockmode, std::ptr::null_mut())
        })
    });
    // SAFETY: a List of OIDs (find_all_inheritors), valid in this call.
    unsafe { pgrx::PgList::<pg_sys::Oid>::from_pg(list).iter_oid().collect() }
}
