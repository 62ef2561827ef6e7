//! The file tools on real directories: each tool's work, the caps, and every
//! way out of the root, a symlink swapped in while tools run included.

use super::*;
use sha2::Digest;
use std::os::unix::fs::symlink;
use std::time::{Duration, Instant};

fn ctx() -> TaskContext {
    TaskContext {
        task_id: "file-test".into(),
        task_type: "file".into(),
        attempt: 1,
        worker_id: "w".into(),
        timeout: None,
        traceparent: None,
        polls: 0,
        previous_output: None,
    }
}

/// A root with some files, beside a directory outside it holding a secret.
struct Tree {
    _dir: tempfile::TempDir,
    root: PathBuf,
    outside: PathBuf,
}

const SECRET: &str = "the secret outside the root";

impl Tree {
    fn new() -> Tree {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        let outside = dir.path().join("outside");
        std::fs::create_dir_all(root.join("src/nested")).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        std::fs::write(outside.join("secret.txt"), SECRET).unwrap();
        std::fs::write(root.join("README.md"), "# demo\nhello world\n").unwrap();
        std::fs::write(
            root.join("src/main.rs"),
            "fn main() {\n    println!(\"hello\");\n}\n",
        )
        .unwrap();
        std::fs::write(root.join("src/nested/lib.rs"), "pub fn hello() {}\n").unwrap();
        std::fs::write(
            root.join("src/data.bin"),
            [0u8, 0xff, 0xfe, b'h', b'e', b'l', b'l', b'o'],
        )
        .unwrap();
        Tree {
            _dir: dir,
            root,
            outside,
        }
    }

    fn exec(&self, tool: FileTool, writable: bool) -> FileExecutor {
        self.exec_with(tool, |o| o.writable = writable)
    }

    fn exec_with(&self, tool: FileTool, change: impl FnOnce(&mut FileOptions)) -> FileExecutor {
        let mut options = FileOptions::new(&self.root);
        change(&mut options);
        FileExecutor::new(tool.name(), tool, options).unwrap()
    }
}

async fn run(exec: &FileExecutor, payload: Value) -> Result<Value, ExecError> {
    exec.validate(&payload)?;
    exec.execute(&ctx(), payload, Cancellation::never())
        .await
        .map(|o| o.body)
}

async fn refused(exec: &FileExecutor, payload: Value, rule: &str) -> ExecError {
    let err = run(exec, payload.clone()).await.unwrap_err();
    assert_eq!(err.kind, ExecErrorKind::Refused, "{payload}: {err}");
    assert_eq!(err.details["rule"], rule, "{payload}: {err}");
    assert_eq!(err.details["executor"], exec.name());
    assert!(!err.is_retryable());
    err
}

#[tokio::test]
async fn read_returns_text_binary_as_base64_and_honours_offset_and_cap() {
    let t = Tree::new();
    let read = t.exec(FileTool::Read, false);
    let out = run(&read, json!({"path": "README.md"})).await.unwrap();
    assert_eq!(out["content"], "# demo\nhello world\n");
    assert_eq!(out["encoding"], "utf-8");
    assert_eq!(out["truncated"], false);
    assert_eq!(out["size"], 19);
    let out = run(
        &read,
        json!({"path": "README.md", "offset": 7, "max_bytes": 5}),
    )
    .await
    .unwrap();
    assert_eq!(out["content"], "hello");
    assert_eq!(out["truncated"], true);
    let out = run(&read, json!({"path": "src/data.bin"})).await.unwrap();
    assert_eq!(out["encoding"], "base64");
    assert_eq!(out["content"], "AP/+aGVsbG8=");
    // An absolute path inside the root is the same file.
    let abs = t.root.join("README.md");
    let out = run(&read, json!({"path": abs.to_str().unwrap()}))
        .await
        .unwrap();
    assert_eq!(out["path"], "README.md");
    // The executor's cap wins over a payload asking for more.
    let capped = t.exec_with(FileTool::Read, |o| o.max_read_bytes = 4);
    let out = run(&capped, json!({"path": "README.md", "max_bytes": 1000}))
        .await
        .unwrap();
    assert_eq!(out["content"], "# de");
    assert_eq!(out["truncated"], true);
    let err = run(&read, json!({"path": "nope.txt"})).await.unwrap_err();
    assert_eq!(err.kind, ExecErrorKind::Permanent);
    assert!(err.message.contains("does not exist"), "{err}");
    let err = run(&read, json!({"path": "src"})).await.unwrap_err();
    assert!(err.message.contains("not a file"), "{err}");
}

