//! Secrets: which workspace may read which, and redaction of every secret value from what
//! the engine persists or logs.

use std::collections::HashMap;

use serde_json::{Value, json};

use crate::store::DEFAULT_WORKSPACE;
use crate::template;

/// Shorter values would redact ordinary words and numbers.
const MIN_REDACTED_LEN: usize = 4;

/// The secrets of every workspace, and each workspace's `secrets` template value.
pub struct Secrets {
    by_workspace: HashMap<String, HashMap<String, String>>,
    /// Secrets granted to every workspace (`*`).
    everywhere: HashMap<String, String>,
    /// Every secret value, longest first, so a secret containing another is hidden whole.
    values: Vec<String>,
    templates: std::sync::Mutex<HashMap<String, minijinja::Value>>,
}

impl Secrets {
    /// `secrets` belong to the default workspace; `grants` gives a secret (by name) to other
    /// workspaces as well, `*` to all.
    pub fn new(secrets: &HashMap<String, String>, grants: &HashMap<String, Vec<String>>) -> Self {
        let mut by_workspace: HashMap<String, HashMap<String, String>> = HashMap::new();
        let mut everywhere = HashMap::new();
        for (name, value) in secrets {
            by_workspace
                .entry(DEFAULT_WORKSPACE.to_string())
                .or_default()
                .insert(name.clone(), value.clone());
            for ws in grants.get(name).into_iter().flatten() {
                if ws == "*" {
                    everywhere.insert(name.clone(), value.clone());
                } else {
                    by_workspace
                        .entry(ws.clone())
                        .or_default()
                        .insert(name.clone(), value.clone());
                }
            }
        }
        let mut values: Vec<String> = secrets
            .values()
            .filter(|v| v.len() >= MIN_REDACTED_LEN)
            .cloned()
            .collect();
        values.sort_by_key(|v| std::cmp::Reverse(v.len()));
        values.dedup();
        Self {
            by_workspace,
            everywhere,
            values,
            templates: std::sync::Mutex::default(),
        }
    }

    /// The secrets a workspace may read.
    pub fn of(&self, workspace_id: &str) -> HashMap<String, String> {
        let mut out = self.everywhere.clone();
        if let Some(own) = self.by_workspace.get(workspace_id) {
            out.extend(own.iter().map(|(k, v)| (k.clone(), v.clone())));
        }
        out
    }

    /// Whether a workspace may read a non-empty secret of this name.
    pub fn has(&self, workspace_id: &str, name: &str) -> bool {
        let own = self
            .by_workspace
            .get(workspace_id)
            .and_then(|m| m.get(name));
        own.or_else(|| self.everywhere.get(name))
            .is_some_and(|v| !v.is_empty())
    }

    /// `secrets` as a template value for a workspace, converted once.
    pub fn template(&self, workspace_id: &str) -> minijinja::Value {
        let mut cache = self
            .templates
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        cache
            .entry(workspace_id.to_string())
            .or_insert_with(|| template::context(&json!(self.of(workspace_id))))
            .clone()
    }

    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// Replace every secret value (of any workspace) wherever it appears.
    pub fn redact(&self, v: &Value) -> Value {
        if self.values.is_empty() {
            return v.clone();
        }
        match v {
            Value::String(s) => Value::String(self.redact_str(s)),
            Value::Array(a) => Value::Array(a.iter().map(|x| self.redact(x)).collect()),
            Value::Object(m) => {
                Value::Object(m.iter().map(|(k, x)| (k.clone(), self.redact(x))).collect())
            }
            other => other.clone(),
        }
    }

    pub fn redact_opt(&self, v: &mut Option<Value>) {
        if !self.values.is_empty()
            && let Some(x) = v
        {
            *x = self.redact(x);
        }
    }

    pub fn redact_str(&self, s: &str) -> String {
        let mut out = s.to_string();
        for secret in &self.values {
            if out.contains(secret.as_str()) {
                out = out.replace(secret.as_str(), "***");
            }
        }
        out
    }
}

/// `NAME=ws1,ws2;OTHER=*` (from `STEPWISE_SECRET_GRANTS`).
pub fn parse_grants(text: &str) -> Result<HashMap<String, Vec<String>>, String> {
    let mut out = HashMap::new();
    for entry in text.split(';').map(str::trim).filter(|e| !e.is_empty()) {
        let (name, workspaces) = entry
            .split_once('=')
            .ok_or_else(|| format!("`{entry}` must be NAME=workspace[,workspace…] or NAME=*"))?;
        let list: Vec<String> = workspaces
            .split(',')
            .map(|w| w.trim().to_string())
            .filter(|w| !w.is_empty())
            .collect();
        if name.trim().is_empty() || list.is_empty() {
            return Err(format!("`{entry}` names no secret or no workspace"));
        }
        out.insert(name.trim().to_string(), list);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redaction_hides_secret_values_longest_first() {
        let s = Secrets::new(
            &HashMap::from([
                ("TOKEN".to_string(), "s3cr3t-value".to_string()),
                ("PART".to_string(), "s3cr3t".to_string()),
            ]),
            &HashMap::new(),
        );
        let v = json!({"headers": {"Authorization": "Bearer s3cr3t-value"}, "n": 1});
        assert_eq!(
            s.redact(&v),
            json!({"headers": {"Authorization": "Bearer ***"}, "n": 1})
        );
    }

    #[test]
    fn a_workspace_reads_only_granted_secrets() {
        let secrets = HashMap::from([
            ("A".to_string(), "alpha-value".to_string()),
            ("B".to_string(), "beta-value".to_string()),
            ("C".to_string(), "gamma-value".to_string()),
        ]);
        let grants = parse_grants("B=team; C=*").unwrap();
        let s = Secrets::new(&secrets, &grants);
        assert_eq!(s.of(DEFAULT_WORKSPACE).len(), 3);
        let team = s.of("team");
        assert!(team.contains_key("B") && team.contains_key("C") && !team.contains_key("A"));
        let other = s.of("other");
        assert_eq!(other.keys().collect::<Vec<_>>(), vec!["C"]);
        assert!(parse_grants("nonsense").is_err());
    }
}
