//! The `cf-host` binary's tests, one test binary: the commands end to end (`cli`), the
//! batch progress line in a real terminal (`progress`), the response cache under
//! SIGKILL (`crash`), and a long run with faults (`soak`).

mod cli;
mod crash;
mod fleet;
mod memory;
mod progress;
mod queue;
mod serve;
mod soak;
mod streaming;
mod terminal;
