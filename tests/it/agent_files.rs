//! Agent file tools (`files:`) on the real server, its model the scripted one: the model
//! lists, writes and reads its run's workspace; escapes (`..`, absolute paths, links a
//! script planted) come back to it as errors and touch nothing outside; a kill -9 in the
//! middle of the loop resumes without writing again or re-sending completed calls.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use stepwise::model::RunStatus;
use stepwise::store::{SqliteStore, Store, Synchronous};

use crate::scripted_model::{ScriptedModel, answer, calls, turn_of};
use crate::serve::{Server, serve_env};
use crate::util::json_of;

const NOTES: &str = r#"id: notes
workspace: true
steps:
  - id: write
    type: agent
    prompt: Plan the week in notes/plan.md.
    files: true
"#;

/// The real server on `dir`'s database (workspaces in `server.db.workspaces`).
fn serve(dir: &Path, model: &ScriptedModel, extra: &[&str]) -> Server {
    let defs = dir.join("defs");
    let base = model.base_url();
    let mut args = vec![
        "--insecure-no-auth",
        "--definitions",
        defs.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    serve_env(
        dir,
        &args,
        &[
            ("STEPWISE_LLM_BASE_URL", base.as_str()),
            ("STEPWISE_LLM_MODEL", "scripted"),
        ],
    )
}

fn with_definition(dir: &Path, yaml: &str) {
    let defs = dir.join("defs");
    std::fs::create_dir_all(&defs).unwrap();
    std::fs::write(defs.join("notes.yaml"), yaml).unwrap();
}

fn http() -> reqwest::Client {
    stepwise::http_client::build(&stepwise::http_client::ClientOptions::default()).unwrap()
}

async fn start(server: &Server) -> String {
    let created = json_of(
        http()
            .post(format!("{}/v1/workflow-runs", server.url))
            .json(&json!({"definitionId": "notes", "input": {}})),
    )
    .await;
    created["data"]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("{created}"))
        .to_string()
}

