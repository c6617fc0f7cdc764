//! An agent step's file tools (`files:`) on the scheduler's side: a call runs on the
//! executor side (a blocking task: it touches the disk) once the batch that queued it
//! commits, one at a time per step in the order the model made them; its result is
//! recorded in the transcript before the next call starts. The tools themselves are
//! `exec::agent::files`.

use super::Scheduler;
use super::agent::transcript_of;
use super::batch::Start;
use crate::engine::state::Active;
use crate::exec::agent::{self, FileOp, ToolResult, Transcript};
use crate::exec::{Produced, StepError};

impl Scheduler {
    /// Queue file tool call `k` of turn `turn`; it runs once this batch commits, unless a
    /// file call of this step is already on its way (its result starts the next one).
    pub(super) fn start_file_call(
        &mut self,
        run: &Active,
        i: usize,
        t: &Transcript,
        turn: usize,
        k: usize,
        op: FileOp,
    ) {
        let busy = run.tasks.contains_key(&i)
            || self
                .batch
                .starts
                .iter()
                .any(|s| s.run_id == run.rec.id && s.step == i);
        if busy {
            return;
        }
        // `resolve_tools` offers file tools only with a root.
        let Some(root) = self.engine.config().workspaces.root.clone() else {
            return;
        };
        let args = t.turns[turn].calls[k].arguments.clone();
        let run_id = run.rec.id.clone();
        self.batch.starts.push(Start {
            run_id: run_id.clone(),
            step: i,
            attempt: run.slots[i].attempt,
            fut: Box::pin(async move {
                let result = tokio::task::spawn_blocking(move || {
                    crate::workspace::ensure(&root, &run_id)
                        .map(|ws| agent::files::run(&ws, op, &args))
                        .map_err(|e| {
                            let at = root.display();
                            StepError::new(
                                "workspace",
                                format!("cannot create the run's workspace in {at}: {e}"),
                            )
                        })
                })
                .await
                .map_err(|e| StepError::new("workspace", e.to_string()))??;
                Ok(Produced::ToolResult {
                    turn,
                    call: k,
                    result,
                })
            }),
        });
        self.batch.touched.insert(run.rec.id.clone());
    }

    /// A file tool call finished: record its result and go on (the next file call, the
    /// next model call once the turn has every result).
    pub(super) fn agent_file_done(
        &mut self,
        run: &mut Active,
        i: usize,
        turn: usize,
        k: usize,
        result: ToolResult,
    ) {
        let Some(mut t) = transcript_of(run, i) else {
            return;
        };
        let open = t
            .turns
            .get(turn)
            .and_then(|x| x.calls.get(k))
            .is_some_and(|c| c.result.is_none());
        // Recorded already (a result applied again after a failed commit): the loop went
        // on from there.
        if !open {
            return;
        }
        self.tool_finished(run, i, &mut t, turn, k, result);
        self.save(run, i, &t);
        self.agent_next(run, i, t);
    }
}
