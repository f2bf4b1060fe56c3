//! Journal properties on a real SQLite file: group commit, gap-free seq that survives reopening,
//! refusals that do not disturb their neighbours in the same group.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test fails by panicking

use std::sync::Arc;

use storegate::clock::SystemClock;
use storegate::journal::{AppendError, IdempotencyKey, Journal, NewEvent};
use storegate::protocol::EventKind;

fn purchase(receipt: &str) -> NewEvent {
    NewEvent {
        kind: EventKind::Purchase,
        till: "t1".into(),
        body: format!("{{\"receipt\":\"{receipt}\"}}"),
        receipt: Some(receipt.into()),
        idempotency: None,
        identity_refs: Vec::new(),
        print_on: None,
        coupon: None,
        points: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_appends_share_commits_and_get_gap_free_seqs() {
    let dir = tempfile::tempdir().unwrap();
    let (journal, writer) = Journal::open(&dir.path().join("j.db"), Arc::new(SystemClock)).unwrap();
    let tasks: Vec<_> = (0..500)
        .map(|n| {
            let journal = journal.clone();
            tokio::spawn(async move { journal.append(purchase(&format!("r-{n}"))).await })
        })
        .collect();
    let mut seqs = Vec::new();
    for task in tasks {
        seqs.push(task.await.unwrap().unwrap().seq);
    }
    seqs.sort();
    assert_eq!(seqs, (1..=500).collect::<Vec<u64>>());
    let commits = journal.position().borrow().commits;
    assert!(
        commits < 500,
        "500 concurrent appends took {commits} commits: no group commit"
    );
    drop(journal);
    writer.join();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_append_fails_alone_and_seq_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("j.db");
    let (journal, writer) = Journal::open(&path, Arc::new(SystemClock)).unwrap();
    journal.append(purchase("dup")).await.unwrap();
    // A duplicate queued among good appends (usually the same group) is refused alone.
    let batch: Vec<_> = ["a", "dup", "b"]
        .into_iter()
        .map(|r| {
            let journal = journal.clone();
            tokio::spawn(async move { journal.append(purchase(r)).await })
        })
        .collect();
    let mut results = Vec::new();
    for task in batch {
        results.push(task.await.unwrap());
    }
    assert!(matches!(
        results[1],
        Err(AppendError::DuplicateReceipt { seq: 1, .. })
    ));
    let mut good: Vec<u64> = [&results[0], &results[2]]
        .iter()
        .map(|r| r.as_ref().unwrap().seq)
        .collect();
    good.sort();
    assert_eq!(good, vec![2, 3]);

    let keyed = |key: &str, fp: u8| NewEvent {
        idempotency: Some(IdempotencyKey {
            key: key.into(),
            fingerprint: [fp; 32],
        }),
        ..purchase(&format!("k-{key}-{fp}"))
    };
    let first = journal.append(keyed("k", 1)).await.unwrap();
    let again = journal.append(keyed("k", 1)).await.unwrap();
    assert_eq!((again.seq, again.replayed), (first.seq, true));
    assert!(matches!(
        journal.append(keyed("k", 2)).await,
        Err(AppendError::IdempotencyMismatch(_))
    ));
    drop(journal);
    writer.join();

    let (journal, writer) = Journal::open(&path, Arc::new(SystemClock)).unwrap();
    assert_eq!(journal.position().borrow().last_seq, 4);
    assert_eq!(
        journal.append(purchase("after-reopen")).await.unwrap().seq,
        5
    );
    let outbox = journal.outbox().unwrap();
    let events = outbox.read_after(0, 100, 1 << 20).unwrap();
    assert_eq!(
        events.iter().map(|e| e.seq).collect::<Vec<_>>(),
        vec![1, 2, 3, 4, 5]
    );
    drop((journal, outbox));
    writer.join();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acks_only_grow_and_an_ack_beyond_the_journal_moves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (journal, writer) = Journal::open(&dir.path().join("j.db"), Arc::new(SystemClock)).unwrap();
    for n in 0..3 {
        journal.append(purchase(&format!("r{n}"))).await.unwrap();
    }
    use storegate::journal::AckOutcome::*;
    assert_eq!(journal.record_ack(2).await.unwrap(), Advanced);
    assert_eq!(journal.record_ack(1).await.unwrap(), Stale);
    assert_eq!(journal.position().borrow().acked_upto, 2);
    // An ack of 10 for a journal that only reached 3 (restored backup, duplicate gateway id,
    // forgery) neither acks event 3 nor moves the seq counter.
    assert_eq!(journal.record_ack(10).await.unwrap(), BeyondJournal);
    assert_eq!(journal.record_ack(u64::MAX).await.unwrap(), BeyondJournal);
    assert_eq!(journal.position().borrow().acked_upto, 2);
    assert_eq!(
        journal.append(purchase("next")).await.unwrap().seq,
        4,
        "numbering goes on from the journal"
    );
    drop(journal);
    writer.join();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_deletes_only_acked_events_beyond_the_kept_ones() {
    let dir = tempfile::tempdir().unwrap();
    let (journal, writer) = Journal::open_with_retention(
        &dir.path().join("j.db"),
        Arc::new(SystemClock),
        storegate::journal::Retention {
            keep_acked: 10,
            keep_keys: 10,
        },
    )
    .unwrap();
    let keyed = |n: u64, fingerprint: u8| NewEvent {
        idempotency: Some(IdempotencyKey {
            key: format!("key-{n}"),
            fingerprint: [fingerprint; 32],
        }),
        ..purchase(&format!("r{n}-{fingerprint}"))
    };
    for n in 0..100 {
        journal.append(keyed(n, 1)).await.unwrap();
    }
    let outbox = journal.outbox().unwrap();
    let held = || -> Vec<u64> {
        outbox
            .read_after(0, 1000, usize::MAX)
            .unwrap()
            .iter()
            .map(|e| e.seq)
            .collect()
    };
    journal.record_ack(60).await.unwrap();
    assert_eq!(
        held(),
        (51..=100).collect::<Vec<u64>>(),
        "10 acked kept, every unacked kept"
    );
    journal.record_ack(100).await.unwrap();
    assert_eq!(held(), (91..=100).collect::<Vec<u64>>());
    // A kept event's key still guards against a different request; a compacted one's is gone.
    assert!(matches!(
        journal.append(keyed(95, 2)).await,
        Err(AppendError::IdempotencyMismatch(_))
    ));
    assert_eq!(
        journal.append(keyed(5, 2)).await.unwrap().seq,
        101,
        "seq is not reused after compaction"
    );
    drop((journal, outbox));
    writer.join();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_after_its_event_was_compacted_is_still_a_replay_or_a_duplicate() {
    let dir = tempfile::tempdir().unwrap();
    let retention = storegate::journal::Retention {
        keep_acked: 5,
        keep_keys: 50,
    };
    let (journal, writer) =
        Journal::open_with_retention(&dir.path().join("j.db"), Arc::new(SystemClock), retention)
            .unwrap();
    let keyed = |n: u64| NewEvent {
        idempotency: Some(IdempotencyKey {
            key: format!("key-{n}"),
            fingerprint: [7; 32],
        }),
        ..purchase(&format!("r{n}"))
    };
    for n in 1..=100 {
        journal.append(keyed(n)).await.unwrap();
    }
    journal.record_ack(100).await.unwrap();
    let outbox = journal.outbox().unwrap();
    let held = outbox.read_after(0, 1000, usize::MAX).unwrap();
    assert_eq!(held.first().map(|e| e.seq), Some(96), "events kept: 5");
    // Event 80 is gone, but its key and receipt are inside the 50-event window.
    let replay = journal.append(keyed(80)).await.unwrap();
    assert_eq!((replay.seq, replay.replayed), (80, true));
    let unkeyed_retry = journal.append(purchase("r80")).await;
    assert!(
        matches!(
            unkeyed_retry,
            Err(AppendError::DuplicateReceipt { seq: 80, .. })
        ),
        "{unkeyed_retry:?}"
    );
    assert_eq!(journal.position().borrow().last_seq, 100, "nothing new");
    drop((journal, outbox));
    writer.join();
}

/// A coupon with no use left and a redemption beyond the balance are refused before anything
/// is written: the refused request leaves no event, receipt or redemption behind, and the next
/// append gets the next seq (a refusal that had written its event would have taken that seq
/// and failed every later commit).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_decided_in_the_writer_write_nothing() {
    use storegate::journal::{CouponUse, PointsUse};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("j.db");
    let (journal, writer) = Journal::open(&path, Arc::new(SystemClock)).unwrap();
    let coupon = |receipt: &str| NewEvent {
        kind: EventKind::CouponRedeemed,
        receipt: None,
        coupon: Some(CouponUse {
            coupon: "c-once".into(),
            receipt: receipt.into(),
            uses: 1,
            mode: "offline".into(),
            discount_minor: 100,
        }),
        ..purchase(receipt)
    };
    let spend = |receipt: &str, redeemed: i64| NewEvent {
        points: Some(PointsUse {
            customer: "prov:gw-1:01JD0000000000000000000000".into(),
            members: vec!["prov:gw-1:01JD0000000000000000000000".into()],
            earned: 10,
            redeemed,
            offline_cap: None,
        }),
        ..purchase(receipt)
    };
    assert_eq!(journal.append(coupon("r-1")).await.unwrap().seq, 1);
    assert!(matches!(
        journal.append(coupon("r-2")).await,
        Err(AppendError::AlreadyRedeemed(_))
    ));
    assert_eq!(journal.append(spend("r-3", 0)).await.unwrap().seq, 2);
    assert!(matches!(
        journal.append(spend("r-4", 11)).await,
        Err(AppendError::InsufficientPoints {
            balance: 10,
            asked: 11
        })
    ));
    assert_eq!(
        journal.append(spend("r-4", 10)).await.unwrap().seq,
        3,
        "r-4's receipt was not taken by the refusal"
    );
    assert_eq!(journal.append(purchase("r-5")).await.unwrap().seq, 4);
    drop(journal);
    writer.join();
    let conn = rusqlite::Connection::open(&path).unwrap();
    let events: i64 = conn
        .query_row("SELECT COUNT(*) FROM events", [], |r| r.get(0))
        .unwrap();
    let redemptions: i64 = conn
        .query_row("SELECT COUNT(*) FROM coupon_redemptions", [], |r| r.get(0))
        .unwrap();
    assert_eq!((events, redemptions), (4, 1));
}
