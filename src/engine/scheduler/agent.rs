//! Agent steps: the model loop, driven by the scheduler.
//!
//! The executor makes one model call at a time and reports the reply; the scheduler records
//! it as a turn of the step's transcript (in the step record's `meta.agent`, committed like
//! any other write), starts a child run per tool call, records each child's result as it
//! ends, and asks for the next call once every result is in. A final answer is checked
//! against the step's `output` schema. Because each turn and each result is durable before
//! anything that depends on it starts, a loop taken up again (after a crash, a failed
//! commit, a retry) resumes from its last recorded turn: no completed call is sent again,
//! no tool run is started twice (its idempotency key names the turn and the call).
//!
//! File tools (`files:`) run on the executor side, one call at a time in the order the
//! model made them, each result recorded before the next starts; a call whose result was
//! not recorded runs again when the loop is taken up (listing and reading change nothing,
//! and a write writes the same content again).

use serde_json::{Value, json};

use super::Scheduler;
use super::batch::Start;
use super::children::ChildSpec;
use super::policy::attempt_timeout;
use super::start::as_text;
use crate::definition::{AgentStep, AgentTool, DEFAULT_MAX_TURNS, FileAccess, StepKind};
use crate::engine::state::Active;
use crate::exec::agent::{
    self, FileOp, Limits, ModelCall, Next, Reply, Tool, ToolKind, ToolResult, Transcript,
};
use crate::exec::{Produced, StepError};
use crate::model::{EventKind, RunStatus};
use crate::store::{RunRecord, Write};
use crate::template;

/// The agent step at index `i` of a run's definition.
fn step_of(run: &Active, i: usize) -> Option<AgentStep> {
    match &run.def.plan.definition.steps[i].kind {
        StepKind::Agent(a) => Some(a.clone()),
        _ => None,
    }
}

fn limits(a: &AgentStep) -> Limits {
    Limits {
        max_turns: a.max_turns.unwrap_or(DEFAULT_MAX_TURNS),
        max_tokens: a.max_tokens,
        budget: a.budget,
    }
}

/// The transcript an agent step's attempt carries (its record's `meta.agent`).
pub(super) fn transcript_of(run: &Active, i: usize) -> Option<Transcript> {
    Transcript::from_meta(run.slots[i].record.as_ref()?.meta.as_ref())
}

/// What starting a tool call came to.
enum Started {
    /// Its result is known at once.
    Done(ToolResult),
    /// A child run is on its way; its end records the result.
    Running,
    /// A file operation, run on the executor side (`start_file_call`).
    File(FileOp),
}

impl From<Option<ToolResult>> for Started {
    fn from(r: Option<ToolResult>) -> Self {
        r.map_or(Started::Running, Started::Done)
    }
}

/// What a finished tool run tells the model.
fn result_of(child: &RunRecord) -> ToolResult {
    match child.status {
        RunStatus::Completed => ToolResult::Completed {
            output: child.output.clone().unwrap_or(Value::Null),
        },
        status => ToolResult::Failed {
            error: json!({
                "kind": "tool_run",
                "message": format!("the run of `{}` ended {status}", child.definition_slug),
                "childRunId": child.id,
                "error": child.error,
            }),
        },
    }
}

impl Scheduler {
    /// Render an agent step's prompt and system message.
    pub(super) fn agent_prompt(
        &self,
        run: &Active,
        i: usize,
    ) -> Result<(String, Option<String>), StepError> {
        let step = &run.def.plan.definition.steps[i];
        let StepKind::Agent(a) = &step.kind else {
            return Err(StepError::permanent("definition", "not an agent step"));
        };
        let ctx = run.mj_context(&self.secrets.template(&run.rec.workspace_id));
        let render = |t: &str, f: &str| {
            template::render_string(t, &ctx, &step.field(f))
                .map(as_text)
                .map_err(|e| StepError::new("template", e.to_string()))
        };
        let prompt = render(&a.prompt, "prompt")?;
        let system = a
            .system
            .as_deref()
            .map(|s| render(s, "system"))
            .transpose()?;
        Ok((prompt, system))
    }

