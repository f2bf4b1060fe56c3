//! Central's identity resolution (docs/protocol.md "Identity"): each `identity_seen`, applied
//! in seq order, is resolved deterministically. Mergeable identifiers (cards, app tokens,
//! verified phones and emails) alone decide: the profiles they already belong to, and the
//! event's own `p:` ref, are the candidates, and the oldest (earliest created, then smallest
//! ref) survives; the others and the event's provisional ref are merged into it. With no
//! candidate a new `p:` profile is created. An identification with nothing mergeable merges
//! nothing. Every change that results gets the next fleet-wide `rev`, is stored for
//! `identity.since`, and is broadcast by the service after the commit.

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
    let deciding: Vec<&Identifier> = seen
        .identifiers
        .iter()
        .filter(|i| i.is_mergeable())
        .collect();
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
    if seen.customer.starts_with("p:") && exists(tx, &seen.customer)? {
        candidates.push(resolve(tx, &seen.customer)?);
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
    merge(tx, &seen.customer)?;
    let mut attached = false;
    for identifier in &seen.identifiers {
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
    if !created && !attached && merges.is_empty() {
        return Ok(None);
    }
    let rev: i64 = tx.query_row(
        "UPDATE counters SET value = value + 1 WHERE name = 'identity_rev' RETURNING value",
        [],
        |r| r.get(0),
    )?;
    let change = IdentityChange {
        rev: rev.max(0) as u64,
        merges,
        profiles: vec![view(tx, &survivor)?],
        erased: Vec::new(),
    };
    let json = serde_json::to_string(&change).unwrap_or_default();
    tx.prepare_cached("INSERT INTO identity_changes(rev, change) VALUES (?1, ?2)")?
        .execute(params![rev, json])?;
    Ok(Some(json))
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

fn exists(tx: &Transaction<'_>, profile: &str) -> rusqlite::Result<bool> {
    tx.prepare_cached("SELECT EXISTS(SELECT 1 FROM profiles WHERE ref = ?1)")?
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

fn view(tx: &Transaction<'_>, profile: &str) -> rusqlite::Result<ProfileView> {
    let points: i64 = tx
        .prepare_cached("SELECT points FROM profiles WHERE ref = ?1")?
        .query_row([profile], |r| r.get(0))
        .optional()?
        .unwrap_or(0);
    let identifiers = tx
        .prepare_cached(
            "SELECT kind, hash, verified FROM profile_identifiers WHERE profile = ?1 ORDER BY hash",
        )?
        .query_map([profile], |r| {
            let kind: String = r.get(0)?;
            Ok((kind, r.get::<_, String>(1)?, r.get::<_, Option<bool>>(2)?))
        })?
        .filter_map(|row| {
            let (kind, hash, verified) = row.ok()?;
            let kind = serde_json::from_value(serde_json::Value::String(kind)).ok()?;
            Some(Identifier {
                kind,
                hash,
                verified,
            })
        })
        .collect();
    Ok(ProfileView {
        profile: profile.to_string(),
        identifiers,
        points,
    })
}
