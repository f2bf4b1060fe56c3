//! The writer thread: the only place that writes the journal, committing in groups.

use std::sync::Arc;
use std::time::SystemTime;

use rusqlite::{params, Connection, OptionalExtension, Transaction};
use tokio::sync::{mpsc, watch};

use super::{
    AckOutcome, AppendError, Appended, CachedProfile, Command, DiskLimits, JournalError,
    KeptChange, NewEvent, PointsBalance, Position, Retention,
};

use crate::clock::{self, Clock};
use crate::protocol::timestamp;

/// How much room the journal's filesystem has, against the thresholds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Space {
    Plenty,
    /// Below the low-space threshold: sales only.
    Low,
    /// Down to the reserve: nothing more.
    Reserve,
}

impl DiskLimits {
    fn space(&self) -> Space {
        if self.low_free_bytes == 0 && self.reserve_free_bytes == 0 {
            return Space::Plenty;
        }
        // A filesystem that cannot be measured is not refused on that account: SQLite's own
        // full-disk error still stops intake cleanly.
        let Ok(stat) = nix::sys::statvfs::statvfs(&self.dir) else {
            return Space::Plenty;
        };
        // The block counts are u32 on some 32-bit targets (an armv7 Pi OS), u64 here.
        #[allow(clippy::useless_conversion)]
        let free =
            u64::from(stat.blocks_available()).saturating_mul(u64::from(stat.fragment_size()));
        if free < self.reserve_free_bytes {
            Space::Reserve
        } else if free < self.low_free_bytes {
            Space::Low
        } else {
            Space::Plenty
        }
    }
}

/// Most requests folded into one transaction; bounds a commit's latency under a flood.
const MAX_GROUP: usize = 1024;

/// Most acked events deleted in one commit; the rest go with the next acks.
const COMPACT_BATCH: u64 = 10_000;

/// The running writer thread; `join` waits for it after every `Journal` handle is dropped.
pub struct WriterThread(std::thread::JoinHandle<()>);

impl WriterThread {
    /// Waits for the writer to commit what is queued and stop.
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
        failing: false,
        disk_full: false,
        storage_low: false,
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
    lock: super::JournalLock,
    clock: Arc<dyn Clock>,
    retention: Retention,
    disk: DiskLimits,
    commands: mpsc::Receiver<Command>,
    position: watch::Sender<Position>,
) -> Result<WriterThread, JournalError> {
    let mut writer = Writer::new(conn, clock, retention, disk, position)?;
    let handle = std::thread::Builder::new()
        .name("journal-writer".into())
        .spawn(move || {
            // The lock goes when the writer is done with the file, not before.
            let _lock = lock;
            writer.run(commands)
        })
        .map_err(JournalError::Thread)?;
    Ok(WriterThread(handle))
}

struct Writer {
    conn: Connection,
    clock: Arc<dyn Clock>,
    retention: Retention,
    disk: DiskLimits,
    position: watch::Sender<Position>,
    current: Position,
    /// The newest `at` committed so far: a clock that goes backwards is flagged unsynced.
    last_at: Option<SystemTime>,
}

/// What one command will answer once its group commits.
enum Answer {
    Append(Result<Appended, AppendError>),
    Ack(AckOutcome),
    Session(u64),
    Print(Result<i64, super::PrintRefusal>),
    Rev(u64),
    Pong,
}

