//! Every confirmed publish chit makes, and the one reading of its answer.
//!
//! [`send`] puts a message on a confirm-mode channel and hands back a
//! [`PendingConfirm`] whose [`PublishOutcome`] says what the broker did with
//! it. Pipelined publishers (tasks, receipt batches) call it directly;
//! [`BrokerLink::publish_confirmed`] publishes one message and waits, on a
//! channel where it is alone, so a return is always its own. Both write the
//! trace context of the span they are called in, when tracing is on.

use crate::error::LinkError;
use crate::link::{BrokerLink, Session, open_publisher};
use lapin::options::BasicPublishOptions;
use lapin::{BasicProperties, Channel, Confirmation};
use std::future::{Future, IntoFuture};
use std::pin::Pin;
use std::time::Instant;

/// A message to publish.
#[derive(Debug, Clone)]
pub struct Outgoing<'a> {
    /// The exchange (`""` for the default exchange).
    pub exchange: &'a str,
    /// The routing key.
    pub routing_key: &'a str,
    /// The body.
    pub body: &'a [u8],
    /// AMQP properties and headers.
    pub properties: BasicProperties,
    /// Ask the broker to return the message when no queue is bound for it.
    pub mandatory: bool,
}

/// What the broker did with one published message.
#[derive(Debug, Clone)]
pub enum PublishOutcome {
    /// Routed to at least one queue and confirmed.
    Confirmed,
    /// Mandatory, and no queue was bound for it: the broker sent it back.
    /// Nothing was stored.
    Returned {
        /// The broker's reply code (312 NO_ROUTE).
        reply_code: u16,
        /// The broker's reply text.
        reply_text: String,
        /// The returned message's `message_id`, which tells whose it is where
        /// several publishes share a channel.
        message_id: Option<String>,
    },
    /// The broker refused to take responsibility for it (negative confirm).
    Nacked,
    /// The channel or connection died before the confirm: the message may or
    /// may not be on the broker. Publishing it again is safe only for
    /// messages whose consumers deduplicate (receipts, tasks by id).
    Lost(LinkError),
}

impl PublishOutcome {
    /// The one reading of lapin's answer, for every publisher.
    pub fn from_confirmation(result: Result<Confirmation, lapin::Error>) -> Self {
        match result {
            Ok(Confirmation::Ack(None)) | Ok(Confirmation::NotRequested) => {
                PublishOutcome::Confirmed
            }
            Ok(Confirmation::Ack(Some(ret))) => PublishOutcome::Returned {
                reply_code: ret.reply_code,
                reply_text: ret.reply_text.to_string(),
                message_id: ret
                    .delivery
                    .properties
                    .message_id()
                    .as_ref()
                    .map(|id| id.to_string()),
            },
            Ok(Confirmation::Nack(_)) => PublishOutcome::Nacked,
            Err(e) => PublishOutcome::Lost(LinkError::from_lapin("waiting for a confirm", e)),
        }
    }

    /// True for [`PublishOutcome::Confirmed`].
    pub fn is_confirmed(&self) -> bool {
        matches!(self, PublishOutcome::Confirmed)
    }
}

/// A publish on its way; resolves to its [`PublishOutcome`].
pub struct PendingConfirm(Pin<Box<dyn Future<Output = PublishOutcome> + Send>>);

impl IntoFuture for PendingConfirm {
    type Output = PublishOutcome;
    type IntoFuture = Pin<Box<dyn Future<Output = PublishOutcome> + Send>>;

    fn into_future(self) -> Self::IntoFuture {
        self.0
    }
}

/// Publishes `message` on `channel`, which must be in confirm mode. An error
/// means the message was not sent (the channel is dead); otherwise the
/// returned [`PendingConfirm`] tells what became of it.
///
/// With tracing on, the message goes out with the current span's
/// `traceparent` and `tracestate` (see [`crate::trace_context`]).
pub async fn send(channel: &Channel, message: &Outgoing<'_>) -> Result<PendingConfirm, LinkError> {
    let properties = crate::trace_context::inject_current(&message.properties)
        .unwrap_or_else(|| message.properties.clone());
    let confirm = channel
        .basic_publish(
            message.exchange.into(),
            message.routing_key.into(),
            BasicPublishOptions {
                mandatory: message.mandatory,
                ..BasicPublishOptions::default()
            },
            message.body,
            properties,
        )
        .await
        .map_err(|e| LinkError::from_lapin("publishing", e))?;
    Ok(PendingConfirm(Box::pin(async move {
        PublishOutcome::from_confirmation(confirm.await)
    })))
}

