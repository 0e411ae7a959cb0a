//! The MQTT listener: accepts connections under a connection limit and runs each
//! in its own task; on shutdown stops accepting, tells every client (MQTT 5
//! `DISCONNECT 0x8B`) and waits for them, bounded by a grace period.

use std::sync::Arc;
use std::time::Duration;

use switchyard::BrokerHandle;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::MqttConfig;
use crate::conn::serve_connection;
use crate::shared::Shared;

/// How long connections get to finish after shutdown is signalled.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Serve MQTT on `listener` until `shutdown` is cancelled.
pub async fn serve(
    listener: TcpListener,
    broker: BrokerHandle,
    cfg: MqttConfig,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let limit = Arc::new(Semaphore::new(cfg.max_connections.max(1)));
    let shared = Shared::new(broker, cfg);
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
                    tracing::warn!(error = %e, "mqtt accept failed");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let shared = Arc::clone(&shared);
        let token = shutdown.child_token();
        tracker.spawn(async move {
            serve_connection(stream, peer, shared, token).await;
            drop(permit);
        });
    }
    tracker.close();
    if tokio::time::timeout(SHUTDOWN_GRACE, tracker.wait()).await.is_err() {
        tracing::warn!(remaining = tracker.len(), "mqtt connections still open after the grace period");
    }
    Ok(())
}
