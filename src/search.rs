//! Search on encrypted columns: the SQL functions of blind indexes (exact
//! match) and match tokens (substring match), the trigger that keeps a
//! table's token column current, and the lookups that read an index's
//! definition from that trigger. The formats are `pazpaz_core::blind_index`;
//! the procedures that add and drop indexes are `sql/search.sql`.
//!
//! An index's definition lives in its trigger's arguments (so it moves with
//! the table through pg_dump, and goes away with it):
//! `(MARKER, 'exact'|'match', source column, token column, source type,
//! context, normalization, bits, index key fingerprint)`. The trigger and
//! the lookups use a definition only when it is registered for their own
//! table in the extension's `search_indexes` (`check_registered`).

use std::cell::{Cell, RefCell};
use std::convert::Infallible;
use std::ffi::CStr;
use std::num::NonZeroUsize;
use std::rc::Rc;

use pazpaz_core::blind_index::{check_index_bits, check_token_bits, index_len, DerivedKey, Kind, Normalize};
use pazpaz_core::Error;
use pgrx::heap_tuple::PgHeapTuple;
use pgrx::prelude::*;
use pgrx::{pg_sys, AllocatedByPostgres, AnyElement, FromDatum, IntoDatum, PgRelation, PgTupleDesc};

use crate::backend_local::{BackendLocal, LocalCell};
use crate::encrypted_text::{encrypted_text_to_text, EncryptedText};
use crate::error::{raise, OrRaise};
use crate::field_functions::decrypt_field;
use crate::index_keys;
use crate::varlena::{Bytea, Text, Varlena, VarlenaBuf};
use crate::versioned::{decrypt_field_versioned, Jsonb};

/// First trigger argument of every search index.
const MARKER: &str = "pazpaz_crypto search v1";
const NARGS: usize = 9;

/// Which key a computation uses.
enum KeyChoice<'a> {
    /// `pazpaz.index_key`.
    Current,
    /// The index key setting whose key has this fingerprint (an index names
    /// the key it was built with); `index` names the index in errors (built
    /// only for an error: the trigger runs per row).
    Fingerprint { fingerprint: &'a str, index: &'a dyn Fn() -> String },
}

fn with_derived<R>(choice: &KeyChoice<'_>, kind: Kind, context: &[u8], f: impl FnOnce(&mut DerivedKey) -> R) -> R {
    match choice {
        KeyChoice::Current => index_keys::with_current(kind, context, f),
        KeyChoice::Fingerprint { fingerprint, index } => {
            index_keys::with_fingerprint(fingerprint, index, kind, context, f)
        }
    }
    .or_raise()
}

fn as_text(bytes: &[u8]) -> &str {
    std::str::from_utf8(bytes).map_err(|_| Error::NotUtf8).or_raise()
}

/// Lets a long computation be cancelled (statement_timeout, a cancel
/// request): PostgreSQL's ERROR unwinds through the Rust frames.
fn tick() {
    pgrx::check_for_interrupts!();
}

fn exact(choice: &KeyChoice<'_>, value: &[u8], context: &[u8], normalize: Normalize, bits: u32) -> Bytea {
    let mut out = VarlenaBuf::alloc(index_len(bits));
    match normalize {
        // Any size: the HMAC streams over the value in place.
        Normalize::None => with_derived(choice, Kind::Exact, context, |d| {
            d.blind_index_ticking(value, bits, out.data_mut(), &mut tick)
        }),
        _ => {
            let v = as_text(value);
            with_derived(choice, Kind::Exact, context, |d| {
                d.blind_index_of(v, normalize, bits, out.data_mut(), &mut tick)
            })
            .or_raise()
        }
    }
    Bytea::from(out)
}

fn tokens(choice: &KeyChoice<'_>, value: &[u8], context: &[u8], normalize: Normalize, bits: u32) -> Vec<i32> {
    let v = as_text(value);
    with_derived(choice, Kind::Tokens, context, |d| d.tokens_of(v, normalize, bits, &mut tick)).or_raise()
}

fn query_tokens(choice: &KeyChoice<'_>, query: &[u8], context: &[u8], normalize: Normalize, bits: u32) -> Vec<i32> {
    let v = as_text(query);
    with_derived(choice, Kind::Tokens, context, |d| d.query_tokens_of(v, normalize, bits, &mut tick)).or_raise()
}

fn fingerprint_choice<'a>(fingerprint: &'a str) -> KeyChoice<'a> {
    KeyChoice::Fingerprint { fingerprint, index: &|| "this index".to_owned() }
}

// ---- SQL functions ------------------------------------------------------------

/// The blind index of `value`: HMAC-SHA-256 under the key derived from
/// `pazpaz.index_key` for `context`, truncated to `bits`.
#[pg_extern(stable, strict, parallel_safe, cost = 10)]
fn blind_index(value: Text, context: Text, normalization: default!(&str, "'none'"), bits: default!(i32, 256)) -> Bytea {
    let normalize = Normalize::parse(normalization).or_raise();
    let bits = check_index_bits(bits).or_raise();
    exact(&KeyChoice::Current, value.0.as_bytes(), context.0.as_bytes(), normalize, bits)
}

/// As `blind_index`, under the index key setting whose key has this
/// fingerprint (`index_key_status()`): for rebuilding an index under the
/// next key during a rotation.
#[pg_extern(stable, strict, parallel_safe, cost = 10, name = "blind_index")]
fn blind_index_with_key(value: Text, context: Text, normalization: &str, bits: i32, key_fingerprint: &str) -> Bytea {
    let normalize = Normalize::parse(normalization).or_raise();
    let bits = check_index_bits(bits).or_raise();
    exact(&fingerprint_choice(key_fingerprint), value.0.as_bytes(), context.0.as_bytes(), normalize, bits)
}

/// The match tokens of a value to index: sorted, distinct `int4`s, one per
/// trigram; empty for fewer than three characters.
#[pg_extern(stable, strict, parallel_safe, cost = 20)]
fn blind_tokens(
    value: Text,
    context: Text,
    normalization: default!(&str, "'none'"),
    bits: default!(i32, 20),
) -> Vec<i32> {
    let normalize = Normalize::parse(normalization).or_raise();
    let bits = check_token_bits(bits).or_raise();
    tokens(&KeyChoice::Current, value.0.as_bytes(), context.0.as_bytes(), normalize, bits)
}

/// As `blind_tokens`, under the key with this fingerprint.
#[pg_extern(stable, strict, parallel_safe, cost = 20, name = "blind_tokens")]
fn blind_tokens_with_key(
    value: Text,
    context: Text,
    normalization: &str,
    bits: i32,
    key_fingerprint: &str,
) -> Vec<i32> {
    let normalize = Normalize::parse(normalization).or_raise();
    let bits = check_token_bits(bits).or_raise();
    tokens(&fingerprint_choice(key_fingerprint), value.0.as_bytes(), context.0.as_bytes(), normalize, bits)
}

