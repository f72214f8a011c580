//! Refuses DDL that would quietly defeat the encryption:
//!
//! - a **frozen `encrypted_text` constant** (of the type, or an array,
//!   domain or composite containing it) in a column default, a domain
//!   default or a view: the literal is encrypted once, when the DDL is
//!   parsed, under whatever key that session holds — every later row then
//!   gets the same envelope, under a key that may be rotated away
//!   (`DEFAULT 'x'::text::encrypted_text` is a per-row cast and is allowed);
//! - an **index, extended statistics or generated column over a decrypting
//!   expression** (`CREATE STATISTICS … ON (col::text)`, an IMMUTABLE
//!   wrapper around `decrypt_field` in an index): they store plaintext on
//!   disk (the index, `pg_statistic_ext_data`, the heap), and without a key
//!   ANALYZE of the table fails.
//!
//! A `ProcessUtility_hook` checks the relation after each CREATE TABLE,
//! CREATE FOREIGN TABLE, ALTER TABLE, CREATE INDEX, CREATE VIEW, CREATE RULE
//! and CREATE STATISTICS (and every domain and function default after
//! CREATE/ALTER DOMAIN and CREATE FUNCTION), and raises an ERROR, which
//! rolls the statement back. The check reads the stored expression
//! trees (`pg_node_tree` text), never a deparsed form: deparsing prints
//! constants with the type's output function, which decrypts.

use pgrx::pg_sys;
use pgrx::prelude::*;

use pazpaz_core::Error;

use crate::error::{raise, waiting};
use crate::gucs;
use crate::inheritance;

static mut PREV_PROCESS_UTILITY: pg_sys::ProcessUtility_hook_type = None;
static mut PREV_OBJECT_ACCESS: pg_sys::object_access_hook_type = None;

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
    // (Each hook is chained to its previous value.)
    // SAFETY: _PG_init runs once per process, single-threaded.
    unsafe {
        PREV_PROCESS_UTILITY = pg_sys::ProcessUtility_hook;
        pg_sys::ProcessUtility_hook = Some(process_utility);
        PREV_OBJECT_ACCESS = pg_sys::object_access_hook;
        pg_sys::object_access_hook = Some(object_access);
    }
}

/// A trigger dropped, by any statement (`DROP TRIGGER`, `DROP FUNCTION …
/// CASCADE`), from a table with a search index: refused while a statement of
/// this session is using the table (`refuse_trigger_change`).
#[pg_guard]
extern "C-unwind" fn object_access(
    access: pg_sys::ObjectAccessType::Type,
    class_id: pg_sys::Oid,
    object_id: pg_sys::Oid,
    sub_id: std::ffi::c_int,
    arg: *mut std::ffi::c_void,
) {
    // SAFETY: PostgreSQL's arguments, passed on unchanged to the previous hook.
    unsafe {
        if let Some(prev) = PREV_OBJECT_ACCESS {
            prev(access, class_id, object_id, sub_id, arg);
        }
    }
    if class_id != pg_sys::TriggerRelationId || access != pg_sys::ObjectAccessType::OAT_DROP {
        return;
    }
    // The hook runs before the trigger is removed and before the table is
    // opened for it (the lock taken is the one RemoveTriggerById takes).
    // Not for internal AFTER triggers (foreign keys', deferrable
    // constraints'), which the index's trigger does not count: ALTER TABLE
    // drops them while it holds the table open itself. (Their drop
    // mid-statement, by a DROP TABLE of the other side of a foreign key,
    // fails that statement in PostgreSQL itself.) A BEFORE trigger is
    // checked whatever its flag.
    if let Some((relid, false)) = trigger_relid(object_id) {
        refuse_trigger_change(relid, pg_sys::AccessExclusiveLock as pg_sys::LOCKMODE, "DROP TRIGGER");
    }
}

/// Refuses a change of the triggers of a table with a search index while a
/// statement of this session is using the table (an INSERT or UPDATE that
/// called the function that makes the change, or whose trigger does; an
/// open cursor on it too), as PostgreSQL refuses `ALTER TABLE` then
/// (CheckTableNotInUse's first test; 55006). Such a statement fires the
/// triggers it started with, in their order then, while the index's trigger
/// checks the triggers the relation has now (src/search.rs,
/// `before_trigger_after`): a later trigger renamed to sort first, or
/// dropped, mid-statement would change a source after its token was
/// computed. Called where the changing statement holds no reference to the
/// relation of its own; `lock` is one the statement takes or holds.
fn refuse_trigger_change(relid: pg_sys::Oid, lock: pg_sys::LOCKMODE, action: &'static str) {
    // SAFETY: the relation is opened under a lock (kept to the end of the
    // transaction, as the statement's) and closed again before any ERROR.
    let (in_use, table) = unsafe {
        let rel = waiting(|| pg_sys::try_relation_open(relid, lock));
        if rel.is_null() {
            return;
        }
        let found = !search_triggers_of(rel).is_empty();
        // This reference (and the relcache's own on a nailed relation).
        let expected = if (*rel).rd_isnailed { 2 } else { 1 };
        let in_use = found && (*rel).rd_refcnt != expected;
        let table = if in_use {
            std::ffi::CStr::from_ptr((*(*rel).rd_rel).relname.data.as_ptr()).to_string_lossy().into_owned()
        } else {
            String::new()
        };
        pg_sys::relation_close(rel, pg_sys::NoLock as pg_sys::LOCKMODE);
        (in_use, table)
    };
    if in_use {
        raise(Error::SearchTriggersInUse { action, table });
    }
}

