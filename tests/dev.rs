//! `chit dev` takes its sink's store and address the way `chit sink` does:
//! from `CHIT_STORE` and `CHIT_HTTP`, else from the config file's `[sink]`.

mod support;

use std::path::Path;
use std::time::Duration;
use support::{ChildGuard, Vhost, chit, free_port, wait_for};

const WAIT: Duration = Duration::from_secs(30);

/// Waits until the sink's API answers on `port`, then until the SQLite file
/// at `db` exists, then stops `chit dev` with SIGTERM and expects a clean exit.
async fn expect_sink_at(mut dev: ChildGuard, port: u16, db: &Path) {
    let api = format!("http://127.0.0.1:{port}");
    wait_for("the dev sink's API on the configured port", WAIT, || {
        let o = chit()
            .args(["task", "list", "--api", &api])
            .output()
            .unwrap();
        async move { o.status.success().then_some(()) }
    })
    .await;
    assert!(
        db.exists(),
        "the configured store {} was not created",
        db.display()
    );
    dev.signal(nix::sys::signal::Signal::SIGTERM);
    let status = dev.wait_timeout(WAIT).expect("chit dev stops on SIGTERM");
    assert!(status.success(), "chit dev exited with {status}");
}

#[tokio::test(flavor = "multi_thread")]
async fn chit_dev_takes_store_and_address_from_the_environment_over_the_file() {
    let vhost = Vhost::create();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("from-env.db");
    let port = free_port();
    // The file says otherwise; the variables win.
    let config = dir.path().join("chit.toml");
    std::fs::write(
        &config,
        format!(
            "[sink]\nstore = \"sqlite://{}\"\nhttp = \"127.0.0.1:{}\"\n",
            dir.path().join("from-file.db").display(),
            free_port()
        ),
    )
    .unwrap();
    let mut dev = chit();
    dev.args(["dev", "--amqp-url", &vhost.url])
        .env("CHIT_STORE", format!("sqlite://{}", db.display()))
        .env("CHIT_HTTP", format!("127.0.0.1:{port}"))
        .env("CHIT_CONFIG", &config);
    expect_sink_at(ChildGuard::spawn(dev), port, &db).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn chit_dev_takes_store_and_address_from_the_config_file() {
    let vhost = Vhost::create();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("from-file.db");
    let port = free_port();
    let config = dir.path().join("chit.toml");
    std::fs::write(
        &config,
        format!(
            "[sink]\nstore = \"sqlite://{}\"\nhttp = \"127.0.0.1:{port}\"\n",
            db.display()
        ),
    )
    .unwrap();
    let mut dev = chit();
    dev.args(["dev", "--amqp-url", &vhost.url, "--config"])
        .arg(&config)
        .env_remove("CHIT_STORE")
        .env_remove("CHIT_HTTP");
    expect_sink_at(ChildGuard::spawn(dev), port, &db).await;
}

#[test]
fn run_sh_puts_chit_on_the_path_as_a_link_and_leaves_a_real_file_alone() {
    let root = env!("CARGO_MANIFEST_DIR");
    let home = tempfile::tempdir().unwrap();
    let link_chit = |cargo_home: &Path| {
        std::process::Command::new(format!("{root}/deploy/local/link-chit.sh"))
            .arg(env!("CARGO_BIN_EXE_chit"))
            .env("CARGO_HOME", cargo_home)
            .output()
            .unwrap()
    };
    let o = link_chit(home.path());
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let link = home.path().join("bin/chit");
    let version = std::process::Command::new(&link)
        .arg("--version")
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&version.stdout).starts_with("chit "));
    // Someone's own `chit` there is not replaced.
    std::fs::remove_file(&link).unwrap();
    std::fs::write(&link, "mine").unwrap();
    let o = link_chit(home.path());
    assert!(o.status.success());
    assert_eq!(std::fs::read_to_string(&link).unwrap(), "mine");
    assert!(String::from_utf8_lossy(&o.stderr).contains("not a link"));
}

/// SIGTERM while a sink is still trying to reach its broker is a stop
/// request, not a kill: Kubernetes may stop a pod that never got ready.
#[tokio::test(flavor = "multi_thread")]
async fn sigterm_during_startup_stops_a_sink_without_being_killed_by_it() {
    use std::io::BufRead;
    use std::os::unix::process::ExitStatusExt;
    let dir = tempfile::tempdir().unwrap();
    let mut sink = chit();
    sink.args(["sink", "--amqp-url", "amqp://guest:guest@127.0.0.1:1/%2f"])
        .args(["--http", &format!("127.0.0.1:{}", free_port())])
        .arg("--store")
        .arg(format!("sqlite://{}", dir.path().join("r.db").display()))
        .stderr(std::process::Stdio::piped());
    let mut sink = ChildGuard::spawn(sink);
    // The first log line comes after the handlers are installed.
    let mut stderr = std::io::BufReader::new(sink.0.stderr.take().unwrap());
    let mut first = String::new();
    stderr.read_line(&mut first).unwrap();
    assert!(!first.is_empty(), "the sink logged nothing before exiting");
    sink.signal(nix::sys::signal::Signal::SIGTERM);
    let status = sink.wait_timeout(WAIT).expect("the sink stops on SIGTERM");
    assert_eq!(status.signal(), None, "killed by a signal: {status}");
}
