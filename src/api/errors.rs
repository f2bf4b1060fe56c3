//! The API's error body: `{"error":{"code","message"[,"field"]}}`.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;

use crate::journal::AppendError;
use crate::protocol::FieldError;

/// A refusal as the API sends it: a status and `{"error":{"code","message"[,"field"]}}`.
#[derive(Debug)]
pub struct ApiError {
    /// The HTTP status.
    pub status: StatusCode,
    /// Machine-readable, e.g. `invalid_field`.
    pub code: &'static str,
    /// For people.
    pub message: String,
    /// The offending field's path.
    pub field: Option<String>,
    /// More members of the error object (e.g. the seq of a duplicate).
    pub extra: Option<serde_json::Value>,
}

impl ApiError {
    /// A refusal with no field.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
            field: None,
            extra: None,
        }
    }

    /// A 422 naming the field of a body that failed its checks.
    pub fn field(error: FieldError) -> ApiError {
        ApiError {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            code: "invalid_field",
            message: error.to_string(),
            field: Some(error.field),
            extra: None,
        }
    }
}

impl From<AppendError> for ApiError {
    fn from(error: AppendError) -> ApiError {
        let message = error.to_string();
        match error {
            AppendError::DuplicateReceipt { seq, id, .. } => ApiError {
                status: StatusCode::CONFLICT,
                code: "duplicate_receipt",
                message,
                field: Some("receipt".into()),
                extra: Some(serde_json::json!({ "seq": seq, "id": id })),
            },
            AppendError::IdempotencyMismatch(_) => ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "idempotency_key_reused",
                message,
            ),
            AppendError::DiskFull => {
                ApiError::new(StatusCode::INSUFFICIENT_STORAGE, "storage_full", message)
            }
            AppendError::StorageLow => {
                ApiError::new(StatusCode::INSUFFICIENT_STORAGE, "storage_low", message)
            }
            AppendError::AlreadyRedeemed(_) => {
                ApiError::new(StatusCode::CONFLICT, "already_redeemed", message)
            }
            AppendError::InsufficientPoints { balance, .. } => ApiError {
                status: StatusCode::CONFLICT,
                code: "insufficient_points",
                message,
                field: Some("points_redeemed".into()),
                extra: Some(serde_json::json!({ "balance": balance })),
            },
            AppendError::OfflinePointsCap { cap, spent, .. } => ApiError {
                status: StatusCode::CONFLICT,
                code: "offline_points_cap",
                message,
                field: Some("points_redeemed".into()),
                extra: Some(serde_json::json!({ "cap": cap, "spent": spent })),
            },
            AppendError::SeqExhausted => {
                ApiError::new(StatusCode::INSUFFICIENT_STORAGE, "seq_exhausted", message)
            }
            AppendError::Storage(_) | AppendError::Closed => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "journal_unavailable",
                message,
            ),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut error = serde_json::json!({ "code": self.code, "message": self.message });
        if let Some(field) = self.field {
            error["field"] = field.into();
        }
        if let (Some(serde_json::Value::Object(extra)), Some(obj)) =
            (self.extra, error.as_object_mut())
        {
            obj.extend(extra);
        }
        (self.status, Json(serde_json::json!({ "error": error }))).into_response()
    }
}
