//! The guard: kills a command's process group when its worker dies.
//!
//! When a worker dies (`kill -9`, OOM) the broker hands its tasks to another
//! worker, so whatever the first copy started must die too, or it finishes its
//! work behind the second run's back. The kernel's parent-death signal
//! (`PR_SET_PDEATHSIG`) only reaches a direct child, and a shell's children
//! are the worker's grandchildren. So each command gets a guard: a small
//! process forked from the worker (it never execs), started before the
//! command. The command, between fork and exec, writes its pid (which is
//! its process group's id) to the guard over a pipe, so the guard knows the
//! group before the command runs. The guard then waits for the worker to go:
//! its parent-death signal arrives, or its parent pid changes (checked every
//! [`POLL`], since the signal also fires when merely the worker thread that
//! forked it ends, and is then not the worker's death). Then it SIGKILLs the
//! whole group. The worker kills the guard once the command has ended.
//!
//! The command stays the worker's own child: its `$PPID` is the worker, the
//! worker reaps it and reads its exit status, exactly as without a guard.
//!
//! Why not a PID namespace (`bwrap --die-with-parent --unshare-pid`,
//! `unshare --pid --kill-child`): without root it needs user namespaces, which
//! many container runtimes forbid, and inside one a command's pids are not
//! the pids the worker and operators see. The guard needs only `fork` and
//! `prctl`, which every container allows.
//!
//! Costs and bounds: a guard is a fork of the worker, so it shares the
//! worker's memory copy-on-write and keeps the pages the worker rewrites
//! while the task runs. A process that leaves the group (`setsid`) escapes,
//! as it escapes a timeout; what a command leaves running after it exits is
//! no longer guarded. Linux only: elsewhere [`Guard::arm`] does nothing and
//! commands only get a process group of their own.

use std::io;
use tokio::process::Command;

/// How often the guard checks that its worker is still its parent.
#[cfg(target_os = "linux")]
const POLL: libc::timespec = libc::timespec {
    tv_sec: 0,
    tv_nsec: 100_000_000,
};

/// The guard's parent-death signal: kept blocked, so it ends a
/// `sigtimedwait` early rather than killing the guard.
#[cfg(target_os = "linux")]
const WORKER_GONE: libc::c_int = libc::SIGUSR1;

/// A running guard. Dropping it kills it.
pub(in crate::executors) struct Guard {
    #[cfg(target_os = "linux")]
    process: tokio::process::Child,
    /// The pipe's write end: the command inherits it and reports its pid on
    /// it; held until the guard goes, so the guard never reads EOF while the
    /// worker lives.
    #[cfg(target_os = "linux")]
    _report: std::os::fd::OwnedFd,
}

impl Guard {
    /// Starts a guard, and sets `cmd` up to report its process group to it.
    /// `cmd` must run in a process group of its own (`process_group(0)`).
    #[cfg(target_os = "linux")]
    pub(in crate::executors) fn arm(cmd: &mut Command) -> io::Result<Guard> {
        use std::os::fd::AsRawFd;
        let (listen, report) = std::io::pipe()?;
        let process = spawn_guard(listen.as_raw_fd())?;
        drop(listen);
        let report = std::os::fd::OwnedFd::from(report);
        report_pid_before_exec(cmd, report.as_raw_fd());
        Ok(Guard {
            process,
            _report: report,
        })
    }

    /// Without a parent-death signal there is no guard.
    #[cfg(not(target_os = "linux"))]
    pub(in crate::executors) fn arm(_cmd: &mut Command) -> io::Result<Guard> {
        Ok(Guard {})
    }

    /// The command has ended (and been reaped): stops the guard.
    pub(in crate::executors) async fn release(self) {
        #[cfg(target_os = "linux")]
        {
            let mut g = self;
            let _ = g.process.kill().await;
        }
    }

    /// The guard's pid, for tests.
    #[cfg(all(test, target_os = "linux"))]
    pub(super) fn pid(&self) -> Option<u32> {
        self.process.id()
    }
}

/// Forks the guard. Its `pre_exec` never returns: the guard is that forked
/// child, and lives in [`guard`].
#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
fn spawn_guard(listen: libc::c_int) -> io::Result<tokio::process::Child> {
    let worker = std::process::id() as libc::pid_t;
    let mut cmd = Command::new("chit-command-guard");
    cmd.stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        // Its own group: no signal meant for the worker's group reaches it.
        .process_group(0)
        .kill_on_drop(true);
    // SAFETY: the closure runs in the child between fork and exec, where a
    // multi-threaded parent allows only async-signal-safe calls; it and
    // `guard` make raw system calls on stack data, and neither allocates
    // nor locks. It never returns, so the forked copy of the worker never
    // runs the worker's code.
    unsafe {
        cmd.pre_exec(move || guard(worker, listen));
    }
    cmd.spawn()
}

