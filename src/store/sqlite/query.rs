//! Run listings: the WHERE clause of a [`RunQuery`] (shared by the API's list and the web
//! UI's History), the API's exactly counted pages, and History's bounded ones.
//!
//! Every History filter but the text search is answered by an index (`runs_by_page`,
//! `runs_by_status_page`, `runs_by_definition`, `runs_by_trigger_kind`), newest first, so a
//! first page reads a page of rows. Counting is bounded ([`HISTORY_COUNT_BOUND`]); the text
//! search reads at most [`HISTORY_SEARCH_WINDOW`] runs, the newest that match the rest.

use rusqlite::Connection;
use rusqlite::types::Value as Sql;

use super::micros;
use super::rows::{RUN_COLUMNS, run_from_row};
use crate::model::DEFINITION_PREFIX;
use crate::store::{
    HISTORY_COUNT_BOUND, HISTORY_SEARCH_WINDOW, HistoryFilter, HistoryPage, RunQuery, RunRecord,
};

/// `workspace_id = ?1 AND …` and its arguments (all but the text search).
pub(super) fn run_filter(q: &RunQuery, f: &HistoryFilter) -> (String, Vec<Sql>) {
    let mut filter = String::from("workspace_id = ?1");
    let mut args: Vec<Sql> = vec![q.workspace_id.clone().into()];
    if let Some(s) = q.status {
        args.push(s.as_str().to_string().into());
        filter.push_str(&format!(" AND status = ?{}", args.len()));
    }
    if let Some(d) = &q.definition {
        args.push(d.clone().into());
        let column = if d.starts_with(DEFINITION_PREFIX) {
            "definition_id"
        } else {
            "definition_slug"
        };
        filter.push_str(&format!(" AND {column} = ?{}", args.len()));
    }
    if let Some(from) = q.from {
        args.push(micros(from).into());
        filter.push_str(&format!(" AND created_at >= ?{}", args.len()));
    }
    if let Some(to) = q.to {
        args.push(micros(to).into());
        filter.push_str(&format!(" AND created_at < ?{}", args.len()));
    }
    if let Some(kind) = &f.trigger_kind {
        args.push(kind.clone().into());
        filter.push_str(&format!(
            " AND json_extract(trigger, '$.kind') = ?{}",
            args.len()
        ));
    }
    (filter, args)
}

/// One page of runs and exactly how many match (the API's list).
pub(super) fn page(c: &Connection, q: &RunQuery) -> rusqlite::Result<(Vec<RunRecord>, u64)> {
    let f = HistoryFilter::default();
    let (filter, args) = run_filter(q, &f);
    let page_size = q.page_size.clamp(1, 1000);
    let offset = q.page.saturating_sub(1).saturating_mul(page_size);
    let total: i64 = c.query_row(
        &format!("SELECT COUNT(*) FROM runs WHERE {filter}"),
        rusqlite::params_from_iter(args.iter()),
        |r| r.get(0),
    )?;
    let runs = rows(c, &filter, args, order(&f), page_size, offset)?;
    Ok((runs, u64::try_from(total).unwrap_or(0)))
}

/// The runs of one page, in order.
fn rows(
    c: &Connection,
    filter: &str,
    mut args: Vec<Sql>,
    order: &str,
    size: u64,
    offset: u64,
) -> rusqlite::Result<Vec<RunRecord>> {
    args.push(int(size));
    args.push(int(offset));
    let n = args.len();
    let mut stmt = c.prepare_cached(&format!(
        "SELECT {RUN_COLUMNS} FROM runs WHERE {filter} ORDER BY {order} LIMIT ?{} OFFSET ?{n}",
        n - 1
    ))?;
    stmt.query_map(rusqlite::params_from_iter(args.iter()), run_from_row)?
        .collect()
}

fn order(f: &HistoryFilter) -> &'static str {
    if f.oldest_first {
        "created_at ASC, id ASC"
    } else {
        "created_at DESC, id DESC"
    }
}

fn int(n: u64) -> Sql {
    i64::try_from(n).unwrap_or(i64::MAX).into()
}

