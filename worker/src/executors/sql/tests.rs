//! `sql.query` against a real SQLite file and the local PostgreSQL (a
//! database of its own per test, dropped afterwards).

use super::*;
use sqlx::{AssertSqlSafe, Connection};

fn ctx() -> TaskContext {
    TaskContext {
        task_id: "sql-test".into(),
        task_type: "sql.query".into(),
        attempt: 1,
        worker_id: "w".into(),
        timeout: None,
        traceparent: None,
        polls: 0,
        previous_output: None,
    }
}

async fn run(exec: &SqlExecutor, payload: Value) -> Result<Value, ExecError> {
    exec.validate(&payload)?;
    exec.execute(&ctx(), payload, Cancellation::never())
        .await
        .map(|o| o.body)
}

fn executor(url: &str, change: impl FnOnce(&mut SqlOptions)) -> SqlExecutor {
    let mut options = SqlOptions::new(url);
    change(&mut options);
    SqlExecutor::new("db", options).unwrap()
}

/// The statements every database of these tests starts with.
const SETUP: &[&str] = &[
    "CREATE TABLE users (name TEXT PRIMARY KEY, age INTEGER NOT NULL)",
    "INSERT INTO users (name, age) VALUES ('alice', 30), ('bob', 40)",
];

/// A SQLite file with the users table, removed with its directory.
async fn sqlite_db() -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("test.db").display());
    let mut conn = sqlx::SqliteConnection::connect_with(
        &SqliteConnectOptions::from_str(&url)
            .unwrap()
            .create_if_missing(true),
    )
    .await
    .unwrap();
    for s in SETUP {
        sqlx::query(*s).execute(&mut conn).await.unwrap();
    }
    conn.close().await.unwrap();
    (dir, url)
}

/// A PostgreSQL database of its own, with the users table, dropped (even
/// after a panic) on drop.
struct PgDb {
    admin_url: String,
    name: String,
    url: String,
}

impl PgDb {
    async fn create() -> PgDb {
        let admin_url = std::env::var("CHIT_TEST_PG")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
        let name = format!("chit_sql_{:x}", rand::random::<u64>());
        let mut admin = sqlx::PgConnection::connect(&admin_url)
            .await
            .expect("PostgreSQL must be running (set CHIT_TEST_PG to its URL)");
        sqlx::query(AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut admin)
            .await
            .unwrap();
        admin.close().await.unwrap();
        let base = admin_url.rsplit_once('/').map(|(b, _)| b).unwrap();
        let url = format!("{base}/{name}");
        let mut conn = sqlx::PgConnection::connect(&url).await.unwrap();
        for s in SETUP {
            sqlx::query(*s).execute(&mut conn).await.unwrap();
        }
        conn.close().await.unwrap();
        PgDb {
            admin_url,
            name,
            url,
        }
    }

    async fn count_users(&self) -> i64 {
        let mut conn = sqlx::PgConnection::connect(&self.url).await.unwrap();
        sqlx::query_scalar("SELECT count(*) FROM users")
            .fetch_one(&mut conn)
            .await
            .unwrap()
    }
}