/// The tokens of a search query: as `blind_tokens`, but a query of fewer
/// than three characters is an error (it would match every row).
#[pg_extern(stable, strict, parallel_safe, cost = 20)]
fn blind_search_tokens(
    query: Text,
    context: Text,
    normalization: default!(&str, "'none'"),
    bits: default!(i32, 20),
) -> Vec<i32> {
    let normalize = Normalize::parse(normalization).or_raise();
    let bits = check_token_bits(bits).or_raise();
    query_tokens(&KeyChoice::Current, query.0.as_bytes(), context.0.as_bytes(), normalize, bits)
}

/// The blind index of `value` as the index on `tbl.token_column` computes
/// it (its context, normalization, bits and key), for
/// `WHERE email_bidx = blind_index_for('clients', 'email_bidx', $1)`.
#[pg_extern(stable, strict, parallel_safe, cost = 50)]
fn blind_index_for(tbl: PgRelation, token_column: &str, value: Text) -> Bytea {
    let def = definition(&tbl, token_column, Kind::Exact);
    let index = || def.name(&tbl);
    let choice = KeyChoice::Fingerprint { fingerprint: &def.fingerprint, index: &index };
    exact(&choice, value.0.as_bytes(), def.context.as_bytes(), def.normalize, def.bits)
}

/// The tokens of a search query as the match index on `tbl.token_column`
/// computes them, for
/// `WHERE name_tokens @> blind_search_tokens_for('clients', 'name_tokens', $1)`.
#[pg_extern(stable, strict, parallel_safe, cost = 50)]
fn blind_search_tokens_for(tbl: PgRelation, token_column: &str, query: Text) -> Vec<i32> {
    let def = definition(&tbl, token_column, Kind::Tokens);
    let index = || def.name(&tbl);
    let choice = KeyChoice::Fingerprint { fingerprint: &def.fingerprint, index: &index };
    query_tokens(&choice, query.0.as_bytes(), def.context.as_bytes(), def.normalize, def.bits)
}

/// Stands in for a lookup (`blind_index_for`, `blind_equals`) whose value
/// was not known when a query on a Citus table was planned
/// (`citus_lookups.rs`): it carries no value (nothing of the search term
/// reaches a worker) and raises wherever it runs. VOLATILE: the planner's
/// estimates call STABLE functions of constants, and that plan (a generic
/// plan the plan cache builds only to compare costs) must plan.
#[pg_extern(volatile, strict, parallel_safe)]
fn search_lookup_unplanned_exact(_token_column: &str) -> Bytea {
    raise(Error::LookupNotPlanned)
}

/// As `search_lookup_unplanned_exact`, for `blind_search_tokens_for` and
/// `blind_contains`.
#[pg_extern(volatile, strict, parallel_safe)]
fn search_lookup_unplanned_match(_token_column: &str) -> Vec<i32> {
    raise(Error::LookupNotPlanned)
}

/// The lookups by index.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Lookup {
    /// `blind_index_for`: a blind index (bytea).
    Exact,
    /// `blind_search_tokens_for`: a query's match tokens (int4[]).
    Match,
}

/// A call of one of the lookup functions, by the shape of its arguments.
#[derive(Clone, Copy)]
pub(crate) struct LookupCall {
    pub lookup: Lookup,
    /// The table is given as text (the overloads a literal call picks), not
    /// as regclass.
    pub table_as_text: bool,
    /// `blind_equals` / `blind_contains`: a token column first, compared
    /// with the lookup's result (`=` / `@>`).
    pub compares: bool,
}

impl Lookup {
    /// The lookup's result for `value`, computed now (for a call whose
    /// arguments are known when it is planned: `citus_lookups.rs`).
    pub(crate) fn compute(self, tbl: pg_sys::Oid, token_column: &str, value: &[u8]) -> pg_sys::Datum {
        // SAFETY: the table the query names, locked as its planning locks
        // it; closed when `rel` is dropped.
        let rel = unsafe { PgRelation::with_lock(tbl, pg_sys::AccessShareLock as pg_sys::LOCKMODE) };
        let kind = match self {
            Lookup::Exact => Kind::Exact,
            Lookup::Match => Kind::Tokens,
        };
        let def = definition(&rel, token_column, kind);
        let index = || def.name(&rel);
        let choice = KeyChoice::Fingerprint { fingerprint: &def.fingerprint, index: &index };
        let ctx = def.context.as_bytes();
        let datum = match self {
            Lookup::Exact => exact(&choice, value, ctx, def.normalize, def.bits).into_datum(),
            Lookup::Match => query_tokens(&choice, value, ctx, def.normalize, def.bits).into_datum(),
        };
        datum.unwrap_or_else(|| raise(Error::BadSearchIndex { index: index() }))
    }

    /// The result's type.
    pub(crate) fn result_type(self) -> pg_sys::Oid {
        match self {
            Lookup::Exact => pg_sys::BYTEAOID,
            Lookup::Match => pg_sys::INT4ARRAYOID,
        }
    }

    /// The stand-in of this lookup when its value is not known.
    pub(crate) fn unplanned(self, functions: &LookupFunctions) -> pg_sys::Oid {
        match self {
            Lookup::Exact => functions.unplanned_exact,
            Lookup::Match => functions.unplanned_match,
        }
    }
}

/// The lookup functions of the extension, by oid (`lookup_functions`).
#[derive(Clone, Copy)]
pub(crate) struct LookupFunctions {
    /// (function, its call shape).
    calls: [(pg_sys::Oid, LookupCall); 6],
    unplanned_exact: pg_sys::Oid,
    unplanned_match: pg_sys::Oid,
}

impl LookupFunctions {
    /// Whether the extension is in this database.
    pub(crate) fn exist(&self) -> bool {
        self.calls[0].0 != pg_sys::InvalidOid
    }

    /// The lookup call `funcid` is, if it is one.
    pub(crate) fn call(&self, funcid: pg_sys::Oid) -> Option<LookupCall> {
        if funcid == pg_sys::InvalidOid {
            return None;
        }
        self.calls.iter().find(|(f, _)| *f == funcid).map(|(_, c)| *c)
    }
}

const fn shape(lookup: Lookup, table_as_text: bool, compares: bool) -> LookupCall {
    LookupCall { lookup, table_as_text, compares }
}

const NO_FUNCTIONS: LookupFunctions = LookupFunctions {
    calls: [(pg_sys::InvalidOid, shape(Lookup::Exact, false, false)); 6],
    unplanned_exact: pg_sys::InvalidOid,
    unplanned_match: pg_sys::InvalidOid,
};

/// (extension oid, its lookup functions), once looked up.
static LOOKUP_FUNCTIONS: BackendLocal<Cell<(pg_sys::Oid, LookupFunctions)>> =
    BackendLocal::new(Cell::new((pg_sys::InvalidOid, NO_FUNCTIONS)));

