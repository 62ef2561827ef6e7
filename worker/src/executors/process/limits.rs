//! What bounds a child: rlimits set between fork and exec, and the user it
//! runs as.
//!
//! rlimits are per process and inherited, so everything the child starts
//! is bound by them too. Two of them count more than the child:
//! `RLIMIT_NPROC` ([`Limits::processes`]) counts every process of the
//! child's real user, whoever started it, and the kernel does not apply it
//! to root. So a process limit is refused for a worker running as root
//! unless the executor also sets `user`: a limit that binds nothing would
//! look like protection and be none.

use nix::sys::resource::{Resource, getrlimit, setrlimit};
use serde::{Deserialize, Serialize};
use std::path::Path;
use tokio::process::Command;

const MIB: u64 = 1 << 20;

/// rlimits for a child, each optional. Set under `[executor.NAME.limits]`.
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// CPU seconds (`RLIMIT_CPU`); SIGXCPU when they run out, SIGKILL a
    /// second later.
    pub cpu_secs: Option<u64>,
    /// Address space in MiB (`RLIMIT_AS`): allocations beyond it fail.
    pub address_space_mb: Option<u64>,
    /// Processes of the child's user, all of them (`RLIMIT_NPROC`): a fork
    /// beyond it fails. Needs `user` when the worker is root.
    pub processes: Option<u64>,
    /// Largest file the child may write, in MiB (`RLIMIT_FSIZE`); SIGXFSZ
    /// beyond it.
    pub file_size_mb: Option<u64>,
    /// Open file descriptors (`RLIMIT_NOFILE`).
    pub open_files: Option<u64>,
}

impl Limits {
    /// Refuses limits that would not do what they say.
    pub(super) fn check(&self, run_as: Option<&RunAs>) -> Result<(), String> {
        for (key, value) in [
            ("cpu_secs", self.cpu_secs),
            ("address_space_mb", self.address_space_mb),
            ("processes", self.processes),
            ("file_size_mb", self.file_size_mb),
            ("open_files", self.open_files),
        ] {
            if value == Some(0) {
                return Err(format!("limits.{key} must be at least 1"));
            }
        }
        let child_uid = run_as
            .map(|u| u.uid)
            .unwrap_or_else(|| nix::unistd::getuid().as_raw());
        if self.processes.is_some() && child_uid == 0 {
            return Err(
                "limits.processes binds nothing for root: the kernel does not apply RLIMIT_NPROC \
                 to uid 0; set `user` to run children as an unprivileged user"
                    .into(),
            );
        }
        Ok(())
    }

    /// Each limit as (resource, soft, hard).
    fn settings(&self) -> Vec<(Resource, u64, u64)> {
        let mut out = Vec::new();
        if let Some(s) = self.cpu_secs {
            // The soft limit sends SIGXCPU, which says why; the hard one kills.
            out.push((Resource::RLIMIT_CPU, s, s.saturating_add(1)));
        }
        if let Some(mb) = self.address_space_mb {
            let b = mb.saturating_mul(MIB);
            out.push((Resource::RLIMIT_AS, b, b));
        }
        if let Some(n) = self.processes {
            out.push((Resource::RLIMIT_NPROC, n, n));
        }
        if let Some(mb) = self.file_size_mb {
            let b = mb.saturating_mul(MIB);
            out.push((Resource::RLIMIT_FSIZE, b, b));
        }
        if let Some(n) = self.open_files {
            out.push((Resource::RLIMIT_NOFILE, n, n));
        }
        out
    }

    /// Sets the limits in `cmd`'s child, between fork and exec. A limit
    /// above what the worker itself may have is lowered to the worker's
    /// hard limit, since no unprivileged process may raise it.
    #[allow(unsafe_code)]
    pub(super) fn install(&self, cmd: &mut Command) {
        let wanted: Vec<(Resource, u64, u64)> = self
            .settings()
            .into_iter()
            .map(|(r, soft, hard)| match getrlimit(r) {
                Ok((_, max)) => (r, soft.min(max), hard.min(max)),
                Err(_) => (r, soft, hard),
            })
            .collect();
        if wanted.is_empty() {
            return;
        }
        // SAFETY: the closure runs in the child between fork and exec; it
        // only reads the vector made above and calls setrlimit(2), which is
        // async-signal-safe; it allocates nothing (the error is a raw errno).
        unsafe {
            cmd.pre_exec(move || {
                for &(resource, soft, hard) in &wanted {
                    setrlimit(resource, soft, hard)
                        .map_err(|e| std::io::Error::from_raw_os_error(e as i32))?;
                }
                Ok(())
            });
        }
    }
}

/// The user a child runs as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct RunAs {
    /// As configured.
    pub(super) name: String,
    pub(super) uid: u32,
    pub(super) gid: u32,
}

impl RunAs {
    /// Looks `user` (a name or a uid) up in the user database. Only root may
    /// start processes as another user, so any other worker is refused.
    pub(super) fn resolve(user: &str) -> Result<RunAs, String> {
        let found = match user.parse::<u32>() {
            Ok(uid) => nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid)),
            Err(_) => nix::unistd::User::from_name(user),
        }
        .map_err(|e| format!("user {user:?}: {e}"))?;
        let Some(u) = found else {
            return Err(format!("user {user:?}: no such user"));
        };
        let me = nix::unistd::geteuid();
        if !me.is_root() && u.uid != me {
            return Err(format!(
                "user {user:?}: only a worker running as root can run children as another user"
            ));
        }
        Ok(RunAs {
            name: user.to_owned(),
            uid: u.uid.as_raw(),
            gid: u.gid.as_raw(),
        })
    }

    /// Gives `path` to the user, so its children can work there.
    pub(super) fn own(&self, path: &Path) -> std::io::Result<()> {
        std::os::unix::fs::chown(path, Some(self.uid), Some(self.gid))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn limits_reach_the_child() {
        let limits = Limits {
            open_files: Some(64),
            file_size_mb: Some(1),
            ..Limits::default()
        };
        let mut cmd = Command::new("cat");
        cmd.arg("/proc/self/limits");
        limits.install(&mut cmd);
        let out = cmd.output().await.unwrap();
        let text = String::from_utf8(out.stdout).unwrap();
        let row = |name: &str| {
            let line = text.lines().find(|l| l.starts_with(name)).unwrap();
            line.split_whitespace()
                .skip(name.split(' ').count())
                .take(2)
                .collect::<Vec<_>>()
        };
        assert_eq!(row("Max open files"), ["64", "64"], "{text}");
        assert_eq!(row("Max file size"), ["1048576", "1048576"], "{text}");
    }

    #[test]
    fn zero_is_refused() {
        let limits = Limits {
            cpu_secs: Some(0),
            ..Limits::default()
        };
        assert!(limits.check(None).unwrap_err().contains("cpu_secs"));
    }
}
