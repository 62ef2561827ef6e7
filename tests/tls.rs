//! chit over `amqps://` (issue 19): a CA, a server certificate for
//! 127.0.0.1 / localhost and a client certificate are made here with the
//! `openssl` command, and a RabbitMQ node of the test's own gets a TLS
//! listener that requires a client certificate signed by that CA. Then
//! `chit topology apply`, a worker, a sink and `chit publish` all connect
//! over TLS (flags, `CHIT_TLS_*` variables and config-file keys) and a
//! task succeeds; connections without the CA, without a client
//! certificate, or with bad files fail with errors that say so.
//!
//! Starts one RabbitMQ node: half a minute or more.

#[path = "support/broker_node.rs"]
mod broker_node;
mod support;

use broker_link::{LinkError, TlsConfig};
use broker_node::{BrokerNode, BrokerOpts, NodeTls};
use receipts_sink::{Store, TaskState};
use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::{Duration, Instant};
use support::{ChildGuard, chit, wait_for};

/// The CA, server and client certificates of one test, in a temporary directory.
struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Makes the CA, a server certificate for 127.0.0.1 and localhost, a
    /// client certificate, and a key that belongs to neither.
    fn make() -> Pki {
        let pki = Pki {
            dir: tempfile::tempdir().expect("temp dir"),
        };
        let p = |n: &str| pki.path(n).display().to_string();
        // EC P-256 keys: quick to make, and both rustls and Erlang take them.
        let newkey = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ];
        openssl(
            &["req", "-x509"],
            &newkey,
            &[
                "-keyout",
                &p("ca.key"),
                "-out",
                &p("ca.pem"),
                "-days",
                "2",
                "-subj",
                "/CN=chit test CA",
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
            ],
        );
        for (name, cn, ext) in [
            (
                "server",
                "localhost",
                "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n",
            ),
            ("client", "chit-client", "extendedKeyUsage=clientAuth\n"),
        ] {
            openssl(
                &["req"],
                &newkey,
                &[
                    "-keyout",
                    &p(&format!("{name}.key")),
                    "-out",
                    &p(&format!("{name}.csr")),
                    "-subj",
                    &format!("/CN={cn}"),
                ],
            );
            let extfile = pki.path(&format!("{name}.ext"));
            std::fs::write(
                &extfile,
                format!("basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n{ext}"),
            )
            .unwrap();
            openssl(
                &["x509", "-req"],
                &[],
                &[
                    "-in",
                    &p(&format!("{name}.csr")),
                    "-CA",
                    &p("ca.pem"),
                    "-CAkey",
                    &p("ca.key"),
                    "-CAcreateserial",
                    "-out",
                    &p(&format!("{name}.pem")),
                    "-days",
                    "2",
                    "-extfile",
                    &extfile.display().to_string(),
                ],
            );
        }
        openssl(
            &["genpkey"],
            &[],
            &[
                "-algorithm",
                "EC",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-out",
                &p("other.key"),
            ],
        );
        pki
    }
}

