//! The journal: one SQLite file that is the single source of truth of everything a till did.
//!
//! # Invariants
//! - An event exists once its transaction committed with `synchronous=FULL` in WAL mode; only
//!   then is its caller answered. A crash at any instant loses no answered event.
//! - `seq` is assigned inside the committing transaction from the `last_seq` counter, so it is
//!   gap-free, strictly increasing from 1 and never reused, even after acked events are deleted.
//! - One process per journal: `<journal>.lock` is held (flock) by the writer for as long as it
//!   runs, and a second opener is refused naming the holder's pid.
//! - Only the writer thread writes. Many callers' appends share one transaction and one fsync
//!   (group commit): the thread takes every request already queued, commits them together, then
//!   answers each. A refused append (a duplicate receipt, a reused idempotency key) writes
//!   nothing, so it fails alone and its neighbours in the group commit.
//! - `acked_upto` only grows, only from central's application ack (never from a broker
//!   PUBACK), and never past `last_seq`: an ack beyond the journal moves nothing and deletes
//!   nothing. Events above it form the outbox.
//! - `seq` never exceeds docs/protocol.md's 2^53 - 1; an append past it is refused, never wrapped.
//! - Only acked events are ever deleted: all but the newest `keep_acked` of them, at most
//!   `COMPACT_BATCH` per ack so a compaction never stretches a commit. Seq is unaffected (it
//!   comes from `last_seq`). Idempotency keys and receipts live in tables of their own with a
//!   longer window (`keep_keys`), so a retry after compaction is still a replay or a
//!   duplicate, never a second sale.
//!
//! - A purchase at a till with a printer gets its print job in the same transaction; print
//!   jobs change only through the writer (`PrintCommand`), like everything else here.
//!
//! # On-disk format (schema version 9, `PRAGMA user_version`)
//! - `events(seq INTEGER PRIMARY KEY, id, kind, at, clock_synced, till, receipt, body)`.
//! - `receipts(receipt PRIMARY KEY, seq, id)` (version 4): every purchase's receipt, unique
//!   per gateway (docs/protocol.md), indexed by `seq` for retention.
//! - `idempotency(key PRIMARY KEY, fingerprint, seq, id)`: HTTP `Idempotency-Key`s, indexed
//!   by `seq` (version 2) so retention deletes them without a scan.
//! - `counters(name PRIMARY KEY, value)`: `last_seq`, `acked_upto`, `session`.
//! - `identity_refs(hash PRIMARY KEY, profile)` (version 3): the profile ref each identifier
//!   hash was first recorded under; kept by retention.
//! - `print_jobs(id, printer, receipt, copy, state, purchase, last_error)` (version 5): the
//!   print queue (`print_queue.rs`).
//! - `coupon_redemptions(coupon, receipt, seq, mode, discount_minor, at)` (version 6): every
//!   coupon this box accepted.
//! - `aliases(from_ref, to_ref)` and the `identity_rev` counter (version 7): central's merges
//!   and the rev up to which every identity change is applied.
//! - `profile_views(ref PRIMARY KEY, points, rev)`, `points_pending(seq PRIMARY KEY, customer,
//!   earned, redeemed, covered_after_rev)`, `erased(ref PRIMARY KEY)` (version 8): central's
//!   points for profiles this box has seen, the points of purchases central's view does not
//!   hold yet (deleted by the first view newer than their ack), and the profiles erased at
//!   central. The writer runs with `secure_delete` on, and an
//!   erasure truncates the WAL, so an erased customer's identifiers leave the files.
//! - `config_layers(layer PRIMARY KEY, version, signed, applied_at)` (version 9): the signed
//!   remote config layers this box accepted, as received.

mod lock;
mod outbox;
pub mod print_queue;
mod schema;
mod writer;

pub use lock::{lock_path, JournalLock};
pub use outbox::{AsyncOutbox, Outbox, Redemption};
pub use print_queue::{JobState, PrintCommand, PrintJob, PrintJobs, PrintRefusal};
pub use writer::WriterThread;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot, watch};

