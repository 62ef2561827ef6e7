//! Every exchange and queue name chit uses, in one place.
//!
//! A capability (task type such as `command.execute`) maps to its own task
//! queue, dead-letter exchange and queue, and retry delay queues. Nothing else
//! in chit spells these strings.

use crate::error::{Error, ErrorKind};

/// Durable direct exchange that routes a task to its capability's queue by task type.
pub const TASK_EXCHANGE: &str = "chit.tasks";
/// Durable topic exchange every receipt batch is published to.
pub const RECEIPT_EXCHANGE: &str = "chit.receipts";
/// Quorum queue, bound to [`RECEIPT_EXCHANGE`] with `#`, that sinks of the
/// default group consume: [`sink_queue`] of [`DEFAULT_SINK_GROUP`]. Part of
/// the core topology, so receipts wait in it while no sink runs.
pub const SINK_QUEUE: &str = "chit.sink.default";
/// The sink group whose queue is [`SINK_QUEUE`].
pub const DEFAULT_SINK_GROUP: &str = "default";
/// Fanout exchange, and the quorum queue bound to it, into which the broker
/// dead-letters a receipt message that a sink queue returned more often than
/// its delivery limit, or that a sink rejected because its store refuses it.
/// Shared by every sink group; each message's `x-first-death-queue` header
/// names the sink queue it came from.
pub const SINK_QUARANTINE: &str = "chit.receipts.quarantine";
/// Prefix of the sink queues chit declared before they had a delivery limit
/// (`chit.receipts.sink`, `chit.receipts.sink.<group>`). A sink moves what
/// it finds in its group's old queue into the new one; see
/// [`legacy_sink_queue`].
const LEGACY_SINK_QUEUE: &str = "chit.receipts.sink";
/// Fanout exchange on which sinks announce their group and store to each
/// other, so a sink with another store cannot join a group unnoticed.
pub const SINK_ROSTER_EXCHANGE: &str = "chit.sinks";
/// Fanout exchange on which cancellations are broadcast.
pub const CONTROL_EXCHANGE: &str = "chit.control";
/// Topic exchange for events about chit's processes, such as worker
/// heartbeats ([`HEARTBEAT_ROUTING_KEY`]). Listeners bind queues of their own.
pub const EVENTS_EXCHANGE: &str = "chit.events";
/// Routing key of worker heartbeats on [`EVENTS_EXCHANGE`]
/// (`crate::heartbeat::Heartbeat`).
pub const HEARTBEAT_ROUTING_KEY: &str = "worker.heartbeat";
/// Stream bound to [`CONTROL_EXCHANGE`]: workers read it from a point in the
/// past, so a worker that starts late still learns of recent cancellations.
pub const CANCEL_STREAM: &str = "chit.cancellations";

/// Direct exchange through which a worker sends a task's `reply_to` its
/// final receipt, with the `reply_to` queue's name as routing key. A queue
/// that wants replies binds itself here under its own name. Not the default
/// exchange: publishing there reaches every queue by name, so a worker that
/// may reply through it may also put a task into any capability's queue.
pub const REPLY_EXCHANGE: &str = "chit.replies";

/// AMQP `type` of a reply: the receipt that ended a task, which a worker
/// sends to the task's `reply_to` queue through [`REPLY_EXCHANGE`].
pub const REPLY_MESSAGE_TYPE: &str = "chit.receipt";

/// Routing key prefix of receipt batches; the source (`producer`, `worker`, ...) follows.
pub const RECEIPT_ROUTING_PREFIX: &str = "receipt.";

/// Longest capability name chit accepts: queue names are limited to 255 bytes
/// and the longest derived name adds about 40.
pub const MAX_CAPABILITY_LEN: usize = 200;

/// Checks that `name` can be used as a capability: a routing key and a part of queue names.
pub fn validate_capability(name: &str) -> Result<(), Error> {
    let ok_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
    if name.is_empty() || name.len() > MAX_CAPABILITY_LEN || !name.chars().all(ok_char) {
        return Err(Error::new(
            ErrorKind::BadCapability(name.to_owned()),
            format!(
                "task type {name:?} is not a valid capability: use 1 to {MAX_CAPABILITY_LEN} \
                 characters from A-Z a-z 0-9 . _ -"
            ),
        ));
    }
    Ok(())
}

