//! `POST /v1/coupons/redeem`: `{"till","token","customer","receipt","basket_minor"}` →
//! `{"discount_minor","mode"}`, or a refusal with its own code (`coupons::Refusal`).

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;

use super::{ApiError, ApiState};
use crate::coupons::{RedeemRequest, Refusal};

pub(super) async fn redeem(State(state): State<ApiState>, body: Bytes) -> Response {
    let request: RedeemRequest = match serde_json::from_slice(&body) {
        Ok(request) => request,
        Err(e) => {
            let error = ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_json",
                format!("not a redeem request: {e}"),
            );
            state.metrics.intake_refused(error.code, &error.message);
            return error.into_response();
        }
    };
    match state.coupons.redeem(request).await {
        Ok(redeemed) => (StatusCode::OK, Json(redeemed)).into_response(),
        Err(refusal) => {
            state
                .metrics
                .intake_refused(refusal.code(), &refusal.to_string());
            refusal_response(refusal).into_response()
        }
    }
}

fn refusal_response(refusal: Refusal) -> ApiError {
    let status = match &refusal {
        Refusal::Field(_) | Refusal::Malformed(_) => StatusCode::BAD_REQUEST,
        Refusal::AlreadyRedeemed => StatusCode::CONFLICT,
        Refusal::Journal(crate::journal::AppendError::DiskFull) => StatusCode::INSUFFICIENT_STORAGE,
        Refusal::Journal(_) => StatusCode::SERVICE_UNAVAILABLE,
        Refusal::CentralRefused(_) => StatusCode::BAD_GATEWAY,
        _ => StatusCode::UNPROCESSABLE_ENTITY,
    };
    let mut error = ApiError::new(status, refusal.code(), refusal.to_string());
    if let Refusal::Field(field) = refusal {
        error.field = Some(field.field);
    }
    error
}
