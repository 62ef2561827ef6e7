//! [`BrokerLink`]: the one owner of a component's broker connection.
//!
//! It connects lazily, applies the component's topology on every new
//! connection, keeps one confirm-mode channel for publishing, and reconnects
//! with backoff when anyone reports the connection broken. Consumers open their
//! own channels on the current session and re-subscribe when it changes; a
//! session's `generation` tells them whether a delivery tag is still valid.
//!
//! A link to a list of brokers (the nodes of a cluster) connects to the
//! first that answers; after losing a connection it starts from the node
//! after the one it lost, so a stopped node is not the first one it waits on.

use crate::connect::{Backoff, connect_from, redact, split_urls};
use crate::error::LinkError;
use broker_topology::Topology;
use futures_util::StreamExt;
use lapin::options::ConfirmSelectOptions;
use lapin::{Channel, Connection};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex as StdMutex};
use std::time::{Duration, Instant};
use tokio::sync::Mutex;

/// How long a link that has never reached its broker keeps trying before a
/// caller with a deadline is told it cannot.
pub const FIRST_CONTACT: Duration = Duration::from_secs(5);

/// A live connection with its publishing channels.
#[derive(Debug)]
pub struct Session {
    /// Increases by one with every new connection.
    pub generation: u64,
    /// The connection; open consumer channels on it.
    pub connection: Arc<Connection>,
    /// A channel in confirm mode for pipelined publishes that are never
    /// returned (receipt batches), shared by the component.
    pub(crate) publisher: Channel,
    /// A confirm-mode channel for one mandatory publish at a time, so a
    /// return always belongs to the publish that waits for it (lapin pairs a
    /// return with the next confirm to arrive on its channel).
    pub(crate) single: Mutex<Option<Channel>>,
    /// Idle confirm-mode channels for pipelined publish passes
    /// ([`crate::publish::take_pass_channel`]).
    pub(crate) pass_channels: StdMutex<Vec<Channel>>,
    /// Position, in the link's URL list, of the broker it is connected to.
    pub(crate) address: usize,
}

impl Session {
    /// The idle pass channels, for a session that replaces this one on the
    /// same connection.
    fn take_pass_channels(&self) -> Vec<Channel> {
        std::mem::take(&mut *self.pass_channels.lock().expect("pass channels"))
    }
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
    /// Closed by its owner: the component is stopping.
    Closed,
}

impl LinkState {
    /// The name health endpoints show: `connecting`, `connected`, `blocked`,
    /// `reconnecting` or `stopped`.
    pub fn as_str(&self) -> &'static str {
        match self {
            LinkState::Idle => "connecting",
            LinkState::Connected => "connected",
            LinkState::Blocked(_) => "blocked",
            LinkState::Reconnecting(_) => "reconnecting",
            LinkState::Closed => "stopped",
        }
    }

    /// True when the component can do its work: connected, or connected but
    /// blocked by the broker (a restart would not help; the body says why).
    pub fn is_healthy(&self) -> bool {
        matches!(self, LinkState::Connected | LinkState::Blocked(_))
    }

    /// The reason behind a blocked or reconnecting state.
    pub fn detail(&self) -> Option<&str> {
        match self {
            LinkState::Blocked(r) | LinkState::Reconnecting(r) => Some(r),
            _ => None,
        }
    }
}

/// A shared view of a link's state: the link writes it, health endpoints
/// read it. Cheap to clone.
///
/// It also remembers the broker's last "blocked": RabbitMQ tells a
/// connection it is blocked only when that connection publishes during an
/// alarm, and a publisher that gives up on a confirm reconnects, which
/// overwrites `Blocked` with `Reconnecting`. [`LinkStatus::blocked_within`]
/// still answers for a while, so a front end can refuse at once instead of
/// waiting out another deadline.
#[derive(Debug, Clone, Default)]
pub struct LinkStatus(Arc<StdMutex<StatusInner>>);

#[derive(Debug)]
struct StatusInner {
    state: LinkState,
    /// When the broker last said it blocks publishing, and why; cleared by
    /// its "unblocked" or by a publish it confirmed.
    block: Option<(Instant, String)>,
}

