//! The three HTTP listeners, the WebSocket upgrade (origin check, connection
//! limit, subprotocol choice, credentials for the live API) and the demo page.
//!
//! | listener | paths |
//! |---|---|
//! | `stomp_listen` (15674) | `path` (`/ws`): STOMP |
//! | `mqtt_listen` (15675) | `path` (`/ws`): MQTT |
//! | `http_listen` (15672) | `/ws` (STOMP or MQTT by subprotocol), `/ws/stomp`, `/ws/mqtt`, `/ws/live`, `/demo` |
//!
//! STOMP and MQTT connections run the protocol crates' own connection tasks
//! over a [`WsByteStream`]; this crate does not depend on them — the binary
//! passes them in as [`Handlers`]. Every upgraded connection is tracked, gets a
//! child of the listener's shutdown token, and is told `1001 server shutdown`
//! when it fires.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::ws::{WebSocket, WebSocketUpgrade, close_code};
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use base64::Engine;
use switchyard::BrokerHandle;
use tokio::net::TcpListener;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::WsConfig;
use crate::live::{LiveShared, serve_live};
use crate::stream::{OutFraming, WsByteStream};

/// How long connections get to finish after shutdown is signalled.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// How long a closing connection waits for the peer's close frame.
const CLOSE_WAIT: Duration = Duration::from_secs(2);

/// STOMP subprotocols, as RabbitMQ Web-STOMP and stomp.js name them.
pub const STOMP_PROTOCOLS: &[&str] = &["v12.stomp", "v11.stomp", "v10.stomp"];
/// MQTT subprotocols: `mqtt` (3.1.1 and 5.0) and `mqttv3.1`.
pub const MQTT_PROTOCOLS: &[&str] = &["mqtt", "mqttv3.1"];

/// The demo page served at `/demo`.
const DEMO_HTML: &str = include_str!("demo.html");

/// A protocol connection task run over a WebSocket (the STOMP or MQTT bridge's
/// `serve_connection`). It borrows the stream so the server can send the close
/// frame when it returns.
pub type StreamHandler = Arc<
    dyn for<'a> Fn(&'a mut WsByteStream, SocketAddr, CancellationToken) -> Pin<Box<dyn Future<Output = ()> + Send + 'a>>
        + Send
        + Sync,
>;

/// The protocol front-ends WebSocket connections are handed to.
#[derive(Clone)]
pub struct Handlers {
    /// STOMP (`switchyard_stomp::serve_connection`).
    pub stomp: StreamHandler,
    /// MQTT (`switchyard_mqtt::serve_connection`, sharing the TCP listener's sessions).
    pub mqtt: StreamHandler,
}

impl std::fmt::Debug for Handlers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Handlers { stomp, mqtt }")
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Proto {
    Stomp,
    Mqtt,
}

/// The WebSocket front-ends: build once, then serve each listener.
#[derive(Debug, Clone)]
pub struct WsServer {
    live: Arc<LiveShared>,
    handlers: Handlers,
    cfg: Arc<WsConfig>,
    limit: Arc<Semaphore>,
}

#[derive(Debug)]
struct ListenerState {
    server: WsServer,
    shutdown: CancellationToken,
    tracker: TaskTracker,
}

type St = State<Arc<ListenerState>>;

impl WsServer {
    /// The front-ends over `broker`.
    pub fn new(broker: BrokerHandle, cfg: WsConfig, handlers: Handlers) -> WsServer {
        let cfg = Arc::new(cfg);
        WsServer {
            live: Arc::new(LiveShared { broker, cfg: Arc::clone(&cfg) }),
            handlers,
            limit: Arc::new(Semaphore::new(cfg.max_connections.max(1))),
            cfg,
        }
    }

    /// Serves STOMP over WebSocket at `path` on `listener` until `shutdown`.
    pub async fn serve_stomp(&self, listener: TcpListener, shutdown: CancellationToken) -> std::io::Result<()> {
        let path = self.cfg.path.clone();
        self.serve(listener, shutdown, |r| r.route(&path, get(stomp_only))).await
    }

    /// Serves MQTT over WebSocket at `path` on `listener` until `shutdown`.
    pub async fn serve_mqtt(&self, listener: TcpListener, shutdown: CancellationToken) -> std::io::Result<()> {
        let path = self.cfg.path.clone();
        self.serve(listener, shutdown, |r| r.route(&path, get(mqtt_only))).await
    }

