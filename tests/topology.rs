//! `chit topology show` as an operator reads it: the consumers of the
//! cancellations stream counted (AMQP alone reports 0 for a stream), and the
//! retry delay queues listed with the tasks waiting in them.

mod support;

use broker_topology::names;
use serde_json::json;
use std::time::Duration;
use support::{ChildGuard, Vhost, chit, wait_for};

const WAIT: Duration = Duration::from_secs(40);

fn show(vhost: &Vhost, extra: &[&str]) -> (bool, String, String) {
    let o = chit()
        .args([
            "topology",
            "show",
            "--capability",
            "command.execute",
            "--amqp-url",
            &vhost.url,
        ])
        .args(extra)
        .output()
        .unwrap();
    (
        o.status.success(),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

fn line_of<'a>(out: &'a str, name: &str) -> Option<&'a str> {
    out.lines()
        .find(|l| l.split_whitespace().nth(1) == Some(name))
}

#[tokio::test(flavor = "multi_thread")]
async fn show_counts_stream_consumers_and_lists_delay_queues() {
    let vhost = Vhost::create();
    let mut worker = chit();
    worker.args([
        "worker",
        "--capability",
        "command.execute",
        "--amqp-url",
        &vhost.url,
    ]);
    let _worker = ChildGuard::spawn(worker);
    // A task that fails and waits a minute for its retry: it sits in a
    // delay queue while we look.
    let payload = json!({"command": "exit 3"}).to_string();
    wait_for("the worker to declare the topology", WAIT, || {
        let o = chit()
            .args([
                "publish",
                "command.execute",
                "--amqp-url",
                &vhost.url,
                "--payload",
                &payload,
                "--max-attempts",
                "3",
                "--backoff-ms",
                "60000",
            ])
            .output()
            .unwrap();
        async move { o.status.success().then_some(()) }
    })
    .await;
    let out = wait_for(
        "show to count the worker and the waiting retry",
        WAIT,
        || {
            let (ok, out, _) = show(&vhost, &[]);
            let stream = line_of(&out, names::CANCEL_STREAM).unwrap_or("").to_owned();
            let delay = out
                .lines()
                .find(|l| l.starts_with("delay"))
                .unwrap_or("")
                .to_owned();
            async move {
                (ok && stream.contains("1 consumers") && delay.contains("1 messages"))
                    .then_some(out)
            }
        },
    )
    .await;
    let delay = out.lines().find(|l| l.starts_with("delay")).unwrap();
    let queue = delay.split_whitespace().nth(1).unwrap();
    assert!(
        names::is_delay_queue_of(queue, "command.execute"),
        "{queue} is not a delay queue of command.execute:\n{out}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn without_the_management_api_stream_counts_are_unknown_not_zero() {
    let vhost = Vhost::create();
    let o = chit()
        .args(["topology", "apply", "--capability", "command.execute"])
        .args(["--amqp-url", &vhost.url])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // Port 9 (discard) answers nothing on this machine.
    let (ok, out, err) = show(&vhost, &["--management-url", "http://127.0.0.1:9"]);
    assert!(ok, "the topology is in sync, so show succeeds:\n{out}{err}");
    let stream = line_of(&out, names::CANCEL_STREAM).expect("the stream is listed");
    assert!(stream.contains("unknown"), "{stream}");
    assert!(!stream.contains("0 consumers"), "{stream}");
    assert!(
        err.contains("127.0.0.1:9") && err.contains("rabbitmq_management"),
        "the note names the API and how to enable it: {err}"
    );
}