/// The table of a trigger, as the catalog shows it to the current command,
/// and whether the trigger is an internal AFTER one.
fn trigger_relid(tgoid: pg_sys::Oid) -> Option<(pg_sys::Oid, bool)> {
    // (The tuple's struct is read before the scan ends.)
    // SAFETY: an index scan of pg_trigger by OID under AccessShareLock.
    unsafe {
        let catalog = pg_sys::table_open(pg_sys::TriggerRelationId, pg_sys::AccessShareLock as pg_sys::LOCKMODE);
        let mut key = std::mem::MaybeUninit::<pg_sys::ScanKeyData>::zeroed();
        pg_sys::ScanKeyInit(
            key.as_mut_ptr(),
            pg_sys::Anum_pg_trigger_oid as pg_sys::AttrNumber,
            pg_sys::BTEqualStrategyNumber as pg_sys::StrategyNumber,
            pg_sys::Oid::from(pg_sys::F_OIDEQ),
            pg_sys::Datum::from(tgoid),
        );
        let scan = pg_sys::systable_beginscan(
            catalog,
            pg_sys::Oid::from(pg_sys::TriggerOidIndexId),
            true,
            std::ptr::null_mut(),
            1,
            key.as_mut_ptr(),
        );
        let tuple = pg_sys::systable_getnext(scan);
        let relid = (!tuple.is_null()).then(|| {
            let form = &*pgrx::pg_sys::heap_tuple_get_struct::<pg_sys::FormData_pg_trigger>(tuple);
            (form.tgrelid, form.tgisinternal && form.tgtype & pg_sys::TRIGGER_TYPE_BEFORE as i16 == 0)
        });
        pg_sys::systable_endscan(scan);
        pg_sys::table_close(catalog, pg_sys::AccessShareLock as pg_sys::LOCKMODE);
        relid
    }
}

/// A search index trigger of a relation, as its relcache entry has it.
struct SearchTrigger {
    oid: pg_sys::Oid,
    name: String,
    /// The source and token columns (its third and fourth arguments,
    /// src/search.rs).
    columns: [String; 2],
}

/// The triggers of the open relation whose function is named
/// `blind_index_trigger` (in any schema: one of another schema only makes
/// the checks refuse more). Read from the relcache entry, which holds what
/// the catalog held when the relation's lock was last taken (invalidations
/// are processed then) and this transaction's own changes up to its last
/// command counter increment; not through SPI, whose queries see the
/// transaction's snapshot (in REPEATABLE READ, not an index committed after
/// it began).
///
/// # Safety
/// `rel` is an open relation.
unsafe fn search_triggers_of(rel: pg_sys::Relation) -> Vec<SearchTrigger> {
    // (The descriptor's array holds `numtriggers` triggers, each with
    // `tgnargs` C-string arguments; get_func_name returns a palloc'd copy
    // or NULL.)
    // SAFETY: per the contract.
    unsafe {
        let desc = (*rel).trigdesc;
        if desc.is_null() || (*desc).numtriggers <= 0 {
            return Vec::new();
        }
        let all = std::slice::from_raw_parts((*desc).triggers, usize::try_from((*desc).numtriggers).unwrap_or(0));
        let text = |p: *const std::ffi::c_char| std::ffi::CStr::from_ptr(p).to_string_lossy().into_owned();
        all.iter()
            .filter(|t| {
                let name = pg_sys::get_func_name(t.tgfoid);
                !name.is_null() && std::ffi::CStr::from_ptr(name) == c"blind_index_trigger"
            })
            .map(|t| {
                let args = if t.tgargs.is_null() {
                    &[][..]
                } else {
                    std::slice::from_raw_parts(t.tgargs, usize::try_from(t.tgnargs).unwrap_or(0))
                };
                let arg = |i: usize| args.get(i).map_or_else(String::new, |&a| text(a));
                SearchTrigger { oid: t.tgoid, name: text(t.tgname), columns: [arg(2), arg(3)] }
            })
            .collect()
    }
}

/// The search index triggers of a relation the statement that just ran
/// holds a lock on (none when it is gone), after a command counter
/// increment (which makes the statement's own catalog changes visible to
/// the relcache, as the next statement would see them).
fn search_triggers(relid: pg_sys::Oid) -> Vec<SearchTrigger> {
    // SAFETY: the relation is locked by the statement; opened without a
    // lock of its own and closed again at once, before any ERROR.
    unsafe {
        pg_sys::CommandCounterIncrement();
        let rel = pg_sys::try_relation_open(relid, pg_sys::NoLock as pg_sys::LOCKMODE);
        if rel.is_null() {
            return Vec::new();
        }
        let found = search_triggers_of(rel);
        pg_sys::relation_close(rel, pg_sys::NoLock as pg_sys::LOCKMODE);
        found
    }
}

