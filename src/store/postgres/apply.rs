//! Writes to SQL: one batch of `Write`s in one transaction, its statements pipelined (sent
//! one after another without waiting for each answer; Postgres runs them in order).

use deadpool_postgres::Transaction;
use futures_util::future::try_join_all;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;

use super::grouped;
use super::owner::{NOW_US, Ownership};
use super::rows::{HOOK_COLUMNS, RUN_COLUMNS, STEP_COLUMNS};
use super::{json_text, micros, opt_json, pg_err};
use crate::store::{Result, StoreError, Write};

type Arg<'a> = &'a (dyn ToSql + Sync);

/// Prepare only, or prepare (a cache hit by then) and execute.
#[derive(Clone, Copy, PartialEq)]
enum Mode {
    Prepare,
    Execute,
}

/// One prepared (and cached per connection) statement.
async fn exec(tx: &Transaction<'_>, mode: Mode, sql: &str, args: &[Arg<'_>]) -> Result<u64> {
    let stmt = tx.prepare_cached(sql).await.map_err(pg_err)?;
    if mode == Mode::Prepare {
        return Ok(0);
    }
    tx.execute(&stmt, args).await.map_err(pg_err)
}

/// Apply a batch inside `tx`. Every statement is prepared first; then each write's
/// statement is sent on its future's first poll, so they leave in the batch's order
/// (`try_join_all` polls them in order) and Postgres runs them in that order. The kinds
/// `grouped` takes go last, one statement per kind (a new kind of write is applied on its
/// own, in order, unless it is added there).
pub(super) async fn apply_all(
    tx: &Transaction<'_>,
    writes: &[Write],
    groups: &grouped::Groups<'_>,
    own: &Ownership,
) -> Result<()> {
    let ordered: Vec<&Write> = writes.iter().filter(|w| !grouped::grouped(w)).collect();
    let mut kinds = Vec::new();
    for w in &ordered {
        let kind = std::mem::discriminant(*w);
        if !kinds.iter().any(|(k, _)| *k == kind) {
            kinds.push((kind, *w));
        }
    }
    let group_sql = groups.statements();
    let prepare_groups = try_join_all(group_sql.iter().map(|sql| tx.prepare_cached(sql)));
    let prepare_ordered = try_join_all(kinds.iter().map(|(_, w)| apply(tx, Mode::Prepare, w, own)));
    let (prepared, ordered_prepared) = futures_util::join!(prepare_groups, prepare_ordered);
    prepared.map_err(pg_err)?;
    ordered_prepared?;
    let ordered = try_join_all(ordered.iter().map(|w| apply(tx, Mode::Execute, w, own)));
    futures_util::try_join!(ordered, groups.apply(tx, own))?;
    Ok(())
}