    /// Serves the main HTTP port (`/ws`, `/ws/stomp`, `/ws/mqtt`, `/ws/live`, `/demo`).
    pub async fn serve_http(&self, listener: TcpListener, shutdown: CancellationToken) -> std::io::Result<()> {
        self.serve(listener, shutdown, |r| {
            r.route("/ws", get(by_subprotocol))
                .route("/ws/stomp", get(stomp_only))
                .route("/ws/mqtt", get(mqtt_only))
                .route("/ws/live", get(live))
                .route("/demo", get(demo))
                .route("/favicon.ico", get(|| async { StatusCode::NO_CONTENT }))
                .route("/", get(index))
        })
        .await
    }

    async fn serve(
        &self,
        listener: TcpListener,
        shutdown: CancellationToken,
        routes: impl FnOnce(Router<Arc<ListenerState>>) -> Router<Arc<ListenerState>>,
    ) -> std::io::Result<()> {
        let state =
            Arc::new(ListenerState { server: self.clone(), shutdown: shutdown.clone(), tracker: TaskTracker::new() });
        let app = routes(Router::new()).with_state(Arc::clone(&state));
        let token = shutdown.clone();
        axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>())
            .with_graceful_shutdown(async move { token.cancelled().await })
            .await?;
        state.tracker.close();
        if tokio::time::timeout(SHUTDOWN_GRACE, state.tracker.wait()).await.is_err() {
            tracing::warn!(remaining = state.tracker.len(), "websocket connections still open after the grace period");
        }
        Ok(())
    }
}

/// An upgrade refused with an HTTP status and a text saying why.
#[derive(Debug)]
struct Refusal {
    status: StatusCode,
    text: String,
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        (self.status, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], self.text).into_response()
    }
}

fn refuse(status: StatusCode, text: impl Into<String>) -> Refusal {
    Refusal { status, text: text.into() }
}

/// The subprotocols the client offered, in its order of preference.
fn requested(headers: &HeaderMap) -> Vec<String> {
    headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|p| p.trim().to_string())
        .filter(|p| !p.is_empty())
        .collect()
}

/// Chooses the protocol and the subprotocol to answer with: the first offered one
/// that `allowed` knows; `default` when none was offered.
fn choose(headers: &HeaderMap, allowed: &[Proto], default: Option<Proto>) -> Result<(Proto, Option<String>), Refusal> {
    let offered = requested(headers);
    for p in &offered {
        let proto = if STOMP_PROTOCOLS.contains(&p.as_str()) {
            Proto::Stomp
        } else if MQTT_PROTOCOLS.contains(&p.as_str()) {
            Proto::Mqtt
        } else {
            continue;
        };
        if allowed.contains(&proto) {
            return Ok((proto, Some(p.clone())));
        }
    }
    let mut supported: Vec<&str> = Vec::new();
    for a in allowed {
        match a {
            Proto::Stomp => supported.extend(STOMP_PROTOCOLS),
            Proto::Mqtt => supported.extend(MQTT_PROTOCOLS),
        }
    }
    match (offered.is_empty(), default) {
        (true, Some(d)) => Ok((d, None)),
        (true, None) => Err(refuse(
            StatusCode::BAD_REQUEST,
            format!("name a WebSocket subprotocol (Sec-WebSocket-Protocol): one of {}", supported.join(", ")),
        )),
        (false, _) => Err(refuse(
            StatusCode::BAD_REQUEST,
            format!("unsupported WebSocket subprotocol(s) {}; supported: {}", offered.join(", "), supported.join(", ")),
        )),
    }
}

