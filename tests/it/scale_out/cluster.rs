//! The crash test's processes (killed and started again on their ports) and its own
//! view of the run table (who holds what).

use std::collections::{HashMap, HashSet};
use std::process::{Child, Stdio};
use std::time::Duration;

use stepwise::store::PgStore;
use stepwise::store::test_backends;

use super::serve_on;

/// The three processes, each restarted on its own port after a kill.
pub(super) struct Procs {
    pub(super) url: String,
    pub(super) dir: std::path::PathBuf,
    pub(super) addrs: Vec<String>,
    pub(super) children: Vec<Child>,
    pub(super) started: Vec<usize>,
}

impl Procs {
    pub(super) fn start(url: &str, dir: &std::path::Path) -> Procs {
        let addrs: Vec<String> = (0..3)
            .map(|_| {
                let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
                l.local_addr().unwrap().to_string()
            })
            .collect();
        let mut p = Procs {
            url: url.to_string(),
            dir: dir.to_path_buf(),
            addrs,
            children: Vec::new(),
            started: vec![0; 3],
        };
        for slot in 0..3 {
            let child = p.spawn(slot);
            p.children.push(child);
        }
        p
    }

    pub(super) fn spawn(&mut self, slot: usize) -> Child {
        self.started[slot] += 1;
        let log = std::fs::File::create(self.log(slot, self.started[slot])).unwrap();
        serve_on(&self.url, &self.dir, &self.addrs[slot], Stdio::from(log))
    }

    pub(super) fn log(&self, slot: usize, n: usize) -> std::path::PathBuf {
        self.dir.join(format!("serve-{slot}-{n}.log"))
    }

    pub(super) fn kill(&mut self, slot: usize) {
        let _ = self.children[slot].kill(); // SIGKILL
        let _ = self.children[slot].wait();
    }

    pub(super) fn restart(&mut self, slot: usize) {
        self.children[slot] = self.spawn(slot);
    }

    /// Start again the processes that exited by themselves (none should: a process that
    /// cannot reach the database at start exits), and say which.
    pub(super) fn revive(&mut self) -> Vec<String> {
        let mut exited = Vec::new();
        for slot in 0..3 {
            if let Ok(Some(status)) = self.children[slot].try_wait() {
                exited.push(format!(
                    "process {slot} (start {}) exited by itself: {status}",
                    self.started[slot]
                ));
                self.restart(slot);
            }
        }
        exited
    }

    pub(super) fn stop(&mut self) {
        for slot in 0..3 {
            self.kill(slot);
        }
    }

    /// The last lines of every log, for a failure's report.
    pub(super) fn logs(&self) -> String {
        let mut out = String::new();
        for slot in 0..3 {
            for n in 1..=self.started[slot] {
                let text = std::fs::read_to_string(self.log(slot, n)).unwrap_or_default();
                let lines: Vec<&str> = text.lines().collect();
                let tail = &lines[lines.len().saturating_sub(8)..];
                if !tail.is_empty() {
                    out.push_str(&format!(
                        "--- process {slot}, start {n}\n{}\n",
                        tail.join("\n")
                    ));
                }
            }
        }
        out
    }
}

/// The counting server notes a request when its handler runs, which on the busy test
/// runtime can be a little after the request was sent (µs).
pub(super) const RECORDING_LAG: i64 = 500_000;

/// The test's own queries answer within this or count as no answer.
const QUERY_LIMIT: Duration = Duration::from_secs(5);

/// A kill -9: when it was done (on the counting server's clock, µs) and the runs the
/// process held then (those it was executing; a call of theirs may be made again).
pub(super) struct Kill {
    pub(super) at: i64,
    pub(super) held: HashSet<String>,
}

/// The test's own connection to the schema, for what the store does not tell.
pub(super) struct Db {
    pub(super) client: Option<tokio_postgres::Client>,
    pub(super) schema: String,
}

impl Db {
    pub(super) async fn connect(store: &PgStore) -> Db {
        let base = test_backends::postgres_url().unwrap_or_default();
        let client = match tokio_postgres::connect(&base, tokio_postgres::NoTls).await {
            Ok((client, conn)) => {
                tokio::spawn(conn);
                Some(client)
            }
            Err(_) => None,
        };
        let schema = store.schema().unwrap_or_default().to_string();
        Db { client, schema }
    }

    /// Runs whose owner is the process with this pid (owners are `host:pid:nonce`): right
    /// after its kill, those it held (nothing takes them before their leases expire).
    pub(super) async fn held_by(&self, pid: u32) -> HashSet<String> {
        let Some(c) = &self.client else {
            return Default::default();
        };
        let sql = format!(
            "SELECT id FROM \"{}\".runs WHERE split_part(owner, ':', 2) = $1",
            self.schema
        );
        match tokio::time::timeout(QUERY_LIMIT, c.query(&sql, &[&pid.to_string()])).await {
            Ok(Ok(rows)) => rows.iter().map(|r| r.get(0)).collect(),
            _ => HashSet::new(),
        }
    }

    /// Each unfinished run's owner, epoch and how long its lease still runs.
    pub(super) async fn owners(&self) -> HashMap<String, String> {
        let mut out = HashMap::new();
        let Some(c) = &self.client else {
            return out;
        };
        let sql = format!(
            "SELECT id, owner, epoch, lease_until - (extract(epoch from clock_timestamp()) * 1000000)::bigint \
             FROM \"{}\".runs WHERE status NOT IN ('COMPLETED', 'FAILED', 'CANCELLED')",
            self.schema
        );
        let rows = tokio::time::timeout(QUERY_LIMIT, c.query(&sql, &[])).await;
        for row in rows.ok().and_then(Result::ok).unwrap_or_default() {
            let id: String = row.get(0);
            let owner: Option<String> = row.get(1);
            let epoch: i64 = row.get(2);
            let left: Option<i64> = row.get(3);
            let lease = left.map_or("none".to_string(), |us| format!("{} ms left", us / 1000));
            out.insert(id, format!("owner {owner:?}, epoch {epoch}, lease {lease}"));
        }
        out
    }
}

pub(super) fn between_kills() -> Duration {
    Duration::from_millis(fastrand::u64(1500..3000))
}