/// `%text%` for LIKE (case-insensitive for ASCII), the text's own `%` and `_` escaped.
fn like_pattern(text: &str) -> String {
    let escaped = text
        .replace('\\', "\\\\")
        .replace('%', "\\%")
        .replace('_', "\\_");
    format!("%{escaped}%")
}

/// One page of History: counted up to a bound, searched within a window.
pub(super) fn history(
    c: &Connection,
    q: &RunQuery,
    f: &HistoryFilter,
) -> rusqlite::Result<HistoryPage> {
    let (filter, args) = run_filter(q, f);
    let size = q.page_size.clamp(1, 1000);
    let offset = q.page.saturating_sub(1).saturating_mul(size);
    let order = order(f);
    if let Some(text) = f.search.as_deref().filter(|t| !t.is_empty()) {
        return searched(c, &filter, args, order, text, offset, size);
    }
    // Counting stops at the bound, or past the page asked for (paging there read as far).
    let bound = HISTORY_COUNT_BOUND.max(offset.saturating_add(size)) + 1;
    let mut count_args = args.clone();
    count_args.push(int(bound));
    let counted: i64 = c.query_row(
        &format!(
            "SELECT COUNT(*) FROM (SELECT 1 FROM runs WHERE {filter} LIMIT ?{})",
            count_args.len()
        ),
        rusqlite::params_from_iter(count_args.iter()),
        |r| r.get(0),
    )?;
    let counted = u64::try_from(counted).unwrap_or(0);
    let runs = rows(c, &filter, args, order, size, offset)?;
    Ok(HistoryPage {
        runs,
        total: counted.min(bound - 1),
        more: counted >= bound,
        searched: None,
    })
}

/// The text search: the newest [`HISTORY_SEARCH_WINDOW`] runs that pass the other filters
/// are read in order once (through their index), and those whose input or output contains
/// the text are counted and paged.
fn searched(
    c: &Connection,
    filter: &str,
    mut args: Vec<Sql>,
    order: &str,
    text: &str,
    offset: u64,
    size: u64,
) -> rusqlite::Result<HistoryPage> {
    args.push(like_pattern(text).into());
    let like = args.len();
    args.push(int(HISTORY_SEARCH_WINDOW));
    let window = args.len();
    let mut stmt = c.prepare_cached(&format!(
        "SELECT rowid, (input LIKE ?{like} ESCAPE '\\' OR COALESCE(output, '') LIKE ?{like} ESCAPE '\\') \
         FROM runs WHERE {filter} ORDER BY {order} LIMIT ?{window}"
    ))?;
    let mut read = 0u64;
    let mut hits: Vec<i64> = Vec::new();
    let mut rows = stmt.query(rusqlite::params_from_iter(args.iter()))?;
    while let Some(row) = rows.next()? {
        read += 1;
        if row.get::<_, bool>(1)? {
            hits.push(row.get(0)?);
        }
    }
    let from = usize::try_from(offset)
        .unwrap_or(usize::MAX)
        .min(hits.len());
    let to = from
        .saturating_add(usize::try_from(size).unwrap_or(usize::MAX))
        .min(hits.len());
    let wanted = &hits[from..to];
    let mut runs = Vec::with_capacity(wanted.len());
    if !wanted.is_empty() {
        let list = wanted
            .iter()
            .map(i64::to_string)
            .collect::<Vec<_>>()
            .join(",");
        let mut stmt = c.prepare(&format!(
            "SELECT {RUN_COLUMNS}, rowid FROM runs WHERE rowid IN ({list})"
        ))?;
        let mut found: Vec<(i64, RunRecord)> = stmt
            .query_map([], |r| Ok((r.get(19)?, run_from_row(r)?)))?
            .collect::<rusqlite::Result<_>>()?;
        found.sort_by_key(|(rowid, _)| wanted.iter().position(|w| w == rowid));
        runs = found.into_iter().map(|(_, r)| r).collect();
    }
    Ok(HistoryPage {
        runs,
        total: hits.len() as u64,
        more: false,
        searched: (read >= HISTORY_SEARCH_WINDOW).then_some(read),
    })
}
