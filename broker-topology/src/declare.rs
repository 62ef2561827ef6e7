//! The topology as data: what chit declares, and the report of how a broker
//! compares with it.
//!
//! Declarations are plain values so they can be replayed after a reconnect and
//! printed by `chit topology show`; `broker-link` applies and inspects them.

use crate::error::Error;
use crate::names;
use lapin::ExchangeKind;
use lapin::types::{AMQPValue, FieldTable, LongString};

/// Default `x-delivery-limit`: deliveries of one message before the broker
/// dead-letters it, which stops a task that kills its worker every time.
pub const DEFAULT_DELIVERY_LIMIT: u32 = 5;

/// `x-delivery-limit` of the sink queues: a receipt message returned to its
/// sink queue more often than this (a sink that crashes or loses its
/// connection on it every time) is dead-lettered by the broker into
/// [`names::SINK_QUARANTINE`], so no one message can stop ingestion. Higher
/// than the task queues' limit because every message a sink holds when it
/// dies is returned with the culprit.
pub const SINK_DELIVERY_LIMIT: u32 = 10;

/// How long the cancellation stream keeps records; a worker that starts later
/// than this after a cancellation will not learn of it.
pub const CANCEL_RETENTION: &str = "1D";

/// A task type, and the queue settings that go with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Capability {
    /// Task type, e.g. `command.execute`.
    pub name: String,
    /// Quorum queue `x-delivery-limit`.
    pub delivery_limit: u32,
}

impl Capability {
    /// A capability with default queue settings, after checking its name.
    pub fn new(name: impl Into<String>) -> Result<Self, Error> {
        let name = name.into();
        names::validate_capability(&name)?;
        Ok(Capability {
            name,
            delivery_limit: DEFAULT_DELIVERY_LIMIT,
        })
    }
}

/// An exchange to declare.
#[derive(Debug, Clone, PartialEq)]
pub struct ExchangeDecl {
    /// Name.
    pub name: String,
    /// Exchange type.
    pub kind: ExchangeKind,
}

/// A queue to declare.
#[derive(Debug, Clone, PartialEq)]
pub struct QueueDecl {
    /// Name.
    pub name: String,
    /// `x-*` arguments.
    pub arguments: FieldTable,
}

/// A binding of a queue to an exchange.
#[derive(Debug, Clone, PartialEq)]
pub struct BindingDecl {
    /// Queue.
    pub queue: String,
    /// Exchange.
    pub exchange: String,
    /// Binding key.
    pub routing_key: String,
}

/// Everything chit declares for a set of capabilities.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Topology {
    /// Exchanges, declared first.
    pub exchanges: Vec<ExchangeDecl>,
    /// Queues.
    pub queues: Vec<QueueDecl>,
    /// Bindings, declared last.
    pub bindings: Vec<BindingDecl>,
}

fn args(pairs: &[(&str, AMQPValue)]) -> FieldTable {
    let mut t = FieldTable::default();
    for (k, v) in pairs {
        t.insert((*k).into(), v.clone());
    }
    t
}

fn text(s: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(s))
}

/// Arguments of a quorum queue that dead-letters into `dlx`, at least once.
fn quorum_dead_lettering(dlx: &str, routing_key: Option<&str>) -> Vec<(&'static str, AMQPValue)> {
    let mut v = vec![
        ("x-queue-type", text("quorum")),
        ("x-dead-letter-exchange", text(dlx)),
        // At-least-once dead-lettering needs reject-publish overflow (RabbitMQ 3.10+).
        ("x-dead-letter-strategy", text("at-least-once")),
        ("x-overflow", text("reject-publish")),
    ];
    if let Some(rk) = routing_key {
        v.push(("x-dead-letter-routing-key", text(rk)));
    }
    v
}

impl Topology {
    /// Adds what `other` declares and `self` does not yet.
    pub fn merge(&mut self, other: Topology) {
        for e in other.exchanges {
            if !self.exchanges.contains(&e) {
                self.exchanges.push(e);
            }
        }
        for q in other.queues {
            if !self.queues.contains(&q) {
                self.queues.push(q);
            }
        }
        for b in other.bindings {
            if !self.bindings.contains(&b) {
                self.bindings.push(b);
            }
        }
    }