#[tokio::test]
async fn write_creates_replaces_and_appends_when_writable() {
    let t = Tree::new();
    let write = t.exec(FileTool::Write, true);
    let out = run(
        &write,
        json!({"path": "out/new.txt", "content": "one\n", "create_dirs": true}),
    )
    .await
    .unwrap();
    assert_eq!(out["bytes_written"], 4);
    assert_eq!(out["created"], true);
    assert_eq!(out["sha256"], hex::encode(sha2::Sha256::digest(b"one\n")));
    let file = t.root.join("out/new.txt");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "one\n");
    run(
        &write,
        json!({"path": "out/new.txt", "content": "two\n", "mode": "append"}),
    )
    .await
    .unwrap();
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "one\ntwo\n");
    let out = run(&write, json!({"path": "out/new.txt", "content": "fresh"}))
        .await
        .unwrap();
    assert_eq!(out["created"], false);
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "fresh");
    let err = run(
        &write,
        json!({"path": "out/new.txt", "content": "x", "mode": "create"}),
    )
    .await
    .unwrap_err();
    assert!(err.message.contains("already exists"), "{err}");
    run(
        &write,
        json!({"path": "img.bin", "content": "AAECAw==", "encoding": "base64"}),
    )
    .await
    .unwrap();
    assert_eq!(std::fs::read(t.root.join("img.bin")).unwrap(), [0, 1, 2, 3]);
    let err = run(&write, json!({"path": "missing/dir/x.txt", "content": "x"}))
        .await
        .unwrap_err();
    assert!(err.message.contains("create_dirs"), "{err}");
    // Nothing but the files written is left in the directory.
    let mut names: Vec<_> = std::fs::read_dir(t.root.join("out"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["new.txt"]);
}

#[tokio::test]
async fn a_read_only_root_refuses_writes_and_edits() {
    let t = Tree::new();
    let before = std::fs::read_to_string(t.root.join("README.md")).unwrap();
    let err = refused(
        &t.exec(FileTool::Write, false),
        json!({"path": "README.md", "content": "overwritten"}),
        "writable",
    )
    .await;
    assert!(err.message.contains("read-only"), "{err}");
    refused(
        &t.exec(FileTool::Edit, false),
        json!({"path": "README.md", "old": "hello", "new": "bye"}),
        "writable",
    )
    .await;
    assert_eq!(
        std::fs::read_to_string(t.root.join("README.md")).unwrap(),
        before
    );
    assert!(!t.root.join("out").exists());
}

#[tokio::test]
async fn edit_replaces_exact_text_and_refuses_an_ambiguous_match() {
    let t = Tree::new();
    let edit = t.exec(FileTool::Edit, true);
    let path = t.root.join("src/main.rs");
    let out = run(
        &edit,
        json!({"path": "src/main.rs", "old": "println!(\"hello\")", "new": "println!(\"bye\")"}),
    )
    .await
    .unwrap();
    assert_eq!(out["replacements"], 1);
    assert_eq!(
        std::fs::read_to_string(&path).unwrap(),
        "fn main() {\n    println!(\"bye\");\n}\n"
    );
    std::fs::write(&path, "a = 1\nb = 1\n").unwrap();
    let err = run(
        &edit,
        json!({"path": "src/main.rs", "old": "= 1", "new": "= 2"}),
    )
    .await
    .unwrap_err();
    assert_eq!(err.kind, ExecErrorKind::Permanent);
    assert_eq!(err.details["count"], 2);
    assert!(err.message.contains("2 times"), "{err}");
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "a = 1\nb = 1\n");
    let out = run(
        &edit,
        json!({"path": "src/main.rs", "old": "= 1", "new": "= 2", "replace_all": true}),
    )
    .await
    .unwrap();
    assert_eq!(out["replacements"], 2);
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "a = 2\nb = 2\n");
    let err = run(
        &edit,
        json!({"path": "src/main.rs", "old": "zzz", "new": "y"}),
    )
    .await
    .unwrap_err();
    assert!(err.message.contains("not in"), "{err}");
    // `old` must not be empty: the payload is wrong.
    let err = edit
        .validate(&json!({"path": "src/main.rs", "old": "", "new": "y"}))
        .unwrap_err();
    assert_eq!(err.kind, ExecErrorKind::InvalidPayload);
}