    /// Start or resume an agent step's loop: its transcript is the one its previous record
    /// carried (empty for a first attempt). The step is already RUNNING (`begin`).
    pub(super) fn start_agent(&mut self, run: &mut Active, i: usize, mut t: Transcript) {
        let Some(a) = step_of(run, i) else { return };
        if t.tools.is_none() {
            match self.resolve_tools(run, &a) {
                Ok(tools) => t.tools = Some(tools),
                Err(e) => return self.fail_attempt(run, i, e),
            }
        }
        let step_id = run.def.plan.definition.steps[i].id.clone();
        self.event(
            &run.rec.id,
            EventKind::StepStarted,
            Some(&step_id),
            json!({"attempt": run.slots[i].attempt, "resumedAt": t.turns.len()}),
        );
        self.step_update(run, i);
        self.save(run, i, &t);
        self.agent_next(run, i, t);
    }

    /// The tools an agent step offers: its workflows, resolved to exact definition
    /// versions, then its file tools.
    fn resolve_tools(&mut self, run: &Active, a: &AgentStep) -> Result<Vec<Tool>, StepError> {
        let ws = &run.rec.workspace_id;
        let mut out = Vec::new();
        for tool in &a.tools {
            match tool {
                AgentTool::Workflow(w) => {
                    let found = match w.version {
                        None => self.store.definition(ws, &w.workflow),
                        Some(v) => self
                            .store
                            .definition_versions(ws, &w.workflow)
                            .map(|all| all.into_iter().find(|r| r.version == i64::from(v))),
                    }
                    .map_err(|e| StepError::new("agent_tools", e.to_string()))?;
                    let rec = found.ok_or_else(|| {
                        let which = w
                            .version
                            .map_or_else(String::new, |v| format!(" version {v}"));
                        StepError::permanent(
                            "agent_tools",
                            format!("the tool workflow `{}`{which} does not exist", w.workflow),
                        )
                    })?;
                    let compiled = self
                        .engine
                        .compiled_record(rec)
                        .map_err(|e| StepError::permanent("agent_tools", e.to_string()))?;
                    let d = &compiled.plan.definition;
                    out.push(Tool {
                        name: w.workflow.clone(),
                        description: w
                            .description
                            .clone()
                            .or_else(|| d.description.clone())
                            .unwrap_or_else(|| format!("Runs the workflow `{}`.", w.workflow)),
                        parameters: d
                            .input
                            .clone()
                            .unwrap_or_else(|| json!({"type": "object", "properties": {}})),
                        kind: ToolKind::Workflow {
                            workflow: w.workflow.clone(),
                            version_id: compiled.record.version_id.clone(),
                            version: compiled.record.version,
                        },
                    });
                }
            }
        }
        let files = a.file_access(run.def.plan.definition.workspace);
        if files != FileAccess::None {
            if !run.def.plan.definition.workspace {
                return Err(StepError::permanent(
                    "agent_tools",
                    "`files` needs a workflow with `workspace: true`",
                ));
            }
            if self.engine.config().workspaces.root.is_none() {
                return Err(StepError::permanent(
                    "workspace",
                    "this engine has no workspaces root, so file tools cannot run",
                ));
            }
            out.extend(agent::files::tools(files));
        }
        // Lint keeps names apart (workflow ids hold no `_`); a model must never be offered
        // two tools of one name all the same.
        let mut names = std::collections::HashSet::new();
        if let Some(dup) = out.iter().find(|t| !names.insert(t.name.as_str())) {
            return Err(StepError::permanent(
                "agent_tools",
                format!("two tools are named `{}`", dup.name),
            ));
        }
        Ok(out)
    }

    /// Keep the transcript in the step's record (and its attempt's usage), in this batch.
    pub(super) fn save(&mut self, run: &mut Active, i: usize, t: &Transcript) {
        let attempt = run.slots[i].attempt;
        if let Some(rec) = run.slots[i].record.as_mut() {
            rec.meta = Some(t.to_meta());
            rec.usage = t.usage_of_attempt(attempt);
            let rec = rec.clone();
            self.write(Write::put_step(rec));
        }
        self.batch.touched.insert(run.rec.id.clone());
    }

