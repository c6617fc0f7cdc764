//! The CLI client: `runs …` and `definitions …` against a server (`--server`), or, with none
//! given, against the embedded store through the very same router, in process.

use std::io::Write;
use std::path::PathBuf;

use axum::body::Body;
use clap::{Args, Subcommand, ValueEnum};
use serde_json::{Value, json};
use tower::ServiceExt;

use super::Outcome;
use super::local::{DbArgs, DbLock, runtime, start_engine};
use super::run::read_json_arg;
use crate::api::{AppState, router};
use crate::engine::Engine;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    Table,
    Json,
    Yaml,
}

#[derive(Debug, Args)]
pub struct ClientArgs {
    /// A stepwise server; without it, the embedded store is used.
    #[arg(long, env = "STEPWISE_SERVER", global = true)]
    server: Option<String>,
    /// The API key for --server.
    #[arg(long, env = "STEPWISE_API_KEY", global = true, hide_env_values = true)]
    api_key: Option<String>,
    /// How results are printed.
    #[arg(long, short = 'o', value_enum, default_value_t = OutputFormat::Table, global = true)]
    output: OutputFormat,
    #[command(flatten)]
    db: DbArgs,
}

#[derive(Debug, Args)]
pub struct RunsArgs {
    #[command(subcommand)]
    command: RunsCommand,
    #[command(flatten)]
    client: ClientArgs,
}

#[derive(Debug, Subcommand)]
enum RunsCommand {
    /// List runs, newest first.
    List {
        #[arg(long)]
        status: Option<String>,
        /// A definition slug or wfdef_ id.
        #[arg(long)]
        definition: Option<String>,
        #[arg(long, default_value_t = 1)]
        page: u64,
        #[arg(long, default_value_t = 20)]
        page_size: u64,
    },
    /// Start a run.
    Start {
        definition: String,
        /// JSON, or @FILE.
        #[arg(long, default_value = "{}")]
        input: String,
        #[arg(long)]
        idempotency_key: Option<String>,
        /// Wait (up to 5 minutes) until it finishes, pauses or waits.
        #[arg(long)]
        wait: bool,
    },
    /// Show a run.
    Get {
        id: String,
        /// Comma-separated: trigger, steps, trace.
        #[arg(long)]
        include: Option<String>,
        #[arg(long)]
        wait: bool,
    },
    /// Cancel a run.
    Cancel { id: String },
    /// Resume a run: a signal (--signal, --payload) or an approval (--step, --input).
    Resume {
        id: String,
        #[arg(long, conflicts_with_all = ["step", "input"])]
        signal: Option<String>,
        /// JSON, or @FILE.
        #[arg(long, requires = "signal")]
        payload: Option<String>,
        #[arg(long, requires = "input")]
        step: Option<String>,
        /// The chosen option (JSON, or a bare word such as approve).
        #[arg(long, requires = "step")]
        input: Option<String>,
    },
    /// Retry a FAILED run from its failed step.
    Retry { id: String },
    /// A run's pending hooks, with their resume URLs.
    Hooks { id: String },
}

#[derive(Debug, Args)]
pub struct HistoryArgs {
    #[command(subcommand)]
    command: HistoryCommand,
    #[command(flatten)]
    client: ClientArgs,
}

#[derive(Debug, Subcommand)]
enum HistoryCommand {
    /// Runs across workflows, newest first.
    List {
        /// Only `workflow` is recorded.
        #[arg(long, default_value = "workflow")]
        kind: String,
        /// e.g. failed, COMPLETED.
        #[arg(long)]
        status: Option<String>,
        #[arg(long)]
        definition: Option<String>,
        /// Created at or after (RFC 3339).
        #[arg(long)]
        from: Option<String>,
        /// Created before (RFC 3339).
        #[arg(long)]
        to: Option<String>,
        #[arg(long, default_value_t = 1)]
        page: u64,
        #[arg(long, default_value_t = 20)]
        page_size: u64,
    },
    /// Everything about one run: input, output or error, steps with attempts, usage,
    /// trigger, timing and trace.
    Get { id: String },
}

