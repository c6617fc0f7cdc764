//! `/mcp`: the MCP server (`crate::mcp`) over Streamable HTTP, behind the same API keys and
//! workspaces as the REST API. Every request is authenticated on its own and carries its
//! workspace to the handler, so a session never outlives a revoked key and a key only ever
//! sees its own workspace's workflows. The Origin of every request (GET included) is
//! checked, as the MCP specification asks.

use std::sync::Arc;
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

pub type Service = Arc<StreamableHttpService<McpServer, LocalSessionManager>>;

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
    Arc::new(StreamableHttpService::new(
        move || Ok(McpServer::http(engine.clone(), DEFAULT_WAIT)),
        Arc::new(LocalSessionManager::default()),
        config,
    ))
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
    req = Request::from_parts(parts, body);
    req.extensions_mut().insert(Scope {
        workspace_id: caller.workspace_id,
        via: caller.actor,
    });
    Ok(service
        .handle(req)
        .await
        .map(axum::body::Body::new)
        .into_response())
}
