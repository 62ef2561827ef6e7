//! [`Shutdown`]: the one signal every worker task listens to.
//!
//! The worker holds the sender; the consumer loop and running tasks hold
//! receivers. Once fired it stays fired, so late listeners see it too.

use tokio::sync::watch;

/// Fires once, for everyone who holds a clone.
#[derive(Debug, Clone)]
pub struct Shutdown {
    rx: watch::Receiver<bool>,
}

/// Fires a [`Shutdown`].
#[derive(Debug)]
pub struct ShutdownTrigger {
    tx: watch::Sender<bool>,
}

/// A linked trigger and signal.
pub fn shutdown() -> (ShutdownTrigger, Shutdown) {
    let (tx, rx) = watch::channel(false);
    (ShutdownTrigger { tx }, Shutdown { rx })
}

impl ShutdownTrigger {
    /// Fires the signal.
    pub fn fire(&self) {
        self.tx.send_replace(true);
    }
}

impl Shutdown {
    /// True once fired.
    pub fn is_shutdown(&self) -> bool {
        *self.rx.borrow()
    }

    /// Resolves once fired.
    pub async fn recv(&mut self) {
        let _ = self.rx.wait_for(|fired| *fired).await;
    }
}