use crate::clock::Clock;
use crate::protocol::EventKind;

/// A request to record one event.
#[derive(Debug, Clone)]
pub struct NewEvent {
    /// What happened.
    pub kind: EventKind,
    /// The till (or device's till) it happened at.
    pub till: String,
    /// The body as compact JSON, already validated.
    pub body: String,
    /// For purchases: the receipt id, unique per gateway.
    pub receipt: Option<String>,
    /// The HTTP caller's key, so a retry is answered with the first result.
    pub idempotency: Option<IdempotencyKey>,
    /// Identifier hashes this event tied to a profile ref, remembered in the same transaction
    /// so a card seen again resolves to the same customer even after the event is compacted.
    pub identity_refs: Vec<IdentityRef>,
    /// For a purchase at a till with a printer: that printer, whose receipt job is queued in
    /// the same transaction (a replayed request queues nothing).
    pub print_on: Option<String>,
    /// For a coupon redemption: the coupon's use, recorded in the same transaction; refused
    /// (`AlreadyRedeemed`) when the coupon has no use left at this box.
    pub coupon: Option<CouponUse>,
    /// For a purchase by an identified customer: the points it earns and redeems, kept in
    /// `points_pending` until central acks it; a redemption is checked against the balance in
    /// the same transaction, so two tills cannot spend the same points.
    pub points: Option<PointsUse>,
}

/// The loyalty points of one purchase (`points_pending`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PointsUse {
    /// The ref the purchase was made with.
    pub customer: String,
    /// Every ref that resolves to the same profile, the root first: the balance is the root's
    /// points at central plus the pending points of all of them.
    pub members: Vec<String>,
    /// Points earned.
    pub earned: i64,
    /// Points spent.
    pub redeemed: i64,
    /// While central is unreachable: the most points this profile may spend at this box
    /// before central has seen them (`[loyalty] offline_redeem_cap`).
    pub offline_cap: Option<i64>,
}

/// What a box knows of a profile's points.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PointsBalance {
    /// Central's balance as last shared with this box.
    pub central: i64,
    /// Earned here, not yet in central's view.
    pub pending_earned: i64,
    /// Spent here, not yet in central's view.
    pub pending_redeemed: i64,
    /// Spent here and not even acked by central: what the offline cap counts.
    pub unacked_redeemed: i64,
}

impl PointsBalance {
    /// What the customer may spend: central's balance plus this box's earnings minus its
    /// redemptions that central's view does not hold yet.
    pub fn total(&self) -> i64 {
        self.central
            .saturating_add(self.pending_earned)
            .saturating_sub(self.pending_redeemed)
    }
}

/// One identity change as this box keeps it: what concerns it, already filtered.
#[derive(Debug, Clone, Default)]
pub struct KeptChange {
    /// Merges (`from`, `to`) that name a ref this box has seen.
    pub merges: Vec<(String, String)>,
    /// Views of profiles this box has seen.
    pub views: Vec<CachedProfile>,
    /// For each erased profile: every ref of it this box knows (the profile first).
    pub erased: Vec<Vec<String>>,
    /// Every change up to this rev is applied.
    pub complete_upto: u64,
    /// This change's own rev.
    pub rev: u64,
}

/// Central's view of a profile this box has seen.
#[derive(Debug, Clone)]
pub struct CachedProfile {
    /// The profile's ref.
    pub profile: String,
    /// Its points at central.
    pub points: i64,
    /// The change (or 0 for a look-up) it came with; an older view never replaces a newer one.
    pub rev: u64,
    /// Its identifier hashes, cached so this box recognises the customer by any of them.
    pub hashes: Vec<String>,
    /// Every ref this box knows that resolves to it: the points of their acked purchases are
    /// in this view when it is newer than their ack.
    pub members: Vec<String>,
}

