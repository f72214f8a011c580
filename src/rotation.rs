//! rotate_column's helpers that SQL cannot express (sql/rotation.sql).

use std::cell::Cell;

use pgrx::pg_sys;
use pgrx::prelude::*;

use pazpaz_core::Error;

use crate::backend_local::BackendLocal;
use crate::error::{raise, waiting};

mod inheritance {
    use pgrx::pg_sys;

    // catalog/pg_inherits.h, the same in PostgreSQL 15 to 18 (not in pgrx's
    // bindings).
    extern "C-unwind" {
        #[link_name = "has_subclass"]
        fn has_subclass_unguarded(relation_id: pg_sys::Oid) -> bool;
        #[link_name = "find_all_inheritors"]
        fn find_all_inheritors_unguarded(
            parent_relid: pg_sys::Oid,
            lockmode: pg_sys::LOCKMODE,
            numparents: *mut *mut pg_sys::List,
        ) -> *mut pg_sys::List;
    }

    /// Whether the relation may have inheritance children or partitions.
    pub fn has_subclass(relation_id: pg_sys::Oid) -> bool {
        // SAFETY: a syscache lookup by OID; an ERROR becomes a Rust panic
        // at the guard, which pgrx raises again at the SQL boundary.
        unsafe { pg_sys::ffi::pg_guard_ffi_boundary(|| has_subclass_unguarded(relation_id)) }
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
}

/// The owner of a relation; None when it is gone.
fn owner_of(rel: pg_sys::Oid) -> Option<pg_sys::Oid> {
    // SAFETY: a syscache lookup by OID; the tuple is read and released at
    // once.
    unsafe {
        let tuple = pg_sys::SearchSysCache1(pg_sys::SysCacheIdentifier::RELOID as _, pg_sys::Datum::from(rel));
        if tuple.is_null() {
            return None;
        }
        let owner = (*pg_sys::heap_tuple_get_struct::<pg_sys::FormData_pg_class>(tuple)).relowner;
        pg_sys::ReleaseSysCache(tuple);
        Some(owner)
    }
}

/// How many envelopes labelled with their target version were re-encrypted
/// from another key in this backend since `take_mislabelled_count()` last
/// read it: rotate_column reports them without a separate scan to tell them
/// from stale ones.
static MISLABELLED: BackendLocal<Cell<i64>> = BackendLocal::new(Cell::new(0));

/// Counts one such re-encryption (`reencrypt_field_versioned`).
pub fn note_mislabelled() {
    MISLABELLED.set(MISLABELLED.get().saturating_add(1));
}

/// The number of envelopes labelled with their target version that
/// `reencrypt_field_versioned` re-encrypted from another key (they did not
/// authenticate under the key their label names) in this session since the
/// last call, which resets it. Used by rotate_column's notices.
#[pg_extern(volatile, parallel_restricted)]
fn take_mislabelled_count() -> i64 {
    MISLABELLED.replace(0)
}

/// The transaction ID that the current transaction, or subtransaction,
/// writes rows with; NULL while it has none. rotate_column reads it after a
/// batch's UPDATE, in the batch's subtransaction: the xmin of every row that
/// UPDATE wrote, without returning each row.
#[pg_extern(volatile, parallel_restricted)]
fn rotation_write_xid() -> Option<pg_sys::TransactionId> {
    // SAFETY: reads the backend's own transaction state; it cannot raise
    // and changes nothing.
    let xid = unsafe { pg_sys::GetCurrentTransactionIdIfAny() };
    (xid != pg_sys::InvalidTransactionId).then_some(xid)
}

/// Takes rotate_column's lock on a table, ROW EXCLUSIVE as its UPDATEs take,
/// by OID, and returns the table's name at that moment, schema-qualified and
/// quoted: a table renamed meanwhile is followed, and one that took its old
/// name is never the one worked on (the lock keeps the name until the
/// transaction ends). NULL, with nothing locked, when the table is gone or
/// the current user may not UPDATE it: the privilege is checked before the
/// lock is requested, as LOCK TABLE does, so that the function cannot be used
/// to queue a lock on another role's table. The SQL signature (regclass) is
/// declared in sql/rotation.sql.
#[pg_extern(sql = false)]
fn rotation_lock(tbl: pg_sys::Oid) -> Option<String> {
    // Each lookup returns NULL, or sets the missing flag, for a relation that
    // does not exist, instead of raising; the palloc'd strings they return
    // are copied before the next call.
    // SAFETY: catalog lookups and a lock request by OID, called from SQL (in
    // a transaction).
    unsafe {
        let mut missing = false;
        let acl = pg_sys::pg_class_aclcheck_ext(
            tbl,
            pg_sys::GetUserId(),
            pg_sys::ACL_UPDATE as pg_sys::AclMode,
            &mut missing,
        );
        if missing || acl != pg_sys::AclResult::ACLCHECK_OK {
            return None;
        }
        // Waits like LOCK TABLE (lock_timeout applies), and processes the
        // invalidations of whatever committed meanwhile. Partitions and
        // inheritance children are locked too, as LOCK TABLE does: none can
        // be detached or unlinked between rotate_column's look at the tree
        // and its UPDATE.
        let mode = pg_sys::RowExclusiveLock as pg_sys::LOCKMODE;
        // The schema first (ACCESS SHARE on the schema object, as CREATE in
        // a schema takes), then the table, in the order `ALTER SCHEMA …
        // RENAME` then `ALTER TABLE` of a migration takes them: the table's
        // lock keeps its own name, and `ALTER SCHEMA … RENAME` waits for
        // the schema's (src/ddl_guard.rs), so the schema-qualified name
        // returned reaches this table, not one of a schema renamed into the
        // old schema's name, until the transaction ends. A table moved to
        // another schema while this waited: that one is locked too.
        let lock_schema = |nsp: pg_sys::Oid| {
            waiting(|| {
                pg_sys::LockDatabaseObject(
                    pg_sys::NamespaceRelationId,
                    nsp,
                    0,
                    pg_sys::AccessShareLock as pg_sys::LOCKMODE,
                )
            })
        };
        let mut nsp = pg_sys::get_rel_namespace(tbl);
        if nsp != pg_sys::InvalidOid {
            lock_schema(nsp);
        }
        waiting(|| pg_sys::LockRelationOid(tbl, mode));
        while pg_sys::get_rel_namespace(tbl) != nsp && pg_sys::get_rel_namespace(tbl) != pg_sys::InvalidOid {
            nsp = pg_sys::get_rel_namespace(tbl);
            lock_schema(nsp);
        }
        // The UPDATE runs the triggers, index expressions and constraints of
        // every partition and child it reaches, as the caller (who owns the
        // table: the CALL checks that first): none may belong to another
        // role, whose code would run in this session, with its keys. Checked
        // under the locks, on every batch (a partition may have been
        // attached, or its owner changed, since the last).
        let tree = if inheritance::has_subclass(tbl) { inheritance::lock_all_inheritors(tbl, mode) } else { vec![tbl] };
        for &rel in &tree {
            if let Some(owner) = owner_of(rel) {
                if owner != pg_sys::GetUserId() {
                    let name = |r| std::ffi::CStr::from_ptr(pg_sys::get_rel_name(r)).to_string_lossy().into_owned();
                    raise(Error::TableOfAnotherOwner { table: name(tbl), member: name(rel) });
                }
            }
        }
        let name = pg_sys::get_rel_name(tbl);
        if name.is_null() {
            // Dropped while this waited.
            pg_sys::UnlockRelationOid(tbl, mode);
            return None;
        }
        let schema = pg_sys::get_namespace_name(nsp);
        if schema.is_null() {
            pg_sys::UnlockRelationOid(tbl, mode);
            return None;
        }
        let quoted = pg_sys::quote_qualified_identifier(schema, name);
        Some(std::ffi::CStr::from_ptr(quoted).to_string_lossy().into_owned())
    }
}
