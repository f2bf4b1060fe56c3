//! The print queue: receipts waiting for a printer, in SQLite beside the journal (its own file,
//! so the journal keeps its single writer). A job moves queued → sending → done; if the link
//! drops or the printer never confirms, it stops at `unconfirmed` and is never sent again by
//! itself: the cashier confirms it printed, or reprints it, and a reprint is a new job marked
//! COPY.

use std::path::{Path, PathBuf};

use rusqlite::{params, Connection, OptionalExtension};

use super::JournalError;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    Queued,
    Sending,
    Unconfirmed,
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
    pub id: i64,
    pub printer: String,
    pub receipt: String,
    pub copy: bool,
    pub state: JobState,
    /// The purchase body (JSON), rendered at print time with the printer's layout.
    #[serde(skip)]
    pub purchase: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

pub struct PrintQueue {
    conn: Connection,
}

/// The queue's file for a journal at `journal`.
pub fn queue_path(journal: &Path) -> PathBuf {
    let mut name = journal.file_name().unwrap_or_default().to_os_string();
    name.push(".print-queue");
    journal.with_file_name(name)
}

impl PrintQueue {
    pub fn open(path: &Path) -> Result<PrintQueue, JournalError> {
        let open_err = |source| JournalError::Open {
            path: path.display().to_string(),
            source,
        };
        let conn = Connection::open(path).map_err(open_err)?;
        super::schema::configure(&conn).map_err(open_err)?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS print_jobs(
                id INTEGER PRIMARY KEY,
                printer TEXT NOT NULL,
                receipt TEXT NOT NULL,
                copy INTEGER NOT NULL,
                state TEXT NOT NULL,
                purchase TEXT NOT NULL,
                last_error TEXT
            );
            CREATE INDEX IF NOT EXISTS print_jobs_waiting ON print_jobs(printer, state, id);",
        )
        .map_err(open_err)?;
        Ok(PrintQueue { conn })
    }

    pub fn enqueue(
        &self,
        printer: &str,
        receipt: &str,
        copy: bool,
        purchase: &str,
    ) -> Result<i64, JournalError> {
        self.conn.execute(
            "INSERT INTO print_jobs(printer, receipt, copy, state, purchase) VALUES (?1, ?2, ?3, 'queued', ?4)",
            params![printer, receipt, copy, purchase],
        )?;
        Ok(self.conn.last_insert_rowid())
    }

    /// After a restart: a job that was being sent when the process died may have printed.
    pub fn interrupted_to_unconfirmed(&self, printer: &str) -> Result<usize, JournalError> {
        Ok(self.conn.execute(
            "UPDATE print_jobs SET state = 'unconfirmed', last_error = 'gateway restarted while sending'
             WHERE printer = ?1 AND state = 'sending'",
            [printer],
        )?)
    }

    pub fn next_queued(&self, printer: &str) -> Result<Option<PrintJob>, JournalError> {
        Ok(self
            .conn
            .query_row(
                "SELECT id, printer, receipt, copy, state, purchase, last_error FROM print_jobs
                 WHERE printer = ?1 AND state = 'queued' ORDER BY id LIMIT 1",
                [printer],
                row_to_job,
            )
            .optional()?)
    }

    pub fn get(&self, id: i64) -> Result<Option<PrintJob>, JournalError> {
        Ok(self
            .conn
            .query_row(
                "SELECT id, printer, receipt, copy, state, purchase, last_error FROM print_jobs WHERE id = ?1",
                [id],
                row_to_job,
            )
            .optional()?)
    }

    pub fn set_state(
        &self,
        id: i64,
        state: JobState,
        error: Option<&str>,
    ) -> Result<(), JournalError> {
        self.conn.execute(
            "UPDATE print_jobs SET state = ?2, last_error = ?3 WHERE id = ?1",
            params![id, state.as_str(), error],
        )?;
        Ok(())
    }

    /// Jobs of a printer (or all), newest last.
    pub fn list(&self, printer: Option<&str>) -> Result<Vec<PrintJob>, JournalError> {
        let mut stmt = self.conn.prepare(
            "SELECT id, printer, receipt, copy, state, purchase, last_error FROM print_jobs
             WHERE ?1 IS NULL OR printer = ?1 ORDER BY id",
        )?;
        let jobs = stmt
            .query_map([printer], row_to_job)?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(jobs)
    }
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
