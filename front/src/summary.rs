//! What a set of runs amounts to: counts, latency percentiles, cache use, tokens,
//! cost and errors, overall, by agent and by model; as JSON (serde), CSV or a table.
//!
//! ```
//! use cf_front::runlog::RunRecord;
//! use cf_front::summary::{Summary, parse_duration};
//! use std::time::Duration;
//!
//! let records: Vec<RunRecord> = Vec::new();          // from RunLog::read_since
//! let summary = Summary::from_records(&records);
//! assert_eq!(summary.all.runs, 0);
//! println!("{summary}");                              // the table
//! assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
//! ```

use crate::runlog::RunRecord;
use cf_host::Usage;
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt::{self, Write as _};
use std::time::Duration;

/// The `by_model` key of runs that no model answered.
pub const NO_MODEL: &str = "(none)";

/// The `error_kinds` key of a failed run whose record names no kind.
pub const UNKNOWN_ERROR: &str = "unknown";

/// The figures of a group of runs. Rates are fractions from 0 to 1 and are 0 when
/// there is nothing to divide by; latencies are 0 for an empty group.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Group {
    /// Runs in the group.
    pub runs: u64,
    /// Runs that succeeded.
    pub ok: u64,
    /// Runs that failed.
    pub failed: u64,
    /// `ok / runs`.
    pub success_rate: f64,
    /// Median run latency, in milliseconds, by the nearest-rank method ([`nearest_rank`])
    /// up to [`EXACT_LATENCIES`] runs, then within 0.1 % (a histogram).
    pub p50_ms: f64,
    /// 95th percentile of run latency, in milliseconds.
    pub p95_ms: f64,
    /// 99th percentile of run latency, in milliseconds.
    pub p99_ms: f64,
    /// Model calls answered, from the provider or the cache.
    pub llm_calls: u64,
    /// Model calls answered from the response cache.
    pub cache_hits: u64,
    /// `cache_hits / llm_calls`.
    pub cache_hit_rate: f64,
    /// Tokens of every call, summed.
    pub usage: Usage,
    /// US dollars of the priced runs; runs in `unpriced_runs` are not in it.
    pub cost_usd: f64,
    /// Runs with a call whose model has no price: their cost is unknown, not zero.
    pub unpriced_runs: u64,
    /// US dollars saved by cached answers.
    pub saved_usd: f64,
}

/// All runs, then the same figures by agent and by model. In JSON the overall
/// figures are at the top level, beside `error_kinds`, `by_agent` and `by_model`.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Summary {
    /// Every run.
    #[serde(flatten)]
    pub all: Group,
    /// Failed runs by [`RunRecord::error_kind`] ([`UNKNOWN_ERROR`] when it is missing).
    pub error_kinds: BTreeMap<String, u64>,
    /// Runs by agent name.
    pub by_agent: BTreeMap<String, Group>,
    /// Runs by the model of their last answer ([`NO_MODEL`] when none answered).
    pub by_model: BTreeMap<String, Group>,
}

/// The `percent`th percentile of `sorted` (ascending) by the nearest-rank method: the
/// smallest value such that at least `percent`% of the values are less than or equal
/// to it, i.e. the value of rank `⌈percent/100 × n⌉` (at least 1). It is always one of
/// the values, never an interpolation. 0 for no values; `percent` is capped at 100.
pub fn nearest_rank(sorted: &[f64], percent: u32) -> f64 {
    let rank = (percent.min(100) as usize * sorted.len())
        .div_ceil(100)
        .max(1);
    sorted.get(rank - 1).copied().unwrap_or(0.0)
}

/// Latencies kept exactly up to this many per group; past it, in a histogram.
pub const EXACT_LATENCIES: usize = 10_000;

/// A group's latencies, for its percentiles: every value while there are few (exact
/// nearest-rank percentiles), then an HdrHistogram of microseconds with three
/// significant digits (percentiles within 0.1 %) in constant memory however many runs
/// a batch has.
#[derive(Default)]
struct Latencies {
    exact: Vec<f64>,
    sketch: Option<hdrhistogram::Histogram<u64>>,
}

