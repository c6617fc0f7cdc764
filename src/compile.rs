//! A valid definition becomes an immutable [`Plan`]: the petgraph DAG of its steps and a
//! stable topological order, whose positions are the run's `currentStepIndex`.

use std::collections::{BTreeSet, HashMap};

use petgraph::algo::tarjan_scc;
use petgraph::graph::{DiGraph, NodeIndex};

use crate::definition::Definition;

/// The compiled, immutable form of a definition.
#[derive(Debug, Clone)]
pub struct Plan {
    pub definition: Definition,
    /// Node weight: the step's index in `definition.steps`. Edges run dependency → dependent.
    pub graph: DiGraph<usize, ()>,
    /// Step indices in topological order; ties broken by declaration order, so the order is
    /// stable across compilations.
    pub order: Vec<usize>,
    /// For each step index, its position in `order` (its `currentStepIndex`).
    pub position: Vec<usize>,
    /// For each step index, the step indices it directly depends on.
    pub deps: Vec<Vec<usize>>,
    /// Steps nothing depends on, in declaration order.
    pub sinks: Vec<usize>,
}

/// Why a definition could not be compiled (lint reports these with spans first).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, miette::Diagnostic)]
pub enum CompileError {
    #[error("step `{0}` is defined twice")]
    #[diagnostic(code(stepwise::definition::duplicate_step))]
    DuplicateStep(String),
    #[error("step `{step}` needs `{missing}`, which is not a step")]
    #[diagnostic(code(stepwise::definition::unknown_step))]
    UnknownStep { step: String, missing: String },
    #[error("the steps {0} form a cycle")]
    #[diagnostic(code(stepwise::definition::cycle))]
    Cycle(String),
    #[error("a workflow needs at least one step")]
    #[diagnostic(code(stepwise::definition::no_steps))]
    NoSteps,
}

/// Direct dependencies of each step. Names that are not steps are skipped (lint reports them);
/// a step without `needs` depends on the step before it.
pub fn dependencies(def: &Definition) -> Vec<Vec<usize>> {
    let index: HashMap<&str, usize> = def
        .steps
        .iter()
        .enumerate()
        .rev()
        .map(|(i, s)| (s.id.as_str(), i))
        .collect();
    def.steps
        .iter()
        .enumerate()
        .map(|(i, step)| match &step.needs {
            None => i.checked_sub(1).into_iter().collect(),
            Some(names) => {
                let mut seen = BTreeSet::new();
                names
                    .iter()
                    .filter_map(|n| index.get(n.as_str()).copied())
                    .filter(|d| seen.insert(*d))
                    .collect()
            }
        })
        .collect()
}

/// Cycles among the steps, each as a path of step indices starting and ending at one step.
pub fn cycles(deps: &[Vec<usize>]) -> Vec<Vec<usize>> {
    let graph = graph_of(deps);
    let mut out = Vec::new();
    for scc in tarjan_scc(&graph) {
        let members: BTreeSet<usize> = scc.iter().map(|n| graph[*n]).collect();
        let Some(&first) = members.iter().next() else {
            continue;
        };
        let self_loop = deps[first].contains(&first);
        if members.len() == 1 && !self_loop {
            continue;
        }
        out.push(cycle_path(first, deps, &members));
    }
    out.sort();
    out
}

/// Follow dependencies inside one strongly connected component back to `start`.
fn cycle_path(start: usize, deps: &[Vec<usize>], members: &BTreeSet<usize>) -> Vec<usize> {
    // BFS over "is needed by" edges restricted to the component finds the shortest cycle.
    let mut dependents: HashMap<usize, Vec<usize>> = HashMap::new();
    for &m in members {
        for &d in &deps[m] {
            if members.contains(&d) {
                dependents.entry(d).or_default().push(m);
            }
        }
    }
    let mut prev: HashMap<usize, usize> = HashMap::new();
    let mut queue = std::collections::VecDeque::from([start]);
    while let Some(n) = queue.pop_front() {
        for &next in dependents.get(&n).map(Vec::as_slice).unwrap_or(&[]) {
            if next == start {
                let mut path = vec![start];
                let mut cur = n;
                while cur != start {
                    path.push(cur);
                    cur = prev.get(&cur).copied().unwrap_or(start);
                }
                path.push(start);
                let last = path.len() - 1;
                path[1..last].reverse();
                return path;
            }
            if let std::collections::hash_map::Entry::Vacant(e) = prev.entry(next) {
                e.insert(n);
                queue.push_back(next);
            }
        }
    }
    vec![start, start]
}

fn graph_of(deps: &[Vec<usize>]) -> DiGraph<usize, ()> {
    let mut graph = DiGraph::with_capacity(deps.len(), deps.len());
    let nodes: Vec<NodeIndex> = (0..deps.len()).map(|i| graph.add_node(i)).collect();
    for (i, ds) in deps.iter().enumerate() {
        for &d in ds {
            graph.add_edge(nodes[d], nodes[i], ());
        }
    }
    graph
}

/// For each step, every step that is guaranteed to have finished before it starts.
pub fn ancestors(deps: &[Vec<usize>]) -> Vec<Vec<bool>> {
    let n = deps.len();
    let mut out = vec![vec![false; n]; n];
    for (i, row) in out.iter_mut().enumerate() {
        let mut stack: Vec<usize> = deps[i].clone();
        while let Some(d) = stack.pop() {
            if !row[d] {
                row[d] = true;
                stack.extend(deps[d].iter().copied());
            }
        }
    }
    out
}

