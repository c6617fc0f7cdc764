//! The web UI over real HTTP (no browser): sign-in and sessions, CSRF and Origin checks,
//! workspace isolation, every page rendering, History filters, and the actions recorded
//! with who did them. The browser tests in tests/browser/ drive the same pages in Chromium.

use reqwest::header::{COOKIE, LOCATION, ORIGIN, SET_COOKIE};
use serde_json::{Value, json};
use stepwise::api::{AppState, router};
use stepwise::engine::{CreateRun, Engine};
use stepwise::model::RunStatus;
use stepwise::store::DEFAULT_WORKSPACE;

use crate::api::add_key;
use crate::engine::Env;

const APPROVAL: &str = r#"
id: expense
input:
  type: object
  required: [employee]
  properties:
    employee: {type: string}
    amount: {type: number}
steps:
  - id: review
    type: approval
    message: "Pay {{ input.employee }}?"
    options: [approve, reject]
  - id: payout
    type: external_event
    signal: payout.sent
    schema:
      type: object
      required: [reference]
      properties:
        reference: {type: string, minLength: 3}
        amount: {type: integer}
  - id: done
    type: action
    uses: transform
    with: {value: "{{ steps.payout.output.reference }}"}
"#;

struct Ui {
    base: String,
    http: reqwest::Client,
    env: Env,
}

impl Ui {
    async fn start(insecure_no_auth: bool) -> Ui {
        Ui::serve(insecure_no_auth, |s| s).await
    }

    /// The router on a free port; `state` adds to its state (triggers).
    async fn serve(insecure_no_auth: bool, state: impl FnOnce(AppState) -> AppState) -> Ui {
        let env = Env::new().await;
        let state = state(AppState::new(env.engine.clone(), insecure_no_auth, None));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let app = router(state);
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        Ui { base, http, env }
    }

    fn engine(&self) -> &Engine {
        &self.env.engine
    }

    async fn run_in(&self, ws: &str, input: Value) -> String {
        let e = self.engine();
        e.apply_definition(ws, "expense.yaml", APPROVAL)
            .await
            .unwrap()
            .unwrap();
        let (run, _) = e
            .create_run(CreateRun {
                workspace_id: ws.into(),
                definition: "expense".into(),
                input,
                idempotency_key: None,
                trigger: json!({"kind": "api", "label": "API"}),
            })
            .await
            .unwrap();
        e.wait_for(ws, &run.id, std::time::Duration::from_secs(5), |s| {
            s.is_suspended()
        })
        .await
        .unwrap();
        run.id
    }

    async fn get(&self, path: &str, cookie: Option<&str>) -> (u16, String) {
        let mut req = self.http.get(format!("{}{path}", self.base));
        if let Some(c) = cookie {
            req = req.header(COOKIE, c);
        }
        let r = req.send().await.unwrap();
        let status = r.status().as_u16();
        let location = r
            .headers()
            .get(LOCATION)
            .map(|l| l.to_str().unwrap().to_string());
        let text = r.text().await.unwrap();
        (status, location.unwrap_or(text))
    }

    async fn post(
        &self,
        path: &str,
        form: &[(&str, &str)],
        cookie: Option<&str>,
        origin: Option<&str>,
    ) -> (u16, String) {
        let mut req = self
            .http
            .post(format!("{}{path}", self.base))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(serde_urlencoded::to_string(form).unwrap());
        if let Some(c) = cookie {
            req = req.header(COOKIE, c);
        }
        if let Some(o) = origin {
            req = req.header(ORIGIN, o);
        }
        let r = req.send().await.unwrap();
        let status = r.status().as_u16();
        let location = r
            .headers()
            .get(LOCATION)
            .map(|l| l.to_str().unwrap().to_string());
        let text = r.text().await.unwrap();
        (status, location.unwrap_or(text))
    }

