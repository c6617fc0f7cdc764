//! The Model Context Protocol (docs/mcp.md): every workflow of a workspace is a tool for
//! outside agents, beside management tools for runs. One handler serves both transports:
//! stdio (`stepwise mcp`, one workspace) and Streamable HTTP at `/mcp` (`stepwise serve`,
//! the workspace of each request's API key, which `src/api` puts in the request).
//!
//! The handler calls the same `Engine` methods the REST API calls; it never writes state.

mod call;
mod changes;
mod tools;
mod view;

use std::time::Duration;

use rmcp::model::{
    CacheScope, CallToolRequestParams, CallToolResponse, Implementation, ListToolsResult,
    PaginatedRequestParams, ServerCapabilities, ServerConfig, SubscriptionFilter,
};
use rmcp::service::{NotificationContext, RequestContext, SubscriptionContext};
use rmcp::{ErrorData, RoleServer, ServerHandler};

use crate::engine::Engine;

pub use tools::MANAGEMENT_TOOLS;

/// How long a workflow tool call waits for its run to finish, pause or fail before it
/// answers with the run as it is (the run goes on).
pub const DEFAULT_WAIT: Duration = Duration::from_secs(30);

/// Who calls: the workspace the tools come from, and the caller's API key (`key:<prefix>`),
/// or `stdio`. The HTTP mount puts one in each request's extensions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scope {
    pub workspace_id: String,
    pub via: String,
}

/// The MCP server: one per session (HTTP) or process (stdio); cheap to clone.
#[derive(Clone)]
pub struct McpServer {
    engine: Engine,
    /// Set for stdio; over HTTP each request brings its own.
    fixed: Option<Scope>,
    wait: Duration,
}

impl McpServer {
    /// For stdio: every call acts in `workspace_id`.
    pub fn stdio(engine: Engine, workspace_id: &str, wait: Duration) -> McpServer {
        McpServer {
            engine,
            fixed: Some(Scope {
                workspace_id: workspace_id.to_string(),
                via: "stdio".into(),
            }),
            wait,
        }
    }

    /// For HTTP: each request's `Scope` comes in its `http::request::Parts` extensions.
    pub fn http(engine: Engine, wait: Duration) -> McpServer {
        McpServer {
            engine,
            fixed: None,
            wait,
        }
    }

    fn scope(&self, ctx: &RequestContext<RoleServer>) -> Result<Scope, ErrorData> {
        if let Some(s) = &self.fixed {
            return Ok(s.clone());
        }
        ctx.extensions
            .get::<axum::http::request::Parts>()
            .and_then(|p| p.extensions.get::<Scope>())
            .cloned()
            // The HTTP mount authenticates every request first; a request without a scope
            // never reached it.
            .ok_or_else(|| ErrorData::internal_error("the request has no workspace", None))
    }
}

/// The client's name: from the handshake, or (protocol 2026-07-28, no handshake) from the
/// request's `_meta`.
fn client_name(ctx: &RequestContext<RoleServer>) -> String {
    if let Some(info) = ctx.peer.peer_info() {
        return info.client_info.name.clone();
    }
    ctx.meta
        .0
        .0
        .get("io.modelcontextprotocol/clientInfo")
        .and_then(|c| c.get("name"))
        .and_then(serde_json::Value::as_str)
        .filter(|n| !n.is_empty())
        .map_or_else(|| "unnamed MCP client".to_string(), str::to_string)
}

impl ServerHandler for McpServer {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(
            ServerCapabilities::builder()
                .enable_tools()
                .enable_tool_list_changed()
                .build(),
        )
        .with_server_info(Implementation::new("stepwise", env!("CARGO_PKG_VERSION")))
        .with_instructions(
            "Each workflow is a tool: calling it starts a run and answers with the run's \
                 output once it finishes. A run that pauses for an approval or waits for a \
                 signal answers with its runId, status and pendingAction: answer it with \
                 runs_approve, runs_reject or runs_signal, and follow it with runs_get.",
        )
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        let scope = self.scope(&ctx)?;
        let mut result =
            ListToolsResult::with_all_items(tools::list(&self.engine, &scope.workspace_id).await?);
        // The list is the workspace's, and changes whenever a definition is applied.
        result.cache_scope = Some(CacheScope::Private);
        result.ttl_ms = Some(0);
        Ok(result)
    }

    async fn on_initialized(&self, context: NotificationContext<RoleServer>) {
        self.notify_session(&context);
    }

    fn accepted_subscription_filter(
        &self,
        _requested: &SubscriptionFilter,
    ) -> Option<SubscriptionFilter> {
        Some(changes::accepted())
    }

    async fn listen(&self, context: SubscriptionContext) -> Result<(), ErrorData> {
        self.listen_changes(context).await
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        ctx: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let scope = self.scope(&ctx)?;
        let caller = call::Caller {
            scope,
            client: client_name(&ctx),
        };
        let args = request.arguments.unwrap_or_default();
        let result = if MANAGEMENT_TOOLS.contains(&request.name.as_ref()) {
            call::manage(&self.engine, &caller, &request.name, args, self.wait).await?
        } else {
            call::workflow(&self.engine, &caller, &request.name, args, self.wait).await?
        };
        Ok(result.into())
    }
}
