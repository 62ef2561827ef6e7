//! Allow and block lists of programs, by name or by path.
//!
//! A program is judged by what would run: the payload's name is resolved
//! first (a bare name on the worker's `PATH`, a path as it is) and both it
//! and every list entry are compared by their canonical paths, symlinks
//! followed. So `allow = ["make"]` allows the `make` the worker's `PATH`
//! finds, and not a file called `make` somewhere else; `allow = ["/bin/sh"]`
//! allows `sh` on a system where `/bin/sh` is a link to `dash`.
//!
//! A block entry that is a bare name also matches any program of that file
//! name, wherever it is: `block = ["rm"]` refuses `/usr/bin/rm` and `./rm`.
//! A copy under another name escapes it, which is why a block list is a
//! convenience and an allow list is the boundary. Block wins over allow.
//!
//! A shell command line is the shell running a program chit cannot see, so
//! with an allow list it is judged as the shell: refused unless the shell is
//! allowed, and once it is, the line may run anything the shell can.

use super::Refusal;
use std::ffi::OsStr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// Searched when the worker has no `PATH`.
const DEFAULT_PATH: &str = "/usr/local/bin:/usr/bin:/bin";

/// The lists of one executor.
#[derive(Debug, Clone, Default)]
pub(super) struct ProgramRules {
    allow: Option<Vec<String>>,
    block: Vec<String>,
}

impl ProgramRules {
    /// Checks the entries' form: a bare name or an absolute path.
    pub(super) fn new(allow: Option<Vec<String>>, block: Vec<String>) -> Result<Self, String> {
        for (key, entry) in allow
            .iter()
            .flatten()
            .map(|e| ("allow", e))
            .chain(block.iter().map(|e| ("block", e)))
        {
            let bare = !entry.contains('/');
            if entry.trim().is_empty() || !(bare || entry.starts_with('/')) {
                return Err(format!(
                    "{key}: {entry:?} is neither a program name nor an absolute path"
                ));
            }
        }
        Ok(ProgramRules { allow, block })
    }

    pub(super) fn is_empty(&self) -> bool {
        self.allow.is_none() && self.block.is_empty()
    }

    pub(super) fn allow(&self) -> Option<&[String]> {
        self.allow.as_deref()
    }

    pub(super) fn block(&self) -> &[String] {
        &self.block
    }

    /// Refuses `named` (as the payload wrote it, resolved to `path`) when a
    /// list says so. `is_shell`: the program is the shell of a command line.
    pub(super) fn check(&self, named: &str, path: &Path, is_shell: bool) -> Result<(), Refusal> {
        let target = canonical(path);
        let names = [
            Some(named).filter(|n| !n.contains('/')),
            path.file_name().and_then(OsStr::to_str),
            target.file_name().and_then(OsStr::to_str),
        ];
        if let Some(entry) = self.block.iter().find(|entry| {
            if entry.contains('/') {
                canonical(Path::new(entry)) == target
            } else {
                names.contains(&Some(entry.as_str()))
                    || resolve(entry, None).is_some_and(|p| canonical(&p) == target)
            }
        }) {
            return Err(Refusal {
                rule: "block",
                message: if is_shell {
                    format!(
                        "shell command lines are refused: the block list names the shell ({entry})"
                    )
                } else {
                    format!("{named:?} is on the block list ({entry})")
                },
            });
        }
        let Some(allow) = &self.allow else {
            return Ok(());
        };
        let allowed = allow.iter().any(|entry| {
            let entry_path = if entry.contains('/') {
                Some(PathBuf::from(entry))
            } else {
                resolve(entry, None)
            };
            entry_path.is_some_and(|p| canonical(&p) == target)
        });
        if allowed {
            Ok(())
        } else if is_shell {
            Err(Refusal {
                rule: "allow",
                message: format!(
                    "shell command lines are refused: the allow list does not include the shell \
                     ({named}), and a list cannot judge what a shell will run; give `args` to run \
                     a program directly"
                ),
            })
        } else {
            Err(Refusal {
                rule: "allow",
                message: format!("{named:?} ({}) is not on the allow list", target.display()),
            })
        }
    }

    /// The first allow-list entry that names no program that exists, in
    /// words for a health check.
    pub(super) fn missing(&self) -> Option<String> {
        self.allow.iter().flatten().find_map(|entry| {
            let found = if entry.contains('/') {
                is_executable(Path::new(entry))
            } else {
                resolve(entry, None).is_some()
            };
            (!found).then(|| {
                if entry.contains('/') {
                    format!("the allow list names {entry}, which is not an executable file")
                } else {
                    format!("the allow list names {entry:?}, which is not on the worker's PATH")
                }
            })
        })
    }
}

/// Where `name` runs from: a bare name on the worker's `PATH`, a relative
/// path from `cwd` (else the worker's directory), an absolute path as it is;
/// `None` when that is no executable file.
pub(super) fn resolve(name: &str, cwd: Option<&Path>) -> Option<PathBuf> {
    if name.contains('/') {
        let path = match cwd {
            Some(dir) if !name.starts_with('/') => dir.join(name),
            _ => PathBuf::from(name),
        };
        return is_executable(&path).then_some(path);
    }
    let search = std::env::var_os("PATH").unwrap_or_else(|| DEFAULT_PATH.into());
    std::env::split_paths(&search)
        .filter(|dir| dir.is_absolute())
        .map(|dir| dir.join(name))
        .find(|p| is_executable(p))
}

fn is_executable(path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

fn canonical(path: &Path) -> PathBuf {
    std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_path_entry_allows_the_program_its_link_points_to() {
        let sh = resolve("sh", None).unwrap();
        let rules = ProgramRules::new(Some(vec![sh.display().to_string()]), vec![]).unwrap();
        assert!(rules.check("sh", &sh, true).is_ok());
        let target = canonical(&sh);
        assert!(rules.check("x", &target, false).is_ok());
    }

    #[test]
    fn missing_names_the_absent_program() {
        let rules = ProgramRules::new(Some(vec!["/no/such/tool".into()]), vec![]).unwrap();
        assert!(rules.missing().unwrap().contains("/no/such/tool"));
        let rules = ProgramRules::new(Some(vec!["sh".into()]), vec![]).unwrap();
        assert_eq!(rules.missing(), None);
    }
}
