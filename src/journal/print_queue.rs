//! The print queue: receipts waiting for a printer, in the journal itself.
//!
//! A purchase's print job is inserted in the purchase's own transaction, so a crash between
//! "recorded" and "queued" cannot happen: every committed purchase at a till with a printer has
//! exactly one job. Like everything in the journal, jobs are written only by the writer thread;
//! the API and the printer threads send it `PrintCommand`s and read through `PrintJobs`, a
//! read-only view. A job moves queued → sending → done; if the link drops or the printer never
//! confirms, it stops at `unconfirmed` and is never sent again by itself: the cashier confirms it
//! printed, or reprints it, and a reprint is a new job marked COPY.

use std::path::Path;

use rusqlite::{params, Connection, OptionalExtension, Transaction};

use super::JournalError;

/// Where a print job stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    /// Waiting for its printer.
    Queued,
    /// Being sent; a crash now leaves it unconfirmed.
    Sending,
    /// May or may not have printed: the cashier decides.
    Unconfirmed,
    /// Printed and confirmed (by the printer or the cashier).
    Done,
}

impl JobState {
    fn as_str(self) -> &'static str {
        match self {
            JobState::Queued => "queued",
            JobState::Sending => "sending",
            JobState::Unconfirmed => "unconfirmed",
            JobState::Done => "done",
        }
    }

    fn parse(text: &str) -> JobState {
        match text {
            "queued" => JobState::Queued,
            "sending" => JobState::Sending,
            "done" => JobState::Done,
            _ => JobState::Unconfirmed,
        }
    }
}

/// One receipt to print.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PrintJob {
    /// The job's id.
    pub id: i64,
    /// The printer that prints it.
    pub printer: String,
    /// The purchase's receipt id.
    pub receipt: String,
    /// A reprint, marked COPY.
    pub copy: bool,
    /// Where it stands.
    pub state: JobState,
    /// The purchase body (JSON), rendered at print time with the printer's layout.
    #[serde(skip)]
    pub purchase: String,
    /// Why it is unconfirmed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

/// A change to the print queue, carried out by the journal's writer thread.
#[derive(Debug, Clone)]
pub enum PrintCommand {
    /// After a (re)start of a printer: a job that was being sent may have printed.
    MarkInterrupted {
        /// The printer that (re)started.
        printer: String,
    },
    /// Record where a job stands.
    SetState {
        /// The job.
        id: i64,
        /// Its new state.
        state: JobState,
        /// Why, for `unconfirmed`.
        error: Option<String>,
    },
    /// The cashier saw an `unconfirmed` job print.
    Confirm {
        /// The job.
        id: i64,
    },
    /// The cashier asks for the receipt again: a new job marked COPY (an `unconfirmed`
    /// original is settled as done).
    Reprint {
        /// The job to copy.
        id: i64,
    },
}

/// Why a print command changed nothing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PrintRefusal {
    /// No job has this id.
    #[error("no print job {0}")]
    NoSuchJob(i64),
    /// Only an unconfirmed job can be confirmed.
    #[error("job {id} is {state:?}; only an unconfirmed job can be confirmed")]
    NotUnconfirmed {
        /// The job.
        id: i64,
        /// Where it stands.
        state: JobState,
    },
    /// The journal could not carry it out.
    #[error("{0}")]
    Storage(String),
}

/// Inserts a purchase's print job inside the append's transaction.
pub(super) fn enqueue(
    tx: &Transaction<'_>,
    printer: &str,
    receipt: &str,
    copy: bool,
    purchase: &str,
) -> rusqlite::Result<i64> {
    tx.prepare_cached(
        "INSERT INTO print_jobs(printer, receipt, copy, state, purchase) VALUES (?1, ?2, ?3, 'queued', ?4)",
    )?
    .execute(params![printer, receipt, copy, purchase])?;
    Ok(tx.last_insert_rowid())
}

