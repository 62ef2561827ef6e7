//! The HTTP gateway's rows in the store: its API keys and its idempotency
//! records (`migrations/*/0005_gateway.sql`). They live beside the chains so
//! that every gateway on one store shares them and a restart keeps them.
//!
//! The store only keeps what it is given: the gateway crate makes the keys,
//! hashes the secrets and decides what a reservation means. Keys are never
//! stored in the clear; a row holds a salt and the HMAC of the secret.
//!
//! Idempotency records are reserved with `INSERT ... ON CONFLICT DO NOTHING`
//! on the primary key (API key id, idempotency key), so of two requests that
//! race exactly one inserts, on SQLite and PostgreSQL alike; the loser reads
//! the winner's row. A claim (`claimed_at`) changes hands only by a
//! compare-and-set on its old value, so two requests that both find a stale
//! claim cannot both take it.

use super::{Backend, Store, parse_time};
use crate::error::SinkError;
use crate::task::canonical_time;
use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{ColumnIndex, Decode, Row, Type};

/// One API key of the gateway, as stored: never the secret itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ApiKeyRecord {
    /// The key's id, the part of the key between `chit_` and the secret.
    pub key_id: String,
    /// A name for people and logs.
    pub name: String,
    /// What the key may do: task types (`command.execute`, `command.*`,
    /// `*`) and `admin`.
    pub scopes: Vec<String>,
    /// The per-key random salt, hex.
    #[serde(skip)]
    pub salt: String,
    /// HMAC-SHA256 of the secret keyed with the salt, hex.
    #[serde(skip)]
    pub hash: String,
    /// When it was made.
    pub created_at: DateTime<Utc>,
    /// When it was revoked; `None` while it is valid.
    pub revoked_at: Option<DateTime<Utc>>,
}

/// What an idempotency key of one API key stands for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyRecord {
    /// The API key that sent it: idempotency keys are scoped per API key.
    pub key_id: String,
    /// The client's idempotency key.
    pub idempotency_key: String,
    /// A hash of the request it came with; the same key with another
    /// request is a conflict.
    pub request_hash: String,
    /// The task id chosen for it, before the first publish.
    pub task_id: String,
    /// The id of that task's `queued` receipt, chosen with it.
    pub queued_receipt_id: String,
    /// When it was reserved; it expires a window after this.
    pub created_at: DateTime<Utc>,
    /// When its current publisher took it.
    pub claimed_at: DateTime<Utc>,
    /// When the broker confirmed the task; `None` until then.
    pub published_at: Option<DateTime<Utc>>,
}

/// What [`Store::reserve_idempotency`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reservation {
    /// The record was inserted: the caller publishes.
    Reserved,
    /// Another request reserved this key first (and it has not expired).
    Exists(IdempotencyRecord),
}

/// What [`Store::revoke_api_key`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Revoked {
    /// The key was valid and is revoked now.
    Now(ApiKeyRecord),
    /// The key was revoked before; its first revocation time is kept.
    Already(ApiKeyRecord),
    /// No key has that id.
    Unknown,
}

const KEY_COLUMNS: &str = "key_id, name, scopes, salt, hash, created_at, revoked_at";
const IDEMPOTENCY_COLUMNS: &str = "key_id, idempotency_key, request_hash, task_id, \
     queued_receipt_id, created_at, claimed_at, published_at";

impl Store {
    /// Stores a new API key.
    pub async fn insert_api_key(&self, key: &ApiKeyRecord) -> Result<(), SinkError> {
        let scopes = serde_json::to_string(&key.scopes).unwrap_or_else(|_| "[]".into());
        let sql =
            format!("INSERT INTO gateway_keys ({KEY_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7)");
        on_pool!(self, pool => {
            sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(&key.key_id)
                .bind(&key.name)
                .bind(&scopes)
                .bind(&key.salt)
                .bind(&key.hash)
                .bind(canonical_time(&key.created_at))
                .bind(key.revoked_at.as_ref().map(canonical_time))
                .execute(pool)
                .await?;
        });
        Ok(())
    }

    /// Every API key, revoked ones included, oldest first.
    pub async fn api_keys(&self) -> Result<Vec<ApiKeyRecord>, SinkError> {
        let sql = format!("SELECT {KEY_COLUMNS} FROM gateway_keys ORDER BY created_at, key_id");
        on_pool!(self, pool => {
            let rows = sqlx::query(sqlx::AssertSqlSafe(sql)).fetch_all(pool).await?;
            rows.iter().map(key_from_row).collect()
        })
    }

