//! The engine's settings, with defaults for a single server and what the environment sets.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use super::secrets;
use crate::compile::Plan;
use crate::diagnostics::{Diagnostic, SourceFile};
use crate::exec::agent::{LlmConfig, Prices};
use crate::validate::LintOptions;

/// Lints and compiles a definition source. The engine is handed one (the default is the
/// linter in `validate`), so it depends on loaded plans, not on how they are checked. A
/// catalog (the workspace's workflows) is given when a definition is applied, so agent
/// tools are checked against what they name.
#[derive(Clone)]
pub struct PlanLoader(pub Arc<LoadFn>);

/// `LintOptions` say whether `script` steps are allowed (when not, each is a diagnostic) and
/// which workflows agent tools may name.
pub type LoadFn =
    dyn Fn(&SourceFile, &LintOptions<'_>) -> Result<Plan, Vec<Diagnostic>> + Send + Sync;

impl std::fmt::Debug for PlanLoader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PlanLoader")
    }
}

impl PlanLoader {
    /// Load a stored version: scripts are allowed here (whether they may run is decided
    /// when a run is created), so a version applied once always loads again.
    pub fn load(&self, file: &SourceFile) -> Result<Plan, Vec<Diagnostic>> {
        (self.0)(file, &LintOptions::default())
    }

    /// Load a definition being applied: scripts refused unless `options.allow_scripts`,
    /// agent tools checked against `options.catalog`.
    pub fn load_with(
        &self,
        file: &SourceFile,
        options: &LintOptions<'_>,
    ) -> Result<Plan, Vec<Diagnostic>> {
        (self.0)(file, options)
    }
}

/// Settings of the engine; every field has a default that suits a single server.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// How long a run may stay PAUSED or WAITING before it fails with a timeout error.
    pub max_suspended: Duration,
    /// Limit of one action or agent attempt when the step sets no `timeout`.
    pub default_step_timeout: Duration,
    pub llm: LlmConfig,
    /// Model prices (`STEPWISE_PRICES`): what agent steps' `budget` counts.
    pub prices: Prices,
    /// `secrets.NAME` in templates; from `STEPWISE_SECRET_NAME` variables. They belong to
    /// the default workspace.
    pub secrets: HashMap<String, String>,
    /// Secret name → further workspaces (or `*`) that may read it
    /// (`STEPWISE_SECRET_GRANTS=NAME=ws1,ws2;OTHER=*`).
    pub secret_grants: HashMap<String, Vec<String>>,
    /// Most writes committed in one transaction.
    pub max_batch: usize,
    /// After a failed commit, the first retry waits this long; each further failure doubles
    /// the wait, up to `commit_retry_max`.
    pub commit_retry_first: Duration,
    pub commit_retry_max: Duration,
    /// Turns a definition's source into a plan (or diagnostics); the engine never lints.
    pub plans: PlanLoader,
    /// Stands in for executors (`stepwise test`); `None` everywhere else.
    pub intercept: Option<super::Interceptor>,
    /// A failure alert for every workflow, besides the workflow's own `on_failure`
    /// (`STEPWISE_ON_FAILURE_URL`, `STEPWISE_ON_FAILURE_WORKFLOW`).
    pub on_failure: Option<crate::definition::OnFailure>,
    /// A failed alert delivery is tried again after this, doubling up to 5 minutes.
    pub alert_retry_first: Duration,
    /// Attempts of one alert before it is given up (`alert.failed` in the run's trace).
    pub alert_max_attempts: i64,
    /// Whether and how `script` steps run (`--allow-scripts`, `--script-sandbox`).
    pub scripts: crate::exec::script::ScriptConfig,
    /// Where run workspaces live and how long they stay (`workspace: true`).
    pub workspaces: crate::workspace::WorkspaceConfig,
    /// Time limit of one alert attempt (`STEPWISE_ALERT_TIMEOUT`); an attempt claimed by a
    /// process that died is taken again 5 s after it.
    pub alert_timeout: Duration,
    /// Spread retry backoff at random (equal jitter). `stepwise test` turns it off: on its
    /// virtual clock every case's retries then fall at the same, predictable times.
    pub jitter: bool,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            max_suspended: Duration::from_secs(30 * 86_400),
            default_step_timeout: Duration::from_secs(300),
            llm: LlmConfig::default(),
            prices: Prices::default(),
            secrets: HashMap::new(),
            secret_grants: HashMap::new(),
            max_batch: 20_000,
            commit_retry_first: Duration::from_millis(50),
            commit_retry_max: Duration::from_secs(5),
            plans: PlanLoader::default(),
            intercept: None,
            on_failure: None,
            alert_retry_first: Duration::from_secs(1),
            alert_max_attempts: 20,
            scripts: Default::default(),
            workspaces: Default::default(),
            alert_timeout: Duration::from_secs(10),
            jitter: true,
        }
    }
}

