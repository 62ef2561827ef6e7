//! What every handler shares: the store, the producer, the management API
//! client, the live workers and the settings.

use crate::error::StartError;
use broker_link::management::Management;
use producer::{Producer, ProducerConfig};
use receipts_sink::{LiveWorkers, Store};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// Where the gateway listens unless told otherwise.
pub const DEFAULT_HTTP_ADDR: &str = "127.0.0.1:8800";
/// The largest request body accepted unless told otherwise: 1 MiB.
pub const DEFAULT_MAX_BODY_BYTES: usize = 1024 * 1024;
/// How long a publish may wait for the broker unless told otherwise.
pub const DEFAULT_PUBLISH_DEADLINE: Duration = Duration::from_secs(5);
/// The longest `?wait=` unless told otherwise.
pub const DEFAULT_MAX_WAIT: Duration = Duration::from_secs(60);
/// How long a block the broker announced still answers submissions with
/// 429 at once, unless a publish goes through first (see
/// `broker_link::LinkStatus::blocked_within`).
const BLOCK_MEMORY: Duration = Duration::from_secs(10);
/// How long an idempotency key holds: a key reused within this window
/// returns the task of its first use; after it, it is a new request.
pub const IDEMPOTENCY_WINDOW: Duration = Duration::from_secs(24 * 3600);

/// Gateway settings.
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    /// Broker URL.
    pub amqp_url: String,
    /// Store URL (the receipts sink's store: keys and idempotency records
    /// live beside the chains).
    pub store_url: String,
    /// Address to listen on.
    pub http: SocketAddr,
    /// Largest request body accepted; larger gets 413.
    pub max_body_bytes: usize,
    /// How long a publish may wait for the broker before the request gets 503.
    pub publish_deadline: Duration,
    /// Longest `?wait=` accepted.
    pub max_wait: Duration,
    /// The management API's base URL, when not the AMQP host on port 15672.
    pub management_url: Option<String>,
}

impl GatewayConfig {
    /// The defaults, for this broker and store.
    pub fn new(amqp_url: impl Into<String>, store_url: impl Into<String>) -> Self {
        GatewayConfig {
            amqp_url: amqp_url.into(),
            store_url: store_url.into(),
            http: DEFAULT_HTTP_ADDR.parse().expect("default address"),
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            publish_deadline: DEFAULT_PUBLISH_DEADLINE,
            max_wait: DEFAULT_MAX_WAIT,
            management_url: None,
        }
    }
}

/// Shared by every handler; cheap to clone.
#[derive(Clone)]
pub struct GatewayState {
    pub(crate) store: Store,
    /// Every publish: submissions, waits, replays and purges. Requests
    /// publishing at once each get a channel of its one connection.
    pub(crate) producer: Producer,
    pub(crate) management: Option<Management>,
    pub(crate) workers: LiveWorkers,
    pub(crate) config: Arc<GatewayConfig>,
}

impl GatewayState {
    /// Opens the store (bringing its schema up to date) and makes the
    /// producers; they connect in the background, so a broker that is down
    /// makes requests fail with 503, not the gateway refuse to start.
    pub async fn open(config: GatewayConfig) -> Result<GatewayState, StartError> {
        let store = Store::open(&config.store_url).await?;
        let management =
            match Management::for_amqp_url(&config.amqp_url, config.management_url.as_deref()) {
                Ok(m) => Some(m),
                // Asked for by URL and unusable: say so now.
                Err(e) if config.management_url.is_some() => return Err(StartError::Management(e)),
                Err(e) => {
                    tracing::warn!(error = %e, "no management API: queue figures will be missing");
                    None
                }
            };
        Ok(GatewayState::new(store, management, config))
    }

    /// State over an open store.
    pub fn new(
        store: Store,
        management: Option<Management>,
        config: GatewayConfig,
    ) -> GatewayState {
        let mut producer_config = ProducerConfig::new(&config.amqp_url);
        producer_config.publish_deadline = config.publish_deadline;
        GatewayState {
            store,
            producer: Producer::new(producer_config),
            management,
            workers: LiveWorkers::default(),
            config: Arc::new(config),
        }
    }

    /// The settings.
    pub fn config(&self) -> &GatewayConfig {
        &self.config
    }

    /// The store.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Why the broker blocks publishing, now or lately (429).
    pub(crate) fn blocked(&self) -> Option<String> {
        self.producer.link().status().blocked_within(BLOCK_MEMORY)
    }

    /// The broker link's state for `/healthz`, `Blocked` while a block is
    /// remembered.
    pub(crate) fn broker_state(&self) -> broker_link::LinkState {
        match self.blocked() {
            Some(reason) => broker_link::LinkState::Blocked(reason),
            None => self.producer.link().state(),
        }
    }

    /// Closes the broker connections and the store.
    pub async fn close(&self) {
        self.producer.link().close().await;
        self.store.close().await;
    }
}