impl Latencies {
    fn push(&mut self, ms: f64) {
        if self.sketch.is_none() && self.exact.len() < EXACT_LATENCIES {
            self.exact.push(ms);
            return;
        }
        if self.sketch.is_none() {
            // 1 µs to an hour (growing past it), 3 significant digits.
            match hdrhistogram::Histogram::new_with_bounds(1, 3_600_000_000, 3) {
                Ok(mut h) => {
                    h.auto(true);
                    self.sketch = Some(h);
                }
                Err(_) => {
                    self.exact.push(ms);
                    return;
                }
            }
        }
        let Some(sketch) = self.sketch.as_mut() else {
            return;
        };
        for v in self.exact.drain(..).chain(std::iter::once(ms)) {
            let us = (v * 1000.0).round().max(1.0) as u64;
            let _ = sketch.record(us);
        }
    }

    fn percentile(&self, percent: u32) -> f64 {
        match &self.sketch {
            Some(h) => h.value_at_quantile(f64::from(percent) / 100.0) as f64 / 1000.0,
            None => nearest_rank(&self.exact, percent),
        }
    }
}

/// A group being summed.
#[derive(Default)]
struct Acc {
    group: Group,
    latencies: Latencies,
}

impl Acc {
    fn add(&mut self, r: &RunRecord) {
        let g = &mut self.group;
        g.runs += 1;
        if r.ok {
            g.ok += 1;
        } else {
            g.failed += 1;
        }
        g.llm_calls += u64::from(r.llm_calls);
        g.cache_hits += u64::from(r.cache_hits);
        g.usage.add(&r.usage);
        match r.cost_usd {
            Some(usd) => g.cost_usd += usd,
            None => g.unpriced_runs += 1,
        }
        g.saved_usd += r.saved_usd;
        self.latencies.push(r.latency_ms);
    }

    fn finish(mut self) -> Group {
        self.latencies.exact.sort_by(f64::total_cmp);
        let mut g = self.group;
        g.p50_ms = self.latencies.percentile(50);
        g.p95_ms = self.latencies.percentile(95);
        g.p99_ms = self.latencies.percentile(99);
        g.success_rate = ratio(g.ok, g.runs);
        g.cache_hit_rate = ratio(g.cache_hits, g.llm_calls);
        g
    }
}

fn ratio(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 / whole as f64
    }
}

/// A summary being built one record at a time, in memory bounded by the number of
/// agents and models, not of runs ([`Latencies`]).
#[derive(Default)]
pub struct SummaryBuilder {
    all: Acc,
    by_agent: BTreeMap<String, Acc>,
    by_model: BTreeMap<String, Acc>,
    error_kinds: BTreeMap<String, u64>,
}

impl std::fmt::Debug for SummaryBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SummaryBuilder")
            .field("runs", &self.all.group.runs)
            .finish_non_exhaustive()
    }
}

impl SummaryBuilder {
    /// Counts one run.
    pub fn add(&mut self, r: &RunRecord) {
        self.all.add(r);
        match self.by_agent.get_mut(&r.agent) {
            Some(acc) => acc.add(r),
            None => self.by_agent.entry(r.agent.clone()).or_default().add(r),
        }
        let model = r.model.as_deref().unwrap_or(NO_MODEL);
        match self.by_model.get_mut(model) {
            Some(acc) => acc.add(r),
            None => self.by_model.entry(model.to_owned()).or_default().add(r),
        }
        if !r.ok {
            let kind = r.error_kind.as_deref().unwrap_or(UNKNOWN_ERROR);
            *self.error_kinds.entry(kind.to_owned()).or_insert(0) += 1;
        }
    }

    /// Runs counted so far.
    pub fn runs(&self) -> u64 {
        self.all.group.runs
    }

    /// The summary.
    pub fn finish(self) -> Summary {
        let finish =
            |m: BTreeMap<String, Acc>| m.into_iter().map(|(k, a)| (k, a.finish())).collect();
        Summary {
            all: self.all.finish(),
            error_kinds: self.error_kinds,
            by_agent: finish(self.by_agent),
            by_model: finish(self.by_model),
        }
    }
}

