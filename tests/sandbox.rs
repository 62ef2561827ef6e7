//! The bubblewrap sandbox of the `command` kind, on a real worker: no
//! network, a read-only root with one writable working directory and a
//! private /tmp, its own PID namespace; and a worker that cannot make its
//! sandbox refuses to start. Each case runs the same payload unsandboxed
//! beside it, so the difference is the sandbox's doing.

mod executor_support;
mod support;

use executor_support::{
    Rig, assert_refused, final_failure, output_file, refuses_to_start, success,
};
use serde_json::json;
use std::io::Read;
use std::path::Path;

/// `plain` and `boxed`: the same kind, the second sandboxed with
/// `working_dirs` as given.
fn config(working_dirs: &[&Path]) -> String {
    let dirs: Vec<String> = working_dirs
        .iter()
        .map(|d| format!("{:?}", d.to_str().unwrap()))
        .collect();
    format!(
        "[executor.plain]\nkind = \"command\"\n\n[executor.boxed]\nkind = \"command\"\n\
         [executor.boxed.sandbox]\nworking_dirs = [{}]\n",
        dirs.join(", ")
    )
}

async fn rig_with_worker(working_dirs: &[&Path]) -> (Rig, support::ChildGuard) {
    let rig = Rig::new(&["plain-tasks", "boxed-tasks"]).await;
    let path = rig.config(&config(working_dirs));
    let w = rig.worker(
        &path,
        &[
            "--capability",
            "plain-tasks=plain",
            "--capability",
            "boxed-tasks=boxed",
        ],
    );
    (rig, w)
}

