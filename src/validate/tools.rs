//! Agent tools: each names a workflow lint can find, once per step, and a workflow that
//! cannot suspend (a tool runs inline: the model waits for its result); file tools
//! (`files:`) need a workflow with a workspace.
//!
//! What a tool names lives in other files or in the store, so these checks need a
//! [`Catalog`] of workflows. The caller fills it (`stepwise lint`: the workflows in the
//! directories it checks; applying a definition: the workspace's stored versions); lint
//! itself reads nothing. Without a catalog only the checks within the file run.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use serde_json::Value;

use crate::definition::{AgentTool, Definition, FILE_TOOLS, FileAccess, StepKind};
use crate::diagnostics::{Code, Diagnostic, did_you_mean};
use crate::yaml::{SpanIndex, pointer_push};

/// Workflows agent tools may name.
#[derive(Debug, Clone, Default)]
pub struct Catalog {
    entries: BTreeMap<String, Entry>,
    /// Further ids that exist, for did-you-mean only.
    names: BTreeSet<String>,
    /// Where lint looked, for messages: "beside this file", "in this workspace".
    place: String,
}

#[derive(Debug, Clone)]
enum Entry {
    /// A file: it stands for whatever version it will become.
    File(Box<Definition>),
    /// Stored versions: the latest number and the versions loaded.
    Stored {
        latest: u32,
        versions: BTreeMap<u32, Definition>,
    },
}

/// What a tool's workflow id (and version) finds.
#[derive(Debug)]
pub enum Lookup<'a> {
    Found(&'a Definition),
    /// The workflow exists, but not in this version.
    NoVersion {
        latest: u32,
    },
    Unknown,
}

impl Catalog {
    /// An empty catalog; `place` says where its workflows come from, for messages.
    pub fn new(place: impl Into<String>) -> Catalog {
        Catalog {
            place: place.into(),
            ..Catalog::default()
        }
    }

    /// A workflow file (the first one with an id wins).
    pub fn add_file(&mut self, def: Definition) {
        if !def.id.is_empty() && !self.entries.contains_key(&def.id) {
            self.entries
                .insert(def.id.clone(), Entry::File(Box::new(def)));
        }
    }

    /// A stored workflow whose latest version is `latest` (its versions are added apart).
    pub fn add_stored(&mut self, id: &str, latest: u32) {
        self.entries
            .entry(id.to_string())
            .or_insert_with(|| Entry::Stored {
                latest,
                versions: BTreeMap::new(),
            });
    }

    /// A stored version of a workflow added with [`Catalog::add_stored`].
    pub fn add_version(&mut self, id: &str, version: u32, def: Definition) {
        if let Some(Entry::Stored { versions, .. }) = self.entries.get_mut(id) {
            versions.insert(version, def);
        }
    }

    /// An id that exists but was not loaded (suggested for misspelt ones).
    pub fn add_name(&mut self, id: &str) {
        self.names.insert(id.to_string());
    }

    pub fn lookup(&self, id: &str, version: Option<u32>) -> Lookup<'_> {
        match (self.entries.get(id), version) {
            (None, _) => Lookup::Unknown,
            (Some(Entry::File(d)), _) => Lookup::Found(d),
            (Some(Entry::Stored { latest, versions }), v) => {
                match versions.get(&v.unwrap_or(*latest)) {
                    Some(d) => Lookup::Found(d),
                    None => Lookup::NoVersion { latest: *latest },
                }
            }
        }
    }

    fn ids(&self) -> impl Iterator<Item = &str> {
        self.entries
            .keys()
            .chain(self.names.iter())
            .map(String::as_str)
    }
}

/// Whether any agent step of `def` has tools.
pub fn has_tools(def: &Definition) -> bool {
    def.steps
        .iter()
        .any(|s| matches!(&s.kind, StepKind::Agent(a) if !a.tools.is_empty()))
}

/// The workflows a definition may start while it runs (literal `workflow` action ids and
/// agent tools), with the step that starts each and the version it pins.
pub fn started_by(def: &Definition) -> Vec<(&str, String, Option<u32>)> {
    let mut out = Vec::new();
    for step in &def.steps {
        match &step.kind {
            StepKind::Action(a) if a.uses == "workflow" => {
                if let Some(id) = a
                    .with
                    .get("definition")
                    .and_then(Value::as_str)
                    .filter(|d| !d.contains("{{"))
                {
                    out.push((step.id.as_str(), id.to_string(), None));
                }
            }
            StepKind::Agent(a) => {
                for t in &a.tools {
                    match t {
                        AgentTool::Workflow(w) => {
                            out.push((step.id.as_str(), w.workflow.clone(), w.version));
                        }
                    }
                }
            }
            _ => {}
        }
    }
    out
}

