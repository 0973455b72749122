//! Prompt caching: the prefixes a server has written, and the cache counters of a
//! request's usage.
//!
//! A request is a sequence of items in the API's order: each tool, each system block,
//! then each content block of each message (a string content is one item). A
//! breakpoint (`cache_control`) on an item asks for the prefix ending with it to be
//! cached. The server remembers the hash of every prefix it wrote (the model, then
//! each item's JSON without its `cache_control`). For a request it finds the longest
//! remembered prefix ending at most [`LOOKBACK`] items before one of its breakpoints
//! (the API checks earlier block boundaries the same way, so a tool loop that moves its
//! breakpoint to the newest turn still reads what the previous turn wrote): that prefix
//! is read, and the rest up to each breakpoint is written, split by the breakpoint's
//! TTL. Entries never expire (the TTL only decides the split), so no test depends on
//! the clock; [`MockServer::forget_prompt_cache`](crate::MockServer::forget_prompt_cache)
//! plays an expiry. There is no minimum cacheable length either.

use crate::answer::estimate_tokens;
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::collections::HashSet;

/// How many items before a breakpoint the server looks for a prefix it wrote.
pub(crate) const LOOKBACK: usize = 20;

/// The TTL of a breakpoint: `cache_control.ttl`, `"5m"` (the default) or `"1h"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ttl {
    FiveMinutes,
    OneHour,
}

/// One item of a request, in the API's order.
#[derive(Debug)]
pub(crate) struct Item<'a> {
    /// What the item is part of (`tool`, `system`, `user`, `assistant`): the same JSON
    /// in another place is another prefix.
    pub(crate) place: &'static str,
    /// Its JSON as sent.
    pub(crate) raw: &'a Value,
    /// The bytes it counts for in input tokens.
    pub(crate) bytes: usize,
    /// Its breakpoint, if it has one.
    pub(crate) breakpoint: Option<Ttl>,
}

/// The cache counters of one request's usage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct CacheUsage {
    /// Tokens of the prefix read from the cache.
    pub(crate) read: u64,
    /// Tokens written with a 5-minute TTL.
    pub(crate) written_5m: u64,
    /// Tokens written with a 1-hour TTL.
    pub(crate) written_1h: u64,
}

impl CacheUsage {
    /// Every token written.
    pub(crate) fn written(&self) -> u64 {
        self.written_5m + self.written_1h
    }
}

/// The prefixes a server wrote.
#[derive(Debug, Default)]
pub(crate) struct PromptCache {
    written: HashSet<[u8; 32]>,
}

