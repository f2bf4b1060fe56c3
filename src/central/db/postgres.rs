//! Central on PostgreSQL: a pool of connections, several central instances on one database.
//! What SQLite gets from having one writer, this gets from transaction-scoped advisory locks
//! (one per gateway, per coupon, and one for identity resolution, always taken in that
//! order) and unique constraints; the application order comes from a sequence, never from
//! memory.

use bytes::BytesMut;
use tokio_postgres::types::{to_sql_checked, IsNull, ToSql, Type};

use super::{DbError, Dialect, Row, Tx, Value};

/// The schema, one migration per entry; `schema_version` says how many have run.
const SCHEMA: &[&str] = &[
    "
    CREATE TABLE gateways(
        store TEXT NOT NULL, gateway TEXT NOT NULL, acked_upto BIGINT NOT NULL,
        PRIMARY KEY(store, gateway));
    CREATE TABLE events(
        store TEXT NOT NULL, gateway TEXT NOT NULL, seq BIGINT NOT NULL,
        id TEXT NOT NULL, kind TEXT NOT NULL, at TEXT NOT NULL, clock_synced BIGINT NOT NULL,
        till TEXT NOT NULL, body TEXT NOT NULL, received_at TEXT NOT NULL,
        duplicate_id BIGINT NOT NULL, applied BIGINT, receipt TEXT, refused TEXT,
        PRIMARY KEY(store, gateway, seq));
    CREATE INDEX events_id ON events(id);
    CREATE UNIQUE INDEX events_id_first ON events(id) WHERE duplicate_id = 0;
    CREATE INDEX events_receipt ON events(store, gateway, receipt) WHERE receipt IS NOT NULL;
    CREATE INDEX events_customer
        ON events((CASE WHEN strpos(body, '\\u0000') = 0 THEN body::jsonb ->> 'customer' END))
        WHERE kind IN ('purchase', 'identity_seen', 'coupon_redeemed');
    CREATE TABLE seq_conflicts(
        store TEXT NOT NULL, gateway TEXT NOT NULL, seq BIGINT NOT NULL, id TEXT NOT NULL,
        kind TEXT NOT NULL, at TEXT NOT NULL, till TEXT NOT NULL, body TEXT NOT NULL,
        received_at TEXT NOT NULL, PRIMARY KEY(id));
    CREATE TABLE coupon_reservations(
        coupon TEXT PRIMARY KEY, store TEXT NOT NULL, gateway TEXT NOT NULL,
        customer TEXT, receipt TEXT NOT NULL, at TEXT NOT NULL);
    CREATE TABLE coupon_redemptions(
        event_id TEXT PRIMARY KEY, coupon TEXT NOT NULL, store TEXT NOT NULL,
        gateway TEXT NOT NULL, receipt TEXT NOT NULL, mode TEXT NOT NULL, uses BIGINT NOT NULL);
    CREATE INDEX coupon_redemptions_coupon ON coupon_redemptions(coupon);
    CREATE TABLE coupon_conflicts(
        event_id TEXT PRIMARY KEY, coupon TEXT NOT NULL, detail TEXT NOT NULL);
    CREATE TABLE identity_changes(rev BIGINT PRIMARY KEY, change TEXT NOT NULL);
    CREATE TABLE counters(name TEXT PRIMARY KEY, value BIGINT NOT NULL);
    INSERT INTO counters(name, value) VALUES ('identity_rev', 0), ('profile_seq', 0);
    CREATE SEQUENCE applied_seq INCREMENT BY 1024;
    CREATE TABLE profiles(ref TEXT PRIMARY KEY, created BIGINT NOT NULL, points BIGINT NOT NULL,
        erased_at TEXT);
    CREATE TABLE profile_identifiers(hash TEXT PRIMARY KEY, kind TEXT NOT NULL, verified BIGINT,
        profile TEXT NOT NULL);
    CREATE INDEX profile_identifiers_profile ON profile_identifiers(profile);
    CREATE TABLE profile_aliases(from_ref TEXT PRIMARY KEY, to_ref TEXT NOT NULL);
    CREATE INDEX profile_aliases_to ON profile_aliases(to_ref);
    CREATE TABLE points_ledger(entry TEXT PRIMARY KEY, profile TEXT NOT NULL,
        points BIGINT NOT NULL, source TEXT NOT NULL, at TEXT NOT NULL);
    CREATE INDEX points_ledger_profile ON points_ledger(profile);
    CREATE TABLE online_purchases(order_id TEXT PRIMARY KEY, customer TEXT NOT NULL,
        total_minor BIGINT NOT NULL, currency TEXT NOT NULL, lines TEXT NOT NULL,
        points BIGINT NOT NULL, at TEXT NOT NULL);",
    // Identity and points effects leave the ack path: an applied event with effects is queued
    // in the transaction that stores it; the resolver applies the queue in application order.
    // An id's first event is found through the unique index on first ids; the plain one goes.
    // Each ref's running points total: a balance sums refs, not a purchase history.
    "CREATE TABLE pending_effects(applied BIGINT PRIMARY KEY, id TEXT NOT NULL,
        kind TEXT NOT NULL, body TEXT NOT NULL);
    CREATE TABLE ref_points(ref TEXT PRIMARY KEY, points BIGINT NOT NULL);
    INSERT INTO ref_points(ref, points) SELECT profile, SUM(points) FROM points_ledger GROUP BY profile;
    DROP INDEX events_id;",
    // Each event's customer ref in a column central fills from the body it already reads,
    // instead of an index over the body as jsonb (parsed again for every event stored, and
    // by every query that asked for a customer's events).
    "ALTER TABLE events ADD COLUMN customer TEXT;
    UPDATE events SET customer = CASE
            WHEN strpos(body, '\\u0000') <> 0 THEN NULL
            WHEN jsonb_typeof(body::jsonb -> 'customer') = 'string' THEN body::jsonb ->> 'customer'
        END
        WHERE kind IN ('purchase', 'identity_seen', 'coupon_redeemed');
    DROP INDEX events_customer;
    CREATE INDEX events_customer ON events(customer) WHERE customer IS NOT NULL;",
    // A root profile holds its members' points and identifiers, so a view reads the root
    // alone.
    super::ROOTS_HOLD_THEIR_MEMBERS,
    // Keys compare byte for byte, as SQLite's do: stores, gateways, event ids, coupons, refs
    // and hashes are identifiers, not words to sort for a reader. Under the database's
    // default collation (a libc locale, even C.UTF-8) every comparison in their indexes
    // went through strcoll: for the same 30 s at 15,000 events/s the events inserts took
    // 14.1 s with it and 11.1 s without, the walks of merges 3.1 s and 2.5. The tables keep
    // their rows; each changed column's indexes are rebuilt.
    "ALTER TABLE gateways ALTER COLUMN store TYPE TEXT COLLATE \"C\",
        ALTER COLUMN gateway TYPE TEXT COLLATE \"C\";
    ALTER TABLE events ALTER COLUMN store TYPE TEXT COLLATE \"C\",
        ALTER COLUMN gateway TYPE TEXT COLLATE \"C\", ALTER COLUMN id TYPE TEXT COLLATE \"C\",
        ALTER COLUMN receipt TYPE TEXT COLLATE \"C\", ALTER COLUMN customer TYPE TEXT COLLATE \"C\";
    ALTER TABLE seq_conflicts ALTER COLUMN id TYPE TEXT COLLATE \"C\";
    ALTER TABLE coupon_reservations ALTER COLUMN coupon TYPE TEXT COLLATE \"C\";
    ALTER TABLE coupon_redemptions ALTER COLUMN event_id TYPE TEXT COLLATE \"C\",
        ALTER COLUMN coupon TYPE TEXT COLLATE \"C\";
    ALTER TABLE coupon_conflicts ALTER COLUMN event_id TYPE TEXT COLLATE \"C\";
    ALTER TABLE counters ALTER COLUMN name TYPE TEXT COLLATE \"C\";
    ALTER TABLE profiles ALTER COLUMN ref TYPE TEXT COLLATE \"C\";
    ALTER TABLE profile_identifiers ALTER COLUMN hash TYPE TEXT COLLATE \"C\",
        ALTER COLUMN profile TYPE TEXT COLLATE \"C\";
    ALTER TABLE profile_aliases ALTER COLUMN from_ref TYPE TEXT COLLATE \"C\",
        ALTER COLUMN to_ref TYPE TEXT COLLATE \"C\";
    ALTER TABLE points_ledger ALTER COLUMN entry TYPE TEXT COLLATE \"C\",
        ALTER COLUMN profile TYPE TEXT COLLATE \"C\";
    ALTER TABLE ref_points ALTER COLUMN ref TYPE TEXT COLLATE \"C\";
    ALTER TABLE online_purchases ALTER COLUMN order_id TYPE TEXT COLLATE \"C\",
        ALTER COLUMN customer TYPE TEXT COLLATE \"C\";",
];

