//! `stepwise lint PATH...`

use std::io::Write;
use std::path::{Path, PathBuf};

use clap::Args;

use super::{LintFormat, Outcome, stderr_color};
use crate::diagnostics::{JsonDiagnostic, SourceFile, render_github, render_human};
use crate::validate::{Catalog, Lint, LintOptions, lint_with};

#[derive(Debug, Args)]
pub struct LintArgs {
    /// Files and directories (searched recursively for *.yaml and *.yml).
    #[arg(required = true)]
    paths: Vec<PathBuf>,
    /// Output format: human (stderr), json or github (workflow commands, stdout).
    #[arg(long, value_enum, default_value_t = LintFormat::Human)]
    format: LintFormat,
    /// Treat warnings as errors.
    #[arg(long)]
    deny_warnings: bool,
    /// Lint for a server that runs no scripts (started without --allow-scripts): every
    /// `script` step is an error.
    #[arg(long)]
    deny_scripts: bool,
}

/// Expand paths into the YAML files to lint, sorted; unreadable paths are returned apart.
pub fn collect_files(paths: &[PathBuf]) -> (Vec<PathBuf>, Vec<(PathBuf, String)>) {
    let mut files = Vec::new();
    let mut problems = Vec::new();
    for p in paths {
        match std::fs::metadata(p) {
            Ok(m) if m.is_dir() => walk(p, &mut files, &mut problems),
            Ok(_) => files.push(p.clone()),
            Err(e) => problems.push((p.clone(), e.to_string())),
        }
    }
    (files, problems)
}

fn walk(dir: &Path, files: &mut Vec<PathBuf>, problems: &mut Vec<(PathBuf, String)>) {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) => {
            problems.push((dir.to_path_buf(), e.to_string()));
            return;
        }
    };
    let mut paths: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    paths.sort();
    for p in paths {
        if p.is_dir() {
            walk(&p, files, problems);
        } else if p.extension().is_some_and(|e| e == "yaml" || e == "yml") {
            files.push(p);
        }
    }
}

/// `files` in the order to apply them: the workflows an agent calls as tools (or starts
/// with `workflow` steps) first, since applying checks an agent's tools against what is
/// stored; otherwise name order.
pub fn tools_first(files: Vec<PathBuf>) -> Vec<PathBuf> {
    let read = |p: &PathBuf| -> Option<crate::definition::Definition> {
        let text = std::fs::read_to_string(p).ok()?;
        let doc = crate::yaml::parse(&SourceFile::new(p.display().to_string(), text)).ok()?;
        doc.value
            .is_object()
            .then(|| crate::definition::Definition::from_value(&doc.value))
    };
    let read: Vec<(PathBuf, Option<crate::definition::Definition>)> = files
        .into_iter()
        .map(|p| {
            let d = read(&p);
            (p, d)
        })
        .collect();
    crate::validate::tools::dependency_order(read, |(_, d)| d.as_ref())
        .into_iter()
        .map(|(p, _)| p)
        .collect()
}

/// The workflows agent tools may name: every workflow file in the directories of `files`
/// (not below them), so a file linted alone still finds the workflows beside it.
pub fn catalog_for(files: &[PathBuf]) -> Catalog {
    let mut catalog = Catalog::new("beside this file");
    let mut dirs: Vec<&Path> = files
        .iter()
        .map(|f| f.parent().unwrap_or(Path::new(".")))
        .collect();
    dirs.sort();
    dirs.dedup();
    for dir in dirs {
        let dir = if dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            dir
        };
        let Ok(entries) = std::fs::read_dir(dir) else {
            continue;
        };
        let mut paths: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
            .collect();
        paths.sort();
        for p in paths {
            let Ok(text) = std::fs::read_to_string(&p) else {
                continue;
            };
            let Ok(doc) = crate::yaml::parse(&SourceFile::new(p.display().to_string(), text))
            else {
                continue;
            };
            let v = &doc.value;
            if v.is_object() && !crate::testing::is_test_file(v) && !crate::triggers::is_trigger(v)
            {
                catalog.add_file(crate::definition::Definition::from_value(v));
            }
        }
    }
    catalog
}

/// Read and lint files on all cores; results keep the input order.
pub fn lint_files(files: &[PathBuf]) -> Vec<Result<(SourceFile, Lint), (PathBuf, String)>> {
    lint_files_with(files, true)
}

