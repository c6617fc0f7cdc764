//! Templates in definitions: which fields hold them, what they read, and how they render.
//!
//! One minijinja environment serves both lint (parse + static analysis) and the engine
//! (render). Undefined variables are errors, never "", and rendering is bounded by fuel so
//! a hostile template cannot spin forever.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use minijinja::value::Serde;
use minijinja::{Environment, Expression, UndefinedBehavior};
use serde_json::Value;

use crate::definition::{Step, StepKind, When};
use crate::yaml::pointer_push;

/// Instructions one render may execute before it is stopped.
const FUEL: u64 = 1_000_000;

/// The shared environment: strict undefined, fuel, a recursion limit, JSON filters.
pub fn environment() -> &'static Environment<'static> {
    static ENV: OnceLock<Environment<'static>> = OnceLock::new();
    ENV.get_or_init(|| {
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        env.set_fuel(Some(FUEL));
        env.set_recursion_limit(64);
        env.set_formatter(json_formatter);
        env
    })
}

/// Values inside a string render as JSON prints them (`true`, `100`, `null`, `{"a":1}`),
/// not in minijinja's Python style (`True`, `100.0`, `none`): the strings we render go to
/// HTTP APIs and models, which expect JSON spellings. Strings are written as they are.
fn json_formatter(
    out: &mut minijinja::Output,
    state: &mut minijinja::State,
    value: &minijinja::Value,
) -> Result<(), minijinja::Error> {
    use minijinja::value::ValueKind;
    if matches!(
        value.kind(),
        ValueKind::None | ValueKind::Bool | ValueKind::Number | ValueKind::Seq | ValueKind::Map
    ) && let Ok(json) = serde_json::to_value(value)
    {
        let text = serde_json::to_string(&integral_floats_as_integers(json)).map_err(|e| {
            minijinja::Error::new(minijinja::ErrorKind::BadSerialization, e.to_string())
        })?;
        return out
            .write_str(&text)
            .map_err(|e| minijinja::Error::new(minijinja::ErrorKind::WriteFailure, e.to_string()));
    }
    minijinja::escape_formatter(out, state, value)
}

/// `1e2` is the number 100 wherever JSON is read; print it so, not as `100.0`.
fn integral_floats_as_integers(v: Value) -> Value {
    // Beyond 2^53 a float no longer stands for one integer; keep its float spelling.
    const EXACT: f64 = 9_007_199_254_740_992.0;
    match v {
        Value::Number(n) if !n.is_i64() && !n.is_u64() => match n.as_f64() {
            Some(f) if f.fract() == 0.0 && f.abs() <= EXACT => Value::from(f as i64),
            _ => Value::Number(n),
        },
        Value::Array(items) => {
            Value::Array(items.into_iter().map(integral_floats_as_integers).collect())
        }
        Value::Object(map) => Value::Object(
            map.into_iter()
                .map(|(k, v)| (k, integral_floats_as_integers(v)))
                .collect(),
        ),
        other => other,
    }
}

type Compiled = Arc<Expression<'static, 'static>>;

/// Expressions compiled once per distinct text: steps run far more often than definitions
/// change, and parsing dominates a small render.
fn expression(text: &str) -> Result<Compiled, minijinja::Error> {
    static CACHE: OnceLock<Mutex<HashMap<String, Compiled>>> = OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    if let Some(e) = cache.lock().ok().and_then(|c| c.get(text).cloned()) {
        return Ok(e);
    }
    let e = Arc::new(environment().compile_expression_owned(text.to_string())?);
    if let Ok(mut c) = cache.lock() {
        // Bounded: a flood of distinct texts must not grow memory without limit.
        if c.len() > 10_000 {
            c.clear();
        }
        c.insert(text.to_string(), e.clone());
    }
    Ok(e)
}

/// How a string field is interpreted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SiteKind {
    /// A template rendered to a string (or a typed value when it is a single `{{ expr }}`).
    Template,
    /// A bare expression, as in `when`.
    Expression,
}

