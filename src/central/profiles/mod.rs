//! Central's profiles (docs/protocol.md "Identity"): each `identity_seen`, applied in
//! application order by the resolver (`effects.rs`), and each identification from the online
//! channel is resolved deterministically, by the rules in `resolution.rs`. Mergeable
//! identifiers (cards, app tokens, verified phones and emails) alone decide: the profiles they
//! already belong to, and the event's own `p:` ref, are the candidates, and the oldest
//! (earliest created, then smallest ref) survives; the others and the event's provisional ref
//! are merged into it. With no candidate a new `p:` profile is created. An identification with
//! nothing mergeable merges nothing. Every change that results gets the next fleet-wide `rev`,
//! is stored for `identity.since`, and is broadcast by the service after the commit.
//!
//! Points live in a ledger, one row per purchase event id (or online order), so a re-sent
//! event never counts twice; each ref keeps a running total of its entries (`ref_points`), and
//! a root profile keeps the sum of those totals over every ref merged into it (`points`,
//! moved on merge by `resolution.rs`), so a balance is one row, not a walk of merges.
//! Erasure deletes identifiers, strips them from stored events and past changes, and keeps
//! only the pseudonymous ref.

pub(in crate::central) mod resolution;

pub(super) use resolution::Graph;

use super::db::{self, params, DbError, Tx};
use crate::protocol::{Identifier, IdentityChange, Merge, ProfileView};

/// The lock every identity resolution holds: the fleet-wide `rev`, profile creation and merges
/// are one sequence, whichever central instance runs them.
const IDENTITY_LOCK: &str = "identity";

/// Holds the identity lock for the rest of the transaction. What runs under it reads profiles,
/// merges and identifiers by their keys, so the planner is kept on index lookups too: set once,
/// with the lock and in its round trip, when the transaction first takes it (a resolver round
/// asks for the lock again for every change it records).
pub(super) async fn lock(tx: &mut impl Tx) -> Result<(), DbError> {
    let mut statements = tx.lock_statements(&[IDENTITY_LOCK.to_string()]);
    if let (false, Some(sql)) = (statements.is_empty(), tx.dialect().keyed_lookups()) {
        statements.push((sql.to_string(), Vec::new()));
    }
    tx.pipeline(&statements).await.map(drop)
}

/// Adds points to profiles' totals, given as (ref, points) rows.
const ADD_TO_PROFILE_POINTS: &str = "UPDATE profiles SET points = profiles.points + given.column2
    FROM {values} AS given WHERE profiles.ref = given.column1";
const POINTS_BY_REF: [&str; 2] = ["TEXT", "BIGINT"];

