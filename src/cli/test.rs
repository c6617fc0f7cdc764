//! `stepwise test [PATHS…]`: run workflow tests (mocked steps, virtual clock) and report
//! each case with a diff at the YAML path of every failed expectation.

use std::io::Write;
use std::path::PathBuf;

use clap::{Args, ValueEnum};
use serde_json::{Value, json};

use super::{Outcome, stderr_color};
use crate::diagnostics::{SourceFile, render_human};
use crate::testing::expect::yaml_path;
use crate::testing::{self, Failure, Suite, SuiteReport};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TestFormat {
    Human,
    Json,
    Junit,
}

#[derive(Debug, Args)]
pub struct TestArgs {
    /// Test files and directories (searched recursively for *.test.yaml and other files
    /// with `tests:`); default `.`.
    paths: Vec<PathBuf>,
    /// Replay recorded runs (`stepwise runs export` files) as tests: each run's input,
    /// its steps' recorded outcomes and the approvals and signals it received, against the
    /// workflow; the run must end as it did (status, and output when it completed).
    #[arg(long = "from-run", value_name = "FILE", conflicts_with = "update")]
    from_run: Vec<PathBuf>,
    /// With `--from-run`: the workflow file to replay the runs against (an edited
    /// version, say); default: the version each run was pinned to, from its export.
    #[arg(long, value_name = "FILE", requires = "from_run")]
    definition: Option<PathBuf>,
    /// Output: human (stdout), json or junit (XML for CI test reports).
    #[arg(long, value_enum, default_value_t = TestFormat::Human)]
    format: TestFormat,
    /// Write what the runs did into the failing cases' `expect.status` and `expect.output`.
    #[arg(long)]
    update: bool,
    /// Also report, per workflow, which steps and `when` outcomes the cases exercised.
    #[arg(long)]
    coverage: bool,
    /// Let script steps a case lists in `live` run for real (mocked ones never run).
    #[command(flatten)]
    scripts: super::scripts::ScriptArgs,
}

struct FileResult {
    suite: Suite,
    report: SuiteReport,
}

pub fn run(args: &TestArgs) -> Outcome {
    let mut err = std::io::stderr().lock();
    let color = stderr_color();
    // Recorded runs become test files in a directory of their own, kept when a case
    // fails so the generated test can be read (or copied beside the workflow).
    let generated = if args.from_run.is_empty() {
        None
    } else {
        match super::from_run::generate(&args.from_run, args.definition.as_deref()) {
            Ok(g) => Some(g),
            Err(e) => {
                let _ = writeln!(err, "error: {e}");
                return Outcome::CouldNotRun;
            }
        }
    };
    let paths = match &generated {
        Some(g) => g.files.clone(),
        None if args.paths.is_empty() => vec![PathBuf::from(".")],
        None => args.paths.clone(),
    };
    let (files, problems) = super::lint::collect_files(&paths);
    let mut could_not_run = !problems.is_empty();
    for (p, e) in &problems {
        let _ = writeln!(err, "error: cannot read {}: {e}", p.display());
    }
    let mut suites = Vec::new();
    for path in files {
        let is_test = path.to_string_lossy().ends_with(".test.yaml")
            || std::fs::read_to_string(&path)
                .is_ok_and(|t| testing::files::is_test_source(&SourceFile::new("", t)));
        if !is_test {
            continue;
        }
        match testing::load(&path) {
            Ok(loaded) => {
                for d in &loaded.diagnostics {
                    let _ = write!(err, "{}", render_human(&loaded.file, d, color, 100));
                }
                match loaded.suite {
                    Some(s) => suites.push(s),
                    None => could_not_run = true,
                }
            }
            Err(e) => {
                let _ = writeln!(err, "error: cannot read {}: {e}", path.display());
                could_not_run = true;
            }
        }
    }
    if suites.is_empty() && !could_not_run {
        let _ = writeln!(err, "error: no test files (*.test.yaml) found");
        return Outcome::CouldNotRun;
    }
    let rt = match super::local::runtime() {
        Ok(rt) => rt,
        Err(e) => {
            let _ = writeln!(err, "error: {e}");
            return Outcome::CouldNotRun;
        }
    };
    let mut config = match crate::engine::EngineConfig::from_env() {
        Ok(c) => c,
        Err(e) => {
            let _ = writeln!(err, "error: {e}");
            return Outcome::CouldNotRun;
        }
    };
    if let Err(e) = args
        .scripts
        .apply(&mut config)
        .and_then(|()| super::scripts::announce(&config))
    {
        let _ = writeln!(err, "error: {e}");
        return Outcome::CouldNotRun;
    }
    let mut results = Vec::new();
    for suite in suites {
        match rt.block_on(testing::run_with(&suite, Some(&config.scripts))) {
            Ok(report) => results.push(FileResult { suite, report }),
            Err(e) => {
                let _ = writeln!(err, "error: {}: {e}", suite.path.display());
                could_not_run = true;
            }
        }
    }
    drop(err);
    let mut failed = results
        .iter()
        .flat_map(|r| &r.report.cases)
        .filter(|c| !c.passed())
        .count();
    if args.update {
        failed = update(&results);
    }
    let out = std::io::stdout();
    let mut out = out.lock();
    let _ = match args.format {
        TestFormat::Human => human(&mut out, &results, args.coverage),
        TestFormat::Json => writeln!(
            out,
            "{}",
            serde_json::to_string_pretty(&as_json(&results, args.coverage)).unwrap_or_default()
        ),
        TestFormat::Junit => write!(out, "{}", junit(&results)),
    };
    if let Some(g) = generated {
        g.finish(failed > 0 || could_not_run);
    }
    if could_not_run {
        Outcome::CouldNotRun
    } else if failed > 0 {
        Outcome::Failed
    } else {
        Outcome::Ok
    }
}

