//! The broker process's life: open the core, bind the listeners, announce them, serve until
//! a signal, then shut down in order.
//!
//! Shutdown order (style guide §2.5): cancel the listeners' token (each bridge stops accepting
//! and tells its clients, e.g. AMQP `connection.close 320`), wait for the listener tasks up to
//! [`SHUTDOWN_GRACE`], then [`Broker::shutdown`] flushes storage. A second signal cuts the wait
//! short but still flushes. A listener that ends on its own before any signal is fatal: the
//! same orderly shutdown runs and the process exits non-zero.

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, anyhow};
use switchyard::Broker;
use switchyard_amqp::serve as serve_amqp;
use switchyard_aws::serve as serve_aws;
use switchyard_mqtt::serve_shared as serve_mqtt;
use switchyard_stomp::serve as serve_stomp;
use switchyard_ws::{Handlers, StreamHandler, WsByteStream, WsServer};
use tokio::net::TcpListener;
use tokio::task::{JoinError, JoinSet};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::config::ServerConfig;
use crate::signal::Signals;

/// How long listeners get, after the shutdown signal, to close their connections.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Prefix of the one line printed on stdout once every listener is bound. The rest of the line
/// is a JSON object from listener name to bound address, e.g.
/// `switchyard ready {"amqp":"127.0.0.1:45678"}`.
pub const READY_PREFIX: &str = "switchyard ready ";

