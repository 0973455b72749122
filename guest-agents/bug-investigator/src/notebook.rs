//! The investigation's notebook: the hypotheses the model records, the order it ranks
//! them in, the two tools that write them, and how they read as text.
//!
//! The doc comments of [`Hypothesis`] and [`Ranking`] are the tools' input schemas'
//! descriptions: the model reads them.

use cf_agent_sdk::llm::Tool;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::cell::RefCell;

/// The most hypotheses a notebook keeps; `record_hypothesis` refuses more.
pub const MAX_HYPOTHESES: usize = 8;

/// A root-cause hypothesis about the bug.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Hypothesis {
    /// The suspected root cause, in one sentence.
    pub title: String,
    /// How likely it is the root cause, from 0 (ruled out) to 1 (certain).
    #[schemars(range(min = 0, max = 1))]
    pub likelihood: f64,
    /// The facts in the report that point to it, each a short quote or a close
    /// paraphrase; empty when nothing in the report does.
    pub evidence: Vec<String>,
    /// The cheapest experiment that confirms or rules it out.
    pub experiment: String,
}

/// The recorded hypotheses in order of likelihood.
#[derive(Debug, Deserialize, JsonSchema)]
pub struct Ranking {
    /// Hypothesis numbers, as `record_hypothesis` returned them, most likely first;
    /// every recorded hypothesis once.
    pub order: Vec<u32>,
}

/// What an investigation found so far; kept in the agent's store as JSON.
#[derive(Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Notebook {
    /// Hypothesis `n` is `hypotheses[n - 1]`.
    hypotheses: Vec<Hypothesis>,
    /// Hypothesis numbers, most likely first, as the model ranked them; empty until it
    /// does. Numbers it left out follow by likelihood.
    ranking: Vec<u32>,
    /// Whether this run recorded or ranked anything.
    #[serde(skip)]
    changed: bool,
}

impl Notebook {
    /// A notebook as [`to_json`](Self::to_json) wrote it; refused if its ranking names
    /// a hypothesis it does not hold.
    pub fn from_json(json: &str) -> Result<Self, String> {
        let notebook: Notebook = serde_json::from_str(json).map_err(|e| e.to_string())?;
        let n = notebook.hypotheses.len();
        if n > MAX_HYPOTHESES
            || notebook
                .ranking
                .iter()
                .any(|&h| !(1..=n as u32).contains(&h))
        {
            return Err("its ranking or size does not fit its hypotheses".into());
        }
        Ok(notebook)
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a notebook is plain data")
    }

    pub fn len(&self) -> usize {
        self.hypotheses.len()
    }

    pub fn is_empty(&self) -> bool {
        self.hypotheses.is_empty()
    }

    /// Whether this run recorded or ranked anything (what is worth storing again).
    pub fn changed(&self) -> bool {
        self.changed
    }

    /// `record_hypothesis`: keeps a hypothesis and answers with its number, or says why
    /// not (the model reads it and may try again).
    pub fn record(&mut self, mut h: Hypothesis) -> Result<String, String> {
        h.title = h.title.trim().to_owned();
        h.experiment = h.experiment.trim().to_owned();
        h.evidence = h
            .evidence
            .into_iter()
            .map(|e| e.trim().to_owned())
            .filter(|e| !e.is_empty())
            .collect();
        if h.title.is_empty() {
            return Err("the title is empty: say what the suspected root cause is".into());
        }
        if !(0.0..=1.0).contains(&h.likelihood) {
            return Err(format!(
                "the likelihood {} is not between 0 and 1",
                h.likelihood
            ));
        }
        if let Some(n) = self
            .hypotheses
            .iter()
            .position(|old| old.title.eq_ignore_ascii_case(&h.title))
        {
            return Err(format!("H{} already says that", n + 1));
        }
        if self.hypotheses.len() >= MAX_HYPOTHESES {
            return Err(format!(
                "{MAX_HYPOTHESES} hypotheses are recorded, the most kept: rank them now"
            ));
        }
        self.hypotheses.push(h);
        self.changed = true;
        Ok(format!("Recorded as H{}.", self.hypotheses.len()))
    }