/// One string in a definition that is a template or expression.
#[derive(Debug, Clone, PartialEq)]
pub struct Site {
    /// JSON Pointer of the string in the document.
    pub pointer: String,
    pub text: String,
    pub kind: SiteKind,
}

/// Every template site of a step, in document order.
pub fn step_sites(step: &Step) -> Vec<Site> {
    let mut out = Vec::new();
    if let Some(When::Expr(expr)) = &step.when {
        out.push(Site {
            pointer: step.field("when"),
            text: expr.clone(),
            kind: SiteKind::Expression,
        });
    }
    let mut field = |name: &str, text: &Option<String>| {
        if let Some(text) = text {
            out.push(Site {
                pointer: step.field(name),
                text: text.clone(),
                kind: SiteKind::Template,
            });
        }
    };
    match &step.kind {
        StepKind::Action(a) => {
            let with = step.field("with");
            for (k, v) in &a.with {
                collect_strings(v, pointer_push(&with, k), &mut out);
            }
        }
        StepKind::Agent(a) => {
            field("prompt", &Some(a.prompt.clone()));
            field("system", &a.system);
        }
        StepKind::Approval(a) => field("message", &Some(a.message.clone())),
        StepKind::Wait(w) => field("until", &w.until),
        StepKind::ExternalEvent(e) => field("correlate", &e.correlate),
        StepKind::Script(s) => {
            let env = step.field("env");
            for (k, v) in &s.env {
                collect_strings(v, pointer_push(&env, k), &mut out);
            }
            if let Some(with) = &s.with {
                collect_strings(with, step.field("with"), &mut out);
            }
        }
        StepKind::Invalid => {}
    }
    out
}

/// Every string inside `value` as a template site, recursively.
pub fn collect_strings(value: &Value, pointer: String, out: &mut Vec<Site>) {
    match value {
        Value::String(s) => out.push(Site {
            pointer,
            text: s.clone(),
            kind: SiteKind::Template,
        }),
        Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                collect_strings(v, pointer_push(&pointer, &i.to_string()), out);
            }
        }
        Value::Object(map) => {
            for (k, v) in map {
                collect_strings(v, pointer_push(&pointer, k), out);
            }
        }
        _ => {}
    }
}

/// `when:` accepts `expr` and `{{ expr }}`; this is the bare expression.
pub fn expression_body(text: &str) -> &str {
    single_expression(text).unwrap_or(text.trim())
}

/// The inner expression when `text` is exactly one `{{ … }}` and nothing else.
pub fn single_expression(text: &str) -> Option<&str> {
    let t = text.trim();
    let inner = t.strip_prefix("{{")?.strip_suffix("}}")?;
    if inner.contains("{{") || inner.contains("}}") || inner.contains("{%") || inner.contains("{#")
    {
        return None;
    }
    let inner = inner.strip_prefix(['-', '+']).unwrap_or(inner);
    let inner = inner.strip_suffix(['-', '+']).unwrap_or(inner);
    Some(inner.trim())
}

/// A template or expression that does not parse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyntaxError {
    pub message: String,
    /// Byte range in the site's text, when minijinja knows it.
    pub range: Option<std::ops::Range<usize>>,
}

fn syntax_error(e: &minijinja::Error, text: &str, offset: usize) -> SyntaxError {
    let range = e
        .range()
        .map(|r| (r.start + offset).min(text.len())..(r.end + offset).min(text.len()));
    SyntaxError {
        message: e.detail().unwrap_or("syntax error").to_string(),
        range,
    }
}

