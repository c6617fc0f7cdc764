"""stepwise's MCP server driven by an independent client: the Python `mcp` package (PyPI).

Usage:
  python3 tests/mcp_client.py http URL API_KEY   # a running `stepwise serve` (loopback only)
  python3 tests/mcp_client.py stdio STEPWISE_BINARY DEFINITIONS_DIR DB

Over HTTP it first applies its own workflows (transform steps and an approval: nothing
leaves the machine). Either way it lists the tools, calls a workflow to completion, calls
one that pauses and approves it with runs_approve. It prints 'N passed, N failed' and exits
non-zero on a failure; without the package it says so and exits 0 (skipped).
"""

from __future__ import annotations

import json
import sys
import urllib.request

try:
    import anyio
    import httpx2
    from mcp import ClientSession
    from mcp.client.stdio import StdioServerParameters, stdio_client
    from mcp.client.streamable_http import streamable_http_client
    from mcp.types import Implementation
except ImportError as e:  # pragma: no cover - reported, not failed
    print(f"skipped: the Python `mcp` package is not importable ({e}); pip install mcp")
    sys.exit(0)

HELLO = """
id: py-hello
description: Greet someone.
input:
  type: object
  required: [name]
  properties:
    name: {type: string}
output:
  type: object
  required: [greeting]
  properties:
    greeting: {type: string}
steps:
  - id: greet
    type: action
    uses: transform
    with: {value: {greeting: "Hello {{ input.name }}"}}
"""

REVIEW = """
id: py-review
input:
  type: object
  properties:
    item: {type: string}
steps:
  - id: approval
    type: approval
    message: "Ship {{ input.item }}?"
    options: [approve, reject]
  - id: done
    type: action
    uses: transform
    with: {value: {decision: "{{ steps.approval.output }}"}}
"""

results: list[tuple[str, bool, str]] = []


def check(name: str, ok: bool, detail: object = "") -> None:
    results.append((name, ok, str(detail)))
    print(f"{'ok  ' if ok else 'FAIL'} {name}" + ("" if ok else f": {detail}"))


def apply(url: str, key: str, yaml: str) -> None:
    req = urllib.request.Request(
        f"{url}/v1/workflow-definitions",
        data=yaml.encode(),
        headers={"content-type": "application/yaml", "x-api-key": key},
        method="POST",
    )
    with urllib.request.urlopen(req, timeout=10) as resp:
        assert resp.status in (200, 201), resp.status


async def exercise(session: ClientSession) -> None:
    await session.initialize()
    tools = {t.name: t for t in (await session.list_tools()).tools}
    check("tools/list has the workflows", {"py-hello", "py-review"} <= tools.keys(), sorted(tools))
    check("tools/list has the management tools", {"runs_get", "runs_approve", "runs_cancel"} <= tools.keys())
    hello = tools.get("py-hello")
    check("a workflow's input schema", hello is not None and hello.input_schema.get("required") == ["name"])
    check("a workflow's output schema", hello is not None and hello.output_schema is not None)
    cancel = tools.get("runs_cancel")
    check("runs_cancel is destructive", cancel is not None and cancel.annotations.destructive_hint is True)

    r = await session.call_tool("py-hello", {"name": "Ann"})
    check("a call to completion", not r.is_error and r.structured_content == {"greeting": "Hello Ann"}, r)

    r = await session.call_tool("py-review", {"item": "the order"})
    paused = r.structured_content or {}
    check("a call that pauses", not r.is_error and paused.get("status") == "PAUSED", r)
    check("its pending action", (paused.get("pendingAction") or {}).get("options") == ["approve", "reject"], paused)
    r = await session.call_tool("runs_approve", {"runId": paused.get("runId", "")})
    done = r.structured_content or {}
    check("approved through runs_approve", done.get("status") == "COMPLETED" and done.get("output") == {"decision": "approve"}, r)


async def over_http(url: str, key: str) -> None:
    for yaml in (HELLO, REVIEW):
        apply(url, key, yaml)
    async with httpx2.AsyncClient(headers={"x-api-key": key}, timeout=60) as http:
        async with streamable_http_client(f"{url}/mcp", http_client=http) as (read, write):
            async with ClientSession(read, write, client_info=Implementation(name="py-agent", version="1")) as s:
                await exercise(s)


async def over_stdio(binary: str, definitions: str, db: str) -> None:
    with open(f"{definitions}/py-hello.yaml", "w") as f:
        f.write(HELLO)
    with open(f"{definitions}/py-review.yaml", "w") as f:
        f.write(REVIEW)
    params = StdioServerParameters(command=binary, args=["mcp", "--db", db, "--definitions", definitions])
    async with stdio_client(params) as (read, write):
        async with ClientSession(read, write, client_info=Implementation(name="py-agent", version="1")) as s:
            await exercise(s)


def main() -> None:
    mode, *rest = sys.argv[1:]
    try:
        if mode == "http":
            anyio.run(over_http, *rest)
        else:
            anyio.run(over_stdio, *rest)
    except Exception as e:  # a transport or protocol failure is a failed check
        check(f"the {mode} session", False, repr(e))
    failed = sum(1 for _, ok, _ in results if not ok)
    print(f"mcp-{mode}: {len(results) - failed} passed, {failed} failed")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
