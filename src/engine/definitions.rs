//! Definitions on the engine's side: linting and storing a version, and the cache of
//! compiled versions that runs are started and resumed from.

use std::sync::Arc;

use super::{Compiled, DefinitionChange, Engine, EngineError, Rejected, Result, blocking};
use crate::diagnostics::SourceFile;
use crate::store::DefinitionRecord;
use crate::validate::LintOptions;

impl Engine {
    /// Lint and store a definition; the same text again returns the stored version
    /// (`false`: nothing was created).
    pub async fn apply_definition(
        &self,
        workspace_id: &str,
        name: &str,
        source: &str,
    ) -> Result<std::result::Result<(DefinitionRecord, bool), Rejected>> {
        let file = SourceFile::new(name, source);
        let allow_scripts = !self.refuses_scripts();
        let options = LintOptions {
            allow_scripts,
            catalog: None,
        };
        let mut plan = match self.inner.config.plans.load_with(&file, &options) {
            Ok(p) => p,
            Err(diagnostics) => return Ok(Err(Rejected { file, diagnostics })),
        };
        if crate::validate::tools::has_tools(&plan.definition) {
            // Agent tools are checked against the workflows they name, as stored now.
            let catalog = self.tool_catalog(workspace_id, &plan.definition).await?;
            let options = LintOptions {
                allow_scripts,
                catalog: Some(&catalog),
            };
            plan = match self.inner.config.plans.load_with(&file, &options) {
                Ok(p) => p,
                Err(diagnostics) => return Ok(Err(Rejected { file, diagnostics })),
            };
        }
        let def = &plan.definition;
        let store = self.inner.store.clone();
        let (ws, slug, label, src, now) = (
            workspace_id.to_string(),
            def.id.clone(),
            def.version.clone(),
            source.to_string(),
            self.inner.clock.now(),
        );
        let (rec, created) =
            blocking(move || store.put_definition(&ws, &slug, label.as_deref(), &src, now))
                .await??;
        let compiled = self.cached(rec.clone(), || Ok(plan))?;
        self.inner.cache.set_latest(compiled);
        self.inner.buffers.forget(workspace_id);
        if created {
            let _ = self.inner.definitions.send(DefinitionChange {
                workspace_id: workspace_id.to_string(),
                slug: rec.slug.clone(),
            });
        }
        Ok(Ok((rec, created)))
    }

    /// Whether definitions with script steps are refused, and runs of them: scripts are
    /// not allowed, and no interceptor (`stepwise test`) decides step by step instead.
    pub fn refuses_scripts(&self) -> bool {
        !self.inner.config.scripts.allowed && self.inner.config.intercept.is_none()
    }

    /// The compiled form of a definition version, from the cache or the store.
    pub async fn compiled(&self, workspace_id: &str, id: &str) -> Result<Arc<Compiled>> {
        if id.starts_with(crate::model::DEFINITION_PREFIX)
            && let Some(c) = self.inner.cache.get(id)
            && c.record.workspace_id == workspace_id
        {
            return Ok(c);
        }
        if let Some(c) = self.inner.cache.latest(workspace_id, id) {
            return Ok(c);
        }
        let store = self.inner.store.clone();
        let (ws, key) = (workspace_id.to_string(), id.to_string());
        let rec = blocking(move || store.definition(&ws, &key))
            .await??
            .ok_or_else(|| {
                EngineError::NotFound(format!("workflow definition `{id}` not found"))
            })?;
        let compiled = self.compiled_record(rec)?;
        if !id.starts_with(crate::model::DEFINITION_PREFIX) {
            self.inner.cache.set_latest(compiled.clone());
        }
        Ok(compiled)
    }

    /// A version already compiled in this process, if it belongs to `workspace_id`.
    pub(crate) fn compiled_cached(
        &self,
        workspace_id: &str,
        version_id: &str,
    ) -> Option<Arc<Compiled>> {
        self.inner
            .cache
            .get(version_id)
            .filter(|c| c.record.workspace_id == workspace_id)
    }

    pub(crate) fn compiled_record(&self, rec: DefinitionRecord) -> Result<Arc<Compiled>> {
        let file = SourceFile::new(format!("{}.yaml", rec.slug), rec.source.as_str());
        let version_id = rec.version_id.clone();
        self.cached(rec, || {
            self.inner.config.plans.load(&file).map_err(|d| {
                EngineError::Internal(format!(
                    "stored definition {version_id} no longer lints: {}",
                    d.first().map_or("", |d| d.message.as_str())
                ))
            })
        })
    }

    /// The cached compiled version, or one made from `plan()` and cached.
    fn cached(
        &self,
        rec: DefinitionRecord,
        plan: impl FnOnce() -> Result<crate::compile::Plan>,
    ) -> Result<Arc<Compiled>> {
        if let Some(c) = self.inner.cache.get(&rec.version_id) {
            return Ok(c);
        }
        let c = Arc::new(Compiled::new(rec, plan()?));
        self.inner.cache.insert(c.clone());
        Ok(c)
    }
}