impl Summary {
    /// Summarises `records`; an empty slice gives zeros.
    pub fn from_records(records: &[RunRecord]) -> Self {
        let mut builder = SummaryBuilder::default();
        for r in records {
            builder.add(r);
        }
        builder.finish()
    }

    /// Runs per second over `wall` (the time the runs took together, e.g. a batch's
    /// wall-clock time); 0 for a zero `wall`.
    pub fn throughput(&self, wall: Duration) -> f64 {
        let secs = wall.as_secs_f64();
        if secs > 0.0 {
            self.all.runs as f64 / secs
        } else {
            0.0
        }
    }

    /// The groups in report order: `("all", "", all)`, then `("agent", name, …)` by
    /// name, then `("model", name, …)` by name.
    pub fn rows(&self) -> impl Iterator<Item = (&'static str, &str, &Group)> {
        let agents = self.by_agent.iter().map(|(k, g)| ("agent", k.as_str(), g));
        let models = self.by_model.iter().map(|(k, g)| ("model", k.as_str(), g));
        std::iter::once(("all", "", &self.all))
            .chain(agents)
            .chain(models)
    }

    /// CSV (RFC 4180, `\n` line ends): the header
    /// `scope,name,runs,ok,failed,p50_ms,p95_ms,p99_ms,input_tokens,output_tokens,cost_usd,saved_usd`,
    /// then one row per group in [`rows`](Self::rows) order (the first has scope `all`
    /// and an empty name). Latencies have 1 decimal, dollars 6; `input_tokens` excludes
    /// prompt-cache tokens, as in [`Usage`]; `cost_usd` is of the priced runs only.
    pub fn to_csv(&self) -> String {
        let mut out = String::from(
            "scope,name,runs,ok,failed,p50_ms,p95_ms,p99_ms,input_tokens,output_tokens,cost_usd,saved_usd\n",
        );
        for (scope, name, g) in self.rows() {
            // Writing to a String cannot fail.
            let _ = writeln!(
                out,
                "{scope},{},{},{},{},{:.1},{:.1},{:.1},{},{},{:.6},{:.6}",
                csv_field(name),
                g.runs,
                g.ok,
                g.failed,
                g.p50_ms,
                g.p95_ms,
                g.p99_ms,
                g.usage.input_tokens,
                g.usage.output_tokens,
                g.cost_usd,
                g.saved_usd,
            );
        }
        out
    }
}

/// A CSV field, quoted when it holds a comma, a quote or a line break.
fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_owned()
    }
}

/// `1234567` as `1,234,567`.
fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A group's cost for a person: `$0.0123`; `≥$0.0123` when some runs are unpriced
/// (the sum is a lower bound); `unpriced` when all are.
fn cost_cell(g: &Group) -> String {
    match (g.unpriced_runs, g.runs) {
        (0, _) => format!("${:.4}", g.cost_usd),
        (u, r) if u == r => "unpriced".to_owned(),
        _ => format!("≥${:.4}", g.cost_usd),
    }
}

