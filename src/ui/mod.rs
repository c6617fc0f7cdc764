//! The web UI at `/ui`: server-rendered HTML (maud), vendored htmx and a little script,
//! live updates over server-sent events. Everything ships inside the binary.
//!
//! Pages read through the same engine calls and store queries the REST API uses, and act
//! through the same `Engine` commands, so the UI and the API cannot disagree. The UI signs
//! people in with an API key (a hashed, expiring session in an `HttpOnly` cookie) and shows
//! only that key's workspace; every change it asks for carries a CSRF token and an `Origin`.

mod actions;
mod assets;
mod catalog;
mod detail;
mod forms;
mod graph;
mod history;
mod layout;
mod live;
mod session;
mod text;
mod timeline;

use axum::Router;
use axum::response::Redirect;
use axum::routing::{get, post};

use crate::api::AppState;

pub use session::{COOKIE, SESSION_TTL};

/// The UI's routes; `api::router` mounts them beside the API's.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/", get(|| async { Redirect::to("/ui") }))
        .route("/ui", get(|| async { Redirect::to("/ui/runs") }))
        .route("/ui/assets/{file}", get(assets::serve))
        .route("/ui/sign-in", get(session::form).post(session::sign_in))
        .route("/ui/sign-out", post(session::sign_out))
        .route("/ui/live", get(live::stream))
        .route("/ui/runs", get(history::page))
        .route("/ui/runs/{id}", get(detail::page))
        .route("/ui/runs/{id}/cancel", post(actions::cancel))
        .route("/ui/runs/{id}/retry", post(actions::retry))
        .route("/ui/runs/{id}/decide", post(actions::decide))
        .route("/ui/runs/{id}/signal", post(actions::signal))
        .route("/ui/approvals", get(actions::inbox))
        .route("/ui/definitions", get(catalog::definitions))
        .route("/ui/definitions/{slug}", get(catalog::definition))
        .route("/ui/definitions/{slug}/run", post(actions::start))
        .route("/ui/triggers", get(catalog::triggers))
}
