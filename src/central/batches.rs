//! Storing gateways' batches (docs/protocol.md "Cumulative ack"): dedup by (gateway, seq) and
//! by event id, application in seq order, and the ack at the end of each gateway's gap-free
//! prefix of stored events.
//!
//! A second event at a (gateway, seq) that central already holds under another id is not
//! dropped: it goes to `seq_conflicts` (a gateway whose journal was restored from an old copy
//! re-used seqs before it saw our ack), so no event is ever lost silently. An event that
//! breaks docs/protocol.md, or a second purchase with a receipt the gateway already used, is
//! stored with `refused` set: it fills its seq slot, is applied to nothing, and stays for
//! operators.
//!
//! Batches that arrive together are stored set-wise in one transaction: a fixed handful of
//! statements for the whole group (its acks, the seqs and ids it repeats, its receipts, its
//! inserts, its coupon redemptions), not a handful per batch, since on PostgreSQL every
//! statement is a round trip. A group holds each gateway at most once per round; a gateway
//! with two batches in the group has them stored in two rounds, in arrival order.
//!
//! What must not interleave between central instances is locked inside the transaction, all
//! up front: the group's gateways, then its coupons, each in sorted order. Unique constraints
//! back each of them (an event id is applied once, a coupon redemption recorded once). The
//! identity and points effects of applied events are queued for the resolver (`effects.rs`).

use std::collections::{HashMap, HashSet};

use super::db::{self, params, DbError, Pipeline, Tx};
use super::store::{BatchOutcome, GatewayBatch};
use crate::protocol::{timestamp, CheckedEvent, CouponRedeemed, EventKind, WireEvent};

/// The first stored seq of each (store, gateway, receipt) given. `receipt IS NOT NULL` is the
/// receipt index's condition, spelled out for the planner. `seq + 0` keeps SQLite off its MIN
/// shortcut: walking the gateway's events in seq order looking for the receipt read every
/// event the gateway ever sent for each new receipt (a 10,000-event backlog stalled for a
/// minute), where the receipt index finds it at once.
const FIRST_WITH_RECEIPT: &str = "SELECT given.column1, given.column2, given.column3,
        (SELECT MIN(events.seq + 0) FROM events WHERE events.store = given.column1
            AND events.gateway = given.column2 AND events.receipt = given.column3
            AND events.receipt IS NOT NULL AND events.refused IS NULL)
    FROM {values} AS given";
const RECEIPT_KEY: [&str; 3] = ["TEXT", "TEXT", "TEXT"];

/// Stores `batches` in the caller's transaction; each one's outcome, in order.
pub(super) async fn store_batches(
    tx: &mut impl Tx,
    batches: &[GatewayBatch],
) -> Result<Vec<BatchOutcome>, DbError> {
    // Two instances may hold the same gateway's batches (a re-send delivered to another
    // member of the shared subscription): they take turns.
    let mut gateways: Vec<String> = batches
        .iter()
        .map(|b| format!("gateway:{}/{}", b.store, b.gateway))
        .collect();
    gateways.sort();
    gateways.dedup();
    // Every event is checked and read once, here: what the rounds and the resolver apply.
    let checked: Vec<Vec<CheckedEvent>> = batches
        .iter()
        .map(|b| b.events.iter().map(WireEvent::check).collect())
        .collect();
    let mut coupons: Vec<String> = checked
        .iter()
        .flatten()
        .filter_map(|c| c.facts.coupon.as_ref())
        .map(|c| format!("coupon:{}", c.coupon))
        .collect();
    coupons.sort();
    coupons.dedup();
    gateways.extend(coupons);
    // Taken by the first statements of the first round's reads, before anything is read.
    let mut locks = tx.lock_statements(&gateways);

    let received_at = timestamp(std::time::SystemTime::now());
    let mut numbers = ApplicationOrder::default();
    let mut outcomes = vec![BatchOutcome::default(); batches.len()];
    for round in rounds(batches) {
        let members: Vec<Checked> = round
            .iter()
            .map(|&index| (&batches[index], checked[index].as_slice()))
            .collect();
        let locks = std::mem::take(&mut locks);
        let stored = store_round(tx, locks, &members, &received_at, &mut numbers).await?;
        for (index, outcome) in round.into_iter().zip(stored) {
            outcomes[index] = outcome;
        }
    }
    Ok(outcomes)
}