/// Every name and operator is schema-qualified: this runs with the caller's
/// search_path. `$1` is the relation (or 0 for domains only). Answers 1 for a
/// frozen encrypted_text constant (a default, a domain default, a view), 2
/// for an expression that decrypts (index, statistics, generated column).
///
/// - `et`: encrypted_text and every type that contains it (arrays, domains,
///   composites), recursively;
/// - a frozen constant: a non-null `CONST` of one of those types;
/// - an expression that decrypts: one that calls a decrypting function of
///   the extension, or reads a column of those types (`VAR`) and calls a
///   function outside pg_catalog other than `key_version` or converts
///   through text I/O (`COERCEVIAIO`). That catches user-written wrappers
///   over `encrypted_text` columns (an IMMUTABLE SQL function around its
///   cast); over format-1/2 `bytea`/`jsonb` columns only direct calls are
///   recognised.
const CHECK: &str = r#"
WITH RECURSIVE ext AS (
    SELECT e.extnamespace FROM pg_catalog.pg_extension e
     WHERE e.extname OPERATOR(pg_catalog.=) 'pazpaz_crypto'
), et(oid) AS (
    SELECT t.oid FROM pg_catalog.pg_type t, ext
     WHERE t.typname OPERATOR(pg_catalog.=) 'encrypted_text'
       AND t.typnamespace OPERATOR(pg_catalog.=) ext.extnamespace
    UNION
    -- One join per level (a subquery per type would scan pg_attribute
    -- once for every type).
    SELECT t.oid FROM et, pg_catalog.pg_type t LEFT JOIN pg_catalog.pg_attribute a
        ON a.attrelid OPERATOR(pg_catalog.=) t.typrelid AND NOT a.attisdropped
       AND t.typrelid OPERATOR(pg_catalog.<>) 0::pg_catalog.oid
     WHERE t.typelem OPERATOR(pg_catalog.=) et.oid
        OR t.typbasetype OPERATOR(pg_catalog.=) et.oid
        OR a.atttypid OPERATOR(pg_catalog.=) et.oid
), re AS (
    SELECT pg_catalog.concat('[{]CONST :consttype (', l.oids, ') [^{}]*:constisnull false') AS frozen,
           pg_catalog.concat('[{]VAR [^{}]*:vartype (', l.oids, ') ') AS reads
      FROM (SELECT pg_catalog.string_agg(et.oid::pg_catalog.text, '|') AS oids FROM et) l
), decrypting AS (
    SELECT p.oid FROM pg_catalog.pg_proc p, ext
     WHERE p.pronamespace OPERATOR(pg_catalog.=) ext.extnamespace
       AND p.proname OPERATOR(pg_catalog.=) ANY ('{text,decrypt_field,decrypt_field_versioned}'::pg_catalog.name[])
), allowed AS (
    SELECT p.oid FROM pg_catalog.pg_proc p, ext
     WHERE p.pronamespace OPERATOR(pg_catalog.=) ext.extnamespace
       AND p.proname OPERATOR(pg_catalog.=) 'key_version'
), exprs(x) AS (
    SELECT i.indexprs::pg_catalog.text FROM pg_catalog.pg_index i WHERE i.indrelid OPERATOR(pg_catalog.=) $1
    UNION ALL
    SELECT i.indpred::pg_catalog.text FROM pg_catalog.pg_index i WHERE i.indrelid OPERATOR(pg_catalog.=) $1
    UNION ALL
    SELECT s.stxexprs::pg_catalog.text FROM pg_catalog.pg_statistic_ext s WHERE s.stxrelid OPERATOR(pg_catalog.=) $1
    UNION ALL
    SELECT d.adbin::pg_catalog.text FROM pg_catalog.pg_attrdef d JOIN pg_catalog.pg_attribute a
        ON a.attrelid OPERATOR(pg_catalog.=) d.adrelid AND a.attnum OPERATOR(pg_catalog.=) d.adnum
     WHERE d.adrelid OPERATOR(pg_catalog.=) $1 AND a.attgenerated OPERATOR(pg_catalog.<>) ''
), frozen(x) AS (
    SELECT d.adbin::pg_catalog.text FROM pg_catalog.pg_attrdef d WHERE d.adrelid OPERATOR(pg_catalog.=) $1
    UNION ALL
    SELECT r.ev_action::pg_catalog.text FROM pg_catalog.pg_rewrite r WHERE r.ev_class OPERATOR(pg_catalog.=) $1
    UNION ALL
    SELECT t.typdefaultbin::pg_catalog.text FROM pg_catalog.pg_type t
     WHERE t.typtype OPERATOR(pg_catalog.=) 'd' AND t.typdefaultbin IS NOT NULL
    UNION ALL
    SELECT p.proargdefaults::pg_catalog.text FROM pg_catalog.pg_proc p WHERE p.proargdefaults IS NOT NULL
)
SELECT CASE
    WHEN EXISTS (SELECT FROM frozen, re WHERE frozen.x OPERATOR(pg_catalog.~) re.frozen) THEN 1
    WHEN EXISTS (
        SELECT FROM exprs, re, pg_catalog.regexp_matches(exprs.x, ':(?:op)?funcid ([0-9]+)', 'g') m(f)
         WHERE m.f[1]::pg_catalog.oid OPERATOR(pg_catalog.=) ANY (SELECT oid FROM decrypting)
            OR (exprs.x OPERATOR(pg_catalog.~) re.reads
                AND m.f[1]::pg_catalog.oid OPERATOR(pg_catalog.<>) ALL (SELECT oid FROM allowed)
                AND m.f[1]::pg_catalog.oid OPERATOR(pg_catalog.=) ANY (
                        SELECT p.oid FROM pg_catalog.pg_proc p
                         WHERE p.pronamespace OPERATOR(pg_catalog.<>) 'pg_catalog'::pg_catalog.regnamespace))) THEN 2
    WHEN EXISTS (SELECT FROM exprs, re
                  WHERE exprs.x OPERATOR(pg_catalog.~) re.reads AND exprs.x OPERATOR(pg_catalog.~) '[{]COERCEVIAIO') THEN 2
    ELSE 0
