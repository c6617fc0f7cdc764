//! What a case is made of: a random workflow (a DAG of the five step types) and a random list
//! of operations on it, as proptest strategies, plus the YAML and run input they turn into.
//!
//! Everything a run may vary without a new definition (which action mode a step gets, whether
//! it is skipped, when an `until` wait ends) lives in the run input, so definitions repeat
//! across cases and are linted once.

use proptest::prelude::*;
use serde_json::{Map, Value, json};

/// Fixed backoff between attempts. The engine adds jitter, so a retry is due between half of
/// this and all of it; clock steps avoid that window to keep cases reproducible.
pub const RETRY_DELAY_SECS: i64 = 2;

#[derive(Debug, Clone, PartialEq)]
pub enum Kind {
    Transform,
    Http {
        attempts: u8,
    },
    Agent {
        attempts: u8,
    },
    Approval {
        timeout: Option<u32>,
    },
    /// `duration` when `until` is false, else an `until` from the run input.
    Wait {
        secs: u32,
        until: bool,
    },
    Event {
        timeout: Option<u32>,
    },
}

impl Kind {
    /// Steps that run an executor and are retried.
    pub fn attempts(&self) -> Option<u8> {
        match self {
            Kind::Http { attempts } | Kind::Agent { attempts } => Some(*attempts),
            _ => None,
        }
    }

    /// Steps a hook or a signal resumes.
    pub fn hooked(&self) -> bool {
        matches!(self, Kind::Approval { .. } | Kind::Event { .. })
    }

    pub fn timeout(&self) -> Option<u32> {
        match self {
            Kind::Approval { timeout } | Kind::Event { timeout } => *timeout,
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct StepSpec {
    pub kind: Kind,
    /// Indices of earlier steps.
    pub needs: Vec<usize>,
    /// Guarded by a `when` the run input decides.
    pub guarded: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Workflow {
    pub steps: Vec<StepSpec>,
}

pub fn step_id(i: usize) -> String {
    format!("s{i}")
}

pub fn signal_of(i: usize) -> String {
    format!("sig.s{i}")
}

/// Options are unique per step, so an answer applied to the wrong step is visible.
pub fn options_of(i: usize) -> [String; 2] {
    [format!("yes_s{i}"), format!("no_s{i}")]
}

/// How an http or agent step's executor answers, chosen per run.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Mode {
    Ok,
    /// Answers after a few milliseconds, so other operations meet it in flight.
    Slow,
    /// Fails (retryably) the first time per step of a run, then succeeds.
    Flaky,
    /// Always fails retryably (HTTP 500).
    Fail,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Ok => "ok",
            Mode::Slow => "slow",
            Mode::Flaky => "flaky",
            Mode::Fail => "fail",
        }
    }
}

/// Per-run choices: modes, skips, and `until` offsets.
#[derive(Debug, Clone, PartialEq)]
pub struct RunChoice {
    pub modes: Vec<Mode>,
    pub skip: Vec<bool>,
}

impl Workflow {
    pub fn yaml(&self, slug: &str) -> String {
        let mut s = format!("id: {slug}\nsteps:\n");
        for (i, step) in self.steps.iter().enumerate() {
            let id = step_id(i);
            let needs: Vec<String> = step.needs.iter().map(|&n| step_id(n)).collect();
            s.push_str(&format!(
                "  - id: {id}\n    needs: [{}]\n",
                needs.join(", ")
            ));
            if step.guarded {
                s.push_str(&format!("    when: \"not input.skip.{id}\"\n"));
            }
            let retry = |n: u8| {
                format!(
                    "    retry: {{max_attempts: {n}, backoff: fixed, initial_delay: {RETRY_DELAY_SECS}s}}\n"
                )
            };
            match &step.kind {
                Kind::Transform => {
                    // The statuses of its needs when it ran: they must all be finished.
                    let seen: Vec<String> = step
                        .needs
                        .iter()
                        .map(|&n| format!("s{n}: \"{{{{ steps.s{n}.status }}}}\""))
                        .collect();
                    s.push_str(&format!(
                        "    type: action\n    uses: transform\n    with: {{value: {{step: {id}, needs: {{{}}}}}}}\n",
                        seen.join(", ")
                    ));
                }
                Kind::Http { attempts } => {
                    s.push_str("    type: action\n    uses: http\n");
                    s.push_str(&retry(*attempts));
                    s.push_str(&format!(
                        "    with: {{method: POST, url: \"{{{{ input.server }}}}/fault/{{{{ input.modes.{id} }}}}\", json: {{step: {id}}}}}\n"
                    ));
                }
                Kind::Agent { attempts } => {
                    s.push_str("    type: agent\n");
                    s.push_str(&retry(*attempts));
                    s.push_str(&format!(
                        "    prompt: \"{{{{ run.id }}}}|{id}|{{{{ input.modes.{id} }}}}\"\n"
                    ));
                }
                Kind::Approval { timeout } => {
                    let [a, b] = options_of(i);
                    s.push_str(&format!(
                        "    type: approval\n    message: \"decide {id}\"\n    options: [{a}, {b}]\n"
                    ));
                    if let Some(t) = timeout {
                        s.push_str(&format!("    timeout: {t}s\n"));
                    }
                }
                Kind::Wait { secs, until: false } => {
                    s.push_str(&format!("    type: wait\n    duration: {secs}s\n"));
                }
                Kind::Wait { until: true, .. } => {
                    s.push_str(&format!(
                        "    type: wait\n    until: \"{{{{ input.until.{id} }}}}\"\n"
                    ));
                }
                Kind::Event { timeout } => {
                    s.push_str(&format!(
                        "    type: external_event\n    signal: {}\n    schema: {{type: object, required: [for]}}\n",
                        signal_of(i)
                    ));
                    if let Some(t) = timeout {
                        s.push_str(&format!("    timeout: {t}s\n"));
                    }
                }
            }
        }
        s
    }