/// Opens a confirm-mode channel on `session` for a publisher of its own
/// (heartbeats, moving an old sink queue).
pub async fn confirm_channel(session: &Session) -> Result<Channel, LinkError> {
    open_publisher(&session.connection).await
}

/// A confirm-mode channel of `session` for one pipelined pass of mandatory
/// publishes alone (the producer's), which sorts returns out by message id.
/// lapin pairs a `basic.return` with whichever confirm it handles next on a
/// channel, so two passes at once on one channel could take each other's
/// returns: each pass takes a channel of its own, an idle one when there
/// is, and hands it back with [`give_back_pass_channel`].
pub async fn take_pass_channel(session: &Session) -> Result<Channel, LinkError> {
    loop {
        let idle = session.pass_channels.lock().expect("pass channels").pop();
        match idle {
            Some(channel) if channel.status().connected() => return Ok(channel),
            Some(_) => continue,
            None => return open_publisher(&session.connection).await,
        }
    }
}

/// Hands back a pass's channel for the next pass, or closes it when the
/// pass went wrong on it: a channel that nacked may nack every later
/// message to the same quorum queue (see `BrokerLink::renew_publisher`),
/// and one that lost a confirm may still receive it.
pub fn give_back_pass_channel(session: &Session, channel: Channel, reusable: bool) {
    if !reusable {
        crate::link::close_channel_in_background(channel, "pass nacked or lost a confirm");
    } else if channel.status().connected() {
        session
            .pass_channels
            .lock()
            .expect("pass channels")
            .push(channel);
    }
}

impl BrokerLink {
    /// Publishes one message and waits for the broker's answer, connecting
    /// first if needed (until `deadline`, or for as long as it takes).
    ///
    /// The message goes out alone on the session's single-publish channel,
    /// so a return is certainly this message's. A channel the broker closed
    /// (an exchange that does not exist) is replaced on the next call; a
    /// dead connection gives [`PublishOutcome::Lost`] and is left for the
    /// link's owner to invalidate, since consumers may hold leases on it.
    pub async fn publish_confirmed(
        &self,
        message: &Outgoing<'_>,
        deadline: Option<Instant>,
    ) -> PublishOutcome {
        let session = match self.session_until(deadline).await {
            Ok(s) => s,
            Err(e) => return PublishOutcome::Lost(e),
        };
        let mut single = match deadline {
            Some(d) => match tokio::time::timeout_at(d.into(), session.single.lock()).await {
                Ok(guard) => guard,
                Err(_) => {
                    return PublishOutcome::Lost(LinkError::Deadline(
                        "no broker confirm before the deadline".into(),
                    ));
                }
            },
            None => session.single.lock().await,
        };
        let channel = match single.as_ref().filter(|c| c.status().connected()) {
            Some(c) => c.clone(),
            None => match open_publisher(&session.connection).await {
                Ok(c) => {
                    *single = Some(c.clone());
                    c
                }
                Err(e) => return PublishOutcome::Lost(e),
            },
        };
        let answer = async {
            match send(&channel, message).await {
                Ok(pending) => pending.await,
                Err(e) => PublishOutcome::Lost(e),
            }
        };
        let outcome = match deadline {
            Some(d) => tokio::time::timeout_at(d.into(), answer)
                .await
                .unwrap_or_else(|_| {
                    PublishOutcome::Lost(LinkError::Deadline(
                        "no broker confirm before the deadline (is the broker blocking publishers?)"
                            .into(),
                    ))
                }),
            None => answer.await,
        };
        if let PublishOutcome::Lost(_) = &outcome {
            // A confirm that may still arrive must not be paired with the
            // next publish on this channel: start the next one afresh.
            *single = None;
            crate::link::close_channel_in_background(channel, "confirm lost");
        } else if let PublishOutcome::Nacked = &outcome {
            // A channel that nacked may nack every later message to the same
            // quorum queue (see `BrokerLink::renew_publisher`).
            *single = None;
            crate::link::close_channel_in_background(channel, "nacked");
        }
        outcome
    }
}
