//! Central's storage (SQLite). Dedup by (gateway, seq) and by event id; application in seq
//! order; the ack is the end of the gap-free prefix of stored events.
//!
//! A second event at a (gateway, seq) that central already holds under another id is not
//! dropped: it goes to `seq_conflicts` (a gateway whose journal was restored from an old copy
//! re-used seqs before it saw our ack), so no event is ever lost silently. An event that
//! breaks docs/protocol.md, or a second purchase with a receipt the gateway already used, is
//! stored with `refused` set: it fills its seq slot, is applied to nothing, and stays for
//! operators (docs/protocol.md "Cumulative ack").

use std::path::Path;

use rusqlite::{params, Connection, OptionalExtension, Transaction};
use serde_json::value::RawValue;

use crate::protocol::{timestamp, RpcError, WireEvent};

const SCHEMA: &[&str] = &[
    "CREATE TABLE gateways(
        store TEXT NOT NULL, gateway TEXT NOT NULL, acked_upto INTEGER NOT NULL,
        PRIMARY KEY(store, gateway)) WITHOUT ROWID;
    CREATE TABLE events(
        store TEXT NOT NULL, gateway TEXT NOT NULL, seq INTEGER NOT NULL,
        id TEXT NOT NULL, kind TEXT NOT NULL, at TEXT NOT NULL, clock_synced INTEGER NOT NULL,
        till TEXT NOT NULL, body TEXT NOT NULL, received_at TEXT NOT NULL,
        duplicate_id INTEGER NOT NULL,
        applied INTEGER,
        PRIMARY KEY(store, gateway, seq));
    CREATE INDEX events_id ON events(id);
    CREATE TABLE seq_conflicts(
        store TEXT NOT NULL, gateway TEXT NOT NULL, seq INTEGER NOT NULL, id TEXT NOT NULL,
        kind TEXT NOT NULL, at TEXT NOT NULL, till TEXT NOT NULL, body TEXT NOT NULL,
        received_at TEXT NOT NULL, PRIMARY KEY(id));
    CREATE TABLE coupon_reservations(
        coupon TEXT PRIMARY KEY, store TEXT NOT NULL, gateway TEXT NOT NULL,
        customer TEXT, receipt TEXT NOT NULL, at TEXT NOT NULL);
    CREATE TABLE identity_changes(rev INTEGER PRIMARY KEY, change TEXT NOT NULL);
    CREATE TABLE counters(name TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;
    INSERT INTO counters(name, value) VALUES ('applied', 0);",
    // 1 -> 2: an event that breaks docs/protocol.md, or a second purchase with a receipt this
    // gateway already used, fills its seq slot (so the gateway's ack moves on) but is kept
    // for operators with the reason, applied to nothing.
    "ALTER TABLE events ADD COLUMN receipt TEXT;
    ALTER TABLE events ADD COLUMN refused TEXT;
    CREATE INDEX events_receipt ON events(store, gateway, receipt) WHERE receipt IS NOT NULL;",
    // 2 -> 3: coupon redemptions from every gateway; one beyond a coupon's uses (a
    // single-use coupon redeemed offline at two stores) is a conflict for operators, both
    // events kept.
    "CREATE TABLE coupon_redemptions(
        event_id TEXT PRIMARY KEY, coupon TEXT NOT NULL, store TEXT NOT NULL,
        gateway TEXT NOT NULL, receipt TEXT NOT NULL, mode TEXT NOT NULL, uses INTEGER NOT NULL);
    CREATE INDEX coupon_redemptions_coupon ON coupon_redemptions(coupon);
    CREATE TABLE coupon_conflicts(
        event_id TEXT PRIMARY KEY, coupon TEXT NOT NULL, detail TEXT NOT NULL);",
    // 3 -> 4: profiles and their identifiers, merges (`from` resolves to `to`), the creation
    // counter that decides which profile is oldest, and the fleet-wide identity rev.
    "CREATE TABLE profiles(ref TEXT PRIMARY KEY, created INTEGER NOT NULL, points INTEGER NOT NULL)
        WITHOUT ROWID;
    CREATE TABLE profile_identifiers(hash TEXT PRIMARY KEY, kind TEXT NOT NULL, verified INTEGER,
        profile TEXT NOT NULL) WITHOUT ROWID;
    CREATE INDEX profile_identifiers_profile ON profile_identifiers(profile);
    CREATE TABLE profile_aliases(from_ref TEXT PRIMARY KEY, to_ref TEXT NOT NULL) WITHOUT ROWID;
    INSERT INTO counters(name, value) VALUES ('identity_rev', 0), ('profile_seq', 0);",
    // 4 -> 5: the points ledger (one row per purchase event or online order, so nothing
    // counts twice), online purchases from the web shop, and erasure.
    "CREATE TABLE points_ledger(entry TEXT PRIMARY KEY, profile TEXT NOT NULL,
        points INTEGER NOT NULL, source TEXT NOT NULL, at TEXT NOT NULL);
    CREATE INDEX points_ledger_profile ON points_ledger(profile);
    CREATE INDEX profile_aliases_to ON profile_aliases(to_ref);
    CREATE TABLE online_purchases(order_id TEXT PRIMARY KEY, customer TEXT NOT NULL,
        total_minor INTEGER NOT NULL, currency TEXT NOT NULL, lines TEXT NOT NULL,
        points INTEGER NOT NULL, at TEXT NOT NULL);
    ALTER TABLE profiles ADD COLUMN erased_at TEXT;
    CREATE INDEX events_customer ON events(json_extract(body, '$.customer'))
        WHERE kind IN ('purchase', 'identity_seen', 'coupon_redeemed');",
];