    /// The shared part: task, receipt, control and events exchanges, the
    /// default sink group's queue and the quarantine behind it, and the
    /// cancellation stream.
    pub fn core() -> Self {
        let mut t = Topology::default();
        t.exchanges.push(ExchangeDecl {
            name: names::TASK_EXCHANGE.into(),
            kind: ExchangeKind::Direct,
        });
        t.exchanges.push(ExchangeDecl {
            name: names::RECEIPT_EXCHANGE.into(),
            kind: ExchangeKind::Topic,
        });
        t.exchanges.push(ExchangeDecl {
            name: names::CONTROL_EXCHANGE.into(),
            kind: ExchangeKind::Fanout,
        });
        t.exchanges.push(ExchangeDecl {
            name: names::SINK_ROSTER_EXCHANGE.into(),
            kind: ExchangeKind::Fanout,
        });
        t.exchanges.push(ExchangeDecl {
            name: names::SINK_QUARANTINE.into(),
            kind: ExchangeKind::Fanout,
        });
        t.exchanges.push(ExchangeDecl {
            name: names::EVENTS_EXCHANGE.into(),
            kind: ExchangeKind::Topic,
        });
        t.exchanges.push(ExchangeDecl {
            name: names::REPLY_EXCHANGE.into(),
            kind: ExchangeKind::Direct,
        });
        t.queues
            .push(Topology::sink_queue(names::DEFAULT_SINK_GROUP));
        t.queues.push(QueueDecl {
            name: names::SINK_QUARANTINE.into(),
            arguments: args(&[("x-queue-type", text("quorum"))]),
        });
        t.queues.push(QueueDecl {
            name: names::CANCEL_STREAM.into(),
            arguments: args(&[
                ("x-queue-type", text("stream")),
                ("x-max-age", text(CANCEL_RETENTION)),
                (
                    "x-stream-max-segment-size-bytes",
                    AMQPValue::LongLongInt(1_000_000),
                ),
            ]),
        });
        t.bindings.push(BindingDecl {
            queue: names::SINK_QUEUE.into(),
            exchange: names::RECEIPT_EXCHANGE.into(),
            routing_key: "#".into(),
        });
        t.bindings.push(BindingDecl {
            queue: names::SINK_QUARANTINE.into(),
            exchange: names::SINK_QUARANTINE.into(),
            routing_key: String::new(),
        });
        t.bindings.push(BindingDecl {
            queue: names::CANCEL_STREAM.into(),
            exchange: names::CONTROL_EXCHANGE.into(),
            routing_key: String::new(),
        });
        t
    }

    /// The core plus each capability's task queue, dead-letter exchange and
    /// queue, dead-letter watch queue, and retry exchange.
    pub fn for_capabilities(capabilities: &[Capability]) -> Self {
        let mut t = Topology::core();
        for cap in capabilities {
            t.add_capability(cap);
        }
        t
    }

    /// The core plus the queue of sink group `group`, bound to every receipt.
    pub fn for_sink_group(group: &str) -> Self {
        let mut t = Topology::core();
        let queue = names::sink_queue(group);
        if queue != names::SINK_QUEUE {
            t.queues.push(Topology::sink_queue(group));
            t.bindings.push(BindingDecl {
                queue,
                exchange: names::RECEIPT_EXCHANGE.into(),
                routing_key: "#".into(),
            });
        }
        t
    }

    /// The queue of sink group `group`: a quorum queue whose messages the
    /// broker dead-letters, at least once, into [`names::SINK_QUARANTINE`]
    /// after [`SINK_DELIVERY_LIMIT`] returns, or when a sink rejects one.
    pub fn sink_queue(group: &str) -> QueueDecl {
        let mut a = quorum_dead_lettering(names::SINK_QUARANTINE, None);
        a.push((
            "x-delivery-limit",
            AMQPValue::LongLongInt(i64::from(SINK_DELIVERY_LIMIT)),
        ));
        QueueDecl {
            name: names::sink_queue(group),
            arguments: args(&a),
        }
    }

