//! Commands for runs that another process executes (a shared store).
//!
//! A command that finds its run held by another live process is not refused: it is written
//! as an inbox row in this process's next commit and its caller waits. The process that
//! holds the run (or that claims it, once nobody does) applies it with the same code as a
//! local command and commits the answer with what the command did; this process takes the
//! answer and gives it to the caller, with the status codes a local command would have.
//! A crash on either side loses nothing: the row is durable before anyone waits on it, and
//! an unanswered row is applied by whichever process holds its run next.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::sync::oneshot;

use super::Scheduler;
use crate::engine::{EngineError, Result, Resume, SendSignal, SignalOutcome};
use crate::model::new_id;
use crate::store::{InboxRecord, RunRecord, Write};

/// How often the inbox is read when no notification came (a lost `NOTIFY`, a listener
/// reconnecting).
const POLL: Duration = Duration::from_millis(250);
/// How long a caller waits for the owner's answer. Longer than a lease, so a dead owner's
/// runs are taken over and the command applied before the caller gives up.
const ANSWER_WAIT: Duration = Duration::from_secs(30);
/// Answers nobody took (their caller stopped) are deleted after this long.
const ANSWER_KEEP: Duration = Duration::from_secs(600);
const SWEEP_EVERY: Duration = Duration::from_secs(60);
/// Rows applied per turn; the rest wait for the next.
const TURN_LIMIT: usize = 200;

/// A command as it waits in the inbox.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "camelCase")]
pub(super) enum Forwarded {
    Cancel {
        workspace_id: Option<String>,
        run_id: String,
        by: Option<String>,
    },
    Resume {
        workspace_id: Option<String>,
        run_id: String,
        resume: Resume,
        actor: String,
    },
    Retry {
        workspace_id: String,
        run_id: String,
        by: Option<String>,
    },
    /// A correlated signal one of whose runs is held elsewhere: routed there as a whole.
    Signal {
        req: Box<SendSignal>,
        buffer_ms: Option<u64>,
        /// The definition version signal-with-start would start.
        start: Option<String>,
    },
    /// A child run ended (committed with this row) while its parent ran elsewhere.
    ChildDone {
        parent_id: String,
        step_id: String,
        child_id: String,
    },
}

/// Who waits for an inbox answer.
pub(super) enum Waiter {
    Run(oneshot::Sender<Result<RunRecord>>),
    Signal(oneshot::Sender<Result<SignalOutcome>>),
    /// Nobody: a parent's cancel reaching its child, a child's end reaching its parent.
    Nobody,
}

struct Waiting {
    waiter: Waiter,
    until: Instant,
}

/// The inbox's side of the scheduler.
pub(super) struct Inbox {
    /// Committed rows whose answers callers wait for (filled once the row commits).
    waiting: Arc<Mutex<HashMap<String, Waiting>>>,
    next_poll: Instant,
    next_sweep: Instant,
}

impl Default for Inbox {
    fn default() -> Self {
        Self {
            waiting: Arc::default(),
            next_poll: Instant::now(),
            next_sweep: Instant::now() + SWEEP_EVERY,
        }
    }
}

impl Inbox {
    /// Read the inbox at the next turn (a notification came).
    pub fn poll_now(&mut self) {
        self.next_poll = Instant::now();
    }

    /// Until the next read of the inbox.
    pub fn until_next(&self) -> Duration {
        self.next_poll.saturating_duration_since(Instant::now())
    }
}

impl Scheduler {
    /// Answer a command about one run, or forward it to the process that holds the run.
    pub(super) fn answer_run(
        &mut self,
        reply: oneshot::Sender<Result<RunRecord>>,
        r: Result<RunRecord>,
        forwarded: impl FnOnce() -> Option<Forwarded>,
    ) {
        match (r, forwarded()) {
            (Err(EngineError::HeldElsewhere(run_id)), Some(cmd)) => {
                self.forward(&run_id, &cmd, Waiter::Run(reply));
            }
            (r, _) => self.batch.reply(reply, r),
        }
    }

