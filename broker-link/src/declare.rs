//! Applying a [`Topology`] to a broker, and comparing a broker with one.
//!
//! The declarations themselves are data in `broker-topology`; this is the
//! only place that sends them.

use crate::error::LinkError;
use broker_topology::declare::{
    EntityReport, EntityState, ExchangeDecl, QueueDecl, Topology, TopologyReport,
};
use lapin::options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::protocol::{AMQPErrorKind, AMQPSoftError};
use lapin::types::FieldTable;
use lapin::{Channel, Connection};

/// Declares all of `topology` on a fresh channel of `conn`. Idempotent. A
/// queue or exchange that exists with other arguments fails with
/// [`LinkError::Inequivalent`], naming it and the argument.
pub async fn apply(conn: &Connection, topology: &Topology) -> Result<(), LinkError> {
    let channel = conn
        .create_channel()
        .await
        .map_err(|e| LinkError::from_lapin("opening a channel", e))?;
    for x in &topology.exchanges {
        declare_exchange(&channel, x, false).await?;
    }
    for q in &topology.queues {
        declare_queue(&channel, q, false).await?;
    }
    for b in &topology.bindings {
        channel
            .queue_bind(
                b.queue.as_str().into(),
                b.exchange.as_str().into(),
                b.routing_key.as_str().into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(|e| {
                LinkError::from_lapin(format!("binding queue {} to {}", b.queue, b.exchange), e)
            })?;
    }
    let _ = channel.close(200, "topology applied".into()).await;
    Ok(())
}

/// Compares the broker with `topology` without changing anything that
/// exists. Missing entities are reported, not created.
pub async fn inspect(conn: &Connection, topology: &Topology) -> Result<TopologyReport, LinkError> {
    let mut entries = Vec::new();
    for x in &topology.exchanges {
        let state = probe(conn, |ch| {
            let x = x.clone();
            async move {
                declare_exchange(&ch, &x, true).await?;
                declare_exchange(&ch, &x, false).await?;
                Ok(None)
            }
        })
        .await?;
        entries.push(EntityReport {
            entity: "exchange",
            name: x.name.clone(),
            state,
        });
    }
    for q in &topology.queues {
        let state = probe(conn, |ch| {
            let q = q.clone();
            async move {
                declare_queue(&ch, &q, true).await?;
                let queue = declare_queue(&ch, &q, false).await?;
                // A stream's declare-ok says 0 messages and 0 consumers
                // whatever it holds: better unknown than wrong.
                Ok((!is_stream(&q)).then(|| (queue.message_count(), queue.consumer_count())))
            }
        })
        .await?;
        entries.push(EntityReport {
            entity: "queue",
            name: q.name.clone(),
            state,
        });
    }
    Ok(TopologyReport { entries })
}

fn is_stream(q: &QueueDecl) -> bool {
    matches!(
        q.arguments.inner().get("x-queue-type"),
        Some(lapin::types::AMQPValue::LongString(t)) if t.as_bytes() == b"stream"
    )
}

/// Runs one check on its own channel, since a failed declare closes it.
async fn probe<F, Fut>(conn: &Connection, check: F) -> Result<EntityState, LinkError>
where
    F: FnOnce(Channel) -> Fut,
    Fut: std::future::Future<Output = Result<Option<(u32, u32)>, LinkError>>,
{
    let channel = conn
        .create_channel()
        .await
        .map_err(|e| LinkError::from_lapin("opening a channel", e))?;
    let result = check(channel.clone()).await;
    let _ = channel.close(200, "probe done".into()).await;
    match result {
        Ok(Some((messages, consumers))) => Ok(EntityState::Present {
            messages: Some(messages),
            consumers: Some(consumers),
        }),
        Ok(None) => Ok(EntityState::Present {
            messages: None,
            consumers: None,
        }),
        Err(LinkError::Inequivalent { detail, .. }) => Ok(EntityState::Differs(detail)),
        Err(e) if e.is_not_found() => Ok(EntityState::Missing),
        Err(e) => Err(e),
    }
}

async fn declare_exchange(
    channel: &Channel,
    x: &ExchangeDecl,
    passive: bool,
) -> Result<(), LinkError> {
    channel
        .exchange_declare(
            x.name.as_str().into(),
            x.kind.clone(),
            ExchangeDeclareOptions {
                durable: true,
                passive,
                ..ExchangeDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .map_err(|e| declare_error("exchange", &x.name, e))
}

/// Whether `queue` exists, by a passive declare on a channel of its own:
/// the broker answers a missing queue with 404, which closes the channel it
/// comes on. Any other failure is an error.
pub async fn queue_exists(conn: &Connection, queue: &str) -> Result<bool, LinkError> {
    let channel = conn
        .create_channel()
        .await
        .map_err(|e| LinkError::from_lapin("opening a channel", e))?;
    let declared = channel
        .queue_declare(
            queue.into(),
            QueueDeclareOptions {
                passive: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .map_err(|e| LinkError::from_lapin(format!("looking for queue {queue}"), e));
    match declared {
        Ok(_) => {
            let _ = channel.close(200, "queue found".into()).await;
            Ok(true)
        }
        Err(e) if e.is_not_found() => Ok(false),
        Err(e) => Err(e),
    }
}

pub(crate) async fn declare_queue(
    channel: &Channel,
    q: &QueueDecl,
    passive: bool,
) -> Result<lapin::Queue, LinkError> {
    channel
        .queue_declare(
            q.name.as_str().into(),
            QueueDeclareOptions {
                durable: true,
                passive,
                ..QueueDeclareOptions::default()
            },
            if passive {
                FieldTable::default()
            } else {
                q.arguments.clone()
            },
        )
        .await
        .map_err(|e| declare_error("queue", &q.name, e))
}

/// Turns a 406 PRECONDITION_FAILED into an error that names the entity and
/// the argument. The reply code decides; the text only supplies the name of
/// the argument, which the broker gives nowhere else.
fn declare_error(entity: &'static str, name: &str, err: lapin::Error) -> LinkError {
    if let lapin::ErrorKind::ProtocolError(amqp) = err.kind()
        && *amqp.kind() == AMQPErrorKind::Soft(AMQPSoftError::PRECONDITIONFAILED)
    {
        let text = amqp.get_message().as_str();
        let argument = text
            .split("inequivalent arg '")
            .nth(1)
            .and_then(|rest| rest.split('\'').next())
            .unwrap_or("unknown")
            .to_owned();
        let detail = text.trim_start_matches("PRECONDITION_FAILED - ").to_owned();
        return LinkError::Inequivalent {
            entity,
            name: name.to_owned(),
            argument,
            detail,
        };
    }
    LinkError::from_lapin(format!("declaring {entity} {name}"), err)
}

/// `topology.apply(&conn)` and `topology.inspect(&conn)`: [`apply`] and
/// [`inspect`] as methods of the topology.
pub trait Declare {
    /// See [`apply`].
    fn apply<'a>(
        &'a self,
        conn: &'a Connection,
    ) -> impl std::future::Future<Output = Result<(), LinkError>> + Send + 'a;

    /// See [`inspect`].
    fn inspect<'a>(
        &'a self,
        conn: &'a Connection,
    ) -> impl std::future::Future<Output = Result<TopologyReport, LinkError>> + Send + 'a;
}

impl Declare for Topology {
    fn apply<'a>(
        &'a self,
        conn: &'a Connection,
    ) -> impl std::future::Future<Output = Result<(), LinkError>> + Send + 'a {
        apply(conn, self)
    }

    fn inspect<'a>(
        &'a self,
        conn: &'a Connection,
    ) -> impl std::future::Future<Output = Result<TopologyReport, LinkError>> + Send + 'a {
        inspect(conn, self)
    }
}
/// How [`own_queue`] binds its queue.
#[derive(Debug, Clone, Copy)]
pub enum OwnBinding<'a> {
    /// Not at all.
    None,
    /// To an exchange under a routing key.
    Key(&'a str, &'a str),
    /// To an exchange under the queue's own (server-given) name, as a reply
    /// queue is bound to [`broker_topology::names::REPLY_EXCHANGE`].
    QueueName(&'a str),
}