    /// `rank_hypotheses`: keeps the order, or says why not. Numbers left out are
    /// allowed (they follow by likelihood); unknown or repeated ones are not.
    pub fn rank(&mut self, order: Vec<u32>) -> Result<String, String> {
        let n = self.hypotheses.len() as u32;
        if n == 0 {
            return Err("no hypothesis is recorded yet: record them first".into());
        }
        let unknown: Vec<String> = order
            .iter()
            .filter(|&&h| !(1..=n).contains(&h))
            .map(|h| h.to_string())
            .collect();
        if !unknown.is_empty() {
            return Err(format!(
                "no hypothesis numbered {}; they are numbered 1 to {n}",
                unknown.join(", ")
            ));
        }
        if let Some(h) = order
            .iter()
            .enumerate()
            .find_map(|(i, h)| order[..i].contains(h).then_some(h))
        {
            return Err(format!("H{h} is ranked twice"));
        }
        self.ranking = order;
        self.changed = true;
        let left_out: Vec<String> = (1..=n)
            .filter(|h| !self.ranking.contains(h))
            .map(|h| format!("H{h}"))
            .collect();
        let mut answer = format!("Ranked: {}.", labels(&self.ranking));
        if !left_out.is_empty() {
            answer.push_str(&format!(
                " Left out, so ranked after by likelihood: {}.",
                left_out.join(", ")
            ));
        }
        Ok(answer)
    }

    /// Every hypothesis number, most likely first: the ranking, then the numbers it
    /// left out by likelihood (the earlier first on a tie).
    pub fn order(&self) -> Vec<u32> {
        let mut rest: Vec<u32> = (1..=self.hypotheses.len() as u32)
            .filter(|h| !self.ranking.contains(h))
            .collect();
        rest.sort_by(|a, b| {
            let likelihood = |h: &u32| self.hypotheses[*h as usize - 1].likelihood;
            likelihood(b).total_cmp(&likelihood(a))
        });
        self.ranking.iter().copied().chain(rest).collect()
    }

