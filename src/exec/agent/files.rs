//! The file tools an agent step with `files:` offers: list, read and write its run's
//! workspace. Every path goes through `workspace::files`, which keeps it inside the
//! workspace (no `..`, no absolute path, no symbolic link followed) and bounds sizes. A
//! refused or failed operation is the tool's result, for the model to read and recover
//! from, never the step's failure.

use std::path::Path;

use serde_json::{Value, json};

use super::tools::{FileOp, Tool, ToolKind};
use super::transcript::ToolResult;
use crate::definition::{FILE_TOOLS, FileAccess};
use crate::workspace::files::{self, FileError};

/// The most bytes one `workspace_read` returns; a longer file is read in parts
/// (`offset`), so a result stays within what a tool message keeps.
pub const READ_CHUNK: u64 = 16 * 1024;
/// The most bytes one `workspace_write` writes.
pub const MAX_WRITE: u64 = files::DEFAULT_MAX_FILE;
/// The most entries one `workspace_list` returns.
pub const MAX_LIST: usize = 200;

/// The tools `access` offers, in a stable order.
pub fn tools(access: FileAccess) -> Vec<Tool> {
    let ops: &[FileOp] = match access {
        FileAccess::None => &[],
        FileAccess::ReadOnly => &[FileOp::List, FileOp::Read],
        FileAccess::ReadWrite => &[FileOp::List, FileOp::Read, FileOp::Write],
    };
    ops.iter().map(|&op| tool(op)).collect()
}

fn name(op: FileOp) -> &'static str {
    match op {
        FileOp::List => FILE_TOOLS[0],
        FileOp::Read => FILE_TOOLS[1],
        FileOp::Write => FILE_TOOLS[2],
    }
}

fn tool(op: FileOp) -> Tool {
    let path = |what: &str| json!({"type": "string", "description": what});
    let (description, parameters) = match op {
        FileOp::List => (
            "List a directory of the workspace: each entry's name, kind (file, dir, symlink, other) and size in bytes.".to_string(),
            json!({
                "type": "object",
                "properties": {"path": path("A directory, relative to the workspace; default: the workspace itself.")},
                "additionalProperties": false
            }),
        ),
        FileOp::Read => (
            format!(
                "Read a UTF-8 text file of the workspace, at most {READ_CHUNK} bytes at a time: when the answer has `nextOffset`, call again with it as `offset` for the rest."
            ),
            json!({
                "type": "object",
                "required": ["path"],
                "properties": {
                    "path": path("The file, relative to the workspace, e.g. notes/todo.md."),
                    "offset": {"type": "integer", "minimum": 0, "description": "The byte to start at; default 0."}
                },
                "additionalProperties": false
            }),
        ),
        FileOp::Write => (
            format!(
                "Write a text file of the workspace (at most {MAX_WRITE} bytes), replacing what it held; missing directories are created."
            ),
            json!({
                "type": "object",
                "required": ["path", "content"],
                "properties": {
                    "path": path("The file, relative to the workspace, e.g. out/report.md."),
                    "content": {"type": "string", "description": "The whole new content."}
                },
                "additionalProperties": false
            }),
        ),
    };
    Tool {
        name: name(op).to_string(),
        description,
        parameters,
        kind: ToolKind::File { op },
    }
}

/// Run one file tool call in `workspace` (blocking I/O).
pub fn run(workspace: &Path, op: FileOp, args: &Value) -> ToolResult {
    match try_run(workspace, op, args) {
        Ok(output) => ToolResult::Completed { output },
        Err(e) => e,
    }
}

fn try_run(workspace: &Path, op: FileOp, args: &Value) -> Result<Value, ToolResult> {
    match op {
        FileOp::List => {
            let path = optional_str(args, "path")?.unwrap_or(".");
            let listing = files::list(workspace, path).map_err(failed)?;
            let truncated = listing.truncated || listing.entries.len() > MAX_LIST;
            let entries: Vec<_> = listing.entries.into_iter().take(MAX_LIST).collect();
            Ok(json!({"path": path, "entries": entries, "truncated": truncated}))
        }
        FileOp::Read => {
            let path = required_str(args, "path")?;
            let offset = match args.get("offset") {
                None | Some(Value::Null) => 0,
                Some(v) => v.as_u64().ok_or_else(|| {
                    arguments("`offset` must be a whole number of bytes, 0 or more")
                })?,
            };
            let chunk = files::read_at(workspace, path, offset, READ_CHUNK).map_err(failed)?;
            let more = offset.saturating_add(chunk.data.len() as u64) < chunk.size;
            let (text, used) = utf8_prefix(&chunk.data, more).ok_or_else(|| {
                ToolResult::failed(
                    "not_text",
                    format!("`{path}` is not UTF-8 text at byte {offset}"),
                )
            })?;
            let mut out =
                json!({"path": path, "size": chunk.size, "offset": offset, "content": text});
            let next = offset.saturating_add(used as u64);
            if next < chunk.size {
                out["nextOffset"] = json!(next);
            }
            Ok(out)
        }
        FileOp::Write => {
            let path = required_str(args, "path")?;
            let content = match args.get("content") {
                Some(Value::String(s)) => s,
                _ => return Err(arguments("`content` (a string) is required")),
            };
            files::write(workspace, path, content.as_bytes(), MAX_WRITE).map_err(failed)?;
            Ok(json!({"path": path, "bytes": content.len()}))
        }
    }
}

