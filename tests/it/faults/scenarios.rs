//! One fixed case per known defect: proof that the harness catches it, and a regression test
//! once it is fixed. While a defect is listed in `KNOWN_DEFECTS`, its case must fail with the
//! invariant named here; once it is removed, the same case must pass.

use super::checks::Invariant;
use super::model::{Action, Case, Kind, Mode, Op, RunChoice, StepSpec, Workflow};
use super::runner::{Env, run_case};
use super::{ALL_DEFECTS, Defect, KNOWN_DEFECTS, Known};

struct Scenario {
    defect: Defect,
    /// Other defects the case needs un-steered to show this one.
    with: &'static [Defect],
    /// The invariants it breaks (any of them proves it).
    caught_by: &'static [Invariant],
    case: Case,
}

fn step(kind: Kind, needs: &[usize]) -> StepSpec {
    StepSpec {
        kind,
        needs: needs.to_vec(),
        guarded: false,
    }
}

fn act(op: Op) -> Action {
    Action { op, settle: true }
}

fn create(modes: &[Mode]) -> Action {
    act(Op::Create {
        choice: RunChoice {
            modes: modes.to_vec(),
            skip: vec![false; modes.len()],
        },
        key: None,
    })
}

fn case(steps: Vec<StepSpec>, actions: Vec<Action>) -> Case {
    Case {
        workflow: Workflow { steps },
        actions,
    }
}

fn scenarios() -> Vec<Scenario> {
    let two_events = vec![
        step(Kind::Event { timeout: None }, &[]),
        step(Kind::Event { timeout: None }, &[]),
    ];
    let failing_http = || vec![step(Kind::Http { attempts: 3 }, &[])];
    vec![
        Scenario {
            defect: Defect::HookResumesFirstWaitingStep,
            with: &[],
            caught_by: &[Invariant::ResumeTarget],
            // The hook of s1 (hooks are ordered by step) while s0 waits too.
            case: case(
                two_events.clone(),
                vec![
                    create(&[Mode::Ok, Mode::Ok]),
                    act(Op::Hook {
                        run: 0,
                        hook: 1,
                        twice: false,
                    }),
                ],
            ),
        },
        Scenario {
            defect: Defect::HookUsableTwice,
            with: &[Defect::HookResumesFirstWaitingStep],
            caught_by: &[Invariant::ResumeTarget],
            case: case(
                two_events,
                vec![
                    create(&[Mode::Ok, Mode::Ok]),
                    act(Op::Hook {
                        run: 0,
                        hook: 1,
                        twice: true,
                    }),
                ],
            ),
        },
        Scenario {
            defect: Defect::RunRetryGivesOneAttempt,
            with: &[],
            caught_by: &[Invariant::RetryBudget],
            case: case(
                vec![step(Kind::Http { attempts: 2 }, &[])],
                vec![
                    create(&[Mode::Fail]),
                    act(Op::Advance { secs: 3 }),
                    act(Op::Retry { run: 0 }),
                ],
            ),
        },
        Scenario {
            defect: Defect::RetrySplitAcrossCommits,
            with: &[Defect::CommitFailureReloadsRuns],
            caught_by: &[Invariant::StatusDerivable],
            // The approval times out; the retry's first batch commits, its second fails.
            case: case(
                vec![step(Kind::Approval { timeout: Some(30) }, &[])],
                vec![
                    create(&[Mode::Ok]),
                    act(Op::Advance { secs: 44 }),
                    act(Op::FailNext { skip: 1, fail: 1 }),
                    act(Op::Retry { run: 0 }),
                ],
            ),
        },
        Scenario {
            defect: Defect::StaleTimersAfterRetry,
            with: &[],
            caught_by: &[Invariant::TimersOnTime],
            // The first wait's timer (due at 45s) survives the retry, whose wait is due at 48s.
            case: case(
                vec![
                    step(
                        Kind::Wait {
                            secs: 45,
                            until: false,
                        },
                        &[],
                    ),
                    step(Kind::Http { attempts: 1 }, &[]),
                ],
                vec![
                    create(&[Mode::Ok, Mode::Flaky]),
                    act(Op::Advance { secs: 3 }),
                    act(Op::Retry { run: 0 }),
                    act(Op::Advance { secs: 44 }),
                ],
            ),
        },
        Scenario {
            defect: Defect::SignalRefusedWhileRunning,
            with: &[],
            caught_by: &[Invariant::CommandOutcome],
            // The run is PAUSED at s1 while s0 waits for its signal.
            case: case(
                vec![
                    step(Kind::Event { timeout: None }, &[]),
                    step(Kind::Approval { timeout: None }, &[]),
                ],
                vec![
                    create(&[Mode::Ok, Mode::Ok]),
                    act(Op::Signal {
                        run: 0,
                        step: 0,
                        valid: true,
                    }),
                ],
            ),
        },
        Scenario {
            defect: Defect::CommitFailureReloadsRuns,
            with: &[],
            // The failed cancel reloads the run, which retries its step at once. (Its executor
            // may also be called before the step's start was committed.)
            caught_by: &[Invariant::TimersOnTime, Invariant::StartCommittedFirst],
            case: case(
                failing_http(),
                vec![
                    create(&[Mode::Fail]),
                    act(Op::Outage),
                    Action {
                        op: Op::Cancel { run: 0 },
                        settle: false,
                    },
                    act(Op::Heal),
                ],
            ),
        },
        Scenario {
            defect: Defect::RecoveryIgnoresBackoff,
            with: &[],
            caught_by: &[Invariant::TimersOnTime, Invariant::WaitingOnSomething],
            case: case(
                failing_http(),
                vec![create(&[Mode::Fail]), act(Op::Crash { clean: true })],
            ),
        },
        Scenario {
            defect: Defect::CancelRewritesFailedAttempt,
            with: &[],
            caught_by: &[Invariant::CompletionKept],
            case: case(
                failing_http(),
                vec![create(&[Mode::Fail]), act(Op::Cancel { run: 0 })],
            ),
        },
    ]
}

