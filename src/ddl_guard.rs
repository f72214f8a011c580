//! Refuses DDL that would quietly defeat the encryption:
//!
//! - an `encrypted_text` **constant as a column default**: the literal is
//!   encrypted once, when the DDL is parsed, under whatever key that session
//!   holds — every later row then gets the same envelope, under a key that
//!   may be rotated away (`DEFAULT 'x'::text::encrypted_text` is a per-row
//!   cast and is allowed);
//! - an **index or extended statistics over a decrypting expression**
//!   (`CREATE INDEX … ((col::text))`, `CREATE STATISTICS … ON (col::text)`):
//!   both store plaintext on disk (the index, `pg_statistic_ext_data`), and
//!   without a key ANALYZE of the table fails.
//!
//! A `ProcessUtility_hook` checks the relation after each CREATE TABLE,
//! ALTER TABLE, CREATE INDEX and CREATE STATISTICS, and raises an ERROR,
//! which rolls the statement back. The check reads the stored expression
//! trees (`pg_node_tree` text), never a deparsed form: deparsing prints
//! constants with the type's output function, which decrypts.

use pgrx::pg_sys;
use pgrx::prelude::*;

use pazpaz_core::Error;

use crate::error::raise;

static mut PREV_PROCESS_UTILITY: pg_sys::ProcessUtility_hook_type = None;

mod unguarded {
    use pgrx::pg_sys;

    extern "C-unwind" {
        /// PostgreSQL's standard_ProcessUtility (utility.c), declared without
        /// pgrx's FFI guard: an ERROR from the statement must reach the
        /// caller unchanged (pgrx's guard would turn it into a Rust panic and
        /// re-raise it with a Rust backtrace as its DETAIL, losing its
        /// CONTEXT).
        #[allow(clippy::too_many_arguments)]
        pub fn standard_ProcessUtility(
            pstmt: *mut pg_sys::PlannedStmt,
            query_string: *const std::ffi::c_char,
            read_only_tree: bool,
            context: pg_sys::ProcessUtilityContext::Type,
            params: pg_sys::ParamListInfo,
            query_env: *mut pg_sys::QueryEnvironment,
            dest: *mut pg_sys::DestReceiver,
            qc: *mut pg_sys::QueryCompletion,
        );
    }
}

pub fn init() {
    // SAFETY: _PG_init runs once per process, single-threaded; the hook is
    // chained to its previous value.
    unsafe {
        PREV_PROCESS_UTILITY = pg_sys::ProcessUtility_hook;
        pg_sys::ProcessUtility_hook = Some(process_utility);
    }
}

/// Every name and operator is schema-qualified: this runs with the caller's
/// search_path. 1 = encrypted default, 2 = decrypting index or statistics.
const CHECK: &str = r#"
WITH ext AS (
    SELECT e.extnamespace FROM pg_catalog.pg_extension e
     WHERE e.extname OPERATOR(pg_catalog.=) 'pazpaz_crypto'
), et AS (
    SELECT pg_catalog.concat('[{]CONST :consttype ', t.oid, ' [^{}]*:constisnull false') AS re
      FROM pg_catalog.pg_type t, ext
     WHERE t.typname OPERATOR(pg_catalog.=) 'encrypted_text'
       AND t.typnamespace OPERATOR(pg_catalog.=) ext.extnamespace
), dec AS (
    SELECT pg_catalog.concat('[{]FUNCEXPR :funcid (', pg_catalog.string_agg(p.oid::pg_catalog.text, '|'), ') ') AS re
      FROM pg_catalog.pg_proc p, ext
     WHERE p.pronamespace OPERATOR(pg_catalog.=) ext.extnamespace
       AND p.proname OPERATOR(pg_catalog.=) ANY ('{text,decrypt_field,decrypt_field_versioned}'::pg_catalog.name[])
)
SELECT CASE
    WHEN EXISTS (SELECT FROM pg_catalog.pg_attrdef d, et
                  WHERE d.adrelid OPERATOR(pg_catalog.=) $1
                    AND d.adbin::pg_catalog.text OPERATOR(pg_catalog.~) et.re) THEN 1
    WHEN EXISTS (SELECT FROM pg_catalog.pg_index i, dec
                  WHERE i.indrelid OPERATOR(pg_catalog.=) $1
                    AND (i.indexprs::pg_catalog.text OPERATOR(pg_catalog.~) dec.re
                         OR i.indpred::pg_catalog.text OPERATOR(pg_catalog.~) dec.re)) THEN 2
    WHEN EXISTS (SELECT FROM pg_catalog.pg_statistic_ext s, dec
                  WHERE s.stxrelid OPERATOR(pg_catalog.=) $1
                    AND s.stxexprs::pg_catalog.text OPERATOR(pg_catalog.~) dec.re) THEN 2
    ELSE 0