/// A server-named queue of `channel`'s connection alone (exclusive, gone
/// with it), bound as `binding` says, and its consumer without acks: for
/// messages worth nothing once this connection is gone, such as
/// publish-and-wait replies, heartbeats and the sink roster. Returns the
/// queue's name and the consumer.
pub async fn own_queue(
    channel: &Channel,
    binding: OwnBinding<'_>,
    consumer_tag: &str,
) -> Result<(String, lapin::Consumer), lapin::Error> {
    let queue = channel
        .queue_declare(
            "".into(),
            QueueDeclareOptions {
                exclusive: true,
                auto_delete: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await?;
    let binding = match binding {
        OwnBinding::None => None,
        OwnBinding::Key(exchange, key) => Some((exchange, key)),
        OwnBinding::QueueName(exchange) => Some((exchange, queue.name().as_str())),
    };
    if let Some((exchange, routing_key)) = binding {
        channel
            .queue_bind(
                queue.name().clone(),
                exchange.into(),
                routing_key.into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
    }
    let consumer = channel
        .basic_consume(
            queue.name().clone(),
            consumer_tag.into(),
            lapin::options::BasicConsumeOptions {
                no_ack: true,
                exclusive: true,
                ..lapin::options::BasicConsumeOptions::default()
            },
            FieldTable::default(),
        )
        .await?;
    Ok((queue.name().as_str().to_owned(), consumer))
}