/// A coupon accepted at this box (`coupon_redemptions`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CouponUse {
    /// The coupon's id.
    pub coupon: String,
    /// The receipt it was redeemed for.
    pub receipt: String,
    /// How often the coupon may be used (its payload's `uses`).
    pub uses: u64,
    /// `online` (reserved at central first) or `offline`.
    pub mode: String,
    /// The discount granted.
    pub discount_minor: i64,
}

/// An identifier hash (docs/protocol.md "Identity") and the profile ref it belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentityRef {
    /// Hex HMAC of the normalised identifier.
    pub hash: String,
    /// The profile ref it was recorded under.
    pub profile: String,
}

/// A caller's `Idempotency-Key` and a fingerprint of what it asked for, so the same key with a
/// different request is refused instead of silently answered with the first one's result.
#[derive(Debug, Clone)]
pub struct IdempotencyKey {
    /// The caller's `Idempotency-Key`.
    pub key: String,
    /// SHA-256 of the canonical request.
    pub fingerprint: [u8; 32],
}

/// A committed (or, for a replayed key, previously committed) event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Appended {
    /// The event's seq.
    pub seq: u64,
    /// The event's ULID.
    pub id: String,
    /// True when this answers a repeated `Idempotency-Key`: nothing new was recorded.
    pub replayed: bool,
}

/// Why an append was refused. Nothing was written.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum AppendError {
    /// A purchase with a receipt this gateway already recorded.
    #[error("receipt {receipt} was already recorded as event {seq}")]
    DuplicateReceipt {
        /// The receipt id.
        receipt: String,
        /// The seq it was recorded at.
        seq: u64,
        /// That event's id.
        id: String,
    },
    /// The key was used before for a different request.
    #[error("Idempotency-Key {0} was already used for a different request")]
    IdempotencyMismatch(String),
    /// SQLite reported a full disk; the group rolled back.
    #[error("the journal's disk is full; nothing was recorded")]
    DiskFull,
    /// The next seq would pass 2^53 − 1.
    #[error("the journal reached the protocol's largest seq (2^53 - 1); nothing was recorded")]
    SeqExhausted,
    /// Free space is low: only sales are recorded until space is freed.
    #[error("the journal's disk is nearly full; only sales are recorded until space is freed")]
    StorageLow,
    /// The coupon has no use left at this box.
    #[error("coupon {0} was already redeemed at this gateway")]
    AlreadyRedeemed(String),
    /// A redemption of more points than the customer has.
    #[error("the customer has {balance} points; {asked} cannot be redeemed")]
    InsufficientPoints {
        /// The balance.
        balance: i64,
        /// The points asked for.
        asked: i64,
    },
    /// An offline redemption beyond `[loyalty] offline_redeem_cap`.
    #[error("central is unreachable and this customer already redeemed {spent} of the {cap} points allowed offline; {asked} more cannot be redeemed")]
    OfflinePointsCap {
        /// The cap.
        cap: i64,
        /// Spent offline already.
        spent: i64,
        /// Asked for now.
        asked: i64,
    },
    /// Any other SQLite failure; the group rolled back.
    #[error("journal storage failed: {0}")]
    Storage(String),
    /// The writer thread is gone.
    #[error("the journal is shut down")]
    Closed,
}

/// A journal failure outside of appends.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    /// The file could not be opened or migrated.
    #[error("journal {path}: {source}")]
    Open {
        /// The journal's path.
        path: String,
        /// SQLite's error.
        source: rusqlite::Error,
    },
    /// Written by a newer storegate.
    #[error("journal {path} has schema version {found}, newer than this storegate knows ({known}); upgrade storegate")]
    TooNew {
        /// The journal's path.
        path: String,
        /// Its schema version.
        found: i64,
        /// The newest this build knows.
        known: i64,
    },
    /// A read or write failed.
    #[error("journal storage failed: {0}")]
    Storage(#[from] rusqlite::Error),
    /// A write failed; the message says how.
    #[error("journal write failed: {0}")]
    Write(String),
    /// The writer thread is gone.
    #[error("the journal is shut down")]
    Closed,
    /// The writer thread could not start.
    #[error("cannot start the journal writer thread: {0}")]
    Thread(std::io::Error),
    /// Another process holds the journal.
    #[error("journal {path} is in use by another storegate ({}); stop it first, or give this one its own [journal] path", holder.map_or("pid unknown".to_string(), |p| format!("pid {p}")))]
    InUse {
        /// The journal's path.
        path: String,
        /// The holder's pid, when its lock file names it.
        holder: Option<u32>,
    },
    /// The lock file could not be used.
    #[error("journal lock {path}: {source}")]
    Lock {
        /// The lock file's path.
        path: String,
        /// Why.
        source: std::io::Error,
    },
}

