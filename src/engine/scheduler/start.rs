//! Starting steps: one starter per step kind. A starter records the attempt's start in the
//! batch; executors (http, agent) are queued and run only once that start is committed.

use jiff::Timestamp;
use serde_json::{Map, Value, json};

use super::Scheduler;
use super::agent;
use super::batch::Start;
use super::policy::{add, attempt_timeout};
use crate::definition::{FileAccess, Step, StepKind};
use crate::engine::state::Active;
use crate::exec::{self, Produced, StepError, Success};
use crate::model::{EventKind, RunStatus, StepStatus};
use crate::store::{HookKind, HookRecord, HookStatus, TimerKind, Write};
use crate::template;

impl Scheduler {
    /// Start every step whose needs are committed.
    pub(super) fn advance(&mut self, id: &str) {
        let Some(mut run) = self.active.remove(id) else {
            return;
        };
        if run.rec.status == RunStatus::Pending && !self.admit_run(&run) {
            // Stays PENDING, queued: `drain_limits` advances it when a slot frees.
            self.active.insert(id.to_string(), run);
            return;
        }
        if !run.rec.status.is_terminal() {
            for i in run.ready() {
                if run.rec.status.is_terminal() {
                    break;
                }
                if self.admit_step(&run, i) {
                    self.start(&mut run, i);
                }
            }
            self.refresh(&mut run);
        }
        self.active.insert(id.to_string(), run);
    }

    pub(super) fn start(&mut self, run: &mut Active, i: usize) {
        let def = run.def.clone();
        let step = &def.plan.definition.steps[i];
        let ctx = run.mj_context(&self.secrets.template(&run.rec.workspace_id));
        let now = self.now();
        self.batch.touched.insert(run.rec.id.clone());
        if let Some(when) = &step.when {
            match template::eval_condition(when, &ctx, &step.field("when")) {
                Ok(true) => {}
                Ok(false) => return self.skip(run, i, now),
                Err(e) => {
                    return self.fail_to_start(
                        run,
                        i,
                        now,
                        StepError::new("template", e.to_string()),
                    );
                }
            }
        }
        match &step.kind {
            StepKind::Action(a) => {
                let with = match template::render_value(
                    &Value::Object(a.with.clone()),
                    &ctx,
                    &step.field("with"),
                ) {
                    Ok(Value::Object(m)) => m,
                    Ok(_) => Map::new(),
                    Err(e) => {
                        return self.fail_to_start(
                            run,
                            i,
                            now,
                            StepError::new("template", e.to_string()),
                        );
                    }
                };
                let input = Value::Object(with.clone());
                self.begin(run, i, Some(input.clone()), now);
                if !self.intercepted(run, i, &a.uses, &input) {
                    self.start_action(run, i, step, &a.uses, with);
                }
            }
            StepKind::Agent(a) => {
                let (prompt, system) = match self.agent_prompt(run, i) {
                    Ok(p) => p,
                    Err(e) => return self.fail_to_start(run, i, now, e),
                };
                let mut recorded = json!({"prompt": prompt, "system": system, "model": a.model});
                if !a.tools.is_empty() {
                    let names: Vec<&str> = a.tools.iter().map(|t| t.name()).collect();
                    recorded["tools"] = json!(names);
                }
                match a.file_access(run.def.plan.definition.workspace) {
                    FileAccess::None => {}
                    FileAccess::ReadOnly => recorded["files"] = json!("read-only"),
                    FileAccess::ReadWrite => recorded["files"] = json!(true),
                }
                // The loop so far (a resumed or retried attempt): before `begin` replaces
                // the record.
                let carried = agent::transcript_of(run, i);
                self.begin(run, i, Some(recorded.clone()), now);
                if self.intercepted(run, i, "agent", &recorded) {
                    return;
                }
                self.start_agent(run, i, carried.unwrap_or_default());
            }
            StepKind::Approval(a) => {
                let message =
                    match template::render_string(&a.message, &ctx, &step.field("message")) {
                        Ok(m) => as_text(m),
                        Err(e) => {
                            return self.fail_to_start(
                                run,
                                i,
                                now,
                                StepError::new("template", e.to_string()),
                            );
                        }
                    };
                self.begin(
                    run,
                    i,
                    Some(json!({"message": message, "options": a.options})),
                    now,
                );
                self.suspend(
                    run,
                    i,
                    HookKind::Approval,
                    step.timeout.as_deref(),
                    now,
                    None,
                );
            }
            StepKind::ExternalEvent(e) => {
                let correlation = match e.correlate.as_deref().map(|t| {
                    template::render_string(t, &ctx, &step.field("correlate"))
                        .map_err(|e| e.to_string())
                        .and_then(correlation_value)
                }) {
                    None => None,
                    Some(Ok(c)) => Some(c),
                    Some(Err(msg)) => {
                        return self.fail_to_start(run, i, now, StepError::new("template", msg));
                    }
                };
                let input = match &correlation {
                    Some(c) => json!({"signalType": e.signal, "correlate": c}),
                    None => json!({"signalType": e.signal}),
                };
                self.begin(run, i, Some(input), now);
                let Some(c) = correlation else {
                    return self.suspend(
                        run,
                        i,
                        HookKind::ExternalEvent,
                        step.timeout.as_deref(),
                        now,
                        None,
                    );
                };
                let window = e
                    .buffer
                    .as_deref()
                    .and_then(|b| crate::duration::parse(b).ok());
                if let Some(b) = self.take_buffered(run, i, &e.signal, &c, window, now) {
                    let via = format!("buffer ({})", b.via);
                    if self.deliver(run, i, b.payload, &via).is_ok() {
                        return;
                    }
                }
                self.suspend(
                    run,
                    i,
                    HookKind::ExternalEvent,
                    step.timeout.as_deref(),
                    now,
                    Some((e.signal.clone(), c)),
                );
            }
            StepKind::Wait(w) => {
                let due = match (&w.duration, &w.until) {
                    (Some(d), _) => crate::duration::parse(d)
                        .map_err(|e| e.to_string())
                        .and_then(|d| add(now, d)),
                    (None, Some(u)) => template::render_string(u, &ctx, &step.field("until"))
                        .map_err(|e| e.to_string())
                        .and_then(|v| {
                            let text = as_text(v);
                            text.trim().parse::<Timestamp>().map_err(|e| {
                                format!(
                                    "`until` rendered `{text}`, which is not an RFC 3339 time: {e}"
                                )
                            })
                        }),
                    (None, None) => Err("a wait needs `duration` or `until`".to_string()),
                };
                match due {
                    Ok(due) => self.sleep(run, i, due, now),
                    Err(e) => self.fail_to_start(run, i, now, StepError::permanent("wait", e)),
                }
            }
            StepKind::Script(sc) => {
                let rendered = render_script(sc, &ctx, step);
                let (env, stdin) = match rendered {
                    Ok(r) => r,
                    Err(e) => {
                        return self.fail_to_start(
                            run,
                            i,
                            now,
                            StepError::new("template", e.to_string()),
                        );
                    }
                };
                self.begin(run, i, Some(stdin.clone()), now);
                if !self.intercepted(run, i, "script", &stdin) {
                    self.start_script(run, i, step, sc, env, &stdin);
                }
            }
            StepKind::Invalid => self.fail_to_start(
                run,
                i,
                now,
                StepError::permanent("definition", "the step is not valid"),
            ),
        }
    }