/// Parse a site and return the dotted paths it reads (`input.email`,
/// `steps.classify.output.category`), sorted for stable diagnostics.
pub fn references(site: &Site) -> Result<Vec<String>, SyntaxError> {
    let env = environment();
    let expr_text = match site.kind {
        SiteKind::Expression => Some(expression_body(&site.text)),
        SiteKind::Template => single_expression(&site.text),
    };
    let mut vars: Vec<String> = if let Some(expr) = expr_text {
        let offset = site.text.find(expr).unwrap_or(0);
        let compiled = env
            .compile_expression(expr)
            .map_err(|e| syntax_error(&e, &site.text, offset))?;
        compiled.undeclared_variables(true).into_iter().collect()
    } else {
        let compiled = env
            .template_from_str(&site.text)
            .map_err(|e| syntax_error(&e, &site.text, 0))?;
        compiled.undeclared_variables(true).into_iter().collect()
    };
    vars.sort();
    Ok(vars)
}

/// Why rendering failed at run time.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("template `{pointer}`: {message}")]
pub struct RenderError {
    pub pointer: String,
    pub message: String,
}

fn render_error(pointer: &str, e: &minijinja::Error) -> RenderError {
    let mut message = e.kind().to_string();
    if let Some(detail) = e.detail() {
        message.push_str(": ");
        message.push_str(detail);
    }
    RenderError {
        pointer: pointer.to_string(),
        message,
    }
}

/// Render one string: a single `{{ expr }}` yields the typed value, anything else a string.
pub fn render_string(
    text: &str,
    ctx: &minijinja::Value,
    pointer: &str,
) -> Result<Value, RenderError> {
    let env = environment();
    if !text.contains("{{") && !text.contains("{%") && !text.contains("{#") {
        return Ok(Value::String(text.to_string()));
    }
    if let Some(expr) = single_expression(text) {
        let compiled = expression(expr).map_err(|e| render_error(pointer, &e))?;
        let v = compiled
            .eval(ctx.clone())
            .map_err(|e| render_error(pointer, &e))?;
        if v.is_undefined() {
            return Err(RenderError {
                pointer: pointer.to_string(),
                message: format!("`{expr}` is undefined"),
            });
        }
        return serde_json::to_value(&v).map_err(|e| RenderError {
            pointer: pointer.to_string(),
            message: format!("the value cannot be represented as JSON: {e}"),
        });
    }
    let s = env
        .render_str(text, ctx.clone())
        .map_err(|e| render_error(pointer, &e))?;
    Ok(Value::String(s))
}

/// Render every string inside `value`, keeping its structure.
pub fn render_value(
    value: &Value,
    ctx: &minijinja::Value,
    pointer: &str,
) -> Result<Value, RenderError> {
    Ok(match value {
        Value::String(s) => render_string(s, ctx, pointer)?,
        Value::Array(items) => Value::Array(
            items
                .iter()
                .enumerate()
                .map(|(i, v)| render_value(v, ctx, &pointer_push(pointer, &i.to_string())))
                .collect::<Result<_, _>>()?,
        ),
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| Ok((k.clone(), render_value(v, ctx, &pointer_push(pointer, k))?)))
                .collect::<Result<_, RenderError>>()?,
        ),
        other => other.clone(),
    })
}

/// Evaluate a `when` condition with Jinja truthiness.
pub fn eval_condition(
    when: &When,
    ctx: &minijinja::Value,
    pointer: &str,
) -> Result<bool, RenderError> {
    match when {
        When::Always(b) => Ok(*b),
        When::Expr(text) => {
            let expr = expression(expression_body(text)).map_err(|e| render_error(pointer, &e))?;
            let v = expr
                .eval(ctx.clone())
                .map_err(|e| render_error(pointer, &e))?;
            Ok(v.is_true())
        }
    }
}

