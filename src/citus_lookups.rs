//! Lookups by search index on a Citus coordinator: their tokens computed
//! here, never their values sent to the workers.
//!
//! Citus sends a SELECT's stable function calls to the workers as SQL text,
//! bound parameters written in as literals: a lookup
//! `WHERE email_bidx = blind_index_for('clients', 'email_bidx', $1)` would
//! put the search term — a plaintext — into every shard query, worker log
//! and worker `pg_stat_activity`, and make every worker compute the token.
//! So before Citus plans a query (`distributed.rs` calls `fold` from its
//! planner hook), each lookup on a Citus table (`blind_index_for`,
//! `blind_search_tokens_for`, `blind_equals`, `blind_contains`) is decided:
//!
//! - its value is known when it is planned (a constant, a parameter with a
//!   bound value — a custom plan — or an immutable expression of them): the
//!   call is replaced by its result, a constant token. That is sound under
//!   plan caching: the result depends only on the value and the index's
//!   definition (its trigger's arguments, which name the index key by
//!   fingerprint), and the table goes into the plan's relation list, so a
//!   change of its triggers replans;
//! - its value reads columns of Citus tables and nothing else (a join on
//!   tokens): it stays, and runs where Citus runs it — its values are read
//!   where their shards are, not sent from the query's text;
//! - its value comes from rows written in the query (a column of VALUES, of
//!   a CTE, of a function or a subquery in FROM, of a local table, a
//!   sublink) or mixes columns with constants (`name::text || 'x'`): Citus
//!   would send those values, so the query is refused (0A000) before
//!   anything is sent;
//! - anything else — a generic plan's parameter, a stable function such as
//!   `current_setting`, the argument of a SQL function planned on its own —
//!   is not known yet: the call becomes a stand-in that carries no value
//!   and raises wherever it runs (`search_lookup_unplanned_*`), and a plan
//!   holding one gets a cost no custom plan reaches, so the plan cache keeps
//!   choosing custom plans; where the generic plan is the one that will run
//!   (`plan_cache_mode = force_generic_plan`), the query is refused at once.
//!
//! Lookups nested in a lookup's arguments are decided first. A query that
//! reads no Citus table is planned and run here only, and left as it is. A function of the
//! user's that calls a lookup is sent to the workers like any function call
//! with its arguments (README).
//!
//! Errors (no index, no index key) are raised here as the lookup would
//! raise them; the callbacks that PostgreSQL's tree walkers call are
//! `#[pg_guard]`, so an error never unwinds through PostgreSQL's frames.

use std::ffi::{c_int, c_void};

use pgrx::{pg_guard, pg_sys, FromDatum, PgList};

use pazpaz_core::Error;

use crate::error::raise;
use crate::search::{is_citus_table, lookup_functions, Lookup, LookupCall, LookupFunctions};

/// What `fold` did to a query, for its planned statement. Holds nothing
/// that needs dropping (an ERROR may longjmp past it).
#[derive(Clone, Copy)]
pub struct Folded {
    /// Tables whose lookups were folded (they join the plan's relation
    /// list), a List of oids in the planner's memory context.
    tables: *mut pg_sys::List,
    /// Whether a lookup was replaced by its stand-in.
    unplanned: bool,
}

impl Folded {
    const NONE: Folded = Folded { tables: std::ptr::null_mut(), unplanned: false };

    /// Applies this to the planned statement of the folded query.
    ///
    /// # Safety
    /// `stmt` is the planned statement the planner just returned.
    pub unsafe fn apply(self, stmt: *mut pg_sys::PlannedStmt) {
        if stmt.is_null() {
            return;
        }
        // SAFETY: per the contract; the lists are the planner's kind, in
        // its memory context.
        unsafe {
            (*stmt).relationOids = pg_sys::list_concat((*stmt).relationOids, self.tables);
            if self.unplanned && !(*stmt).planTree.is_null() {
                // The plan cache compares a generic plan's cost with the
                // custom plans' average: this one never wins (Citus itself
                // gives plans it would rather not see reused 3.4e30).
                let plan = &mut *(*stmt).planTree;
                plan.total_cost = plan.total_cost.max(UNPLANNED_COST);
            }
        }
    }
}

/// Higher than any plan's cost, Citus's deterrent included, and far from
/// overflowing when the plan cache adds costs up.
const UNPLANNED_COST: f64 = 1.0e300;

