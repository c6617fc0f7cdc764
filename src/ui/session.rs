//! Sign-in with an API key. The browser holds an opaque session token in a cookie
//! (`HttpOnly; SameSite=Strict`, `Secure` over https); the store keeps only its SHA-256,
//! with an expiry, tied to the key: revoking the key or signing out ends the session.
//! Changes need a CSRF token derived from the session token (a page on another origin can
//! neither read the cookie nor the token) and an `Origin` header, which the API's origin
//! guard has already checked for every mutating request.

use std::sync::OnceLock;
use std::time::Duration;

use axum::extract::{FromRequest, FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use maud::html;
use sha2::{Digest, Sha256};

use super::forms::Form;
use super::layout;
use crate::api::{AppState, hash_key};
use crate::store::{DEFAULT_WORKSPACE, UiSession};

/// The session cookie's name.
pub const COOKIE: &str = "stepwise_session";
/// How long a session lasts after sign-in.
pub const SESSION_TTL: Duration = Duration::from_secs(12 * 3600);

/// Who is looking: their workspace, how actions record them, and the CSRF token forms carry.
#[derive(Debug, Clone)]
pub struct Viewer {
    pub workspace_id: String,
    pub actor: String,
    pub csrf: String,
    /// False under `--insecure-no-auth` (nothing to sign out of).
    pub signed_in: bool,
}

fn sha(text: &str) -> String {
    format!("{:x}", Sha256::digest(text.as_bytes()))
}

/// Without auth there is no session: the token is derived from a secret of this process.
fn process_secret() -> &'static str {
    static SECRET: OnceLock<String> = OnceLock::new();
    SECRET.get_or_init(|| {
        format!(
            "{}{}",
            uuid::Uuid::new_v4().simple(),
            uuid::Uuid::new_v4().simple()
        )
    })
}

fn csrf_for(secret: &str) -> String {
    sha(&format!("stepwise-csrf:{secret}"))
}

fn cookie_token(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE)
        .map(|(_, v)| v.trim().to_string())
        .filter(|v| !v.is_empty())
}

/// Not signed in: pages send the browser to the sign-in form (htmx requests are told with
/// `HX-Redirect`, since a redirect would be swapped into the page).
pub struct SignInFirst {
    next: String,
    htmx: bool,
}

impl IntoResponse for SignInFirst {
    fn into_response(self) -> Response {
        let to = format!(
            "/ui/sign-in?next={}",
            serde_urlencoded::to_string([("", &self.next)])
                .unwrap_or_default()
                .trim_start_matches('=')
        );
        if self.htmx {
            return (StatusCode::UNAUTHORIZED, [("hx-redirect", to)]).into_response();
        }
        Redirect::to(&to).into_response()
    }
}

impl FromRequestParts<AppState> for Viewer {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Response> {
        if state.insecure_no_auth {
            return Ok(Viewer {
                workspace_id: DEFAULT_WORKSPACE.into(),
                actor: "ui".into(),
                csrf: csrf_for(process_secret()),
                signed_in: false,
            });
        }
        let refuse = || {
            let next = parts
                .uri
                .path_and_query()
                .map_or("/ui/runs".to_string(), |p| p.as_str().to_string());
            SignInFirst {
                next: if parts.method == axum::http::Method::GET {
                    next
                } else {
                    "/ui/runs".into()
                },
                htmx: parts.headers.contains_key("hx-request"),
            }
            .into_response()
        };
        let Some(token) = cookie_token(&parts.headers) else {
            return Err(refuse());
        };
        let store = state.engine.store().clone();
        let (hash, now) = (hash_key(&token), state.engine.clock().now());
        let found = tokio::task::spawn_blocking(move || store.ui_session(&hash, now))
            .await
            .map_err(|e| layout::failure(&e.to_string()))?
            .map_err(|e| layout::failure(&e.to_string()))?;
        match found {
            Some(s) => Ok(Viewer {
                workspace_id: s.workspace_id,
                actor: s.actor,
                csrf: csrf_for(&token),
                signed_in: true,
            }),
            None => Err(refuse()),
        }
    }
}

/// A change must come from a page of this server: an `Origin` (checked by the API's guard
/// before this runs) and the viewer's CSRF token, as a form field or an htmx header.
pub fn check_change(viewer: &Viewer, headers: &HeaderMap, form: &Form) -> Result<(), Refused> {
    let forbidden = Refused;
    if !headers.contains_key(header::ORIGIN) {
        return Err(forbidden(
            "this change came without an Origin header: it must be sent from a page of this server",
        ));
    }
    let sent = headers
        .get("x-csrf-token")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .or_else(|| form.get("_csrf").map(str::to_string));
    if sent.as_deref() != Some(viewer.csrf.as_str()) {
        return Err(forbidden(
            "this form is out of date or came from another site (its CSRF token does not match): reload the page and try again",
        ));
    }
    Ok(())
}

/// A change someone asked for: who (signed in), the form they sent, its Origin and CSRF
/// token already checked. Every UI handler that changes something takes one.
pub struct Change {
    pub viewer: Viewer,
    pub form: Form,
}

impl FromRequest<AppState> for Change {
    type Rejection = Response;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Response> {
        let (mut parts, body) = req.into_parts();
        let viewer = Viewer::from_request_parts(&mut parts, state).await?;
        let headers = parts.headers.clone();
        let form = Form::from_request(Request::from_parts(parts, body), state).await?;
        check_change(&viewer, &headers, &form).map_err(IntoResponse::into_response)?;
        Ok(Change { viewer, form })
    }
}

