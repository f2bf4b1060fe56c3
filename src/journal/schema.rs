//! Schema and migrations, versioned with `PRAGMA user_version`.

use std::path::Path;

use rusqlite::Connection;

use super::JournalError;

/// Each entry migrates from version `index` to `index + 1`. Append only; never edit a shipped one.
const MIGRATIONS: &[&str] = &[
    // 0 -> 1
    "CREATE TABLE events(
        seq INTEGER PRIMARY KEY,
        id TEXT NOT NULL,
        kind TEXT NOT NULL,
        at TEXT NOT NULL,
        clock_synced INTEGER NOT NULL,
        till TEXT NOT NULL,
        receipt TEXT,
        body TEXT NOT NULL
    );
    CREATE UNIQUE INDEX events_receipt ON events(receipt) WHERE receipt IS NOT NULL;
    CREATE TABLE idempotency(
        key TEXT PRIMARY KEY,
        fingerprint BLOB NOT NULL,
        seq INTEGER NOT NULL,
        id TEXT NOT NULL
    ) WITHOUT ROWID;
    CREATE TABLE counters(name TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;
    INSERT INTO counters(name, value) VALUES ('last_seq', 0), ('acked_upto', 0), ('session', 0);",
    // 1 -> 2: retention deletes idempotency keys by seq; without this every compaction scanned
    // the whole table.
    "CREATE INDEX idempotency_seq ON idempotency(seq);",
    // 2 -> 3: card readers identify customers offline; a card seen again must resolve to the
    // ref it got the first time, even after retention deleted that event.
    "CREATE TABLE identity_refs(hash TEXT PRIMARY KEY, profile TEXT NOT NULL) WITHOUT ROWID;",
    // 3 -> 4: a till retrying a sale after its event was compacted must still be told it is a
    // duplicate, so receipts (like idempotency keys) are kept by a window of their own
    // (`keep_keys`), not by event retention.
    "CREATE TABLE receipts(receipt TEXT PRIMARY KEY, seq INTEGER NOT NULL, id TEXT NOT NULL)
        WITHOUT ROWID;
    CREATE INDEX receipts_seq ON receipts(seq);
    INSERT INTO receipts(receipt, seq, id)
        SELECT receipt, seq, id FROM events WHERE receipt IS NOT NULL;
    DROP INDEX events_receipt;",
    // 4 -> 5: receipts to print live in the journal and are queued in the purchase's own
    // transaction: a crash between "recorded" and "queued" cannot lose a receipt.
    "CREATE TABLE print_jobs(
        id INTEGER PRIMARY KEY,
        printer TEXT NOT NULL,
        receipt TEXT NOT NULL,
        copy INTEGER NOT NULL,
        state TEXT NOT NULL,
        purchase TEXT NOT NULL,
        last_error TEXT
    );
    CREATE INDEX print_jobs_waiting ON print_jobs(printer, state, id);",
    // 5 -> 6: every coupon this box accepted, recorded in the redemption's own transaction:
    // "never redeemed at this box" and the offline budget are checked against it, and it
    // outlives event retention.
    "CREATE TABLE coupon_redemptions(
        coupon TEXT NOT NULL,
        receipt TEXT NOT NULL,
        seq INTEGER NOT NULL,
        mode TEXT NOT NULL,
        discount_minor INTEGER NOT NULL,
        at TEXT NOT NULL
    );
    CREATE INDEX coupon_redemptions_coupon ON coupon_redemptions(coupon);
    CREATE INDEX coupon_redemptions_at ON coupon_redemptions(mode, at);",
    // 6 -> 7: central's merges this box applied (the alias table), and the identity `rev` up
    // to which it has every change, so a restart asks `identity.since` for what it missed.
    "CREATE TABLE aliases(from_ref TEXT NOT NULL, to_ref TEXT NOT NULL,
        PRIMARY KEY(from_ref, to_ref)) WITHOUT ROWID;
    INSERT INTO counters(name, value) VALUES ('identity_rev', 0);",
    // 7 -> 8: loyalty and the customer cache. `profile_views`: central's points for profiles
    // this box has seen (from identity changes and look-ups); `points_pending`: each purchase's
    // points until a view from central includes them (`covered_after_rev`: set at the ack to
    // the newest rev seen then; a view with a later rev was made after central applied the
    // purchase), so the balance a till shows is central's plus what central's view does not
    // hold yet; `erased`: profiles erased at central, whose identifiers this box never caches
    // again.
    "CREATE TABLE profile_views(ref TEXT PRIMARY KEY, points INTEGER NOT NULL, rev INTEGER NOT NULL)
        WITHOUT ROWID;
    CREATE TABLE points_pending(seq INTEGER PRIMARY KEY, customer TEXT NOT NULL,
        earned INTEGER NOT NULL, redeemed INTEGER NOT NULL, covered_after_rev INTEGER);
    CREATE INDEX points_pending_customer ON points_pending(customer);
    CREATE TABLE erased(ref TEXT PRIMARY KEY) WITHOUT ROWID;
    CREATE INDEX identity_refs_profile ON identity_refs(profile);
    INSERT INTO counters(name, value) VALUES ('identity_rev_max', 0);
    INSERT INTO points_pending(seq, customer, earned, redeemed)
        SELECT seq, json_extract(body, '$.customer'), COALESCE(json_extract(body, '$.points'), 0),
            COALESCE(json_extract(body, '$.points_redeemed'), 0)
        FROM events
        WHERE kind = 'purchase' AND json_extract(body, '$.customer') IS NOT NULL
            AND seq > (SELECT value FROM counters WHERE name = 'acked_upto');",
    // 8 -> 9: the signed config layers this box accepted (fleet, store, gateway): a restart
    // applies them before it can reach the broker, and a replayed older version is refused.
    "CREATE TABLE config_layers(layer TEXT PRIMARY KEY, version INTEGER NOT NULL,
        signed TEXT NOT NULL, applied_at TEXT NOT NULL) WITHOUT ROWID;",
];

pub(super) fn open_and_migrate(path: &Path) -> Result<Connection, JournalError> {
    let open_err = |source| JournalError::Open {
        path: path.display().to_string(),
        source,
    };
    let mut conn = Connection::open(path).map_err(open_err)?;
    configure(&conn).map_err(open_err)?;
    let found: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(open_err)?;
    let known = MIGRATIONS.len() as i64;
    if found > known {
        return Err(JournalError::TooNew {
            path: path.display().to_string(),
            found,
            known,
        });
    }
    for (version, sql) in MIGRATIONS.iter().enumerate().skip(found as usize) {
        let tx = conn.transaction().map_err(open_err)?;
        tx.execute_batch(sql).map_err(open_err)?;
        tx.pragma_update(None, "user_version", version as i64 + 1)
            .map_err(open_err)?;
        tx.commit().map_err(open_err)?;
    }
    Ok(conn)
}

/// A read-only connection beside the writer (WAL lets it read while the writer commits), for
/// the outbox and the print queue's views.
pub(super) fn open_read_only(path: &Path) -> Result<Connection, JournalError> {
    let conn = Connection::open_with_flags(
        path,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|source| JournalError::Open {
        path: path.display().to_string(),
        source,
    })?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    Ok(conn)
}

/// WAL with `synchronous=FULL`: a commit is on disk when it returns, which guarantee 1 needs.
/// `secure_delete` zeroes what a delete frees, so an erased customer's identifiers do not
/// linger in free pages (the WAL is truncated after an erasure, see the writer).
pub(super) fn configure(conn: &Connection) -> rusqlite::Result<()> {
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    conn.pragma_update(None, "secure_delete", "ON")?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    Ok(())
}
