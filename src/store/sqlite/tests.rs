//! Tests of the stores: each runs on SQLite, and on Postgres when
//! `STEPWISE_TEST_POSTGRES` is set (`store::test_backends`).

use std::sync::Arc;

use super::*;
use crate::store::DEFAULT_WORKSPACE;
use crate::store::test_backends::{self, Schemas};

fn store() -> (tempfile::TempDir, SqliteStore) {
    let dir = tempfile::tempdir().unwrap();
    let s = SqliteStore::open(&dir.path().join("t.db"), Synchronous::Full).unwrap();
    (dir, s)
}

/// Run `f` on a fresh store of every backend.
fn each(f: impl Fn(&Arc<dyn Store>, &std::path::Path)) {
    for backend in test_backends::backends() {
        let _schemas = Schemas;
        test_backends::set(backend);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let s = test_backends::open(&path, Synchronous::Full).unwrap();
        f(&s, &path);
    }
}

#[test]
fn migrations_apply_once_and_reopen() {
    each(|s, path| {
        let now = Timestamp::now();
        s.put_definition(DEFAULT_WORKSPACE, "x", None, "id: x", now)
            .unwrap();
        let again = test_backends::open(path, Synchronous::Normal).unwrap();
        assert_eq!(again.list_definitions(DEFAULT_WORKSPACE).unwrap().len(), 1);
        again.ready().unwrap();
    });
}

#[test]
fn definitions_keep_every_version() {
    each(|s, _| definitions_keep_every_version_on(s.as_ref()));
}

fn definitions_keep_every_version_on(s: &dyn Store) {
    let now = Timestamp::now();
    let (a, created) = s
        .put_definition(DEFAULT_WORKSPACE, "x", None, "id: x # 1", now)
        .unwrap();
    assert!(created);
    let (again, created) = s
        .put_definition(DEFAULT_WORKSPACE, "x", None, "id: x # 1", now)
        .unwrap();
    assert!(!created);
    assert_eq!(a, again);
    let (b, _) = s
        .put_definition(DEFAULT_WORKSPACE, "x", Some("2"), "id: x # 2", now)
        .unwrap();
    assert_eq!(b.version, 2);
    assert_eq!(
        s.definition(DEFAULT_WORKSPACE, "x")
            .unwrap()
            .unwrap()
            .version_id,
        b.version_id
    );
    assert_eq!(
        s.definition(DEFAULT_WORKSPACE, &a.version_id)
            .unwrap()
            .unwrap()
            .version,
        1
    );
    assert_eq!(
        s.definition_versions(DEFAULT_WORKSPACE, "x").unwrap().len(),
        2
    );
    assert!(s.definition("ws_other", "x").unwrap().is_none());
}

#[test]
fn ui_sessions_expire_and_end_with_their_key() {
    each(|s, _| ui_sessions_on(s.as_ref()));
}

fn ui_sessions_on(s: &dyn Store) {
    // Stored in microseconds.
    let now = Timestamp::from_microsecond(Timestamp::now().as_microsecond()).unwrap();
    let key = super::super::ApiKeyRecord {
        hash: "k1".into(),
        workspace_id: "ws".into(),
        prefix: "stw_k1".into(),
        created_at: now,
    };
    s.put_api_key(&key).unwrap();
    let session = UiSession {
        hash: "s1".into(),
        key_hash: "k1".into(),
        workspace_id: "ws".into(),
        actor: "key:stw_k1 (ui)".into(),
        created_at: now,
        expires_at: now + jiff::SignedDuration::from_secs(60),
    };
    s.put_ui_session(&session).unwrap();
    assert_eq!(s.ui_session("s1", now).unwrap(), Some(session.clone()));
    assert_eq!(
        s.ui_session("s1", session.expires_at).unwrap(),
        None,
        "expired"
    );
    assert_eq!(s.ui_session("nope", now).unwrap(), None);
    s.revoke_api_key("k1", now).unwrap();
    assert_eq!(
        s.ui_session("s1", now).unwrap(),
        None,
        "its key was revoked"
    );
    s.delete_ui_session("s1").unwrap();
}

/// `n` runs a millisecond apart, every fourth started by a webhook, newest last; run `i`
/// has `"n": i` in its input.
fn fill_runs(s: &dyn Store, n: usize) {
    let start = Timestamp::from_second(1_800_000_000).unwrap();
    let writes: Vec<Write> = (0..n)
        .map(|i| {
            let at = start + jiff::SignedDuration::from_millis(i as i64);
            let kind = if i % 4 == 0 { "webhook" } else { "api" };
            Write::insert_run(RunRecord {
                id: format!("wfrun_{i:08}"),
                workspace_id: DEFAULT_WORKSPACE.into(),
                definition_id: "wfdef_x".into(),
                definition_slug: "x".into(),
                status: RunStatus::Completed,
                input: serde_json::json!({"n": format!("<{i}>")}),
                output: None,
                error: None,
                idempotency_key: None,
                current_step_index: 0,
                attempt: 1,
                parent_run_id: None,
                parent_step_id: None,
                trigger: serde_json::json!({"kind": kind}),
                pending_action: None,
                created_at: at,
                updated_at: at,
                started_at: None,
                finished_at: None,
            })
        })
        .collect();
    s.commit(&writes).unwrap();
}

