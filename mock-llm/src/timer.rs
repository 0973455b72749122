//! The timer behind the configured latency. tokio's timer counts whole milliseconds and
//! rounds up, so a 100 ms latency was served in 101-102 ms (measured here), which a
//! benchmark of the client then charged to the client. This timer is one thread that
//! sleeps until the earliest deadline with a futex timeout and wakes within tens of
//! microseconds of it.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::Instant;
use tokio::sync::oneshot;

/// A timer thread; stops when dropped.
#[derive(Debug)]
pub(crate) struct PreciseTimer {
    shared: Arc<Shared>,
}

#[derive(Debug, Default)]
struct Shared {
    due: Mutex<BinaryHeap<Reverse<Due>>>,
    changed: Condvar,
    stop: AtomicBool,
}

#[derive(Debug)]
struct Due {
    at: Instant,
    wake: oneshot::Sender<()>,
}

impl PartialEq for Due {
    fn eq(&self, other: &Self) -> bool {
        self.at == other.at
    }
}
impl Eq for Due {}
impl PartialOrd for Due {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Due {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.at.cmp(&other.at)
    }
}

impl Shared {
    fn due(&self) -> MutexGuard<'_, BinaryHeap<Reverse<Due>>> {
        self.due.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn run(&self) {
        let mut due = self.due();
        while !self.stop.load(Ordering::Relaxed) {
            let Some(Reverse(next)) = due.peek() else {
                due = self
                    .changed
                    .wait(due)
                    .unwrap_or_else(PoisonError::into_inner);
                continue;
            };
            let now = Instant::now();
            if next.at <= now {
                if let Some(Reverse(next)) = due.pop() {
                    // The sleeper may have gone (its request was abandoned).
                    let _ = next.wake.send(());
                }
            } else {
                let wait = next.at - now;
                due = self
                    .changed
                    .wait_timeout(due, wait)
                    .unwrap_or_else(PoisonError::into_inner)
                    .0;
            }
        }
    }
}

impl PreciseTimer {
    pub(crate) fn start() -> std::io::Result<Self> {
        let shared = Arc::new(Shared::default());
        let thread = Arc::clone(&shared);
        std::thread::Builder::new()
            .name("mock-timer".into())
            .spawn(move || thread.run())?;
        Ok(Self { shared })
    }

    /// Completes at `at` (within tens of microseconds, on an idle machine).
    pub(crate) async fn sleep_until(&self, at: Instant) {
        let (wake, woken) = oneshot::channel();
        self.shared.due().push(Reverse(Due { at, wake }));
        self.shared.changed.notify_one();
        let _ = woken.await;
    }
}

impl Drop for PreciseTimer {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        let _guard = self.shared.due();
        self.shared.changed.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn sleepers_wake_in_deadline_order_and_not_before_it() {
        let timer = Arc::new(PreciseTimer::start().expect("timer"));
        let start = Instant::now();
        let order = Arc::new(Mutex::new(Vec::new()));
        let sleeps: Vec<_> = [30u64, 10, 20, 10]
            .into_iter()
            .enumerate()
            .map(|(i, ms)| {
                let (timer, order) = (Arc::clone(&timer), Arc::clone(&order));
                tokio::spawn(async move {
                    let at = start + Duration::from_millis(ms);
                    timer.sleep_until(at).await;
                    assert!(Instant::now() >= at, "woke before its deadline");
                    order.lock().expect("order").push(i);
                })
            })
            .collect();
        for s in sleeps {
            s.await.expect("sleeper");
        }
        let order = order.lock().expect("order").clone();
        assert_eq!(order.len(), 4);
        assert_eq!(order[3], 0, "the 30 ms sleeper wakes last: {order:?}");
        assert_eq!(order[2], 2, "the 20 ms sleeper wakes third: {order:?}");
        // A past deadline completes at once.
        timer.sleep_until(start).await;
    }
}
