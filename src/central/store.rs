//! Central's storage, on SQLite (the embedded default) or PostgreSQL (several instances on one
//! database): the same logic runs on either through `db::Tx`, each call one transaction.
//! Gateways' batches are stored by `batches.rs` (dedup, acks, application order); their
//! identity and points effects are applied by the resolver in `effects.rs`; profiles, merges
//! and the points ledger live in `profiles/`. This file is the handle the service and the
//! online channel call, the online channel's own queries, and the conformance suite both
//! engines pass.
//!
//! What must not interleave between central instances is locked inside the transaction:
//! gateways, then coupons, then identity, always in that order. Unique constraints back each
//! of them (an event id is applied once, a coupon reserved once, a ledger entry counted once).

use std::sync::{Arc, Mutex};

use serde_json::value::RawValue;

use super::db::{self, params, DbError, Tx};
use crate::protocol::{timestamp, RpcError, WireEvent};

/// A central store failure.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The store could not be opened or migrated.
    #[error("central store {path}: {source}")]
    Open {
        /// The store's path or URL (without its password).
        path: String,
        /// What failed.
        source: DbError,
    },
    /// A read or write failed.
    #[error("central store: {0}")]
    Db(#[from] DbError),
    /// A task panicked while holding the store.
    #[error("central store lock poisoned")]
    Poisoned,
    /// The blocking task running a SQLite transaction failed.
    #[error("central store task: {0}")]
    Task(String),
    /// `postgres://` without the `postgres` feature.
    #[error(
        "central store {0}: this build has no PostgreSQL support (build with --features postgres)"
    )]
    NoPostgres(String),
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
    /// Applied events whose identity or points effects were queued for the resolver.
    pub effects_queued: u64,
}

/// One gateway's batch as central received it (an empty one asks only for the current ack).
#[derive(Debug, Clone)]
pub struct GatewayBatch {
    /// The store id from the topic.
    pub store: String,
    /// The gateway id from the topic.
    pub gateway: String,
    /// Its events, checked (seq order, ids).
    pub events: Vec<WireEvent>,
}

/// Central's store. Cheap to clone: clones share the connection or the pool.
#[derive(Clone)]
pub enum Store {
    /// One SQLite file, one connection, transactions on the blocking pool one at a time.
    Sqlite(Arc<Mutex<rusqlite::Connection>>),
    /// A pool of PostgreSQL connections.
    #[cfg(feature = "postgres")]
    Postgres(deadpool_postgres::Pool),
}

/// Runs `$body` (a future using `$tx`, a `&mut impl Tx`) in one transaction on `$store`, with
/// errors as `$error`. On SQLite the transaction runs on the blocking pool (the captured
/// values move there); on PostgreSQL on a pooled connection.
macro_rules! transaction {
    ($store:expr, $error:ty, |$tx:ident| $body:expr) => {
        match $store {
            Store::Sqlite(conn) => {
                let conn = conn.clone();
                tokio::task::spawn_blocking(move || -> Result<_, $error> {
                    let mut guard = conn.lock().map_err(|_| StoreError::Poisoned)?;
                    let mut tx = db::sqlite::SqliteTx::begin(&mut guard)?;
                    let out = {
                        let $tx = &mut tx;
                        db::ready($body)?
                    };
                    tx.commit()?;
                    Ok(out)
                })
                .await
                .map_err(|e| StoreError::Task(e.to_string()))?
            }
            #[cfg(feature = "postgres")]
            Store::Postgres(pool) => {
                let mut client = pool.get().await.map_err(DbError::from)?;
                let mut tx = db::postgres::PgTx::begin(&mut client).await?;
                let out = {
                    let $tx = &mut tx;
                    $body.await?
                };
                tx.commit().await?;
                Ok(out)
            }
        }
    };
}

impl Store {
    /// Opens (creating and migrating) the store `db` names: `postgres://…` (or
    /// `postgresql://…`) for PostgreSQL, anything else is a SQLite file's path.
    pub async fn open(db: &str) -> Result<Store, StoreError> {
        if db.starts_with("postgres://") || db.starts_with("postgresql://") {
            return Store::open_postgres(db).await;
        }
        Store::open_sqlite(std::path::Path::new(db))
    }

    /// Opens (creating and migrating) a SQLite store.
    pub fn open_sqlite(path: &std::path::Path) -> Result<Store, StoreError> {
        let conn = db::sqlite::open(path).map_err(|source| StoreError::Open {
            path: path.display().to_string(),
            source: source.into(),
        })?;
        Ok(Store::Sqlite(Arc::new(Mutex::new(conn))))
    }

    #[cfg(feature = "postgres")]
    async fn open_postgres(url: &str) -> Result<Store, StoreError> {
        let pool = db::postgres::open(url)
            .await
            .map_err(|source| StoreError::Open {
                path: without_password(url),
                source,
            })?;
        Ok(Store::Postgres(pool))
    }

    #[cfg(not(feature = "postgres"))]
    async fn open_postgres(url: &str) -> Result<Store, StoreError> {
        Err(StoreError::NoPostgres(without_password(url)))
    }

    /// How many transactions may usefully run at once.
    pub fn parallelism(&self) -> usize {
        match self {
            Store::Sqlite(_) => 1,
            #[cfg(feature = "postgres")]
            Store::Postgres(pool) => pool.status().max_size,
        }
    }

    /// Stores a batch durably and returns the ack to send.
    pub async fn store_batch(
        &self,
        store: String,
        gateway: String,
        events: Vec<WireEvent>,
    ) -> Result<BatchOutcome, StoreError> {
        let mut outcomes = self
            .store_batches(Arc::new(vec![GatewayBatch {
                store,
                gateway,
                events,
            }]))
            .await?;
        outcomes.pop().ok_or(StoreError::Task("no outcome".into()))
    }

    /// Stores several gateways' batches in one transaction (one commit, one disk flush, for
    /// what arrived together) and returns each one's outcome, in order. All or none: a
    /// failure leaves every one unacked, to be sent again. The batches are shared, not moved,
    /// so a caller can store them again one by one without copying them beforehand.
    pub async fn store_batches(
        &self,
        batches: Arc<Vec<GatewayBatch>>,
    ) -> Result<Vec<BatchOutcome>, StoreError> {
        transaction!(self, StoreError, |tx| async move {
            Ok::<_, StoreError>(super::batches::store_batches(tx, &batches).await?)
        })
    }

    /// Applies up to `limit` queued identity and points effects (`effects.rs`) in one
    /// transaction; what it did, with the changes to broadcast.
    pub async fn apply_pending(
        &self,
        limit: usize,
    ) -> Result<super::effects::EffectsApplied, StoreError> {
        transaction!(self, StoreError, |tx| async move {
            Ok::<_, StoreError>(super::effects::apply_pending(tx, limit).await?)
        })
    }

    /// Applied events whose identity and points effects the resolver has yet to apply.
    pub async fn pending_effects(&self) -> Result<u64, StoreError> {
        transaction!(self, StoreError, |tx| async move {
            let row = tx
                .query_one("SELECT COUNT(*) FROM pending_effects", &[])
                .await?;
            Ok::<_, StoreError>(row.int(0)?.max(0) as u64)
        })
    }

    /// rpc `coupon.reserve`: the first reservation of a coupon wins; the same receipt asking
    /// again (a retried call) is told it holds the reservation.
    pub async fn reserve_coupon(
        &self,
        store: String,
        gateway: String,
        coupon: String,
        customer: Option<String>,
        receipt: String,
    ) -> Result<Result<(), RpcError>, StoreError> {
        transaction!(self, StoreError, |tx| reserve_coupon(
            tx,
            &store,
            &gateway,
            &coupon,
            customer.as_deref(),
            &receipt
        ))
    }

    /// rpc `profile.lookup`: the profile the identifiers belong to, or none.
    pub async fn lookup_profile(
        &self,
        identifiers: Vec<crate::protocol::Identifier>,
    ) -> Result<Option<crate::protocol::ProfileView>, StoreError> {
        transaction!(self, StoreError, |tx| async move {
            Ok::<_, StoreError>(super::profiles::lookup(tx, &identifiers).await?)
        })
    }