#[tokio::test]
async fn grep_returns_matching_lines_with_line_numbers() {
    let t = Tree::new();
    let grep = t.exec(FileTool::Grep, false);
    let out = run(&grep, json!({"pattern": "hel+o"})).await.unwrap();
    let found: Vec<(String, u64)> = out["matches"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["path"].as_str().unwrap().to_owned(),
                m["line"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        found,
        [
            ("README.md".to_owned(), 2),
            ("src/main.rs".to_owned(), 2),
            ("src/nested/lib.rs".to_owned(), 1),
        ]
    );
    assert_eq!(out["matches"][1]["text"], "    println!(\"hello\");");
    assert_eq!(out["skipped_binary"], 1);
    assert_eq!(out["truncated"], false);
    let out = run(
        &grep,
        json!({"pattern": "HELLO", "case_insensitive": true, "glob": "*.rs"}),
    )
    .await
    .unwrap();
    assert_eq!(out["matches"].as_array().unwrap().len(), 2);
    let out = run(&grep, json!({"pattern": "hello", "path": "src/nested"}))
        .await
        .unwrap();
    assert_eq!(out["matches"][0]["path"], "src/nested/lib.rs");
    let out = run(&grep, json!({"pattern": "hello", "path": "README.md"}))
        .await
        .unwrap();
    assert_eq!(out["matches"].as_array().unwrap().len(), 1);
    let err = grep.validate(&json!({"pattern": "(unclosed"})).unwrap_err();
    assert_eq!(err.kind, ExecErrorKind::InvalidPayload);
}

#[tokio::test]
async fn find_matches_names_and_paths_and_list_shows_a_directory() {
    let t = Tree::new();
    let find = t.exec(FileTool::Find, false);
    let out = run(&find, json!({"pattern": "*.rs"})).await.unwrap();
    let paths: Vec<&str> = out["paths"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["path"].as_str().unwrap())
        .collect();
    assert_eq!(paths, ["src/main.rs", "src/nested/lib.rs"]);
    let out = run(&find, json!({"pattern": "src/*", "kind": "dir"}))
        .await
        .unwrap();
    assert_eq!(
        out["paths"],
        json!([{"path": "src/nested", "kind": "dir", "size": out["paths"][0]["size"]}])
    );

    let list = t.exec(FileTool::List, false);
    let out = run(&list, json!({"path": "src"})).await.unwrap();
    let entries: Vec<(&str, &str)> = out["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["name"].as_str().unwrap(), e["kind"].as_str().unwrap()))
        .collect();
    assert_eq!(
        entries,
        [("data.bin", "file"), ("main.rs", "file"), ("nested", "dir")]
    );
    assert_eq!(out["entries"][0]["size"], 8);
    assert!(out["entries"][0]["modified"].is_string());
    let out = run(&list, json!({})).await.unwrap();
    assert_eq!(out["path"], ".");
    let err = run(&list, json!({"path": "README.md"})).await.unwrap_err();
    assert!(err.message.contains("not a directory"), "{err}");
}

#[tokio::test]
async fn results_and_walks_are_capped() {
    let t = Tree::new();
    for i in 0..30 {
        std::fs::write(t.root.join(format!("many-{i:02}.txt")), "match me\n").unwrap();
    }
    let grep = t.exec_with(FileTool::Grep, |o| o.max_results = 5);
    let out = run(&grep, json!({"pattern": "match"})).await.unwrap();
    assert_eq!(out["matches"].as_array().unwrap().len(), 5);
    assert_eq!(
        (out["truncated"].clone(), out["limit"].clone()),
        (json!(true), json!("max_results"))
    );
    let out = run(&grep, json!({"pattern": "match", "max_results": 2}))
        .await
        .unwrap();
    assert_eq!(out["matches"].as_array().unwrap().len(), 2);

    let find = t.exec_with(FileTool::Find, |o| o.max_files_walked = 10);
    let out = run(&find, json!({"pattern": "*"})).await.unwrap();
    assert_eq!(out["entries_walked"], 10);
    assert_eq!(out["limit"], "max_files_walked");

    let list = t.exec_with(FileTool::List, |o| o.max_results = 3);
    let out = run(&list, json!({})).await.unwrap();
    assert_eq!(out["entries"].as_array().unwrap().len(), 3);
    assert_eq!(out["truncated"], true);

    // README.md (19 bytes) and lib.rs (18) are searched; main.rs (36) is not.
    let small = t.exec_with(FileTool::Grep, |o| o.max_read_bytes = 20);
    let out = run(&small, json!({"pattern": "hello"})).await.unwrap();
    assert_eq!(out["matches"].as_array().unwrap().len(), 2, "{out}");
    assert_eq!(out["skipped_too_large"], 1, "{out}");

    let write = t.exec_with(FileTool::Write, |o| {
        o.writable = true;
        o.max_write_bytes = 8;
    });
    let err = refused(
        &write,
        json!({"path": "big.txt", "content": "123456789"}),
        "max_write_bytes",
    )
    .await;
    assert_eq!(err.details["max"], 8);
    assert!(!t.root.join("big.txt").exists());
    let edit = t.exec_with(FileTool::Edit, |o| {
        o.writable = true;
        o.max_read_bytes = 8;
    });
    refused(
        &edit,
        json!({"path": "README.md", "old": "demo", "new": "x"}),
        "max_read_bytes",
    )
    .await;
}

#[tokio::test]
async fn dot_dot_and_absolute_paths_outside_the_root_are_refused() {
    let t = Tree::new();
    let secret = t.outside.join("secret.txt");
    for tool in FileTool::ALL {
        let exec = t.exec(tool, true);
        for (path, how) in [
            ("../outside/secret.txt", "parent"),
            ("src/../../outside/secret.txt", "parent"),
            (secret.to_str().unwrap(), "absolute"),
            ("/etc/passwd", "absolute"),
        ] {
            let payload = match tool {
                FileTool::Read => json!({"path": path}),
                FileTool::Write => json!({"path": path, "content": "pwned"}),
                FileTool::Edit => json!({"path": path, "old": "secret", "new": "pwned"}),
                FileTool::Grep => json!({"pattern": "secret", "path": path}),
                FileTool::Find => json!({"pattern": "*", "path": path}),
                FileTool::List => json!({"path": path}),
            };
            let err = refused(&exec, payload, "root").await;
            assert_eq!(err.details["escape"], how, "{}: {path}", tool.name());
        }
    }
    assert_eq!(std::fs::read_to_string(&secret).unwrap(), SECRET);
}

#[tokio::test]
async fn symlinks_out_of_the_root_are_refused_and_not_followed_by_walks() {
    let t = Tree::new();
    symlink(t.outside.join("secret.txt"), t.root.join("abs-link.txt")).unwrap();
    symlink("../outside/secret.txt", t.root.join("rel-link.txt")).unwrap();
    symlink("../outside", t.root.join("dir-link")).unwrap();
    symlink("README.md", t.root.join("inside-link.md")).unwrap();
    let read = t.exec(FileTool::Read, false);
    for path in ["abs-link.txt", "rel-link.txt", "dir-link/secret.txt"] {
        let err = refused(&read, json!({"path": path}), "root").await;
        assert_eq!(err.details["escape"], "symlink", "{path}");
    }
    // A symlink that stays inside is followed.
    let out = run(&read, json!({"path": "inside-link.md"})).await.unwrap();
    assert_eq!(out["content"], "# demo\nhello world\n");
    refused(
        &t.exec(FileTool::List, false),
        json!({"path": "dir-link"}),
        "root",
    )
    .await;
    refused(
        &t.exec(FileTool::Edit, true),
        json!({"path": "dir-link/secret.txt", "old": "secret", "new": "x"}),
        "root",
    )
    .await;
    refused(
        &t.exec(FileTool::Write, true),
        json!({"path": "dir-link/new.txt", "content": "x"}),
        "root",
    )
    .await;
    assert!(!t.outside.join("new.txt").exists());
    // Walks list links as links and never enter them.
    let out = run(&t.exec(FileTool::Grep, false), json!({"pattern": "secret"}))
        .await
        .unwrap();
    assert_eq!(out["matches"], json!([]));
    let out = run(
        &t.exec(FileTool::Find, false),
        json!({"pattern": "*", "kind": "symlink"}),
    )
    .await
    .unwrap();
    assert_eq!(out["paths"].as_array().unwrap().len(), 4);
    // Overwriting a link replaces the link; its target outside is untouched.
    run(
        &t.exec(FileTool::Write, true),
        json!({"path": "abs-link.txt", "content": "replaced"}),
    )
    .await
    .unwrap();
    assert_eq!(
        std::fs::read_to_string(t.outside.join("secret.txt")).unwrap(),
        SECRET
    );
    assert!(!t.root.join("abs-link.txt").is_symlink());
}

/// Swaps `root/swap` between a real directory and a symlink to the outside
/// directory, as fast as it can, until told to stop.
fn start_swapping(t: &Tree, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<usize> {
    let swap = t.root.join("swap");
    let stash = t.root.join(".stash");
    std::fs::create_dir_all(stash.join("real")).unwrap();
    std::fs::write(stash.join("real/secret.txt"), "harmless inside copy").unwrap();
    symlink(&t.outside, stash.join("link")).unwrap();
    std::fs::rename(stash.join("real"), &swap).unwrap();
    std::thread::spawn(move || {
        let mut swaps = 0;
        while !stop.load(Ordering::Relaxed) {
            // real -> link
            std::fs::rename(&swap, stash.join("real")).unwrap();
            std::fs::rename(stash.join("link"), &swap).unwrap();
            // link -> real
            std::fs::rename(&swap, stash.join("link")).unwrap();
            std::fs::rename(stash.join("real"), &swap).unwrap();
            swaps += 1;
        }
        swaps
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_symlink_swapped_in_during_the_calls_never_leads_out() {
    let t = Tree::new();
    let stop = Arc::new(AtomicBool::new(false));
    let swapper = start_swapping(&t, stop.clone());
    let read = t.exec(FileTool::Read, false);
    let grep = t.exec(FileTool::Grep, false);
    let (mut inside, mut refusals, mut calls) = (0, 0, 0);
    let deadline = Instant::now() + Duration::from_secs(20);
    // Until both outcomes were seen (the race was really run), or the deadline.
    while (inside == 0 || refusals == 0 || calls < 200) && Instant::now() < deadline {
        calls += 1;
        match run(&read, json!({"path": "swap/secret.txt"})).await {
            Ok(out) => {
                assert_ne!(out["content"], SECRET, "read through the swapped-in link");
                inside += 1;
            }
            Err(e) if e.kind == ExecErrorKind::Refused => {
                assert_eq!(e.details["rule"], "root");
                refusals += 1;
            }
            // Between the two renames the path is briefly missing.
            Err(e) => assert!(e.message.contains("does not exist"), "{e}"),
        }
        let out = run(&grep, json!({"pattern": "secret outside"})).await;
        if let Ok(out) = out {
            assert_eq!(out["matches"], json!([]), "grep went through the link");
        }
    }
    stop.store(true, Ordering::Relaxed);
    let swaps = swapper.join().unwrap();
    assert!(swaps > 0);
    assert!(
        inside > 0 && refusals > 0,
        "the race was not exercised: {inside} reads inside, {refusals} refusals in {calls} calls"
    );
}

#[tokio::test]
async fn options_are_read_and_checked() {
    let t = Tree::new();
    let options: FileOptions = serde_json::from_value(json!({"root": t.root})).unwrap();
    assert_eq!(options, FileOptions::new(&t.root));
    assert!(!options.writable);
    assert!(
        serde_json::from_value::<FileOptions>(json!({"root": t.root, "writeable": true})).is_err()
    );
    assert!(serde_json::from_value::<FileOptions>(json!({})).is_err());
    let err = FileExecutor::new(
        "files",
        FileTool::Read,
        FileOptions::new(t.root.join("missing")),
    )
    .unwrap_err();
    assert!(err.to_string().contains("root"), "{err}");
    let err = FileExecutor::new(
        "files",
        FileTool::Read,
        FileOptions::new(t.root.join("README.md")),
    )
    .unwrap_err();
    assert!(err.to_string().contains("root"), "{err}");
    let exec = FileExecutor::new("files", FileTool::Grep, FileOptions::new(&t.root)).unwrap();
    assert_eq!((exec.name(), exec.kind()), ("files", "file.grep"));
    assert!(exec.health_check().await.is_ok());
}