    /// Do what the transcript calls for: start the tools it is waiting for, call the model,
    /// or finish with the answer.
    pub(super) fn agent_next(&mut self, run: &mut Active, i: usize, mut t: Transcript) {
        let Some(a) = step_of(run, i) else { return };
        match t.next() {
            Next::Call => self.call_model(run, i, &a, &t, Vec::new()),
            Next::Answer { turn, content } => {
                match agent::check_answer(&content, a.output.as_ref()) {
                    Ok(output) => {
                        let usage = t.usage_of_attempt(run.slots[i].attempt);
                        self.complete(run, i, output, usage, None);
                    }
                    // Refused in this attempt: the attempt fails (and may be retried).
                    Err(e) if t.turns[turn].attempt == run.slots[i].attempt => {
                        self.fail_attempt(run, i, e);
                    }
                    // Refused in an earlier attempt: tell the model why and ask again.
                    Err(e) => {
                        let note = agent::correction(&e);
                        self.call_model(run, i, &a, &t, vec![note]);
                    }
                }
            }
            Next::Tools(open) => {
                let mut file_call = None;
                for (turn, k) in open {
                    match self.run_tool(run, i, &mut t, turn, k) {
                        Started::Done(result) => {
                            self.tool_finished(run, i, &mut t, turn, k, result)
                        }
                        Started::Running => {}
                        Started::File(op) => {
                            file_call.get_or_insert((turn, k, op));
                        }
                    }
                }
                if let Some((turn, k, op)) = file_call {
                    self.start_file_call(run, i, &t, turn, k, op);
                }
                self.save(run, i, &t);
                if !matches!(t.next(), Next::Tools(_)) {
                    self.agent_next(run, i, t);
                }
            }
        }
    }

    /// Start tool call `k` of turn `turn` (the one place each kind of tool is started):
    /// its result when that is known at once.
    fn run_tool(
        &mut self,
        run: &mut Active,
        i: usize,
        t: &mut Transcript,
        turn: usize,
        k: usize,
    ) -> Started {
        let call = t.turns[turn].calls[k].clone();
        if let Some(child) = &call.child_run_id {
            // Started earlier (the loop is resuming): its result if it has ended.
            return self.tool_run_result(child).into();
        }
        let Some(tool) = t.tools().iter().find(|x| x.name == call.name).cloned() else {
            let names: Vec<&str> = t.tools().iter().map(|x| x.name.as_str()).collect();
            return Started::Done(ToolResult::failed(
                "unknown_tool",
                format!(
                    "there is no tool `{}`; the tools are: {}",
                    call.name,
                    if names.is_empty() {
                        "none".to_string()
                    } else {
                        names.join(", ")
                    }
                ),
            ));
        };
        match &tool.kind {
            ToolKind::File { op } => Started::File(*op),
            ToolKind::Workflow { version_id, .. } => {
                let compiled = match self
                    .store
                    .definition(&run.rec.workspace_id, version_id)
                    .map_err(|e| e.to_string())
                    .and_then(|r| r.ok_or_else(|| format!("version {version_id} is missing")))
                    .and_then(|r| self.engine.compiled_record(r).map_err(|e| e.to_string()))
                {
                    Ok(c) => c,
                    Err(e) => return Started::Done(ToolResult::failed("tool_run", e)),
                };
                let step_id = run.def.plan.definition.steps[i].id.clone();
                let spec = ChildSpec {
                    compiled,
                    input: call.arguments.clone(),
                    key: format!("{}:{}:tool:{}:{}", run.rec.id, step_id, turn + 1, k + 1),
                    trigger: json!({"kind": "tool", "label": "Workflow tool", "tool": tool.name, "callId": call.id, "inline": true}),
                    started: json!({"tool": tool.name, "callId": call.id}),
                };
                match self.child_run(&run.rec, &step_id, spec) {
                    Ok(child) => {
                        t.turns[turn].calls[k].child_run_id = Some(child.id.clone());
                        child.status.is_terminal().then(|| result_of(&child)).into()
                    }
                    Err(e) => Started::Done(ToolResult::Failed { error: e.to_json() }),
                }
            }
        }
    }