    /// The API key with this id, revoked or not.
    pub async fn api_key(&self, key_id: &str) -> Result<Option<ApiKeyRecord>, SinkError> {
        let sql = format!("SELECT {KEY_COLUMNS} FROM gateway_keys WHERE key_id = $1");
        on_pool!(self, pool => {
            match sqlx::query(sqlx::AssertSqlSafe(sql)).bind(key_id).fetch_optional(pool).await? {
                Some(row) => Ok(Some(key_from_row(&row)?)),
                None => Ok(None),
            }
        })
    }

    /// Revokes an API key at `at`; a key revoked before keeps its time.
    pub async fn revoke_api_key(
        &self,
        key_id: &str,
        at: DateTime<Utc>,
    ) -> Result<Revoked, SinkError> {
        let changed = on_pool!(self, pool => {
            sqlx::query(
                "UPDATE gateway_keys SET revoked_at = $2 WHERE key_id = $1 AND revoked_at IS NULL",
            )
            .bind(key_id)
            .bind(canonical_time(&at))
            .execute(pool)
            .await?
            .rows_affected()
        });
        Ok(match (changed, self.api_key(key_id).await?) {
            (_, None) => Revoked::Unknown,
            (0, Some(key)) => Revoked::Already(key),
            (_, Some(key)) => Revoked::Now(key),
        })
    }

    /// Reserves `record` unless its (API key, idempotency key) is taken by a
    /// record created at or after `expired_before`; an older one is deleted
    /// first, so a key can be used again once its window is over.
    pub async fn reserve_idempotency(
        &self,
        record: &IdempotencyRecord,
        expired_before: DateTime<Utc>,
    ) -> Result<Reservation, SinkError> {
        let insert = format!(
            "INSERT INTO gateway_idempotency ({IDEMPOTENCY_COLUMNS}) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
             ON CONFLICT (key_id, idempotency_key) DO NOTHING"
        );
        // A concurrent prune may delete the row that beat us between the
        // insert and the read: then the insert is tried again.
        for _ in 0..3 {
            let inserted = on_pool!(self, pool => {
                sqlx::query(
                    "DELETE FROM gateway_idempotency \
                     WHERE key_id = $1 AND idempotency_key = $2 AND created_at < $3",
                )
                .bind(&record.key_id)
                .bind(&record.idempotency_key)
                .bind(canonical_time(&expired_before))
                .execute(pool)
                .await?;
                sqlx::query(sqlx::AssertSqlSafe(insert.as_str()))
                    .bind(&record.key_id)
                    .bind(&record.idempotency_key)
                    .bind(&record.request_hash)
                    .bind(&record.task_id)
                    .bind(&record.queued_receipt_id)
                    .bind(canonical_time(&record.created_at))
                    .bind(canonical_time(&record.claimed_at))
                    .bind(record.published_at.as_ref().map(canonical_time))
                    .execute(pool)
                    .await?
                    .rows_affected()
            });
            if inserted == 1 {
                return Ok(Reservation::Reserved);
            }
            if let Some(existing) = self
                .idempotency_record(&record.key_id, &record.idempotency_key)
                .await?
            {
                return Ok(Reservation::Exists(existing));
            }
        }
        Err(SinkError::Corrupt(format!(
            "idempotency key {:?} neither inserts nor reads back",
            record.idempotency_key
        )))
    }

    /// The idempotency record of this API key and idempotency key, expired
    /// or not.
    pub async fn idempotency_record(
        &self,
        key_id: &str,
        idempotency_key: &str,
    ) -> Result<Option<IdempotencyRecord>, SinkError> {
        let sql = format!(
            "SELECT {IDEMPOTENCY_COLUMNS} FROM gateway_idempotency \
             WHERE key_id = $1 AND idempotency_key = $2"
        );
        on_pool!(self, pool => {
            match sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(key_id)
                .bind(idempotency_key)
                .fetch_optional(pool)
                .await?
            {
                Some(row) => Ok(Some(idempotency_from_row(&row)?)),
                None => Ok(None),
            }
        })
    }

