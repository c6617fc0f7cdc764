//! Run listings and selections: the API's exactly counted pages, History's bounded ones
//! (as `sqlite/query.rs`: the same indexes, counts bounded, the text search windowed), and
//! the selections of bulk operations.

use jiff::Timestamp;
use tokio_postgres::types::ToSql;

use super::rows::{RUN_COLUMNS, run};
use super::{PgStore, micros, pg_err, ts};
use crate::model::DEFINITION_PREFIX;
use crate::store::{
    HISTORY_COUNT_BOUND, HISTORY_SEARCH_WINDOW, HistoryFilter, HistoryPage, Result, RunQuery,
    RunRecord, RunSelection,
};

/// Arguments of a statement built at run time.
#[derive(Default)]
pub(super) struct Args(Vec<Box<dyn ToSql + Sync + Send>>);

impl Args {
    /// Add an argument; its placeholder (`$n`).
    pub(super) fn push(&mut self, v: impl ToSql + Sync + Send + 'static) -> String {
        self.0.push(Box::new(v));
        format!("${}", self.0.len())
    }

    pub(super) fn refs(&self) -> Vec<&(dyn ToSql + Sync)> {
        self.0
            .iter()
            .map(|b| b.as_ref() as &(dyn ToSql + Sync))
            .collect()
    }
}

fn int(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// `workspace_id = $1 AND …` (all but the text search).
fn run_filter(q: &RunQuery, f: &HistoryFilter, args: &mut Args) -> String {
    let mut filter = format!("workspace_id = {}", args.push(q.workspace_id.clone()));
    if let Some(s) = q.status {
        filter.push_str(&format!(
            " AND status = {}",
            args.push(s.as_str().to_string())
        ));
    }
    if let Some(d) = &q.definition {
        let column = if d.starts_with(DEFINITION_PREFIX) {
            "definition_id"
        } else {
            "definition_slug"
        };
        filter.push_str(&format!(" AND {column} = {}", args.push(d.clone())));
    }
    if let Some(from) = q.from {
        filter.push_str(&format!(" AND created_at >= {}", args.push(micros(from))));
    }
    if let Some(to) = q.to {
        filter.push_str(&format!(" AND created_at < {}", args.push(micros(to))));
    }
    if let Some(kind) = &f.trigger_kind {
        filter.push_str(&format!(
            " AND (trigger::jsonb ->> 'kind') = {}",
            args.push(kind.clone())
        ));
    }
    filter
}

fn order(f: &HistoryFilter) -> &'static str {
    if f.oldest_first {
        "created_at ASC, id ASC"
    } else {
        "created_at DESC, id DESC"
    }
}

impl PgStore {
    fn page_rows(
        &self,
        filter: &str,
        mut args: Args,
        order: &str,
        size: u64,
        offset: u64,
    ) -> Result<Vec<RunRecord>> {
        let l = args.push(int(size));
        let o = args.push(int(offset));
        self.rows(
            &format!("SELECT {RUN_COLUMNS} FROM runs WHERE {filter} ORDER BY {order} LIMIT {l} OFFSET {o}"),
            &args.refs(),
            run,
        )
    }

    /// One page of runs and exactly how many match (the API's list).
    pub(super) fn page(&self, q: &RunQuery) -> Result<(Vec<RunRecord>, u64)> {
        let f = HistoryFilter::default();
        let mut args = Args::default();
        let filter = run_filter(q, &f, &mut args);
        let size = q.page_size.clamp(1, 1000);
        let offset = q.page.saturating_sub(1).saturating_mul(size);
        let total = self.count(
            &format!("SELECT COUNT(*) FROM runs WHERE {filter}"),
            &args.refs(),
        )?;
        let runs = self.page_rows(&filter, args, order(&f), size, offset)?;
        Ok((runs, total))
    }

    /// One page of History: counted up to a bound, searched within a window.
    pub(super) fn history_page(&self, q: &RunQuery, f: &HistoryFilter) -> Result<HistoryPage> {
        let mut args = Args::default();
        let filter = run_filter(q, f, &mut args);
        let size = q.page_size.clamp(1, 1000);
        let offset = q.page.saturating_sub(1).saturating_mul(size);
        if let Some(text) = f.search.as_deref().filter(|t| !t.is_empty()) {
            return self.searched(&filter, args, order(f), text, offset, size);
        }
        let bound = HISTORY_COUNT_BOUND.max(offset.saturating_add(size)) + 1;
        let counted = {
            let mut count_args = Args::default();
            let count_filter = run_filter(q, f, &mut count_args);
            let b = count_args.push(int(bound));
            self.count(
                &format!(
                    "SELECT COUNT(*) FROM (SELECT 1 FROM runs WHERE {count_filter} LIMIT {b}) c"
                ),
                &count_args.refs(),
            )?
        };
        let runs = self.page_rows(&filter, args, order(f), size, offset)?;
        Ok(HistoryPage {
            runs,
            total: counted.min(bound - 1),
            more: counted >= bound,
            searched: None,
        })
    }

