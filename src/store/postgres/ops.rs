//! The `Store` trait on Postgres, statement by statement.

use jiff::Timestamp;
use serde_json::Value;

use super::rows::{
    self, ALERT_COLUMNS, API_KEY_COLUMNS, BUFFERED_COLUMNS, DEFINITION_COLUMNS, HOOK_COLUMNS,
    RUN_COLUMNS, STEP_COLUMNS,
};
use super::{PgStore, apply, grouped, json_text, limit, micros, pg_err, schema, ts};
use crate::metrics::StoredGauges;
use crate::model::{DEFINITION_PREFIX, RunStatus};
use crate::store::{
    AlertRecord, ApiKeyInfo, ApiKeyRecord, BufferedSignal, BulkRecord, DefinitionRecord,
    EventRecord, HistoryFilter, HistoryPage, HookRecord, Result, RunQuery, RunRecord, RunSelection,
    SignalDelivery, SignalRecord, StepRecord, Store, StoreError, TimerKind, TimerRecord, UiSession,
    Write,
};

impl Store for PgStore {
    fn commit(&self, writes: &[Write]) -> Result<()> {
        if writes.is_empty() {
            return Ok(());
        }
        let mut held = self.held(writes)?;
        let mut client = self.client()?;
        let done = self.block(async {
            let tx = client.transaction().await.map_err(pg_err)?;
            let groups = grouped::Groups::of(writes, &mut held);
            self.fence(&tx, held.into_iter().collect()).await?;
            apply::apply_all(&tx, writes, &groups, &self.own).await?;
            tx.commit().await.map_err(pg_err)
        });
        if let Err(StoreError::Fenced(lost)) = &done {
            for id in lost {
                self.own.forget(id);
            }
        }
        done?;
        self.note_created(writes);
        self.notify_inbox(writes);
        Ok(())
    }

    fn holds(&self, id: &str) -> Result<bool> {
        self.holds_run(id)
    }

    fn claim_trigger(&self, workspace_id: &str, name: &str) -> Result<bool> {
        self.hold_trigger(workspace_id, name)
    }

    fn inbox_open(&self, n: usize) -> Result<Vec<crate::store::InboxRecord>> {
        self.inbox_rows(n)
    }

    fn inbox_answers(&self, ids: &[String]) -> Result<Vec<(String, String)>> {
        self.take_answers(ids)
    }

    fn sweep_inbox(&self, before: Timestamp) -> Result<u64> {
        self.sweep_answers(before)
    }

    fn inbox_wake(&self) -> Option<std::sync::Arc<tokio::sync::Notify>> {
        Some(self.inbox_listener())
    }

    fn shared(&self) -> bool {
        true
    }

    fn claim_run(&self, id: &str) -> Result<bool> {
        self.claim(id)
    }

    fn claim_orphans(
        &self,
        statuses: &[RunStatus],
        n: usize,
        mine_too: bool,
    ) -> Result<Vec<String>> {
        self.claim_expired(statuses, n, mine_too)
    }

    fn forget_run(&self, id: &str) {
        self.own.let_go(id);
    }

    fn release_all(&self) -> Result<u64> {
        PgStore::release_all(self)
    }

    fn probe(&self) -> Result<()> {
        self.exec(
            "INSERT INTO probe (id, at) VALUES (1, $1) ON CONFLICT (id) DO UPDATE SET at = EXCLUDED.at",
            &[&micros(Timestamp::now())],
        )
        .map(|_| ())
    }

    fn put_definition(
        &self,
        workspace_id: &str,
        slug: &str,
        label: Option<&str>,
        source: &str,
        now: Timestamp,
    ) -> Result<(DefinitionRecord, bool)> {
        self.store_definition(workspace_id, slug, label, source, now)
    }