fn openssl(cmd: &[&str], key: &[&str], rest: &[&str]) {
    let out = Command::new("openssl")
        .args(cmd)
        .args(key)
        .args(rest)
        .output()
        .expect("the openssl command must be on PATH (Debian: apt-get install openssl)");
    assert!(
        out.status.success(),
        "openssl {cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `chit ARGS` with the TLS files as flags.
fn chit_tls(pki: &Pki, args: &[&str]) -> Command {
    let mut c = chit();
    c.args(args);
    c.arg("--tls-ca").arg(pki.path("ca.pem"));
    c.arg("--tls-cert").arg(pki.path("client.pem"));
    c.arg("--tls-key").arg(pki.path("client.key"));
    c
}

fn run(mut cmd: Command) -> Output {
    cmd.env_remove("CHIT_TLS_CA")
        .env_remove("CHIT_TLS_CERT")
        .env_remove("CHIT_TLS_KEY")
        .output()
        .expect("run chit")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// `chit publish noop` with `extra` flags; it must fail, quickly, and its
/// standard error is returned.
fn publish_fails(url: &str, extra: &[&str]) -> String {
    let started = Instant::now();
    let mut c = chit();
    c.args(["publish", "noop", "--amqp-url", url, "--payload", "{}"]);
    c.args(extra);
    let o = run(c);
    assert!(
        !o.status.success(),
        "publish with {extra:?} must fail: {}",
        String::from_utf8_lossy(&o.stdout)
    );
    // A TLS or file problem is not retried until the publish deadline.
    assert!(
        started.elapsed() < Duration::from_secs(25),
        "publish with {extra:?} took {:?}",
        started.elapsed()
    );
    let err = stderr(&o);
    eprintln!("publish with {extra:?}: {}", err.trim());
    err
}

#[tokio::test(flavor = "multi_thread")]
async fn chit_runs_a_task_over_tls_and_says_why_a_tls_connection_fails() {
    let pki = Pki::make();
    let node = BrokerNode::start(BrokerOpts::default().tls(NodeTls::verify_peer(
        pki.path("ca.pem"),
        pki.path("server.pem"),
        pki.path("server.key"),
    )));
    let url = node.amqps_url();
    let tls = TlsConfig {
        ca: Some(pki.path("ca.pem")),
        cert: Some(pki.path("client.pem")),
        key: Some(pki.path("client.key")),
    };

    // In process: with the CA and the client certificate, a connection
    // works; also to `localhost`, the server certificate's other name.
    let conn = broker_link::connect_with_tls(&url, "chit-tls-test", &tls)
        .await
        .expect("amqps connection with the CA and a client certificate");
    drop(conn);
    let by_name = url.replace("127.0.0.1", "localhost");
    broker_link::connect_with_tls(&by_name, "chit-tls-test", &tls)
        .await
        .expect("amqps connection to localhost");
    // Without the CA, the broker's certificate is not trusted: a TLS error
    // that retrying will not fix.
    let err = broker_link::connect_with_tls(&url, "chit-tls-test", &TlsConfig::default())
        .await
        .expect_err("the test CA is not a system root");
    assert!(matches!(err, LinkError::Tls { .. }), "{err}");
    assert!(!err.is_transient(), "{err}");

    // The topology over TLS, with flags.
    let o = run(chit_tls(
        &pki,
        &[
            "topology",
            "apply",
            "--capability",
            "noop",
            "--amqp-url",
            &url,
        ],
    ));
    assert!(
        o.status.success(),
        "topology apply over TLS: {}",
        stderr(&o)
    );

    // A worker with the CHIT_TLS_* variables.
    let mut worker = chit();
    worker
        .args(["worker", "--amqp-url", &url, "--capability", "noop"])
        .env("CHIT_TLS_CA", pki.path("ca.pem"))
        .env("CHIT_TLS_CERT", pki.path("client.pem"))
        .env("CHIT_TLS_KEY", pki.path("client.key"));
    let mut worker = ChildGuard::spawn(worker);

    // A sink with the config file's keys, relative to the file.
    let store_url = format!("sqlite://{}", pki.path("receipts.db").display());
    let config = pki.path("chit.toml");
    std::fs::write(
        &config,
        format!(
            "amqp_url = \"{url}\"\ntls_ca = \"ca.pem\"\ntls_cert = \"client.pem\"\ntls_key = \"client.key\"\n"
        ),
    )
    .unwrap();
    let mut sink = chit();
    sink.arg("--config")
        .arg(&config)
        .args(["sink", "--store", &store_url, "--http", "127.0.0.1:0"])
        .env_remove("CHIT_TLS_CA")
        .env_remove("CHIT_TLS_CERT")
        .env_remove("CHIT_TLS_KEY");
    let mut sink = ChildGuard::spawn(sink);

    let o = run(chit_tls(
        &pki,
        &["publish", "noop", "--amqp-url", &url, "--payload", "{}"],
    ));
    assert!(o.status.success(), "publish over TLS: {}", stderr(&o));
    let task_id = String::from_utf8_lossy(&o.stdout).trim().to_owned();
    assert!(!task_id.is_empty(), "publish printed the task id");

    let store = wait_for("the sink's store", Duration::from_secs(60), || {
        let store_url = store_url.clone();
        async move { Store::open(&store_url).await.ok() }
    })
    .await;
    wait_for(
        "the task to succeed over TLS",
        Duration::from_secs(120),
        || async {
            match store.task(&task_id).await {
                Ok(Some(v)) if v.task.state == TaskState::Succeeded => Some(()),
                _ => None,
            }
        },
    )
    .await;
    assert!(worker.0.try_wait().unwrap().is_none(), "the worker runs on");
    assert!(sink.0.try_wait().unwrap().is_none(), "the sink runs on");

    // Without --tls-ca: the broker's certificate is not trusted.
    let err = publish_fails(&url, &[]);
    assert!(
        err.contains("TLS handshake failed") && err.contains("certificate"),
        "{err}"
    );
    // With the CA but no client certificate: the broker refuses the
    // handshake (fail_if_no_peer_cert).
    let ca = pki.path("ca.pem").display().to_string();
    let err = publish_fails(&url, &["--tls-ca", &ca]);
    assert!(
        err.contains("TLS handshake failed"),
        "no client certificate: {err}"
    );
    // Bad files are named.
    let err = publish_fails(&url, &["--tls-ca", "/nonexistent/chit-ca.pem"]);
    assert!(err.contains("TLS file /nonexistent/chit-ca.pem"), "{err}");
    let not_pem = pki.path("chit.toml").display().to_string();
    let err = publish_fails(&url, &["--tls-ca", &not_pem]);
    assert!(
        err.contains(&not_pem) && err.contains("no PEM certificate"),
        "{err}"
    );
    let cert = pki.path("client.pem").display().to_string();
    let err = publish_fails(&url, &["--tls-ca", &ca, "--tls-cert", &cert]);
    assert!(err.contains(&cert) && err.contains("--tls-key"), "{err}");
    let other = pki.path("other.key").display().to_string();
    let err = publish_fails(
        &url,
        &["--tls-ca", &ca, "--tls-cert", &cert, "--tls-key", &other],
    );
    assert!(
        err.contains(&other) && err.contains("cannot be used with the certificate"),
        "a key of another certificate: {err}"
    );
    assert!(
        !err.contains("PRIVATE KEY"),
        "key material never shown: {err}"
    );
    // TLS settings with a plain amqp:// URL would silently not be used.
    let err = publish_fails(&node.amqp_url(), &["--tls-ca", &ca]);
    assert!(err.contains("not amqps://"), "{err}");

    for (name, child) in [("worker", &mut worker), ("sink", &mut sink)] {
        child.signal(nix::sys::signal::Signal::SIGTERM);
        assert!(
            child.wait_timeout(Duration::from_secs(60)).is_some(),
            "the {name} stops on SIGTERM"
        );
    }
}
