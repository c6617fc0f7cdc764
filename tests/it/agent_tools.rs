//! Agent steps with tools: applying checks the tools against the workspace's workflows.

use stepwise::store::DEFAULT_WORKSPACE;

use crate::engine::Env;

const LOOKUP: &str = r#"
id: lookup-order
description: Look an order up by its id.
input:
  type: object
  required: [orderId]
  properties:
    orderId: {type: string}
steps:
  - id: find
    type: action
    uses: transform
    with: {value: {orderId: "{{ input.orderId }}", status: delivered}}
"#;

const WAITING: &str = r#"
id: refund-order
steps:
  - id: pay
    type: action
    uses: workflow
    with: {definition: confirm-refund}
"#;

const CONFIRM: &str = r#"
id: confirm-refund
steps:
  - id: ok
    type: approval
    message: Refund?
    options: [yes, no]
"#;

const AGENT: &str = r#"
id: support
steps:
  - id: help
    type: agent
    prompt: Help.
    tools: [lookup-order, refund-order]
"#;

/// The diagnostics an applied definition is refused with, as `code: message`.
async fn refused(env: &Env, yaml: &str) -> Vec<String> {
    match env
        .engine
        .apply_definition(DEFAULT_WORKSPACE, "support.yaml", yaml)
        .await
        .unwrap()
    {
        Ok((rec, _)) => panic!("{} was applied", rec.slug),
        Err(r) => r
            .diagnostics
            .iter()
            .map(|d| format!("{}: {}", d.code.as_str(), d.message))
            .collect(),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn applying_an_agent_checks_its_tools_against_the_workspace() {
    let env = Env::new().await;
    assert_eq!(
        refused(&env, AGENT).await,
        [
            "stepwise::agent::unknown_tool: no workflow `lookup-order` in this workspace to use as a tool",
            "stepwise::agent::unknown_tool: no workflow `refund-order` in this workspace to use as a tool",
        ]
    );
    env.apply(LOOKUP).await;
    env.apply(CONFIRM).await;
    env.apply(WAITING).await;
    assert_eq!(
        refused(&env, AGENT).await,
        [
            "stepwise::agent::tool_can_suspend: `refund-order` cannot be a tool: its step `pay` starts `confirm-refund`, and its step `ok` is an approval, which suspends the run"
        ]
    );
    let pinned = AGENT.replace(
        "lookup-order, refund-order",
        "{workflow: lookup-order, version: 2}",
    );
    assert_eq!(
        refused(&env, &pinned).await,
        ["stepwise::agent::unknown_tool: workflow `lookup-order` has no version 2"]
    );
    let typo = AGENT.replace("lookup-order, refund-order", "lookup-ordr");
    let d = match env
        .engine
        .apply_definition(DEFAULT_WORKSPACE, "support.yaml", &typo)
        .await
        .unwrap()
    {
        Err(r) => r.diagnostics,
        Ok(_) => panic!("applied"),
    };
    assert_eq!(d[0].help.as_deref(), Some("did you mean `lookup-order`?"));
    env.apply(&AGENT.replace("lookup-order, refund-order", "lookup-order"))
        .await;
}