pub fn history(args: &HistoryArgs) -> Outcome {
    with_backend(&args.client, |backend| async move {
        let o = args.client.output;
        match &args.command {
            HistoryCommand::List {
                kind,
                status,
                definition,
                from,
                to,
                page,
                page_size,
            } => {
                let path = format!(
                    "/v1/history{}",
                    query(&[
                        ("kind", Some(kind.clone())),
                        ("status", status.clone()),
                        ("definitionId", definition.clone()),
                        ("from", from.clone()),
                        ("to", to.clone()),
                        ("page", Some(page.to_string())),
                        ("pageSize", Some(page_size.to_string())),
                    ])
                );
                let r = backend.call("GET", &path, None).await?;
                Ok(print_reply(&r, o, true, "run"))
            }
            HistoryCommand::Get { id } => {
                let path = format!(
                    "/v1/workflow-runs/{}?include=trigger,steps,trace,usage",
                    path_segment(id)
                );
                let r = backend.call("GET", &path, None).await?;
                Ok(print_reply(&r, o, false, "run"))
            }
        }
    })
}

#[derive(Debug, Args)]
pub struct DefinitionsArgs {
    #[command(subcommand)]
    command: DefinitionsCommand,
    #[command(flatten)]
    client: ClientArgs,
}

#[derive(Debug, Subcommand)]
enum DefinitionsCommand {
    /// The latest version of every definition.
    List,
    /// A definition and its versions.
    Get { id: String },
    /// Lint and store workflow files (directories are searched for *.yaml, *.yml).
    Apply {
        #[arg(required = true)]
        paths: Vec<PathBuf>,
    },
}

#[derive(Clone)]
enum Backend {
    Remote {
        base: String,
        key: Option<String>,
        http: reqwest::Client,
    },
    Local {
        engine: Engine,
        app: axum::Router,
        _lock: std::sync::Arc<DbLock>,
    },
}

struct Reply {
    status: u16,
    body: Value,
}

impl Backend {
    fn open(c: &ClientArgs) -> Result<Backend, String> {
        match &c.server {
            Some(url) => {
                let http = crate::http_client::build(&crate::http_client::ClientOptions::cli())
                    .map_err(|e| e.to_string())?;
                Ok(Backend::Remote {
                    base: url.trim_end_matches('/').to_string(),
                    key: c.api_key.clone(),
                    http,
                })
            }
            None => {
                let (engine, lock) = start_engine(&c.db)?;
                let app = router(AppState::new(engine.clone(), true, None));
                Ok(Backend::Local {
                    engine,
                    app,
                    _lock: std::sync::Arc::new(lock),
                })
            }
        }
    }

    async fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<(&str, String)>,
    ) -> Result<Reply, String> {
        match self {
            Backend::Remote { base, key, http } => {
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
                let text = resp.text().await.map_err(|e| e.to_string())?;
                Ok(Reply {
                    status,
                    body: serde_json::from_str(&text).unwrap_or(Value::String(text)),
                })
            }
            Backend::Local { app, .. } => {
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
                let resp = app.clone().oneshot(req).await.map_err(|e| e.to_string())?;
                let status = resp.status().as_u16();
                let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
                    .await
                    .map_err(|e| e.to_string())?;
                Ok(Reply {
                    status,
                    body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
                })
            }
        }
    }
}

