//! Time as the core sees it: milliseconds since the Unix epoch, passed into
//! every state machine explicitly so queue logic can be tested without sleeping.
//!
//! The runtime's clock is the wall clock plus an offset that only test hooks move
//! ([`advance_clock`]): users' own test suites can then expire visibility timeouts, delays,
//! retention periods and deduplication windows without waiting.

use std::sync::atomic::{AtomicU64, Ordering};

/// Milliseconds since the Unix epoch.
pub type Millis = u64;

/// Milliseconds added to the wall clock by [`advance_clock`].
static OFFSET_MS: AtomicU64 = AtomicU64::new(0);

/// The current time in milliseconds: the wall clock plus any test offset. Only the runtime
/// edges call this; state machines take `now` as an argument.
pub fn now_ms() -> Millis {
    let wall = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as Millis)
        .unwrap_or(0);
    wall.saturating_add(OFFSET_MS.load(Ordering::Relaxed))
}

/// Move the process's clock forward by `ms` (test hooks only; the clock never goes back).
/// Timers sleeping toward a deadline do not notice by themselves: callers wake them
/// (`VHost::advance_clock`). Returns the new now.
pub fn advance_clock(ms: u64) -> Millis {
    OFFSET_MS.fetch_add(ms, Ordering::Relaxed);
    now_ms()
}
