//! The container image and the Kubernetes manifests, checked offline by
//! deploy/k8s/validate.sh (hadolint, kustomize renders, kubernetes-validate
//! --strict, the npm models of the custom resources, chit's invariants and
//! their self-test), so `cargo test` and CI cover them; and the flags and the
//! config file the manifests give `chit`, checked against this build.
//!
//! The tools come from deploy/local/ensure-services.sh --with-python; when
//! one is missing, validate.sh fails saying how to install it, and so do
//! these tests. Nothing is skipped.

use std::path::{Path, PathBuf};
use std::process::Command;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Runs deploy/k8s/validate.sh with `args`: its success and its output.
fn validate(args: &[&str]) -> (bool, String) {
    let out = Command::new("bash")
        .arg(repo().join("deploy/k8s/validate.sh"))
        .args(args)
        .output()
        .expect("run bash deploy/k8s/validate.sh");
    let log = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), log)
}

#[test]
fn the_dockerfile_and_every_render_validate_and_each_invariant_can_fail() {
    let (ok, log) = validate(&[]);
    assert!(ok, "deploy/k8s/validate.sh failed:\n{log}");
    for step in [
        "Dockerfile clean",
        "rendered overlays/prod",
        "kubernetes-validate --strict: core objects valid",
        "0 invalid, 0 without a model",
        "0 violations",
        "self-test:",
    ] {
        assert!(
            log.contains(step),
            "validate.sh did not report {step:?}:\n{log}"
        );
    }
    let self_test = log
        .lines()
        .find(|l| l.contains("self-test:"))
        .expect("a self-test line");
    assert!(self_test.contains(" 0 failed"), "{self_test}");
}

/// A machine without kubectl or kustomize renders with validate/render.py.
#[test]
fn the_fallback_renderer_alone_validates() {
    let (ok, log) = validate(&["--renderer", "render.py", "--no-self-test"]);
    assert!(ok, "validate.sh --renderer render.py failed:\n{log}");
    assert!(log.contains("with validate/render.py"), "{log}");
}

/// Copies the manifests (not the tools) of deploy/k8s into `to`.
fn copy_manifests(to: &Path) {
    fn copy_dir(from: &Path, to: &Path) {
        std::fs::create_dir_all(to).unwrap();
        for entry in std::fs::read_dir(from).unwrap() {
            let entry = entry.unwrap();
            let target = to.join(entry.file_name());
            if entry.file_type().unwrap().is_dir() {
                copy_dir(&entry.path(), &target);
            } else {
                std::fs::copy(entry.path(), target).unwrap();
            }
        }
    }
    for dir in ["base", "components", "overlays", "secrets", "alternatives"] {
        copy_dir(&repo().join("deploy/k8s").join(dir), &to.join(dir));
    }
}

/// Validates a copy of the manifests with each `(file, from, to)` applied
/// (`from` must occur in the file; its first occurrence is replaced).
fn validate_broken(changes: &[(&str, &str, &str)]) -> String {
    let dir = tempfile::tempdir().unwrap();
    copy_manifests(dir.path());
    for (file, from, to) in changes {
        let path = dir.path().join(file);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains(from), "{file} no longer contains {from:?}");
        std::fs::write(&path, text.replacen(from, to, 1)).unwrap();
    }
    let (ok, log) = validate(&["--dir", dir.path().to_str().unwrap(), "--no-self-test"]);
    assert!(
        !ok,
        "validate.sh accepted the manifests with {changes:?}:\n{log}"
    );
    log
}

/// Every violation is reported, each naming its resource, so one broken copy
/// shows several checks failing at once.
#[test]
fn a_broken_copy_of_the_manifests_fails_naming_each_resource() {
    let cases = [
        (
            "base/workers-command.yaml",
            "terminationGracePeriodSeconds: 150",
            "terminationGracePeriodSeconds: 100",
            "Deployment/workers-command: terminationGracePeriodSeconds 100 must exceed \
             --drain-timeout-secs 120 + --kill-grace-secs 10 = 130",
        ),
        (
            "base/workers-command.yaml",
            "              cpu: \"2\"\n",
            "",
            "Deployment/workers-command container worker: no resources.limits.cpu",
        ),
        (
            "base/workers-http.yaml",
            "path: /readyz",
            "path: /healthz",
            "Deployment/workers-http container worker: readinessProbe must be GET /readyz",
        ),
        (
            "components/keda/scaled-objects.yaml",
            "        protocol: http\n",
            "        protocol: amqp\n",
            "ScaledObject/workers-command trigger 0: protocol 'amqp' counts ready messages only",
        ),
        (
            "components/keda/scaled-objects.yaml",
            "name: workers-http\n  pollingInterval",
            "name: workers-htp\n  pollingInterval",
            "ScaledObject/workers-http: scaleTargetRef names Deployment/workers-htp, which is \
             not in this render",
        ),
        (
            "base/sink.yaml",
            "            runAsUser: 10001",
            "            runAsUser: 0",
            "Deployment/chit-sink container sink: runAsUser 0 is root",
        ),
    ];
    let changes: Vec<_> = cases.iter().map(|(f, a, b, _)| (*f, *a, *b)).collect();
    let log = validate_broken(&changes);
    assert!(log.contains("error: invariants violated"), "{log}");
    for (file, _, _, expected) in cases {
        assert!(
            log.contains(expected),
            "{file}: expected {expected:?} in:\n{log}"
        );
    }
}

