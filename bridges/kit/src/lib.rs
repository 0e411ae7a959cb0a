//! Plumbing every TCP front-end needs and no protocol owns: an accept loop with
//! a connection limit, accept-error backoff, one task per connection, and a
//! bounded graceful shutdown; and the [`handover`] that lets a connection write its
//! acks after the deliveries it caused. It names no protocol and knows nothing of the core.

#![warn(missing_docs, unreachable_pub)]

pub mod handover;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Why a connection ended, for logs (NATS's `ClosedState`). Shared so every
/// front-end reports the same reasons under the same names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// The client closed it (AMQP `connection.close`, STOMP DISCONNECT).
    ClientClosed,
    /// The peer went away without closing.
    PeerGone,
    /// A protocol error closed it.
    ProtocolError,
    /// Heartbeats from the client stopped.
    HeartbeatTimeout,
    /// The client did not finish its handshake in time.
    HandshakeTimeout,
    /// The broker is shutting down.
    Shutdown,
}

/// How long connections get to finish after shutdown is signalled.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Accept connections on `listener` until `shutdown` is cancelled, running
/// `handle(stream, peer, token)` for each in its own task, at most
/// `max_connections` at once (further accepts wait: backpressure, not refusal).
/// Each connection gets a child token, cancelled at shutdown so it can tell its
/// client; then this waits up to [`SHUTDOWN_GRACE`] for connections to finish.
/// `protocol` names the listener in logs.
pub async fn serve_tcp<H, F>(
    listener: TcpListener,
    protocol: &'static str,
    max_connections: usize,
    shutdown: CancellationToken,
    handle: H,
) -> std::io::Result<()>
where
    H: Fn(TcpStream, SocketAddr, CancellationToken) -> F,
    F: Future<Output = ()> + Send + 'static,
{
    let limit = Arc::new(Semaphore::new(max_connections.max(1)));
    let tracker = TaskTracker::new();
    let mut backoff = Duration::from_millis(5);
    loop {
        let permit = tokio::select! {
            _ = shutdown.cancelled() => break,
            p = Arc::clone(&limit).acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
        };
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(x) => { backoff = Duration::from_millis(5); x }
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(protocol, error = %e, "accept failed");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        // Boxed: an async block that captures a future and awaits it keeps room for it twice
        // (the captured value and the awaited state), which doubled every idle connection's cost.
        // `drains`: each turn of a connection lets the connections waiting on it write.
        let conn = handover::drains(Box::pin(handle(stream, peer, shutdown.child_token())));
        tracker.spawn(async move {
            conn.await;
            drop(permit);
        });
    }
    tracker.close();
    if tokio::time::timeout(SHUTDOWN_GRACE, tracker.wait()).await.is_err() {
        tracing::warn!(protocol, remaining = tracker.len(), "connections still open after the grace period");
    }
    Ok(())
}
