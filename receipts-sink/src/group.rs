//! Sink groups: every group gets every receipt, and the sinks of one group
//! share its queue, so they must write to one store.
//!
//! A sink that joins a group announces its group and store on the roster
//! exchange and listens for a short while for the answers of the sinks
//! already running. If one of its own group writes to another store, it
//! refuses to start: it would take half of every chain away from that store.
//! A running sink answers every newcomer, and logs an error when a newcomer
//! of its group names another store. Two sinks that start within the same
//! moment do not see each other (neither is running yet); the error then
//! shows when a third joins, and in each store as missing receipts.

use crate::error::SinkError;
use broker_link::declare::OwnBinding;
use broker_link::{BrokerLink, Outgoing, PublishOutcome, Session, declare};
use broker_topology::control::SinkAnnouncement;
use broker_topology::{ContentType, names};
use futures_util::StreamExt;
use lapin::{BasicProperties, Channel, Consumer};
use std::time::{Duration, Instant};
use tracing::{error, warn};

/// How long a starting sink listens for the answers of running ones: one
/// round trip through the broker, with room for a busy machine.
const ANSWER_WINDOW: Duration = Duration::from_millis(700);

/// Who this sink is, as it tells the others.
#[derive(Debug, Clone)]
pub(crate) struct Roster {
    me: SinkAnnouncement,
}

impl Roster {
    pub(crate) fn new(group: &str, store_url: &str) -> Self {
        Roster {
            me: SinkAnnouncement {
                sink_id: format!("{}-{}", std::process::id(), uuid::Uuid::new_v4().simple()),
                group: group.to_owned(),
                store: store_identity(store_url),
                reply: false,
            },
        }
    }

    /// Announces this sink on `session` and waits out the answers. Fails if
    /// a sink of the same group writes to another store; otherwise keeps
    /// answering newcomers until the session's connection closes.
    pub(crate) async fn join(&self, link: &BrokerLink, session: &Session) -> Result<(), SinkError> {
        let (channel, mut consumer) = listen(session).await?;
        self.announce(link).await?;
        let until = Instant::now() + ANSWER_WINDOW;
        while let Ok(Some(Ok(delivery))) =
            tokio::time::timeout_at(until.into(), consumer.next()).await
        {
            let Some(other) = self.read(&delivery.data) else {
                continue;
            };
            // Only running sinks answer; another sink starting at this very
            // moment is not one of them (see the module docs).
            if other.reply && other.group == self.me.group && other.store != self.me.store {
                let _ = channel.close(200, "sink group conflict".into()).await;
                return Err(SinkError::GroupConflict {
                    group: self.me.group.clone(),
                    mine: self.me.store.clone(),
                    theirs: other.store,
                });
            }
        }
        tokio::spawn(self.clone().answer(consumer, channel));
        Ok(())
    }

    /// Answers newcomers until the roster channel closes with its connection.
    async fn answer(self, mut consumer: Consumer, channel: Channel) {
        while let Some(Ok(delivery)) = consumer.next().await {
            let Some(other) = self.read(&delivery.data) else {
                continue;
            };
            if other.reply {
                continue;
            }
            if other.group == self.me.group && other.store != self.me.store {
                error!(
                    group = %self.me.group,
                    my_store = %self.me.store,
                    their_store = %other.store,
                    "a sink with another store tried to join this sink group; it is told to \
                     refuse (give it its own --group)"
                );
            }
            let reply = SinkAnnouncement {
                reply: true,
                ..self.me.clone()
            };
            let body = ContentType::Json
                .encode(&reply)
                .expect("announcement encodes");
            let message = announcement(&body);
            // Answers go out on the roster channel itself: they need no
            // confirm, and must not wait behind the sink's other work.
            if broker_link::publish::send(&channel, &message)
                .await
                .is_err()
            {
                break;
            }
        }
    }

    async fn announce(&self, link: &BrokerLink) -> Result<(), SinkError> {
        let body = ContentType::Json
            .encode(&self.me)
            .expect("announcement encodes");
        let deadline = Some(Instant::now() + Duration::from_secs(10));
        match link.publish_confirmed(&announcement(&body), deadline).await {
            PublishOutcome::Confirmed | PublishOutcome::Returned { .. } => Ok(()),
            PublishOutcome::Nacked => {
                warn!("the broker refused the sink announcement; starting without the group check");
                Ok(())
            }
            PublishOutcome::Lost(e) => Err(SinkError::Broker(e)),
        }
    }

    /// Another sink's announcement; our own echo and garbage are skipped.
    fn read(&self, body: &[u8]) -> Option<SinkAnnouncement> {
        let other: SinkAnnouncement = ContentType::Json.decode(body).ok()?;
        (other.sink_id != self.me.sink_id).then_some(other)
    }
}

fn announcement(body: &[u8]) -> Outgoing<'_> {
    Outgoing {
        exchange: names::SINK_ROSTER_EXCHANGE,
        routing_key: "",
        body,
        properties: BasicProperties::default().with_content_type(ContentType::Json.as_str().into()),
        // Nobody else may be listening; that is the normal case.
        mandatory: false,
    }
}

/// A queue of this connection's own on the roster exchange.
async fn listen(session: &Session) -> Result<(Channel, Consumer), SinkError> {
    let channel = session.connection.create_channel().await?;
    let (_, consumer) = declare::own_queue(
        &channel,
        OwnBinding::Key(names::SINK_ROSTER_EXCHANGE, ""),
        "",
    )
    .await?;
    Ok((channel, consumer))
}

/// The store as other sinks compare it: a SQLite file by its absolute path,
/// PostgreSQL by user, host, port and database; never a password.
pub(crate) fn store_identity(url: &str) -> String {
    if let Some(path) = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
    {
        let path = path.split('?').next().unwrap_or(path);
        let absolute = std::fs::canonicalize(path)
            .map(|p| p.display().to_string())
            .unwrap_or_else(|_| path.to_owned());
        return format!("sqlite://{absolute}");
    }
    let redacted = broker_link::redact(url);
    let without_query = redacted.split('?').next().unwrap_or(&redacted);
    without_query
        .replace("postgresql://", "postgres://")
        .replace(":***@", "@")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_identity_hides_passwords_and_spellings() {
        assert_eq!(
            store_identity("postgres://chit:secret@db:5432/receipts?sslmode=require"),
            "postgres://chit@db:5432/receipts"
        );
        assert_eq!(
            store_identity("postgresql://chit:other@db:5432/receipts"),
            "postgres://chit@db:5432/receipts"
        );
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("r.db");
        std::fs::write(&file, b"").unwrap();
        let relative_free = format!("sqlite://{}/./r.db?mode=rwc", dir.path().display());
        assert_eq!(
            store_identity(&relative_free),
            format!(
                "sqlite://{}",
                std::fs::canonicalize(&file).unwrap().display()
            )
        );
    }
}
