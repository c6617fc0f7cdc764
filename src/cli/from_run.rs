//! `stepwise test --from-run FILE…`: recorded runs written out as test files
//! (`testing::from_run`), which `stepwise test` then runs like any other.

use std::path::{Path, PathBuf};

use crate::definition::Definition;
use crate::diagnostics::SourceFile;
use crate::replay::Recorded;

/// The generated test files and the directory that holds them.
pub struct Generated {
    pub dir: PathBuf,
    pub files: Vec<PathBuf>,
}

impl Generated {
    /// Remove the directory when every case passed; otherwise say where the tests are.
    pub fn finish(self, failed: bool) {
        if failed {
            eprintln!(
                "the tests generated from the recorded runs are in {}",
                self.dir.display()
            );
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

fn definition_of(path: &Path, text: &str) -> Result<Definition, String> {
    let doc = crate::yaml::parse(&SourceFile::new(path.display().to_string(), text))
        .map_err(|d| format!("{}: {}", path.display(), d.message))?;
    Ok(Definition::from_value(&doc.value))
}

/// One test file per recorded run, against `definition` or, without it, the definition
/// version the run was pinned to (written beside the test).
pub fn generate(runs: &[PathBuf], definition: Option<&Path>) -> Result<Generated, String> {
    let dir = std::env::temp_dir().join(format!("stepwise-from-run-{}", uuid::Uuid::now_v7()));
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let given = match definition {
        Some(p) => {
            let text = std::fs::read_to_string(p)
                .map_err(|e| format!("cannot read {}: {e}", p.display()))?;
            let abs = std::path::absolute(p)
                .map_err(|e| format!("cannot resolve {}: {e}", p.display()))?;
            Some((abs, definition_of(p, &text)?))
        }
        None => None,
    };
    let mut files = Vec::new();
    for file in runs {
        let text = std::fs::read_to_string(file)
            .map_err(|e| format!("cannot read {}: {e}", file.display()))?;
        let doc: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| format!("{}: not a run export (JSON): {e}", file.display()))?;
        let run = Recorded::from_export(&doc).map_err(|e| format!("{}: {e}", file.display()))?;
        let (workflow, def) = match &given {
            Some((path, def)) => (path.clone(), def.clone()),
            None => {
                let source = run.source.as_deref().ok_or_else(|| {
                    format!(
                        "{}: the export holds no definition; pass --definition FILE",
                        file.display()
                    )
                })?;
                let path = dir.join(format!("{}.yaml", run.id));
                std::fs::write(&path, source)
                    .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
                let def = definition_of(&path, source)?;
                (path, def)
            }
        };
        let test =
            crate::testing::from_run::test_document(&run, &def, &workflow.display().to_string());
        let path = dir.join(format!("{}.test.yaml", run.id));
        let text = serde_json::to_string_pretty(&test).map_err(|e| e.to_string())?;
        std::fs::write(&path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        files.push(path);
    }
    Ok(Generated { dir, files })
}