/// Indices of `batches` in rounds that hold each gateway at most once, in arrival order.
fn rounds(batches: &[GatewayBatch]) -> Vec<Vec<usize>> {
    let mut rounds: Vec<Vec<usize>> = Vec::new();
    let mut next: HashMap<(&str, &str), usize> = HashMap::new();
    for (index, batch) in batches.iter().enumerate() {
        let round = next
            .entry((batch.store.as_str(), batch.gateway.as_str()))
            .or_insert(0);
        if rounds.len() <= *round {
            rounds.push(Vec::new());
        }
        rounds[*round].push(index);
        *round += 1;
    }
    rounds
}

/// A gateway as a map key.
type GatewayKey = (String, String);

/// A batch with each of its events as checked and read.
type Checked<'a> = (&'a GatewayBatch, &'a [CheckedEvent]);

fn key_of(batch: &GatewayBatch) -> GatewayKey {
    (batch.store.clone(), batch.gateway.clone())
}

/// A seq as central stores it (seqs are checked to be below 2^53 on arrival).
fn seq_value(seq: u64) -> i64 {
    seq.min(i64::MAX as u64) as i64
}

/// Stores one round, batches of distinct gateways; each one's outcome, in order. Two
/// pipelines: every read the round needs, then every write, each one round trip on
/// PostgreSQL.
async fn store_round(
    tx: &mut impl Tx,
    locks: Vec<(String, Vec<db::Value>)>,
    checked_round: &[Checked<'_>],
    received_at: &str,
    numbers: &mut ApplicationOrder,
) -> Result<Vec<BatchOutcome>, DbError> {
    let round: Vec<&GatewayBatch> = checked_round.iter().map(|(b, _)| *b).collect();
    let round = round.as_slice();
    let mut outcomes = vec![BatchOutcome::default(); round.len()];
    let dialect = tx.dialect();
    let events = || {
        checked_round.iter().flat_map(|(b, checked)| {
            b.events
                .iter()
                .zip(checked.iter())
                .map(move |(e, c)| (*b, e, c))
        })
    };

    // The reads: where each gateway's ack stands, what central holds at the batches' seqs,
    // which of their ids and receipts it knows, what their coupons were redeemed for. Each
    // is a subquery or an index probe per key, whatever plan a cached statement settled on
    // while the tables were small. Ids, receipts and coupons are asked for every event (a
    // re-sent one's own among them): only fresh events read the answers.
    let mut reads = Pipeline::new();
    reads.add_statements(locks);
    let block_part = numbers
        .is_empty()
        .then(|| reads.add(tx.applied_block_sql(), &[]));
    let gateways: Vec<[db::Value; 2]> = round
        .iter()
        .map(|b| [b.store.as_str().into(), b.gateway.as_str().into()])
        .collect();
    let acked_part = reads.add_values(
        "SELECT given.column1, given.column2,
                (SELECT acked_upto FROM gateways WHERE gateways.store = given.column1
                    AND gateways.gateway = given.column2)
         FROM {values} AS given",
        ["TEXT", "TEXT"],
        &gateways,
    );
    let ranges: Vec<[db::Value; 4]> = round
        .iter()
        .filter_map(|b| {
            let (first, last) = (b.events.first()?, b.events.last()?);
            Some([
                b.store.as_str().into(),
                b.gateway.as_str().into(),
                first.seq.into(),
                last.seq.into(),
            ])
        })
        .collect();
    // Seqs and ids as one JSON list per batch: a refused event's id may hold any character.
    let held_part = reads.add_values(
        &format!(
            "SELECT given.column1, given.column2,
                    (SELECT {} FROM events WHERE events.store = given.column1
                        AND events.gateway = given.column2
                        AND events.seq >= given.column3 AND events.seq <= given.column4)
             FROM {{values}} AS given",
            dialect.json_pairs("events.seq", "events.id")
        ),
        ["TEXT", "TEXT", "BIGINT", "BIGINT"],
        &ranges,
    );
    // An id's first event is the one without the duplicate mark: the unique index over
    // those answers.
    let ids: Vec<&str> = events().map(|(_, e, _)| e.id.as_str()).collect();
    let ids_part = reads.add_in(
        "SELECT id FROM events WHERE duplicate_id = 0 AND id",
        &[],
        &ids,
    );
    let receipt_keys: Vec<[db::Value; 3]> = events()
        .filter_map(|(batch, _, checked)| {
            Some([
                batch.store.as_str().into(),
                batch.gateway.as_str().into(),
                checked.facts.receipt.as_deref()?.into(),
            ])
        })
        .collect();
    let receipts_part = reads.add_values(FIRST_WITH_RECEIPT, RECEIPT_KEY, &receipt_keys);
    let redeemed: Vec<(&GatewayBatch, &WireEvent, &CouponRedeemed)> = events()
        .filter_map(|(b, e, c)| Some((b, e, c.facts.coupon.as_ref()?)))
        .collect();
    let coupons: Vec<&str> = redeemed.iter().map(|(_, _, c)| c.coupon.as_str()).collect();
    let coupons_part = reads.add_in(
        "SELECT coupon, store, gateway, receipt FROM coupon_redemptions WHERE coupon",
        &[],
        &coupons,
    );
    let mut answers = reads.run(tx).await?;
    if let Some(part) = block_part {
        if let Some(row) = answers.take(part).first() {
            numbers.starting_at(row.int(0)?);
        }
    }

    let mut acked: HashMap<GatewayKey, u64> = HashMap::new();
    for row in answers.take(acked_part) {
        if let Some(upto) = row.opt_int(2)? {
            acked.insert((row.text(0)?, row.text(1)?), upto.max(0) as u64);
        }
    }
    let mut held: HashMap<GatewayKey, HashMap<i64, String>> = HashMap::new();
    for row in answers.take(held_part) {
        let Some(listed) = row.opt_text(2)? else {
            continue;
        };
        let pairs: Vec<(i64, String)> =
            serde_json::from_str(&listed).map_err(|e| DbError::Type(format!("held seqs: {e}")))?;
        held.entry((row.text(0)?, row.text(1)?))
            .or_default()
            .extend(pairs);
    }
    let mut seen: HashSet<String> = answers
        .take(ids_part)
        .iter()
        .map(|row| row.text(0))
        .collect::<Result<_, _>>()?;
    let mut receipt_holders: HashMap<(String, String, String), i64> = HashMap::new();
    for row in answers.take(receipts_part) {
        if let Some(seq) = row.opt_int(3)? {
            receipt_holders.insert((row.text(0)?, row.text(1)?, row.text(2)?), seq);
        }
    }
    // Every receipt each coupon was redeemed for so far.
    let mut coupon_receipts: HashMap<String, HashSet<(String, String, String)>> = HashMap::new();
    for row in answers.take(coupons_part) {
        coupon_receipts.entry(row.text(0)?).or_default().insert((
            row.text(1)?,
            row.text(2)?,
            row.text(3)?,
        ));
    }

    let mut rows: Vec<[db::Value; 15]> = Vec::new();
    let mut queued: Vec<[db::Value; 4]> = Vec::new();
    let mut stored_redemptions: HashSet<&str> = HashSet::new();
    let mut prefixes = Vec::with_capacity(round.len());
    for ((batch, checks), outcome) in checked_round.iter().zip(outcomes.iter_mut()) {
        let holding = held.get(&key_of(batch));
        let mut fresh = Vec::with_capacity(batch.events.len());
        for (event, checked) in batch.events.iter().zip(checks.iter()) {
            match holding.and_then(|h| h.get(&seq_value(event.seq))) {
                Some(id) if *id == event.id => outcome.duplicates += 1,
                Some(_) => keep_seq_conflict(tx, batch, event, received_at, outcome).await?,
                None => fresh.push((event, checked)),
            }
        }
        let acked = acked.get(&key_of(batch)).copied().unwrap_or(0);
        // The fresh events from `acked + 1` on without a gap are applied as they are
        // inserted (the usual case: a batch picks up where the ack stands).
        let prefix_len = fresh
            .iter()
            .zip(acked + 1..)
            .take_while(|((event, _), seq)| event.seq == *seq)
            .count();
        prefixes.push(acked + prefix_len as u64);
        // Numbers for the prefix, a block at a time: (number of index 0, end index).
        let mut block = (0, 0);
        for (index, (event, checked)) in fresh.into_iter().enumerate() {
            let (facts, receipt) = (&checked.facts, &checked.facts.receipt);
            // The same id at another seq is a duplicate effect: the slot is filled (so the
            // prefix can advance) but marked, and never applied twice.
            let id_seen = !seen.insert(event.id.clone());
            let mut refused = checked.refused.clone();
            let receipt_key = receipt
                .as_ref()
                .map(|r| (batch.store.clone(), batch.gateway.clone(), r.clone()));
            if let (None, false, Some(key)) = (&refused, id_seen, &receipt_key) {
                if let Some(seq) = receipt_holders.get(key) {
                    refused = Some(format!(
                        "duplicate_receipt: receipt already recorded at seq {seq}"
                    ));
                }
            }
            if let (None, Some(key)) = (&refused, receipt_key) {
                receipt_holders.entry(key).or_insert(seq_value(event.seq));
            }
            if let Some(reason) = &refused {
                tracing::error!(store = %batch.store, gateway = %batch.gateway, seq = event.seq, id = %event.id, reason, "event kept as a conflict, applied to nothing");
                outcome.refused += 1;
            } else if id_seen {
                outcome.duplicates += 1;
            } else {
                outcome.stored += 1;
                if event.kind == EventKind::CouponRedeemed.as_str() {
                    stored_redemptions.insert(event.id.as_str());
                }
            }
            // A refused event, or an id applied at another seq, fills its slot but is
            // applied to nothing.
            let index = index as i64;
            let applied = if index < prefix_len as i64 && refused.is_none() && !id_seen {
                if index >= block.1 {
                    let count = (prefix_len as i64 - index).min(db::APPLIED_BLOCK);
                    block = (numbers.take(tx, count).await? - index, index + count);
                }
                let applied = block.0 + index;
                if has_effects(event, facts) {
                    outcome.effects_queued += 1;
                    // What the resolver reads travels with the queue entry: the resolver
                    // never joins the events table.
                    queued.push([
                        applied.into(),
                        event.id.as_str().into(),
                        event.kind.as_str().into(),
                        event.body.get().into(),
                    ]);
                }
                Some(applied)
            } else {
                None
            };
            rows.push([
                batch.store.as_str().into(),
                batch.gateway.as_str().into(),
                event.seq.into(),
                storable(&event.id).into(),
                storable(&event.kind).into(),
                storable(&event.at).into(),
                event.clock_synced.into(),
                storable(&event.till).into(),
                event.body.get().into(),
                received_at.into(),
                id_seen.into(),
                receipt.as_deref().map(storable).into(),
                refused.into(),
                applied.into(),
                facts.customer.as_deref().map(storable).into(),
            ]);
        }
    }

    // A redemption beyond its coupon's uses (counted by distinct receipts across the fleet,
    // in the order the redemptions are stored) is kept as a conflict. Both events stay.
    let mut redemptions: Vec<[db::Value; 7]> = Vec::new();
    let mut conflicts: Vec<[db::Value; 3]> = Vec::new();
    for (batch, event, body) in redeemed {
        if !stored_redemptions.contains(event.id.as_str()) {
            continue;
        }
        let (store, gateway) = (batch.store.as_str(), batch.gateway.as_str());
        let receipts = coupon_receipts.entry(body.coupon.clone()).or_default();
        receipts.insert((store.to_string(), gateway.to_string(), body.receipt.clone()));
        let uses = receipts.len() as u64;
        if uses > body.uses {
            let detail = format!(
                "coupon {} redeemed {uses} times (allowed {}); this one at {store}/{gateway} receipt {} ({})",
                body.coupon, body.uses, body.receipt, body.mode
            );
            tracing::warn!(store, gateway, coupon = %body.coupon, %detail, "coupon redeemed beyond its uses; kept as a conflict");
            conflicts.push([
                event.id.as_str().into(),
                body.coupon.as_str().into(),
                detail.into(),
            ]);
            if let Some(index) = round.iter().position(|b| std::ptr::eq(*b, batch)) {
                outcomes[index].coupon_conflicts += 1;
            }
        }
        redemptions.push([
            event.id.as_str().into(),
            body.coupon.as_str().into(),
            store.into(),
            gateway.into(),
            body.receipt.as_str().into(),
            body.mode.as_str().into(),
            body.uses.into(),
        ]);
    }

    // The writes, and then the first event stored beyond each batch's prefix (a gap the
    // batch filled continues it). Each gateway's ack is written where its prefix ends; the
    // rare batch that filled a gap moves it further below.
    let mut writes = Pipeline::new();
    writes.add_insert(
        "INSERT INTO events(store, gateway, seq, id, kind, at, clock_synced, till, body, received_at, duplicate_id, receipt, refused, applied, customer)",
        [
            "TEXT", "TEXT", "BIGINT", "TEXT", "TEXT", "TEXT", "BIGINT", "TEXT", "TEXT", "TEXT",
            "BIGINT", "TEXT", "TEXT", "BIGINT", "TEXT",
        ],
        &rows,
    );
    writes.add_insert(
        "INSERT INTO pending_effects(applied, id, kind, body)",
        ["BIGINT", "TEXT", "TEXT", "TEXT"],
        &queued,
    );
    writes.add_insert(
        "INSERT INTO coupon_redemptions(event_id, coupon, store, gateway, receipt, mode, uses) {values}
         ON CONFLICT DO NOTHING",
        ["TEXT", "TEXT", "TEXT", "TEXT", "TEXT", "TEXT", "BIGINT"],
        &redemptions,
    );
    writes.add_insert(
        "INSERT INTO coupon_conflicts(event_id, coupon, detail) {values} ON CONFLICT DO NOTHING",
        ["TEXT", "TEXT", "TEXT"],
        &conflicts,
    );
    let moved: Vec<[db::Value; 3]> = round
        .iter()
        .zip(&prefixes)
        .filter(|(b, prefix)| **prefix != acked.get(&key_of(b)).copied().unwrap_or(0))
        .map(|(b, prefix)| {
            [
                b.store.as_str().into(),
                b.gateway.as_str().into(),
                (*prefix).into(),
            ]
        })
        .collect();
    writes.add_insert(
        "INSERT INTO gateways(store, gateway, acked_upto) {values}
         ON CONFLICT(store, gateway) DO UPDATE SET acked_upto = excluded.acked_upto",
        ["TEXT", "TEXT", "BIGINT"],
        &moved,
    );
    let ends: Vec<[db::Value; 3]> = round
        .iter()
        .zip(&prefixes)
        .map(|(b, end)| {
            [
                b.store.as_str().into(),
                b.gateway.as_str().into(),
                (*end).into(),
            ]
        })
        .collect();
    let following_part = writes.add_values(
        "SELECT given.column1, given.column2,
                (SELECT MIN(events.seq) FROM events WHERE events.store = given.column1
                    AND events.gateway = given.column2 AND events.seq > given.column3)
         FROM {values} AS given",
        ["TEXT", "TEXT", "BIGINT"],
        &ends,
    );
    let mut answers = writes.run(tx).await?;
    let mut following: HashMap<GatewayKey, u64> = HashMap::new();
    for row in answers.take(following_part) {
        if let Some(next) = row.opt_int(2)? {
            following.insert((row.text(0)?, row.text(1)?), next.max(0) as u64);
        }
    }
    for ((batch, outcome), prefix) in round.iter().zip(outcomes.iter_mut()).zip(prefixes) {
        outcome.acked_upto = prefix;
        if following.get(&key_of(batch)) == Some(&(prefix + 1)) {
            outcome.acked_upto = advance(tx, batch, prefix, numbers, outcome).await?;
            tx.execute(
                "INSERT INTO gateways(store, gateway, acked_upto) VALUES ($1, $2, $3)
                 ON CONFLICT(store, gateway) DO UPDATE SET acked_upto = excluded.acked_upto",
                params![&batch.store, &batch.gateway, outcome.acked_upto],
            )
            .await?;
        }
    }
    Ok(outcomes)
}

/// Application-order numbers (`events.applied`) for one transaction, taken from the store a
/// block at a time: one round trip per 1024 events, not one per batch.
#[derive(Default)]
struct ApplicationOrder {
    next: i64,
    end: i64,
}

impl ApplicationOrder {
    fn is_empty(&self) -> bool {
        self.next == self.end
    }

    /// A block reserved ahead (read with other statements) replaces what is left.
    fn starting_at(&mut self, first: i64) {
        self.next = first;
        self.end = first + db::APPLIED_BLOCK;
    }

    /// The first of `count` consecutive fresh numbers (`count` at most a block).
    async fn take(&mut self, tx: &mut impl Tx, count: i64) -> Result<i64, DbError> {
        if self.end - self.next < count {
            self.next = tx.applied_block().await?;
            self.end = self.next + db::APPLIED_BLOCK;
        }
        let first = self.next;
        self.next += count;
        Ok(first)
    }
}

/// Whether applying `event` does anything beyond storing it: an identification is resolved,
/// a purchase by a customer moves points. Those are queued for the resolver.
fn has_effects(event: &WireEvent, facts: &crate::protocol::BodyFacts) -> bool {
    event.kind == EventKind::IdentitySeen.as_str()
        || (event.kind == EventKind::Purchase.as_str() && facts.moves_points)
}

/// A wire string as a text column can hold it: PostgreSQL's text takes no NUL character. Only
/// a refused event can carry one (every field a valid event has is checked), and it is kept
/// for operators with U+FFFD in its place rather than failing its whole batch.
fn storable(text: &str) -> String {
    text.replace('\0', "\u{FFFD}")
}

/// A second event at a seq central holds under another id: kept aside, never dropped.
async fn keep_seq_conflict(
    tx: &mut impl Tx,
    batch: &GatewayBatch,
    event: &WireEvent,
    received_at: &str,
    outcome: &mut BatchOutcome,
) -> Result<(), DbError> {
    let (store, gateway) = (batch.store.as_str(), batch.gateway.as_str());
    let inserted = tx
        .execute(
            "INSERT INTO seq_conflicts(store, gateway, seq, id, kind, at, till, body, received_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT DO NOTHING",
            params![
                store,
                gateway,
                event.seq,
                storable(&event.id),
                storable(&event.kind),
                storable(&event.at),
                storable(&event.till),
                event.body.get(),
                received_at
            ],
        )
        .await?;
    if inserted > 0 {
        tracing::error!(store, gateway, seq = event.seq, id = %event.id, "seq re-used with another id; kept in seq_conflicts");
        outcome.conflicts += 1;
    } else {
        outcome.duplicates += 1;
    }
    Ok(())
}

/// Moves a gateway's ack from the end of its batch's own prefix over every event stored
/// earlier that continues it (a gap the batch filled), applying those in seq order; the new
/// end of the prefix.
async fn advance(
    tx: &mut impl Tx,
    batch: &GatewayBatch,
    prefix: u64,
    numbers: &mut ApplicationOrder,
    outcome: &mut BatchOutcome,
) -> Result<u64, DbError> {
    let (store, gateway) = (batch.store.as_str(), batch.gateway.as_str());
    let mut upto = prefix;
    loop {
        let next = tx
            .query(
                "SELECT seq FROM events WHERE store = $1 AND gateway = $2 AND seq > $3
                 ORDER BY seq LIMIT 1024",
                params![store, gateway, upto],
            )
            .await?;
        let before = upto;
        for row in &next {
            if row.int(0)?.max(0) as u64 != upto + 1 {
                break;
            }
            upto += 1;
        }
        if upto > before {
            // One statement numbers the whole run in seq order (a refused event, or an id
            // applied at another seq, fills its slot but is applied to nothing); one more
            // queues the run's effects.
            let base = numbers.take(tx, (upto - before) as i64).await?;
            tx.execute(
                "UPDATE events SET applied = $1 + (seq - $2)
                 WHERE store = $3 AND gateway = $4 AND seq >= $2 AND seq <= $5
                   AND refused IS NULL AND duplicate_id = 0",
                params![base, before + 1, store, gateway, upto],
            )
            .await?;
            let queue = "INSERT INTO pending_effects(applied, id, kind, body)
                 SELECT applied, id, kind, body FROM events
                 WHERE store = $1 AND gateway = $2 AND seq >= $3 AND seq <= $4
                   AND applied IS NOT NULL
                   AND (kind = 'identity_seen' OR (kind = 'purchase' AND customer IS NOT NULL))";
            outcome.effects_queued += tx
                .execute(queue, params![store, gateway, before + 1, upto])
                .await?;
        }
        if upto == before || upto - before < next.len() as u64 || next.len() < 1024 {
            break;
        }
    }
    Ok(upto)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The receipt check must find a receipt through the receipt index, not by walking the
    /// gateway's events: with the walk, each new receipt cost a read of the gateway's whole
    /// history, and a store's offline backlog took minutes to ack.
    #[test]
    fn a_receipt_is_looked_up_by_its_index_not_by_walking_the_gateway() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("central.db");
        drop(super::super::Store::open_sqlite(&path).unwrap());
        let connection = rusqlite::Connection::open(&path).unwrap();
        let key = || -> [db::Value; 3] { ["s".into(), "g".into(), "r".into()] };
        for (sql, values) in db::values_statements(
            db::Dialect::Sqlite,
            FIRST_WITH_RECEIPT,
            RECEIPT_KEY,
            &[key(), key()],
        ) {
            let mut plan = connection
                .prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
                .unwrap();
            let steps: Vec<String> = plan
                .query_map(rusqlite::params_from_iter(values), |row| {
                    row.get::<_, String>(3)
                })
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap();
            assert!(
                steps
                    .iter()
                    .any(|s| s.contains("USING INDEX events_receipt")),
                "{steps:?}"
            );
        }
    }
}