struct Context {
    functions: LookupFunctions,
    bound_params: pg_sys::ParamListInfo,
    /// The plan being made is the one that will run without its
    /// parameters' values (CURSOR_OPT_GENERIC_PLAN, plan_cache_mode =
    /// force_generic_plan), not one the plan cache only tries.
    generic: bool,
    /// The queries from the top down to the node being visited (to find
    /// what a Var refers to).
    queries: Vec<*mut pg_sys::Query>,
    folded: Folded,
}

/// Folds the lookups of `parse` (see the module comment).
///
/// # Safety
/// `parse` is the query the planner hook was given, `bound_params` its
/// bound parameters (or NULL).
pub unsafe fn fold(parse: *mut pg_sys::Query, cursor_options: c_int, bound_params: pg_sys::ParamListInfo) -> Folded {
    let functions = lookup_functions();
    // SAFETY: a read-only walk of the query.
    if parse.is_null() || !functions.exist() || !unsafe { reads_citus_tables(parse) } {
        // Planned and run here only: nothing is sent anywhere.
        return Folded::NONE;
    }
    let generic = cursor_options & pg_sys::CURSOR_OPT_GENERIC_PLAN as c_int != 0 || forced_generic_plans();
    let mut cx = Context { functions, bound_params, generic, queries: vec![parse], folded: Folded::NONE };
    // SAFETY: the planner may scribble on its input query (PostgreSQL's
    // callers hand it a copy); the walk replaces nodes in place.
    unsafe { query_mutate(parse, &mut cx as *mut Context as *mut c_void, pg_sys::QTW_DONT_COPY_QUERY as c_int) };
    cx.folded
}

/// Whether `plan_cache_mode` is `force_generic_plan`.
fn forced_generic_plans() -> bool {
    // SAFETY: GetConfigOption returns the setting's current value (a C
    // string owned by the GUC machinery), read at once.
    unsafe {
        let p = pg_sys::GetConfigOption(c"plan_cache_mode".as_ptr(), true, false);
        !p.is_null() && std::ffi::CStr::from_ptr(p).to_bytes() == b"force_generic_plan"
    }
}

type Mutator = unsafe extern "C-unwind" fn(*mut pg_sys::Node, *mut c_void) -> *mut pg_sys::Node;

/// `query_tree_mutator` across versions.
///
/// # Safety
/// As PostgreSQL's.
unsafe fn query_mutate(query: *mut pg_sys::Query, cx: *mut c_void, flags: c_int) -> *mut pg_sys::Query {
    // SAFETY: PostgreSQL's tree mutator with our callback; before 16 the
    // callback's declared type has no parameters (K&R), same ABI.
    unsafe {
        #[cfg(feature = "pg15")]
        {
            pg_sys::query_tree_mutator(
                query,
                Some(std::mem::transmute::<Mutator, unsafe extern "C-unwind" fn() -> *mut pg_sys::Node>(mutate)),
                cx,
                flags,
            )
        }
        #[cfg(not(feature = "pg15"))]
        {
            pg_sys::query_tree_mutator_impl(query, Some(mutate as Mutator), cx, flags)
        }
    }
}

/// `expression_tree_mutator` across versions.
///
/// # Safety
/// As PostgreSQL's.
unsafe fn expression_mutate(node: *mut pg_sys::Node, cx: *mut c_void) -> *mut pg_sys::Node {
    // SAFETY: as in `query_mutate`.
    unsafe {
        #[cfg(feature = "pg15")]
        {
            pg_sys::expression_tree_mutator(
                node,
                Some(std::mem::transmute::<Mutator, unsafe extern "C-unwind" fn() -> *mut pg_sys::Node>(mutate)),
                cx,
            )
        }
        #[cfg(not(feature = "pg15"))]
        {
            pg_sys::expression_tree_mutator_impl(node, Some(mutate as Mutator), cx)
        }
    }
}

