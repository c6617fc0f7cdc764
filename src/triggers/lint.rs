//! Lint for trigger files: the schema, one source, cron and time zones, durations, templates.

use serde_json::Value;

use crate::diagnostics::{Code, Diagnostic, did_you_mean};
use crate::template::{self, Site, SiteKind};
use crate::validate::schema::{Format, check_format};
use crate::yaml::{SpanIndex, pointer_push};

/// What each trigger template may read.
fn scope(pointer: &str) -> &'static [&'static str] {
    if pointer.starts_with("/transform") || pointer.starts_with("/signal/") {
        &["event", "secrets"]
    } else if pointer == "/poll/url" || pointer.starts_with("/poll/headers") {
        &["cursor", "secrets"]
    } else if pointer == "/poll/key" {
        &["item"]
    } else if pointer == "/poll/items" {
        &["response"]
    } else if pointer == "/poll/cursor" {
        &["response", "items", "cursor"]
    } else if pointer == "/webhook/signature/secret" {
        &["secrets"]
    } else {
        &[]
    }
}

const GLOBALS: &[&str] = &[
    "range",
    "dict",
    "namespace",
    "loop",
    "none",
    "true",
    "false",
];

pub fn lint(doc: &Value, spans: &SpanIndex) -> Vec<Diagnostic> {
    let mut out = check_format(Format::Trigger, doc, spans);
    let sources: Vec<&str> = ["webhook", "schedule", "poll"]
        .into_iter()
        .filter(|k| doc.get(*k).is_some())
        .collect();
    if sources.len() != 1 {
        let at = sources
            .get(1)
            .map_or_else(|| spans.value(""), |k| spans.key(&format!("/{k}")));
        out.push(
            Diagnostic::new(
                Code::TriggerSource,
                at,
                if sources.is_empty() {
                    "a trigger needs a source: `webhook`, `schedule` or `poll`".to_string()
                } else {
                    format!(
                        "a trigger has one source, but this one has {}",
                        sources.join(" and ")
                    )
                },
            )
            .with_label("source")
            .with_help(if sources.is_empty() {
                "add one, e.g. `webhook: {endpoint: signup}` or `schedule: {cron: \"0 9 * * MON\"}`"
            } else {
                "put each source in a trigger file of its own"
            }),
        );
    }
    if let Some(s) = doc.get("schedule") {
        schedule(s, spans, &mut out);
    }
    if let Some(p) = doc.get("poll") {
        duration(p.get("interval"), "/poll/interval", spans, &mut out);
        if p.get("items")
            .and_then(Value::as_str)
            .is_some_and(|i| i.starts_with('/') && i.contains("{{"))
        {
            out.push(
                Diagnostic::new(
                    Code::InvalidValue,
                    spans.value("/poll/items"),
                    "`items` is a JSON Pointer or a template, not both",
                )
                .with_label("ambiguous"),
            );
        }
    }
    if let Some(i) = doc.pointer("/webhook/idempotency")
        && i.get("header").is_some() == i.get("field").is_some()
    {
        out.push(
            Diagnostic::new(
                Code::InvalidValue,
                spans.key("/webhook/idempotency"),
                "`idempotency` takes `header` or `field`, exactly one",
            )
            .with_label("one of header or field")
            .with_help(
                "e.g. `idempotency: {header: X-Delivery-Id}` or `idempotency: {field: /id}`",
            ),
        );
    }
    if let Some(ts) = doc.pointer("/webhook/signature/timestamp") {
        duration(
            ts.get("tolerance"),
            "/webhook/signature/timestamp/tolerance",
            spans,
            &mut out,
        );
        if doc
            .pointer("/webhook/signature/type")
            .and_then(Value::as_str)
            == Some("shared-secret")
        {
            out.push(
                Diagnostic::new(
                    Code::InvalidValue,
                    spans.key("/webhook/signature/timestamp"),
                    "`timestamp` needs a signature over the request: `type: hmac-sha256`, not `shared-secret`",
                )
                .with_label("nothing signs the timestamp")
                .with_help("drop `type: shared-secret` (hmac-sha256 is the default), or drop `timestamp`"),
            );
        }
    }
    if let Some(schema) = doc.pointer("/webhook/schema")
        && let Err(e) = jsonschema::options()
            .should_validate_formats(false)
            .build(schema)
    {
        out.push(
            Diagnostic::new(
                Code::InvalidJsonSchema,
                spans.value("/webhook/schema"),
                format!(
                    "`webhook.schema` is not a valid JSON Schema: {}",
                    e.masked()
                ),
            )
            .with_label("invalid schema"),
        );
    }
    signal(doc, spans, &mut out);
    templates(doc, spans, &mut out);
    out
}