/// A change refused before it was looked at (403).
#[derive(Debug)]
pub struct Refused(&'static str);

impl IntoResponse for Refused {
    fn into_response(self) -> Response {
        (
            StatusCode::FORBIDDEN,
            layout::bare(
                "Refused",
                html! { main { h1 { "Refused" } p { (self.0) } } },
            ),
        )
            .into_response()
    }
}

/// Was the request made over https (directly or through a proxy that says so)?
fn is_https(headers: &HeaderMap, state: &AppState) -> bool {
    let forwarded = headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|p| p.trim().eq_ignore_ascii_case("https"));
    let rfc = headers
        .get("forwarded")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|f| f.to_ascii_lowercase().contains("proto=https"));
    let public = state
        .public_url
        .as_deref()
        .is_some_and(|u| u.starts_with("https://"));
    forwarded || rfc || public
}

fn cookie(value: &str, max_age: u64, secure: bool) -> HeaderValue {
    let text = format!(
        "{COOKIE}={value}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age}{}",
        if secure { "; Secure" } else { "" }
    );
    HeaderValue::from_str(&text).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// Only a path of this server may follow a sign-in (no open redirect).
fn safe_next(next: Option<&str>) -> String {
    match next {
        Some(n) if n.starts_with("/ui") && !n.starts_with("//") && !n.contains('\\') => {
            n.to_string()
        }
        _ => "/ui/runs".into(),
    }
}

fn sign_in_page(next: &str, error: Option<&str>) -> maud::Markup {
    layout::bare(
        "Sign in",
        html! {
            main.signin {
                h1 { "stepwise" }
                form method="post" action="/ui/sign-in" {
                    input type="hidden" name="next" value=(next);
                    label for="key" { "API key" }
                    input #key type="password" name="key" autocomplete="current-password"
                        required autofocus aria-describedby="key-help";
                    p #key-help .muted { "Create one with " code { "stepwise keys create" } ". The UI shows that key's workspace." }
                    @if let Some(e) = error { p.error role="alert" { (e) } }
                    button type="submit" { "Sign in" }
                }
            }
        },
    )
}

pub async fn form(
    State(state): State<AppState>,
    axum::extract::Query(q): axum::extract::Query<std::collections::HashMap<String, String>>,
) -> Response {
    if state.insecure_no_auth {
        return Redirect::to("/ui/runs").into_response();
    }
    sign_in_page(&safe_next(q.get("next").map(String::as_str)), None).into_response()
}

pub async fn sign_in(State(state): State<AppState>, headers: HeaderMap, form: Form) -> Response {
    let next = safe_next(form.get("next"));
    if state.insecure_no_auth {
        return Redirect::to(&next).into_response();
    }
    // Signing in changes nothing yet but starts a session: a foreign page may not do it either.
    if !headers.contains_key(header::ORIGIN) {
        return (
            StatusCode::FORBIDDEN,
            sign_in_page(
                &next,
                Some("sign-in must be sent from this server's own page"),
            ),
        )
            .into_response();
    }
    let key = form.get("key").unwrap_or_default().trim().to_string();
    let store = state.engine.store().clone();
    let now = state.engine.clock().now();
    let key_hash = hash_key(&key);
    let info = {
        let store = store.clone();
        let h = key_hash.clone();
        tokio::task::spawn_blocking(move || store.api_key_info(&h)).await
    };
    let rec = match info {
        Ok(Ok(Some(rec))) if rec.revoked_at.is_none() && !key.is_empty() => rec,
        Ok(Ok(Some(_))) => {
            return (
                StatusCode::UNAUTHORIZED,
                sign_in_page(&next, Some("this API key was revoked")),
            )
                .into_response();
        }
        Ok(Ok(None)) => {
            return (
                StatusCode::UNAUTHORIZED,
                sign_in_page(&next, Some("this is not a valid API key")),
            )
                .into_response();
        }
        Ok(Err(e)) => return layout::failure(&e.to_string()),
        Err(e) => return layout::failure(&e.to_string()),
    };
    let token = format!(
        "sws_{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    );
    let session = UiSession {
        hash: hash_key(&token),
        key_hash,
        workspace_id: rec.workspace_id,
        actor: format!("key:{} (ui)", rec.prefix),
        created_at: now,
        expires_at: now
            .checked_add(jiff::SignedDuration::try_from(SESSION_TTL).unwrap_or_default())
            .unwrap_or(now),
    };
    if let Err(e) = tokio::task::spawn_blocking(move || store.put_ui_session(&session))
        .await
        .map_err(|e| e.to_string())
        .and_then(|r| r.map_err(|e| e.to_string()))
    {
        return layout::failure(&e);
    }
    let mut resp = Redirect::to(&next).into_response();
    resp.headers_mut().insert(
        header::SET_COOKIE,
        cookie(&token, SESSION_TTL.as_secs(), is_https(&headers, &state)),
    );
    resp
}

pub async fn sign_out(State(state): State<AppState>, headers: HeaderMap, form: Form) -> Response {
    if let Some(token) = cookie_token(&headers) {
        // The token itself proves the session; a CSRF token must come with it all the same.
        let viewer = Viewer {
            workspace_id: String::new(),
            actor: String::new(),
            csrf: csrf_for(&token),
            signed_in: true,
        };
        if let Err(r) = check_change(&viewer, &headers, &form) {
            return r.into_response();
        }
        let store = state.engine.store().clone();
        let hash = hash_key(&token);
        if let Ok(Err(e)) =
            tokio::task::spawn_blocking(move || store.delete_ui_session(&hash)).await
        {
            return layout::failure(&e.to_string());
        }
    }
    let mut resp = Redirect::to("/ui/sign-in").into_response();
    resp.headers_mut().insert(
        header::SET_COOKIE,
        cookie("", 0, is_https(&headers, &state)),
    );
    resp
}