END
"#;

/// What a checked statement creates or changes; `None` for statements that
/// are not checked.
///
/// # Safety
/// `stmt` is a valid utility statement node.
unsafe fn target(stmt: *mut pg_sys::Node) -> Option<Target> {
    // SAFETY: each cast matches the node's tag.
    unsafe {
        let t = match (*stmt).type_ {
            pg_sys::NodeTag::T_CreateStmt => Target::Created((*stmt.cast::<pg_sys::CreateStmt>()).relation),
            pg_sys::NodeTag::T_CreateForeignTableStmt => {
                Target::Created((*stmt.cast::<pg_sys::CreateForeignTableStmt>()).base.relation)
            }
            pg_sys::NodeTag::T_ViewStmt => Target::Created((*stmt.cast::<pg_sys::ViewStmt>()).view),
            pg_sys::NodeTag::T_AlterTableStmt => Target::Existing((*stmt.cast::<pg_sys::AlterTableStmt>()).relation),
            pg_sys::NodeTag::T_IndexStmt => Target::Existing((*stmt.cast::<pg_sys::IndexStmt>()).relation),
            pg_sys::NodeTag::T_RuleStmt => Target::Existing((*stmt.cast::<pg_sys::RuleStmt>()).relation),
            pg_sys::NodeTag::T_CreateStatsStmt => {
                let rels = pgrx::PgList::<pg_sys::Node>::from_pg((*stmt.cast::<pg_sys::CreateStatsStmt>()).relations);
                match rels.head() {
                    Some(n) if (*n).type_ == pg_sys::NodeTag::T_RangeVar => Target::Existing(n.cast()),
                    _ => Target::Catalog,
                }
            }
            // Domain and function defaults are checked catalog-wide.
            pg_sys::NodeTag::T_CreateDomainStmt
            | pg_sys::NodeTag::T_AlterDomainStmt
            | pg_sys::NodeTag::T_CreateFunctionStmt => Target::Catalog,
            _ => return None,
        };
        Some(t)
    }
}

/// The relation and the columns (a `List` of C strings) a statement
/// rewrites, drops or renames without firing triggers: `ALTER COLUMN …
/// TYPE`, `DROP COLUMN`, `RENAME COLUMN` (the old and the new name).
///
/// # Safety
/// `stmt` is a valid utility statement node.
unsafe fn columns_changed(stmt: *mut pg_sys::Node) -> Option<(*mut pg_sys::RangeVar, *mut pg_sys::List)> {
    // SAFETY: each cast matches the node's tag; the commands are the
    // statement's AlterTableCmd nodes, the names its C strings.
    unsafe {
        let mut cols: *mut pg_sys::List = std::ptr::null_mut();
        let rv = match (*stmt).type_ {
            pg_sys::NodeTag::T_AlterTableStmt => {
                let alter = &*stmt.cast::<pg_sys::AlterTableStmt>();
                for cmd in pgrx::PgList::<pg_sys::AlterTableCmd>::from_pg(alter.cmds).iter_ptr() {
                    let t = (*cmd).subtype;
                    if (t == pg_sys::AlterTableType::AT_AlterColumnType || t == pg_sys::AlterTableType::AT_DropColumn)
                        && !(*cmd).name.is_null()
                    {
                        cols = pg_sys::lappend(cols, (*cmd).name.cast());
                    }
                }
                alter.relation
            }
            pg_sys::NodeTag::T_RenameStmt => {
                let rename = &*stmt.cast::<pg_sys::RenameStmt>();
                if rename.renameType != pg_sys::ObjectType::OBJECT_COLUMN {
                    return None;
                }
                for name in [rename.subname, rename.newname] {
                    if !name.is_null() {
                        cols = pg_sys::lappend(cols, name.cast());
                    }
                }
                rename.relation
            }
            _ => return None,
        };
        (!cols.is_null() && !rv.is_null()).then_some((rv, cols))
    }
}

