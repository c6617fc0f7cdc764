//! `stepwise runs export` and `stepwise replay`: recorded runs checked against an edited
//! definition (from export files, the embedded store, or a server).

use std::path::PathBuf;

use clap::Args;
use serde_json::{Value, json};

use super::backend::{Access, Backend, Reply};
use super::{ClientArgs, OutputFormat, path_segment, query, with_backend};
use crate::cli::Outcome;
use crate::diagnostics::SourceFile;
use crate::replay::{EXPORT_FORMAT, Edited, Kind, Recorded, Verdict, check};

#[derive(Debug, Args)]
pub struct ReplayArgs {
    /// The edited workflow file to check the runs against.
    #[arg(long)]
    definition: PathBuf,
    /// Export files (`stepwise runs export`); without them the runs come from the store
    /// (`--db`) or the server (`--server`).
    files: Vec<PathBuf>,
    /// Which runs to check, from the store or server (comma-separated).
    #[arg(long, default_value = "WAITING,PAUSED,RUNNING")]
    status: String,
    #[command(flatten)]
    client: ClientArgs,
}

fn ok(reply: &Reply) -> Result<&Value, String> {
    if (200..300).contains(&reply.status) {
        Ok(&reply.body["data"])
    } else {
        Err(format!(
            "{} {}",
            reply.status,
            reply.body["error"]["message"]
                .as_str()
                .unwrap_or("request failed")
        ))
    }
}

/// The export document of a run view: the run and the definition version it is pinned to.
pub(super) async fn export_doc(backend: &Backend, run: &Value) -> Result<Value, String> {
    let def_id = run["definitionId"].as_str().unwrap_or_default();
    let path = format!("/v1/workflow-definitions/{}", path_segment(def_id));
    let reply = backend.call("GET", &path, None).await?;
    let definition = ok(&reply).cloned().unwrap_or(Value::Null);
    Ok(json!({"format": EXPORT_FORMAT, "run": run, "definition": definition}))
}

/// Write an export (to `out`, or stdout).
pub(super) async fn write_export(
    backend: &Backend,
    reply: &Reply,
    out: &Option<PathBuf>,
) -> Result<Outcome, String> {
    let run = ok(reply)?;
    let doc = export_doc(backend, run).await?;
    let text = serde_json::to_string_pretty(&doc).map_err(|e| e.to_string())?;
    match out {
        Some(p) => {
            std::fs::write(p, text + "\n")
                .map_err(|e| format!("cannot write {}: {e}", p.display()))?;
            eprintln!(
                "exported run {} to {}",
                run["id"].as_str().unwrap_or_default(),
                p.display()
            );
        }
        None => println!("{text}"),
    }
    Ok(Outcome::Ok)
}

async fn fetch_runs(
    backend: &Backend,
    slug: &str,
    statuses: &str,
) -> Result<Vec<Recorded>, String> {
    let mut out = Vec::new();
    let mut sources: std::collections::HashMap<String, Option<String>> = Default::default();
    for status in statuses.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let mut page = 1u64;
        loop {
            let path = format!(
                "/v1/workflow-runs{}",
                query(&[
                    ("status", Some(status.to_string())),
                    ("definitionId", Some(slug.to_string())),
                    ("page", Some(page.to_string())),
                    ("pageSize", Some("100".into())),
                ])
            );
            let reply = backend.call("GET", &path, None).await?;
            let runs = ok(&reply)?.as_array().cloned().unwrap_or_default();
            for r in &runs {
                let id = r["id"].as_str().unwrap_or_default();
                let path = format!("/v1/workflow-runs/{}?include=steps", path_segment(id));
                let reply = backend.call("GET", &path, None).await?;
                let view = ok(&reply)?.clone();
                let def_id = view["definitionId"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string();
                if !sources.contains_key(&def_id) {
                    let doc = export_doc(backend, &view).await?;
                    let src = doc
                        .pointer("/definition/source")
                        .and_then(Value::as_str)
                        .map(str::to_string);
                    sources.insert(def_id.clone(), src);
                }
                out.push(Recorded::from_view(&view, sources[&def_id].clone())?);
            }
            let pages = reply.body["meta"]["totalPages"].as_u64().unwrap_or(1);
            if page >= pages || runs.is_empty() {
                break;
            }
            page += 1;
        }
    }
    Ok(out)
}

