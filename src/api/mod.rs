//! The local HTTP API for tills, kiosks and POS software that keeps its own basket.
//!
//! Every write answers only after the journal committed it; every refusal is a 4xx/5xx with
//! `{"error":{"code","message"[,"field"]}}` and changes nothing.

mod errors;
mod live;
mod openapi;
mod printing;
mod purchases;

pub use errors::ApiError;
pub use live::LiveEvents;
pub use printing::Printing;

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
const MAX_BODY_BYTES: usize = 128 * 1024;

/// What the API's handlers share; each part keeps its own state, this holds handles to them.
#[derive(Clone)]
pub struct ApiState {
    pub journal: Journal,
    pub metrics: Arc<Metrics>,
    pub sync: watch::Receiver<SyncState>,
    pub tokens: Arc<Vec<String>>,
    pub devices: DeviceHandle,
    pub live: LiveEvents,
    pub printing: Printing,
}

pub fn router(state: ApiState) -> Router {
    let v1 = Router::new()
        .route("/purchases", post(purchases::create))
        .route("/devices", get(devices))
        .route("/events", get(live::stream))
        .route("/print-jobs", get(printing::list))
        .route("/print-jobs/:id/confirm", post(printing::confirm))
        .route("/print-jobs/:id/reprint", post(printing::reprint))
        .route_layer(middleware::from_fn_with_state(state.clone(), require_token));
    Router::new()
        .nest("/v1", v1)
        .route("/v1/openapi.json", get(openapi::document))
        .route("/healthz", get(health))
        .route("/metrics", get(metrics))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
}

/// Serves until `shutdown` resolves, then finishes in-flight requests (each already committed
/// or refused) before returning.
pub async fn serve(
    listener: TcpListener,
    state: ApiState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown)
        .await
}

/// Every configured device and its state (connecting, up, down), for the till page and IT.
async fn devices(State(state): State<ApiState>) -> Json<serde_json::Value> {
    Json(serde_json::json!({ "devices": state.devices.statuses() }))
}

async fn require_token(State(state): State<ApiState>, request: Request, next: Next) -> Response {
    if state.tokens.is_empty() {
        return next.run(request).await;
    }
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match presented {
        Some(token)
            if state
                .tokens
                .iter()
                .any(|t| constant_time_eq(t.as_bytes(), token.as_bytes())) =>
        {
            next.run(request).await
        }
        _ => {
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

async fn health(State(state): State<ApiState>) -> Json<serde_json::Value> {
    let position = *state.journal.position().borrow();
    let sync = state.sync.borrow().clone();
    Json(serde_json::json!({
        "status": "ok",
        "journal": {
            "last_seq": position.last_seq,
            "acked_upto": position.acked_upto,
            "backlog": position.backlog(),
        },
        "mqtt": {
            "connected": sync.connected,
            "session": sync.session,
        },
    }))
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
