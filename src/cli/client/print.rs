//! How replies are printed: tables and records for people, JSON or YAML for scripts.

use std::io::Write;

use serde_json::Value;

use super::OutputFormat;
use super::backend::Reply;
use super::waiting_on;
use crate::cli::Outcome;
use crate::cli::table::columns;

pub(super) fn print_reply(r: &Reply, o: OutputFormat, list: bool, what: &str) -> Outcome {
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

fn table(data: &Value, what: &str, meta: &Value) -> String {
    let items = data.as_array().cloned().unwrap_or_default();
    let mut rows = Vec::new();
    match what {
        "run" => {
            rows.push(vec![
                "ID".into(),
                "DEFINITION".into(),
                "STATUS".into(),
                "WAITING ON".into(),
                "STEP".into(),
                "CREATED".into(),
            ]);
            for r in &items {
                rows.push(vec![
                    cell(&r["id"]),
                    cell(&r["definitionSlug"]),
                    cell(&r["status"]),
                    waiting_on(&r["waitingOn"]).unwrap_or_else(|| "-".into()),
                    cell(&r["currentStepIndex"]),
                    cell(&r["createdAt"]),
                ]);
            }
        }
        // History says how each run started (seed 002: "the trigger label in History tells
        // you how the run started"): a tool call, MCP, a webhook…
        "history" => {
            rows.push(vec![
                "ID".into(),
                "DEFINITION".into(),
                "STATUS".into(),
                "WAITING ON".into(),
                "TRIGGER".into(),
                "STEP".into(),
                "CREATED".into(),
            ]);
            for r in &items {
                let t = &r["trigger"];
                rows.push(vec![
                    cell(&r["id"]),
                    cell(&r["definitionSlug"]),
                    cell(&r["status"]),
                    waiting_on(&r["waitingOn"]).unwrap_or_else(|| "-".into()),
                    cell(t.get("label").unwrap_or(&t["kind"])),
                    cell(&r["currentStepIndex"]),
                    cell(&r["createdAt"]),
                ]);
            }
        }
        "hook" => {
            rows.push(vec![
                "STEP".into(),
                "TYPE".into(),
                "STATUS".into(),
                "TOKEN".into(),
                "RESUME URL".into(),
            ]);
            for h in &items {
                rows.push(vec![
                    cell(&h["step"]),
                    cell(&h["type"]),
                    cell(&h["status"]),
                    cell(&h["token"]),
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
        if matches!(
            k.as_str(),
            "steps" | "trace" | "versions" | "source" | "reached"
        ) {
            continue;
        }
        let text = match (k.as_str(), v) {
            ("waitingOn", v) if !v.is_null() => waiting_on(v).unwrap_or_default(),
            (_, Value::Object(_) | Value::Array(_)) => serde_json::to_string(v).unwrap_or_default(),
            (_, other) => cell(other),
        };
        s.push_str(&format!("{k:<18} {text}\n"));
    }
    if let Some(reached) = data["reached"].as_array() {
        // A signal's answer: the runs it reached.
        s.push('\n');
        if reached.is_empty() {
            s.push_str("reached no run\n");
        } else {
            s.push_str(&table(&data["reached"], "run", &Value::Null));
        }
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
    use serde_json::json;

    use super::*;

    #[test]
    fn yaml_output_round_trips_through_the_yaml_parser() {
        let v = json!({"id": "wfrun_1", "input": {"name": "Ada", "n": 3, "on": "yes"}, "steps": [{"name": "a", "output": null}, "x"], "empty": {}});
        let text = to_yaml(&v, 0);
        let file = crate::diagnostics::SourceFile::new("t.yaml", text.as_str());
        let parsed = crate::yaml::parse(&file).unwrap();
        assert_eq!(parsed.value, v, "{text}");
    }

    #[test]
    fn waiting_on_reads_as_a_label_with_its_step() {
        let w = json!({"label": "Sleeping", "step": "nap", "type": "wait", "until": "2026-01-01T00:00:00.000Z"});
        assert_eq!(
            waiting_on(&w).as_deref(),
            Some("Sleeping (nap) until 2026-01-01T00:00:00.000Z")
        );
        assert_eq!(waiting_on(&Value::Null), None);
    }
}
