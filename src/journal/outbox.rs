//! The outbox: events above `acked_upto`, read in seq order on a connection of their own.

use std::path::Path;

use rusqlite::{Connection, OptionalExtension};
use serde_json::value::RawValue;

use super::{IdentityRef, JournalError, PointsBalance, Position};
use crate::protocol::WireEvent;

/// A coupon redemption already recorded at this box.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Redemption {
    /// `online` or `offline`.
    pub mode: String,
    /// The discount granted.
    pub discount_minor: i64,
}

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
        self.read(move |outbox| outbox.read_after(after, max_events, max_bytes))
            .await
    }

    /// Any read of the view, on the blocking pool, over this one connection.
    pub async fn read<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Outbox) -> Result<T, JournalError> + Send + 'static,
    ) -> Result<T, JournalError> {
        let outbox = self.0.clone();
        tokio::task::spawn_blocking(move || {
            work(
                &*outbox
                    .lock()
                    .map_err(|_| JournalError::Write("outbox lock poisoned".into()))?,
            )
        })
        .await
        .map_err(|e| JournalError::Write(format!("outbox read task failed: {e}")))?
    }
}

impl Outbox {
    /// A read-only view of the journal at `path` (a running daemon's too: WAL lets it read
    /// beside the writer); for tools such as `storegate config show`.
    pub fn open(path: &Path) -> Result<Outbox, JournalError> {
        Ok(Outbox {
            conn: super::schema::open_read_only(path)?,
        })
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

    /// This box's earlier redemption of `coupon` for `receipt`, if any (a retried request).
    pub fn redemption(
        &self,
        coupon: &str,
        receipt: &str,
    ) -> Result<Option<Redemption>, JournalError> {
        Ok(self
            .conn
            .prepare_cached(
                "SELECT mode, discount_minor FROM coupon_redemptions WHERE coupon = ?1 AND receipt = ?2",
            )?
            .query_row([coupon, receipt], |r| {
                Ok(Redemption {
                    mode: r.get(0)?,
                    discount_minor: r.get(1)?,
                })
            })
            .optional()?)
    }

    /// Times `coupon` was redeemed at this box.
    pub fn redemptions_of(&self, coupon: &str) -> Result<u64, JournalError> {
        let n: i64 = self
            .conn
            .prepare_cached("SELECT COUNT(*) FROM coupon_redemptions WHERE coupon = ?1")?
            .query_row([coupon], |r| r.get(0))?;
        Ok(n.max(0) as u64)
    }

    /// The offline discounts granted at or after `since` (an RFC 3339 stamp).
    pub fn offline_discounts_since(&self, since: &str) -> Result<i64, JournalError> {
        Ok(self
            .conn
            .prepare_cached(
                "SELECT COALESCE(SUM(discount_minor), 0) FROM coupon_redemptions WHERE mode = 'offline' AND at >= ?1",
            )?
            .query_row([since], |r| r.get(0))?)
    }

    /// Every merge this box applied, and the rev up to which it has every identity change.
    pub fn aliases(&self) -> Result<(Vec<(String, String)>, u64), JournalError> {
        let merges = self
            .conn
            .prepare_cached("SELECT from_ref, to_ref FROM aliases")?
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<Result<Vec<_>, _>>()?;
        let rev: i64 = self.conn.query_row(
            "SELECT value FROM counters WHERE name = 'identity_rev'",
            [],
            |r| r.get(0),
        )?;
        Ok((merges, rev.max(0) as u64))
    }

    /// Whether this box has seen `profile`: an identification recorded under it, or a merge
    /// that names it.
    pub fn knows_profile(&self, profile: &str) -> Result<bool, JournalError> {
        Ok(self
            .conn
            .prepare_cached(
                "SELECT EXISTS(SELECT 1 FROM identity_refs WHERE profile = ?1)
                 OR EXISTS(SELECT 1 FROM aliases WHERE from_ref = ?1 OR to_ref = ?1)",
            )?
            .query_row([profile], |r| r.get(0))?)
    }

    /// The profile ref each hash is recorded under here, if any.
    pub fn profiles_of(&self, hashes: &[String]) -> Result<Vec<Option<String>>, JournalError> {
        let mut statement = self
            .conn
            .prepare_cached("SELECT profile FROM identity_refs WHERE hash = ?1")?;
        let mut found = Vec::with_capacity(hashes.len());
        for hash in hashes {
            found.push(statement.query_row([hash], |r| r.get(0)).optional()?);
        }
        Ok(found)
    }

    /// The points of the profile whose refs are `members` (the root first): central's view
    /// plus what this box earned and spent that the view does not hold yet.
    pub fn points(&self, members: &[String]) -> Result<PointsBalance, JournalError> {
        Ok(super::writer::points_balance(&self.conn, members)?)
    }

    /// The accepted config layers: (layer, version, the signed message as received).
    pub fn config_layers(&self) -> Result<Vec<(String, u64, String)>, JournalError> {
        Ok(self
            .conn
            .prepare_cached("SELECT layer, version, signed FROM config_layers")?
            .query_map([], |r| {
                Ok((r.get(0)?, r.get::<_, i64>(1)?.max(0) as u64, r.get(2)?))
            })?
            .collect::<Result<Vec<_>, _>>()?)
    }

    /// The committed and acked positions as on disk.
    pub fn position(&self) -> Result<Position, JournalError> {
        super::writer::read_position(&self.conn)
    }
}
