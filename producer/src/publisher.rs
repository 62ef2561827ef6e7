//! [`Producer`]: publishes tasks with the mandatory flag and pipelined
//! confirms, then emits their `queued` receipts.
//!
//! Each task carries the id of its `queued` receipt in a header, chosen before
//! publishing, so the worker can name it as the parent of `accepted` even when
//! the receipts arrive at the sink in another order.

use crate::error::{PublishError, PublishErrorKind};
use crate::receipts::{BatchConfig, ReceiptPublisher};
use crate::task::TaskSpec;
use broker_topology::envelope::TaskEnvelope;
use broker_topology::receipt::new_receipt_id;
use broker_topology::{BrokerLink, Receipt, ReceiptType, Topology, names};
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use lapin::Confirmation;
use lapin::options::BasicPublishOptions;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Producer settings.
#[derive(Debug, Clone)]
pub struct ProducerConfig {
    /// Broker URL.
    pub amqp_url: String,
    /// How long a publish keeps retrying while the broker is unreachable.
    pub publish_deadline: Duration,
    /// Tasks awaiting confirms at once.
    pub max_in_flight: usize,
}

impl ProducerConfig {
    /// Defaults for `amqp_url`: 30 s deadline, 1,000 tasks in flight.
    pub fn new(amqp_url: impl Into<String>) -> Self {
        ProducerConfig {
            amqp_url: amqp_url.into(),
            publish_deadline: Duration::from_secs(30),
            max_in_flight: 1000,
        }
    }
}

/// A task the broker confirmed, with its queued receipt.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Published {
    /// The task id (`message_id`).
    pub task_id: String,
    /// The id of its `queued` receipt.
    pub queued_receipt_id: String,
}

/// Publishes tasks. One connection, shared by clones.
#[derive(Clone)]
pub struct Producer {
    link: Arc<BrokerLink>,
    receipts: ReceiptPublisher,
    config: ProducerConfig,
}

impl Producer {
    /// A producer on its own connection. Connects lazily, on first publish.
    pub fn new(config: ProducerConfig) -> Self {
        let link = BrokerLink::new(config.amqp_url.clone(), "chit-producer", Topology::core());
        let (receipts, _task) =
            ReceiptPublisher::spawn(link.clone(), "producer", BatchConfig::default());
        Producer {
            link,
            receipts,
            config,
        }
    }

    /// The settings.
    pub fn config(&self) -> &ProducerConfig {
        &self.config
    }

    /// The connection owner, for health reporting.
    pub fn link(&self) -> &Arc<BrokerLink> {
        &self.link
    }

    /// Publishes one task and waits for its confirm and its queued receipt's.
    pub async fn publish(&self, task: TaskSpec) -> Result<Published, PublishError> {
        self.publish_many(vec![task], |_| {})
            .await
            .pop()
            .expect("one result per task")
    }

