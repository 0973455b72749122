//! Integration tests of cf-host across crates: the sandbox against hostile guests, the
//! shipped agents end to end, and loading components.

mod agents;
mod anthropic;
mod batch;
mod cache;
mod contract2;
mod loading;
mod multiprocess;
mod permissions;
mod plugins;
mod sandbox;
mod streaming;
mod support;
mod trust;