    fn start_script(
        &mut self,
        run: &mut Active,
        i: usize,
        step: &Step,
        sc: &crate::definition::ScriptStep,
        env: Vec<(String, String)>,
        stdin: &Value,
    ) {
        let config = self.engine.config();
        if !config.scripts.allowed {
            let e = StepError::permanent(
                "scripts_not_allowed",
                format!(
                    "step `{}` is a script, and this server does not run scripts: start it with --allow-scripts (STEPWISE_ALLOW_SCRIPTS=1)",
                    step.id
                ),
            );
            return self.fail_attempt(run, i, e);
        }
        let Some(root) = config.workspaces.root.clone() else {
            let e = StepError::permanent(
                "workspace",
                "this engine has no workspaces root, so scripts cannot run",
            );
            return self.fail_attempt(run, i, e);
        };
        let timeout = attempt_timeout(config.default_step_timeout, &step.timeout, None);
        let argv = match (&sc.run, &sc.command) {
            (Some(script), _) => vec!["sh".into(), "-e".into(), "-c".into(), script.clone()],
            (None, Some(argv)) => argv.clone(),
            (None, None) => Vec::new(),
        };
        let scripts = config.scripts.clone();
        let (run_id, step_id, attempt) =
            (run.rec.id.clone(), step.id.clone(), run.slots[i].attempt);
        let stdin = serde_json::to_vec(stdin).unwrap_or_default();
        let (network, memory_mb, max_output, schema) = (
            sc.network,
            sc.memory_mb.unwrap_or(exec::script::DEFAULT_MEMORY_MB),
            sc.max_output_bytes
                .unwrap_or(exec::script::DEFAULT_MAX_OUTPUT)
                .min(exec::script::MAX_OUTPUT_CEILING),
            sc.output.clone(),
        );
        self.spawn(run, i, async move {
            let root2 = root.clone();
            let id = run_id.clone();
            let workspace =
                tokio::task::spawn_blocking(move || crate::workspace::ensure(&root2, &id))
                    .await
                    .map_err(|e| e.to_string())
                    .and_then(|r| r.map_err(|e| e.to_string()))
                    .map_err(|e| {
                        StepError::new(
                            "workspace",
                            format!(
                                "cannot create the run's workspace in {}: {e}",
                                root.display()
                            ),
                        )
                    })?;
            let (_, inner) = scripts.sandbox.launcher(&workspace, network, &[]);
            let mut vars = env;
            vars.extend(exec::script::base_env(
                &inner.display().to_string(),
                &run_id,
                &step_id,
                attempt,
            ));
            let mut hidden = scripts.hidden.clone();
            hidden.push(root);
            exec::script::run(exec::script::ScriptCall {
                sandbox: &scripts.sandbox,
                hidden: &hidden,
                workspace,
                argv,
                env: vars,
                stdin,
                network,
                memory_mb,
                max_output,
                timeout,
                output_schema: schema.as_ref(),
            })
            .await
        });
    }

