//! Who runs each run: claims, the fence every commit passes, the heartbeat.
//!
//! A run row carries `owner`, `lease_until` and `epoch`. A process claims a run (bumping
//! the epoch) before loading it: when it creates it, when a command or timer needs it, and
//! when it takes over a run whose owner's lease expired. The store remembers the epoch of
//! every run its process holds; a commit checks, inside its transaction, that each run it
//! touches still has that epoch (and renews their leases): the batch's run updates check
//! their own runs (`grouped`), one statement checks the rest. A run taken over meanwhile
//! makes the whole batch fail with `StoreError::Fenced` and nothing is written. One
//! heartbeat statement per process renews all its leases. Times are the database's clock,
//! so processes on machines whose clocks differ agree on expiry.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use deadpool_postgres::{Pool, Transaction};

use super::{PgStore, limit, pg_err};
use crate::model::RunStatus;
use crate::store::{Result, StoreError, Write};

/// Now on the database's clock, in microseconds (as every stored time).
pub(super) const NOW_US: &str = "(extract(epoch from clock_timestamp()) * 1000000)::bigint";

/// This process's identity and the epochs of the runs it holds.
pub(super) struct Ownership {
    pub me: String,
    pub lease: Duration,
    pub epochs: std::sync::Arc<std::sync::Mutex<HashMap<String, i64>>>,
    /// Runs that left memory waiting or finished, with the epoch they were held at: the
    /// heartbeat task lets go of those still held at it.
    pub released: Released,
}

pub(super) type Released = std::sync::Arc<std::sync::Mutex<Vec<(String, i64)>>>;

impl Ownership {
    pub fn new(lease: Duration) -> Self {
        let host = std::fs::read_to_string("/etc/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_default();
        let me = format!(
            "{}:{}:{}",
            if host.is_empty() { "host" } else { &host },
            std::process::id(),
            &uuid::Uuid::new_v4().simple().to_string()[..8]
        );
        Self {
            me,
            lease,
            epochs: std::sync::Arc::new(std::sync::Mutex::new(HashMap::new())),
            released: Released::default(),
        }
    }

    pub fn lease_us(&self) -> i64 {
        i64::try_from(self.lease.as_micros()).unwrap_or(i64::MAX)
    }

    fn set(&self, id: &str, epoch: i64) {
        if let Ok(mut e) = self.epochs.lock() {
            e.insert(id.to_string(), epoch);
        }
    }

    fn epoch(&self, id: &str) -> Option<i64> {
        self.epochs.lock().ok().and_then(|e| e.get(id).copied())
    }

    pub fn forget(&self, id: &str) -> Option<i64> {
        self.epochs.lock().ok().and_then(|mut e| e.remove(id))
    }

    /// The run left memory needing no process (it waits on rows or finished): let go of it
    /// if it is still held at this epoch. Most are released by the commit that made them
    /// wait; a run claimed by a command that changed nothing (refused) would otherwise stay
    /// held, and refused at every other process, until its lease ran out.
    pub fn let_go(&self, id: &str) {
        if let Some(epoch) = self.forget(id)
            && let Ok(mut r) = self.released.lock()
        {
            r.push((id.to_string(), epoch));
        }
    }
}

/// The run a write belongs to, when it belongs to one.
fn run_of(w: &Write) -> Option<&str> {
    match w {
        Write::InsertRun(r) => Some(&r.id),
        Write::UpdateRun(r) => Some(&r.id),
        Write::PutStep(s) => Some(&s.run_id),
        Write::Event(e) => Some(&e.run_id),
        Write::PutTimer(t) => Some(&t.run_id),
        Write::DeleteTimer { run_id, .. }
        | Write::DeleteRunTimers { run_id }
        | Write::CloseHooks { run_id, .. }
        | Write::ConsumeSignal { run_id, .. } => Some(run_id),
        Write::PutHook(h) => Some(&h.run_id),
        Write::Signal(s) => Some(&s.run_id),
        Write::PutAlert(a) => Some(&a.run_id),
        // A caller's command for a run it does not hold: nothing of that run is written.
        // An answer commits with what its command did, so that fences it (an answer
        // that changed nothing, e.g. a 404, has no run to fence).
        Write::InboxPut(_)
        | Write::InboxAnswer { .. }
        | Write::BufferSignal(_)
        | Write::SignalDelivery(_)
        | Write::UpdateAlert { .. } => None,
    }
}

impl PgStore {
    /// The epochs this process holds for the runs a batch touches (runs it creates aside);
    /// `Fenced` when it touches a run it never claimed.
    pub(super) fn held(&self, writes: &[Write]) -> Result<HashMap<String, i64>> {
        let created: HashSet<&str> = writes
            .iter()
            .filter_map(|w| match w {
                Write::InsertRun(r) => Some(r.id.as_str()),
                _ => None,
            })
            .collect();
        let mut held = HashMap::new();
        let mut unknown: Vec<String> = Vec::new();
        for id in writes.iter().filter_map(run_of) {
            if created.contains(id) || held.contains_key(id) {
                continue;
            }
            match self.own.epoch(id) {
                Some(e) => {
                    held.insert(id.to_string(), e);
                }
                // Never claimed here: writing it could overwrite another process's run.
                None if !unknown.iter().any(|u| u == id) => unknown.push(id.to_string()),
                None => {}
            }
        }
        if !unknown.is_empty() {
            tracing::warn!("a batch wrote runs this process never claimed: {unknown:?}");
            return Err(StoreError::Fenced(unknown));
        }
        Ok(held)
    }