    /// `answer_run` for a correlated signal.
    pub(super) fn answer_signal(
        &mut self,
        reply: oneshot::Sender<Result<SignalOutcome>>,
        r: Result<SignalOutcome>,
        forwarded: impl FnOnce() -> Option<Forwarded>,
    ) {
        match (r, forwarded()) {
            (Err(EngineError::HeldElsewhere(run_id)), Some(cmd)) => {
                self.forward(&run_id, &cmd, Waiter::Signal(reply));
            }
            (r, _) => self.batch.reply(reply, r),
        }
    }

    /// Write `cmd` for the process that holds `run_id`; once the row commits, `waiter`
    /// waits for its answer (if the commit fails, it hears that nothing was changed).
    pub(super) fn forward(&mut self, run_id: &str, cmd: &Forwarded, waiter: Waiter) {
        let command = match serde_json::to_string(cmd) {
            Ok(c) => c,
            Err(e) => {
                waiter.fail(EngineError::Internal(format!(
                    "cannot forward the command: {e}"
                )));
                return;
            }
        };
        let id = new_id("inbox_");
        self.write(Write::InboxPut(Box::new(InboxRecord {
            id: id.clone(),
            run_id: run_id.to_string(),
            command,
            created_at: self.now(),
        })));
        let waiting = self.inbox.waiting.clone();
        self.batch.replies.push(Box::new(move |err| match err {
            None => {
                if let Ok(mut w) = waiting.lock() {
                    w.insert(
                        id,
                        Waiting {
                            waiter,
                            until: Instant::now() + ANSWER_WAIT,
                        },
                    );
                }
            }
            Some(e) => waiter.fail(EngineError::Unavailable(format!(
                "the change could not be saved: {e}"
            ))),
        }));
    }

    /// On a shared store: hand callers the answers that arrived, and apply the commands
    /// waiting for runs this process holds or may claim. Called right after a flush, so a
    /// row applied in the last turn is answered (or rolled back) before it is read again.
    pub(super) fn inbox_turn(&mut self) {
        if !self.store.shared() || Instant::now() < self.inbox.next_poll {
            return;
        }
        self.inbox.next_poll = Instant::now() + POLL;
        self.take_answers();
        match self.store.inbox_open(TURN_LIMIT) {
            Ok(rows) => {
                for row in rows {
                    self.apply_row(row);
                }
            }
            Err(e) => tracing::warn!("cannot read the inbox: {e}"),
        }
        if Instant::now() >= self.inbox.next_sweep {
            self.inbox.next_sweep = Instant::now() + SWEEP_EVERY;
            let before = self.now() - ANSWER_KEEP;
            if let Err(e) = self.store.sweep_inbox(before) {
                tracing::warn!("cannot sweep old inbox answers: {e}");
            }
        }
    }

