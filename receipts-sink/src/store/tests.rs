//! Store tests: every scenario runs on a SQLite temp file, and the PostgreSQL
//! ones on a database of their own (created and dropped per test).

use super::*;
use broker_topology::ReceiptType;
use serde_json::json;
use sqlx::Connection;

/// A whole life: queued, a failed first attempt, a retry that succeeds.
pub(crate) fn life(task_id: &str, t0: DateTime<Utc>) -> Vec<Receipt> {
    let ms = |n: i64| t0 + chrono::Duration::milliseconds(n);
    let mk = |id: &str, t: ReceiptType, parent: Option<&str>, attempt: u32, at: i64| {
        let mut r = Receipt::new(
            task_id,
            "command.execute",
            t,
            parent
                .map(|p| vec![format!("{task_id}-{p}")])
                .unwrap_or_default(),
            attempt,
        )
        .with_id(format!("{task_id}-{id}"));
        r.created_at = ms(at);
        r
    };
    vec![
        mk("q", ReceiptType::Queued, None, 1, 0),
        mk("a1", ReceiptType::Accepted, Some("q"), 1, 10).with_worker("w1"),
        mk("f1", ReceiptType::Failure, Some("a1"), 1, 20)
            .with_worker("w1")
            .with_body(json!({"error": "exit status 3", "exit_code": 3, "retryable": true})),
        mk("r1", ReceiptType::RetryScheduled, Some("f1"), 1, 30)
            .with_worker("w1")
            .with_body(json!({"error": "exit status 3", "delay_ms": 1000})),
        mk("a2", ReceiptType::Accepted, Some("r1"), 2, 1040).with_worker("w2"),
        mk("s2", ReceiptType::Success, Some("a2"), 2, 1050)
            .with_worker("w2")
            .with_artifacts(vec![broker_topology::Artifact {
                path: Some("/tmp/out.txt".into()),
                size: Some(12),
                ..Default::default()
            }])
            .with_body(json!({"exit_code": 0, "nanos": 1.5})),
    ]
}

fn t0() -> DateTime<Utc> {
    // Nanoseconds on purpose: they must survive the round trip.
    DateTime::from_timestamp(1_767_225_600, 123_456_789).unwrap()
}

pub(crate) async fn sqlite_store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("receipts.db").display());
    let store = Store::open(&url).await.unwrap();
    (dir, store)
}

/// A PostgreSQL database of its own, dropped (even after a panic) on drop.
pub(crate) struct PgDb {
    admin_url: String,
    name: String,
    pub(crate) url: String,
}

impl PgDb {
    pub(crate) async fn create() -> PgDb {
        let admin_url = std::env::var("CHIT_TEST_PG")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
        let name = format!("chit_test_{}", uuid::Uuid::new_v4().simple());
        let mut conn = sqlx::PgConnection::connect(&admin_url)
            .await
            .expect("PostgreSQL must be running (set CHIT_TEST_PG to its URL)");
        sqlx::query(AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut conn)
            .await
            .unwrap();
        let _ = conn.close().await;
        let base = admin_url
            .rsplit_once('/')
            .map(|(b, _)| b)
            .unwrap_or(&admin_url);
        let url = format!("{base}/{name}");
        PgDb {
            admin_url,
            name,
            url,
        }
    }
}