/// The relation of a statement that changes when its triggers fire: `ALTER
/// TABLE … ENABLE/DISABLE [REPLICA | ALWAYS] TRIGGER …`, `CREATE OR REPLACE
/// TRIGGER`.
///
/// # Safety
/// `stmt` is a valid utility statement node.
unsafe fn triggers_changed(stmt: *mut pg_sys::Node) -> Option<*mut pg_sys::RangeVar> {
    // SAFETY: each cast matches the node's tag.
    unsafe {
        match (*stmt).type_ {
            pg_sys::NodeTag::T_AlterTableStmt => {
                let alter = &*stmt.cast::<pg_sys::AlterTableStmt>();
                const TRIGGER_STATES: [pg_sys::AlterTableType::Type; 8] = [
                    pg_sys::AlterTableType::AT_EnableTrig,
                    pg_sys::AlterTableType::AT_EnableAlwaysTrig,
                    pg_sys::AlterTableType::AT_EnableReplicaTrig,
                    pg_sys::AlterTableType::AT_DisableTrig,
                    pg_sys::AlterTableType::AT_EnableTrigAll,
                    pg_sys::AlterTableType::AT_DisableTrigAll,
                    pg_sys::AlterTableType::AT_EnableTrigUser,
                    pg_sys::AlterTableType::AT_DisableTrigUser,
                ];
                let any = pgrx::PgList::<pg_sys::AlterTableCmd>::from_pg(alter.cmds)
                    .iter_ptr()
                    .any(|cmd| TRIGGER_STATES.contains(&(*cmd).subtype));
                any.then_some(alter.relation)
            }
            pg_sys::NodeTag::T_CreateTrigStmt => {
                let create = &*stmt.cast::<pg_sys::CreateTrigStmt>();
                create.replace.then_some(create.relation)
            }
            _ => None,
        }
    }
}

/// The relation's oid, as the statement found it (or InvalidOid).
///
/// # Safety
/// `rv` is the statement's own RangeVar; no lock is taken (the statement
/// holds its own).
unsafe fn relid_of(rv: *mut pg_sys::RangeVar) -> pg_sys::Oid {
    // SAFETY: per the contract.
    unsafe {
        pg_sys::RangeVarGetRelidExtended(
            rv,
            pg_sys::NoLock as _,
            pg_sys::RVROption::RVR_MISSING_OK,
            None,
            std::ptr::null_mut(),
        )
    }
}

/// The relation of `ALTER TRIGGER … RENAME` and of `CREATE OR REPLACE
/// TRIGGER` (which change the order or the set of the triggers a statement
/// fires; `ALTER TABLE … ENABLE/DISABLE TRIGGER` is refused in use by
/// PostgreSQL itself), and whether it is the latter.
///
/// # Safety
/// `stmt` is a valid utility statement node.
unsafe fn trigger_order_changed(stmt: *mut pg_sys::Node) -> Option<(*mut pg_sys::RangeVar, bool)> {
    // SAFETY: each cast matches the node's tag.
    unsafe {
        match (*stmt).type_ {
            pg_sys::NodeTag::T_RenameStmt => {
                let rename = &*stmt.cast::<pg_sys::RenameStmt>();
                (rename.renameType == pg_sys::ObjectType::OBJECT_TRIGGER).then_some((rename.relation, false))
            }
            pg_sys::NodeTag::T_CreateTrigStmt => {
                let create = &*stmt.cast::<pg_sys::CreateTrigStmt>();
                create.replace.then_some((create.relation, true))
            }
            _ => None,
        }
    }
}

/// Refuses a rewrite, drop or rename of a search index's source or token
/// column: `ALTER COLUMN … TYPE` changes every value without firing the
/// index's trigger, and the trigger names both columns by name, so a
/// column dropped, renamed or swapped in under that name leaves every token
/// stale (under the trigger's comment that says they are current, which a
/// CALL that resumes the index trusts). Drop the index first.
#[pg_guard]
extern "C-unwind" fn after_column_change(rv: *mut pg_sys::RangeVar, cols: *mut pg_sys::List) {
    // SAFETY: the statement's own RangeVar and list of column names.
    let (relid, names) = unsafe {
        let names: Vec<String> = pgrx::PgList::<std::ffi::c_char>::from_pg(cols)
            .iter_ptr()
            .map(|c| std::ffi::CStr::from_ptr(c).to_string_lossy().into_owned())
            .collect();
        (relid_of(rv), names)
    };
    if relid == pg_sys::InvalidOid {
        return;
    }
    let changed = search_triggers(relid).into_iter().find(|t| t.columns.iter().any(|c| names.contains(c)));
    if let Some(t) = changed {
        raise(Error::SearchColumnChanged { trigger: t.name });
    }
}