/// A central store failure.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The store could not be opened or migrated.
    #[error("central store {path}: {source}")]
    Open {
        /// The store's path.
        path: String,
        /// SQLite's error.
        source: rusqlite::Error,
    },
    /// A read or write failed.
    #[error("central store: {0}")]
    Sql(#[from] rusqlite::Error),
    /// A task panicked while holding the store.
    #[error("central store lock poisoned")]
    Poisoned,
}

/// What storing one batch did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BatchOutcome {
    /// The ack to send.
    pub acked_upto: u64,
    /// Events stored for the first time.
    pub stored: u64,
    /// Events central already held (re-sends).
    pub duplicates: u64,
    /// Events at a seq central holds under another id, kept aside.
    pub conflicts: u64,
    /// Events kept but applied to nothing (invalid, or a receipt used twice).
    pub refused: u64,
    /// Coupon redemptions beyond the coupon's uses (kept, and recorded as conflicts).
    pub coupon_conflicts: u64,
    /// Identity changes the applied events made, stored, to be broadcast (JSON, rev order).
    pub identity_changes: Vec<String>,
}

/// Central's SQLite store: one connection, used from one task at a time.
pub struct Store {
    conn: Connection,
}

impl Store {
    /// Opens (creating and migrating) the store at `path`.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        let open = |source| StoreError::Open {
            path: path.display().to_string(),
            source,
        };
        let mut conn = Connection::open(path).map_err(open)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(open)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(open)?;
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(open)?;
        // An erased customer's identifiers must not linger in freed pages.
        conn.pragma_update(None, "secure_delete", "ON")
            .map_err(open)?;
        let version: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(open)?;
        for (v, sql) in SCHEMA.iter().enumerate().skip(version.max(0) as usize) {
            let tx = conn.transaction().map_err(open)?;
            tx.execute_batch(sql).map_err(open)?;
            tx.pragma_update(None, "user_version", v as i64 + 1)
                .map_err(open)?;
            tx.commit().map_err(open)?;
        }
        Ok(Store { conn })
    }

    /// The gateway's current ack (0 if never seen).
    pub fn acked(&self, store: &str, gateway: &str) -> Result<u64, StoreError> {
        Ok(acked(&self.conn, store, gateway)?)
    }

    /// Stores a batch durably and returns the ack to send.
    pub fn store_batch(
        &mut self,
        store: &str,
        gateway: &str,
        events: &[WireEvent],
    ) -> Result<BatchOutcome, StoreError> {
        let tx = self.conn.transaction()?;
        let mut outcome = BatchOutcome::default();
        let received_at = timestamp(std::time::SystemTime::now());
        for event in events {
            store_event(&tx, store, gateway, event, &received_at, &mut outcome)?;
        }
        outcome.acked_upto = advance(&tx, store, gateway, &mut outcome.identity_changes)?;
        tx.commit()?;
        Ok(outcome)
    }

    /// rpc `coupon.reserve`: the first reservation of a coupon wins; the same receipt asking
    /// again (a retried call) is told it holds the reservation.
    pub fn reserve_coupon(
        &mut self,
        store: &str,
        gateway: &str,
        coupon: &str,
        customer: Option<&str>,
        receipt: &str,
    ) -> Result<Result<(), RpcError>, StoreError> {
        let tx = self.conn.transaction()?;
        let holder: Option<(String, String, String)> = tx
            .query_row(
                "SELECT store, gateway, receipt FROM coupon_reservations WHERE coupon = ?1",
                [coupon],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()?;
        let result = match holder {
            Some((s, g, r)) if s == store && g == gateway && r == receipt => Ok(()),
            Some(_) => Err(RpcError {
                code: "already_redeemed".into(),
                message: format!("coupon {coupon} is already reserved or redeemed"),
            }),
            None => {
                tx.execute(
                    "INSERT INTO coupon_reservations(coupon, store, gateway, customer, receipt, at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                    params![
                        coupon,
                        store,
                        gateway,
                        customer,
                        receipt,
                        timestamp(std::time::SystemTime::now())
                    ],
                )?;
                Ok(())
            }
        };
        tx.commit()?;
        Ok(result)
    }

    /// rpc `profile.lookup`: the profile the identifiers belong to, or none.
    pub fn lookup_profile(
        &mut self,
        identifiers: &[crate::protocol::Identifier],
    ) -> Result<Option<crate::protocol::ProfileView>, StoreError> {
        let tx = self.conn.transaction()?;
        let found = super::profiles::lookup(&tx, identifiers)?;
        tx.commit()?;
        Ok(found)
    }

    /// The root `profile` resolves to through central's merges.
    pub fn resolve_profile(&mut self, profile: &str) -> Result<String, StoreError> {
        let tx = self.conn.transaction()?;
        let root = super::profiles::resolve(&tx, profile)?;
        tx.commit()?;
        Ok(root)
    }

    /// rpc `identity.since`: changes after `rev`, oldest first, at most `limit`.
    pub fn identity_since(&self, rev: u64, limit: usize) -> Result<Vec<Box<RawValue>>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT change FROM identity_changes WHERE rev > ?1 ORDER BY rev LIMIT ?2",
        )?;
        let rows = stmt.query_map(params![rev as i64, limit as i64], |r| r.get::<_, String>(0))?;
        let mut changes = Vec::new();
        for row in rows {
            if let Ok(raw) = RawValue::from_string(row?) {
                changes.push(raw);
            }
        }
        Ok(changes)
    }
}

