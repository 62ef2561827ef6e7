//! The file tools: `file.read`, `file.write`, `file.edit`, `file.grep`,
//! `file.find` and `file.list`, each confined to a root directory.
//!
//! Each tool is an executor kind of its own (`kind = "file.read"`, ...) with
//! the same options ([`FileOptions`]): the root, whether it may be written,
//! and caps on bytes read and written, on results returned and on entries
//! walked. Every path a payload names is opened beneath the root by the
//! kernel (see [`root`]), never checked as a string and opened later.
//!
//! What each tool refuses, and how, is one [`FileToolError`]; a refusal by
//! the root or a cap is a failure with reason `refused` naming the rule
//! (`root`, `writable`, `max_read_bytes`, `max_write_bytes`), never retried.
//! The work is blocking system calls, run on tokio's blocking pool; a
//! cancel stops a walk between two entries.

use crate::error::ConfigError;
use crate::executor::{Cancellation, ExecError, ExecErrorKind, Executor, Outcome, TaskContext};
use crate::executors::kinds::{KindDefaults, parse_options};
use async_trait::async_trait;
use broker_topology::payload_schema::PayloadSchema;
use serde::Deserialize;
use serde_json::{Value, json};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

mod root;
mod tools;

use root::Root;

/// The options of a file tool: `[executor.NAME]` with `kind = "file.read"`
/// (or `file.write`, `file.edit`, `file.grep`, `file.find`, `file.list`) in
/// the worker's config file. Only `root` is required.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileOptions {
    /// The directory every path is resolved beneath. Required.
    pub root: PathBuf,
    /// Whether `file.write` and `file.edit` may change files under the root.
    /// Default `false`: the root is read-only.
    #[serde(default)]
    pub writable: bool,
    /// The most bytes read from one file (`file.read` returns that much;
    /// `file.edit` refuses a larger file; `file.grep` skips one). Default 1 MiB.
    #[serde(default = "FileOptions::default_max_read_bytes")]
    pub max_read_bytes: u64,
    /// The most bytes one `file.write` or `file.edit` writes. Default 1 MiB.
    #[serde(default = "FileOptions::default_max_write_bytes")]
    pub max_write_bytes: u64,
    /// The most matches, paths or entries one task returns. Default 1000.
    #[serde(default = "FileOptions::default_max_results")]
    pub max_results: usize,
    /// The most directory entries one `file.grep`, `file.find` or
    /// `file.list` looks at. Default 10 000.
    #[serde(default = "FileOptions::default_max_files_walked")]
    pub max_files_walked: usize,
}

impl FileOptions {
    /// The defaults, with this root.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        FileOptions {
            root: root.into(),
            writable: false,
            max_read_bytes: Self::default_max_read_bytes(),
            max_write_bytes: Self::default_max_write_bytes(),
            max_results: Self::default_max_results(),
            max_files_walked: Self::default_max_files_walked(),
        }
    }

    fn default_max_read_bytes() -> u64 {
        1 << 20
    }

    fn default_max_write_bytes() -> u64 {
        1 << 20
    }

    fn default_max_results() -> usize {
        1000
    }

    fn default_max_files_walked() -> usize {
        10_000
    }
}

/// Which file tool an executor is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileTool {
    /// `file.read`: a file's content.
    Read,
    /// `file.write`: writes (creates, replaces or appends to) a file.
    Write,
    /// `file.edit`: replaces an exact piece of text in a file.
    Edit,
    /// `file.grep`: lines matching a regular expression.
    Grep,
    /// `file.find`: paths matching a glob.
    Find,
    /// `file.list`: a directory's entries.
    List,
}

impl FileTool {
    /// Every tool.
    pub const ALL: [FileTool; 6] = [
        FileTool::Read,
        FileTool::Write,
        FileTool::Edit,
        FileTool::Grep,
        FileTool::Find,
        FileTool::List,
    ];

    /// Its kind and capability name: `file.read`, ...
    pub fn name(self) -> &'static str {
        match self {
            FileTool::Read => "file.read",
            FileTool::Write => "file.write",
            FileTool::Edit => "file.edit",
            FileTool::Grep => "file.grep",
            FileTool::Find => "file.find",
            FileTool::List => "file.list",
        }
    }

    /// True for the tools that change files.
    pub fn writes(self) -> bool {
        matches!(self, FileTool::Write | FileTool::Edit)
    }
}

