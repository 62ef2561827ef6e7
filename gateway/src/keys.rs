//! API keys: making them, reading them off a request, checking them, and
//! the `chit gateway keys add|list|revoke` operations on the store.
//!
//! A key is `chit_<id>_<secret>`: `<id>` is 8 random bytes in hex (16
//! characters, not secret: it names the key in logs and in `keys list`),
//! `<secret>` is 32 random bytes in hex (64 characters, 256 bits) from the
//! thread-local generator of `rand`, a CSPRNG seeded from the operating
//! system.
//!
//! The store keeps, per key, a random 16-byte salt and HMAC-SHA256(salt,
//! secret), never the secret. HMAC rather than a password hash such as
//! argon2: the secret is 256 random bits, not something a person chose, so
//! a leaked table cannot be brute-forced however fast the hash is; a slow,
//! memory-hard hash would only make every request pay tens of milliseconds
//! and megabytes, and turn the auth check into a lever for overloading the
//! gateway. The salt keeps two rows from ever sharing a hash. Checking
//! compares MACs with [`hmac::Mac::verify_slice`], in constant time.

use chrono::Utc;
use hmac::{Hmac, Mac};
use rand::RngCore;
use receipts_sink::Store;
use receipts_sink::store::{ApiKeyRecord, Revoked};
use sha2::Sha256;

/// What every key starts with.
pub const PREFIX: &str = "chit_";
/// The scope that allows replaying and purging dead letters.
pub const ADMIN_SCOPE: &str = "admin";

const ID_BYTES: usize = 8;
const SECRET_BYTES: usize = 32;
const SALT_BYTES: usize = 16;

/// A key just made: the only moment its secret exists outside the client.
#[derive(Debug, Clone)]
pub struct NewKey {
    /// The whole key, `chit_<id>_<secret>`, to give to the client.
    pub key: String,
    /// What was stored.
    pub record: ApiKeyRecord,
}

/// Why a key operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// A scope that is neither a task type, a `prefix.*` pattern, `*` nor
    /// `admin`.
    #[error("invalid scope {scope:?}: {reason}")]
    BadScope {
        /// The scope as given.
        scope: String,
        /// Why.
        reason: String,
    },
    /// An empty or overlong name.
    #[error("invalid key name {0:?}: give 1 to 200 characters")]
    BadName(String),
    /// A key needs at least one scope.
    #[error("a key needs at least one scope (a task type, `command.*`, `*` or `admin`)")]
    NoScope,
    /// No key has this id.
    #[error("no API key has the id {0:?} (see `chit gateway keys list`)")]
    Unknown(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] receipts_sink::SinkError),
}

/// The two parts of a key as sent by a client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParsedKey<'a> {
    /// The key id.
    pub id: &'a str,
    /// The secret.
    pub secret: &'a str,
}

/// Splits `chit_<id>_<secret>`; `None` for anything else, so a key of
/// another system is refused before the store is asked.
pub fn parse(key: &str) -> Option<ParsedKey<'_>> {
    let rest = key.strip_prefix(PREFIX)?;
    let (id, secret) = rest.split_once('_')?;
    let hex = |s: &str, len: usize| s.len() == len && s.bytes().all(|b| b.is_ascii_hexdigit());
    (hex(id, ID_BYTES * 2) && hex(secret, SECRET_BYTES * 2)).then_some(ParsedKey { id, secret })
}

/// Checks a scope: `*`, `admin`, a task type, or a task-type prefix ending
/// in `.*` (`command.*`).
pub fn check_scope(scope: &str) -> Result<(), KeyError> {
    if scope == "*" || scope == ADMIN_SCOPE {
        return Ok(());
    }
    let bad = |reason: String| KeyError::BadScope {
        scope: scope.to_owned(),
        reason,
    };
    let name = match scope.strip_suffix(".*") {
        Some(prefix) => prefix,
        None if scope.contains('*') => {
            return Err(bad(
                "a wildcard stands alone (`*`) or ends a prefix (`command.*`)".into(),
            ));
        }
        None => scope,
    };
    broker_topology::names::validate_capability(name).map_err(|e| bad(e.to_string()))
}

/// Makes a key with a fresh id, secret and salt.
pub fn generate(name: &str, scopes: &[String]) -> Result<NewKey, KeyError> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > 200 {
        return Err(KeyError::BadName(name.to_owned()));
    }
    if scopes.is_empty() {
        return Err(KeyError::NoScope);
    }
    for s in scopes {
        check_scope(s)?;
    }
    let mut scopes: Vec<String> = scopes.to_vec();
    scopes.dedup();
    let id = hex::encode(random::<ID_BYTES>());
    let secret = hex::encode(random::<SECRET_BYTES>());
    let salt = random::<SALT_BYTES>();
    let record = ApiKeyRecord {
        key_id: id.clone(),
        name: name.to_owned(),
        scopes,
        salt: hex::encode(salt),
        hash: hex::encode(mac(&salt, &secret).finalize().into_bytes()),
        created_at: Utc::now(),
        revoked_at: None,
    };
    Ok(NewKey {
        key: format!("{PREFIX}{id}_{secret}"),
        record,
    })
}

