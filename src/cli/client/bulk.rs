//! `runs cancel|retry --filter …`: a bulk operation, followed until it finishes, with a
//! live progress line on a terminal and a line per batch otherwise.

use std::io::{IsTerminal, Write};
use std::time::Duration;

use clap::Args;
use serde_json::{Map, Value, json};

use super::backend::{Backend, Reply};
use super::print::print_reply;
use super::{OutputFormat, path_segment};
use crate::cli::Outcome;

pub(super) const PATH: &str = "/v1/workflow-runs/bulk";

#[derive(Debug, Args)]
pub(super) struct BulkArgs {
    /// Act on every run matching KEY=VALUE (status, workflow or definitionId, from, to;
    /// repeatable or comma-separated), e.g. --filter status=FAILED,workflow=billing.
    #[arg(long, value_name = "KEY=VALUE", conflicts_with = "ids")]
    pub filter: Vec<String>,
    /// Only print how many runs the filter selects.
    #[arg(long, requires = "filter")]
    pub dry_run: bool,
}

impl BulkArgs {
    pub fn body(&self, action: &str) -> Result<Value, String> {
        let mut filter = Map::new();
        for pair in self.filter.iter().flat_map(|f| f.split(',')) {
            let (k, v) = pair
                .split_once('=')
                .ok_or_else(|| format!("--filter `{pair}`: expected KEY=VALUE"))?;
            let key = match k.trim() {
                "status" => "status",
                "workflow" | "definition" | "definitionId" => "definitionId",
                "from" => "from",
                "to" => "to",
                other => {
                    return Err(format!(
                        "--filter: unknown key `{other}` (use status, workflow, definitionId, from, to)"
                    ));
                }
            };
            filter.insert(key.into(), json!(v.trim()));
        }
        Ok(json!({"action": action, "filter": filter, "dryRun": self.dry_run}))
    }
}

fn progress_line(op: &Value) -> String {
    let n = |k: &str| op[k].as_u64().unwrap_or(0);
    let (done, total) = (n("processed"), n("total").max(n("processed")));
    let width = 30;
    let filled = (done * width as u64)
        .checked_div(total)
        .map_or(width, |f| usize::try_from(f).unwrap_or(width));
    format!(
        "{} [{}{}] {done}/{total} ({} done, {} skipped, {} failed)",
        op["action"].as_str().unwrap_or(""),
        "#".repeat(filled),
        "-".repeat(width - filled.min(width)),
        n("succeeded"),
        n("skipped"),
        n("failed"),
    )
}

/// Start the operation and follow it to the end.
pub(super) async fn run(
    backend: &Backend,
    body: Option<Value>,
    o: OutputFormat,
) -> Result<Outcome, String> {
    let reply = backend
        .call(
            "POST",
            PATH,
            body.map(|b| ("application/json", b.to_string())),
        )
        .await?;
    let data = &reply.body["data"];
    if !(200..300).contains(&reply.status) || data["dryRun"] == json!(true) {
        if reply.status == 200 && o == OutputFormat::Table {
            println!(
                "{} runs would be {}",
                data["count"].as_u64().unwrap_or(0),
                if data["action"] == "cancel" {
                    "cancelled"
                } else {
                    "retried"
                }
            );
            return Ok(Outcome::Ok);
        }
        return Ok(print_reply(&reply, o, false, "operation"));
    }
    let id = data["id"].as_str().unwrap_or_default().to_string();
    let tty = std::io::stderr().is_terminal();
    let mut last = Value::Null;
    let mut op = data.clone();
    loop {
        if op != last {
            if tty {
                eprint!("\r\x1b[2K{}", progress_line(&op));
                let _ = std::io::stderr().flush();
            } else {
                eprintln!("{}", progress_line(&op));
            }
            last = op.clone();
        }
        if op["status"] != "RUNNING" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        let r = backend
            .call("GET", &format!("{PATH}/{}", path_segment(&id)), None)
            .await?;
        if !(200..300).contains(&r.status) {
            return Ok(print_reply(&r, o, false, "operation"));
        }
        op = r.body["data"].clone();
    }
    if tty {
        eprintln!();
    }
    let failed = op["failed"].as_u64().unwrap_or(0);
    let outcome = print_reply(
        &Reply {
            status: 200,
            body: json!({"data": op}),
        },
        o,
        false,
        "operation",
    );
    Ok(if failed > 0 { Outcome::Failed } else { outcome })
}
