//! The STOMP listener: accepts connections under a connection limit and runs
//! each in its own task; on shutdown stops accepting, tells every client
//! (an ERROR frame) and waits for them, bounded by a grace period.

use std::sync::Arc;
use std::time::Duration;

use switchyard::BrokerHandle;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::StompConfig;
use crate::conn::serve_connection;

/// How long connections get to finish after shutdown is signalled.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Serve STOMP on `listener` until `shutdown` is cancelled.
pub async fn serve(
    listener: TcpListener,
    broker: BrokerHandle,
    cfg: StompConfig,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let cfg = Arc::new(cfg);
    let limit = Arc::new(Semaphore::new(cfg.max_connections.max(1)));
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
                    tracing::warn!(error = %e, "stomp accept failed");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let broker = broker.clone();
        let cfg = Arc::clone(&cfg);
        let token = shutdown.child_token();
        tracker.spawn(async move {
            serve_connection(stream, peer, broker, cfg, token).await;
            drop(permit);
        });
    }
    tracker.close();
    if tokio::time::timeout(SHUTDOWN_GRACE, tracker.wait()).await.is_err() {
        tracing::warn!(remaining = tracker.len(), "stomp connections still open after the grace period");
    }
    Ok(())
}