/// Connections central keeps open to PostgreSQL.
const POOL_SIZE: usize = 16;

/// The migration lock's key: instances starting together migrate one at a time.
const MIGRATION_LOCK: i64 = 0x5354_4f52_4547_4154;

/// Connects a pool to `url` (`postgres://user@host:port/db`) and migrates the schema.
pub async fn open(url: &str) -> Result<deadpool_postgres::Pool, DbError> {
    let mut config: tokio_postgres::Config = url.parse()?;
    // No JIT: central's statements are many and short, and the planner's estimate for a
    // recursive walk of merges is large enough to switch JIT on, which then spends over a
    // hundred milliseconds compiling a query that runs in a few.
    // Custom plans only: a cached statement otherwise settles on a generic plan after five
    // runs, planned for the tables as they were then. Central prepares its statements on an
    // empty or young database, and a key lookup planned as a scan of a table of a thousand
    // rows stays a scan while the table grows, until the next ANALYZE (the coupon check
    // took 4-5 ms a call, and grew with the table, where a plan for the keys takes 0.1 ms).
    const SETTINGS: &str = "-c jit=off -c plan_cache_mode=force_custom_plan";
    let options = match config.get_options() {
        Some(given) => format!("{given} {SETTINGS}"),
        None => SETTINGS.to_string(),
    };
    config.options(&options);
    let manager = deadpool_postgres::Manager::from_config(
        config,
        tokio_postgres::NoTls,
        deadpool_postgres::ManagerConfig {
            recycling_method: deadpool_postgres::RecyclingMethod::Fast,
        },
    );
    let pool = deadpool_postgres::Pool::builder(manager)
        .max_size(POOL_SIZE)
        .runtime(deadpool_postgres::Runtime::Tokio1)
        .build()
        .map_err(|e| DbError::Encode(format!("pool: {e}")))?;
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await?;
    tx.batch_execute("CREATE TABLE IF NOT EXISTS schema_version(version BIGINT NOT NULL)")
        .await?;
    let version: i64 = match tx
        .query_opt("SELECT version FROM schema_version", &[])
        .await?
    {
        Some(row) => row.get(0),
        None => {
            tx.execute("INSERT INTO schema_version(version) VALUES (0)", &[])
                .await?;
            0
        }
    };
    for (index, sql) in SCHEMA.iter().enumerate().skip(version.max(0) as usize) {
        tx.batch_execute(sql).await?;
        tx.execute(
            "UPDATE schema_version SET version = $1",
            &[&(index as i64 + 1)],
        )
        .await?;
    }
    tx.commit().await?;
    Ok(pool)
}