    /// A started tool run's result, if it has ended.
    fn tool_run_result(&mut self, child_id: &str) -> Option<ToolResult> {
        if let Some(c) = self.active.get(child_id) {
            return c.rec.status.is_terminal().then(|| result_of(&c.rec));
        }
        match self.store.run(child_id) {
            Ok(Some(c)) => c.status.is_terminal().then(|| result_of(&c)),
            Ok(None) => Some(ToolResult::failed(
                "tool_run",
                format!("the tool's run {child_id} no longer exists"),
            )),
            // Asked again when the child ends or the loop is taken up again.
            Err(_) => None,
        }
    }

    pub(super) fn tool_finished(
        &mut self,
        run: &Active,
        i: usize,
        t: &mut Transcript,
        turn: usize,
        k: usize,
        result: ToolResult,
    ) {
        let call = &mut t.turns[turn].calls[k];
        let mut data = json!({"turn": turn + 1, "callId": call.id, "tool": call.name, "status": result.status()});
        if let Some(c) = &call.child_run_id {
            data["childRunId"] = json!(c);
        }
        call.result = Some(result.bounded());
        let step_id = run.def.plan.definition.steps[i].id.clone();
        self.event(&run.rec.id, EventKind::AgentTool, Some(&step_id), data);
    }

    /// A tool's child run ended: record its result; once the turn has every result, the
    /// model is called again.
    pub(super) fn agent_child_done(&mut self, run: &mut Active, i: usize, child: &RunRecord) {
        let Some(mut t) = transcript_of(run, i) else {
            return;
        };
        let Some((turn, k)) = t.call_of_child(&child.id) else {
            return;
        };
        if t.turns[turn].calls[k].result.is_some() {
            return;
        }
        self.tool_finished(run, i, &mut t, turn, k, result_of(child));
        self.save(run, i, &t);
        self.agent_next(run, i, t);
    }

    /// Queue the next model call; it is sent once this batch commits.
    fn call_model(
        &mut self,
        run: &mut Active,
        i: usize,
        a: &AgentStep,
        t: &Transcript,
        notes: Vec<String>,
    ) {
        if let Some(reply) = self.scripted_turn(run, i, t, &notes) {
            self.batch.starts.push(Start {
                run_id: run.rec.id.clone(),
                step: i,
                attempt: run.slots[i].attempt,
                fut: Box::pin(async move { reply.map(|r| Produced::ModelTurn(Box::new(r))) }),
            });
            self.batch.touched.insert(run.rec.id.clone());
            return;
        }
        let cfg = self.engine.config();
        let model = match cfg.llm.model_for(a.model.as_deref()) {
            Ok(m) => m,
            Err(e) => return self.fail_attempt(run, i, e),
        };
        if a.budget.is_some() && !cfg.prices.knows(&model) {
            let e = StepError::permanent(
                "agent_config",
                format!(
                    "`budget` needs the price of model `{model}`: add it to STEPWISE_PRICES, e.g. {{\"{model}\": {{\"input\": 2.5, \"output\": 10}}}} (USD per million tokens)"
                ),
            );
            return self.fail_attempt(run, i, e);
        }
        let max_tokens = match t.allowance(run.rec.attempt, &limits(a)) {
            Ok(m) => m,
            Err(e) => return self.fail_attempt(run, i, e),
        };
        let (prompt, system) = match self.agent_prompt(run, i) {
            Ok(p) => p,
            Err(e) => return self.fail_attempt(run, i, e),
        };
        let step = &run.def.plan.definition.steps[i];
        let call = ModelCall {
            model,
            messages: t.messages(system.as_deref(), &prompt, a.output.as_ref(), &notes),
            tools: t.tools().iter().map(Tool::function).collect(),
            temperature: a.temperature,
            max_tokens,
            json: a.output.is_some() && t.tools().is_empty(),
            notes,
            timeout: attempt_timeout(cfg.default_step_timeout, &step.timeout, None),
        };
        let (client, llm) = (self.http.clone(), cfg.llm.clone());
        self.batch.starts.push(Start {
            run_id: run.rec.id.clone(),
            step: i,
            attempt: run.slots[i].attempt,
            fut: Box::pin(async move {
                agent::call(&client, &llm, call)
                    .await
                    .map(|r| Produced::ModelTurn(Box::new(r)))
            }),
        });
        self.batch.touched.insert(run.rec.id.clone());
    }

