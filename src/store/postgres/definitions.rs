//! Storing a definition version: a version per distinct source of a slug, numbered in
//! order even when two processes apply versions of one slug at once.

use jiff::Timestamp;
use sha2::{Digest, Sha256};

use super::rows::{self, DEFINITION_COLUMNS};
use super::{PgStore, micros, pg_err, ts};
use crate::model::{DEFINITION_PREFIX, new_id};
use crate::store::{DefinitionRecord, Result};

impl PgStore {
    pub(super) fn store_definition(
        &self,
        workspace_id: &str,
        slug: &str,
        label: Option<&str>,
        source: &str,
        now: Timestamp,
    ) -> Result<(DefinitionRecord, bool)> {
        let hash = format!("{:x}", Sha256::digest(source.as_bytes()));
        let mut client = self.client()?;
        self.block(async {
            let tx = client.transaction().await.map_err(pg_err)?;
            // Two processes applying versions of one slug at once take turns.
            tx.execute(
                "SELECT pg_advisory_xact_lock(hashtext($1 || '/' || $2))",
                &[&workspace_id, &slug],
            )
            .await
            .map_err(pg_err)?;
            let latest = tx
                .query_opt(
                    &format!(
                        "SELECT {DEFINITION_COLUMNS} FROM definitions WHERE workspace_id = $1 AND slug = $2 \
                         ORDER BY version DESC LIMIT 1"
                    ),
                    &[&workspace_id, &slug],
                )
                .await
                .map_err(pg_err)?
                .as_ref()
                .map(rows::definition)
                .transpose()?;
            if let Some(latest) = &latest
                && latest.hash == hash
            {
                return Ok((latest.clone(), false));
            }
            let rec = DefinitionRecord {
                version_id: new_id(DEFINITION_PREFIX),
                workspace_id: workspace_id.to_string(),
                slug: slug.to_string(),
                version: latest.map_or(1, |l| l.version + 1),
                label: label.map(str::to_string),
                hash: hash.clone(),
                source: source.to_string(),
                created_at: ts(micros(now)),
            };
            tx.execute(
                &format!("INSERT INTO definitions ({DEFINITION_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"),
                &[
                    &rec.version_id,
                    &rec.workspace_id,
                    &rec.slug,
                    &rec.version,
                    &rec.label,
                    &rec.hash,
                    &rec.source,
                    &micros(rec.created_at),
                ],
            )
            .await
            .map_err(pg_err)?;
            tx.commit().await.map_err(pg_err)?;
            Ok((rec, true))
        })
    }
}