/// Rewrite the files; returns the failures `--update` could not fix.
fn update(results: &[FileResult]) -> usize {
    let mut left = 0;
    for r in results {
        let failing: Vec<bool> = r.report.cases.iter().map(|c| !c.passed()).collect();
        if let Some(text) = testing::update::updated_text(&r.suite, &actuals(r), &failing) {
            match std::fs::write(&r.suite.path, text) {
                Ok(()) => eprintln!("updated {}", r.suite.path.display()),
                Err(e) => eprintln!("error: cannot write {}: {e}", r.suite.path.display()),
            }
        }
        for c in &r.report.cases {
            let fixable = |f: &Failure| {
                let x = format!("{}/expect/", c.pointer);
                f.pointer.starts_with(&format!("{x}status"))
                    || f.pointer.starts_with(&format!("{x}output/"))
                    || f.pointer == format!("{x}output")
            };
            if c.failures.iter().any(|f| !fixable(f)) {
                left += 1;
            }
        }
    }
    left
}

fn actuals(r: &FileResult) -> Vec<testing::Actual> {
    r.report.cases.iter().map(|c| c.actual.clone()).collect()
}

fn location(suite: &Suite, pointer: &str) -> (usize, usize) {
    suite.file.line_col(suite.spans.value(pointer).start)
}

fn short(v: &Option<Value>) -> String {
    match v {
        None => "(nothing)".into(),
        Some(v) => {
            let s = v.to_string();
            if s.chars().count() > 200 {
                format!("{}…", s.chars().take(200).collect::<String>())
            } else {
                s
            }
        }
    }
}

