#!/usr/bin/env python3
# Signal -> next step latency on Postgres when the signal reaches a process other than the one
# that started the run: process A creates N runs that wait at an external_event; each signal is
# posted to process B (POST /v1/signals), which claims the run, records the event and runs the
# next step; the time until the run reads COMPLETED at B. Prints p50/p90/p99.
# Usage: scripts/signal_latency_bench.py [N]   (STEPWISE_BIN: the binary, default debug)
import json, os, statistics, subprocess, sys, time, urllib.request
n = int(sys.argv[1]) if len(sys.argv) > 1 else 200
schema = "bench_signal_latency"
os.system(f"psql -qh 127.0.0.1 -U root test -c 'drop schema if exists {schema} cascade; create schema {schema}' 2>/dev/null")
url = f"postgres://root@127.0.0.1:5432/test?options=-csearch_path%3D{schema}"
bin = os.path.abspath(os.environ.get("STEPWISE_BIN", "target/debug/stepwise"))
def serve(port):
    return subprocess.Popen([bin, "serve", "--insecure-no-auth", "--addr", f"127.0.0.1:{port}", "--db", url],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=os.environ.get("TMPDIR", "/tmp"))
def call(port, method, path, body=None, ctype="application/json"):
    data = body.encode() if body is not None else None
    r = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=data, headers={"content-type": ctype}, method=method)
    return json.loads(urllib.request.urlopen(r, timeout=10).read())
def wait(port):
    for _ in range(400):
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1); return
        except Exception:
            time.sleep(0.05)
A, B = 18201, 18202
a, b = serve(A), serve(B)
wait(A); wait(B)
call(A, "POST", "/v1/workflow-definitions", """id: paid
input: {type: object, required: [orderId], properties: {orderId: {type: string}}}
steps:
  - id: paid
    type: external_event
    signal: payment.confirmed
    correlate: "{{ input.orderId }}"
  - id: ship
    type: action
    uses: transform
    with: {value: {done: true}}
""", "application/yaml")
ids = []
for i in range(n):
    ids.append(call(A, "POST", "/v1/workflow-runs", json.dumps({"definitionId": "paid", "input": {"orderId": f"o-{i}"}}))["data"]["id"])
for run in ids:
    while call(B, "GET", f"/v1/workflow-runs/{run}")["data"]["status"] != "WAITING":
        time.sleep(0.01)
lat = []
for i, run in enumerate(ids):
    t0 = time.perf_counter()
    call(B, "POST", "/v1/signals", json.dumps({"signalType": "payment.confirmed", "correlate": f"o-{i}", "payload": {}}))
    while call(B, "GET", f"/v1/workflow-runs/{run}")["data"]["status"] != "COMPLETED":
        time.sleep(0.0005)
    lat.append((time.perf_counter() - t0) * 1000)
lat.sort()
q = lambda p: lat[min(len(lat) - 1, int(p * len(lat)))]
print(f"signal at a non-owner -> next step done, {n} runs: p50 {q(0.5):.1f} ms, p90 {q(0.9):.1f} ms, p99 {q(0.99):.1f} ms, mean {statistics.mean(lat):.1f} ms")
a.kill(); b.kill(); a.wait(); b.wait()
os.system(f"psql -qh 127.0.0.1 -U root test -c 'drop schema if exists {schema} cascade' 2>/dev/null")
