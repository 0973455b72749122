//! Integration tests of cf-host across crates: the sandbox against hostile guests, the
//! shipped agents end to end, and loading components.

mod agents;
mod anthropic;
mod batch;
mod cache;
mod javascript;
mod loading;
mod multiprocess;
mod permissions;
mod python;
mod sandbox;
mod support;
mod trust;