impl Default for StatusInner {
    fn default() -> Self {
        StatusInner {
            state: LinkState::Idle,
            block: None,
        }
    }
}

impl LinkStatus {
    /// The current state.
    pub fn get(&self) -> LinkState {
        self.0.lock().expect("link state").state.clone()
    }

    /// Sets the state (the link does; tests may). `Blocked` is remembered.
    pub fn set(&self, state: LinkState) {
        let mut inner = self.0.lock().expect("link state");
        if let LinkState::Blocked(reason) = &state {
            inner.block = Some((Instant::now(), reason.clone()));
        }
        inner.state = state;
    }

    /// Why the broker blocks publishing: now, or at some point in the last
    /// `memory` with neither an "unblocked" nor a confirmed publish since.
    pub fn blocked_within(&self, memory: Duration) -> Option<String> {
        let inner = self.0.lock().expect("link state");
        if let LinkState::Blocked(reason) = &inner.state {
            return Some(reason.clone());
        }
        match &inner.block {
            Some((at, reason)) if at.elapsed() < memory => Some(reason.clone()),
            _ => None,
        }
    }

    /// The broker took a publish (or said "unblocked"): any block is over.
    pub fn publish_went_through(&self) {
        let mut inner = self.0.lock().expect("link state");
        if inner.block.take().is_some() {
            tracing::info!("the broker takes publishes again");
        }
    }
}