pub fn replay(args: &ReplayArgs) -> Outcome {
    let text = match std::fs::read_to_string(&args.definition) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("error: cannot read {}: {e}", args.definition.display());
            return Outcome::CouldNotRun;
        }
    };
    let edited = match Edited::load(SourceFile::new(args.definition.display().to_string(), text)) {
        Ok(e) => e,
        Err(e) => {
            eprintln!("error: {e}");
            return Outcome::CouldNotRun;
        }
    };
    let runs: Vec<Recorded> = if args.files.is_empty() {
        let slug = edited.def.id.clone();
        let mut got = Vec::new();
        let outcome = with_backend(&args.client, Access::Read, |backend| {
            let got = &mut got;
            let slug = slug.clone();
            async move {
                *got = fetch_runs(&backend, &slug, &args.status).await?;
                Ok(Outcome::Ok)
            }
        });
        if outcome != Outcome::Ok {
            return outcome;
        }
        got
    } else {
        let mut got = Vec::new();
        for f in &args.files {
            let r = std::fs::read_to_string(f)
                .map_err(|e| e.to_string())
                .and_then(|t| serde_json::from_str::<Value>(&t).map_err(|e| e.to_string()))
                .and_then(|v| Recorded::from_export(&v));
            match r {
                Ok(r) => got.push(r),
                Err(e) => {
                    eprintln!("error: {}: {e}", f.display());
                    return Outcome::CouldNotRun;
                }
            }
        }
        got
    };
    let verdicts: Vec<(Recorded, Verdict)> = runs
        .into_iter()
        .map(|r| {
            let v = check(&edited, &r);
            (r, v)
        })
        .collect();
    print(&edited, &verdicts, args.client.output);
    if verdicts.iter().any(|(_, v)| v.kind == Kind::Incompatible) {
        Outcome::Failed
    } else {
        Outcome::Ok
    }
}

fn print(edited: &Edited, verdicts: &[(Recorded, Verdict)], format: OutputFormat) {
    let at = |pointer: &str| {
        let (line, col) = edited.file.line_col(edited.spans.value(pointer).start);
        (line, col)
    };
    if format == OutputFormat::Json {
        let runs: Vec<Value> = verdicts
            .iter()
            .map(|(r, v)| {
                let f = |list: &[crate::replay::Finding]| -> Vec<Value> {
                    list.iter()
                        .map(|x| {
                            let (line, column) = at(&x.pointer);
                            json!({"message": x.message, "pointer": x.pointer, "line": line, "column": column})
                        })
                        .collect()
                };
                json!({"run": r.id, "status": r.status, "verdict": v.kind.as_str(), "causes": f(&v.causes), "changes": f(&v.changes)})
            })
            .collect();
        let incompatible = verdicts
            .iter()
            .filter(|(_, v)| v.kind == Kind::Incompatible)
            .count();
        let doc =
            json!({"definition": edited.file.name, "runs": runs, "incompatible": incompatible});
        println!("{}", serde_json::to_string_pretty(&doc).unwrap_or_default());
        return;
    }
    let mut counts = [0usize; 3];
    for (r, v) in verdicts {
        counts[v.kind as usize] += 1;
        println!("{} ({}): {}", r.id, r.status, v.kind.as_str());
        for x in v.causes.iter().chain(&v.changes) {
            let (line, col) = at(&x.pointer);
            println!("    {}:{line}:{col}: {}", edited.file.name, x.message);
        }
    }
    println!(
        "{} run(s) checked against {}: {} compatible, {} compatible but would re-run or skip steps, {} incompatible",
        verdicts.len(),
        edited.file.name,
        counts[0],
        counts[1],
        counts[2]
    );
}
