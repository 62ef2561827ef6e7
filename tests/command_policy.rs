//! The `command` kind's policy on a real worker: allow and block lists, a
//! scrubbed environment, a fork bomb held by the process limit, and output
//! caps with their marker. Every refusal is a `failure` receipt naming the
//! rule, dead-lettered without a retry.

mod executor_support;
mod support;

use executor_support::{Rig, WAIT, assert_refused, final_failure, output_file, success};
use serde_json::json;
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread")]
async fn an_allow_list_refuses_other_programs_and_every_shell_line() {
    let rig = Rig::new(&["strict"]).await;
    let config =
        rig.config("[executor.strict]\nkind = \"command\"\nallow = [\"echo\", \"/bin/true\"]\n");
    let _w = rig.worker(&config, &["--capability", "strict=strict"]);

    let ok = rig
        .run("strict", &json!({"command": "echo", "args": ["hi"]}), 3)
        .await;
    assert_eq!(success(&ok)["exit_code"], 0);
    // By path, through the link /bin/true may be.
    let ok = rig
        .run("strict", &json!({"command": "true", "args": []}), 3)
        .await;
    assert_eq!(success(&ok)["exit_code"], 0);

    // Three attempts allowed, one made: a refusal is never retried.
    let cat = rig
        .run(
            "strict",
            &json!({"command": "cat", "args": ["/etc/hostname"]}),
            3,
        )
        .await;
    let body = assert_refused(&cat, "allow");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("not on the allow list"),
        "{body:#}"
    );

    let shell = rig.run("strict", &json!({"command": "echo hi"}), 3).await;
    let body = assert_refused(&shell, "allow");
    let error = body["error"].as_str().unwrap();
    assert!(error.contains("shell") && error.contains("args"), "{error}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_block_list_refuses_a_program_by_name_wherever_it_lives() {
    let rig = Rig::new(&["careful"]).await;
    let config = rig.config("[executor.careful]\nkind = \"command\"\nblock = [\"rm\"]\n");
    let _w = rig.worker(&config, &["--capability", "careful=careful"]);
    let victim = rig.dir.path().join("keep-me");
    std::fs::write(&victim, "precious").unwrap();
    let victim = victim.to_str().unwrap();

    for program in ["rm", "/bin/rm", "/usr/bin/rm"] {
        let rs = rig
            .run("careful", &json!({"command": program, "args": [victim]}), 3)
            .await;
        let body = assert_refused(&rs, "block");
        assert!(
            body["error"].as_str().unwrap().contains("block list"),
            "{body:#}"
        );
    }
    assert!(std::path::Path::new(victim).exists());
    // Without an allow list, shell lines still run (and may run rm: a block
    // list is a convenience, the allow list is the boundary).
    let rs = rig
        .run("careful", &json!({"command": "echo fine"}), 1)
        .await;
    assert_eq!(success(&rs)["exit_code"], 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_environment_is_scrubbed_to_the_passthrough_list() {
    let rig = Rig::new(&["scrubbed"]).await;
    let config = rig.config(
        "[executor.scrubbed]\nkind = \"command\"\nenv_passthrough = [\"PATH\", \"KEEP_*\"]\n\
         payload_env = [\"GREETING\"]\n",
    );
    let mut cmd = rig.worker_command(&config, &["--capability", "scrubbed=scrubbed"]);
    cmd.env("SECRET_TOKEN", "do-not-leak")
        .env("KEEP_ME", "kept");
    let _w = support::ChildGuard::spawn(cmd);
    let out = rig.dir.path().join("env.json");

    let rs = rig
        .run(
            "scrubbed",
            &json!({
                "command": "env", "args": [],
                "env": {"GREETING": "hello"},
                "output_path": out.to_str().unwrap(),
            }),
            1,
        )
        .await;
    success(&rs);
    let stdout = output_file(&out)["stdout"].as_str().unwrap().to_owned();
    let vars: BTreeSet<&str> = stdout.lines().filter_map(|l| l.split('=').next()).collect();
    let expected: BTreeSet<&str> = [
        "CHIT_ATTEMPT",
        "CHIT_TASK_ID",
        "CHIT_TASK_TYPE",
        "GREETING",
        "KEEP_ME",
        "PATH",
        // chit's own: every task has a trace context, handed to its child.
        "TRACEPARENT",
    ]
    .into();
    assert_eq!(vars, expected, "{stdout}");
    assert!(stdout.contains("KEEP_ME=kept\n") && !stdout.contains("do-not-leak"));

    // A payload may set only the names payload_env lists.
    let rs = rig
        .run(
            "scrubbed",
            &json!({"command": "env", "args": [], "env": {"LD_PRELOAD": "/tmp/x.so"}}),
            3,
        )
        .await;
    let body = assert_refused(&rs, "payload_env");
    assert!(
        body["error"].as_str().unwrap().contains("LD_PRELOAD"),
        "{body:#}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_output_flood_is_capped_with_a_marker_saying_what_was_dropped() {
    let rig = Rig::new(&["chatty"]).await;
    let config = rig.config("[executor.chatty]\nkind = \"command\"\nmax_output_bytes = 1000\n");
    let _w = rig.worker(&config, &["--capability", "chatty=chatty"]);
    let out = rig.dir.path().join("flood.json");
    let rs = rig
        .run(
            "chatty",
            &json!({
                "command": "head -c 200000 /dev/zero | tr '\\0' x; head -c 50000 /dev/zero | tr '\\0' y >&2",
                "output_path": out.to_str().unwrap(),
            }),
            1,
        )
        .await;
    let body = success(&rs);
    assert_eq!(body["stdout_bytes"], 200_000);
    assert_eq!(body["stderr_bytes"], 50_000);
    let tail = body["stderr_tail"].as_str().unwrap();
    assert!(
        tail.ends_with("[chit: output cut at 1000 bytes; 49000 more bytes of stderr dropped]\n"),
        "{tail}"
    );
    let written = output_file(&out);
    let stdout = written["stdout"].as_str().unwrap();
    assert_eq!(
        stdout,
        format!(
            "{}\n[chit: output cut at 1000 bytes; 199000 more bytes of stdout dropped]\n",
            "x".repeat(1000)
        )
    );
}

/// Processes whose real uid is `uid`, from /proc.
fn processes_of(uid: u32) -> usize {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| {
            e.file_name()
                .to_str()
                .is_some_and(|n| n.parse::<u32>().is_ok())
        })
        .filter_map(|e| std::fs::read_to_string(e.path().join("status")).ok())
        .filter(|status| {
            status
                .lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|ids| ids.split_whitespace().next())
                .and_then(|real| real.parse::<u32>().ok())
                == Some(uid)
        })
        .count()
}

/// `RLIMIT_NPROC` counts every process of the child's real user and binds
/// nothing for root, so as root the bomb runs as `nobody` (a user with no
/// processes of its own here); as anyone else it runs as that user, with a
/// limit a little above what the user already runs. Either way it can start
/// a few dozen processes, never more, and nothing else of the user's is
/// touched: only processes that carry the limit are refused a fork.
#[tokio::test(flavor = "multi_thread")]
async fn a_fork_bomb_is_stopped_by_the_process_limit_and_the_worker_serves_on() {
    const ROOM: usize = 24;
    let root = nix::unistd::geteuid().is_root();
    let (user_line, uid) = if root {
        let nobody = nix::unistd::User::from_name("nobody")
            .unwrap()
            .expect("user nobody");
        ("user = \"nobody\"\n".to_owned(), nobody.uid.as_raw())
    } else {
        (String::new(), nix::unistd::getuid().as_raw())
    };
    let before = processes_of(uid);
    let limit = before + ROOM;
    let rig = Rig::new(&["bomb"]).await;
    let config = rig.config(&format!(
        "[executor.bomb]\nkind = \"command\"\n{user_line}kill_grace_secs = 0.5\n\
         [executor.bomb.limits]\nprocesses = {limit}\ncpu_secs = 10\n"
    ));
    let mut worker = rig.worker(&config, &["--capability", "bomb=bomb"]);

    // First make sure the policy is in force: children run as the bomb's user.
    let out = rig.dir.path().join("id.json");
    let rs = rig
        .run(
            "bomb",
            &json!({"command": "id", "args": ["-u"], "output_path": out.to_str().unwrap()}),
            1,
        )
        .await;
    success(&rs);
    assert_eq!(output_file(&out)["stdout"], format!("{uid}\n"));

    // The bomb forks without end in a subshell; the first process becomes
    // `sleep` (exec: no fork, which the bomb may have made impossible) until
    // the task's time limit stops the group.
    let mut spec = producer::TaskSpec::json(
        "bomb",
        &json!({"command": "bomb() { bomb | bomb & }; bomb & exec sleep 30", "timeout_secs": 3}),
    )
    .unwrap();
    spec.envelope.max_attempts = Some(1);
    let task = rig.producer.publish(spec).await.unwrap().task_id;
    let mut peak = 0;
    let deadline = Instant::now() + WAIT;
    while !executor_support::settled(&rig.tap.for_task(&task)) {
        assert!(Instant::now() < deadline, "the bomb's task never ended");
        peak = peak.max(processes_of(uid));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let body = final_failure(&rig.tap.for_task(&task));
    println!("fork bomb: {before} processes of uid {uid} before, {peak} at most, limit {limit}");
    assert_eq!(body["reason"], "timeout", "{body:#}");
    assert!(peak > before, "the bomb never started");
    assert!(peak <= limit, "{peak} processes, limit {limit}");
    let tail = body["stderr_tail"].as_str().unwrap().to_lowercase();
    assert!(tail.contains("fork"), "no refused fork in: {tail}");

    // Nothing of it is left, and the worker is still serving.
    support::wait_for("the bomb's processes gone", WAIT, || {
        let n = processes_of(uid);
        async move { (n <= before).then_some(()) }
    })
    .await;
    assert!(worker.0.try_wait().unwrap().is_none(), "the worker died");
    let rs = rig
        .run(
            "bomb",
            &json!({"command": "echo", "args": ["still here"]}),
            1,
        )
        .await;
    assert_eq!(success(&rs)["exit_code"], 0);
}