    fn definition(&self, workspace_id: &str, id: &str) -> Result<Option<DefinitionRecord>> {
        if id.starts_with(DEFINITION_PREFIX) {
            self.row(
                &format!("SELECT {DEFINITION_COLUMNS} FROM definitions WHERE workspace_id = $1 AND version_id = $2"),
                &[&workspace_id, &id],
                rows::definition,
            )
        } else {
            self.row(
                &format!(
                    "SELECT {DEFINITION_COLUMNS} FROM definitions WHERE workspace_id = $1 AND slug = $2 \
                     ORDER BY version DESC LIMIT 1"
                ),
                &[&workspace_id, &id],
                rows::definition,
            )
        }
    }

    fn definition_versions(&self, workspace_id: &str, slug: &str) -> Result<Vec<DefinitionRecord>> {
        self.rows(
            &format!(
                "SELECT {DEFINITION_COLUMNS} FROM definitions WHERE workspace_id = $1 AND slug = $2 ORDER BY version"
            ),
            &[&workspace_id, &slug],
            rows::definition,
        )
    }

    fn list_definitions(&self, workspace_id: &str) -> Result<Vec<DefinitionRecord>> {
        self.rows(
            &format!(
                "SELECT DISTINCT ON (slug) {DEFINITION_COLUMNS} FROM definitions WHERE workspace_id = $1 \
                 ORDER BY slug, version DESC"
            ),
            &[&workspace_id],
            rows::definition,
        )
    }

    fn run(&self, id: &str) -> Result<Option<RunRecord>> {
        self.row(
            &format!("SELECT {RUN_COLUMNS} FROM runs WHERE id = $1"),
            &[&id],
            rows::run,
        )
    }

    fn run_by_key(&self, workspace_id: &str, key: &str) -> Result<Option<RunRecord>> {
        self.row(
            &format!(
                "SELECT {RUN_COLUMNS} FROM runs WHERE workspace_id = $1 AND idempotency_key = $2"
            ),
            &[&workspace_id, &key],
            rows::run,
        )
    }

    fn steps(&self, run_id: &str) -> Result<Vec<StepRecord>> {
        self.rows(
            &format!("SELECT {STEP_COLUMNS} FROM step_executions WHERE run_id = $1 ORDER BY step_index, attempt"),
            &[&run_id],
            rows::step,
        )
    }

    fn runs_with_steps(&self, ids: &[String]) -> Result<Vec<(RunRecord, Vec<StepRecord>)>> {
        self.load_runs(ids)
    }

    fn events(&self, run_id: &str) -> Result<Vec<EventRecord>> {
        self.rows(
            "SELECT run_id, at, kind, step_id, data FROM events WHERE run_id = $1 ORDER BY id",
            &[&run_id],
            rows::event,
        )
    }

    fn signals(&self, run_id: &str) -> Result<Vec<SignalRecord>> {
        self.rows(
            "SELECT run_id, step_id, signal_type, payload, received_at, via FROM signals WHERE run_id = $1 ORDER BY id",
            &[&run_id],
            rows::signal,
        )
    }

    fn list_runs(&self, q: &RunQuery) -> Result<(Vec<RunRecord>, u64)> {
        self.page(q)
    }

    fn run_ids_with_status(&self, statuses: &[RunStatus]) -> Result<Vec<String>> {
        let list: Vec<String> = statuses.iter().map(|s| s.as_str().to_string()).collect();
        self.rows(
            "SELECT id FROM runs WHERE status = ANY($1) ORDER BY created_at",
            &[&list],
            |r| r.try_get(0).map_err(pg_err),
        )
    }

    fn child_runs(&self, parent_run_id: &str) -> Result<Vec<RunRecord>> {
        self.rows(
            &format!("SELECT {RUN_COLUMNS} FROM runs WHERE parent_run_id = $1 ORDER BY created_at"),
            &[&parent_run_id],
            rows::run,
        )
    }

    fn timers_due(&self, before: Timestamp, n: usize) -> Result<Vec<TimerRecord>> {
        self.rows(
            "SELECT run_id, step_id, kind, due_at FROM timers WHERE due_at <= $1 ORDER BY due_at LIMIT $2",
            &[&micros(before), &limit(n)],
            rows::timer,
        )
    }