/// Carries out `command` inside the writer's transaction. The job id it answers is the job
/// changed or, for a reprint, the new copy.
pub(super) fn apply(
    tx: &Transaction<'_>,
    command: &PrintCommand,
) -> rusqlite::Result<Result<i64, PrintRefusal>> {
    let set = |id: i64, state: JobState, error: Option<&str>| {
        tx.prepare_cached("UPDATE print_jobs SET state = ?2, last_error = ?3 WHERE id = ?1")?
            .execute(params![id, state.as_str(), error])
    };
    match command {
        PrintCommand::MarkInterrupted { printer } => {
            let changed = tx.execute(
                "UPDATE print_jobs SET state = 'unconfirmed', last_error = 'gateway restarted while sending'
                 WHERE printer = ?1 AND state = 'sending'",
                [printer],
            )?;
            Ok(Ok(changed as i64))
        }
        PrintCommand::SetState { id, state, error } => {
            let changed = set(*id, *state, error.as_deref())?;
            Ok(if changed == 0 {
                Err(PrintRefusal::NoSuchJob(*id))
            } else {
                Ok(*id)
            })
        }
        PrintCommand::Confirm { id } => {
            let Some(job) = get(tx, *id)? else {
                return Ok(Err(PrintRefusal::NoSuchJob(*id)));
            };
            if job.state != JobState::Unconfirmed {
                return Ok(Err(PrintRefusal::NotUnconfirmed {
                    id: *id,
                    state: job.state,
                }));
            }
            set(*id, JobState::Done, Some("confirmed by the cashier"))?;
            Ok(Ok(*id))
        }
        PrintCommand::Reprint { id } => {
            let Some(original) = get(tx, *id)? else {
                return Ok(Err(PrintRefusal::NoSuchJob(*id)));
            };
            if original.state == JobState::Unconfirmed {
                // The cashier chose to reprint: the original is settled, the copy says COPY.
                set(
                    *id,
                    JobState::Done,
                    Some("reprinted as a copy by the cashier"),
                )?;
            }
            let copy = enqueue(
                tx,
                &original.printer,
                &original.receipt,
                true,
                &original.purchase,
            )?;
            Ok(Ok(copy))
        }
    }
}

/// Jobs left in the print queue file of storegate before 0.2 (`<journal>.print-queue`) move
/// into the journal once, at open; the old file is renamed `….imported`.
pub(super) fn import_legacy(conn: &Connection, journal: &Path) -> Result<(), JournalError> {
    let mut name = journal.file_name().unwrap_or_default().to_os_string();
    name.push(".print-queue");
    let legacy = journal.with_file_name(name);
    if !legacy.exists() {
        return Ok(());
    }
    conn.execute(
        "ATTACH DATABASE ?1 AS legacy",
        [legacy.display().to_string()],
    )?;
    let copied = conn.execute(
        "INSERT INTO print_jobs(printer, receipt, copy, state, purchase, last_error)
         SELECT printer, receipt, copy, state, purchase, last_error FROM legacy.print_jobs
         WHERE state != 'done' ORDER BY id",
        [],
    );
    conn.execute("DETACH DATABASE legacy", [])?;
    copied?;
    let mut imported = legacy.clone().into_os_string();
    imported.push(".imported");
    std::fs::rename(&legacy, &imported)
        .map_err(|e| JournalError::Write(format!("cannot rename {}: {e}", legacy.display())))?;
    Ok(())
}

/// A read-only view of the print queue, for the printer threads and the API.
pub struct PrintJobs {
    conn: Connection,
}

impl PrintJobs {
    pub(super) fn open(path: &Path) -> Result<PrintJobs, JournalError> {
        Ok(PrintJobs {
            conn: super::schema::open_read_only(path)?,
        })
    }

    /// The oldest queued job of `printer`.
    pub fn next_queued(&self, printer: &str) -> Result<Option<PrintJob>, JournalError> {
        Ok(self
            .conn
            .prepare_cached(
                "SELECT id, printer, receipt, copy, state, purchase, last_error FROM print_jobs
                 WHERE printer = ?1 AND state = 'queued' ORDER BY id LIMIT 1",
            )?
            .query_row([printer], row_to_job)
            .optional()?)
    }

    /// The job with this id.
    pub fn get(&self, id: i64) -> Result<Option<PrintJob>, JournalError> {
        Ok(get(&self.conn, id)?)
    }

    /// Jobs of a printer (or all), newest last.
    pub fn list(&self, printer: Option<&str>) -> Result<Vec<PrintJob>, JournalError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT id, printer, receipt, copy, state, purchase, last_error FROM print_jobs
             WHERE ?1 IS NULL OR printer = ?1 ORDER BY id",
        )?;
        let jobs = stmt
            .query_map([printer], row_to_job)?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(jobs)
    }
}

fn get(conn: &Connection, id: i64) -> rusqlite::Result<Option<PrintJob>> {
    conn.prepare_cached(
        "SELECT id, printer, receipt, copy, state, purchase, last_error FROM print_jobs WHERE id = ?1",
    )?
    .query_row([id], row_to_job)
    .optional()
}

fn row_to_job(row: &rusqlite::Row<'_>) -> rusqlite::Result<PrintJob> {
    let state: String = row.get(4)?;
    Ok(PrintJob {
        id: row.get(0)?,
        printer: row.get(1)?,
        receipt: row.get(2)?,
        copy: row.get(3)?,
        state: JobState::parse(&state),
        purchase: row.get(5)?,
        last_error: row.get(6)?,
    })
}