/// The quorum queue that holds the tasks of one capability.
pub fn task_queue(capability: &str) -> String {
    format!("chit.task.{capability}")
}

/// The fanout exchange a capability's task queue dead-letters into.
pub fn dead_letter_exchange(capability: &str) -> String {
    format!("chit.dead.{capability}")
}

/// The queue that keeps a capability's dead-lettered tasks.
pub fn dead_letter_queue(capability: &str) -> String {
    format!("chit.dead.{capability}")
}

/// The queue, bound to a capability's dead-letter exchange next to its
/// dead-letter queue, that the worker's dead-letter watch consumes: it sees
/// every dead letter once, and writes the receipt of those the broker made.
/// (`chit.dead-watch.` cannot clash with `chit.dead.<cap>`.)
pub fn dead_letter_watch_queue(capability: &str) -> String {
    format!("chit.dead-watch.{capability}")
}

/// The direct exchange of one capability through which its tasks come back
/// to it: retries and delayed tasks (through [`delay_queue`]s bound to it
/// under their own names, which dead-letter into it under the capability's
/// name) and tasks handed back by a stopping worker (straight to the task
/// queue, bound under the capability's name). A worker writes to this
/// exchange and not to [`TASK_EXCHANGE`], so its broker user can be allowed
/// its own capabilities' tasks and no others.
pub fn retry_exchange(capability: &str) -> String {
    format!("chit.retry.{capability}")
}

/// The delay queue holding a capability's retries, and delayed tasks, for
/// `delay_ms` before they dead-letter into its [`retry_exchange`]:
/// `chit.wait.<ms>.<capability>`. The delay comes first so that one
/// capability's delay queues can never be named like another's (a
/// capability may end in digits).
pub fn delay_queue(capability: &str, delay_ms: u64) -> String {
    format!("{DELAY_QUEUE_PREFIX}{delay_ms}.{capability}")
}

const DELAY_QUEUE_PREFIX: &str = "chit.wait.";
/// Delay queues of chit before [`retry_exchange`]: `chit.delay.<cap>.<ms>`,
/// dead-lettering into [`TASK_EXCHANGE`]. None are declared any more; those
/// a broker still has empty themselves when their delays are up, and expire.
const LEGACY_DELAY_QUEUE_PREFIX: &str = "chit.delay.";

/// True when `queue` is one of `capability`'s delay queues (and not one of
/// a capability whose name merely starts or ends the same, `command` vs
/// `command.execute`), in the current form or chit's earlier one.
pub fn is_delay_queue_of(queue: &str, capability: &str) -> bool {
    let digits = |ms: &str| !ms.is_empty() && ms.bytes().all(|b| b.is_ascii_digit());
    let current = queue
        .strip_prefix(DELAY_QUEUE_PREFIX)
        .and_then(|rest| rest.split_once('.'))
        .is_some_and(|(ms, cap)| digits(ms) && cap == capability);
    let legacy = queue
        .strip_prefix(LEGACY_DELAY_QUEUE_PREFIX)
        .and_then(|rest| rest.strip_prefix(capability))
        .and_then(|rest| rest.strip_prefix('.'))
        .is_some_and(digits);
    current || legacy
}

/// The queue of a sink group, `chit.sink.<group>`: every group gets every
/// receipt; the sinks of one group (replicas of one store) share its queue.
pub fn sink_queue(group: &str) -> String {
    format!("chit.sink.{group}")
}

/// The queue a sink group had before sink queues got a delivery limit and a
/// dead-letter exchange (an existing queue cannot change its arguments, so
/// the queues were renamed): `chit.receipts.sink` for the default group,
/// `chit.receipts.sink.<group>` for the others.
pub fn legacy_sink_queue(group: &str) -> String {
    if group == DEFAULT_SINK_GROUP {
        LEGACY_SINK_QUEUE.to_owned()
    } else {
        format!("{LEGACY_SINK_QUEUE}.{group}")
    }
}

