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

use std::cell::{Cell, RefCell};
use std::ffi::{c_char, c_int, c_void, CStr};

use pgrx::{pg_guard, pg_sys};

use crate::citus_lookups;

/// Where this backend is, for the output and input functions of
/// encrypted_text. A backend is single-threaded; `Cell` suffices.
#[derive(Clone, Copy, Default)]
struct State {
    /// Above zero inside a Citus planner, executor start-up or scan region,
    /// and zero again inside a nested ordinary executor run and inside a
    /// function with a SET clause or SECURITY DEFINER (see `fmgr`): values
    /// written as text here may be for another node.
    sending: u32,
    /// Above zero inside any Citus region, nested runs included: where a
    /// transport form parsed is this node's own (local execution of a shard
    /// query).
    in_region: u32,
    /// The GUC nest level when the innermost sending region began: Citus
    /// deparses under a search_path pushed at a deeper level.
    entry_level: i32,
}

thread_local! {
    static STATE: Cell<State> = const { Cell::new(State { sending: 0, in_region: 0, entry_level: 0 }) };
    /// STATE at the start of each open subtransaction, innermost last.
    static AT_SUBXACT_START: RefCell<Vec<(pg_sys::SubTransactionId, State)>> = const { RefCell::new(Vec::new()) };
}

static mut PREV_PLANNER: pg_sys::planner_hook_type = None;
static mut PREV_EXECUTOR_START: pg_sys::ExecutorStart_hook_type = None;
static mut PREV_EXECUTOR_RUN: pg_sys::ExecutorRun_hook_type = None;
static mut PREV_EXPLAIN_ONE_QUERY: pg_sys::ExplainOneQuery_hook_type = None;
static mut PREV_FMGR: pg_sys::fmgr_hook_type = None;
/// PostgreSQL's ExecCustomScan (nodeCustom.c, static there), taken from the
/// first Citus scan node seen; every custom scan node has it.
static mut EXEC_CUSTOM_SCAN: pg_sys::ExecProcNodeMtd = None;

/// Whether encrypted_text output is, right now, text for another node:
/// inside a distributed planner or executor region, under the search_path
/// Citus sets while it deparses (exactly `pg_catalog`, its
/// PushEmptySearchPath), pushed at a GUC nest level opened inside the
/// region. Expressions Citus evaluates on the coordinator (`format('%s', …)`
/// in a distributed INSERT, partition pruning) run under the session's own
/// search_path — even one that is `pg_catalog` itself, set at an outer level
/// — and functions with a SET clause run with the flag off, so they get the
/// plaintext as always.
pub fn sending_to_other_nodes() -> bool {
    let st = STATE.get();
    st.sending > 0 && search_path_is_citus_deparse() && current_nest_level() > st.entry_level
}

