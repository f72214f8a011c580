//! The server's key-encryption keys (KEKs), loaded once by the postmaster.
//!
//! When the library is preloaded, `_PG_init` runs in the postmaster before
//! any child exists; it reads the KEK ring from `pazpaz.kek_file` or from the
//! standard output of `pazpaz.kek_command` (`gucs.rs`; no longer than
//! `pazpaz.kek_command_timeout`), and every backend and
//! parallel worker inherits the parsed ring through fork (Linux; PostgreSQL
//! builds without EXEC_BACKEND). Any failure stops the server: an ERROR
//! raised while the postmaster loads its preloaded libraries is FATAL there,
//! and the message says why without quoting the file or the output.
//!
//! Where KEK bytes live: the file's or the command's bytes in a buffer wiped
//! right after parsing; the ring itself holds AES key schedules only, wiped
//! on drop like every data key (`pazpaz_core::data_key`), for the life of
//! each process. The text of the ring and each KEK in every spelling are
//! handed to the log filter (`log_secrets.rs`), which keeps only keyed
//! digests of them, so a stray copy (a command that echoes a key into a log
//! message, say) is scrubbed. Nothing exposes a
//! KEK through SQL: `kek_status()` shows ids and fingerprints.
//!
//! Not preloaded (loaded by a backend for `CREATE EXTENSION` or `LOAD`):
//! there is no ring, and wrapped keys are refused with an error that names
//! the settings to use.

use std::cell::OnceCell;
use std::ffi::{CStr, CString};
use std::io::Read;
use std::os::unix::fs::{MetadataExt, PermissionsExt};

use pazpaz_core::wrapped_key::{KekRing, MAX_RING_BYTES};
use pazpaz_core::Error;
use pgrx::pg_sys;
use zeroize::Zeroizing;

use crate::backend_local::BackendLocal;
use crate::error::{raise, OrRaise};
use crate::gucs;
use crate::log_secrets;

static RING: BackendLocal<OnceCell<KekRing>> = BackendLocal::new(OnceCell::new());

/// The server's KEK ring, if one was loaded at start-up.
pub fn ring() -> Option<&'static KekRing> {
    RING.get()
}

/// Loads the KEK ring when the postmaster is loading its preloaded
/// libraries; elsewhere does nothing.
pub fn load_at_server_start() {
    // SAFETY: a plain flag of PostgreSQL's, set around the preload loop.
    if !unsafe { pg_sys::process_shared_preload_libraries_in_progress } {
        return;
    }
    // SAFETY: a plain flag of PostgreSQL's. Only the postmaster (or a
    // single-user server) reads the ring: a child that loads the preload
    // list again (EXEC_BACKEND builds, not Linux's) must not run the
    // command once per process.
    if unsafe { pg_sys::IsUnderPostmaster } {
        return;
    }
    let (source, text) = match gucs::kek_sources() {
        (Some(_), Some(_)) => raise(Error::KekBothSources),
        (None, None) => return,
        (Some(path), None) => ("pazpaz.kek_file", read_file(&path).or_raise()),
        (None, Some(command)) => ("pazpaz.kek_command", run_command(&command).or_raise()),
    };
    log_secrets::remember_server(&text).or_raise();
    let ring = KekRing::from_json_with(&text, &mut |raw| log_secrets::remember_server_key(raw))
        .map_err(|e| Error::KekSource(format!("{source}: {e}")))
        .or_raise();
    drop(text);
    let note = format!(
        "pazpaz_crypto: loaded {} key-encryption key(s) from {source} ({}; current: {})",
        ring.keks().len(),
        ring.ids(),
        ring.current().id()
    );
    if RING.set(ring).is_err() {
        return; // loaded already (a second _PG_init cannot happen; be safe)
    }
    pgrx::log!("{note}");
}

