//! rotate_column's helpers that SQL cannot express (sql/rotation.sql).

use std::cell::Cell;

use pgrx::pg_sys;
use pgrx::prelude::*;

use pazpaz_core::Error;

use crate::backend_local::BackendLocal;
use crate::error::{raise, waiting};
use crate::inheritance;

/// The owner of a relation (`RELOID`) or of a function (`PROCOID`); None
/// when it is gone.
fn owner_of(oid: pg_sys::Oid, cache: pg_sys::SysCacheIdentifier::Type) -> Option<pg_sys::Oid> {
    // SAFETY: a syscache lookup by OID; the tuple is read as the catalog's
    // row type for that cache and released at once.
    unsafe {
        let tuple = pg_sys::SearchSysCache1(cache as _, pg_sys::Datum::from(oid));
        if tuple.is_null() {
            return None;
        }
        let owner = if cache == pg_sys::SysCacheIdentifier::RELOID {
            (*pg_sys::heap_tuple_get_struct::<pg_sys::FormData_pg_class>(tuple)).relowner
        } else {
            (*pg_sys::heap_tuple_get_struct::<pg_sys::FormData_pg_proc>(tuple)).proowner
        };
        pg_sys::ReleaseSysCache(tuple);
        Some(owner)
    }
}

/// An ancestor (partitioned parent, inheritance parent, and theirs) of the
/// relation that the current user does not own, by name.
fn ancestor_of_another_owner(rel: pg_sys::Oid) -> Option<String> {
    // Every name and operator is schema-qualified (the caller's search_path).
    const QUERY: &str = "
WITH RECURSIVE up(oid) AS (
    SELECT i.inhparent FROM pg_catalog.pg_inherits i WHERE i.inhrelid OPERATOR(pg_catalog.=) $1
  UNION
    SELECT i.inhparent FROM pg_catalog.pg_inherits i, up WHERE i.inhrelid OPERATOR(pg_catalog.=) up.oid)
SELECT c.relname::pg_catalog.text FROM up, pg_catalog.pg_class c
 WHERE c.oid OPERATOR(pg_catalog.=) up.oid AND c.relowner OPERATOR(pg_catalog.<>) $2
 ORDER BY 1 LIMIT 1";
    // SAFETY: reads the backend's current user.
    let user = unsafe { pg_sys::GetUserId() };
    waiting(|| Spi::get_one_with_args::<String>(QUERY, &[rel.into(), user.into()])).ok().flatten()
}

