//! Distributed execution (Citus): knowing when a value is being written as
//! text for another node.
//!
//! A Citus coordinator sends constants and parameters to the workers as SQL
//! text, made by the type's output function: for `encrypted_text` that would
//! be the plaintext the coordinator has just encrypted, in every worker's
//! query text, log and network capture. While Citus may be doing that — in
//! its planner, in executor start-up (where it evaluates and deparses the
//! shard queries) and inside its own scan nodes (where it deparses lazily and
//! sends parameters) — `sending_to_other_nodes()` is true and the output
//! function writes the transport form (an envelope with a MAC under the data
//! key, `pazpaz_core::encrypted_text::write_transport_text`), which the
//! worker's input function verifies and stores as it is.
//!
//! A nested, ordinary executor run inside one of those regions (Citus's local
//! execution of a shard on this node) is not sending anything: it runs with
//! the flag off, so a query that formats a value as text still gets the
//! plaintext. The flag lives in a per-backend counter that every region
//! saves and restores; an ERROR that leaves a region by longjmp is covered
//! by resetting it at (sub)transaction abort to the value it had when the
//! (sub)transaction began.
//!
//! Installed only when Citus is loaded before this library (Citus must be
//! first in shared_preload_libraries), so a server without Citus runs none
//! of these hooks.

use std::cell::RefCell;
use std::ffi::{c_char, c_int, c_void, CStr};
use std::sync::atomic::{AtomicU32, Ordering};

use pgrx::pg_sys;

/// Above zero while a distributed planner or executor may write values for other
/// nodes. A backend is single-threaded; the atomic only avoids `static mut`.
static DEPTH: AtomicU32 = AtomicU32::new(0);

thread_local! {
    /// DEPTH at the start of each open subtransaction, innermost last.
    static AT_SUBXACT_START: RefCell<Vec<(pg_sys::SubTransactionId, u32)>> = const { RefCell::new(Vec::new()) };
}

static mut PREV_PLANNER: pg_sys::planner_hook_type = None;
static mut PREV_EXECUTOR_START: pg_sys::ExecutorStart_hook_type = None;
static mut PREV_EXECUTOR_RUN: pg_sys::ExecutorRun_hook_type = None;
static mut PREV_EXPLAIN_ONE_QUERY: pg_sys::ExplainOneQuery_hook_type = None;
/// PostgreSQL's ExecCustomScan (nodeCustom.c, static there), taken from the
/// first Citus scan node seen; every custom scan node has it.
static mut EXEC_CUSTOM_SCAN: pg_sys::ExecProcNodeMtd = None;

/// Whether encrypted_text output is, right now, text for another node:
/// inside a distributed planner or executor region *and* under the
/// search_path Citus sets while it deparses (exactly `pg_catalog`, its
/// PushEmptySearchPath). Expressions Citus evaluates on the coordinator
/// (`format('%s', …)` in a distributed INSERT, partition pruning) run under
/// the session's own search_path, so they get the plaintext as always.
pub fn sending_to_other_nodes() -> bool {
    DEPTH.load(Ordering::Relaxed) > 0 && search_path_is_citus_deparse()
}

fn search_path_is_citus_deparse() -> bool {
    // SAFETY: namespace_search_path is the search_path setting's current
    // value, a NUL-terminated string owned by the GUC machinery (or NULL
    // before the settings exist); it is only read here.
    unsafe {
        let p = pg_sys::namespace_search_path;
        !p.is_null() && CStr::from_ptr(p).to_bytes() == b"pg_catalog"
    }
}

/// Runs `f` with the flag set to `on` (> 0) or off (0), restoring it after.
/// An ERROR raised inside longjmps past the restore; the abort callbacks
/// below put the value back.
fn with_depth<T>(on: bool, f: impl FnOnce() -> T) -> T {
    let saved = DEPTH.load(Ordering::Relaxed);
    DEPTH.store(if on { saved + 1 } else { 0 }, Ordering::Relaxed);
    let out = f();
    DEPTH.store(saved, Ordering::Relaxed);
    out
}