/// The overall figures, then a table of every group with aligned columns; costs have 4
/// decimals. Every line ends in `\n`, so print it with `print!`; no runs is `no runs`.
impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let a = &self.all;
        if a.runs == 0 {
            return writeln!(f, "no runs");
        }
        writeln!(
            f,
            "runs     {} ({} ok, {} failed, {:.1}% success)",
            thousands(a.runs),
            thousands(a.ok),
            thousands(a.failed),
            a.success_rate * 100.0
        )?;
        writeln!(
            f,
            "latency  p50 {:.1} ms · p95 {:.1} ms · p99 {:.1} ms",
            a.p50_ms, a.p95_ms, a.p99_ms
        )?;
        writeln!(
            f,
            "cache    {} of {} calls ({:.1}%)",
            thousands(a.cache_hits),
            thousands(a.llm_calls),
            a.cache_hit_rate * 100.0
        )?;
        let u = &a.usage;
        writeln!(
            f,
            "tokens   {} in · {} out · {} cache write · {} cache read",
            thousands(u.input_tokens),
            thousands(u.output_tokens),
            thousands(u.cache_creation_input_tokens),
            thousands(u.cache_read_input_tokens)
        )?;
        write!(f, "cost     ${:.4}", a.cost_usd)?;
        if a.unpriced_runs > 0 {
            write!(f, " + {} unpriced run(s)", thousands(a.unpriced_runs))?;
        }
        writeln!(f, " · saved ${:.4}", a.saved_usd)?;
        if !self.error_kinds.is_empty() {
            let errors: Vec<String> = self
                .error_kinds
                .iter()
                .map(|(k, n)| format!("{k} {n}"))
                .collect();
            writeln!(f, "errors   {}", errors.join(" · "))?;
        }
        writeln!(f)?;

        let header =
            "scope|name|runs|ok|failed|p50 ms|p95 ms|p99 ms|in tokens|out tokens|cost|saved";
        let mut table: Vec<Vec<String>> = vec![header.split('|').map(str::to_owned).collect()];
        for (scope, name, g) in self.rows() {
            table.push(vec![
                scope.to_owned(),
                name.to_owned(),
                thousands(g.runs),
                thousands(g.ok),
                thousands(g.failed),
                format!("{:.1}", g.p50_ms),
                format!("{:.1}", g.p95_ms),
                format!("{:.1}", g.p99_ms),
                thousands(g.usage.input_tokens),
                thousands(g.usage.output_tokens),
                cost_cell(g),
                format!("${:.4}", g.saved_usd),
            ]);
        }
        let mut widths = vec![0; table[0].len()];
        for row in &table {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(cell.chars().count());
            }
        }
        for row in &table {
            let mut line = String::new();
            for (i, (cell, w)) in row.iter().zip(&widths).enumerate() {
                let pad = " ".repeat(w - cell.chars().count());
                let sep = if i == 0 { "" } else { "  " };
                // Scope and name read left to right; numbers line up on the right.
                if i < 2 {
                    line.push_str(&format!("{sep}{cell}{pad}"));
                } else {
                    line.push_str(&format!("{sep}{pad}{cell}"));
                }
            }
            writeln!(f, "{}", line.trim_end())?;
        }
        Ok(())
    }
}

