//! The typed model of a workflow definition, read leniently from the YAML's JSON form.
//!
//! Reading never fails: a step whose shape is wrong is kept as [`StepKind::Invalid`] (the
//! structural schema check reports why), so the semantic checks still see every step id and
//! can report all problems of a file in one pass.

use serde::Deserialize;
use serde_json::{Map, Value};

use crate::yaml::pointer_push;

#[derive(Debug, Clone)]
pub struct Definition {
    pub id: String,
    pub version: Option<String>,
    pub description: Option<String>,
    /// JSON Schema of the run input.
    pub input: Option<Value>,
    /// JSON Schema of the run result.
    pub output: Option<Value>,
    /// Template mapping that builds the result.
    pub result: Option<Value>,
    /// At most `limit` runs RUNNING per rendered `key`; the others stay PENDING, in order.
    pub concurrency: Option<Concurrency>,
    /// At most `limit` run starts per `per`.
    pub rate: Option<Rate>,
    pub steps: Vec<Step>,
    /// Who hears when a run fails (`on_failure:`).
    pub on_failure: Option<OnFailure>,
    /// Each run gets its own directory, shared by its steps (`workspace: true`).
    pub workspace: bool,
}

/// A failure alert: a JSON POST, a workflow started with the failed run as input, or both.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
pub struct OnFailure {
    pub webhook: Option<AlertWebhook>,
    /// The slug of the workflow to start.
    pub workflow: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct AlertWebhook {
    /// May use `{{ secrets.NAME }}`.
    pub url: String,
    /// May use `{{ secrets.NAME }}`.
    #[serde(default)]
    pub headers: std::collections::BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Concurrency {
    pub limit: u32,
    /// A template over `input`; without it every run of the workflow shares one key.
    pub key: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Rate {
    pub limit: u32,
    /// A duration, e.g. `1m`.
    pub per: String,
}

#[derive(Debug, Clone)]
pub struct Step {
    pub id: String,
    /// JSON Pointer of the step in the document, e.g. `/steps/2`.
    pub pointer: String,
    pub name: Option<String>,
    /// `None`: depends on the previous step. `Some(vec![])`: a root.
    pub needs: Option<Vec<String>>,
    pub when: Option<When>,
    pub retry: Option<Retry>,
    pub timeout: Option<String>,
    /// At most this many attempts of this step RUNNING at once, over every run of the
    /// workflow; further ready attempts wait (PENDING) in order.
    pub concurrency: Option<u32>,
    pub kind: StepKind,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum When {
    Always(bool),
    Expr(String),
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum Retry {
    Attempts(u32),
    Policy(RetryPolicy),
}

#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
pub struct RetryPolicy {
    pub max_attempts: Option<u32>,
    pub backoff: Option<Backoff>,
    pub initial_delay: Option<String>,
    pub max_delay: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Backoff {
    Exponential,
    Fixed,
}

#[derive(Debug, Clone, PartialEq)]
pub enum StepKind {
    Action(ActionStep),
    Agent(AgentStep),
    Approval(ApprovalStep),
    Wait(WaitStep),
    ExternalEvent(ExternalEventStep),
    Script(ScriptStep),
    /// The step's shape did not match its type; the schema check says why.
    Invalid,
}

impl StepKind {
    pub fn type_name(&self) -> &'static str {
        match self {
            StepKind::Action(_) => "action",
            StepKind::Agent(_) => "agent",
            StepKind::Approval(_) => "approval",
            StepKind::Wait(_) => "wait",
            StepKind::ExternalEvent(_) => "external_event",
            StepKind::Script(_) => "script",
            StepKind::Invalid => "invalid",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct ActionStep {
    pub uses: String,
    #[serde(default)]
    pub with: Map<String, Value>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct AgentStep {
    pub prompt: String,
    pub system: Option<String>,
    pub model: Option<String>,
    pub temperature: Option<f64>,
    /// The most completion tokens over all the step's model calls.
    pub max_tokens: Option<u32>,
    pub output: Option<Value>,
    /// What the model may call; each call is a child run (docs/agents.md).
    #[serde(default)]
    pub tools: Vec<AgentTool>,
    /// File tools on the run's workspace as written (`files: true | false | read-only`);
    /// [`AgentStep::file_access`] is what the step gets.
    #[serde(default)]
    pub files: Option<FileAccess>,
    /// The most model calls before a final answer (default [`DEFAULT_MAX_TURNS`]).
    pub max_turns: Option<u32>,
    /// The most the model calls may cost, in USD at the configured prices.
    pub budget: Option<f64>,
}

impl AgentStep {
    /// The file tools the step gets: what `files:` says, else all of them on a workflow
    /// with a workspace (the workspace is there for its steps to work in) and none without.
    pub fn file_access(&self, workspace: bool) -> FileAccess {
        self.files.unwrap_or(if workspace {
            FileAccess::ReadWrite
        } else {
            FileAccess::None
        })
    }
}

/// Model calls an agent step may make when it sets no `max_turns`.
pub const DEFAULT_MAX_TURNS: u32 = 10;

/// What an agent step may do with its run's workspace (`files:`): nothing (`false`), list
/// and read (`read-only`), or also write (`true`, the default on a workflow with a
/// workspace).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum FileAccess {
    #[default]
    None,
    ReadOnly,
    ReadWrite,
}

/// The names of the file tools. They hold `_`, which no workflow id may, so they never
/// collide with a workflow tool.
pub const FILE_TOOLS: [&str; 3] = ["workspace_list", "workspace_read", "workspace_write"];

impl<'de> Deserialize<'de> for FileAccess {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match Value::deserialize(d)? {
            Value::Bool(false) | Value::Null => Ok(FileAccess::None),
            Value::Bool(true) => Ok(FileAccess::ReadWrite),
            Value::String(s) if s == "read-only" => Ok(FileAccess::ReadOnly),
            other => Err(serde::de::Error::custom(format!(
                "`files` is true, false or read-only, not {other}"
            ))),
        }
    }
}

/// One entry of an agent step's `tools`. Workflows are the only kind (a workspace's file
/// tools are asked for with `files:`); the lint and the scheduler's one dispatch point
/// (`engine::scheduler::agent`) match on it.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(from = "ToolEntry")]
pub enum AgentTool {
    Workflow(WorkflowTool),
}

/// A workflow the model may call: it runs as a child run, inline (it may not suspend).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct WorkflowTool {
    /// The definitionId; also the tool's name for the model.
    pub workflow: String,
    /// A stored version number; `None`: the latest when the step starts.
    pub version: Option<u32>,
    /// What the model reads; default: the workflow's `description`.
    pub description: Option<String>,
}

/// How a tool is written: `refund-order`, or `{workflow: refund-order, version: 2}`.
#[derive(Deserialize)]
#[serde(untagged)]
enum ToolEntry {
    Id(String),
    Workflow(WorkflowTool),
}

impl From<ToolEntry> for AgentTool {
    fn from(e: ToolEntry) -> Self {
        match e {
            ToolEntry::Id(workflow) => AgentTool::Workflow(WorkflowTool {
                workflow,
                version: None,
                description: None,
            }),
            ToolEntry::Workflow(w) => AgentTool::Workflow(w),
        }
    }
}

impl AgentTool {
    /// The name the model calls it by.
    pub fn name(&self) -> &str {
        match self {
            AgentTool::Workflow(w) => &w.workflow,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct ApprovalStep {
    pub message: String,
    pub options: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct WaitStep {
    pub duration: Option<String>,
    pub until: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct ExternalEventStep {
    pub signal: String,
    pub schema: Option<Value>,
    /// A template rendered when the step starts: signals sent with this value reach it
    /// (`POST /v1/signals`, webhook triggers with `signal:`).
    pub correlate: Option<String>,
    /// How long before the step starts a correlated signal may have arrived and still be
    /// consumed by it (a duration; default: no buffering).
    pub buffer: Option<String>,
}

/// A command run in the run's workspace (docs/scripts.md). `run` and `command` are taken
/// as written, never rendered: values reach the script through `env` and stdin (`with`),
/// so nothing in a run's input can change the command line.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct ScriptStep {
    /// A shell script, run with `sh -e -c`.
    pub run: Option<String>,
    /// An argv, run as it is (the first word is looked up on PATH).
    pub command: Option<Vec<String>>,
    /// Environment variables; the values are templates.
    #[serde(default)]
    pub env: Map<String, Value>,
    /// The value written to stdin as JSON (its strings are templates); `{}` without it.
    pub with: Option<Value>,
    /// Whether the script may reach the network (confined scripts have none by default).
    #[serde(default)]
    pub network: bool,
    /// The address-space limit of the script, in MiB.
    pub memory_mb: Option<u64>,
    /// The most stdout kept; more fails the attempt.
    pub max_output_bytes: Option<u64>,
    /// A JSON Schema stdout must satisfy (stdout is then parsed as JSON).
    pub output: Option<Value>,
}

impl Definition {
    /// Read the model out of a document's JSON form, keeping whatever is well-formed.
    pub fn from_value(doc: &Value) -> Definition {
        let str_field = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).map(str::to_string);
        let version = match doc.get("version") {
            Some(Value::String(s)) => Some(s.clone()),
            Some(Value::Number(n)) => Some(n.to_string()),
            _ => None,
        };
        let steps = match doc.get("steps") {
            Some(Value::Array(items)) => items
                .iter()
                .enumerate()
                .map(|(i, item)| Step::from_value(item, pointer_push("/steps", &i.to_string())))
                .collect(),
            _ => Vec::new(),
        };
        Definition {
            id: str_field(doc, "id").unwrap_or_default(),
            version,
            description: str_field(doc, "description"),
            input: doc.get("input").cloned(),
            output: doc.get("output").cloned(),
            result: doc.get("result").cloned(),
            concurrency: doc.get("concurrency").and_then(decode),
            rate: doc.get("rate").and_then(decode),
            steps,
            on_failure: doc.get("on_failure").and_then(decode),
            workspace: doc.get("workspace").and_then(Value::as_bool) == Some(true),
        }
    }

    pub fn step(&self, id: &str) -> Option<&Step> {
        self.steps.iter().find(|s| s.id == id)
    }

    /// The first `script` step, if any (servers without `--allow-scripts` refuse them).
    pub fn first_script(&self) -> Option<&Step> {
        self.steps
            .iter()
            .find(|s| matches!(s.kind, StepKind::Script(_)))
    }
}

impl Step {
    fn from_value(v: &Value, pointer: String) -> Step {
        let id = v
            .get("id")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let needs = match v.get("needs") {
            Some(Value::String(s)) => Some(vec![s.clone()]),
            Some(Value::Array(a)) => Some(
                a.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_string)
                    .collect(),
            ),
            _ => None,
        };
        let kind = match v.get("type").and_then(Value::as_str) {
            Some("action") => decode(v).map(StepKind::Action),
            Some("agent") => decode(v).map(StepKind::Agent),
            Some("approval") => decode(v).map(StepKind::Approval),
            Some("wait") => decode(v).map(StepKind::Wait),
            Some("external_event") => decode(v).map(StepKind::ExternalEvent),
            Some("script") => decode(v).map(StepKind::Script),
            _ => None,
        }
        .unwrap_or(StepKind::Invalid);
        Step {
            id,
            pointer,
            name: v.get("name").and_then(Value::as_str).map(str::to_string),
            needs,
            when: v.get("when").and_then(decode),
            retry: v.get("retry").and_then(decode),
            timeout: v.get("timeout").and_then(Value::as_str).map(str::to_string),
            concurrency: v.get("concurrency").and_then(decode),
            kind,
        }
    }

    /// Pointer of one of this step's fields.
    pub fn field(&self, name: &str) -> String {
        pointer_push(&self.pointer, name)
    }
}

fn decode<T: serde::de::DeserializeOwned>(v: &Value) -> Option<T> {
    T::deserialize(v).ok()
}