/// Counters kept beside the events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Position {
    /// The newest committed seq.
    pub last_seq: u64,
    /// The highest seq central has acked.
    pub acked_upto: u64,
    /// Transactions committed by this process (each one fsync); fewer than appends under
    /// concurrent load is group commit at work.
    pub commits: u64,
    /// The last commit failed (its error is in `Journal::health`); the next one that succeeds
    /// clears it.
    pub failing: bool,
    /// The last commit failed because the disk is full, or free space is down to the reserve:
    /// intake answers 507 until it is not.
    pub disk_full: bool,
    /// Free space is below `[journal] low_space_mb`: identifications are refused, sales go
    /// on into the reserve.
    pub storage_low: bool,
}

impl Position {
    /// Committed events central has not acked.
    pub fn backlog(&self) -> u64 {
        self.last_seq.saturating_sub(self.acked_upto)
    }
}

pub(crate) enum Command {
    Append {
        event: Box<NewEvent>,
        reply: oneshot::Sender<Result<Appended, AppendError>>,
    },
    Ack {
        upto: u64,
        reply: oneshot::Sender<Result<AckOutcome, String>>,
    },
    NextSession {
        reply: oneshot::Sender<Result<u64, String>>,
    },
    Print {
        command: PrintCommand,
        reply: oneshot::Sender<Result<i64, PrintRefusal>>,
    },
    IdentityChange {
        changes: Vec<KeptChange>,
        reply: oneshot::Sender<Result<u64, String>>,
    },
    CacheProfile {
        view: CachedProfile,
        reply: oneshot::Sender<Result<u64, String>>,
    },
    Ping {
        reply: oneshot::Sender<Result<(), String>>,
    },
    RecordLayer {
        layer: String,
        version: u64,
        signed: String,
        reply: oneshot::Sender<Result<(), String>>,
    },
}

/// What recording an ack did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckOutcome {
    /// The acked position moved.
    Advanced,
    /// Not above what was already acked.
    Stale,
    /// An ack beyond this journal's last seq (a journal restored from an old backup, a second
    /// box with the same gateway id, or a forgery): nothing moved and nothing was deleted
    /// (docs/protocol.md "Cumulative ack"); numbering goes on from this journal.
    BeyondJournal,
}

/// A handle to the journal; cheap to clone, each clone talks to the one writer thread.
#[derive(Clone)]
pub struct Journal {
    commands: mpsc::Sender<Command>,
    position: watch::Receiver<Position>,
    path: PathBuf,
}

/// Acked events kept by default: about a week of a busy store's receipts.
pub const DEFAULT_KEEP_ACKED: u64 = 100_000;

/// Idempotency keys and receipts kept by default, counted in acked events: weeks of a busy
/// store, far longer than any till retries a request.
pub const DEFAULT_KEEP_KEYS: u64 = 1_000_000;

/// What the journal keeps once central has acked it. Counted in events, not days, so a clock
/// that jumps (guarantee 8) changes nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// Acked events kept (the newest), for reprints and lookups.
    pub keep_acked: u64,
    /// Idempotency keys and receipts kept (those of the newest acked events), so a retried
    /// request is recognised after its event was deleted. Never fewer than `keep_acked`.
    pub keep_keys: u64,
}

