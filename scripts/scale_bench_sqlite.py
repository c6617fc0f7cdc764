#!/usr/bin/env python3
# The same 3-step runs on SQLite, one process. Usage: scripts/scale_bench_sqlite.py N
import os, sqlite3, subprocess, sys, time, urllib.request
n=int(sys.argv[1]); db=os.path.join(os.environ.get("TMPDIR", "/tmp"), "stepwise-scale-bench.db")
for f in [db, db+"-wal", db+"-shm", db+".lock"]:
    if os.path.exists(f): os.remove(f)
bin=os.path.abspath(os.environ.get("STEPWISE_BIN", "target/debug/stepwise"))
p=subprocess.Popen([bin,"serve","--insecure-no-auth","--addr","127.0.0.1:18301","--db",db],stdout=subprocess.DEVNULL,stderr=subprocess.DEVNULL,cwd=os.environ.get("TMPDIR", "/tmp"))
for _ in range(200):
    try: urllib.request.urlopen("http://127.0.0.1:18301/readyz",timeout=1); break
    except Exception: time.sleep(0.05)
y="id: three\nsteps:\n  - id: a\n    type: action\n    uses: transform\n    with: {value: 1}\n  - id: b\n    type: action\n    uses: transform\n    with: {value: 2}\n  - id: c\n    type: action\n    uses: transform\n    with: {value: 3}\n"
urllib.request.urlopen(urllib.request.Request("http://127.0.0.1:18301/v1/workflow-definitions",data=y.encode(),headers={"content-type":"application/yaml"},method="POST")).read()
p.kill(); p.wait()
c=sqlite3.connect(db)
d=c.execute("select version_id from definitions limit 1").fetchone()[0]
c.executemany("insert into runs (id, workspace_id, definition_id, definition_slug, status, input, current_step_index, attempt, trigger, created_at, updated_at) values (?,?,?,?,?,?,?,?,?,?,?)",
  [(f"wfrun_bench{g:08d}","ws_default",d,"three","PENDING","{}",0,1,'{"kind":"api"}',g,g) for g in range(1,n+1)])
c.commit(); c.close()
t0=time.time()
p=subprocess.Popen([bin,"serve","--insecure-no-auth","--addr","127.0.0.1:18301","--db",db],stdout=subprocess.DEVNULL,stderr=subprocess.DEVNULL,cwd=os.environ.get("TMPDIR", "/tmp"))
while True:
    c=sqlite3.connect(db); left=c.execute("select count(*) from runs where status in ('PENDING','RUNNING')").fetchone()[0]; c.close()
    if left==0: break
    time.sleep(0.2)
dt=time.time()-t0
c=sqlite3.connect(db); done=c.execute("select count(*) from step_executions where status='COMPLETED'").fetchone()[0]
print(f"sqlite (synchronous=full), 1 process: {n} runs, {done} step completions in {dt:.1f}s = {done/dt:.0f} durable steps/s (debug build, incl. start)")
p.kill(); p.wait()