/// Whether a transport form may be taken as input here: inside a Citus
/// region of this backend, or in a backend that Citus opened from another
/// node (its application_name). A client's own literals and parameters are
/// parsed before any region starts, so a transport form an application user
/// submits is refused even within the transaction that made it.
pub fn receiving_from_other_nodes() -> bool {
    if STATE.get().in_region > 0 {
        return true;
    }
    // SAFETY: GetConfigOption returns the setting's current value (a C
    // string owned by the GUC machinery), read at once.
    unsafe {
        let p = pg_sys::GetConfigOption(c"application_name".as_ptr(), true, false);
        !p.is_null() && CStr::from_ptr(p).to_bytes().starts_with(b"citus_internal")
    }
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

/// The current GUC nest level (PostgreSQL keeps it private): opening a level
/// and closing it again at once changes no setting.
fn current_nest_level() -> i32 {
    // SAFETY: a nest level opened and closed with nothing set in between, as
    // a function's SET clause does when it sets nothing.
    unsafe {
        let level = pg_sys::NewGUCNestLevel();
        pg_sys::AtEOXact_GUC(true, level);
        level - 1
    }
}

/// Runs `f` in a sending region (`on`) or with sending off (a nested
/// ordinary executor run), restoring the state after. An ERROR raised inside
/// longjmps past the restore; the abort callbacks below put it back.
fn with_depth<T>(on: bool, f: impl FnOnce() -> T) -> T {
    let saved = STATE.get();
    STATE.set(if on {
        State { sending: saved.sending + 1, in_region: saved.in_region + 1, entry_level: current_nest_level() }
    } else {
        State { sending: 0, ..saved }
    });
    let out = f();
    STATE.set(saved);
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
        PREV_FMGR = pg_sys::fmgr_hook;
        pg_sys::fmgr_hook = Some(fmgr);
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

/// `#[pg_guard]` (unlike the other hooks): the lookups folded here are Rust
/// code whose errors must become PostgreSQL's ERRORs at this frame.
#[pg_guard]
unsafe extern "C-unwind" fn planner(
    parse: *mut pg_sys::Query,
    query_string: *const c_char,
    cursor_options: c_int,
    bound_params: pg_sys::ParamListInfo,
) -> *mut pg_sys::PlannedStmt {
    // Search lookups first: Citus would send their values to the workers.
    // SAFETY: the planner's own query and bound parameters.
    let folded = unsafe { citus_lookups::fold(parse, cursor_options, bound_params) };
    let stmt = with_depth(true, || {
        // SAFETY: PostgreSQL's arguments, passed on unchanged.
        unsafe {
            match PREV_PLANNER {
                Some(prev) => prev(parse, query_string, cursor_options, bound_params),
                None => unguarded::standard_planner(parse, query_string, cursor_options, bound_params),
            }
        }
    });
    // SAFETY: the statement just planned from the folded query.
    unsafe { folded.apply(stmt) };
    stmt
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

/// Functions with a SET clause or SECURITY DEFINER (PostgreSQL calls this
/// hook at their start and end): their body is never Citus deparsing, so
/// sending is off inside, even when they set search_path = pg_catalog. The
/// state at the start is kept in the call's own `arg`.
///
/// Not `#[pg_guard]`, and it never raises: it runs inside PostgreSQL's
/// PG_TRY of fmgr_security_definer.
unsafe extern "C-unwind" fn fmgr(
    event: pg_sys::FmgrHookEventType::Type,
    flinfo: *mut pg_sys::FmgrInfo,
    arg: *mut pg_sys::Datum,
) {
    // SAFETY: `arg` is the per-call Datum PostgreSQL passes to every event
    // of one call (START, then END or ABORT); it holds `sending` from START.
    unsafe {
        match event {
            pg_sys::FmgrHookEventType::FHET_START => {
                let st = STATE.get();
                *arg = pg_sys::Datum::from(st.sending as usize);
                STATE.set(State { sending: 0, ..st });
            }
            pg_sys::FmgrHookEventType::FHET_END | pg_sys::FmgrHookEventType::FHET_ABORT => {
                let st = STATE.get();
                STATE.set(State { sending: (*arg).value() as u32, ..st });
            }
            _ => {}
        }
        let prev = PREV_FMGR;
        if let Some(prev) = prev {
            prev(event, flinfo, arg);
        }
    }
}

#[pgrx::pg_guard]
unsafe extern "C-unwind" fn on_xact(event: pg_sys::XactEvent::Type, _arg: *mut c_void) {
    if event == pg_sys::XactEvent::XACT_EVENT_ABORT || event == pg_sys::XactEvent::XACT_EVENT_PARALLEL_ABORT {
        STATE.set(State::default());
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
            pg_sys::SubXactEvent::SUBXACT_EVENT_START_SUB => s.push((my_subid, STATE.get())),
            pg_sys::SubXactEvent::SUBXACT_EVENT_ABORT_SUB => {
                if let Some(at) = s.iter().position(|&(id, _)| id == my_subid) {
                    STATE.set(s[at].1);
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