/// Topological order with ties broken by declaration order (Kahn with a min-heap).
fn stable_order(deps: &[Vec<usize>]) -> Option<Vec<usize>> {
    use std::cmp::Reverse;
    use std::collections::BinaryHeap;
    let n = deps.len();
    let mut indegree: Vec<usize> = deps.iter().map(Vec::len).collect();
    let mut dependents = vec![Vec::new(); n];
    for (i, ds) in deps.iter().enumerate() {
        for &d in ds {
            dependents[d].push(i);
        }
    }
    let mut ready: BinaryHeap<Reverse<usize>> =
        (0..n).filter(|&i| indegree[i] == 0).map(Reverse).collect();
    let mut order = Vec::with_capacity(n);
    while let Some(Reverse(i)) = ready.pop() {
        order.push(i);
        for &m in &dependents[i] {
            indegree[m] -= 1;
            if indegree[m] == 0 {
                ready.push(Reverse(m));
            }
        }
    }
    (order.len() == n).then_some(order)
}

/// Compile a definition. Lint first: this refuses what lint reports as errors, without spans.
pub fn compile(definition: Definition) -> Result<Plan, CompileError> {
    if definition.steps.is_empty() {
        return Err(CompileError::NoSteps);
    }
    let mut seen = BTreeSet::new();
    for s in &definition.steps {
        if !seen.insert(s.id.as_str()) {
            return Err(CompileError::DuplicateStep(s.id.clone()));
        }
        for n in s.needs.iter().flatten() {
            if definition.step(n).is_none() {
                return Err(CompileError::UnknownStep {
                    step: s.id.clone(),
                    missing: n.clone(),
                });
            }
        }
    }
    let deps = dependencies(&definition);
    let Some(order) = stable_order(&deps) else {
        let names = cycles(&deps)
            .first()
            .map(|c| {
                c.iter()
                    .map(|&i| format!("`{}`", definition.steps[i].id))
                    .collect::<Vec<_>>()
                    .join(" → ")
            })
            .unwrap_or_default();
        return Err(CompileError::Cycle(names));
    };
    let mut position = vec![0; order.len()];
    for (pos, &i) in order.iter().enumerate() {
        position[i] = pos;
    }
    let mut has_dependents = vec![false; deps.len()];
    for ds in &deps {
        for &d in ds {
            has_dependents[d] = true;
        }
    }
    let sinks = (0..deps.len()).filter(|&i| !has_dependents[i]).collect();
    Ok(Plan {
        graph: graph_of(&deps),
        definition,
        order,
        position,
        deps,
        sinks,
    })
}

impl Plan {
    /// Mermaid flowchart of the DAG.
    pub fn to_mermaid(&self) -> String {
        let mut out = String::from("flowchart TD\n");
        for &i in &self.order {
            let s = &self.definition.steps[i];
            out.push_str(&format!(
                "    {}[\"{}<br/><i>{}</i>\"]\n",
                s.id,
                escape_label(s.name.as_deref().unwrap_or(&s.id)),
                step_label(self, i)
            ));
        }
        for &i in &self.order {
            for &d in &self.deps[i] {
                let s = &self.definition.steps[i];
                let arrow = if s.when.is_some() {
                    "-.->|when|"
                } else {
                    "-->"
                };
                out.push_str(&format!(
                    "    {} {arrow} {}\n",
                    self.definition.steps[d].id, s.id
                ));
            }
        }
        out
    }

    /// Graphviz DOT of the DAG.
    pub fn to_dot(&self) -> String {
        let mut out = format!(
            "digraph \"{}\" {{\n    rankdir=TB;\n    node [shape=box, style=rounded];\n",
            self.definition.id
        );
        for &i in &self.order {
            let s = &self.definition.steps[i];
            out.push_str(&format!(
                "    \"{}\" [label=\"{}\\n({})\"];\n",
                s.id,
                escape_label(s.name.as_deref().unwrap_or(&s.id)),
                step_label(self, i)
            ));
        }
        for &i in &self.order {
            for &d in &self.deps[i] {
                let s = &self.definition.steps[i];
                let style = if s.when.is_some() {
                    " [style=dashed, label=\"when\"]"
                } else {
                    ""
                };
                out.push_str(&format!(
                    "    \"{}\" -> \"{}\"{style};\n",
                    self.definition.steps[d].id, s.id
                ));
            }
        }
        out.push_str("}\n");
        out
    }
}

fn step_label(plan: &Plan, i: usize) -> String {
    use crate::definition::StepKind;
    match &plan.definition.steps[i].kind {
        StepKind::Action(a) => format!("action: {}", a.uses),
        StepKind::ExternalEvent(e) => format!("external_event: {}", e.signal),
        k => k.type_name().to_string(),
    }
}

fn escape_label(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "'")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stable_order_prefers_declaration_order() {
        // 0 → 2, 1 → 2, 3 root
        let deps = vec![vec![], vec![], vec![0, 1], vec![]];
        assert_eq!(stable_order(&deps), Some(vec![0, 1, 2, 3]));
        let deps = vec![vec![1], vec![], vec![]];
        assert_eq!(stable_order(&deps), Some(vec![1, 0, 2]));
    }

    #[test]
    fn cycles_are_named_in_order() {
        // a needs c, b needs a, c needs b: a → b → c → a
        let deps = vec![vec![2], vec![0], vec![1]];
        assert_eq!(cycles(&deps), vec![vec![0, 1, 2, 0]]);
        let deps = vec![vec![0]];
        assert_eq!(cycles(&deps), vec![vec![0, 0]]);
    }

    #[test]
    fn ancestors_are_transitive() {
        let deps = vec![vec![], vec![0], vec![1], vec![]];
        let a = ancestors(&deps);
        assert!(a[2][0] && a[2][1] && !a[2][3] && !a[0][0]);
    }
}
