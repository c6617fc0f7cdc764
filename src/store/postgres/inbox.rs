//! The inbox: commands for a run that another process holds wait here for that process.
//!
//! The caller's process writes the command in its own commit (`Write::InboxPut`); the
//! process that holds the run (or claims it, when nobody does) applies it and writes the
//! answer in the commit of what the command did (`Write::InboxAnswer`, fenced with the
//! run); the caller takes the answer and deletes the row. A `NOTIFY` sent after such a
//! commit, outside its transaction (inside, it would serialize every commit of the
//! database), wakes the other processes sooner than their next poll.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use jiff::Timestamp;
use tokio::sync::Notify;
use tokio_postgres::{AsyncMessage, NoTls};

use super::owner::NOW_US;
use super::{PgStore, limit, micros, pg_err, ts};
use crate::store::{InboxRecord, Result, Write};

/// The channel every stepwise process listens on; the payload is the schema, so processes
/// on other schemas of the same database ignore it.
const CHANNEL: &str = "stepwise_inbox";

impl PgStore {
    pub(super) fn inbox_rows(&self, n: usize) -> Result<Vec<InboxRecord>> {
        self.rows(
            &format!(
                "SELECT i.id, i.run_id, i.command, i.created_at FROM inbox i \
                 LEFT JOIN runs r ON r.id = i.run_id \
                 WHERE i.answer IS NULL AND (r.id IS NULL OR r.owner IS NULL OR r.owner = $1 \
                   OR r.lease_until < {NOW_US}) \
                 ORDER BY i.created_at, i.id LIMIT $2"
            ),
            &[&self.own.me, &limit(n)],
            |r| {
                Ok(InboxRecord {
                    id: r.try_get(0).map_err(pg_err)?,
                    run_id: r.try_get(1).map_err(pg_err)?,
                    command: r.try_get(2).map_err(pg_err)?,
                    created_at: ts(r.try_get(3).map_err(pg_err)?),
                })
            },
        )
    }

    pub(super) fn take_answers(&self, ids: &[String]) -> Result<Vec<(String, String)>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        self.rows(
            "DELETE FROM inbox WHERE id = ANY($1) AND answer IS NOT NULL RETURNING id, answer",
            &[&ids],
            |r| Ok((r.try_get(0).map_err(pg_err)?, r.try_get(1).map_err(pg_err)?)),
        )
    }

    pub(super) fn sweep_answers(&self, before: Timestamp) -> Result<u64> {
        self.exec(
            "DELETE FROM inbox WHERE answer IS NOT NULL AND answered_at < $1",
            &[&micros(before)],
        )
    }

    /// After a commit that wrote or answered inbox rows: wake the other processes. Best
    /// effort: they poll anyway.
    pub(super) fn notify_inbox(&self, writes: &[Write]) {
        let touched = writes
            .iter()
            .any(|w| matches!(w, Write::InboxPut(_) | Write::InboxAnswer { .. }));
        if !touched {
            return;
        }
        let schema = self.schema.clone().unwrap_or_default();
        if let Err(e) = self.exec("SELECT pg_notify($1, $2)", &[&CHANNEL, &schema]) {
            tracing::debug!("cannot notify the other processes of an inbox change: {e}");
        }
    }
}

/// Listen for inbox changes on a connection of its own (a pooled one would lose the
/// `LISTEN` when recycled), reconnecting after a failure.
pub(super) async fn listen(config: tokio_postgres::Config, schema: String, wake: Arc<Notify>) {
    loop {
        if let Err(e) = listen_once(&config, &schema, &wake).await {
            tracing::debug!("the inbox listener stopped: {e}; reconnecting");
        }
        // Something may have arrived while nobody listened.
        wake.notify_one();
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

async fn listen_once(
    config: &tokio_postgres::Config,
    schema: &str,
    wake: &Notify,
) -> std::result::Result<(), tokio_postgres::Error> {
    let (client, mut conn) = config.connect(NoTls).await?;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let driver = tokio::spawn(async move {
        let mut messages = futures_util::stream::poll_fn(move |cx| conn.poll_message(cx));
        while let Some(m) = messages.next().await {
            match m {
                Ok(AsyncMessage::Notification(n)) => {
                    if tx.send(n.payload().to_string()).is_err() {
                        break;
                    }
                }
                Ok(_) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    });
    client.batch_execute(&format!("LISTEN {CHANNEL}")).await?;
    while let Some(payload) = rx.recv().await {
        if payload == schema {
            wake.notify_one();
        }
    }
    match driver.await {
        Ok(r) => r,
        Err(_) => Ok(()),
    }
}

/// The SQL of the two inbox writes.
pub(super) const PUT_SQL: &str =
    "INSERT INTO inbox (id, run_id, command, created_at) VALUES ($1, $2, $3, $4)";
pub(super) const ANSWER_SQL: &str = "UPDATE inbox SET answer = $2, \
     answered_at = (extract(epoch from clock_timestamp()) * 1000000)::bigint \
     WHERE id = $1 AND answer IS NULL";
