//! What every handler shares: the engine and the server's settings.

use std::sync::Arc;

use axum::http::HeaderMap;

use super::origin::Origin;
use crate::engine::Engine;

#[derive(Clone)]
pub struct AppState {
    pub engine: Engine,
    pub insecure_no_auth: bool,
    /// Base of `resumeUrl`s; without it, taken from the request's Host.
    pub public_url: Option<String>,
    /// Webhooks, schedules and polls, when the server runs them.
    pub triggers: Option<Arc<crate::triggers::Triggers>>,
    /// Model prices for the usage cost line (`STEPWISE_PRICES`).
    pub prices: serde_json::Value,
    /// Browser origins besides the server's own that may send mutating requests.
    pub allowed_origins: Arc<Vec<Origin>>,
    /// `/metrics` needs no API key (`--metrics-public`).
    pub metrics_public: bool,
}

impl AppState {
    pub fn new(engine: Engine, insecure_no_auth: bool, public_url: Option<String>) -> Self {
        Self {
            engine,
            insecure_no_auth,
            public_url,
            triggers: None,
            prices: std::env::var("STEPWISE_PRICES")
                .ok()
                .and_then(|p| serde_json::from_str(&p).ok())
                .unwrap_or(serde_json::Value::Null),
            allowed_origins: Arc::default(),
            metrics_public: false,
        }
    }

    /// Serve `/metrics` without an API key (`--metrics-public`).
    pub fn with_public_metrics(mut self, public: bool) -> Self {
        self.metrics_public = public;
        self
    }

    /// Let pages from these origins (besides the server's own) change things (`--allow-origin`).
    pub fn with_allowed_origins(mut self, origins: Vec<Origin>) -> Self {
        self.allowed_origins = Arc::new(origins);
        self
    }

    pub fn with_triggers(mut self, triggers: Arc<crate::triggers::Triggers>) -> Self {
        self.triggers = Some(triggers);
        self
    }

    pub fn base_url(&self, headers: &HeaderMap) -> String {
        if let Some(u) = &self.public_url {
            return u.clone();
        }
        let host = headers
            .get("host")
            .and_then(|h| h.to_str().ok())
            .unwrap_or("127.0.0.1:8080");
        format!("http://{host}")
    }
}