/// Reads the ring's file, refusing one that is not a regular file owned by
/// the server's user with no group or other permissions — the rule
/// PostgreSQL applies to `ssl_key_file`. The checks are made on the opened
/// file (fstat), so the file cannot be swapped between check and read.
///
/// Opened with O_NONBLOCK: opening a FIFO for reading blocks until a writer
/// comes, and the postmaster (its signals blocked while it loads libraries)
/// would hang with nothing in the log. With O_NONBLOCK the open returns at
/// once and the fstat refuses anything but a regular file, for which the
/// flag changes nothing (reads of a regular file never block).
fn read_file(path: &str) -> Result<Zeroizing<Vec<u8>>, Error> {
    use std::os::unix::fs::OpenOptionsExt;
    let what = format!("pazpaz.kek_file \"{path}\"");
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC | libc::O_NOCTTY)
        .open(path)
        .map_err(|e| Error::KekSource(format!("could not open {what}: {e}")))?;
    let meta = f.metadata().map_err(|e| Error::KekSource(format!("could not stat {what}: {e}")))?;
    if !meta.is_file() {
        return Err(Error::KekSource(format!("{what} is not a regular file")));
    }
    // SAFETY: geteuid has no preconditions and cannot fail.
    let me = unsafe { libc::geteuid() };
    if meta.uid() != me {
        return Err(Error::KekSource(format!(
            "{what} must be owned by the database server's user (uid {me}); it is owned by uid {}",
            meta.uid()
        )));
    }
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(Error::KekSource(format!(
            "{what} has group or other access (mode {mode:04o}); it must be u=rw (0600) or less: chmod 0600 it"
        )));
    }
    if meta.len() > MAX_RING_BYTES as u64 {
        return Err(Error::KekSource(format!("{what} is larger than {MAX_RING_BYTES} bytes")));
    }
    let mut buf = Zeroizing::new(vec![0u8; MAX_RING_BYTES + 1]);
    let len = read_all(&mut f, &mut buf).map_err(|e| Error::KekSource(format!("could not read {what}: {e}")))?;
    if len > MAX_RING_BYTES {
        return Err(Error::KekSource(format!("{what} is larger than {MAX_RING_BYTES} bytes")));
    }
    buf.truncate(len);
    Ok(buf)
}

/// Fills `buf` from `r` without growing it (a growing Vec would leave
/// copies of the keys in freed memory); returns the bytes read.
fn read_all(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut len = 0;
    while len < buf.len() {
        match r.read(&mut buf[len..]) {
            Ok(0) => break,
            Ok(n) => len += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(len)
}

/// Runs the command with `/bin/sh -c` (as `popen` would) in a process group
/// of its own and returns its standard output. A non-zero exit fails;
/// neither the command (it may carry a secret manager's token) nor its
/// output is quoted.
///
/// The output is read to end of file, so start-up waits for every process
/// that holds the command's standard output open — a background child the
/// command leaves behind included (the README says to redirect such a
/// child's output) — and for the command itself to exit, but no longer than
/// `pazpaz.kek_command_timeout`: the postmaster runs this with its signals
/// blocked, so without a limit a command that hangs would leave a server
/// that `pg_ctl stop` cannot stop. Past the limit the command's process
/// group is killed (SIGKILL) and start-up fails.
///
/// The child gets default signal dispositions and an empty signal mask (the
/// postmaster's, blocked while it loads libraries, would otherwise be
/// inherited by the command and everything it runs).
fn run_command(command: &str) -> Result<Zeroizing<Vec<u8>>, Error> {
    let c = CString::new(command).map_err(|_| Error::KekSource("pazpaz.kek_command contains a NUL byte".into()))?;
    let timeout = gucs::kek_command_timeout();
    let deadline = std::time::Instant::now() + timeout;
    let fail = |what: &str| {
        let e = std::io::Error::last_os_error();
        Error::KekSource(format!("could not run pazpaz.kek_command: {what}: {e}"))
    };
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: `fds` has room for the two descriptors.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(fail("pipe"));
    }
    let (read_fd, write_fd) = (fds[0], fds[1]);
    let (sh, dash_c) = (c"/bin/sh", c"-c");
    let argv = [c"sh".as_ptr(), dash_c.as_ptr(), c.as_ptr(), std::ptr::null()];
    // Let buffered log output go out once, not twice.
    // SAFETY: flushes the C library's streams; no preconditions.
    unsafe { libc::fflush(std::ptr::null_mut()) };
    // SAFETY: the postmaster is single-threaded here. The child calls only
    // async-signal-safe functions before exec or _exit.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        let e = fail("fork");
        // SAFETY: our descriptors.
        unsafe {
            libc::close(read_fd);
            libc::close(write_fd);
        }
        return Err(e);
    }
    if pid == 0 {
        // SAFETY: in the child, async-signal-safe calls only.
        unsafe {
            libc::setpgid(0, 0);
            for sig in 1..65 {
                // SIGKILL, SIGSTOP and numbers without a signal just fail.
                libc::signal(sig, libc::SIG_DFL);
            }
            let mut none: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut none);
            libc::sigprocmask(libc::SIG_SETMASK, &none, std::ptr::null_mut());
            if write_fd != 1 {
                libc::dup2(write_fd, 1); // the copy is not close-on-exec
            } else {
                libc::fcntl(1, libc::F_SETFD, 0);
            }
            libc::execv(sh.as_ptr(), argv.as_ptr());
            libc::_exit(127);
        }
    }
    // SAFETY: the child's pid; both calls racing with the child's own
    // setpgid is harmless (the same group). Our write end is the child's.
    unsafe {
        libc::setpgid(pid, pid);
        libc::close(write_fd);
    }
    let read = read_until(read_fd, deadline);
    // SAFETY: our read end.
    unsafe { libc::close(read_fd) };
    let done = read.and_then(|out| wait_until(pid, deadline).map(|status| (out, status)));
    let ((buf, too_large), status) = match done {
        Ok(done) => done,
        Err(e) => {
            // SAFETY: the command's process group (ESRCH when it is gone),
            // the command itself (had it left its group), reaped.
            unsafe {
                libc::killpg(pid, libc::SIGKILL);
                libc::kill(pid, libc::SIGKILL);
                let mut st = 0;
                while libc::waitpid(pid, &mut st, 0) < 0
                    && std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted
                {}
            }
            return Err(e.unwrap_or_else(|| {
                Error::KekSource(format!(
                    "pazpaz.kek_command did not exit within pazpaz.kek_command_timeout ({} s); its process group was killed",
                    timeout.as_secs()
                ))
            }));
        }
    };
    if status != 0 {
        // SAFETY: returns a palloc'd, NUL-terminated description.
        let why = unsafe { CStr::from_ptr(pg_sys::wait_result_to_str(status)) }.to_string_lossy().into_owned();
        return Err(Error::KekSource(format!("pazpaz.kek_command failed: {why}")));
    }
    if too_large {
        return Err(Error::KekSource(format!("pazpaz.kek_command printed more than {MAX_RING_BYTES} bytes")));
    }
    Ok(buf)
}