/// The mutator's callback.
#[pg_guard]
unsafe extern "C-unwind" fn mutate(node: *mut pg_sys::Node, cx: *mut c_void) -> *mut pg_sys::Node {
    if node.is_null() {
        return node;
    }
    // SAFETY: `cx` is the `Context` of `fold`; `node` a node of the query.
    unsafe {
        match (*node).type_ {
            pg_sys::NodeTag::T_Query => {
                (*(cx as *mut Context)).queries.push(node.cast());
                let q = query_mutate(node.cast(), cx, 0);
                (*(cx as *mut Context)).queries.pop();
                q.cast()
            }
            pg_sys::NodeTag::T_FuncExpr => {
                let f = node as *mut pg_sys::FuncExpr;
                match (*(cx as *mut Context)).functions.call((*f).funcid) {
                    Some(call) => {
                        // Lookups in its arguments first.
                        (*f).args = expression_mutate((*f).args.cast(), cx).cast();
                        decide(call, f, &mut *(cx as *mut Context))
                    }
                    None => expression_mutate(node, cx),
                }
            }
            _ => expression_mutate(node, cx),
        }
    }
}

/// The call `f` of a lookup, folded, left, or replaced by its stand-in.
///
/// # Safety
/// `f` is a call of the function of `call`, its arguments already visited.
unsafe fn decide(call: LookupCall, f: *mut pg_sys::FuncExpr, cx: &mut Context) -> *mut pg_sys::Node {
    // SAFETY: per the contract; every node is the query's or made here.
    unsafe {
        let args = PgList::<pg_sys::Node>::from_pg((*f).args);
        let first = usize::from(call.compares);
        let (Some(tbl), Some(column), Some(value)) =
            (args.get_ptr(first), args.get_ptr(first + 1), args.get_ptr(first + 2))
        else {
            return f.cast();
        };
        let table = known(tbl, cx).map(|t| {
            let t = &*t;
            match (t.constisnull, call.table_as_text) {
                (true, _) => pg_sys::InvalidOid,
                // As the function's own `tbl::regclass` would.
                (false, true) => {
                    pgrx::direct_function_call::<pg_sys::Oid>(pg_sys::text_regclass, &[Some(t.constvalue)])
                        .unwrap_or(pg_sys::InvalidOid)
                }
                (false, false) => pg_sys::Oid::from_datum(t.constvalue, false).unwrap_or(pg_sys::InvalidOid),
            }
        });
        let lookup = call.lookup;
        let result = match value_source(value, cx) {
            Source::Tables => return f.cast(),
            Source::Query => match (table, known(column, cx), known(value, cx)) {
                (Some(relid), Some(c), Some(v)) => {
                    let (c, v) = (&*c, &*v);
                    if relid == pg_sys::InvalidOid || c.constisnull || v.constisnull {
                        // STRICT: NULL in, NULL out (a table name that names
                        // nothing has raised above, as the function would).
                        make_const(lookup.result_type(), pg_sys::Datum::from(0), true).cast()
                    } else {
                        let column = String::from_datum(c.constvalue, false).unwrap_or_default();
                        let value = String::from_datum(v.constvalue, false).unwrap_or_default();
                        let datum = lookup.compute(relid, &column, value.as_bytes());
                        cx.folded.tables = pg_sys::lappend_oid(cx.folded.tables, relid);
                        make_const(lookup.result_type(), datum, false).cast()
                    }
                }
                _ => stand_in(lookup, column, f, cx),
            },
            // The value is in the query's text as rows (VALUES, a CTE, …),
            // which Citus would send whatever becomes of this call: refused
            // before anything is sent (a property of the query, not of the
            // plan, so raising here never fails a plan only being tried).
            Source::Elsewhere => raise(Error::LookupNotPlanned),
        };
        if !call.compares {
            return result;
        }
        // blind_equals(token, …) is token = <blind index>; blind_contains
        // (tokens, …) is tokens @> <query tokens>.
        let token = args.get_ptr(0).unwrap_or(std::ptr::null_mut());
        let (opno, opfuncid) = match lookup {
            Lookup::Exact => (pg_sys::ByteaEqualOperator, pg_sys::F_BYTEAEQ),
            Lookup::Match => (pg_sys::OID_ARRAY_CONTAINS_OP, pg_sys::F_ARRAYCONTAINS),
        };
        let op = pg_sys::palloc0(std::mem::size_of::<pg_sys::OpExpr>()) as *mut pg_sys::OpExpr;
        (*op).xpr.type_ = pg_sys::NodeTag::T_OpExpr;
        (*op).opno = pg_sys::Oid::from(opno);
        (*op).opfuncid = pg_sys::Oid::from(opfuncid);
        (*op).opresulttype = pg_sys::BOOLOID;
        (*op).args = pg_sys::list_make2_impl(
            pg_sys::NodeTag::T_List,
            pg_sys::ListCell { ptr_value: token.cast() },
            pg_sys::ListCell { ptr_value: result.cast() },
        );
        (*op).location = (*f).location;
        op.cast()
    }
}

