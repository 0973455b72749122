//! cf-cache: per-agent key-value stores and the LLM response cache of cf-host.
#![deny(missing_docs)]

mod clock;
mod config;
mod error;
mod files;
mod key;
mod response;
mod secret;
mod stats;
mod store;

pub use clock::{Clock, ManualClock, SystemClock};
pub use config::{
    CacheConfig, Durability, default_max_bytes, default_memory_max_bytes,
    default_memory_max_entries, default_ttl,
};
pub use error::{Error, StoreError};
pub use key::{CacheKey, KeyBuilder};
pub use response::{CachedEntry, EntryInfo, EntryMeta, ResponseCache};
pub use secret::{SECRET_ENV, Secret};
pub use stats::{BadEntry, PruneReport, Stats, VerifyReport};
pub use store::{
    AgentStore, AgentStores, MAX_AGENT_NAME_BYTES, MAX_KEY_BYTES, StoreLimits, StoreUsage,
    default_store_max_bytes, default_store_max_entries, default_store_max_value_bytes,
    default_store_ttl, validate_agent_name, validate_key,
};