/// The guard's life, after the fork: see the module docs.
#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
fn guard(worker: libc::pid_t, listen: libc::c_int) -> ! {
    // SAFETY: see `spawn_guard`.
    unsafe {
        let mut gone: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut gone);
        libc::sigaddset(&mut gone, WORKER_GONE);
        libc::sigprocmask(libc::SIG_BLOCK, &gone, std::ptr::null_mut());
        libc::prctl(libc::PR_SET_PDEATHSIG, WORKER_GONE as libc::c_ulong);
        // The worker's signals are not for the guard; SIGKILL still ends it.
        for sig in [libc::SIGTERM, libc::SIGINT, libc::SIGHUP, libc::SIGQUIT] {
            libc::signal(sig, libc::SIG_IGN);
        }
        // Armed: now let `spawn` return in the worker (it waits for this
        // child's copy of std's exec-status pipe to close), and hold nothing
        // of the worker's but the pipe the command reports on.
        close_all_but(listen);
        let mut pid = [0u8; 4];
        let mut got = 0;
        while got < pid.len() {
            let n = libc::read(listen, pid[got..].as_mut_ptr().cast(), pid.len() - got);
            if n > 0 {
                got += n as usize;
            } else if n == 0 || io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
                // The worker went before any command reported: nothing to guard.
                libc::_exit(0);
            }
        }
        let group = libc::pid_t::from_ne_bytes(pid);
        loop {
            if libc::getppid() != worker {
                // Re-parented: the worker is gone, and so is this task.
                libc::kill(-group, libc::SIGKILL);
                libc::_exit(0);
            }
            // Ends early on the parent-death signal.
            libc::sigtimedwait(&gone, std::ptr::null_mut(), &POLL);
        }
    }
}

#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
fn close_all_but(keep: libc::c_int) {
    // SAFETY: closing descriptors in the forked guard; see `spawn_guard`.
    unsafe {
        let keep = keep as libc::c_uint;
        for (first, last) in [(0, keep.wrapping_sub(1)), (keep + 1, libc::c_uint::MAX)] {
            if first > last {
                continue;
            }
            if libc::syscall(libc::SYS_close_range, first, last, 0u32) != 0 {
                // Kernels before 5.9.
                for fd in first..last.min(4096) {
                    libc::close(fd as libc::c_int);
                }
            }
        }
    }
}

/// Makes the command write its pid to the guard after it has become its
/// group's leader and before it execs.
#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
fn report_pid_before_exec(cmd: &mut Command, report: libc::c_int) {
    // SAFETY: runs between fork and exec (see `spawn_guard`): getpid, signal
    // and write, on stack data. The pipe is close-on-exec, so the command
    // itself never holds it.
    unsafe {
        cmd.pre_exec(move || {
            let pid = libc::getpid().to_ne_bytes();
            // A dead guard must fail the spawn, not kill the child with SIGPIPE.
            libc::signal(libc::SIGPIPE, libc::SIG_IGN);
            let n = libc::write(report, pid.as_ptr().cast(), pid.len());
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
            if n == pid.len() as isize {
                Ok(())
            } else {
                Err(io::Error::last_os_error())
            }
        });
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;
    use std::path::Path;

    /// Alive and not a zombie (an orphan's zombie waits for a reaping init).
    fn running(pid: i32) -> bool {
        std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
            stat.rsplit_once(')')
                .is_some_and(|(_, rest)| !rest.trim_start().starts_with(['Z', 'X']))
        })
    }

    #[tokio::test]
    async fn a_released_guard_is_gone() {
        let mut cmd = Command::new("true");
        cmd.process_group(0);
        let guard = Guard::arm(&mut cmd).unwrap();
        let pid = guard.pid().unwrap() as i32;
        assert!(running(pid));
        assert!(cmd.spawn().unwrap().wait().await.unwrap().success());
        guard.release().await;
        assert!(
            !Path::new(&format!("/proc/{pid}")).exists(),
            "killed and reaped"
        );
    }

    // That a guard kills the group when its worker dies (kill -9) is shown
    // end to end, through the chit binary, by tests/worker_death.rs.
}
