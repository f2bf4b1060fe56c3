//! `POST /v1/customers/identify`
//! `{"till","identifiers":[{"kind":"card"|"phone"|"email"|"app","value","verified"}]}` →
//! `{"customer","points","known":"local"|"central"|"provisional","seq"}`: the same path a card
//! tap takes (`identity::Identity::seen`). Raw values are hashed at once and never stored,
//! logged or published.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;

use super::{ApiError, ApiState};
use crate::identity::{IdentityError, RawIdentifier};
use crate::protocol::FieldError;

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct IdentifyRequest {
    till: String,
    identifiers: Vec<RawIdentifier>,
}

/// More identifiers than any customer carries is a client bug.
const MAX_IDENTIFIERS: usize = 8;

pub(super) async fn identify(State(state): State<ApiState>, body: Bytes) -> Response {
    match answer(&state, &body).await {
        Ok(response) => response,
        Err(error) => {
            // The message never holds a raw value (the identity part's errors name kinds).
            state.metrics.intake_refused(error.code, &error.message);
            error.into_response()
        }
    }
}

async fn answer(state: &ApiState, body: &[u8]) -> Result<Response, ApiError> {
    let request: IdentifyRequest = serde_json::from_slice(body).map_err(|e| {
        // serde's message may quote the offending value: say where, not what.
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_json",
            format!(
                "not an identify request (line {}, column {})",
                e.line(),
                e.column()
            ),
        )
    })?;
    if !crate::protocol::is_till_id(&request.till) {
        return Err(ApiError::field(FieldError::new(
            "till",
            "must be 1-32 letters, digits, '-' or '_'",
        )));
    }
    if request.identifiers.is_empty() || request.identifiers.len() > MAX_IDENTIFIERS {
        return Err(ApiError::field(FieldError::new(
            "identifiers",
            format!("give 1 to {MAX_IDENTIFIERS} identifiers"),
        )));
    }
    let mut identifiers = Vec::with_capacity(request.identifiers.len());
    for (i, raw) in request.identifiers.iter().enumerate() {
        let identifier = state
            .identity
            .identifier(raw.kind, &raw.value, raw.verified)
            .map_err(|e| refused(e, Some(format!("identifiers[{i}].value"))))?;
        identifiers.push(identifier);
    }
    let recorded = state
        .identity
        .seen(&request.till, identifiers)
        .await
        .map_err(|e| refused(e, None))?;
    state
        .metrics
        .event_committed("identity_seen", recorded.event.seq);
    let balance = state
        .loyalty
        .balance(&recorded.customer)
        .await
        .map_err(|e| refused(e.into(), None))?;
    Ok((
        StatusCode::OK,
        Json(serde_json::json!({
            "customer": recorded.customer,
            "points": balance.total(),
            "known": recorded.known,
            "seq": recorded.event.seq,
        })),
    )
        .into_response())
}

fn refused(error: IdentityError, field: Option<String>) -> ApiError {
    let message = error.to_string();
    match error {
        IdentityError::NoKey => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "identity_not_configured",
            message,
        ),
        IdentityError::Identifier(_) => {
            let mut error =
                ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "junk_identifier", message);
            error.field = field;
            error
        }
        IdentityError::Append(append) => ApiError::from(append),
        IdentityError::Journal(_) => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "journal_unavailable",
            message,
        ),
    }
}

/// `GET /v1/customers/{ref}`: the profile a ref resolves to here and its points: central's
/// balance, and what this box earned and spent that central has not acked yet.
pub(super) async fn show(
    State(state): State<ApiState>,
    axum::extract::Path(customer): axum::extract::Path<String>,
) -> Response {
    if let Err(error) = crate::protocol::check_profile_ref("customer", &customer) {
        return ApiError::field(error).into_response();
    }
    match state.loyalty.balance(&customer).await {
        Ok(balance) => Json(serde_json::json!({
            "customer": state.loyalty.resolve(&customer),
            "points": balance.total(),
            "central_points": balance.central,
            "pending_earned": balance.pending_earned,
            "pending_redeemed": balance.pending_redeemed,
        }))
        .into_response(),
        Err(error) => refused(error.into(), None).into_response(),
    }
}