impl Default for Retention {
    fn default() -> Self {
        Retention {
            keep_acked: DEFAULT_KEEP_ACKED,
            keep_keys: DEFAULT_KEEP_KEYS,
        }
    }
}

/// Free-space thresholds on the journal's filesystem (guarantee 7). Below `low_free_bytes`
/// low-value events (identifications: the customer is identified again at the next visit)
/// are refused and `storage_low` is raised, while sales go on into the reserve; below
/// `reserve_free_bytes` every append is refused with `DiskFull` before SQLite could fail in
/// the middle of a write. Zero turns a threshold off (the library's default; the daemon
/// takes them from `[journal]`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DiskLimits {
    /// Below this, only sales.
    pub low_free_bytes: u64,
    /// Below this, nothing.
    pub reserve_free_bytes: u64,
    /// The directory whose filesystem is measured.
    dir: PathBuf,
}

impl DiskLimits {
    /// Thresholds in bytes.
    pub fn new(low_free_bytes: u64, reserve_free_bytes: u64) -> DiskLimits {
        DiskLimits {
            low_free_bytes,
            reserve_free_bytes,
            dir: PathBuf::new(),
        }
    }

    fn with_dir(mut self, journal: &Path) -> DiskLimits {
        self.dir = journal
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."))
            .to_path_buf();
        self
    }
}

/// Appends queued beyond this wait for room, which is back-pressure on intake rather than
/// unbounded memory.
const QUEUE_DEPTH: usize = 4096;

impl Journal {
    /// Opens (creating and migrating if needed) the journal and starts its writer thread.
    pub fn open(
        path: &Path,
        clock: Arc<dyn Clock>,
    ) -> Result<(Journal, WriterThread), JournalError> {
        Self::open_with_retention(path, clock, Retention::default())
    }

    /// Opens the journal with a retention policy: older acked events, and older keys and
    /// receipts, are deleted as acks arrive.
    pub fn open_with_retention(
        path: &Path,
        clock: Arc<dyn Clock>,
        retention: Retention,
    ) -> Result<(Journal, WriterThread), JournalError> {
        Self::open_with(path, clock, retention, DiskLimits::default())
    }

    /// Opens the journal with a retention policy and free-space thresholds.
    pub fn open_with(
        path: &Path,
        clock: Arc<dyn Clock>,
        retention: Retention,
        disk: DiskLimits,
    ) -> Result<(Journal, WriterThread), JournalError> {
        let lock = JournalLock::acquire(path)?;
        let conn = schema::open_and_migrate(path)?;
        print_queue::import_legacy(&conn, path)?;
        let (commands, receiver) = mpsc::channel(QUEUE_DEPTH);
        let start = writer::read_position(&conn)?;
        let (position_tx, position) = watch::channel(start);
        let thread = writer::spawn(
            conn,
            lock,
            clock,
            retention,
            disk.with_dir(path),
            receiver,
            position_tx,
        )?;
        Ok((
            Journal {
                commands,
                position,
                path: path.to_path_buf(),
            },
            thread,
        ))
    }

    /// Records one event; returns only after it is durably committed.
    pub async fn append(&self, event: NewEvent) -> Result<Appended, AppendError> {
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(Command::Append {
                event: Box::new(event),
                reply,
            })
            .await
            .map_err(|_| AppendError::Closed)?;
        answer.await.map_err(|_| AppendError::Closed)?
    }

    /// Records central's cumulative ack.
    pub async fn record_ack(&self, upto: u64) -> Result<AckOutcome, JournalError> {
        self.request(|reply| Command::Ack { upto, reply }).await
    }

    /// Increments and returns the MQTT session counter (docs/protocol.md status `session`).
    pub async fn next_session(&self) -> Result<u64, JournalError> {
        self.request(|reply| Command::NextSession { reply }).await
    }