    fn hook(&self, token: &str) -> Result<Option<HookRecord>> {
        self.row(
            &format!("SELECT {HOOK_COLUMNS} FROM hooks WHERE token = $1"),
            &[&token],
            rows::hook,
        )
    }

    fn timer(&self, run_id: &str, step_id: &str, kind: TimerKind) -> Result<Option<TimerRecord>> {
        self.row(
            "SELECT run_id, step_id, kind, due_at FROM timers WHERE run_id = $1 AND step_id = $2 AND kind = $3",
            &[&run_id, &step_id, &kind.as_str()],
            rows::timer,
        )
    }

    fn trigger_state(&self, workspace_id: &str, name: &str) -> Result<Option<Value>> {
        let text = self.row(
            "SELECT state FROM trigger_state WHERE workspace_id = $1 AND name = $2",
            &[&workspace_id, &name],
            |r| r.try_get::<_, String>(0).map_err(pg_err),
        )?;
        text.map(|t| {
            serde_json::from_str(&t).map_err(|e| StoreError::Corrupt(format!("trigger state: {e}")))
        })
        .transpose()
    }

    fn put_trigger_state(&self, workspace_id: &str, name: &str, state: &Value) -> Result<()> {
        self.exec(
            "INSERT INTO trigger_state (workspace_id, name, state) VALUES ($1, $2, $3) \
             ON CONFLICT (workspace_id, name) DO UPDATE SET state = EXCLUDED.state",
            &[&workspace_id, &name, &json_text(state)],
        )
        .map(|_| ())
    }

    fn delete_finished_before(&self, before: Timestamp, n: usize) -> Result<usize> {
        let mut client = self.client()?;
        self.block(async {
            let tx = client.transaction().await.map_err(pg_err)?;
            let ids: Vec<String> = tx
                .query(
                    "SELECT id FROM runs WHERE finished_at IS NOT NULL AND finished_at < $1 \
                     AND status IN ('COMPLETED', 'FAILED', 'CANCELLED') LIMIT $2",
                    &[&micros(before), &limit(n)],
                )
                .await
                .map_err(pg_err)?
                .iter()
                .map(|r| r.try_get(0).map_err(pg_err))
                .collect::<Result<_>>()?;
            for table in [
                "step_executions",
                "events",
                "signals",
                "hooks",
                "timers",
                "alerts",
            ] {
                tx.execute(
                    &format!("DELETE FROM {table} WHERE run_id = ANY($1)"),
                    &[&ids],
                )
                .await
                .map_err(pg_err)?;
            }
            tx.execute("DELETE FROM runs WHERE id = ANY($1)", &[&ids])
                .await
                .map_err(pg_err)?;
            tx.execute(
                "DELETE FROM buffered_signals WHERE expires_at < $1",
                &[&micros(before)],
            )
            .await
            .map_err(pg_err)?;
            tx.commit().await.map_err(pg_err)?;
            Ok(ids.len())
        })
    }

    fn hooks_for_run(&self, run_id: &str) -> Result<Vec<HookRecord>> {
        self.rows(
            &format!("SELECT {HOOK_COLUMNS} FROM hooks WHERE run_id = $1 ORDER BY created_at"),
            &[&run_id],
            rows::hook,
        )
    }

    fn put_named_api_key(&self, key: &ApiKeyRecord, name: Option<&str>) -> Result<()> {
        self.exec(
            "INSERT INTO api_keys (hash, workspace_id, prefix, created_at, name) VALUES ($1, $2, $3, $4, $5)",
            &[&key.hash, &key.workspace_id, &key.prefix, &micros(key.created_at), &name],
        )
        .map(|_| ())
    }

    fn api_key_info(&self, hash: &str) -> Result<Option<ApiKeyInfo>> {
        self.row(
            &format!("SELECT {API_KEY_COLUMNS} FROM api_keys WHERE hash = $1"),
            &[&hash],
            rows::api_key,
        )
    }

