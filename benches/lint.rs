//! Lint throughput: `cargo bench --bench lint` prints definitions per second for a 200-step
//! definition, and for a directory of 1,000 typical files (read + lint, all cores).

use std::time::{Duration, Instant};

use stepwise::diagnostics::SourceFile;
use stepwise::validate::lint;

fn big_definition(steps: usize) -> String {
    let mut s = String::from(
        "id: big\ninput:\n  type: object\n  properties:\n    email: {type: string}\n    name: {type: string}\nsteps:\n",
    );
    for i in 0..steps {
        let prev = i.saturating_sub(1);
        match i % 4 {
            0 => s.push_str(&format!(
                "  - id: s{i}\n    type: agent\n    prompt: \"Step {i} for {{{{ input.name }}}} <{{{{ input.email }}}}>\"\n    output:\n      type: object\n      properties:\n        score: {{type: integer}}\n        reason: {{type: string}}\n"
            )),
            1 => s.push_str(&format!(
                "  - id: s{i}\n    type: action\n    uses: http\n    retry: {{max_attempts: 3, initial_delay: 1s}}\n    timeout: 30s\n    with:\n      method: POST\n      url: \"https://api.example.com/items/{{{{ steps.s{prev}.output.score }}}}\"\n      json: {{reason: \"{{{{ steps.s{prev}.output.reason }}}}\", run: \"{{{{ run.id }}}}\"}}\n"
            )),
            2 => s.push_str(&format!(
                "  - id: s{i}\n    type: action\n    uses: transform\n    when: steps.s{prev}.output.status == 200\n    with:\n      value: {{status: \"{{{{ steps.s{prev}.output.status }}}}\", note: fixed}}\n"
            )),
            _ => s.push_str(&format!(
                "  - id: s{i}\n    type: action\n    uses: log\n    with: {{message: \"{{{{ steps.s{prev}.output.note }}}}\", level: info}}\n"
            )),
        }
    }
    s
}

fn measure(label: &str, units: usize, unit: &str, mut f: impl FnMut()) {
    f(); // warm the schema validator and template environment
    let mut best = Duration::MAX;
    let rounds = 5;
    for _ in 0..rounds {
        let t = Instant::now();
        f();
        best = best.min(t.elapsed());
    }
    let per_sec = units as f64 / best.as_secs_f64();
    println!(
        "{label:<48} {:>9.1} ms   {per_sec:>10.0} {unit}/s (best of {rounds})",
        best.as_secs_f64() * 1e3
    );
}

fn main() {
    let big = SourceFile::new("big.yaml", big_definition(200));
    let l = lint(&big);
    assert!(
        l.definition.is_some(),
        "benchmark definition must be clean: {:?}",
        l.diagnostics
    );
    measure("one 200-step definition", 1, "definitions", || {
        std::hint::black_box(lint(&big));
    });

    let examples = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let mut texts = Vec::new();
    for entry in std::fs::read_dir(&examples).expect("examples/ exists") {
        let p = entry.expect("entry").path();
        if p.extension().is_some_and(|e| e == "yaml") {
            texts.push(std::fs::read_to_string(&p).expect("readable example"));
        }
    }
    let dir = tempfile::tempdir().expect("temp dir");
    for i in 0..1000 {
        let text = &texts[i % texts.len()];
        std::fs::write(dir.path().join(format!("wf-{i:04}.yaml")), text).expect("write");
    }
    let (files, problems) = stepwise::cli::lint::collect_files(&[dir.path().to_path_buf()]);
    assert!(problems.is_empty() && files.len() == 1000);
    measure(
        "directory of 1,000 typical files (read + lint)",
        1000,
        "files",
        || {
            let results = stepwise::cli::lint::lint_files(&files);
            assert_eq!(results.len(), 1000);
        },
    );
}
