//! Bearer keys: the [`Caller`] extractor checks `Authorization: Bearer KEY`
//! against the hashed keys in the store, in constant time.
//!
//! Every protected handler takes a `Caller`; the sink's query routes, which
//! know nothing of keys, get [`require_key`] as a layer. A request without a
//! key, with one that is not a chit key, with an unknown or wrong one, or
//! with a revoked one is answered 401 with `WWW-Authenticate: Bearer`;
//! the scope checks that follow (`may_submit`, `is_admin`) are the
//! handlers' and answer 403.

use crate::error::GatewayError;
use crate::keys;
use crate::state::GatewayState;
use axum::extract::{FromRequestParts, Request, State};
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use axum::middleware::Next;
use axum::response::Response;

/// The key a request came with, once checked: its id, name and scopes.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The key's id (not secret).
    pub key_id: String,
    /// The key's name, for logs.
    pub name: String,
    /// Task types it may submit (`command.execute`, `command.*`, `*`), and
    /// `admin` for replay and purge.
    pub scopes: Vec<String>,
}

impl Caller {
    /// True when the key may submit tasks of `task_type`.
    pub fn may_submit(&self, task_type: &str) -> bool {
        self.scopes.iter().any(|s| {
            s == "*"
                || s == task_type
                || s.strip_suffix('*')
                    .is_some_and(|prefix| prefix.ends_with('.') && task_type.starts_with(prefix))
        })
    }

    /// True when the key may replay and purge dead letters.
    pub fn is_admin(&self) -> bool {
        self.scopes.iter().any(|s| s == keys::ADMIN_SCOPE)
    }
}

impl FromRequestParts<GatewayState> for Caller {
    type Rejection = GatewayError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &GatewayState,
    ) -> Result<Self, Self::Rejection> {
        // A layer may have checked the key already.
        if let Some(caller) = parts.extensions.get::<Caller>() {
            return Ok(caller.clone());
        }
        let caller = authenticate(parts, state).await?;
        parts.extensions.insert(caller.clone());
        Ok(caller)
    }
}

/// A layer for routes whose handlers do not take a [`Caller`] (the sink's
/// query router): any valid key passes.
pub(crate) async fn require_key(
    State(state): State<GatewayState>,
    request: Request,
    next: Next,
) -> Result<Response, GatewayError> {
    let (mut parts, body) = request.into_parts();
    Caller::from_request_parts(&mut parts, &state).await?;
    Ok(next.run(Request::from_parts(parts, body)).await)
}

async fn authenticate(parts: &Parts, state: &GatewayState) -> Result<Caller, GatewayError> {
    let unauthenticated = |m: &str| Err(GatewayError::Unauthenticated(m.to_owned()));
    let Some(header) = parts.headers.get(AUTHORIZATION) else {
        return unauthenticated(
            "no API key: send the header `Authorization: Bearer chit_...` \
             (make a key with `chit gateway keys add`)",
        );
    };
    let Some(token) = header
        .to_str()
        .ok()
        .and_then(|h| h.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim())
    else {
        return unauthenticated("the Authorization header must be `Bearer <API key>`");
    };
    let Some(parsed) = keys::parse(token) else {
        return unauthenticated("not a chit API key (they look like chit_<id>_<secret>)");
    };
    let record = state.store.api_key(parsed.id).await.map_err(|e| {
        tracing::error!(error = %e, "cannot read API keys from the store");
        GatewayError::Unavailable("the key store cannot be read; try again".into())
    })?;
    // An unknown id and a wrong secret get the same answer.
    let Some(record) = record.filter(|r| keys::verify(r, parsed.secret)) else {
        tracing::debug!(key_id = %parsed.id, "unknown API key or wrong secret");
        return unauthenticated("unknown API key");
    };
    if record.revoked_at.is_some() {
        tracing::info!(key_id = %record.key_id, name = %record.name, "revoked API key used");
        return Err(GatewayError::Unauthenticated(format!(
            "API key {} was revoked",
            record.key_id
        )));
    }
    Ok(Caller {
        key_id: record.key_id,
        name: record.name,
        scopes: record.scopes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caller(scopes: &[&str]) -> Caller {
        Caller {
            key_id: "k".into(),
            name: "n".into(),
            scopes: scopes.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn scopes_match_a_type_a_prefix_or_everything() {
        let c = caller(&["command.execute"]);
        assert!(c.may_submit("command.execute"));
        assert!(!c.may_submit("command.executes") && !c.may_submit("noop"));

        let c = caller(&["command.*"]);
        assert!(c.may_submit("command.execute") && c.may_submit("command.other"));
        assert!(!c.may_submit("command") && !c.may_submit("commander.x") && !c.may_submit("noop"));

        let c = caller(&["*"]);
        assert!(c.may_submit("anything.at-all"));
        assert!(!c.is_admin(), "`*` is every task type, not admin");

        let c = caller(&["admin"]);
        assert!(c.is_admin());
        assert!(
            !c.may_submit("command.execute"),
            "admin submits nothing by itself"
        );

        assert!(!caller(&[]).may_submit("noop"));
    }
}
