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
}

/// The running account of a run or a batch. Cheap to clone; clones share the account.
/// A child ledger (a run within a batch) records into its parent too, and a call must
/// fit both budgets.
#[derive(Debug, Clone)]
pub struct Ledger {
    state: Arc<Mutex<State>>,
    parent: Option<Box<Ledger>>,
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
    /// be counted against a dollar budget (an unpriced model).
    pub fn check(&self, model_priced: bool) -> Result<(), LlmError> {
        {
            let s = self.lock();
            if let Some(limit) = s.budget.tokens
                && s.spent_tokens >= limit
            {
                return Err(LlmError::BudgetExceeded(format!(
                    "token budget of {limit} spent ({} used)",
                    s.spent_tokens
                )));
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
            }
        }
        match &self.parent {
            Some(parent) => parent.check(model_priced),
            None => Ok(()),
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
}