    /// The hypotheses, most likely first, each with its evidence and experiment.
    pub fn render(&self) -> String {
        if self.hypotheses.is_empty() {
            return "No hypotheses were recorded.".into();
        }
        self.order()
            .iter()
            .enumerate()
            .map(|(i, &n)| {
                let h = &self.hypotheses[n as usize - 1];
                let evidence = if h.evidence.is_empty() {
                    "none in the report".to_owned()
                } else {
                    h.evidence.join("; ")
                };
                let experiment = if h.experiment.is_empty() {
                    "none given"
                } else {
                    &h.experiment
                };
                format!(
                    "{}. H{n}: {} (likelihood {:.2})\n   Evidence: {evidence}\n   Experiment: {experiment}",
                    i + 1,
                    h.title,
                    h.likelihood
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// `H2, H1, H3`.
fn labels(order: &[u32]) -> String {
    order
        .iter()
        .map(|h| format!("H{h}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The tools that write `notebook`: `record_hypothesis` first (the offline provider
/// and the loopback server call the first tool), then `rank_hypotheses`.
pub fn tools(notebook: &RefCell<Notebook>) -> Vec<Tool<'_>> {
    vec![
        Tool::with_schema::<Hypothesis>(
            "record_hypothesis",
            "Records one root-cause hypothesis with the evidence for it and the experiment \
             that tests it. Returns its number (H1, H2, ...).",
            HYPOTHESIS_SCHEMA,
            |h| notebook.borrow_mut().record(h),
        ),
        Tool::with_schema::<Ranking>(
            "rank_hypotheses",
            "Orders the recorded hypotheses from most to least likely, by number.",
            RANKING_SCHEMA,
            |r| notebook.borrow_mut().rank(r.order),
        ),
    ]
}

/// The tools' input schemas, as `json_schema::<T>()` derives them, written out byte for
/// byte (the requests, and so their cache keys, are the same): each run is a fresh
/// instance, and deriving them is most of what a run computes. A test keeps them
/// equal to the types: after changing one, write the derived schema into its file
/// again (the test's failure prints it).
const HYPOTHESIS_SCHEMA: &str = include_str!("hypothesis.schema.json").trim_ascii_end();
const RANKING_SCHEMA: &str = include_str!("ranking.schema.json").trim_ascii_end();

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_written_schemas_are_the_types() {
        for (written, derived, file) in [
            (
                HYPOTHESIS_SCHEMA,
                cf_agent_sdk::llm::json_schema::<Hypothesis>(),
                "hypothesis",
            ),
            (
                RANKING_SCHEMA,
                cf_agent_sdk::llm::json_schema::<Ranking>(),
                "ranking",
            ),
        ] {
            assert!(
                written == derived,
                "src/{file}.schema.json is not its type's schema; the derived one is:\n{derived}"
            );
        }
    }

    fn h(title: &str, likelihood: f64) -> Hypothesis {
        Hypothesis {
            title: title.into(),
            likelihood,
            evidence: vec![" 500 after deploy ".into(), "  ".into()],
            experiment: "roll back".into(),
        }
    }

    fn notebook(hypotheses: &[(&str, f64)]) -> Notebook {
        let mut n = Notebook::default();
        for (title, likelihood) in hypotheses {
            n.record(h(title, *likelihood)).expect("recorded");
        }
        n
    }

    #[test]
    fn records_number_and_clean_hypotheses_and_refuse_bad_ones() {
        let mut n = Notebook::default();
        assert!(!n.changed());
        assert_eq!(
            n.record(h(" stale session ", 0.3)).as_deref(),
            Ok("Recorded as H1.")
        );
        assert!(n.changed());
        assert_eq!(n.hypotheses[0].title, "stale session");
        assert_eq!(n.hypotheses[0].evidence, ["500 after deploy"]);
        assert!(
            n.record(h("Stale Session", 0.5))
                .unwrap_err()
                .contains("H1 already")
        );
        assert!(n.record(h("", 0.5)).unwrap_err().contains("title is empty"));
        assert!(
            n.record(h("pool", 1.5))
                .unwrap_err()
                .contains("not between 0 and 1")
        );
        assert!(n.record(h("pool", f64::NAN)).is_err());
        for i in 1..MAX_HYPOTHESES {
            n.record(h(&format!("cause {i}"), 0.1)).expect("room");
        }
        assert!(
            n.record(h("one too many", 0.1))
                .unwrap_err()
                .contains("rank them now")
        );
        assert_eq!(n.len(), MAX_HYPOTHESES);
    }

    #[test]
    fn the_ranking_comes_first_and_the_rest_follow_by_likelihood() {
        let mut n = notebook(&[("a", 0.2), ("b", 0.9), ("c", 0.5), ("d", 0.5)]);
        assert_eq!(
            n.order(),
            [2, 3, 4, 1],
            "by likelihood, ties in recorded order"
        );
        assert_eq!(
            n.rank(vec![4, 1]).as_deref(),
            Ok("Ranked: H4, H1. Left out, so ranked after by likelihood: H2, H3.")
        );
        assert_eq!(n.order(), [4, 1, 2, 3]);
        assert!(n.rank(vec![1, 5, 0]).unwrap_err().contains("numbered 5, 0"));
        assert!(
            n.rank(vec![1, 2, 1])
                .unwrap_err()
                .contains("H1 is ranked twice")
        );
        assert_eq!(n.order(), [4, 1, 2, 3], "a refused ranking changes nothing");
        assert!(
            Notebook::default()
                .rank(vec![1])
                .unwrap_err()
                .contains("record them first")
        );
    }

    #[test]
    fn renders_in_order_with_evidence_and_experiment() {
        let mut n = notebook(&[("stale session", 0.3), ("pool exhausted", 0.6)]);
        n.hypotheses[1].evidence.clear();
        n.rank(vec![2, 1]).expect("ranked");
        assert_eq!(
            n.render(),
            "1. H2: pool exhausted (likelihood 0.60)\n   Evidence: none in the report\n   Experiment: roll back\n\
             2. H1: stale session (likelihood 0.30)\n   Evidence: 500 after deploy\n   Experiment: roll back"
        );
        assert_eq!(Notebook::default().render(), "No hypotheses were recorded.");
    }

    #[test]
    fn a_notebook_round_trips_through_json_and_a_bad_one_is_refused() {
        let mut n = notebook(&[("a", 0.2), ("b", 0.9)]);
        n.rank(vec![2]).expect("ranked");
        let back = Notebook::from_json(&n.to_json()).expect("parses");
        assert_eq!(back.order(), [2, 1]);
        assert!(!back.changed(), "what was stored is not a change");
        assert!(Notebook::from_json(r#"{"hypotheses":[],"ranking":[1]}"#).is_err());
        assert!(Notebook::from_json("H1: stale session").is_err());
    }

    #[test]
    fn the_tools_write_the_notebook_and_record_comes_first() {
        let notebook = RefCell::new(Notebook::default());
        let tools = tools(&notebook);
        assert_eq!(tools[0].name(), "record_hypothesis");
        let schema: serde_json::Value =
            serde_json::from_str(&tools[0].definition().input_schema).expect("JSON");
        assert_eq!(
            schema["required"],
            serde_json::json!(["title", "likelihood", "evidence", "experiment"])
        );
        assert_eq!(schema["properties"]["likelihood"]["maximum"], 1);
        let input =
            r#"{"title":"pool","likelihood":0.7,"evidence":["under load"],"experiment":"metrics"}"#;
        assert_eq!(tools[0].call(input).as_deref(), Ok("Recorded as H1."));
        assert!(tools[1].call(r#"{"order":[1]}"#).is_ok());
        assert!(tools[1].call(r#"{"order":"1"}"#).is_err());
        drop(tools);
        assert_eq!(notebook.into_inner().ranking, [1]);
    }
}