/// Whether `query` (at any level: subqueries, sublinks, CTEs) reads a Citus
/// table, so that Citus plans it and may send parts of it to other nodes.
///
/// # Safety
/// `query` is a parse tree.
unsafe fn reads_citus_tables(query: *mut pg_sys::Query) -> bool {
    // SAFETY: a read-only walk with our callback, range table entries
    // included.
    unsafe {
        pg_sys::query_tree_walker(
            query,
            Some(finds_citus_table),
            std::ptr::null_mut(),
            pg_sys::QTW_EXAMINE_RTES_BEFORE as c_int,
        )
    }
}

#[pg_guard]
unsafe extern "C-unwind" fn finds_citus_table(node: *mut pg_sys::Node, cx: *mut c_void) -> bool {
    if node.is_null() {
        return false;
    }
    // SAFETY: nodes of a parse tree, walked by PostgreSQL's walkers.
    unsafe {
        match (*node).type_ {
            pg_sys::NodeTag::T_RangeTblEntry => {
                let rte = &*(node as *mut pg_sys::RangeTblEntry);
                // (A subquery's own entries are walked after this one.)
                rte.rtekind == pg_sys::RTEKind::RTE_RELATION && is_citus_table(rte.relid)
            }
            pg_sys::NodeTag::T_Query => pg_sys::query_tree_walker(
                node.cast(),
                Some(finds_citus_table),
                cx,
                pg_sys::QTW_EXAMINE_RTES_BEFORE as c_int,
            ),
            _ => pg_sys::expression_tree_walker(node, Some(finds_citus_table), cx),
        }
    }
}

/// The stand-in of a lookup whose value is not known: it names the column
/// only.
///
/// # Safety
/// `column` is the lookup's token column argument, `f` the call.
unsafe fn stand_in(
    lookup: Lookup,
    column: *mut pg_sys::Node,
    f: *mut pg_sys::FuncExpr,
    cx: &mut Context,
) -> *mut pg_sys::Node {
    if cx.generic {
        // This plan will run as it is, its parameters sent with it (Citus's
        // EXPLAIN of a generic plan sends them): refused now.
        raise(Error::LookupNotPlanned);
    }
    cx.folded.unplanned = true;
    // SAFETY: a function call node of PostgreSQL's making, its one argument
    // the query's own text expression.
    unsafe {
        let stand_in = pg_sys::makeFuncExpr(
            lookup.unplanned(&cx.functions),
            lookup.result_type(),
            pg_sys::list_make1_impl(pg_sys::NodeTag::T_List, pg_sys::ListCell { ptr_value: column.cast() }),
            pg_sys::InvalidOid,
            pg_sys::InvalidOid,
            pg_sys::CoercionForm::COERCE_EXPLICIT_CALL,
        );
        (*stand_in).location = (*f).location;
        stand_in.cast()
    }
}

/// Where a lookup's value comes from.
enum Source {
    /// Nothing but the query's text and parameters.
    Query,
    /// Columns of tables (and the query's text).
    Tables,
    /// A column of something else (VALUES, a CTE, a function or subquery in
    /// FROM, a join's merged column), a sublink or a set-returning function:
    /// text Citus may send.
    Elsewhere,
}

struct Scan<'a> {
    cx: &'a Context,
    /// Whether the value reads a table's column.
    vars: bool,
    /// Whether it holds a constant or a parameter.
    literals: bool,
}

/// Classifies `value` (see `Source`).
///
/// # Safety
/// `value` is an expression of the query at the top of `cx.queries`.
unsafe fn value_source(value: *mut pg_sys::Node, cx: &Context) -> Source {
    let mut scan = Scan { cx, vars: false, literals: false };
    // SAFETY: a read-only walk with our callback, from the value itself (a
    // walker visits only a node's children).
    let elsewhere = unsafe { classify(value, &mut scan as *mut Scan as *mut c_void) };
    match (elsewhere, scan.vars, scan.literals) {
        // Columns mixed with text of the query (`name::text || 'x'`): that
        // text would travel.
        (true, _, _) | (false, true, true) => Source::Elsewhere,
        (false, true, false) => Source::Tables,
        (false, false, _) => Source::Query,
    }
}

