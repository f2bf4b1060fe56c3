//! Central's identity resolution (docs/protocol.md "Identity"): each `identity_seen`, applied
//! in seq order, is resolved deterministically. Mergeable identifiers (cards, app tokens,
//! verified phones and emails) alone decide: the profiles they already belong to, and the
//! event's own `p:` ref, are the candidates, and the oldest (earliest created, then smallest
//! ref) survives; the others and the event's provisional ref are merged into it. With no
//! candidate a new `p:` profile is created. An identification with nothing mergeable merges
//! nothing. Every change that results gets the next fleet-wide `rev`, is stored for
//! `identity.since`, and is broadcast by the service after the commit.
//!
//! Points live in a ledger, one row per purchase event id (or online order), so a re-sent
//! event never counts twice; a profile's balance is the sum over every ref merged into it.
//! Erasure deletes identifiers, strips them from stored events and past changes, and keeps
//! only the pseudonymous ref.

use rusqlite::{params, OptionalExtension, Transaction};

use crate::protocol::{Identifier, IdentityChange, Merge, ProfileView};

/// The `identity_seen` body central reads.
#[derive(Debug, serde::Deserialize)]
struct Seen {
    customer: String,
    #[serde(default)]
    identifiers: Vec<Identifier>,
}

/// The root a ref resolves to through central's merges.
pub(super) fn resolve(tx: &Transaction<'_>, profile: &str) -> rusqlite::Result<String> {
    let mut current = profile.to_string();
    // Merges always point at an older survivor, so chains are short and acyclic; the bound
    // only guards against a damaged store.
    for _ in 0..64 {
        let next: Option<String> = tx
            .prepare_cached("SELECT to_ref FROM profile_aliases WHERE from_ref = ?1")?
            .query_row([&current], |r| r.get(0))
            .optional()?;
        match next {
            Some(next) => current = next,
            None => break,
        }
    }
    Ok(current)
}

/// Resolves one `identity_seen` body; the change it made, if any, as stored JSON.
pub(super) fn apply_seen(tx: &Transaction<'_>, body: &str) -> rusqlite::Result<Option<String>> {
    let Ok(seen) = serde_json::from_str::<Seen>(body) else {
        return Ok(None);
    };
    Ok(identify(tx, Some(&seen.customer), &seen.identifiers)?.and_then(|r| r.change))
}

/// What resolving an identification did.
pub(super) struct Resolved {
    /// The profile the identification belongs to.
    pub survivor: String,
    /// Whether that profile was created by it.
    pub created: bool,
    /// The change it made, stored, as JSON.
    pub change: Option<String>,
}

/// Resolves an identification: by a gateway (`customer` is the ref it was recorded under) or
/// by the online channel (`customer` is `None`). `None` when nothing mergeable was given.
pub(super) fn identify(
    tx: &Transaction<'_>,
    customer: Option<&str>,
    identifiers: &[Identifier],
) -> rusqlite::Result<Option<Resolved>> {
    let deciding: Vec<&Identifier> = identifiers.iter().filter(|i| i.is_mergeable()).collect();
    if deciding.is_empty() {
        return Ok(None);
    }
    let mut candidates = Vec::new();
    for identifier in &deciding {
        let owner: Option<String> = tx
            .prepare_cached("SELECT profile FROM profile_identifiers WHERE hash = ?1")?
            .query_row([&identifier.hash], |r| r.get(0))
            .optional()?;
        if let Some(owner) = owner {
            candidates.push(resolve(tx, &owner)?);
        }
    }
    // An erased profile is nobody's any more: a box that cached its ref before the erasure
    // neither revives it nor links its history to whoever the identifiers belong to now.
    let customer = match customer {
        Some(c) if is_erased(tx, &resolve(tx, c)?)? => None,
        other => other,
    };
    if let Some(customer) = customer.filter(|c| c.starts_with("p:")) {
        if exists(tx, customer)? {
            candidates.push(resolve(tx, customer)?);
        }
    }
    candidates.sort();
    candidates.dedup();
    let (survivor, created) = match oldest(tx, &candidates)? {
        Some(survivor) => (survivor, false),
        None => (create(tx)?, true),
    };
    let mut merges = Vec::new();
    let mut merge = |tx: &Transaction<'_>, from: &str| -> rusqlite::Result<()> {
        if from == survivor || resolve(tx, from)? == survivor {
            return Ok(());
        }
        tx.prepare_cached(
            "INSERT OR REPLACE INTO profile_aliases(from_ref, to_ref) VALUES (?1, ?2)",
        )?
        .execute([from, survivor.as_str()])?;
        merges.push(Merge {
            from: from.to_string(),
            to: survivor.clone(),
        });
        Ok(())
    };
    for other in candidates.iter().filter(|c| **c != survivor) {
        merge(tx, other)?;
    }
    if let Some(customer) = customer {
        merge(tx, customer)?;
    }
    let mut attached = false;
    for identifier in identifiers {
        attached |= tx
            .prepare_cached(
                "INSERT OR IGNORE INTO profile_identifiers(hash, kind, verified, profile) VALUES (?1, ?2, ?3, ?4)",
            )?
            .execute(params![
                identifier.hash,
                identifier.kind.as_str(),
                identifier.verified,
                survivor
            ])?
            > 0;
    }
    let change = if created || attached || !merges.is_empty() {
        let view = view(tx, &survivor)?;
        Some(record_change(tx, merges, vec![view], Vec::new())?)
    } else {
        None
    };
    Ok(Some(Resolved {
        survivor,
        created,
        change,
    }))
}

