//! One environment (store, clock, engine, executor server) serves many cases: starting an
//! engine costs tens of milliseconds, a case a few. A case drives its operations, checks the
//! invariants whenever the engine has settled, then drains: it heals the store, advances the
//! clock and answers every wait until all of its runs have ended.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use stepwise::clock::ManualClock;
use stepwise::engine::{Engine, EngineConfig, EngineError};
use stepwise::model::{RunStatus, StepStatus};
use stepwise::store::{DEFAULT_WORKSPACE, StepRecord, Store, Synchronous, Write, test_backends};

use super::checks::{self, Invariant, RunView, Violations};
use super::expect::Expect;
use super::model::{Action, Case, Kind, Op, Workflow};
use super::server::FaultServer;
use super::store::FaultStore;
use super::{Defect, Known};

/// How long a command or `until_idle` may take before the engine counts as hung.
const LIMIT: Duration = Duration::from_secs(10);

pub struct Env {
    _dir: tempfile::TempDir,
    pub store: Arc<FaultStore>,
    pub clock: ManualClock,
    pub engine: Engine,
    pub server: FaultServer,
    pub config: EngineConfig,
    pub known: Known,
    /// Definitions applied so far: workflow YAML (without its id line) → slug.
    slugs: HashMap<String, String>,
    next_case: u64,
}

impl Env {
    pub async fn new(known: Known) -> Env {
        let shm = std::path::Path::new("/dev/shm");
        let dir = if shm.is_dir() {
            tempfile::tempdir_in(shm)
        } else {
            tempfile::tempdir()
        }
        .expect("temporary directory");
        let inner = test_backends::open(&dir.path().join("faults.db"), Synchronous::Normal)
            .expect("open the store");
        let store = Arc::new(FaultStore::new(inner));
        let server = FaultServer::start().await;
        if !known.has(Defect::CommitFailureReloadsRuns) {
            server.watch(Some(store.inner().clone()));
        }
        let mut config = EngineConfig::default();
        config.llm.base_url = Some(format!("{}/v1", server.base()));
        config.llm.model = Some("fault-model".into());
        // Cases inject many commit failures; retrying them quickly keeps cases short.
        config.commit_retry_first = Duration::from_millis(2);
        config.commit_retry_max = Duration::from_millis(20);
        let clock = ManualClock::new("2030-01-01T00:00:00Z".parse().expect("a timestamp"));
        let engine = start(&store, &clock, &config);
        Env {
            _dir: dir,
            store,
            clock,
            engine,
            server,
            config,
            known,
            slugs: HashMap::new(),
            next_case: 0,
        }
    }

    async fn slug(&mut self, wf: &Workflow) -> Result<String, String> {
        let body = wf.yaml("");
        if let Some(s) = self.slugs.get(&body) {
            return Ok(s.clone());
        }
        let slug = format!("wf-{}", self.slugs.len());
        let yaml = wf.yaml(&slug);
        match self
            .engine
            .apply_definition(DEFAULT_WORKSPACE, "case.yaml", &yaml)
            .await
        {
            Ok(Ok(_)) => {}
            Ok(Err(rejected)) => {
                return Err(format!(
                    "definition rejected: {:?}\n{yaml}",
                    rejected.diagnostics
                ));
            }
            Err(e) => return Err(format!("cannot apply the definition: {e}\n{yaml}")),
        }
        self.slugs.insert(body, slug.clone());
        Ok(slug)
    }
}

fn start(store: &Arc<FaultStore>, clock: &ManualClock, config: &EngineConfig) -> Engine {
    let store: Arc<dyn Store> = store.clone();
    Engine::start(store, Arc::new(clock.clone()), config.clone()).expect("start the engine")
}

/// What a case did, for the summary.
#[derive(Debug, Default, Clone, Copy)]
pub struct Stats {
    pub ops: u64,
    pub runs: u64,
    pub resumes: u64,
    pub failed_commits: u64,
    pub crashes: u64,
    /// How the runs ended: completed, failed, cancelled.
    pub ended: [u64; 3],
}

pub struct Ctx<'a> {
    pub env: &'a mut Env,
    pub wf: &'a Workflow,
    pub slug: String,
    pub tag: String,
    pub runs: Vec<String>,
    pub keys: HashMap<u8, String>,
    pub crashes: u32,
    /// The last operation ended with the engine idle: the state is stable.
    pub settled: bool,
    pub expect: Vec<Expect>,
    pub done_seen: HashMap<(String, String, i64), StepRecord>,
    /// Runs seen in a terminal status, with their attempt then.
    pub ended_seen: HashMap<String, (RunStatus, i64)>,
    pub hits_at_done: HashMap<String, u32>,
    pub used_tokens: HashSet<String>,
    /// A failure armed in front of one command (see `Defect::CommitFailureReloadsRuns`).
    pub disarm_after_op: bool,
    pub trace: Vec<String>,
    pub v: Violations,
    /// The engine no longer answers: stop the case.
    pub hung: bool,
    /// Failed commits before the case began.
    pub failed_before: u64,
    /// Engine calls so far.
    pub calls: u64,
    pub seq: u64,
    pub stats: Stats,
}

