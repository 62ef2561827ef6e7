//! The process's stop signal, for the long-running commands.
//!
//! The handlers are installed once, as early as [`install`] is called (main
//! calls it before a long-running command starts), so a SIGTERM that arrives
//! while a worker or sink is still connecting is a stop request like any
//! other, not the default action of killing the process.

use std::sync::OnceLock;
use tokio::sync::watch;

static STOP: OnceLock<watch::Receiver<bool>> = OnceLock::new();

/// Installs the SIGTERM (Kubernetes) and SIGINT (ctrl-c) handlers, once.
/// Must run inside the tokio runtime.
pub fn install() -> watch::Receiver<bool> {
    STOP.get_or_init(|| {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
        let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
        let (tx, rx) = watch::channel(false);
        tokio::spawn(async move {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
            let _ = tx.send(true);
        });
        rx
    })
    .clone()
}

/// Resolves on SIGTERM or SIGINT, including one that came before this call.
pub async fn stop_signal() {
    let mut stop = install();
    let _ = stop.wait_for(|stopped| *stopped).await;
}
