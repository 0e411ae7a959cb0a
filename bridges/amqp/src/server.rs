//! The AMQP listener: accepts connections under a connection limit and runs
//! each in its own task; on shutdown stops accepting, tells every client
//! (`connection.close 320`) and waits for them, bounded by a grace period.

use std::sync::Arc;

use switchyard::BrokerHandle;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::AmqpConfig;
use crate::conn::serve_connection;

/// Serve AMQP 0-9-1 on `listener` until `shutdown` is cancelled.
pub async fn serve(
    listener: TcpListener,
    broker: BrokerHandle,
    cfg: AmqpConfig,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let max_connections = cfg.max_connections;
    let cfg = Arc::new(cfg);
    switchyard_kit::serve_tcp(listener, "amqp 0-9-1", max_connections, shutdown, move |stream, peer, token| {
        serve_connection(stream, peer, broker.clone(), Arc::clone(&cfg), token)
    })
    .await
}