/// A case that broke invariants: which, and a report of what led there.
#[derive(Debug)]
pub struct Failure {
    pub invariants: Vec<Invariant>,
    pub message: String,
}

/// Run one case; `Err` carries the violations and what led to them.
pub async fn run_case(env: &mut Env, case: &Case) -> Result<Stats, Failure> {
    env.next_case += 1;
    let slug = env.slug(&case.workflow).await.map_err(|message| Failure {
        invariants: Vec::new(),
        message,
    })?;
    let tag = format!("c{}", env.next_case);
    env.store.heal();
    env.store.record();
    let failed_before = env.store.failed_commits();
    let mut ctx = Ctx {
        env,
        wf: &case.workflow,
        slug,
        tag,
        runs: Vec::new(),
        keys: HashMap::new(),
        crashes: 0,
        settled: true,
        expect: Vec::new(),
        done_seen: HashMap::new(),
        ended_seen: HashMap::new(),
        hits_at_done: HashMap::new(),
        used_tokens: HashSet::new(),
        disarm_after_op: false,
        trace: Vec::new(),
        v: Violations::default(),
        hung: false,
        failed_before,
        calls: 0,
        seq: 0,
        stats: Stats::default(),
    };
    for (n, action) in case.actions.iter().enumerate() {
        let next = case.actions.get(n + 1);
        ctx.act(action, next).await;
        if ctx.hung || !ctx.v.is_empty() {
            break;
        }
    }
    if !ctx.hung && ctx.v.is_empty() {
        ctx.drain().await;
    }
    ctx.stats.failed_commits = ctx.env.store.failed_commits() - failed_before;
    ctx.stats.runs = ctx.runs.len() as u64;
    ctx.stats.crashes = u64::from(ctx.crashes);
    if ctx.v.is_empty() {
        return Ok(ctx.stats);
    }
    let mut msg = String::from("invariants violated:\n");
    for (inv, m) in &ctx.v.0 {
        msg.push_str(&format!("  [{inv:?}] {m}\n"));
    }
    msg.push_str("trace:\n");
    for t in &ctx.trace {
        msg.push_str(&format!("  {t}\n"));
    }
    msg.push_str(&format!("workflow:\n{}", case.workflow.yaml(&ctx.slug)));
    if let Ok(views) = checks::load(ctx.env.store.as_ref(), &ctx.runs) {
        for view in views {
            msg.push_str(&format!(
                "\nrun {} {} attempt {}\n",
                view.run.id, view.run.status, view.run.attempt
            ));
            for s in &view.steps {
                msg.push_str(&format!(
                    "  {} #{} {} out={} err={}\n",
                    s.step_id,
                    s.attempt,
                    s.status,
                    s.output.clone().unwrap_or_default(),
                    s.error.clone().unwrap_or_default()
                ));
            }
            for e in &view.events {
                msg.push_str(&format!(
                    "  event {} {} {}\n",
                    e.kind,
                    e.step_id.clone().unwrap_or_default(),
                    e.data
                ));
            }
        }
    }
    Err(Failure {
        invariants: ctx.v.0.iter().map(|(inv, _)| *inv).collect(),
        message: msg,
    })
}

