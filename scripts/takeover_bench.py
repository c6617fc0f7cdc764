#!/usr/bin/env python3
# Takeover time after kill -9: 20 runs in flight in one process (an http step to
# scripts/slow_server.py on 127.0.0.1:18999, which answers after 30 s), kill -9 it while a second
# process runs; the time until every run was taken over. Usage: scripts/takeover_bench.py LEASE
import json, os, signal, subprocess, sys, time, urllib.request
lease=sys.argv[1]
schema="bench_takeover_"+lease.replace('s','')
os.system(f"psql -qh 127.0.0.1 -U root test -c 'drop schema if exists {schema} cascade; create schema {schema}'")
url=f"postgres://root@127.0.0.1:5432/test?options=-csearch_path%3D{schema}"
bin=os.path.abspath(os.environ.get("STEPWISE_BIN", "target/debug/stepwise"))
def serve(port):
    return subprocess.Popen([bin,"serve","--insecure-no-auth","--addr",f"127.0.0.1:{port}","--lease",lease,"--db",url],stdout=subprocess.DEVNULL,stderr=subprocess.DEVNULL,cwd=os.environ.get("TMPDIR", "/tmp"))
def req(port,path,body,ctype="application/json"):
    r=urllib.request.Request(f"http://127.0.0.1:{port}{path}",data=body.encode(),headers={"content-type":ctype},method="POST")
    return json.loads(urllib.request.urlopen(r,timeout=10).read())
def wait(port):
    for _ in range(200):
        try: urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz",timeout=1); return
        except Exception: time.sleep(0.05)
a=serve(18101); wait(18101)
req(18101,"/v1/workflow-definitions","id: slow\nsteps:\n  - id: call\n    type: action\n    uses: http\n    with: {method: POST, url: \"http://127.0.0.1:18999/x\", json: {}}\n","application/yaml")
for i in range(20): req(18101,"/v1/workflow-runs",json.dumps({"definitionId":"slow"}))
time.sleep(2)
b=serve(18102); wait(18102)
t0=time.time(); a.send_signal(signal.SIGKILL); a.wait()
def q(sql): return subprocess.run(["psql","-Atqh","127.0.0.1","-U","root","test","-c",f"set search_path={schema}; {sql}"],capture_output=True,text=True).stdout.strip()
while True:
    n=q("select count(distinct run_id) from events where kind='step.recovered'")
    if n and int(n)>=20: break
    if time.time()-t0>60: print("timeout", n); break
    time.sleep(0.05)
t1=time.time()
print(f"lease {lease}: all 20 runs taken over {t1-t0:.2f}s after kill -9")
b.kill(); b.wait()
os.system(f"psql -qh 127.0.0.1 -U root test -c 'drop schema if exists {schema} cascade'")
