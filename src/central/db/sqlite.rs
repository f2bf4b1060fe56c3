//! Central on SQLite: one file, one connection, one writer at a time (the embedded default).

use std::path::Path;

use rusqlite::types::{ToSqlOutput, ValueRef};
use rusqlite::{Connection, Transaction};

use super::{DbError, Dialect, Row, Tx, Value};

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
    // 5 -> 6: an event id is applied at most once, enforced by the database (the same id at
    // another seq fills that slot marked `duplicate_id`), as on PostgreSQL.
    "CREATE UNIQUE INDEX events_id_first ON events(id) WHERE duplicate_id = 0;",
    // 6 -> 7: identity and points effects leave the ack path. An applied event with effects
    // is queued here in the transaction that stores it; the resolver applies the queue in
    // application order, a group at a time, and deletes what it applied. An id's first event
    // is found through the unique index of 5 -> 6; the plain index on ids goes. Each ref's
    // running points total, so a balance sums the refs merged into a profile, not its history.
    "CREATE TABLE pending_effects(applied INTEGER PRIMARY KEY, id TEXT NOT NULL,
        kind TEXT NOT NULL, body TEXT NOT NULL);
    CREATE TABLE ref_points(ref TEXT PRIMARY KEY, points INTEGER NOT NULL) WITHOUT ROWID;
    INSERT INTO ref_points(ref, points) SELECT profile, SUM(points) FROM points_ledger GROUP BY profile;
    DROP INDEX events_id;",
    // 7 -> 8: each event's customer ref in a column central fills from the body it already
    // reads, instead of an index over the body's JSON (parsed again by the database for every
    // event stored, and by every query that asked for a customer's events).
    "ALTER TABLE events ADD COLUMN customer TEXT;
    UPDATE events SET customer = json_extract(body, '$.customer')
        WHERE kind IN ('purchase', 'identity_seen', 'coupon_redeemed')
          AND json_type(body, '$.customer') = 'text';
    DROP INDEX events_customer;
    CREATE INDEX events_customer ON events(customer) WHERE customer IS NOT NULL;",
    // 8 -> 9: a root profile holds its members' points and identifiers, so a view reads the
    // root alone (`super::ROOTS_HOLD_THEIR_MEMBERS`).
    super::ROOTS_HOLD_THEIR_MEMBERS,
];

/// Opens (creating and migrating) central's SQLite file.
pub fn open(path: &Path) -> Result<Connection, rusqlite::Error> {
    let mut conn = Connection::open(path)?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    // An erased customer's identifiers must not linger in freed pages.
    conn.pragma_update(None, "secure_delete", "ON")?;
    let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    for (v, sql) in SCHEMA.iter().enumerate().skip(version.max(0) as usize) {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", v as i64 + 1)?;
        tx.commit()?;
    }
    Ok(conn)
}

/// Moves an erased customer's old pages out of the WAL too (they are zeroed in the file).
pub fn checkpoint(conn: &Connection) {
    let _ = conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()));
}

/// A transaction on central's SQLite file.
pub struct SqliteTx<'conn> {
    tx: Transaction<'conn>,
}

impl<'conn> SqliteTx<'conn> {
    /// Begins a transaction that takes the write lock at once (there is one writer anyway).
    pub fn begin(conn: &'conn mut Connection) -> Result<SqliteTx<'conn>, DbError> {
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        Ok(SqliteTx { tx })
    }

    /// Commits.
    pub fn commit(self) -> Result<(), DbError> {
        Ok(self.tx.commit()?)
    }
}

/// `$1` parameters as SQLite's `?1` (SQLite reads `$1` as a named parameter, numbered by
/// first appearance, which would bind the wrong values when a statement names `$2` first).
fn numbered(sql: &str) -> std::borrow::Cow<'_, str> {
    if !sql.contains('$') {
        return sql.into();
    }
    let mut out = String::with_capacity(sql.len());
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '$' && chars.peek().is_some_and(char::is_ascii_digit) {
            out.push('?');
        } else {
            out.push(c);
        }
    }
    out.into()
}

