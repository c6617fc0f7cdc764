//! The kinds of write a batch carries by the thousand (run updates, step rows, events), each
//! as one statement over arrays (`unnest`) instead of one statement per write: the server
//! parses, plans and executes once per kind rather than once per row.
//!
//! Grouping reorders, so only kinds that commute with every other kind of write are grouped:
//! nothing else in a batch writes `step_executions` or `events`, and a run's update needs
//! only its row, which `InsertRun` (kept in order, before the groups) creates. Within a kind,
//! the last write of a key wins: each is a whole-row upsert, so applying only the last one
//! leaves what applying all in order would (and one statement may not touch a row twice).
//!
//! The run updates also fence their runs: each checks the epoch this process holds and
//! renews the lease, so a run the batch updates is written once, not once by the fence and
//! again by its update.

use std::collections::HashMap;

use deadpool_postgres::Transaction;
use tokio_postgres::types::ToSql;

use super::owner::{NOW_US, Ownership};
use super::rows::STEP_COLUMNS;
use super::{json_text, micros, opt_json, pg_err};
use crate::store::{EventRecord, Result, RunUpdate, StepRecord, StoreError, Write};

type Arg<'a> = &'a (dyn ToSql + Sync);

fn update_runs_sql() -> String {
    format!(
        "UPDATE runs r SET status = u.status, output = u.output, error = u.error, \
     current_step_index = u.current_step_index, attempt = u.attempt, pending_action = u.pending_action, \
     updated_at = u.updated_at, started_at = u.started_at, finished_at = u.finished_at, \
     owner = CASE WHEN u.status IN ('COMPLETED', 'FAILED', 'CANCELLED', 'WAITING', 'PAUSED') THEN NULL ELSE $12 END, \
     lease_until = {NOW_US} + $13 \
     FROM unnest($1::TEXT[], $2::TEXT[], $3::TEXT[], $4::TEXT[], $5::BIGINT[], $6::BIGINT[], $7::TEXT[], \
     $8::BIGINT[], $9::BIGINT[], $10::BIGINT[], $11::BIGINT[]) \
     AS u(id, status, output, error, current_step_index, attempt, pending_action, updated_at, started_at, finished_at, epoch) \
     WHERE r.id = u.id AND (u.epoch IS NULL OR r.epoch = u.epoch) RETURNING r.id, u.epoch IS NOT NULL"
    )
}

fn put_steps_sql() -> String {
    format!(
        "INSERT INTO step_executions ({STEP_COLUMNS}) SELECT * FROM unnest($1::TEXT[], $2::TEXT[], $3::BIGINT[], \
         $4::BIGINT[], $5::TEXT[], $6::TEXT[], $7::TEXT[], $8::TEXT[], $9::TEXT[], $10::TEXT[], $11::BIGINT[], \
         $12::BIGINT[], $13::BIGINT[]) \
         ON CONFLICT (run_id, step_id, attempt) DO UPDATE SET step_index = EXCLUDED.step_index, \
         status = EXCLUDED.status, input = EXCLUDED.input, output = EXCLUDED.output, error = EXCLUDED.error, \
         usage = EXCLUDED.usage, meta = EXCLUDED.meta, started_at = EXCLUDED.started_at, \
         finished_at = EXCLUDED.finished_at, run_attempt = EXCLUDED.run_attempt"
    )
}

const INSERT_EVENTS: &str = "INSERT INTO events (run_id, at, kind, step_id, data) \
     SELECT * FROM unnest($1::TEXT[], $2::BIGINT[], $3::TEXT[], $4::TEXT[], $5::TEXT[])";

/// Whether a write goes into a group (else it is applied on its own, in batch order).
pub(super) fn grouped(w: &Write) -> bool {
    matches!(w, Write::UpdateRun(_) | Write::PutStep(_) | Write::Event(_))
}

/// The grouped writes of a batch, the last of each key kept.
#[derive(Default)]
pub(super) struct Groups<'a> {
    runs: Vec<&'a RunUpdate>,
    /// Per run update: the epoch it must still have (`None`: created in this batch).
    epochs: Vec<Option<i64>>,
    steps: Vec<&'a StepRecord>,
    events: Vec<&'a EventRecord>,
}

impl<'a> Groups<'a> {
    /// The groups of `writes`; the epochs of the runs they update move from `held` (what
    /// the fence statement checks) to the updates.
    pub fn of(writes: &'a [Write], held: &mut HashMap<String, i64>) -> Self {
        let mut g = Groups::default();
        let mut run_at: HashMap<&str, usize> = HashMap::new();
        let mut step_at: HashMap<(&str, &str, i64), usize> = HashMap::new();
        for w in writes {
            match w {
                Write::UpdateRun(r) => match run_at.get(r.id.as_str()) {
                    Some(&i) => g.runs[i] = r,
                    None => {
                        run_at.insert(&r.id, g.runs.len());
                        g.runs.push(r);
                        g.epochs.push(held.remove(&r.id));
                    }
                },
                Write::PutStep(s) => {
                    let key = (s.run_id.as_str(), s.step_id.as_str(), s.attempt);
                    match step_at.get(&key) {
                        Some(&i) => g.steps[i] = s,
                        None => {
                            step_at.insert(key, g.steps.len());
                            g.steps.push(s);
                        }
                    }
                }
                Write::Event(e) => g.events.push(e),
                _ => {}
            }
        }
        g
    }

    /// The statements this batch needs, to prepare before anything is sent (so the
    /// pipelined statements leave in order).
    pub fn statements(&self) -> Vec<String> {
        let mut sql = Vec::new();
        if !self.runs.is_empty() {
            sql.push(update_runs_sql());
        }
        if !self.steps.is_empty() {
            sql.push(put_steps_sql());
        }
        if !self.events.is_empty() {
            sql.push(INSERT_EVENTS.to_string());
        }
        sql
    }