/// Gives a change the next fleet-wide rev and stores it for `identity.since`; returns its JSON.
pub(super) fn record_change(
    tx: &Transaction<'_>,
    merges: Vec<Merge>,
    profiles: Vec<ProfileView>,
    erased: Vec<String>,
) -> rusqlite::Result<String> {
    let rev: i64 = tx.query_row(
        "UPDATE counters SET value = value + 1 WHERE name = 'identity_rev' RETURNING value",
        [],
        |r| r.get(0),
    )?;
    let change = IdentityChange {
        rev: rev.max(0) as u64,
        merges,
        profiles,
        erased,
    };
    let json = serde_json::to_string(&change)
        .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?;
    tx.prepare_cached("INSERT INTO identity_changes(rev, change) VALUES (?1, ?2)")?
        .execute(params![rev, json])?;
    Ok(json)
}

/// Every ref that resolves to `root` (itself included).
pub(super) fn members(tx: &Transaction<'_>, root: &str) -> rusqlite::Result<Vec<String>> {
    tx.prepare_cached(
        "WITH RECURSIVE members(ref) AS (
            SELECT ?1
            UNION SELECT from_ref FROM profile_aliases JOIN members ON to_ref = members.ref)
         SELECT ref FROM members",
    )?
    .query_map([root], |r| r.get(0))?
    .collect()
}

/// Records `points` for `customer` under `entry` (an event id, or an online order) once;
/// returns the change that tells the boxes the profile's new balance, if the customer has a
/// profile.
pub(super) fn add_points(
    tx: &Transaction<'_>,
    entry: &str,
    customer: &str,
    points: i64,
    source: &str,
) -> rusqlite::Result<Option<String>> {
    if points == 0 {
        return Ok(None);
    }
    let inserted = tx
        .prepare_cached(
            "INSERT OR IGNORE INTO points_ledger(entry, profile, points, source, at)
             VALUES (?1, ?2, ?3, ?4, ?5)",
        )?
        .execute(params![
            entry,
            customer,
            points,
            source,
            crate::protocol::timestamp(std::time::SystemTime::now())
        ])?;
    let root = resolve(tx, customer)?;
    if inserted == 0 || !exists(tx, &root)? {
        return Ok(None);
    }
    let view = view(tx, &root)?;
    record_change(tx, Vec::new(), vec![view], Vec::new()).map(Some)
}

/// The right to erasure: every identifier of the profile and of every ref merged into it is
/// deleted, stored `identity_seen` bodies and past changes lose their identifiers, and the
/// profile is marked erased. Its events and points stay, under the pseudonymous ref. Returns
/// the erased root and the change that tells every box; `None` when there is no such profile.
pub(super) fn erase(
    tx: &Transaction<'_>,
    profile: &str,
) -> rusqlite::Result<Option<(String, String)>> {
    let root = resolve(tx, profile)?;
    if !exists(tx, &root)? {
        return Ok(None);
    }
    let members = members(tx, &root)?;
    for member in &members {
        tx.prepare_cached("DELETE FROM profile_identifiers WHERE profile = ?1")?
            .execute([member])?;
        tx.prepare_cached(
            "UPDATE events SET body = json_set(body, '$.identifiers', json('[]'))
             WHERE kind = 'identity_seen' AND json_extract(body, '$.customer') = ?1",
        )?
        .execute([member])?;
    }
    let mut rewrites = Vec::new();
    {
        let mut past = tx.prepare_cached(
            "SELECT rev, change FROM identity_changes WHERE instr(change, ?1) > 0",
        )?;
        let rows = past.query_map([&root], |r| {
            Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?))
        })?;
        for row in rows {
            let (rev, json) = row?;
            let Ok(mut change) = serde_json::from_str::<IdentityChange>(&json) else {
                continue;
            };
            for view in change.profiles.iter_mut().filter(|v| v.profile == root) {
                view.identifiers.clear();
            }
            if let Ok(scrubbed) = serde_json::to_string(&change) {
                rewrites.push((rev, scrubbed));
            }
        }
    }
    for (rev, scrubbed) in rewrites {
        tx.prepare_cached("UPDATE identity_changes SET change = ?2 WHERE rev = ?1")?
            .execute(params![rev, scrubbed])?;
    }
    tx.prepare_cached("UPDATE profiles SET erased_at = ?2 WHERE ref = ?1")?
        .execute(params![
            root,
            crate::protocol::timestamp(std::time::SystemTime::now())
        ])?;
    let change = record_change(tx, Vec::new(), Vec::new(), vec![root.clone()])?;
    Ok(Some((root, change)))
}