/// A transaction on one pooled connection.
pub struct PgTx<'a> {
    tx: deadpool_postgres::Transaction<'a>,
    /// Locks this transaction holds: asking again would cost a round trip for nothing.
    held: std::collections::HashSet<String>,
}

impl<'a> PgTx<'a> {
    /// Begins a transaction (read committed; what must not interleave is locked).
    pub async fn begin(client: &'a mut deadpool_postgres::Object) -> Result<PgTx<'a>, DbError> {
        Ok(PgTx {
            tx: client.transaction().await?,
            held: std::collections::HashSet::new(),
        })
    }

    /// Commits.
    pub async fn commit(self) -> Result<(), DbError> {
        Ok(self.tx.commit().await?)
    }
}

impl ToSql for Value {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut BytesMut,
    ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        match self {
            Value::Null => Ok(IsNull::Yes),
            Value::Int(value) => match *ty {
                Type::INT8 => value.to_sql(ty, out),
                Type::INT4 => i32::try_from(*value)?.to_sql(ty, out),
                Type::INT2 => i16::try_from(*value)?.to_sql(ty, out),
                Type::BOOL => (*value != 0).to_sql(ty, out),
                Type::TEXT | Type::VARCHAR => value.to_string().to_sql(ty, out),
                _ => Err(format!("an integer for a {ty} parameter").into()),
            },
            Value::Text(text) => text.as_str().to_sql(ty, out),
            Value::List(items) => items.as_slice().to_sql(ty, out),
        }
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    to_sql_checked!();
}

fn row(row: &tokio_postgres::Row) -> Result<Row, DbError> {
    let mut values = Vec::with_capacity(row.len());
    for (index, column) in row.columns().iter().enumerate() {
        let value = match *column.type_() {
            Type::INT8 => row.try_get::<_, Option<i64>>(index)?.map(Value::Int),
            Type::INT4 => row
                .try_get::<_, Option<i32>>(index)?
                .map(|v| Value::Int(v.into())),
            Type::INT2 => row
                .try_get::<_, Option<i16>>(index)?
                .map(|v| Value::Int(v.into())),
            Type::BOOL => row
                .try_get::<_, Option<bool>>(index)?
                .map(|v| Value::Int(v.into())),
            Type::TEXT | Type::VARCHAR | Type::NAME => {
                row.try_get::<_, Option<String>>(index)?.map(Value::Text)
            }
            ref other => {
                return Err(DbError::Type(format!(
                    "column {} has type {other}",
                    column.name()
                )))
            }
        };
        values.push(value.unwrap_or(Value::Null));
    }
    Ok(Row(values))
}

fn refs(params: &[Value]) -> Vec<&(dyn ToSql + Sync)> {
    params.iter().map(|p| p as &(dyn ToSql + Sync)).collect()
}

impl Tx for PgTx<'_> {
    fn dialect(&self) -> Dialect {
        Dialect::Postgres
    }

