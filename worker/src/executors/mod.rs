//! The executors chit ships, one file each.

mod command;
mod exec;
pub mod file;
pub mod http;
pub mod kinds;
mod noop;
pub mod process;
pub mod sql;

pub use command::{CommandExecutor, CommandPayload};
pub use exec::{EXEC_KIND, ExecExecutor, ExecProgram};
pub use file::{FileExecutor, FileOptions, FileTool, FileToolError};
pub use http::{HttpExecutor, HttpOptions, HttpPayload};
pub use noop::NoopExecutor;
pub use sql::{SqlExecutor, SqlOptions, SqlPayload};