    /// The model's reply as the interceptor scripts it (`stepwise test` mocks of tool
    /// calls), recorded like a real one; `None` without an interceptor or a script.
    fn scripted_turn(
        &self,
        run: &Active,
        i: usize,
        t: &Transcript,
        notes: &[String],
    ) -> Option<Result<Reply, StepError>> {
        let hook = self.engine.config().intercept.clone()?;
        let attempt = run.slots[i].attempt;
        let call = crate::engine::ModelTurnCall {
            run_id: &run.rec.id,
            step_id: &run.def.plan.definition.steps[i].id,
            attempt,
            turn: t.turns.iter().filter(|x| x.attempt == attempt).count(),
        };
        let message = hook.0.model_turn(&call)?;
        Some(message.map(|message| {
            let calls = message
                .get("tool_calls")
                .and_then(Value::as_array)
                .is_some_and(|c| !c.is_empty());
            Reply {
                message,
                finish_reason: Some(if calls { "tool_calls" } else { "stop" }.into()),
                usage: agent::TurnUsage {
                    model: "mock".into(),
                    prompt_tokens: 0,
                    completion_tokens: 0,
                    total_tokens: 0,
                    duration_ms: 0,
                    cost_usd: None,
                },
                request: agent::Request {
                    model: "mock".into(),
                    messages: 0,
                    max_tokens: None,
                },
                notes: notes.to_vec(),
            }
        }))
    }

    /// A model call came back: record the turn, then go on.
    pub(super) fn agent_turn(&mut self, run: &mut Active, i: usize, reply: Reply) {
        let Some(a) = step_of(run, i) else { return };
        let mut t = transcript_of(run, i).unwrap_or_default();
        let prices = &self.engine.config().prices;
        let (p, c) = (reply.usage.prompt_tokens, reply.usage.completion_tokens);
        let cost = prices
            .cost(&reply.usage.model, p, c)
            .or_else(|| prices.cost(&reply.request.model, p, c));
        t.push(reply, run.slots[i].attempt, run.rec.attempt, cost);
        let n = t.turns.len();
        let last = &t.turns[n - 1];
        let step_id = run.def.plan.definition.steps[i].id.clone();
        let calls: Vec<&str> = last.calls.iter().map(|c| c.name.as_str()).collect();
        self.event(
            &run.rec.id,
            EventKind::AgentTurn,
            Some(&step_id),
            json!({
                "turn": n,
                "attempt": last.attempt,
                "toolCalls": calls,
                "finishReason": last.finish_reason,
                "promptTokens": last.usage.prompt_tokens,
                "completionTokens": last.usage.completion_tokens,
            }),
        );
        // Calls the model made with arguments that are not an object already have their
        // result; the trace says so like for any other.
        let answered: Vec<usize> = (0..last.calls.len())
            .filter(|&k| last.calls[k].result.is_some())
            .collect();
        for k in answered {
            if let Some(r) = t.turns[n - 1].calls[k].result.take() {
                self.tool_finished(run, i, &mut t, n - 1, k, r);
            }
        }
        self.save(run, i, &t);
        if let Some(e) = t.over_budget(run.rec.attempt, &limits(&a)) {
            return self.fail_attempt(run, i, e);
        }
        self.agent_next(run, i, t);
    }
}