impl rusqlite::ToSql for Value {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(match self {
            Value::Null => ToSqlOutput::Borrowed(ValueRef::Null),
            Value::Int(value) => ToSqlOutput::Borrowed(ValueRef::Integer(*value)),
            Value::Text(text) => ToSqlOutput::Borrowed(ValueRef::Text(text.as_bytes())),
            Value::List(_) => {
                return Err(rusqlite::Error::ToSqlConversionFailure(
                    "an array parameter on SQLite".into(),
                ))
            }
        })
    }
}

fn value(column: ValueRef<'_>) -> Result<Value, DbError> {
    match column {
        ValueRef::Null => Ok(Value::Null),
        ValueRef::Integer(value) => Ok(Value::Int(value)),
        ValueRef::Text(text) => Ok(Value::Text(String::from_utf8_lossy(text).into_owned())),
        ValueRef::Real(real) => Err(DbError::Type(format!("a real number {real}"))),
        ValueRef::Blob(_) => Err(DbError::Type("a blob".into())),
    }
}

impl Tx for SqliteTx<'_> {
    fn dialect(&self) -> Dialect {
        Dialect::Sqlite
    }

    async fn execute(&mut self, sql: &str, params: &[Value]) -> Result<u64, DbError> {
        let changed = self
            .tx
            .prepare_cached(&numbered(sql))?
            .execute(rusqlite::params_from_iter(params))?;
        Ok(changed as u64)
    }

    async fn query(&mut self, sql: &str, params: &[Value]) -> Result<Vec<Row>, DbError> {
        let mut statement = self.tx.prepare_cached(&numbered(sql))?;
        let columns = statement.column_count();
        let mut rows = statement.query(rusqlite::params_from_iter(params))?;
        let mut out = Vec::new();
        while let Some(row) = rows.next()? {
            let mut values = Vec::with_capacity(columns);
            for index in 0..columns {
                values.push(value(row.get_ref(index)?)?);
            }
            out.push(Row(values));
        }
        Ok(out)
    }

    fn lock_statements(&mut self, _keys: &[String]) -> Vec<(String, Vec<Value>)> {
        Vec::new()
    }

    fn applied_block_sql(&self) -> &'static str {
        "UPDATE counters SET value = value + 1024 WHERE name = 'applied' RETURNING value - 1023"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A store file at schema `version`, as an older central left it.
    fn store_at_schema(path: &Path, version: usize) -> Connection {
        let conn = Connection::open(path).unwrap();
        for sql in &SCHEMA[..version] {
            conn.execute_batch(sql).unwrap();
        }
        conn.pragma_update(None, "user_version", version as i64)
            .unwrap();
        conn
    }

    /// A store written before the resolver (schema 6) opens with each ref's running points
    /// total taken from its ledger, so balances carry over.
    #[test]
    fn a_store_from_before_the_resolver_keeps_its_balances() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("central.db");
        {
            let conn = store_at_schema(&path, 6);
            conn.execute_batch(
                "INSERT INTO points_ledger(entry, profile, points, source, at) VALUES
                 ('e1', 'prov:g:01A', 10, 'store', 'x'), ('e2', 'prov:g:01A', 5, 'store', 'x'),
                 ('e3', 'p:1', -3, 'online', 'x');",
            )
            .unwrap();
        }
        let conn = open(&path).unwrap();
        let totals: Vec<(String, i64)> = conn
            .prepare("SELECT ref, points FROM ref_points ORDER BY ref")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(
            totals,
            vec![("p:1".to_string(), -3), ("prov:g:01A".to_string(), 15)]
        );
    }

    /// A store from before the customer column (schema 7) opens with each event's customer
    /// ref taken from its body: a string ref of a purchase, identification or redemption,
    /// nothing for other kinds or a ref that is not a string.
    #[test]
    fn a_store_from_before_the_customer_column_keeps_its_customers_events() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("central.db");
        {
            let conn = store_at_schema(&path, 7);
            let event = |seq: i64, kind: &str, body: &str| {
                conn.execute(
                    "INSERT INTO events(store, gateway, seq, id, kind, at, clock_synced, till,
                        body, received_at, duplicate_id) VALUES ('s', 'g', ?1, ?2, ?3, 'x', 1,
                        't', ?4, 'x', 0)",
                    rusqlite::params![seq, format!("id{seq}"), kind, body],
                )
                .unwrap();
            };
            event(1, "purchase", r#"{"receipt":"r1","customer":"p:1"}"#);
            event(
                2,
                "identity_seen",
                r#"{"customer":"prov:g:01A","identifiers":[]}"#,
            );
            event(3, "coupon_redeemed", r#"{"customer":"p:2","coupon":"c"}"#);
            event(4, "purchase", r#"{"receipt":"r2","customer":7}"#);
            event(5, "print_job", r#"{"customer":"p:3"}"#);
            event(6, "purchase", r#"{"receipt":"r3"}"#);
        }
        let conn = open(&path).unwrap();
        let customers: Vec<Option<String>> = conn
            .prepare("SELECT customer FROM events ORDER BY seq")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        let text = |s: &str| Some(s.to_string());
        assert_eq!(
            customers,
            vec![
                text("p:1"),
                text("prov:g:01A"),
                text("p:2"),
                None,
                None,
                None
            ]
        );
    }

    /// A store from before roots held their members (schema 8) opens with each root profile's
    /// points the sum over the refs merged into it, at any depth, and every identifier on the
    /// root its profile resolves to.
    #[test]
    fn a_store_from_before_roots_held_their_members_keeps_balances_and_identifiers() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("central.db");
        {
            let conn = store_at_schema(&path, 8);
            conn.execute_batch(
                "INSERT INTO profiles(ref, created, points) VALUES
                     ('p:1', 1, 0), ('p:2', 2, 0), ('p:3', 3, 0), ('p:4', 4, 0);
                 INSERT INTO profile_aliases(from_ref, to_ref) VALUES
                     ('p:2', 'p:1'), ('prov:a', 'p:2'), ('prov:b', 'p:1'), ('prov:c', 'p:3');
                 INSERT INTO ref_points(ref, points) VALUES
                     ('p:1', 1), ('p:2', 20), ('prov:a', 300), ('prov:b', 4000), ('p:3', 5),
                     ('prov:c', -2), ('prov:lone', 60000);
                 INSERT INTO profile_identifiers(hash, kind, verified, profile) VALUES
                     ('h1', 'card', NULL, 'p:1'), ('h2', 'card', NULL, 'p:2'),
                     ('h3', 'phone', 1, 'p:3');",
            )
            .unwrap();
        }
        let conn = open(&path).unwrap();
        let read = |sql: &str| -> Vec<(String, String)> {
            conn.prepare(sql)
                .unwrap()
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap()
        };
        let pair = |a: &str, b: &str| (a.to_string(), b.to_string());
        assert_eq!(
            read("SELECT ref, CAST(points AS TEXT) FROM profiles ORDER BY ref"),
            vec![
                pair("p:1", "4321"),
                pair("p:2", "0"),
                pair("p:3", "3"),
                pair("p:4", "0")
            ]
        );
        assert_eq!(
            read("SELECT hash, profile FROM profile_identifiers ORDER BY hash"),
            vec![pair("h1", "p:1"), pair("h2", "p:1"), pair("h3", "p:3")]
        );
    }

    #[test]
    fn dollar_parameters_become_numbered_ones() {
        assert_eq!(
            numbered("SELECT $2, $1 WHERE x = '$'"),
            "SELECT ?2, ?1 WHERE x = '$'"
        );
        assert_eq!(numbered("SELECT 1"), "SELECT 1");
    }
}