END
"#;

/// The relation a checked statement creates or changes.
///
/// # Safety
/// `stmt` is a valid utility statement node.
unsafe fn target(stmt: *mut pg_sys::Node) -> *mut pg_sys::RangeVar {
    // SAFETY: each cast matches the node's tag.
    unsafe {
        match (*stmt).type_ {
            pg_sys::NodeTag::T_CreateStmt => (*stmt.cast::<pg_sys::CreateStmt>()).relation,
            pg_sys::NodeTag::T_AlterTableStmt => (*stmt.cast::<pg_sys::AlterTableStmt>()).relation,
            pg_sys::NodeTag::T_IndexStmt => (*stmt.cast::<pg_sys::IndexStmt>()).relation,
            pg_sys::NodeTag::T_CreateStatsStmt => {
                let rels = pgrx::PgList::<pg_sys::Node>::from_pg((*stmt.cast::<pg_sys::CreateStatsStmt>()).relations);
                match rels.head() {
                    Some(n) if (*n).type_ == pg_sys::NodeTag::T_RangeVar => n.cast(),
                    _ => std::ptr::null_mut(),
                }
            }
            _ => std::ptr::null_mut(),
        }
    }
}

fn check(rv: *mut pg_sys::RangeVar) {
    // SAFETY: `rv` is the statement's RangeVar; missing_ok, no lock (the
    // statement that just ran holds its own).
    let relid = unsafe {
        pg_sys::RangeVarGetRelidExtended(rv, pg_sys::NoLock as _, pg_sys::RVROption::RVR_MISSING_OK, None, std::ptr::null_mut())
    };
    if relid == pg_sys::InvalidOid {
        return;
    }
    match Spi::get_one_with_args::<i32>(CHECK, &[relid.into()]) {
        Ok(Some(1)) => raise(Error::EncryptedDefault),
        Ok(Some(2)) => raise(Error::PlaintextIndex),
        _ => {}
    }
}

/// Not `#[pg_guard]`: an ERROR raised by the statement longjmps through this
/// frame, which owns nothing that needs dropping; the check after it runs
/// in its own guarded function.
#[allow(clippy::too_many_arguments)]
unsafe extern "C-unwind" fn process_utility(
    pstmt: *mut pg_sys::PlannedStmt,
    query_string: *const std::ffi::c_char,
    read_only_tree: bool,
    context: pg_sys::ProcessUtilityContext::Type,
    params: pg_sys::ParamListInfo,
    query_env: *mut pg_sys::QueryEnvironment,
    dest: *mut pg_sys::DestReceiver,
    qc: *mut pg_sys::QueryCompletion,
) {
    // SAFETY: PostgreSQL's arguments, passed on unchanged.
    unsafe {
        match PREV_PROCESS_UTILITY {
            Some(prev) => prev(pstmt, query_string, read_only_tree, context, params, query_env, dest, qc),
            None => unguarded::standard_ProcessUtility(pstmt, query_string, read_only_tree, context, params, query_env, dest, qc),
        }
        let stmt = (*pstmt).utilityStmt;
        if !stmt.is_null() {
            let rv = target(stmt);
            if !rv.is_null() {
                after_utility(rv);
            }
        }
    }
}

#[pg_guard]
extern "C-unwind" fn after_utility(rv: *mut pg_sys::RangeVar) {
    // SAFETY: inside the statement's transaction; makes its catalog changes
    // visible to the check's queries.
    unsafe { pg_sys::CommandCounterIncrement() };
    check(rv);
}