/// Wait for the run to end; its status.
async fn finished(server: &Server, run_id: &str) -> Value {
    let url = format!("{}/v1/workflow-runs/{run_id}", server.url);
    let started = Instant::now();
    loop {
        let r = json_of(http().get(&url)).await;
        let status = r["data"]["status"].as_str().unwrap_or_default();
        if ["COMPLETED", "FAILED", "CANCELLED"].contains(&status) {
            return r["data"].clone();
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "run did not finish: {r}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn workspace(dir: &Path, run_id: &str) -> PathBuf {
    dir.join("server.db.workspaces").join(run_id)
}

/// The `tool` messages of a request, by call id: their content parsed.
fn tool_results(request: &Value) -> Vec<(String, Value)> {
    request["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["role"] == "tool")
        .map(|m| {
            let content = m["content"].as_str().unwrap();
            (
                m["tool_call_id"].as_str().unwrap().to_string(),
                serde_json::from_str(content).unwrap_or_else(|_| json!(content)),
            )
        })
        .collect()
}

/// The step's transcript (`meta.agent`), read from the stopped server's database.
fn transcript(dir: &Path, run_id: &str) -> (RunStatus, Value) {
    let store = SqliteStore::open(&dir.join("server.db"), Synchronous::Full).unwrap();
    let run = store.run(run_id).unwrap().unwrap();
    let steps = store.steps(run_id).unwrap();
    let agent = steps.last().unwrap().meta.clone().unwrap()["agent"].clone();
    (run.status, agent)
}

#[tokio::test(flavor = "multi_thread")]
async fn the_model_lists_writes_and_reads_its_workspace() {
    let plan = "# Week\n- Monday: ship the file tools\n";
    let model = ScriptedModel::start(vec![
        calls(&[("workspace_list", json!({}))]),
        calls(&[(
            "workspace_write",
            json!({"path": "notes/plan.md", "content": plan}),
        )]),
        calls(&[
            ("workspace_list", json!({"path": "notes"})),
            ("workspace_read", json!({"path": "notes/plan.md"})),
        ]),
        answer("The plan is in notes/plan.md."),
    ])
    .await;
    let dir = tempfile::tempdir().unwrap();
    with_definition(dir.path(), NOTES);
    let mut server = serve(dir.path(), &model, &[]);
    let run_id = start(&server).await;
    let run = finished(&server, &run_id).await;
    server.child.kill().unwrap();
    server.child.wait().unwrap();
    assert_eq!(run["status"], "COMPLETED", "{run}");
    assert_eq!(run["output"], json!("The plan is in notes/plan.md."));

    let requests = model.requests();
    assert_eq!(requests.len(), 4);
    // The model is offered the three file tools, as functions with JSON-Schema parameters.
    let offered: Vec<&str> = requests[0]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["function"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        offered,
        ["workspace_list", "workspace_read", "workspace_write"]
    );
    assert_eq!(
        requests[0]["tools"][1]["function"]["parameters"]["required"],
        json!(["path"])
    );
    let results = tool_results(&requests[3]);
    assert_eq!(
        results[0].1,
        json!({"path": ".", "entries": [], "truncated": false})
    );
    assert_eq!(
        results[1].1,
        json!({"path": "notes/plan.md", "bytes": plan.len()})
    );
    assert_eq!(
        results[2].1["entries"],
        json!([{"name": "plan.md", "kind": "file", "size": plan.len()}])
    );
    assert_eq!(
        results[3].1,
        json!({"path": "notes/plan.md", "size": plan.len(), "offset": 0, "content": plan})
    );
    // The file is in the run's workspace, and only there.
    assert_eq!(
        std::fs::read_to_string(workspace(dir.path(), &run_id).join("notes/plan.md")).unwrap(),
        plan
    );
    let (_, t) = transcript(dir.path(), &run_id);
    assert_eq!(t["tools"][2]["kind"], "file");
    assert_eq!(t["tools"][2]["op"], "write");
    let call = &t["turns"][1]["calls"][0];
    assert_eq!(call["name"], "workspace_write");
    assert_eq!(call["result"]["status"], "completed");
    assert!(
        call.get("childRunId").is_none(),
        "a file call starts no run"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn escapes_come_back_to_the_model_as_errors_and_touch_nothing_outside() {
    let dir = tempfile::tempdir().unwrap();
    let outside = dir.path().join("outside");
    std::fs::create_dir(&outside).unwrap();
    std::fs::write(outside.join("secret.txt"), "outside").unwrap();
    let secret = outside.join("secret.txt");
    let secret = secret.to_str().unwrap();
    let attempts = [
        (
            "workspace_read",
            json!({"path": "../../outside/secret.txt"}),
        ),
        ("workspace_read", json!({"path": secret})),
        ("workspace_read", json!({"path": "leak"})),
        ("workspace_read", json!({"path": "up/secret.txt"})),
        ("workspace_list", json!({"path": "up"})),
        ("workspace_list", json!({"path": "/"})),
        (
            "workspace_write",
            json!({"path": "leak", "content": "pwned"}),
        ),
        (
            "workspace_write",
            json!({"path": "up/planted.txt", "content": "pwned"}),
        ),
        (
            "workspace_write",
            json!({"path": "../escaped.txt", "content": "pwned"}),
        ),
        (
            "workspace_write",
            json!({"path": outside.join("abs.txt").to_str().unwrap(), "content": "pwned"}),
        ),
        ("workspace_read", json!({"path": "missing.txt"})),
        ("workspace_read", json!({})),
    ];
    let model = ScriptedModel::start(vec![calls(&attempts), answer("I could not get out.")]).await;
    // A script step plants links to the outside before the agent runs.
    let plant = format!(
        "steps:\n  - id: plant\n    type: script\n    command: [sh, -c, 'ln -s \"$0/secret.txt\" leak && ln -s \"$0\" up', {out}]\n",
        out = outside.display()
    );
    let yaml = NOTES.replace("steps:\n", &plant);
    with_definition(dir.path(), &yaml);
    let mut server = serve(
        dir.path(),
        &model,
        &["--allow-scripts", "--script-sandbox", "none"],
    );
    let run_id = start(&server).await;
    let run = finished(&server, &run_id).await;
    server.child.kill().unwrap();
    server.child.wait().unwrap();
    assert_eq!(run["status"], "COMPLETED", "{run}");

    let requests = model.requests();
    assert_eq!(requests.len(), 2);
    let kinds: Vec<String> = tool_results(&requests[1])
        .iter()
        .map(|(_, r)| r["error"]["kind"].as_str().unwrap_or("none").to_string())
        .collect();
    assert_eq!(
        kinds,
        [
            "invalid_path",
            "invalid_path",
            "symlink",
            "symlink",
            "symlink",
            "invalid_path",
            "symlink",
            "symlink",
            "invalid_path",
            "invalid_path",
            "not_found",
            "tool_arguments",
        ]
    );
    let first = &tool_results(&requests[1])[0].1["error"]["message"];
    assert_eq!(
        first,
        "`../../outside/secret.txt` is not a path inside the workspace: `..` is not allowed"
    );
    // Nothing outside was read (every result above is an error) or written.
    assert_eq!(
        std::fs::read_to_string(outside.join("secret.txt")).unwrap(),
        "outside"
    );
    let names: Vec<String> = std::fs::read_dir(&outside)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["secret.txt"]);
    assert!(!dir.path().join("server.db.workspaces/escaped.txt").exists());
    // The links are still there, unfollowed and unreplaced.
    let ws = workspace(dir.path(), &run_id);
    assert!(
        std::fs::symlink_metadata(ws.join("leak"))
            .unwrap()
            .is_symlink()
    );
    let (_, t) = transcript(dir.path(), &run_id);
    let statuses: Vec<&str> = t["turns"][0]["calls"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["result"]["status"].as_str().unwrap())
        .collect();
    assert!(statuses.iter().all(|s| *s == "failed"), "{statuses:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_kill_9_mid_loop_neither_writes_again_nor_resends_completed_calls() {
    let model = ScriptedModel::start(vec![
        calls(&[(
            "workspace_write",
            json!({"path": "draft.md", "content": "first draft"}),
        )]),
        calls(&[("workspace_read", json!({"path": "draft.md"}))]),
        answer("Read it."),
    ])
    .await;
    // The second model call is in flight when the server dies.
    model.hold_at(1);
    let dir = tempfile::tempdir().unwrap();
    with_definition(dir.path(), NOTES);
    let mut server = serve(dir.path(), &model, &[]);
    let run_id = start(&server).await;
    let started = Instant::now();
    while model.requests().len() < 2 {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "no second call"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    server.child.kill().unwrap(); // SIGKILL
    server.child.wait().unwrap();
    let draft = workspace(dir.path(), &run_id).join("draft.md");
    assert_eq!(std::fs::read_to_string(&draft).unwrap(), "first draft");
    // Changed behind the loop's back: a write run again would put "first draft" back.
    std::fs::write(&draft, "edited while the server was down").unwrap();

    let mut server = serve(dir.path(), &model, &[]);
    model.open_gate();
    let run = finished(&server, &run_id).await;
    server.child.kill().unwrap();
    server.child.wait().unwrap();
    assert_eq!(run["status"], "COMPLETED", "{run}");

    let requests = model.requests();
    let turns: Vec<usize> = requests.iter().map(turn_of).collect();
    assert_eq!(
        turns,
        [0, 1, 1, 2],
        "the first call is not sent again; the one in flight is"
    );
    let read = &tool_results(&requests[3])[1].1;
    assert_eq!(read["content"], "edited while the server was down");
    assert_eq!(
        std::fs::read_to_string(&draft).unwrap(),
        "edited while the server was down",
        "the completed write did not run again"
    );
    let (status, t) = transcript(dir.path(), &run_id);
    assert_eq!(status, RunStatus::Completed);
    assert_eq!(t["turns"].as_array().unwrap().len(), 3);
    let store = SqliteStore::open(&dir.path().join("server.db"), Synchronous::Full).unwrap();
    let writes = store
        .events(&run_id)
        .unwrap()
        .into_iter()
        .filter(|e| e.kind.as_str() == "agent.tool" && e.data["tool"] == "workspace_write")
        .count();
    assert_eq!(writes, 1, "one write result recorded");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_read_only_step_is_not_offered_writes() {
    let model = ScriptedModel::start(vec![
        calls(&[("workspace_write", json!({"path": "x.txt", "content": "no"}))]),
        answer("I may only read."),
    ])
    .await;
    let dir = tempfile::tempdir().unwrap();
    with_definition(
        dir.path(),
        &NOTES.replace("files: true", "files: read-only"),
    );
    let mut server = serve(dir.path(), &model, &[]);
    let run_id = start(&server).await;
    let run = finished(&server, &run_id).await;
    server.child.kill().unwrap();
    server.child.wait().unwrap();
    assert_eq!(run["status"], "COMPLETED", "{run}");
    let requests = model.requests();
    let offered: Vec<&str> = requests[0]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["function"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(offered, ["workspace_list", "workspace_read"]);
    assert_eq!(
        tool_results(&requests[1])[0].1["error"]["kind"],
        "unknown_tool"
    );
    assert!(!workspace(dir.path(), &run_id).join("x.txt").exists());
}

/// The tool names the model was offered in its first call, on a run of `yaml`.
async fn offered_on(yaml: &str) -> Vec<String> {
    let model = ScriptedModel::start(vec![answer("Done.")]).await;
    let dir = tempfile::tempdir().unwrap();
    with_definition(dir.path(), yaml);
    let mut server = serve(dir.path(), &model, &[]);
    let run_id = start(&server).await;
    let run = finished(&server, &run_id).await;
    server.child.kill().unwrap();
    server.child.wait().unwrap();
    assert_eq!(run["status"], "COMPLETED", "{run}");
    let requests = model.requests();
    requests[0]["tools"]
        .as_array()
        .map(|tools| {
            tools
                .iter()
                .map(|t| t["function"]["name"].as_str().unwrap().to_string())
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_workspace_gives_its_agents_file_tools_unless_a_step_says_false() {
    let by_default = offered_on(&NOTES.replace("    files: true\n", "")).await;
    assert_eq!(
        by_default,
        ["workspace_list", "workspace_read", "workspace_write"]
    );
    let refused = offered_on(&NOTES.replace("files: true", "files: false")).await;
    assert!(refused.is_empty(), "{refused:?}");
    let without_workspace = offered_on(
        &NOTES
            .replace("workspace: true\n", "")
            .replace("    files: true\n", ""),
    )
    .await;
    assert!(without_workspace.is_empty(), "{without_workspace:?}");
}
