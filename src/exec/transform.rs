//! `transform`: the step's output is its rendered `with.value` (templates did the work).

use serde_json::{Map, Value};

pub fn run(with: &Map<String, Value>) -> Value {
    with.get("value").cloned().unwrap_or(Value::Null)
}
