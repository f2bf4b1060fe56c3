//! The local HTTP API for tills, kiosks and POS software that keeps its own basket.
//!
//! Every write answers only after the journal committed it; every refusal is a 4xx/5xx with
//! `{"error":{"code","message"[,"field"]}}` and changes nothing.

mod coupons;
mod customers;
mod errors;
mod health;
mod live;
mod openapi;
mod printing;
mod purchases;
mod server;

pub use errors::ApiError;
pub use live::LiveEvents;
pub(crate) use openapi::with_version as openapi_with_version;
pub use printing::Printing;
pub use server::{serve as serve_router, Limits, MAX_CONNECTIONS};

use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::devices::DeviceHandle;
use crate::journal::Journal;
use crate::metrics::Metrics;
use crate::sync::SyncState;

/// Largest request body: a 500-line basket is ~60 KiB, and one event must fit a batch.
pub(crate) const MAX_BODY_BYTES: usize = 128 * 1024;

/// A request (body included) that takes longer is answered 408: a client dribbling a body
/// must not hold a connection for ever. The live event stream is exempt.
const REQUEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// What the API's handlers share; each part keeps its own state, this holds handles to them.
#[derive(Clone)]
pub struct ApiState {
    /// Where writes are committed.
    pub journal: Journal,
    /// Counters for `/metrics`.
    pub metrics: Arc<Metrics>,
    /// Sync's state, for `/healthz`.
    pub sync: watch::Receiver<SyncState>,
    /// Bearer tokens; empty means none are required.
    pub tokens: Arc<Vec<String>>,
    /// Device states and commands.
    pub devices: DeviceHandle,
    /// The live event stream.
    pub live: LiveEvents,
    /// The print queue's cashier side.
    pub printing: Printing,
    /// Coupon redemption.
    pub coupons: crate::coupons::Redeemer,
    /// Customer identification.
    pub identity: Arc<crate::identity::Identity>,
    /// Loyalty points.
    pub loyalty: Arc<crate::loyalty::Loyalty>,
}

/// Every route, with the token guard, body limit, request timeout and JSON errors.
pub fn router(state: ApiState) -> Router {
    let guarded = middleware::from_fn_with_state(state.clone(), require_token);
    let v1 = Router::new()
        .route("/purchases", post(purchases::create))
        .route("/coupons/redeem", post(coupons::redeem))
        .route("/customers/identify", post(customers::identify))
        .route("/customers/:customer", get(customers::show))
        .route("/devices", get(devices))
        .route("/events", get(live::stream))
        .route("/print-jobs", get(printing::list))
        .route("/print-jobs/:id/confirm", post(printing::confirm))
        .route("/print-jobs/:id/reprint", post(printing::reprint))
        .route_layer(guarded.clone());
    // Sales volume and backlog are nobody's business on the store LAN: `/metrics` is behind
    // the token, and `/healthz` shows detail only to a token holder (a bare liveness answer
    // to anyone else).
    let metrics = Router::new()
        .route("/metrics", get(metrics))
        .route_layer(guarded);
    Router::new()
        .nest("/v1", v1)
        .merge(metrics)
        .route("/v1/openapi.json", get(openapi::document))
        .route("/healthz", get(health))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(middleware::from_fn(request_timeout))
        .layer(middleware::from_fn(json_errors))
        .with_state(state)
}

/// Serves until `shutdown` resolves, then finishes in-flight requests (each already committed
/// or refused) before returning.
pub async fn serve(
    listener: TcpListener,
    state: ApiState,
    limits: Limits,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let metrics = state.metrics.clone();
    server::serve(listener, router(state), limits, metrics, shutdown).await
}

/// Answers 408 for a request that outlives `REQUEST_TIMEOUT`; a write already handed to the
/// journal still commits (a retry with its Idempotency-Key or receipt is then a replay).
pub(crate) async fn request_timeout(request: Request, next: Next) -> Response {
    if request.uri().path() == "/v1/events" {
        return next.run(request).await;
    }
    match tokio::time::timeout(REQUEST_TIMEOUT, next.run(request)).await {
        Ok(response) => response,
        Err(_) => ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            "request_timeout",
            format!("the request was not complete within {REQUEST_TIMEOUT:?}"),
        )
        .into_response(),
    }
}

/// Every error the router or an extractor produces by itself (unknown path, wrong method, a
/// body over the limit) gets the same JSON error body as the handlers' own refusals.
pub(crate) async fn json_errors(request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    let (code, message) = match response.status() {
        StatusCode::NOT_FOUND => ("not_found", "no such resource"),
        StatusCode::METHOD_NOT_ALLOWED => ("method_not_allowed", "method not allowed here"),
        StatusCode::PAYLOAD_TOO_LARGE => ("payload_too_large", "the body is larger than 128 KiB"),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => ("unsupported_media_type", "send application/json"),
        _ => return response,
    };
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if is_json {
        return response;
    }
    let allow = response.headers().get(header::ALLOW).cloned();
    let mut json = ApiError::new(response.status(), code, message).into_response();
    if let Some(allow) = allow {
        json.headers_mut().insert(header::ALLOW, allow);
    }
    json
}

/// Every configured device and its state (connecting, up, down), for the till page and IT.
async fn devices(State(state): State<ApiState>) -> Json<serde_json::Value> {
    Json(serde_json::json!({ "devices": state.devices.statuses() }))
}

/// Whether the request may see guarded routes: no tokens configured, or a valid bearer.
fn authorised(state: &ApiState, headers: &axum::http::HeaderMap) -> bool {
    state.tokens.is_empty() || bearer_matches(&state.tokens, headers)
}

/// Whether the request carries `Authorization: Bearer <one of tokens>` (compared in constant
/// time).
pub(crate) fn bearer_matches(tokens: &[String], headers: &axum::http::HeaderMap) -> bool {
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    presented.is_some_and(|token| {
        tokens
            .iter()
            .any(|t| constant_time_eq(t.as_bytes(), token.as_bytes()))
    })
}

async fn require_token(State(state): State<ApiState>, request: Request, next: Next) -> Response {
    match authorised(&state, request.headers()) {
        true => next.run(request).await,
        false => {
            state
                .metrics
                .intake_refused("unauthorized", request.uri().path());
            ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "a valid Authorization: Bearer token is required",
            )
            .into_response()
        }
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The real state of each part: the journal (can it commit?), sync (connected, failing,
/// alarms), the API (it answered), the devices. 503 when any part is broken; an unplugged
/// device counts, a broker that is down does not (offline is normal, guarantee 4).
async fn health(State(state): State<ApiState>, headers: axum::http::HeaderMap) -> Response {
    let report = health::report(&state);
    health_answer(
        report.broken.is_empty(),
        authorised(&state, &headers),
        report.detail,
    )
}

/// A `/healthz` answer, the gateway's and central's alike: 503 while a part is broken; the
/// detail for a token holder, liveness alone for anyone else (a load balancer, a monitoring
/// probe without the token).
pub(crate) fn health_answer(
    healthy: bool,
    authorised: bool,
    detail: serde_json::Value,
) -> Response {
    let (status, word) = if healthy {
        (StatusCode::OK, "ok")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "broken")
    };
    if !authorised {
        return (status, Json(serde_json::json!({ "status": word }))).into_response();
    }
    (status, Json(detail)).into_response()
}

async fn metrics(State(state): State<ApiState>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.encode(),
    )
}