/// The lookup functions in the extension's schema (none while the extension
/// is not created in this database).
pub(crate) fn lookup_functions() -> LookupFunctions {
    // SAFETY: a catalog lookup by name (missing_ok).
    let ext = unsafe { pg_sys::get_extension_oid(c"pazpaz_crypto".as_ptr(), true) };
    if ext == pg_sys::InvalidOid {
        return NO_FUNCTIONS;
    }
    let (cached, functions) = LOOKUP_FUNCTIONS.get();
    if cached == ext {
        return functions;
    }
    let nsp = extension_namespace();
    let find = |name: &CStr, args: &[pg_sys::Oid]| {
        // SAFETY: a function lookup by schema, name and argument types, in
        // the current memory context (missing_ok: InvalidOid if absent).
        unsafe {
            let nspname = pg_sys::get_namespace_name(nsp);
            if nspname.is_null() {
                return pg_sys::InvalidOid;
            }
            let names = pg_sys::list_make2_impl(
                pg_sys::NodeTag::T_List,
                pg_sys::ListCell { ptr_value: pg_sys::makeString(nspname).cast() },
                pg_sys::ListCell { ptr_value: pg_sys::makeString(pg_sys::pstrdup(name.as_ptr())).cast() },
            );
            let n = i32::try_from(args.len()).unwrap_or(0);
            pg_sys::LookupFuncName(names, n, args.as_ptr(), true)
        }
    };
    use pg_sys::{BYTEAOID, INT4ARRAYOID, REGCLASSOID, TEXTOID};
    let functions = LookupFunctions {
        calls: [
            (find(c"blind_index_for", &[REGCLASSOID, TEXTOID, TEXTOID]), shape(Lookup::Exact, false, false)),
            (find(c"blind_search_tokens_for", &[REGCLASSOID, TEXTOID, TEXTOID]), shape(Lookup::Match, false, false)),
            (find(c"blind_index_for", &[TEXTOID, TEXTOID, TEXTOID]), shape(Lookup::Exact, true, false)),
            (find(c"blind_search_tokens_for", &[TEXTOID, TEXTOID, TEXTOID]), shape(Lookup::Match, true, false)),
            (find(c"blind_equals", &[BYTEAOID, TEXTOID, TEXTOID, TEXTOID]), shape(Lookup::Exact, true, true)),
            (find(c"blind_contains", &[INT4ARRAYOID, TEXTOID, TEXTOID, TEXTOID]), shape(Lookup::Match, true, true)),
        ],
        unplanned_exact: find(c"search_lookup_unplanned_exact", &[TEXTOID]),
        unplanned_match: find(c"search_lookup_unplanned_match", &[TEXTOID]),
    };
    LOOKUP_FUNCTIONS.set((ext, functions));
    functions
}

/// One row per index key setting that is set: its name and the key's
/// fingerprint (8 hex digits of a domain-separated SHA-256; never the key).
#[pg_extern(stable, strict, parallel_safe)]
fn index_key_status() -> TableIterator<'static, (name!(setting, String), name!(fingerprint, String))> {
    let rows = index_keys::status().or_raise();
    TableIterator::new(rows.into_iter().map(|(s, f)| (s.to_owned(), f)))
}

/// Checks the parameters of an index before a procedure changes the table
/// (so bad ones fail before any DDL) and returns the fingerprint of the key
/// the index will be built with: `pazpaz.index_key` ('current') or
/// `pazpaz.index_key_next` ('next', during an index key rotation). Internal
/// to `sql/search.sql`.
#[pg_extern(stable, strict, parallel_safe)]
fn search_index_check(kind: &str, normalization: &str, bits: i32, index_key: &str) -> String {
    Normalize::parse(normalization).or_raise();
    match kind {
        "exact" => drop(check_index_bits(bits).or_raise()),
        _ => drop(check_token_bits(bits).or_raise()),
    }
    let name = match index_key {
        "current" => "pazpaz.index_key",
        "next" => "pazpaz.index_key_next",
        _ => raise(Error::IndexKeyChoice),
    };
    let status = index_keys::status().or_raise();
    match status.into_iter().find(|(s, _)| *s == name) {
        Some((_, f)) => f,
        None => raise(Error::MissingIndexKey { name }),
    }
}

// ---- index definitions ----------------------------------------------------------

#[derive(Clone, Copy, PartialEq, Eq)]
enum Source {
    EncryptedText,
    Bytea,
    Jsonb,
}

impl Source {
    fn parse(s: &str) -> Option<Source> {
        match s {
            "encrypted_text" => Some(Source::EncryptedText),
            "bytea" => Some(Source::Bytea),
            "jsonb" => Some(Source::Jsonb),
            _ => None,
        }
    }
    fn name(self) -> &'static str {
        match self {
            Source::EncryptedText => "encrypted_text",
            Source::Bytea => "bytea",
            Source::Jsonb => "jsonb",
        }
    }
}

/// A search index, as its trigger's arguments define it.
struct Definition {
    kind: Kind,
    source: String,
    token_column: String,
    source_type: Source,
    context: String,
    normalize: Normalize,
    bits: u32,
    fingerprint: String,
}

impl Definition {
    fn parse(args: &[&CStr]) -> Option<Definition> {
        // Nine, or ten with the binding of a Citus table (`binding`).
        if !(args.len() == NARGS || args.len() == NARGS + 1) || args[0].to_bytes() != MARKER.as_bytes() {
            return None;
        }
        let s = |i: usize| args[i].to_str().ok();
        let kind = match s(1)? {
            "exact" => Kind::Exact,
            "match" => Kind::Tokens,
            _ => return None,
        };
        let bits: i32 = s(7)?.parse().ok()?;
        let bits = match kind {
            Kind::Exact => check_index_bits(bits).ok()?,
            Kind::Tokens => check_token_bits(bits).ok()?,
        };
        Some(Definition {
            kind,
            source: s(2)?.to_owned(),
            token_column: s(3)?.to_owned(),
            source_type: Source::parse(s(4)?)?,
            context: s(5)?.to_owned(),
            normalize: Normalize::parse(s(6)?).ok()?,
            bits,
            fingerprint: s(8)?.to_owned(),
        })
    }

    /// `table.token_column`, for errors (names only, never values).
    fn name(&self, rel: &PgRelation) -> String {
        format!("{}.{}", rel.name(), self.token_column)
    }
}

/// The arguments of a trigger, borrowed from the relcache entry.
///
/// # Safety
/// `t` must be a trigger of an open relation's trigger descriptor (or of a
/// firing trigger), valid while the result is used.
unsafe fn trigger_args(t: &pg_sys::Trigger) -> Vec<&CStr> {
    let n = usize::try_from(t.tgnargs).unwrap_or(0);
    if n == 0 || t.tgargs.is_null() {
        return Vec::new();
    }
    // SAFETY: PostgreSQL keeps `tgnargs` NUL-terminated strings at `tgargs`
    // (the caller's contract for `t`).
    unsafe { std::slice::from_raw_parts(t.tgargs, n).iter().map(|&p| CStr::from_ptr(p)).collect() }
}

