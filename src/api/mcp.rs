//! `/mcp`: the MCP server (`crate::mcp`) over Streamable HTTP, behind the same API keys and
//! workspaces as the REST API. Every request is authenticated on its own and carries its
//! workspace to the handler, so a session never outlives a revoked key and a key only ever
//! sees its own workspace's workflows. A session belongs to the workspace that opened it:
//! another workspace's key presenting its id gets 404, as for an unknown session. The
//! Origin of every request (GET included) is checked, as the MCP specification asks.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};

use super::auth::Caller;
use super::error::ApiError;
use super::extract::MAX_BODY;
use super::guard::foreign_origin;
use super::state::AppState;
use crate::mcp::{DEFAULT_WAIT, McpServer, Scope};

pub type Service = Arc<Mcp>;

/// How many session owners are remembered; past that the oldest are forgotten (a session
/// whose owner is forgotten still works, judged by each request's key alone).
const MAX_SESSIONS: usize = 10_000;

const SESSION_HEADER: &str = "mcp-session-id";

pub struct Mcp {
    http: StreamableHttpService<McpServer, LocalSessionManager>,
    /// Session id → the workspace that opened it, oldest first.
    owners: Mutex<(HashMap<String, String>, VecDeque<String>)>,
}

impl Mcp {
    fn owner(&self, session: &str) -> Option<String> {
        let owners = self
            .owners
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        owners.0.get(session).cloned()
    }

    fn record(&self, session: &str, workspace_id: &str) {
        let mut guard = self
            .owners
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let (map, order) = &mut *guard;
        if map
            .insert(session.to_string(), workspace_id.to_string())
            .is_none()
        {
            order.push_back(session.to_string());
        }
        while order.len() > MAX_SESSIONS {
            if let Some(old) = order.pop_front() {
                map.remove(&old);
            }
        }
    }
}

/// The Streamable HTTP service, one per router.
pub fn service(state: &AppState) -> Service {
    let engine = state.engine.clone();
    let config = StreamableHttpServerConfig::default()
        // Host and Origin are this server's to judge (`guard`, `--allow-origin`,
        // `--public-url`): rmcp's own lists would refuse every non-loopback deployment.
        .disable_allowed_hosts()
        .disable_allowed_origins()
        .with_max_request_body_bytes(MAX_BODY)
        .with_sse_keep_alive(Some(Duration::from_secs(15)));
    Arc::new(Mcp {
        http: StreamableHttpService::new(
            move || Ok(McpServer::http(engine.clone(), DEFAULT_WAIT)),
            Arc::new(LocalSessionManager::default()),
            config,
        ),
        owners: Mutex::default(),
    })
}

/// Any method on `/mcp`: check the Origin and the key, then hand the request to rmcp with
/// the caller's workspace in its extensions.
pub async fn handle(
    State(state): State<AppState>,
    service: Service,
    mut req: Request,
) -> Result<Response, ApiError> {
    if let Some(refused) = foreign_origin(&state, req.headers(), req.uri()) {
        return Err(refused);
    }
    let (mut parts, body) = req.into_parts();
    let caller = <Caller as axum::extract::FromRequestParts<AppState>>::from_request_parts(
        &mut parts, &state,
    )
    .await?;
    let session = parts
        .headers
        .get(SESSION_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    if let Some(s) = &session
        && service
            .owner(s)
            .is_some_and(|owner| owner != caller.workspace_id)
    {
        return Err(ApiError::NotFound(
            "no such MCP session for this API key's workspace: initialize a new one".into(),
        ));
    }
    let deleting = parts.method == axum::http::Method::DELETE;
    req = Request::from_parts(parts, body);
    let workspace_id = caller.workspace_id.clone();
    req.extensions_mut().insert(Scope {
        workspace_id: caller.workspace_id,
        via: caller.actor,
    });
    let resp = service.http.handle(req).await;
    if session.is_none()
        && let Some(opened) = resp
            .headers()
            .get(SESSION_HEADER)
            .and_then(|v| v.to_str().ok())
    {
        service.record(opened, &workspace_id);
    }
    let mut resp = resp.map(axum::body::Body::new).into_response();
    // rmcp answers a session's DELETE with 202; clients expect 200 or 204 (Python's SDK
    // logs a failure for anything else), and the session is gone: say 204.
    if deleting && resp.status() == axum::http::StatusCode::ACCEPTED {
        *resp.status_mut() = axum::http::StatusCode::NO_CONTENT;
    }
    Ok(resp)
}