impl Drop for PgDb {
    fn drop(&mut self) {
        let admin_url = self.admin_url.clone();
        let name = self.name.clone();
        // Drop runs inside the test's runtime; use a thread with its own.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
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

/// Writes `chain` one receipt per batch in the order given by `order`.
async fn write_in_order(store: &Store, chain: &[Receipt], order: &[usize]) {
    for &i in order {
        store.write_batch(&chain[i..=i], &[]).await.unwrap();
    }
}

/// The scenario shared by both backends: three orders, a duplicate
/// redelivery; returns the final view.
async fn out_of_order_scenario(store: &Store) -> TaskView {
    let chain = life("t1", t0());
    write_in_order(store, &chain, &[5, 3, 0, 4, 1, 2]).await;
    let view = store.task("t1").await.unwrap().expect("task stored");
    assert_eq!(view.chain, chain, "whole chain, ordered by created_at");
    assert_eq!(view.task.state, TaskState::Succeeded);
    assert_eq!(view.task.attempts, 2);
    assert_eq!(view.task.worker_id.as_deref(), Some("w2"));
    assert_eq!(view.task.last_error.as_deref(), Some("exit status 3"));
    assert_eq!(view.task.first_seen, chain[0].created_at);
    assert_eq!(view.task.last_update, chain[5].created_at);

    // Same receipts for another task id, in other orders and all at once.
    for (k, order) in [[0, 1, 2, 3, 4, 5], [2, 4, 0, 5, 1, 3]].iter().enumerate() {
        let other = life(&format!("t{}", k + 2), t0());
        write_in_order(store, &other, order).await;
        let v = store.task(&format!("t{}", k + 2)).await.unwrap().unwrap();
        let mut expected = view.task.clone();
        expected.task_id = v.task.task_id.clone();
        assert_eq!(v.task, expected);
    }

    // A redelivered batch changes nothing.
    let before = store.counts().await.unwrap();
    let stats = store.write_batch(&chain, &[]).await.unwrap();
    assert_eq!((stats.inserted, stats.duplicates), (0, 6));
    assert_eq!(store.counts().await.unwrap(), before);
    assert_eq!(store.task("t1").await.unwrap().unwrap(), view);
    view
}

#[tokio::test]
async fn sqlite_out_of_order_receipts_give_one_state_and_the_whole_chain() {
    let (_dir, store) = sqlite_store().await;
    out_of_order_scenario(&store).await;
    assert!(store.task("nope").await.unwrap().is_none());
}

#[tokio::test]
async fn sqlite_and_postgres_agree() {
    let (_dir, sqlite) = sqlite_store().await;
    let db = PgDb::create().await;
    let pg = Store::open(&db.url).await.unwrap();
    assert_eq!(pg.kind(), StoreKind::Postgres);
    let a = out_of_order_scenario(&sqlite).await;
    let b = out_of_order_scenario(&pg).await;
    assert_eq!(a, b);
    let filter = TaskFilter::default();
    let pa = sqlite.list_tasks(&filter, 10, None).await.unwrap();
    let pb = pg.list_tasks(&filter, 10, None).await.unwrap();
    assert_eq!(pa, pb);
    pg.close().await;
}

/// Chains whose rows take every rule, NULLs included: a whole life; one that
/// never names a worker or an error; one whose only error is from an attempt
/// older than its state.
fn rule_chains(task_id: &str) -> Vec<Vec<Receipt>> {
    let mk = |task: &str, id: &str, t: ReceiptType, attempt: u32, ms: i64| {
        let mut r = Receipt::new(task, "command.execute", t, vec![], attempt)
            .with_id(format!("{task}-{id}"));
        r.created_at = t0() + chrono::Duration::milliseconds(ms);
        r
    };
    let quiet = format!("{task_id}-quiet");
    let late = format!("{task_id}-late");
    vec![
        life(&format!("{task_id}-life"), t0()),
        vec![
            mk(&quiet, "q", ReceiptType::Queued, 1, 0),
            mk(&quiet, "s", ReceiptType::Success, 1, 5),
        ],
        vec![
            mk(&late, "a2", ReceiptType::Accepted, 2, 10).with_worker("w2"),
            mk(&late, "f1", ReceiptType::Failure, 1, 20)
                .with_worker("w1")
                .with_body(json!({"error": "late"})),
            mk(&late, "q", ReceiptType::Queued, 1, 0),
        ],
    ]
}

/// The fold (a chain in one batch: merged in Rust, then one upsert) and the
/// SQL (one receipt per batch, newest first: merged by the upserts) give the
/// same rows. Returns them.
async fn fold_and_sql_scenario(store: &Store) -> Vec<TaskRow> {
    let mut rows = Vec::new();
    for (folded, upserted) in rule_chains("fold").into_iter().zip(rule_chains("sql")) {
        store.write_batch(&folded, &[]).await.unwrap();
        let order: Vec<usize> = (0..upserted.len()).rev().collect();
        write_in_order(store, &upserted, &order).await;
        let a = store.task(&folded[0].task_id).await.unwrap().unwrap().task;
        let mut b = store
            .task(&upserted[0].task_id)
            .await
            .unwrap()
            .unwrap()
            .task;
        b.task_id = a.task_id.clone();
        assert_eq!(a, b);
        rows.push(a);
    }
    rows
}

#[tokio::test]
async fn the_fold_and_the_upsert_agree_on_both_backends() {
    let (_dir, sqlite) = sqlite_store().await;
    let db = PgDb::create().await;
    let pg = Store::open(&db.url).await.unwrap();
    let a = fold_and_sql_scenario(&sqlite).await;
    let b = fold_and_sql_scenario(&pg).await;
    assert_eq!(a, b);
    let (quiet, late) = (&a[1], &a[2]);
    assert_eq!(
        (quiet.state, quiet.worker_id.as_deref()),
        (TaskState::Succeeded, None)
    );
    assert_eq!(quiet.last_error, None);
    assert_eq!(late.state, TaskState::Running);
    assert_eq!(late.worker_id.as_deref(), Some("w2"));
    assert_eq!(late.last_error.as_deref(), Some("late"));
    pg.close().await;
}

#[tokio::test]
async fn a_batch_with_repeats_stores_each_receipt_once() {
    let (_dir, store) = sqlite_store().await;
    let chain = life("t1", t0());
    let mut twice = chain.clone();
    twice.extend(chain.iter().cloned());
    let stats = store.write_batch(&twice, &[]).await.unwrap();
    assert_eq!(stats.receipts, 6);
    assert_eq!(stats.inserted, 6);
    assert_eq!(stats.tasks, 1);
    assert_eq!(store.counts().await.unwrap().receipts, 6);
}

async fn quarantine_scenario(store: &Store) {
    let bad = vec![
        BadReceipt {
            reason: "invalid JSON body: expected value".into(),
            raw: serde_json::Value::String("{not json".into()),
        },
        BadReceipt {
            reason: "task_id is empty".into(),
            raw: json!({"receipt_id": "r", "task_id": ""}),
        },
    ];
    let mut nul = life("t\0nul", t0()).remove(0);
    nul.receipt_id = "r-nul".into();
    let stats = store.write_batch(&[nul], &bad).await.unwrap();
    assert_eq!(stats.quarantined, 3);
    assert_eq!(stats.inserted, 0);
    // Redelivered: not stored twice.
    let again = store.write_batch(&[], &bad).await.unwrap();
    assert_eq!(again.quarantined, 0);
    let q = store.quarantined(10).await.unwrap();
    assert_eq!(q.len(), 3);
    let raw: Vec<&str> = q.iter().map(|r| r.raw.as_str()).collect();
    assert!(raw.contains(&"{not json"), "{raw:?}");
    assert!(
        raw.contains(&r#"{"receipt_id":"r","task_id":""}"#),
        "{raw:?}"
    );
    assert!(q.iter().any(|r| r.reason.contains("NUL")));
    assert!(q.iter().all(|r| r.id.len() == 64));
    assert_eq!(store.counts().await.unwrap().quarantined, 3);
}

#[tokio::test]
async fn sqlite_quarantine_keeps_bad_input_once() {
    let (_dir, store) = sqlite_store().await;
    quarantine_scenario(&store).await;
}

#[tokio::test]
async fn postgres_quarantine_keeps_bad_input_once() {
    let db = PgDb::create().await;
    let store = Store::open(&db.url).await.unwrap();
    quarantine_scenario(&store).await;
    store.close().await;
}

/// Tasks with some equal `last_update`s, listed in pages of 7.
async fn pagination_scenario(store: &Store) {
    let mut receipts = Vec::new();
    for i in 0..40 {
        let mut r = Receipt::new(
            format!("task-{i:02}"),
            if i % 2 == 0 { "even" } else { "odd" },
            if i % 3 == 0 {
                ReceiptType::Success
            } else {
                ReceiptType::Queued
            },
            vec![],
            1,
        );
        // Groups of four share a time, so the task id has to break ties.
        r.created_at = t0() + chrono::Duration::seconds(i / 4);
        receipts.push(r);
    }
    store.write_batch(&receipts, &[]).await.unwrap();

    let walk = |filter: TaskFilter| async move {
        let mut seen = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let page = store
                .list_tasks(&filter, 7, cursor.as_deref())
                .await
                .unwrap();
            assert!(page.tasks.len() <= 7);
            seen.extend(page.tasks);
            match page.next_cursor {
                Some(c) => cursor = Some(c),
                None => break,
            }
        }
        seen
    };
    let all = walk(TaskFilter::default()).await;
    let ids: Vec<&str> = all.iter().map(|t| t.task_id.as_str()).collect();
    assert_eq!(ids.len(), 40);
    let mut expected: Vec<&TaskRow> = all.iter().collect();
    expected.sort_by(|a, b| {
        b.last_update
            .cmp(&a.last_update)
            .then(a.task_id.cmp(&b.task_id))
    });
    assert_eq!(
        ids,
        expected
            .iter()
            .map(|t| t.task_id.as_str())
            .collect::<Vec<_>>()
    );
    let unique: std::collections::HashSet<&str> = ids.iter().copied().collect();
    assert_eq!(unique.len(), 40);

    let done = walk(TaskFilter {
        state: Some(TaskState::Succeeded),
        task_type: Some("even".into()),
    })
    .await;
    assert_eq!(done.len(), 7); // 0, 6, 12, ..., 36
    assert!(
        done.iter()
            .all(|t| t.state == TaskState::Succeeded && t.task_type == "even")
    );

    // A state alone.
    for (state, n) in [(TaskState::Succeeded, 14), (TaskState::Queued, 26)] {
        let listed = walk(TaskFilter {
            state: Some(state),
            task_type: None,
        })
        .await;
        assert_eq!(listed.len(), n, "{state}");
        assert!(listed.iter().all(|t| t.state == state), "{state}");
        let in_order = listed.windows(2).all(|w| {
            (w[1].last_update < w[0].last_update)
                || (w[1].last_update == w[0].last_update && w[1].task_id > w[0].task_id)
        });
        assert!(in_order, "{state}: not newest first");
    }

    // An exactly full last page has no next cursor.
    let page = store
        .list_tasks(&TaskFilter::default(), 40, None)
        .await
        .unwrap();
    assert_eq!((page.tasks.len(), page.next_cursor), (40, None));

    for bad in ["zz", "00", &hex::encode(br#"["yesterday","x"]"#)] {
        let err = store
            .list_tasks(&TaskFilter::default(), 7, Some(bad))
            .await
            .unwrap_err();
        assert!(matches!(err, SinkError::BadCursor(_)), "{err}");
    }
}

/// Every listing the API can ask of SQLite walks an index in the listing's
/// order and stops at the page's end: no scan of the whole table and no
/// sort of all matches, which on a store of millions of tasks would take
/// seconds. A state filter goes through the state index.
#[tokio::test]
async fn sqlite_listings_walk_an_index_in_order() {
    let (_dir, store) = sqlite_store().await;
    let Backend::Sqlite(pool) = &store.backend else {
        unreachable!("a SQLite store")
    };
    let cursor = Some(("2026-01-01T00:00:00.000000000Z".to_owned(), "t".to_owned()));
    let states = std::iter::once(None).chain(TaskState::ALL.into_iter().map(Some));
    for state in states {
        for task_type in [None, Some("noop".to_owned())] {
            for after in [None, cursor.clone()] {
                let filter = TaskFilter {
                    state,
                    task_type: task_type.clone(),
                };
                let (sql, binds) = super::list_sql(&filter, after, 50);
                let mut q = sqlx::query_as::<_, (i64, i64, i64, String)>(AssertSqlSafe(format!(
                    "EXPLAIN QUERY PLAN {sql}"
                )));
                for b in &binds {
                    q = q.bind(b.as_str());
                }
                let plan: Vec<String> = q
                    .fetch_all(pool)
                    .await
                    .unwrap()
                    .into_iter()
                    .map(|(_, _, _, detail)| detail)
                    .collect();
                let said = format!("{filter:?}: {plan:?}");
                assert!(
                    plan.iter().all(|d| !d.contains("TEMP B-TREE")),
                    "sorts every match: {said}"
                );
                assert!(
                    plan.iter()
                        .all(|d| !d.starts_with("SCAN") || d.contains("USING INDEX")),
                    "reads the whole table: {said}"
                );
                if state.is_some() && task_type.is_none() {
                    assert!(
                        plan.iter().any(|d| d.contains("tasks_state_recent")),
                        "not through the state index: {said}"
                    );
                }
            }
        }
    }
    store.close().await;
}

#[tokio::test]
async fn sqlite_pagination_walks_every_task_once() {
    let (_dir, store) = sqlite_store().await;
    pagination_scenario(&store).await;
}

#[tokio::test]
async fn postgres_pagination_walks_every_task_once() {
    let db = PgDb::create().await;
    let store = Store::open(&db.url).await.unwrap();
    pagination_scenario(&store).await;
    store.close().await;
}

/// More receipts than one statement can bind, written by four writers at once
/// in different orders.
async fn big_concurrent_scenario(store: &Store) {
    let receipts: Vec<Receipt> = (0..1500)
        .flat_map(|i| life(&format!("big-{i}"), t0()))
        .collect();
    assert_eq!(receipts.len(), 9000);
    let mut writers = Vec::new();
    for k in 0..4 {
        let store = store.clone();
        let mut mine = receipts.clone();
        mine.rotate_left(k * 2000);
        if k % 2 == 1 {
            mine.reverse();
        }
        writers.push(tokio::spawn(
            async move { store.write_batch(&mine, &[]).await },
        ));
    }
    let mut inserted = 0;
    for w in writers {
        inserted += w.await.unwrap().unwrap().inserted;
    }
    assert_eq!(inserted, 9000);
    let counts = store.counts().await.unwrap();
    assert_eq!((counts.receipts, counts.tasks), (9000, 1500));
    let v = store.task("big-777").await.unwrap().unwrap();
    assert_eq!(v.task.state, TaskState::Succeeded);
    assert_eq!(v.chain.len(), 6);
}

#[tokio::test]
async fn sqlite_big_concurrent_batches() {
    let (_dir, store) = sqlite_store().await;
    big_concurrent_scenario(&store).await;
}

#[tokio::test]
async fn postgres_big_concurrent_batches() {
    let db = PgDb::create().await;
    let store = Store::open(&db.url).await.unwrap();
    big_concurrent_scenario(&store).await;
    store.close().await;
}

#[tokio::test]
async fn reopening_keeps_data_and_bad_urls_are_refused() {
    let (dir, store) = sqlite_store().await;
    store.write_batch(&life("t1", t0()), &[]).await.unwrap();
    store.close().await;
    let url = format!("sqlite://{}", dir.path().join("receipts.db").display());
    let again = Store::open(&url).await.unwrap();
    assert_eq!(again.counts().await.unwrap().receipts, 6);
    again.ping().await.unwrap();
    let err = Store::open("mysql://x").await.unwrap_err();
    assert!(matches!(err, SinkError::BadStoreUrl { .. }));
    assert!(!err.is_transient());
}

#[tokio::test]
async fn in_memory_sqlite_works() {
    let store = Store::open("sqlite::memory:").await.unwrap();
    store.write_batch(&life("t1", t0()), &[]).await.unwrap();
    assert_eq!(store.receipts("t1").await.unwrap().len(), 6);
}

/// Issue 13, finding 21: retention deletes old finished chains, whole, and
/// nothing else.
async fn prune_scenario(store: &Store) {
    let now = Utc::now();
    let old = now - chrono::Duration::days(40);
    let recent = now - chrono::Duration::days(1);
    let mk = |task: &str, t: ReceiptType, at: DateTime<Utc>| {
        let mut r = Receipt::new(task, "command.execute", t, vec![], 1);
        r.created_at = at;
        r
    };
    let mut batch = life("old-done", old);
    batch.extend(life("recent-done", recent));
    batch.extend(life("old-running", old).into_iter().take(2));
    batch.extend(life("old-dead", old).into_iter().take(3));
    batch.push(mk(
        "old-dead",
        ReceiptType::DeadLettered,
        old + chrono::Duration::seconds(1),
    ));
    batch.push(mk("old-cancelled", ReceiptType::Queued, old));
    batch.push(mk("old-cancelled", ReceiptType::Cancelled, old));
    // Enough old finished tasks to take more than one transaction.
    for i in 0..1500 {
        let id = format!("bulk-{i}");
        batch.push(mk(&id, ReceiptType::Queued, old));
        batch.push(mk(&id, ReceiptType::Success, old));
    }
    store.write_batch(&batch, &[]).await.unwrap();
    let before = store.counts().await.unwrap();

    let stats = store.prune(now - chrono::Duration::days(30)).await.unwrap();
    assert_eq!(
        stats,
        PruneStats {
            tasks: 1 + 1 + 1500,
            receipts: 6 + 2 + 3000
        }
    );
    for gone in ["old-done", "old-cancelled", "bulk-0", "bulk-1499"] {
        assert!(store.task(gone).await.unwrap().is_none(), "{gone}");
        assert!(store.receipts(gone).await.unwrap().is_empty(), "{gone}");
    }
    for (kept, len, state) in [
        ("recent-done", 6, TaskState::Succeeded),
        ("old-running", 2, TaskState::Running),
        ("old-dead", 4, TaskState::DeadLettered),
    ] {
        let view = store.task(kept).await.unwrap().expect(kept);
        assert_eq!((view.chain.len(), view.task.state), (len, state), "{kept}");
    }
    let after = store.counts().await.unwrap();
    assert_eq!(after.tasks, before.tasks - stats.tasks);
    assert_eq!(after.receipts, before.receipts - stats.receipts);
    assert_eq!(
        store.prune(now - chrono::Duration::days(30)).await.unwrap(),
        PruneStats::default(),
        "a second run finds nothing"
    );
}

#[tokio::test]
async fn sqlite_retention_deletes_only_old_finished_chains() {
    let (_dir, store) = sqlite_store().await;
    prune_scenario(&store).await;
}

#[tokio::test]
async fn postgres_retention_deletes_only_old_finished_chains() {
    let db = PgDb::create().await;
    let store = Store::open(&db.url).await.unwrap();
    prune_scenario(&store).await;
    store.close().await;
}

/// The probe write that tells a refused batch from a refusing store leaves
/// nothing behind, and fails when the store takes no receipt at all.
#[tokio::test]
async fn the_probe_write_is_rolled_back_and_fails_on_a_refusing_store() {
    let (_dir, sqlite) = sqlite_store().await;
    sqlite.check_writable().await.unwrap();
    assert_eq!(sqlite.counts().await.unwrap(), StoreCounts::default());

    let db = PgDb::create().await;
    let pg = Store::open(&db.url).await.unwrap();
    pg.check_writable().await.unwrap();
    assert_eq!(pg.counts().await.unwrap(), StoreCounts::default());
    if let Backend::Postgres(pool) = &pg.backend {
        sqlx::query("ALTER TABLE receipts ADD CONSTRAINT refuse_all CHECK (false) NOT VALID")
            .execute(pool)
            .await
            .unwrap();
    }
    let err = pg.check_writable().await.unwrap_err();
    assert!(!err.is_transient(), "{err}");
    pg.close().await;
}

/// Issue 13, finding 9: a SQLite file in a missing directory is created; a
/// failure names the path once; a bare relative path is refused.
#[tokio::test]
async fn sqlite_files_get_their_directory_and_errors_name_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let deep = dir.path().join("a/b/receipts.db");
    let store = Store::open(&format!("sqlite://{}", deep.display()))
        .await
        .unwrap();
    store.close().await;
    assert!(deep.exists());

    let file = dir.path().join("plain-file");
    std::fs::write(&file, b"").unwrap();
    let blocked = file.join("receipts.db");
    let err = Store::open(&format!("sqlite://{}", blocked.display()))
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, SinkError::OpenStore { .. }), "{text}");
    assert_eq!(
        text.matches(&*blocked.display().to_string()).count(),
        1,
        "{text}"
    );

