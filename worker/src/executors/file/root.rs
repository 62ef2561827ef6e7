//! The confined root of the file tools: every path a payload names is opened
//! beneath it, by the kernel.
//!
//! The root is a directory handle ([`cap_std::fs::Dir`]); a path is opened
//! relative to it with `openat2(RESOLVE_BENEATH)` (cap-std falls back to a
//! component-by-component walk on kernels without it). So `..` above the
//! root, an absolute symlink, or a symlink to anywhere outside is refused
//! while the path is resolved, in the same system call that opens the file:
//! there is no check followed by an open, and a symlink planted between two
//! calls is met by the second call's own resolution.
//!
//! Before that, [`Root::relative`] turns the payload's path into one
//! relative to the root, refusing `..` that climbs above it and absolute
//! paths elsewhere with a clear message; it never decides on its own that a
//! path is safe.

use super::FileToolError;
use cap_std::ambient_authority;
use cap_std::fs::Dir;
use std::io;
use std::path::{Component, Path, PathBuf};

/// An opened root directory.
#[derive(Debug)]
pub(super) struct Root {
    dir: Dir,
    /// Canonical: symlinks on the way resolved.
    path: PathBuf,
    /// As configured, which payloads may use in absolute paths too.
    configured: PathBuf,
}

impl Root {
    /// Opens `path`, which must be a directory.
    pub(super) fn open(path: &Path) -> io::Result<Root> {
        let configured = path.to_path_buf();
        let path = std::fs::canonicalize(path)?;
        let dir = Dir::open_ambient_dir(&path, ambient_authority())?;
        Ok(Root {
            dir,
            path,
            configured,
        })
    }

    /// The root's path on the host.
    pub(super) fn path(&self) -> &Path {
        &self.path
    }

    /// The root's directory handle.
    pub(super) fn dir(&self) -> &Dir {
        &self.dir
    }

    /// `requested` as a path relative to the root: `.` for an empty one, an
    /// absolute path only when it lies under the root's path (canonical or
    /// as configured). `..` may
    /// step back down what the path went up, never above the root.
    pub(super) fn relative(&self, requested: &str) -> Result<PathBuf, FileToolError> {
        if requested.contains('\0') {
            return Err(FileToolError::BadPath {
                path: requested.to_owned(),
                message: "contains a NUL byte".into(),
            });
        }
        let given = Path::new(requested);
        let rest = if given.is_absolute() {
            given
                .strip_prefix(&self.path)
                .or_else(|_| given.strip_prefix(&self.configured))
                .map_err(|_| FileToolError::Escape {
                    path: requested.to_owned(),
                    how: "absolute",
                })?
        } else {
            given
        };
        let mut depth = 0usize;
        let mut out = PathBuf::new();
        for c in rest.components() {
            match c {
                Component::Normal(part) => {
                    depth += 1;
                    out.push(part);
                }
                Component::CurDir => {}
                Component::ParentDir => {
                    if depth == 0 {
                        return Err(FileToolError::Escape {
                            path: requested.to_owned(),
                            how: "parent",
                        });
                    }
                    depth -= 1;
                    // Kept: the kernel resolves it, symlinks and all.
                    out.push("..");
                }
                Component::RootDir | Component::Prefix(_) => {
                    return Err(FileToolError::Escape {
                        path: requested.to_owned(),
                        how: "absolute",
                    });
                }
            }
        }
        if out.as_os_str().is_empty() {
            out.push(".");
        }
        Ok(out)
    }
}

/// True when cap-std refused a path because resolving it would leave the
/// root (its own error, which carries no OS error code, unlike EACCES).
pub(super) fn is_escape(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::PermissionDenied && e.raw_os_error().is_none()
}

/// Maps an I/O error on `path` to the tool error saying what happened.
pub(super) fn io_error(path: &Path, e: io::Error) -> FileToolError {
    let shown = display(path);
    if is_escape(&e) {
        return FileToolError::Escape {
            path: shown,
            how: "symlink",
        };
    }
    match e.kind() {
        io::ErrorKind::NotFound => FileToolError::NotFound { path: shown },
        _ => FileToolError::Io {
            path: shown,
            source: e,
        },
    }
}

/// A root-relative path as shown in results: `/`-separated, no leading `./`.
pub(super) fn display(path: &Path) -> String {
    let s = path.to_string_lossy();
    let s = s.strip_prefix("./").unwrap_or(&s);
    if s.is_empty() { ".".into() } else { s.into() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_made_relative_to_the_root_or_refused() {
        let dir = tempfile::tempdir().unwrap();
        let root = Root::open(dir.path()).unwrap();
        let rel = |s: &str| root.relative(s).map(|p| display(&p));
        assert_eq!(rel("").unwrap(), ".");
        assert_eq!(rel(".").unwrap(), ".");
        assert_eq!(rel("a/./b.txt").unwrap(), "a/b.txt");
        assert_eq!(rel("a/../b").unwrap(), "a/../b");
        let inside = root.path().join("x/y.txt");
        assert_eq!(rel(inside.to_str().unwrap()).unwrap(), "x/y.txt");
        for (path, how) in [
            ("..", "parent"),
            ("../etc/passwd", "parent"),
            ("a/../../b", "parent"),
            ("/etc/passwd", "absolute"),
        ] {
            match root.relative(path) {
                Err(FileToolError::Escape { how: h, .. }) => assert_eq!(h, how, "{path}"),
                other => panic!("{path}: {other:?}"),
            }
        }
        assert!(matches!(
            root.relative("a\0b"),
            Err(FileToolError::BadPath { .. })
        ));
    }
}
