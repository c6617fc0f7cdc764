//! Model prices: what an agent step's `budget` is counted in.

use serde_json::{Map, Value};

/// USD per million tokens, per model (`STEPWISE_PRICES`:
/// `{"gpt-4o": {"input": 2.5, "output": 10}}`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Prices(Map<String, Value>);

impl Prices {
    /// Read `STEPWISE_PRICES`' JSON; a model whose prices are not numbers is refused.
    pub fn parse(text: &str) -> Result<Prices, String> {
        let v: Value = serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
        let Value::Object(map) = v else {
            return Err(
                "must be an object of models, e.g. {\"gpt-4o\": {\"input\": 2.5, \"output\": 10}}"
                    .into(),
            );
        };
        for (model, p) in &map {
            let ok = |k: &str| p.get(k).is_none_or(Value::is_number);
            if !p.is_object() || !ok("input") || !ok("output") {
                return Err(format!(
                    "`{model}` must be {{\"input\": USD per 1M prompt tokens, \"output\": USD per 1M completion tokens}}"
                ));
            }
        }
        Ok(Prices(map))
    }

    pub fn knows(&self, model: &str) -> bool {
        self.0.contains_key(model)
    }

    /// The cost of one call, if the model has a price.
    pub fn cost(&self, model: &str, prompt_tokens: u64, completion_tokens: u64) -> Option<f64> {
        let p = self.0.get(model)?;
        let rate = |k: &str| p.get(k).and_then(Value::as_f64).unwrap_or(0.0);
        Some(
            prompt_tokens as f64 * rate("input") / 1e6
                + completion_tokens as f64 * rate("output") / 1e6,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn costs_count_per_million_tokens() {
        let p = Prices::parse(r#"{"m": {"input": 2, "output": 10}}"#).unwrap();
        assert_eq!(p.cost("m", 1_000_000, 100_000), Some(3.0));
        assert_eq!(p.cost("other", 1, 1), None);
        assert!(Prices::parse(r#"{"m": {"input": "cheap"}}"#).is_err());
        assert!(Prices::parse("[1]").is_err());
    }
}