fn query(pairs: &[(&str, Option<String>)]) -> String {
    let parts: Vec<String> = pairs
        .iter()
        .filter_map(|(k, v)| v.as_ref().map(|v| format!("{k}={}", urlencode(v))))
        .collect();
    if parts.is_empty() {
        String::new()
    } else {
        format!("?{}", parts.join("&"))
    }
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn path_segment(id: &str) -> String {
    urlencode(id)
}

pub fn runs(args: &RunsArgs) -> Outcome {
    with_backend(&args.client, |backend| async move {
        let o = args.client.output;
        let (method, path, body): (&str, String, Option<Value>) = match &args.command {
            RunsCommand::List {
                status,
                definition,
                page,
                page_size,
            } => (
                "GET",
                format!(
                    "/v1/workflow-runs{}",
                    query(&[
                        ("status", status.clone()),
                        ("definitionId", definition.clone()),
                        ("page", Some(page.to_string())),
                        ("pageSize", Some(page_size.to_string())),
                    ])
                ),
                None,
            ),
            RunsCommand::Start {
                definition,
                input,
                idempotency_key,
                wait,
            } => {
                let input = read_json_arg(input, "--input")?;
                let mut body = json!({"definitionId": definition, "input": input});
                if let Some(k) = idempotency_key {
                    body["idempotencyKey"] = json!(k);
                }
                (
                    "POST",
                    format!(
                        "/v1/workflow-runs{}",
                        query(&[("wait", wait.then(|| "300s".to_string()))])
                    ),
                    Some(body),
                )
            }
            RunsCommand::Get { id, include, wait } => (
                "GET",
                format!(
                    "/v1/workflow-runs/{}{}",
                    path_segment(id),
                    query(&[
                        ("include", include.clone()),
                        ("wait", wait.then(|| "300s".to_string()))
                    ])
                ),
                None,
            ),
            RunsCommand::Cancel { id } => (
                "POST",
                format!("/v1/workflow-runs/{}/cancel", path_segment(id)),
                None,
            ),
            RunsCommand::Retry { id } => (
                "POST",
                format!("/v1/workflow-runs/{}/retry", path_segment(id)),
                None,
            ),
            RunsCommand::Hooks { id } => (
                "GET",
                format!("/v1/workflow-runs/{}/hooks", path_segment(id)),
                None,
            ),
            RunsCommand::Resume {
                id,
                signal,
                payload,
                step,
                input,
            } => {
                let body = match (signal, step) {
                    (Some(signal), _) => {
                        let payload = payload
                            .as_deref()
                            .map(|p| read_json_arg(p, "--payload"))
                            .transpose()?;
                        json!({"signalType": signal, "payload": payload.unwrap_or(json!({}))})
                    }
                    (None, Some(step)) => {
                        let raw = input.clone().unwrap_or_default();
                        // A bare word is the option itself.
                        let value = serde_json::from_str(&raw).unwrap_or(Value::String(raw));
                        json!({"step": step, "input": value})
                    }
                    (None, None) => {
                        return Err(
                            "give --signal (and --payload) or --step and --input".to_string()
                        );
                    }
                };
                (
                    "POST",
                    format!("/v1/workflow-runs/{}/resume", path_segment(id)),
                    Some(body),
                )
            }
        };
        let reply = backend
            .call(
                method,
                &path,
                body.map(|b| ("application/json", b.to_string())),
            )
            .await?;
        Ok(print_reply(
            &reply,
            o,
            matches!(args.command, RunsCommand::List { .. }),
            "run",
        ))
    })
}

pub fn definitions(args: &DefinitionsArgs) -> Outcome {
    with_backend(&args.client, |backend| async move {
        let o = args.client.output;
        match &args.command {
            DefinitionsCommand::List => {
                let r = backend
                    .call("GET", "/v1/workflow-definitions", None)
                    .await?;
                Ok(print_reply(&r, o, true, "definition"))
            }
            DefinitionsCommand::Get { id } => {
                let r = backend
                    .call(
                        "GET",
                        &format!("/v1/workflow-definitions/{}", path_segment(id)),
                        None,
                    )
                    .await?;
                Ok(print_reply(&r, o, false, "definition"))
            }
            DefinitionsCommand::Apply { paths } => {
                let (files, problems) = super::lint::collect_files(paths);
                if let Some((p, e)) = problems.first() {
                    return Err(format!("cannot read {}: {e}", p.display()));
                }
                let mut outcome = Outcome::Ok;
                for f in files {
                    let source = std::fs::read_to_string(&f)
                        .map_err(|e| format!("cannot read {}: {e}", f.display()))?;
                    let r = backend
                        .call(
                            "POST",
                            "/v1/workflow-definitions",
                            Some(("application/yaml", source)),
                        )
                        .await?;
                    if (200..300).contains(&r.status) {
                        let d = &r.body["data"];
                        eprintln!(
                            "{} {}: {} version {} ({})",
                            if r.status == 201 {
                                "applied"
                            } else {
                                "unchanged"
                            },
                            f.display(),
                            d["definitionId"].as_str().unwrap_or(""),
                            d["version"],
                            d["id"].as_str().unwrap_or("")
                        );
                    } else {
                        eprintln!(
                            "refused {}: {}",
                            f.display(),
                            r.body["error"]["message"].as_str().unwrap_or("")
                        );
                        for d in r.body["error"]["details"]["diagnostics"]
                            .as_array()
                            .into_iter()
                            .flatten()
                        {
                            eprintln!(
                                "  {}:{}:{}: {}: {}",
                                f.display(),
                                d["line"],
                                d["column"],
                                d["code"].as_str().unwrap_or(""),
                                d["message"].as_str().unwrap_or("")
                            );
                        }
                        outcome = Outcome::Failed;
                    }
                }
                Ok(outcome)
            }
        }
    })
}

fn with_backend<F, Fut>(c: &ClientArgs, f: F) -> Outcome
where
    F: FnOnce(Backend) -> Fut,
    Fut: std::future::Future<Output = Result<Outcome, String>>,
{
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: {e}");
            return Outcome::CouldNotRun;
        }
    };
    rt.block_on(async move {
        let backend = match Backend::open(c) {
            Ok(b) => b,
            Err(e) => {
                eprintln!("error: {e}");
                return Outcome::CouldNotRun;
            }
        };
        let result = f(backend.clone()).await;
        if let Backend::Local { engine, .. } = &backend {
            engine.shutdown().await;
        }
        match result {
            Ok(o) => o,
            Err(e) => {
                eprintln!("error: {e}");
                Outcome::CouldNotRun
            }
        }
    })
}