    /// The root `profile` resolves to through central's merges.
    pub async fn resolve_profile(&self, profile: String) -> Result<String, StoreError> {
        transaction!(self, StoreError, |tx| async move {
            Ok::<_, StoreError>(super::profiles::resolve(tx, &profile).await?)
        })
    }

    /// rpc `identity.since`: changes after `rev`, oldest first, at most `limit`.
    pub async fn identity_since(
        &self,
        rev: u64,
        limit: usize,
    ) -> Result<Vec<Box<RawValue>>, StoreError> {
        transaction!(self, StoreError, |tx| async move {
            let rows = tx
                .query(
                    "SELECT change FROM identity_changes WHERE rev > $1 ORDER BY rev LIMIT $2",
                    params![rev, limit as u64],
                )
                .await?;
            let mut changes = Vec::new();
            for row in rows {
                if let Ok(raw) = RawValue::from_string(row.text(0)?) {
                    changes.push(raw);
                }
            }
            Ok::<_, StoreError>(changes)
        })
    }
}

/// `url` with any password replaced, for messages.
fn without_password(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let credentials = &url[scheme + 3..at];
            match credentials.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme + 3], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
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

impl From<DbError> for ChannelError {
    fn from(error: DbError) -> ChannelError {
        ChannelError::Store(StoreError::Db(error))
    }
}

impl Store {
    /// Registers or finds a customer by what the web shop or app knows (hashed already).
    pub async fn register(
        &self,
        identifiers: Vec<crate::protocol::Identifier>,
    ) -> Result<Registered, ChannelError> {
        transaction!(self, ChannelError, |tx| async move {
            let resolved = super::profiles::identify(tx, None, &identifiers)
                .await?
                .ok_or(ChannelError::NothingMergeable)?;
            Ok::<_, ChannelError>(Registered {
                customer: resolved.survivor,
                created: resolved.created,
                changes: resolved.change.into_iter().collect(),
            })
        })
    }

    /// Attaches an identifier (an app token) to a live profile; returns the profile's root and
    /// the change to broadcast.
    pub async fn attach_identifier(
        &self,
        profile: String,
        identifier: crate::protocol::Identifier,
    ) -> Result<(String, Vec<String>), ChannelError> {
        transaction!(self, ChannelError, |tx| async move {
            super::profiles::lock(tx).await?;
            let root = live_root(tx, &profile).await?;
            super::profiles::attach(tx, &identifier, &root).await?;
            let view = super::profiles::view(tx, &root).await?;
            let change =
                super::profiles::record_change(tx, Vec::new(), vec![view], Vec::new()).await?;
            Ok::<_, ChannelError>((root, vec![change]))
        })
    }

    /// The profile `profile` resolves to, with its points and timeline (at most `limit`
    /// entries, newest first).
    pub async fn customer(
        &self,
        profile: String,
        limit: usize,
    ) -> Result<CustomerView, ChannelError> {
        transaction!(self, ChannelError, |tx| customer_view(tx, &profile, limit))
    }

    /// Erases a customer (docs/protocol.md "Identity", `erased`); returns the erased root and
    /// the change to broadcast.
    pub async fn erase(&self, profile: String) -> Result<(String, Vec<String>), ChannelError> {
        let erased = transaction!(self, ChannelError, |tx| async move {
            super::profiles::lock(tx).await?;
            let root = super::profiles::resolve(tx, &profile).await?;
            if super::profiles::is_erased(tx, &root).await? {
                return Err(ChannelError::Erased(root));
            }
            let (root, change) = super::profiles::erase(tx, &profile)
                .await?
                .ok_or_else(|| ChannelError::UnknownCustomer(profile.to_string()))?;
            Ok::<_, ChannelError>((root, vec![change]))
        })?;
        // Without the postgres feature SQLite is the only engine.
        #[allow(irrefutable_let_patterns)]
        if let Store::Sqlite(conn) = self {
            let conn = conn.clone();
            // The old pages are zeroed in the file; a checkpoint moves them out of the WAL too.
            let _ = tokio::task::spawn_blocking(move || {
                if let Ok(conn) = conn.lock() {
                    db::sqlite::checkpoint(&conn);
                }
            })
            .await;
        }
        Ok(erased)
    }

    /// Records a web shop or app purchase once per `order`; it earns `points`.
    pub async fn online_purchase(
        &self,
        customer: String,
        order: String,
        lines: String,
        total_minor: i64,
        currency: String,
        points: i64,
    ) -> Result<OnlinePurchase, ChannelError> {
        transaction!(self, ChannelError, |tx| online_purchase(
            tx,
            &customer,
            &order,
            &lines,
            total_minor,
            &currency,
            points
        ))
    }

    /// Sales, identification and loyalty figures between `from` and `to` (RFC 3339, `to`
    /// exclusive), optionally for one store or one channel (`store` or `online`).
    pub async fn kpis(
        &self,
        from: String,
        to: String,
        store: Option<String>,
        channel: Option<String>,
    ) -> Result<serde_json::Value, StoreError> {
        transaction!(self, StoreError, |tx| kpis(
            tx,
            &from,
            &to,
            store.as_deref(),
            channel.as_deref()
        ))
    }
}

