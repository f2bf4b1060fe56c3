//! The writer thread: the only place that writes the journal, committing in groups.

use std::sync::Arc;
use std::time::SystemTime;

use rusqlite::{params, Connection, OptionalExtension, Transaction};
use tokio::sync::{mpsc, watch};

use super::{AckOutcome, AppendError, Appended, Command, JournalError, NewEvent, Position};
use crate::clock::{self, Clock};
use crate::protocol::timestamp;

/// Most requests folded into one transaction; bounds a commit's latency under a flood.
const MAX_GROUP: usize = 1024;

/// Most acked events deleted in one commit; the rest go with the next acks.
const COMPACT_BATCH: u64 = 10_000;

/// The running writer thread; `join` waits for it after every `Journal` handle is dropped.
pub struct WriterThread(std::thread::JoinHandle<()>);

impl WriterThread {
    pub fn join(self) {
        if self.0.join().is_err() {
            tracing::error!("journal writer thread panicked");
        }
    }
}

pub(super) fn read_position(conn: &Connection) -> Result<Position, JournalError> {
    Ok(Position {
        last_seq: counter(conn, "last_seq")?,
        acked_upto: counter(conn, "acked_upto")?,
        commits: 0,
    })
}

fn counter(conn: &Connection, name: &str) -> rusqlite::Result<u64> {
    let value: i64 = conn.query_row("SELECT value FROM counters WHERE name = ?1", [name], |r| {
        r.get(0)
    })?;
    Ok(value.max(0) as u64)
}

pub(super) fn spawn(
    conn: Connection,
    clock: Arc<dyn Clock>,
    keep_acked: u64,
    commands: mpsc::Receiver<Command>,
    position: watch::Sender<Position>,
) -> Result<WriterThread, JournalError> {
    let mut writer = Writer::new(conn, clock, keep_acked, position)?;
    let handle = std::thread::Builder::new()
        .name("journal-writer".into())
        .spawn(move || writer.run(commands))
        .map_err(JournalError::Thread)?;
    Ok(WriterThread(handle))
}

struct Writer {
    conn: Connection,
    clock: Arc<dyn Clock>,
    keep_acked: u64,
    position: watch::Sender<Position>,
    current: Position,
    /// The newest `at` committed so far: a clock that goes backwards is flagged unsynced.
    last_at: Option<SystemTime>,
}

/// What one command will answer once its group commits.
enum Pending {
    Append(
        tokio::sync::oneshot::Sender<Result<Appended, AppendError>>,
        Result<Appended, AppendError>,
    ),
    Ack(
        tokio::sync::oneshot::Sender<Result<AckOutcome, String>>,
        Result<AckOutcome, String>,
    ),
    Session(
        tokio::sync::oneshot::Sender<Result<u64, String>>,
        Result<u64, String>,
    ),
}

impl Writer {
    fn new(
        conn: Connection,
        clock: Arc<dyn Clock>,
        keep_acked: u64,
        position: watch::Sender<Position>,
    ) -> Result<Writer, JournalError> {
        let current = read_position(&conn)?;
        let last_at: Option<String> = conn
            .query_row("SELECT at FROM events ORDER BY seq DESC LIMIT 1", [], |r| {
                r.get(0)
            })
            .optional()?;
        let last_at = last_at.and_then(|s| humantime::parse_rfc3339(&s).ok());
        Ok(Writer {
            conn,
            clock,
            keep_acked,
            position,
            current,
            last_at,
        })
    }

    fn run(&mut self, mut commands: mpsc::Receiver<Command>) {
        let mut group = Vec::with_capacity(MAX_GROUP);
        while let Some(first) = commands.blocking_recv() {
            group.push(first);
            while group.len() < MAX_GROUP {
                match commands.try_recv() {
                    Ok(next) => group.push(next),
                    Err(_) => break,
                }
            }
            self.commit_group(&mut group);
        }
    }