    fn start_action(
        &mut self,
        run: &mut Active,
        i: usize,
        step: &Step,
        uses: &str,
        with: Map<String, Value>,
    ) {
        match uses {
            "transform" => {
                let value = exec::transform::run(&with);
                self.complete(run, i, value, None, None);
            }
            "log" => {
                let mut line = exec::log::line(&with);
                line.message = self.secrets.redact_str(&line.message);
                exec::log::emit(&run.rec.id, &step.id, &line);
                self.event(
                    &run.rec.id,
                    EventKind::Log,
                    Some(&step.id),
                    json!({"level": line.level, "message": line.message}),
                );
                self.complete(run, i, Value::Null, None, None);
            }
            "http" => {
                let timeout = attempt_timeout(
                    self.engine.config().default_step_timeout,
                    &step.timeout,
                    with.get("timeout").and_then(Value::as_str),
                );
                let key = format!("{}:{}", run.rec.id, step.id);
                let client = self.http.clone();
                self.spawn(run, i, async move {
                    exec::http::run(
                        &client,
                        exec::http::HttpCall {
                            with: &with,
                            idempotency_key: &key,
                            timeout,
                        },
                    )
                    .await
                });
            }
            "workflow" => self.start_child(run, i, &with),
            other => {
                let e =
                    StepError::permanent("action", format!("`{other}` is not a built-in action"));
                self.fail_attempt(run, i, e);
            }
        }
    }

    /// Hand the step to the configured interceptor; `true` when it answered for the
    /// executor (its outcome is recorded like an executor's, after the start commits).
    fn intercepted(&mut self, run: &mut Active, i: usize, kind: &str, input: &Value) -> bool {
        let Some(hook) = self.engine.config().intercept.clone() else {
            return false;
        };
        let step_id = run.def.plan.definition.steps[i].id.clone();
        let call = crate::engine::StepCall {
            run_id: &run.rec.id,
            parent_run_id: run.rec.parent_run_id.as_deref(),
            trigger: &run.rec.trigger,
            definition_slug: &run.rec.definition_slug,
            step_id: &step_id,
            kind,
            input,
            attempt: run.slots[i].attempt,
        };
        match hook.0.call(&call) {
            crate::engine::Intercepted::Proceed => false,
            crate::engine::Intercepted::Outcome(result) => {
                self.spawn(run, i, async move { result });
                true
            }
        }
    }

    fn skip(&mut self, run: &mut Active, i: usize, now: Timestamp) {
        let step_id = run.def.plan.definition.steps[i].id.clone();
        let mut rec = run.blank_record(i);
        rec.status = StepStatus::Skipped;
        rec.started_at = Some(now);
        rec.finished_at = Some(now);
        let slot = &mut run.slots[i];
        slot.status = StepStatus::Skipped;
        slot.output = None;
        slot.committed = false;
        slot.record = Some(rec.clone());
        self.write(Write::put_step(rec));
        self.event(
            &run.rec.id,
            EventKind::StepSkipped,
            Some(&step_id),
            json!({}),
        );
        self.step_update(run, i);
    }

    fn fail_to_start(&mut self, run: &mut Active, i: usize, now: Timestamp, e: StepError) {
        self.begin(run, i, None, now);
        self.fail_attempt(run, i, e);
    }

    /// Mark a step RUNNING and remember its rendered input.
    fn begin(&mut self, run: &mut Active, i: usize, input: Option<Value>, now: Timestamp) {
        if run.rec.status == RunStatus::Pending {
            run.rec.status = RunStatus::Running;
            run.rec.started_at = Some(now);
            run.dirty = true;
            self.event(&run.rec.id, EventKind::RunStarted, None, json!({}));
            self.count_run_started(run, now);
        }
        self.count_step_attempt(run, i);
        let mut rec = run.blank_record(i);
        rec.status = StepStatus::Running;
        rec.input = input.map(|v| self.secrets.redact(&v));
        rec.started_at = Some(now);
        let slot = &mut run.slots[i];
        slot.status = StepStatus::Running;
        slot.record = Some(rec);
    }

