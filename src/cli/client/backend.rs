//! Where a client command goes: a server over HTTP, or the embedded store through the same
//! router in process. On the embedded store, reads never execute a step; a change either goes
//! to the server holding the database or runs the engine here until it is idle.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use axum::body::Body;
use serde_json::Value;
use tokio::sync::broadcast;
use tower::ServiceExt;

use super::ClientArgs;
use crate::api::{AppState, router};
use crate::cli::local::{self, DbLock, Holder};
use crate::engine::{Engine, Update};

/// What a command does to the store, which decides where it may run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Access {
    /// Reads: the store opened read-only, beside whatever else runs on it.
    Read,
    /// A read that waits for a run to change (`--wait`): only a running engine changes it.
    Watch,
    /// Stores definitions: needs the database to itself (a server caches the latest
    /// versions), but executes nothing.
    Apply,
    /// Changes runs: the engine runs here until idle, or the server holding the db does it.
    Run,
}

#[derive(Clone)]
pub(super) enum Backend {
    Remote {
        base: String,
        key: Option<String>,
        http: reqwest::Client,
        /// Found through the database's lock file rather than given with `--server`.
        discovered: bool,
    },
    Local(Local),
}

#[derive(Clone)]
pub(super) struct Local {
    engine: Engine,
    app: axum::Router,
    db: PathBuf,
    /// Held by commands that write: no server or worker may start meanwhile.
    _lock: Option<Arc<DbLock>>,
    /// Set when this process runs the engine for the command: its updates, subscribed
    /// before the command and drained once the engine is idle.
    running: Option<Arc<Mutex<broadcast::Receiver<Update>>>>,
    /// Whether hook URLs are bare paths: no server and no public URL to put before them.
    pub paths_only: bool,
}

pub(super) struct Reply {
    pub status: u16,
    pub body: Value,
}

fn remote(url: &str, key: Option<String>, discovered: bool) -> Result<Backend, String> {
    let http = crate::http_client::build(&crate::http_client::ClientOptions::cli())
        .map_err(|e| e.to_string())?;
    Ok(Backend::Remote {
        base: url.trim_end_matches('/').to_string(),
        key,
        http,
        discovered,
    })
}

impl Backend {
    /// Call inside a tokio runtime.
    pub(super) fn open(c: &ClientArgs, access: Access) -> Result<Backend, String> {
        if let Some(url) = &c.server {
            return remote(url, c.api_key.clone(), false);
        }
        let db = &c.db.db;
        match access {
            Access::Read | Access::Watch => {
                let holder = local::holder(db);
                if let Some(Holder::Server(url)) = &holder
                    && access == Access::Watch
                {
                    eprintln!(
                        "note: {} is served at {url}: asked the server, which sees the run change",
                        db.display()
                    );
                    return remote(url, c.api_key.clone(), true);
                }
                if access == Access::Watch {
                    let who = match &holder {
                        Some(h) => format!(
                            "{} runs the engine on {} but cannot be watched from here",
                            local::describe(h),
                            db.display()
                        ),
                        None => format!("nothing runs the engine on {}", db.display()),
                    };
                    eprintln!("note: {who}, so --wait is ignored: the run as it is now");
                }
                let server = match holder {
                    Some(Holder::Server(url)) => Some(url),
                    _ => None,
                };
                let engine = local::open_read_only(&c.db)?;
                Ok(Backend::Local(Local::new(c, engine, server)))
            }
            Access::Apply | Access::Run => match local::try_lock(db)? {
                Err(Holder::Server(url)) => {
                    eprintln!(
                        "note: a stepwise server holds {}: sent to the server at {url}",
                        db.display()
                    );
                    remote(&url, c.api_key.clone(), true)
                }
                Err(holder) => Err(format!(
                    "{} runs the engine on {}, and only it may change runs there; stop it, or send this command to a server with --server URL",
                    local::describe(&holder),
                    db.display()
                )),
                Ok(lock) => {
                    let (engine, running) = if access == Access::Run {
                        let engine = local::start_locked(&c.db, &lock)?;
                        let updates = Arc::new(Mutex::new(engine.subscribe()));
                        (engine, Some(updates))
                    } else {
                        (local::open_read_only(&c.db)?, None)
                    };
                    let mut l = Local::new(c, engine, None);
                    l._lock = Some(Arc::new(lock));
                    l.running = running;
                    Ok(Backend::Local(l))
                }
            },
        }
    }

    /// The embedded store, when the command runs here.
    pub(super) fn local(&self) -> Option<&Local> {
        match self {
            Backend::Local(l) => Some(l),
            Backend::Remote { .. } => None,
        }
    }

