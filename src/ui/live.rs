//! Live updates: a server-sent event stream per page. It says only *that* something the
//! page shows changed (`event: change`); the page then re-fetches its parts, so what it
//! shows always comes from the same handlers as a reload.

use std::collections::HashMap;
use std::convert::Infallible;
use std::time::Duration;

use axum::extract::{Query, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use futures_util::stream::{self, Stream};
use tokio::sync::broadcast::error::RecvError;

use super::layout;
use super::session::Viewer;
use crate::api::AppState;
use crate::engine::Update;

/// Changes closer together than this are reported once.
const QUIET: Duration = Duration::from_millis(200);
/// A stream ends after this long (the browser reconnects), so none outlives a shutdown long.
const LIFETIME: Duration = Duration::from_secs(120);

struct Watch {
    state: AppState,
    workspace_id: String,
    /// One run, or every run of the workspace.
    run: Option<String>,
    updates: tokio::sync::broadcast::Receiver<Update>,
    /// Which workspace each run seen belongs to (updates carry only the run id).
    owners: HashMap<String, bool>,
    deadline: tokio::time::Instant,
}

impl Watch {
    async fn ours(&mut self, run_id: &str) -> bool {
        if let Some(run) = &self.run {
            return run == run_id;
        }
        if let Some(&mine) = self.owners.get(run_id) {
            return mine;
        }
        let mine = self
            .state
            .engine
            .run(&self.workspace_id, run_id)
            .await
            .is_ok();
        if self.owners.len() > 10_000 {
            self.owners.clear();
        }
        self.owners.insert(run_id.to_string(), mine);
        mine
    }

    /// Wait for the next change this page shows; `None` ends the stream.
    async fn next(&mut self) -> Option<()> {
        loop {
            let got = tokio::select! {
                r = self.updates.recv() => r,
                () = tokio::time::sleep_until(self.deadline) => return None,
                () = shutdown() => return None,
            };
            match got {
                Ok(u) => {
                    if self.ours(&u.run_id).await {
                        break;
                    }
                }
                Err(RecvError::Lagged(_)) => break,
                Err(RecvError::Closed) => return None,
            }
        }
        // Let a burst settle, then drop what came in meanwhile: one event for all of it.
        tokio::time::sleep(QUIET).await;
        while let Ok(_) | Err(tokio::sync::broadcast::error::TryRecvError::Lagged(_)) =
            self.updates.try_recv()
        {}
        Some(())
    }
}

/// Ctrl-C or SIGTERM: the server is stopping, and its graceful shutdown waits for streams.
async fn shutdown() {
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(t) => t,
                Err(_) => return std::future::pending().await,
            };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

pub async fn stream(
    State(state): State<AppState>,
    viewer: Viewer,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let run = q.get("run").cloned();
    if let Some(id) = &run
        && state.engine.run(&viewer.workspace_id, id).await.is_err()
    {
        return layout::not_found("no such run");
    }
    let watch = Watch {
        updates: state.engine.subscribe(),
        state,
        workspace_id: viewer.workspace_id,
        run,
        owners: HashMap::new(),
        deadline: tokio::time::Instant::now() + LIFETIME,
    };
    Sse::new(events(watch))
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response()
}

fn events(watch: Watch) -> impl Stream<Item = Result<Event, Infallible>> {
    // The first event tells the browser how soon to reconnect when the stream ends. A run's
    // page also refreshes once at once: the run may have moved between the page's render
    // and this subscription (a run just started often has).
    let hello = Event::default()
        .retry(Duration::from_secs(1))
        .comment("live");
    let first = watch.run.is_some().then(change);
    stream::iter(std::iter::once(Ok(hello)).chain(first.map(Ok)))
        .chain(stream::unfold(watch, |mut w| async move {
            w.next().await.map(|()| (Ok(change()), w))
        }))
}

fn change() -> Event {
    // An event without data is never dispatched by browsers.
    Event::default().event("change").data("changed")
}
