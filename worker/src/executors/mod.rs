//! The executors chit ships, one file each.

mod command;
mod noop;

pub use command::{CommandExecutor, CommandPayload};
pub use noop::NoopExecutor;
