//! Lookups by search index on a Citus coordinator: their tokens computed
//! here, never their values sent to the workers.
//!
//! Citus sends a SELECT's stable function calls to the workers as SQL text,
//! bound parameters written in as literals: a lookup
//! `WHERE email_bidx = blind_index_for('clients', 'email_bidx', $1)` would
//! put the search term — a plaintext — into every shard query, worker log
//! and worker `pg_stat_activity`, and make every worker compute the token.
//! So before Citus plans a query (`distributed.rs` calls `fold` from its
//! planner hook), each call of `blind_index_for` or
//! `blind_search_tokens_for` whose arguments are known when it is planned —
//! constants, and parameters with a bound value (a custom plan) — is
//! replaced by its result, a constant token. That is sound under plan
//! caching: the result depends only on the value and the index's
//! definition (its trigger's arguments, which name the index key by
//! fingerprint), and the table goes into the plan's relation list, so a
//! change of its triggers replans.
//!
//! A call whose arguments read no column but are not known either (a
//! generic plan's parameter, a stable function such as `current_setting`,
//! the argument of a SQL function planned on its own) is replaced by a
//! stand-in that carries no value and raises wherever it runs
//! (`search_lookup_unplanned_*`); a plan holding one gets a cost no custom
//! plan reaches, so the plan cache keeps choosing custom plans. A call whose
//! value reads a column (a join on tokens) runs where Citus runs it: that
//! value comes from a table, not from the query's text.

use std::ffi::{c_int, c_void};

use pgrx::{pg_sys, FromDatum, IntoDatum};

use crate::search::{lookup_functions, Lookup, LookupCall, LookupFunctions};

/// What `fold` did to a query, for the planned statement.
#[derive(Default)]
pub struct Folded {
    /// Tables whose lookups were folded (they go into the plan's relation
    /// list).
    pub tables: Vec<pg_sys::Oid>,
    /// Whether a lookup was replaced by its stand-in.
    pub unplanned: bool,
}