    /// Records what identity changes meant for this box, in one transaction: merges, profile views (their
    /// identifiers cached, unless the profile was erased), erasures (every identifier and
    /// view of the profile deleted, its `identity_seen` bodies stripped of identifiers, the
    /// WAL truncated) and that every change up to `complete_upto` is applied; the stored rev
    /// only grows. Returns the stored rev.
    pub async fn record_identity_changes(
        &self,
        changes: Vec<KeptChange>,
    ) -> Result<u64, JournalError> {
        self.request(|reply| Command::IdentityChange { changes, reply })
            .await
    }

    /// Answers once the writer thread has taken this request in turn: a writer stuck in a
    /// commit (a dying SD card) never answers, which is what the service manager's watchdog
    /// needs to see.
    pub async fn ping(&self) -> Result<(), JournalError> {
        self.request(|reply| Command::Ping { reply }).await
    }

    /// Records an accepted config layer (`signed` as received), replacing the layer's earlier
    /// version.
    pub async fn record_config_layer(
        &self,
        layer: &str,
        version: u64,
        signed: String,
    ) -> Result<(), JournalError> {
        let layer = layer.to_string();
        self.request(|reply| Command::RecordLayer {
            layer,
            version,
            signed,
            reply,
        })
        .await
    }

    /// Caches central's view of a profile found by `profile.lookup`.
    pub async fn cache_profile(&self, view: CachedProfile) -> Result<u64, JournalError> {
        self.request(|reply| Command::CacheProfile { view, reply })
            .await
    }

    /// Sends the writer a command and waits for its answer; a failed commit's error becomes
    /// `JournalError::Write`.
    async fn request<T>(
        &self,
        command: impl FnOnce(oneshot::Sender<Result<T, String>>) -> Command,
    ) -> Result<T, JournalError> {
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(command(reply))
            .await
            .map_err(|_| JournalError::Closed)?;
        answer
            .await
            .map_err(|_| JournalError::Closed)?
            .map_err(JournalError::Write)
    }

    /// Changes the print queue (from async code: the API).
    pub async fn print(&self, command: PrintCommand) -> Result<i64, PrintRefusal> {
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(Command::Print { command, reply })
            .await
            .map_err(|_| PrintRefusal::Storage("the journal is shut down".into()))?;
        answer
            .await
            .map_err(|_| PrintRefusal::Storage("the journal is shut down".into()))?
    }

    /// Changes the print queue from a device thread (never from async code: it blocks).
    pub fn print_blocking(&self, command: PrintCommand) -> Result<i64, PrintRefusal> {
        let (reply, answer) = oneshot::channel();
        self.commands
            .blocking_send(Command::Print { command, reply })
            .map_err(|_| PrintRefusal::Storage("the journal is shut down".into()))?;
        answer
            .blocking_recv()
            .map_err(|_| PrintRefusal::Storage("the journal is shut down".into()))?
    }

    /// A read-only view of the print queue.
    pub fn print_jobs(&self) -> Result<PrintJobs, JournalError> {
        PrintJobs::open(&self.path)
    }

    /// The last committed seq and the acked position; changes wake the sync pump.
    pub fn position(&self) -> watch::Receiver<Position> {
        self.position.clone()
    }

    /// Opens a read connection for the outbox; reads never block the writer (WAL).
    pub fn outbox(&self) -> Result<Outbox, JournalError> {
        Outbox::open(&self.path)
    }

    /// The journal file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The journal's state for `/healthz`: `Err` with the reason while it cannot commit.
    pub fn health(&self) -> Result<(), String> {
        if self.commands.is_closed() {
            return Err("the journal writer has stopped".into());
        }
        let position = *self.position.borrow();
        if position.disk_full {
            Err("the journal's disk is full; intake answers 507 until space is freed".into())
        } else if position.failing {
            Err("the last journal commit failed; see the log".into())
        } else {
            Ok(())
        }
    }

    /// Resolves when the writer thread has stopped (every handle's requests then fail).
    pub async fn closed(&self) {
        self.commands.closed().await
    }
}