/// What registering a customer online did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registered {
    /// The profile the identifiers belong to.
    pub customer: String,
    /// Whether it was created now.
    pub created: bool,
    /// The identity changes to broadcast.
    pub changes: Vec<String>,
}

/// What recording an online purchase did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OnlinePurchase {
    /// The profile it was credited to.
    pub customer: String,
    /// Points it earned.
    pub points: i64,
    /// The profile's balance after it.
    pub balance: i64,
    /// Whether the order was already recorded (a retried request).
    pub replayed: bool,
    /// The identity changes to broadcast.
    pub changes: Vec<String>,
}

/// A profile as the online channel shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CustomerView {
    /// The profile's ref (the root the asked ref resolves to).
    pub customer: String,
    /// Refs merged into it.
    pub merged: Vec<String>,
    /// Its identifiers' kinds (never the hashes' values: those stay between the boxes).
    pub identifiers: Vec<serde_json::Value>,
    /// Its points: the sum of the ledger over every merged ref.
    pub points: i64,
    /// Its purchases, identifications and redemptions, in store and online, newest first.
    pub timeline: Vec<serde_json::Value>,
}

/// Why the online channel could not do what it was asked.
#[derive(Debug, thiserror::Error)]
pub enum ChannelError {
    /// No such profile.
    #[error("no customer {0}")]
    UnknownCustomer(String),
    /// The profile was erased.
    #[error("customer {0} was erased")]
    Erased(String),
    /// Nothing given could decide who the customer is.
    #[error("give a card, an app token, or a verified phone or email")]
    NothingMergeable,
    /// The order id was used for another purchase.
    #[error("order {0} was already recorded with other details")]
    OrderConflict(String),
    /// Storage failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<rusqlite::Error> for ChannelError {
    fn from(error: rusqlite::Error) -> ChannelError {
        ChannelError::Store(StoreError::Sql(error))
    }
}

impl Store {
    /// Registers or finds a customer by what the web shop or app knows (hashed already).
    pub fn register(
        &mut self,
        identifiers: &[crate::protocol::Identifier],
    ) -> Result<Registered, ChannelError> {
        let tx = self.conn.transaction()?;
        let resolved = super::profiles::identify(&tx, None, identifiers)?
            .ok_or(ChannelError::NothingMergeable)?;
        tx.commit()?;
        Ok(Registered {
            customer: resolved.survivor,
            created: resolved.created,
            changes: resolved.change.into_iter().collect(),
        })
    }

    /// Attaches an identifier (an app token) to a live profile; returns the profile's root and
    /// the change to broadcast.
    pub fn attach_identifier(
        &mut self,
        profile: &str,
        identifier: &crate::protocol::Identifier,
    ) -> Result<(String, Vec<String>), ChannelError> {
        let tx = self.conn.transaction()?;
        let root = live_root(&tx, profile)?;
        tx.prepare_cached(
            "INSERT OR IGNORE INTO profile_identifiers(hash, kind, verified, profile) VALUES (?1, ?2, ?3, ?4)",
        )?
        .execute(params![
            identifier.hash,
            identifier.kind.as_str(),
            identifier.verified,
            root
        ])?;
        let view = super::profiles::view(&tx, &root)?;
        let change = super::profiles::record_change(&tx, Vec::new(), vec![view], Vec::new())?;
        tx.commit()?;
        Ok((root, vec![change]))
    }

