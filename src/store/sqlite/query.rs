//! Run listings: the WHERE clause of a [`RunQuery`] (shared by the API's list and the web
//! UI's History) and the paged query over it.

use rusqlite::Connection;
use rusqlite::types::Value as Sql;

use super::micros;
use super::rows::{RUN_COLUMNS, run_from_row};
use crate::model::DEFINITION_PREFIX;
use crate::store::{HistoryFilter, RunQuery, RunRecord};

/// `workspace_id = ?1 AND …` and its arguments.
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
    if let Some(text) = f.search.as_deref().filter(|t| !t.is_empty()) {
        // LIKE is case-insensitive for ASCII; the text's own % and _ are escaped.
        let escaped = text
            .replace('\\', "\\\\")
            .replace('%', "\\%")
            .replace('_', "\\_");
        args.push(format!("%{escaped}%").into());
        let n = args.len();
        filter.push_str(&format!(
            " AND (input LIKE ?{n} ESCAPE '\\' OR COALESCE(output, '') LIKE ?{n} ESCAPE '\\')"
        ));
    }
    (filter, args)
}

/// One page of runs and the total that match.
pub(super) fn page(
    c: &Connection,
    q: &RunQuery,
    f: &HistoryFilter,
) -> rusqlite::Result<(Vec<RunRecord>, u64)> {
    let (filter, args) = run_filter(q, f);
    let page_size = q.page_size.clamp(1, 1000);
    let offset = q.page.saturating_sub(1).saturating_mul(page_size);
    let total: i64 = c.query_row(
        &format!("SELECT COUNT(*) FROM runs WHERE {filter}"),
        rusqlite::params_from_iter(args.iter()),
        |r| r.get(0),
    )?;
    let mut page_args = args;
    page_args.push(i64::try_from(page_size).unwrap_or(i64::MAX).into());
    page_args.push(i64::try_from(offset).unwrap_or(i64::MAX).into());
    let n = page_args.len();
    let order = if f.oldest_first {
        "created_at ASC, id ASC"
    } else {
        "created_at DESC, id DESC"
    };
    let mut stmt = c.prepare_cached(&format!(
        "SELECT {RUN_COLUMNS} FROM runs WHERE {filter} ORDER BY {order} LIMIT ?{} OFFSET ?{n}",
        n - 1
    ))?;
    let runs = stmt
        .query_map(rusqlite::params_from_iter(page_args.iter()), run_from_row)?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok((runs, u64::try_from(total).unwrap_or(0)))
}