/// Reads `fd` to end of file, or until `deadline` (`Err(None)`): the
/// output (at most MAX_RING_BYTES, in a buffer that never grows) and
/// whether there was more.
fn read_until(fd: libc::c_int, deadline: std::time::Instant) -> Result<(Zeroizing<Vec<u8>>, bool), Option<Error>> {
    let mut buf = Zeroizing::new(vec![0u8; MAX_RING_BYTES + 1]);
    let mut len = 0;
    let mut too_large = false;
    loop {
        let mut p = libc::pollfd { fd, events: libc::POLLIN, revents: 0 };
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            return Err(None);
        }
        let ms = libc::c_int::try_from(left.as_millis().max(1)).unwrap_or(libc::c_int::MAX);
        // SAFETY: one valid pollfd.
        let r = unsafe { libc::poll(&mut p, 1, ms) };
        if r < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(Some(Error::KekSource(format!("could not read the output of pazpaz.kek_command: {e}"))));
        }
        if r == 0 {
            continue; // the deadline, checked above
        }
        let room = buf.len() - len;
        // SAFETY: at most `room` bytes into the free part of `buf`.
        let n = unsafe { libc::read(fd, buf[len..].as_mut_ptr().cast(), room) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(Some(Error::KekSource(format!("could not read the output of pazpaz.kek_command: {e}"))));
        }
        if n == 0 {
            break;
        }
        len += n as usize;
        if len == buf.len() {
            // Read the rest and throw it away, so that the command is not
            // left blocked on a full pipe.
            too_large = true;
            len = 0;
            buf.iter_mut().for_each(|b| *b = 0);
        }
    }
    buf.truncate(len);
    Ok((buf, too_large))
}

/// Waits for `pid` to exit, or until `deadline` (`Err(None)`); its wait
/// status.
fn wait_until(pid: libc::pid_t, deadline: std::time::Instant) -> Result<libc::c_int, Option<Error>> {
    loop {
        let mut status = 0;
        // SAFETY: our child; WNOHANG never blocks.
        let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
        if r == pid {
            return Ok(status);
        }
        if r < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() != std::io::ErrorKind::Interrupted {
                return Err(Some(Error::KekSource(format!("could not wait for pazpaz.kek_command: {e}"))));
            }
        }
        if std::time::Instant::now() >= deadline {
            return Err(None);
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}