/// `signal:` belongs to webhooks; signal-with-start needs the workflow it starts.
fn signal(doc: &Value, spans: &SpanIndex, out: &mut Vec<Diagnostic>) {
    let Some(sig) = doc.get("signal") else {
        return;
    };
    if doc.get("webhook").is_none() {
        out.push(
            Diagnostic::new(
                Code::InvalidValue,
                spans.key("/signal"),
                "`signal` is for webhook triggers: schedules and polls start runs",
            )
            .with_label("not a webhook")
            .with_help(
                "deliver signals from a `webhook:` trigger, or send them to POST /v1/signals",
            ),
        );
    }
    if sig.get("start_if_none") == Some(&Value::Bool(true)) && doc.get("workflow").is_none() {
        out.push(
            Diagnostic::new(
                Code::InvalidValue,
                spans.value("/signal/start_if_none"),
                "`start_if_none` starts a run of `workflow`, but this trigger names none",
            )
            .with_label("no workflow to start")
            .with_help("add `workflow: <definition id>` (and a `transform` for its input)"),
        );
    }
}

/// `event.body.x` read by a template of a webhook with a body `schema`: `x` must be a
/// field that schema can have (the data-flow typing of workflows, for triggers).
fn body_fields(
    doc: &Value,
    site: &Site,
    refs: &[String],
    spans: &SpanIndex,
    out: &mut Vec<Diagnostic>,
) {
    let Some(schema) = doc.pointer("/webhook/schema") else {
        return;
    };
    for r in refs {
        let parts: Vec<&str> = r.split('.').collect();
        if parts.len() < 3 || parts[0] != "event" || parts[1] != "body" {
            continue;
        }
        if let Some((i, known)) = crate::validate::dataflow::missing_field(schema, &parts[2..]) {
            let field = parts[2 + i];
            out.push(
                Diagnostic::new(
                    Code::TemplateUnknownField,
                    spans.value(&site.pointer),
                    format!("`{field}` is not a field of `{}`", parts[..2 + i].join(".")),
                )
                .with_label("not in the webhook's body schema")
                .with_help(
                    did_you_mean(field, known.iter().map(String::as_str)).unwrap_or_else(|| {
                        format!(
                            "the body schema declares {}",
                            known
                                .iter()
                                .map(|k| format!("`{k}`"))
                                .collect::<Vec<_>>()
                                .join(", ")
                        )
                    }),
                ),
            );
        }
    }
}

fn duration(v: Option<&Value>, pointer: &str, spans: &SpanIndex, out: &mut Vec<Diagnostic>) {
    if let Some(Value::String(d)) = v
        && let Err(e) = crate::duration::parse(d)
    {
        out.push(
            Diagnostic::new(Code::InvalidDuration, spans.value(pointer), e.to_string())
                .with_label("not a duration")
                .with_help("write a number and a unit (ms, s, m, h, d), e.g. `15m`"),
        );
    }
}

