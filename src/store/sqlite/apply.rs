//! Writes to SQL: one batch of `Write`s inside one transaction.

use rusqlite::params;

use super::rows::{HOOK_COLUMNS, RUN_COLUMNS, STEP_COLUMNS};
use super::{json_text, micros, opt_json};
use crate::store::{RunRecord, Write};

fn insert_run(tx: &rusqlite::Transaction<'_>, r: &RunRecord) -> rusqlite::Result<()> {
    let mut stmt = tx.prepare_cached(&format!(
        "INSERT INTO runs ({RUN_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19)"
    ))?;
    stmt.execute(params![
        r.id,
        r.workspace_id,
        r.definition_id,
        r.definition_slug,
        r.status.as_str(),
        json_text(&r.input),
        opt_json(&r.output),
        opt_json(&r.error),
        r.idempotency_key,
        r.current_step_index,
        r.attempt,
        r.parent_run_id,
        r.parent_step_id,
        json_text(&r.trigger),
        opt_json(&r.pending_action),
        micros(r.created_at),
        micros(r.updated_at),
        r.started_at.map(micros),
        r.finished_at.map(micros),
    ])?;
    Ok(())
}

pub(super) fn apply_write(tx: &rusqlite::Transaction<'_>, w: &Write) -> rusqlite::Result<()> {
    match w {
        Write::InsertRun(r) => insert_run(tx, r)?,
        Write::UpdateRun(r) => {
            // Only what changes after creation: a narrow UPDATE keeps most indexes untouched.
            tx.prepare_cached(
                "UPDATE runs SET status = ?2, output = ?3, error = ?4, current_step_index = ?5, attempt = ?6, \
                 pending_action = ?7, updated_at = ?8, started_at = ?9, finished_at = ?10 WHERE id = ?1",
            )?
            .execute(params![
                r.id,
                r.status.as_str(),
                opt_json(&r.output),
                opt_json(&r.error),
                r.current_step_index,
                r.attempt,
                opt_json(&r.pending_action),
                micros(r.updated_at),
                r.started_at.map(micros),
                r.finished_at.map(micros),
            ])?;
        }
        Write::PutStep(s) => {
            tx.prepare_cached(&format!(
                "INSERT OR REPLACE INTO step_executions ({STEP_COLUMNS}) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)"
            ))?
            .execute(params![
                s.run_id,
                s.step_id,
                s.attempt,
                s.step_index,
                s.status.as_str(),
                opt_json(&s.input),
                opt_json(&s.output),
                opt_json(&s.error),
                opt_json(&s.usage),
                opt_json(&s.meta),
                s.started_at.map(micros),
                s.finished_at.map(micros),
                s.run_attempt,
            ])?;
        }
        Write::Event(e) => {
            tx.prepare_cached(
                "INSERT INTO events (run_id, at, kind, step_id, data) VALUES (?1, ?2, ?3, ?4, ?5)",
            )?
            .execute(params![
                e.run_id,
                micros(e.at),
                e.kind.as_str(),
                e.step_id,
                json_text(&e.data)
            ])?;
        }
        Write::PutTimer(t) => {
            tx.prepare_cached("INSERT OR REPLACE INTO timers (run_id, step_id, kind, due_at) VALUES (?1, ?2, ?3, ?4)")?
                .execute(params![t.run_id, t.step_id, t.kind.as_str(), micros(t.due_at)])?;
        }
        Write::DeleteTimer {
            run_id,
            step_id,
            kind,
        } => {
            tx.prepare_cached(
                "DELETE FROM timers WHERE run_id = ?1 AND step_id = ?2 AND kind = ?3",
            )?
            .execute(params![run_id, step_id, kind.as_str()])?;
        }
        Write::DeleteRunTimers { run_id } => {
            tx.prepare_cached("DELETE FROM timers WHERE run_id = ?1")?
                .execute(params![run_id])?;
        }
        Write::PutHook(h) => {
            tx.prepare_cached(&format!(
                "INSERT OR REPLACE INTO hooks ({HOOK_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)"
            ))?
            .execute(params![
                h.token,
                h.workspace_id,
                h.run_id,
                h.step_id,
                h.kind.as_str(),
                h.status.as_str(),
                micros(h.created_at),
                h.resumed_at.map(micros),
                h.signal_type,
                h.correlation
            ])?;
        }
        Write::CloseHooks {
            run_id,
            step_id,
            status,
            at,
        } => {
            tx.prepare_cached(
                "UPDATE hooks SET status = ?3, resumed_at = ?4 WHERE run_id = ?1 AND status = 'pending' \
                 AND (?2 IS NULL OR step_id = ?2)",
            )?
            .execute(params![run_id, step_id, status.as_str(), micros(*at)])?;
        }
        Write::Signal(s) => {
            tx.prepare_cached(
                "INSERT INTO signals (run_id, step_id, signal_type, payload, received_at, via) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?
            .execute(params![
                s.run_id,
                s.step_id,
                s.signal_type,
                json_text(&s.payload),
                micros(s.received_at),
                s.via
            ])?;
        }
        Write::BufferSignal(b) => {
            tx.prepare_cached(
                "INSERT INTO buffered_signals (id, workspace_id, signal_type, correlation, payload, run_id, \
                 received_at, expires_at, via) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            )?
            .execute(params![
                b.id,
                b.workspace_id,
                b.signal_type,
                b.correlation,
                json_text(&b.payload),
                b.run_id,
                micros(b.received_at),
                micros(b.expires_at),
                b.via
            ])?;
        }
        Write::SignalDelivery(d) => super::signals::put_delivery(tx, d)?,
        Write::ConsumeSignal { id, run_id, at } => {
            tx.prepare_cached(
                "UPDATE buffered_signals SET consumed_by = ?2, consumed_at = ?3 WHERE id = ?1",
            )?
            .execute(params![id, run_id, micros(*at)])?;
        }
        Write::PutAlert(a) => {
            tx.prepare_cached(
                "INSERT OR IGNORE INTO alerts (id, run_id, workspace_id, kind, target, body, status, attempts, next_at, last_error, created_at, finished_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
            )?
            .execute(params![
                a.id,
                a.run_id,
                a.workspace_id,
                a.kind,
                json_text(&a.target),
                json_text(&a.body),
                a.status.as_str(),
                a.attempts,
                micros(a.next_at),
                a.last_error,
                micros(a.created_at),
                a.finished_at.map(micros)
            ])?;
        }
        // One process holds every run of an SQLite store: nothing is ever forwarded, and a
        // write that claims otherwise must not vanish silently.
        Write::InboxPut(_) | Write::InboxAnswer { .. } => {
            return Err(rusqlite::Error::ToSqlConversionFailure(
                "the inbox exists only on a shared (Postgres) store".into(),
            ));
        }
        Write::UpdateAlert {
            id,
            status,
            attempts,
            next_at,
            last_error,
            finished_at,
        } => {
            tx.prepare_cached(
                "UPDATE alerts SET status = ?2, attempts = ?3, next_at = ?4, last_error = ?5, finished_at = ?6 WHERE id = ?1",
            )?
            .execute(params![
                id,
                status.as_str(),
                attempts,
                micros(*next_at),
                last_error,
                finished_at.map(micros)
            ])?;
        }
    }
    Ok(())
}