/// True when `secret` is the secret of `record`, compared in constant time.
/// A row whose salt or hash is not hex never matches.
pub fn verify(record: &ApiKeyRecord, secret: &str) -> bool {
    let (Ok(salt), Ok(hash)) = (hex::decode(&record.salt), hex::decode(&record.hash)) else {
        return false;
    };
    mac(&salt, secret).verify_slice(&hash).is_ok()
}

/// Makes a key and stores it.
pub async fn add(store: &Store, name: &str, scopes: &[String]) -> Result<NewKey, KeyError> {
    let key = generate(name, scopes)?;
    store.insert_api_key(&key.record).await?;
    tracing::info!(key_id = %key.record.key_id, name = %key.record.name, "API key added");
    Ok(key)
}

/// Every key, revoked ones included, oldest first.
pub async fn list(store: &Store) -> Result<Vec<ApiKeyRecord>, KeyError> {
    Ok(store.api_keys().await?)
}

/// Revokes a key at once, for every gateway on the store; returns it, and
/// whether it was revoked before.
pub async fn revoke(store: &Store, key_id: &str) -> Result<(ApiKeyRecord, bool), KeyError> {
    match store.revoke_api_key(key_id, Utc::now()).await? {
        Revoked::Now(k) => {
            tracing::info!(key_id = %k.key_id, name = %k.name, "API key revoked");
            Ok((k, false))
        }
        Revoked::Already(k) => Ok((k, true)),
        Revoked::Unknown => Err(KeyError::Unknown(key_id.to_owned())),
    }
}

fn mac(salt: &[u8], secret: &str) -> Hmac<Sha256> {
    let mut m = <Hmac<Sha256> as Mac>::new_from_slice(salt).expect("HMAC takes a key of any size");
    m.update(secret.as_bytes());
    m
}

fn random<const N: usize>() -> [u8; N] {
    let mut bytes = [0u8; N];
    rand::rng().fill_bytes(&mut bytes);
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_key_parses_and_verifies_and_nothing_else_does() {
        let k = generate("ci", &["command.*".into()]).unwrap();
        assert!(k.key.starts_with("chit_"));
        assert_eq!(k.key.len(), 5 + 16 + 1 + 64);
        let p = parse(&k.key).unwrap();
        assert_eq!(p.id, k.record.key_id);
        assert!(verify(&k.record, p.secret));
        // The secret is not in the record, in any form but its MAC.
        assert!(!k.record.hash.contains(p.secret) && !k.record.salt.contains(p.secret));

        let mut wrong = p.secret.to_owned();
        let last = if wrong.ends_with('0') { "1" } else { "0" };
        wrong.replace_range(63.., last);
        assert!(!verify(&k.record, &wrong));
        assert!(!verify(&k.record, ""));
        // Another key's secret does not open this one.
        let other = generate("other", &["*".into()]).unwrap();
        assert!(!verify(&k.record, parse(&other.key).unwrap().secret));
        // Same secret, other salt: other hash.
        assert_ne!(k.record.salt, other.record.salt);

        for bad in [
            "",
            "Bearer x",
            "your-api-key",
            "chit_",
            "chit_abc_def",
            &k.key[1..],
            &format!("{}x", k.key),
            &k.key.replacen('_', "-", 2),
            &format!("chit_{}_{}", "g".repeat(16), "0".repeat(64)),
        ] {
            assert!(parse(bad).is_none(), "{bad:?}");
        }
        let corrupt = ApiKeyRecord {
            hash: "zz".into(),
            ..k.record.clone()
        };
        assert!(!verify(&corrupt, p.secret));
    }

    #[test]
    fn keys_are_random() {
        let a = generate("a", &["*".into()]).unwrap();
        let b = generate("a", &["*".into()]).unwrap();
        assert_ne!(a.key, b.key);
        assert_ne!(a.record.key_id, b.record.key_id);
    }

    #[test]
    fn scopes_are_task_types_prefixes_star_or_admin() {
        for good in [
            "*",
            "admin",
            "command.execute",
            "command.*",
            "noop",
            "a-b_c.d.*",
        ] {
            check_scope(good).unwrap_or_else(|e| panic!("{good}: {e}"));
        }
        for bad in ["", "com*", "*.execute", "command.*.x", "has space", ".*"] {
            assert!(check_scope(bad).is_err(), "{bad:?}");
        }
        assert!(matches!(generate("x", &[]), Err(KeyError::NoScope)));
        assert!(matches!(
            generate(" ", &["*".into()]),
            Err(KeyError::BadName(_))
        ));
        assert!(matches!(
            generate("x", &["bad scope".into()]),
            Err(KeyError::BadScope { .. })
        ));
    }
}