impl Writer {
    fn new(
        conn: Connection,
        clock: Arc<dyn Clock>,
        retention: Retention,
        disk: DiskLimits,
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
            retention,
            disk,
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

    /// Commits the group and answers every caller in it: with its result after the commit,
    /// or with the storage error when the commit failed (a full disk is `DiskFull`, so the API
    /// says 507 and the caller may retry once space is back).
    fn commit_group(&mut self, group: &mut Vec<Command>) {
        let before = self.current;
        let before_at = self.last_at;
        let space = self.disk.space();
        if (space != Space::Plenty) != self.current.storage_low {
            match space {
                Space::Plenty => tracing::info!("journal disk space is back above the low-space threshold"),
                Space::Low => tracing::warn!("journal disk space is low: identifications refused, sales go on into the reserve"),
                Space::Reserve => tracing::error!("journal disk space is down to the reserve: intake refused (507) until space is freed"),
            }
        }
        match self.apply_group(group, space) {
            Ok(answers) => {
                self.current.failing = false;
                self.current.disk_full = space == Space::Reserve;
                self.current.storage_low = space != Space::Plenty;
                self.position.send_replace(self.current);
                if group.iter().any(erases) {
                    self.truncate_wal();
                }
                for (command, answer) in group.drain(..).zip(answers) {
                    answer_command(command, answer);
                }
            }
            Err(error) => {
                // The transaction rolled back: nothing of this group exists, so every caller
                // hears that, and the in-memory counters return to what is on disk.
                self.current = before;
                self.last_at = before_at;
                let refusal = append_error(&error);
                self.current.failing = true;
                self.current.disk_full = refusal == AppendError::DiskFull;
                self.position.send_replace(self.current);
                tracing::error!(%error, "journal commit failed; {} requests refused", group.len());
                for command in group.drain(..) {
                    refuse_command(command, &refusal, &error);
                }
            }
        }
    }

    /// After an erasure the old pages still sit in the WAL until a checkpoint copies the
    /// zeroed ones over them; TRUNCATE then empties the file, so the customer's identifiers
    /// are nowhere on disk. Readers finish within the busy timeout.
    fn truncate_wal(&mut self) {
        let outcome: rusqlite::Result<(i64, i64, i64)> =
            self.conn
                .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?))
                });
        match outcome {
            Ok((0, _, _)) => {}
            Ok((_, log, done)) => tracing::warn!(
                log,
                done,
                "WAL not truncated after an erasure (readers busy); the next checkpoint will"
            ),
            Err(error) => tracing::warn!(%error, "WAL checkpoint after an erasure failed"),
        }
    }

    fn apply_group(&mut self, group: &[Command], space: Space) -> rusqlite::Result<Vec<Answer>> {
        let tx = self.conn.transaction()?;
        let mut answers = Vec::with_capacity(group.len());
        let mut current = self.current;
        let mut last_at = self.last_at;
        // The kernel's sync state is a syscall; it cannot meaningfully change within one group.
        let synchronised = self.clock.synchronised();
        for command in group {
            let answer = match command {
                Command::Append { event, .. } if space == Space::Reserve => {
                    Answer::Append(Err(AppendError::DiskFull))
                }
                Command::Append { event, .. }
                    if space == Space::Low
                        && event.kind == crate::protocol::EventKind::IdentitySeen =>
                {
                    Answer::Append(Err(AppendError::StorageLow))
                }
                Command::Append { event, .. } => Answer::Append(append(
                    &tx,
                    &*self.clock,
                    synchronised,
                    &mut current,
                    &mut last_at,
                    event,
                )?),
                Command::Ack { upto, .. } => Answer::Ack(record_ack(&tx, &mut current, *upto)?),
                Command::NextSession { .. } => {
                    tx.execute(
                        "UPDATE counters SET value = value + 1 WHERE name = 'session'",
                        [],
                    )?;
                    Answer::Session(counter(&tx, "session")?)
                }
                Command::Print { command, .. } => {
                    Answer::Print(super::print_queue::apply(&tx, command)?)
                }
                Command::IdentityChange { changes, .. } => {
                    for change in changes {
                        record_identity_change(&tx, change)?;
                    }
                    Answer::Rev(counter(&tx, "identity_rev")?)
                }
                Command::Ping { .. } => Answer::Pong,
                Command::RecordLayer {
                    layer,
                    version,
                    signed,
                    ..
                } => {
                    tx.prepare_cached(
                        "INSERT INTO config_layers(layer, version, signed, applied_at)
                         VALUES (?1, ?2, ?3, ?4)
                         ON CONFLICT(layer) DO UPDATE SET version = excluded.version,
                            signed = excluded.signed, applied_at = excluded.applied_at",
                    )?
                    .execute(params![
                        layer,
                        *version as i64,
                        signed,
                        timestamp(self.clock.now())
                    ])?;
                    Answer::Pong
                }
                Command::CacheProfile { view, .. } => {
                    // A look-up is central's state now: as new as the newest change seen, and
                    // it holds every purchase central has acked.
                    let rev = counter(&tx, "identity_rev_max")?;
                    let view = CachedProfile {
                        rev,
                        ..view.clone()
                    };
                    cache_profile(&tx, &view, true)?;
                    Answer::Rev(counter(&tx, "identity_rev")?)
                }
            };
            answers.push(answer);
        }
        // Once per group, after every ack in it: several acks in one group compact once.
        if current.acked_upto > self.current.acked_upto {
            compact(&tx, current.acked_upto, self.retention)?;
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

/// Sends a committed group's answer. A caller that gave up (HTTP client gone) does not undo
/// the commit; its closed channel is ignored.
fn answer_command(command: Command, answer: Answer) {
    match (command, answer) {
        (Command::Append { reply, .. }, Answer::Append(result)) => {
            let _ = reply.send(result);
        }
        (Command::Ack { reply, .. }, Answer::Ack(outcome)) => {
            let _ = reply.send(Ok(outcome));
        }
        (Command::NextSession { reply }, Answer::Session(session)) => {
            let _ = reply.send(Ok(session));
        }
        (Command::Print { reply, .. }, Answer::Print(result)) => {
            let _ = reply.send(result);
        }
        (Command::Ping { reply }, Answer::Pong)
        | (Command::RecordLayer { reply, .. }, Answer::Pong) => {
            let _ = reply.send(Ok(()));
        }
        (Command::IdentityChange { reply, .. }, Answer::Rev(rev))
        | (Command::CacheProfile { reply, .. }, Answer::Rev(rev)) => {
            let _ = reply.send(Ok(rev));
        }
        (command, _) => refuse_command(
            command,
            &AppendError::Storage("journal writer answered out of order".into()),
            &rusqlite::Error::InvalidQuery,
        ),
    }
}

fn refuse_command(command: Command, refusal: &AppendError, error: &rusqlite::Error) {
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
        Command::Print { reply, .. } => {
            let _ = reply.send(Err(super::PrintRefusal::Storage(error.to_string())));
        }
        Command::IdentityChange { reply, .. } | Command::CacheProfile { reply, .. } => {
            let _ = reply.send(Err(error.to_string()));
        }
        Command::Ping { reply } | Command::RecordLayer { reply, .. } => {
            let _ = reply.send(Err(error.to_string()));
        }
    }
}

fn erases(command: &Command) -> bool {
    matches!(command, Command::IdentityChange { changes, .. } if changes.iter().any(|c| !c.erased.is_empty()))
}

/// Merges, profile views and erasures of one identity change, in that order: a view in the
/// same change as the profile's erasure caches nothing.
fn record_identity_change(tx: &Transaction<'_>, change: &KeptChange) -> rusqlite::Result<()> {
    for (from, to) in &change.merges {
        tx.prepare_cached("INSERT OR IGNORE INTO aliases(from_ref, to_ref) VALUES (?1, ?2)")?
            .execute([from, to])?;
    }
    for members in &change.erased {
        for member in members {
            tx.prepare_cached("INSERT OR IGNORE INTO erased(ref) VALUES (?1)")?
                .execute([member])?;
        }
    }
    tx.execute(
        "UPDATE counters SET value = MAX(value, ?1) WHERE name = 'identity_rev_max'",
        [change.rev as i64],
    )?;
    for view in &change.views {
        cache_profile(tx, view, false)?;
    }
    for member in change.erased.iter().flatten() {
        tx.prepare_cached("DELETE FROM identity_refs WHERE profile = ?1")?
            .execute([member])?;
        tx.prepare_cached("DELETE FROM profile_views WHERE ref = ?1")?
            .execute([member])?;
        // The event stays (its seq, its ref, whether central has it); only the pseudonymous
        // ref is left in it.
        tx.prepare_cached(
            "UPDATE events SET body = json_set(body, '$.identifiers', json('[]'))
             WHERE kind = 'identity_seen' AND json_extract(body, '$.customer') = ?1",
        )?
        .execute([member])?;
    }
    tx.execute(
        "UPDATE counters SET value = MAX(value, ?1) WHERE name = 'identity_rev'",
        [change.complete_upto as i64],
    )?;
    Ok(())
}

/// Central's points for a profile (newer views win) and its identifiers, unless the profile
/// was erased. The pending points the view holds go: those acked before it was made (or, for
/// a look-up, `current`, every acked one).
fn cache_profile(
    tx: &Transaction<'_>,
    view: &CachedProfile,
    current: bool,
) -> rusqlite::Result<()> {
    let erased: bool = tx
        .prepare_cached("SELECT EXISTS(SELECT 1 FROM erased WHERE ref = ?1)")?
        .query_row([&view.profile], |r| r.get(0))?;
    if erased {
        return Ok(());
    }
    tx.prepare_cached(
        "INSERT INTO profile_views(ref, points, rev) VALUES (?1, ?2, ?3)
         ON CONFLICT(ref) DO UPDATE SET points = excluded.points, rev = excluded.rev
         WHERE excluded.rev >= profile_views.rev",
    )?
    .execute(params![view.profile, view.points, view.rev as i64])?;
    for hash in &view.hashes {
        tx.prepare_cached("INSERT OR IGNORE INTO identity_refs(hash, profile) VALUES (?1, ?2)")?
            .execute([hash, &view.profile])?;
    }
    let held_before = if current { i64::MAX } else { view.rev as i64 };
    for member in view.members.iter().chain([&view.profile]) {
        tx.prepare_cached(
            "DELETE FROM points_pending WHERE customer = ?1 AND covered_after_rev < ?2",
        )?
        .execute(params![member, held_before])?;
    }
    Ok(())
}

/// One append inside the group's transaction. `Ok(Err(_))` is a refusal that wrote nothing;
/// `Err(_)` is a storage failure that fails the whole group.
fn append(
    tx: &Transaction<'_>,
    clock: &dyn Clock,
    synchronised: bool,
    current: &mut Position,
    last_at: &mut Option<SystemTime>,
    event: &NewEvent,
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
    let Some(seq) = current
        .last_seq
        .checked_add(1)
        .filter(|s| crate::protocol::is_valid_seq(*s))
    else {
        return Ok(Err(AppendError::SeqExhausted));
    };
    // Every refusal is decided before the first write: the group's transaction commits, so a
    // refused append must have left nothing in it.
    if let Some(points) = &event.points {
        if let Err(refusal) = check_points(tx, points)? {
            return Ok(Err(refusal));
        }
    }
    if let Some(coupon) = &event.coupon {
        let used: i64 = tx
            .prepare_cached("SELECT COUNT(*) FROM coupon_redemptions WHERE coupon = ?1")?
            .query_row([&coupon.coupon], |r| r.get(0))?;
        if used.max(0) as u64 >= coupon.uses {
            return Ok(Err(AppendError::AlreadyRedeemed(coupon.coupon.clone())));
        }
    }
    let id = ulid::Ulid::from_datetime(now.max(std::time::UNIX_EPOCH)).to_string();
    if let Some(receipt) = &event.receipt {
        // The receipts table's key is the check: a failed INSERT statement writes nothing, so
        // the common case costs one index probe instead of a lookup plus an insert.
        let inserted = tx
            .prepare_cached("INSERT INTO receipts(receipt, seq, id) VALUES (?1, ?2, ?3)")?
            .execute(params![receipt, seq as i64, id]);
        if let Err(error) = inserted {
            if error.sqlite_error_code() != Some(rusqlite::ErrorCode::ConstraintViolation) {
                return Err(error);
            }
            let (held_seq, held_id): (i64, String) = tx
                .prepare_cached("SELECT seq, id FROM receipts WHERE receipt = ?1")?
                .query_row([receipt], |r| Ok((r.get(0)?, r.get(1)?)))?;
            return Ok(Err(AppendError::DuplicateReceipt {
                receipt: receipt.clone(),
                seq: held_seq as u64,
                id: held_id,
            }));
        }
    }
    tx.prepare_cached(
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
    ])?;
    if let Some(idem) = &event.idempotency {
        tx.prepare_cached(
            "INSERT INTO idempotency(key, fingerprint, seq, id) VALUES (?1, ?2, ?3, ?4)",
        )?
        .execute(params![idem.key, &idem.fingerprint[..], seq as i64, id])?;
    }
    if let (Some(printer), Some(receipt)) = (&event.print_on, &event.receipt) {
        super::print_queue::enqueue(tx, printer, receipt, false, &event.body)?;
    }
    for identity in &event.identity_refs {
        // The first ref an identifier was recorded under stays its ref; merges from central
        // are aliases on top, not rewrites of this table.
        tx.prepare_cached("INSERT OR IGNORE INTO identity_refs(hash, profile) VALUES (?1, ?2)")?
            .execute(params![identity.hash, identity.profile])?;
    }
    if let Some(coupon) = &event.coupon {
        tx.prepare_cached(
            "INSERT INTO coupon_redemptions(coupon, receipt, seq, mode, discount_minor, at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )?
        .execute(params![
            coupon.coupon,
            coupon.receipt,
            seq as i64,
            coupon.mode,
            coupon.discount_minor,
            timestamp(now)
        ])?;
    }
    if let Some(points) = event
        .points
        .as_ref()
        .filter(|p| p.earned != 0 || p.redeemed != 0)
    {
        tx.prepare_cached(
            "INSERT INTO points_pending(seq, customer, earned, redeemed) VALUES (?1, ?2, ?3, ?4)",
        )?
        .execute(params![
            seq as i64,
            points.customer,
            points.earned,
            points.redeemed
        ])?;
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

/// A redemption within the balance and, offline, within the cap; checked in the writer so
/// concurrent tills see each other's spending.
fn check_points(
    tx: &Transaction<'_>,
    points: &super::PointsUse,
) -> rusqlite::Result<Result<(), AppendError>> {
    if points.redeemed <= 0 {
        return Ok(Ok(()));
    }
    let balance = points_balance(tx, &points.members)?;
    if points.redeemed > balance.total() {
        return Ok(Err(AppendError::InsufficientPoints {
            balance: balance.total(),
            asked: points.redeemed,
        }));
    }
    if let Some(cap) = points.offline_cap {
        if balance.unacked_redeemed.saturating_add(points.redeemed) > cap {
            return Ok(Err(AppendError::OfflinePointsCap {
                cap,
                spent: balance.unacked_redeemed,
                asked: points.redeemed,
            }));
        }
    }
    Ok(Ok(()))
}

/// The balance of the profile whose refs are `members` (the root first).
pub(crate) fn points_balance(
    conn: &Connection,
    members: &[String],
) -> rusqlite::Result<PointsBalance> {
    let mut balance = PointsBalance::default();
    let Some(root) = members.first() else {
        return Ok(balance);
    };
    balance.central = conn
        .prepare_cached("SELECT points FROM profile_views WHERE ref = ?1")?
        .query_row([root], |r| r.get(0))
        .optional()?
        .unwrap_or(0);
    for member in members {
        let (earned, redeemed, unacked): (i64, i64, i64) = conn
            .prepare_cached(
                "SELECT COALESCE(SUM(earned), 0), COALESCE(SUM(redeemed), 0),
                    COALESCE(SUM(CASE WHEN covered_after_rev IS NULL THEN redeemed END), 0)
                 FROM points_pending WHERE customer = ?1",
            )?
            .query_row(params![member], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
        balance.pending_earned = balance.pending_earned.saturating_add(earned);
        balance.pending_redeemed = balance.pending_redeemed.saturating_add(redeemed);
        balance.unacked_redeemed = balance.unacked_redeemed.saturating_add(unacked);
    }
    Ok(balance)
}

fn record_ack(
    tx: &Transaction<'_>,
    current: &mut Position,
    upto: u64,
) -> rusqlite::Result<AckOutcome> {
    if upto > current.last_seq {
        return Ok(AckOutcome::BeyondJournal);
    }
    if upto <= current.acked_upto {
        return Ok(AckOutcome::Stale);
    }
    current.acked_upto = upto;
    tx.execute(
        "UPDATE counters SET value = ?1 WHERE name = 'acked_upto'",
        [upto as i64],
    )?;
    // Central has applied these purchases; a view made after now holds their points.
    tx.prepare_cached(
        "UPDATE points_pending SET covered_after_rev =
            (SELECT value FROM counters WHERE name = 'identity_rev_max')
         WHERE seq <= ?1 AND covered_after_rev IS NULL",
    )?
    .execute([upto as i64])?;
    Ok(AckOutcome::Advanced)
}

/// Deletes acked events older than the newest `keep_acked` acked ones, and idempotency keys
/// and receipts older than the newest `keep_keys` acked events: a retry is recognised long
/// after its event is gone. Never touches an unacked event.
fn compact(tx: &Transaction<'_>, acked_upto: u64, retention: Retention) -> rusqlite::Result<()> {
    compact_table(
        tx,
        "events",
        acked_upto.saturating_sub(retention.keep_acked),
    )?;
    let keys_cutoff = acked_upto.saturating_sub(retention.keep_keys);
    compact_table(tx, "idempotency", keys_cutoff)?;
    compact_table(tx, "receipts", keys_cutoff)?;
    Ok(())
}

/// Deletes rows with `seq <= cutoff` from `table`, at most `COMPACT_BATCH` seqs' worth per
/// call so a compaction never stretches a commit; the rest go with the next acks.
fn compact_table(tx: &Transaction<'_>, table: &str, cutoff: u64) -> rusqlite::Result<()> {
    if cutoff == 0 {
        return Ok(());
    }
    let oldest: Option<i64> =
        tx.query_row(&format!("SELECT MIN(seq) FROM {table}"), [], |r| r.get(0))?;
    let Some(oldest) = oldest.map(|o| o.max(0) as u64) else {
        return Ok(());
    };
    if cutoff < oldest {
        return Ok(());
    }
    let upto = cutoff.min(oldest + COMPACT_BATCH - 1) as i64;
    tx.prepare_cached(&format!("DELETE FROM {table} WHERE seq <= ?1"))?
        .execute([upto])?;
    Ok(())
}

fn append_error(error: &rusqlite::Error) -> AppendError {
    match error.sqlite_error_code() {
        Some(rusqlite::ErrorCode::DiskFull) => AppendError::DiskFull,
        _ => AppendError::Storage(error.to_string()),
    }
}
