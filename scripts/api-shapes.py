#!/usr/bin/env python3
"""Run the same API calls against two stepwise binaries (each serving examples/ on loopback with
--insecure-no-auth) and compare the shape of every answer: status, keys in order, value types.
Usage: api-shapes.py OLD_BINARY NEW_BINARY EXAMPLES_DIR"""
import json, subprocess, sys, time, urllib.request, tempfile, os, socket

def free():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close(); return p

def start(binary, examples):
    port = free(); d = tempfile.mkdtemp()
    p = subprocess.Popen([binary, "serve", "--insecure-no-auth", "--addr", f"127.0.0.1:{port}", "--db", f"{d}/x.db", "--definitions", examples], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    for _ in range(100):
        try:
            urllib.request.urlopen(base + "/healthz", timeout=1); break
        except Exception:
            time.sleep(0.1)
    return p, base

def call(base, method, path, body=None):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(base + path, data=data, method=method, headers={"content-type": "application/json"} if data else {})
    try:
        r = urllib.request.urlopen(req, timeout=10); code = r.status; text = r.read().decode()
    except urllib.error.HTTPError as e:
        code = e.code; text = e.read().decode()
    try:
        return code, json.loads(text)
    except Exception:
        return code, text

def shape(v):
    if isinstance(v, dict):
        return [[k, shape(x)] for k, x in v.items()]
    if isinstance(v, list):
        return [shape(x) for x in v]
    return type(v).__name__

def scenario(base):
    out = []
    def rec(name, res):
        out.append((name, res[0], shape(res[1])))
        return res[1]
    r = rec("create", call(base, "POST", "/v1/workflow-runs?wait=5s", {"definitionId": "expense-approval", "input": {"employee": "Ada", "amount": 12}, "idempotencyKey": "k"}))
    rid = r["data"]["id"]
    rec("create-again", call(base, "POST", "/v1/workflow-runs", {"definitionId": "expense-approval", "input": {"employee": "Ada", "amount": 12}, "idempotencyKey": "k"}))
    rec("get", call(base, "GET", f"/v1/workflow-runs/{rid}"))
    rec("get-all", call(base, "GET", f"/v1/workflow-runs/{rid}?include=trigger,steps,trace,usage"))
    rec("list", call(base, "GET", "/v1/workflow-runs"))
    rec("history", call(base, "GET", "/v1/history"))
    h = rec("hooks", call(base, "GET", f"/v1/workflow-runs/{rid}/hooks?all=true"))
    rec("resume", call(base, "POST", f"/v1/workflow-runs/{rid}/resume", {"step": "review", "input": "approve"}))
    rec("get-waiting", call(base, "GET", f"/v1/workflow-runs/{rid}?wait=5s&include=trace"))
    rec("hook-post", call(base, "POST", f"/v1/hooks/{h['data'][0]['token']}/resume", "approve"))
    rec("signal", call(base, "POST", f"/v1/workflow-runs/{rid}/resume", {"signalType": "payout.sent", "payload": {"reference": "x"}}))
    rec("get-done", call(base, "GET", f"/v1/workflow-runs/{rid}?wait=5s&include=trace,usage"))
    rec("cancel-409", call(base, "POST", f"/v1/workflow-runs/{rid}/cancel"))
    rec("retry-409", call(base, "POST", f"/v1/workflow-runs/{rid}/retry"))
    rec("defs", call(base, "GET", "/v1/workflow-definitions"))
    rec("def", call(base, "GET", "/v1/workflow-definitions/expense-approval"))
    rec("def-404", call(base, "GET", "/v1/workflow-definitions/nope"))
    rec("triggers", call(base, "GET", "/v1/triggers"))
    rec("bad", call(base, "POST", "/v1/workflow-runs", {"definitionId": 3}))
    rec("health", call(base, "GET", "/healthz"))
    return out

old_p, old_base = start(sys.argv[1], sys.argv[3])
new_p, new_base = start(sys.argv[2], sys.argv[3])
try:
    a, b = scenario(old_base), scenario(new_base)
finally:
    old_p.kill(); new_p.kill()
diffs = 0
for x, y in zip(a, b):
    if x != y:
        diffs += 1
        print("DIFF", x[0], x[1], y[1]); print(" old", json.dumps(x[2])[:1500]); print(" new", json.dumps(y[2])[:1500])
print(len(a), "answers compared,", diffs, "differ")