/// The root a ref resolves to through central's merges.
pub(super) async fn resolve(tx: &mut impl Tx, profile: &str) -> Result<String, DbError> {
    let mut current = profile.to_string();
    // Merges always point at an older survivor, so chains are short and acyclic; the bound
    // only guards against a damaged store.
    for _ in 0..64 {
        let next = tx
            .query_opt(
                "SELECT to_ref FROM profile_aliases WHERE from_ref = $1",
                params![&current],
            )
            .await?;
        match next {
            Some(row) => current = row.text(0)?,
            None => break,
        }
    }
    Ok(current)
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
pub(super) async fn identify(
    tx: &mut impl Tx,
    customer: Option<&str>,
    identifiers: &[Identifier],
) -> Result<Option<Resolved>, DbError> {
    if !identifiers.iter().any(Identifier::is_mergeable) {
        return Ok(None);
    }
    lock(tx).await?;
    let given: Vec<&Identifier> = identifiers.iter().collect();
    let customers: Vec<&str> = customer.into_iter().collect();
    let mut graph = Graph::load(tx, &customers, &[], &given).await?;
    let Some(decision) = graph.identify(customer, identifiers) else {
        return Ok(None);
    };
    graph.write(tx).await?;
    let change = if decision.changed() {
        let view = view(tx, &decision.survivor).await?;
        Some(record_change(tx, decision.merges, vec![view], Vec::new()).await?)
    } else {
        None
    };
    Ok(Some(Resolved {
        survivor: decision.survivor,
        created: decision.created,
        change,
    }))
}

/// Gives `profile` the identifier unless a profile has it already; whether it was added.
pub(super) async fn attach(
    tx: &mut impl Tx,
    identifier: &Identifier,
    profile: &str,
) -> Result<bool, DbError> {
    Ok(tx
        .execute(
            "INSERT INTO profile_identifiers(hash, kind, verified, profile) VALUES ($1, $2, $3, $4)
             ON CONFLICT DO NOTHING",
            params![
                &identifier.hash,
                identifier.kind.as_str(),
                identifier.verified,
                profile
            ],
        )
        .await?
        > 0)
}

/// Gives a change the next fleet-wide rev and stores it for `identity.since`; returns its JSON.
pub(super) async fn record_change(
    tx: &mut impl Tx,
    merges: Vec<Merge>,
    profiles: Vec<ProfileView>,
    erased: Vec<String>,
) -> Result<String, DbError> {
    lock(tx).await?;
    let rev = tx
        .query_one(
            "UPDATE counters SET value = value + 1 WHERE name = 'identity_rev' RETURNING value",
            &[],
        )
        .await?
        .int(0)?;
    let change = IdentityChange {
        rev: rev.max(0) as u64,
        merges,
        profiles,
        erased,
    };
    let json = serde_json::to_string(&change).map_err(|e| DbError::Encode(e.to_string()))?;
    tx.execute(
        "INSERT INTO identity_changes(rev, change) VALUES ($1, $2)",
        params![rev, &json],
    )
    .await?;
    Ok(json)
}

/// Largest change central builds from many identifications at once (merges and views), well
/// under docs/protocol.md's payload cap: bigger groups are split into several changes.
const CHANGE_BUDGET_BYTES: usize = 96 * 1024;

/// Records `merges` and `profiles` as as few changes as fit [`CHANGE_BUDGET_BYTES`] each: a
/// change goes to every box, so one per group of identifications, not one per event.
pub(super) async fn record_changes(
    tx: &mut impl Tx,
    merges: Vec<Merge>,
    profiles: Vec<ProfileView>,
) -> Result<Vec<String>, DbError> {
    let mut changes = Vec::new();
    let (mut merges_part, mut profiles_part) = (Vec::new(), Vec::new());
    let mut used = 0;
    let items = merges
        .into_iter()
        .map(Part::Merge)
        .chain(profiles.into_iter().map(Part::Profile));
    for item in items {
        let len = item.json_len();
        if used + len > CHANGE_BUDGET_BYTES && used > 0 {
            let (merges, profiles) = (
                std::mem::take(&mut merges_part),
                std::mem::take(&mut profiles_part),
            );
            changes.push(record_change(tx, merges, profiles, Vec::new()).await?);
            used = 0;
        }
        used += len;
        match item {
            Part::Merge(merge) => merges_part.push(merge),
            Part::Profile(view) => profiles_part.push(view),
        }
    }
    if used > 0 {
        changes.push(record_change(tx, merges_part, profiles_part, Vec::new()).await?);
    }
    Ok(changes)
}

/// One entry of a change being split to fit its budget.
enum Part {
    Merge(Merge),
    Profile(ProfileView),
}

impl Part {
    fn json_len(&self) -> usize {
        match self {
            Part::Merge(merge) => serde_json::to_string(merge).map_or(0, |j| j.len()),
            Part::Profile(view) => serde_json::to_string(view).map_or(0, |j| j.len()),
        }
    }
}

/// Every ref that resolves to `root` (itself included).
pub(super) async fn members(tx: &mut impl Tx, root: &str) -> Result<Vec<String>, DbError> {
    let root_key = tx.dialect().key_text("CAST($1 AS TEXT)");
    let members = format!(
        "WITH RECURSIVE members(ref) AS (
            SELECT {root_key}
            UNION SELECT from_ref FROM profile_aliases JOIN members ON to_ref = members.ref)
        SELECT ref FROM members"
    );
    tx.query(&members, params![root])
        .await?
        .iter()
        .map(|row| row.text(0))
        .collect()
}

/// Records `points` for `customer` under `entry` (an event id, or an online order) once;
/// returns the change that tells the boxes the profile's new balance, if the customer has a
/// profile.
pub(super) async fn add_points(
    tx: &mut impl Tx,
    entry: &str,
    customer: &str,
    points: i64,
    source: &str,
) -> Result<Option<String>, DbError> {
    if points == 0 {
        return Ok(None);
    }
    lock(tx).await?;
    let root = resolve(tx, customer).await?;
    if enter_points(tx, &[(entry, customer, &root, points)], source)
        .await?
        .is_empty()
    {
        return Ok(None);
    }
    if !exists(tx, &root).await? {
        return Ok(None);
    }
    let view = view(tx, &root).await?;
    record_change(tx, Vec::new(), vec![view], Vec::new())
        .await
        .map(Some)
}

