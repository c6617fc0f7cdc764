#!/usr/bin/env python3
# Durable steps/s of N ready 3-step runs (transforms) with K `stepwise serve` processes on one
# Postgres database (a fresh schema). Usage: scripts/scale_bench.py N K  (STEPWISE_BIN=target/release/stepwise)
import os, subprocess, sys, time
n=int(sys.argv[1]); procs=int(sys.argv[2])
schema=f"bench_tput_{procs}"
def q(sql): return subprocess.run(["psql","-Atqh","127.0.0.1","-U","root","test","-c",f"set search_path={schema}; {sql}"],capture_output=True,text=True).stdout.strip()
os.system(f"psql -qh 127.0.0.1 -U root test -c 'drop schema if exists {schema} cascade; create schema {schema}' 2>/dev/null")
url=f"postgres://root@127.0.0.1:5432/test?options=-csearch_path%3D{schema}"
bin=os.path.abspath(os.environ.get("STEPWISE_BIN", "target/debug/stepwise"))
# migrate + a definition through one short-lived server
p=subprocess.Popen([bin,"serve","--insecure-no-auth","--addr","127.0.0.1:18201","--db",url],stdout=subprocess.DEVNULL,stderr=subprocess.DEVNULL,cwd=os.environ.get("TMPDIR", "/tmp"))
import urllib.request
for _ in range(200):
    try: urllib.request.urlopen("http://127.0.0.1:18201/readyz",timeout=1); break
    except Exception: time.sleep(0.05)
y="id: three\nsteps:\n  - id: a\n    type: action\n    uses: transform\n    with: {value: 1}\n  - id: b\n    type: action\n    uses: transform\n    with: {value: 2}\n  - id: c\n    type: action\n    uses: transform\n    with: {value: 3}\n"
urllib.request.urlopen(urllib.request.Request("http://127.0.0.1:18201/v1/workflow-definitions",data=y.encode(),headers={"content-type":"application/yaml"},method="POST")).read()
p.kill(); p.wait()
q(f"""insert into runs (id, workspace_id, definition_id, definition_slug, status, input, current_step_index, attempt, trigger, created_at, updated_at, epoch)
select 'wfrun_bench'||lpad(g::text,8,'0'), 'ws_default', (select version_id from definitions limit 1), 'three', 'PENDING', '{{}}', 0, 1, '{{"kind":"api"}}', g, g, 0 from generate_series(1,{n}) g""")
t0=time.time()
ps=[subprocess.Popen([bin,"serve","--insecure-no-auth","--addr","127.0.0.1:0","--db",url],stdout=subprocess.DEVNULL,stderr=subprocess.DEVNULL,cwd=os.environ.get("TMPDIR", "/tmp")) for _ in range(procs)]
while True:
    left=int(q("select count(*) from runs where status in ('PENDING','RUNNING')") or 0)
    if left==0: break
    if time.time()-t0>600: print("timeout",left); break
    time.sleep(0.2)
dt=time.time()-t0
done=int(q("select count(*) from step_executions where status='COMPLETED'"))
print(f"postgres, {procs} process(es): {n} runs, {done} step completions in {dt:.1f}s = {done/dt:.0f} durable steps/s (debug build, incl. start)")
for x in ps: x.kill(); x.wait()
os.system(f"psql -qh 127.0.0.1 -U root test -c 'drop schema if exists {schema} cascade' 2>/dev/null")
