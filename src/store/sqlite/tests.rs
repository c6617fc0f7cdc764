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

#[test]
fn ui_sessions_expire_and_end_with_their_key() {
    let (_d, s) = store();
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