    /// Sign in with a key; the `name=value` cookie and the Set-Cookie line.
    async fn sign_in(&self, key: &str, extra: &[(&str, &str)]) -> (String, String) {
        let mut req = self
            .http
            .post(format!("{}/ui/sign-in", self.base))
            .header(ORIGIN, &self.base)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(serde_urlencoded::to_string([("key", key), ("next", "/ui/runs")]).unwrap());
        for (k, v) in extra {
            req = req.header(*k, *v);
        }
        let r = req.send().await.unwrap();
        assert_eq!(r.status().as_u16(), 303, "sign-in should redirect");
        let set = r.headers()[SET_COOKIE].to_str().unwrap().to_string();
        let pair = set.split(';').next().unwrap().to_string();
        (pair, set)
    }
}

/// The CSRF token a page carries in its forms.
fn csrf(page: &str) -> String {
    let at = page
        .find("name=\"_csrf\" value=\"")
        .expect("a form with a CSRF token");
    page[at + 20..at + 84].to_string()
}

#[tokio::test]
async fn sign_in_starts_a_hashed_http_only_session_scoped_to_the_keys_workspace() {
    let ui = Ui::start(false).await;
    let store = ui.engine().store().clone();
    let key_a = add_key(store.as_ref(), "ws_a");
    let key_b = add_key(store.as_ref(), "ws_b");
    let run_a = ui.run_in("ws_a", json!({"employee": "Ada"})).await;

    // Not signed in: pages send the browser to the sign-in form, keeping where it was going.
    let (status, to) = ui.get("/ui/runs?status=PAUSED", None).await;
    assert_eq!(status, 303);
    assert!(
        to.starts_with("/ui/sign-in?next=%2Fui%2Fruns%3Fstatus%3DPAUSED"),
        "{to}"
    );
    let (status, _) = ui.get("/", None).await;
    assert_eq!(status, 303);

    // A wrong key is refused on the form.
    let r = ui
        .http
        .post(format!("{}/ui/sign-in", ui.base))
        .header(ORIGIN, &ui.base)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(serde_urlencoded::to_string([("key", "stw_nope")]).unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    assert!(r.text().await.unwrap().contains("not a valid API key"));

    let (cookie_a, set) = ui.sign_in(&key_a, &[]).await;
    assert!(set.contains("HttpOnly"), "{set}");
    assert!(set.contains("SameSite=Strict"), "{set}");
    assert!(
        !set.contains("Secure"),
        "plain http gets no Secure flag: {set}"
    );
    let token = cookie_a.split_once('=').unwrap().1;
    assert!(!token.contains(&key_a), "the cookie is not the key");

    let (status, page) = ui.get("/ui/runs", Some(&cookie_a)).await;
    assert_eq!(status, 200);
    assert!(page.contains(&run_a), "workspace A sees its run");
    assert!(page.contains("Waiting for approval"));

    // Workspace B's session sees none of A's runs, not even by id.
    let (cookie_b, _) = ui.sign_in(&key_b, &[]).await;
    let (status, page) = ui.get("/ui/runs", Some(&cookie_b)).await;
    assert_eq!(status, 200);
    assert!(!page.contains(&run_a));
    assert!(page.contains("No runs yet"));
    let (status, _) = ui.get(&format!("/ui/runs/{run_a}"), Some(&cookie_b)).await;
    assert_eq!(status, 404);
    let (status, _) = ui.get("/ui/approvals", Some(&cookie_b)).await;
    assert_eq!(status, 200);
    let (status, _) = ui
        .get(&format!("/ui/live?run={run_a}"), Some(&cookie_b))
        .await;
    assert_eq!(status, 404);

    // Behind a proxy that says https, the cookie is Secure.
    let (_, set) = ui.sign_in(&key_a, &[("x-forwarded-proto", "https")]).await;
    assert!(set.contains("; Secure"), "{set}");
}

#[tokio::test]
async fn sign_out_and_key_revocation_end_the_session() {
    let ui = Ui::start(false).await;
    let store = ui.engine().store().clone();
    let key = add_key(store.as_ref(), "ws_a");
    let (cookie, _) = ui.sign_in(&key, &[]).await;
    let (_, page) = ui.get("/ui/runs", Some(&cookie)).await;
    let token = csrf(&page);

    // Sign-out needs the CSRF token too (a foreign page cannot sign people out).
    let (status, _) = ui
        .post("/ui/sign-out", &[], Some(&cookie), Some(&ui.base))
        .await;
    assert_eq!(status, 403);
    let (status, _) = ui.get("/ui/runs", Some(&cookie)).await;
    assert_eq!(status, 200);
    let (status, to) = ui
        .post(
            "/ui/sign-out",
            &[("_csrf", &token)],
            Some(&cookie),
            Some(&ui.base),
        )
        .await;
    assert_eq!((status, to.as_str()), (303, "/ui/sign-in"));
    let (status, _) = ui.get("/ui/runs", Some(&cookie)).await;
    assert_eq!(
        status, 303,
        "the session ended on the server, not only in the browser"
    );

    // Revoking the key ends its sessions at their next request.
    let (cookie, _) = ui.sign_in(&key, &[]).await;
    assert_eq!(ui.get("/ui/runs", Some(&cookie)).await.0, 200);
    assert!(
        store
            .revoke_api_key(&stepwise::api::hash_key(&key), jiff::Timestamp::now())
            .unwrap()
    );
    assert_eq!(ui.get("/ui/runs", Some(&cookie)).await.0, 303);
    let r = ui
        .http
        .post(format!("{}/ui/sign-in", ui.base))
        .header(ORIGIN, &ui.base)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(serde_urlencoded::to_string([("key", key.as_str())]).unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401, "a revoked key cannot sign in");
}

#[tokio::test]
async fn changes_need_this_servers_origin_and_the_csrf_token() {
    let ui = Ui::start(false).await;
    let store = ui.engine().store().clone();
    let key = add_key(store.as_ref(), "ws_a");
    let run = ui.run_in("ws_a", json!({"employee": "Ada"})).await;
    let (cookie, _) = ui.sign_in(&key, &[]).await;
    let (_, page) = ui.get(&format!("/ui/runs/{run}"), Some(&cookie)).await;
    let token = csrf(&page);
    let cancel = format!("/ui/runs/{run}/cancel");

    let (status, _) = ui.post(&cancel, &[], Some(&cookie), Some(&ui.base)).await;
    assert_eq!(status, 403, "no CSRF token");
    let (status, _) = ui
        .post(
            &cancel,
            &[("_csrf", "0".repeat(64).as_str())],
            Some(&cookie),
            Some(&ui.base),
        )
        .await;
    assert_eq!(status, 403, "a wrong CSRF token");
    let (status, _) = ui
        .post(
            &cancel,
            &[("_csrf", &token)],
            Some(&cookie),
            Some("http://evil.example"),
        )
        .await;
    assert_eq!(status, 403, "a foreign origin");
    let (status, _) = ui
        .post(&cancel, &[("_csrf", &token)], Some(&cookie), None)
        .await;
    assert_eq!(status, 403, "no origin at all");
    let (status, _) = ui
        .post(&cancel, &[("_csrf", &token)], None, Some(&ui.base))
        .await;
    assert_eq!(status, 303, "no session: sent to sign in");
    assert_eq!(
        ui.engine().run("ws_a", &run).await.unwrap().status,
        RunStatus::Paused,
        "nothing changed"
    );

    let (status, to) = ui
        .post(&cancel, &[("_csrf", &token)], Some(&cookie), Some(&ui.base))
        .await;
    assert_eq!(status, 303);
    assert!(to.starts_with(&format!("/ui/runs/{run}")), "{to}");
    assert_eq!(
        ui.engine().run("ws_a", &run).await.unwrap().status,
        RunStatus::Cancelled
    );
    let events = store.events(&run).unwrap();
    let cancelled = events
        .iter()
        .find(|e| e.kind.as_str() == "run.cancelled")
        .unwrap();
    assert!(
        cancelled.data["by"]
            .as_str()
            .unwrap()
            .starts_with("key:stw_"),
        "{:?}",
        cancelled.data
    );
}

#[tokio::test]
async fn every_page_renders_and_actions_are_recorded_with_who_did_them() {
    let ui = Ui::start(true).await;
    let run = ui
        .run_in(
            DEFAULT_WORKSPACE,
            json!({"employee": "Ada <script>", "amount": 12}),
        )
        .await;
    // No sign-in under --insecure-no-auth.
    let (status, to) = ui.get("/ui/sign-in", None).await;
    assert_eq!((status, to.as_str()), (303, "/ui/runs"));
    for path in [
        "/ui/runs".to_string(),
        "/ui/runs?status=PAUSED&workflow=expense&trigger=api&q=Ada".to_string(),
        "/ui/approvals".into(),
        "/ui/definitions".into(),
        "/ui/definitions/expense".into(),
        "/ui/triggers".into(),
        format!("/ui/runs/{run}"),
        format!("/ui/runs/{run}?tab=graph&step=review"),
        format!("/ui/runs/{run}?tab=timeline"),
        format!("/ui/runs/{run}?tab=metadata"),
        format!("/ui/runs/{run}?tab=trace"),
        "/ui/assets/htmx.min.js".into(),
        "/ui/assets/ui.css".into(),
        "/ui/assets/ui.js".into(),
    ] {
        let (status, body) = ui.get(&path, None).await;
        assert_eq!(status, 200, "{path}: {body}");
        assert!(!body.contains("Ada <script>"), "{path}: input is escaped");
    }
    let (_, page) = ui.get(&format!("/ui/runs/{run}"), None).await;
    assert!(
        page.contains("Pay Ada &lt;script&gt;?"),
        "the approval's message is shown"
    );
    let (_, inbox) = ui.get("/ui/approvals", None).await;
    assert!(inbox.contains(&run));
    let token = csrf(&page);
    let origin = Some(ui.base.as_str());

    // Approve: the run goes on and waits for the payout signal.
    let (status, _) = ui
        .post(
            &format!("/ui/runs/{run}/decide"),
            &[("_csrf", &token), ("step", "review"), ("option", "approve")],
            None,
            origin,
        )
        .await;
    assert_eq!(status, 303);
    let rec = ui
        .engine()
        .wait_for(
            DEFAULT_WORKSPACE,
            &run,
            std::time::Duration::from_secs(5),
            |s| s == RunStatus::Waiting,
        )
        .await
        .unwrap();
    assert_eq!(rec.status, RunStatus::Waiting);
    let (_, page) = ui.get("/ui/runs", None).await;
    assert!(page.contains("Waiting on hook"));

    // An invalid signal is shown inline and nothing is sent.
    let (status, page) = ui
        .post(
            &format!("/ui/runs/{run}/signal"),
            &[
                ("_csrf", &token),
                ("step", "payout"),
                ("reference", "P"),
                ("amount", "x"),
            ],
            None,
            origin,
        )
        .await;
    assert_eq!(status, 200);
    assert!(page.contains("must be a whole number"), "{page}");
    let (status, page) = ui
        .post(
            &format!("/ui/runs/{run}/signal"),
            &[("_csrf", &token), ("step", "payout"), ("reference", "P")],
            None,
            origin,
        )
        .await;
    assert_eq!(status, 200);
    assert!(page.contains("shorter than 3 characters"), "{page}");
    assert!(
        ui.engine().store().signals(&run).unwrap().is_empty(),
        "nothing was sent"
    );

    let (status, _) = ui
        .post(
            &format!("/ui/runs/{run}/signal"),
            &[
                ("_csrf", &token),
                ("step", "payout"),
                ("reference", "PO-77"),
                ("amount", "3"),
            ],
            None,
            origin,
        )
        .await;
    assert_eq!(status, 303);
    let rec = ui
        .engine()
        .wait_for(
            DEFAULT_WORKSPACE,
            &run,
            std::time::Duration::from_secs(5),
            |s| s.is_terminal(),
        )
        .await
        .unwrap();
    assert_eq!(rec.status, RunStatus::Completed);
    let events = ui.engine().store().events(&run).unwrap();
    let decided = events
        .iter()
        .find(|e| e.kind.as_str() == "approval.decided")
        .unwrap();
    assert_eq!(decided.data["by"], "ui");
    let signal = &ui.engine().store().signals(&run).unwrap()[0];
    assert_eq!(signal.payload, json!({"reference": "PO-77", "amount": 3}));
    assert_eq!(signal.via, "ui");

    // Run the workflow from its input form: a missing required field is refused in place.
    let (status, page) = ui
        .post(
            "/ui/definitions/expense/run",
            &[("_csrf", &token), ("amount", "5")],
            None,
            origin,
        )
        .await;
    assert_eq!(status, 400);
    assert!(page.contains("employee"), "{page}");
    let (status, to) = ui
        .post(
            "/ui/definitions/expense/run",
            &[("_csrf", &token), ("employee", "Grace"), ("amount", "5.5")],
            None,
            origin,
        )
        .await;
    assert_eq!(status, 303);
    let new_run = to.trim_start_matches("/ui/runs/").to_string();
    let rec = ui.engine().run(DEFAULT_WORKSPACE, &new_run).await.unwrap();
    assert_eq!(rec.input, json!({"employee": "Grace", "amount": 5.5}));
    assert_eq!(rec.trigger["kind"], "ui");

    // History's filters: trigger kind and text over input and output. The trigger filter
    // offers every kind runs are created with, those of MCP, seed 003's agent endpoint and
    // failure alerts included.
    let (_, page) = ui.get("/ui/runs", None).await;
    for kind in ["api", "ui", "webhook", "tool", "mcp", "agent", "alert"] {
        assert!(
            page.contains(&format!("option value=\"{kind}\"")),
            "no trigger filter for `{kind}`"
        );
    }
    let (_, page) = ui.get("/ui/runs?trigger=ui", None).await;
    assert!(page.contains(&new_run) && !page.contains(&run));
    let (_, page) = ui.get("/ui/runs?q=PO-77", None).await;
    assert!(page.contains(&run) && !page.contains(&new_run));
    let (_, page) = ui.get("/ui/runs?status=COMPLETED", None).await;
    assert!(page.contains(&run) && !page.contains(&new_run));
    assert!(page.contains("1–1 of <strong>1</strong> runs"), "{page}");
}

/// The Triggers page renders the API's trigger list: a webhook's last accepted delivery and
/// its last refused one show on both, the same.
#[tokio::test]
async fn the_triggers_page_shows_what_the_api_lists() {
    let env_triggers = std::sync::Arc::new(std::sync::Mutex::new(None));
    let slot = env_triggers.clone();
    let ui = Ui::serve(true, move |s| {
        let t = stepwise::triggers::Triggers::new(s.engine.clone(), DEFAULT_WORKSPACE);
        *slot.lock().unwrap() = Some(t.clone());
        s.with_triggers(t)
    })
    .await;
    let triggers = env_triggers.lock().unwrap().clone().unwrap();
    ui.engine()
        .apply_definition(DEFAULT_WORKSPACE, "expense.yaml", APPROVAL)
        .await
        .unwrap()
        .unwrap();
    triggers
        .set(crate::triggers::trigger(
            "trigger: expenses\nworkflow: expense\nwebhook:\n  endpoint: expenses\n",
        ))
        .unwrap();
    let hook = |body: &'static str| {
        ui.http
            .post(format!("{}/v1/webhooks/expenses", ui.base))
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    assert_eq!(hook("{\"employee\": 3}").await.unwrap().status(), 400);
    assert_eq!(hook("{\"employee\": \"Ada\"}").await.unwrap().status(), 202);
    let (_, list) = {
        let r = ui
            .http
            .get(format!("{}/v1/triggers", ui.base))
            .send()
            .await
            .unwrap();
        (r.status(), r.json::<Value>().await.unwrap())
    };
    let t = &list["data"][0];
    assert_eq!(t["name"], "expenses");
    assert!(t["nextFiring"].is_null(), "{t}");
    let last = t["lastFiring"].as_str().expect("a last firing");
    let error = t["lastError"].as_str().expect("a last error");
    assert!(error.contains("input"), "{error}");
    assert!(t["lastErrorAt"].is_string(), "{t}");
    let (status, page) = ui.get("/ui/triggers", None).await;
    assert_eq!(status, 200);
    assert!(page.contains(last), "the page shows the API's last firing");
    let escaped = error
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;");
    assert!(
        page.contains(&escaped),
        "the page shows the API's last error: {error}"
    );
}
