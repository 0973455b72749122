//! Accounting of model calls for a run or a batch, and the budgets that stop them.

use crate::pricing::Cost;
use crate::types::{LlmError, Usage};
use serde::Serialize;
use std::sync::{Arc, Mutex, MutexGuard};

/// Limits on what a run or a batch may spend. `None`: no limit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Budget {
    /// US dollars.
    pub usd: Option<f64>,
    /// Tokens, input (cache tokens included) plus output.
    pub tokens: Option<u64>,
    /// When a call may start.
    pub rule: BudgetRule,
}

/// When a model call may start under a [`Budget`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum BudgetRule {
    /// While the budget is not spent yet (the original's rule): the call that crosses
    /// it is answered, and spending stops after it. A budget smaller than one call
    /// still lets that call through.
    #[default]
    UntilSpent,
    /// Only if the call's worst case fits what is left: its input estimate plus its
    /// `max_tokens` at the output price, reserved while the call is in flight (so
    /// that calls running at once cannot overshoot together). Spending stays within the
    /// budget as far as the input estimate holds (text far denser in tokens than 3
    /// bytes each can cost more); a call that would fit its real cost but not its worst
    /// case is refused.
    WorstCase,
}

impl std::fmt::Display for BudgetRule {
    /// The rule's name in settings: `until-spent` or `worst-case`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::UntilSpent => "until-spent",
            Self::WorstCase => "worst-case",
        })
    }
}

/// The most a call can cost, as [`BudgetRule::WorstCase`] counts it.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct WorstCase {
    /// US dollars: input estimate and `max_tokens` at the model's prices.
    pub usd: f64,
    /// Tokens: input estimate plus `max_tokens`.
    pub tokens: u64,
}

/// The most input tokens one image costs: the API scales an image to at most about
/// 1.15 megapixels, about 1,600 tokens at 750 pixels per token.
pub const IMAGE_TOKENS: u64 = 1_600;

impl WorstCase {
    /// The worst case of `request` on a model priced `price` (`None`: unpriced).
    ///
    /// Input is estimated at one token per 3 bytes of text plus 8 per message, above
    /// the usual 3.5–4 bytes per token of English and code; counting exactly would
    /// cost a request to the API's token-counting endpoint. Images count
    /// [`IMAGE_TOKENS`] each (the API scales larger images down to about that); PDFs
    /// count like text, by their bytes.
    pub fn of(request: &crate::types::Request, price: Option<&crate::pricing::ModelPrice>) -> Self {
        let usage = Self::usage(request);
        Self {
            usd: price.map_or(0.0, |p| p.cost(&usage)),
            tokens: usage.total(),
        }
    }

    /// The most `request` may use: its input estimate (as [`of`](Self::of) counts
    /// it) and `max_tokens` of output.
    pub fn usage(request: &crate::types::Request) -> Usage {
        let media = request.media();
        let bytes = request.text_bytes() - request.model.len() - media.image_bytes;
        let input = (bytes as u64).div_ceil(3)
            + 8 * (request.messages.len() as u64 + 1)
            + IMAGE_TOKENS * media.images as u64;
        Usage {
            input_tokens: input,
            output_tokens: u64::from(request.max_tokens),
            ..Usage::default()
        }
    }
}

/// What a ledger has recorded so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct LedgerTotals {
    /// Tokens of every answered call, cached answers included.
    pub usage: Usage,
    /// Money spent (cached answers cost nothing).
    pub cost: Cost,
    /// Money a cached answer saved.
    pub saved_usd: f64,
    /// Model calls answered (from the provider or the cache).
    pub calls: u32,
    /// Attempts sent to the provider, retries included.
    pub attempts: u32,
    /// Calls answered from the response cache.
    pub cache_hits: u32,
    /// Calls that failed.
    pub failures: u32,
}

#[derive(Debug)]
struct State {
    budget: Budget,
    totals: LedgerTotals,
    /// Tokens spent against the budget: cached answers spend none.
    spent_tokens: u64,
    /// Worst cases of calls in flight under [`BudgetRule::WorstCase`].
    reserved: WorstCase,
}

