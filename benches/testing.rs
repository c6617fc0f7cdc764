//! `stepwise test` speed: `cargo bench --bench testing` runs 1,000 cases of a typical
//! workflow (an http call retried after a failure, an agent, an approval at +2h, a 3-day
//! wait, a signal at +5d, branches on `when`) on the virtual clock and prints the time and
//! cases per second (load and lint included).
//! The goal is under 2 s on 2 cores. `STEPWISE_BENCH_CASES` changes the number of cases.

use std::time::Instant;

const WORKFLOW: &str = r#"
id: onboarding
input:
  type: object
  required: [email, plan]
  properties:
    email: {type: string}
    plan: {enum: [free, pro]}
output:
  type: object
  required: [account, decision]
steps:
  - id: create_account
    type: action
    uses: http
    with:
      method: POST
      url: https://api.example.com/accounts
      json: {email: "{{ input.email }}", plan: "{{ input.plan }}"}
    retry: {max_attempts: 3, initial_delay: 30s}
  - id: assess
    type: agent
    prompt: "Assess {{ input.email }} on plan {{ input.plan }}."
  - id: review
    type: approval
    message: "Approve {{ input.email }}?"
    options: [approve, reject]
    timeout: 2d
  - id: welcome
    type: action
    needs: [review]
    when: steps.review.output == "approve"
    uses: transform
    with: {value: {text: "Welcome {{ input.email }}"}}
  - id: settle
    type: wait
    needs: [welcome]
    duration: 3d
  - id: payment
    type: external_event
    needs: [settle]
    when: input.plan == "pro"
    signal: payment.confirmed
    timeout: 7d
  - id: log
    type: action
    needs: [payment]
    uses: log
    with: {message: "done {{ input.email }}"}
result:
  account: "{{ steps.create_account.output.body.id }}"
  decision: "{{ steps.review.output }}"
"#;

fn case(i: usize) -> String {
    let plan = if i.is_multiple_of(2) { "pro" } else { "free" };
    let retry = if i.is_multiple_of(4) {
        "\n        - error: 503 from upstream"
    } else {
        ""
    };
    let (option, status) = if i % 10 == 5 {
        ("reject", "COMPLETED")
    } else {
        ("approve", "COMPLETED")
    };
    let signal = if plan == "pro" && option == "approve" {
        "\n      - signal: payment.confirmed\n        payload: {amount: 10}\n        at: 5d"
    } else {
        ""
    };
    format!(
        r#"
  - name: case {i}
    input: {{email: "user{i}@example.com", plan: {plan}}}
    mocks:
      create_account:{retry}
        - output: {{status: 201, body: {{id: acct_{i}}}}}
      assess: {{output: fine}}
    events:
      - approve: review
        option: {option}
        at: 2h{signal}
    expect:
      status: {status}
      output: {{account: acct_{i}, decision: {option}}}
"#
    )
}

fn main() {
    let n: usize = std::env::var("STEPWISE_BENCH_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000);
    let dir = std::env::temp_dir().join(format!("stepwise-bench-testing-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("onboarding.yaml"), WORKFLOW).unwrap();
    let mut text = String::from("workflow: onboarding.yaml\ntests:\n");
    for i in 0..n {
        text.push_str(&case(i));
    }
    let path = dir.join("onboarding.test.yaml");
    std::fs::write(&path, text).unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let started = Instant::now();
    let loaded = stepwise::testing::load(&path).unwrap();
    let suite = loaded
        .suite
        .unwrap_or_else(|| panic!("{:?}", loaded.diagnostics));
    let lint = started.elapsed();
    let report = rt.block_on(stepwise::testing::run(&suite)).unwrap();
    let total = started.elapsed();
    let failed: Vec<_> = report.cases.iter().filter(|c| !c.passed()).collect();
    assert!(
        failed.is_empty(),
        "{} failed, first: {:?}",
        failed.len(),
        failed.first().map(|c| (&c.name, &c.failures))
    );
    println!(
        "stepwise test: {n} cases (waits of 2h to 5d, retries, approvals, signals) in {:.2} s \
         (load+lint {:.2} s, run {:.2} s): {:.0} cases/s",
        total.as_secs_f64(),
        lint.as_secs_f64(),
        report.elapsed.as_secs_f64(),
        n as f64 / total.as_secs_f64()
    );
    let _ = std::fs::remove_dir_all(&dir);
}