/// Parses a `--since` duration: whole numbers with a unit, `s`, `m`, `h`, `d` (24 h)
/// or `w` (7 d), optionally chained (`1h30m`): `30s`, `15m`, `2h`, `7d`, `1w`.
/// The error says what is wrong, for the user.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    const HELP: &str = "use a whole number and a unit: 30s, 15m, 2h, 7d, 1w";
    let text = text.trim();
    if text.is_empty() {
        return Err(format!("empty duration; {HELP}"));
    }
    let mut total: u64 = 0;
    let mut rest = text;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        if digits == 0 {
            return Err(format!(
                "invalid duration {text:?}: expected a number at {rest:?}; {HELP}"
            ));
        }
        let too_large = || format!("duration {text:?} is too large");
        let n: u64 = rest[..digits].parse().map_err(|_| too_large())?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let seconds: u64 = match &rest[..unit_len] {
            "s" => 1,
            "m" => 60,
            "h" => 3600,
            "d" => 86_400,
            "w" => 604_800,
            "" => return Err(format!("invalid duration {text:?}: missing unit; {HELP}")),
            unit => {
                return Err(format!(
                    "invalid duration {text:?}: unknown unit {unit:?}; {HELP}"
                ));
            }
        };
        total = n
            .checked_mul(seconds)
            .and_then(|s| total.checked_add(s))
            .ok_or_else(too_large)?;
        rest = &rest[unit_len..];
    }
    Ok(Duration::from_secs(total))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runlog::task_hash;
    use cf_host::PriceTable;

    fn run(agent: &str, model: Option<&str>, latency_ms: f64) -> RunRecord {
        RunRecord {
            agent: agent.to_owned(),
            task_hash: task_hash("t"),
            model: model.map(str::to_owned),
            ok: true,
            latency_ms,
            llm_calls: 1,
            cost_usd: Some(0.0),
            ..RunRecord::default()
        }
    }

    fn failed(mut r: RunRecord, kind: Option<&str>) -> RunRecord {
        r.ok = false;
        r.error_kind = kind.map(str::to_owned);
        r
    }

    fn usage(input_tokens: u64, output_tokens: u64) -> Usage {
        Usage {
            input_tokens,
            output_tokens,
            ..Usage::default()
        }
    }

    #[test]
    fn percentiles_by_nearest_rank() {
        let one_to_100: Vec<f64> = (1..=100).map(f64::from).collect();
        let s = Summary::from_records(
            &one_to_100
                .iter()
                .rev()
                .map(|&ms| run("a", None, ms))
                .collect::<Vec<_>>(),
        );
        assert_eq!(
            (s.all.p50_ms, s.all.p95_ms, s.all.p99_ms),
            (50.0, 95.0, 99.0)
        );

        let single = Summary::from_records(&[run("a", None, 7.5)]);
        assert_eq!(
            (single.all.p50_ms, single.all.p95_ms, single.all.p99_ms),
            (7.5, 7.5, 7.5)
        );

        // Hand-computed: n = 10, ranks ⌈5⌉ = 5, ⌈9.5⌉ = 10, ⌈9.9⌉ = 10.
        let ten: Vec<f64> = (1..=10).map(|i| f64::from(i) * 10.0).collect();
        assert_eq!(
            (
                nearest_rank(&ten, 50),
                nearest_rank(&ten, 95),
                nearest_rank(&ten, 99)
            ),
            (50.0, 100.0, 100.0)
        );
        // n = 3: ⌈1.5⌉ = 2 → the middle value, never an interpolation.
        assert_eq!(nearest_rank(&[1.0, 2.0, 40.0], 50), 2.0);
        assert_eq!(nearest_rank(&[1.0, 2.0, 40.0], 0), 1.0);
        assert_eq!(nearest_rank(&[1.0, 2.0, 40.0], 100), 40.0);
        assert_eq!(nearest_rank(&[], 99), 0.0);
    }

    #[test]
    fn no_runs_give_zeros() {
        let s = Summary::from_records(&[]);
        assert_eq!(s, Summary::default());
        assert_eq!(s.throughput(Duration::from_secs(1)), 0.0);
        assert_eq!(s.to_string(), "no runs\n");
        assert_eq!(s.to_csv().lines().count(), 2, "the header and the all row");
    }

    #[test]
    fn counts_rates_throughput_and_error_kinds() {
        let mut cached = run("a", Some("m"), 1.0);
        (cached.llm_calls, cached.cache_hits, cached.cached) = (2, 2, true);
        let records = [
            cached,
            run("a", Some("m"), 2.0),
            failed(run("a", Some("m"), 3.0), Some("deadline")),
            failed(run("b", None, 4.0), Some("deadline")),
            failed(run("b", None, 5.0), None),
        ];
        let s = Summary::from_records(&records);
        assert_eq!((s.all.runs, s.all.ok, s.all.failed), (5, 2, 3));
        assert!((s.all.success_rate - 0.4).abs() < 1e-12);
        assert_eq!((s.all.llm_calls, s.all.cache_hits), (6, 2));
        assert!((s.all.cache_hit_rate - 2.0 / 6.0).abs() < 1e-12);
        assert_eq!(
            s.error_kinds,
            BTreeMap::from([("deadline".to_owned(), 2), (UNKNOWN_ERROR.to_owned(), 1)])
        );
        assert!((s.throughput(Duration::from_millis(2500)) - 2.0).abs() < 1e-12);
        assert_eq!(s.throughput(Duration::ZERO), 0.0);
    }

    #[test]
    fn costs_sum_to_the_cent_and_unpriced_runs_are_counted_apart() {
        let prices = PriceTable::built_in();
        let big = usage(1_000_000, 100_000);
        let small = usage(12_345, 6_789);
        let mut a = run("a", Some("claude-sonnet-4-5"), 1.0);
        (a.usage, a.cost_usd) = (big, Some(prices.cost("claude-sonnet-4-5", &big).usd));
        let mut b = run("a", Some("claude-sonnet-4-5"), 1.0);
        (b.usage, b.cost_usd, b.saved_usd) = (
            small,
            Some(prices.cost("claude-sonnet-4-5", &small).usd),
            0.25,
        );
        let mut c = run("a", Some("my-local-model"), 1.0);
        (c.usage, c.cost_usd) = (small, None);

        let s = Summary::from_records(&[a, b, c]);
        // 1M × $3 + 100k × $15 per million = $4.50; 12,345 × 3 + 6,789 × 15 = 138,870 µ$.
        assert!((s.all.cost_usd - (4.50 + 0.138_87)).abs() < 0.005);
        assert!((s.all.cost_usd - 4.638_87).abs() < 1e-9);
        assert_eq!(s.all.unpriced_runs, 1);
        assert!((s.all.saved_usd - 0.25).abs() < 1e-12);
        assert_eq!(s.all.usage, usage(1_024_690, 113_578));
        assert_eq!(s.by_model["my-local-model"].cost_usd, 0.0);
        assert_eq!(s.by_model["my-local-model"].unpriced_runs, 1);
        assert!((s.by_model["claude-sonnet-4-5"].cost_usd - 4.638_87).abs() < 1e-9);
    }

    #[test]
    fn groups_by_agent_and_by_model() {
        let records = [
            run("python-expert", Some("claude-sonnet-4-5"), 10.0),
            run("python-expert", Some("claude-haiku-4-5"), 20.0),
            failed(
                run("code-reviewer", Some("claude-sonnet-4-5"), 30.0),
                Some("llm"),
            ),
            failed(run("code-reviewer", None, 40.0), Some("deadline")),
        ];
        let s = Summary::from_records(&records);
        assert_eq!(
            s.by_agent.keys().collect::<Vec<_>>(),
            ["code-reviewer", "python-expert"]
        );
        assert_eq!(
            s.by_model.keys().collect::<Vec<_>>(),
            [NO_MODEL, "claude-haiku-4-5", "claude-sonnet-4-5"]
        );
        let py = &s.by_agent["python-expert"];
        assert_eq!(
            (py.runs, py.ok, py.failed, py.p50_ms, py.p99_ms),
            (2, 2, 0, 10.0, 20.0)
        );
        let cr = &s.by_agent["code-reviewer"];
        assert_eq!((cr.runs, cr.ok, cr.failed, cr.p50_ms), (2, 0, 2, 30.0));
        let sonnet = &s.by_model["claude-sonnet-4-5"];
        assert_eq!(
            (sonnet.runs, sonnet.ok, sonnet.failed, sonnet.p95_ms),
            (2, 1, 1, 30.0)
        );
        assert_eq!(s.by_model[NO_MODEL].runs, 1);
        let total: u64 = s.by_agent.values().map(|g| g.runs).sum();
        assert_eq!(total, s.all.runs);
    }

    #[test]
    fn csv_of_a_tiny_input() {
        let mut a = run("python-expert", Some("claude-sonnet-4-5"), 100.0);
        (a.usage, a.cost_usd) = (usage(1_000_000, 100_000), Some(4.5));
        let mut b = failed(run("odd,\"name\"", None, 300.26), Some("deadline"));
        (b.usage, b.cost_usd, b.saved_usd) = (usage(10, 2), None, 0.001);
        let csv = Summary::from_records(&[a, b]).to_csv();
        assert_eq!(
            csv,
            "scope,name,runs,ok,failed,p50_ms,p95_ms,p99_ms,input_tokens,output_tokens,cost_usd,saved_usd\n\
             all,,2,1,1,100.0,300.3,300.3,1000010,100002,4.500000,0.001000\n\
             agent,\"odd,\"\"name\"\"\",1,0,1,300.3,300.3,300.3,10,2,0.000000,0.001000\n\
             agent,python-expert,1,1,0,100.0,100.0,100.0,1000000,100000,4.500000,0.000000\n\
             model,(none),1,0,1,300.3,300.3,300.3,10,2,0.000000,0.001000\n\
             model,claude-sonnet-4-5,1,1,0,100.0,100.0,100.0,1000000,100000,4.500000,0.000000\n"
        );
    }

    #[test]
    fn json_puts_the_overall_figures_at_the_top() {
        let s = Summary::from_records(&[failed(run("a", Some("m"), 5.0), Some("llm"))]);
        let v = serde_json::to_value(&s).unwrap();
        assert_eq!(v["runs"], 1);
        assert_eq!(v["failed"], 1);
        assert_eq!(v["p99_ms"], 5.0);
        assert_eq!(v["error_kinds"]["llm"], 1);
        assert_eq!(v["by_agent"]["a"]["runs"], 1);
        assert_eq!(v["by_model"]["m"]["usage"]["input_tokens"], 0);
    }

    #[test]
    fn the_table_aligns_columns_and_shows_costs_with_4_decimals() {
        let mut a = run("python-expert", Some("claude-sonnet-4-5"), 1234.5);
        (a.usage, a.cost_usd) = (usage(1_000_000, 100_000), Some(0.012_34));
        let mut b = failed(run("b", Some("local"), 2.0), Some("deadline"));
        b.cost_usd = None;
        let text = Summary::from_records(&[a, b]).to_string();
        assert!(
            text.contains("cost     $0.0123 + 1 unpriced run(s) · saved $0.0000"),
            "{text}"
        );
        assert!(text.contains("errors   deadline 1"), "{text}");
        assert!(text.contains("1,000,000"), "{text}");
        let table: Vec<&str> = text
            .lines()
            .skip_while(|l| !l.starts_with("scope"))
            .collect();
        assert_eq!(
            table.len(),
            1 + 1 + 2 + 2,
            "header, all, 2 agents, 2 models:\n{text}"
        );
        // Right-aligned numbers: every row's `runs` column ends where the header's does.
        let end = table[0].find("runs").unwrap() + "runs".len();
        for row in &table[1..] {
            assert_eq!(
                &row[end - 1..end],
                if row.starts_with("all") { "2" } else { "1" },
                "{text}"
            );
        }
        assert!(
            table[1].contains("≥$0.0123"),
            "partly unpriced is a lower bound: {text}"
        );
        let local = table.iter().find(|l| l.contains("local")).unwrap();
        assert!(local.contains("unpriced"), "{text}");
    }

    #[test]
    fn parse_duration_table() {
        let ok = [
            ("30s", 30),
            ("15m", 900),
            ("2h", 7200),
            ("7d", 604_800),
            ("1w", 604_800),
            ("0s", 0),
            (" 1h30m ", 5400),
            ("1d12h", 129_600),
        ];
        for (text, secs) in ok {
            assert_eq!(
                parse_duration(text),
                Ok(Duration::from_secs(secs)),
                "{text:?}"
            );
        }
        let bad = [
            ("", "empty"),
            ("30", "missing unit"),
            ("h", "expected a number"),
            ("-1h", "expected a number"),
            ("1.5h", "unknown unit"),
            ("3y", "unknown unit"),
            ("10 m", "unknown unit"),
            ("99999999999999999999s", "too large"),
            ("9999999999999999w", "too large"),
        ];
        for (text, why) in bad {
            let err = parse_duration(text).unwrap_err();
            assert!(err.contains(why), "{text:?}: {err}");
        }
    }

    /// Past [`EXACT_LATENCIES`] runs the percentiles come from a histogram: within
    /// 0.1 % of the exact ones.
    #[test]
    fn many_runs_are_summarised_in_a_histogram_within_a_tenth_of_a_percent() {
        let mut builder = SummaryBuilder::default();
        let n = 3 * EXACT_LATENCIES;
        let mut exact = Vec::with_capacity(n);
        for i in 0..n {
            let ms = 1.0 + (i * 7919 % n) as f64 / 10.0;
            exact.push(ms);
            builder.add(&run("a", Some("m"), ms));
        }
        exact.sort_by(f64::total_cmp);
        let s = builder.finish();
        for (got, percent) in [(s.all.p50_ms, 50), (s.all.p95_ms, 95), (s.all.p99_ms, 99)] {
            let want = nearest_rank(&exact, percent);
            assert!(
                (got - want).abs() <= want * 0.001 + 0.001,
                "p{percent}: {got} against {want}"
            );
        }
        assert_eq!(s.all.runs, n as u64);
    }
}
