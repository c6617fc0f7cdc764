//! Compilation of valid definitions into plans.

use stepwise::compile::compile;
use stepwise::diagnostics::SourceFile;
use stepwise::validate::lint;

fn plan(text: &str) -> stepwise::compile::Plan {
    let l = lint(&SourceFile::new("t.yaml", text));
    let def = l
        .definition
        .unwrap_or_else(|| panic!("lint errors: {:?}", l.diagnostics));
    compile(def).unwrap()
}

#[test]
fn a_plain_list_is_a_sequence() {
    let p = plan(
        "id: seq\nsteps:\n  - {id: a, type: wait, duration: 1s}\n  - {id: b, type: wait, duration: 1s}\n  - {id: c, type: wait, duration: 1s}\n",
    );
    assert_eq!(p.order, vec![0, 1, 2]);
    assert_eq!(p.deps, vec![vec![], vec![0], vec![1]]);
    assert_eq!(p.sinks, vec![2]);
    assert_eq!(p.graph.edge_count(), 2);
}

#[test]
fn needs_build_a_dag_with_a_stable_order() {
    let p = plan(
        "id: fan\nsteps:\n  - {id: join, type: wait, duration: 1s, needs: [x, y]}\n  - {id: y, type: wait, duration: 1s, needs: []}\n  - {id: x, type: wait, duration: 1s, needs: []}\n  - {id: tail, type: wait, duration: 1s}\n",
    );
    // y and x are roots; declaration order breaks the tie; `tail` follows `x` (the step before it).
    assert_eq!(p.order, vec![1, 2, 0, 3]);
    assert_eq!(p.position, vec![2, 0, 1, 3]);
    assert_eq!(p.sinks, vec![0, 3]);
}

#[test]
fn every_example_compiles() {
    for entry in std::fs::read_dir(crate::util::repo().join("examples")).unwrap() {
        let path = entry.unwrap().path();
        // `*.test.yaml` files are workflow tests (`stepwise test`), not definitions.
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        if path.extension().is_none_or(|e| e != "yaml") || name.ends_with(".test.yaml") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let p = plan(&text);
        assert_eq!(
            p.order.len(),
            p.definition.steps.len(),
            "{}",
            path.display()
        );
    }
}
