//! The crash test's client of one run, as a real user's: every request at a random
//! process, with a timeout; a lost answer or a 5xx is an unknown outcome, tried again.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};

/// What the clients saw, printed at the end.
#[derive(Default)]
pub(super) struct Counts {
    pub(super) requests: AtomicU64,
    /// No answer: refused, reset or timed out.
    pub(super) unreachable: AtomicU64,
    /// 503 "being executed by another stepwise process": nothing changed, try again.
    pub(super) busy: AtomicU64,
    /// ... of which with no earlier unknown outcome of the same command.
    pub(super) busy_first: AtomicU64,
    /// ... and of those, sent when the run showed the step waiting (no process executes
    /// a waiting run, but one may still hold its lease).
    pub(super) busy_waiting: AtomicU64,
    pub(super) other_5xx: AtomicU64,
    /// 409 to a command sent again after an unknown outcome, the run past the step with
    /// what we sent.
    pub(super) accepted_409: AtomicU64,
    /// Commands found delivered by reading the run after an unknown outcome.
    pub(super) settled_by_reading: AtomicU64,
    /// 409 to a command sent before its step waited (nothing changed).
    pub(super) early_409: AtomicU64,
}

pub(super) fn add(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

pub(super) fn get(c: &AtomicU64) -> u64 {
    c.load(Ordering::Relaxed)
}

pub(super) enum Answer {
    Status(u16, Value),
    Unreachable(String),
}

pub(super) struct Client {
    pub(super) http: reqwest::Client,
    pub(super) bases: Vec<String>,
    pub(super) counts: Counts,
}

impl Client {
    /// One request at a random process.
    pub(super) async fn send(&self, post: Option<&Value>, path: &str) -> Answer {
        add(&self.counts.requests);
        let base = &self.bases[fastrand::usize(..self.bases.len())];
        let url = format!("{base}{path}");
        let req = match post {
            Some(body) => self.http.post(url).json(body),
            None => self.http.get(url),
        };
        let answer = async {
            let resp = req.send().await?;
            let status = resp.status().as_u16();
            let body = resp.json::<Value>().await.unwrap_or(Value::Null);
            Ok::<_, reqwest::Error>(Answer::Status(status, body))
        };
        match answer.await {
            Ok(a @ Answer::Status(500.., _)) => {
                add(if is_busy(&a) {
                    &self.counts.busy
                } else {
                    &self.counts.other_5xx
                });
                a
            }
            Ok(a) => a,
            Err(e) => {
                add(&self.counts.unreachable);
                Answer::Unreachable(e.to_string())
            }
        }
    }
}

/// What one run's client knows, for the report of stuck runs.
#[derive(Default, Clone)]
pub(super) struct Progress {
    pub(super) run_id: Option<String>,
    pub(super) phase: &'static str,
    pub(super) attempts: u32,
    pub(super) last: String,
    pub(super) done: bool,
}

pub(super) type Board = Arc<Mutex<Vec<Progress>>>;

pub(super) fn note(board: &Board, i: usize, f: impl FnOnce(&mut Progress)) {
    if let Ok(mut b) = board.lock() {
        f(&mut b[i]);
    }
}

/// 503 "being executed by another stepwise process": nothing changed, try again.
pub(super) fn is_busy(a: &Answer) -> bool {
    matches!(a, Answer::Status(503, body) if body["error"]["message"]
        .as_str()
        .is_some_and(|m| m.contains("another stepwise process")))
}

pub(super) fn short(a: &Answer) -> String {
    match a {
        Answer::Status(s, body) => format!("{s} {}", body["error"]["message"]),
        Answer::Unreachable(e) => format!("unreachable: {e}"),
    }
}

pub(super) async fn pause() {
    tokio::time::sleep(Duration::from_millis(fastrand::u64(20..80))).await;
}

/// The run's approval decision and its signal's payload.
#[derive(Clone)]
pub(super) struct Intent {
    pub(super) decision: &'static str,
    pub(super) payload: Value,
}

/// One run's client: start it, answer its approval, send its signal, see it complete.
pub(super) async fn drive(
    i: usize,
    c: Arc<Client>,
    board: Board,
    intent: Intent,
) -> Result<(), String> {
    note(&board, i, |p| p.phase = "creating");
    let create =
        json!({"definitionId": "signalled", "input": {}, "idempotencyKey": format!("crash-{i}")});
    let id = loop {
        let a = c.send(Some(&create), "/v1/workflow-runs").await;
        match &a {
            Answer::Status(200 | 201, body) => {
                break body["data"]["id"].as_str().unwrap_or_default().to_string();
            }
            Answer::Status(s, _) if *s < 500 => return Err(format!("create: {}", short(&a))),
            _ => pause().await,
        }
    };
    note(&board, i, |p| p.run_id = Some(id.clone()));
    let review = json!({"step": "review", "input": intent.decision});
    settle(
        &c,
        &board,
        i,
        &id,
        "review",
        &review,
        &json!(intent.decision),
    )
    .await?;
    let signal = json!({"signalType": "payout.sent", "payload": intent.payload});
    settle(&c, &board, i, &id, "payout", &signal, &intent.payload).await?;
    note(&board, i, |p| p.phase = "awaiting completion");
    await_status(&c, &id, "COMPLETED").await?;
    note(&board, i, |p| p.done = true);
    Ok(())
}

/// Poll the run at random processes until it has `want`; another final status fails.
pub(super) async fn await_status(c: &Client, id: &str, want: &str) -> Result<Value, String> {
    let path = format!("/v1/workflow-runs/{id}");
    loop {
        if let Answer::Status(200, body) = c.send(None, &path).await {
            let status = body["data"]["status"].as_str().unwrap_or_default();
            if status == want {
                return Ok(body["data"].clone());
            }
            if ["COMPLETED", "FAILED", "CANCELLED"].contains(&status) {
                return Err(format!(
                    "run {id} is {status} while we wait for {want}: {body}"
                ));
            }
        }
        tokio::time::sleep(Duration::from_millis(fastrand::u64(150..400))).await;
    }
}

/// Deliver `body` (whose step completes with `output`) to the run's resume endpoint at
/// random processes until the run is past `step` with it. While the step does not wait
/// yet, now and then send it anyway, as a client acting on a stale page does: 409, nothing
/// changed. Once it waits: 200. A lost answer or a 5xx is an unknown outcome, sent again
/// at once (whether the step waits or not);
/// a 409 is accepted only after one, and only if the run then shows the step completed
/// with our value.
pub(super) async fn settle(
    c: &Client,
    board: &Board,
    i: usize,
    id: &str,
    step: &str,
    body: &Value,
    output: &Value,
) -> Result<(), String> {
    let what = if step == "review" {
        "the approval"
    } else {
        "the signal"
    };
    note(board, i, |p| {
        p.phase = what;
        p.attempts = 0;
    });
    let path = format!("/v1/workflow-runs/{id}");
    let resume = format!("{path}/resume");
    let mut unknown = false;
    let mut conflict = false;
    // The last send's outcome is unknown: send it again at once to another process, without
    // reading the run first; a 409 then is checked by reading.
    let mut again = false;
    let mut waiting = false;
    // Every answer to a send, for the message if the run disagrees with them.
    let mut sent: Vec<String> = Vec::new();
    let began = std::time::Instant::now();
    loop {
        if !again {
            let Answer::Status(200, run) = c.send(None, &path).await else {
                pause().await;
                continue;
            };
            let status = run["data"]["status"].as_str().unwrap_or_default();
            let s = run["data"]["steps"]
                .as_array()
                .and_then(|steps| steps.iter().find(|s| s["name"] == step))
                .cloned()
                .unwrap_or(Value::Null);
            waiting = match s["status"].as_str().unwrap_or_default() {
                "COMPLETED" if &s["output"] == output && unknown => {
                    add(&c.counts.settled_by_reading);
                    if conflict {
                        add(&c.counts.accepted_409);
                    }
                    return Ok(());
                }
                "COMPLETED" => {
                    return Err(format!(
                        "{step} of {id} completed with {} though we sent {output} with no unknown outcome; answers: {sent:?}",
                        s["output"]
                    ));
                }
                _ if ["COMPLETED", "FAILED", "CANCELLED"].contains(&status) => {
                    return Err(format!("run {id} is {status} before {what}: {run}"));
                }
                "WAITING" => true,
                _ if fastrand::u8(..4) == 0 => false,
                _ => {
                    tokio::time::sleep(Duration::from_millis(fastrand::u64(150..400))).await;
                    continue;
                }
            };
            conflict = false;
        }
        let a = c.send(Some(body), &resume).await;
        sent.push(format!(
            "{:?} waiting={waiting}: {}",
            began.elapsed(),
            short(&a)
        ));
        note(board, i, |p| {
            p.attempts += 1;
            p.last = short(&a);
        });
        match &a {
            Answer::Status(200, _) => return Ok(()),
            Answer::Status(409, _) if unknown => {
                conflict = true;
                again = false;
            }
            Answer::Status(409, _) if !waiting => add(&c.counts.early_409),
            Answer::Status(409, answer) => {
                return Err(format!(
                    "{what} for {id}: 409 with no earlier unknown outcome: {answer}"
                ));
            }
            Answer::Status(s, answer) if *s < 500 => {
                return Err(format!("{what} for {id}: {s} {answer}"));
            }
            _ => {
                if !unknown && is_busy(&a) {
                    add(&c.counts.busy_first);
                    if waiting {
                        add(&c.counts.busy_waiting);
                    }
                }
                unknown = true;
                again = true;
            }
        }
        pause().await;
    }
}
