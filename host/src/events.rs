//! What a run hands out while it works ([`RunEvent`]): the text the agent emits
//! (`output.emit`, contract 0.2.0) and the tools its model asks for. A caller gets
//! them through an [`EventSink`] in [`RunOptions`](crate::RunOptions), a
//! [`BatchEventSink`] in [`BatchOptions`](crate::BatchOptions), or a [`RunHandle`]
//! ([`Agent::start`](crate::Agent::start)).

use crate::outcome::{RunError, RunOutput};
use std::sync::Arc;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// Something a run did while working.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum RunEvent {
    /// Text the agent emitted, in order. Emitted text is bounded by the run's output
    /// cap; past it, pieces are dropped (and the run's log says how many).
    Output(String),
    /// The model asked for a tool (a tool-use block started in its answer).
    ToolUse {
        /// The tool use's id, which its result answers.
        id: String,
        /// The tool's name.
        name: String,
    },
}

/// Where a run's events go: a function called on the run's task as each happens.
/// Keep it quick (send to a channel, write to a buffered writer): the guest waits.
#[derive(Clone)]
pub struct EventSink(Arc<dyn Fn(RunEvent) + Send + Sync>);

impl EventSink {
    /// A sink that calls `f` with each event.
    pub fn new(f: impl Fn(RunEvent) + Send + Sync + 'static) -> Self {
        Self(Arc::new(f))
    }

    pub(crate) fn send(&self, event: RunEvent) {
        (self.0)(event);
    }
}

impl std::fmt::Debug for EventSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("EventSink")
    }
}

/// Two sinks are equal when they are the same function.
impl PartialEq for EventSink {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

/// Where a batch's events go: called with the item's index (its position in the
/// input, from 0) and the event.
#[derive(Clone)]
pub struct BatchEventSink(Arc<dyn Fn(usize, RunEvent) + Send + Sync>);

impl BatchEventSink {
    /// A sink that calls `f` with each item's index and event.
    pub fn new(f: impl Fn(usize, RunEvent) + Send + Sync + 'static) -> Self {
        Self(Arc::new(f))
    }

    /// The sink of the item at `index`.
    pub(crate) fn item(&self, index: usize) -> EventSink {
        let f = Arc::clone(&self.0);
        EventSink::new(move |event| f(index, event))
    }
}

impl std::fmt::Debug for BatchEventSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BatchEventSink")
    }
}

/// Two sinks are equal when they are the same function.
impl PartialEq for BatchEventSink {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

/// A run in progress ([`Agent::start`](crate::Agent::start)): its events as they
/// happen, then its result. Dropping the handle cancels the run: its open model
/// streams are closed and their permits handed on at once.
///
/// ```no_run
/// # async fn demo(agent: cf_host::Agent) {
/// use cf_host::{RunEvent, RunOptions, Task};
/// let mut run = agent.start(Task::new("How do I read a CSV file?"), RunOptions::default());
/// while let Some(event) = run.next_event().await {
///     if let RunEvent::Output(text) = event {
///         print!("{text}");
///     }
/// }
/// let output = run.result().await;
/// # }
/// ```
#[derive(Debug)]
pub struct RunHandle {
    events: mpsc::UnboundedReceiver<RunEvent>,
    run: Option<JoinHandle<Result<RunOutput, RunError>>>,
}

impl RunHandle {
    pub(crate) fn new(
        events: mpsc::UnboundedReceiver<RunEvent>,
        run: JoinHandle<Result<RunOutput, RunError>>,
    ) -> Self {
        Self {
            events,
            run: Some(run),
        }
    }

    /// The next event; `None` once the run has ended and every event was read.
    pub async fn next_event(&mut self) -> Option<RunEvent> {
        self.events.recv().await
    }

    /// Waits for the run's end and returns its result (events not read are dropped).
    /// Dropping this future before it is ready cancels the run, as dropping the handle
    /// does.
    pub async fn result(mut self) -> Result<RunOutput, RunError> {
        // Awaited in place: were this future dropped, `self` would go with it and
        // `Drop` would abort the run.
        let run = self
            .run
            .as_mut()
            .expect("present until the handle is dropped");
        let outcome = run.await;
        self.run = None;
        match outcome {
            Ok(result) => result,
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(_) => Err(RunError::from(crate::Error::Cancelled { started: true })),
        }
    }

    /// Cancels the run.
    pub fn cancel(&self) {
        if let Some(run) = &self.run {
            run.abort();
        }
    }
}

impl Drop for RunHandle {
    fn drop(&mut self) {
        self.cancel();
    }
}
