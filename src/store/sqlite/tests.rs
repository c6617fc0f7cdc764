//! Tests of the SQLite store.

use super::*;
use crate::store::DEFAULT_WORKSPACE;

fn store() -> (tempfile::TempDir, SqliteStore) {
    let dir = tempfile::tempdir().unwrap();
    let s = SqliteStore::open(&dir.path().join("t.db"), Synchronous::Full).unwrap();
    (dir, s)
}

#[test]
fn migrations_apply_once_and_reopen() {
    let (dir, s) = store();
    drop(s);
    let s = SqliteStore::open(&dir.path().join("t.db"), Synchronous::Normal).unwrap();
    assert!(s.list_definitions(DEFAULT_WORKSPACE).unwrap().is_empty());
}

#[test]
fn definitions_keep_every_version() {
    let (_d, s) = store();
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
