//! API keys: `x-api-key` or `Authorization: Bearer`. Keys are stored hashed; each belongs to
//! a workspace, and every lookup is scoped to it. A revoked key is refused from the next
//! request on.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use sha2::{Digest, Sha256};

use super::error::ApiError;
use super::state::AppState;
use crate::store::DEFAULT_WORKSPACE;

/// The workspace a request acts in, and who made it.
#[derive(Debug, Clone)]
pub struct Caller {
    pub workspace_id: String,
    /// `key:<prefix>` or `anonymous` without auth: recorded as the actor.
    pub actor: String,
}

pub fn hash_key(key: &str) -> String {
    format!("{:x}", Sha256::digest(key.as_bytes()))
}

/// A new key: `stw_` and 40 hex characters.
pub fn new_key() -> String {
    let a = uuid::Uuid::new_v4().simple().to_string();
    let b = uuid::Uuid::new_v4().simple().to_string();
    format!("stw_{}{}", a, &b[..8])
}

fn presented(parts: &Parts) -> Option<String> {
    if let Some(v) = parts.headers.get("x-api-key").and_then(|v| v.to_str().ok()) {
        return Some(v.trim().to_string());
    }
    let auth = parts.headers.get("authorization")?.to_str().ok()?;
    let (scheme, token) = auth.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim().to_string())
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let key = presented(parts);
        if state.insecure_no_auth {
            let cli = parts
                .headers
                .get("user-agent")
                .and_then(|v| v.to_str().ok())
                .is_some_and(|ua| ua.starts_with("stepwise-cli"));
            return Ok(Caller {
                workspace_id: DEFAULT_WORKSPACE.into(),
                actor: if cli { "cli" } else { "anonymous" }.into(),
            });
        }
        let Some(key) = key.filter(|k| !k.is_empty()) else {
            return Err(ApiError::Auth(
                "missing API key: send it in x-api-key or Authorization: Bearer".into(),
            ));
        };
        // One indexed read per request and no cache: `stepwise keys revoke` runs in another
        // process, and a revoked key must fail on its very next request.
        let hash = hash_key(&key);
        let store = state.engine.store().clone();
        let found = tokio::task::spawn_blocking(move || store.api_key_info(&hash))
            .await
            .map_err(|e| ApiError::Internal(e.to_string()))??;
        match found {
            Some(rec) if rec.revoked_at.is_none() => Ok(Caller {
                workspace_id: rec.workspace_id,
                actor: format!("key:{}", rec.prefix),
            }),
            Some(rec) => Err(ApiError::Auth(format!(
                "this API key ({}) was revoked",
                rec.prefix
            ))),
            None => Err(ApiError::Auth("invalid API key".into())),
        }
    }
}