    /// Send every group (each statement prepared already) and wait for all.
    pub async fn apply(&self, tx: &Transaction<'_>, own: &Ownership) -> Result<()> {
        let runs = self.update_runs(tx, own);
        let steps = self.put_steps(tx);
        let events = self.insert_events(tx);
        futures_util::try_join!(runs, steps, events)?;
        Ok(())
    }

    async fn update_runs(&self, tx: &Transaction<'_>, own: &Ownership) -> Result<()> {
        if self.runs.is_empty() {
            return Ok(());
        }
        let rs = &self.runs;
        let id: Vec<&str> = rs.iter().map(|r| r.id.as_str()).collect();
        let status: Vec<&str> = rs.iter().map(|r| r.status.as_str()).collect();
        let output: Vec<Option<String>> = rs.iter().map(|r| opt_json(&r.output)).collect();
        let error: Vec<Option<String>> = rs.iter().map(|r| opt_json(&r.error)).collect();
        let index: Vec<i64> = rs.iter().map(|r| r.current_step_index).collect();
        let attempt: Vec<i64> = rs.iter().map(|r| r.attempt).collect();
        let pending: Vec<Option<String>> = rs.iter().map(|r| opt_json(&r.pending_action)).collect();
        let updated: Vec<i64> = rs.iter().map(|r| micros(r.updated_at)).collect();
        let started: Vec<Option<i64>> = rs.iter().map(|r| r.started_at.map(micros)).collect();
        let finished: Vec<Option<i64>> = rs.iter().map(|r| r.finished_at.map(micros)).collect();
        let lease = own.lease_us();
        let args: [Arg<'_>; 13] = [
            &id,
            &status,
            &output,
            &error,
            &index,
            &attempt,
            &pending,
            &updated,
            &started,
            &finished,
            &self.epochs,
            &own.me,
            &lease,
        ];
        let stmt = tx
            .prepare_cached(&update_runs_sql())
            .await
            .map_err(pg_err)?;
        let mut kept = std::collections::HashSet::new();
        for row in tx.query(&stmt, &args).await.map_err(pg_err)? {
            let checked: bool = row.try_get(1).map_err(pg_err)?;
            if checked {
                kept.insert(row.try_get::<_, String>(0).map_err(pg_err)?);
            }
        }
        let lost: Vec<String> = (rs.iter().zip(&self.epochs))
            .filter(|(r, e)| e.is_some() && !kept.contains(&r.id))
            .map(|(r, _)| r.id.clone())
            .collect();
        if lost.is_empty() {
            Ok(())
        } else {
            Err(StoreError::Fenced(lost))
        }
    }

    async fn put_steps(&self, tx: &Transaction<'_>) -> Result<()> {
        if self.steps.is_empty() {
            return Ok(());
        }
        let ss = &self.steps;
        let run: Vec<&str> = ss.iter().map(|s| s.run_id.as_str()).collect();
        let step: Vec<&str> = ss.iter().map(|s| s.step_id.as_str()).collect();
        let attempt: Vec<i64> = ss.iter().map(|s| s.attempt).collect();
        let index: Vec<i64> = ss.iter().map(|s| s.step_index).collect();
        let status: Vec<&str> = ss.iter().map(|s| s.status.as_str()).collect();
        let input: Vec<Option<String>> = ss.iter().map(|s| opt_json(&s.input)).collect();
        let output: Vec<Option<String>> = ss.iter().map(|s| opt_json(&s.output)).collect();
        let error: Vec<Option<String>> = ss.iter().map(|s| opt_json(&s.error)).collect();
        let usage: Vec<Option<String>> = ss.iter().map(|s| opt_json(&s.usage)).collect();
        let meta: Vec<Option<String>> = ss.iter().map(|s| opt_json(&s.meta)).collect();
        let started: Vec<Option<i64>> = ss.iter().map(|s| s.started_at.map(micros)).collect();
        let finished: Vec<Option<i64>> = ss.iter().map(|s| s.finished_at.map(micros)).collect();
        let run_attempt: Vec<i64> = ss.iter().map(|s| s.run_attempt).collect();
        let args: [Arg<'_>; 13] = [
            &run,
            &step,
            &attempt,
            &index,
            &status,
            &input,
            &output,
            &error,
            &usage,
            &meta,
            &started,
            &finished,
            &run_attempt,
        ];
        send(tx, &put_steps_sql(), &args).await
    }

    async fn insert_events(&self, tx: &Transaction<'_>) -> Result<()> {
        if self.events.is_empty() {
            return Ok(());
        }
        let es = &self.events;
        let run: Vec<&str> = es.iter().map(|e| e.run_id.as_str()).collect();
        let at: Vec<i64> = es.iter().map(|e| micros(e.at)).collect();
        let kind: Vec<&str> = es.iter().map(|e| e.kind.as_str()).collect();
        let step: Vec<Option<&str>> = es.iter().map(|e| e.step_id.as_deref()).collect();
        let data: Vec<String> = es.iter().map(|e| json_text(&e.data)).collect();
        let args: [Arg<'_>; 5] = [&run, &at, &kind, &step, &data];
        send(tx, INSERT_EVENTS, &args).await
    }
}

async fn send(tx: &Transaction<'_>, sql: &str, args: &[Arg<'_>]) -> Result<()> {
    let stmt = tx.prepare_cached(sql).await.map_err(pg_err)?;
    tx.execute(&stmt, args).await.map_err(pg_err)?;
    Ok(())
}