    fn api_keys(&self) -> Result<Vec<ApiKeyInfo>> {
        self.rows(
            &format!("SELECT {API_KEY_COLUMNS} FROM api_keys ORDER BY created_at, prefix"),
            &[],
            rows::api_key,
        )
    }

    fn revoke_api_key(&self, hash: &str, at: Timestamp) -> Result<bool> {
        self.exec(
            "UPDATE api_keys SET revoked_at = $2 WHERE hash = $1 AND revoked_at IS NULL",
            &[&hash, &micros(at)],
        )
        .map(|n| n > 0)
    }

    fn gauges(&self, now: Timestamp) -> Result<StoredGauges> {
        let waiting_by_kind = self.rows(
            "SELECT COALESCE(pending_action::jsonb ->> 'type', 'unknown'), COUNT(*) \
             FROM runs WHERE status IN ('WAITING', 'PAUSED') GROUP BY 1 ORDER BY 1",
            &[],
            |r| {
                Ok((
                    r.try_get::<_, String>(0).map_err(pg_err)?,
                    u64::try_from(r.try_get::<_, i64>(1).map_err(pg_err)?).unwrap_or(0),
                ))
            },
        )?;
        let timers_due = self.count(
            "SELECT COUNT(*) FROM timers WHERE due_at <= $1",
            &[&micros(now)],
        )?;
        Ok(StoredGauges {
            waiting_by_kind,
            timers_due,
        })
    }

    fn ready(&self) -> Result<()> {
        if schema::current(self)? {
            Ok(())
        } else {
            Err(StoreError::Database(
                "the database schema is not the one this build expects (migrations pending or newer)".into(),
            ))
        }
    }

    fn count_runs(&self, s: &RunSelection) -> Result<u64> {
        self.count_selected(s)
    }

    fn select_runs(
        &self,
        s: &RunSelection,
        after: Option<&(Timestamp, String)>,
        n: usize,
    ) -> Result<Vec<(Timestamp, String)>> {
        self.select(s, after, n)
    }

    fn put_bulk(&self, op: &BulkRecord) -> Result<()> {
        self.exec(
            "INSERT INTO bulk_operations (id, workspace_id, finished, state) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (id) DO UPDATE SET workspace_id = EXCLUDED.workspace_id, finished = EXCLUDED.finished, \
             state = EXCLUDED.state",
            &[&op.id, &op.workspace_id, &op.finished, &op.state.to_string()],
        )
        .map(|_| ())
    }

    fn bulk(&self, id: &str) -> Result<Option<BulkRecord>> {
        self.row(
            "SELECT id, workspace_id, finished, state FROM bulk_operations WHERE id = $1",
            &[&id],
            rows::bulk,
        )
    }

    fn unfinished_bulks(&self) -> Result<Vec<BulkRecord>> {
        self.rows(
            "SELECT id, workspace_id, finished, state FROM bulk_operations WHERE NOT finished ORDER BY id",
            &[],
            rows::bulk,
        )
    }

    fn hooks_by_correlation(
        &self,
        workspace_id: &str,
        signal_type: &str,
        correlation: &str,
    ) -> Result<Vec<HookRecord>> {
        self.rows(
            &format!(
                "SELECT {HOOK_COLUMNS} FROM hooks WHERE workspace_id = $1 AND signal_type = $2 \
                 AND correlation = $3 AND status = 'pending' AND correlation IS NOT NULL ORDER BY created_at"
            ),
            &[&workspace_id, &signal_type, &correlation],
            rows::hook,
        )
    }

    fn run_starts_since(
        &self,
        workspace_id: &str,
        slug: &str,
        since: Timestamp,
    ) -> Result<Vec<Timestamp>> {
        self.rows(
            "SELECT started_at FROM runs WHERE workspace_id = $1 AND definition_slug = $2 \
             AND started_at >= $3 ORDER BY started_at",
            &[&workspace_id, &slug, &micros(since)],
            |r| Ok(ts(r.try_get(0).map_err(pg_err)?)),
        )
    }