    /// Adds one capability's declarations.
    pub fn add_capability(&mut self, cap: &Capability) {
        let dlx = names::dead_letter_exchange(&cap.name);
        let mut task_args = quorum_dead_lettering(&dlx, None);
        task_args.push((
            "x-delivery-limit",
            AMQPValue::LongLongInt(cap.delivery_limit as i64),
        ));
        self.exchanges.push(ExchangeDecl {
            name: dlx.clone(),
            kind: ExchangeKind::Fanout,
        });
        self.queues.push(QueueDecl {
            name: names::task_queue(&cap.name),
            arguments: args(&task_args),
        });
        self.queues.push(QueueDecl {
            name: names::dead_letter_queue(&cap.name),
            arguments: args(&[("x-queue-type", text("quorum"))]),
        });
        self.bindings.push(BindingDecl {
            queue: names::task_queue(&cap.name),
            exchange: names::TASK_EXCHANGE.into(),
            routing_key: cap.name.clone(),
        });
        let (retry, back) = Topology::retry_exchange(&cap.name);
        self.exchanges.push(retry);
        self.bindings.push(back);
        self.bindings.push(BindingDecl {
            queue: names::dead_letter_queue(&cap.name),
            exchange: dlx.clone(),
            routing_key: String::new(),
        });
        // Every dead letter once more, for the worker's dead-letter watch.
        self.queues.push(QueueDecl {
            name: names::dead_letter_watch_queue(&cap.name),
            arguments: args(&[("x-queue-type", text("quorum"))]),
        });
        self.bindings.push(BindingDecl {
            queue: names::dead_letter_watch_queue(&cap.name),
            exchange: dlx,
            routing_key: String::new(),
        });
    }

    /// A capability's retry exchange, and the binding of its task queue to
    /// it under the capability's name.
    fn retry_exchange(capability: &str) -> (ExchangeDecl, BindingDecl) {
        let exchange = names::retry_exchange(capability);
        let binding = BindingDecl {
            queue: names::task_queue(capability),
            exchange: exchange.clone(),
            routing_key: capability.to_owned(),
        };
        let decl = ExchangeDecl {
            name: exchange,
            kind: ExchangeKind::Direct,
        };
        (decl, binding)
    }

    /// What a task needs to wait `delay_ms` and then reach its capability's
    /// queue (whose existence it assumes): the capability's retry exchange,
    /// the task queue's binding to it, the delay queue, and the delay
    /// queue's binding to the exchange under its own name. A copy is
    /// published to [`names::retry_exchange`] with the delay queue's name as
    /// routing key. All of it is declared again before each such publish:
    /// a redeclare restarts the delay queue's `x-expires` clock, and a task
    /// whose dead letter found the task queue unbound would be dropped.
    pub fn delay_route(capability: &str, delay_ms: u64) -> Topology {
        let (retry, back) = Topology::retry_exchange(capability);
        let queue = Topology::delay_queue(capability, delay_ms);
        let into_queue = BindingDecl {
            queue: queue.name.clone(),
            exchange: retry.name.clone(),
            routing_key: queue.name.clone(),
        };
        Topology {
            exchanges: vec![retry],
            queues: vec![queue],
            bindings: vec![back, into_queue],
        }
    }

    /// The delay queue for one capability and delay: messages wait
    /// `delay_ms`, then dead-letter into the capability's retry exchange
    /// under its name, which routes them to its task queue. Unused delay
    /// queues expire a minute after their delay.
    pub fn delay_queue(capability: &str, delay_ms: u64) -> QueueDecl {
        let retry = names::retry_exchange(capability);
        let mut a = quorum_dead_lettering(&retry, Some(capability));
        a.push(("x-message-ttl", AMQPValue::LongLongInt(delay_ms as i64)));
        a.push((
            "x-expires",
            AMQPValue::LongLongInt(delay_ms.saturating_mul(2).saturating_add(60_000) as i64),
        ));
        QueueDecl {
            name: names::delay_queue(capability, delay_ms),
            arguments: args(&a),
        }
    }
}

/// The state of one exchange or queue on the broker.
#[derive(Debug, Clone, PartialEq)]
pub enum EntityState {
    /// Exists as chit declares it.
    Present {
        /// Ready messages (queues only).
        messages: Option<u32>,
        /// Consumers (queues only).
        consumers: Option<u32>,
    },
    /// Does not exist.
    Missing,
    /// Exists with other arguments; the broker's explanation.
    Differs(String),
}