/// The definition of the search index of `kind` on `rel.token_column`.
fn definition(rel: &PgRelation, token_column: &str, kind: Kind) -> Definition {
    // The caller's string is named only when it is a column of the table:
    // otherwise it may be anything, a value passed in the wrong place
    // included, and the error (which the log filter passes as the
    // extension's own) must not repeat it.
    let not_found = || {
        // SAFETY: `rel` is open; its tuple descriptor lives as long.
        let tupdesc = unsafe { PgTupleDesc::from_pg_unchecked(rel.rd_att) };
        if tupdesc.iter().any(|a| !a.attisdropped && a.name() == token_column) {
            raise(Error::BadSearchIndex { index: format!("{}.{}", rel.name(), token_column) });
        }
        raise(Error::NoSearchIndex { table: rel.name().to_owned() });
    };
    // SAFETY: `rel` is open (PgRelation holds a lock), so its relcache entry
    // and trigger descriptor stay valid for this call.
    let desc = unsafe { (*rel.as_ptr()).trigdesc };
    if desc.is_null() {
        not_found();
    }
    // SAFETY: a non-null trigger descriptor holds `numtriggers` triggers.
    let triggers = unsafe {
        let d = &*desc;
        std::slice::from_raw_parts(d.triggers, usize::try_from(d.numtriggers).unwrap_or(0))
    };
    for t in triggers {
        // SAFETY: a trigger of the open relation's descriptor.
        let args = unsafe { trigger_args(t) };
        if (args.len() == NARGS || args.len() == NARGS + 1)
            && args[0].to_bytes() == MARKER.as_bytes()
            && args[3].to_bytes() == token_column.as_bytes()
        {
            match Definition::parse(&args) {
                Some(d) if d.kind == kind => {
                    check_registered(rel, t, &args, &|| d.name(rel));
                    return d;
                }
                Some(d) => {
                    let (actual, function) = match d.kind {
                        Kind::Exact => ("blind", "blind_index_for"),
                        Kind::Tokens => ("match", "blind_search_tokens_for"),
                    };
                    raise(Error::SearchIndexKind { index: d.name(rel), actual, function })
                }
                None => not_found(),
            }
        }
    }
    not_found();
    unreachable!()
}

// ---- the registry ----------------------------------------------------------------

/// Triggers whose definitions were found registered for their tables in
/// this backend: (table, trigger, its arguments as pg_trigger keeps them).
/// The arguments are part of the key (CREATE OR REPLACE TRIGGER keeps the
/// trigger's oid); a registry row goes only with its trigger.
static REGISTERED: LocalCell<Vec<(pg_sys::Oid, pg_sys::Oid, Vec<u8>)>> = BackendLocal::new(RefCell::new(Vec::new()));
const MAX_REGISTERED: usize = 256;
/// (extension oid, its schema), once looked up.
static EXTENSION: BackendLocal<Cell<(pg_sys::Oid, pg_sys::Oid)>> =
    BackendLocal::new(Cell::new((pg_sys::InvalidOid, pg_sys::InvalidOid)));

/// Runs `f` over the rows of a table, under a fresh snapshot (the query's in
/// a parallel query), without
/// privilege checks (the registry must be readable by every writer of an
/// indexed table, whatever its grants on the extension's schema); `f`
/// returns false to stop.
///
/// # Safety
/// `relid` must be a table; `f` must not keep the tuple past its call.
unsafe fn scan_table(relid: pg_sys::Oid, mut f: impl FnMut(pg_sys::HeapTuple, pg_sys::TupleDesc) -> bool) {
    // SAFETY: an ordinary heap scan under a registered snapshot; every
    // resource is released here, or by the transaction's abort when `f` or
    // PostgreSQL raises.
    unsafe {
        let lock = pg_sys::AccessShareLock as pg_sys::LOCKMODE;
        let rel = pg_sys::table_open(relid, lock);
        // In a parallel query (its leader or a worker) PostgreSQL forbids
        // taking a new snapshot: the query's own, which every participant
        // shares (a parallel query writes nothing).
        let current =
            if pg_sys::IsInParallelMode() { pg_sys::GetActiveSnapshot() } else { pg_sys::GetLatestSnapshot() };
        let snapshot = pg_sys::RegisterSnapshot(current);
        let scan = pg_sys::systable_beginscan(rel, pg_sys::InvalidOid, false, snapshot, 0, std::ptr::null_mut());
        loop {
            let tuple = pg_sys::systable_getnext(scan);
            if tuple.is_null() || !f(tuple, (*rel).rd_att) {
                break;
            }
        }
        pg_sys::systable_endscan(scan);
        pg_sys::UnregisterSnapshot(snapshot);
        pg_sys::table_close(rel, lock);
    }
}

/// Column `n` of a tuple (None for NULL).
///
/// # Safety
/// `tuple` is described by `desc` and has at least `n` columns.
unsafe fn column(tuple: pg_sys::HeapTuple, desc: pg_sys::TupleDesc, n: usize) -> Option<pg_sys::Datum> {
    let n = NonZeroUsize::new(n).expect("columns count from 1");
    // SAFETY: per the contract.
    unsafe { pgrx::heap_getattr_raw(tuple, n, desc) }
}

/// The schema the extension is installed in.
fn extension_namespace() -> pg_sys::Oid {
    // SAFETY: a catalog lookup by name (raises if the extension is gone,
    // which cannot be while its trigger or function runs).
    let ext = unsafe { pg_sys::get_extension_oid(c"pazpaz_crypto".as_ptr(), false) };
    let (cached, nsp) = EXTENSION.get();
    if cached == ext {
        return nsp;
    }
    let mut nsp = pg_sys::InvalidOid;
    // SAFETY: pg_extension's columns 1 (oid) and 4 (extnamespace) are oids.
    unsafe {
        scan_table(pg_sys::ExtensionRelationId, |tuple, desc| {
            let oid = column(tuple, desc, 1).and_then(|d| pg_sys::Oid::from_datum(d, false));
            if oid == Some(ext) {
                nsp = column(tuple, desc, 4).and_then(|d| pg_sys::Oid::from_datum(d, false)).unwrap_or(nsp);
                return false;
            }
            true
        })
    };
    EXTENSION.set((ext, nsp));
    nsp
}

/// Refuses a search index whose definition (the trigger `t`'s arguments) is
/// not registered for `rel` in the extension's `search_indexes` (see
/// `sql/search.sql`): a trigger whose arguments were copied from another
/// table's, which would make a key-holding session compute tokens under
/// that table's context for the copier. `index` names the index in the
/// error (called only then).
fn check_registered(rel: &PgRelation, t: &pg_sys::Trigger, args: &[&CStr], index: &dyn Fn() -> String) {
    let relid = rel.oid();
    if REGISTERED.borrow().iter().any(|(r, tg, a)| *r == relid && *tg == t.tgoid && args_are(args, a)) {
        return;
    }
    let found = if args.len() == NARGS + 1 {
        // A Citus table's definition carries its binding to the table's
        // owner: valid on the coordinator, on every shard, on nodes added
        // later, and nowhere else.
        binding_holds(rel, args, index)
    } else if on_citus_worker() {
        // A worker's registry is its own, written first by whoever owns a
        // table there: on a worker only bound definitions count.
        false
    } else {
        let nsp = extension_namespace();
        // SAFETY: a catalog lookup by name in a schema.
        let registry = unsafe { pg_sys::get_relname_relid(c"search_indexes".as_ptr(), nsp) };
        registry != pg_sys::InvalidOid && registered(registry, relid, args)
    };
    if !found {
        raise(Error::UnregisteredSearchIndex { index: index() });
    }
    let mut cache = REGISTERED.borrow_mut();
    if cache.len() >= MAX_REGISTERED {
        cache.clear();
    }
    cache.push((relid, t.tgoid, args_bytes(args)));
}