/// Build a template context from JSON.
pub fn context(value: &Value) -> minijinja::Value {
    minijinja::Value::from(Serde(value))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn site(text: &str) -> Site {
        Site {
            pointer: "/x".into(),
            text: text.into(),
            kind: SiteKind::Template,
        }
    }

    #[test]
    fn references_are_dotted_paths() {
        let refs = references(&site("Hi {{ input.name }}, {{ steps.a.output.score }}")).unwrap();
        assert_eq!(refs, vec!["input.name", "steps.a.output.score"]);
    }

    #[test]
    fn syntax_errors_are_reported() {
        assert!(references(&site("{{ input.name ")).is_err());
        let e = Site {
            kind: SiteKind::Expression,
            ..site("input.x ==")
        };
        assert!(references(&e).is_err());
    }

    #[test]
    fn single_expression_keeps_type() {
        let ctx = context(&json!({"input": {"n": 3, "o": {"a": [1]}}}));
        assert_eq!(
            render_string("{{ input.n }}", &ctx, "/x").unwrap(),
            json!(3)
        );
        assert_eq!(
            render_string("{{ input.o }}", &ctx, "/x").unwrap(),
            json!({"a": [1]})
        );
        assert_eq!(
            render_string("n={{ input.n }}", &ctx, "/x").unwrap(),
            json!("n=3")
        );
    }

    #[test]
    fn strings_render_values_as_json_prints_them() {
        let input: Value =
            serde_json::from_str(r#"{"yes": true, "no": false, "n": 1e2, "half": 2.5, "i": 7, "none": null, "o": {"a": [true, 1e2]}}"#)
                .unwrap();
        let ctx = context(&json!({ "input": input }));
        let r = |t: &str| render_string(t, &ctx, "/x").unwrap();
        assert_eq!(r("{{ input.yes }}/{{ input.no }}"), json!("true/false"));
        assert_eq!(r("n={{ input.n }}"), json!("n=100"));
        assert_eq!(r("{{ input.half }} {{ input.i }}"), json!("2.5 7"));
        assert_eq!(r("[{{ input.none }}]"), json!("[null]"));
        assert_eq!(r("o={{ input.o }}"), json!(r#"o={"a":[true,100]}"#));
        assert_eq!(r("{{ input.yes and input.n > 50 }}!"), json!("true!"));
        assert_eq!(r("{{ 1e300 }}."), json!("1e+300."));
        assert_eq!(r("tags: {{ ['a', 'b'] }}"), json!(r#"tags: ["a","b"]"#));
        assert_eq!(r("{{ input.yes | tojson }}."), json!("true."));
        // FIXME: inside an expression minijinja's own rules still print `True`.
        assert_eq!(r("{{ input.yes ~ '' }}."), json!("True."));
        assert_eq!(r("{{ input.yes | string }}."), json!("True."));
        // A string stays as it is, unquoted.
        let ctx = context(&json!({"s": "a \"b\""}));
        assert_eq!(
            render_string("<{{ s }}>", &ctx, "/x").unwrap(),
            json!("<a \"b\">")
        );
    }

    #[test]
    fn a_single_expression_still_keeps_its_type() {
        let ctx = context(&json!({"b": true, "f": 2.5}));
        assert_eq!(render_string("{{ b }}", &ctx, "/x").unwrap(), json!(true));
        assert_eq!(render_string("{{ f }}", &ctx, "/x").unwrap(), json!(2.5));
    }

    #[test]
    fn undefined_is_an_error() {
        let ctx = context(&json!({"input": {}}));
        assert!(render_string("{{ input.missing }}", &ctx, "/x").is_err());
        assert!(render_string("a {{ input.missing }}", &ctx, "/x").is_err());
    }

    #[test]
    fn conditions_use_truthiness() {
        let ctx = context(&json!({"steps": {"a": {"output": "approve"}}}));
        let w = When::Expr("steps.a.output == 'approve'".into());
        assert!(eval_condition(&w, &ctx, "/w").unwrap());
        let w = When::Expr("{{ steps.a.output == 'reject' }}".into());
        assert!(!eval_condition(&w, &ctx, "/w").unwrap());
    }

    #[test]
    fn fuel_stops_runaway_templates() {
        let ctx = context(&json!({}));
        let r = render_string(
            "{% for a in range(100000) %}{% for b in range(100000) %}x{% endfor %}{% endfor %}",
            &ctx,
            "/x",
        );
        assert!(r.is_err());
    }
}