async fn customer_view(
    tx: &mut impl Tx,
    profile: &str,
    limit: usize,
) -> Result<CustomerView, ChannelError> {
    let root = live_root(tx, profile).await?;
    let members = super::profiles::members(tx, &root).await?;
    let view = super::profiles::view(tx, &root).await?;
    let in_store = "SELECT at, kind, store, gateway, body FROM events
         WHERE customer = $1
           AND kind IN ('purchase', 'identity_seen', 'coupon_redeemed')
           AND applied IS NOT NULL AND refused IS NULL
         ORDER BY at DESC LIMIT $2";
    let mut timeline = Vec::new();
    for member in &members {
        for row in tx.query(in_store, params![member, limit as u64]).await? {
            let body: serde_json::Value = serde_json::from_str(&row.text(4)?).unwrap_or_default();
            let mut entry = serde_json::json!({
                "at": row.text(0)?, "kind": row.text(1)?, "channel": "store",
                "store": row.text(2)?, "gateway": row.text(3)?,
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
        for row in tx
            .query(
                "SELECT at, order_id, total_minor, currency, points FROM online_purchases
                 WHERE customer = $1 ORDER BY at DESC LIMIT $2",
                params![member, limit as u64],
            )
            .await?
        {
            timeline.push(serde_json::json!({
                "at": row.text(0)?, "kind": "purchase", "channel": "online",
                "order": row.text(1)?, "total_minor": row.int(2)?,
                "currency": row.text(3)?, "points": row.int(4)?,
            }));
        }
    }
    timeline.sort_by(|a, b| b["at"].as_str().cmp(&a["at"].as_str()));
    timeline.truncate(limit);
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

async fn online_purchase(
    tx: &mut impl Tx,
    customer: &str,
    order: &str,
    lines: &str,
    total_minor: i64,
    currency: &str,
    points: i64,
) -> Result<OnlinePurchase, ChannelError> {
    super::profiles::lock(tx).await?;
    let root = live_root(tx, customer).await?;
    let held = tx
        .query_opt(
            "SELECT customer, total_minor, currency, points FROM online_purchases WHERE order_id = $1",
            params![order],
        )
        .await?;
    let (replayed, points) = match held {
        Some(row) => {
            let same = super::profiles::resolve(tx, &row.text(0)?).await? == root
                && row.int(1)? == total_minor
                && row.text(2)? == currency;
            if !same {
                return Err(ChannelError::OrderConflict(order.to_string()));
            }
            (true, row.int(3)?)
        }
        None => {
            tx.execute(
                "INSERT INTO online_purchases(order_id, customer, total_minor, currency, lines, points, at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7)",
                params![
                    order,
                    customer,
                    total_minor,
                    currency,
                    lines,
                    points,
                    timestamp(std::time::SystemTime::now())
                ],
            )
            .await?;
            (false, points)
        }
    };
    let changes = if replayed {
        Vec::new()
    } else {
        super::profiles::add_points(tx, &format!("online:{order}"), customer, points, "online")
            .await?
            .into_iter()
            .collect()
    };
    let balance = super::profiles::view(tx, &root).await?.points;
    Ok(OnlinePurchase {
        customer: root,
        points,
        balance,
        replayed,
        changes,
    })
}

async fn kpis(
    tx: &mut impl Tx,
    from: &str,
    to: &str,
    store: Option<&str>,
    channel: Option<&str>,
) -> Result<serde_json::Value, StoreError> {
    let dialect = tx.dialect();
    let sum = |field: &str| {
        format!(
            "CAST(COALESCE(SUM({}), 0) AS BIGINT)",
            dialect.json_int("body", field)
        )
    };
    let mut report = serde_json::json!({ "from": from, "to": to });
    if channel.is_none_or(|c| c == "store") {
        let window = "applied IS NOT NULL AND at >= $1 AND at < $2 AND (CAST($3 AS TEXT) IS NULL OR store = $3)";
        let sales = tx
            .query_one(
                &format!(
                    "SELECT COUNT(*), {}, COUNT(customer), {}, {} FROM events WHERE kind = 'purchase' AND {window}",
                    sum("total_minor"),
                    sum("points"),
                    sum("points_redeemed"),
                ),
                params![from, to, store],
            )
            .await?;
        let (purchases, identified) = (sales.int(0)?, sales.int(2)?);
        let coupons = tx
            .query_one(
                &format!(
                    "SELECT COUNT(*), {} FROM events WHERE kind = 'coupon_redeemed' AND {window}",
                    sum("discount_minor")
                ),
                params![from, to, store],
            )
            .await?;
        let identifications = tx
            .query_one(
                &format!("SELECT COUNT(*) FROM events WHERE kind = 'identity_seen' AND {window}"),
                params![from, to, store],
            )
            .await?
            .int(0)?;
        report["store"] = serde_json::json!({
            "purchases": purchases,
            "revenue_minor": sales.int(1)?,
            "identified_purchases": identified,
            "identified_share": if purchases > 0 { identified as f64 / purchases as f64 } else { 0.0 },
            "identifications": identifications,
            "points_earned": sales.int(3)?,
            "points_redeemed": sales.int(4)?,
            "coupon_redemptions": coupons.int(0)?,
            "coupon_discount_minor": coupons.int(1)?,
        });
    }
    if channel.is_none_or(|c| c == "online") && store.is_none() {
        let online = tx
            .query_one(
                "SELECT COUNT(*), CAST(COALESCE(SUM(total_minor), 0) AS BIGINT),
                        CAST(COALESCE(SUM(points), 0) AS BIGINT)
                 FROM online_purchases WHERE at >= $1 AND at < $2",
                params![from, to],
            )
            .await?;
        report["online"] = serde_json::json!({
            "purchases": online.int(0)?, "revenue_minor": online.int(1)?,
            "points_earned": online.int(2)?,
        });
    }
    let conflicts = tx
        .query_one("SELECT COUNT(*) FROM coupon_conflicts", &[])
        .await?
        .int(0)?;
    report["coupon_conflicts"] = conflicts.into();
    Ok(report)
}

/// The live root of `profile`, or why there is none.
async fn live_root(tx: &mut impl Tx, profile: &str) -> Result<String, ChannelError> {
    let root = super::profiles::resolve(tx, profile).await?;
    if super::profiles::is_erased(tx, &root).await? {
        return Err(ChannelError::Erased(root));
    }
    if !super::profiles::exists(tx, &root).await? {
        return Err(ChannelError::UnknownCustomer(profile.to_string()));
    }
    Ok(root)
}

async fn reserve_coupon(
    tx: &mut impl Tx,
    store: &str,
    gateway: &str,
    coupon: &str,
    customer: Option<&str>,
    receipt: &str,
) -> Result<Result<(), RpcError>, StoreError> {
    // The primary key decides between instances racing for the same coupon.
    tx.execute(
        "INSERT INTO coupon_reservations(coupon, store, gateway, customer, receipt, at)
         VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
        params![
            coupon,
            store,
            gateway,
            customer,
            receipt,
            timestamp(std::time::SystemTime::now())
        ],
    )
    .await?;
    let holder = tx
        .query_one(
            "SELECT store, gateway, receipt FROM coupon_reservations WHERE coupon = $1",
            params![coupon],
        )
        .await?;
    if holder.text(0)? == store && holder.text(1)? == gateway && holder.text(2)? == receipt {
        Ok(Ok(()))
    } else {
        Ok(Err(RpcError {
            code: "already_redeemed".into(),
            message: format!("coupon {coupon} is already reserved or redeemed"),
        }))
    }
}

/// Rows of a read-only query, for tests that look at what central holds.
#[cfg(test)]
impl Store {
    async fn rows(&self, sql: &'static str) -> Result<Vec<db::Row>, StoreError> {
        transaction!(self, StoreError, |tx| async move {
            Ok::<_, StoreError>(tx.query(sql, &[]).await?)
        })
    }
}

/// The conformance suite: every case runs on SQLite, and on PostgreSQL when the build has it
/// and `STOREGATE_TEST_POSTGRES` names a server (`.ci/postgres-suite` starts one), each case in
/// a database of its own.
#[cfg(test)]
mod tests {
    use super::*;

    /// A store for one case on each engine, and what to clean up after it.
    struct Engine {
        name: &'static str,
        store: Store,
        _dir: Option<tempfile::TempDir>,
        #[cfg(feature = "postgres")]
        database: Option<(String, String)>,
    }

    async fn engines() -> Vec<Engine> {
        let dir = tempfile::tempdir().unwrap();
        let sqlite = Store::open_sqlite(&dir.path().join("c.db")).unwrap();
        #[allow(unused_mut)]
        let mut engines = vec![Engine {
            name: "sqlite",
            store: sqlite,
            _dir: Some(dir),
            #[cfg(feature = "postgres")]
            database: None,
        }];
        #[cfg(feature = "postgres")]
        if let Some(engine) = postgres_engine().await {
            engines.push(engine);
        }
        engines
    }

    #[cfg(feature = "postgres")]
    async fn postgres_engine() -> Option<Engine> {
        let Ok(server) = std::env::var("STOREGATE_TEST_POSTGRES") else {
            eprintln!("SKIPPED the PostgreSQL engine: STOREGATE_TEST_POSTGRES is not set");
            return None;
        };
        let name = format!("sg_{}", ulid::Ulid::new().to_string().to_lowercase());
        let (admin, connection) = tokio_postgres::connect(&server, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(connection);
        admin
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .unwrap();
        let url = database_url(&server, &name);
        let store = Store::open(&url).await.unwrap();
        Some(Engine {
            name: "postgres",
            store,
            _dir: None,
            database: Some((server, name)),
        })
    }

    /// The URL of database `name` on the server `server` names.
    #[cfg(feature = "postgres")]
    fn database_url(server: &str, name: &str) -> String {
        format!("{}/{name}", server.rsplit_once('/').unwrap().0)
    }

    impl Drop for Engine {
        fn drop(&mut self) {
            #[cfg(feature = "postgres")]
            if let Some((server, name)) = self.database.take() {
                if let Store::Postgres(pool) = &self.store {
                    pool.close();
                }
                // Dropped outside the test's runtime: a thread of its own with a runtime of
                // its own, waited for, so no database is left behind.
                let _ = std::thread::spawn(move || {
                    let runtime = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .unwrap();
                    runtime.block_on(async {
                        let (admin, connection) =
                            tokio_postgres::connect(&server, tokio_postgres::NoTls)
                                .await
                                .unwrap();
                        tokio::spawn(connection);
                        let _ = admin
                            .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                            .await;
                    });
                })
                .join();
            }
        }
    }

    /// A valid purchase; `id` is a short name made into a ULID, the receipt is per seq.
    fn event(seq: u64, id: &str) -> WireEvent {
        purchase(seq, id, &format!("r-{seq}"))
    }

    fn ulid_of(id: &str) -> String {
        let mut ulid = [b'0'; 26];
        for (slot, b) in ulid.iter_mut().rev().zip(id.bytes().rev()) {
            *slot = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ"[usize::from(b) % 32];
        }
        String::from_utf8(ulid.to_vec()).unwrap()
    }

    fn purchase(seq: u64, id: &str, receipt: &str) -> WireEvent {
        WireEvent {
            seq,
            id: ulid_of(id),
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

    fn raw(seq: u64, id: &str, kind: &str, body: serde_json::Value) -> WireEvent {
        WireEvent {
            kind: kind.into(),
            body: RawValue::from_string(body.to_string()).unwrap(),
            ..event(seq, id)
        }
    }

    /// Applies every queued effect, as central's resolver does; the changes recorded.
    async fn settle(engine: &Engine) -> Vec<String> {
        let mut changes = Vec::new();
        loop {
            let resolved = engine.store.apply_pending(1024).await.unwrap();
            changes.extend(resolved.changes);
            if resolved.events == 0 {
                return changes;
            }
        }
    }

    async fn store(engine: &Engine, s: &str, g: &str, events: &[WireEvent]) -> BatchOutcome {
        engine
            .store
            .store_batch(s.into(), g.into(), events.to_vec())
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn a_second_purchase_with_a_used_receipt_and_an_invalid_event_fill_their_slots_unapplied()
    {
        for engine in engines().await {
            let mut bad_kind = event(3, "c");
            bad_kind.kind = "teleport".into();
            let mut bad_at = event(4, "d");
            bad_at.at = "yesterday".into();
            let mut not_object = event(5, "e");
            not_object.body = RawValue::from_string("[1]".into()).unwrap();
            let o = store(
                &engine,
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
            .await;
            assert_eq!(
                (o.acked_upto, o.stored, o.refused),
                (5, 1, 4),
                "{}",
                engine.name
            );
            let rows = engine
                .store
                .rows("SELECT seq, applied, refused FROM events ORDER BY seq")
                .await
                .unwrap();
            assert!(
                rows[0].opt_int(1).unwrap().is_some() && rows[0].opt_text(2).unwrap().is_none()
            );
            for row in &rows[1..] {
                let seq = row.int(0).unwrap();
                assert!(
                    row.opt_int(1).unwrap().is_none(),
                    "{}: seq {seq} was applied",
                    engine.name
                );
                assert!(
                    row.opt_text(2).unwrap().is_some(),
                    "{}: seq {seq} has no reason",
                    engine.name
                );
            }
            assert!(rows[1].text(2).unwrap().starts_with("duplicate_receipt"));
        }
    }

    #[tokio::test]
    async fn gap_holds_the_ack_until_filled_and_duplicates_do_not_count() {
        for engine in engines().await {
            let o = store(
                &engine,
                "s",
                "g",
                &[event(1, "a"), event(2, "b"), event(4, "d")],
            )
            .await;
            assert_eq!((o.acked_upto, o.stored), (2, 3), "{}", engine.name);
            let o = store(&engine, "s", "g", &[event(2, "b"), event(4, "d")]).await;
            assert_eq!(
                (o.acked_upto, o.stored, o.duplicates),
                (2, 0, 2),
                "{}",
                engine.name
            );
            let o = store(&engine, "s", "g", &[event(3, "c")]).await;
            assert_eq!(o.acked_upto, 4, "{}", engine.name);
            let o = store(&engine, "s", "g", &[event(4, "other")]).await;
            assert_eq!((o.acked_upto, o.conflicts), (4, 1), "{}", engine.name);
            let applied: Vec<i64> = engine
                .store
                .rows("SELECT seq FROM events ORDER BY applied")
                .await
                .unwrap()
                .iter()
                .map(|r| r.int(0).unwrap())
                .collect();
            assert_eq!(applied, vec![1, 2, 3, 4], "{}", engine.name);
        }
    }

    /// Batches that arrived together share a transaction and each gets its own ack, a
    /// gateway's second batch in the group seeing its first.
    #[tokio::test]
    async fn batches_stored_together_are_acked_each_in_order() {
        for engine in engines().await {
            let group = |store: &str, events: Vec<WireEvent>| GatewayBatch {
                store: store.into(),
                gateway: "g".into(),
                events,
            };
            let outcomes = engine
                .store
                .store_batches(Arc::new(vec![
                    group("a", vec![event(1, "a1"), event(2, "a2")]),
                    group("b", vec![event(1, "b1")]),
                    group("a", vec![event(3, "a3")]),
                    group("b", vec![event(3, "b3")]),
                ]))
                .await
                .unwrap();
            let acks: Vec<u64> = outcomes.iter().map(|o| o.acked_upto).collect();
            assert_eq!(acks, vec![2, 1, 3, 1], "{}", engine.name);
            let stored: u64 = outcomes.iter().map(|o| o.stored).sum();
            assert_eq!(stored, 5, "{}", engine.name);
        }
    }

    /// A NUL character in an event (JSON allows `\u0000`; PostgreSQL's jsonb and text do not)
    /// makes the event a refused one, kept, its slot filled: not a batch that fails forever.
    /// Reports, the customer view and erasure still work over it.
    #[tokio::test]
    async fn a_nul_character_in_an_event_is_refused_and_kept_not_a_failed_batch() {
        for engine in engines().await {
            let card = serde_json::json!({ "kind": "card", "hash": "cd".repeat(32) });
            let seen = raw(
                1,
                "n1",
                "identity_seen",
                serde_json::json!({ "customer": "prov:g:01N00000000000000000000000", "identifiers": [card] }),
            );
            let poisoned = raw(
                2,
                "n2",
                "identity_seen",
                serde_json::json!({ "customer": "prov:g:01N00000000000000000000000", "identifiers": [card], "note": "a\u{0}b" }),
            );
            assert!(poisoned.body.get().contains("\\u0000"));
            let mut bad_at = event(3, "n3");
            bad_at.at = "2026-11-26\u{0}".into();
            let o = store(&engine, "s", "g", &[seen, poisoned, bad_at, event(4, "n4")]).await;
            assert_eq!((o.acked_upto, o.refused), (4, 2), "{}", engine.name);
            settle(&engine).await;
            let report = engine
                .store
                .kpis(
                    "2000-01-01T00:00:00Z".into(),
                    "2100-01-01T00:00:00Z".into(),
                    None,
                    None,
                )
                .await
                .unwrap();
            assert_eq!(report["store"]["purchases"], 1, "{}: {report}", engine.name);
            let root = engine
                .store
                .resolve_profile("prov:g:01N00000000000000000000000".into())
                .await
                .unwrap();
            let view = engine.store.customer(root.clone(), 10).await.unwrap();
            assert_eq!(view.customer, root, "{}", engine.name);
            let (erased, _) = engine.store.erase(root.clone()).await.unwrap();
            assert_eq!(erased, root, "{}", engine.name);
        }
    }

    /// The same event id at a second seq fills that slot but is applied once: the database's
    /// unique constraint on first-applied ids holds it, not only the logic.
    #[tokio::test]
    async fn an_event_id_at_a_second_seq_is_applied_once() {
        for engine in engines().await {
            let o = store(&engine, "s", "g", &[event(1, "a"), event(2, "a")]).await;
            assert_eq!(
                (o.acked_upto, o.stored, o.duplicates),
                (2, 1, 1),
                "{}",
                engine.name
            );
            let rows = engine
                .store
                .rows("SELECT COUNT(*) FROM events WHERE applied IS NOT NULL")
                .await
                .unwrap();
            assert_eq!(rows[0].int(0).unwrap(), 1, "{}", engine.name);
        }
    }

    /// Points go into the ledger once per event id, however often a batch is re-sent, and a
    /// profile's balance sums every ref merged into it.
    #[tokio::test]
    async fn points_count_once_and_follow_merges() {
        for engine in engines().await {
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
                seen(1, "a1", "prov:g1:01A00000000000000000000000"),
                bought(2, "a2", "prov:g1:01A00000000000000000000000", 10, 0),
            ];
            let outcome = store(&engine, "s1", "g1", &one).await;
            assert_eq!(outcome.acked_upto, 2);
            store(&engine, "s1", "g1", &one).await;
            let two = [
                seen(1, "b1", "prov:g2:01B00000000000000000000000"),
                bought(2, "b2", "prov:g2:01B00000000000000000000000", 5, 3),
            ];
            store(&engine, "s2", "g2", &two).await;
            store(&engine, "s2", "g2", &two).await;
            settle(&engine).await;
            let view = engine
                .store
                .lookup_profile(vec![serde_json::from_value(card.clone()).unwrap()])
                .await
                .unwrap()
                .unwrap();
            assert_eq!(view.points, 10 + 5 - 3, "{}: {view:?}", engine.name);
            let entries = engine
                .store
                .rows("SELECT COUNT(*) FROM points_ledger")
                .await
                .unwrap();
            assert_eq!(entries[0].int(0).unwrap(), 2, "{}", engine.name);
            for provisional in [
                "prov:g1:01A00000000000000000000000",
                "prov:g2:01B00000000000000000000000",
            ] {
                let root = engine
                    .store
                    .resolve_profile(provisional.into())
                    .await
                    .unwrap();
                assert_eq!(root, view.profile, "{}", engine.name);
            }
        }
    }

    /// A provisional ref merged into one profile and then identified with a card of an older
    /// profile moves to that one, and its points go with it: the first profile keeps the rest
    /// of its balance, the older one gains exactly the moved ref's points.
    #[tokio::test]
    async fn a_provisional_ref_identified_again_takes_its_points_to_its_new_profile() {
        for engine in engines().await {
            let card = |n: u8| serde_json::json!({ "kind": "card", "hash": format!("{n:02x}").repeat(32) });
            let seen = |seq, customer: &str, card: serde_json::Value| {
                raw(
                    seq,
                    &format!("s{seq}"),
                    "identity_seen",
                    serde_json::json!({ "customer": customer, "identifiers": [card] }),
                )
            };
            let bought = |seq, customer: &str, points: i64| {
                raw(
                    seq,
                    &format!("s{seq}"),
                    "purchase",
                    serde_json::json!({
                    "receipt": format!("r-{seq}"), "lines": [{ "sku": "a", "qty": 1, "unit_minor": 100 }],
                    "total_minor": 100, "currency": "EUR", "customer": customer, "points": points }),
                )
            };
            let events = [
                // The older profile, holding card 2 and 7 points.
                seen(1, "prov:g:01Y00000000000000000000000", card(2)),
                bought(2, "prov:g:01Y00000000000000000000000", 7),
                // The newer one, holding card 1, with 10 points from ref X and 4 from ref Z.
                seen(3, "prov:g:01X00000000000000000000000", card(1)),
                bought(4, "prov:g:01X00000000000000000000000", 10),
                seen(5, "prov:g:01Z00000000000000000000000", card(1)),
                bought(6, "prov:g:01Z00000000000000000000000", 4),
                // X shows card 2: X is the older profile's now.
                seen(7, "prov:g:01X00000000000000000000000", card(2)),
            ];
            for event in &events {
                store(&engine, "s", "g", std::slice::from_ref(event)).await;
                settle(&engine).await;
            }
            let balance = |n: u8| {
                let store = &engine.store;
                async move {
                    let asked = serde_json::from_value(card(n)).unwrap();
                    let view = store.lookup_profile(vec![asked]).await.unwrap().unwrap();
                    (view.profile, view.points)
                }
            };
            let (newer, newer_points) = balance(1).await;
            let (older, older_points) = balance(2).await;
            assert_ne!(newer, older, "{}", engine.name);
            assert_eq!(newer_points, 4, "{}", engine.name);
            assert_eq!(older_points, 7 + 10, "{}", engine.name);
            let x = engine
                .store
                .resolve_profile("prov:g:01X00000000000000000000000".into())
                .await
                .unwrap();
            assert_eq!(x, older, "{}", engine.name);
        }
    }

    /// An identification naming something other than a profile ref, or an identifier that is
    /// not a hash, would reach every box in a change each box refuses whole (losing the other
    /// merges and balances it carried, and leaving a gap in every box's revs); a purchase with
    /// points past any balance would make every resolver round fail. Each is refused on arrival
    /// and kept, and what arrives with them is applied and sent as every box accepts it.
    #[tokio::test]
    async fn an_event_no_box_or_balance_could_take_is_refused_on_arrival() {
        for engine in engines().await {
            let card = "cd".repeat(32);
            let prov = format!("prov:g:{}", ulid_of("good"));
            let events = [
                raw(
                    1,
                    "b1",
                    "identity_seen",
                    serde_json::json!({ "customer": "bogus",
                        "identifiers": [{ "kind": "card", "hash": card }] }),
                ),
                raw(
                    2,
                    "b2",
                    "identity_seen",
                    serde_json::json!({ "customer": prov,
                        "identifiers": [{ "kind": "card", "hash": "NOT-A-HASH" }] }),
                ),
                raw(
                    3,
                    "b3",
                    "purchase",
                    serde_json::json!({ "receipt": "r-3", "total_minor": 1, "currency": "EUR",
                        "customer": prov, "points": i64::MAX }),
                ),
                raw(
                    4,
                    "b4",
                    "identity_seen",
                    serde_json::json!({ "customer": prov,
                        "identifiers": [{ "kind": "card", "hash": card }] }),
                ),
                raw(
                    5,
                    "b5",
                    "purchase",
                    serde_json::json!({ "receipt": "r-5", "total_minor": 1, "currency": "EUR",
                        "customer": prov, "points": 5 }),
                ),
            ];
            let outcome = store(&engine, "s", "g", &events).await;
            assert_eq!(
                (outcome.acked_upto, outcome.refused),
                (5, 3),
                "{}",
                engine.name
            );
            let changes = settle(&engine).await;
            assert!(!changes.is_empty(), "{}", engine.name);
            for change in &changes {
                let change: crate::protocol::IdentityChange = serde_json::from_str(change).unwrap();
                assert_eq!(change.check(), Ok(()), "{}: {change:?}", engine.name);
            }
            let asked = serde_json::from_value(serde_json::json!({ "kind": "card", "hash": card }))
                .unwrap();
            let view = engine
                .store
                .lookup_profile(vec![asked])
                .await
                .unwrap()
                .unwrap();
            assert_eq!(view.points, 5, "{}", engine.name);
            assert_eq!(
                engine.store.pending_effects().await.unwrap(),
                0,
                "{}",
                engine.name
            );
            // One queued by a central from before the check: applied to nothing, not sent.
            engine
                .store
                .rows(
                    r#"INSERT INTO pending_effects(applied, id, kind, body) VALUES (1099511627776,
                       '01JD0000000000000000000009', 'identity_seen',
                       '{"customer":"bogus","identifiers":[{"kind":"card","hash":"0000000000000000000000000000000000000000000000000000000000000009"}]}')"#,
                )
                .await
                .unwrap();
            assert_eq!(
                settle(&engine).await,
                Vec::<String>::new(),
                "{}",
                engine.name
            );
            assert_eq!(
                engine.store.pending_effects().await.unwrap(),
                0,
                "{}",
                engine.name
            );
        }
    }

    #[tokio::test]
    async fn coupon_reservation_is_first_wins_and_retry_safe() {
        for engine in engines().await {
            let reserve = |g: &str, receipt: &str| {
                engine.store.reserve_coupon(
                    "s".into(),
                    g.into(),
                    "c-1".into(),
                    None,
                    receipt.into(),
                )
            };
            assert!(reserve("g", "r1").await.unwrap().is_ok(), "{}", engine.name);
            assert!(reserve("g", "r1").await.unwrap().is_ok(), "{}", engine.name);
            let refused = reserve("g2", "r9").await.unwrap().unwrap_err();
            assert_eq!(refused.code, "already_redeemed", "{}", engine.name);
        }
    }

    /// Identity changes get gap-free revs and `identity.since` pages through them in order.
    #[tokio::test]
    async fn identity_changes_are_numbered_and_served_in_rev_order() {
        for engine in engines().await {
            let events: Vec<WireEvent> = (1..=5)
                .map(|n| {
                    raw(
                        n,
                        &format!("i{n}"),
                        "identity_seen",
                        serde_json::json!({
                            "customer": format!("prov:g1:{}", ulid_of(&format!("i{n}"))),
                            "identifiers": [{ "kind": "card", "hash": format!("{n:064x}") }],
                        }),
                    )
                })
                .collect();
            // One resolver round per event: a change each.
            for event in &events {
                store(&engine, "s", "g1", std::slice::from_ref(event)).await;
                assert_eq!(settle(&engine).await.len(), 1, "{}", engine.name);
            }
            let first = engine.store.identity_since(0, 3).await.unwrap();
            let rest = engine.store.identity_since(3, 1000).await.unwrap();
            let revs: Vec<u64> = first
                .iter()
                .chain(&rest)
                .map(|c| {
                    serde_json::from_str::<serde_json::Value>(c.get()).unwrap()["rev"]
                        .as_u64()
                        .unwrap()
                })
                .collect();
            assert_eq!(revs, vec![1, 2, 3, 4, 5], "{}", engine.name);
        }
    }

    /// A single-use coupon redeemed offline at two stores: one conflict, both events kept.
    #[tokio::test]
    async fn a_coupon_redeemed_beyond_its_uses_is_one_conflict_with_both_events_kept() {
        for engine in engines().await {
            let redeemed = |id: &str, receipt: &str| {
                raw(
                    1,
                    id,
                    "coupon_redeemed",
                    serde_json::json!({ "coupon": "c-9", "customer": null, "receipt": receipt,
                        "discount_minor": 500, "mode": "offline", "uses": 1 }),
                )
            };
            let a = store(&engine, "s1", "g1", &[redeemed("x1", "r1")]).await;
            let b = store(&engine, "s2", "g1", &[redeemed("x2", "r2")]).await;
            assert_eq!(
                (a.coupon_conflicts, b.coupon_conflicts),
                (0, 1),
                "{}",
                engine.name
            );
            let kept = engine
                .store
                .rows("SELECT COUNT(*) FROM events WHERE kind = 'coupon_redeemed' AND applied IS NOT NULL")
                .await
                .unwrap();
            assert_eq!(kept[0].int(0).unwrap(), 2, "{}", engine.name);
        }
    }

    /// What a store's identity graph says, with central's own `p:` refs (random in each
    /// store) replaced by the smallest given name (ref or identifier hash) in their profile.
    async fn canonical_graph(
        engine: &Engine,
        refs: &[String],
        hashes: &[String],
    ) -> std::collections::BTreeMap<String, (String, i64)> {
        let mut roots = std::collections::HashMap::new();
        for name in refs {
            let root = engine.store.resolve_profile(name.clone()).await.unwrap();
            roots.insert(name.clone(), root);
        }
        let owners = engine
            .store
            .rows("SELECT hash, profile FROM profile_identifiers")
            .await
            .unwrap();
        for row in owners {
            let (hash, owner) = (row.text(0).unwrap(), row.text(1).unwrap());
            if hashes.contains(&hash) {
                let root = engine.store.resolve_profile(owner).await.unwrap();
                // The profile the boxes are shown for it lists it.
                let asked: crate::protocol::Identifier =
                    serde_json::from_value(serde_json::json!({ "kind": "card", "hash": hash }))
                        .unwrap();
                let view = engine.store.lookup_profile(vec![asked]).await.unwrap();
                let view = view.unwrap();
                assert_eq!(view.profile, root, "{}", engine.name);
                assert!(
                    view.identifiers.iter().any(|i| i.hash == hash),
                    "{}: {hash} not in {view:?}",
                    engine.name
                );
                roots.insert(hash, root);
            }
        }
        let mut names: std::collections::HashMap<String, String> = std::collections::HashMap::new();
        for (name, root) in &roots {
            let canonical = names.entry(root.clone()).or_insert_with(|| name.clone());
            if name < canonical {
                *canonical = name.clone();
            }
        }
        // What each root's balance must be: its members' ledger entries, summed here from the
        // ledger itself, not from the totals central keeps.
        let mut ledger_balances: std::collections::HashMap<String, i64> =
            std::collections::HashMap::new();
        for row in engine
            .store
            .rows("SELECT profile, points FROM points_ledger")
            .await
            .unwrap()
        {
            let root = engine
                .store
                .resolve_profile(row.text(0).unwrap())
                .await
                .unwrap();
            *ledger_balances.entry(root).or_default() += row.int(1).unwrap();
        }
        let mut graph = std::collections::BTreeMap::new();
        for (name, root) in &roots {
            let points = match engine.store.customer(root.clone(), 1).await {
                Ok(view) => {
                    let expected = ledger_balances.get(root).copied().unwrap_or(0);
                    assert_eq!(view.points, expected, "{}: balance of {root}", engine.name);
                    view.points
                }
                Err(_) => -1,
            };
            graph.insert(name.clone(), (names[root].clone(), points));
        }
        graph
    }

    /// Under the identity lock, the resolver's walk of merges to roots looks merges up by key,
    /// however many the fleet has made. PostgreSQL hashed the whole merge table for each walk
    /// once it held a few thousand rows (each resolver round then grew with the fleet's
    /// history): the plans must not scan it.
    #[tokio::test]
    async fn the_walks_of_merges_look_merges_up_by_key() {
        for engine in engines().await {
            let aliases: Vec<[db::Value; 2]> = (0..20_000)
                .map(|n| [format!("m{n}").into(), format!("r{}", n % 2_000).into()])
                .collect();
            let plans: Result<Vec<String>, StoreError> = async {
                transaction!(&engine.store, StoreError, |tx| async move {
                    let mut merges = db::Pipeline::new();
                    merges.add_insert(
                        "INSERT INTO profile_aliases(from_ref, to_ref)",
                        ["TEXT", "TEXT"],
                        &aliases,
                    );
                    merges.run(tx).await?;
                    if tx.dialect() == db::Dialect::Postgres {
                        tx.execute("ANALYZE profile_aliases", &[]).await?;
                    }
                    super::super::profiles::lock(tx).await?;
                    let keys: Vec<[db::Value; 1]> =
                        (0..300).map(|n| [format!("m{}", n * 7).into()]).collect();
                    let mut plans = Vec::new();
                    let walk = super::super::profiles::resolution::WALK_TO_ROOTS;
                    for (statement, values) in
                        db::values_statements(tx.dialect(), walk, ["TEXT"], &keys)
                    {
                        // The plan's text, and the column it comes in.
                        let (explain, column) = match tx.dialect() {
                            db::Dialect::Sqlite => ("EXPLAIN QUERY PLAN", 3),
                            db::Dialect::Postgres => ("EXPLAIN", 0),
                        };
                        let rows = tx.query(&format!("{explain} {statement}"), &values).await?;
                        let plan: Vec<String> =
                            rows.iter().filter_map(|r| r.text(column).ok()).collect();
                        plans.push(plan.join("\n"));
                    }
                    Ok::<_, StoreError>(plans)
                })
            }
            .await;
            let plans = plans.unwrap();
            for plan in plans {
                assert!(
                    !plan.contains("Seq Scan on profile_aliases")
                        && !plan.contains("SCAN profile_aliases"),
                    "{}: {plan}",
                    engine.name
                );
            }
        }
    }

    /// Set-wise reads give every answer whatever the number of keys: thousands of keys and
    /// rows, some absent, some repeated, NULLs among the rows, read in chunks on SQLite and as
    /// array parameters on PostgreSQL.
    #[tokio::test]
    async fn set_wise_reads_answer_for_thousands_of_keys_on_both_engines() {
        for engine in engines().await {
            // How many distinct keys were found; each row's (key, number, merged into).
            type Answers = (usize, Vec<(String, Option<i64>, Option<String>)>);
            let answers: Result<Answers, StoreError> = async {
                transaction!(&engine.store, StoreError, |tx| async move {
                    let merges: Vec<[db::Value; 2]> = (0..2_500)
                        .map(|n| [format!("m{n}").into(), format!("r{}", n % 7).into()])
                        .collect();
                    let mut writes = db::Pipeline::new();
                    writes.add_insert(
                        "INSERT INTO profile_aliases(from_ref, to_ref)",
                        ["TEXT", "TEXT"],
                        &merges,
                    );
                    writes.run(tx).await?;
                    // 2,500 present, 100 absent, the first 50 asked twice.
                    let keys: Vec<String> =
                        (0..2_600).chain(0..50).map(|n| format!("m{n}")).collect();
                    let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
                    let found = db::lookup_in(
                        tx,
                        "SELECT from_ref FROM profile_aliases WHERE from_ref",
                        &[],
                        &keys,
                    )
                    .await?;
                    let distinct: std::collections::HashSet<String> =
                        found.iter().map(|r| r.text(0)).collect::<Result<_, _>>()?;
                    let rows: Vec<[db::Value; 2]> = (0..2_600)
                        .map(|n: i64| {
                            let number = if n % 3 == 0 {
                                db::Value::Null
                            } else {
                                n.into()
                            };
                            [format!("m{n}").into(), number]
                        })
                        .collect();
                    let mut answers = Vec::new();
                    for row in db::query_values(
                        tx,
                        "SELECT given.column1, given.column2,
                                (SELECT to_ref FROM profile_aliases WHERE from_ref = given.column1)
                         FROM {values} AS given",
                        ["TEXT", "BIGINT"],
                        &rows,
                    )
                    .await?
                    {
                        answers.push((row.text(0)?, row.opt_int(1)?, row.opt_text(2)?));
                    }
                    Ok::<_, StoreError>((distinct.len(), answers))
                })
            }
            .await;
            let (distinct, mut answers) = answers.unwrap();
            assert_eq!(distinct, 2_500, "{}", engine.name);
            answers.sort();
            answers.dedup();
            assert_eq!(answers.len(), 2_600, "{}", engine.name);
            for (name, number, to) in answers {
                let n: i64 = name[1..].parse().unwrap();
                assert_eq!(number, (n % 3 != 0).then_some(n), "{}: {name}", engine.name);
                let expected = (n < 2_500).then(|| format!("r{}", n % 7));
                assert_eq!(to, expected, "{}: {name}", engine.name);
            }
        }
    }

    /// PostgreSQL plans every run of a cached statement for its keys and the tables as they are
    /// now: a generic plan, settled on while the tables were young, kept scanning them as they
    /// grew (the coupon check, run on an empty table at start, went on scanning for hours).
    #[tokio::test]
    async fn cached_statements_are_planned_for_each_run_not_once_for_young_tables() {
        for engine in engines().await {
            if engine.name != "postgres" {
                continue;
            }
            let plans: Result<Vec<db::Row>, StoreError> = async {
                transaction!(&engine.store, StoreError, |tx| async move {
                    // A short list, as a round with one redemption sends: PostgreSQL settles
                    // on a generic plan for those (it keeps re-planning long ones).
                    let coupons: Vec<String> = (0..2).map(|n| format!("c-{n}")).collect();
                    let coupons: Vec<&str> = coupons.iter().map(String::as_str).collect();
                    for _ in 0..12 {
                        db::lookup_in(
                            tx,
                            "SELECT coupon FROM coupon_redemptions WHERE coupon",
                            &[],
                            &coupons,
                        )
                        .await?;
                    }
                    Ok::<_, StoreError>(
                        tx.query(
                            "SELECT CAST(generic_plans AS BIGINT), CAST(custom_plans AS BIGINT)
                             FROM pg_prepared_statements
                             WHERE statement LIKE 'SELECT coupon FROM coupon_redemptions%'",
                            &[],
                        )
                        .await?,
                    )
                })
            }
            .await;
            let plans = plans.unwrap();
            assert_eq!(plans.len(), 1, "the lookup is one cached statement");
            assert_eq!(plans[0].int(0).unwrap(), 0, "no generic plan");
            assert_eq!(plans[0].int(1).unwrap(), 12, "planned for each of its runs");
        }
    }

    /// A multi-row insert keeps every row and NULL whatever the number of rows, and on
    /// PostgreSQL is one statement for any number (a `VALUES` list was a statement per row
    /// count, each prepared and kept by every connection, and planned with a parameter per
    /// value).
    #[tokio::test]
    async fn inserts_of_any_number_of_rows_keep_every_row_in_one_statement_shape() {
        for engine in engines().await {
            let outcome: Result<(Vec<db::Row>, Vec<db::Row>), StoreError> = async {
                transaction!(&engine.store, StoreError, |tx| async move {
                    let mut next = 0;
                    for count in [1, 7, 700] {
                        let rows: Vec<[db::Value; 4]> = (next..next + count)
                            .map(|n: i64| {
                                let verified = if n % 3 == 0 {
                                    db::Value::Null
                                } else {
                                    n.into()
                                };
                                [
                                    format!("{n:064x}").into(),
                                    "card".into(),
                                    verified,
                                    "p:x".into(),
                                ]
                            })
                            .collect();
                        next += count;
                        let mut writes = db::Pipeline::new();
                        writes.add_insert(
                            "INSERT INTO profile_identifiers(hash, kind, verified, profile)",
                            ["TEXT", "TEXT", "BIGINT", "TEXT"],
                            &rows,
                        );
                        writes.run(tx).await?;
                    }
                    let stored = tx
                        .query(
                            "SELECT COUNT(*), COUNT(verified), CAST(SUM(verified) AS BIGINT)
                             FROM profile_identifiers",
                            &[],
                        )
                        .await?;
                    let shapes = if tx.dialect() == db::Dialect::Postgres {
                        tx.query(
                            "SELECT statement FROM pg_prepared_statements
                             WHERE statement LIKE 'INSERT INTO profile_identifiers%'",
                            &[],
                        )
                        .await?
                    } else {
                        Vec::new()
                    };
                    Ok::<_, StoreError>((stored, shapes))
                })
            }
            .await;
            let (stored, shapes) = outcome.unwrap();
            let verified: Vec<i64> = (0..708).filter(|n| n % 3 != 0).collect();
            assert_eq!(stored[0].int(0).unwrap(), 708, "{}: every row", engine.name);
            assert_eq!(
                stored[0].int(1).unwrap(),
                verified.len() as i64,
                "{}: NULLs stay NULL",
                engine.name
            );
            assert_eq!(stored[0].int(2).unwrap(), verified.iter().sum::<i64>());
            if engine.name == "postgres" {
                assert_eq!(shapes.len(), 1, "one statement for 1, 7 and 700 rows");
            }
        }
    }

    /// The resolver applies a group of identifications on one snapshot and writes once; the
    /// outcome is the one of applying the same events a transaction each: the same refs and
    /// identifiers together, the same balances.
    #[tokio::test]
    async fn a_group_resolves_like_the_same_events_one_at_a_time() {
        let mut rng = fastrand::Rng::with_seed(14);
        let refs: Vec<String> = (0..16)
            .map(|n| format!("prov:g1:{}", ulid_of(&format!("c{n}"))))
            .chain(["p:fixed-old".to_string(), "p:fixed-unknown".to_string()])
            .collect();
        let hashes: Vec<String> = (1..=14).map(|n| format!("{n:064x}")).collect();
        let mut events = Vec::new();
        for seq in 1..=240u64 {
            let customer = &refs[rng.usize(..refs.len())];
            let event = if rng.u8(..3) > 0 {
                let mut identifiers = Vec::new();
                for _ in 0..rng.usize(1..3) {
                    let hash = &hashes[rng.usize(..hashes.len())];
                    // The last four are phones, verified or not: an unverified one decides
                    // nothing.
                    let index = hashes.iter().position(|h| h == hash).unwrap();
                    identifiers.push(if index >= 10 {
                        serde_json::json!({ "kind": "phone", "hash": hash, "verified": rng.bool() })
                    } else {
                        serde_json::json!({ "kind": "card", "hash": hash })
                    });
                }
                raw(
                    seq,
                    &format!("e{seq}"),
                    "identity_seen",
                    serde_json::json!({ "customer": customer, "identifiers": identifiers }),
                )
            } else {
                raw(
                    seq,
                    &format!("e{seq}"),
                    "purchase",
                    serde_json::json!({
                        "receipt": format!("r-{seq}"), "lines": [{ "sku": "a", "qty": 1, "unit_minor": 100 }],
                        "total_minor": 100, "currency": "EUR", "customer": customer,
                        "points": rng.i64(1..20), "points_redeemed": rng.i64(0..3) }),
                )
            };
            events.push(event);
        }
        let mut graphs = Vec::new();
        for grouped in [false, true] {
            for engine in engines().await {
                // A profile older than any the events create, holding the first card.
                engine
                    .store
                    .rows("INSERT INTO profiles(ref, created, points) VALUES ('p:fixed-old', 0, 0)")
                    .await
                    .unwrap();
                engine
                    .store
                    .rows(
                        "INSERT INTO profile_identifiers(hash, kind, verified, profile)
                         VALUES ('0000000000000000000000000000000000000000000000000000000000000001', 'card', NULL, 'p:fixed-old')",
                    )
                    .await
                    .unwrap();
                if grouped {
                    for batch in events.chunks(40) {
                        store(&engine, "s", "g1", batch).await;
                    }
                    let resolved = engine.store.apply_pending(1024).await.unwrap();
                    assert_eq!(resolved.events, events.len(), "{}: one group", engine.name);
                } else {
                    for event in &events {
                        store(&engine, "s", "g1", std::slice::from_ref(event)).await;
                        settle(&engine).await;
                    }
                }
                let graph = canonical_graph(&engine, &refs, &hashes).await;
                graphs.push((format!("{} grouped={grouped}", engine.name), graph));
            }
        }
        let (first_name, first) = &graphs[0];
        // The events do merge profiles, or the comparison would prove little.
        let profiles: std::collections::HashSet<&String> = first.values().map(|(n, _)| n).collect();
        assert!(profiles.len() < first.len() / 2, "{first:?}");
        for (name, graph) in &graphs[1..] {
            assert_eq!(graph, first, "{name} differs from {first_name}");
        }
    }

    /// Everything a store holds about events, as comparable rows (application numbers as
    /// their order, not their values).
    async fn event_tables(engine: &Engine) -> Vec<String> {
        let mut tables = Vec::new();
        for sql in [
            "SELECT store, gateway, seq, id, kind, duplicate_id, receipt, refused,
                    CASE WHEN applied IS NULL THEN 0 ELSE 1 END FROM events ORDER BY store, gateway, seq",
            "SELECT store, gateway, acked_upto FROM gateways ORDER BY store, gateway",
            "SELECT store, gateway, seq, id FROM seq_conflicts ORDER BY store, gateway, seq",
            "SELECT event_id, coupon, store, gateway, receipt FROM coupon_redemptions ORDER BY event_id",
            "SELECT event_id, coupon FROM coupon_conflicts ORDER BY event_id",
            "SELECT events.store, events.gateway, events.seq, pending_effects.id FROM pending_effects
             JOIN events ON events.applied = pending_effects.applied ORDER BY 1, 2, 3",
        ] {
            let rows = engine.store.rows(sql).await.unwrap();
            tables.push(format!("{:?}", rows.iter().map(|r| &r.0).collect::<Vec<_>>()));
        }
        tables
    }

    /// Batches stored as one group (set-wise, two batches of one gateway in two rounds) leave
    /// exactly what storing them one transaction each leaves, with the same outcomes: gaps
    /// filled in the group, re-sends, a seq re-used, a receipt used twice, a single-use coupon
    /// redeemed at two stores, an id at a second seq.
    #[tokio::test]
    async fn a_group_of_batches_stores_what_one_at_a_time_stores() {
        let redeemed = |seq, id: &str, receipt: &str| {
            raw(
                seq,
                id,
                "coupon_redeemed",
                serde_json::json!({ "coupon": "c-1", "customer": null, "receipt": receipt,
                    "discount_minor": 500, "mode": "offline", "uses": 1 }),
            )
        };
        let seen = |seq, id: &str| {
            raw(
                seq,
                id,
                "identity_seen",
                serde_json::json!({ "customer": "prov:g:01ARZ3NDEKTSV4RRFFQ69G5FAV",
                    "identifiers": [{ "kind": "card", "hash": "ef".repeat(32) }] }),
            )
        };
        let batch = |store: &str, events: Vec<WireEvent>| GatewayBatch {
            store: store.into(),
            gateway: "g".into(),
            events,
        };
        let batches = vec![
            batch("a", vec![event(1, "a1"), event(2, "a2"), seen(3, "a3")]),
            batch("b", vec![event(2, "b2"), redeemed(3, "b3", "rb")]),
            batch("a", vec![event(3, "a3"), purchase(4, "a4", "r-1")]),
            batch("b", vec![event(1, "b1")]),
            batch("c", vec![redeemed(1, "c1", "rc"), event(2, "a2")]),
            batch("a", vec![event(2, "other"), event(5, "a5")]),
            batch("c", Vec::new()),
        ];
        let mut results = Vec::new();
        for grouped in [true, false] {
            for engine in engines().await {
                let outcomes = if grouped {
                    engine
                        .store
                        .store_batches(Arc::new(batches.clone()))
                        .await
                        .unwrap()
                } else {
                    let mut outcomes = Vec::new();
                    for one in &batches {
                        let stored = engine.store.store_batches(Arc::new(vec![one.clone()]));
                        outcomes.extend(stored.await.unwrap());
                    }
                    outcomes
                };
                let tables = event_tables(&engine).await;
                results.push((
                    format!("{} grouped={grouped}", engine.name),
                    outcomes,
                    tables,
                ));
            }
        }
        let (name, outcomes, tables) = &results[0];
        let acks: Vec<u64> = outcomes.iter().map(|o| o.acked_upto).collect();
        assert_eq!(acks, vec![3, 0, 4, 3, 2, 5, 2], "{name}");
        let total = |f: fn(&BatchOutcome) -> u64| outcomes.iter().map(f).sum::<u64>();
        assert_eq!(total(|o| o.conflicts), 1, "{name}: seq 2 of a re-used");
        assert_eq!(total(|o| o.coupon_conflicts), 1, "{name}: c-1 twice");
        assert_eq!(total(|o| o.refused), 1, "{name}: receipt r-1 twice");
        for (other, other_outcomes, other_tables) in &results[1..] {
            assert_eq!(other_outcomes, outcomes, "{other} vs {name}");
            assert_eq!(other_tables, tables, "{other} vs {name}");
        }
    }

    /// A database from before central's keys compared byte for byte (its key columns under
    /// the database's default collation) migrates with its rows: the keys become `C`, and
    /// what it held still dedups and acks.
    #[cfg(feature = "postgres")]
    #[tokio::test]
    async fn a_database_whose_keys_used_its_default_collation_migrates_with_its_rows() {
        let Some(engine) = postgres_engine().await else {
            return;
        };
        let Some((server, name)) = engine.database.clone() else {
            return;
        };
        let outcome = store(&engine, "s", "g", &[event(1, "a1"), event(2, "a2")]).await;
        assert_eq!(outcome.acked_upto, 2);
        let url = database_url(&server, &name);
        let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(connection);
        // Every (table, column) that compares byte for byte.
        let c_keys = || async {
            client
                .query(
                    "SELECT table_name::text, column_name::text
                     FROM information_schema.columns
                     WHERE table_schema = 'public' AND collation_name = 'C' ORDER BY 1, 2",
                    &[],
                )
                .await
                .unwrap()
                .iter()
                .map(|row| (row.get(0), row.get(1)))
                .collect::<Vec<(String, String)>>()
        };
        let keys = c_keys().await;
        assert!(
            keys.contains(&("events".into(), "id".into()))
                && keys.contains(&("profile_aliases".into(), "to_ref".into())),
            "{keys:?}"
        );
        // Back to the schema the migration before it left, rows and all.
        let mut downgrade = String::new();
        for (table, column) in &keys {
            downgrade.push_str(&format!(
                "ALTER TABLE {table} ALTER COLUMN {column} TYPE TEXT COLLATE \"default\";"
            ));
        }
        let version = client
            .query_one("SELECT version FROM schema_version", &[])
            .await
            .unwrap()
            .get::<_, i64>(0);
        downgrade.push_str(&format!(
            "UPDATE schema_version SET version = {};",
            version - 1
        ));
        client.batch_execute(&downgrade).await.unwrap();
        assert!(c_keys().await.is_empty());

        let reopened = Engine {
            name: "postgres",
            store: Store::open(&url).await.unwrap(),
            _dir: None,
            database: None,
        };
        assert_eq!(c_keys().await, keys);
        let again = store(&reopened, "s", "g", &[event(1, "a1"), event(2, "a2")]).await;
        assert_eq!(
            (again.acked_upto, again.stored),
            (2, 0),
            "a re-send of what it held"
        );
        let next = store(&reopened, "s", "g", &[event(3, "a3")]).await;
        assert_eq!((next.acked_upto, next.stored), (3, 1));
        drop(reopened);
        drop(engine);
    }
}