    fn buffered_signals(
        &self,
        workspace_id: &str,
        signal_type: &str,
        correlation: &str,
        now: Timestamp,
    ) -> Result<Vec<BufferedSignal>> {
        self.rows(
            &format!(
                "SELECT {BUFFERED_COLUMNS} FROM buffered_signals WHERE workspace_id = $1 AND signal_type = $2 \
                 AND correlation = $3 AND consumed_at IS NULL AND expires_at > $4 ORDER BY received_at"
            ),
            &[&workspace_id, &signal_type, &correlation, &micros(now)],
            rows::buffered,
        )
    }

    fn signal_delivery(
        &self,
        workspace_id: &str,
        key: &str,
        now: Timestamp,
    ) -> Result<Option<SignalDelivery>> {
        self.row(
            "SELECT workspace_id, key, outcome, received_at, expires_at FROM signal_deliveries \
             WHERE workspace_id = $1 AND key = $2 AND expires_at > $3",
            &[&workspace_id, &key, &micros(now)],
            |r| {
                let outcome: String = r.try_get(2).map_err(pg_err)?;
                Ok(SignalDelivery {
                    workspace_id: r.try_get(0).map_err(pg_err)?,
                    key: r.try_get(1).map_err(pg_err)?,
                    outcome: serde_json::from_str(&outcome)
                        .map_err(|e| StoreError::Corrupt(format!("signal delivery: {e}")))?,
                    received_at: ts(r.try_get(3).map_err(pg_err)?),
                    expires_at: ts(r.try_get(4).map_err(pg_err)?),
                })
            },
        )
    }

    fn alerts_due(&self, now: Timestamp, n: usize) -> Result<Vec<AlertRecord>> {
        self.rows(
            &format!(
                "SELECT {ALERT_COLUMNS} FROM alerts WHERE status = 'pending' AND next_at <= $1 ORDER BY next_at LIMIT $2"
            ),
            &[&micros(now), &limit(n)],
            rows::alert,
        )
    }

    fn alert(&self, id: &str) -> Result<Option<AlertRecord>> {
        self.row(
            &format!("SELECT {ALERT_COLUMNS} FROM alerts WHERE id = $1"),
            &[&id],
            rows::alert,
        )
    }

    fn claim_alert(
        &self,
        id: &str,
        now: Timestamp,
        until: Timestamp,
    ) -> Result<Option<AlertRecord>> {
        self.row(
            &format!(
                "UPDATE alerts SET attempts = attempts + 1, next_at = $3 \
                 WHERE id = $1 AND status = 'pending' AND next_at <= $2 RETURNING {ALERT_COLUMNS}"
            ),
            &[&id, &micros(now), &micros(until)],
            rows::alert,
        )
    }

    fn history(&self, q: &RunQuery, f: &HistoryFilter) -> Result<HistoryPage> {
        self.history_page(q, f)
    }

    fn put_ui_session(&self, s: &UiSession) -> Result<()> {
        self.exec(
            "DELETE FROM ui_sessions WHERE expires_at <= $1",
            &[&micros(s.created_at)],
        )?;
        self.exec(
            "INSERT INTO ui_sessions (hash, key_hash, workspace_id, actor, created_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5, $6)",
            &[
                &s.hash,
                &s.key_hash,
                &s.workspace_id,
                &s.actor,
                &micros(s.created_at),
                &micros(s.expires_at),
            ],
        )
        .map(|_| ())
    }

    fn ui_session(&self, hash: &str, now: Timestamp) -> Result<Option<UiSession>> {
        self.row(
            "SELECT s.hash, s.key_hash, s.workspace_id, s.actor, s.created_at, s.expires_at \
             FROM ui_sessions s JOIN api_keys k ON k.hash = s.key_hash \
             WHERE s.hash = $1 AND s.expires_at > $2 AND k.revoked_at IS NULL",
            &[&hash, &micros(now)],
            rows::session,
        )
    }

    fn delete_ui_session(&self, hash: &str) -> Result<()> {
        self.exec("DELETE FROM ui_sessions WHERE hash = $1", &[&hash])
            .map(|_| ())
    }
}
