//! Web UI sessions: hashed tokens with an expiry, tied to the API key that started them.

use jiff::Timestamp;
use rusqlite::{Connection, OptionalExtension, params};

use super::{micros, ts};
use crate::store::UiSession;

pub(super) fn put(c: &Connection, s: &UiSession) -> rusqlite::Result<()> {
    c.execute(
        "DELETE FROM ui_sessions WHERE expires_at <= ?1",
        params![micros(s.created_at)],
    )?;
    c.execute(
        "INSERT INTO ui_sessions (hash, key_hash, workspace_id, actor, created_at, expires_at) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![
            s.hash,
            s.key_hash,
            s.workspace_id,
            s.actor,
            micros(s.created_at),
            micros(s.expires_at)
        ],
    )?;
    Ok(())
}

/// A live session: not expired, and its key not revoked (checked on every request, as keys are).
pub(super) fn get(
    c: &Connection,
    hash: &str,
    now: Timestamp,
) -> rusqlite::Result<Option<UiSession>> {
    c.prepare_cached(
        "SELECT s.hash, s.key_hash, s.workspace_id, s.actor, s.created_at, s.expires_at \
         FROM ui_sessions s JOIN api_keys k ON k.hash = s.key_hash \
         WHERE s.hash = ?1 AND s.expires_at > ?2 AND k.revoked_at IS NULL",
    )?
    .query_row(params![hash, micros(now)], |r| {
        Ok(UiSession {
            hash: r.get(0)?,
            key_hash: r.get(1)?,
            workspace_id: r.get(2)?,
            actor: r.get(3)?,
            created_at: ts(r.get(4)?),
            expires_at: ts(r.get(5)?),
        })
    })
    .optional()
}

pub(super) fn delete(c: &Connection, hash: &str) -> rusqlite::Result<()> {
    c.execute("DELETE FROM ui_sessions WHERE hash = ?1", params![hash])
        .map(|_| ())
}
