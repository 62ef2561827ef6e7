//! What a person sees from the `chit` binary when things go wrong: plain,
//! one readable line for an unreachable broker, plain logs (issue 13,
//! findings 10 and 17).

use std::process::Command;

fn chit() -> Command {
    Command::new(env!("CARGO_BIN_EXE_chit"))
}

/// A broker that is not there: port 1 on loopback refuses at once.
const CLOSED_PORT: &str = "amqp://guest:guest@127.0.0.1:1/%2f";

#[test]
fn an_unreachable_broker_is_one_line_that_names_it() {
    let out = chit()
        .args(["publish", "noop", "--payload", "{}"])
        .args(["--amqp-url", "amqp://guest:secret@127.0.0.1:1/%2f"])
        .env_remove("CHIT_LOG")
        .env_remove("RUST_LOG")
        .output()
        .expect("run chit");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "one line, not a log of retries: {stderr}");
    assert!(lines[0].starts_with("error: "), "{stderr}");
    assert!(lines[0].contains("guest:***@127.0.0.1:1"), "{stderr}");
    assert!(!stderr.contains("secret"), "{stderr}");
}

#[test]
fn logs_to_a_pipe_have_no_colour_codes_and_keep_dependency_filters() {
    let out = chit()
        .args(["publish", "noop", "--payload", "{}", "--deadline-secs", "2"])
        .args(["--amqp-url", CLOSED_PORT])
        .env("CHIT_LOG", "debug")
        .env_remove("RUST_LOG")
        .output()
        .expect("run chit");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("127.0.0.1:1"),
        "the error names the broker: {stderr}"
    );
    assert!(
        stderr.contains("cannot reach broker"),
        "CHIT_LOG=debug shows chit's retries: {stderr}"
    );
    assert!(
        !stderr.contains('\u{1b}'),
        "no ANSI escapes when stderr is not a terminal: {stderr:?}"
    );
    assert!(
        !stderr.lines().any(|l| l.contains(" lapin")),
        "CHIT_LOG=debug keeps lapin's own logging off: {stderr}"
    );
}