/// One line of `chit topology show`.
#[derive(Debug, Clone, PartialEq)]
pub struct EntityReport {
    /// `exchange` or `queue`.
    pub entity: &'static str,
    /// Name.
    pub name: String,
    /// What the broker has.
    pub state: EntityState,
}

/// What the broker has, compared with what chit expects.
#[derive(Debug, Clone, PartialEq)]
pub struct TopologyReport {
    /// One entry per exchange and queue.
    pub entries: Vec<EntityReport>,
}

impl TopologyReport {
    /// True when everything exists as declared.
    pub fn is_in_sync(&self) -> bool {
        self.entries
            .iter()
            .all(|e| matches!(e.state, EntityState::Present { .. }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_capability_gets_queue_dead_letters_and_binding() {
        let t = Topology::for_capabilities(&[Capability::new("command.execute").unwrap()]);
        let q = t
            .queues
            .iter()
            .find(|q| q.name == "chit.task.command.execute")
            .unwrap();
        let a = q.arguments.inner();
        assert_eq!(a.get("x-queue-type"), Some(&text("quorum")));
        assert_eq!(
            a.get("x-dead-letter-exchange"),
            Some(&text("chit.dead.command.execute"))
        );
        assert_eq!(a.get("x-delivery-limit"), Some(&AMQPValue::LongLongInt(5)));
        assert!(t.bindings.iter().any(|b| b.queue == q.name
            && b.exchange == names::TASK_EXCHANGE
            && b.routing_key == "command.execute"));
        assert!(
            t.queues
                .iter()
                .any(|q| q.name == "chit.dead.command.execute")
        );
    }

    #[test]
    fn sink_queues_have_a_delivery_limit_and_a_quarantine() {
        for (group, t) in [
            ("default", Topology::core()),
            ("audit", Topology::for_sink_group("audit")),
        ] {
            let q = t
                .queues
                .iter()
                .find(|q| q.name == names::sink_queue(group))
                .unwrap();
            let a = q.arguments.inner();
            assert_eq!(
                a.get("x-delivery-limit"),
                Some(&AMQPValue::LongLongInt(SINK_DELIVERY_LIMIT.into()))
            );
            assert_eq!(
                a.get("x-dead-letter-exchange"),
                Some(&text(names::SINK_QUARANTINE))
            );
            assert_eq!(
                a.get("x-dead-letter-strategy"),
                Some(&text("at-least-once"))
            );
            assert!(t.queues.iter().any(|q| q.name == names::SINK_QUARANTINE));
            assert!(
                t.bindings
                    .iter()
                    .any(|b| b.queue == names::SINK_QUARANTINE
                        && b.exchange == names::SINK_QUARANTINE)
            );
        }
    }

    #[test]
    fn delay_queues_return_through_their_capabilitys_retry_exchange() {
        let route = Topology::delay_route("x", 2000);
        let q = &route.queues[0];
        assert_eq!(q.name, "chit.wait.2000.x");
        let a = q.arguments.inner();
        assert_eq!(a.get("x-message-ttl"), Some(&AMQPValue::LongLongInt(2000)));
        assert_eq!(a.get("x-dead-letter-exchange"), Some(&text("chit.retry.x")));
        assert_eq!(a.get("x-dead-letter-routing-key"), Some(&text("x")));
        assert_eq!(route.exchanges[0].name, "chit.retry.x");
        // In under the queue's name, out to the task queue under the capability's.
        let bound = |queue: &str, key: &str| {
            route
                .bindings
                .iter()
                .any(|b| b.queue == queue && b.exchange == "chit.retry.x" && b.routing_key == key)
        };
        assert!(bound("chit.wait.2000.x", "chit.wait.2000.x"));
        assert!(bound("chit.task.x", "x"));
        // A worker's capability topology has the way back too.
        let t = Topology::for_capabilities(&[Capability::new("x").unwrap()]);
        assert!(t.exchanges.iter().any(|e| e.name == "chit.retry.x"));
        assert!(t.bindings.contains(&route.bindings[0]));
    }
}