    fn take_answers(&mut self) {
        let ids: Vec<String> = match self.inbox.waiting.lock() {
            Ok(w) => w.keys().cloned().collect(),
            Err(_) => return,
        };
        if ids.is_empty() {
            return;
        }
        let answers = match self.store.inbox_answers(&ids) {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!("cannot read inbox answers: {e}");
                Vec::new()
            }
        };
        let mut done = Vec::new();
        if let Ok(mut w) = self.inbox.waiting.lock() {
            for (id, answer) in answers {
                if let Some(waiting) = w.remove(&id) {
                    done.push((waiting.waiter, Some(answer)));
                }
            }
            let now = Instant::now();
            let late: Vec<String> = w
                .iter()
                .filter(|(_, v)| v.until <= now)
                .map(|(k, _)| k.clone())
                .collect();
            for id in late {
                if let Some(waiting) = w.remove(&id) {
                    done.push((waiting.waiter, None));
                }
            }
        }
        for (waiter, answer) in done {
            match answer {
                Some(a) => self.deliver_answer(waiter, &a),
                None => waiter.fail(EngineError::Unavailable(format!(
                    "the command was recorded for the process that executes the run, which did not answer within {}s; it will still be applied: check the run before sending it again",
                    ANSWER_WAIT.as_secs()
                ))),
            }
        }
    }

    /// Give a caller its answer, with the runs as they are now.
    fn deliver_answer(&self, waiter: Waiter, answer: &str) {
        let parsed: Value = serde_json::from_str(answer).unwrap_or(Value::Null);
        let ok = match parsed.get("error") {
            Some(e) => Err(error_from_wire(e)),
            None => Ok(parsed.get("ok").cloned().unwrap_or(Value::Null)),
        };
        let run = |v: &Value| -> Result<RunRecord> {
            let id = v.as_str().unwrap_or_default();
            self.store
                .run(id)?
                .ok_or_else(|| EngineError::NotFound(format!("run `{id}` not found")))
        };
        match waiter {
            Waiter::Nobody => {}
            Waiter::Run(tx) => {
                let _ = tx.send(ok.and_then(|v| run(&v["runId"])));
            }
            Waiter::Signal(tx) => {
                let out = ok.and_then(|v| {
                    let reached = v["reached"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .map(&run)
                        .collect::<Result<Vec<_>>>()?;
                    let started = match v.get("started").filter(|s| !s.is_null()) {
                        Some(s) => Some((run(&s["runId"])?, s["created"].as_bool() == Some(true))),
                        None => None,
                    };
                    Ok(SignalOutcome {
                        reached,
                        buffered: v["buffered"].as_bool() == Some(true),
                        started,
                        duplicate: v["duplicate"].as_bool() == Some(true),
                    })
                });
                let _ = tx.send(out);
            }
        }
    }

    /// Apply one inbox command as if its caller had sent it here; its answer commits with
    /// what it did. A run still held elsewhere leaves the row for its holder.
    fn apply_row(&mut self, row: InboxRecord) {
        let answer = match serde_json::from_str::<Forwarded>(&row.command) {
            Ok(cmd) => match self.apply_forwarded(cmd) {
                Err(EngineError::HeldElsewhere(_)) => return,
                Ok(v) => json!({"ok": v}),
                Err(e) => json!({"error": error_to_wire(&e)}),
            },
            Err(e) => {
                json!({"error": {"kind": "internal", "message": format!("an unreadable inbox command: {e}")}})
            }
        };
        self.write(Write::InboxAnswer {
            id: row.id,
            answer: answer.to_string(),
        });
    }

    fn apply_forwarded(&mut self, cmd: Forwarded) -> Result<Value> {
        let run_answer = |r: RunRecord| json!({"runId": r.id});
        match cmd {
            Forwarded::Cancel {
                workspace_id,
                run_id,
                by,
            } => self
                .cancel(workspace_id.as_deref(), &run_id, by.as_deref())
                .map(run_answer),
            Forwarded::Resume {
                workspace_id,
                run_id,
                resume,
                actor,
            } => self
                .resume(workspace_id.as_deref(), &run_id, resume, &actor)
                .map(run_answer),
            Forwarded::Retry {
                workspace_id,
                run_id,
                by,
            } => self
                .retry(&workspace_id, &run_id, by.as_deref())
                .map(run_answer),
            Forwarded::Signal {
                req,
                buffer_ms,
                start,
            } => {
                let compiled = match start {
                    Some(version) => Some(
                        self.store
                            .definition(&req.workspace_id, &version)?
                            .ok_or_else(|| {
                                EngineError::NotFound(format!("definition `{version}` not found"))
                            })
                            .and_then(|d| self.engine.compiled_record(d))?,
                    ),
                    None => None,
                };
                let out =
                    self.route_signal(*req, buffer_ms.map(Duration::from_millis), compiled)?;
                let ids: Vec<&str> = out.reached.iter().map(|r| r.id.as_str()).collect();
                Ok(json!({
                    "reached": ids,
                    "buffered": out.buffered,
                    "started": out.started.as_ref().map(|(r, created)| json!({"runId": r.id, "created": created})),
                    "duplicate": out.duplicate,
                }))
            }
            Forwarded::ChildDone {
                parent_id,
                step_id,
                child_id,
            } => {
                let child = self
                    .store
                    .run(&child_id)?
                    .ok_or_else(|| EngineError::NotFound(format!("run `{child_id}` not found")))?;
                if self.get_or_load(&parent_id).is_none() && self.held_elsewhere() {
                    return Err(EngineError::HeldElsewhere(parent_id));
                }
                self.batch.child_done.push((parent_id, step_id, child));
                self.process_children();
                Ok(Value::Null)
            }
        }
    }
}

