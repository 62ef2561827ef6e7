//! [`BrokerLink`]: the one owner of a component's broker connection.
//!
//! It connects lazily, applies the component's topology on every new
//! connection, keeps one confirm-mode channel for publishing, and reconnects
//! with backoff when anyone reports the connection broken. Consumers open their
//! own channels on the current session and re-subscribe when it changes; a
//! session's `generation` tells them whether a delivery tag is still valid.

use crate::connect::{Backoff, connect, redact};
use crate::declare::Topology;
use crate::error::{Error, ErrorKind};
use futures_util::StreamExt;
use lapin::options::ConfirmSelectOptions;
use lapin::{Channel, Connection};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex as StdMutex};
use std::time::{Duration, Instant};
use tokio::sync::Mutex;

/// A live connection with its publishing channel.
#[derive(Debug)]
pub struct Session {
    /// Increases by one with every new connection.
    pub generation: u64,
    /// The connection; open consumer channels on it.
    pub connection: Arc<Connection>,
    /// A channel in confirm mode, shared by every publisher of the component.
    pub publisher: Channel,
}

/// Connection state, for logs and health checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkState {
    /// Not connected yet.
    Idle,
    /// Connected (and not blocked by the broker).
    Connected,
    /// Connected, but the broker blocks publishing (memory or disk alarm).
    Blocked(String),
    /// Connection lost or refused; reconnecting.
    Reconnecting(String),
}

/// Owns one broker connection for a component. Cheap to share as `Arc`.
#[derive(Debug)]
pub struct BrokerLink {
    url: String,
    name: String,
    topology: Topology,
    current: Mutex<Option<Arc<Session>>>,
    state: Arc<StdMutex<LinkState>>,
    generation: StdMutex<u64>,
    closed: AtomicBool,
}

impl BrokerLink {
    /// A link to `url`, shown to the broker as `name`, that declares `topology`
    /// on every connection.
    pub fn new(url: impl Into<String>, name: impl Into<String>, topology: Topology) -> Arc<Self> {
        Arc::new(BrokerLink {
            url: url.into(),
            name: name.into(),
            topology,
            current: Mutex::new(None),
            state: Arc::new(StdMutex::new(LinkState::Idle)),
            generation: StdMutex::new(0),
            closed: AtomicBool::new(false),
        })
    }

    /// The current state.
    pub fn state(&self) -> LinkState {
        self.state.lock().expect("link state").clone()
    }

    /// The URL with its password hidden.
    pub fn redacted_url(&self) -> String {
        redact(&self.url)
    }

    /// The live session, connecting (with backoff) until `deadline` if needed.
    ///
    /// The lock on the session is held only for one connection attempt at a
    /// time, never while backing off, and waiting for it respects the
    /// deadline; so a caller that has to give up (a publish deadline, a
    /// shutdown) is never stuck behind someone else's reconnect loop.
    pub async fn session_until(&self, deadline: Option<Instant>) -> Result<Arc<Session>, Error> {
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
        loop {
            if self.closed.load(Ordering::SeqCst) {
                return Err(Error::new(
                    ErrorKind::Connection,
                    "the broker link is closed",
                ));
            }
            let attempt: Result<std::convert::Infallible, Error> = {
                let mut current = match deadline {
                    Some(d) => tokio::time::timeout_at(d.into(), self.current.lock())
                        .await
                        .map_err(|_| {
                            Error::new(
                                ErrorKind::Connection,
                                "broker unreachable: timed out waiting for a connection",
                            )
                        })?,
                    None => self.current.lock().await,
                };
                match current.clone() {
                    Some(s)
                        if s.connection.status().connected()
                            && s.publisher.status().connected() =>
                    {
                        return Ok(s);
                    }
                    Some(s) if s.connection.status().connected() => {
                        // Only the publishing channel died: replace it and keep the
                        // connection, so consumers keep their leases.
                        match open_publisher(&s.connection).await {
                            Ok(publisher) => {
                                let fresh = Arc::new(Session {
                                    generation: s.generation,
                                    connection: s.connection.clone(),
                                    publisher,
                                });
                                *current = Some(fresh.clone());
                                return Ok(fresh);
                            }
                            Err(e) => {
                                *current = None;
                                close_in_background(s, 320, "chit reconnecting");
                                Err(e)
                            }
                        }
                    }
                    other => {
                        if let Some(s) = other {
                            self.set_state(LinkState::Reconnecting("connection closed".into()));
                            tracing::warn!(link = %self.name, generation = s.generation, "broker connection lost");
                            *current = None;
                        }
                        match self.open().await {
                            Ok(session) => {
                                let session = Arc::new(session);
                                tracing::info!(link = %self.name, generation = session.generation, url = %self.redacted_url(), "broker connected");
                                self.set_state(LinkState::Connected);
                                *current = Some(session.clone());
                                return Ok(session);
                            }
                            Err(e) => Err(e),
                        }
                    }
                }
            };
            let Err(e) = attempt;
            if !e.is_transient() {
                return Err(e);
            }
            self.set_state(LinkState::Reconnecting(e.to_string()));
            let wait = backoff.next_delay();
            if let Some(d) = deadline {
                if Instant::now() + wait > d {
                    return Err(Error::new(
                        ErrorKind::Connection,
                        format!("broker unreachable: {e}"),
                    ));
                }
            }
            tracing::warn!(link = %self.name, error = %e, retry_in_ms = wait.as_millis() as u64, "cannot reach broker");
            tokio::time::sleep(wait).await;
        }
    }