/// Whether Citus is loaded in this backend (it defines its settings in its
/// _PG_init, before this library's when preloaded first).
pub fn citus_is_loaded() -> bool {
    // SAFETY: GetConfigOption with missing_ok returns NULL for an unknown
    // setting and never raises for a known one read without privilege checks.
    !unsafe { pg_sys::GetConfigOption(c"citus.propagate_set_commands".as_ptr(), true, false) }.is_null()
}

/// Whether Citus forwards a `SET LOCAL` run now to the workers
/// (`citus.propagate_set_commands = 'local'`).
pub fn forwards_set_local() -> bool {
    // SAFETY: as in `citus_is_loaded`; the returned value is a C string
    // owned by the GUC machinery, read at once.
    unsafe {
        let p = pg_sys::GetConfigOption(c"citus.propagate_set_commands".as_ptr(), true, false);
        !p.is_null() && CStr::from_ptr(p).to_bytes().eq_ignore_ascii_case(b"local")
    }
}

pub fn init() {
    if !citus_is_loaded() {
        return;
    }
    // SAFETY: _PG_init runs once per process, single-threaded; each hook is
    // chained to its previous value; the callbacks take no argument.
    unsafe {
        PREV_PLANNER = pg_sys::planner_hook;
        pg_sys::planner_hook = Some(planner);
        PREV_EXECUTOR_START = pg_sys::ExecutorStart_hook;
        pg_sys::ExecutorStart_hook = Some(executor_start);
        PREV_EXECUTOR_RUN = pg_sys::ExecutorRun_hook;
        pg_sys::ExecutorRun_hook = Some(executor_run);
        // Citus's EXPLAIN deparses the shard queries it sends to the workers
        // for their plans (PostgreSQL's own ExplainOneQuery is not callable
        // before 17, so the hook is chained only behind Citus's).
        let prev_explain = pg_sys::ExplainOneQuery_hook;
        PREV_EXPLAIN_ONE_QUERY = prev_explain;
        if prev_explain.is_some() {
            pg_sys::ExplainOneQuery_hook = Some(explain_one_query);
        }
        pg_sys::RegisterXactCallback(Some(on_xact), std::ptr::null_mut());
        pg_sys::RegisterSubXactCallback(Some(on_subxact), std::ptr::null_mut());
    }
}

mod unguarded {
    use std::ffi::{c_char, c_int};

    use pgrx::pg_sys;

    extern "C-unwind" {
        // PostgreSQL's standard entry points, declared without pgrx's FFI
        // guard: the hooks below pass an ERROR through unchanged.
        pub fn standard_planner(
            parse: *mut pg_sys::Query,
            query_string: *const c_char,
            cursor_options: c_int,
            bound_params: pg_sys::ParamListInfo,
        ) -> *mut pg_sys::PlannedStmt;
        pub fn standard_ExecutorStart(query_desc: *mut pg_sys::QueryDesc, eflags: c_int);
        #[cfg(not(feature = "pg18"))]
        pub fn standard_ExecutorRun(
            query_desc: *mut pg_sys::QueryDesc,
            direction: pg_sys::ScanDirection::Type,
            count: u64,
            execute_once: bool,
        );
        #[cfg(feature = "pg18")]
        pub fn standard_ExecutorRun(
            query_desc: *mut pg_sys::QueryDesc,
            direction: pg_sys::ScanDirection::Type,
            count: u64,
        );
        pub fn ExecSetExecProcNode(node: *mut pg_sys::PlanState, function: pg_sys::ExecProcNodeMtd);
    }
}

// The hooks are not `#[pg_guard]`: an ERROR raised below them longjmps
// through these frames, which own nothing that needs dropping (the flag is
// restored by the abort callbacks).

unsafe extern "C-unwind" fn planner(
    parse: *mut pg_sys::Query,
    query_string: *const c_char,
    cursor_options: c_int,
    bound_params: pg_sys::ParamListInfo,
) -> *mut pg_sys::PlannedStmt {
    with_depth(true, || {
        // SAFETY: PostgreSQL's arguments, passed on unchanged.
        unsafe {
            match PREV_PLANNER {
                Some(prev) => prev(parse, query_string, cursor_options, bound_params),
                None => unguarded::standard_planner(parse, query_string, cursor_options, bound_params),
            }
        }
    })
}

