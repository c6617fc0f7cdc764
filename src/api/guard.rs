//! Cross-origin protection. A web page can make the visitor's browser send requests to any
//! server it names, this one on 127.0.0.1 included; the browser marks them with an `Origin`
//! header. A request that changes something (POST, PUT, PATCH, DELETE) and carries an
//! `Origin` is served only when that origin is this server's own or allowed with
//! `--allow-origin`, whatever the auth mode. Clients that are not browsers (the CLI, curl,
//! webhook senders) send no `Origin` and are not affected.

use axum::extract::{Request, State};
use axum::http::header::{HOST, ORIGIN};
use axum::http::{HeaderMap, Method, Uri};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::error::ApiError;
use super::origin::Origin;
use super::state::AppState;

/// Where the request says it was sent: its `Host` header (or the URI's authority), taken
/// with the origin's scheme, since the server cannot tell http from https behind a proxy.
fn request_origin(headers: &HeaderMap, uri: &Uri, scheme: &str) -> Option<Origin> {
    let host = headers
        .get(HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_string)
        .or_else(|| uri.authority().map(ToString::to_string))?;
    Origin::of_host(&host, scheme)
}

fn trusted(state: &AppState, origin: &Origin, headers: &HeaderMap, uri: &Uri) -> bool {
    if state.allowed_origins.contains(origin) {
        return true;
    }
    if state
        .public_url
        .as_deref()
        .and_then(Origin::of_url)
        .is_some_and(|public| public == *origin)
    {
        return true;
    }
    let same = request_origin(headers, uri, origin.scheme()).is_some_and(|own| own == *origin);
    // Without auth a page on any name that resolves to 127.0.0.1 (DNS rebinding) would have
    // a matching Host; the server listens on loopback only, so only loopback names are its own.
    same && (!state.insecure_no_auth || origin.is_loopback())
}

fn mutating(method: &Method) -> bool {
    matches!(
        *method,
        Method::POST | Method::PUT | Method::PATCH | Method::DELETE
    )
}

/// Middleware: refuse a mutating request from an origin that is not trusted (403).
pub async fn check_origin(State(state): State<AppState>, req: Request, next: Next) -> Response {
    if !mutating(req.method()) {
        return next.run(req).await;
    }
    match foreign_origin(&state, req.headers(), req.uri()) {
        None => next.run(req).await,
        Some(e) => e.into_response(),
    }
}

/// The refusal of a request whose `Origin` is not trusted, whatever its method (`/mcp`
/// checks every request, as the MCP specification asks); `None` without an `Origin`.
pub fn foreign_origin(state: &AppState, headers: &HeaderMap, uri: &Uri) -> Option<ApiError> {
    let mut origins = headers.get_all(ORIGIN).iter();
    let sent = origins.next()?;
    let text = sent.to_str().unwrap_or("(not text)");
    let ok = origins.next().is_none()
        && Origin::parse(text).is_ok_and(|o| trusted(state, &o, headers, uri));
    if ok {
        return None;
    }
    Some(ApiError::Forbidden(format!(
        "a browser page at `{text}` may not change anything on this server: only its own origin may; \
         allow another with `stepwise serve --allow-origin ORIGIN`"
    )))
}