    /// The live session, waiting for the broker for as long as it takes.
    pub async fn session(&self) -> Result<Arc<Session>, Error> {
        self.session_until(None).await
    }

    /// Reports that `generation`'s connection failed; the next `session` reconnects.
    pub async fn invalidate(&self, generation: u64) {
        let mut current = self.current.lock().await;
        if current.as_ref().is_some_and(|s| s.generation == generation) {
            if let Some(s) = current.take() {
                tracing::warn!(link = %self.name, generation, "broker session reported broken; reconnecting");
                self.set_state(LinkState::Reconnecting("session reported broken".into()));
                close_in_background(s, 320, "chit reconnecting");
            }
        }
    }

    /// Closes the connection for good; later `session` calls fail.
    pub async fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        let taken = match tokio::time::timeout(Duration::from_secs(5), self.current.lock()).await {
            Ok(mut current) => current.take(),
            Err(_) => None,
        };
        if let Some(s) = taken {
            // A blocked broker may never answer close-ok: bound the wait.
            let _ = tokio::time::timeout(
                Duration::from_secs(5),
                s.connection.close(200, "chit shutting down".into()),
            )
            .await;
        }
        self.set_state(LinkState::Idle);
    }

    fn set_state(&self, s: LinkState) {
        *self.state.lock().expect("link state") = s;
    }

    async fn open(&self) -> Result<Session, Error> {
        let connection = connect(&self.url, &self.name).await?;
        if let Err(e) = self.topology.apply(&connection).await {
            let _ = connection.close(200, "topology not applied".into()).await;
            // Only a conflict needs an operator; anything else (a queue whose
            // node is still starting after a restart, say) passes with time.
            return Err(match e.kind() {
                ErrorKind::Inequivalent { .. } => e,
                _ => Error::new(
                    ErrorKind::Connection,
                    format!("declaring the topology: {e}"),
                ),
            });
        }
        let publisher = open_publisher(&connection).await?;
        let generation = {
            let mut g = self.generation.lock().expect("generation");
            *g += 1;
            *g
        };
        // Blocked/unblocked notifications feed the state, for logs and /healthz.
        let state = self.state.clone();
        let name = self.name.clone();
        let mut events = connection.events_listener();
        tokio::spawn(async move {
            while let Some(event) = events.next().await {
                match event {
                    lapin::Event::ConnectionBlocked(reason) => {
                        tracing::warn!(link = %name, %reason, "broker blocked publishing");
                        *state.lock().expect("link state") = LinkState::Blocked(reason);
                    }
                    lapin::Event::ConnectionUnblocked => {
                        tracing::info!(link = %name, "broker unblocked publishing");
                        *state.lock().expect("link state") = LinkState::Connected;
                    }
                    _ => {}
                }
            }
        });
        Ok(Session {
            generation,
            connection: Arc::new(connection),
            publisher,
        })
    }
}

/// A channel in confirm mode.
async fn open_publisher(connection: &Connection) -> Result<Channel, Error> {
    let publisher = connection
        .create_channel()
        .await
        .map_err(|e| Error::from_lapin("opening the publishing channel", e))?;
    publisher
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .map_err(|e| Error::from_lapin("enabling publisher confirms", e))?;
    Ok(publisher)
}

/// Closes a dead or abandoned session without making anyone wait for it.
fn close_in_background(session: Arc<Session>, code: u16, reason: &'static str) {
    tokio::spawn(async move {
        let _ = tokio::time::timeout(
            Duration::from_secs(5),
            session.connection.close(code, reason.into()),
        )
        .await;
    });
}