/// Enters ledger entries (`entry`, the ref it is recorded under, the root that ref resolves
/// to, points), each once whoever enters it again, and adds the new ones to their refs'
/// running totals (`ref_points`) and to their roots' (a root without a profile row, a
/// provisional ref not yet identified, has only its own). The caller holds the identity lock.
/// Returns the roots of the entries that were new.
pub(super) async fn enter_points(
    tx: &mut impl Tx,
    entries: &[(&str, &str, &str, i64)],
    source: &str,
) -> Result<Vec<String>, DbError> {
    let at = crate::protocol::timestamp(std::time::SystemTime::now());
    let root_of: std::collections::HashMap<&str, &str> = entries
        .iter()
        .map(|(_, profile, root, _)| (*profile, *root))
        .collect();
    let rows: Vec<[db::Value; 5]> = entries
        .iter()
        .map(|(entry, profile, _, points)| {
            [
                (*entry).into(),
                (*profile).into(),
                (*points).into(),
                source.into(),
                at.as_str().into(),
            ]
        })
        .collect();
    let mut pipeline = db::Pipeline::new();
    let inserted = pipeline.add_insert(
        "INSERT INTO points_ledger(entry, profile, points, source, at) {values}
         ON CONFLICT DO NOTHING RETURNING profile, points",
        ["TEXT", "TEXT", "BIGINT", "TEXT", "TEXT"],
        &rows,
    );
    let inserted = pipeline.run(tx).await?.take(inserted);
    let mut totals: std::collections::BTreeMap<String, i64> = std::collections::BTreeMap::new();
    let mut root_totals: std::collections::BTreeMap<String, i64> =
        std::collections::BTreeMap::new();
    for row in inserted {
        let (profile, points) = (row.text(0)?, row.int(1)?);
        let root = root_of.get(profile.as_str()).copied().unwrap_or(&profile);
        *root_totals.entry(root.to_string()).or_default() += points;
        *totals.entry(profile).or_default() += points;
    }
    let added: Vec<[db::Value; 2]> = totals
        .iter()
        .map(|(profile, points)| [profile.into(), (*points).into()])
        .collect();
    let added_to_roots: Vec<[db::Value; 2]> = root_totals
        .iter()
        .map(|(root, points)| [root.into(), (*points).into()])
        .collect();
    let mut writes = db::Pipeline::new();
    writes.add_insert(
        "INSERT INTO ref_points(ref, points) {values}
         ON CONFLICT(ref) DO UPDATE SET points = ref_points.points + excluded.points",
        ["TEXT", "BIGINT"],
        &added,
    );
    writes.add_values(ADD_TO_PROFILE_POINTS, POINTS_BY_REF, &added_to_roots);
    writes.run(tx).await?;
    Ok(root_totals.into_keys().collect())
}

/// The right to erasure: every identifier of the profile and of every ref merged into it is
/// deleted, stored `identity_seen` bodies and past changes lose their identifiers, and the
/// profile is marked erased. Its events and points stay, under the pseudonymous ref. Returns
/// the erased root and the change that tells every box; `None` when there is no such profile.
pub(super) async fn erase(
    tx: &mut impl Tx,
    profile: &str,
) -> Result<Option<(String, String)>, DbError> {
    lock(tx).await?;
    let root = resolve(tx, profile).await?;
    if !exists(tx, &root).await? {
        return Ok(None);
    }
    let dialect = tx.dialect();
    let scrub = format!(
        "UPDATE events SET body = {}
         WHERE kind = 'identity_seen' AND customer = $1",
        dialect.json_clear_array("body", "identifiers"),
    );
    for member in members(tx, &root).await? {
        tx.execute(
            "DELETE FROM profile_identifiers WHERE profile = $1",
            params![&member],
        )
        .await?;
        tx.execute(&scrub, params![&member]).await?;
    }
    // Refs are hex digits, letters and dashes: no LIKE wildcard can be in one.
    let past = tx
        .query(
            "SELECT rev, change FROM identity_changes WHERE change LIKE '%' || $1 || '%'",
            params![&root],
        )
        .await?;
    for row in past {
        let (rev, json) = (row.int(0)?, row.text(1)?);
        let Ok(mut change) = serde_json::from_str::<IdentityChange>(&json) else {
            continue;
        };
        for view in change.profiles.iter_mut().filter(|v| v.profile == root) {
            view.identifiers.clear();
        }
        if let Ok(scrubbed) = serde_json::to_string(&change) {
            tx.execute(
                "UPDATE identity_changes SET change = $2 WHERE rev = $1",
                params![rev, scrubbed],
            )
            .await?;
        }
    }
    tx.execute(
        "UPDATE profiles SET erased_at = $2 WHERE ref = $1",
        params![
            &root,
            crate::protocol::timestamp(std::time::SystemTime::now())
        ],
    )
    .await?;
    let change = record_change(tx, Vec::new(), Vec::new(), vec![root.clone()]).await?;
    Ok(Some((root, change)))
}