fn is_loopback_host(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost") || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// Splits `host[:port]` (also `[v6]:port`) and returns the host.
fn host_of(authority: &str) -> &str {
    if let Some(rest) = authority.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    authority.rsplit_once(':').map_or(authority, |(h, _)| h)
}

/// Browsers send `Origin`; a page may open a WebSocket only if it comes from the same
/// host, from a loopback address, or from an origin in `allowed_origins`.
fn origin_allowed(headers: &HeaderMap, cfg: &WsConfig) -> bool {
    let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else {
        return true;
    };
    if cfg.allowed_origins.iter().any(|o| o == "*" || o.eq_ignore_ascii_case(origin)) {
        return true;
    }
    let authority = origin.split_once("://").map_or(origin, |(_, a)| a).trim_end_matches('/');
    if is_loopback_host(host_of(authority)) {
        return true;
    }
    headers.get(header::HOST).and_then(|v| v.to_str().ok()).is_some_and(|h| h.eq_ignore_ascii_case(authority))
}

/// The common checks of every upgrade: origin, then the connection limit.
fn admit(st: &ListenerState, headers: &HeaderMap) -> Result<OwnedSemaphorePermit, Refusal> {
    if !origin_allowed(headers, &st.server.cfg) {
        let origin = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()).unwrap_or("");
        tracing::info!(origin, "websocket upgrade refused: origin not allowed");
        return Err(refuse(StatusCode::FORBIDDEN, format!("origin {origin} is not allowed ([ws] allowed_origins)")));
    }
    Arc::clone(&st.server.limit)
        .try_acquire_owned()
        .map_err(|_| refuse(StatusCode::SERVICE_UNAVAILABLE, "too many WebSocket connections"))
}

fn configure(ws: WebSocketUpgrade, cfg: &WsConfig, subprotocol: Option<String>) -> WebSocketUpgrade {
    let ws = ws
        .max_message_size(cfg.max_message_size)
        .max_frame_size(cfg.max_message_size)
        .read_buffer_size(4 * 1024)
        .write_buffer_size(64 * 1024);
    match subprotocol.and_then(|p| HeaderValue::from_str(&p).ok()) {
        Some(p) => {
            let mut ws = ws;
            ws.set_selected_protocol(p);
            ws
        }
        None => ws,
    }
}

async fn stomp_only(st: St, peer: ConnectInfo<SocketAddr>, headers: HeaderMap, ws: WebSocketUpgrade) -> Response {
    upgrade(st, peer, headers, ws, &[Proto::Stomp], Some(Proto::Stomp))
}

async fn mqtt_only(st: St, peer: ConnectInfo<SocketAddr>, headers: HeaderMap, ws: WebSocketUpgrade) -> Response {
    upgrade(st, peer, headers, ws, &[Proto::Mqtt], Some(Proto::Mqtt))
}

async fn by_subprotocol(st: St, peer: ConnectInfo<SocketAddr>, headers: HeaderMap, ws: WebSocketUpgrade) -> Response {
    upgrade(st, peer, headers, ws, &[Proto::Stomp, Proto::Mqtt], None)
}

fn upgrade(
    State(st): St,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
    allowed: &[Proto],
    default: Option<Proto>,
) -> Response {
    let (proto, subprotocol) = match choose(&headers, allowed, default) {
        Ok(x) => x,
        Err(r) => return r.into_response(),
    };
    let permit = match admit(&st, &headers) {
        Ok(p) => p,
        Err(r) => return r.into_response(),
    };
    let cfg = Arc::clone(&st.server.cfg);
    let (handler, framing) = match proto {
        Proto::Mqtt => (Arc::clone(&st.server.handlers.mqtt), OutFraming::Binary),
        Proto::Stomp => (Arc::clone(&st.server.handlers.stomp), OutFraming::TextWhenUtf8),
    };
    let token = st.shutdown.child_token();
    let tracker = st.tracker.clone();
    configure(ws, &cfg, subprotocol).on_upgrade(move |socket: WebSocket| {
        tracker.track_future(async move {
            let ping = Duration::from_secs(cfg.ping_interval.max(1));
            let idle = Duration::from_secs(cfg.idle_timeout.max(1));
            let mut stream = WsByteStream::new(socket, framing, ping, idle);
            tracing::debug!(%peer, ?proto, "websocket connection accepted");
            // `drains`: each turn of the connection lets the connections waiting on it write.
            switchyard_kit::handover::drains(handler(&mut stream, peer, token.clone())).await;
            let (code, reason) =
                if token.is_cancelled() { (close_code::AWAY, "server shutdown") } else { stream.close_frame() };
            stream.close(code, reason, CLOSE_WAIT).await;
            drop(permit);
        })
    })
}

/// Credentials from an `Authorization: Basic` header.
fn basic_auth(headers: &HeaderMap) -> Option<(String, String)> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, b64) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD.decode(b64.trim()).ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, password) = text.split_once(':')?;
    Some((user.to_string(), password.to_string()))
}