/// [`lint_files`] for a place that runs scripts only if `allow_scripts`.
pub fn lint_files_with(
    files: &[PathBuf],
    allow_scripts: bool,
) -> Vec<Result<(SourceFile, Lint), (PathBuf, String)>> {
    let catalog = catalog_for(files);
    let options = &LintOptions {
        allow_scripts,
        catalog: Some(&catalog),
    };
    let workers = std::thread::available_parallelism()
        .map_or(1, usize::from)
        .min(files.len().max(1));
    let chunk = files.len().div_ceil(workers).max(1);
    std::thread::scope(|s| {
        let handles: Vec<_> = files
            .chunks(chunk)
            .map(|part| {
                s.spawn(move || {
                    part.iter()
                        .map(|p| {
                            let text = std::fs::read_to_string(p)
                                .map_err(|e| (p.clone(), e.to_string()))?;
                            let file = SourceFile::new(p.display().to_string(), text);
                            let result = crate::testing::files::lint_test_file(&file, p)
                                .unwrap_or_else(|| lint_with(&file, options));
                            Ok((file, result))
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap_or_default())
            .collect()
    })
}

pub fn run(args: &LintArgs) -> Outcome {
    let (files, mut problems) = collect_files(&args.paths);
    let mut linted = Vec::new();
    for r in lint_files_with(&files, !args.deny_scripts) {
        match r {
            Ok(x) => linted.push(x),
            Err(p) => problems.push(p),
        }
    }
    let errors: usize = linted.iter().map(|(_, l)| l.errors()).sum();
    let warnings: usize = linted.iter().map(|(_, l)| l.warnings()).sum();

    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let mut err = std::io::stderr().lock();
    match args.format {
        LintFormat::Human => {
            let color = stderr_color();
            for (file, l) in &linted {
                for d in &l.diagnostics {
                    let _ = write!(err, "{}", render_human(file, d, color, 100));
                }
            }
            for (p, e) in &problems {
                let _ = writeln!(err, "error: cannot read {}: {e}", p.display());
            }
            let _ = writeln!(
                err,
                "{}",
                summary(linted.len(), errors, warnings, problems.len())
            );
        }
        LintFormat::Json => {
            let diagnostics: Vec<JsonDiagnostic<'_>> = linted
                .iter()
                .flat_map(|(f, l)| l.diagnostics.iter().map(move |d| JsonDiagnostic::new(f, d)))
                .collect();
            let unreadable: Vec<serde_json::Value> = problems
                .iter()
                .map(|(p, e)| serde_json::json!({"file": p.display().to_string(), "message": e}))
                .collect();
            let doc = serde_json::json!({
                "files": linted.len(),
                "errors": errors,
                "warnings": warnings,
                "diagnostics": diagnostics,
                "unreadable": unreadable,
            });
            let _ = writeln!(
                out,
                "{}",
                serde_json::to_string_pretty(&doc).unwrap_or_default()
            );
        }
        LintFormat::Github => {
            for (file, l) in &linted {
                for d in &l.diagnostics {
                    let _ = write!(out, "{}", render_github(file, d));
                }
            }
            for (p, e) in &problems {
                let _ = writeln!(out, "::error file={}::cannot read: {e}", p.display());
            }
            let _ = writeln!(
                err,
                "{}",
                summary(linted.len(), errors, warnings, problems.len())
            );
        }
    }
    if !problems.is_empty() {
        Outcome::CouldNotRun
    } else if errors > 0 || (args.deny_warnings && warnings > 0) {
        Outcome::Failed
    } else {
        Outcome::Ok
    }
}

fn plural(n: usize, word: &str) -> String {
    if n == 1 {
        format!("1 {word}")
    } else {
        format!("{n} {word}s")
    }
}

fn summary(files: usize, errors: usize, warnings: usize, unreadable: usize) -> String {
    if unreadable > 0 {
        format!(
            "{} checked: {}, {}; {} could not be read",
            plural(files, "file"),
            plural(errors, "error"),
            plural(warnings, "warning"),
            plural(unreadable, "path")
        )
    } else if errors == 0 && warnings == 0 {
        format!("{} checked, no problems", plural(files, "file"))
    } else {
        format!(
            "{} checked: {}, {}",
            plural(files, "file"),
            plural(errors, "error"),
            plural(warnings, "warning")
        )
    }
}