    /// Record the start; the executor is handed over once the start is committed.
    fn spawn<F>(&mut self, run: &mut Active, i: usize, fut: F)
    where
        F: std::future::Future<Output = Result<Success, StepError>> + Send + 'static,
    {
        if let Some(rec) = run.slots[i].record.clone() {
            self.write(Write::put_step(rec));
        }
        let step_id = run.def.plan.definition.steps[i].id.clone();
        self.event(
            &run.rec.id,
            EventKind::StepStarted,
            Some(&step_id),
            json!({"attempt": run.slots[i].attempt}),
        );
        self.step_update(run, i);
        self.batch.starts.push(Start {
            run_id: run.rec.id.clone(),
            step: i,
            attempt: run.slots[i].attempt,
            fut: Box::pin(async move { fut.await.map(Produced::Finished) }),
        });
    }

    /// A `wait`: the step sleeps until `due`. Sleeping has no deadline: it ends by itself.
    fn sleep(&mut self, run: &mut Active, i: usize, due: Timestamp, now: Timestamp) {
        self.begin(run, i, Some(json!({"until": due.to_string()})), now);
        if due <= now {
            return self.complete(run, i, Value::Null, None, None);
        }
        let step_id = run.def.plan.definition.steps[i].id.clone();
        self.hold(run, i);
        self.add_timer(&run.rec.id, &step_id, TimerKind::Wake, due);
        self.event(
            &run.rec.id,
            EventKind::StepWaiting,
            Some(&step_id),
            json!({"until": due.to_string()}),
        );
        self.step_update(run, i);
    }

    /// An approval or external event: the run waits, with a hook token and a deadline.
    /// `correlation` (signal type, value) lets correlated signals find the hook.
    fn suspend(
        &mut self,
        run: &mut Active,
        i: usize,
        kind: HookKind,
        timeout: Option<&str>,
        now: Timestamp,
        correlation: Option<(String, String)>,
    ) {
        let (signal_type, correlation) = correlation.unzip();
        let step_id = run.def.plan.definition.steps[i].id.clone();
        self.hold(run, i);
        self.write(Write::PutHook(HookRecord {
            token: crate::model::new_token(),
            workspace_id: run.rec.workspace_id.clone(),
            run_id: run.rec.id.clone(),
            step_id: step_id.clone(),
            kind,
            status: HookStatus::Pending,
            created_at: now,
            resumed_at: None,
            signal_type,
            correlation,
        }));
        let max = self.engine.config().max_suspended;
        let limit = timeout
            .and_then(|t| crate::duration::parse(t).ok())
            .map_or(max, |t| t.min(max));
        if let Ok(deadline) = add(now, limit) {
            self.add_timer(&run.rec.id, &step_id, TimerKind::Deadline, deadline);
        }
        self.event(
            &run.rec.id,
            EventKind::StepWaiting,
            Some(&step_id),
            json!({"kind": kind}),
        );
        self.step_update(run, i);
    }

    /// The step waits: WAITING in memory and in its record.
    fn hold(&mut self, run: &mut Active, i: usize) {
        run.slots[i].status = StepStatus::Waiting;
        if let Some(rec) = run.slots[i].record.as_mut() {
            rec.status = StepStatus::Waiting;
            let rec = rec.clone();
            self.write(Write::put_step(rec));
        }
    }
}

/// A script's rendered `env` (values as text) and stdin value (`with`, or `{}`).
fn render_script(
    sc: &crate::definition::ScriptStep,
    ctx: &minijinja::Value,
    step: &Step,
) -> Result<(Vec<(String, String)>, Value), template::RenderError> {
    let env = template::render_value(&Value::Object(sc.env.clone()), ctx, &step.field("env"))?;
    let env = match env {
        Value::Object(m) => m
            .into_iter()
            .map(|(k, v)| {
                let text = match v {
                    Value::Null => String::new(),
                    other => as_text(other),
                };
                (k, text)
            })
            .collect(),
        _ => Vec::new(),
    };
    let stdin = match &sc.with {
        Some(w) => template::render_value(w, ctx, &step.field("with"))?,
        None => json!({}),
    };
    Ok((env, stdin))
}

/// A rendered `correlate`: text of 1 to 255 characters (numbers count as their text).
fn correlation_value(v: Value) -> Result<String, String> {
    let text = match v {
        Value::Null => String::new(),
        other => as_text(other),
    };
    let n = text.chars().count();
    if n == 0 || n > crate::engine::MAX_CORRELATION {
        return Err(format!(
            "`correlate` rendered {} characters; it must render 1 to {}",
            n,
            crate::engine::MAX_CORRELATION
        ));
    }
    Ok(text)
}

pub(super) fn as_text(v: Value) -> String {
    match v {
        Value::String(s) => s,
        other => other.to_string(),
    }
}