    fn commit_group(&mut self, group: &mut Vec<Command>) {
        let before = self.current;
        let before_at = self.last_at;
        let outcome = self.apply_group(group);
        match outcome {
            Ok(answers) => {
                self.position.send_replace(self.current);
                for answer in answers {
                    answer.send();
                }
            }
            Err(error) => {
                // The transaction rolled back: nothing of this group exists, so every caller
                // hears that, and the in-memory counters return to what is on disk.
                self.current = before;
                self.last_at = before_at;
                let refusal = append_error(&error);
                tracing::error!(%error, "journal commit failed; {} requests refused", group.len());
                for command in group.drain(..) {
                    match command {
                        Command::Append { reply, .. } => {
                            let _ = reply.send(Err(refusal.clone()));
                        }
                        Command::Ack { reply, .. } => {
                            let _ = reply.send(Err(error.to_string()));
                        }
                        Command::NextSession { reply } => {
                            let _ = reply.send(Err(error.to_string()));
                        }
                    }
                }
            }
        }
        group.clear();
    }

    fn apply_group(&mut self, group: &mut Vec<Command>) -> rusqlite::Result<Vec<Pending>> {
        let tx = self.conn.transaction()?;
        let mut answers = Vec::with_capacity(group.len());
        let mut current = self.current;
        let mut last_at = self.last_at;
        // The kernel's sync state is a syscall; it cannot meaningfully change within one group.
        let synchronised = self.clock.synchronised();
        for command in group.drain(..) {
            match command {
                Command::Append { event, reply } => {
                    let result = append(
                        &tx,
                        &*self.clock,
                        synchronised,
                        &mut current,
                        &mut last_at,
                        event,
                    )?;
                    answers.push(Pending::Append(reply, result));
                }
                Command::Ack { upto, reply } => {
                    let result = record_ack(&tx, &mut current, upto)?;
                    answers.push(Pending::Ack(reply, Ok(result)));
                }
                Command::NextSession { reply } => {
                    tx.execute(
                        "UPDATE counters SET value = value + 1 WHERE name = 'session'",
                        [],
                    )?;
                    let session = counter(&tx, "session")?;
                    answers.push(Pending::Session(reply, Ok(session)));
                }
            }
        }
        // Once per group, after every ack in it: several acks in one group compact once.
        if current.acked_upto > self.current.acked_upto {
            compact(&tx, current.acked_upto, self.keep_acked)?;
        }
        tx.execute(
            "UPDATE counters SET value = ?1 WHERE name = 'last_seq'",
            [current.last_seq as i64],
        )?;
        tx.commit()?;
        current.commits += 1;
        self.current = current;
        self.last_at = last_at;
        Ok(answers)
    }
}

impl Pending {
    fn send(self) {
        // A caller that gave up (HTTP client gone) does not undo the commit; ignore it.
        match self {
            Pending::Append(reply, result) => {
                let _ = reply.send(result);
            }
            Pending::Ack(reply, result) => {
                let _ = reply.send(result);
            }
            Pending::Session(reply, result) => {
                let _ = reply.send(result);
            }
        }
    }
}