fn human(out: &mut impl Write, results: &[FileResult], coverage: bool) -> std::io::Result<()> {
    let (mut passed, mut failed) = (0, 0);
    let mut elapsed = std::time::Duration::ZERO;
    for r in results {
        elapsed += r.report.elapsed;
        writeln!(
            out,
            "{} ({})",
            r.suite.path.display(),
            r.suite.workflow.definition.id
        )?;
        for c in &r.report.cases {
            if c.passed() {
                passed += 1;
                writeln!(out, "  ok    {}", c.name)?;
                continue;
            }
            failed += 1;
            writeln!(out, "  FAIL  {}", c.name)?;
            for f in &c.failures {
                let (line, col) = location(&r.suite, &f.pointer);
                writeln!(
                    out,
                    "        {}:{line}:{col}: {}",
                    r.suite.path.display(),
                    yaml_path(&f.pointer)
                )?;
                if f.message != yaml_path(&f.pointer) {
                    writeln!(out, "          {}", f.message)?;
                }
                if f.expected.is_some() || f.actual.is_some() {
                    writeln!(out, "          - expected: {}", short(&f.expected))?;
                    writeln!(out, "          + actual:   {}", short(&f.actual))?;
                }
            }
        }
        if coverage {
            let cv = &r.report.coverage;
            writeln!(
                out,
                "  coverage of {}: {}/{} steps ran, {}/{} `when` outcomes",
                cv.workflow,
                cv.steps_covered,
                cv.steps.len(),
                cv.branches_covered,
                cv.branches
            )?;
            for s in &cv.steps {
                let when = match (s.when_true, s.when_false) {
                    (Some(t), Some(f)) => format!("  when: true in {t}, false in {f}"),
                    _ => String::new(),
                };
                let mark = if s.ran == 0 { "  untested" } else { "" };
                writeln!(
                    out,
                    "    {:<24} ran in {} case(s){when}{mark}",
                    s.step, s.ran
                )?;
            }
        }
    }
    writeln!(
        out,
        "{} case(s) in {} file(s): {passed} passed, {failed} failed ({:.2} s)",
        passed + failed,
        results.len(),
        elapsed.as_secs_f64()
    )
}

fn as_json(results: &[FileResult], coverage: bool) -> Value {
    let files: Vec<Value> = results
        .iter()
        .map(|r| {
            let cases: Vec<Value> = r
                .report
                .cases
                .iter()
                .map(|c| {
                    let failures: Vec<Value> = c
                        .failures
                        .iter()
                        .map(|f| {
                            let (line, column) = location(&r.suite, &f.pointer);
                            json!({
                                "path": yaml_path(&f.pointer),
                                "line": line,
                                "column": column,
                                "message": f.message,
                                "expected": f.expected,
                                "actual": f.actual,
                            })
                        })
                        .collect();
                    json!({
                        "name": c.name,
                        "passed": c.passed(),
                        "status": c.actual.status,
                        "output": c.actual.output,
                        "error": c.actual.error,
                        "failures": failures,
                    })
                })
                .collect();
            let mut v = json!({
                "file": r.suite.path.display().to_string(),
                "workflow": r.suite.workflow.definition.id,
                "elapsedMs": r.report.elapsed.as_millis() as u64,
                "cases": cases,
            });
            if coverage {
                v["coverage"] = serde_json::to_value(&r.report.coverage).unwrap_or(Value::Null);
            }
            v
        })
        .collect();
    let all = results.iter().flat_map(|r| &r.report.cases);
    let passed = all.clone().filter(|c| c.passed()).count();
    json!({
        "passed": passed,
        "failed": all.count() - passed,
        "files": files,
    })
}

fn xml(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn junit(results: &[FileResult]) -> String {
    let mut s = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<testsuites>\n");
    for r in results {
        let cases = &r.report.cases;
        let failures = cases.iter().filter(|c| !c.passed()).count();
        let file = r.suite.path.display().to_string();
        s.push_str(&format!(
            "  <testsuite name=\"{}\" tests=\"{}\" failures=\"{failures}\" time=\"{:.3}\">\n",
            xml(&file),
            cases.len(),
            r.report.elapsed.as_secs_f64()
        ));
        for c in cases {
            s.push_str(&format!(
                "    <testcase name=\"{}\" classname=\"{}\"",
                xml(&c.name),
                xml(&r.suite.workflow.definition.id)
            ));
            if c.passed() {
                s.push_str("/>\n");
                continue;
            }
            let text: Vec<String> = c
                .failures
                .iter()
                .map(|f| {
                    let (line, col) = location(&r.suite, &f.pointer);
                    format!(
                        "{file}:{line}:{col}: {}: {} (expected {}, actual {})",
                        yaml_path(&f.pointer),
                        f.message,
                        short(&f.expected),
                        short(&f.actual)
                    )
                })
                .collect();
            s.push_str(&format!(
                ">\n      <failure message=\"{}\">{}</failure>\n    </testcase>\n",
                xml(&c
                    .failures
                    .first()
                    .map_or(String::new(), |f| f.message.clone())),
                xml(&text.join("\n"))
            ));
        }
        s.push_str("  </testsuite>\n");
    }
    s.push_str("</testsuites>\n");
    s
}
