//! The extra-node helper itself: a node of its own starts, answers on its
//! port, survives two restarts and a kill, and is gone after drop. Starts one
//! RabbitMQ node, so this takes half a minute or more.

#[path = "support/broker_node.rs"]
mod broker_node;

use broker_node::{BrokerNode, BrokerOpts};
use lapin::options::QueueDeclareOptions;
use lapin::types::FieldTable;
use lapin::{Connection, ConnectionProperties};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::Command;

#[test]
fn node_starts_restarts_and_is_gone_after_drop() {
    let mut node = BrokerNode::start(BrokerOpts::default().loopback_users_none());
    let port = node.amqp_port();
    assert_ne!(
        port, 5672,
        "an extra node never takes the shared broker's port"
    );
    TcpStream::connect(("127.0.0.1", port)).expect("AMQP port answers after start");
    assert!(node.amqp_url().ends_with(&format!(":{port}/%2f")));

    // The node is a node of its own, reachable by name through rabbitmqctl.
    let status = node.ctl(&["status"]);
    assert!(
        status.contains(node.name()),
        "status names the node: {status}"
    );

    // amqp_url() works with lapin as guest, and data survives a restart: a
    // durable queue declared now is still there after each one.
    declare_durable_queue(&node.amqp_url(), "kept");

    for round in 1..=2 {
        node.stop();
        assert!(!node.port_open(), "port closed after stop (round {round})");
        assert!(node.try_ctl(&["ping"]).is_err(), "node down after stop");
        node.start_again();
        assert_eq!(node.amqp_port(), port, "same port after restart");
        TcpStream::connect(("127.0.0.1", port))
            .unwrap_or_else(|e| panic!("port answers after restart {round}: {e}"));
        let queues = node.ctl(&["list_queues", "name"]);
        assert!(
            queues.contains("kept"),
            "durable queue kept after restart {round}: {queues}"
        );
    }

    // A kill is a crash: the node comes back from it too.
    node.kill();
    assert!(!node.port_open(), "port closed after kill");
    node.start_again();
    TcpStream::connect(("127.0.0.1", port)).expect("port answers after kill and start");

    node.set_memory_watermark(0.0001);
    let alarms = node.ctl(&["eval", "rabbit_alarm:get_alarms()."]);
    assert!(alarms.contains("memory"), "memory alarm raised: {alarms}");
    node.set_memory_watermark(0.4);

    let name = node.name().to_string();
    let dir: PathBuf = node.dir().to_path_buf();
    let pid = node.beam_pid().expect("pid file");
    drop(node);

    assert!(
        TcpStream::connect(("127.0.0.1", port)).is_err(),
        "port closed after drop"
    );
    assert!(
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_err(),
        "beam process {pid} gone after drop"
    );
    assert!(!dir.exists(), "node directory removed after drop");
    let ping = Command::new("rabbitmqctl")
        .args(["-q", "-n", &name, "ping"])
        .output()
        .expect("run rabbitmqctl");
    assert!(
        !ping.status.success(),
        "node {name} does not answer after drop"
    );
}

#[test]
fn watermark_from_config_blocks_from_the_start() {
    let node = BrokerNode::start(BrokerOpts::default().memory_watermark(0.0001));
    let alarms = node.ctl(&["eval", "rabbit_alarm:get_alarms()."]);
    assert!(
        alarms.contains("memory"),
        "memory alarm raised at boot: {alarms}"
    );
}

fn declare_durable_queue(url: &str, name: &str) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    rt.block_on(async {
        let conn = Connection::connect(url, ConnectionProperties::default())
            .await
            .unwrap_or_else(|e| panic!("connect to {url}: {e}"));
        let ch = conn.create_channel().await.expect("channel");
        ch.queue_declare(
            name.into(),
            QueueDeclareOptions {
                durable: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .expect("declare queue");
        conn.close(200, "bye".into()).await.expect("close");
    });
}
