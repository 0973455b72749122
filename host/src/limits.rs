//! The limits of every run and load, and the operator's options of one run: every
//! default in one place.

use cf_llm::Budget;
use std::path::PathBuf;
use std::time::Duration;

/// The model used when neither the operator, the request nor the agent names one.
pub const DEFAULT_MODEL: &str = "claude-sonnet-4-5";
/// `max_tokens` when neither the operator nor the request sets it (the seed's value).
pub const DEFAULT_MAX_TOKENS: u32 = 4096;

/// What each list item (a message, a stop sequence, a metadata pair) counts against a
/// byte limit besides its text: about its framing on the wire
/// (`{"role":"user","content":""},` is 30 bytes). Without it, a million empty items
/// would pass a 1 MiB limit as zero bytes.
pub const LIST_ITEM_BYTES: usize = 32;

/// Limits applied to every run. Each field's default is documented on it.
#[derive(Debug, Clone, PartialEq)]
pub struct Limits {
    /// Wall-clock deadline of one run, covering guest CPU, model calls, retries and
    /// backoff. Default 120 s.
    pub deadline: Duration,
    /// Linear memory a guest may use, in bytes. Default 64 MiB.
    pub memory_bytes: u64,
    /// Longest task accepted, in characters (the seed's limit). Default 100,000.
    pub max_task_chars: usize,
    /// Largest agent output (text plus metadata), in bytes; each metadata pair counts
    /// [`LIST_ITEM_BYTES`] besides its text. Default 1 MiB.
    pub max_output_bytes: usize,
    /// Largest model request a guest may send (system, messages, tools, schemas, stop
    /// sequences; images and PDFs apart, see [`max_media_bytes`](Self::max_media_bytes)),
    /// in bytes; each message, content block, tool and stop sequence counts
    /// [`LIST_ITEM_BYTES`] besides its text. Default 2 MiB.
    pub max_request_bytes: usize,
    /// Largest image a guest may send, in bytes (encoded, before base64), in a
    /// message or a tool result: the Messages API's own limit. Default 5 MiB.
    pub max_image_bytes: usize,
    /// Most bytes of images and PDF documents one request may carry, counted apart
    /// from [`max_request_bytes`](Self::max_request_bytes); base64 makes them a third
    /// larger on the wire, which stays under the API's 32 MB request limit. Default
    /// 20 MiB.
    pub max_media_bytes: usize,
    /// Most tools one request may define. The API sets no documented limit, but every
    /// definition is sent (and billed as input) on every turn of a tool loop. Default
    /// 1,000.
    pub max_tools: usize,
    /// Model calls one run may make. Default 50.
    pub max_llm_calls: u32,
    /// Operations on the agent's store (get, set, delete) one run may make; later
    /// ones get `quota-exceeded` without touching the disk. Default 10,000.
    pub max_store_ops: u32,
    /// Log records one run may write; later ones are dropped. Default 1,000.
    pub max_log_records: u32,
    /// Longest log message kept, in bytes; longer ones are truncated. Default 16 KiB.
    pub max_log_bytes: usize,
    /// Guest stdout and stderr kept for the log, in bytes per run. Default 64 KiB.
    pub max_stdio_bytes: usize,
    /// Wall-clock deadline of loading one component: reading, compiling (or
    /// authenticating the compiled copy), checking and `describe()`. A crafted
    /// component of a few hundred kilobytes can keep the compiler busy for minutes.
    /// Default 60 s.
    pub load_deadline: Duration,
    /// Largest component file the host reads and compiles, in bytes. Default 256 MiB
    /// (a Python agent built with componentize-py is about 40 MB).
    pub max_component_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            deadline: Duration::from_secs(120),
            memory_bytes: 64 * 1024 * 1024,
            max_task_chars: 100_000,
            max_output_bytes: 1024 * 1024,
            max_request_bytes: 2 * 1024 * 1024,
            max_image_bytes: 5 * 1024 * 1024,
            max_media_bytes: 20 * 1024 * 1024,
            max_tools: 1_000,
            max_llm_calls: 50,
            max_store_ops: 10_000,
            max_log_records: 1_000,
            max_log_bytes: 16 * 1024,
            max_stdio_bytes: 64 * 1024,
            load_deadline: Duration::from_secs(60),
            max_component_bytes: 256 * 1024 * 1024,
        }
    }
}

/// What the operator sets for one run. Set fields override what the agent asks for.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RunOptions {
    /// The model for every call of the run (`--model`).
    pub model: Option<String>,
    /// `max_tokens` for every call (`--max-tokens`).
    pub max_tokens: Option<u32>,
    /// Temperature for every call (`--temperature`).
    pub temperature: Option<f32>,
    /// A deadline shorter or longer than the host's (`--deadline`).
    pub deadline: Option<Duration>,
    /// What the run may spend (`--budget-usd`, `--budget-tokens`).
    pub budget: Budget,
    /// Where the run's events go as they happen (the text the agent emits, the tools
    /// its model asks for). Default: nowhere. See also
    /// [`Agent::start`](crate::Agent::start).
    pub events: Option<crate::EventSink>,
}

/// The default data directory: `$XDG_CACHE_HOME/cf-host` (or the platform's cache
/// directory). Everything in it is rebuilt or expires: compiled components, the
/// response cache, the agents' stores (whose entries have a TTL).
pub fn default_data_dir() -> Option<PathBuf> {
    dirs::cache_dir().map(|d| d.join("cf-host"))
}

/// `text` cut to at most `max` bytes on a character boundary.
pub(crate) fn truncate(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}
