//! The executors that reach outside the worker, each through a real
//! `chit worker` started from a config file, on the real broker: an HTTP
//! server on 127.0.0.1 started here, a directory tree, and the local
//! PostgreSQL. What a user checks is in the receipts.

mod executor_support;
mod support;

use axum::Router;
use axum::http::header;
use axum::response::Redirect;
use axum::routing::get;
use broker_topology::ReceiptType;
use executor_support::{Rig, assert_refused, success};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use sqlx::{AssertSqlSafe, Connection};
use std::path::Path;
use support::chit;

/// A server on an ephemeral loopback port, stopped on drop.
struct Server {
    addr: std::net::SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn big_body() -> Vec<u8> {
    (0..200_000u32).map(|i| b'a' + (i % 26) as u8).collect()
}

async fn server() -> Server {
    let app = Router::new()
        .route(
            "/hello",
            get(|| async { axum::Json(json!({"greeting": "hello"})) }),
        )
        .route(
            "/big",
            get(|| async { ([(header::CONTENT_TYPE, "text/plain")], big_body()) }),
        )
        .route(
            "/to-metadata",
            get(|| async { Redirect::to("http://169.254.169.254/latest/meta-data/") }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    Server { addr, task }
}

fn toml_path(p: &Path) -> String {
    serde_json::to_string(p.to_str().unwrap()).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn http_request_through_a_worker_succeeds_stores_large_bodies_and_refuses_ssrf() {
    let rig = Rig::new(&["http.request"]).await;
    let server = server().await;
    let bodies = rig.dir.path().join("bodies");
    let config = rig.config(&format!(
        "[executor.fetch]\nkind = \"http\"\nprivate_hosts = [\"127.0.0.1\"]\n\
         inline_body_bytes = 10000\nartifact_dir = {}\n",
        toml_path(&bodies)
    ));
    let _w = rig.worker(&config, &["--capability", "http.request=fetch"]);
    let url = |path: &str| format!("http://{}{path}", server.addr);

    let rs = rig
        .run("http.request", &json!({"url": url("/hello")}), 1)
        .await;
    let body = success(&rs);
    assert_eq!(body["status"], 200);
    assert_eq!(body["body"], json!({"greeting": "hello"}));

    let rs = rig
        .run("http.request", &json!({"url": url("/big")}), 1)
        .await;
    let body = success(&rs);
    let receipt = rs
        .iter()
        .find(|r| r.receipt_type == ReceiptType::Success)
        .unwrap();
    let artifact = &receipt.artifacts[0];
    let written = std::fs::read(artifact.path.as_deref().unwrap()).unwrap();
    assert_eq!(written, big_body());
    let sha = hex::encode(Sha256::digest(&written));
    assert_eq!(artifact.sha256.as_deref(), Some(sha.as_str()));
    assert_eq!(body["body_sha256"], sha);
    assert_eq!(artifact.size, Some(200_000));

    // Refused before any connection: never retried, the rule named.
    for (target, refused) in [
        (
            "http://169.254.169.254/latest/meta-data/".to_owned(),
            "address",
        ),
        (
            format!("http://localhost:{}/hello", server.addr.port()),
            "local_name",
        ),
        (url("/to-metadata"), "address"),
    ] {
        let rs = rig.run("http.request", &json!({"url": target}), 3).await;
        let body = assert_refused(&rs, "ssrf_guard");
        assert_eq!(body["refused"], refused, "{target}: {body:#}");
    }

    // `chit publish` checks the payload against the capability's schema.
    let out = chit()
        .args(["publish", "http.request", "--amqp-url", &rig.vhost.url])
        .args(["--payload", r#"{"uri": "http://example.com/"}"#])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("invalid http.request payload") && stderr.contains("url"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn file_tools_through_a_worker_stay_in_their_root() {
    let caps = [
        "file.write",
        "file.edit",
        "file.read",
        "file.grep",
        "file.find",
        "file.list",
        "notes.write-ro",
    ];
    let rig = Rig::new(&caps).await;
    let root = rig.dir.path().join("root");
    let outside = rig.dir.path().join("outside.txt");
    std::fs::create_dir_all(&root).unwrap();
    std::fs::write(&outside, "outside the root").unwrap();
    std::os::unix::fs::symlink(&outside, root.join("leak.txt")).unwrap();
    let root_line = format!("root = {}\n", toml_path(&root));
    let mut config = String::new();
    for (name, kind, writable) in [
        ("writer", "file.write", true),
        ("editor", "file.edit", true),
        ("reader", "file.read", false),
        ("grepper", "file.grep", false),
        ("finder", "file.find", false),
        ("lister", "file.list", false),
        ("read_only_writer", "file.write", false),
    ] {
        config.push_str(&format!(
            "[executor.{name}]\nkind = \"{kind}\"\n{root_line}writable = {writable}\n\n"
        ));
    }
    let config = rig.config(&config);
    let _w = rig.worker(
        &config,
        &[
            "--capability",
            "file.write=writer",
            "--capability",
            "file.edit=editor",
            "--capability",
            "file.read=reader",
            "--capability",
            "file.grep=grepper",
            "--capability",
            "file.find=finder",
            "--capability",
            "file.list=lister",
            "--capability",
            "notes.write-ro=read_only_writer",
        ],
    );

    let rs = rig
        .run(
            "file.write",
            &json!({"path": "notes/todo.md", "content": "- buy milk\n- call bob\n", "create_dirs": true}),
            1,
        )
        .await;
    assert_eq!(success(&rs)["bytes_written"], 22);
    let rs = rig
        .run(
            "file.edit",
            &json!({"path": "notes/todo.md", "old": "milk", "new": "bread"}),
            1,
        )
        .await;
    assert_eq!(success(&rs)["replacements"], 1);
    let rs = rig
        .run("file.read", &json!({"path": "notes/todo.md"}), 1)
        .await;
    assert_eq!(success(&rs)["content"], "- buy bread\n- call bob\n");
    let rs = rig.run("file.grep", &json!({"pattern": "bob"}), 1).await;
    assert_eq!(
        success(&rs)["matches"],
        json!([{"path": "notes/todo.md", "line": 2, "text": "- call bob"}])
    );
    let rs = rig.run("file.find", &json!({"pattern": "*.md"}), 1).await;
    assert_eq!(success(&rs)["paths"][0]["path"], "notes/todo.md");
    let rs = rig.run("file.list", &json!({"path": "notes"}), 1).await;
    assert_eq!(success(&rs)["entries"][0]["name"], "todo.md");

    for payload in [
        json!({"path": "../outside.txt"}),
        json!({"path": outside.to_str().unwrap()}),
        json!({"path": "leak.txt"}),
    ] {
        let rs = rig.run("file.read", &payload, 3).await;
        assert_refused(&rs, "root");
    }
    let rs = rig
        .run(
            "notes.write-ro",
            &json!({"path": "x.txt", "content": "no"}),
            3,
        )
        .await;
    assert_refused(&rs, "writable");
    assert!(!root.join("x.txt").exists());
    assert_eq!(
        std::fs::read_to_string(&outside).unwrap(),
        "outside the root"
    );
}

/// A PostgreSQL database of this test's own, dropped at the end.
struct PgDb {
    admin_url: String,
    name: String,
    url: String,
}

impl PgDb {
    async fn create(setup: &[&str]) -> PgDb {
        let admin_url = std::env::var("CHIT_TEST_PG")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
        let name = format!("chit_e2e_{}", uuid::Uuid::new_v4().simple());
        let mut admin = sqlx::PgConnection::connect(&admin_url)
            .await
            .expect("PostgreSQL must be running (set CHIT_TEST_PG to its URL)");
        sqlx::query(AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut admin)
            .await
            .unwrap();
        admin.close().await.unwrap();
        let url = format!("{}/{name}", admin_url.rsplit_once('/').unwrap().0);
        let mut conn = sqlx::PgConnection::connect(&url).await.unwrap();
        for s in setup {
            sqlx::query(AssertSqlSafe(*s))
                .execute(&mut conn)
                .await
                .unwrap();
        }
        conn.close().await.unwrap();
        PgDb {
            admin_url,
            name,
            url,
        }
    }
}

impl Drop for PgDb {
    fn drop(&mut self) {
        let (admin_url, name) = (self.admin_url.clone(), self.name.clone());
        let _ = std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(async {
                    if let Ok(mut conn) = sqlx::PgConnection::connect(&admin_url).await {
                        let _ = sqlx::query(AssertSqlSafe(format!(
                            "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                        )))
                        .execute(&mut conn)
                        .await;
                    }
                });
        })
        .join();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn sql_query_through_a_worker_binds_parameters_and_refuses_writes_when_read_only() {
    let pg = PgDb::create(&[
        "CREATE TABLE orders (id INT PRIMARY KEY, customer TEXT NOT NULL, total NUMERIC(10, 2))",
        "INSERT INTO orders VALUES (1, 'ann', 12.50), (2, 'ben', 99.99), (3, 'ann', 5.00)",
    ])
    .await;
    let rig = Rig::new(&["sql.query", "orders.write"]).await;
    let url = serde_json::to_string(&pg.url).unwrap();
    let config = rig.config(&format!(
        "[executor.reports]\nkind = \"sql\"\nurl = {url}\nmax_rows = 2\n\n\
         [executor.orders]\nkind = \"sql\"\nurl = {url}\nread_only = false\n"
    ));
    let _w = rig.worker(
        &config,
        &[
            "--capability",
            "sql.query=reports",
            "--capability",
            "orders.write=orders",
        ],
    );

    let rs = rig
        .run(
            "sql.query",
            &json!({
                "query": "SELECT id, total FROM orders WHERE customer = $1 ORDER BY id",
                "params": ["ann"],
            }),
            1,
        )
        .await;
    let body = success(&rs);
    assert_eq!(
        body["rows"],
        json!([{"id": 1, "total": "12.50"}, {"id": 3, "total": "5.00"}])
    );
    // An injection attempt is a value, and matches no customer.
    let rs = rig
        .run(
            "sql.query",
            &json!({"query": "SELECT id FROM orders WHERE customer = $1", "params": ["x' OR '1'='1"]}),
            1,
        )
        .await;
    assert_eq!(success(&rs)["row_count"], 0);
    // The executor's row cap.
    let rs = rig
        .run("sql.query", &json!({"query": "SELECT id FROM orders"}), 1)
        .await;
    let body = success(&rs);
    assert_eq!(
        (body["row_count"].clone(), body["truncated"].clone()),
        (json!(2), json!(true))
    );

    let rs = rig
        .run("sql.query", &json!({"query": "DELETE FROM orders"}), 3)
        .await;
    let body = assert_refused(&rs, "read_only");
    assert_eq!(body["database_error"]["code"], "25006", "{body:#}");
    let rs = rig
        .run(
            "orders.write",
            &json!({"query": "DELETE FROM orders WHERE customer = $1", "params": ["ben"]}),
            1,
        )
        .await;
    assert_eq!(success(&rs)["rows_affected"], 1);
    let rs = rig
        .run(
            "sql.query",
            &json!({"query": "SELECT count(*) AS n FROM orders"}),
            1,
        )
        .await;
    assert_eq!(success(&rs)["rows"][0]["n"], Value::from(2));
}