/// Whether the registry holds the definition `args` for the table `relid`.
fn registered(registry: pg_sys::Oid, relid: pg_sys::Oid, args: &[&CStr]) -> bool {
    let mut found = false;
    // SAFETY: the registry's columns are (rel regclass, token_column name,
    // definition text[]); regclass is an oid by value, the array is
    // detoasted and copied by the conversion.
    unsafe {
        scan_table(registry, |tuple, desc| {
            let row_rel = column(tuple, desc, 1).and_then(|d| pg_sys::Oid::from_datum(d, false));
            if row_rel != Some(relid) {
                return true;
            }
            let def = column(tuple, desc, 3).and_then(|d| Vec::<Option<String>>::from_datum(d, false));
            found = def.is_some_and(|def| {
                def.len() == args.len()
                    && def.iter().zip(args).all(|(d, a)| d.as_deref().map(str::as_bytes) == Some(a.to_bytes()))
            });
            !found
        })
    };
    found
}

/// The domain of bindings: a context no text can be (text has no NUL), so
/// no index's derived key is a binding key.
const BINDING_CONTEXT: &[u8] = b"\0pazpaz_crypto search binding v1";

/// The binding of a search index definition (its nine arguments) to a
/// table, as hex: HMAC-SHA-256, under a key derived from the index key the
/// definition names, of the table's schema-qualified name, its owner's name
/// and the definition (each NUL-terminated: one parse only). A Citus
/// table's trigger carries it as a tenth argument; Citus copies the trigger
/// to every shard and to nodes added later (a shard verifies it as its
/// table, `bound_table`), and a copy on any other table, or on a table of
/// that name with another owner, does not verify.
fn binding(table: &BoundTable, definition: &[&CStr], index: &dyn Fn() -> String) -> String {
    let fingerprint = definition.get(8).and_then(|f| f.to_str().ok()).unwrap_or_default();
    let choice = KeyChoice::Fingerprint { fingerprint, index };
    let mut message = Vec::with_capacity(table.name.len() + table.owner.len() + 256);
    for part in [&table.name, &table.owner] {
        message.extend_from_slice(part.as_bytes());
        message.push(0);
    }
    message.extend_from_slice(&args_bytes(definition));
    let mac = with_derived(&choice, Kind::Exact, BINDING_CONTEXT, |d| d.blind_index(&message, 256));
    mac.iter().map(|b| format!("{b:02x}")).collect()
}

/// What a binding names: a table, by its schema-qualified name (oids differ
/// from node to node), and its owner.
struct BoundTable {
    name: String,
    owner: String,
}

impl BoundTable {
    fn of(rel: &PgRelation) -> BoundTable {
        // SAFETY: the relation is open, its pg_class row in the relcache;
        // the names are copied at once (the owner of a relation exists, and
        // so does its schema).
        unsafe {
            let owner = pg_sys::GetUserNameFromId((*rel.rd_rel).relowner, false);
            let nsp = pg_sys::get_namespace_name(rel.namespace_oid());
            let qualified = pg_sys::quote_qualified_identifier(nsp, (*rel.rd_rel).relname.data.as_ptr());
            BoundTable {
                name: CStr::from_ptr(qualified).to_string_lossy().into_owned(),
                owner: CStr::from_ptr(owner).to_string_lossy().into_owned(),
            }
        }
    }
}

/// The table a trigger on `rel` is bound as: a shard of a Citus table as its
/// table (Citus's metadata, pg_dist_shard, is on every node: a shard is
/// `<table>_<shard id>` in its table's schema, with its table's owner),
/// anything else as itself.
/// Names that Citus shortens for their shards (over about 50 bytes) are not
/// recognised, and their shards' triggers refuse to write (fail closed).
fn bound_table(rel: &PgRelation) -> BoundTable {
    citus_table_of_shard(rel).map_or_else(|| BoundTable::of(rel), |t| BoundTable::of(&t))
}

/// The Citus table `rel` is a shard of, if it is one.
fn citus_table_of_shard(rel: &PgRelation) -> Option<PgRelation> {
    let pg_catalog = pg_sys::Oid::from(pg_sys::PG_CATALOG_NAMESPACE);
    // SAFETY: a catalog lookup by name in pg_catalog.
    let dist_shard = unsafe { pg_sys::get_relname_relid(c"pg_dist_shard".as_ptr(), pg_catalog) };
    if dist_shard == pg_sys::InvalidOid {
        return None;
    }
    let name = rel.name();
    let (base, id) = name.rsplit_once('_')?;
    if id.is_empty() || id.starts_with('0') || !id.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let shard_id: i64 = id.parse().ok()?;
    let mut table = None;
    // SAFETY: pg_dist_shard's columns 1 (logicalrelid regclass) and 2
    // (shardid bigint) are by value.
    unsafe {
        scan_table(dist_shard, |tuple, desc| {
            if column(tuple, desc, 2).and_then(|d| i64::from_datum(d, false)) == Some(shard_id) {
                table = column(tuple, desc, 1).and_then(|d| pg_sys::Oid::from_datum(d, false));
                return false;
            }
            true
        })
    };
    let table = table.filter(|t| *t != rel.oid())?;
    // SAFETY: a table Citus's metadata names, opened to read its pg_class
    // row; closed when dropped.
    let logical = unsafe { PgRelation::with_lock(table, pg_sys::AccessShareLock as pg_sys::LOCKMODE) };
    // The owner check is what matters: a relation named like a shard placed
    // on another node can be made by anyone with CREATE on the schema, but
    // not with the table's owner.
    // SAFETY: both relations are open; their pg_class rows are in the relcache.
    let same_owner = unsafe { (*rel.rd_rel).relowner == (*logical.rd_rel).relowner };
    (same_owner && logical.name() == base && logical.namespace_oid() == rel.namespace_oid()).then_some(logical)
}

/// Whether the tenth argument of `args` binds the other nine to the table
/// `rel` is, or is a shard of (it needs the index key the definition names,
/// as the token does).
fn binding_holds(rel: &PgRelation, args: &[&CStr], index: &dyn Fn() -> String) -> bool {
    let (definition, given) = args.split_at(NARGS);
    let want = binding(&bound_table(rel), definition, index);
    // (Not a secret: the binding is in pg_trigger for everyone to read.)
    given.first().is_some_and(|g| g.to_bytes() == want.as_bytes())
}

/// Whether `relid` is a Citus table (distributed, reference or Citus local:
/// in Citus's pg_dist_partition).
pub(crate) fn is_citus_table(relid: pg_sys::Oid) -> bool {
    let pg_catalog = pg_sys::Oid::from(pg_sys::PG_CATALOG_NAMESPACE);
    // SAFETY: a catalog lookup by name in pg_catalog.
    let partition = unsafe { pg_sys::get_relname_relid(c"pg_dist_partition".as_ptr(), pg_catalog) };
    if partition == pg_sys::InvalidOid {
        return false;
    }
    let mut found = false;
    // SAFETY: pg_dist_partition's column 1 (logicalrelid) is a regclass.
    unsafe {
        scan_table(partition, |tuple, desc| {
            found = column(tuple, desc, 1).and_then(|d| pg_sys::Oid::from_datum(d, false)) == Some(relid);
            !found
        })
    };
    found
}

