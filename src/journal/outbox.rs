//! The outbox: events above `acked_upto`, read in seq order on a connection of their own.

use std::path::Path;

use rusqlite::{Connection, OpenFlags};
use serde_json::value::RawValue;

use super::{IdentityRef, JournalError, Position};
use crate::protocol::WireEvent;

/// A read-only view of the journal for the sync pump.
pub struct Outbox {
    conn: Connection,
}

/// The outbox for async callers: every read runs on the blocking pool, so a slow SD card
/// never stalls the runtime that serves the tills.
#[derive(Clone)]
pub struct AsyncOutbox(std::sync::Arc<std::sync::Mutex<Outbox>>);

impl AsyncOutbox {
    /// Wraps a read view for async callers.
    pub fn new(outbox: Outbox) -> AsyncOutbox {
        AsyncOutbox(std::sync::Arc::new(std::sync::Mutex::new(outbox)))
    }

    /// `Outbox::read_after`, off the runtime.
    pub async fn read_after(
        &self,
        after: u64,
        max_events: usize,
        max_bytes: usize,
    ) -> Result<Vec<WireEvent>, JournalError> {
        let outbox = self.0.clone();
        tokio::task::spawn_blocking(move || {
            outbox
                .lock()
                .map_err(|_| JournalError::Write("outbox lock poisoned".into()))?
                .read_after(after, max_events, max_bytes)
        })
        .await
        .map_err(|e| JournalError::Write(format!("outbox read task failed: {e}")))?
    }
}

impl Outbox {
    pub(super) fn open(path: &Path) -> Result<Outbox, JournalError> {
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|source| JournalError::Open {
            path: path.display().to_string(),
            source,
        })?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        Ok(Outbox { conn })
    }

    /// Events with `seq > after`, in seq order, at most `max_events` and about `max_bytes` of
    /// JSON (always at least one event, so a single large event still goes out).
    pub fn read_after(
        &self,
        after: u64,
        max_events: usize,
        max_bytes: usize,
    ) -> Result<Vec<WireEvent>, JournalError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT seq, id, kind, at, clock_synced, till, body FROM events
             WHERE seq > ?1 ORDER BY seq LIMIT ?2",
        )?;
        let mut rows = stmt.query(rusqlite::params![after as i64, max_events as i64])?;
        let mut events = Vec::new();
        let mut bytes = 0usize;
        while let Some(row) = rows.next()? {
            let body: String = row.get(6)?;
            let approx = body.len() + 160;
            if !events.is_empty() && bytes + approx > max_bytes {
                break;
            }
            let body = RawValue::from_string(body)
                .map_err(|e| JournalError::Write(format!("journal event body is not JSON: {e}")))?;
            let seq: i64 = row.get(0)?;
            events.push(WireEvent {
                seq: seq as u64,
                id: row.get(1)?,
                kind: row.get(2)?,
                at: row.get(3)?,
                clock_synced: row.get(4)?,
                till: row.get(5)?,
                body,
            });
            bytes += approx;
        }
        Ok(events)
    }

    /// The `identity_refs` table.
    pub fn identity_refs(&self) -> Result<Vec<IdentityRef>, JournalError> {
        let mut stmt = self
            .conn
            .prepare("SELECT hash, profile FROM identity_refs")?;
        let refs = stmt
            .query_map([], |row| {
                Ok(IdentityRef {
                    hash: row.get(0)?,
                    profile: row.get(1)?,
                })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(refs)
    }

    /// The committed and acked positions as on disk.
    pub fn position(&self) -> Result<Position, JournalError> {
        super::writer::read_position(&self.conn)
    }
}
