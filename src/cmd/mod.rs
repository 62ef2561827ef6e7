//! The commands, one module each: its flags (a clap `Args` struct or
//! subcommand enum) and a `run` that turns them into settings, calls the
//! crates and prints. `main` only parses and dispatches here.

pub mod cancel;
pub mod dev;
pub mod dlq;
pub mod publish;
pub mod sink;
pub mod task;
pub mod topology;
pub mod worker;