/// Whether `profile` was erased.
pub(super) async fn is_erased(tx: &mut impl Tx, profile: &str) -> Result<bool, DbError> {
    Ok(tx
        .query_opt(
            "SELECT erased_at FROM profiles WHERE ref = $1",
            params![profile],
        )
        .await?
        .map(|row| row.opt_text(0))
        .transpose()?
        .flatten()
        .is_some())
}

async fn owner(tx: &mut impl Tx, hash: &str) -> Result<Option<String>, DbError> {
    tx.query_opt(
        "SELECT profile FROM profile_identifiers WHERE hash = $1",
        params![hash],
    )
    .await?
    .map(|row| row.text(0))
    .transpose()
}

/// rpc `profile.lookup`: the profile the identifiers belong to (mergeable ones decide; an
/// unverified one is looked up only when nothing mergeable is given), or none.
pub(super) async fn lookup(
    tx: &mut impl Tx,
    identifiers: &[Identifier],
) -> Result<Option<ProfileView>, DbError> {
    let any_mergeable = identifiers.iter().any(Identifier::is_mergeable);
    for identifier in identifiers
        .iter()
        .filter(|i| !any_mergeable || i.is_mergeable())
    {
        if let Some(owner) = owner(tx, &identifier.hash).await? {
            let root = resolve(tx, &owner).await?;
            return view(tx, &root).await.map(Some);
        }
    }
    Ok(None)
}

/// Whether `profile` is a live (not erased) profile.
pub(super) async fn exists(tx: &mut impl Tx, profile: &str) -> Result<bool, DbError> {
    Ok(tx
        .query_opt(
            "SELECT 1 FROM profiles WHERE ref = $1 AND erased_at IS NULL",
            params![profile],
        )
        .await?
        .is_some())
}

/// The profile as gateways see it: its identifiers and the points of every ref merged into it.
pub(super) async fn view(tx: &mut impl Tx, profile: &str) -> Result<ProfileView, DbError> {
    views(tx, &[profile])
        .await?
        .pop()
        .ok_or_else(|| DbError::Type("no view of a profile".into()))
}

/// The views of `profiles` (roots), in their order: a root holds its total and its
/// identifiers, so two key lookups per thousand profiles, however many refs were merged into
/// each.
pub(super) async fn views(
    tx: &mut impl Tx,
    profiles: &[&str],
) -> Result<Vec<ProfileView>, DbError> {
    let mut reads = db::Pipeline::new();
    let points_part = reads.add_in("SELECT ref, points FROM profiles WHERE ref", &[], profiles);
    let identifiers_part = reads.add_in(
        "SELECT profile, kind, hash, verified FROM profile_identifiers WHERE profile",
        &[],
        profiles,
    );
    let mut answers = reads.run(tx).await?;
    let mut points: std::collections::HashMap<String, i64> = std::collections::HashMap::new();
    for row in answers.take(points_part) {
        points.insert(row.text(0)?, row.int(1)?);
    }
    let mut identifiers: std::collections::HashMap<String, Vec<Identifier>> =
        std::collections::HashMap::new();
    for row in answers.take(identifiers_part) {
        let Ok(kind) = serde_json::from_value(serde_json::Value::String(row.text(1)?)) else {
            continue;
        };
        let identifier = Identifier {
            kind,
            hash: row.text(2)?,
            verified: row.opt_int(3)?.map(|v| v != 0),
        };
        let held = identifiers.entry(row.text(0)?).or_default();
        // A profile given twice, in two chunks, comes back twice.
        if !held.iter().any(|i| i.hash == identifier.hash) {
            held.push(identifier);
        }
    }
    Ok(profiles
        .iter()
        .map(|profile| {
            let mut identifiers = identifiers.get(*profile).cloned().unwrap_or_default();
            identifiers.sort_by(|a, b| a.hash.cmp(&b.hash));
            ProfileView {
                profile: profile.to_string(),
                identifiers,
                points: points.get(*profile).copied().unwrap_or(0),
            }
        })
        .collect())
}
