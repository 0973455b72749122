//! Model prices and the cost of a call.

use crate::types::Usage;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The price table shipped with this release; see `llm/prices.toml`.
const BUILT_IN: &str = include_str!("../prices.toml");

/// Prices of one model, in US dollars per million tokens.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelPrice {
    /// Input tokens at the full price.
    pub input: f64,
    /// Input tokens written to the prompt cache with the 5-minute TTL.
    pub cache_write: f64,
    /// Input tokens written to the prompt cache with the 1-hour TTL. A price file
    /// without it (from before contract 0.2) gets the published rule, twice the input
    /// price.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_write_1h: Option<f64>,
    /// Input tokens read from the prompt cache.
    pub cache_read: f64,
    /// Output tokens.
    pub output: f64,
}

impl ModelPrice {
    /// The price of a 1-hour cache write: the table's, else twice the input price.
    pub fn cache_write_1h(&self) -> f64 {
        self.cache_write_1h.unwrap_or(2.0 * self.input)
    }

    /// The cost of `usage` in US dollars. `input_tokens` excludes cache tokens, so each
    /// kind of token is priced once; cache writes are priced by their TTL.
    pub fn cost(&self, usage: &Usage) -> f64 {
        (usage.input_tokens as f64 * self.input
            + usage.cache_creation_5m_input_tokens() as f64 * self.cache_write
            + usage.cache_creation_1h_input_tokens as f64 * self.cache_write_1h()
            + usage.cache_read_input_tokens as f64 * self.cache_read
            + usage.output_tokens as f64 * self.output)
            / 1_000_000.0
    }
}

/// The cost of a call or a run.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct Cost {
    /// US dollars spent on calls whose model has a price.
    pub usd: f64,
    /// Calls whose model has no price: their cost is unknown, not zero.
    pub unpriced_calls: u32,
}

impl Cost {
    /// The cost in dollars, or `None` when any call was unpriced.
    pub fn known_usd(&self) -> Option<f64> {
        (self.unpriced_calls == 0).then_some(self.usd)
    }

    /// Adds another cost to this one.
    pub fn add(&mut self, other: &Cost) {
        self.usd += other.usd;
        self.unpriced_calls += other.unpriced_calls;
    }
}

/// Why a price table could not be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PriceTableError {
    /// The file is not a valid price table.
    #[error("invalid price table: {0}")]
    Parse(String),
    /// A price is negative or not a number.
    #[error("invalid price for model {model}: {reason}")]
    Invalid {
        /// The model.
        model: String,
        /// What is wrong.
        reason: String,
    },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PriceFile {
    as_of: String,
    #[serde(default)]
    models: BTreeMap<String, ModelPrice>,
}

/// Prices per model, dated.
#[derive(Debug, Clone, PartialEq)]
pub struct PriceTable {
    as_of: String,
    models: BTreeMap<String, ModelPrice>,
}

impl Default for PriceTable {
    fn default() -> Self {
        Self::built_in()
    }
}

impl PriceTable {
    /// The table shipped with this release.
    pub fn built_in() -> Self {
        Self::parse(BUILT_IN).expect("the built-in price table is valid (tested)")
    }

    /// Parses a table in the format of `llm/prices.toml`.
    pub fn parse(text: &str) -> Result<Self, PriceTableError> {
        let file: PriceFile =
            toml::from_str(text).map_err(|e| PriceTableError::Parse(e.to_string()))?;
        for (model, p) in &file.models {
            for (name, v) in [
                ("input", p.input),
                ("cache_write", p.cache_write),
                ("cache_write_1h", p.cache_write_1h()),
                ("cache_read", p.cache_read),
                ("output", p.output),
            ] {
                if !v.is_finite() || v < 0.0 {
                    return Err(PriceTableError::Invalid {
                        model: model.clone(),
                        reason: format!("{name} = {v}"),
                    });
                }
            }
        }
        Ok(Self {
            as_of: file.as_of,
            models: file.models,
        })
    }

    /// This table with `overrides`' entries added or replaced; the date becomes the
    /// override's.
    pub fn with_overrides(mut self, overrides: PriceTable) -> Self {
        self.as_of = overrides.as_of;
        self.models.extend(overrides.models);
        self
    }

    /// The date the prices were checked.
    pub fn as_of(&self) -> &str {
        &self.as_of
    }

    /// The price of `model`: an exact entry, else the entry `model` extends with a
    /// date or an alias: `-` followed by 8 or more digits (`claude-haiku-4-5-20251001`)
    /// or by `latest`. Any other suffix is another model (`claude-sonnet-4-7` is not
    /// `claude-sonnet-4`), so it is unpriced rather than guessed.
    pub fn price(&self, model: &str) -> Option<&ModelPrice> {
        if let Some(p) = self.models.get(model) {
            return Some(p);
        }
        let (name, suffix) = model.rsplit_once('-')?;
        let dated = suffix.len() >= 8 && suffix.bytes().all(|b| b.is_ascii_digit());
        if dated || suffix == "latest" {
            self.models.get(name)
        } else {
            None
        }
    }

