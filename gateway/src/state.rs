//! What every handler shares: the store, the producer, the management API
//! client, the live workers and the settings.

use crate::error::StartError;
use crate::publishers::Publishers;
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
/// Publishers (each a broker connection with its confirm channel) unless
/// told otherwise.
pub const DEFAULT_PUBLISHERS: usize = 16;
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
    /// How many publishers (broker connections) submissions share; each
    /// publishes one request's task at a time.
    pub publishers: usize,
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
            publishers: DEFAULT_PUBLISHERS,
        }
    }
}

/// Shared by every handler; cheap to clone.
#[derive(Clone)]
pub struct GatewayState {
    pub(crate) store: Store,
    /// For dead-letter operations (replay, purge) and anything else that is
    /// not a submission; submissions go through `publishers`.
    pub(crate) producer: Producer,
    pub(crate) publishers: Arc<Publishers>,
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
            producer: Producer::new(producer_config.clone()),
            publishers: Publishers::new(producer_config, config.publishers.max(1)),
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

    /// Closes the broker connections and the store.
    pub async fn close(&self) {
        self.publishers.close().await;
        self.producer.link().close().await;
        self.store.close().await;
    }
}
