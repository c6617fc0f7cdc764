//! Reading test files and the workflows they test: the workflow named by `workflow:`
//! (relative to the test file) and, for `workflow` steps, the child workflows beside it.

use std::path::{Path, PathBuf};

use serde_json::Value;

use super::lint::{check_against, check_structure};
use super::model::{TestFile, is_test_file};
use crate::definition::Definition;
use crate::diagnostics::{Code, Diagnostic, SourceFile};
use crate::validate::Lint;
use crate::yaml::{self, SpanIndex};

/// A workflow file the tests need.
#[derive(Debug, Clone)]
pub struct Workflow {
    pub path: PathBuf,
    pub source: String,
    pub definition: Definition,
}

/// A test file ready to run.
#[derive(Debug)]
pub struct Suite {
    pub file: SourceFile,
    pub path: PathBuf,
    pub doc: Value,
    pub spans: SpanIndex,
    pub test: TestFile,
    pub workflow: Workflow,
    /// Workflows started by `workflow` steps, found beside the workflow under test.
    pub children: Vec<Workflow>,
}

/// A test file read and linted: its diagnostics, and the suite when it has no errors.
#[derive(Debug)]
pub struct Loaded {
    pub file: SourceFile,
    pub diagnostics: Vec<Diagnostic>,
    pub suite: Option<Suite>,
}

/// Whether a file's text is a test file (`tests:` naming a `workflow:`).
pub fn is_test_source(file: &SourceFile) -> bool {
    yaml::parse(file).is_ok_and(|d| is_test_file(&d.value))
}

/// Lint a test file with its workflow (for `stepwise lint`); `None` when it is no test file.
pub fn lint_test_file(file: &SourceFile, path: &Path) -> Option<Lint> {
    let doc = yaml::parse(file).ok()?;
    if !is_test_file(&doc.value) {
        return None;
    }
    let loaded = load_parsed(file.clone(), path, doc.value, doc.spans);
    Some(Lint {
        diagnostics: loaded.diagnostics,
        definition: None,
        trigger: None,
    })
}

/// Read and lint a test file; `Err` when it cannot be read.
pub fn load(path: &Path) -> Result<Loaded, String> {
    let text = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
    let file = SourceFile::new(path.display().to_string(), text);
    Ok(match yaml::parse(&file) {
        Ok(doc) => load_parsed(file, path, doc.value, doc.spans),
        Err(d) => Loaded {
            file,
            diagnostics: vec![d],
            suite: None,
        },
    })
}

fn load_parsed(file: SourceFile, path: &Path, doc: Value, spans: SpanIndex) -> Loaded {
    let mut diagnostics = check_structure(&doc, &spans);
    let dir = path.parent().unwrap_or(Path::new(".")).to_path_buf();
    let mut suite = None;
    if let Some(rel) = doc.get("workflow").and_then(Value::as_str) {
        match read_workflow_as(&dir.join(rel), rel) {
            Ok(workflow) => {
                let children = children_of(&workflow);
                let mut defs = vec![workflow.definition.clone()];
                defs.extend(children.iter().map(|c| c.definition.clone()));
                diagnostics.extend(check_against(&doc, &spans, &defs));
                if let Ok(test) = TestFile::from_value(&doc) {
                    suite = Some((test, workflow, children));
                }
            }
            Err(e) => diagnostics.push(
                Diagnostic::new(Code::TestWorkflow, spans.value("/workflow"), e)
                    .with_label("the workflow under test"),
            ),
        }
    }
    diagnostics.sort_by_key(|d| (d.span.start, d.code.as_str()));
    diagnostics.dedup();
    let ok = !diagnostics.iter().any(Diagnostic::is_error);
    let suite = suite
        .filter(|_| ok)
        .map(|(test, workflow, children)| Suite {
            file: file.clone(),
            path: path.to_path_buf(),
            doc,
            spans,
            test,
            workflow,
            children,
        });
    Loaded {
        file,
        diagnostics,
        suite,
    }
}

/// Read a workflow file that must lint without errors.
pub fn read_workflow(path: &Path) -> Result<Workflow, String> {
    read_workflow_as(path, &path.display().to_string())
}

/// [`read_workflow`], naming the file as `shown` in errors (as the test file wrote it).
fn read_workflow_as(path: &Path, shown: &str) -> Result<Workflow, String> {
    let source = std::fs::read_to_string(path).map_err(|e| {
        let why = if e.kind() == std::io::ErrorKind::NotFound {
            "no such file (the path is relative to the test file)".to_string()
        } else {
            e.to_string()
        };
        format!("cannot read the workflow `{shown}`: {why}")
    })?;
    let file = SourceFile::new(path.display().to_string(), source.as_str());
    let l = crate::validate::lint(&file);
    match l.definition {
        Some(definition) => Ok(Workflow {
            path: path.to_path_buf(),
            source,
            definition,
        }),
        None => Err(format!(
            "the workflow `{shown}` has {} lint error(s); run `stepwise lint` on it",
            l.errors()
        )),
    }
}

/// The workflows `workflow` steps and agent tools start, looked up by id beside `root`
/// (recursively).
pub fn children_of(root: &Workflow) -> Vec<Workflow> {
    let dir = root.path.parent().unwrap_or(Path::new(".")).to_path_buf();
    let mut found: Vec<Workflow> = Vec::new();
    let mut queue = child_ids(&root.definition);
    let mut siblings: Option<Vec<PathBuf>> = None;
    while let Some(id) = queue.pop() {
        if id == root.definition.id || found.iter().any(|w| w.definition.id == id) {
            continue;
        }
        let direct = dir.join(format!("{id}.yaml"));
        let candidates = if direct.is_file() {
            vec![direct]
        } else {
            siblings.get_or_insert_with(|| yaml_files(&dir)).clone()
        };
        for p in candidates {
            if let Ok(w) = read_workflow(&p)
                && w.definition.id == id
            {
                queue.extend(child_ids(&w.definition));
                found.push(w);
                break;
            }
        }
    }
    found
}

/// The workflows `def` starts: `workflow` steps with a literal id, and agent tools.
fn child_ids(def: &Definition) -> Vec<String> {
    crate::validate::tools::started_by(def)
        .into_iter()
        .map(|(_, id, _)| id)
        .collect()
}

fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| {
                    p.extension().is_some_and(|e| e == "yaml" || e == "yml")
                        && !p.to_string_lossy().ends_with(".test.yaml")
                })
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}