fn print_reply(r: &Reply, o: OutputFormat, list: bool, what: &str) -> Outcome {
    if !(200..300).contains(&r.status) {
        let err = &r.body["error"];
        eprintln!(
            "error: {} ({} {})",
            err["message"].as_str().unwrap_or("request failed"),
            r.status,
            err["code"].as_str().unwrap_or("")
        );
        if let Some(problems) = err["details"]["problems"].as_array() {
            for p in problems {
                eprintln!(
                    "  {}: {}",
                    p["path"].as_str().unwrap_or(""),
                    p["message"].as_str().unwrap_or("")
                );
            }
        }
        return Outcome::Failed;
    }
    let data = &r.body["data"];
    let mut out = std::io::stdout().lock();
    let _ = match o {
        OutputFormat::Json => writeln!(
            out,
            "{}",
            serde_json::to_string_pretty(data).unwrap_or_default()
        ),
        OutputFormat::Yaml => write!(out, "{}", to_yaml(data, 0)),
        OutputFormat::Table if list => write!(out, "{}", table(data, what, &r.body["meta"])),
        OutputFormat::Table => write!(out, "{}", record(data)),
    };
    Outcome::Ok
}

fn cell(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn columns(rows: &[Vec<String>]) -> String {
    let widths: Vec<usize> = (0..rows.first().map_or(0, Vec::len))
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    let mut s = String::new();
    for r in rows {
        let line: Vec<String> = r
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        s.push_str(line.join("  ").trim_end());
        s.push('\n');
    }
    s
}

fn table(data: &Value, what: &str, meta: &Value) -> String {
    let items = data.as_array().cloned().unwrap_or_default();
    let mut rows = Vec::new();
    match what {
        "run" => {
            rows.push(vec![
                "ID".into(),
                "DEFINITION".into(),
                "STATUS".into(),
                "STEP".into(),
                "CREATED".into(),
            ]);
            for r in &items {
                rows.push(vec![
                    cell(&r["id"]),
                    cell(&r["definitionSlug"]),
                    cell(&r["status"]),
                    cell(&r["currentStepIndex"]),
                    cell(&r["createdAt"]),
                ]);
            }
        }
        "hook" => {
            rows.push(vec!["STEP".into(), "STATUS".into(), "RESUME URL".into()]);
            for h in &items {
                rows.push(vec![
                    cell(&h["step"]),
                    cell(&h["status"]),
                    cell(&h["resumeUrl"]),
                ]);
            }
        }
        _ => {
            rows.push(vec![
                "DEFINITION".into(),
                "VERSION".into(),
                "ID".into(),
                "CREATED".into(),
            ]);
            for d in &items {
                rows.push(vec![
                    cell(&d["definitionId"]),
                    cell(&d["version"]),
                    cell(&d["id"]),
                    cell(&d["createdAt"]),
                ]);
            }
        }
    }
    let mut s = columns(&rows);
    if meta.is_object() {
        s.push_str(&format!(
            "page {} of {} ({} runs)\n",
            meta["page"], meta["totalPages"], meta["total"]
        ));
    }
    s
}

fn record(data: &Value) -> String {
    if let Value::Array(items) = data {
        // Hooks come back as a list.
        return table(
            data,
            if items.first().is_some_and(|h| h.get("token").is_some()) {
                "hook"
            } else {
                "definition"
            },
            &Value::Null,
        );
    }
    let Some(map) = data.as_object() else {
        return format!("{}\n", cell(data));
    };
    let mut s = String::new();
    for (k, v) in map {
        if matches!(k.as_str(), "steps" | "trace" | "versions" | "source") {
            continue;
        }
        let text = match v {
            Value::Object(_) | Value::Array(_) => serde_json::to_string(v).unwrap_or_default(),
            other => cell(other),
        };
        s.push_str(&format!("{k:<18} {text}\n"));
    }
    if let Some(steps) = data["steps"].as_array() {
        s.push('\n');
        let mut rows = vec![vec![
            "#".into(),
            "STEP".into(),
            "TYPE".into(),
            "STATUS".into(),
            "ATTEMPT".into(),
            "MS".into(),
        ]];
        for st in steps {
            rows.push(vec![
                cell(&st["index"]),
                cell(&st["name"]),
                cell(&st["type"]),
                cell(&st["status"]),
                cell(&st["attempt"]),
                cell(&st["durationMs"]),
            ]);
        }
        s.push_str(&columns(&rows));
    }
    if let Some(trace) = data["trace"].as_array() {
        s.push('\n');
        for e in trace {
            s.push_str(&format!(
                "{}  {:<18} {}\n",
                cell(&e["at"]),
                cell(&e["kind"]),
                e["step"].as_str().unwrap_or("")
            ));
        }
    }
    s
}

/// A plain YAML rendering of JSON (block style, strings quoted when needed).
pub fn to_yaml(v: &Value, indent: usize) -> String {
    let pad = " ".repeat(indent);
    match v {
        Value::Object(m) if !m.is_empty() => m
            .iter()
            .map(|(k, x)| match x {
                Value::Object(o) if !o.is_empty() => format!(
                    "{pad}{}:\n{}",
                    yaml_scalar(&Value::String(k.clone())),
                    to_yaml(x, indent + 2)
                ),
                Value::Array(a) if !a.is_empty() => format!(
                    "{pad}{}:\n{}",
                    yaml_scalar(&Value::String(k.clone())),
                    to_yaml(x, indent)
                ),
                _ => format!(
                    "{pad}{}: {}\n",
                    yaml_scalar(&Value::String(k.clone())),
                    yaml_scalar(x)
                ),
            })
            .collect(),
        Value::Array(a) if !a.is_empty() => a
            .iter()
            .map(|x| match x {
                Value::Object(o) if !o.is_empty() => {
                    let inner = to_yaml(x, indent + 2);
                    format!("{pad}- {}", inner.trim_start())
                }
                Value::Array(b) if !b.is_empty() => format!("{pad}-\n{}", to_yaml(x, indent + 2)),
                _ => format!("{pad}- {}\n", yaml_scalar(x)),
            })
            .collect(),
        other => format!("{pad}{}\n", yaml_scalar(other)),
    }
}

fn yaml_scalar(v: &Value) -> String {
    match v {
        Value::Null => "null".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => {
            let plain = !s.is_empty()
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '/' | '@'))
                && !matches!(
                    s.as_str(),
                    "null" | "true" | "false" | "yes" | "no" | "on" | "off" | "~"
                )
                && s.parse::<f64>().is_err();
            if plain {
                s.clone()
            } else {
                serde_json::to_string(s).unwrap_or_default()
            }
        }
        Value::Object(_) => "{}".into(),
        Value::Array(_) => "[]".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yaml_output_round_trips_through_the_yaml_parser() {
        let v = json!({"id": "wfrun_1", "input": {"name": "Ada", "n": 3, "on": "yes"}, "steps": [{"name": "a", "output": null}, "x"], "empty": {}});
        let text = to_yaml(&v, 0);
        let file = crate::diagnostics::SourceFile::new("t.yaml", text.as_str());
        let parsed = crate::yaml::parse(&file).unwrap();
        assert_eq!(parsed.value, v, "{text}");
    }
}
