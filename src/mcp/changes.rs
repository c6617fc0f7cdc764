//! `notifications/tools/list_changed`: a connected client hears when a definition of its
//! workspace gets a new version (its tool list is one tool per workflow). Clients of
//! protocol 2026-07-28 ask for it with `subscriptions/listen`; older sessions get it on
//! their session once initialized.

use std::time::Duration;

use rmcp::model::SubscriptionFilter;
use rmcp::service::{NotificationContext, Peer, SubscriptionContext};
use rmcp::{ErrorData, RoleServer};
use tokio::sync::broadcast::{self, error::RecvError};

use super::{McpServer, Scope};
use crate::engine::DefinitionChange;

/// How often a waiting legacy session checks that its client is still there.
const CHECK_CLOSED: Duration = Duration::from_secs(30);

/// The next change to `workspace_id`'s definitions; `false` once the engine is gone.
async fn changed(rx: &mut broadcast::Receiver<DefinitionChange>, workspace_id: &str) -> bool {
    loop {
        match rx.recv().await {
            Ok(c) if c.workspace_id == workspace_id => return true,
            Ok(_) => {}
            // Missed some: one notification covers them all.
            Err(RecvError::Lagged(_)) => return true,
            Err(RecvError::Closed) => return false,
        }
    }
}

/// What `subscriptions/listen` may deliver: the tool list's changes.
pub(super) fn accepted() -> SubscriptionFilter {
    SubscriptionFilter::builder().tools_list_changed().build()
}

impl McpServer {
    /// A `subscriptions/listen` request: notify until the client cancels it.
    pub(super) async fn listen_changes(&self, sub: SubscriptionContext) -> Result<(), ErrorData> {
        let scope = self.scope(sub.request_context())?;
        let mut rx = self.engine.subscribe_definitions();
        loop {
            tokio::select! {
                () = sub.cancelled() => return Ok(()),
                more = changed(&mut rx, &scope.workspace_id) => {
                    if !more || sub.sink().notify_tool_list_changed().await.is_err() {
                        return Ok(());
                    }
                }
            }
        }
    }

    /// A session that began with `initialize`: notify it on its session until it closes.
    pub(super) fn notify_session(&self, context: &NotificationContext<RoleServer>) {
        let scope: Option<Scope> = self.fixed.clone().or_else(|| {
            context
                .extensions
                .get::<axum::http::request::Parts>()
                .and_then(|p| p.extensions.get::<Scope>())
                .cloned()
        });
        let Some(scope) = scope else { return };
        let rx = self.engine.subscribe_definitions();
        tokio::spawn(forward(rx, scope.workspace_id, context.peer.clone()));
    }
}

async fn forward(
    mut rx: broadcast::Receiver<DefinitionChange>,
    workspace_id: String,
    peer: Peer<RoleServer>,
) {
    let mut check = tokio::time::interval(CHECK_CLOSED);
    loop {
        tokio::select! {
            more = changed(&mut rx, &workspace_id) => {
                if !more || peer.notify_tool_list_changed().await.is_err() {
                    return;
                }
            }
            _ = check.tick() => {
                if peer.is_transport_closed() {
                    return;
                }
            }
        }
    }
}
