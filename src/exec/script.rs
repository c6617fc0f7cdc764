//! The `script` step: a command run in the run's workspace, with the step's `env`, its
//! input as JSON on stdin, and its stdout as output (parsed JSON, or text).
//!
//! The script runs in a process group of its own, under an address-space limit; when the
//! attempt times out or stdout passes its limit the whole group is killed, and so is
//! whatever the script left running when it exits. Under bwrap the sandbox's pid namespace
//! dies with it (see `sandbox`).

use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};

use super::sandbox::Sandbox;
use super::{StepError, Success};

/// Default address-space limit of a script, in MiB.
pub const DEFAULT_MEMORY_MB: u64 = 1024;
/// Default of the most stdout kept.
pub const DEFAULT_MAX_OUTPUT: u64 = 1024 * 1024;
/// The most `max_output_bytes` may say (outputs are stored with the run).
pub const MAX_OUTPUT_CEILING: u64 = 64 * 1024 * 1024;
/// How much of stderr's end an error keeps.
const STDERR_TAIL: usize = 8 * 1024;
/// How long output still held open by escaped processes is waited for after the end.
const DRAIN: Duration = Duration::from_secs(2);

/// Whether and how the engine runs scripts.
#[derive(Debug, Clone, Default)]
pub struct ScriptConfig {
    /// `--allow-scripts`: without it, definitions with script steps are refused when
    /// applied and runs of them when created, and a script step that starts anyway fails.
    pub allowed: bool,
    pub sandbox: Sandbox,
    /// Directories the sandbox hides even when they sit in a shown system directory (the
    /// database's directory, the workspaces root).
    pub hidden: Vec<PathBuf>,
}

/// One attempt, rendered.
pub struct ScriptCall<'a> {
    pub sandbox: &'a Sandbox,
    pub hidden: &'a [PathBuf],
    /// The run's workspace on the host (it exists).
    pub workspace: PathBuf,
    /// The program and its arguments (`run:` is `sh -e -c SCRIPT`).
    pub argv: Vec<String>,
    /// The step's rendered `env`, then the `STEPWISE_*` variables (which win).
    pub env: Vec<(String, String)>,
    pub stdin: Vec<u8>,
    pub network: bool,
    pub memory_mb: u64,
    pub max_output: u64,
    pub timeout: Duration,
    pub output_schema: Option<&'a Value>,
}

