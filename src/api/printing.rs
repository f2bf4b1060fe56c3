//! Receipts: a committed purchase is queued for its till's printer, and the cashier handles
//! what the printer could not confirm.
//! - `GET /v1/print-jobs[?printer=NAME]`: jobs and their states;
//! - `POST /v1/print-jobs/{id}/confirm`: an `unconfirmed` job did print (the cashier saw it);
//! - `POST /v1/print-jobs/{id}/reprint`: print the receipt again, marked COPY.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use axum::extract::{Path as UrlPath, Query, State};
use axum::http::StatusCode;
use axum::Json;

use super::{ApiError, ApiState};
use crate::config::PrinterConfig;
use crate::journal::print_queue::{JobState, PrintQueue};
use crate::journal::JournalError;

/// The print queue as the API and the purchase path use it.
#[derive(Clone, Default)]
pub struct Printing {
    queue: Option<Arc<Mutex<PrintQueue>>>,
    printer_of_till: Arc<HashMap<String, String>>,
}

impl Printing {
    /// Opens the queue only when printers are configured.
    pub fn open(path: &Path, printers: &[PrinterConfig]) -> Result<Printing, JournalError> {
        if printers.is_empty() {
            return Ok(Printing::default());
        }
        Ok(Printing {
            queue: Some(Arc::new(Mutex::new(PrintQueue::open(path)?))),
            printer_of_till: Arc::new(
                printers
                    .iter()
                    .map(|p| (p.till.clone(), p.name.clone()))
                    .collect(),
            ),
        })
    }

    /// Queues the receipt of a committed purchase if its till has a printer. A failure here is
    /// logged, not returned: the sale is already recorded and must stay answered as such.
    pub async fn receipt(&self, till: &str, receipt: &str, purchase_json: &str) {
        let (Some(queue), Some(printer)) =
            (self.queue.clone(), self.printer_of_till.get(till).cloned())
        else {
            return;
        };
        let (receipt, purchase) = (receipt.to_string(), purchase_json.to_string());
        let queued = tokio::task::spawn_blocking(move || {
            let queue = queue
                .lock()
                .map_err(|_| "print queue lock poisoned".to_string())?;
            queue
                .enqueue(&printer, &receipt, false, &purchase)
                .map_err(|e| e.to_string())
        })
        .await;
        match queued {
            Ok(Ok(_)) => {}
            Ok(Err(error)) => tracing::error!(till, error, "receipt not queued for printing"),
            Err(error) => tracing::error!(till, %error, "receipt not queued for printing"),
        }
    }

    async fn with_queue<T: Send + 'static>(
        &self,
        work: impl FnOnce(&PrintQueue) -> Result<T, ApiError> + Send + 'static,
    ) -> Result<T, ApiError> {
        let queue = self.queue.clone().ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "no_printers",
                "no printers are configured",
            )
        })?;
        tokio::task::spawn_blocking(move || {
            let queue = queue.lock().map_err(|_| {
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    "print queue lock poisoned",
                )
            })?;
            work(&queue)
        })
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))?
    }
}

fn storage(error: JournalError) -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "storage",
        error.to_string(),
    )
}

#[derive(Debug, serde::Deserialize)]
pub(super) struct JobFilter {
    printer: Option<String>,
}

pub(super) async fn list(
    State(state): State<ApiState>,
    Query(filter): Query<JobFilter>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let jobs = state
        .printing
        .with_queue(move |queue| queue.list(filter.printer.as_deref()).map_err(storage))
        .await?;
    Ok(Json(serde_json::json!({ "jobs": jobs })))
}

pub(super) async fn confirm(
    State(state): State<ApiState>,
    UrlPath(id): UrlPath<i64>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let job = state
        .printing
        .with_queue(move |queue| {
            let job = queue
                .get(id)
                .map_err(storage)?
                .ok_or_else(|| not_found(id))?;
            if job.state != JobState::Unconfirmed {
                return Err(ApiError::new(
                    StatusCode::CONFLICT,
                    "not_unconfirmed",
                    format!(
                        "job {id} is {:?}; only an unconfirmed job can be confirmed",
                        job.state
                    ),
                ));
            }
            queue
                .set_state(id, JobState::Done, Some("confirmed by the cashier"))
                .map_err(storage)?;
            queue.get(id).map_err(storage)?.ok_or_else(|| not_found(id))
        })
        .await?;
    Ok(Json(serde_json::json!({ "job": job })))
}

pub(super) async fn reprint(
    State(state): State<ApiState>,
    UrlPath(id): UrlPath<i64>,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    let job = state
        .printing
        .with_queue(move |queue| {
            let original = queue
                .get(id)
                .map_err(storage)?
                .ok_or_else(|| not_found(id))?;
            if original.state == JobState::Unconfirmed {
                // The cashier chose to reprint: the original is settled, the copy says COPY.
                queue
                    .set_state(
                        id,
                        JobState::Done,
                        Some("reprinted as a copy by the cashier"),
                    )
                    .map_err(storage)?;
            }
            let copy = queue
                .enqueue(
                    &original.printer,
                    &original.receipt,
                    true,
                    &original.purchase,
                )
                .map_err(storage)?;
            queue
                .get(copy)
                .map_err(storage)?
                .ok_or_else(|| not_found(copy))
        })
        .await?;
    Ok((StatusCode::CREATED, Json(serde_json::json!({ "job": job }))))
}

fn not_found(id: i64) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "no_such_job",
        format!("no print job {id}"),
    )
}
