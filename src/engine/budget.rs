//! How a memory budget is split: resident weights, the KV cache of one session, scratch, and
//! the expert pool. One computation serves every caller: load, preflight (from the header
//! alone), the C API, and a budget changed while the model is loaded.

use super::blocks::FFN_GROUP;
use super::config::ModelConfig;
use crate::expert::{min_pool_bytes, slot_bytes, ExpertDirectory};
use crate::format::GgufFile;
use crate::{Error, Result};

/// Tokens of KV cache a budget reserves for when the caller names no context length.
pub const DEFAULT_BUDGET_CONTEXT: usize = 2048;

/// How a memory budget is split.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BudgetPlan {
    pub budget: u64,
    /// Non-expert weights, held in memory.
    pub resident: u64,
    /// KV cache for `context_length` tokens of one session.
    pub kv_cache: u64,
    pub context_length: usize,
    /// Activations, logits and other working memory.
    pub scratch: u64,
    /// What is left for the expert pool (whole slots).
    pub pool: u64,
    /// The smallest pool that can run the model.
    pub min_pool: u64,
    /// A pool holding every expert.
    pub max_pool: u64,
    /// Bytes of one pool slot.
    pub slot: u64,
}

impl BudgetPlan {
    /// What the model needs, from the header alone (no weights are read): every fixed part,
    /// with the budget and pool set to hold every expert.
    pub fn needs(
        file: &GgufFile,
        config: &ModelConfig,
        directory: &ExpertDirectory,
        context_length: Option<usize>,
    ) -> Self {
        let c = config;
        let expert_names = directory.total_bytes() + directory.low_precision_bytes();
        let resident = file
            .header
            .tensors
            .iter()
            .map(|t| {
                if t.dims.len() == 1 {
                    t.n_elements() * 4
                } else {
                    t.size
                }
            })
            .sum::<u64>()
            .saturating_sub(expert_names);
        let ctx = context_length.unwrap_or(c.context_length.min(DEFAULT_BUDGET_CONTEXT));
        let kv_cache = kv_cache_bytes(c, ctx);
        let scratch = scratch_bytes(c, ctx);
        let slot = slot_bytes(directory);
        let max_pool = slot * (c.n_layers * c.n_experts) as u64;
        let mut plan = BudgetPlan {
            budget: 0,
            resident,
            kv_cache,
            context_length: ctx,
            scratch,
            pool: max_pool,
            min_pool: min_pool_bytes(directory),
            max_pool,
            slot,
        };
        plan.budget = plan.full_budget();
        plan
    }

    /// Splits `budget` for the model in `file`; an error when it is below the minimum.
    pub fn new(
        file: &GgufFile,
        config: &ModelConfig,
        directory: &ExpertDirectory,
        budget: u64,
        context_length: Option<usize>,
    ) -> Result<Self> {
        Self::needs(file, config, directory, context_length).split(budget)
    }

    /// The smallest budget that can run the model with this context.
    pub fn min_budget(&self) -> u64 {
        self.resident + self.kv_cache + self.scratch + self.min_pool
    }

    /// A budget whose pool holds every expert (nothing is read twice).
    pub fn full_budget(&self) -> u64 {
        self.resident + self.kv_cache + self.scratch + self.max_pool
    }

    /// The same needs with `budget` applied: the pool gets what is left, in whole slots, at
    /// most every expert. Below the minimum the pool is what is left (possibly 0): see
    /// [`BudgetPlan::split`] for the checked form.
    pub fn with_budget(&self, budget: u64) -> Self {
        let left = budget.saturating_sub(self.resident + self.kv_cache + self.scratch);
        let slot = self.slot.max(1);
        BudgetPlan {
            budget,
            pool: (left / slot * slot).min(self.max_pool),
            ..self.clone()
        }
    }

    /// [`BudgetPlan::with_budget`], failing with [`Error::BudgetTooSmall`] (stating the
    /// minimum and its parts) when the pool cannot hold the experts one token uses.
    pub fn split(&self, budget: u64) -> Result<Self> {
        let plan = self.with_budget(budget);
        if plan.pool < plan.min_pool {
            return Err(Error::BudgetTooSmall {
                budget,
                needed: plan.min_budget(),
                detail: format!(
                    "resident weights {}, KV cache for {} tokens {}, scratch {}, expert pool of {} experts {}",
                    plan.resident,
                    plan.context_length,
                    plan.kv_cache,
                    plan.scratch,
                    plan.min_pool / plan.slot.max(1),
                    plan.min_pool
                ),
            });
        }
        Ok(plan)
    }
}

/// Bytes of the KV cache of `ctx` tokens (f32 keys and values of every layer).
fn kv_cache_bytes(c: &ModelConfig, ctx: usize) -> u64 {
    2 * (c.n_layers * ctx * c.n_kv_heads * c.head_dim * 4) as u64
}

/// Working memory of a session: logits, per-token buffers of a prompt batch (hidden state, its
/// norm, each token's expert outputs, q/k/v, attention output and its projection, router
/// logits, the batched products' results and prepared activations), expert FFN buffers of one
/// token group, attention scores, plus 1 MiB for the rest.
fn scratch_bytes(c: &ModelConfig, ctx: usize) -> u64 {
    let batch = ctx.min(512);
    let (q_dim, kv_dim) = (c.n_heads * c.head_dim, c.n_kv_heads * c.head_dim);
    let per_token = (4 + c.n_experts_used) * c.hidden + 3 * q_dim + 2 * kv_dim + c.n_experts;
    let ffn_group = FFN_GROUP * (3 * c.expert_ffn.max(c.shared_ffn) + 2 * c.hidden);
    (1 << 20) + 4 * (2 * c.vocab + batch * per_token + ffn_group + ctx) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan() -> BudgetPlan {
        BudgetPlan {
            budget: 0,
            resident: 1000,
            kv_cache: 200,
            context_length: 16,
            scratch: 300,
            pool: 0,
            min_pool: 2 * 4096,
            max_pool: 10 * 4096,
            slot: 4096,
        }
    }

    #[test]
    fn the_pool_gets_whole_slots_of_what_is_left() {
        let p = plan();
        assert_eq!(p.min_budget(), 1500 + 8192);
        assert_eq!(p.full_budget(), 1500 + 40960);
        let s = p.split(1500 + 3 * 4096 + 4095).unwrap();
        assert_eq!(s.pool, 3 * 4096);
        assert_eq!(s.budget, 1500 + 3 * 4096 + 4095);
        // Never more than every expert.
        assert_eq!(p.split(u64::MAX).unwrap().pool, p.max_pool);
        // Exactly the minimum runs.
        assert_eq!(p.split(p.min_budget()).unwrap().pool, p.min_pool);
    }

    #[test]
    fn below_the_minimum_is_refused_with_the_minimum() {
        let p = plan();
        let err = p.split(p.min_budget() - 1).unwrap_err();
        match err {
            Error::BudgetTooSmall { needed, budget, .. } => {
                assert_eq!(needed, p.min_budget());
                assert_eq!(budget, p.min_budget() - 1);
            }
            e => panic!("{e}"),
        }
        // The unchecked form says what is left.
        assert_eq!(p.with_budget(100).pool, 0);
        assert_eq!(p.with_budget(1500 + 4096).pool, 4096);
    }
}