    for bad in [
        "sqlite://var/lib/chit/receipts.db",
        "sqlite:receipts.db",
        "sqlite://",
    ] {
        let err = Store::open(bad).await.unwrap_err();
        assert!(matches!(err, SinkError::BadStoreUrl { .. }), "{bad}: {err}");
    }
    let err = Store::open("sqlite://var/lib/chit/receipts.db")
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("sqlite:///var/lib/chit/receipts.db"),
        "{err}"
    );
}

/// A receipt is its task's: a repeat (same task, same id), in one batch or a
/// later one, is stored once, while another task's receipt that happens to
/// carry the same id is a receipt of that task's chain, not a duplicate.
async fn identity_scenario(store: &Store) {
    let a = life("ta", t0());
    let mut b = life("tb", t0());
    b[0].receipt_id = a[0].receipt_id.clone();
    let first = store.write_batch(&a, &[]).await.unwrap();
    assert_eq!((first.inserted, first.duplicates), (6, 0));
    let again = store.write_batch(&a[..2], &[]).await.unwrap();
    assert_eq!((again.inserted, again.duplicates), (0, 2));
    let other = store.write_batch(&b, &[]).await.unwrap();
    assert_eq!((other.inserted, other.duplicates), (6, 0));
    assert_eq!(store.counts().await.unwrap().receipts, 12);
    let chain = store.receipts("tb").await.unwrap();
    assert_eq!(chain.len(), 6);
    assert!(chain.iter().all(|r| r.task_id == "tb"));
    assert!(chain.iter().any(|r| r.receipt_id == a[0].receipt_id));
}