/// The running account of a run or a batch. Cheap to clone; clones share the account.
/// A child ledger (a run within a batch) records into its parent too, and a call must
/// fit both budgets.
#[derive(Debug, Clone)]
pub struct Ledger {
    state: Arc<Mutex<State>>,
    parent: Option<Box<Ledger>>,
}

/// Two ledgers are equal when they are the same account (clones of one another).
impl PartialEq for Ledger {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.state, &other.state)
    }
}

impl Ledger {
    /// A ledger with no budget.
    pub fn unlimited() -> Self {
        Self::with_budget(Budget::default())
    }

    /// A ledger with `budget`.
    pub fn with_budget(budget: Budget) -> Self {
        Self {
            state: Arc::new(Mutex::new(State {
                budget,
                totals: LedgerTotals::default(),
                spent_tokens: 0,
                reserved: WorstCase::default(),
            })),
            parent: None,
        }
    }

    /// A ledger for one part of this one (a run in a batch), with its own budget.
    pub fn child(&self, budget: Budget) -> Self {
        Self {
            parent: Some(Box::new(self.clone())),
            ..Self::with_budget(budget)
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding this lock leaves plain counters behind: keep going.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The totals so far (of this ledger only, not its parent).
    pub fn totals(&self) -> LedgerTotals {
        self.lock().totals
    }

    /// The budget of this ledger.
    pub fn budget(&self) -> Budget {
        self.lock().budget
    }

    /// Refuses a call that would start after a budget is spent, or whose cost could not
    /// be counted against a dollar budget (an unpriced model). The worst-case rule
    /// needs [`admit`](Self::admit).
    pub fn check(&self, model_priced: bool) -> Result<(), LlmError> {
        self.admit(model_priced, WorstCase::default()).map(drop)
    }

    /// Admits a call whose worst case is `worst` under this ledger's budget and its
    /// parents': refused as [`check`](Self::check) does, and, under
    /// [`BudgetRule::WorstCase`], unless `worst` fits what is left. The worst case
    /// stays reserved until the returned [`Reservation`] is dropped (after the call's
    /// cost is recorded).
    pub fn admit(&self, model_priced: bool, worst: WorstCase) -> Result<Reservation, LlmError> {
        let mut reservation = Reservation {
            held: Vec::new(),
            amount: worst,
        };
        let mut ledger = Some(self);
        while let Some(l) = ledger {
            if l.admit_one(model_priced, worst)? {
                reservation.held.push(l.clone_alone());
            }
            ledger = l.parent.as_deref();
        }
        Ok(reservation)
    }

    /// This level's check, and its reservation when its rule is the worst case.
    fn admit_one(&self, model_priced: bool, worst: WorstCase) -> Result<bool, LlmError> {
        let mut s = self.lock();
        let strict = s.budget.rule == BudgetRule::WorstCase;
        if let Some(limit) = s.budget.tokens {
            if s.spent_tokens >= limit {
                return Err(LlmError::BudgetExceeded(format!(
                    "token budget of {limit} spent ({} used)",
                    s.spent_tokens
                )));
            }
            let committed = s.spent_tokens.saturating_add(s.reserved.tokens);
            if strict && committed.saturating_add(worst.tokens) > limit {
                return Err(LlmError::BudgetExceeded(format!(
                    "the call's worst case ({} tokens: input estimate plus max_tokens) does not fit the {} tokens left of the budget of {limit}",
                    worst.tokens,
                    limit.saturating_sub(committed)
                )));
            }
        }
        if let Some(limit) = s.budget.usd {
            if s.totals.cost.usd >= limit {
                return Err(LlmError::BudgetExceeded(format!(
                    "budget of ${limit:.4} spent (${:.4} used)",
                    s.totals.cost.usd
                )));
            }
            if !model_priced {
                return Err(LlmError::BudgetExceeded(
                    "the model has no price, so a dollar budget cannot be enforced; add it to the price table".into(),
                ));
            }
            let committed = s.totals.cost.usd + s.reserved.usd;
            if strict && committed + worst.usd > limit {
                return Err(LlmError::BudgetExceeded(format!(
                    "the call's worst case (${:.6}: input estimate plus max_tokens at the output price) does not fit the ${:.6} left of the budget of ${limit}",
                    worst.usd,
                    (limit - committed).max(0.0)
                )));
            }
        }
        if strict {
            s.reserved.usd += worst.usd;
            s.reserved.tokens = s.reserved.tokens.saturating_add(worst.tokens);
        }
        Ok(strict)
    }

    /// A handle on this level's account alone (for releasing a reservation).
    fn clone_alone(&self) -> Ledger {
        Ledger {
            state: self.state.clone(),
            parent: None,
        }
    }

    /// Records an answered call.
    pub fn record_call(
        &self,
        usage: &Usage,
        cost: &Cost,
        attempts: u32,
        cached: bool,
        saved_usd: f64,
    ) {
        {
            let mut s = self.lock();
            s.totals.usage.add(usage);
            s.totals.cost.add(cost);
            s.totals.calls += 1;
            s.totals.attempts += attempts;
            if cached {
                s.totals.cache_hits += 1;
                s.totals.saved_usd += saved_usd;
            } else {
                s.spent_tokens = s.spent_tokens.saturating_add(usage.total());
            }
        }
        if let Some(parent) = &self.parent {
            parent.record_call(usage, cost, attempts, cached, saved_usd);
        }
    }

    /// Records a call that failed after its answer had started (a stream cut off,
    /// dropped or timed out): the usage the provider reported so far is billed, and
    /// the call counts as failed.
    pub fn record_interrupted(&self, usage: &Usage, cost: &Cost, attempts: u32) {
        {
            let mut s = self.lock();
            s.totals.usage.add(usage);
            s.totals.cost.add(cost);
            s.totals.failures += 1;
            s.totals.attempts += attempts;
            s.spent_tokens = s.spent_tokens.saturating_add(usage.total());
        }
        if let Some(parent) = &self.parent {
            parent.record_interrupted(usage, cost, attempts);
        }
    }

    /// Records a failed call and the attempts it made.
    pub fn record_failure(&self, attempts: u32) {
        {
            let mut s = self.lock();
            s.totals.failures += 1;
            s.totals.attempts += attempts;
        }
        if let Some(parent) = &self.parent {
            parent.record_failure(attempts);
        }
    }
}

/// Worst cases reserved by [`Ledger::admit`], released when dropped.
#[derive(Debug)]
#[must_use = "the reservation is released when dropped"]
pub struct Reservation {
    held: Vec<Ledger>,
    amount: WorstCase,
}

impl Drop for Reservation {
    fn drop(&mut self) {
        for ledger in &self.held {
            let mut s = ledger.lock();
            s.reserved.usd = (s.reserved.usd - self.amount.usd).max(0.0);
            s.reserved.tokens = s.reserved.tokens.saturating_sub(self.amount.tokens);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usage(tokens: u64) -> Usage {
        Usage {
            input_tokens: tokens,
            ..Usage::default()
        }
    }

    #[test]
    fn token_budget_obeyed_then_violated() {
        let l = Ledger::with_budget(Budget {
            usd: None,
            tokens: Some(100),
            ..Budget::default()
        });
        assert!(l.check(true).is_ok());
        l.record_call(&usage(60), &Cost::default(), 1, false, 0.0);
        assert!(
            l.check(true).is_ok(),
            "60 of 100 spent: the next call may start"
        );
        l.record_call(&usage(60), &Cost::default(), 1, false, 0.0);
        assert!(matches!(l.check(true), Err(LlmError::BudgetExceeded(_))));
    }

    #[test]
    fn dollar_budget_and_unpriced_models() {
        let l = Ledger::with_budget(Budget {
            usd: Some(0.01),
            tokens: None,
            ..Budget::default()
        });
        assert!(l.check(true).is_ok());
        assert!(
            matches!(l.check(false), Err(LlmError::BudgetExceeded(_))),
            "unpriced under a $ budget"
        );
        l.record_call(
            &usage(1),
            &Cost {
                usd: 0.02,
                unpriced_calls: 0,
            },
            1,
            false,
            0.0,
        );
        assert!(l.check(true).is_err());
        assert!(
            Ledger::unlimited().check(false).is_ok(),
            "no budget: unpriced models may run"
        );
    }

    #[test]
    fn cached_answers_spend_no_budget_and_children_share_the_parent_budget() {
        let batch = Ledger::with_budget(Budget {
            usd: None,
            tokens: Some(100),
            ..Budget::default()
        });
        let run = batch.child(Budget::default());
        run.record_call(&usage(500), &Cost::default(), 0, true, 0.5);
        assert!(run.check(true).is_ok(), "a cached answer is free");
        run.record_call(&usage(100), &Cost::default(), 2, false, 0.0);
        assert!(run.check(true).is_err(), "the batch budget is spent");
        let t = batch.totals();
        assert_eq!((t.calls, t.attempts, t.cache_hits), (2, 2, 1));
        assert!((t.saved_usd - 0.5).abs() < 1e-12);
        run.record_failure(3);
        assert_eq!(batch.totals().attempts, 5);
    }

    fn strict(usd: Option<f64>, tokens: Option<u64>) -> Budget {
        Budget {
            usd,
            tokens,
            rule: BudgetRule::WorstCase,
        }
    }

    /// Regression: a budget smaller than one call let that call through. Under the
    /// worst-case rule it does not, and a call that fits goes.
    #[test]
    fn the_worst_case_rule_refuses_a_call_that_may_not_fit() {
        let worst = WorstCase {
            usd: 0.05,
            tokens: 500,
        };
        let tiny = Ledger::with_budget(strict(Some(0.0000001), None));
        assert!(matches!(
            tiny.admit(true, worst),
            Err(LlmError::BudgetExceeded(m)) if m.contains("worst case")
        ));
        let lenient = Ledger::with_budget(Budget {
            usd: Some(0.0000001),
            ..Budget::default()
        });
        assert!(lenient.admit(true, worst).is_ok(), "the default rule");
        let fits = Ledger::with_budget(strict(Some(0.05), Some(500)));
        assert!(
            fits.admit(true, worst).is_ok(),
            "exactly the worst case fits"
        );
        let tokens = Ledger::with_budget(strict(None, Some(499)));
        assert!(tokens.admit(true, worst).is_err(), "one token short");
    }

    /// Calls in flight at once reserve their worst cases: the budget is not multiplied
    /// by the concurrency, and a finished call gives back what it did not spend.
    #[test]
    fn reservations_hold_while_calls_are_in_flight() {
        let batch = Ledger::with_budget(strict(None, Some(1000)));
        let run = batch.child(Budget::default());
        let worst = WorstCase {
            usd: 0.0,
            tokens: 400,
        };
        let first = run.admit(true, worst).expect("400 of 1000");
        let second = run.admit(true, worst).expect("800 of 1000");
        assert!(run.admit(true, worst).is_err(), "1200 would not fit");
        run.record_call(&usage(100), &Cost::default(), 1, false, 0.0);
        drop(first);
        let third = run.admit(true, worst).expect("100 spent + 400 + 400 fits");
        drop((second, third));
        assert_eq!(batch.lock().reserved, WorstCase::default(), "all released");
    }

    #[test]
    fn worst_cases_count_input_and_max_tokens_at_their_prices() {
        let request = crate::types::Request::new(
            "m",
            100,
            vec![crate::types::Message {
                role: crate::types::Role::User,
                content: "x".repeat(300).into(),
            }],
        );
        let price = crate::pricing::ModelPrice {
            input: 3.0,
            cache_write: 3.75,
            cache_write_1h: None,
            cache_read: 0.3,
            output: 15.0,
        };
        let w = WorstCase::of(&request, Some(&price));
        assert_eq!(
            w.tokens,
            100 + 16 + 100,
            "300 bytes / 3, 8 per message and one more, max_tokens"
        );
        assert!((w.usd - (116.0 * 3.0 + 100.0 * 15.0) / 1e6).abs() < 1e-12);
        assert_eq!(WorstCase::of(&request, None).usd, 0.0);
    }
}