/// Variables every script gets, beside the step's own: where it runs and for whom.
pub fn base_env(
    workspace: &str,
    run_id: &str,
    step_id: &str,
    attempt: i64,
) -> Vec<(String, String)> {
    let path = std::env::var("PATH")
        .unwrap_or_else(|_| "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into());
    [
        ("PATH", path.as_str()),
        ("HOME", workspace),
        ("LANG", "C.UTF-8"),
        ("STEPWISE_WORKSPACE", workspace),
        ("STEPWISE_RUN_ID", run_id),
        ("STEPWISE_STEP_ID", step_id),
        ("STEPWISE_ATTEMPT", &attempt.to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

/// How the attempt ended before its output is looked at.
enum End {
    Exited(std::io::Result<std::process::ExitStatus>),
    Overflow,
    Timeout,
}

pub async fn run(call: ScriptCall<'_>) -> Result<Success, StepError> {
    let (launcher, _) = call
        .sandbox
        .launcher(&call.workspace, call.network, call.hidden);
    // The memory limit is set by a small shell in front of the script: `ulimit` applies to
    // it and everything it starts, inside the sandbox as outside.
    let limit_kib = call.memory_mb.saturating_mul(1024).to_string();
    let wrapper = [
        "/bin/sh",
        "-c",
        "ulimit -v \"$1\" || exit 125; shift; exec \"$@\"",
        "stepwise-script",
        limit_kib.as_str(),
    ];
    let mut cmd = match &launcher {
        Some((program, args)) => {
            let mut c = tokio::process::Command::new(program);
            c.args(args).args(wrapper);
            c
        }
        None => {
            let mut c = tokio::process::Command::new(wrapper[0]);
            c.args(&wrapper[1..]).current_dir(&call.workspace);
            c
        }
    };
    cmd.args(&call.argv)
        // The server's environment (API keys, secrets) never reaches a script.
        .env_clear()
        .envs(call.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    let program = match &launcher {
        Some((p, _)) => p.display().to_string(),
        None => call.argv.first().cloned().unwrap_or_default(),
    };
    let mut child = cmd
        .spawn()
        .map_err(|e| StepError::new("script", format!("cannot start {program}: {e}")))?;
    let mut group = Group(child.id());
    if let Some(mut stdin) = child.stdin.take() {
        let data = call.stdin;
        // A script that does not read its input closes the pipe: that is no error.
        tokio::spawn(async move {
            let _ = stdin.write_all(&data).await;
        });
    }
    let (Some(stdout), Some(stderr)) = (child.stdout.take(), child.stderr.take()) else {
        return Err(StepError::new(
            "script",
            "the script's output pipes are missing",
        ));
    };
    let mut out_task = tokio::spawn(read_limited(stdout, call.max_output));
    let err_task = tokio::spawn(read_tail(stderr, STDERR_TAIL));
    let deadline = tokio::time::sleep(call.timeout);
    tokio::pin!(deadline);
    let mut stdout_result = None;
    let end = loop {
        tokio::select! {
            status = child.wait() => break End::Exited(status),
            r = &mut out_task, if stdout_result.is_none() => {
                let r = r.unwrap_or(Ok(Vec::new()));
                let over = r.is_err();
                stdout_result = Some(r);
                if over {
                    break End::Overflow;
                }
            }
            () = &mut deadline => break End::Timeout,
        }
    };
    // Whatever is left of the group goes: the script on timeout or overflow, the
    // processes it left behind otherwise.
    group.kill();
    if !matches!(end, End::Exited(_)) {
        let _ = child.wait().await;
    }
    let stdout = match stdout_result {
        Some(r) => r,
        None => tokio::time::timeout(DRAIN, out_task)
            .await
            .map_or(Ok(Vec::new()), |r| r.unwrap_or(Ok(Vec::new()))),
    };
    let stderr = tokio::time::timeout(DRAIN, err_task)
        .await
        .ok()
        .and_then(Result::ok)
        .unwrap_or_default();
    let stderr_text = String::from_utf8_lossy(&stderr).trim_end().to_string();
    let status = match end {
        End::Timeout => {
            return Err(StepError::new(
                "timeout",
                format!(
                    "the script did not finish within {}; its process group was killed",
                    crate::duration::format(call.timeout)
                ),
            )
            .with_details(json!({"stderr": stderr_text})));
        }
        End::Overflow => {
            return Err(StepError::permanent(
                "output_too_large",
                format!(
                    "the script wrote more than {} bytes to stdout (max_output_bytes); it was killed",
                    call.max_output
                ),
            )
            .with_details(json!({"stderr": stderr_text})));
        }
        End::Exited(Err(e)) => {
            return Err(StepError::new(
                "script",
                format!("cannot wait for the script: {e}"),
            ));
        }
        End::Exited(Ok(status)) => status,
    };
    let stdout = match stdout {
        Ok(bytes) => bytes,
        Err(_) => {
            return Err(StepError::permanent(
                "output_too_large",
                format!(
                    "the script wrote more than {} bytes to stdout (max_output_bytes)",
                    call.max_output
                ),
            ));
        }
    };
    if !status.success() {
        let how = match (status.code(), status.signal()) {
            (Some(125), _) => "could not set its memory limit (exit status 125)".to_string(),
            (Some(code), _) => format!("exited with status {code}"),
            (None, Some(sig)) => format!("was killed by signal {sig}"),
            _ => "failed".to_string(),
        };
        let tail = last_chars(&stderr_text, 2000);
        let message = if tail.is_empty() {
            format!("the script {how}")
        } else {
            format!("the script {how}: {tail}")
        };
        return Err(StepError::new("script_exit", message).with_details(json!({
            "exitCode": status.code(),
            "signal": status.signal(),
            "stderr": stderr_text,
            "stdout": last_chars(&String::from_utf8_lossy(&stdout), 2000),
        })));
    }
    let output = parse_output(&stdout);
    if let Some(schema) = call.output_schema {
        check_output(schema, &output, &stdout)?;
    }
    Ok(Success {
        output,
        usage: None,
    })
}

/// Stdout as JSON when it is JSON, else as text without its trailing newlines; nothing
/// written is `null`.
pub fn parse_output(stdout: &[u8]) -> Value {
    if let Ok(v) = serde_json::from_slice::<Value>(stdout) {
        return v;
    }
    let text = String::from_utf8_lossy(stdout);
    let text = text.trim_end_matches(['\n', '\r']);
    if text.is_empty() {
        Value::Null
    } else {
        Value::String(text.to_string())
    }
}

fn check_output(schema: &Value, output: &Value, stdout: &[u8]) -> Result<(), StepError> {
    if !stdout.is_empty() && serde_json::from_slice::<Value>(stdout).is_err() {
        return Err(StepError::new(
            "script_output",
            "the script's stdout is not JSON, and the step has an output schema",
        )
        .with_details(json!({"stdout": last_chars(&String::from_utf8_lossy(stdout), 2000)})));
    }
    let validator = jsonschema::options()
        .should_validate_formats(true)
        .build(schema)
        .map_err(|e| {
            StepError::permanent(
                "script_output",
                format!("the output schema is invalid: {e}"),
            )
        })?;
    let problems: Vec<String> = validator
        .iter_errors(output)
        .map(|e| format!("{}: {}", e.instance_path(), e.masked()))
        .collect();
    if problems.is_empty() {
        Ok(())
    } else {
        Err(StepError::new(
            "script_output",
            "the script's output does not satisfy the step's output schema",
        )
        .with_details(json!({"output": output, "problems": problems})))
    }
}

/// A script's process group, killed when the attempt ends and also when it is abandoned
/// (the run was cancelled, the engine stopped): dropping the future drops this.
struct Group(Option<u32>);

impl Group {
    /// Kill the group once; it may be gone already.
    fn kill(&mut self) {
        let Some(pid) = self
            .0
            .take()
            .and_then(|p| i32::try_from(p).ok())
            .and_then(rustix::process::Pid::from_raw)
        else {
            return;
        };
        let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Everything up to `limit` bytes; `Err(())` as soon as there is more.
async fn read_limited(mut r: impl AsyncRead + Unpin, limit: u64) -> Result<Vec<u8>, ()> {
    let mut out = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    loop {
        match r.read(&mut buf).await {
            Ok(0) | Err(_) => return Ok(out),
            Ok(n) => {
                if out.len() as u64 + n as u64 > limit {
                    return Err(());
                }
                out.extend_from_slice(&buf[..n]);
            }
        }
    }
}

/// The last `keep` bytes of a stream, read to its end.
async fn read_tail(mut r: impl AsyncRead + Unpin, keep: usize) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    loop {
        match r.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                out.extend_from_slice(&buf[..n]);
                if out.len() > 2 * keep {
                    out.drain(..out.len() - keep);
                }
            }
        }
    }
    if out.len() > keep {
        out.drain(..out.len() - keep);
    }
    out
}

/// The last `n` characters of `s`.
fn last_chars(s: &str, n: usize) -> String {
    let count = s.chars().count();
    s.chars().skip(count.saturating_sub(n)).collect()
}
