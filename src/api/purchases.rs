//! `POST /v1/purchases`: docs/protocol.md's purchase body plus `till`. For an identified
//! customer the loyalty part decides the points (`[loyalty]`: the till's own `points` are
//! replaced by the rule's) and checks any `points_redeemed` against the balance when the
//! purchase commits; the answer says what was earned and the balance after it.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use sha2::{Digest, Sha256};

use super::{ApiError, ApiState};
use crate::journal::{IdempotencyKey, NewEvent};
use crate::protocol::{EventKind, FieldError, Purchase};

pub(super) async fn create(
    State(state): State<ApiState>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    match record(&state, &headers, &body).await {
        Ok(response) => response,
        Err(error) => {
            state.metrics.intake_refused(error.code, &error.message);
            error.into_response()
        }
    }
}

async fn record(state: &ApiState, headers: &HeaderMap, body: &[u8]) -> Result<Response, ApiError> {
    let (till, mut purchase) = parse(body)?;
    let points = purchase.customer.as_deref().map(|customer| {
        state.loyalty.purchase(
            customer,
            purchase.total_minor,
            purchase.points,
            purchase.points_redeemed,
        )
    });
    if let Some(points) = &points {
        purchase.points = points.earned;
    }
    let body = serde_json::to_string(&purchase)
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))?;
    // The fingerprint is of the parsed purchase, re-serialised in one field order: a retry
    // whose JSON was re-encoded (other key order, spacing) is the same request.
    let idempotency = idempotency_key(headers, &till, body.as_bytes())?;
    let appended = state
        .journal
        .append(NewEvent {
            kind: EventKind::Purchase,
            till: till.clone(),
            body: body.clone(),
            receipt: Some(purchase.receipt.clone()),
            idempotency,
            identity_refs: Vec::new(),
            // The receipt is queued in the sale's own transaction; a replay queues nothing.
            print_on: state.printing.printer_of(&till),
            coupon: None,
            points,
        })
        .await?;
    if !appended.replayed {
        state
            .metrics
            .event_committed(EventKind::Purchase.as_str(), appended.seq);
    }
    let mut answer = serde_json::json!({ "seq": appended.seq, "id": appended.id });
    if let Some(customer) = &purchase.customer {
        let balance = state.loyalty.balance(customer).await.map_err(|e| {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "journal_unavailable",
                e.to_string(),
            )
        })?;
        answer["customer"] = state.loyalty.resolve(customer).into();
        answer["points"] = purchase.points.into();
        answer["points_redeemed"] = purchase.points_redeemed.into();
        answer["balance"] = balance.total().into();
    }
    let mut response = (StatusCode::CREATED, Json(answer)).into_response();
    if appended.replayed {
        response
            .headers_mut()
            .insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    Ok(response)
}

/// Splits `till` off the body and reads the rest as a purchase, naming the first bad field.
pub fn parse(body: &[u8]) -> Result<(String, Purchase), ApiError> {
    let mut value: serde_json::Value = serde_json::from_slice(body).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_json",
            format!("body is not JSON: {e}"),
        )
    })?;
    let object = value.as_object_mut().ok_or_else(|| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_json",
            "body must be a JSON object",
        )
    })?;
    let till = match object.remove("till") {
        Some(serde_json::Value::String(till)) => till,
        Some(_) => return Err(ApiError::field(FieldError::new("till", "must be a string"))),
        None => return Err(ApiError::field(FieldError::new("till", "is required"))),
    };
    check_till(&till)?;
    let purchase: Purchase = serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let message = e.into_inner().to_string();
        // serde names a missing field in its message, not in the path.
        let field = missing_field(&message).map_or(path, |name| name.to_string());
        ApiError::field(FieldError::new(field, message))
    })?;
    purchase.validate().map_err(ApiError::field)?;
    Ok((till, purchase))
}

fn missing_field(message: &str) -> Option<&str> {
    message.strip_prefix("missing field `")?.split('`').next()
}

fn check_till(till: &str) -> Result<(), ApiError> {
    if crate::protocol::is_till_id(till) {
        Ok(())
    } else {
        Err(ApiError::field(FieldError::new(
            "till",
            "must be 1-32 letters, digits, '-' or '_'",
        )))
    }
}

fn idempotency_key(
    headers: &HeaderMap,
    till: &str,
    canonical_body: &[u8],
) -> Result<Option<IdempotencyKey>, ApiError> {
    let Some(value) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    let key = value
        .to_str()
        .ok()
        .filter(|k| !k.is_empty() && k.len() <= 255)
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_idempotency_key",
                "Idempotency-Key must be 1-255 visible ASCII characters",
            )
        })?;
    let mut hash = Sha256::new();
    hash.update(EventKind::Purchase.as_str());
    hash.update([0]);
    hash.update(till);
    hash.update([0]);
    hash.update(canonical_body);
    Ok(Some(IdempotencyKey {
        key: key.to_string(),
        fingerprint: hash.finalize().into(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_and_wrong_fields_are_named() {
        let err =
            parse(br#"{"till":"t1","lines":[],"total_minor":1,"currency":"EUR","customer":null}"#)
                .unwrap_err();
        assert_eq!(err.field.as_deref(), Some("receipt"));
        let err = parse(br#"{"till":"t1","receipt":"r","lines":[{"sku":"a","qty":"x","unit_minor":1}],"total_minor":1,"currency":"EUR","customer":null}"#).unwrap_err();
        assert_eq!(err.field.as_deref(), Some("lines[0].qty"));
        let err = parse(br#"{"receipt":"r"}"#).unwrap_err();
        assert_eq!(err.field.as_deref(), Some("till"));
        let err = parse(b"[1]").unwrap_err();
        assert_eq!(err.code, "invalid_json");
    }
}