    pub(super) async fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<(&str, String)>,
    ) -> Result<Reply, String> {
        match self {
            Backend::Remote {
                base,
                key,
                http,
                discovered,
            } => {
                let method =
                    reqwest::Method::from_bytes(method.as_bytes()).map_err(|e| e.to_string())?;
                let mut req = http.request(method, format!("{base}{path}"));
                if let Some(k) = key {
                    req = req.header("x-api-key", k);
                }
                if let Some((ct, b)) = body {
                    req = req.header("content-type", ct).body(b);
                }
                let resp = req
                    .send()
                    .await
                    .map_err(|e| format!("cannot reach {base}: {e}"))?;
                let status = resp.status().as_u16();
                if status == 401 && *discovered && key.is_none() {
                    eprintln!(
                        "note: the server at {base} wants an API key: set STEPWISE_API_KEY or --api-key"
                    );
                }
                let bytes = crate::http_client::read_body_limited(
                    resp,
                    crate::http_client::DEFAULT_MAX_BODY,
                )
                .await
                .map_err(|e| format!("{base}: {e}"))?;
                let text = String::from_utf8_lossy(&bytes).into_owned();
                Ok(Reply {
                    status,
                    body: serde_json::from_str(&text).unwrap_or(Value::String(text)),
                })
            }
            Backend::Local(l) => l.call(method, path, body).await,
        }
    }

    /// After the command: on the embedded engine, run until idle and say what happened.
    pub(super) async fn finish(&self) {
        let Backend::Local(l) = self else { return };
        if let Some(running) = &l.running
            && l.until_idle().await
        {
            let updates = match running.lock() {
                Ok(mut rx) => drain(&mut rx),
                Err(_) => Vec::new(),
            };
            if !updates.is_empty() {
                eprint!("{}", l.report(&updates).await);
            }
        }
        l.engine.shutdown().await;
    }
}

fn drain(rx: &mut broadcast::Receiver<Update>) -> Vec<Update> {
    let mut out = Vec::new();
    loop {
        match rx.try_recv() {
            Ok(u) => out.push(u),
            Err(broadcast::error::TryRecvError::Lagged(_)) => {}
            Err(_) => return out,
        }
    }
}

impl Local {
    fn new(c: &ClientArgs, engine: Engine, server: Option<String>) -> Local {
        // There is no request host to build hook URLs from: a configured public URL, else the
        // server holding the db, else bare paths.
        let base = c.public_url.clone().or(server);
        let paths_only = base.is_none();
        let app = router(AppState::new(
            engine.clone(),
            true,
            Some(base.unwrap_or_default()),
        ));
        Local {
            engine,
            app,
            db: c.db.db.clone(),
            _lock: None,
            running: None,
            paths_only,
        }
    }

    /// Wait until every step the engine started here is committed; say so when it takes a
    /// while (a slow HTTP call), since the command looks done otherwise.
    async fn until_idle(&self) -> bool {
        let idle = self.engine.until_idle();
        tokio::pin!(idle);
        tokio::select! {
            r = &mut idle => return r.is_ok(),
            () = tokio::time::sleep(std::time::Duration::from_secs(1)) => {}
        }
        eprintln!("finishing the steps the engine started here before exiting…");
        idle.await.is_ok()
    }

    pub(super) fn db(&self) -> &std::path::Path {
        &self.db
    }

    async fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<(&str, String)>,
    ) -> Result<Reply, String> {
        let mut req = axum::http::Request::builder()
            .method(method)
            .uri(path)
            .header(
                "user-agent",
                concat!("stepwise-cli/", env!("CARGO_PKG_VERSION")),
            )
            .header("host", "localhost");
        let body = match body {
            Some((ct, b)) => {
                req = req.header("content-type", ct);
                Body::from(b)
            }
            None => Body::empty(),
        };
        let req = req.body(body).map_err(|e| e.to_string())?;
        let resp = self
            .app
            .clone()
            .oneshot(req)
            .await
            .map_err(|e| e.to_string())?;
        let status = resp.status().as_u16();
        let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
            .await
            .map_err(|e| e.to_string())?;
        Ok(Reply {
            status,
            body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        })
    }

    /// What the engine did here, per run: the steps that changed and where each run is now.
    async fn report(&self, updates: &[Update]) -> String {
        const MAX_RUNS: usize = 10;
        let mut order: Vec<&str> = Vec::new();
        let mut steps: HashMap<&str, Vec<(&str, String)>> = HashMap::new();
        for u in updates {
            let entry = steps.entry(u.run_id.as_str()).or_insert_with(|| {
                order.push(u.run_id.as_str());
                Vec::new()
            });
            if let Some((step, status)) = &u.step {
                match entry.iter_mut().find(|(s, _)| *s == step.as_str()) {
                    Some(e) => e.1 = status.to_string(),
                    None => entry.push((step.as_str(), status.to_string())),
                }
            }
        }
        let mut s = format!(
            "ran the engine here until idle (no server holds {}); every step it started is committed:\n",
            self.db.display()
        );
        for id in order.iter().take(MAX_RUNS) {
            let mut parts: Vec<String> = steps[id]
                .iter()
                .map(|(step, status)| format!("step `{step}` {status}"))
                .collect();
            let path = format!("/v1/workflow-runs/{}?include=", super::urlencode(id));
            if let Ok(r) = self.call("GET", &path, None).await
                && (200..300).contains(&r.status)
            {
                let run = &r.body["data"];
                let mut now = format!("run {}", run["status"].as_str().unwrap_or("?"));
                if let Some(w) = super::waiting_on(&run["waitingOn"]) {
                    now.push_str(&format!(", {w}"));
                }
                parts.push(now);
            }
            s.push_str(&format!("  {id}: {}\n", parts.join("; ")));
        }
        if order.len() > MAX_RUNS {
            s.push_str(&format!("  and {} more runs\n", order.len() - MAX_RUNS));
        }
        s
    }
}
