//! Time as the core sees it: milliseconds since the Unix epoch, passed into
//! every state machine explicitly so queue logic can be tested without sleeping.

/// Milliseconds since the Unix epoch.
pub type Millis = u64;

/// The current wall-clock time in milliseconds. Only the runtime edges call this;
/// state machines take `now` as an argument.
pub fn now_ms() -> Millis {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as Millis).unwrap_or(0)
}
