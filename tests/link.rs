//! The broker link against a real RabbitMQ: what each publish outcome means,
//! and which failures are fatal.

mod support;

use broker_link::{BrokerLink, LinkError, LinkState, Outgoing, PublishOutcome};
use broker_topology::{Capability, Topology, names};
use lapin::BasicProperties;
use std::time::{Duration, Instant};
use support::Vhost;

fn message<'a>(exchange: &'a str, routing_key: &'a str) -> Outgoing<'a> {
    Outgoing {
        exchange,
        routing_key,
        body: b"{}",
        properties: BasicProperties::default().with_message_id("m-1".into()),
        mandatory: true,
    }
}

#[tokio::test]
async fn each_publish_outcome_means_one_thing() {
    let vhost = Vhost::create();
    let topology = Topology::for_capabilities(&[Capability::new("noop").unwrap()]);
    let link = BrokerLink::new(vhost.url.clone(), "chit-test-link", topology);
    let deadline = || Some(Instant::now() + Duration::from_secs(10));

    let routed = link
        .publish_confirmed(&message(names::TASK_EXCHANGE, "noop"), deadline())
        .await;
    assert!(routed.is_confirmed(), "{routed:?}");
    let generation = link.session().await.unwrap().generation;

    match link
        .publish_confirmed(&message(names::TASK_EXCHANGE, "no.such.type"), deadline())
        .await
    {
        PublishOutcome::Returned {
            reply_code,
            message_id,
            ..
        } => {
            assert_eq!(reply_code, 312, "NO_ROUTE");
            assert_eq!(message_id.as_deref(), Some("m-1"));
        }
        other => panic!("an unroutable mandatory message must come back: {other:?}"),
    }

    // An exchange that does not exist closes the publishing channel: the
    // outcome names the reply code, and the connection (with any leases on
    // it) survives.
    match link
        .publish_confirmed(&message("chit.no-such-exchange", ""), deadline())
        .await
    {
        PublishOutcome::Lost(e) => assert!(e.is_not_found(), "{e}"),
        other => panic!("expected a lost publish with NOT_FOUND: {other:?}"),
    }
    let again = link
        .publish_confirmed(&message(names::TASK_EXCHANGE, "noop"), deadline())
        .await;
    assert!(again.is_confirmed(), "{again:?}");
    assert_eq!(link.session().await.unwrap().generation, generation);
    assert_eq!(link.state(), LinkState::Connected);

    let conn = vhost.connect().await;
    assert_eq!(
        support::queue_depth(&conn, &names::task_queue("noop")).await,
        2
    );
    link.close().await;
}

#[tokio::test]
async fn refused_credentials_are_fatal_and_named() {
    let url = format!(
        "amqp://guest:not-the-password@{}/%2f",
        support::broker_authority()
    );
    let link = BrokerLink::new(url, "chit-test-refused", Topology::core());
    let err = link
        .session_until(Some(Instant::now() + Duration::from_secs(20)))
        .await
        .unwrap_err();
    assert!(matches!(err, LinkError::Refused { .. }), "{err}");
    assert!(!err.is_transient());
    assert!(!err.to_string().contains("not-the-password"), "{err}");
    // Had it been retried, the deadline would have ended it as `Deadline`.

    let vhost_missing = format!(
        "amqp://guest:guest@{}/chit-no-such-vhost",
        support::broker_authority()
    );
    let err = broker_link::connect(&vhost_missing, "chit-test")
        .await
        .unwrap_err();
    assert!(matches!(err, LinkError::Refused { .. }), "{err}");
}

/// chit asks for 32 KiB frames (lapin's buffers are 32 frames each way), so
/// a receipt batch or a large task body travels in many frames and must
/// arrive whole; a URL that sets `frame_max` keeps its own.
#[tokio::test]
async fn a_body_of_many_frames_arrives_whole() {
    let vhost = Vhost::create();
    let topology = Topology::for_capabilities(&[Capability::new("noop").unwrap()]);
    let link = BrokerLink::new(vhost.url.clone(), "chit-test-frames", topology);
    let session = link.session().await.unwrap();
    assert_eq!(
        session.connection.configuration().frame_max(),
        broker_link::DEFAULT_FRAME_MAX
    );
    let body: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    let outcome = link
        .publish_confirmed(
            &Outgoing {
                body: &body,
                ..message(names::TASK_EXCHANGE, "noop")
            },
            Some(Instant::now() + Duration::from_secs(10)),
        )
        .await;
    assert!(outcome.is_confirmed(), "{outcome:?}");

    let conn = vhost.connect().await;
    let channel = conn.create_channel().await.unwrap();
    let got = channel
        .basic_get(
            names::task_queue("noop").as_str().into(),
            lapin::options::BasicGetOptions { no_ack: true },
        )
        .await
        .unwrap()
        .expect("the message is in the queue");
    assert!(got.delivery.data == body, "the body came back changed");
    link.close().await;

    let own = broker_link::connect(&format!("{}?frame_max=65536", vhost.url), "chit-test")
        .await
        .unwrap();
    assert_eq!(own.configuration().frame_max(), 65_536);
}