/// Owns one broker connection for a component. Cheap to share as `Arc`.
#[derive(Debug)]
pub struct BrokerLink {
    url: String,
    name: String,
    topology: Topology,
    current: Mutex<Option<Arc<Session>>>,
    state: LinkStatus,
    generation: StdMutex<u64>,
    closed: AtomicBool,
    /// Position in the URL list to try first on the next connection.
    next_address: AtomicUsize,
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
            state: LinkStatus::default(),
            generation: StdMutex::new(0),
            closed: AtomicBool::new(false),
            next_address: AtomicUsize::new(0),
        })
    }

    /// The current state.
    pub fn state(&self) -> LinkState {
        self.state.get()
    }

    /// A handle on the state that outlives borrows of the link.
    pub fn status(&self) -> LinkStatus {
        self.state.clone()
    }

    /// The name the broker shows for this link's connection.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Connections the link has opened so far (its current generation): 1
    /// after the first, one more with every reconnect.
    pub fn connections(&self) -> u64 {
        *self.generation.lock().expect("generation")
    }

    /// True once the link has reached its broker at least once.
    pub fn ever_connected(&self) -> bool {
        *self.generation.lock().expect("generation") > 0
    }

    /// The URL with its password hidden.
    pub fn redacted_url(&self) -> String {
        redact(&self.url)
    }

    /// The live session, connecting (with backoff) until `deadline` if needed.
    ///
    /// A link that has never reached its broker gives up after
    /// [`FIRST_CONTACT`] even when the deadline is later: a wrong URL or a
    /// broker that is not running should fail a command at once, while a
    /// broker lost after contact (a restart) is waited for until the deadline.
    /// A caller with a deadline reports the failure itself, so retries are
    /// logged at debug level; without one, they are warnings.
    ///
    /// The lock on the session is held only for one connection attempt at a
    /// time, never while backing off, and waiting for it respects the
    /// deadline; so a caller that has to give up (a publish deadline, a
    /// shutdown) is never stuck behind someone else's reconnect loop.
    pub async fn session_until(
        &self,
        deadline: Option<Instant>,
    ) -> Result<Arc<Session>, LinkError> {
        let deadline = match deadline {
            Some(d) if !self.ever_connected() => Some(d.min(Instant::now() + FIRST_CONTACT)),
            other => other,
        };
        let mut backoff = Backoff::default();
        loop {
            if self.closed.load(Ordering::SeqCst) {
                return Err(LinkError::Closed);
            }
            let attempt: Result<std::convert::Infallible, LinkError> = {
                let mut current = match deadline {
                    Some(d) => tokio::time::timeout_at(d.into(), self.current.lock())
                        .await
                        .map_err(|_| {
                            LinkError::Deadline(format!(
                                "broker unreachable at {}: timed out waiting for a connection",
                                self.redacted_url()
                            ))
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
                                    single: Mutex::new(None),
                                    pass_channels: StdMutex::new(s.take_pass_channels()),
                                    address: s.address,
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
                            tracing::warn!(link = %self.name, generation = s.generation, url = %self.address_url(s.address), "broker connection lost");
                            self.move_past(&s);
                            *current = None;
                        }
                        match self.open().await {
                            Ok(session) => {
                                let session = Arc::new(session);
                                tracing::info!(link = %self.name, generation = session.generation, url = %self.address_url(session.address), "broker connected");
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
            if let Some(d) = deadline
                && Instant::now() + wait > d
            {
                return Err(LinkError::Deadline(format!("broker unreachable: {e}")));
            }
            let retry_in_ms = wait.as_millis() as u64;
            if deadline.is_some() {
                tracing::debug!(link = %self.name, error = %e, retry_in_ms, "cannot reach broker");
            } else {
                tracing::warn!(link = %self.name, error = %e, retry_in_ms, "cannot reach broker");
            }
            tokio::time::sleep(wait).await;
        }
    }

    /// The live session, waiting for the broker for as long as it takes.
    pub async fn session(&self) -> Result<Arc<Session>, LinkError> {
        self.session_until(None).await
    }

    /// Gives the current session fresh publishing channels, keeping its
    /// connection (and so its consumers' leases); for a publisher the
    /// broker nacked. Messages still awaiting a confirm on the old channel
    /// come back as lost, to be sent again.
    ///
    /// Why: RabbitMQ 3.10 sets a channel up for a quorum queue on its first
    /// message there, starting from the leader its metadata names. A channel
    /// that began while that leader was going away (a node stopped) nacks
    /// every later message to the queue for as long as it lives, even after
    /// a new leader is elected; a new channel starts from the new leader.
    pub async fn renew_publisher(&self) {
        let mut current = self.current.lock().await;
        let Some(s) = current.clone() else {
            return;
        };
        if !s.connection.status().connected() {
            return;
        }
        match open_publisher(&s.connection).await {
            Ok(publisher) => {
                *current = Some(Arc::new(Session {
                    generation: s.generation,
                    connection: s.connection.clone(),
                    publisher,
                    single: Mutex::new(None),
                    pass_channels: StdMutex::new(s.take_pass_channels()),
                    address: s.address,
                }));
                close_channel_in_background(s.publisher.clone(), "renewed after a nack");
                tracing::info!(link = %self.name, generation = s.generation, "publishing channel renewed after a nack");
            }
            Err(e) => {
                tracing::warn!(link = %self.name, error = %e, "cannot open a new publishing channel; reconnecting");
                *current = None;
                self.set_state(LinkState::Reconnecting(e.to_string()));
                close_in_background(s, 320, "chit reconnecting");
            }
        }
    }

    /// Reports that `generation`'s connection failed; the next `session` reconnects.
    pub async fn invalidate(&self, generation: u64) {
        let mut current = self.current.lock().await;
        if current.as_ref().is_some_and(|s| s.generation == generation)
            && let Some(s) = current.take()
        {
            tracing::warn!(link = %self.name, generation, "broker session reported broken; reconnecting");
            self.move_past(&s);
            self.set_state(LinkState::Reconnecting("session reported broken".into()));
            close_in_background(s, 320, "chit reconnecting");
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
        self.set_state(LinkState::Closed);
    }

    fn set_state(&self, s: LinkState) {
        self.state.set(s);
    }

    /// The URL at `address` in the link's list, password hidden.
    fn address_url(&self, address: usize) -> String {
        split_urls(&self.url)
            .get(address)
            .map(|u| redact(u))
            .unwrap_or_else(|| self.redacted_url())
    }

    /// After losing `lost`'s connection, the next one starts with the node
    /// after it: the one lost is likely down, and may take a connect timeout
    /// to say so.
    fn move_past(&self, lost: &Session) {
        self.next_address.store(lost.address + 1, Ordering::SeqCst);
    }

    async fn open(&self) -> Result<Session, LinkError> {
        let start = self.next_address.load(Ordering::SeqCst);
        let (connection, address) =
            connect_from(&self.url, start, &self.name, &crate::tls::installed()).await?;
        if let Err(e) = crate::declare::apply(&connection, &self.topology).await {
            let _ = connection.close(200, "topology not applied".into()).await;
            // A node that cannot declare now (its queues' leaders being
            // elected, say) is the last one to try again.
            self.next_address.store(address + 1, Ordering::SeqCst);
            // Only a conflict or refused access needs an operator; anything
            // else (a queue whose node is still starting after a restart,
            // say) passes with time.
            return Err(match e {
                LinkError::Inequivalent { .. } | LinkError::Refused { .. } => e,
                other => LinkError::unreachable("declaring the topology", other.to_string()),
            });
        }
        let publisher = open_publisher(&connection).await?;
        self.next_address.store(address, Ordering::SeqCst);
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
                        state.set(LinkState::Blocked(reason));
                    }
                    lapin::Event::ConnectionUnblocked => {
                        tracing::info!(link = %name, "broker unblocked publishing");
                        state.set(LinkState::Connected);
                        state.publish_went_through();
                    }
                    _ => {}
                }
            }
        });
        Ok(Session {
            generation,
            connection: Arc::new(connection),
            publisher,
            single: Mutex::new(None),
            pass_channels: StdMutex::default(),
            address,
        })
    }
}