/// The walker's callback: true (stop) at anything that is not the query's
/// text or a table's column.
#[pg_guard]
unsafe extern "C-unwind" fn classify(node: *mut pg_sys::Node, scan: *mut c_void) -> bool {
    if node.is_null() {
        return false;
    }
    // SAFETY: `scan` is the `Scan` of `value_source`; `node` a node of the
    // value; a Var's level and range table index are those of the queries
    // on the stack (a parse tree's).
    unsafe {
        let scan = &mut *(scan as *mut Scan);
        match (*node).type_ {
            pg_sys::NodeTag::T_Var => {
                let var = &*(node as *mut pg_sys::Var);
                let queries = &scan.cx.queries;
                let level = usize::try_from(var.varlevelsup).unwrap_or(usize::MAX);
                let Some(q) = level.checked_add(1).and_then(|l| queries.len().checked_sub(l)).map(|i| queries[i])
                else {
                    return true;
                };
                let rtable = PgList::<pg_sys::RangeTblEntry>::from_pg((*q).rtable);
                let index = usize::try_from(var.varno).ok().and_then(|n| n.checked_sub(1));
                match index.and_then(|i| rtable.get_ptr(i)) {
                    // A Citus table's column is read where its shard is; a
                    // local table's rows would be shipped to the workers.
                    Some(rte) if (*rte).rtekind == pg_sys::RTEKind::RTE_RELATION && is_citus_table((*rte).relid) => {
                        scan.vars = true;
                        false
                    }
                    _ => true,
                }
            }
            pg_sys::NodeTag::T_Const | pg_sys::NodeTag::T_Param => {
                scan.literals = true;
                false
            }
            pg_sys::NodeTag::T_SubLink | pg_sys::NodeTag::T_Query => true,
            pg_sys::NodeTag::T_FuncExpr if (*(node as *mut pg_sys::FuncExpr)).funcretset => true,
            pg_sys::NodeTag::T_OpExpr if (*(node as *mut pg_sys::OpExpr)).opretset => true,
            _ => pg_sys::expression_tree_walker(node, Some(classify), scan as *mut Scan as *mut c_void),
        }
    }
}

/// The constant `node` is when planned with the bound parameters: the node
/// itself, or what PostgreSQL's constant folding makes of it (parameters
/// with a value bound for this plan substituted).
///
/// # Safety
/// `node` is an expression of the query being planned.
unsafe fn known(node: *mut pg_sys::Node, cx: &Context) -> Option<*const pg_sys::Const> {
    // SAFETY: constant folding as the planner does it for a custom plan
    // (a root whose only state is the bound parameters); the result is a
    // new tree in the planner's memory context.
    unsafe {
        let folded = if (*node).type_ == pg_sys::NodeTag::T_Const {
            node
        } else {
            let glob = pg_sys::palloc0(std::mem::size_of::<pg_sys::PlannerGlobal>()) as *mut pg_sys::PlannerGlobal;
            (*glob).type_ = pg_sys::NodeTag::T_PlannerGlobal;
            (*glob).boundParams = cx.bound_params;
            let root = pg_sys::palloc0(std::mem::size_of::<pg_sys::PlannerInfo>()) as *mut pg_sys::PlannerInfo;
            (*root).type_ = pg_sys::NodeTag::T_PlannerInfo;
            (*root).glob = glob;
            pg_sys::eval_const_expressions(root, pg_sys::copyObjectImpl(node.cast()).cast())
        };
        ((*folded).type_ == pg_sys::NodeTag::T_Const).then_some(folded as *const pg_sys::Const)
    }
}

/// A constant of a varlena type.
fn make_const(typ: pg_sys::Oid, value: pg_sys::Datum, isnull: bool) -> *mut pg_sys::Const {
    // SAFETY: a constant node of a by-reference varlena type (bytea or
    // int4[]), its datum in the planner's memory context.
    unsafe { pg_sys::makeConst(typ, -1, pg_sys::InvalidOid, -1, value, isnull, false) }
}