impl Waiter {
    fn fail(self, e: EngineError) {
        match self {
            Waiter::Run(tx) => {
                let _ = tx.send(Err(e));
            }
            Waiter::Signal(tx) => {
                let _ = tx.send(Err(e));
            }
            Waiter::Nobody => {}
        }
    }
}

/// An engine error as an inbox answer carries it: kind, message, details.
fn error_to_wire(e: &EngineError) -> Value {
    let (kind, details) = match e {
        EngineError::NotFound(_) => ("notFound", Value::Null),
        EngineError::Validation { details, .. } => ("validation", details.clone()),
        EngineError::Conflict(_) => ("conflict", Value::Null),
        EngineError::Gone(_) => ("gone", Value::Null),
        EngineError::Unauthorized(_) => ("unauthorized", Value::Null),
        EngineError::Unavailable(_) | EngineError::HeldElsewhere(_) | EngineError::ShuttingDown => {
            ("unavailable", Value::Null)
        }
        EngineError::Store(_) | EngineError::Internal(_) => ("internal", Value::Null),
    };
    let message = match e {
        EngineError::Validation { message, .. } => message.clone(),
        other => other.to_string(),
    };
    json!({"kind": kind, "message": message, "details": details})
}

fn error_from_wire(v: &Value) -> EngineError {
    let message = v["message"].as_str().unwrap_or("no message").to_string();
    match v["kind"].as_str().unwrap_or_default() {
        "notFound" => EngineError::NotFound(message),
        "validation" => EngineError::Validation {
            message,
            details: v["details"].clone(),
        },
        "conflict" => EngineError::Conflict(message),
        "gone" => EngineError::Gone(message),
        "unauthorized" => EngineError::Unauthorized(message),
        "unavailable" => EngineError::Unavailable(message),
        _ => EngineError::Internal(message),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_keep_their_kind_message_and_details_across_the_inbox() {
        let cases = [
            EngineError::NotFound("run `x` not found".into()),
            EngineError::validation("payload must be an object", json!({"field": "payload"})),
            EngineError::Conflict("run `x` is COMPLETED".into()),
            EngineError::Gone("this hook expired".into()),
            EngineError::Unauthorized("bad".into()),
            EngineError::Unavailable("later".into()),
        ];
        for e in cases {
            let back = error_from_wire(&error_to_wire(&e));
            assert_eq!(
                std::mem::discriminant(&back),
                std::mem::discriminant(&e),
                "{e:?}"
            );
            assert_eq!(back.to_string(), e.to_string());
            if let (
                EngineError::Validation { details: a, .. },
                EngineError::Validation { details: b, .. },
            ) = (&back, &e)
            {
                assert_eq!(a, b);
            }
        }
    }

    #[test]
    fn every_command_reads_back_as_written() {
        let cmd = Forwarded::Resume {
            workspace_id: Some("ws_default".into()),
            run_id: "wfrun_1".into(),
            resume: Resume::Approval {
                step: "review".into(),
                input: json!("approve"),
            },
            actor: "key:abc".into(),
        };
        let text = serde_json::to_string(&cmd).unwrap_or_default();
        let back: Forwarded = serde_json::from_str(&text).unwrap_or(Forwarded::ChildDone {
            parent_id: String::new(),
            step_id: String::new(),
            child_id: String::new(),
        });
        assert_eq!(serde_json::to_string(&back).unwrap_or_default(), text);
        assert!(text.contains("\"command\":\"resume\""), "{text}");
    }
}