/// How a file tool failed or refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FileToolError {
    /// The path leads outside the root: by `..` (`how` = `parent`), as an
    /// absolute path elsewhere (`absolute`), or through a symlink (`symlink`).
    #[error("path {path:?} leads outside the root ({how})")]
    Escape {
        /// The path.
        path: String,
        /// `parent`, `absolute` or `symlink`.
        how: &'static str,
    },
    /// The root is read-only for this executor.
    #[error("the root is read-only for this executor (its option `writable` is false)")]
    ReadOnly,
    /// Over one of the caps.
    #[error("{what} is {size} bytes, over this executor's `{limit}` ({max})")]
    TooLarge {
        /// What is too large.
        what: String,
        /// Its size.
        size: u64,
        /// The option that caps it.
        limit: &'static str,
        /// The cap.
        max: u64,
    },
    /// A path the tool cannot use.
    #[error("path {path:?}: {message}")]
    BadPath {
        /// The path.
        path: String,
        /// Why.
        message: String,
    },
    /// Nothing at the path.
    #[error("{path} does not exist")]
    NotFound {
        /// The path.
        path: String,
    },
    /// Something of another type at the path.
    #[error("{path} is not a {expected}")]
    WrongType {
        /// The path.
        path: String,
        /// `file` or `directory`.
        expected: &'static str,
    },
    /// `file.write` with `mode = "create"` found the file there.
    #[error("{path} already exists")]
    Exists {
        /// The path.
        path: String,
    },
    /// `file.edit`: the text to replace is not in the file.
    #[error("the text to replace is not in {path}")]
    NoMatch {
        /// The path.
        path: String,
    },
    /// `file.edit`: the text to replace is there more than once.
    #[error(
        "the text to replace is in {path} {count} times; give more of it to make it unique, or set `replace_all`"
    )]
    Ambiguous {
        /// The path.
        path: String,
        /// How often it is there.
        count: usize,
    },
    /// `file.edit` on a file that is not UTF-8 text.
    #[error("{path} is not UTF-8 text")]
    NotText {
        /// The path.
        path: String,
    },
    /// Any other I/O error.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: String,
        /// The error.
        source: std::io::Error,
    },
}

impl FileToolError {
    /// The policy rule that refused, for errors that are refusals.
    pub fn rule(&self) -> Option<&'static str> {
        match self {
            FileToolError::Escape { .. } => Some("root"),
            FileToolError::ReadOnly => Some("writable"),
            FileToolError::TooLarge { limit, .. } => Some(limit),
            _ => None,
        }
    }

    fn into_exec(self, executor: &str) -> ExecError {
        let mut details = json!({"executor": executor});
        match &self {
            FileToolError::Escape { path, how } => {
                details["path"] = json!(path);
                details["escape"] = json!(how);
            }
            FileToolError::TooLarge { size, max, .. } => {
                details["size"] = json!(size);
                details["max"] = json!(max);
            }
            FileToolError::Ambiguous { path, count } => {
                details["path"] = json!(path);
                details["count"] = json!(count);
            }
            FileToolError::BadPath { path, .. }
            | FileToolError::NotFound { path }
            | FileToolError::WrongType { path, .. }
            | FileToolError::Exists { path }
            | FileToolError::NoMatch { path }
            | FileToolError::NotText { path }
            | FileToolError::Io { path, .. } => details["path"] = json!(path),
            FileToolError::ReadOnly => {}
        }
        let kind = if let Some(rule) = self.rule() {
            details["rule"] = json!(rule);
            ExecErrorKind::Refused
        } else if let FileToolError::Io { source, .. } = &self {
            match source.kind() {
                std::io::ErrorKind::PermissionDenied
                | std::io::ErrorKind::ReadOnlyFilesystem
                | std::io::ErrorKind::InvalidFilename
                | std::io::ErrorKind::InvalidInput => ExecErrorKind::Permanent,
                _ => ExecErrorKind::Failed,
            }
        } else {
            ExecErrorKind::Permanent
        };
        ExecError::new(kind, self.to_string()).with_details(details)
    }
}

/// Runs one file tool under one root.
#[derive(Debug)]
pub struct FileExecutor {
    name: String,
    tool: FileTool,
    options: FileOptions,
    root: Arc<Root>,
}

impl FileExecutor {
    /// Tool `tool`, registered as `name`, with `options`; opens the root.
    pub fn new(
        name: impl Into<String>,
        tool: FileTool,
        options: FileOptions,
    ) -> Result<Self, ConfigError> {
        let name = name.into();
        let invalid = |message: String| ConfigError::Invalid {
            executor: name.clone(),
            message,
        };
        let root = Root::open(&options.root).map_err(|e| {
            invalid(format!(
                "`root` {} cannot be opened as a directory: {e}",
                options.root.display()
            ))
        })?;
        if !root.path().is_dir() {
            return Err(invalid(format!(
                "`root` {} is not a directory",
                options.root.display()
            )));
        }
        if options.max_results == 0 || options.max_files_walked == 0 {
            return Err(invalid(
                "`max_results` and `max_files_walked` must be at least 1".into(),
            ));
        }
        if tool.writes() && !options.writable {
            tracing::warn!(
                executor = %name,
                tool = tool.name(),
                root = %root.path().display(),
                "a file tool that writes, on a read-only root: every task will be refused"
            );
        }
        Ok(FileExecutor {
            name,
            tool,
            options,
            root: Arc::new(root),
        })
    }