    /// Check the epochs of runs a batch touches and renew their leases, inside the
    /// batch's transaction (runs whose update the batch carries are checked by that
    /// update instead, `grouped`). The runs that lost their epoch are `Fenced`.
    pub(super) async fn fence(&self, tx: &Transaction<'_>, held: Vec<(String, i64)>) -> Result<()> {
        if held.is_empty() {
            return Ok(());
        }
        let (ids, epochs): (Vec<String>, Vec<i64>) = held.into_iter().unzip();
        let stmt = tx
            .prepare_cached(&format!(
                "UPDATE runs r SET owner = $1, lease_until = {NOW_US} + $2 \
                 FROM unnest($3::TEXT[], $4::BIGINT[]) AS f(id, epoch) \
                 WHERE r.id = f.id AND r.epoch = f.epoch RETURNING r.id"
            ))
            .await
            .map_err(pg_err)?;
        let kept: HashSet<String> = tx
            .query(&stmt, &[&self.own.me, &self.own.lease_us(), &ids, &epochs])
            .await
            .map_err(pg_err)?
            .iter()
            .map(|r| r.try_get(0).map_err(pg_err))
            .collect::<Result<_>>()?;
        let lost: Vec<String> = ids.into_iter().filter(|id| !kept.contains(id)).collect();
        if lost.is_empty() {
            Ok(())
        } else {
            Err(StoreError::Fenced(lost))
        }
    }

    /// After a commit: the runs it created are held at epoch 1.
    pub(super) fn note_created(&self, writes: &[Write]) {
        for w in writes {
            if let Write::InsertRun(r) = w {
                self.own.set(&r.id, 1);
            }
        }
    }

    /// Let go of every run this process holds (a graceful stop; runs created by a tool
    /// that does not execute them): other processes claim them at once.
    pub fn release_all(&self) -> Result<u64> {
        let n = self.exec(
            "UPDATE runs SET owner = NULL WHERE owner = $1",
            &[&self.own.me],
        )?;
        self.exec(
            "DELETE FROM trigger_leases WHERE holder = $1",
            &[&self.own.me],
        )?;
        if let Ok(mut e) = self.own.epochs.lock() {
            e.clear();
        }
        Ok(n)
    }

    pub(super) fn holds_run(&self, id: &str) -> Result<bool> {
        let Some(epoch) = self.own.epoch(id) else {
            return Ok(false);
        };
        // Released (waiting, finished) but not claimed since: the copy is still current.
        let row = self.row(
            "SELECT 1 FROM runs WHERE id = $1 AND epoch = $2 AND (owner = $3 OR owner IS NULL)",
            &[&id, &epoch, &self.own.me],
            |_| Ok(()),
        )?;
        Ok(row.is_some())
    }

    /// Hold a trigger for a lease's time: taken when free, expired or already ours.
    pub(super) fn hold_trigger(&self, workspace_id: &str, name: &str) -> Result<bool> {
        let held = self.row(
            &format!(
                "INSERT INTO trigger_leases (workspace_id, name, holder, lease_until) \
                 VALUES ($1, $2, $3, {NOW_US} + $4) \
                 ON CONFLICT (workspace_id, name) DO UPDATE \
                 SET holder = EXCLUDED.holder, lease_until = EXCLUDED.lease_until \
                 WHERE trigger_leases.holder = EXCLUDED.holder OR trigger_leases.lease_until < {NOW_US} \
                 RETURNING 1"
            ),
            &[&workspace_id, &name, &self.own.me, &self.own.lease_us()],
            |_| Ok(()),
        )?;
        Ok(held.is_some())
    }