/// The text of `data` up to its last whole character, and how many bytes that is; `None`
/// when it is not UTF-8. A character cut by the end of a part (`more`: the file goes on)
/// is left for the next part.
fn utf8_prefix(data: &[u8], more: bool) -> Option<(&str, usize)> {
    match std::str::from_utf8(data) {
        Ok(s) => Some((s, data.len())),
        Err(e) if more && e.error_len().is_none() && e.valid_up_to() > 0 => {
            let n = e.valid_up_to();
            std::str::from_utf8(&data[..n]).ok().map(|s| (s, n))
        }
        Err(_) => None,
    }
}

fn arguments(message: &str) -> ToolResult {
    ToolResult::failed("tool_arguments", message)
}

fn required_str<'a>(args: &'a Value, key: &str) -> Result<&'a str, ToolResult> {
    optional_str(args, key)?.ok_or_else(|| arguments(&format!("`{key}` (a string) is required")))
}

fn optional_str<'a>(args: &'a Value, key: &str) -> Result<Option<&'a str>, ToolResult> {
    match args.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(arguments(&format!("`{key}` must be a string"))),
    }
}

/// A refused operation, as the model reads it.
fn failed(e: FileError) -> ToolResult {
    let kind = match &e {
        FileError::InvalidPath { .. } => "invalid_path",
        FileError::NotFound { .. } => "not_found",
        FileError::Symlink { .. } => "symlink",
        FileError::NotAFile { .. } => "not_a_file",
        FileError::NotADirectory { .. } => "not_a_directory",
        FileError::TooLarge { .. } => "too_large",
        FileError::Io { .. } => "io",
    };
    ToolResult::failed(kind, e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err_kind(r: &ToolResult) -> String {
        match r {
            ToolResult::Failed { error } => error["kind"].as_str().unwrap_or_default().into(),
            ToolResult::Completed { output } => panic!("completed: {output}"),
        }
    }

    fn output(r: ToolResult) -> Value {
        match r {
            ToolResult::Completed { output } => output,
            ToolResult::Failed { error } => panic!("failed: {error}"),
        }
    }

    #[test]
    fn access_decides_the_tools() {
        let names = |a| tools(a).into_iter().map(|t| t.name).collect::<Vec<_>>();
        assert!(names(FileAccess::None).is_empty());
        assert_eq!(
            names(FileAccess::ReadOnly),
            ["workspace_list", "workspace_read"]
        );
        assert_eq!(names(FileAccess::ReadWrite), FILE_TOOLS);
        for t in tools(FileAccess::ReadWrite) {
            jsonschema::validator_for(&t.parameters).unwrap();
        }
    }

    #[test]
    fn write_list_read_and_refusals_come_back_as_results() {
        let tmp = tempfile::tempdir().unwrap();
        let ws = tmp.path().join("ws");
        std::fs::create_dir(&ws).unwrap();
        let w = run(
            &ws,
            FileOp::Write,
            &json!({"path": "out/a.txt", "content": "héllo"}),
        );
        assert_eq!(output(w), json!({"path": "out/a.txt", "bytes": 6}));
        let l = output(run(&ws, FileOp::List, &json!({})));
        assert_eq!(
            l["entries"],
            json!([{"name": "out", "kind": "dir", "size": 0}])
        );
        let r = output(run(&ws, FileOp::Read, &json!({"path": "out/a.txt"})));
        assert_eq!(
            r,
            json!({"path": "out/a.txt", "size": 6, "offset": 0, "content": "héllo"})
        );
        for (op, args, kind) in [
            (FileOp::Read, json!({"path": "../x"}), "invalid_path"),
            (FileOp::Read, json!({"path": "/etc/passwd"}), "invalid_path"),
            (FileOp::Read, json!({"path": "missing"}), "not_found"),
            (FileOp::Read, json!({}), "tool_arguments"),
            (
                FileOp::Read,
                json!({"path": "out/a.txt", "offset": -1}),
                "tool_arguments",
            ),
            (FileOp::Write, json!({"path": "b"}), "tool_arguments"),
            (FileOp::List, json!({"path": 3}), "tool_arguments"),
            (
                FileOp::List,
                json!({"path": "out/a.txt"}),
                "not_a_directory",
            ),
        ] {
            assert_eq!(err_kind(&run(&ws, op, &args)), kind, "{args}");
        }
        let big = "x".repeat(MAX_WRITE as usize + 1);
        let r = run(&ws, FileOp::Write, &json!({"path": "big", "content": big}));
        assert_eq!(err_kind(&r), "too_large");
        std::fs::write(ws.join("bin"), [0xff, 0xfe]).unwrap();
        assert_eq!(
            err_kind(&run(&ws, FileOp::Read, &json!({"path": "bin"}))),
            "not_text"
        );
    }

    #[test]
    fn a_long_file_is_read_in_parts_on_character_boundaries() {
        let tmp = tempfile::tempdir().unwrap();
        // One byte, then two-byte characters: a part's end falls inside one.
        let text = format!("a{}", "é".repeat(READ_CHUNK as usize));
        std::fs::write(tmp.path().join("long.txt"), &text).unwrap();
        let mut got = String::new();
        let mut offset = 0u64;
        loop {
            let r = output(run(
                tmp.path(),
                FileOp::Read,
                &json!({"path": "long.txt", "offset": offset}),
            ));
            got.push_str(r["content"].as_str().unwrap());
            match r["nextOffset"].as_u64() {
                Some(n) => offset = n,
                None => break,
            }
        }
        assert_eq!(got, text);
    }
}