unsafe extern "C-unwind" fn executor_start(query_desc: *mut pg_sys::QueryDesc, eflags: c_int) {
    // SAFETY: ExecutorStart gets a query descriptor with its planned
    // statement (whose plan tree is NULL for a utility statement).
    let distributed = unsafe { plan_has_citus_scan((*(*query_desc).plannedstmt).planTree) };
    with_depth(distributed, || {
        // SAFETY: PostgreSQL's arguments, passed on unchanged.
        unsafe {
            match PREV_EXECUTOR_START {
                Some(prev) => prev(query_desc, eflags),
                None => unguarded::standard_ExecutorStart(query_desc, eflags),
            }
        }
    });
    // SAFETY: after ExecutorStart the query descriptor's plan state tree is
    // built (NULL for a utility statement).
    unsafe { wrap_citus_scans((*query_desc).planstate) };
}

#[cfg(not(feature = "pg18"))]
unsafe extern "C-unwind" fn executor_run(
    query_desc: *mut pg_sys::QueryDesc,
    direction: pg_sys::ScanDirection::Type,
    count: u64,
    execute_once: bool,
) {
    with_depth(false, || {
        // SAFETY: PostgreSQL's arguments, passed on unchanged.
        unsafe {
            match PREV_EXECUTOR_RUN {
                Some(prev) => prev(query_desc, direction, count, execute_once),
                None => unguarded::standard_ExecutorRun(query_desc, direction, count, execute_once),
            }
        }
    })
}

#[cfg(feature = "pg18")]
unsafe extern "C-unwind" fn executor_run(
    query_desc: *mut pg_sys::QueryDesc,
    direction: pg_sys::ScanDirection::Type,
    count: u64,
) {
    with_depth(false, || {
        // SAFETY: PostgreSQL's arguments, passed on unchanged.
        unsafe {
            match PREV_EXECUTOR_RUN {
                Some(prev) => prev(query_desc, direction, count),
                None => unguarded::standard_ExecutorRun(query_desc, direction, count),
            }
        }
    })
}

#[allow(clippy::too_many_arguments)]
unsafe extern "C-unwind" fn explain_one_query(
    query: *mut pg_sys::Query,
    cursor_options: c_int,
    into: *mut pg_sys::IntoClause,
    es: *mut pg_sys::ExplainState,
    query_string: *const c_char,
    params: pg_sys::ParamListInfo,
    query_env: *mut pg_sys::QueryEnvironment,
) {
    // The plan text EXPLAIN prints here shows an encrypted_text constant in
    // its transport form too (EXPLAIN ANALYZE's execution runs through
    // executor_run, so its results are the plaintext as always).
    with_depth(true, || {
        // SAFETY: PostgreSQL's arguments, passed on unchanged; only installed
        // when there was a previous hook.
        unsafe {
            let prev = PREV_EXPLAIN_ONE_QUERY;
            prev.expect("installed only behind a previous hook")(
                query,
                cursor_options,
                into,
                es,
                query_string,
                params,
                query_env,
            )
        }
    })
}

/// Whether a plan tree holds a Citus scan node (see `is_citus_name`).
///
/// # Safety
/// `plan` is NULL or a valid plan tree.
unsafe fn plan_has_citus_scan(plan: *mut pg_sys::Plan) -> bool {
    if plan.is_null() {
        return false;
    }
    // SAFETY: a valid plan node (caller); a node tagged T_CustomScan is a
    // CustomScan whose methods are set by its provider.
    unsafe {
        ((*plan).type_ == pg_sys::NodeTag::T_CustomScan && is_citus_name((*plan.cast::<pg_sys::CustomScan>()).methods))
            || plan_has_citus_scan((*plan).lefttree)
            || plan_has_citus_scan((*plan).righttree)
    }
}

/// Whether custom scan methods are Citus's: their name (the one EXPLAIN
/// shows) is "Citus Adaptive", "Citus INSERT ... SELECT", ….
///
/// # Safety
/// `methods` is NULL or points to a provider's CustomScanMethods, whose
/// CustomName is NULL or a static C string.
unsafe fn is_citus_name(methods: *const pg_sys::CustomScanMethods) -> bool {
    // SAFETY: as the function's contract says.
    unsafe {
        !methods.is_null()
            && !(*methods).CustomName.is_null()
            && CStr::from_ptr((*methods).CustomName).to_bytes().starts_with(b"Citus")
    }
}