/// After a statement that changes when the table's triggers fire (one
/// disabled and enabled again for a bulk load lets writes pass the search
/// index's trigger by), the comments of the table's search index triggers
/// are removed: a CALL that resumes such an index then trusts none of its
/// tokens and computes every one again (sql/search.sql,
/// search_current_mark).
#[pg_guard]
extern "C-unwind" fn after_trigger_change(rv: *mut pg_sys::RangeVar) {
    // SAFETY: the statement's own RangeVar.
    let relid = unsafe { relid_of(rv) };
    if relid == pg_sys::InvalidOid {
        return;
    }
    for t in search_triggers(relid) {
        // SAFETY: a trigger's oid; removes its comment (if any) in this
        // transaction, as COMMENT ON TRIGGER … IS NULL would.
        unsafe { pg_sys::DeleteComments(t.oid, pg_sys::TriggerRelationId, 0) };
    }
}

/// After `ALTER TRIGGER … RENAME` or `CREATE OR REPLACE TRIGGER`: the
/// statement has closed its reference to the relation (it keeps its lock).
#[pg_guard]
extern "C-unwind" fn after_trigger_order_change(rv: *mut pg_sys::RangeVar, replace: bool) {
    let action = if replace { "CREATE OR REPLACE TRIGGER" } else { "ALTER TRIGGER" };
    // SAFETY: the statement's own RangeVar.
    let relid = unsafe { relid_of(rv) };
    if relid != pg_sys::InvalidOid {
        refuse_trigger_change(relid, pg_sys::AccessShareLock as pg_sys::LOCKMODE, action);
    }
}

/// The tables that a statement makes partitions, inheritance children or
/// inheritance parents (the partition of `ALTER TABLE … ATTACH PARTITION`,
/// both tables of `ALTER TABLE … INHERIT`, the parents of `CREATE [FOREIGN]
/// TABLE … INHERITS`), or gives a trigger (`CREATE TRIGGER`).
///
/// # Safety
/// `stmt` is a valid utility statement node.
unsafe fn inheritance_added(stmt: *mut pg_sys::Node) -> Vec<*mut pg_sys::RangeVar> {
    // SAFETY: each cast matches the node's tag (an ATTACH PARTITION's
    // definition is a PartitionCmd, an INHERIT's the parent's RangeVar).
    unsafe {
        match (*stmt).type_ {
            pg_sys::NodeTag::T_AlterTableStmt => {
                let alter = &*stmt.cast::<pg_sys::AlterTableStmt>();
                let mut rels = Vec::new();
                for cmd in pgrx::PgList::<pg_sys::AlterTableCmd>::from_pg(alter.cmds).iter_ptr() {
                    match (*cmd).subtype {
                        pg_sys::AlterTableType::AT_AttachPartition => {
                            rels.push((*(*cmd).def.cast::<pg_sys::PartitionCmd>()).name);
                        }
                        pg_sys::AlterTableType::AT_AddInherit => {
                            rels.push(alter.relation);
                            rels.push((*cmd).def.cast::<pg_sys::RangeVar>());
                        }
                        _ => {}
                    }
                }
                rels
            }
            pg_sys::NodeTag::T_CreateStmt => {
                let create = &*stmt.cast::<pg_sys::CreateStmt>();
                pgrx::PgList::<pg_sys::RangeVar>::from_pg(create.inhRelations).iter_ptr().collect()
            }
            pg_sys::NodeTag::T_CreateForeignTableStmt => {
                let create = &(*stmt.cast::<pg_sys::CreateForeignTableStmt>()).base;
                pgrx::PgList::<pg_sys::RangeVar>::from_pg(create.inhRelations).iter_ptr().collect()
            }
            pg_sys::NodeTag::T_CreateTrigStmt => vec![(*stmt.cast::<pg_sys::CreateTrigStmt>()).relation],
            _ => Vec::new(),
        }
    }
}

/// After such a statement: refused when the table then has a search index
/// and is in an inheritance tree. The index's trigger fires for the table's
/// own rows only, as its index covers them only, while writes through the
/// tree reach the others (and a change of a partitioned parent's trigger
/// changes the partition's copy of it, which no check here sees). Checked
/// after the statement, under its lock: an ATTACH or INHERIT and the
/// CREATE TRIGGER of a search index (`search_index_add`) wait for each
/// other, and the second sees what the first did.
#[pg_guard]
extern "C-unwind" fn after_inheritance_added(rv: *mut pg_sys::RangeVar) {
    // SAFETY: the statement's own RangeVar.
    let relid = unsafe { relid_of(rv) };
    if relid == pg_sys::InvalidOid {
        return;
    }
    let Some(first) = search_triggers(relid).into_iter().min_by(|a, b| a.name.cmp(&b.name)) else { return };
    // (A partition's pg_inherits row is what has_superclass finds too.)
    if inheritance::has_superclass(relid) || inheritance::has_children(relid) {
        raise(Error::SearchIndexInTree { trigger: first.name });
    }
}