impl EngineConfig {
    /// Defaults plus what the environment sets (`STEPWISE_LLM_*`, `STEPWISE_SECRET_*`,
    /// `STEPWISE_MAX_SUSPENDED`).
    pub fn from_env() -> Result<Self, String> {
        let mut cfg = Self {
            llm: LlmConfig::from_env(),
            ..Self::default()
        };
        for (k, v) in std::env::vars() {
            if k == "STEPWISE_SECRET_GRANTS" {
                cfg.secret_grants = secrets::parse_grants(&v)
                    .map_err(|e| format!("STEPWISE_SECRET_GRANTS: {e}"))?;
            } else if let Some(name) = k.strip_prefix("STEPWISE_SECRET_")
                && !name.is_empty()
            {
                cfg.secrets.insert(name.to_string(), v);
            }
        }
        let url = std::env::var("STEPWISE_ON_FAILURE_URL")
            .ok()
            .filter(|v| !v.is_empty());
        let workflow = std::env::var("STEPWISE_ON_FAILURE_WORKFLOW")
            .ok()
            .filter(|v| !v.is_empty());
        if let Some(u) = &url
            && !(u.starts_with("http://") || u.starts_with("https://"))
        {
            return Err(format!(
                "STEPWISE_ON_FAILURE_URL: `{u}` is not an http:// or https:// URL"
            ));
        }
        if url.is_some() || workflow.is_some() {
            cfg.on_failure = Some(crate::definition::OnFailure {
                webhook: url.map(|url| crate::definition::AlertWebhook {
                    url,
                    headers: Default::default(),
                }),
                workflow,
            });
        }
        cfg.scripts.allowed = env_flag("STEPWISE_ALLOW_SCRIPTS");
        if let Ok(v) = std::env::var("STEPWISE_SCRIPT_SANDBOX") {
            cfg.scripts.sandbox =
                parse_sandbox(&v).map_err(|e| format!("STEPWISE_SCRIPT_SANDBOX: {e}"))?;
        }
        if let Some(v) = std::env::var_os("STEPWISE_WORKSPACES").filter(|v| !v.is_empty()) {
            cfg.workspaces.root = Some(v.into());
        }
        if let Ok(v) = std::env::var("STEPWISE_WORKSPACE_RETENTION") {
            cfg.workspaces.retention = crate::duration::parse(&v)
                .map_err(|e| format!("STEPWISE_WORKSPACE_RETENTION: {e}"))?;
        }
        if let Ok(v) = std::env::var("STEPWISE_PRICES")
            && !v.trim().is_empty()
        {
            cfg.prices = Prices::parse(&v).map_err(|e| format!("STEPWISE_PRICES: {e}"))?;
        }
        if let Ok(v) = std::env::var("STEPWISE_ALERT_TIMEOUT") {
            cfg.alert_timeout =
                crate::duration::parse(&v).map_err(|e| format!("STEPWISE_ALERT_TIMEOUT: {e}"))?;
            if cfg.alert_timeout.is_zero() {
                return Err("STEPWISE_ALERT_TIMEOUT: must be longer than 0s".into());
            }
        }
        if let Ok(v) = std::env::var("STEPWISE_MAX_SUSPENDED") {
            cfg.max_suspended =
                crate::duration::parse(&v).map_err(|e| format!("STEPWISE_MAX_SUSPENDED: {e}"))?;
            if cfg.max_suspended.is_zero() {
                return Err(
                    "STEPWISE_MAX_SUSPENDED: must be longer than 0s (every approval would time out at once)"
                        .into(),
                );
            }
        }
        Ok(cfg)
    }
}

/// A boolean variable as clap reads one: set, and not `0`, `false`, `no`, `off` or empty.
pub fn env_flag(name: &str) -> bool {
    std::env::var(name).is_ok_and(|v| {
        !matches!(
            v.trim().to_ascii_lowercase().as_str(),
            "" | "0" | "false" | "no" | "off"
        )
    })
}

/// `bwrap` (the default: confined by bubblewrap) or `none` (unconfined).
pub fn parse_sandbox(v: &str) -> Result<crate::exec::sandbox::Sandbox, String> {
    match v.trim() {
        "bwrap" | "" => Ok(crate::exec::sandbox::Sandbox::default()),
        "none" => Ok(crate::exec::sandbox::Sandbox::Unconfined),
        other => Err(format!("`{other}` is not a sandbox: use `bwrap` or `none`")),
    }
}