/// A misspelt field the invariants do not look for: kubernetes-validate --strict.
#[test]
fn an_unknown_field_fails_the_strict_schema_check() {
    let log = validate_broken(&[(
        "base/gateway.yaml",
        "enableServiceLinks: false",
        "enableServiceLink: false",
    )]);
    assert!(
        log.contains("deployment/chit-gateway")
            && log.contains("'enableServiceLink' was unexpected"),
        "{log}"
    );
}

/// The manifests' objects with a pod template, from deploy/k8s/base.
fn base_containers() -> Vec<(String, yaml_rust2::Yaml)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(repo().join("deploy/k8s/base")).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        for doc in yaml_rust2::YamlLoader::load_from_str(&text).unwrap() {
            let spec = &doc["spec"]["template"]["spec"];
            for c in spec["containers"].as_vec().into_iter().flatten() {
                if c["image"].as_str().is_some_and(|i| i.starts_with("chit")) {
                    let name = format!(
                        "{}/{} ({})",
                        doc["kind"].as_str().unwrap(),
                        doc["metadata"]["name"].as_str().unwrap(),
                        path.file_name().unwrap().to_string_lossy()
                    );
                    out.push((name, c.clone()));
                }
            }
        }
    }
    assert!(out.len() >= 5, "found only {} chit containers", out.len());
    out
}

/// Every flag the manifests give `chit` is one this build's command knows.
#[test]
fn every_flag_in_the_manifests_is_one_chit_knows() {
    for (name, c) in base_containers() {
        let args: Vec<&str> = c["args"]
            .as_vec()
            .unwrap_or_else(|| panic!("{name}: no args"))
            .iter()
            .map(|a| {
                a.as_str()
                    .unwrap_or_else(|| panic!("{name}: an argument is not a string"))
            })
            .collect();
        let path: Vec<&str> = args
            .iter()
            .take_while(|a| !a.starts_with('-'))
            .copied()
            .collect();
        let help = Command::new(env!("CARGO_BIN_EXE_chit"))
            .args(&path)
            .arg("--help")
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&help.stdout);
        assert!(
            help.status.success(),
            "{name}: `chit {} --help` failed: {}",
            path.join(" "),
            String::from_utf8_lossy(&help.stderr)
        );
        for flag in args.iter().filter(|a| a.starts_with("--")) {
            let flag = flag.split('=').next().unwrap();
            assert!(
                text.contains(&format!("{flag} ")) || text.contains(&format!("{flag}\n")),
                "{name}: `chit {}` has no flag {flag}:\n{text}",
                path.join(" ")
            );
        }
    }
}

/// The config file of the http worker group is one `chit manifest` accepts,
/// and it serves http.request with an `http` executor.
#[test]
fn the_http_workers_config_file_is_valid() {
    let text = std::fs::read_to_string(repo().join("deploy/k8s/base/workers-http.yaml")).unwrap();
    let docs = yaml_rust2::YamlLoader::load_from_str(&text).unwrap();
    let config = docs
        .iter()
        .find(|d| d["kind"].as_str() == Some("ConfigMap"))
        .and_then(|d| d["data"]["chit.toml"].as_str())
        .expect("a ConfigMap with chit.toml in base/workers-http.yaml");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("chit.toml");
    std::fs::write(&file, config).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_chit"))
        .args(["manifest", "--format", "json", "--config"])
        .arg(&file)
        .args(["--capability", "http.request"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "chit manifest refused the http workers' config: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let manifest: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let caps = manifest["capabilities"].to_string();
    assert!(caps.contains("http.request"), "{stdout}");
    assert!(
        stdout.contains("\"kind\":\"http\"") || stdout.contains("\"kind\": \"http\""),
        "{stdout}"
    );
}