/// A channel in confirm mode.
pub(crate) async fn open_publisher(connection: &Connection) -> Result<Channel, LinkError> {
    let publisher = connection
        .create_channel()
        .await
        .map_err(|e| LinkError::from_lapin("opening a publishing channel", e))?;
    publisher
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .map_err(|e| LinkError::from_lapin("enabling publisher confirms", e))?;
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

/// Closes a channel without making anyone wait for close-ok (a blocked broker
/// may never send it).
pub(crate) fn close_channel_in_background(channel: Channel, reason: &'static str) {
    tokio::spawn(async move {
        let _ =
            tokio::time::timeout(Duration::from_secs(5), channel.close(200, reason.into())).await;
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_block_is_remembered_past_a_reconnect_until_a_publish_goes_through() {
        let status = LinkStatus::default();
        let memory = Duration::from_secs(60);
        assert_eq!(status.blocked_within(memory), None);
        status.set(LinkState::Blocked("memory alarm".into()));
        status.set(LinkState::Reconnecting("no confirm".into()));
        status.set(LinkState::Connected);
        assert_eq!(
            status.blocked_within(memory).as_deref(),
            Some("memory alarm")
        );
        assert_eq!(status.blocked_within(Duration::ZERO), None);
        status.publish_went_through();
        assert_eq!(status.blocked_within(memory), None);
    }

    #[test]
    fn health_follows_the_state() {
        assert!(!LinkState::Idle.is_healthy());
        assert!(LinkState::Connected.is_healthy());
        // Blocked: restarting would not help, so a probe must not kill it.
        assert!(LinkState::Blocked("memory alarm".into()).is_healthy());
        assert!(!LinkState::Reconnecting("refused".into()).is_healthy());
        assert!(!LinkState::Closed.is_healthy());
        assert_eq!(
            LinkState::Blocked("memory alarm".into()).detail(),
            Some("memory alarm")
        );
    }

    #[tokio::test]
    async fn an_unreachable_broker_fails_at_the_deadline_and_says_reconnecting() {
        // Port 1 on loopback refuses at once: no broker is needed.
        let link = BrokerLink::new("amqp://guest:guest@127.0.0.1:1/%2f", "t", Topology::core());
        let err = link
            .session_until(Some(Instant::now() + Duration::from_millis(800)))
            .await
            .unwrap_err();
        assert!(matches!(err, LinkError::Deadline(_)), "{err}");
        assert!(err.is_transient());
        assert!(matches!(link.state(), LinkState::Reconnecting(_)));
    }

    #[tokio::test]
    async fn a_bad_url_fails_at_once_and_a_closed_link_stays_closed() {
        let link = BrokerLink::new("amqp://u:secret@host:notaport/", "t", Topology::core());
        let err = link.session().await.unwrap_err();
        assert!(matches!(err, LinkError::BadUrl { .. }), "{err}");
        assert!(!err.to_string().contains("secret"));
        link.close().await;
        assert_eq!(link.state(), LinkState::Closed);
        assert!(matches!(link.session().await, Err(LinkError::Closed)));
    }
}