    fn searched(
        &self,
        filter: &str,
        mut args: Args,
        order: &str,
        text: &str,
        offset: u64,
        size: u64,
    ) -> Result<HistoryPage> {
        let escaped = text
            .replace('\\', "\\\\")
            .replace('%', "\\%")
            .replace('_', "\\_");
        let like = args.push(format!("%{escaped}%"));
        let window = args.push(int(HISTORY_SEARCH_WINDOW));
        let seen = self.rows(
            &format!(
                "SELECT id, (input ILIKE {like} OR COALESCE(output, '') ILIKE {like}) \
                 FROM runs WHERE {filter} ORDER BY {order} LIMIT {window}"
            ),
            &args.refs(),
            |r| {
                Ok((
                    r.try_get::<_, String>(0).map_err(pg_err)?,
                    r.try_get::<_, bool>(1).map_err(pg_err)?,
                ))
            },
        )?;
        let read = seen.len() as u64;
        let hits: Vec<String> = seen
            .into_iter()
            .filter(|(_, hit)| *hit)
            .map(|(id, _)| id)
            .collect();
        let from = usize::try_from(offset)
            .unwrap_or(usize::MAX)
            .min(hits.len());
        let to = from
            .saturating_add(usize::try_from(size).unwrap_or(usize::MAX))
            .min(hits.len());
        let wanted = hits[from..to].to_vec();
        let mut runs = if wanted.is_empty() {
            Vec::new()
        } else {
            self.rows(
                &format!("SELECT {RUN_COLUMNS} FROM runs WHERE id = ANY($1)"),
                &[&wanted],
                run,
            )?
        };
        runs.sort_by_key(|r| wanted.iter().position(|w| *w == r.id));
        Ok(HistoryPage {
            runs,
            total: hits.len() as u64,
            more: false,
            searched: (read >= HISTORY_SEARCH_WINDOW).then_some(read),
        })
    }
}

/// `WHERE` text of a bulk operation's selection.
fn selection(s: &RunSelection, args: &mut Args) -> String {
    let statuses: Vec<String> = s
        .statuses
        .iter()
        .map(|st| st.as_str().to_string())
        .collect();
    let mut filter = format!(
        "workspace_id = {} AND status = ANY({})",
        args.push(s.workspace_id.clone()),
        args.push(statuses)
    );
    if let Some(d) = &s.definition {
        let column = if d.starts_with(DEFINITION_PREFIX) {
            "definition_id"
        } else {
            "definition_slug"
        };
        filter.push_str(&format!(" AND {column} = {}", args.push(d.clone())));
    }
    if let Some(from) = s.from {
        filter.push_str(&format!(" AND created_at >= {}", args.push(micros(from))));
    }
    if let Some(to) = s.to {
        filter.push_str(&format!(" AND created_at < {}", args.push(micros(to))));
    }
    filter
}

impl PgStore {
    pub(super) fn count_selected(&self, s: &RunSelection) -> Result<u64> {
        if s.statuses.is_empty() {
            return Ok(0);
        }
        let mut args = Args::default();
        let filter = selection(s, &mut args);
        self.count(
            &format!("SELECT COUNT(*) FROM runs WHERE {filter}"),
            &args.refs(),
        )
    }

    pub(super) fn select(
        &self,
        s: &RunSelection,
        after: Option<&(Timestamp, String)>,
        limit: usize,
    ) -> Result<Vec<(Timestamp, String)>> {
        if s.statuses.is_empty() {
            return Ok(Vec::new());
        }
        let mut args = Args::default();
        let mut filter = selection(s, &mut args);
        if let Some((at, id)) = after {
            let a = args.push(micros(*at));
            let i = args.push(id.clone());
            filter.push_str(&format!(
                " AND (created_at > {a} OR (created_at = {a} AND id > {i}))"
            ));
        }
        let l = args.push(super::limit(limit));
        self.rows(
            &format!(
                "SELECT created_at, id FROM runs WHERE {filter} ORDER BY created_at, id LIMIT {l}"
            ),
            &args.refs(),
            |r| {
                Ok((
                    ts(r.try_get(0).map_err(pg_err)?),
                    r.try_get(1).map_err(pg_err)?,
                ))
            },
        )
    }
}