async fn live(
    State(st): St,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Response {
    let offered = requested(&headers);
    if !offered.is_empty() {
        return refuse(
            StatusCode::BAD_REQUEST,
            format!("unsupported WebSocket subprotocol(s) {}; /ws/live takes none", offered.join(", ")),
        )
        .into_response();
    }
    let login = match basic_auth(&headers) {
        None => None,
        Some((user, password)) => {
            let broker = &st.server.live.broker;
            let vhost = &st.server.cfg.vhost;
            match broker
                .authenticate(&user, &password, Some(peer.ip()))
                .and_then(|u| broker.open_vhost(vhost, &u).map(|v| (u, v)))
            {
                Ok(x) => Some(x),
                Err(e) => {
                    tracing::info!(%peer, user, error = %e, "live websocket upgrade refused");
                    let mut r = refuse(StatusCode::UNAUTHORIZED, e.text).into_response();
                    r.headers_mut()
                        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Basic realm=\"switchyard\""));
                    return r;
                }
            }
        }
    };
    let permit = match admit(&st, &headers) {
        Ok(p) => p,
        Err(r) => return r.into_response(),
    };
    let shared = Arc::clone(&st.server.live);
    let token = st.shutdown.child_token();
    let tracker = st.tracker.clone();
    configure(ws, &st.server.cfg, None).on_upgrade(move |socket: WebSocket| {
        tracker.track_future(async move {
            serve_live(socket, peer, login, shared, token).await;
            drop(permit);
        })
    })
}

async fn demo() -> Html<&'static str> {
    Html(DEMO_HTML)
}

async fn index() -> Html<&'static str> {
    Html(
        "<!doctype html><title>Switchyard</title><p>Switchyard is running. \
         <a href=\"/demo\">Open the live demo</a>.</p>",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn subprotocols_are_chosen_in_the_clients_order() {
        let h = headers(&[("sec-websocket-protocol", "v10.stomp, v11.stomp, v12.stomp")]);
        let (p, sub) = choose(&h, &[Proto::Stomp, Proto::Mqtt], None).map_err(|_| ()).expect("stomp");
        assert_eq!((p, sub.as_deref()), (Proto::Stomp, Some("v10.stomp")));
        let h = headers(&[("sec-websocket-protocol", "mqtt")]);
        assert!(choose(&h, &[Proto::Stomp], Some(Proto::Stomp)).is_err(), "mqtt on the STOMP port");
        let (p, _) = choose(&h, &[Proto::Stomp, Proto::Mqtt], None).map_err(|_| ()).expect("mqtt");
        assert_eq!(p, Proto::Mqtt);
        let h = headers(&[]);
        assert!(choose(&h, &[Proto::Stomp, Proto::Mqtt], None).is_err(), "ambiguous without a subprotocol");
        let (p, sub) = choose(&h, &[Proto::Mqtt], Some(Proto::Mqtt)).map_err(|_| ()).expect("default");
        assert_eq!((p, sub), (Proto::Mqtt, None));
    }

    #[test]
    fn origins() {
        let cfg = WsConfig::default();
        assert!(origin_allowed(&headers(&[]), &cfg), "no Origin: not a browser");
        assert!(origin_allowed(&headers(&[("origin", "http://localhost:3000")]), &cfg));
        assert!(origin_allowed(&headers(&[("origin", "http://[::1]:8080")]), &cfg));
        assert!(origin_allowed(&headers(&[("origin", "http://broker:15672"), ("host", "broker:15672")]), &cfg));
        assert!(!origin_allowed(&headers(&[("origin", "https://evil.example"), ("host", "broker:15672")]), &cfg));
        let cfg = WsConfig { allowed_origins: vec!["https://app.example".into()], ..WsConfig::default() };
        assert!(origin_allowed(&headers(&[("origin", "https://app.example"), ("host", "broker:15672")]), &cfg));
    }

    #[test]
    fn basic_credentials() {
        let h = headers(&[("authorization", "Basic Z3Vlc3Q6Z3Vlc3Q=")]);
        assert_eq!(basic_auth(&h), Some(("guest".into(), "guest".into())));
        assert_eq!(basic_auth(&headers(&[("authorization", "Bearer x")])), None);
    }
}