    pub(super) fn claim(&self, id: &str) -> Result<bool> {
        let claimed = self.row(
            &format!(
                "UPDATE runs SET owner = $1, lease_until = {NOW_US} + $2, epoch = epoch + 1 \
                 WHERE id = $3 AND (owner IS NULL OR owner = $1 OR lease_until < {NOW_US}) RETURNING epoch"
            ),
            &[&self.own.me, &self.own.lease_us(), &id],
            |r| r.try_get::<_, i64>(0).map_err(pg_err),
        )?;
        match claimed {
            Some(epoch) => {
                self.own.set(id, epoch);
                Ok(true)
            }
            // An unknown run is not held by anyone: the caller finds it missing.
            None => Ok(self
                .row("SELECT 1 FROM runs WHERE id = $1", &[&id], |_| Ok(()))?
                .is_none()),
        }
    }

    pub(super) fn claim_expired(
        &self,
        statuses: &[RunStatus],
        n: usize,
        mine_too: bool,
    ) -> Result<Vec<String>> {
        let list: Vec<String> = statuses.iter().map(|s| s.as_str().to_string()).collect();
        let mut rows = self.rows(
            &format!(
                "UPDATE runs SET owner = $1, lease_until = {NOW_US} + $2, epoch = epoch + 1 \
                 WHERE id IN (SELECT id FROM runs WHERE status = ANY($3) \
                   AND (owner IS NULL OR lease_until < {NOW_US} OR ($5 AND owner = $1)) \
                   ORDER BY created_at LIMIT $4 \
                   FOR UPDATE SKIP LOCKED) \
                 RETURNING id, epoch, created_at"
            ),
            &[
                &self.own.me,
                &self.own.lease_us(),
                &list,
                &limit(n),
                &mine_too,
            ],
            |r| {
                Ok((
                    r.try_get::<_, String>(0).map_err(pg_err)?,
                    r.try_get::<_, i64>(1).map_err(pg_err)?,
                    r.try_get::<_, i64>(2).map_err(pg_err)?,
                ))
            },
        )?;
        rows.sort_by_key(|(_, _, created)| *created);
        for (id, epoch, _) in &rows {
            self.own.set(id, *epoch);
        }
        Ok(rows.into_iter().map(|(id, _, _)| id).collect())
    }
}

/// Renew the leases of the runs this process holds in memory, a third of the lease time
/// apart: one statement per process, not one per run. A run it let go of (evicted, or taken
/// over) is not renewed, so it becomes claimable when its lease runs out. A process that
/// stops (SIGSTOP, a long pause) stops renewing, and others take its runs over once the
/// leases expire.
pub(super) async fn heartbeat(
    pool: Pool,
    me: String,
    lease: Duration,
    epochs: std::sync::Arc<std::sync::Mutex<HashMap<String, i64>>>,
    released: Released,
) {
    let lease_us = i64::try_from(lease.as_micros()).unwrap_or(i64::MAX);
    let every = (lease / 3).max(Duration::from_millis(100));
    let mut renewed = tokio::time::Instant::now();
    loop {
        tokio::time::sleep(RELEASE_EVERY.min(every)).await;
        let_go(&pool, &me, &released).await;
        if renewed.elapsed() < every {
            continue;
        }
        renewed = tokio::time::Instant::now();
        let ids: Vec<String> = match epochs.lock() {
            Ok(e) => e.keys().cloned().collect(),
            Err(_) => continue,
        };
        if ids.is_empty() {
            continue;
        }
        let Ok(client) = pool.get().await else {
            continue;
        };
        let sql = format!(
            "UPDATE runs SET lease_until = {NOW_US} + $2 WHERE owner = $1 AND id = ANY($3)"
        );
        if let Err(e) = client.execute(&sql, &[&me, &lease_us, &ids]).await {
            tracing::warn!("cannot renew the leases of this process: {}", pg_err(e));
        }
    }
}

/// How soon a run that left memory waiting is let go of (when its commit did not).
const RELEASE_EVERY: Duration = Duration::from_millis(100);

/// Let go, in one statement, of the runs [`Ownership::let_go`] queued that are still held
/// by this process at the same epoch and need no process (a later claim, here or
/// elsewhere, moved the epoch on and keeps its run).
async fn let_go(pool: &Pool, me: &str, released: &Released) {
    let batch: Vec<(String, i64)> = match released.lock() {
        Ok(mut r) if !r.is_empty() => std::mem::take(&mut *r),
        _ => return,
    };
    let (ids, epochs): (Vec<String>, Vec<i64>) = batch.into_iter().unzip();
    let Ok(client) = pool.get().await else {
        return;
    };
    let sql = "UPDATE runs r SET owner = NULL FROM unnest($2::TEXT[], $3::BIGINT[]) AS f(id, epoch) \
               WHERE r.id = f.id AND r.epoch = f.epoch AND r.owner = $1 \
               AND r.status IN ('COMPLETED', 'FAILED', 'CANCELLED', 'WAITING', 'PAUSED')";
    if let Err(e) = client.execute(sql, &[&me, &ids, &epochs]).await {
        tracing::warn!("cannot let go of waiting runs: {}", pg_err(e));
    }
}