/// One append inside the group's transaction. `Ok(Err(_))` is a refusal that wrote nothing;
/// `Err(_)` is a storage failure that fails the whole group.
fn append(
    tx: &Transaction<'_>,
    clock: &dyn Clock,
    synchronised: bool,
    current: &mut Position,
    last_at: &mut Option<SystemTime>,
    event: NewEvent,
) -> rusqlite::Result<Result<Appended, AppendError>> {
    if let Some(idem) = &event.idempotency {
        let existing: Option<(Vec<u8>, i64, String)> = tx
            .prepare_cached("SELECT fingerprint, seq, id FROM idempotency WHERE key = ?1")?
            .query_row([&idem.key], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .optional()?;
        if let Some((fingerprint, seq, id)) = existing {
            if fingerprint == idem.fingerprint {
                return Ok(Ok(Appended {
                    seq: seq as u64,
                    id,
                    replayed: true,
                }));
            }
            return Ok(Err(AppendError::IdempotencyMismatch(idem.key.clone())));
        }
    }
    let now = clock.now();
    let went_backwards = last_at.is_some_and(|last| now < last);
    let clock_synced = synchronised && clock::plausible(now) && !went_backwards;
    let seq = current.last_seq + 1;
    let id = ulid::Ulid::from_datetime(now.max(std::time::UNIX_EPOCH)).to_string();
    let inserted = tx
        .prepare_cached(
            "INSERT INTO events(seq, id, kind, at, clock_synced, till, receipt, body)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        )?
        .execute(params![
            seq as i64,
            id,
            event.kind.as_str(),
            timestamp(now),
            clock_synced,
            event.till,
            event.receipt,
            event.body
        ]);
    // The unique receipt index is the check: a failed INSERT statement writes nothing, so the
    // common case costs one index probe instead of a lookup plus an insert.
    if let (Err(error), Some(receipt)) = (&inserted, &event.receipt) {
        if error.sqlite_error_code() == Some(rusqlite::ErrorCode::ConstraintViolation) {
            let (held_seq, held_id): (i64, String) = tx
                .prepare_cached("SELECT seq, id FROM events WHERE receipt = ?1")?
                .query_row([receipt], |r| Ok((r.get(0)?, r.get(1)?)))?;
            return Ok(Err(AppendError::DuplicateReceipt {
                receipt: receipt.clone(),
                seq: held_seq as u64,
                id: held_id,
            }));
        }
    }
    inserted?;
    if let Some(idem) = &event.idempotency {
        tx.prepare_cached(
            "INSERT INTO idempotency(key, fingerprint, seq, id) VALUES (?1, ?2, ?3, ?4)",
        )?
        .execute(params![idem.key, &idem.fingerprint[..], seq as i64, id])?;
    }
    for identity in &event.identity_refs {
        // The first ref an identifier was recorded under stays its ref; merges from central
        // are aliases on top, not rewrites of this table.
        tx.prepare_cached("INSERT OR IGNORE INTO identity_refs(hash, profile) VALUES (?1, ?2)")?
            .execute(params![identity.hash, identity.profile])?;
    }
    current.last_seq = seq;
    if !went_backwards {
        *last_at = Some(now);
    }
    Ok(Ok(Appended {
        seq,
        id,
        replayed: false,
    }))
}

fn record_ack(
    tx: &Transaction<'_>,
    current: &mut Position,
    upto: u64,
) -> rusqlite::Result<AckOutcome> {
    if upto <= current.acked_upto {
        return Ok(AckOutcome::Stale);
    }
    let mut outcome = AckOutcome::Advanced;
    if upto > current.last_seq {
        current.last_seq = upto;
        outcome = AckOutcome::AheadOfJournal;
    }
    current.acked_upto = upto;
    tx.execute(
        "UPDATE counters SET value = ?1 WHERE name = 'acked_upto'",
        [upto as i64],
    )?;
    Ok(outcome)
}

/// Deletes acked events older than the newest `keep_acked` acked ones, and their
/// idempotency keys. Never touches an unacked event.
fn compact(tx: &Transaction<'_>, acked_upto: u64, keep_acked: u64) -> rusqlite::Result<()> {
    let cutoff = acked_upto.saturating_sub(keep_acked);
    if cutoff == 0 {
        return Ok(());
    }
    let oldest: Option<i64> = tx.query_row("SELECT MIN(seq) FROM events", [], |r| r.get(0))?;
    let Some(oldest) = oldest.map(|o| o.max(0) as u64) else {
        return Ok(());
    };
    if cutoff < oldest {
        return Ok(());
    }
    let upto = cutoff.min(oldest + COMPACT_BATCH - 1) as i64;
    tx.prepare_cached("DELETE FROM events WHERE seq <= ?1")?
        .execute([upto])?;
    tx.prepare_cached("DELETE FROM idempotency WHERE seq <= ?1")?
        .execute([upto])?;
    Ok(())
}

fn append_error(error: &rusqlite::Error) -> AppendError {
    match error.sqlite_error_code() {
        Some(rusqlite::ErrorCode::DiskFull) => AppendError::DiskFull,
        _ => AppendError::Storage(error.to_string()),
    }
}