/// Checks that `name` can be used as a sink group (the same characters as a
/// capability).
pub fn validate_sink_group(name: &str) -> Result<(), Error> {
    validate_capability(name).map_err(|_| {
        Error::new(
            ErrorKind::BadCapability(name.to_owned()),
            format!(
                "sink group {name:?} is not valid: use 1 to {MAX_CAPABILITY_LEN} characters \
                 from A-Z a-z 0-9 . _ -"
            ),
        )
    })
}

/// The routing key a receipt batch from `source` is published with.
pub fn receipt_routing_key(source: &str) -> String {
    format!("{RECEIPT_ROUTING_PREFIX}{source}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capability_names_are_checked() {
        assert!(validate_capability("command.execute").is_ok());
        assert!(validate_capability("a-b_c.9").is_ok());
        for bad in [
            "",
            "has space",
            "x/y",
            "é",
            &"a".repeat(MAX_CAPABILITY_LEN + 1),
        ] {
            let err = validate_capability(bad).unwrap_err();
            assert!(matches!(err.kind(), ErrorKind::BadCapability(n) if n == bad));
        }
    }

    #[test]
    fn sink_queues_are_named_by_group() {
        assert_eq!(sink_queue(DEFAULT_SINK_GROUP), SINK_QUEUE);
        assert_eq!(sink_queue("audit"), "chit.sink.audit");
        assert_eq!(legacy_sink_queue(DEFAULT_SINK_GROUP), "chit.receipts.sink");
        assert_eq!(legacy_sink_queue("audit"), "chit.receipts.sink.audit");
        assert_ne!(sink_queue("quarantine"), SINK_QUARANTINE);
        assert!(validate_sink_group("audit-2").is_ok());
        assert!(validate_sink_group("no spaces").is_err());
    }

    #[test]
    fn derived_names_fit_amqp_limits() {
        let longest = "a".repeat(MAX_CAPABILITY_LEN);
        assert!(delay_queue(&longest, u64::MAX).len() <= 255);
        assert!(dead_letter_queue(&longest).len() <= 255);
    }

    #[test]
    fn delay_queues_are_told_apart_by_capability() {
        let q = delay_queue("command.execute", 1500);
        assert_eq!(q, "chit.wait.1500.command.execute");
        assert!(is_delay_queue_of(&q, "command.execute"));
        assert!(!is_delay_queue_of(&q, "command"));
        assert!(!is_delay_queue_of(&q, "execute"));
        assert!(!is_delay_queue_of(&delay_queue("x.y", 5), "y"));
        assert!(!is_delay_queue_of(
            "chit.wait..command.execute",
            "command.execute"
        ));
        // The earlier form, still found on upgraded brokers.
        assert!(is_delay_queue_of(
            "chit.delay.command.execute.1500",
            "command.execute"
        ));
        assert!(!is_delay_queue_of(
            "chit.delay.command.execute.1500",
            "command"
        ));
        assert!(!is_delay_queue_of(
            "chit.delay.command.execute.",
            "command.execute"
        ));
    }

    #[test]
    fn no_name_of_one_capability_is_a_name_of_another() {
        // A broker user's permissions are regular expressions over these
        // names: a worker allowed `build` must match nothing of `build.2`.
        let caps = ["build", "build.2", "2.build", "b", "build.2.3"];
        let owned = |c: &str| {
            [
                task_queue(c),
                dead_letter_exchange(c),
                dead_letter_watch_queue(c),
                retry_exchange(c),
                delay_queue(c, 2),
                delay_queue(c, 30),
            ]
        };
        for a in caps {
            for b in caps.iter().filter(|b| **b != a) {
                for name in owned(a) {
                    assert!(!owned(b).contains(&name), "{name} belongs to {a} and {b}");
                    assert!(
                        !is_delay_queue_of(&name, b),
                        "{name} of {a} taken for {b}'s"
                    );
                }
            }
        }
    }
}
