//! The flags that let an engine run `script` steps, shared by `serve`, `worker`, `run`,
//! `mcp` and `test` (docs/scripts.md).

use std::path::PathBuf;

use clap::Args;

use crate::engine::EngineConfig;

#[derive(Debug, Clone, Default, Args)]
pub struct ScriptArgs {
    /// Run `script` steps. Without it, definitions and runs with script steps are refused
    /// (docs/scripts.md).
    #[arg(
        long,
        env = "STEPWISE_ALLOW_SCRIPTS",
        action = clap::ArgAction::Set,
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "true",
        default_value = "false",
        value_name = "BOOL",
        value_parser = super::flag_value
    )]
    pub allow_scripts: bool,
    /// How scripts are isolated: `bwrap` (bubblewrap must be installed, or the command
    /// refuses to start) or `none` (unconfined: scripts run with the server's own rights).
    #[arg(long, env = "STEPWISE_SCRIPT_SANDBOX", value_parser = ["bwrap", "none"])]
    pub script_sandbox: Option<String>,
    /// Directory of the run workspaces (default: `<db>.workspaces`). It belongs to this
    /// database: directories of runs the database does not know are removed.
    #[arg(long, env = "STEPWISE_WORKSPACES")]
    pub workspaces: Option<PathBuf>,
    /// How long a finished run's workspace is kept, e.g. 1h or 7d (default 24h).
    #[arg(long, env = "STEPWISE_WORKSPACE_RETENTION")]
    pub workspace_retention: Option<String>,
}

impl ScriptArgs {
    /// Put the flags into `cfg` (over what the environment set).
    pub fn apply(&self, cfg: &mut EngineConfig) -> Result<(), String> {
        cfg.scripts.allowed |= self.allow_scripts;
        if let Some(s) = &self.script_sandbox {
            cfg.scripts.sandbox = crate::engine::parse_sandbox(s)?;
        }
        if let Some(w) = &self.workspaces {
            cfg.workspaces.root = Some(w.clone());
        }
        if let Some(r) = &self.workspace_retention {
            cfg.workspaces.retention =
                crate::duration::parse(r).map_err(|e| format!("--workspace-retention: {e}"))?;
        }
        Ok(())
    }
}

/// When scripts are allowed, check that they can run as configured and say how they
/// will (on stderr); an error when they cannot.
pub fn announce(cfg: &EngineConfig) -> Result<(), String> {
    if !cfg.scripts.allowed {
        return Ok(());
    }
    let how = cfg.scripts.sandbox.check()?;
    match cfg.scripts.sandbox {
        crate::exec::sandbox::Sandbox::Unconfined => eprintln!("WARNING: {how}"),
        crate::exec::sandbox::Sandbox::Bwrap(_) => eprintln!("{how}"),
    }
    Ok(())
}