/// Citus's scan nodes run the distributed work (lazy deparsing, parameters
/// sent as text) in their ExecProcNode; wrap it so that it runs with the
/// flag on. The node's `methods` stay Citus's own (Citus recognises its
/// nodes by them). Citus's plan nodes are known by their plan-level name.
///
/// # Safety
/// `ps` is NULL or a plan state tree just built by ExecutorStart.
unsafe fn wrap_citus_scans(ps: *mut pg_sys::PlanState) {
    if ps.is_null() {
        return;
    }
    // SAFETY: `ps` is a valid PlanState of the tree (caller); a node tagged
    // T_CustomScanState executes a CustomScan plan node, whose `methods` are
    // set by its provider and whose CustomName is a static C string (the
    // name EXPLAIN shows: "Citus Adaptive", "Citus INSERT ... SELECT", …).
    unsafe {
        if (*ps).type_ == pg_sys::NodeTag::T_CustomScanState
            && !(*ps).plan.is_null()
            && is_citus_name((*(*ps).plan.cast::<pg_sys::CustomScan>()).methods)
        {
            {
                let addr = |f: pg_sys::ExecProcNodeMtd| f.map(|f| f as usize);
                let mut exec_custom_scan = EXEC_CUSTOM_SCAN;
                if exec_custom_scan.is_none() {
                    exec_custom_scan = (*ps).ExecProcNodeReal;
                    EXEC_CUSTOM_SCAN = exec_custom_scan;
                }
                // A node wrapped already has `citus_scan` here instead.
                if addr((*ps).ExecProcNodeReal) == addr(exec_custom_scan) {
                    unguarded::ExecSetExecProcNode(ps, Some(citus_scan));
                }
            }
        }
        wrap_citus_scans((*ps).lefttree);
        wrap_citus_scans((*ps).righttree);
    }
}

unsafe extern "C-unwind" fn citus_scan(ps: *mut pg_sys::PlanState) -> *mut pg_sys::TupleTableSlot {
    with_depth(true, || {
        // SAFETY: only installed on nodes whose ExecProcNodeReal was
        // EXEC_CUSTOM_SCAN, which is then set.
        unsafe {
            let exec_custom_scan = EXEC_CUSTOM_SCAN;
            exec_custom_scan.expect("set before any node is wrapped")(ps)
        }
    })
}

#[pgrx::pg_guard]
unsafe extern "C-unwind" fn on_xact(event: pg_sys::XactEvent::Type, _arg: *mut c_void) {
    if event == pg_sys::XactEvent::XACT_EVENT_ABORT || event == pg_sys::XactEvent::XACT_EVENT_PARALLEL_ABORT {
        DEPTH.store(0, Ordering::Relaxed);
        AT_SUBXACT_START.with(|s| s.borrow_mut().clear());
    }
}

#[pgrx::pg_guard]
unsafe extern "C-unwind" fn on_subxact(
    event: pg_sys::SubXactEvent::Type,
    my_subid: pg_sys::SubTransactionId,
    _parent: pg_sys::SubTransactionId,
    _arg: *mut c_void,
) {
    AT_SUBXACT_START.with(|s| {
        let mut s = s.borrow_mut();
        match event {
            pg_sys::SubXactEvent::SUBXACT_EVENT_START_SUB => s.push((my_subid, DEPTH.load(Ordering::Relaxed))),
            pg_sys::SubXactEvent::SUBXACT_EVENT_ABORT_SUB => {
                if let Some(at) = s.iter().position(|&(id, _)| id == my_subid) {
                    DEPTH.store(s[at].1, Ordering::Relaxed);
                    s.truncate(at);
                }
            }
            pg_sys::SubXactEvent::SUBXACT_EVENT_COMMIT_SUB => {
                if let Some(at) = s.iter().position(|&(id, _)| id == my_subid) {
                    s.truncate(at);
                }
            }
            _ => {}
        }
    });
}