fn history_query(page: u64) -> RunQuery {
    RunQuery {
        workspace_id: DEFAULT_WORKSPACE.into(),
        page,
        page_size: 25,
        ..RunQuery::default()
    }
}

#[test]
fn history_counts_up_to_its_bound_and_searches_a_window() {
    each(|s, _| history_bounds_on(s.as_ref()));
}

fn history_bounds_on(s: &dyn Store) {
    use crate::store::{HISTORY_COUNT_BOUND, HISTORY_SEARCH_WINDOW};
    let n = HISTORY_COUNT_BOUND as usize + 50;
    fill_runs(s, n);
    let trigger = |kind: &str| HistoryFilter {
        trigger_kind: Some(kind.into()),
        ..HistoryFilter::default()
    };
    let search = |text: &str| HistoryFilter {
        search: Some(text.into()),
        ..HistoryFilter::default()
    };

    // More runs than the bound: counted to the bound, said to be more.
    let all = HistoryFilter::default();
    let p = s.history(&history_query(1), &all).unwrap();
    assert_eq!((p.total, p.more), (HISTORY_COUNT_BOUND, true));
    assert_eq!(p.runs[0].id, format!("wfrun_{:08}", n - 1), "newest first");
    // A page past the bound is counted as far as it reaches (here: to the end).
    let last = s
        .history(&history_query(n.div_ceil(25) as u64), &all)
        .unwrap();
    assert_eq!((last.total, last.more), (n as u64, false));
    assert_eq!(last.runs.last().unwrap().id, "wfrun_00000000");
    // Fewer: exact.
    let p = s.history(&history_query(1), &trigger("webhook")).unwrap();
    assert_eq!((p.total, p.more), (n.div_ceil(4) as u64, false));
    assert!(p.runs.iter().all(|r| r.trigger["kind"] == "webhook"));

    // The search reads the newest runs up to its window, and says so.
    let newest = s
        .history(&history_query(1), &search(&format!("<{}>", n - 3)))
        .unwrap();
    assert_eq!(newest.total, 1);
    assert_eq!(newest.runs[0].id, format!("wfrun_{:08}", n - 3));
    assert_eq!(newest.searched, Some(HISTORY_SEARCH_WINDOW));
    let oldest = s.history(&history_query(1), &search("<3>")).unwrap();
    assert_eq!(oldest.total, 0, "run 3 is older than the window");
    // Narrowed by time, the window reaches it.
    let early = RunQuery {
        to: Some(Timestamp::from_second(1_800_000_001).unwrap()),
        ..history_query(1)
    };
    let found = s.history(&early, &search("<3>")).unwrap();
    assert_eq!(found.runs.len(), 1);
    assert_eq!(
        found.searched, None,
        "fewer runs than the window: all were read"
    );
    // `%` and `_` are the text's own.
    assert_eq!(s.history(&early, &search("%")).unwrap().total, 0);
}

#[test]
fn history_filters_read_through_their_indexes() {
    let (_d, s) = store();
    let plan = |filter: &HistoryFilter, status: Option<RunStatus>| -> String {
        let q = RunQuery {
            status,
            ..history_query(1)
        };
        let (where_, args) = super::query::run_filter(&q, filter);
        s.read(|c| {
            let mut stmt = c.prepare(&format!(
                "EXPLAIN QUERY PLAN SELECT id FROM runs WHERE {where_} ORDER BY created_at DESC, id DESC LIMIT 25"
            ))?;
            let rows = stmt
                .query_map(rusqlite::params_from_iter(args.iter()), |r| {
                    r.get::<_, String>(3)
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(rows.join("; "))
        })
        .unwrap()
    };
    let by_kind = plan(
        &HistoryFilter {
            trigger_kind: Some("webhook".into()),
            ..HistoryFilter::default()
        },
        None,
    );
    assert!(by_kind.contains("runs_by_trigger_kind"), "{by_kind}");
    assert!(!by_kind.contains("TEMP B-TREE"), "no sort: {by_kind}");
    let by_status = plan(&HistoryFilter::default(), Some(RunStatus::Failed));
    assert!(by_status.contains("runs_by_status_page"), "{by_status}");
    let all = plan(&HistoryFilter::default(), None);
    assert!(all.contains("runs_by_page"), "{all}");
}