/// Whether this server is a Citus worker (its group in Citus's metadata is
/// not the coordinator's, 0).
fn on_citus_worker() -> bool {
    let pg_catalog = pg_sys::Oid::from(pg_sys::PG_CATALOG_NAMESPACE);
    // SAFETY: a catalog lookup by name in pg_catalog.
    let local_group = unsafe { pg_sys::get_relname_relid(c"pg_dist_local_group".as_ptr(), pg_catalog) };
    if local_group == pg_sys::InvalidOid {
        return false;
    }
    let mut worker = false;
    // SAFETY: pg_dist_local_group's column 1 (groupid) is an int4.
    unsafe {
        scan_table(local_group, |tuple, desc| {
            worker = column(tuple, desc, 1).and_then(|d| i32::from_datum(d, false)).is_some_and(|g| g > 0);
            false
        })
    };
    worker
}

/// The binding of the definition `args` to `tbl`'s owner, for the trigger
/// of a Citus table: only for the table's owner, and only with the index
/// key the definition names set. Internal to `sql/search.sql`.
#[pg_extern(stable, strict, parallel_safe)]
fn search_index_binding(tbl: PgRelation, args: Vec<String>) -> String {
    // SAFETY: the relation is open; GetUserId reads the current user.
    let owns = unsafe { (*tbl.rd_rel).relowner == pg_sys::GetUserId() };
    if !owns {
        raise(Error::UnregisteredSearchIndex { index: tbl.name().to_owned() });
    }
    let owned: Vec<std::ffi::CString> =
        args.into_iter().map(|a| std::ffi::CString::new(a).unwrap_or_default()).collect();
    let definition: Vec<&CStr> = owned.iter().map(|c| c.as_c_str()).collect();
    let Some(def) = Definition::parse(&definition).filter(|_| definition.len() == NARGS) else {
        raise(Error::BadSearchIndex { index: tbl.name().to_owned() })
    };
    let index = || def.name(&tbl);
    binding(&BoundTable::of(&tbl), &definition, &index)
}

/// Trigger arguments as pg_trigger keeps them: each followed by a NUL byte.
fn args_bytes(args: &[&CStr]) -> Vec<u8> {
    args.iter().flat_map(|a| a.to_bytes_with_nul().iter().copied()).collect()
}

/// Whether `args` are, byte for byte, the arguments kept as `stored`
/// (`args_bytes`), without building them.
fn args_are(args: &[&CStr], stored: &[u8]) -> bool {
    let mut rest = stored;
    for a in args {
        let Some((head, tail)) = rest.split_at_checked(a.to_bytes_with_nul().len()) else {
            return false;
        };
        if head != a.to_bytes_with_nul() {
            return false;
        }
        rest = tail;
    }
    rest.is_empty()
}

/// The definitions of the search index triggers this backend has fired:
/// (trigger, its arguments as `args_bytes`, the definition they parse to).
/// The trigger parses its arguments once, not per row; the arguments are
/// part of the key (CREATE OR REPLACE TRIGGER keeps the trigger's oid).
static TRIGGER_DEFINITIONS: LocalCell<Vec<TriggerDefinition>> = BackendLocal::new(RefCell::new(Vec::new()));
type TriggerDefinition = (pg_sys::Oid, Vec<u8>, Rc<Definition>);
const MAX_TRIGGER_DEFINITIONS: usize = 64;

/// The definition in the trigger `t`'s arguments `args` (None when they are
/// not a search index's).
fn trigger_definition(t: &pg_sys::Trigger, args: &[&CStr]) -> Option<Rc<Definition>> {
    let mut cache = TRIGGER_DEFINITIONS.borrow_mut();
    if let Some((_, _, d)) = cache.iter().find(|(tg, a, _)| *tg == t.tgoid && args_are(args, a)) {
        return Some(Rc::clone(d));
    }
    let def = Rc::new(Definition::parse(args)?);
    if cache.len() >= MAX_TRIGGER_DEFINITIONS {
        cache.clear();
    }
    cache.push((t.tgoid, args_bytes(args), Rc::clone(&def)));
    Some(def)
}

/// The number and type of the live column `name` of `tupdesc` (compared as
/// bytes: the trigger looks its two columns up per row).
fn column_of(tupdesc: &PgTupleDesc<'_>, name: &str) -> Option<(i16, pg_sys::Oid)> {
    let name = name.as_bytes();
    tupdesc
        .iter()
        .find(|a| {
            // SAFETY: NameData holds a NUL-terminated string.
            !a.attisdropped && unsafe { CStr::from_ptr(a.attname.data.as_ptr()) }.to_bytes() == name
        })
        .map(|a| (a.attnum, a.atttypid))
}

// ---- the trigger ---------------------------------------------------------------

/// The `encrypted_text` type's oid, once it has been checked (see
/// `is_encrypted_text`).
static ENCRYPTED_TEXT_OID: BackendLocal<Cell<pg_sys::Oid>> = BackendLocal::new(Cell::new(pg_sys::InvalidOid));

/// Whether `typid` is the `encrypted_text` of the schema that holds the
/// trigger function `func` (the extension's), found without the search_path.
fn is_encrypted_text(typid: pg_sys::Oid, func: pg_sys::Oid) -> bool {
    if typid == ENCRYPTED_TEXT_OID.get() {
        return true;
    }
    // SAFETY: catalog lookups by oid; each returns a palloc'd string (or
    // NULL for an unknown oid, checked) in the current memory context.
    let same = unsafe {
        let nsp = pg_sys::get_namespace_name(pg_sys::get_func_namespace(func));
        if nsp.is_null() {
            return false;
        }
        let quoted = CStr::from_ptr(pg_sys::quote_identifier(nsp));
        let qualified = pg_sys::format_type_extended(typid, -1, pg_sys::FORMAT_TYPE_FORCE_QUALIFY as pg_sys::bits16);
        let want = [quoted.to_bytes(), b".encrypted_text"].concat();
        !qualified.is_null() && CStr::from_ptr(qualified).to_bytes() == want.as_slice()
    };
    if same {
        ENCRYPTED_TEXT_OID.set(typid);
    }
    same
}

/// The plaintext of a source column's value, decrypted with the session's
/// data keys (a text datum in the current memory context).
fn decrypt_source(source: Source, datum: pg_sys::Datum) -> Text {
    // SAFETY: a non-null datum of the column's varlena type (checked against
    // `source` by the caller), valid for this call.
    let v = unsafe { Varlena::from_datum(datum) };
    match source {
        Source::EncryptedText => encrypted_text_to_text(EncryptedText(v)),
        Source::Bytea => decrypt_field(Bytea(v)),
        Source::Jsonb => decrypt_field_versioned(Jsonb(v)),
    }
}

/// The blind index (`exact_token`) or match tokens (`match_tokens`) of one
/// non-NULL source value under an index's definition: what the trigger
/// stores (`row_token`), and what the first walk of a backfill writes
/// (`search_backfill_exact`/`_match`); the same functions, so the two never
/// differ. The source is decrypted with the session's data keys.
fn exact_token(def: &Definition, source: pg_sys::Datum, index: &dyn Fn() -> String) -> Bytea {
    let plain = decrypt_source(def.source_type, source);
    let choice = KeyChoice::Fingerprint { fingerprint: &def.fingerprint, index };
    exact(&choice, plain.0.as_bytes(), def.context.as_bytes(), def.normalize, def.bits)
}

