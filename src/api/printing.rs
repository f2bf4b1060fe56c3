//! Receipts: a committed purchase is queued for its till's printer, and the cashier handles
//! what the printer could not confirm.
//! - `GET /v1/print-jobs[?printer=NAME]`: jobs and their states;
//! - `POST /v1/print-jobs/{id}/confirm`: an `unconfirmed` job did print (the cashier saw it);
//! - `POST /v1/print-jobs/{id}/reprint`: print the receipt again, marked COPY.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Path as UrlPath, Query, State};
use axum::http::StatusCode;
use axum::Json;

use super::{ApiError, ApiState};
use crate::devices::config::PrinterConfig;
use crate::journal::{Journal, JournalError, PrintCommand, PrintJob, PrintJobs, PrintRefusal};

/// Which printer serves which till, and the journal that holds the print queue. Jobs are
/// queued by the purchase itself (`NewEvent::print_on`); this answers the cashier's requests.
#[derive(Clone)]
pub struct Printing {
    journal: Journal,
    printer_of_till: Arc<HashMap<String, String>>,
}

impl Printing {
    /// The cashier side of the print queue in `journal`, for the tills of `printers`.
    pub fn new(journal: Journal, printers: &[PrinterConfig]) -> Printing {
        Printing {
            journal,
            printer_of_till: Arc::new(
                printers
                    .iter()
                    .map(|p| (p.till.clone(), p.name.clone()))
                    .collect(),
            ),
        }
    }

    /// The printer of `till`, if it has one.
    pub fn printer_of(&self, till: &str) -> Option<String> {
        self.printer_of_till.get(till).cloned()
    }

    /// Reads the queue off the async runtime.
    async fn read<T: Send + 'static>(
        &self,
        work: impl FnOnce(&PrintJobs) -> Result<T, JournalError> + Send + 'static,
    ) -> Result<T, ApiError> {
        if self.printer_of_till.is_empty() {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "no_printers",
                "no printers are configured",
            ));
        }
        let journal = self.journal.clone();
        tokio::task::spawn_blocking(move || work(&journal.print_jobs()?))
            .await
            .map_err(|e| {
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string())
            })?
            .map_err(storage)
    }

    /// Changes the queue (through the journal's writer) and returns the job it names.
    async fn change(&self, command: PrintCommand) -> Result<PrintJob, ApiError> {
        if self.printer_of_till.is_empty() {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "no_printers",
                "no printers are configured",
            ));
        }
        let id = self.journal.print(command).await.map_err(refused)?;
        self.read(move |jobs| jobs.get(id))
            .await?
            .ok_or_else(|| not_found(id))
    }
}

fn storage(error: JournalError) -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "storage",
        error.to_string(),
    )
}

fn refused(refusal: PrintRefusal) -> ApiError {
    let message = refusal.to_string();
    match refusal {
        PrintRefusal::NoSuchJob(id) => not_found(id),
        PrintRefusal::NotUnconfirmed { .. } => {
            ApiError::new(StatusCode::CONFLICT, "not_unconfirmed", message)
        }
        PrintRefusal::Storage(_) => {
            ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "storage", message)
        }
    }
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
        .read(move |jobs| jobs.list(filter.printer.as_deref()))
        .await?;
    Ok(Json(serde_json::json!({ "jobs": jobs })))
}

pub(super) async fn confirm(
    State(state): State<ApiState>,
    UrlPath(id): UrlPath<i64>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let job = state.printing.change(PrintCommand::Confirm { id }).await?;
    Ok(Json(serde_json::json!({ "job": job })))
}

pub(super) async fn reprint(
    State(state): State<ApiState>,
    UrlPath(id): UrlPath<i64>,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    let job = state.printing.change(PrintCommand::Reprint { id }).await?;
    Ok((StatusCode::CREATED, Json(serde_json::json!({ "job": job }))))
}

fn not_found(id: i64) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "no_such_job",
        format!("no print job {id}"),
    )
}
