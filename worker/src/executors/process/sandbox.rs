//! The sandbox: a child run under bubblewrap (`bwrap`, Debian package
//! `bubblewrap`).
//!
//! The child sees the host's root read-only, a fresh `/dev`, its own `/proc`
//! in its own PID namespace (so no other process of the host), a private
//! empty `/tmp`, no network (a network namespace with only its own loopback)
//! unless `network = true`, and new IPC, UTS and, where allowed, user and
//! cgroup namespaces. Its working directory is the one writable place, bound
//! in read-write: the payload's `working_dir` when it lies inside one of
//! `working_dirs`, else a scratch directory made for the task and removed
//! after it.
//!
//! It stays in the worker's process group scheme: `bwrap` is the child the
//! worker spawns, in a group of its own with the command's guard, and the
//! PID namespace ends everything inside when the command's first process
//! ends. No `--new-session`, which would take the command out of that group.
//!
//! Configured but unusable (no `bwrap`, or it cannot make namespaces here):
//! the worker refuses to start. It never runs a sandboxed executor without
//! its sandbox.

use super::Refusal;
use serde::Deserialize;
use serde_json::{Value, json};
use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// `[executor.NAME.sandbox]`: present means on.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SandboxOptions {
    /// Share the host's network; by default the child has none.
    #[serde(default)]
    pub network: bool,
    /// Directories a payload's `working_dir` may be in (or be); each must
    /// exist. Without them a payload may not name a working directory, and
    /// each task gets a scratch one.
    #[serde(default)]
    pub working_dirs: Vec<PathBuf>,
}

/// A checked sandbox: `bwrap` found and able to make its namespaces.
#[derive(Debug, Clone)]
pub(super) struct Sandbox {
    bwrap: PathBuf,
    network: bool,
    working_dirs: Vec<PathBuf>,
}

impl Sandbox {
    /// Finds `bwrap` on the worker's `PATH` and starts `true` in a sandbox
    /// as the child's user would, or says why not.
    pub(super) fn new(o: SandboxOptions, run_as: Option<&super::RunAs>) -> Result<Sandbox, String> {
        let bwrap = super::programs::resolve("bwrap", None).ok_or(
            "bwrap is not on the worker's PATH: install bubblewrap (Debian package `bubblewrap`) \
             or remove the sandbox from this executor",
        )?;
        let mut working_dirs = Vec::new();
        for dir in o.working_dirs {
            let canonical = std::fs::canonicalize(&dir)
                .map_err(|e| format!("working_dirs: {}: {e}", dir.display()))?;
            if !canonical.is_dir() {
                return Err(format!(
                    "working_dirs: {} is not a directory",
                    dir.display()
                ));
            }
            working_dirs.push(canonical);
        }
        let sandbox = Sandbox {
            bwrap,
            network: o.network,
            working_dirs,
        };
        sandbox.probe(run_as)?;
        Ok(sandbox)
    }

    pub(super) fn bwrap(&self) -> &Path {
        &self.bwrap
    }

    pub(super) fn describe(&self) -> Value {
        json!({
            "bwrap": self.bwrap,
            "network": self.network,
            "working_dirs": self.working_dirs,
        })
    }

    /// `bwrap`'s options for a child working in `working_dir` (the root
    /// when `None`), up to but without the `--` before the program.
    pub(super) fn args(&self, working_dir: Option<&Path>) -> Vec<OsString> {
        let mut a: Vec<OsString> = [
            "--ro-bind",
            "/",
            "/",
            "--dev",
            "/dev",
            "--proc",
            "/proc",
            "--tmpfs",
            "/tmp",
            "--unshare-all",
        ]
        .into_iter()
        .map(OsString::from)
        .collect();
        if self.network {
            a.push("--share-net".into());
        }
        match working_dir {
            Some(dir) => {
                // After the tmpfs, so a directory under /tmp shows through it.
                a.extend(["--bind".into(), dir.into(), dir.into()]);
                a.extend(["--chdir".into(), dir.into()]);
            }
            None => a.extend(["--chdir".into(), "/".into()]),
        }
        a
    }

    /// The payload's working directory, canonical, when it is inside one of
    /// `working_dirs`.
    pub(super) fn admit(&self, dir: &Path) -> Result<PathBuf, Refusal> {
        let refuse = |why: String| Refusal {
            rule: "sandbox.working_dirs",
            message: why,
        };
        let canonical = std::fs::canonicalize(dir)
            .map_err(|e| refuse(format!("working_dir {}: {e}", dir.display())))?;
        if self.working_dirs.iter().any(|w| canonical.starts_with(w)) {
            Ok(canonical)
        } else if self.working_dirs.is_empty() {
            Err(refuse(format!(
                "working_dir {} refused: this sandbox binds no payload directory (it sets no \
                 working_dirs); leave working_dir out to work in a scratch directory",
                dir.display()
            )))
        } else {
            Err(refuse(format!(
                "working_dir {} is outside the sandbox's working_dirs",
                dir.display()
            )))
        }
    }

    /// Runs `true` in the sandbox, as `run_as` when given.
    fn probe(&self, run_as: Option<&super::RunAs>) -> Result<(), String> {
        use std::os::unix::process::CommandExt;
        let mut cmd = std::process::Command::new(&self.bwrap);
        cmd.args(self.args(None))
            .args(["--", "true"])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped());
        if let Some(u) = run_as {
            cmd.uid(u.uid).gid(u.gid);
        }
        let out = cmd
            .output()
            .map_err(|e| format!("cannot run {}: {e}", self.bwrap.display()))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "bwrap cannot make its sandbox here ({}): {}; namespaces may be disabled \
                 (check `bwrap --ro-bind / / --unshare-all true`)",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ))
        }
    }
}
