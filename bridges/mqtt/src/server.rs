//! The MQTT listener: accepts connections under a connection limit and runs each
//! in its own task; on shutdown stops accepting, tells every client (MQTT 5
//! `DISCONNECT 0x8B`) and waits for them, bounded by a grace period.

use std::sync::Arc;

use switchyard::BrokerHandle;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::MqttConfig;
use crate::conn::serve_connection;
use crate::shared::Shared;

/// Serve MQTT on `listener` until `shutdown` is cancelled.
pub async fn serve(
    listener: TcpListener,
    broker: BrokerHandle,
    cfg: MqttConfig,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    serve_shared(listener, Shared::new(broker, cfg), shutdown).await
}

/// Serve MQTT on `listener` with a session registry other transports share (MQTT over
/// WebSocket), so a client id is one session whichever way it connects.
pub async fn serve_shared(
    listener: TcpListener,
    shared: Arc<Shared>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let max_connections = shared.cfg.max_connections;
    switchyard_kit::serve_tcp(listener, "mqtt", max_connections, shutdown, move |stream, peer, token| {
        serve_connection(stream, peer, Arc::clone(&shared), token)
    })
    .await
}