    /// Moves the claim of an unpublished record from `from` to `to`, only
    /// if it is still `from`: true when this caller now holds it.
    pub async fn claim_idempotency(
        &self,
        key_id: &str,
        idempotency_key: &str,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<bool, SinkError> {
        let changed = on_pool!(self, pool => {
            sqlx::query(
                "UPDATE gateway_idempotency SET claimed_at = $4 \
                 WHERE key_id = $1 AND idempotency_key = $2 AND claimed_at = $3 \
                 AND published_at IS NULL",
            )
            .bind(key_id)
            .bind(idempotency_key)
            .bind(canonical_time(&from))
            .bind(canonical_time(&to))
            .execute(pool)
            .await?
            .rows_affected()
        });
        Ok(changed == 1)
    }

    /// Records that the task of this record was confirmed by the broker.
    pub async fn mark_idempotency_published(
        &self,
        key_id: &str,
        idempotency_key: &str,
        at: DateTime<Utc>,
    ) -> Result<(), SinkError> {
        on_pool!(self, pool => {
            sqlx::query(
                "UPDATE gateway_idempotency SET published_at = $3 \
                 WHERE key_id = $1 AND idempotency_key = $2 AND published_at IS NULL",
            )
            .bind(key_id)
            .bind(idempotency_key)
            .bind(canonical_time(&at))
            .execute(pool)
            .await?;
        });
        Ok(())
    }

    /// Deletes the idempotency records created before `older_than`;
    /// returns how many.
    pub async fn prune_idempotency(&self, older_than: DateTime<Utc>) -> Result<u64, SinkError> {
        Ok(on_pool!(self, pool => {
            sqlx::query("DELETE FROM gateway_idempotency WHERE created_at < $1")
                .bind(canonical_time(&older_than))
                .execute(pool)
                .await?
                .rows_affected()
        }))
    }
}

fn key_from_row<'r, R>(row: &'r R) -> Result<ApiKeyRecord, SinkError>
where
    R: Row,
    &'static str: ColumnIndex<R>,
    String: Decode<'r, R::Database> + Type<R::Database>,
    Option<String>: Decode<'r, R::Database> + Type<R::Database>,
{
    let scopes: String = row.try_get("scopes")?;
    Ok(ApiKeyRecord {
        key_id: row.try_get("key_id")?,
        name: row.try_get("name")?,
        scopes: serde_json::from_str(&scopes)
            .map_err(|e| SinkError::Corrupt(format!("bad JSON in gateway_keys.scopes: {e}")))?,
        salt: row.try_get("salt")?,
        hash: row.try_get("hash")?,
        created_at: parse_time(&row.try_get::<String, _>("created_at")?)?,
        revoked_at: row
            .try_get::<Option<String>, _>("revoked_at")?
            .as_deref()
            .map(parse_time)
            .transpose()?,
    })
}