/// `items` ordered so that the workflows each one starts (tools, `workflow` steps) come
/// before it when they are among `items`: the order to apply them in, since applying
/// checks an agent's tools against what is stored. Otherwise the given order; in a cycle,
/// the given order from where it starts.
pub fn dependency_order<T>(items: Vec<T>, def: impl Fn(&T) -> Option<&Definition>) -> Vec<T> {
    let mut left: Vec<(T, String, Vec<String>)> = items
        .into_iter()
        .map(|item| {
            let (id, needs) = def(&item).map_or_else(Default::default, |d| {
                let needs = started_by(d).into_iter().map(|(_, id, _)| id).collect();
                (d.id.clone(), needs)
            });
            (item, id, needs)
        })
        .collect();
    let mut out = Vec::with_capacity(left.len());
    while !left.is_empty() {
        let waits = |needs: &[String], own: &str| {
            needs
                .iter()
                .any(|n| n != own && left.iter().any(|(_, id, _)| id == n))
        };
        let next = left
            .iter()
            .position(|(_, id, needs)| !waits(needs, id))
            .unwrap_or(0);
        out.push(left.remove(next).0);
    }
    out
}

/// Check every agent step's `tools`. `catalog: None` checks only what the file shows.
pub fn check(
    def: &Definition,
    spans: &SpanIndex,
    catalog: Option<&Catalog>,
    out: &mut Vec<Diagnostic>,
) {
    for step in &def.steps {
        let StepKind::Agent(a) = &step.kind else {
            continue;
        };
        if a.files.is_some_and(|f| f != FileAccess::None) && !def.workspace {
            out.push(
                Diagnostic::new(
                    Code::FilesNeedWorkspace,
                    spans.value(&step.field("files")),
                    format!(
                        "step `{}` asks for file tools, but this workflow has no workspace",
                        step.id
                    ),
                )
                .with_label("needs a workspace")
                .with_help(
                    "add `workspace: true` at the top level of the workflow: each run then gets a directory the file tools work in",
                ),
            );
        }
        let mut seen = HashSet::new();
        for (j, tool) in a.tools.iter().enumerate() {
            let entry = pointer_push(&step.field("tools"), &j.to_string());
            match tool {
                // The schema check already says that this names a file tool.
                AgentTool::Workflow(w) if FILE_TOOLS.contains(&w.workflow.as_str()) => {}
                AgentTool::Workflow(w) => {
                    // `tools: [x]` has no `workflow` node: the span falls back to the entry.
                    let at = spans.value(&pointer_push(&entry, "workflow"));
                    if !seen.insert(tool.name()) {
                        out.push(
                            Diagnostic::new(
                                Code::DuplicateTool,
                                at,
                                format!("step `{}` lists the tool `{}` twice", step.id, w.workflow),
                            )
                            .with_label("already listed")
                            .with_help("the model calls tools by name: list each workflow once"),
                        );
                        continue;
                    }
                    let Some(catalog) = catalog else { continue };
                    let found = if w.workflow == def.id {
                        // A workflow may call itself; this file is its newest version.
                        Lookup::Found(def)
                    } else {
                        catalog.lookup(&w.workflow, w.version)
                    };
                    match found {
                        Lookup::Unknown => out.push(
                            Diagnostic::new(
                                Code::UnknownTool,
                                at,
                                format!(
                                    "no workflow `{}` {} to use as a tool",
                                    w.workflow, catalog.place
                                ),
                            )
                            .with_label("unknown workflow")
                            .with_help_opt(did_you_mean(&w.workflow, catalog.ids())),
                        ),
                        Lookup::NoVersion { latest } => out.push(
                            Diagnostic::new(
                                Code::UnknownTool,
                                at,
                                format!(
                                    "workflow `{}` has no version {}",
                                    w.workflow,
                                    w.version.unwrap_or_default()
                                ),
                            )
                            .with_label("no such version")
                            .with_help(format!("its latest version is {latest}")),
                        ),
                        Lookup::Found(target) => {
                            if let Some(why) = suspends(target, def, catalog) {
                                out.push(
                                    Diagnostic::new(
                                        Code::ToolCanSuspend,
                                        at,
                                        format!(
                                            "`{}` cannot be a tool: {why}",
                                            w.workflow
                                        ),
                                    )
                                    .with_label("can suspend")
                                    .with_help(
                                        "a tool runs inline while the model waits for its result, so it may not \
                                         wait for a person, a signal or a timer: move that step out of the \
                                         workflow, or start the workflow from a `workflow` step instead",
                                    ),
                                );
                            }
                        }
                    }
                }
            }
        }
    }
}

