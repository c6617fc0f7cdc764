use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use stepwise::diagnostics::{SourceFile, render_human};
use stepwise::validate::{Lint, LintOptions, lint_with};

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Lint a file from the repository, named relative to its root.
pub fn lint_path(rel: &Path) -> (SourceFile, Lint) {
    let text = std::fs::read_to_string(repo().join(rel))
        .unwrap_or_else(|e| panic!("{}: {e}", rel.display()));
    let file = SourceFile::new(rel.display().to_string().replace('\\', "/"), text);
    // Test files are linted with the workflow they name, as `stepwise lint` does; agent
    // tools are resolved against the workflows beside the file, as `stepwise lint` does. A
    // file whose second line is `# lint: --deny-scripts` is linted as `stepwise lint` with it.
    let deny_scripts = file.text.lines().nth(1) == Some("# lint: --deny-scripts");
    let catalog = stepwise::cli::lint::catalog_for(&[repo().join(rel)]);
    let result =
        stepwise::testing::files::lint_test_file(&file, &repo().join(rel)).unwrap_or_else(|| {
            lint_with(
                &file,
                &LintOptions {
                    allow_scripts: !deny_scripts,
                    catalog: Some(&catalog),
                },
            )
        });
    (file, result)
}

/// Everything lint says about a file, as a person would read it (no colour, fixed width).
pub fn rendered(file: &SourceFile, l: &Lint) -> String {
    l.diagnostics
        .iter()
        .map(|d| render_human(file, d, false, 100))
        .collect()
}

/// Run the real binary in `dir`; on failure the caller prints the output it got.
pub fn stepwise(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_stepwise"))
        .args(args)
        .current_dir(dir)
        .env("NO_COLOR", "1")
        .output()
        .unwrap_or_else(|e| panic!("cannot run stepwise: {e}"))
}

pub fn show(o: &Output) -> String {
    format!(
        "status: {:?}\n--- stdout\n{}\n--- stderr\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Send a request and read its JSON answer (whatever the status).
pub async fn json_of(req: reqwest::RequestBuilder) -> serde_json::Value {
    req.send().await.unwrap().json().await.unwrap()
}