/// A trigger of the (locked) relation that would run code of a role other
/// than the current user: its function, or a function or operator of its
/// WHEN clause, owned by a role that is neither the current user nor a
/// superuser. A role with the TRIGGER privilege (which `GRANT ALL`
/// includes) can put such a trigger on another role's table, and the
/// batches' UPDATEs would run it in this session, with its keys.
fn trigger_of_another_role(rel: pg_sys::Oid) -> Option<String> {
    let trusted = |owner: Option<pg_sys::Oid>| {
        // SAFETY: superuser_arg reads the role's syscache row.
        owner.is_none_or(|o| o == unsafe { pg_sys::GetUserId() } || unsafe { pg_sys::superuser_arg(o) })
    };
    // (The descriptor's array holds `numtriggers` triggers.)
    // SAFETY: the relation is locked by rotation_lock; it is opened without
    // a lock of its own and closed before anything can raise.
    let found: Vec<(String, pg_sys::Oid, pg_sys::Oid, bool)> = unsafe {
        let r = pg_sys::try_relation_open(rel, pg_sys::NoLock as pg_sys::LOCKMODE);
        if r.is_null() {
            return None;
        }
        let desc = (*r).trigdesc;
        let all = if desc.is_null() || (*desc).numtriggers <= 0 {
            &[][..]
        } else {
            std::slice::from_raw_parts((*desc).triggers, usize::try_from((*desc).numtriggers).unwrap_or(0))
        };
        // (A disabled trigger never runs in a batch, nor does one that fires
        // on none of UPDATE, INSERT and DELETE: an UPDATE that moves a row
        // to another partition deletes and inserts it.)
        let fires = (pg_sys::TRIGGER_TYPE_UPDATE | pg_sys::TRIGGER_TYPE_INSERT | pg_sys::TRIGGER_TYPE_DELETE) as i16;
        let found = all
            .iter()
            .filter(|t| t.tgenabled != b'D' as std::ffi::c_char && t.tgtype & fires != 0)
            .map(|t| {
                let name = std::ffi::CStr::from_ptr(t.tgname).to_string_lossy().into_owned();
                (name, t.tgoid, t.tgfoid, !t.tgqual.is_null())
            })
            .collect();
        pg_sys::relation_close(r, pg_sys::NoLock as pg_sys::LOCKMODE);
        found
    };
    // Every name and operator is schema-qualified (the caller's search_path).
    const WHEN_OF_ANOTHER_ROLE: &str = "
SELECT EXISTS (
  SELECT FROM pg_catalog.pg_depend d
    LEFT JOIN pg_catalog.pg_operator o
      ON d.refclassid OPERATOR(pg_catalog.=) 'pg_catalog.pg_operator'::pg_catalog.regclass
     AND o.oid OPERATOR(pg_catalog.=) d.refobjid
    JOIN pg_catalog.pg_proc p
      ON p.oid OPERATOR(pg_catalog.=) CASE WHEN o.oid IS NOT NULL THEN o.oprcode::pg_catalog.oid
           WHEN d.refclassid OPERATOR(pg_catalog.=) 'pg_catalog.pg_proc'::pg_catalog.regclass THEN d.refobjid END
    JOIN pg_catalog.pg_roles a ON a.oid OPERATOR(pg_catalog.=) p.proowner
   WHERE d.classid OPERATOR(pg_catalog.=) 'pg_catalog.pg_trigger'::pg_catalog.regclass
     AND d.objid OPERATOR(pg_catalog.=) $1
     AND p.proowner OPERATOR(pg_catalog.<>) $2
     AND NOT a.rolsuper)";
    found.into_iter().find_map(|(name, tgoid, tgfoid, when)| {
        let foreign = !trusted(owner_of(tgfoid, pg_sys::SysCacheIdentifier::PROCOID))
            || (when
                && waiting(|| {
                    Spi::get_one_with_args::<bool>(
                        WHEN_OF_ANOTHER_ROLE,
                        // SAFETY: reads the backend's current user.
                        &[tgoid.into(), unsafe { pg_sys::GetUserId() }.into()],
                    )
                })
                .ok()
                .flatten()
                    != Some(false));
        foreign.then_some(name)
    })
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
        if owner_of(tbl, pg_sys::SysCacheIdentifier::RELOID).is_none() {
            // Dropped while this waited.
            pg_sys::UnlockRelationOid(tbl, mode);
            return None;
        }
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
        let name = |r| std::ffi::CStr::from_ptr(pg_sys::get_rel_name(r)).to_string_lossy().into_owned();
        // Its ancestors too, when it is a partition or a child: their
        // owners' indexes, CHECK constraints and row triggers are copied onto
        // it (PostgreSQL checks no ownership of the partition for that).
        if inheritance::has_superclass(tbl) {
            if let Some(member) = ancestor_of_another_owner(tbl) {
                raise(Error::TableOfAnotherOwner { table: name(tbl), member });
            }
        }
        for &rel in &tree {
            if owner_of(rel, pg_sys::SysCacheIdentifier::RELOID).is_some_and(|o| o != pg_sys::GetUserId()) {
                raise(Error::TableOfAnotherOwner { table: name(tbl), member: name(rel) });
            }
            if let Some(trigger) = trigger_of_another_role(rel) {
                raise(Error::TriggerOfAnotherRole { table: name(rel), trigger });
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
