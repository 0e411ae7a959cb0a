//! Lets a connection task write its own replies after the deliveries it just caused.
//!
//! A publishing connection hands a message to the core, whose channel send wakes the
//! subscriber's connection task on the same worker thread. That task runs only once the
//! publisher's task has returned, so if the publisher writes its acknowledgement first, every
//! delivery waits for that write (on loopback, the write runs the peer's TCP input and wakes
//! the peer's thread). Mosquitto, single-threaded, writes the delivery first.
//!
//! [`after_local_turns`] is how a task steps aside: it parks the task's waker in a list kept
//! per worker thread and returns `Pending`. The next connection task polled on that thread
//! wakes it once its own poll is done (see [`drains`]), so the publisher runs right after the
//! subscriber has written, from tokio's LIFO slot, without waking another worker. When no such
//! task runs, the worker wakes the list before it parks ([`install`] sets that hook), and HTTP
//! requests wake it when they start ([`wake_waiting`]), so no waiter is left behind.
//!
//! `tokio::task::yield_now` gives the same order, but tokio runs a yielded task only after the
//! worker has searched for work, and a worker that finds work after searching wakes another
//! worker: three extra `futex` calls per message, which cost more latency than they saved.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

thread_local! {
    /// Whether this thread belongs to a runtime built with [`install`]; elsewhere (tests,
    /// other runtimes) nothing would wake the list on park, so tasks do not step aside.
    static ENABLED: Cell<bool> = const { Cell::new(false) };
    /// Tasks waiting for the next connection task's turn on this thread.
    static WAITING: RefCell<Vec<Waker>> = const { RefCell::new(Vec::new()) };
}

/// Sets the runtime hooks the hand-over needs: worker threads enable it when they start, and
/// wake their waiting tasks before they park.
pub fn install(builder: &mut tokio::runtime::Builder) -> &mut tokio::runtime::Builder {
    builder.on_thread_start(|| ENABLED.with(|e| e.set(true))).on_thread_park(wake_waiting)
}

/// Wakes every task waiting on this thread.
pub fn wake_waiting() {
    for waker in take_waiting() {
        waker.wake();
    }
}

fn take_waiting() -> Vec<Waker> {
    // `try_with`: a thread being torn down has nothing to wake.
    WAITING.try_with(|w| std::mem::take(&mut *w.borrow_mut())).unwrap_or_default()
}

/// Completes after the next connection task on this thread has had its turn, or at once on a
/// thread whose runtime was not built with [`install`].
pub fn after_local_turns() -> AfterLocalTurns {
    AfterLocalTurns { waiting: false }
}

/// The future of [`after_local_turns`].
#[derive(Debug)]
#[must_use = "futures do nothing unless awaited"]
pub struct AfterLocalTurns {
    waiting: bool,
}

impl Future for AfterLocalTurns {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        // Any wake ends the wait: the list's, the park hook's, or the task's own I/O.
        if self.waiting || !ENABLED.with(Cell::get) {
            return Poll::Ready(());
        }
        self.waiting = true;
        WAITING.with(|w| w.borrow_mut().push(cx.waker().clone()));
        Poll::Pending
    }
}

/// Wraps a connection task's future: after each of its polls, the tasks that were waiting
/// before it started are woken (those it adds itself wait for the next task). Connection
/// futures are boxed already, so `Unpin` costs nothing.
pub fn drains<F: Future + Unpin>(inner: F) -> Drains<F> {
    Drains { inner }
}

/// The future of [`drains`].
#[derive(Debug)]
#[must_use = "futures do nothing unless awaited"]
pub struct Drains<F> {
    inner: F,
}

impl<F: Future + Unpin> Future for Drains<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let earlier = take_waiting();
        let out = Pin::new(&mut self.inner).poll(cx);
        for waker in earlier {
            waker.wake();
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    fn runtime() -> tokio::runtime::Runtime {
        let mut builder = tokio::runtime::Builder::new_multi_thread();
        builder.worker_threads(1).enable_all();
        install(&mut builder).build().expect("runtime")
    }

    /// A publisher that steps aside lets the task it woke write first; one that does not,
    /// writes first. One worker, so the order is the scheduler's, not a race.
    #[test]
    fn a_task_that_steps_aside_runs_after_the_task_it_woke() {
        for step_aside in [true, false] {
            let log = Arc::new(Mutex::new(Vec::new()));
            let rt = runtime();
            rt.block_on(async {
                let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<()>();
                let (ready_tx, ready_rx) = tokio::sync::oneshot::channel::<()>();
                let sub_log = Arc::clone(&log);
                let subscriber = tokio::spawn(drains(Box::pin(async move {
                    // The publisher is spawned once this is sent, and runs on the one worker only
                    // after this poll, which goes on to wait on the channel.
                    let _ = ready_tx.send(());
                    rx.recv().await;
                    sub_log.lock().expect("log").push("delivery");
                })));
                ready_rx.await.expect("subscriber started");
                let pub_log = Arc::clone(&log);
                let publisher = tokio::spawn(drains(Box::pin(async move {
                    tx.send(()).expect("send");
                    if step_aside {
                        after_local_turns().await;
                    }
                    pub_log.lock().expect("log").push("ack");
                })));
                publisher.await.expect("publisher");
                subscriber.await.expect("subscriber");
            });
            let order = log.lock().expect("log").clone();
            let expected = if step_aside { ["delivery", "ack"] } else { ["ack", "delivery"] };
            assert_eq!(order, expected, "step_aside = {step_aside}");
        }
    }

    /// With no other task to take a turn, the worker's park hook ends the wait.
    #[test]
    fn a_lone_waiter_is_woken_when_the_worker_parks() {
        let rt = runtime();
        let done = rt.block_on(async {
            tokio::time::timeout(std::time::Duration::from_secs(5), tokio::spawn(after_local_turns())).await
        });
        assert!(matches!(done, Ok(Ok(()))), "the waiting task was never woken");
    }

    /// Outside a runtime built with `install`, nothing would wake the list, so there is no wait.
    #[tokio::test]
    async fn without_the_hooks_there_is_no_wait() {
        let mut fut = std::pin::pin!(after_local_turns());
        assert!(fut.as_mut().poll(&mut Context::from_waker(Waker::noop())).is_ready());
    }
}