/// Why running `target` could suspend (an approval, wait or external event in it or in a
/// workflow it starts, transitively), or `None`. `current` is the file being linted.
fn suspends(target: &Definition, current: &Definition, catalog: &Catalog) -> Option<String> {
    let mut visited = HashSet::new();
    suspends_in(target, current, catalog, &mut visited)
}

fn suspends_in<'a>(
    def: &'a Definition,
    current: &'a Definition,
    catalog: &'a Catalog,
    visited: &mut HashSet<&'a str>,
) -> Option<String> {
    if !visited.insert(def.id.as_str()) {
        return None;
    }
    for step in &def.steps {
        let what = match step.kind {
            StepKind::Approval(_) => "an approval",
            StepKind::Wait(_) => "a `wait`",
            StepKind::ExternalEvent(_) => "an `external_event`",
            _ => continue,
        };
        return Some(format!(
            "its step `{}` is {what}, which suspends the run",
            step.id
        ));
    }
    for (step_id, id, version) in started_by(def) {
        let child = if id == current.id {
            Some(current)
        } else {
            match catalog.lookup(&id, version) {
                Lookup::Found(d) => Some(d),
                _ => None,
            }
        };
        if let Some(child) = child
            && let Some(why) = suspends_in(child, current, catalog, visited)
        {
            return Some(format!("its step `{step_id}` starts `{id}`, and {why}"));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diagnostics::SourceFile;

    fn def(yaml: &str) -> Definition {
        let doc = crate::yaml::parse(&SourceFile::new("x.yaml", yaml)).unwrap();
        Definition::from_value(&doc.value)
    }

    fn messages(yaml: &str, catalog: &Catalog) -> Vec<String> {
        let d = def(yaml);
        let mut out = Vec::new();
        check(&d, &SpanIndex::default(), Some(catalog), &mut out);
        out.iter()
            .map(|d| format!("{}: {}", d.code.as_str(), d.message))
            .collect()
    }

    const AGENT: &str =
        "id: support\nsteps:\n  - id: help\n    type: agent\n    prompt: hi\n    tools: [refund]\n";

    #[test]
    fn a_tool_that_starts_a_suspending_workflow_is_named_with_the_chain() {
        let mut c = Catalog::new("beside this file");
        c.add_file(def(
            "id: refund\nsteps:\n  - id: pay\n    type: action\n    uses: workflow\n    with: {definition: notify}\n",
        ));
        c.add_file(def(
            "id: notify\nsteps:\n  - id: confirm\n    type: approval\n    message: ok?\n    options: [yes]\n",
        ));
        assert_eq!(
            messages(AGENT, &c),
            [
                "stepwise::agent::tool_can_suspend: `refund` cannot be a tool: its step `pay` starts `notify`, and its step `confirm` is an approval, which suspends the run"
            ]
        );
    }

    #[test]
    fn cycles_between_workflows_end() {
        let mut c = Catalog::new("beside this file");
        c.add_file(def(
            "id: refund\nsteps:\n  - id: again\n    type: action\n    uses: workflow\n    with: {definition: support}\n",
        ));
        assert!(messages(AGENT, &c).is_empty());
    }

    #[test]
    fn stored_versions_are_checked() {
        let mut c = Catalog::new("in this workspace");
        c.add_stored("refund", 2);
        c.add_version(
            "refund",
            2,
            def("id: refund\nsteps:\n  - id: a\n    type: wait\n    duration: 1s\n"),
        );
        c.add_name("refunds-v2");
        let pinned = AGENT.replace("[refund]", "[{workflow: refund, version: 1}]");
        assert_eq!(
            messages(&pinned, &c),
            ["stepwise::agent::unknown_tool: workflow `refund` has no version 1"]
        );
        assert_eq!(
            messages(AGENT, &c),
            [
                "stepwise::agent::tool_can_suspend: `refund` cannot be a tool: its step `a` is a `wait`, which suspends the run"
            ]
        );
        assert_eq!(
            messages(&AGENT.replace("[refund]", "[refunds-v3]"), &c),
            [
                "stepwise::agent::unknown_tool: no workflow `refunds-v3` in this workspace to use as a tool"
            ]
        );
    }
}