pub(super) fn is_erased(tx: &Transaction<'_>, profile: &str) -> rusqlite::Result<bool> {
    Ok(tx
        .prepare_cached("SELECT erased_at IS NOT NULL FROM profiles WHERE ref = ?1")?
        .query_row([profile], |r| r.get(0))
        .optional()?
        .unwrap_or(false))
}

/// rpc `profile.lookup`: the profile the identifiers belong to (mergeable ones decide; an
/// unverified one is looked up only when nothing mergeable is given), or none.
pub(super) fn lookup(
    tx: &Transaction<'_>,
    identifiers: &[Identifier],
) -> rusqlite::Result<Option<ProfileView>> {
    let any_mergeable = identifiers.iter().any(Identifier::is_mergeable);
    for identifier in identifiers
        .iter()
        .filter(|i| !any_mergeable || i.is_mergeable())
    {
        let owner: Option<String> = tx
            .prepare_cached("SELECT profile FROM profile_identifiers WHERE hash = ?1")?
            .query_row([&identifier.hash], |r| r.get(0))
            .optional()?;
        if let Some(owner) = owner {
            let root = resolve(tx, &owner)?;
            return view(tx, &root).map(Some);
        }
    }
    Ok(None)
}

/// Whether `profile` is a live (not erased) profile.
pub(super) fn exists(tx: &Transaction<'_>, profile: &str) -> rusqlite::Result<bool> {
    tx.prepare_cached("SELECT EXISTS(SELECT 1 FROM profiles WHERE ref = ?1 AND erased_at IS NULL)")?
        .query_row([profile], |r| r.get(0))
}

/// The oldest of `candidates`: earliest created, then smallest ref.
fn oldest(tx: &Transaction<'_>, candidates: &[String]) -> rusqlite::Result<Option<String>> {
    let mut best: Option<(i64, String)> = None;
    for candidate in candidates {
        let created: Option<i64> = tx
            .prepare_cached("SELECT created FROM profiles WHERE ref = ?1")?
            .query_row([candidate], |r| r.get(0))
            .optional()?;
        let Some(created) = created else { continue };
        if best
            .as_ref()
            .is_none_or(|(c, r)| (created, candidate) < (*c, r))
        {
            best = Some((created, candidate.clone()));
        }
    }
    Ok(best.map(|(_, r)| r))
}

/// A new `p:` profile; its creation order is a counter, not a clock.
fn create(tx: &Transaction<'_>) -> rusqlite::Result<String> {
    let created: i64 = tx.query_row(
        "UPDATE counters SET value = value + 1 WHERE name = 'profile_seq' RETURNING value",
        [],
        |r| r.get(0),
    )?;
    let id = ulid::Ulid::new().0;
    let profile = format!(
        "p:{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
        (id >> 96) as u32,
        (id >> 80) as u16,
        (id >> 64) as u16,
        (id >> 48) as u16,
        id & 0xffff_ffff_ffff
    );
    tx.prepare_cached("INSERT INTO profiles(ref, created, points) VALUES (?1, ?2, 0)")?
        .execute(params![profile, created])?;
    Ok(profile)
}

/// The profile as gateways see it: its identifiers and the points of every ref merged into it.
pub(super) fn view(tx: &Transaction<'_>, profile: &str) -> rusqlite::Result<ProfileView> {
    let mut points = 0i64;
    let mut identifiers = Vec::new();
    // One walk of the merges serves both the points and the identifiers.
    for member in members(tx, profile)? {
        let sum: i64 = tx
            .prepare_cached(
                "SELECT COALESCE(SUM(points), 0) FROM points_ledger WHERE profile = ?1",
            )?
            .query_row([&member], |r| r.get(0))?;
        points = points.saturating_add(sum);
        let rows = tx
            .prepare_cached(
                "SELECT kind, hash, verified FROM profile_identifiers WHERE profile = ?1",
            )?
            .query_map([&member], |r| {
                let kind: String = r.get(0)?;
                Ok((kind, r.get::<_, String>(1)?, r.get::<_, Option<bool>>(2)?))
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        identifiers.extend(rows.into_iter().filter_map(|(kind, hash, verified)| {
            let kind = serde_json::from_value(serde_json::Value::String(kind)).ok()?;
            Some(Identifier {
                kind,
                hash,
                verified,
            })
        }));
    }
    identifiers.sort_by(|a, b| a.hash.cmp(&b.hash));
    Ok(ProfileView {
        profile: profile.to_string(),
        identifiers,
        points,
    })
}