#[tokio::test]
async fn sqlite_receipts_are_keyed_by_task_and_id() {
    let (_dir, store) = sqlite_store().await;
    identity_scenario(&store).await;
}

#[tokio::test]
async fn postgres_receipts_are_keyed_by_task_and_id() {
    let db = PgDb::create().await;
    let store = Store::open(&db.url).await.unwrap();
    identity_scenario(&store).await;
    store.close().await;
}

/// A store written before migration 7 (receipts keyed by receipt_id, tasks
/// with a rowid) keeps every receipt and task row when a newer sink opens
/// it, and takes new receipts afterwards.
#[tokio::test]
async fn a_store_from_before_the_key_change_keeps_its_chains() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("old.db");
    let url = format!("sqlite://{}", file.display());
    {
        let pool = sqlx::sqlite::SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(
                <sqlx::sqlite::SqliteConnectOptions as std::str::FromStr>::from_str(&url)
                    .unwrap()
                    .create_if_missing(true),
            )
            .await
            .unwrap();
        let mut old = sqlx::migrate::Migrator::new(std::path::Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/migrations/sqlite"
        )))
        .await
        .unwrap();
        old.migrations = old
            .migrations
            .iter()
            .filter(|m| m.version < 7)
            .cloned()
            .collect::<Vec<_>>()
            .into();
        old.run(&pool).await.unwrap();
        let old_store = Store {
            backend: Backend::Sqlite(pool.clone()),
        };
        // The old schema's insert names its key column alone: write rows
        // the way that sink did.
        for r in life("t-old", t0()) {
            sqlx::query(
                "INSERT INTO receipts (receipt_id, task_id, task_type, receipt_type, \
                 parent_receipt_ids, worker_id, attempt, created_at, body, artifacts, stored_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
            )
            .bind(&r.receipt_id)
            .bind(&r.task_id)
            .bind(&r.task_type)
            .bind(r.receipt_type.as_str())
            .bind(serde_json::to_string(&r.parent_receipt_ids).unwrap())
            .bind(&r.worker_id)
            .bind(i64::from(r.attempt))
            .bind(task::canonical_time(&r.created_at))
            .bind(r.body.to_string())
            .bind("[]")
            .bind(task::canonical_time(&r.created_at))
            .execute(&pool)
            .await
            .unwrap();
        }
        sqlx::query(
            "INSERT INTO tasks (task_id, task_type, state, attempts, first_seen, last_update, \
             state_key) VALUES ('t-old', 'command.execute', 'succeeded', 2, $1, $1, 'k')",
        )
        .bind(task::canonical_time(&t0()))
        .execute(&pool)
        .await
        .unwrap();
        assert_eq!(old_store.counts().await.unwrap().receipts, 6);
        pool.close().await;
    }
    let store = Store::open(&url).await.unwrap();
    let counts = store.counts().await.unwrap();
    assert_eq!((counts.receipts, counts.tasks), (6, 1));
    assert_eq!(store.receipts("t-old").await.unwrap().len(), 6);
    let stats = store.write_batch(&life("t-new", t0()), &[]).await.unwrap();
    assert_eq!(stats.inserted, 6);
    let repeat = store.write_batch(&life("t-old", t0()), &[]).await.unwrap();
    assert_eq!(repeat.inserted, 0, "the old chain's receipts are known");
    let tasks: Vec<String> = sqlx::query_scalar(
        "SELECT name FROM sqlite_schema WHERE type = 'table' AND name IN ('receipts', 'tasks') \
         AND sql LIKE '%WITHOUT ROWID%'",
    )
    .fetch_all(match &store.backend {
        Backend::Sqlite(p) => p,
        Backend::Postgres(_) => unreachable!(),
    })
    .await
    .unwrap();
    assert_eq!(tasks, ["tasks"]);
    store.close().await;
}