fn match_tokens(def: &Definition, source: pg_sys::Datum, index: &dyn Fn() -> String) -> Vec<i32> {
    let plain = decrypt_source(def.source_type, source);
    let choice = KeyChoice::Fingerprint { fingerprint: &def.fingerprint, index };
    tokens(&choice, plain.0.as_bytes(), def.context.as_bytes(), def.normalize, def.bits)
}

fn row_token(def: &Definition, source: pg_sys::Datum, index: &dyn Fn() -> String) -> Option<pg_sys::Datum> {
    match def.kind {
        Kind::Exact => exact_token(def, source, index).into_datum(),
        Kind::Tokens => match_tokens(def, source, index).into_datum(),
    }
}

/// The definition a backfill call computes with, kept in its FmgrInfo for
/// the rest of the statement: (table, token column, definition, the
/// index's name for errors).
type BackfillDefinition = Option<(pg_sys::Oid, String, Definition, String)>;

/// Runs `f` with the definition of the search index on `tbl.token_column`
/// and the index's name, for a backfill call of `source`, a value of its
/// source column (checked against the definition's source type). The first
/// walk of add_blind_index/add_match_index computes each token in its
/// UPDATE's SET while the index's trigger fires on INSERT only
/// (sql/search.sql: a BEFORE UPDATE row trigger makes PostgreSQL lock every
/// row first). The definition is the registered one of the table's own
/// trigger, read once per statement (no trigger can change while the
/// statement holds its table lock; a call for another table reads that
/// table's).
fn with_backfill_definition<R>(
    fcinfo: pg_sys::FunctionCallInfo,
    tbl: pg_sys::Oid,
    token_column: &str,
    source: &AnyElement,
    kind: Kind,
    f: impl FnOnce(&Definition, &str) -> R,
) -> R {
    // SAFETY: the FunctionCallInfo of this call; its fn_extra is ours (set
    // only here), dropped with the FmgrInfo's memory context.
    let mut cache = unsafe { pgrx::pg_func_extra(fcinfo, || None as BackfillDefinition) };
    if !matches!(&*cache, Some((t, c, _, _)) if *t == tbl && c == token_column) {
        // SAFETY: a catalog lookup by oid (NULL when there is no such relation).
        if unsafe { pg_sys::get_rel_name(tbl) }.is_null() {
            raise(Error::NoSearchIndex { table: tbl.to_u32().to_string() });
        }
        // SAFETY: an existing relation, locked until the end of the
        // transaction, as a statement locks the tables it reads.
        let rel = unsafe { PgRelation::with_lock(tbl, pg_sys::AccessShareLock as pg_sys::LOCKMODE) };
        let def = definition(&rel, token_column, kind);
        let name = def.name(&rel);
        *cache = Some((tbl, token_column.to_owned(), def, name));
    }
    let Some((_, _, def, name)) = &*cache else { unreachable!("set above") };
    // SAFETY: this call's own FmgrInfo.
    let func = unsafe { (*(*fcinfo).flinfo).fn_oid };
    let ok = match def.source_type {
        Source::Bytea => source.oid() == pg_sys::BYTEAOID,
        Source::Jsonb => source.oid() == pg_sys::JSONBOID,
        Source::EncryptedText => is_encrypted_text(source.oid(), func),
    };
    if !ok {
        raise(Error::SearchSourceType { index: name.clone(), expected: def.source_type.name() });
    }
    f(def, name)
}

/// The blind index the trigger of `tbl.token_column` computes for `source`
/// (`with_backfill_definition`). Internal to add_blind_index.
#[pg_extern(stable, strict, parallel_safe)]
fn search_backfill_exact(
    tbl: pg_sys::Oid,
    token_column: &str,
    source: AnyElement,
    fcinfo: pg_sys::FunctionCallInfo,
) -> Bytea {
    with_backfill_definition(fcinfo, tbl, token_column, &source, Kind::Exact, |def, name| {
        exact_token(def, source.datum(), &|| name.to_owned())
    })
}

/// The match tokens the trigger of `tbl.token_column` computes for `source`
/// (`with_backfill_definition`). Internal to add_match_index.
#[pg_extern(stable, strict, parallel_safe)]
fn search_backfill_match(
    tbl: pg_sys::Oid,
    token_column: &str,
    source: AnyElement,
    fcinfo: pg_sys::FunctionCallInfo,
) -> Vec<i32> {
    with_backfill_definition(fcinfo, tbl, token_column, &source, Kind::Tokens, |def, name| {
        match_tokens(def, source.datum(), &|| name.to_owned())
    })
}

/// Whether two values of a column (varlena, or NULL) hold the same bytes.
fn same_bytes(a: Option<pg_sys::Datum>, b: Option<pg_sys::Datum>) -> bool {
    match (a, b) {
        (None, None) => true,
        // SAFETY: non-null datums of the column's varlena type, read from
        // the trigger's tuples, valid for this call (detoasted if needed).
        (Some(a), Some(b)) => unsafe { Varlena::from_datum(a).as_bytes() == Varlena::from_datum(b).as_bytes() },
        _ => false,
    }
}

/// The name of a trigger that fires after the search index trigger `ours`
/// in this write and could change the row after its token is computed:
/// another BEFORE row trigger of the relation on this event (`update` or
/// INSERT) that fires in this session (`tgenabled` and
/// `session_replication_role`, as PostgreSQL decides) and, for an UPDATE
/// OF some columns, names one this UPDATE sets; a WHEN clause is not
/// evaluated (such a trigger counts). "After" is the position in the
/// relation's trigger array, the order PostgreSQL fires them in: the byte
/// order of their names, but catalog order in a session with
/// `ignore_system_indexes` (which any role may set at connection). Checked
/// on every write rather than when such a trigger is made, so that no way
/// of making, renaming or reordering one leaves a token stale: the write
/// fails instead.
///
/// # Safety
/// `td` is the firing trigger's data and `ours` its trigger.
unsafe fn before_trigger_after(td: &pg_sys::TriggerData, ours: &pg_sys::Trigger, update: bool) -> Option<String> {
    const ROW: i16 = 1 << 0;
    const BEFORE: i16 = 1 << 1;
    const INSERT: i16 = 1 << 2;
    const UPDATE: i16 = 1 << 4;
    const INSTEAD: i16 = 1 << 6;
    // SAFETY: per the contract, the relation is open; its descriptor's
    // array holds `numtriggers` triggers.
    let all = unsafe {
        let desc = (*td.tg_relation).trigdesc;
        if desc.is_null() || (*desc).numtriggers <= 0 {
            return None;
        }
        std::slice::from_raw_parts((*desc).triggers, usize::try_from((*desc).numtriggers).ok()?)
    };
    // (Not found cannot happen; then every other trigger counts.)
    let after = all.iter().position(|t| t.tgoid == ours.tgoid).map_or(0, |p| p + 1);
    let event = if update { UPDATE } else { INSERT };
    // SAFETY: a backend global, read in the backend's own thread.
    let replica = unsafe { pg_sys::SessionReplicationRole } == pg_sys::SESSION_REPLICATION_ROLE_REPLICA as i32;
    let fires_here = |t: &pg_sys::Trigger| match t.tgenabled as u8 {
        pg_sys::TRIGGER_FIRES_ALWAYS => true,
        pg_sys::TRIGGER_FIRES_ON_ORIGIN => !replica,
        pg_sys::TRIGGER_FIRES_ON_REPLICA => replica,
        _ => false,
    };
    let names_a_set_column = |t: &pg_sys::Trigger| {
        if !update || t.tgnattr <= 0 || t.tgattr.is_null() {
            return true;
        }
        // The set of updated columns is the one PostgreSQL tests UPDATE OF
        // against (offset by FirstLowInvalidHeapAttributeNumber).
        // SAFETY: `tgattr` holds `tgnattr` attribute numbers.
        unsafe {
            std::slice::from_raw_parts(t.tgattr, usize::try_from(t.tgnattr).unwrap_or(0)).iter().any(|&a| {
                pg_sys::bms_is_member(i32::from(a) - pg_sys::FirstLowInvalidHeapAttributeNumber, td.tg_updatedcols)
            })
        }
    };
    all.get(after..)?
        .iter()
        .find(|t| {
            t.tgtype & (ROW | BEFORE | INSTEAD) == ROW | BEFORE
                && t.tgtype & event != 0
                && !t.tgisinternal
                && t.tgfoid != ours.tgfoid
                && fires_here(t)
                && names_a_set_column(t)
        })
        // SAFETY: trigger names are NUL-terminated strings of the relcache entry.
        .map(|t| unsafe { CStr::from_ptr(t.tgname) }.to_string_lossy().into_owned())
}