impl PromptCache {
    /// Reads and writes the prefixes of a request's items; `None` when it has no
    /// breakpoint (nothing read or written).
    pub(crate) fn account(&mut self, model: &str, items: &[Item<'_>]) -> Option<CacheUsage> {
        let breakpoints: Vec<usize> = items
            .iter()
            .enumerate()
            .filter_map(|(i, item)| item.breakpoint.map(|_| i))
            .collect();
        let last = *breakpoints.last()?;
        let mut hashes = Vec::with_capacity(last + 1);
        let mut tokens = Vec::with_capacity(last + 1);
        let mut hash: [u8; 32] = Sha256::new()
            .chain_update(b"cf-mock-llm prompt cache\0")
            .chain_update(model.as_bytes())
            .finalize()
            .into();
        let mut bytes = 0usize;
        for item in &items[..=last] {
            let key = key_of(item);
            hash = Sha256::new()
                .chain_update(hash)
                .chain_update((key.len() as u64).to_le_bytes())
                .chain_update(&key)
                .finalize()
                .into();
            hashes.push(hash);
            bytes += item.bytes;
            tokens.push(estimate_tokens(bytes));
        }
        let near_a_breakpoint = |k: usize| breakpoints.iter().any(|&b| k <= b && b - k <= LOOKBACK);
        let hit = (0..=last)
            .rev()
            .find(|&k| near_a_breakpoint(k) && self.written.contains(&hashes[k]));
        let mut usage = CacheUsage {
            read: hit.map_or(0, |k| tokens[k]),
            ..CacheUsage::default()
        };
        let mut cached = usage.read;
        for &b in &breakpoints {
            self.written.insert(hashes[b]);
            if hit.is_some_and(|k| b <= k) {
                continue;
            }
            let segment = tokens[b].saturating_sub(cached);
            cached = tokens[b];
            match items[b].breakpoint {
                Some(Ttl::OneHour) => usage.written_1h += segment,
                _ => usage.written_5m += segment,
            }
        }
        Some(usage)
    }

    /// Forgets every prefix.
    pub(crate) fn clear(&mut self) {
        self.written.clear();
    }
}

/// The bytes an item is hashed by: its place and its JSON without `cache_control`
/// (moving a breakpoint does not change the content before it).
fn key_of(item: &Item<'_>) -> Vec<u8> {
    let mut key = item.place.as_bytes().to_vec();
    key.push(0);
    let json = match item.raw {
        Value::Object(fields) if fields.contains_key("cache_control") => {
            let mut fields = fields.clone();
            fields.remove("cache_control");
            Value::Object(fields).to_string()
        }
        other => other.to_string(),
    };
    key.extend_from_slice(json.as_bytes());
    key
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn items<'a>(values: &'a [Value], breakpoints: &[(usize, Ttl)]) -> Vec<Item<'a>> {
        values
            .iter()
            .enumerate()
            .map(|(i, raw)| Item {
                place: "user",
                raw,
                bytes: 400,
                breakpoint: breakpoints.iter().find(|(at, _)| *at == i).map(|(_, t)| *t),
            })
            .collect()
    }

    #[test]
    fn a_prefix_is_written_once_then_read() {
        let values: Vec<Value> = (0..3).map(|i| json!({"type": "text", "text": i})).collect();
        let mut cache = PromptCache::default();
        let first = cache.account("m", &items(&values, &[(1, Ttl::OneHour)]));
        assert_eq!(
            first,
            Some(CacheUsage {
                read: 0,
                written_5m: 0,
                written_1h: 200
            })
        );
        let again = cache.account("m", &items(&values, &[(1, Ttl::OneHour)]));
        assert_eq!(
            again,
            Some(CacheUsage {
                read: 200,
                ..CacheUsage::default()
            })
        );
        assert_eq!(
            cache.account("other model", &items(&values, &[(1, Ttl::OneHour)])),
            first,
            "another model has its own cache"
        );
        assert_eq!(cache.account("m", &items(&values, &[])), None);
    }

    #[test]
    fn a_moved_breakpoint_reads_the_earlier_prefix_and_writes_the_rest() {
        let values: Vec<Value> = (0..4).map(|i| json!({"type": "text", "text": i})).collect();
        let mut cache = PromptCache::default();
        cache.account("m", &items(&values, &[(1, Ttl::FiveMinutes)]));
        let later = cache.account(
            "m",
            &items(&values, &[(0, Ttl::OneHour), (3, Ttl::FiveMinutes)]),
        );
        assert_eq!(
            later,
            Some(CacheUsage {
                read: 200,
                written_5m: 200,
                written_1h: 0
            }),
            "items 0-1 read (no breakpoint there now), 2-3 written"
        );
        cache.clear();
        let cold = cache.account(
            "m",
            &items(&values, &[(0, Ttl::OneHour), (3, Ttl::FiveMinutes)]),
        );
        assert_eq!(
            cold,
            Some(CacheUsage {
                read: 0,
                written_5m: 300,
                written_1h: 100
            })
        );
    }

    #[test]
    fn the_cache_control_itself_is_not_part_of_the_prefix() {
        let plain = [json!({"type": "text", "text": "a"})];
        let marked = [json!({"type": "text", "text": "a", "cache_control": {"type": "ephemeral"}})];
        let mut cache = PromptCache::default();
        cache.account("m", &items(&marked, &[(0, Ttl::FiveMinutes)]));
        let read = cache.account("m", &items(&plain, &[(0, Ttl::FiveMinutes)]));
        assert_eq!(read.map(|u| u.read), Some(100));
    }
}
