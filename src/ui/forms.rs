//! Forms: the posted fields, and forms generated from a JSON Schema (a run's `input`, an
//! external event's payload) whose values are turned back into JSON by the schema's types.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::response::{IntoResponse, Response};
use maud::{Markup, html};
use serde_json::{Map, Value};

/// The fields of a posted `application/x-www-form-urlencoded` body, in order.
#[derive(Debug, Default)]
pub struct Form(pub Vec<(String, String)>);

impl Form {
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

impl<S: Send + Sync> FromRequest<S> for Form {
    type Rejection = Response;

    async fn from_request(req: Request, state: &S) -> Result<Self, Response> {
        let bytes = Bytes::from_request(req, state)
            .await
            .map_err(IntoResponse::into_response)?;
        Ok(Form(
            serde_urlencoded::from_bytes(&bytes).unwrap_or_default(),
        ))
    }
}

/// A problem with one field: its JSON Pointer (`/email`) and what is wrong.
pub type Problem = (String, String);

fn properties(schema: &Value) -> Vec<(&String, &Value)> {
    schema
        .get("properties")
        .and_then(Value::as_object)
        .map(|p| p.iter().collect())
        .unwrap_or_default()
}

fn required(schema: &Value, name: &str) -> bool {
    schema
        .get("required")
        .and_then(Value::as_array)
        .is_some_and(|r| r.iter().any(|n| n.as_str() == Some(name)))
}

fn kind(prop: &Value) -> &str {
    match prop.get("type") {
        Some(Value::String(t)) => t.as_str(),
        Some(Value::Array(ts)) => ts
            .iter()
            .filter_map(Value::as_str)
            .find(|t| *t != "null")
            .unwrap_or("string"),
        _ if prop.get("enum").is_some() => "string",
        _ => "json",
    }
}

fn field_id(prefix: &str, name: &str) -> String {
    format!(
        "{prefix}-{}",
        name.replace(|c: char| !c.is_ascii_alphanumeric(), "_")
    )
}

/// Inputs for each top-level property of an object schema; a schema without properties
/// gets one JSON text area (`_json`). `values` refills the form after a refusal.
pub fn fields(prefix: &str, schema: Option<&Value>, values: &Form, problems: &[Problem]) -> Markup {
    let props = schema.map(properties).unwrap_or_default();
    let problem = |path: &str| {
        problems
            .iter()
            .filter(|(p, _)| p == path || (path.is_empty() && p.is_empty()))
            .map(|(_, m)| m.clone())
            .collect::<Vec<_>>()
    };
    if props.is_empty() {
        let id = field_id(prefix, "_json");
        let errs = problem("");
        return html! {
            div.field {
                label for=(id) { "JSON" }
                textarea id=(id) name="_json" rows="5" aria-invalid=[(!errs.is_empty()).then_some("true")] {
                    (values.get("_json").unwrap_or("{}"))
                }
                @for e in &errs { p.error role="alert" { (e) } }
            }
        };
    }
    let others: Vec<String> = problems
        .iter()
        .filter(|(p, _)| !props.iter().any(|(n, _)| p.starts_with(&format!("/{n}"))))
        .map(|(p, m)| {
            if p.is_empty() {
                m.clone()
            } else {
                format!("{p}: {m}")
            }
        })
        .collect();
    html! {
        @for (name, prop) in &props {
            @let id = field_id(prefix, name);
            @let path = format!("/{name}");
            @let errs: Vec<String> = problems.iter().filter(|(p, _)| p.starts_with(&path)).map(|(_, m)| m.clone()).collect();
            @let help = prop.get("description").and_then(Value::as_str);
            @let req = schema.is_some_and(|s| required(s, name));
            @let invalid = (!errs.is_empty()).then_some("true");
            div.field {
                label for=(id) { (name) @if req { span.req aria-hidden="true" { " *" } } }
                @match (kind(prop), prop.get("enum").and_then(Value::as_array)) {
                    (_, Some(options)) => {
                        select id=(id) name=(name) aria-invalid=[invalid] {
                            @if !req { option value="" { "—" } }
                            @for o in options {
                                @let text = o.as_str().map_or_else(|| o.to_string(), str::to_string);
                                option value=(text) selected[values.get(name) == Some(text.as_str())] { (text) }
                            }
                        }
                    }
                    ("boolean", None) => {
                        select id=(id) name=(name) aria-invalid=[invalid] {
                            @if !req { option value="" { "—" } }
                            option value="true" selected[values.get(name) == Some("true")] { "true" }
                            option value="false" selected[values.get(name) == Some("false")] { "false" }
                        }
                    }
                    ("integer" | "number", None) => {
                        input id=(id) name=(name) type="number" step=(if kind(prop) == "integer" { "1" } else { "any" })
                            value=(values.get(name).unwrap_or_default()) aria-invalid=[invalid];
                    }
                    ("string", None) => {
                        input id=(id) name=(name) type="text" value=(values.get(name).unwrap_or_default()) aria-invalid=[invalid];
                    }
                    _ => {
                        textarea id=(id) name=(name) rows="3" placeholder="JSON" aria-invalid=[invalid] { (values.get(name).unwrap_or_default()) }
                    }
                }
                @if let Some(h) = help { p.muted { (h) } }
                @for e in &errs { p.error role="alert" { (e) } }
            }
        }
        @for e in &others { p.error role="alert" { (e) } }
    }
}

/// The form's values as the JSON object the schema describes. Empty fields are left out;
/// values that cannot be read as their type are problems (nothing is sent then).
pub fn to_json(schema: Option<&Value>, form: &Form) -> Result<Value, Vec<Problem>> {
    let props = schema.map(properties).unwrap_or_default();
    if props.is_empty() {
        let text = form.get("_json").unwrap_or("{}").trim();
        let text = if text.is_empty() { "{}" } else { text };
        return match serde_json::from_str::<Value>(text) {
            Ok(v @ Value::Object(_)) => Ok(v),
            Ok(_) => Err(vec![(String::new(), "must be a JSON object".into())]),
            Err(e) => Err(vec![(String::new(), format!("not JSON: {e}"))]),
        };
    }
    let mut out = Map::new();
    let mut problems = Vec::new();
    for (name, prop) in props {
        let Some(raw) = form.get(name).map(str::trim).filter(|v| !v.is_empty()) else {
            continue;
        };
        let path = format!("/{name}");
        let value = match kind(prop) {
            "integer" => raw
                .parse::<i64>()
                .map(Value::from)
                .map_err(|_| "must be a whole number".to_string()),
            "number" => raw
                .parse::<f64>()
                .ok()
                .and_then(serde_json::Number::from_f64)
                .map(Value::Number)
                .ok_or_else(|| "must be a number".to_string()),
            "boolean" => match raw {
                "true" => Ok(Value::Bool(true)),
                "false" => Ok(Value::Bool(false)),
                _ => Err("must be true or false".to_string()),
            },
            "string" => Ok(Value::String(raw.to_string())),
            _ => serde_json::from_str::<Value>(raw).map_err(|e| format!("not JSON: {e}")),
        };
        match value {
            Ok(v) => {
                out.insert(name.clone(), v);
            }
            Err(m) => problems.push((path, m)),
        }
    }
    if problems.is_empty() {
        Ok(Value::Object(out))
    } else {
        Err(problems)
    }
}

/// Schema violations (`[{path, message}]`, as the engine reports them) as problems.
pub fn problems_of(details: &Value) -> Vec<Problem> {
    details
        .get("problems")
        .and_then(Value::as_array)
        .map(|ps| {
            ps.iter()
                .map(|p| {
                    (
                        p["path"].as_str().unwrap_or_default().to_string(),
                        p["message"].as_str().unwrap_or_default().to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}