    /// The cost of one call of `model` with `usage`; unpriced when the model is unknown.
    pub fn cost(&self, model: &str, usage: &Usage) -> Cost {
        match self.price(model) {
            Some(p) => Cost {
                usd: p.cost(usage),
                unpriced_calls: 0,
            },
            None => Cost {
                usd: 0.0,
                unpriced_calls: 1,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_in_table_parses_and_is_dated() {
        let t = PriceTable::built_in();
        assert!(!t.as_of().is_empty());
        assert!(t.price("claude-sonnet-4-5").is_some());
    }

    #[test]
    fn cost_prices_each_kind_of_token_once() {
        let t = PriceTable::built_in();
        // Sonnet 4.5: 3 / 3.75 / 0.30 / 15 per million.
        let usage = Usage {
            input_tokens: 1_000_000,
            output_tokens: 100_000,
            cache_creation_input_tokens: 200_000,
            cache_read_input_tokens: 2_000_000,
            cache_creation_1h_input_tokens: 0,
        };
        let c = t.cost("claude-sonnet-4-5", &usage);
        let expected = 3.0 + 1.5 + 0.75 + 0.60;
        assert!((c.usd - expected).abs() < 1e-9, "{} != {}", c.usd, expected);
        assert_eq!(c.known_usd(), Some(c.usd));
    }

    /// 5-minute writes at 1.25× the input price, 1-hour writes at 2×, reads at 0.1×
    /// (Sonnet 4.5: 3.75, 6, 0.30 per million).
    #[test]
    fn cache_writes_are_priced_by_their_ttl() {
        let t = PriceTable::built_in();
        let p = t.price("claude-sonnet-4-5").copied().expect("priced");
        assert_eq!(p.cache_write_1h(), 6.0);
        let usage = Usage {
            cache_creation_input_tokens: 1_000_000,
            cache_creation_1h_input_tokens: 400_000,
            cache_read_input_tokens: 1_000_000,
            ..Usage::default()
        };
        let expected = 0.6 * 3.75 + 0.4 * 6.0 + 0.30;
        let c = t.cost("claude-sonnet-4-5", &usage).usd;
        assert!((c - expected).abs() < 1e-9, "{c} != {expected}");
        // Every model of the shipped table prices 1-hour writes at twice its input.
        for model in ["claude-opus-4-5", "claude-haiku-4-5", "claude-sonnet-5"] {
            let p = t.price(model).expect("priced");
            assert_eq!(p.cache_write_1h, Some(2.0 * p.input), "{model}");
        }
        // An older price file without the column gets the published rule.
        let old = PriceTable::parse("as_of = \"2026-01-01\"\n[models.m]\ninput=1\ncache_write=1.25\ncache_read=0.1\noutput=5\n").expect("parses");
        assert_eq!(old.price("m").expect("priced").cache_write_1h(), 2.0);
    }

    #[test]
    fn dated_ids_match_and_unknown_models_are_unpriced() {
        let t = PriceTable::built_in();
        assert_eq!(
            t.price("claude-haiku-4-5-20251001"),
            t.price("claude-haiku-4-5")
        );
        // A dated sonnet-4-5 is sonnet-4-5, not sonnet-4.
        let p = t.price("claude-sonnet-4-5-20250929").copied();
        assert_eq!(p, t.price("claude-sonnet-4-5").copied());
        let c = t.cost(
            "gpt-unknown",
            &Usage {
                input_tokens: 5,
                ..Usage::default()
            },
        );
        assert_eq!(c.unpriced_calls, 1);
        assert_eq!(c.known_usd(), None);
        assert!(
            t.price("claude-sonnet-4-5x").is_none(),
            "a prefix must end at a dash"
        );
        // Regression: a newer model must not take an older model's price by prefix.
        assert!(t.price("claude-sonnet-4-7").is_none());
        assert!(
            t.price("claude-sonnet-4-5-2025").is_none(),
            "a date has 8 digits"
        );
        assert_eq!(
            t.price("claude-3-5-haiku-latest"),
            t.price("claude-3-5-haiku")
        );
    }

    #[test]
    fn overrides_replace_entries_and_bad_prices_are_refused() {
        let o = PriceTable::parse("as_of = \"2027-01-01\"\n[models.claude-sonnet-4-5]\ninput=1\ncache_write=1\ncache_read=1\noutput=1\n").unwrap();
        let t = PriceTable::built_in().with_overrides(o);
        assert_eq!(t.as_of(), "2027-01-01");
        assert_eq!(t.price("claude-sonnet-4-5").unwrap().output, 1.0);
        let bad = PriceTable::parse(
            "as_of = \"x\"\n[models.m]\ninput=-1\ncache_write=1\ncache_read=1\noutput=1\n",
        );
        assert!(matches!(bad, Err(PriceTableError::Invalid { .. })));
        let unknown_key = PriceTable::parse(
            "as_of = \"x\"\n[models.m]\ninput=1\ncache_write=1\ncache_read=1\noutput=1\nbogus=2\n",
        );
        assert!(matches!(unknown_key, Err(PriceTableError::Parse(_))));
    }
}