impl Drop for PgDb {
    fn drop(&mut self) {
        let admin_url = self.admin_url.clone();
        let name = self.name.clone();
        // Drop runs inside the test's runtime; use a thread with its own.
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

fn names(out: &Value) -> Vec<String> {
    out["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap().to_owned())
        .collect()
}

const INJECTION: &str = "alice' OR '1'='1";
const DROP: &str = "x'); DROP TABLE users; --";

#[tokio::test]
async fn sqlite_binds_parameters_so_an_injection_stays_a_literal() {
    let (_dir, url) = sqlite_db().await;
    let db = executor(&url, |_| {});
    let out = run(
        &db,
        json!({"query": "SELECT name, age FROM users WHERE name = ?", "params": ["alice"]}),
    )
    .await
    .unwrap();
    assert_eq!(out["columns"], json!(["name", "age"]));
    assert_eq!(out["rows"], json!([{"name": "alice", "age": 30}]));
    let out = run(
        &db,
        json!({"query": "SELECT name FROM users WHERE name = ?", "params": [INJECTION]}),
    )
    .await
    .unwrap();
    assert_eq!(out["row_count"], 0);
    let out = run(&db, json!({"query": "SELECT ?1 AS v, ?2 AS n, ?3 AS z, ?4 AS j", "params": [DROP, 1.5, null, {"a": 1}]}))
        .await
        .unwrap();
    assert_eq!(
        out["rows"],
        json!([{"v": DROP, "n": 1.5, "z": null, "j": "{\"a\":1}"}])
    );
    let out = run(&db, json!({"query": "SELECT count(*) AS n FROM users"}))
        .await
        .unwrap();
    assert_eq!(out["rows"][0]["n"], 2);
    let out = run(&db, json!({"query": "SELECT x'00ff' AS b"}))
        .await
        .unwrap();
    assert_eq!(out["rows"][0]["b"], "AP8=");
}

#[tokio::test]
async fn sqlite_rows_are_capped() {
    let (_dir, url) = sqlite_db().await;
    let db = executor(&url, |o| o.max_rows = 10);
    let fifty = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 50) SELECT x FROM c";
    let out = run(&db, json!({"query": fifty})).await.unwrap();
    assert_eq!(out["row_count"], 10);
    assert_eq!(out["truncated"], true);
    assert_eq!(out["rows"][9]["x"], 10);
    let out = run(&db, json!({"query": fifty, "max_rows": 3}))
        .await
        .unwrap();
    assert_eq!(out["row_count"], 3);
    let out = run(
        &db,
        json!({"query": "SELECT name FROM users ORDER BY name"}),
    )
    .await
    .unwrap();
    assert_eq!(
        (names(&out), out["truncated"].clone()),
        (vec!["alice".into(), "bob".into()], json!(false))
    );
}

#[tokio::test]
async fn sqlite_refuses_a_write_in_read_only_mode_with_its_own_error() {
    let (_dir, url) = sqlite_db().await;
    let read_only = executor(&url, |_| {});
    let err = run(
        &read_only,
        json!({"query": "INSERT INTO users (name, age) VALUES (?, ?)", "params": ["eve", 20]}),
    )
    .await
    .unwrap_err();
    assert_eq!(err.kind, ExecErrorKind::Refused, "{err}");
    assert_eq!(err.details["rule"], "read_only");
    assert_eq!(err.details["database_error"]["code"], "8");
    assert!(
        err.details["database_error"]["message"]
            .as_str()
            .unwrap()
            .contains("readonly"),
        "{err:?}"
    );
    let writable = executor(&url, |o| o.read_only = false);
    let out = run(
        &writable,
        json!({"query": "INSERT INTO users (name, age) VALUES (?, ?)", "params": ["eve", 20]}),
    )
    .await
    .unwrap();
    assert_eq!(out["rows_affected"], 1);
    let out = run(
        &read_only,
        json!({"query": "SELECT count(*) AS n FROM users"}),
    )
    .await
    .unwrap();
    assert_eq!(out["rows"][0]["n"], 3);
}

#[tokio::test]
async fn sqlite_statements_stop_at_their_timeout() {
    let (_dir, url) = sqlite_db().await;
    let db = executor(&url, |_| {});
    let forever =
        "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) FROM c";
    let started = Instant::now();
    let err = run(&db, json!({"query": forever, "timeout_secs": 0.2}))
        .await
        .unwrap_err();
    assert_eq!(err.kind, ExecErrorKind::Timeout, "{err}");
    assert!(err.message.contains("0.2 s"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(10));
    // The connection is usable again, without the old deadline.
    let out = run(&db, json!({"query": "SELECT 1 AS one"})).await.unwrap();
    assert_eq!(out["rows"][0]["one"], 1);
    let err = db
        .validate(&json!({"query": "SELECT 1", "timeout_secs": 301}))
        .unwrap_err();
    assert_eq!(err.kind, ExecErrorKind::InvalidPayload);
}

#[tokio::test]
async fn postgres_binds_parameters_as_the_types_the_server_expects() {
    let pg = PgDb::create().await;
    let db = executor(&pg.url, |_| {});
    let out = run(
        &db,
        json!({"query": "SELECT name, age FROM users WHERE age > $1 ORDER BY name", "params": [35]}),
    )
    .await
    .unwrap();
    assert_eq!(out["rows"], json!([{"name": "bob", "age": 40}]));
    let out = run(
        &db,
        json!({"query": "SELECT name FROM users WHERE name = $1", "params": [INJECTION]}),
    )
    .await
    .unwrap();
    assert_eq!(out["row_count"], 0);
    let out = run(
        &db,
        json!({"query": "SELECT $1::text AS v", "params": [DROP]}),
    )
    .await
    .unwrap();
    assert_eq!(out["rows"][0]["v"], DROP);
    assert_eq!(pg.count_users().await, 2);
    let out = run(
        &db,
        json!({
            "query": "SELECT name FROM users WHERE name = ANY($1) ORDER BY name",
            "params": [["bob", "alice", "nobody"]],
        }),
    )
    .await
    .unwrap();
    assert_eq!(names(&out), ["alice", "bob"]);
    let id = "7c9e6679-7425-40de-944b-e07fc1f90ae7";
    let out = run(
        &db,
        json!({
            "query": "SELECT $1::uuid AS id, $2::jsonb AS doc, $3::numeric * 2 AS price, \
                      $4::timestamptz AS at, $5::bool AS yes, $6::int8 AS big, \
                      $7::float8 AS f, $8::date AS day, $9::int AS nothing",
            "params": [id, {"k": [1, 2]}, "12.345", "2024-05-01T10:00:00Z", true,
                       9007199254740993i64, 0.25, "2024-05-01", null],
        }),
    )
    .await
    .unwrap();
    assert_eq!(
        out["rows"][0],
        json!({
            "id": id,
            "doc": {"k": [1, 2]},
            "price": "24.690",
            "at": "2024-05-01T10:00:00+00:00",
            "yes": true,
            "big": 9007199254740993i64,
            "f": 0.25,
            "day": "2024-05-01",
            "nothing": null,
        })
    );
    // A value that is not the type the server expects names the parameter.
    let err = run(
        &db,
        json!({"query": "SELECT name FROM users WHERE age > $1", "params": ["old"]}),
    )
    .await
    .unwrap_err();
    assert_eq!(err.kind, ExecErrorKind::Permanent);
    assert!(
        err.message.contains("$1") && err.message.contains("INT4"),
        "{err}"
    );
    let err = run(
        &db,
        json!({"query": "SELECT $1::int AS a, $2::int AS b", "params": [1]}),
    )
    .await
    .unwrap_err();
    assert!(err.message.contains("takes 2 parameters"), "{err}");
    let err = run(&db, json!({"query": "SELECT '10.0.0.1'::inet AS addr"}))
        .await
        .unwrap_err();
    assert!(
        err.message.contains("addr") && err.message.contains("::text"),
        "{err}"
    );
}

#[tokio::test]
async fn postgres_rows_are_capped() {
    let pg = PgDb::create().await;
    let db = executor(&pg.url, |o| o.max_rows = 10);
    let out = run(
        &db,
        json!({"query": "SELECT g AS n FROM generate_series(1, 50) AS g"}),
    )
    .await
    .unwrap();
    assert_eq!(out["row_count"], 10);
    assert_eq!(out["truncated"], true);
    assert_eq!(out["rows"][9]["n"], 10);
    let out = run(
        &db,
        json!({"query": "SELECT g AS n FROM generate_series(1, 50) AS g", "max_rows": 2}),
    )
    .await
    .unwrap();
    assert_eq!(out["row_count"], 2);
    // Empty results still name their columns.
    let out = run(
        &db,
        json!({"query": "SELECT name, age FROM users WHERE false"}),
    )
    .await
    .unwrap();
    assert_eq!(out["columns"], json!(["name", "age"]));
    assert_eq!(out["truncated"], false);
}

#[tokio::test]
async fn postgres_refuses_a_write_in_read_only_mode_with_its_own_error() {
    let pg = PgDb::create().await;
    let read_only = executor(&pg.url, |_| {});
    for write in [
        "INSERT INTO users (name, age) VALUES ('eve', 20)",
        "DELETE FROM users",
        "DROP TABLE users",
    ] {
        let err = run(&read_only, json!({"query": write})).await.unwrap_err();
        assert_eq!(err.kind, ExecErrorKind::Refused, "{write}: {err}");
        assert_eq!(err.details["rule"], "read_only");
        assert_eq!(err.details["database_error"]["code"], "25006");
        assert!(
            err.details["database_error"]["message"]
                .as_str()
                .unwrap()
                .contains("read-only transaction"),
            "{err:?}"
        );
    }
    assert_eq!(pg.count_users().await, 2);
    let writable = executor(&pg.url, |o| o.read_only = false);
    let out = run(
        &writable,
        json!({"query": "UPDATE users SET age = age + $1", "params": [1]}),
    )
    .await
    .unwrap();
    assert_eq!(out["rows_affected"], 2);
    let out = run(
        &writable,
        json!({"query": "INSERT INTO users (name, age) VALUES ($1, $2) RETURNING name", "params": ["eve", 20]}),
    )
    .await
    .unwrap();
    assert_eq!(out["rows"], json!([{"name": "eve"}]));
    assert_eq!(pg.count_users().await, 3);
    // A failed statement changes nothing, and says why.
    let err = run(
        &writable,
        json!({"query": "INSERT INTO users (name, age) VALUES ($1, $2)", "params": ["eve", 21]}),
    )
    .await
    .unwrap_err();
    assert_eq!(err.kind, ExecErrorKind::Permanent);
    assert_eq!(err.details["database_error"]["code"], "23505");
}

#[tokio::test]
async fn postgres_statements_stop_at_their_timeout() {
    let pg = PgDb::create().await;
    let db = executor(&pg.url, |o| o.max_connections = 1);
    let started = Instant::now();
    let err = run(
        &db,
        json!({"query": "SELECT pg_sleep(30)", "timeout_secs": 0.2}),
    )
    .await
    .unwrap_err();
    assert_eq!(err.kind, ExecErrorKind::Timeout, "{err}");
    assert_eq!(err.details["database_error"]["code"], "57014");
    assert!(started.elapsed() < Duration::from_secs(10));
    // The one connection is free again, and has no timeout left over.
    let out = run(
        &db,
        json!({"query": "SELECT current_setting('statement_timeout') AS t"}),
    )
    .await
    .unwrap();
    assert_eq!(out["rows"][0]["t"], "30s");
    assert!(db.health_check().await.is_ok());
}

#[test]
fn options_are_read_and_checked() {
    let options: SqlOptions = serde_json::from_value(json!({"url": "sqlite://x.db"})).unwrap();
    assert_eq!(options, SqlOptions::new("sqlite://x.db"));
    assert!(options.read_only);
    assert!(
        serde_json::from_value::<SqlOptions>(json!({"url": "sqlite://x.db", "readonly": true}))
            .is_err()
    );
    let err = SqlExecutor::new("db", SqlOptions::new("mysql://x")).unwrap_err();
    assert!(err.to_string().contains("url"), "{err}");
    let err = SqlExecutor::new(
        "db",
        SqlOptions {
            statement_timeout_secs: 0.0,
            ..SqlOptions::new("sqlite://x.db")
        },
    )
    .unwrap_err();
    assert!(err.to_string().contains("statement_timeout_secs"), "{err}");
}