    /// The run input: where the executors are, and this run's choices. `until` waits end
    /// their offset after `now` (the creation time), so one may also be due at once.
    pub fn input(&self, server: &str, choice: &RunChoice, now: jiff::Timestamp) -> Value {
        let mut modes = Map::new();
        let mut skip = Map::new();
        let mut until = Map::new();
        for (i, step) in self.steps.iter().enumerate() {
            let id = step_id(i);
            modes.insert(id.clone(), json!(choice.modes[i].as_str()));
            skip.insert(id.clone(), json!(choice.skip[i]));
            if let Kind::Wait { secs, until: true } = step.kind {
                let due = now
                    .checked_add(jiff::SignedDuration::from_secs(i64::from(secs)))
                    .unwrap_or(now);
                until.insert(id, json!(due.to_string()));
            }
        }
        json!({"server": server, "modes": modes, "skip": skip, "until": until})
    }
}

fn kind() -> impl Strategy<Value = Kind> {
    let timeout = prop_oneof![3 => Just(None), 1 => Just(Some(30)), 1 => Just(Some(7200))];
    prop_oneof![
        2 => Just(Kind::Transform),
        3 => (1u8..=3).prop_map(|attempts| Kind::Http { attempts }),
        2 => (1u8..=3).prop_map(|attempts| Kind::Agent { attempts }),
        3 => timeout.clone().prop_map(|timeout| Kind::Approval { timeout }),
        2 => (prop::sample::select(vec![1u32, 45, 90]), any::<bool>())
            .prop_map(|(secs, until)| Kind::Wait { secs, until }),
        3 => timeout.prop_map(|timeout| Kind::Event { timeout }),
    ]
}

pub fn workflow(max_steps: usize) -> impl Strategy<Value = Workflow> {
    prop::collection::vec(
        (kind(), any::<u8>(), prop::bool::weighted(0.15)),
        1..=max_steps,
    )
    .prop_map(|raw| Workflow {
        steps: raw
            .into_iter()
            .enumerate()
            .map(|(i, (kind, mask, guarded))| StepSpec {
                kind,
                needs: (0..i).filter(|&n| n < 8 && mask & (1 << n) != 0).collect(),
                guarded,
            })
            .collect(),
    })
}

fn mode() -> impl Strategy<Value = Mode> {
    prop_oneof![4 => Just(Mode::Ok), 2 => Just(Mode::Slow), 2 => Just(Mode::Flaky), 2 => Just(Mode::Fail)]
}

pub fn run_choice(steps: usize) -> impl Strategy<Value = RunChoice> {
    (
        prop::collection::vec(mode(), steps),
        prop::collection::vec(prop::bool::weighted(0.5), steps),
    )
        .prop_map(|(modes, skip)| RunChoice { modes, skip })
}

/// Clock steps, in seconds: each is past the longest retry backoff, so which timers a step
/// fires never depends on the engine's jitter.
pub const CLOCK_STEPS: [u32; 6] = [0, 3, 44, 50, 100, 4000];

#[derive(Debug, Clone)]
pub enum Op {
    /// With an idempotency key from a small set, so some creates repeat a key.
    Create {
        choice: RunChoice,
        key: Option<u8>,
    },
    Signal {
        run: u16,
        step: u16,
        valid: bool,
    },
    /// Resume through one of the run's hook tokens; `twice` sends it twice at once.
    Hook {
        run: u16,
        hook: u16,
        twice: bool,
    },
    /// `option` past the two options picks an option the step does not offer.
    Approve {
        run: u16,
        step: u16,
        option: u8,
    },
    Cancel {
        run: u16,
    },
    Retry {
        run: u16,
    },
    Advance {
        secs: u32,
    },
    FailNext {
        skip: u8,
        fail: u8,
    },
    FailRandomly {
        percent: u8,
        seed: u64,
    },
    Outage,
    Heal,
    /// Stop the engine (while the store refuses commits unless `clean`) and start a new one.
    Crash {
        clean: bool,
    },
}

/// One operation, and whether the engine settles before the next one.
#[derive(Debug, Clone)]
pub struct Action {
    pub op: Op,
    pub settle: bool,
}

#[derive(Debug, Clone)]
pub struct Case {
    pub workflow: Workflow,
    pub actions: Vec<Action>,
}

/// Which kinds of trouble a property adds to the commands and clock steps.
#[derive(Debug, Clone, Copy)]
pub struct Mix {
    /// Commit failures: the next few, random ones, outages.
    pub store_faults: bool,
    /// Engine restarts, after a crash or clean.
    pub crashes: bool,
}

pub fn op(steps: usize, mix: Mix) -> impl Strategy<Value = Op> {
    let choice = run_choice(steps);
    let key = prop_oneof![2 => Just(None), 1 => (0u8..3).prop_map(Some)];
    // proptest refuses a zero weight, so an arm a mix leaves out becomes a clock step.
    let on = |yes: bool, w: u32| if yes { w } else { 0 };
    let idle = Op::Advance { secs: 3 };
    let (i1, i2, i3, i4) = (idle.clone(), idle.clone(), idle.clone(), idle);
    let faults = mix.store_faults;
    let crashes = mix.crashes;
    prop_oneof![
        4 => (choice, key).prop_map(|(choice, key)| Op::Create { choice, key }),
        3 => (any::<u16>(), any::<u16>(), prop::bool::weighted(0.9))
            .prop_map(|(run, step, valid)| Op::Signal { run, step, valid }),
        3 => (any::<u16>(), any::<u16>(), prop::bool::weighted(0.2))
            .prop_map(|(run, hook, twice)| Op::Hook { run, hook, twice }),
        3 => (any::<u16>(), any::<u16>(), 0u8..3)
            .prop_map(|(run, step, option)| Op::Approve { run, step, option }),
        1 => any::<u16>().prop_map(|run| Op::Cancel { run }),
        2 => any::<u16>().prop_map(|run| Op::Retry { run }),
        4 => prop::sample::select(CLOCK_STEPS.to_vec()).prop_map(|secs| Op::Advance { secs }),
        1 + on(faults, 3) => (0u8..3, 1u8..3).prop_map(move |(skip, fail)| {
            if faults { Op::FailNext { skip, fail } } else { i1.clone() }
        }),
        1 + on(faults, 1) => (10u8..40, any::<u64>()).prop_map(move |(percent, seed)| {
            if faults { Op::FailRandomly { percent, seed } } else { i2.clone() }
        }),
        1 + on(faults, 1) => Just(if faults { Op::Outage } else { i3 }),
        1 => Just(Op::Heal),
        1 + on(crashes, 2) => any::<bool>().prop_map(move |clean| {
            if crashes { Op::Crash { clean } } else { i4.clone() }
        }),
    ]
}

/// A workflow and operations on it; the first operation creates a run.
pub fn case(max_steps: usize, max_ops: usize, mix: Mix) -> impl Strategy<Value = Case> {
    workflow(max_steps).prop_flat_map(move |wf| {
        let n = wf.steps.len();
        let action =
            (op(n, mix), prop::bool::weighted(0.8)).prop_map(|(op, settle)| Action { op, settle });
        (run_choice(n), prop::collection::vec(action, 1..max_ops)).prop_map(
            move |(first, mut actions)| {
                actions.insert(
                    0,
                    Action {
                        op: Op::Create {
                            choice: first,
                            key: None,
                        },
                        settle: true,
                    },
                );
                Case {
                    workflow: wf.clone(),
                    actions,
                }
            },
        )
    })
}