/// The schema of `ALTER SCHEMA … RENAME`.
///
/// # Safety
/// `stmt` is a valid utility statement node.
unsafe fn schema_renamed(stmt: *mut pg_sys::Node) -> Option<*const std::ffi::c_char> {
    // SAFETY: the cast matches the node's tag.
    unsafe {
        if (*stmt).type_ != pg_sys::NodeTag::T_RenameStmt {
            return None;
        }
        let rename = &*stmt.cast::<pg_sys::RenameStmt>();
        (rename.renameType == pg_sys::ObjectType::OBJECT_SCHEMA && !rename.subname.is_null())
            .then_some(rename.subname.cast_const())
    }
}

/// Before a schema is renamed: its schema object locked ACCESS EXCLUSIVE
/// (as DROP SCHEMA locks it), so that the rename waits for every
/// transaction that locked the schema to keep the schema-qualified names it
/// works with (rotate_column's and the search index CALLs' batches:
/// src/rotation.rs, `rotation_lock`). PostgreSQL's own rename takes no lock
/// on the schema's tables: a table locked by OID would otherwise keep its
/// name while another schema, with a table of that name, is renamed into
/// its schema's name, and a statement naming it would reach that table.
#[pg_guard]
extern "C-unwind" fn before_schema_rename(name: *const std::ffi::c_char) {
    // (A missing schema is left to the statement's own error.)
    // SAFETY: the statement's own schema name, read by catalog lookups.
    unsafe {
        // Until the name names the schema locked (the lock's wait processes
        // the invalidations of what committed meanwhile): RenameSchema looks
        // the name up again, and a schema renamed into it while this waited
        // is the one it renames. A schema locked on the way stays locked.
        loop {
            let nsp = pg_sys::get_namespace_oid(name, true);
            if nsp == pg_sys::InvalidOid {
                break;
            }
            waiting(|| {
                pg_sys::LockDatabaseObject(
                    pg_sys::NamespaceRelationId,
                    nsp,
                    0,
                    pg_sys::AccessExclusiveLock as pg_sys::LOCKMODE,
                )
            });
            if pg_sys::get_namespace_oid(name, true) == nsp {
                break;
            }
        }
    }
}

/// What a checked statement made or changed.
#[derive(Clone, Copy)]
#[repr(C)] // passed to the guarded extern "C-unwind" function below
enum Target {
    /// A relation it created: found in the namespace it was created in (a
    /// second lookup of the name could find a temporary table or a
    /// pg_catalog view of the same name instead).
    Created(*mut pg_sys::RangeVar),
    /// A relation that existed, found as the statement found it.
    Existing(*mut pg_sys::RangeVar),
    /// No relation: the catalog-wide checks only.
    Catalog,
}