    /// Publishes many tasks with pipelined confirms. Returns one result per task,
    /// in order; `progress` is called with the number of tasks settled so far.
    /// Tasks whose confirm was lost with the connection are published again on
    /// the next one, until the publish deadline.
    pub async fn publish_many(
        &self,
        tasks: Vec<TaskSpec>,
        mut progress: impl FnMut(usize),
    ) -> Vec<Result<Published, PublishError>> {
        let deadline = Instant::now() + self.config.publish_deadline;
        let mut tasks: Vec<TaskSpec> = tasks
            .into_iter()
            .map(|mut t| {
                if t.envelope.parent_receipt_id.is_none() {
                    t.envelope.parent_receipt_id = Some(new_receipt_id());
                }
                t
            })
            .collect();
        let mut results: Vec<Option<Result<Published, PublishError>>> = vec![None; tasks.len()];
        let mut todo: Vec<usize> = (0..tasks.len()).collect();
        let mut settled = 0usize;
        let mut queued: Vec<(usize, Receipt)> = Vec::new();

        while !todo.is_empty() {
            let session = match self.link.session_until(Some(deadline)).await {
                Ok(s) => s,
                Err(e) => {
                    let message = if e.is_transient() {
                        format!(
                            "no broker confirm within {:?}: {e}",
                            self.config.publish_deadline
                        )
                    } else {
                        format!("cannot publish: {e}")
                    };
                    let err = PublishError::new(PublishErrorKind::Unavailable, message);
                    for i in todo.drain(..) {
                        results[i] = Some(Err(err.clone()));
                    }
                    break;
                }
            };
            let mut retry = Vec::new();
            let mut in_flight = FuturesUnordered::new();
            let mut broken = false;
            for &i in &todo {
                if broken {
                    retry.push(i);
                    continue;
                }
                let t = &tasks[i];
                let sent = session
                    .publisher
                    .basic_publish(
                        names::TASK_EXCHANGE.into(),
                        t.envelope.task_type.as_str().into(),
                        BasicPublishOptions {
                            mandatory: true,
                            ..BasicPublishOptions::default()
                        },
                        &t.body,
                        t.envelope.to_properties(),
                    )
                    .await;
                match sent {
                    Ok(confirm) => in_flight.push(async move { (i, confirm.await) }),
                    Err(_) => {
                        broken = true;
                        retry.push(i);
                    }
                }
                while in_flight.len() >= self.config.max_in_flight {
                    let (i, res) = in_flight.next().await.expect("non-empty");
                    if settle(i, res, &mut tasks, &mut results, &mut retry, &mut queued) {
                        settled += 1;
                        progress(settled);
                    }
                }
            }
            while let Some((i, res)) = in_flight.next().await {
                if settle(i, res, &mut tasks, &mut results, &mut retry, &mut queued) {
                    settled += 1;
                    progress(settled);
                }
            }
            if !retry.is_empty() {
                broken = true;
            }
            if broken {
                self.link.invalidate(session.generation).await;
            }
            todo = retry;
        }

        // Queued receipts for confirmed tasks, in batches, each confirmed.
        let mut waits = Vec::new();
        for chunk in queued.chunks(500) {
            let ids: Vec<usize> = chunk.iter().map(|(i, _)| *i).collect();
            let receipts = chunk.iter().map(|(_, r)| r.clone()).collect();
            waits.push((ids, self.receipts.submit(receipts).await));
        }
        for (ids, confirmed) in waits {
            let outcome = tokio::time::timeout_at(deadline.into(), confirmed).await;
            if !matches!(outcome, Ok(Ok(()))) {
                for i in ids {
                    results[i] = Some(Err(PublishError::new(
                        PublishErrorKind::ReceiptNotConfirmed,
                        format!(
                            "task {} is queued but its queued receipt was not confirmed in time",
                            tasks[i].envelope.task_id
                        ),
                    )));
                }
            }
        }
        results
            .into_iter()
            .map(|r| r.expect("every task settled"))
            .collect()
    }
}

fn settle(
    i: usize,
    res: Result<Confirmation, lapin::Error>,
    tasks: &mut [TaskSpec],
    results: &mut [Option<Result<Published, PublishError>>],
    retry: &mut Vec<usize>,
    queued: &mut Vec<(usize, Receipt)>,
) -> bool {
    let env: &TaskEnvelope = &tasks[i].envelope;
    match res {
        Ok(Confirmation::Ack(Some(_returned))) => {
            results[i] = Some(Err(PublishError::new(
                PublishErrorKind::Unroutable {
                    task_type: env.task_type.clone(),
                },
                format!(
                    "task type {:?} has no queue: apply the topology for it \
                     (chit topology apply --capability {})",
                    env.task_type, env.task_type
                ),
            )));
        }
        Ok(Confirmation::Ack(None)) | Ok(Confirmation::NotRequested) => {
            let queued_id = env
                .parent_receipt_id
                .clone()
                .expect("set before publishing");
            let mut receipt = Receipt::new(
                env.task_id.clone(),
                env.task_type.clone(),
                ReceiptType::Queued,
                env.replay_of.iter().cloned().collect(),
                env.attempt,
            )
            .with_id(queued_id.clone());
            if let Some(tp) = &env.traceparent {
                receipt.body = serde_json::json!({ "traceparent": tp });
            }
            queued.push((i, receipt));
            results[i] = Some(Ok(Published {
                task_id: env.task_id.clone(),
                queued_receipt_id: queued_id,
            }));
        }
        Ok(Confirmation::Nack(_)) => {
            results[i] = Some(Err(PublishError::new(
                PublishErrorKind::Nacked,
                format!("the broker refused task {} (negative confirm)", env.task_id),
            )));
        }
        Err(_) => {
            retry.push(i);
            return false;
        }
    }
    true
}