impl Folded {
    /// Applies this to the planned statement of the folded query.
    ///
    /// # Safety
    /// `stmt` is the planned statement the planner just returned.
    pub unsafe fn apply(&self, stmt: *mut pg_sys::PlannedStmt) {
        if stmt.is_null() {
            return;
        }
        // SAFETY: per the contract; lists are appended in the planner's
        // memory context, as the planner's own are.
        unsafe {
            for &t in &self.tables {
                (*stmt).relationOids = pg_sys::lappend_oid((*stmt).relationOids, t);
            }
            if self.unplanned && !(*stmt).planTree.is_null() {
                // The plan cache compares a generic plan's cost with the
                // custom plans' average: this one never wins (Citus gives
                // plans it would rather not see reused 3.4e30).
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
    /// Query levels above the node being visited.
    depth: c_int,
    folded: Folded,
}

/// Folds the lookups of `parse` (see the module comment). Raises what the
/// lookup itself would (no index, no index key).
///
/// # Safety
/// `parse` is the query the planner hook was given, `bound_params` its
/// bound parameters (or NULL).
pub unsafe fn fold(parse: *mut pg_sys::Query, bound_params: pg_sys::ParamListInfo) -> Folded {
    let functions = lookup_functions();
    if parse.is_null() || !functions.exist() {
        return Folded::default();
    }
    let mut cx = Context { functions, bound_params, depth: 0, folded: Folded::default() };
    // SAFETY: the planner may scribble on its input query (PostgreSQL's
    // callers hand it a copy); the walk replaces nodes in place.
    unsafe { query_mutate(parse, &mut cx as *mut Context as *mut c_void, pg_sys::QTW_DONT_COPY_QUERY as c_int) };
    cx.folded
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

/// The mutator's callback. Not `#[pg_guard]`: an ERROR raised below (by a
/// lookup) longjmps through frames that own nothing needing a drop.
unsafe extern "C-unwind" fn mutate(node: *mut pg_sys::Node, cx: *mut c_void) -> *mut pg_sys::Node {
    if node.is_null() {
        return node;
    }
    // SAFETY: `cx` is the `Context` of `fold`; `node` a node of the query.
    unsafe {
        let context = &mut *(cx as *mut Context);
        match (*node).type_ {
            pg_sys::NodeTag::T_Query => {
                context.depth += 1;
                let q = query_mutate(node.cast(), cx, 0);
                (*(cx as *mut Context)).depth -= 1;
                q.cast()
            }
            pg_sys::NodeTag::T_FuncExpr => {
                let f = node as *mut pg_sys::FuncExpr;
                match context.functions.call((*f).funcid) {
                    Some(call) => fold_call(call, f, context),
                    None => expression_mutate(node, cx),
                }
            }
            _ => expression_mutate(node, cx),
        }
    }
}

/// The folded form of one lookup call.
///
/// # Safety
/// `f` is a call of the function of `call`.
unsafe fn fold_call(call: LookupCall, f: *mut pg_sys::FuncExpr, cx: &mut Context) -> *mut pg_sys::Node {
    // SAFETY: per the contract; every node is the query's or made here.
    unsafe {
        let args = pgrx::PgList::<pg_sys::Node>::from_pg((*f).args);
        let first = usize::from(call.compares);
        let (Some(tbl), Some(column), Some(value)) =
            (args.get_ptr(first), args.get_ptr(first + 1), args.get_ptr(first + 2))
        else {
            return f.cast();
        };
        if (0..=cx.depth).any(|level| pg_sys::contain_vars_of_level(value, level)) || reads_rows(value) {
            // The value comes from the rows (a join): it is not in the
            // query's text.
            return f.cast();
        }
        let lookup = call.lookup;
        let result = match (known(tbl, cx), known(column, cx), known(value, cx)) {
            (Some(t), Some(c), Some(v)) => {
                let (t, c, v) = (&*t, &*c, &*v);
                if t.constisnull || c.constisnull || v.constisnull {
                    // STRICT: NULL in, NULL out.
                    make_const(lookup.result_type(), pg_sys::Datum::from(0), true).cast()
                } else {
                    let relid = if call.table_as_text {
                        // As the function's own `tbl::regclass` would.
                        let name = String::from_datum(t.constvalue, false).unwrap_or_default();
                        let name = std::ffi::CString::new(name).unwrap_or_default();
                        pgrx::direct_function_call::<pg_sys::Oid>(pg_sys::regclassin, &[name.as_c_str().into_datum()])
                            .unwrap_or(pg_sys::InvalidOid)
                    } else {
                        pg_sys::Oid::from_datum(t.constvalue, false).unwrap_or(pg_sys::InvalidOid)
                    };
                    let column = String::from_datum(c.constvalue, false).unwrap_or_default();
                    let value = String::from_datum(v.constvalue, false).unwrap_or_default();
                    let datum = lookup.compute(relid, &column, value.as_bytes());
                    cx.folded.tables.push(relid);
                    make_const(lookup.result_type(), datum, false).cast()
                }
            }
            _ => {
                // Not known now: a stand-in that names the column only.
                cx.folded.unplanned = true;
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

/// Whether `node` holds a sublink or an executor parameter (a value of the
/// rows or of another plan).
///
/// # Safety
/// `node` is an expression tree.
unsafe fn reads_rows(node: *mut pg_sys::Node) -> bool {
    // SAFETY: read-only checks of PostgreSQL's.
    unsafe { pg_sys::contain_subplans(node) || pg_sys::expression_returns_set(node) || has_sublink(node) }
}

/// # Safety
/// `node` is an expression tree.
unsafe fn has_sublink(node: *mut pg_sys::Node) -> bool {
    // SAFETY: as PostgreSQL's own helper, on a parse tree.
    unsafe { pg_sys::checkExprHasSubLink(node) }
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