fn idempotency_from_row<'r, R>(row: &'r R) -> Result<IdempotencyRecord, SinkError>
where
    R: Row,
    &'static str: ColumnIndex<R>,
    String: Decode<'r, R::Database> + Type<R::Database>,
    Option<String>: Decode<'r, R::Database> + Type<R::Database>,
{
    Ok(IdempotencyRecord {
        key_id: row.try_get("key_id")?,
        idempotency_key: row.try_get("idempotency_key")?,
        request_hash: row.try_get("request_hash")?,
        task_id: row.try_get("task_id")?,
        queued_receipt_id: row.try_get("queued_receipt_id")?,
        created_at: parse_time(&row.try_get::<String, _>("created_at")?)?,
        claimed_at: parse_time(&row.try_get::<String, _>("claimed_at")?)?,
        published_at: row
            .try_get::<Option<String>, _>("published_at")?
            .as_deref()
            .map(parse_time)
            .transpose()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::tests::{PgDb, sqlite_store};
    use chrono::Duration;

    fn key(id: &str) -> ApiKeyRecord {
        ApiKeyRecord {
            key_id: id.into(),
            name: format!("key {id}"),
            scopes: vec!["command.*".into(), "admin".into()],
            salt: "00".repeat(16),
            hash: "ab".repeat(32),
            created_at: Utc::now(),
            revoked_at: None,
        }
    }

    fn record(idem: &str, task_id: &str, at: DateTime<Utc>) -> IdempotencyRecord {
        IdempotencyRecord {
            key_id: "k1".into(),
            idempotency_key: idem.into(),
            request_hash: "h1".into(),
            task_id: task_id.into(),
            queued_receipt_id: format!("{task_id}-q"),
            created_at: at,
            claimed_at: at,
            published_at: None,
        }
    }

    async fn keys_and_records(store: Store) {
        store.insert_api_key(&key("k1")).await.unwrap();
        store.insert_api_key(&key("k2")).await.unwrap();
        assert!(
            store.insert_api_key(&key("k1")).await.is_err(),
            "ids are unique"
        );
        let listed = store.api_keys().await.unwrap();
        assert_eq!(listed.len(), 2);
        assert_eq!(listed[0].scopes, ["command.*", "admin"]);
        assert_eq!(store.api_key("k2").await.unwrap().unwrap().name, "key k2");
        assert!(store.api_key("nope").await.unwrap().is_none());

        let at = Utc::now();
        let Revoked::Now(k) = store.revoke_api_key("k1", at).await.unwrap() else {
            panic!("first revocation");
        };
        assert_eq!(
            k.revoked_at.map(|t| canonical_time(&t)),
            Some(canonical_time(&at))
        );
        let later = at + Duration::seconds(5);
        let Revoked::Already(k) = store.revoke_api_key("k1", later).await.unwrap() else {
            panic!("second revocation");
        };
        assert_eq!(
            k.revoked_at.map(|t| canonical_time(&t)),
            Some(canonical_time(&at))
        );
        assert_eq!(
            store.revoke_api_key("nope", at).await.unwrap(),
            Revoked::Unknown
        );

        // The first reservation wins; the second reads it back.
        let now = Utc::now();
        let window = now - Duration::hours(24);
        let first = record("i1", "t1", now);
        assert_eq!(
            store.reserve_idempotency(&first, window).await.unwrap(),
            Reservation::Reserved
        );
        let Reservation::Exists(found) = store
            .reserve_idempotency(&record("i1", "t2", now), window)
            .await
            .unwrap()
        else {
            panic!("second reservation");
        };
        assert_eq!(found, first);

        // A claim moves only from the value it has.
        let then = now + Duration::seconds(10);
        assert!(
            !store
                .claim_idempotency("k1", "i1", then, then)
                .await
                .unwrap()
        );
        assert!(
            store
                .claim_idempotency("k1", "i1", now, then)
                .await
                .unwrap()
        );
        assert!(
            !store
                .claim_idempotency("k1", "i1", now, then)
                .await
                .unwrap()
        );
        store
            .mark_idempotency_published("k1", "i1", then)
            .await
            .unwrap();
        let found = store.idempotency_record("k1", "i1").await.unwrap().unwrap();
        assert_eq!(
            found.published_at.map(|t| canonical_time(&t)),
            Some(canonical_time(&then))
        );
        assert!(
            !store
                .claim_idempotency("k1", "i1", then, then)
                .await
                .unwrap(),
            "a published record is never claimed again"
        );

        // An expired record gives way to a new reservation.
        let old = record("i2", "t-old", now - Duration::hours(25));
        assert_eq!(
            store
                .reserve_idempotency(&old, now - Duration::hours(48))
                .await
                .unwrap(),
            Reservation::Reserved
        );
        assert_eq!(
            store
                .reserve_idempotency(&record("i2", "t-new", now), window)
                .await
                .unwrap(),
            Reservation::Reserved
        );
        assert_eq!(
            store
                .idempotency_record("k1", "i2")
                .await
                .unwrap()
                .unwrap()
                .task_id,
            "t-new"
        );
        store
            .reserve_idempotency(
                &record("i3", "t3", now - Duration::hours(30)),
                now - Duration::hours(48),
            )
            .await
            .unwrap();
        assert_eq!(store.prune_idempotency(window).await.unwrap(), 1);
        assert!(
            store
                .idempotency_record("k1", "i3")
                .await
                .unwrap()
                .is_none()
        );
        assert!(
            store
                .idempotency_record("k1", "i1")
                .await
                .unwrap()
                .is_some()
        );
    }

    #[tokio::test]
    async fn sqlite_keeps_keys_and_idempotency_records() {
        let (_dir, store) = sqlite_store().await;
        keys_and_records(store).await;
    }

    #[tokio::test]
    async fn postgres_keeps_keys_and_idempotency_records() {
        let db = PgDb::create().await;
        let store = Store::open(&db.url).await.unwrap();
        keys_and_records(store.clone()).await;
        store.close().await;
    }

    #[tokio::test]
    async fn of_many_racing_reservations_exactly_one_wins() {
        let (_dir, store) = sqlite_store().await;
        let db = PgDb::create().await;
        let pg = Store::open(&db.url).await.unwrap();
        for store in [store, pg.clone()] {
            let now = Utc::now();
            let racers = (0..20).map(|i| {
                let store = store.clone();
                let r = record("race", &format!("t{i}"), now);
                tokio::spawn(async move {
                    store
                        .reserve_idempotency(&r, now - Duration::hours(24))
                        .await
                        .unwrap()
                })
            });
            let mut won = 0;
            for r in futures_util::future::join_all(racers).await {
                if r.unwrap() == Reservation::Reserved {
                    won += 1;
                }
            }
            assert_eq!(won, 1);
        }
        pg.close().await;
    }
}