#[test]
fn each_known_defect_is_caught_by_its_invariant() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let listed = |d: Defect| KNOWN_DEFECTS.contains(&d);
    let all = scenarios();
    assert_eq!(
        all.len(),
        ALL_DEFECTS.len(),
        "every defect needs a scenario"
    );
    let mut steered = rt.block_on(Env::new(Known::listed()));
    for s in all {
        let name = s.defect;
        if !listed(name) {
            // Fixed: the case must pass with every check on that the list allows.
            let mut known = Known::listed();
            for d in s.with {
                known.remove(*d);
            }
            let mut env = rt.block_on(Env::new(known));
            let outcome = rt.block_on(run_case(&mut env, &s.case));
            rt.block_on(env.engine.shutdown());
            if let Err(f) = outcome {
                panic!(
                    "{name:?} is not in KNOWN_DEFECTS, but its case fails:\n{}",
                    f.message
                );
            }
            continue;
        }
        if let Err(f) = rt.block_on(run_case(&mut steered, &s.case)) {
            panic!("steering around {name:?} does not avoid it:\n{}", f.message);
        }
        let mut known = Known::listed();
        known.remove(name);
        for d in s.with {
            known.remove(*d);
        }
        let mut env = rt.block_on(Env::new(known));
        let outcome = rt.block_on(run_case(&mut env, &s.case));
        rt.block_on(env.engine.shutdown());
        match outcome {
            Ok(_) => panic!("{name:?} no longer shows: remove it from KNOWN_DEFECTS"),
            Err(f) => assert!(
                f.invariants.iter().any(|i| s.caught_by.contains(i)),
                "{name:?} was expected to break {:?}:\n{}",
                s.caught_by,
                f.message
            ),
        }
    }
    rt.block_on(steered.engine.shutdown());
}