fn check(target: Target) {
    // SAFETY: the RangeVars are the statement's own; no lock is taken (the
    // statement that just ran holds its own).
    let relid = unsafe {
        match target {
            Target::Created(rv) if !rv.is_null() => {
                let nsp = pg_sys::RangeVarGetCreationNamespace(rv);
                pg_sys::get_relname_relid((*rv).relname, nsp)
            }
            Target::Existing(rv) if !rv.is_null() => pg_sys::RangeVarGetRelidExtended(
                rv,
                pg_sys::NoLock as _,
                pg_sys::RVROption::RVR_MISSING_OK,
                None,
                std::ptr::null_mut(),
            ),
            _ => pg_sys::InvalidOid,
        }
    };
    match waiting(|| Spi::get_one_with_args::<i32>(CHECK, &[relid.into()])) {
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
    // (The text of a SET of a key setting is masked: `text_for_other_hooks`.)
    // SAFETY: PostgreSQL's arguments, passed on unchanged but for that text.
    unsafe {
        let query_string = text_for_other_hooks(pstmt, query_string);
        let stmt = (*pstmt).utilityStmt;
        if !stmt.is_null() {
            if let Some(name) = schema_renamed(stmt) {
                before_schema_rename(name);
            }
        }
        match PREV_PROCESS_UTILITY {
            Some(prev) => prev(pstmt, query_string, read_only_tree, context, params, query_env, dest, qc),
            None => unguarded::standard_ProcessUtility(
                pstmt,
                query_string,
                read_only_tree,
                context,
                params,
                query_env,
                dest,
                qc,
            ),
        }
        let stmt = (*pstmt).utilityStmt;
        if !stmt.is_null() {
            if let Some(t) = target(stmt) {
                after_utility(t);
            }
            if let Some((rv, cols)) = columns_changed(stmt) {
                after_column_change(rv, cols);
            }
            if let Some(rv) = triggers_changed(stmt) {
                after_trigger_change(rv);
            }
            if let Some((rv, replace)) = trigger_order_changed(stmt) {
                after_trigger_order_change(rv, replace);
            }
            for rv in inheritance_added(stmt) {
                after_inheritance_added(rv);
            }
        }
    }
}

thread_local! {
    /// Set while `set_keys`/`forward_keys` run their own SET LOCAL (whose
    /// text Citus must forward unmasked); any other SET of a key setting is
    /// masked for the next hooks.
    static FORWARDED_SET: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Marks the SET that `set_keys` is about to run through SPI, until dropped
/// (an ERROR inside SPI reaches Rust as a panic, so the drop runs then too;
/// the mark only ever lets a SET LOCAL that Citus forwards keep its text).
pub struct ForwardedSet(bool);

impl ForwardedSet {
    pub fn begin() -> ForwardedSet {
        ForwardedSet(FORWARDED_SET.replace(true))
    }
}

impl Drop for ForwardedSet {
    fn drop(&mut self) {
        FORWARDED_SET.set(self.0);
    }
}

/// The statement text the next utility hooks (pg_stat_statements, pgaudit,
/// Citus, PostgreSQL's own) get:
///
/// - for a `SET`/`RESET` of a key setting, a copy with the value masked
///   (`pazpaz_core::set_statement`), so that pg_stat_statements never
///   stores a key, wrapped or not, and pgaudit never logs one; the statement
///   itself runs from its parse tree. Unchanged when Citus is about to
///   forward the statement's text to the workers (a `SET LOCAL` that
///   `set_keys` or `forward_keys` runs, nested, with
///   `citus.propagate_set_commands = 'local'`; pg_stat_statements by default
///   does not track nested statements). A client's own SET LOCAL of a key
///   is masked even then, so Citus forwards only the mask and the workers
///   refuse it: set keys for Citus with `set_keys(…, true)`;
/// - with Citus loaded, for any utility statement sent in one string with
///   others, a copy in which everything but this statement is blanked out
///   (same length, so every position in the parse tree still points where
///   it did). Citus sends some statements' text as it is given — a
///   forwarded `SET LOCAL`, `CREATE INDEX`, `ALTER TABLE … ADD CONSTRAINT`
///   — which for `CREATE INDEX …; SELECT … '<term>' …` would otherwise be
///   the whole string, logged by every worker.
///
/// This hook sees the statement first only when the library comes after
/// pg_stat_statements and pgaudit in shared_preload_libraries (README).
///
/// # Safety
/// `pstmt` and `query_string` are ProcessUtility's arguments.
unsafe fn text_for_other_hooks(
    pstmt: *mut pg_sys::PlannedStmt,
    query_string: *const std::ffi::c_char,
) -> *const std::ffi::c_char {
    // SAFETY: ProcessUtility's planned statement and its utility node.
    let stmt = unsafe { (*pstmt).utilityStmt };
    if query_string.is_null() || stmt.is_null() {
        return query_string;
    }
    // SAFETY: a node of the parse tree; a VariableSetStmt's name is a C
    // string of it.
    let mask = unsafe {
        (*stmt).type_ == pg_sys::NodeTag::T_VariableSetStmt && {
            let set = &*stmt.cast::<pg_sys::VariableSetStmt>();
            let secret = !set.name.is_null() && {
                let name = std::ffi::CStr::from_ptr(set.name).to_bytes();
                [gucs::KEY, gucs::KEYS, gucs::INDEX_KEY, gucs::INDEX_KEY_NEXT, gucs::TRANSPORT]
                    .iter()
                    .any(|n| n.to_bytes().eq_ignore_ascii_case(name))
            };
            secret && !(set.is_local && FORWARDED_SET.get() && crate::distributed::forwards_set_local())
        }
    };
    // SAFETY: the statement's source text, NUL-terminated.
    let whole = unsafe { std::ffi::CStr::from_ptr(query_string) }.to_bytes();
    // SAFETY: ProcessUtility's planned statement.
    let (start, len) = unsafe { ((*pstmt).stmt_location, (*pstmt).stmt_len) };
    let start = usize::try_from(start).unwrap_or(0).min(whole.len());
    let len = usize::try_from(len).ok().filter(|&l| l > 0).unwrap_or(whole.len() - start);
    let end = (start + len).min(whole.len());
    let blank = crate::distributed::citus_is_loaded() && (start > 0 || end < whole.len());
    if !mask && !blank {
        return query_string;
    }
    // SAFETY: a copy of the same length, NUL-terminated, palloc'd in the
    // statement's memory context.
    unsafe {
        let copy = pg_sys::palloc(whole.len() + 1).cast::<u8>();
        let out = std::slice::from_raw_parts_mut(copy, whole.len() + 1);
        out[..whole.len()].copy_from_slice(whole);
        out[whole.len()] = 0;
        if blank {
            // (Newlines kept: line numbers stay.)
            let (head, rest) = out[..whole.len()].split_at_mut(start);
            for b in head.iter_mut().chain(rest[end - start..].iter_mut()) {
                if *b != b'\n' {
                    *b = b' ';
                }
            }
        }
        if mask {
            pazpaz_core::set_statement::mask_value(&mut out[start..end]);
        }
        copy.cast()
    }
}

#[pg_guard]
extern "C-unwind" fn after_utility(target: Target) {
    // SAFETY: inside the statement's transaction; makes its catalog changes
    // visible to the check's queries.
    unsafe { pg_sys::CommandCounterIncrement() };
    check(target);
}