    async fn execute(&mut self, sql: &str, params: &[Value]) -> Result<u64, DbError> {
        let statement = self.tx.prepare_cached(sql).await?;
        Ok(self.tx.execute(&statement, &refs(params)).await?)
    }

    async fn query(&mut self, sql: &str, params: &[Value]) -> Result<Vec<Row>, DbError> {
        let statement = self.tx.prepare_cached(sql).await?;
        self.tx
            .query(&statement, &refs(params))
            .await?
            .iter()
            .map(row)
            .collect()
    }

    async fn pipeline(
        &mut self,
        statements: &[(String, Vec<Value>)],
    ) -> Result<Vec<Vec<Row>>, DbError> {
        // Issued together on one connection, tokio-postgres pipelines them: each request goes
        // out when its future is first polled, and the futures are first polled in order, so
        // the server runs them in order. Prepared first, all of them: a statement that still
        // had to be prepared would otherwise send its request after later ones.
        let tx = &self.tx;
        let prepared = futures_util::future::try_join_all(
            statements.iter().map(|(sql, _)| tx.prepare_cached(sql)),
        )
        .await?;
        let answers = futures_util::future::try_join_all(prepared.iter().zip(statements).map(
            |(statement, (_, params))| async move {
                let rows = tx.query(statement, &refs(params)).await?;
                rows.iter().map(row).collect::<Result<Vec<Row>, DbError>>()
            },
        ))
        .await?;
        Ok(answers)
    }

    fn lock_statements(&mut self, keys: &[String]) -> Vec<(String, Vec<Value>)> {
        let fresh: Vec<[Value; 1]> = keys
            .iter()
            .filter(|key| self.held.insert(key.to_string()))
            .map(|key| [Value::from(key)])
            .collect();
        // One statement for many: the keys' array is scanned, and each lock taken, in order.
        super::pipeline::values_statements(
            Dialect::Postgres,
            "SELECT CAST(pg_advisory_xact_lock(hashtextextended(given.column1, 0)) AS TEXT)
             FROM {values} AS given",
            ["TEXT"],
            &fresh,
        )
    }

    fn applied_block_sql(&self) -> &'static str {
        // The sequence steps by APPLIED_BLOCK: each value starts a block of its own.
        "SELECT nextval('applied_seq')"
    }
}