    /// The profile `profile` resolves to, with its points and timeline (at most `limit`
    /// entries, newest first).
    pub fn customer(&mut self, profile: &str, limit: usize) -> Result<CustomerView, ChannelError> {
        let tx = self.conn.transaction()?;
        let root = live_root(&tx, profile)?;
        let members = super::profiles::members(&tx, &root)?;
        let view = super::profiles::view(&tx, &root)?;
        let mut timeline = Vec::new();
        for member in &members {
            let mut events = tx.prepare_cached(
                "SELECT at, kind, store, gateway, body FROM events
                 WHERE json_extract(body, '$.customer') = ?1
                   AND kind IN ('purchase', 'identity_seen', 'coupon_redeemed')
                   AND applied IS NOT NULL
                 ORDER BY at DESC LIMIT ?2",
            )?;
            let rows = events.query_map(params![member, limit as i64], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, String>(3)?,
                    r.get::<_, String>(4)?,
                ))
            })?;
            for row in rows {
                let (at, kind, store, gateway, body) = row?;
                let body: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
                let mut entry = serde_json::json!({
                    "at": at, "kind": kind, "channel": "store", "store": store, "gateway": gateway,
                });
                for field in [
                    "receipt",
                    "total_minor",
                    "currency",
                    "points",
                    "points_redeemed",
                    "coupon",
                    "discount_minor",
                ] {
                    if let Some(value) = body.get(field) {
                        entry[field] = value.clone();
                    }
                }
                timeline.push(entry);
            }
            let mut online = tx.prepare_cached(
                "SELECT at, order_id, total_minor, currency, points FROM online_purchases
                 WHERE customer = ?1 ORDER BY at DESC LIMIT ?2",
            )?;
            let rows = online.query_map(params![member, limit as i64], |r| {
                Ok(serde_json::json!({
                    "at": r.get::<_, String>(0)?, "kind": "purchase", "channel": "online",
                    "order": r.get::<_, String>(1)?, "total_minor": r.get::<_, i64>(2)?,
                    "currency": r.get::<_, String>(3)?, "points": r.get::<_, i64>(4)?,
                }))
            })?;
            for row in rows {
                timeline.push(row?);
            }
        }
        timeline.sort_by(|a, b| b["at"].as_str().cmp(&a["at"].as_str()));
        timeline.truncate(limit);
        tx.commit()?;
        Ok(CustomerView {
            customer: root.clone(),
            merged: members.into_iter().filter(|m| *m != root).collect(),
            identifiers: view
                .identifiers
                .iter()
                .map(|i| serde_json::json!({ "kind": i.kind.as_str(), "verified": i.verified }))
                .collect(),
            points: view.points,
            timeline,
        })
    }

    /// Erases a customer (docs/protocol.md "Identity", `erased`); returns the erased root and
    /// the change to broadcast.
    pub fn erase(&mut self, profile: &str) -> Result<(String, Vec<String>), ChannelError> {
        let tx = self.conn.transaction()?;
        let root = super::profiles::resolve(&tx, profile)?;
        if super::profiles::is_erased(&tx, &root)? {
            return Err(ChannelError::Erased(root));
        }
        let (root, change) = super::profiles::erase(&tx, profile)?
            .ok_or_else(|| ChannelError::UnknownCustomer(profile.to_string()))?;
        tx.commit()?;
        // The old pages are zeroed in the file; a checkpoint moves them out of the WAL too.
        let _ = self
            .conn
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()));
        Ok((root, vec![change]))
    }

    /// Records a web shop or app purchase once per `order`; it earns `points`.
    pub fn online_purchase(
        &mut self,
        customer: &str,
        order: &str,
        lines: &str,
        total_minor: i64,
        currency: &str,
        points: i64,
    ) -> Result<OnlinePurchase, ChannelError> {
        let tx = self.conn.transaction()?;
        let root = live_root(&tx, customer)?;
        let held: Option<(String, i64, String, i64)> = tx
            .prepare_cached(
                "SELECT customer, total_minor, currency, points FROM online_purchases WHERE order_id = ?1",
            )?
            .query_row([order], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
            .optional()?;
        let (replayed, points) = match held {
            Some((held_customer, held_total, held_currency, held_points)) => {
                let same = super::profiles::resolve(&tx, &held_customer)? == root
                    && held_total == total_minor
                    && held_currency == currency;
                if !same {
                    return Err(ChannelError::OrderConflict(order.to_string()));
                }
                (true, held_points)
            }
            None => {
                tx.prepare_cached(
                    "INSERT INTO online_purchases(order_id, customer, total_minor, currency, lines, points, at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                )?
                .execute(params![
                    order,
                    customer,
                    total_minor,
                    currency,
                    lines,
                    points,
                    timestamp(std::time::SystemTime::now())
                ])?;
                (false, points)
            }
        };
        let changes = if replayed {
            Vec::new()
        } else {
            super::profiles::add_points(
                &tx,
                &format!("online:{order}"),
                customer,
                points,
                "online",
            )?
            .into_iter()
            .collect()
        };
        let balance = super::profiles::view(&tx, &root)?.points;
        tx.commit()?;
        Ok(OnlinePurchase {
            customer: root,
            points,
            balance,
            replayed,
            changes,
        })
    }

    /// Sales, identification and loyalty figures between `from` and `to` (RFC 3339, `to`
    /// exclusive), optionally for one store or one channel (`store` or `online`).
    pub fn kpis(
        &self,
        from: &str,
        to: &str,
        store: Option<&str>,
        channel: Option<&str>,
    ) -> Result<serde_json::Value, StoreError> {
        let mut report = serde_json::json!({ "from": from, "to": to });
        if channel.is_none_or(|c| c == "store") {
            let (purchases, revenue, identified, points_earned, points_redeemed): (
                i64,
                i64,
                i64,
                i64,
                i64,
            ) = self.conn.query_row(
                "SELECT COUNT(*),
                        COALESCE(SUM(json_extract(body, '$.total_minor')), 0),
                        COALESCE(SUM(json_extract(body, '$.customer') IS NOT NULL), 0),
                        COALESCE(SUM(json_extract(body, '$.points')), 0),
                        COALESCE(SUM(json_extract(body, '$.points_redeemed')), 0)
                     FROM events WHERE kind = 'purchase' AND applied IS NOT NULL
                        AND at >= ?1 AND at < ?2 AND (?3 IS NULL OR store = ?3)",
                params![from, to, store],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
            )?;
            let (redemptions, discount): (i64, i64) = self.conn.query_row(
                "SELECT COUNT(*), COALESCE(SUM(json_extract(body, '$.discount_minor')), 0)
                 FROM events WHERE kind = 'coupon_redeemed' AND applied IS NOT NULL
                    AND at >= ?1 AND at < ?2 AND (?3 IS NULL OR store = ?3)",
                params![from, to, store],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )?;
            let identifications: i64 = self.conn.query_row(
                "SELECT COUNT(*) FROM events WHERE kind = 'identity_seen' AND applied IS NOT NULL
                    AND at >= ?1 AND at < ?2 AND (?3 IS NULL OR store = ?3)",
                params![from, to, store],
                |r| r.get(0),
            )?;
            report["store"] = serde_json::json!({
                "purchases": purchases,
                "revenue_minor": revenue,
                "identified_purchases": identified,
                "identified_share": if purchases > 0 { identified as f64 / purchases as f64 } else { 0.0 },
                "identifications": identifications,
                "points_earned": points_earned,
                "points_redeemed": points_redeemed,
                "coupon_redemptions": redemptions,
                "coupon_discount_minor": discount,
            });
        }
        if channel.is_none_or(|c| c == "online") && store.is_none() {
            let (purchases, revenue, points): (i64, i64, i64) = self.conn.query_row(
                "SELECT COUNT(*), COALESCE(SUM(total_minor), 0), COALESCE(SUM(points), 0)
                 FROM online_purchases WHERE at >= ?1 AND at < ?2",
                params![from, to],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )?;
            report["online"] = serde_json::json!({
                "purchases": purchases, "revenue_minor": revenue, "points_earned": points,
            });
        }
        let conflicts: i64 =
            self.conn
                .query_row("SELECT COUNT(*) FROM coupon_conflicts", [], |r| r.get(0))?;
        report["coupon_conflicts"] = conflicts.into();
        Ok(report)
    }
}

/// The live root of `profile`, or why there is none.
fn live_root(tx: &Transaction<'_>, profile: &str) -> Result<String, ChannelError> {
    let root = super::profiles::resolve(tx, profile)?;
    if super::profiles::is_erased(tx, &root)? {
        return Err(ChannelError::Erased(root));
    }
    if !super::profiles::exists(tx, &root)? {
        return Err(ChannelError::UnknownCustomer(profile.to_string()));
    }
    Ok(root)
}

fn acked(conn: &Connection, store: &str, gateway: &str) -> rusqlite::Result<u64> {
    let v: Option<i64> = conn
        .query_row(
            "SELECT acked_upto FROM gateways WHERE store = ?1 AND gateway = ?2",
            [store, gateway],
            |r| r.get(0),
        )
        .optional()?;
    Ok(v.unwrap_or(0).max(0) as u64)
}

fn store_event(
    tx: &Transaction<'_>,
    store: &str,
    gateway: &str,
    event: &WireEvent,
    received_at: &str,
    outcome: &mut BatchOutcome,
) -> rusqlite::Result<()> {
    let held: Option<String> = tx
        .prepare_cached("SELECT id FROM events WHERE store = ?1 AND gateway = ?2 AND seq = ?3")?
        .query_row(params![store, gateway, event.seq as i64], |r| r.get(0))
        .optional()?;
    match held {
        Some(id) if id == event.id => {
            outcome.duplicates += 1;
            return Ok(());
        }
        Some(_) => {
            let inserted = tx
                .prepare_cached(
                    "INSERT OR IGNORE INTO seq_conflicts(store, gateway, seq, id, kind, at, till, body, received_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                )?
                .execute(params![
                    store,
                    gateway,
                    event.seq as i64,
                    event.id,
                    event.kind,
                    event.at,
                    event.till,
                    event.body.get(),
                    received_at
                ])?;
            if inserted > 0 {
                tracing::error!(store, gateway, seq = event.seq, id = %event.id, "seq re-used with another id; kept in seq_conflicts");
                outcome.conflicts += 1;
            } else {
                outcome.duplicates += 1;
            }
            return Ok(());
        }
        None => {}
    }
    // The same id at another seq is a duplicate effect: the slot is filled (so the prefix can
    // advance) but marked, and never applied twice.
    let id_seen: bool = tx
        .prepare_cached("SELECT EXISTS(SELECT 1 FROM events WHERE id = ?1)")?
        .query_row([&event.id], |r| r.get(0))?;
    let receipt = event.receipt();
    let mut refused = event.check().err();
    if let (None, false, Some(receipt)) = (&refused, id_seen, &receipt) {
        let holder: Option<i64> = tx
            .prepare_cached(
                "SELECT seq FROM events WHERE store = ?1 AND gateway = ?2 AND receipt = ?3 AND refused IS NULL",
            )?
            .query_row(params![store, gateway, receipt], |r| r.get(0))
            .optional()?;
        if let Some(seq) = holder {
            refused = Some(format!(
                "duplicate_receipt: receipt already recorded at seq {seq}"
            ));
        }
    }
    if let Some(reason) = &refused {
        tracing::error!(store, gateway, seq = event.seq, id = %event.id, reason, "event kept as a conflict, applied to nothing");
        outcome.refused += 1;
    }
    tx.prepare_cached(
        "INSERT INTO events(store, gateway, seq, id, kind, at, clock_synced, till, body, received_at, duplicate_id, receipt, refused)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
    )?
    .execute(params![
        store,
        gateway,
        event.seq as i64,
        event.id,
        event.kind,
        event.at,
        event.clock_synced,
        event.till,
        event.body.get(),
        received_at,
        id_seen,
        receipt,
        refused
    ])?;
    if refused.is_some() {
        return Ok(());
    }
    if !id_seen && event.kind == crate::protocol::EventKind::CouponRedeemed.as_str() {
        record_redemption(tx, store, gateway, event, outcome)?;
    }
    if id_seen {
        outcome.duplicates += 1;
    } else {
        outcome.stored += 1;
    }
    Ok(())
}

/// Records a coupon redemption; one beyond the coupon's uses (counted by distinct receipts
/// across the fleet) is kept as a conflict. Both events stay; neither is dropped.
fn record_redemption(
    tx: &Transaction<'_>,
    store: &str,
    gateway: &str,
    event: &WireEvent,
    outcome: &mut BatchOutcome,
) -> rusqlite::Result<()> {
    let Ok(body) = serde_json::from_str::<crate::protocol::CouponRedeemed>(event.body.get()) else {
        return Ok(());
    };
    tx.prepare_cached(
        "INSERT OR IGNORE INTO coupon_redemptions(event_id, coupon, store, gateway, receipt, mode, uses)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )?
    .execute(params![
        event.id,
        body.coupon,
        store,
        gateway,
        body.receipt,
        body.mode,
        body.uses.min(i64::MAX as u64) as i64
    ])?;
    let uses: i64 = tx
        .prepare_cached(
            "SELECT COUNT(*) FROM (SELECT DISTINCT store, gateway, receipt FROM coupon_redemptions WHERE coupon = ?1)",
        )?
        .query_row([&body.coupon], |r| r.get(0))?;
    if uses.max(0) as u64 > body.uses {
        let detail = format!(
            "coupon {} redeemed {uses} times (allowed {}); this one at {store}/{gateway} receipt {} ({})",
            body.coupon, body.uses, body.receipt, body.mode
        );
        tracing::warn!(store, gateway, coupon = %body.coupon, %detail, "coupon redeemed beyond its uses; kept as a conflict");
        tx.prepare_cached(
            "INSERT OR IGNORE INTO coupon_conflicts(event_id, coupon, detail) VALUES (?1, ?2, ?3)",
        )?
        .execute(params![event.id, body.coupon, detail])?;
        outcome.coupon_conflicts += 1;
    }
    Ok(())
}

/// What applying an event does beyond storing it: an `identity_seen` is resolved into
/// profiles, a purchase's points go into the ledger (once per event id).
fn apply_effects(
    tx: &Transaction<'_>,
    store: &str,
    gateway: &str,
    seq: i64,
    identity_changes: &mut Vec<String>,
) -> rusqlite::Result<()> {
    let (kind, body, id): (String, String, String) = tx
        .prepare_cached(
            "SELECT kind, body, id FROM events WHERE store = ?1 AND gateway = ?2 AND seq = ?3",
        )?
        .query_row(params![store, gateway, seq], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })?;
    let (kind, id): (String, String) = (kind, id);
    let change = if kind == crate::protocol::EventKind::IdentitySeen.as_str() {
        super::profiles::apply_seen(tx, &body)?
    } else if kind == crate::protocol::EventKind::Purchase.as_str() {
        match serde_json::from_str::<crate::protocol::Purchase>(&body) {
            Ok(purchase) => match &purchase.customer {
                Some(customer) => super::profiles::add_points(
                    tx,
                    &id,
                    customer,
                    purchase.points.saturating_sub(purchase.points_redeemed),
                    "store",
                )?,
                None => None,
            },
            Err(_) => None,
        }
    } else {
        None
    };
    identity_changes.extend(change);
    Ok(())
}

/// Moves the gateway's ack over every stored event that continues the gap-free prefix and
/// applies those events in seq order.
fn advance(
    tx: &Transaction<'_>,
    store: &str,
    gateway: &str,
    identity_changes: &mut Vec<String>,
) -> rusqlite::Result<u64> {
    let start = acked(tx, store, gateway)?;
    let mut upto = start;
    let mut applied: i64 = tx.query_row(
        "SELECT value FROM counters WHERE name = 'applied'",
        [],
        |r| r.get(0),
    )?;
    loop {
        let next: Vec<i64> = tx
            .prepare_cached(
                "SELECT seq FROM events WHERE store = ?1 AND gateway = ?2 AND seq > ?3 ORDER BY seq LIMIT 1024",
            )?
            .query_map(params![store, gateway, upto as i64], |r| r.get(0))?
            .collect::<rusqlite::Result<_>>()?;
        let before = upto;
        for seq in &next {
            if *seq as u64 != upto + 1 {
                break;
            }
            applied += 1;
            // A refused event fills its slot but is applied to nothing.
            let applied_now = tx
                .prepare_cached(
                    "UPDATE events SET applied = ?1 WHERE store = ?2 AND gateway = ?3 AND seq = ?4 AND refused IS NULL AND duplicate_id = 0",
                )?
                .execute(params![applied, store, gateway, seq])?;
            if applied_now > 0 {
                apply_effects(tx, store, gateway, *seq, identity_changes)?;
            }
            upto += 1;
        }
        if upto == before || upto - before < next.len() as u64 || next.len() < 1024 {
            break;
        }
    }
    if upto != start {
        tx.execute(
            "UPDATE counters SET value = ?1 WHERE name = 'applied'",
            [applied],
        )?;
        tx.execute(
            "INSERT INTO gateways(store, gateway, acked_upto) VALUES (?1, ?2, ?3)
             ON CONFLICT(store, gateway) DO UPDATE SET acked_upto = excluded.acked_upto",
            params![store, gateway, upto as i64],
        )?;
    }
    Ok(upto)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A valid purchase; `id` is a short name made into a ULID, the receipt is per seq.
    fn event(seq: u64, id: &str) -> WireEvent {
        purchase(seq, id, &format!("r-{seq}"))
    }

    fn purchase(seq: u64, id: &str, receipt: &str) -> WireEvent {
        let mut ulid = [b'0'; 26];
        for (slot, b) in ulid.iter_mut().rev().zip(id.bytes().rev()) {
            *slot = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ"[usize::from(b) % 32];
        }
        WireEvent {
            seq,
            id: String::from_utf8(ulid.to_vec()).unwrap(),
            kind: "purchase".into(),
            at: "2026-11-23T13:05:00.123Z".into(),
            clock_synced: true,
            till: "t1".into(),
            body: RawValue::from_string(format!(
                r#"{{"receipt":"{receipt}","lines":[],"total_minor":1,"currency":"EUR","customer":null}}"#
            ))
            .unwrap(),
        }
    }

    #[test]
    fn a_second_purchase_with_a_used_receipt_and_an_invalid_event_fill_their_slots_unapplied() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(&dir.path().join("c.db")).unwrap();
        let mut bad_kind = event(3, "c");
        bad_kind.kind = "teleport".into();
        let mut bad_at = event(4, "d");
        bad_at.at = "yesterday".into();
        let mut not_object = event(5, "e");
        not_object.body = RawValue::from_string("[1]".into()).unwrap();
        let o = store
            .store_batch(
                "s",
                "g",
                &[
                    event(1, "a"),
                    purchase(2, "b", "r-1"),
                    bad_kind,
                    bad_at,
                    not_object,
                ],
            )
            .unwrap();
        assert_eq!((o.acked_upto, o.stored, o.refused), (5, 1, 4));
        let applied: Vec<(i64, Option<i64>, Option<String>)> = store
            .conn
            .prepare("SELECT seq, applied, refused FROM events ORDER BY seq")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert!(applied[0].1.is_some() && applied[0].2.is_none());
        for (seq, applied, refused) in &applied[1..] {
            assert!(applied.is_none(), "seq {seq} was applied");
            assert!(refused.is_some(), "seq {seq} has no reason");
        }
        assert!(applied[1]
            .2
            .as_deref()
            .unwrap()
            .starts_with("duplicate_receipt"));
    }

    #[test]
    fn gap_holds_the_ack_until_filled_and_duplicates_do_not_count() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(&dir.path().join("c.db")).unwrap();
        let o = store
            .store_batch("s", "g", &[event(1, "a"), event(2, "b"), event(4, "d")])
            .unwrap();
        assert_eq!((o.acked_upto, o.stored), (2, 3));
        let o = store
            .store_batch("s", "g", &[event(2, "b"), event(4, "d")])
            .unwrap();
        assert_eq!((o.acked_upto, o.stored, o.duplicates), (2, 0, 2));
        let o = store.store_batch("s", "g", &[event(3, "c")]).unwrap();
        assert_eq!(o.acked_upto, 4);
        let o = store.store_batch("s", "g", &[event(4, "other")]).unwrap();
        assert_eq!((o.acked_upto, o.conflicts), (4, 1));
        let applied: Vec<i64> = store
            .conn
            .prepare("SELECT seq FROM events ORDER BY applied")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(applied, vec![1, 2, 3, 4]);
    }

    fn raw(seq: u64, id: &str, kind: &str, body: serde_json::Value) -> WireEvent {
        WireEvent {
            kind: kind.into(),
            body: RawValue::from_string(body.to_string()).unwrap(),
            ..event(seq, id)
        }
    }

    /// Points go into the ledger once per event id, however often a batch is re-sent, and a
    /// profile's balance sums every ref merged into it.
    #[test]
    fn points_count_once_and_follow_merges() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(&dir.path().join("c.db")).unwrap();
        let card = serde_json::json!({ "kind": "card", "hash": "ab".repeat(32) });
        let seen = |seq, id, customer: &str| {
            raw(
                seq,
                id,
                "identity_seen",
                serde_json::json!({ "customer": customer, "identifiers": [card] }),
            )
        };
        let bought = |seq, id, customer: &str, points: i64, redeemed: i64| {
            raw(
                seq,
                id,
                "purchase",
                serde_json::json!({
                "receipt": format!("r-{id}"), "lines": [{ "sku": "a", "qty": 1, "unit_minor": 100 }],
                "total_minor": 100, "currency": "EUR", "customer": customer,
                "points": points, "points_redeemed": redeemed }),
            )
        };
        let one = [
            seen(1, "a1", "prov:g1:01A"),
            bought(2, "a2", "prov:g1:01A", 10, 0),
        ];
        let outcome = store.store_batch("s1", "g1", &one).unwrap();
        assert_eq!(outcome.acked_upto, 2);
        store.store_batch("s1", "g1", &one).unwrap();
        let two = [
            seen(1, "b1", "prov:g2:01B"),
            bought(2, "b2", "prov:g2:01B", 5, 3),
        ];
        store.store_batch("s2", "g2", &two).unwrap();
        store.store_batch("s2", "g2", &two).unwrap();
        let view = store
            .lookup_profile(&[serde_json::from_value(card.clone()).unwrap()])
            .unwrap()
            .unwrap();
        assert_eq!(view.points, 10 + 5 - 3, "{view:?}");
        let entries: i64 = store
            .conn
            .query_row("SELECT COUNT(*) FROM points_ledger", [], |r| r.get(0))
            .unwrap();
        assert_eq!(entries, 2);
    }

    #[test]
    fn coupon_reservation_is_first_wins_and_retry_safe() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(&dir.path().join("c.db")).unwrap();
        assert!(store
            .reserve_coupon("s", "g", "c-1", None, "r1")
            .unwrap()
            .is_ok());
        assert!(store
            .reserve_coupon("s", "g", "c-1", None, "r1")
            .unwrap()
            .is_ok());
        let refused = store
            .reserve_coupon("s", "g2", "c-1", None, "r9")
            .unwrap()
            .unwrap_err();
        assert_eq!(refused.code, "already_redeemed");
    }
}