    /// The tool this executor runs.
    pub fn tool(&self) -> FileTool {
        self.tool
    }

    fn check(&self, payload: &Value) -> Result<tools::Task, ExecError> {
        if let Some(schema) = PayloadSchema::builtin(self.tool.name()) {
            schema
                .check(payload)
                .map_err(|e| ExecError::invalid(e.to_string()))?;
        }
        tools::Task::parse(self.tool, payload)
            .map_err(|e| ExecError::invalid(format!("{} payload: {e}", self.tool.name())))
    }
}

#[async_trait]
impl Executor for FileExecutor {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> &str {
        self.tool.name()
    }

    fn validate(&self, payload: &Value) -> Result<(), ExecError> {
        self.check(payload).map(|_| ())
    }

    async fn execute(
        &self,
        ctx: &TaskContext,
        payload: Value,
        mut cancel: Cancellation,
    ) -> Result<Outcome, ExecError> {
        let task = self.check(&payload)?;
        let stop = Arc::new(AtomicBool::new(false));
        let root = self.root.clone();
        let options = self.options.clone();
        let stop_flag = stop.clone();
        tracing::debug!(task_id = %ctx.task_id, tool = self.tool.name(), "file tool");
        let mut work =
            tokio::task::spawn_blocking(move || tools::run(&root, &options, task, &stop_flag));
        let result = tokio::select! {
            done = &mut work => done,
            reason = cancel.cancelled() => {
                // The walk stops at its next entry; a single read or write
                // is bounded by the caps.
                stop.store(true, Ordering::Relaxed);
                let _ = work.await;
                return Err(ExecError::from_cancel(reason));
            }
        };
        match result {
            Ok(Ok(body)) => Ok(Outcome {
                body,
                ..Outcome::default()
            }),
            Ok(Err(e)) => Err(e.into_exec(&self.name)),
            Err(join) => Err(ExecError::new(
                ExecErrorKind::Failed,
                format!("the file tool stopped: {join}"),
            )),
        }
    }

    async fn health_check(&self) -> Result<(), ExecError> {
        // The root must still be there and be a directory.
        self.root.dir().dir_metadata().map(|_| ()).map_err(|e| {
            ExecError::new(
                ExecErrorKind::Unavailable,
                format!("root {}: {e}", self.root.path().display()),
            )
        })
    }
}

fn build(tool: FileTool, name: &str, options: Value) -> Result<Arc<dyn Executor>, ConfigError> {
    let options: FileOptions = parse_options(name, options)?;
    Ok(Arc::new(FileExecutor::new(name, tool, options)?))
}

/// The kind table's builder for `kind = "file.read"`.
pub(super) fn build_read(
    name: &str,
    options: Value,
    _: &KindDefaults,
) -> Result<Arc<dyn Executor>, ConfigError> {
    build(FileTool::Read, name, options)
}

/// The kind table's builder for `kind = "file.write"`.
pub(super) fn build_write(
    name: &str,
    options: Value,
    _: &KindDefaults,
) -> Result<Arc<dyn Executor>, ConfigError> {
    build(FileTool::Write, name, options)
}

/// The kind table's builder for `kind = "file.edit"`.
pub(super) fn build_edit(
    name: &str,
    options: Value,
    _: &KindDefaults,
) -> Result<Arc<dyn Executor>, ConfigError> {
    build(FileTool::Edit, name, options)
}

/// The kind table's builder for `kind = "file.grep"`.
pub(super) fn build_grep(
    name: &str,
    options: Value,
    _: &KindDefaults,
) -> Result<Arc<dyn Executor>, ConfigError> {
    build(FileTool::Grep, name, options)
}

/// The kind table's builder for `kind = "file.find"`.
pub(super) fn build_find(
    name: &str,
    options: Value,
    _: &KindDefaults,
) -> Result<Arc<dyn Executor>, ConfigError> {
    build(FileTool::Find, name, options)
}

/// The kind table's builder for `kind = "file.list"`.
pub(super) fn build_list(
    name: &str,
    options: Value,
    _: &KindDefaults,
) -> Result<Arc<dyn Executor>, ConfigError> {
    build(FileTool::List, name, options)
}

#[cfg(test)]
mod tests;
