//! Statements outside a batch: reads, and the small writes that are one statement each.

use std::collections::HashMap;

use tokio_postgres::Row;
use tokio_postgres::types::ToSql;

use super::rows::{self, RUN_COLUMNS, STEP_COLUMNS};
use super::{PgStore, pg_err};
use crate::store::{Result, RunRecord, StepRecord};

pub(super) type Arg<'a> = &'a (dyn ToSql + Sync);

impl PgStore {
    /// Every row, converted.
    pub(super) fn rows<T>(
        &self,
        sql: &str,
        args: &[Arg<'_>],
        f: impl Fn(&Row) -> Result<T>,
    ) -> Result<Vec<T>> {
        let client = self.client()?;
        let rows = self.block(async {
            let stmt = client.prepare_cached(sql).await?;
            client.query(&stmt, args).await
        });
        rows.map_err(pg_err)?.iter().map(f).collect()
    }

    /// The first row, if any, converted.
    pub(super) fn row<T>(
        &self,
        sql: &str,
        args: &[Arg<'_>],
        f: impl Fn(&Row) -> Result<T>,
    ) -> Result<Option<T>> {
        let client = self.client()?;
        let row = self.block(async {
            let stmt = client.prepare_cached(sql).await?;
            client.query_opt(&stmt, args).await
        });
        row.map_err(pg_err)?.as_ref().map(f).transpose()
    }

    /// One statement in its own transaction; how many rows it changed.
    pub(super) fn exec(&self, sql: &str, args: &[Arg<'_>]) -> Result<u64> {
        let client = self.client()?;
        let n = self.block(async {
            let stmt = client.prepare_cached(sql).await?;
            client.execute(&stmt, args).await
        });
        n.map_err(pg_err)
    }

    /// A count (`SELECT COUNT(*) …`).
    pub(super) fn count(&self, sql: &str, args: &[Arg<'_>]) -> Result<u64> {
        let n = self.row(sql, args, |r| r.try_get::<_, i64>(0).map_err(pg_err))?;
        Ok(n.map_or(0, |n| u64::try_from(n).unwrap_or(0)))
    }

    /// Runs and their steps: two statements pipelined on one connection, one round trip
    /// for any number of runs (loading a run cost three before).
    pub(super) fn load_runs(&self, ids: &[String]) -> Result<Vec<(RunRecord, Vec<StepRecord>)>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let run_sql = format!("SELECT {RUN_COLUMNS} FROM runs WHERE id = ANY($1)");
        let step_sql = format!(
            "SELECT {STEP_COLUMNS} FROM step_executions WHERE run_id = ANY($1) ORDER BY run_id, step_index, attempt"
        );
        let client = self.client()?;
        let (runs, steps) = self
            .block(async {
                let (r, s) = futures_util::try_join!(
                    client.prepare_cached(&run_sql),
                    client.prepare_cached(&step_sql)
                )?;
                let args: [Arg<'_>; 1] = [&ids];
                futures_util::try_join!(client.query(&r, &args), client.query(&s, &args))
            })
            .map_err(pg_err)?;
        let mut by_run: HashMap<String, Vec<StepRecord>> = HashMap::new();
        for row in &steps {
            let step = rows::step(row)?;
            by_run.entry(step.run_id.clone()).or_default().push(step);
        }
        runs.iter()
            .map(|row| {
                let run = rows::run(row)?;
                let steps = by_run.remove(&run.id).unwrap_or_default();
                Ok((run, steps))
            })
            .collect()
    }
}
