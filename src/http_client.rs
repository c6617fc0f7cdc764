//! The one way stepwise builds outgoing HTTP clients and reads their answers: the `http`
//! action, agent (model) calls, poll triggers, OTLP export and the CLI's `--server` client
//! share the timeouts, the redirect policy and the bound on response bodies set here.

use std::time::Duration;

/// The most of a response body kept by default (10 MiB). The `http` action can change it
/// per step with `with.max_response_bytes`.
pub const DEFAULT_MAX_BODY: u64 = 10 * MIB;

/// The most a step may ask for with `max_response_bytes` (1 GiB): beyond that one response
/// could take the server's memory, and the database would hold it.
pub const MAX_BODY_CEILING: u64 = 1024 * MIB;

const MIB: u64 = 1024 * 1024;

/// Redirects followed before a request fails. reqwest drops `Authorization`, `Cookie` and
/// `Proxy-Authorization` when a redirect leaves the original host.
pub const MAX_REDIRECTS: usize = 5;

/// Client-wide settings; callers may still give one request its own `timeout`.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    pub user_agent: String,
    /// Setting up a connection (TCP and TLS) that takes longer fails the request.
    pub connect_timeout: Duration,
    /// The limit of a request that sets no timeout of its own, body included.
    pub timeout: Duration,
}

impl Default for ClientOptions {
    fn default() -> Self {
        Self {
            user_agent: concat!("stepwise/", env!("CARGO_PKG_VERSION")).to_string(),
            connect_timeout: Duration::from_secs(10),
            // The engine's default step timeout: a request needs no longer than its step.
            timeout: Duration::from_secs(300),
        }
    }
}

impl ClientOptions {
    /// The CLI's `--server` client: the server may hold a `--wait` request for 300 s.
    pub fn cli() -> Self {
        Self {
            user_agent: concat!("stepwise-cli/", env!("CARGO_PKG_VERSION")).to_string(),
            timeout: Duration::from_secs(330),
            ..Self::default()
        }
    }
}

/// Build a client with `opts`, the redirect policy and rustls (ring) for TLS.
pub fn build(opts: &ClientOptions) -> Result<reqwest::Client, reqwest::Error> {
    // reqwest is built without a default crypto provider; ring is ours (fast to build).
    // Installing twice is harmless: the first provider stays.
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .user_agent(opts.user_agent.as_str())
        .connect_timeout(opts.connect_timeout)
        .timeout(opts.timeout)
        .redirect(reqwest::redirect::Policy::limited(MAX_REDIRECTS))
        .build()
}

/// Why a response body could not be read.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("the response body exceeds the {} limit", size(*limit))]
    TooLarge { limit: u64 },
    #[error("reading the response body: {}", error_chain(.0))]
    Read(#[source] reqwest::Error),
}

impl BodyError {
    pub fn is_timeout(&self) -> bool {
        matches!(self, BodyError::Read(e) if e.is_timeout())
    }
}

/// Read a response body of at most `limit` bytes. A Content-Length over the limit fails
/// before anything is read; otherwise the body is read chunk by chunk and the read stops
/// as soon as it passes the limit, so a large answer never sits in memory whole.
pub async fn read_body_limited(
    mut resp: reqwest::Response,
    limit: u64,
) -> Result<Vec<u8>, BodyError> {
    // reqwest reports the length hyper will deliver: 0 for HEAD, 204 and 304.
    if resp.content_length().is_some_and(|n| n > limit) {
        return Err(BodyError::TooLarge { limit });
    }
    // A lying Content-Length must not reserve memory it never fills.
    let reserve = resp.content_length().unwrap_or(0).min(MIB);
    let mut body = Vec::with_capacity(usize::try_from(reserve).unwrap_or(0));
    while let Some(chunk) = resp.chunk().await.map_err(BodyError::Read)? {
        if u64::try_from(body.len() + chunk.len()).unwrap_or(u64::MAX) > limit {
            return Err(BodyError::TooLarge { limit });
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// A byte count as people read it: `10 MiB`, `512 KiB`, `1000 bytes`.
pub fn size(bytes: u64) -> String {
    const KIB: u64 = 1024;
    if bytes >= MIB && bytes.is_multiple_of(MIB) {
        format!("{} MiB", bytes / MIB)
    } else if bytes >= KIB && bytes.is_multiple_of(KIB) {
        format!("{} KiB", bytes / KIB)
    } else {
        format!("{bytes} bytes")
    }
}

/// An error with its causes, which reqwest keeps apart (`error sending request: … refused`).
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(inner) = cur {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        cur = inner.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_as_people_write_them() {
        assert_eq!(size(DEFAULT_MAX_BODY), "10 MiB");
        assert_eq!(size(2048), "2 KiB");
        assert_eq!(size(1000), "1000 bytes");
        assert_eq!(size(MIB + 1), "1048577 bytes");
    }
}