/// A directory outside /tmp (which the sandbox replaces), so the sandbox
/// sees it, read-only.
fn outside_tmp() -> tempfile::TempDir {
    // Not under /tmp, which the sandbox replaces with its own: /var/tmp,
    // wherever the checkout (and so CARGO_TARGET_TMPDIR) happens to be.
    tempfile::tempdir_in("/var/tmp").unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_sandboxed_child_cannot_reach_a_loopback_port_the_test_opened() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (rig, _w) = rig_with_worker(&[]).await;
    let connect = json!({
        "command": "bash",
        "args": ["-c", format!("echo hello > /dev/tcp/127.0.0.1/{port}")],
    });

    let plain = rig.run("plain-tasks", &connect, 1).await;
    assert_eq!(success(&plain)["exit_code"], 0);
    let (mut conn, _) = listener.accept().unwrap();
    let mut got = String::new();
    conn.read_to_string(&mut got).unwrap();
    assert_eq!(got, "hello\n");

    listener.set_nonblocking(true).unwrap();
    let boxed = rig.run("boxed-tasks", &connect, 1).await;
    let body = final_failure(&boxed);
    assert_eq!(body["reason"], "failed", "{body:#}");
    let tail = body["stderr_tail"].as_str().unwrap();
    assert!(tail.contains("/dev/tcp/127.0.0.1"), "{tail}");
    assert!(
        listener.accept().is_err(),
        "the sandboxed child reached the port"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_sandboxed_child_can_write_only_its_working_directory() {
    let work = outside_tmp();
    let elsewhere = outside_tmp();
    let (rig, _w) = rig_with_worker(&[work.path()]).await;
    let job = work.path().join("job");
    std::fs::create_dir(&job).unwrap();
    let private = format!("chit-sandbox-{}", uuid::Uuid::new_v4().simple());
    let out = rig.dir.path().join("write.json");
    // It sees `elsewhere` but cannot write there; /tmp is its own.
    let script = format!(
        "echo made > inside; test -d {else_} || exit 10; \
         if echo x > {else_}/outside; then exit 11; fi; \
         echo mine > /tmp/{private} && test -f /tmp/{private}",
        else_ = elsewhere.path().display(),
    );
    let rs = rig
        .run(
            "boxed-tasks",
            &json!({"command": script, "working_dir": job.to_str().unwrap(),
                    "output_path": out.to_str().unwrap()}),
            1,
        )
        .await;
    assert_eq!(success(&rs)["exit_code"], 0, "{rs:#?}");
    assert_eq!(
        std::fs::read_to_string(job.join("inside")).unwrap(),
        "made\n"
    );
    assert!(!elsewhere.path().join("outside").exists());
    assert!(!Path::new("/tmp").join(&private).exists());
    let stderr = output_file(&out)["stderr"].as_str().unwrap().to_owned();
    assert!(stderr.contains("Read-only file system"), "{stderr}");

    // Unsandboxed, the same write lands.
    let rs = rig
        .run(
            "plain-tasks",
            &json!({"command": format!("echo x > {}/outside", elsewhere.path().display())}),
            1,
        )
        .await;
    success(&rs);
    assert!(elsewhere.path().join("outside").exists());

    // A working directory outside working_dirs is refused, not bound.
    let rs = rig
        .run(
            "boxed-tasks",
            &json!({"command": "true", "working_dir": elsewhere.path().to_str().unwrap()}),
            3,
        )
        .await;
    assert_refused(&rs, "sandbox.working_dirs");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_sandboxed_child_cannot_see_the_hosts_processes() {
    let (rig, w) = rig_with_worker(&[]).await;
    let worker_pid = w.pid();
    let list = |out: &Path| {
        json!({
            "command": format!(
                "ls /proc | grep -E '^[0-9]+$'; \
                 if kill -0 {worker_pid} 2>/dev/null; then echo worker-visible; fi"
            ),
            "output_path": out.to_str().unwrap(),
        })
    };
    let pids = |out: &Path| -> Vec<u32> {
        output_file(out)["stdout"]
            .as_str()
            .unwrap()
            .lines()
            .filter_map(|l| l.parse().ok())
            .collect()
    };

    let plain_out = rig.dir.path().join("plain.json");
    success(&rig.run("plain-tasks", &list(&plain_out), 1).await);
    let host = pids(&plain_out);
    assert!(host.contains(&(worker_pid as u32)), "{host:?}");
    assert!(
        output_file(&plain_out)["stdout"]
            .as_str()
            .unwrap()
            .contains("worker-visible")
    );

    let boxed_out = rig.dir.path().join("boxed.json");
    success(&rig.run("boxed-tasks", &list(&boxed_out), 1).await);
    let inside = pids(&boxed_out);
    assert!(!inside.contains(&(worker_pid as u32)), "{inside:?}");
    assert!(!inside.contains(&std::process::id()), "{inside:?}");
    // bwrap's init, the shell and what the shell runs: a handful.
    assert!(inside.len() < 10, "{inside:?}");
    assert!(
        !output_file(&boxed_out)["stdout"]
            .as_str()
            .unwrap()
            .contains("worker-visible")
    );
}

#[test]
fn a_worker_whose_sandbox_cannot_be_made_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("chit.toml");
    std::fs::write(&path, config(&[])).unwrap();
    let worker = |path_var: &std::ffi::OsStr| {
        let mut cmd = support::chit();
        cmd.args(["worker", "--config"])
            .arg(&path)
            .args(["--capability", "boxed-tasks=boxed"])
            .env("PATH", path_var);
        cmd
    };

    // No bwrap on the worker's PATH.
    let empty = dir.path().join("empty-bin");
    std::fs::create_dir(&empty).unwrap();
    let stderr = refuses_to_start(worker(empty.as_os_str()));
    assert!(
        stderr.contains("executor boxed") && stderr.contains("bubblewrap"),
        "{stderr}"
    );

    // A bwrap that cannot make namespaces, as in a container that forbids them.
    let fake = dir.path().join("fake-bin");
    std::fs::create_dir(&fake).unwrap();
    let bwrap = fake.join("bwrap");
    std::fs::write(
        &bwrap,
        "#!/bin/sh\necho 'bwrap: No permissions to create new namespace' >&2\nexit 1\n",
    )
    .unwrap();
    std::fs::set_permissions(&bwrap, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let mut search = std::ffi::OsString::from(fake.as_os_str());
    search.push(":/usr/bin:/bin");
    let stderr = refuses_to_start(worker(&search));
    assert!(
        stderr.contains("executor boxed")
            && stderr.contains("No permissions to create new namespace"),
        "{stderr}"
    );
}
