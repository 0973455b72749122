//! `cf-front`: what every front end of `cf-host` shares — the CLI today, the HTTP
//! server and the MCP server next — so that each is a thin layer over one core:
//!
//! - [`settings`]: the effective configuration, from a front end's overrides (flags),
//!   then the environment, then the config file, then defaults, each value checked by
//!   one rule whatever its source; and the host built from it;
//! - [`render`]: results, agents, components and reports for people (text) and for
//!   programs (JSON);
//! - [`runlog`]: the run log every run is appended to, and [`summary`]: what a set of
//!   runs amounts to;
//! - [`tasks`]: batch items from the JSONL task format;
//! - [`queue`]: batches on the fleet's work queue, and the worker that runs them.
#![deny(missing_docs)]

pub mod queue;
pub mod render;
pub mod runlog;
pub mod settings;
pub mod summary;
pub mod tasks;
