//! Lint never panics: arbitrary bytes, arbitrary YAML, and mutated real definitions.
//! `PROPTEST_CASES=100000 cargo test --test it fuzz` runs a long campaign.

use proptest::prelude::*;
use stepwise::diagnostics::SourceFile;
use stepwise::validate::lint;

fn check(text: &str) {
    let file = SourceFile::new("fuzz.yaml", text);
    let l = lint(&file);
    for d in &l.diagnostics {
        assert!(
            d.span.start + d.span.len <= text.len(),
            "span out of range: {d:?}"
        );
        assert!(
            text.is_char_boundary(d.span.start),
            "span not on a char boundary: {d:?}"
        );
        let _ = stepwise::diagnostics::render_human(&file, d, false, 80);
        let _ = stepwise::diagnostics::render_github(&file, d);
    }
    if let Some(def) = l.definition {
        let _ = stepwise::compile::compile(def);
    }
}

fn yaml_scalar() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z_]{1,8}",
        "\\{\\{ [a-z_.]{0,20} \\}\\}",
        "[0-9]{1,4}(ms|s|m|h|d|x)?",
        Just("~".to_string()),
        Just("action".to_string()),
        Just("wait".to_string()),
        Just("approval".to_string()),
        Just("external_event".to_string()),
        Just("agent".to_string()),
        Just("\"{{ steps.a.output.x }}\"".to_string()),
        Just("[]".to_string()),
        Just("{}".to_string()),
        "\"[^\"\\\\]{0,12}\"",
    ]
}

fn yaml_node() -> impl Strategy<Value = String> {
    let key = prop_oneof![
        Just("id"),
        Just("type"),
        Just("steps"),
        Just("needs"),
        Just("uses"),
        Just("with"),
        Just("when"),
        Just("duration"),
        Just("until"),
        Just("options"),
        Just("message"),
        Just("prompt"),
        Just("output"),
        Just("input"),
        Just("schema"),
        Just("signal"),
        Just("retry"),
        Just("timeout"),
        Just("properties"),
        Just("url"),
        Just("value"),
        Just("zz"),
    ];
    yaml_scalar().prop_recursive(4, 48, 6, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5)
                .prop_map(|items| format!("[{}]", items.join(", "))),
            prop::collection::vec((key.clone(), inner), 0..6).prop_map(|entries| {
                let body: Vec<String> = entries.iter().map(|(k, v)| format!("{k}: {v}")).collect();
                format!("{{{}}}", body.join(", "))
            }),
        ]
    })
}

const SEED: &str = include_str!("../../examples/lead-router.yaml");

proptest! {
    #![proptest_config(ProptestConfig { failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        check(&String::from_utf8_lossy(&bytes));
    }

    #[test]
    fn arbitrary_yaml_never_panics(steps in prop::collection::vec(yaml_node(), 0..6), id in yaml_scalar()) {
        let text = format!("id: {id}\nsteps: [{}]\n", steps.join(", "));
        check(&text);
    }

    #[test]
    fn mutated_examples_never_panic(pos in 0..SEED.len(), len in 0usize..40, insert in "[ -~\\n]{0,12}") {
        let mut start = pos;
        while !SEED.is_char_boundary(start) { start -= 1; }
        let mut end = (start + len).min(SEED.len());
        while !SEED.is_char_boundary(end) { end -= 1; }
        let text = format!("{}{}{}", &SEED[..start], insert, &SEED[end..]);
        check(&text);
    }
}
