//! Statements outside a batch: reads, and the small writes that are one statement each.

use tokio_postgres::Row;
use tokio_postgres::types::ToSql;

use super::{PgStore, pg_err};
use crate::store::Result;

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
}
