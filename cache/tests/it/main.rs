//! Integration tests of cf-cache, one module per area.

mod cache_basic;
mod cache_concurrency;
mod cache_expiry;
mod cache_integrity;
mod cache_lane;
mod cache_lru;
mod common;
mod fuzz_regressions;
#[path = "../../../fuzz/regression_inputs.rs"]
mod regression_inputs;
mod store_evict;
mod store_files;
mod store_quota;
mod store_scope;
