//! The HTTP listener and the router that picks a service by wire protocol.

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::HeaderMap;
use axum::response::Response;
use switchyard::BrokerHandle;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::AwsConfig;
use crate::error::{AwsError, json_error};
use crate::kinesis::{self, Kinesis};
use crate::query;
use crate::sigv4;
use crate::sns::Sns;
use crate::sqs::{self, Sqs};

/// Shared state of the router: one handle per service.
#[derive(Debug)]
struct Services {
    sqs: Sqs,
    kinesis: Kinesis,
    sns: Sns,
    max_body_bytes: usize,
    /// Set in `auth = "sigv4"` mode: access key id → secret.
    credentials: Option<std::collections::BTreeMap<String, String>>,
}

/// Serves the AWS APIs on `listener` until `shutdown` is cancelled.
pub async fn serve(
    listener: TcpListener,
    broker: BrokerHandle,
    cfg: AwsConfig,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let kinesis = Kinesis::new(&broker, &cfg.vhost, &cfg.account_id, &cfg.region, &cfg.kinesis)
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    let base_url = format!("http://{}", listener.local_addr()?);
    let sns = Sns::new(broker.clone(), cfg.clone(), base_url, shutdown.clone())
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    let sqs = Sqs::new(broker, cfg.clone()).map_err(|e| std::io::Error::other(e.to_string()))?;
    let credentials = (cfg.auth == crate::config::AuthMode::Sigv4).then(|| cfg.credentials.clone());
    let app = router(Arc::new(Services { sqs, kinesis, sns, max_body_bytes: cfg.body_limit(), credentials }));
    axum::serve(listener, app).with_graceful_shutdown(async move { shutdown.cancelled().await }).await
}

fn router(services: Arc<Services>) -> Router {
    Router::new().fallback(dispatch).with_state(services)
}

/// Routes one request: `X-Amz-Target` first (JSON protocols), then the query protocol
/// (a form with `Action`, answered in XML; SQS is the only query service so far).
async fn dispatch(State(services): State<Arc<Services>>, req: Request) -> Response {
    // A busy HTTP worker still lets the connections waiting on its turn write (see handover).
    switchyard_kit::handover::wake_waiting();
    let (parts, body) = req.into_parts();
    let target = header(&parts.headers, "x-amz-target").map(str::to_string);
    let body = match read_body(body, services.max_body_bytes).await {
        Ok(b) => b,
        Err(e) => return json_error(sqs::NAMESPACE, &e),
    };
    let host = header(&parts.headers, "host").unwrap_or("localhost:4566").to_string();
    if let Some(resp) = services.sns.try_handle_public(&parts.method, &parts.uri).await {
        return resp;
    }
    if let Some(credentials) = &services.credentials {
        let req = sigv4::Request { method: &parts.method, uri: &parts.uri, headers: &parts.headers, body: &body };
        let now = (switchyard::time::now_ms() / 1000) as i64;
        if let Err(e) = sigv4::verify(&req, credentials, now) {
            tracing::debug!(error = %e, "request signature refused");
            return match target {
                Some(_) => json_error(sqs::NAMESPACE, &e),
                None => query::xml_error(&e),
            };
        }
    }
    match target.as_deref() {
        Some(t) => match t.split_once('.') {
            Some((sqs::TARGET_PREFIX, action)) => services.sqs.handle_json(action, &body, &host).await,
            Some((kinesis::TARGET_PREFIX, action)) => {
                services.kinesis.handle(action, &body, header(&parts.headers, "content-type")).await
            }
            _ => json_error(sqs::NAMESPACE, &AwsError::UnknownOperation(format!("Unknown target {t}"))),
        },
        None => {
            // Query requests may carry their parameters in the URL (GET, presigned URLs).
            if let Some(resp) = services.sns.try_handle(&parts.uri, &body).await {
                return resp;
            }
            let form = if body.is_empty() { parts.uri.query().unwrap_or("").as_bytes() } else { &body[..] };
            let (action, input) = match query::form_to_input(form, parts.uri.path(), &host) {
                Ok(x) => x,
                Err(e) => return query::xml_error(&e),
            };
            match services.sqs.call(&action, &input, &host).await {
                Ok(out) => query::xml_ok(&action, &out),
                Err(e) => query::xml_error(&e),
            }
        }
    }
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// Reads the whole body, refusing more than `limit` bytes with an AWS error.
async fn read_body(body: Body, limit: usize) -> Result<bytes::Bytes, AwsError> {
    axum::body::to_bytes(body, limit).await.map_err(|_| AwsError::RequestTooLarge(limit))
}