async fn apply(tx: &Transaction<'_>, mode: Mode, w: &Write, own: &Ownership) -> Result<()> {
    match w {
        Write::InsertRun(r) => {
            let (input, output, error) =
                (json_text(&r.input), opt_json(&r.output), opt_json(&r.error));
            let (trigger, pending) = (json_text(&r.trigger), opt_json(&r.pending_action));
            let stmt = tx
                .prepare_cached(&format!(
                    "INSERT INTO runs ({RUN_COLUMNS}, owner, lease_until, epoch) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, \
                     $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, {NOW_US} + $21, 1)"
                ))
                .await
                .map_err(pg_err)?;
            if mode == Mode::Prepare {
                return Ok(());
            }
            let done = tx
                .execute(
                    &stmt,
                    &[
                        &r.id,
                        &r.workspace_id,
                        &r.definition_id,
                        &r.definition_slug,
                        &r.status.as_str(),
                        &input,
                        &output,
                        &error,
                        &r.idempotency_key,
                        &r.current_step_index,
                        &r.attempt,
                        &r.parent_run_id,
                        &r.parent_step_id,
                        &trigger,
                        &pending,
                        &micros(r.created_at),
                        &micros(r.updated_at),
                        &r.started_at.map(micros),
                        &r.finished_at.map(micros),
                        &own.me,
                        &own.lease_us(),
                    ],
                )
                .await;
            match done {
                Err(e) if e.code() == Some(&SqlState::UNIQUE_VIOLATION) => {
                    return Err(match &r.idempotency_key {
                        Some(key) => StoreError::DuplicateKey(key.clone()),
                        None => pg_err(e),
                    });
                }
                Err(e) => return Err(pg_err(e)),
                Ok(_) => {}
            }
        }
        Write::UpdateRun(r) => {
            let (output, error, pending) = (
                opt_json(&r.output),
                opt_json(&r.error),
                opt_json(&r.pending_action),
            );
            // Only what changes after creation: a narrow UPDATE keeps indexes untouched
            // (and lets Postgres update in place, a HOT update). A run that finished or
            // waits on rows needs no process: it is let go (its epoch stays, so this
            // process may still write it until another claims it).
            exec(
                tx,
                mode,
                "UPDATE runs SET status = $2, output = $3, error = $4, current_step_index = $5, attempt = $6, \
                 pending_action = $7, updated_at = $8, started_at = $9, finished_at = $10, \
                 owner = CASE WHEN $2 IN ('COMPLETED', 'FAILED', 'CANCELLED', 'WAITING', 'PAUSED') THEN NULL ELSE owner END \
                 WHERE id = $1",
                &[
                    &r.id,
                    &r.status.as_str(),
                    &output,
                    &error,
                    &r.current_step_index,
                    &r.attempt,
                    &pending,
                    &micros(r.updated_at),
                    &r.started_at.map(micros),
                    &r.finished_at.map(micros),
                ],
            )
            .await?;
        }
        Write::PutStep(s) => {
            let (input, output, error) =
                (opt_json(&s.input), opt_json(&s.output), opt_json(&s.error));
            let (usage, meta) = (opt_json(&s.usage), opt_json(&s.meta));
            exec(
                tx,
                mode,
                &format!(
                    "INSERT INTO step_executions ({STEP_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) \
                     ON CONFLICT (run_id, step_id, attempt) DO UPDATE SET step_index = EXCLUDED.step_index, \
                     status = EXCLUDED.status, input = EXCLUDED.input, output = EXCLUDED.output, error = EXCLUDED.error, \
                     usage = EXCLUDED.usage, meta = EXCLUDED.meta, started_at = EXCLUDED.started_at, \
                     finished_at = EXCLUDED.finished_at, run_attempt = EXCLUDED.run_attempt"
                ),
                &[
                    &s.run_id,
                    &s.step_id,
                    &s.attempt,
                    &s.step_index,
                    &s.status.as_str(),
                    &input,
                    &output,
                    &error,
                    &usage,
                    &meta,
                    &s.started_at.map(micros),
                    &s.finished_at.map(micros),
                    &s.run_attempt,
                ],
            )
            .await?;
        }
        Write::Event(e) => {
            let data = json_text(&e.data);
            exec(
                tx,
                mode,
                "INSERT INTO events (run_id, at, kind, step_id, data) VALUES ($1, $2, $3, $4, $5)",
                &[
                    &e.run_id,
                    &micros(e.at),
                    &e.kind.as_str(),
                    &e.step_id,
                    &data,
                ],
            )
            .await?;
        }
        Write::PutTimer(t) => {
            exec(
                tx,
                mode,
                "INSERT INTO timers (run_id, step_id, kind, due_at) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (run_id, step_id, kind) DO UPDATE SET due_at = EXCLUDED.due_at",
                &[&t.run_id, &t.step_id, &t.kind.as_str(), &micros(t.due_at)],
            )
            .await?;
        }
        Write::DeleteTimer {
            run_id,
            step_id,
            kind,
        } => {
            exec(
                tx,
                mode,
                "DELETE FROM timers WHERE run_id = $1 AND step_id = $2 AND kind = $3",
                &[run_id, step_id, &kind.as_str()],
            )
            .await?;
        }
        Write::DeleteRunTimers { run_id } => {
            exec(tx, mode, "DELETE FROM timers WHERE run_id = $1", &[run_id]).await?;
        }
        Write::PutHook(h) => {
            exec(
                tx,
                mode,
                &format!(
                    "INSERT INTO hooks ({HOOK_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) \
                     ON CONFLICT (token) DO UPDATE SET workspace_id = EXCLUDED.workspace_id, run_id = EXCLUDED.run_id, \
                     step_id = EXCLUDED.step_id, kind = EXCLUDED.kind, status = EXCLUDED.status, \
                     created_at = EXCLUDED.created_at, resumed_at = EXCLUDED.resumed_at, \
                     signal_type = EXCLUDED.signal_type, correlation = EXCLUDED.correlation"
                ),
                &[
                    &h.token,
                    &h.workspace_id,
                    &h.run_id,
                    &h.step_id,
                    &h.kind.as_str(),
                    &h.status.as_str(),
                    &micros(h.created_at),
                    &h.resumed_at.map(micros),
                    &h.signal_type,
                    &h.correlation,
                ],
            )
            .await?;
        }
        Write::CloseHooks {
            run_id,
            step_id,
            status,
            at,
        } => {
            exec(
                tx,
                mode,
                "UPDATE hooks SET status = $3, resumed_at = $4 WHERE run_id = $1 AND status = 'pending' \
                 AND ($2::TEXT IS NULL OR step_id = $2)",
                &[run_id, step_id, &status.as_str(), &micros(*at)],
            )
            .await?;
        }
        Write::Signal(s) => {
            let payload = json_text(&s.payload);
            exec(
                tx,
                mode,
                "INSERT INTO signals (run_id, step_id, signal_type, payload, received_at, via) VALUES ($1, $2, $3, $4, $5, $6)",
                &[&s.run_id, &s.step_id, &s.signal_type, &payload, &micros(s.received_at), &s.via],
            )
            .await?;
        }
        Write::BufferSignal(b) => {
            let payload = json_text(&b.payload);
            exec(
                tx,
                mode,
                "INSERT INTO buffered_signals (id, workspace_id, signal_type, correlation, payload, run_id, \
                 received_at, expires_at, via) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
                &[
                    &b.id,
                    &b.workspace_id,
                    &b.signal_type,
                    &b.correlation,
                    &payload,
                    &b.run_id,
                    &micros(b.received_at),
                    &micros(b.expires_at),
                    &b.via,
                ],
            )
            .await?;
        }
        Write::SignalDelivery(d) => {
            // Expired deliveries go first, so the table holds only the window.
            exec(
                tx,
                mode,
                "DELETE FROM signal_deliveries WHERE expires_at <= $1",
                &[&micros(d.received_at)],
            )
            .await?;
            let outcome = json_text(&d.outcome);
            exec(
                tx,
                mode,
                "INSERT INTO signal_deliveries (workspace_id, key, outcome, received_at, expires_at) \
                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT (workspace_id, key) DO UPDATE SET \
                 outcome = EXCLUDED.outcome, received_at = EXCLUDED.received_at, expires_at = EXCLUDED.expires_at",
                &[&d.workspace_id, &d.key, &outcome, &micros(d.received_at), &micros(d.expires_at)],
            )
            .await?;
        }
        Write::ConsumeSignal { id, run_id, at } => {
            exec(
                tx,
                mode,
                "UPDATE buffered_signals SET consumed_by = $2, consumed_at = $3 WHERE id = $1",
                &[id, run_id, &micros(*at)],
            )
            .await?;
        }
        Write::PutAlert(a) => {
            let (target, body) = (json_text(&a.target), json_text(&a.body));
            exec(
                tx,
                mode,
                "INSERT INTO alerts (id, run_id, workspace_id, kind, target, body, status, attempts, next_at, last_error, created_at, finished_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) ON CONFLICT (id) DO NOTHING",
                &[
                    &a.id,
                    &a.run_id,
                    &a.workspace_id,
                    &a.kind,
                    &target,
                    &body,
                    &a.status.as_str(),
                    &a.attempts,
                    &micros(a.next_at),
                    &a.last_error,
                    &micros(a.created_at),
                    &a.finished_at.map(micros),
                ],
            )
            .await?;
        }
        Write::InboxPut(i) => {
            exec(
                tx,
                mode,
                super::inbox::PUT_SQL,
                &[&i.id, &i.run_id, &i.command, &micros(i.created_at)],
            )
            .await?;
        }
        Write::InboxAnswer { id, answer } => {
            let n = exec(tx, mode, super::inbox::ANSWER_SQL, &[id, answer]).await?;
            // Answered already (or taken): another process applied this command. Its
            // effects must not commit twice, so the batch fails like a fenced one and is
            // rebuilt without them.
            if mode == Mode::Execute && n == 0 {
                return Err(StoreError::Fenced(Vec::new()));
            }
        }
        Write::UpdateAlert {
            id,
            status,
            attempts,
            next_at,
            last_error,
            finished_at,
        } => {
            exec(
                tx,
                mode,
                "UPDATE alerts SET status = $2, attempts = $3, next_at = $4, last_error = $5, finished_at = $6 WHERE id = $1",
                &[id, &status.as_str(), attempts, &micros(*next_at), last_error, &finished_at.map(micros)],
            )
            .await?;
        }
    }
    Ok(())
}