/// Keeps a token column current: a BEFORE INSERT OR UPDATE row trigger
/// (every UPDATE, not only those naming the source column: an earlier
/// BEFORE trigger may change the source, and the UPDATE may name the token
/// column itself), created by `add_blind_index` / `add_match_index`.
///
/// On INSERT it always computes the token; on UPDATE it keeps the row as it
/// is only when neither the source nor the token column changed (byte for
/// byte) and the token is set exactly when the source is; otherwise it
/// computes the token again, so a token written by hand (another row's, to
/// answer that row's lookup, or NULL to hide a row) never stays. It
/// decrypts the source with the session's data keys and computes the token
/// with the index key the index was built with; without either key the
/// write fails (it never stores a wrong or empty token). A NULL source gives
/// a NULL token. Updates of other columns need no key.
#[pg_trigger]
fn blind_index_trigger<'a>(
    trigger: &'a PgTrigger<'a>,
) -> Result<Option<PgHeapTuple<'a, AllocatedByPostgres>>, Infallible> {
    let td = trigger.trigger_data();
    let t = trigger.trigger();
    // SAFETY: the firing trigger's own arguments, valid during the call.
    let args = unsafe { trigger_args(t) };
    // SAFETY: the relation of a firing trigger is open.
    let rel = unsafe { PgRelation::from_pg(td.tg_relation) };
    let Some(def) = trigger_definition(t, &args) else {
        raise(Error::BadSearchIndex { index: format!("trigger {} on {}", trigger.name().unwrap_or("?"), rel.name()) })
    };
    // The index's name, for errors only.
    let index = || def.name(&rel);
    let row_before = matches!(trigger.level(), pgrx::PgTriggerLevel::Row)
        && matches!(trigger.when(), Ok(pgrx::PgTriggerWhen::Before));
    let (tuple, old) = match trigger.op() {
        Ok(PgTriggerOperation::Insert) if row_before => (td.tg_trigtuple, None),
        Ok(PgTriggerOperation::Update) if row_before => (td.tg_newtuple, Some(td.tg_trigtuple)),
        _ => raise(Error::BadSearchIndex { index: index() }),
    };
    // SAFETY: the firing trigger's data and its trigger.
    if let Some(later) = unsafe { before_trigger_after(td, t, old.is_some()) } {
        raise(Error::TriggerAfterSearchIndex { index: index(), trigger: later });
    }
    // SAFETY: the relation is open; its tuple descriptor lives as long.
    let tupdesc = unsafe { PgTupleDesc::from_pg_unchecked(rel.rd_att) };
    let (Some((src_no, src_type)), Some((tok_no, tok_type))) =
        (column_of(&tupdesc, &def.source), column_of(&tupdesc, &def.token_column))
    else {
        raise(Error::BadSearchIndex { index: index() })
    };
    let want_tok = match def.kind {
        Kind::Exact => pg_sys::BYTEAOID,
        Kind::Tokens => pg_sys::INT4ARRAYOID,
    };
    let src_ok = match def.source_type {
        Source::Bytea => src_type == pg_sys::BYTEAOID,
        Source::Jsonb => src_type == pg_sys::JSONBOID,
        Source::EncryptedText => is_encrypted_text(src_type, t.tgfoid),
    };
    if tok_type != want_tok {
        raise(Error::BadSearchIndex { index: index() });
    }
    if !src_ok {
        raise(Error::SearchSourceType { index: index(), expected: def.source_type.name() });
    }
    let attno = |n: i16| {
        NonZeroUsize::new(usize::try_from(n).unwrap_or(0))
            .unwrap_or_else(|| raise(Error::BadSearchIndex { index: index() }))
    };
    let (src_no, tok_att) = (attno(src_no), attno(tok_no));
    // SAFETY: the trigger's new tuple, described by the relation's
    // descriptor; `src_no` and `tok_att` are two of its attributes.
    let (src, tok) = unsafe {
        (pgrx::heap_getattr_raw(tuple, src_no, rel.rd_att), pgrx::heap_getattr_raw(tuple, tok_att, rel.rd_att))
    };
    if let Some(old) = old {
        // SAFETY: the trigger's old tuple, of the same relation.
        let (old_src, old_tok) = unsafe {
            (pgrx::heap_getattr_raw(old, src_no, rel.rd_att), pgrx::heap_getattr_raw(old, tok_att, rel.rd_att))
        };
        if src.is_some() == tok.is_some() && same_bytes(src, old_src) && same_bytes(tok, old_tok) {
            // SAFETY: the trigger's own new tuple, returned unchanged.
            return Ok(Some(unsafe { PgHeapTuple::from_heap_tuple(tupdesc, tuple) }));
        }
    }
    if src.is_some() {
        check_registered(&rel, t, &args, &index);
    }
    let token = src.and_then(|d| row_token(&def, d, &index));
    let mut col = i32::from(tok_no);
    let mut value = token.unwrap_or(pg_sys::Datum::from(0));
    let mut isnull = token.is_none();
    // SAFETY: `tuple` and the descriptor as above; one column replaced by a
    // datum of its type (bytea or int4[]) allocated in this call's context.
    let new = unsafe { pg_sys::heap_modify_tuple_by_cols(tuple, rel.rd_att, 1, &mut col, &mut value, &mut isnull) };
    // SAFETY: a heap tuple PostgreSQL just built with this descriptor.
    Ok(Some(unsafe { PgHeapTuple::from_heap_tuple(tupdesc, new) }))
}