/// What a listener task returns: its name and how its `serve` ended.
type ListenerExit = (&'static str, io::Result<()>);

/// Every listener socket, bound before any is served so a failure to bind one leaves nothing
/// half-started.
struct Bound {
    amqp: TcpListener,
    stomp: TcpListener,
    mqtt: TcpListener,
    aws: TcpListener,
    ws_stomp: TcpListener,
    ws_mqtt: TcpListener,
    http: TcpListener,
}

/// Runs the broker until a shutdown signal (returns `Ok`) or a fatal error (returns `Err`).
pub async fn run(cfg: ServerConfig) -> anyhow::Result<()> {
    let mut signals = Signals::install().context("installing SIGINT/SIGTERM handlers")?;

    info!(data_dir = %cfg.broker.data_dir.display(), "opening broker");
    let broker = Broker::open(cfg.broker.clone())
        .await
        .with_context(|| format!("opening the broker in {}", cfg.broker.data_dir.display()))?;

    let bound = match bind_all(&cfg).await {
        Ok(bound) => bound,
        Err(err) => {
            broker.shutdown().await;
            return Err(err);
        }
    };

    let shutdown = CancellationToken::new();
    crate::reclaim::spawn(std::sync::Arc::clone(broker.handle().memory()), shutdown.child_token());
    let mut listeners: JoinSet<ListenerExit> = JoinSet::new();
    let mut addrs: BTreeMap<&'static str, SocketAddr> = BTreeMap::new();

    let amqp_addr = local_addr("amqp", &bound.amqp)?;
    addrs.insert("amqp", amqp_addr);
    info!(listener = "amqp", addr = %amqp_addr, "listening");
    let serve = serve_amqp(bound.amqp, broker.handle(), cfg.amqp.clone(), shutdown.child_token());
    listeners.spawn(async move { ("amqp", serve.await) });

    let stomp_addr = local_addr("stomp", &bound.stomp)?;
    addrs.insert("stomp", stomp_addr);
    info!(listener = "stomp", addr = %stomp_addr, "listening");
    let serve = serve_stomp(bound.stomp, broker.handle(), cfg.stomp.clone(), shutdown.child_token());
    listeners.spawn(async move { ("stomp", serve.await) });

    // One MQTT session registry for TCP and WebSocket clients, so a client id is one
    // session (takeover, persistent state) whichever way it connects.
    let mqtt_shared = switchyard_mqtt::shared::Shared::new(broker.handle(), cfg.mqtt.clone());
    let mqtt_addr = local_addr("mqtt", &bound.mqtt)?;
    addrs.insert("mqtt", mqtt_addr);
    info!(listener = "mqtt", addr = %mqtt_addr, "listening");
    let serve = serve_mqtt(bound.mqtt, std::sync::Arc::clone(&mqtt_shared), shutdown.child_token());
    listeners.spawn(async move { ("mqtt", serve.await) });

    let aws_addr = local_addr("aws", &bound.aws)?;
    addrs.insert("aws", aws_addr);
    info!(listener = "aws", addr = %aws_addr, "listening");
    let serve = serve_aws(bound.aws, broker.handle(), cfg.aws.clone(), shutdown.child_token());
    listeners.spawn(async move { ("aws", serve.await) });

    let ws = WsServer::new(broker.handle(), cfg.ws.clone(), ws_handlers(&broker, &cfg, mqtt_shared));
    for (name, listener) in [("ws_stomp", bound.ws_stomp), ("ws_mqtt", bound.ws_mqtt), ("http", bound.http)] {
        let addr = local_addr(name, &listener)?;
        addrs.insert(name, addr);
        info!(listener = name, addr = %addr, "listening");
        let (ws, token) = (ws.clone(), shutdown.child_token());
        listeners.spawn(async move {
            let served = match name {
                "ws_stomp" => ws.serve_stomp(listener, token).await,
                "ws_mqtt" => ws.serve_mqtt(listener, token).await,
                _ => ws.serve_http(listener, token).await,
            };
            (name, served)
        });
    }

    announce_ready(&addrs)?;

    let failure = tokio::select! {
        signal = signals.recv() => {
            info!(signal, "shutdown requested");
            None
        }
        Some(joined) = listeners.join_next() => {
            let err = unexpected_exit(joined);
            error!("{err:#}; shutting down");
            Some(err)
        }
    };

    info!(grace = ?SHUTDOWN_GRACE, "stopping listeners and closing connections");
    shutdown.cancel();
    drain(&mut listeners, &mut signals).await;

    info!("flushing storage");
    broker.shutdown().await;
    info!("stopped");
    failure.map_or(Ok(()), Err)
}

/// Binds every configured listener.
async fn bind_all(cfg: &ServerConfig) -> anyhow::Result<Bound> {
    let amqp = TcpListener::bind(cfg.amqp.listen)
        .await
        .with_context(|| format!("binding the AMQP listener to {}", cfg.amqp.listen))?;
    let stomp = TcpListener::bind(cfg.stomp.listen)
        .await
        .with_context(|| format!("binding the STOMP listener to {}", cfg.stomp.listen))?;
    let mqtt = TcpListener::bind(cfg.mqtt.listen)
        .await
        .with_context(|| format!("binding the MQTT listener to {}", cfg.mqtt.listen))?;
    let aws = TcpListener::bind(cfg.aws.listen)
        .await
        .with_context(|| format!("binding the AWS listener to {}", cfg.aws.listen))?;
    let ws_stomp = TcpListener::bind(cfg.ws.stomp_listen)
        .await
        .with_context(|| format!("binding the STOMP-over-WebSocket listener to {}", cfg.ws.stomp_listen))?;
    let ws_mqtt = TcpListener::bind(cfg.ws.mqtt_listen)
        .await
        .with_context(|| format!("binding the MQTT-over-WebSocket listener to {}", cfg.ws.mqtt_listen))?;
    let http = TcpListener::bind(cfg.ws.http_listen)
        .await
        .with_context(|| format!("binding the HTTP listener to {}", cfg.ws.http_listen))?;
    Ok(Bound { amqp, stomp, mqtt, aws, ws_stomp, ws_mqtt, http })
}

/// The STOMP and MQTT connection tasks, for connections that arrive over WebSocket.
fn ws_handlers(
    broker: &Broker,
    cfg: &ServerConfig,
    mqtt_shared: std::sync::Arc<switchyard_mqtt::shared::Shared>,
) -> Handlers {
    let stomp_broker = broker.handle();
    let stomp_cfg = std::sync::Arc::new(cfg.stomp.clone());
    let stomp: StreamHandler = std::sync::Arc::new(move |stream: &mut WsByteStream, peer, token| {
        Box::pin(switchyard_stomp::serve_connection(
            stream,
            peer,
            stomp_broker.clone(),
            std::sync::Arc::clone(&stomp_cfg),
            token,
        ))
    });
    let mqtt: StreamHandler = std::sync::Arc::new(move |stream: &mut WsByteStream, peer, token| {
        Box::pin(switchyard_mqtt::serve_connection(stream, peer, std::sync::Arc::clone(&mqtt_shared), token))
    });
    Handlers { stomp, mqtt }
}

/// The address a listener actually got (the port is chosen by the OS for port 0).
fn local_addr(name: &str, listener: &TcpListener) -> anyhow::Result<SocketAddr> {
    listener.local_addr().with_context(|| format!("reading the {name} listener's address"))
}

/// The ready line for `addrs`, without the newline.
fn ready_line(addrs: &BTreeMap<&'static str, SocketAddr>) -> anyhow::Result<String> {
    let json: BTreeMap<&str, String> = addrs.iter().map(|(k, v)| (*k, v.to_string())).collect();
    Ok(format!("{READY_PREFIX}{}", serde_json::to_string(&json)?))
}

/// Prints the ready line on stdout and flushes it: supervisors and tests wait for it.
fn announce_ready(addrs: &BTreeMap<&'static str, SocketAddr>) -> anyhow::Result<()> {
    let line = ready_line(addrs)?;
    let mut out = io::stdout().lock();
    // Nobody reading stdout is not a reason to stop serving.
    if let Err(err) = writeln!(out, "{line}").and_then(|()| out.flush()) {
        warn!(error = %err, "could not print the ready line on stdout");
    }
    info!("ready");
    Ok(())
}

/// Describes a listener task that ended before shutdown was asked for.
fn unexpected_exit(joined: Result<ListenerExit, JoinError>) -> anyhow::Error {
    match joined {
        Ok((name, Ok(()))) => anyhow!("the {name} listener stopped unexpectedly"),
        Ok((name, Err(err))) => anyhow::Error::new(err).context(format!("the {name} listener failed")),
        Err(err) => anyhow!("a listener task failed: {err}"),
    }
}

/// Waits for the listener tasks to finish, at most [`SHUTDOWN_GRACE`] or until another signal,
/// then aborts whatever is left.
async fn drain(listeners: &mut JoinSet<ListenerExit>, signals: &mut Signals) {
    let deadline = tokio::time::sleep(SHUTDOWN_GRACE);
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            joined = listeners.join_next() => match joined {
                None => break,
                Some(Ok((name, Ok(())))) => info!(listener = name, "listener stopped"),
                Some(Ok((name, Err(err)))) => {
                    warn!(listener = name, error = %err, "listener stopped with an error");
                }
                Some(Err(err)) => warn!(error = %err, "listener task failed"),
            },
            () = &mut deadline => {
                warn!(remaining = listeners.len(), "grace period over; abandoning open connections");
                break;
            }
            signal = signals.recv() => {
                warn!(signal, remaining = listeners.len(), "second signal; not waiting for connections");
                break;
            }
        }
    }
    listeners.abort_all();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_line_is_prefix_and_json_object() {
        let mut addrs = BTreeMap::new();
        addrs.insert("amqp", SocketAddr::from(([127, 0, 0, 1], 45678)));
        let line = ready_line(&addrs).expect("formats");
        assert_eq!(line, r#"switchyard ready {"amqp":"127.0.0.1:45678"}"#);
    }
}
