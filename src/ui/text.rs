//! Small text helpers: labels, durations, and JSON shown as YAML.

use serde_json::Value;

/// `WAITING` → `Waiting`.
pub fn title_case(s: &str) -> String {
    let lower = s.to_ascii_lowercase().replace('_', " ");
    let mut c = lower.chars();
    c.next()
        .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
        .unwrap_or_default()
}

/// `350 ms`, `1.2 s`, `3 min 5 s`, `2 h 4 min`.
pub fn millis(ms: i128) -> String {
    let ms = ms.max(0);
    if ms < 1000 {
        return format!("{ms} ms");
    }
    if ms < 60_000 {
        return format!("{:.1} s", ms as f64 / 1000.0);
    }
    let s = ms / 1000;
    if s < 3600 {
        return format!("{} min {} s", s / 60, s % 60);
    }
    format!("{} h {} min", s / 3600, (s % 3600) / 60)
}

fn scalar(v: &Value) -> String {
    match v {
        Value::Null => "null".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => {
            let plain = !s.is_empty()
                && s.chars().all(|c| {
                    c.is_ascii_alphanumeric() || matches!(c, ' ' | '_' | '-' | '.' | '/' | '@')
                })
                && !s.starts_with(' ')
                && !s.ends_with(' ')
                && s.parse::<f64>().is_err()
                && !matches!(
                    s.to_ascii_lowercase().as_str(),
                    "true" | "false" | "null" | "yes" | "no" | "on" | "off" | "~"
                );
            if plain {
                s.clone()
            } else {
                // A JSON string is a valid YAML double-quoted scalar.
                Value::String(s.clone()).to_string()
            }
        }
        Value::Array(a) if a.is_empty() => "[]".into(),
        Value::Object(o) if o.is_empty() => "{}".into(),
        _ => String::new(),
    }
}

fn is_scalar(v: &Value) -> bool {
    match v {
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
        _ => true,
    }
}

fn key(k: &str) -> String {
    scalar(&Value::String(k.to_string()))
}

fn write(v: &Value, indent: usize, out: &mut String) {
    let pad = " ".repeat(indent);
    match v {
        Value::Object(o) if !o.is_empty() => {
            for (k, val) in o {
                if is_scalar(val) {
                    out.push_str(&format!("{pad}{}: {}\n", key(k), scalar(val)));
                } else {
                    out.push_str(&format!("{pad}{}:\n", key(k)));
                    write(val, indent + 2, out);
                }
            }
        }
        Value::Array(a) if !a.is_empty() => {
            for val in a {
                if is_scalar(val) {
                    out.push_str(&format!("{pad}- {}\n", scalar(val)));
                } else {
                    let mut inner = String::new();
                    write(val, indent + 2, &mut inner);
                    // The first line of the item goes after the dash.
                    let trimmed = inner.trim_start_matches(' ');
                    out.push_str(&format!("{pad}- {trimmed}"));
                }
            }
        }
        other => out.push_str(&format!("{pad}{}\n", scalar(other))),
    }
}

/// JSON written as block-style YAML (strings quoted where YAML would read them otherwise).
pub fn yaml(v: &Value) -> String {
    let mut out = String::new();
    write(v, 0, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn yaml_reads_back_as_the_same_json() {
        let v = json!({"a": 1, "b": "yes", "c": [1, {"d": "x y", "e": []}], "f": {"g": null}, "h": "01", "i": "a: b"});
        let text = yaml(&v);
        assert_eq!(
            text,
            "a: 1\nb: \"yes\"\nc:\n  - 1\n  - d: x y\n    e: []\nf:\n  g: null\nh: \"01\"\ni: \"a: b\"\n"
        );
    }

    #[test]
    fn durations_read_well() {
        assert_eq!(millis(350), "350 ms");
        assert_eq!(millis(1_250), "1.2 s");
        assert_eq!(millis(185_000), "3 min 5 s");
        assert_eq!(title_case("WAITING"), "Waiting");
    }
}
