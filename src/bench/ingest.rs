//! Journal ingest against raw rusqlite at the same durability and batch shape.

use std::sync::Arc;
use std::time::Instant;

use rusqlite::{params, Connection};

use storegate::clock::SystemClock;
use storegate::journal::{Journal, NewEvent};
use storegate::protocol::{timestamp, EventKind};

/// A realistic purchase body with its own receipt (central refuses a second purchase with a
/// receipt it holds, so a bench backlog must not repeat one). Built the same way for the raw
/// baseline and the journal, so both pay the same.
fn body(receipt: &str) -> String {
    format!(
        r#"{{"receipt":"{receipt}","lines":[{{"sku":"milk-1l","gtin":"4006381333931","qty":2,"unit_minor":119}},{{"sku":"bread-rye","gtin":"4012345000016","qty":1,"unit_minor":249}}],"total_minor":487,"currency":"EUR","customer":null,"coupons":[],"points":4}}"#
    )
}

pub(super) async fn run(single_rows: u64, grouped_rows: u64) -> anyhow::Result<serde_json::Value> {
    let dir = tempfile::tempdir()?;
    eprintln!("bench: raw rusqlite, 1 row per transaction, {single_rows} rows");
    let raw_single = raw_inserts(&dir.path().join("raw1.db"), single_rows, 1)?;
    eprintln!("bench: journal, one caller, {single_rows} appends");
    let ours_single = journal_appends(&dir.path().join("j1.db"), single_rows, 1).await?;
    eprintln!("bench: raw rusqlite, 100 rows per transaction, {grouped_rows} rows");
    let raw_grouped = raw_inserts(&dir.path().join("raw100.db"), grouped_rows, 100)?;
    eprintln!("bench: journal, 100 concurrent callers (group commit), {grouped_rows} appends");
    let ours_grouped = journal_appends(&dir.path().join("j100.db"), grouped_rows, 100).await?;
    Ok(serde_json::json!({
        "one_row_per_tx": {
            "raw_rusqlite_rows_per_s": raw_single.round(),
            "journal_events_per_s": ours_single.round(),
            "ratio": round2(ours_single / raw_single),
        },
        "hundred_rows_per_tx": {
            "raw_rusqlite_rows_per_s": raw_grouped.round(),
            "journal_group_commit_events_per_s": ours_grouped.round(),
            "ratio": round2(ours_grouped / raw_grouped),
        },
    }))
}

pub(super) fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// The baseline: the journal's own table shape, rows written straight with rusqlite.
fn raw_inserts(path: &std::path::Path, rows: u64, per_tx: u64) -> anyhow::Result<f64> {
    let mut conn = Connection::open(path)?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.execute_batch(
        "CREATE TABLE events(seq INTEGER PRIMARY KEY, id TEXT NOT NULL, kind TEXT NOT NULL, at TEXT NOT NULL,
            clock_synced INTEGER NOT NULL, till TEXT NOT NULL, receipt TEXT, body TEXT NOT NULL);
         CREATE UNIQUE INDEX events_receipt ON events(receipt) WHERE receipt IS NOT NULL;",
    )?;
    let started = Instant::now();
    let mut seq = 0u64;
    while seq < rows {
        let tx = conn.transaction()?;
        {
            let mut stmt = tx.prepare_cached(
                "INSERT INTO events(seq, id, kind, at, clock_synced, till, receipt, body) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            )?;
            for _ in 0..per_tx.min(rows - seq) {
                seq += 1;
                stmt.execute(params![
                    seq as i64,
                    ulid::Ulid::new().to_string(),
                    "purchase",
                    timestamp(std::time::SystemTime::now()),
                    true,
                    "t1",
                    format!("r-{seq}"),
                    body(&format!("r-{seq}"))
                ])?;
            }
        }
        tx.commit()?;
    }
    Ok(rows as f64 / started.elapsed().as_secs_f64())
}

/// `callers` concurrent tasks append `rows` events in total through the journal's public API.
pub(super) async fn journal_appends(
    path: &std::path::Path,
    rows: u64,
    callers: u64,
) -> anyhow::Result<f64> {
    let (journal, writer) = Journal::open(path, Arc::new(SystemClock))?;
    let started = Instant::now();
    let tasks: Vec<_> = (0..callers)
        .map(|c| {
            let journal = journal.clone();
            tokio::spawn(async move {
                let mut n = c;
                while n < rows {
                    journal
                        .append(NewEvent {
                            kind: EventKind::Purchase,
                            till: "t1".into(),
                            body: body(&format!("r-{n}")),
                            receipt: Some(format!("r-{n}")),
                            idempotency: None,
                            identity_refs: Vec::new(),
                            print_on: None,
                            coupon: None,
                            points: None,
                        })
                        .await?;
                    n += callers;
                }
                Ok::<(), storegate::journal::AppendError>(())
            })
        })
        .collect();
    for task in tasks {
        task.await??;
    }
    let rate = rows as f64 / started.elapsed().as_secs_f64();
    drop(journal);
    tokio::task::spawn_blocking(move || writer.join()).await?;
    Ok(rate)
}
