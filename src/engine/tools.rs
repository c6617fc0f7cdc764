//! The workspace's workflows as agent tools see them: the catalog a definition's tools are
//! linted against when it is applied.

use std::collections::HashSet;

use super::{Engine, Result, blocking};
use crate::definition::Definition;
use crate::validate::Catalog;
use crate::validate::tools::started_by;

impl Engine {
    /// The stored workflows `def` can reach through agent tools and `workflow` steps
    /// (the versions they pin, else the latest), and every workflow id for suggestions.
    pub(super) async fn tool_catalog(
        &self,
        workspace_id: &str,
        def: &Definition,
    ) -> Result<Catalog> {
        let mut catalog = Catalog::new("in this workspace");
        let store = self.inner.store.clone();
        let ws = workspace_id.to_string();
        for rec in blocking(move || store.list_definitions(&ws)).await?? {
            catalog.add_name(&rec.slug);
        }
        let mut queue: Vec<(String, Option<u32>)> = started_by(def)
            .into_iter()
            .map(|(_, id, v)| (id, v))
            .collect();
        let mut seen = HashSet::new();
        while let Some((id, version)) = queue.pop() {
            if id == def.id || !seen.insert((id.clone(), version)) {
                continue;
            }
            let store = self.inner.store.clone();
            let (ws, slug) = (workspace_id.to_string(), id.clone());
            let versions = blocking(move || store.definition_versions(&ws, &slug)).await??;
            let Some(latest) = versions.last() else {
                continue;
            };
            let number = |v: i64| u32::try_from(v).unwrap_or(u32::MAX);
            catalog.add_stored(&id, number(latest.version));
            let want = version.map_or(latest.version, i64::from);
            let Some(rec) = versions.into_iter().find(|r| r.version == want) else {
                continue;
            };
            // A stored version that no longer lints cannot be checked; running it fails.
            let Ok(compiled) = self.compiled_record(rec) else {
                continue;
            };
            let found = compiled.plan.definition.clone();
            queue.extend(started_by(&found).into_iter().map(|(_, id, v)| (id, v)));
            catalog.add_version(&id, number(want), found);
        }
        Ok(catalog)
    }
}