fn schedule(s: &Value, spans: &SpanIndex, out: &mut Vec<Diagnostic>) {
    let cron = s.get("cron").and_then(Value::as_str);
    let every = s.get("every").and_then(Value::as_str);
    if cron.is_some() == every.is_some() {
        out.push(
            Diagnostic::new(
                Code::TriggerSource,
                spans.key("/schedule"),
                "a schedule takes `cron` or `every`, exactly one",
            )
            .with_label("schedule")
            .with_help(
                "`cron: \"0 9 * * MON\"` fires at set times; `every: 15m` at a fixed interval",
            ),
        );
    }
    if let Some(c) = cron
        && let Err(e) = c.parse::<croner::Cron>()
    {
        out.push(
            Diagnostic::new(
                Code::InvalidCron,
                spans.value("/schedule/cron"),
                format!("`{c}` is not a cron expression: {e}"),
            )
            .with_label("invalid cron")
            .with_help(
                "minute hour day-of-month month day-of-week (an optional seconds field may come first), e.g. `0 9 * * MON`",
            ),
        );
    }
    if let Some(tz) = s.get("timezone").and_then(Value::as_str)
        && jiff::tz::TimeZone::get(tz).is_err()
    {
        out.push(
            Diagnostic::new(
                Code::InvalidTimezone,
                spans.value("/schedule/timezone"),
                format!("`{tz}` is not a known time zone"),
            )
            .with_label("unknown time zone")
            .with_help("use an IANA name such as `Europe/Berlin` or `UTC`"),
        );
    }
    duration(s.get("every"), "/schedule/every", spans, out);
}

fn templates(doc: &Value, spans: &SpanIndex, out: &mut Vec<Diagnostic>) {
    let mut sites = Vec::new();
    if let Some(t) = doc.get("transform") {
        template::collect_strings(t, "/transform".into(), &mut sites);
    }
    if let Some(p) = doc.pointer("/signal/payload") {
        template::collect_strings(p, "/signal/payload".into(), &mut sites);
    }
    for p in [
        "/poll/url",
        "/poll/key",
        "/poll/cursor",
        "/webhook/signature/secret",
        "/signal/correlate",
    ] {
        if let Some(Value::String(s)) = doc.pointer(p) {
            sites.push(Site {
                pointer: p.into(),
                text: s.clone(),
                kind: SiteKind::Template,
            });
        }
    }
    if let Some(Value::String(s)) = doc.pointer("/poll/items")
        && !s.starts_with('/')
        && !s.is_empty()
    {
        sites.push(Site {
            pointer: "/poll/items".into(),
            text: s.clone(),
            kind: SiteKind::Template,
        });
    }
    if let Some(Value::Object(h)) = doc.pointer("/poll/headers") {
        for (k, v) in h {
            if let Value::String(s) = v {
                sites.push(Site {
                    pointer: pointer_push("/poll/headers", k),
                    text: s.clone(),
                    kind: SiteKind::Template,
                });
            }
        }
    }
    for site in sites {
        let allowed = scope(&site.pointer);
        match template::references(&site) {
            Err(e) => out.push(
                Diagnostic::new(
                    Code::TemplateSyntax,
                    spans.value(&site.pointer),
                    format!("this template does not parse: {}", e.message),
                )
                .with_label("syntax error"),
            ),
            Ok(refs) => {
                body_fields(doc, &site, &refs, spans, out);
                for r in refs {
                    let root = r.split('.').next().unwrap_or_default();
                    if !allowed.contains(&root) && !GLOBALS.contains(&root) {
                        out.push(
                            Diagnostic::new(
                                Code::TemplateUnknownVariable,
                                spans.value(&site.pointer),
                                format!("this template has no variable `{root}`"),
                            )
                            .with_label("undefined here")
                            .with_help(
                                did_you_mean(root, allowed.iter().copied()).unwrap_or_else(|| {
                                    format!(
                                        "here templates can read {}",
                                        allowed
                                            .iter()
                                            .map(|a| format!("`{a}`"))
                                            .collect::<Vec<_>>()
                                            .join(", ")
                                    )
                                }),
                            ),
                        );
                    }
                }
            }
        }
    }
}