impl Ctx<'_> {
    pub fn known(&self, d: Defect) -> bool {
        self.env.known.has(d)
    }

    /// An engine call that must answer; `None` when it hung.
    pub async fn call<T>(
        &mut self,
        what: &str,
        fut: impl Future<Output = Result<T, EngineError>>,
    ) -> Option<Result<T, EngineError>> {
        self.calls += 1;
        match tokio::time::timeout(LIMIT, fut).await {
            Ok(r) => Some(r),
            Err(_) => {
                let state = if self.env.store.is_faulty() {
                    " while the store refused commits"
                } else {
                    ""
                };
                self.v.add(
                    Invariant::Responsive,
                    format!("{what} did not answer within {LIMIT:?}{state}"),
                );
                self.hung = true;
                None
            }
        }
    }

    async fn act(&mut self, action: &Action, next: Option<&Action>) {
        self.stats.ops += 1;
        let faulty_before = self.env.store.is_faulty();
        let was_settled = self.settled;
        let calls = self.calls;
        self.settled = false;
        self.op(&action.op, next, faulty_before, was_settled).await;
        if self.hung {
            return;
        }
        if self.disarm_after_op && !matches!(action.op, Op::FailNext { .. }) {
            self.disarm_after_op = false;
            self.env.store.heal();
        }
        let moved = match action.op {
            Op::Advance { secs } => secs > 0,
            Op::Crash { .. } => true,
            _ => self.calls != calls,
        };
        if !moved && was_settled {
            // Nothing reached the engine (a skipped operation, a plan change): still settled.
            self.settled = true;
            return;
        }
        if action.settle || matches!(action.op, Op::Crash { .. }) {
            self.settle().await;
        }
        if self.settled {
            self.check(true).await;
        }
    }

    /// Wait until the engine is idle, unless the store refuses everything (nothing could
    /// settle then). Sets `settled`.
    pub async fn settle(&mut self) {
        if self.env.store.is_unreliable() {
            tokio::time::sleep(Duration::from_millis(2)).await;
            self.settled = false;
            return;
        }
        let engine = self.env.engine.clone();
        self.settled = matches!(
            self.call("until_idle", engine.until_idle()).await,
            Some(Ok(()))
        );
    }

    pub fn views(&mut self, ids: &[String]) -> Vec<RunView> {
        match checks::load(self.env.store.inner().as_ref(), ids) {
            Ok(v) => v,
            Err(e) => {
                // Every run read back was acknowledged as created.
                self.v.add(
                    Invariant::CommandOutcome,
                    format!("cannot read the runs back: {e}"),
                );
                Vec::new()
            }
        }
    }

    pub fn view(&mut self, id: &str) -> Option<RunView> {
        self.views(&[id.to_string()]).pop()
    }

    /// The runs this case created, as the journal saw them (also those whose create failed).
    fn journal_runs(journal: &[Vec<Write>]) -> HashSet<String> {
        journal
            .iter()
            .flatten()
            .filter_map(|w| match w {
                Write::InsertRun(r) => Some(r.id.clone()),
                _ => None,
            })
            .collect()
    }

    /// Heal, let every timer come due and answer every wait until all runs end; then the
    /// checks over the whole history.
    async fn drain(&mut self) {
        self.trace.push("drain".into());
        self.env.store.heal();
        self.settle().await;
        const ROUNDS: usize = 10;
        for round in 0..=ROUNDS {
            if self.hung {
                return;
            }
            self.check(self.settled).await;
            if !self.v.is_empty() {
                return;
            }
            let views = self.views(&self.runs.clone());
            if round == ROUNDS || views.iter().all(|v| v.run.status.is_terminal()) {
                break;
            }
            self.env.clock.advance(Duration::from_secs(4000));
            self.settle().await;
            self.resolve_waits(true).await;
            self.settle().await;
            self.resolve_waits(false).await;
            self.settle().await;
        }
        let views = self.views(&self.runs.clone());
        for v in &views {
            match v.run.status {
                RunStatus::Completed => self.stats.ended[0] += 1,
                RunStatus::Failed => self.stats.ended[1] += 1,
                RunStatus::Cancelled => self.stats.ended[2] += 1,
                _ => {}
            }
        }
        for v in views.iter().filter(|v| !v.run.status.is_terminal()) {
            let eff = v.effective(self.wf);
            self.v.add(
                Invariant::Terminates,
                format!(
                    "{} is still {} after every wait was answered: {eff:?}",
                    v.run.id, v.run.status
                ),
            );
        }
        let journal = self.env.store.take_journal();
        let mut runs: HashSet<String> = self.runs.iter().cloned().collect();
        let unacknowledged: Vec<String> = Self::journal_runs(&journal)
            .into_iter()
            .filter(|id| !runs.contains(id))
            .collect();
        if !unacknowledged.is_empty() {
            self.v.add(
                Invariant::CommandOutcome,
                format!("runs committed although their create failed: {unacknowledged:?}"),
            );
            runs.extend(unacknowledged);
        }
        let committed = super::history::check_journal(self.wf, &runs, &journal, &mut self.v);
        for v in &views {
            for ((run, step, attempt), status) in committed.iter().filter(|k| k.0.0 == v.run.id) {
                let kept = v
                    .steps
                    .iter()
                    .any(|r| &r.step_id == step && r.attempt == *attempt && r.status == *status);
                if !kept {
                    self.v.add(
                        Invariant::CompletionKept,
                        format!("{run} {step} attempt {attempt} was committed {status} and is not any more"),
                    );
                }
            }
        }
        for e in std::mem::take(&mut self.expect) {
            self.v.add(
                Invariant::CommandOutcome,
                format!("acknowledged but never became durable: {e:?}"),
            );
        }
    }

    /// Answer every approval (`approvals`) or every external event that waits, each on
    /// a settled engine so the outcome is predictable.
    async fn resolve_waits(&mut self, approvals: bool) {
        let mut acted = false;
        for id in self.runs.clone() {
            for (i, step) in self.wf.steps.iter().enumerate() {
                let wanted = match step.kind {
                    Kind::Approval { .. } => approvals,
                    Kind::Event { .. } => !approvals,
                    _ => false,
                };
                if !wanted {
                    continue;
                }
                if acted {
                    self.settle().await;
                    acted = false;
                    if self.hung {
                        return;
                    }
                }
                let Some(v) = self.view(&id) else {
                    continue;
                };
                if v.run.status.is_terminal() || v.status_of(i) != Some(StepStatus::Waiting) {
                    continue;
                }
                let before = self.settled.then_some(&v);
                if approvals {
                    super::ops::approve(self, &id, before, false, i, 0).await;
                } else {
                    super::ops::answer_event(self, &v, before.is_some(), i).await;
                }
                acted = true;
            }
        }
    }

    pub fn restart_engine(&mut self) {
        self.env.engine = start(&self.env.store, &self.env.clock, &self.env.config);
        self.crashes += 1;
    }

    pub fn disarm_after_next_op(&mut self) {
        self.disarm_after_op = true;
    }
}
