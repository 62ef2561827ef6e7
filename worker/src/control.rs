//! Listens for cancel requests on the cancellation stream.
//!
//! The stream is read from its start (it keeps a day of requests), so a worker
//! that starts late, or reconnects, still learns of recent cancellations.

use crate::cancel::CancelBook;
use crate::shutdown::Shutdown;
use broker_link::BrokerLink;
use broker_topology::control::CancelRequest;
use broker_topology::{ContentType, names};
use futures_util::StreamExt;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicQosOptions};
use lapin::types::{AMQPValue, FieldTable, LongString};
use std::sync::Arc;
use std::time::Duration;

/// How long the stream must stay quiet before the backlog counts as read.
const CAUGHT_UP_AFTER: Duration = Duration::from_millis(150);

/// Runs until shutdown, feeding cancel requests into `cancels`. `caught_up`
/// turns true once the stream's backlog has been read, so the worker can
/// wait for it before taking its first task.
pub(crate) async fn listen(
    link: Arc<BrokerLink>,
    cancels: CancelBook,
    mut shutdown: Shutdown,
    caught_up: tokio::sync::watch::Sender<bool>,
) {
    while !shutdown.is_shutdown() {
        let session = tokio::select! {
            s = link.session() => s,
            _ = shutdown.recv() => return,
        };
        let Ok(session) = session else {
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        };
        let result = async {
            let ch = session.connection.create_channel().await?;
            ch.basic_qos(500, BasicQosOptions::default()).await?;
            let mut args = FieldTable::default();
            args.insert("x-stream-offset".into(), AMQPValue::LongString(LongString::from("first")));
            let mut consumer = ch
                .basic_consume(
                    names::CANCEL_STREAM.into(),
                    "".into(),
                    BasicConsumeOptions::default(),
                    args,
                )
                .await?;
            loop {
                let next = tokio::select! {
                    d = consumer.next() => d,
                    _ = tokio::time::sleep(CAUGHT_UP_AFTER), if !*caught_up.borrow() => {
                        caught_up.send_replace(true);
                        continue;
                    }
                    _ = shutdown.recv() => return Ok::<_, lapin::Error>(()),
                };
                let delivery = match next {
                    Some(Ok(d)) => d,
                    Some(Err(e)) => return Err(e),
                    None => return Ok(()),
                };
                let ct = ContentType::from_property(delivery.properties.content_type().as_ref().map(|c| c.as_str()))
                    .unwrap_or_default();
                match ct.decode::<CancelRequest>(&delivery.data) {
                    Ok(req) => {
                        let running = cancels.cancel(&req.task_id, req.force);
                        // The day's backlog is read at every start: only
                        // requests that arrive while running are news.
                        if *caught_up.borrow() {
                            tracing::info!(task_id = %req.task_id, force = req.force, running, "cancel request");
                        } else {
                            tracing::debug!(task_id = %req.task_id, force = req.force, running, "remembered cancel request");
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "ignoring malformed cancel request"),
                }
                delivery.acker.ack(BasicAckOptions::default()).await?;
            }
        }
        .await;
        match result {
            Ok(()) if shutdown.is_shutdown() => return,
            Ok(()) => {}
            Err(e) => {
                tracing::warn!(error = %e, "cancellation listener lost its channel; re-subscribing");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
}
