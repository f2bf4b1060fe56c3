//! The resolution rules of docs/protocol.md "Identity", applied to a snapshot of the identity
//! graph: the owners of the identifiers at hand, every ref on the alias chains they and the
//! customers lead through, and those refs' profile rows. The snapshot is read set-wise (three
//! statements however many identifications), resolves any number of identifications in
//! order in memory, and writes what they changed in one go: one identification from the
//! online channel and a thousand queued `identity_seen` events go through the same rules.
//!
//! A root profile holds what belongs to everything merged into it: its identifiers are
//! attached to it, and its `points` column is the sum of the running totals (`ref_points`) of
//! every ref that resolves to it. A merge moves both (the merged ref's identifiers, and the
//! total it held or, for a provisional ref, its own), so a view reads the root alone, however
//! many refs a card seen in many stores has gathered.
//!
//! The caller holds the identity lock from before the snapshot is read until its writes are
//! committed, so nothing else changes the graph in between.

use std::collections::{BTreeMap, HashMap};

use super::super::db::{self, params, DbError, Tx};
use crate::protocol::{Identifier, Merge};

/// A profile row as the rules need it.
#[derive(Debug, Clone, Copy)]
struct ProfileRow {
    /// Creation order: the oldest profile survives a merge.
    created: i64,
    erased: bool,
    /// The points of every ref resolving to it, while it is a root (0 once merged).
    points: i64,
}

/// What resolving one identification decided.
#[derive(Debug)]
pub(in crate::central) struct Decision {
    /// The profile the identification belongs to.
    pub survivor: String,
    /// Whether that profile was created by it.
    pub created: bool,
    /// Refs merged into the survivor by it.
    pub merges: Vec<Merge>,
    /// Whether it gave the survivor an identifier no profile had.
    pub attached: bool,
}

impl Decision {
    /// Whether the identification changed anything the boxes must hear about.
    pub fn changed(&self) -> bool {
        self.created || self.attached || !self.merges.is_empty()
    }
}

/// Creation order given to a profile created in memory, above every stored one, until its
/// real number is taken when it is written.
const UNWRITTEN: i64 = 1 << 62;

/// A snapshot of the identity graph around some refs and identifiers, with the writes the
/// identifications resolved on it have not made yet.
#[derive(Debug, Default)]
pub(in crate::central) struct Graph {
    /// Identifier hash → the ref it is attached to (`None`: nobody's).
    owners: HashMap<String, Option<String>>,
    /// Ref → the ref it was merged into (`None`: a root).
    aliases: HashMap<String, Option<String>>,
    /// Ref → its profile row (`None`: no profile, e.g. a provisional ref).
    profiles: HashMap<String, Option<ProfileRow>>,
    /// Ref → the running total of the ledger entries recorded under it.
    own_points: HashMap<String, i64>,
    /// Profiles whose points the merges changed, by how much.
    moved_points: BTreeMap<String, i64>,
    /// Profiles merged into another: their identifiers go to where they resolve.
    regrouped: Vec<String>,
    /// Profiles created in memory, in creation order.
    created: Vec<String>,
    /// Merges to write: from → to (a later merge of the same ref replaces an earlier one).
    merged: BTreeMap<String, String>,
    /// Identifiers to attach, with the profile each goes to.
    attached: Vec<(Identifier, String)>,
}

/// Every ref on the chains from the given refs to their roots, with where each points: one
/// probe of the merges' key per ref on a chain (a root's probe finds nothing).
pub(in crate::central) const WALK_TO_ROOTS: &str = "WITH RECURSIVE walk(ref, to_ref, depth) AS (
        SELECT given.column1,
               (SELECT to_ref FROM profile_aliases WHERE from_ref = given.column1), 0
        FROM {values} AS given
        UNION
        SELECT walk.to_ref,
               (SELECT to_ref FROM profile_aliases WHERE from_ref = walk.to_ref), walk.depth + 1
        FROM walk WHERE walk.to_ref IS NOT NULL AND walk.depth < 64)
    SELECT DISTINCT ref, to_ref FROM walk";

impl Graph {
    /// Reads what resolving identifications recorded under `identifying` with `identifiers`
    /// needs, and where `others` (purchasers) resolve to.
    pub async fn load(
        tx: &mut impl Tx,
        identifying: &[&str],
        others: &[&str],
        identifiers: &[&Identifier],
    ) -> Result<Graph, DbError> {
        let mut graph = Graph::default();
        let mut hashes: Vec<&str> = identifiers.iter().map(|i| i.hash.as_str()).collect();
        hashes.sort_unstable();
        hashes.dedup();
        for hash in &hashes {
            graph.owners.insert(hash.to_string(), None);
        }
        for row in db::lookup_in(
            tx,
            "SELECT hash, profile FROM profile_identifiers WHERE hash",
            &[],
            &hashes,
        )
        .await?
        {
            graph.owners.insert(row.text(0)?, Some(row.text(1)?));
        }
        let mut starts: Vec<&str> = identifying.iter().chain(others).copied().collect();
        starts.extend(graph.owners.values().flatten().map(String::as_str));
        starts.sort_unstable();
        starts.dedup();
        // Every ref on the chains from the starts to their roots, with where each points.
        // Merges point at an older survivor, so chains are short and acyclic; the depth bound
        // only guards against a damaged store.
        let walked = db::query_with_keys(tx, WALK_TO_ROOTS, &starts).await?;
        for row in walked {
            graph.aliases.insert(row.text(0)?, row.opt_text(1)?);
        }
        let known: Vec<String> = graph.aliases.keys().cloned().collect();
        for profile in &known {
            graph.profiles.insert(profile.clone(), None);
        }
        // Only `p:` refs name profiles (central creates them so, and a box's provisional refs
        // are `prov:`): the others are not looked for.
        let known: Vec<&str> = known
            .iter()
            .map(String::as_str)
            .filter(|r| r.starts_with("p:"))
            .collect();
        let mut reads = db::Pipeline::new();
        let rows_part = reads.add_in(
            "SELECT ref, created, erased_at, points FROM profiles WHERE ref",
            &[],
            &known,
        );
        // A ref's own total is read only where a merge may move it: an identification's ref.
        let points_part = reads.add_in(
            "SELECT ref, points FROM ref_points WHERE ref",
            &[],
            identifying,
        );
        let mut answers = reads.run(tx).await?;
        for row in answers.take(rows_part) {
            let row_of = ProfileRow {
                created: row.int(1)?,
                erased: row.opt_text(2)?.is_some(),
                points: row.int(3)?,
            };
            graph.profiles.insert(row.text(0)?, Some(row_of));
        }
        for row in answers.take(points_part) {
            graph.own_points.insert(row.text(0)?, row.int(1)?);
        }
        Ok(graph)
    }

    /// The root `profile` resolves to through the merges.
    pub fn resolve(&self, profile: &str) -> String {
        let mut current = profile;
        for _ in 0..64 {
            match self.aliases.get(current) {
                Some(Some(next)) => current = next,
                _ => break,
            }
        }
        current.to_string()
    }

    /// Whether `profile` is a live (not erased) profile.
    pub fn exists(&self, profile: &str) -> bool {
        matches!(self.profiles.get(profile), Some(Some(row)) if !row.erased)
    }

    fn is_erased(&self, profile: &str) -> bool {
        matches!(self.profiles.get(profile), Some(Some(row)) if row.erased)
    }

    /// Resolves an identification: by a gateway (`customer` is the ref it was recorded under)
    /// or by the online channel (`customer` is `None`). `None` when nothing mergeable was
    /// given. Every ref and identifier it mentions must have been loaded.
    pub fn identify(
        &mut self,
        customer: Option<&str>,
        identifiers: &[Identifier],
    ) -> Option<Decision> {
        let deciding: Vec<&Identifier> = identifiers.iter().filter(|i| i.is_mergeable()).collect();
        if deciding.is_empty() {
            return None;
        }
        let mut candidates: Vec<String> = deciding
            .iter()
            .filter_map(|i| self.owners.get(&i.hash).cloned().flatten())
            .map(|owner| self.resolve(&owner))
            .collect();
        // An erased profile is nobody's any more: a box that cached its ref before the erasure
        // neither revives it nor links its history to whoever the identifiers belong to now.
        let customer = customer.filter(|c| !self.is_erased(&self.resolve(c)));
        if let Some(customer) = customer.filter(|c| c.starts_with("p:") && self.exists(c)) {
            candidates.push(self.resolve(customer));
        }
        candidates.sort();
        candidates.dedup();
        let (survivor, created) = match self.oldest(&candidates) {
            Some(survivor) => (survivor, false),
            None => (self.create(), true),
        };
        let mut merges = Vec::new();
        let from_refs: Vec<String> = candidates
            .iter()
            .filter(|c| **c != survivor)
            .cloned()
            .chain(customer.map(str::to_string))
            .collect();
        for from in from_refs {
            if from == survivor || self.resolve(&from) == survivor {
                continue;
            }
            self.move_holdings(&from, &survivor);
            self.aliases.insert(from.clone(), Some(survivor.clone()));
            self.merged.insert(from.clone(), survivor.clone());
            merges.push(Merge {
                from,
                to: survivor.clone(),
            });
        }
        let mut attached = false;
        for identifier in identifiers {
            let owner = self.owners.entry(identifier.hash.clone()).or_default();
            if owner.is_none() {
                *owner = Some(survivor.clone());
                self.attached.push((identifier.clone(), survivor.clone()));
                attached = true;
            }
        }
        Some(Decision {
            survivor,
            created,
            merges,
            attached,
        })
    }

    /// Moves what `from` holds to `survivor`, before `from` is merged into it. A profile merged
    /// is a root (candidates are roots; a customer with a profile is merged through its root)
    /// and gives its whole total and its identifiers. A provisional ref gives its own total,
    /// from the profile it resolved to until now if it was merged before: a later
    /// identification can point it at an older profile, and its points go with it.
    fn move_holdings(&mut self, from: &str, survivor: &str) {
        let (giver, moving) = match self.profiles.get(from) {
            Some(Some(row)) => {
                self.regrouped.push(from.to_string());
                (from.to_string(), row.points + self.moved(from))
            }
            _ => (
                self.resolve(from),
                self.own_points.get(from).copied().unwrap_or(0),
            ),
        };
        if matches!(self.profiles.get(&giver), Some(Some(_))) {
            *self.moved_points.entry(giver).or_default() -= moving;
        }
        *self.moved_points.entry(survivor.to_string()).or_default() += moving;
    }

    /// What the merges resolved so far moved to or from `profile`.
    fn moved(&self, profile: &str) -> i64 {
        self.moved_points.get(profile).copied().unwrap_or(0)
    }

    /// The oldest of `candidates` that has a profile: earliest created, then smallest ref.
    fn oldest(&self, candidates: &[String]) -> Option<String> {
        candidates
            .iter()
            .filter_map(|c| match self.profiles.get(c) {
                Some(Some(row)) => Some((row.created, c)),
                _ => None,
            })
            .min()
            .map(|(_, c)| c.clone())
    }

    /// A new `p:` profile, created in memory.
    fn create(&mut self) -> String {
        let id = ulid::Ulid::new().0;
        let profile = format!(
            "p:{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
            (id >> 96) as u32,
            (id >> 80) as u16,
            (id >> 64) as u16,
            (id >> 48) as u16,
            id & 0xffff_ffff_ffff
        );
        let row = ProfileRow {
            created: UNWRITTEN + self.created.len() as i64,
            erased: false,
            points: 0,
        };
        self.profiles.insert(profile.clone(), Some(row));
        self.aliases.insert(profile.clone(), None);
        self.created.push(profile.clone());
        profile
    }

    /// Writes the profiles, merges, identifiers and moved points resolved since the last
    /// write, in one pipeline after the new profiles' numbers.
    pub async fn write(&mut self, tx: &mut impl Tx) -> Result<(), DbError> {
        let mut writes = db::Pipeline::new();
        if !self.created.is_empty() {
            // Creation order is a counter, not a clock: the new profiles take the next
            // numbers, in the order they were created here.
            let count = self.created.len() as i64;
            let last = tx
                .query_one(
                    "UPDATE counters SET value = value + $1 WHERE name = 'profile_seq' RETURNING value",
                    params![count],
                )
                .await?
                .int(0)?;
            let mut rows = Vec::with_capacity(self.created.len());
            for (index, profile) in std::mem::take(&mut self.created).into_iter().enumerate() {
                let created = last - count + 1 + index as i64;
                if let Some(Some(row)) = self.profiles.get_mut(&profile) {
                    row.created = created;
                }
                rows.push([profile.into(), created.into(), db::Value::Int(0)]);
            }
            writes.add_insert(
                "INSERT INTO profiles(ref, created, points)",
                ["TEXT", "BIGINT", "BIGINT"],
                &rows,
            );
        }
        let merged: Vec<[db::Value; 2]> = std::mem::take(&mut self.merged)
            .into_iter()
            .map(|(from, to)| [from.into(), to.into()])
            .collect();
        writes.add_insert(
            "INSERT INTO profile_aliases(from_ref, to_ref) {values}
             ON CONFLICT(from_ref) DO UPDATE SET to_ref = excluded.to_ref",
            ["TEXT", "TEXT"],
            &merged,
        );
        // Identifiers go to the root their profile resolves to after everything resolved
        // here (a survivor may itself have been merged later in the group).
        let mut regrouped: Vec<[db::Value; 2]> = Vec::new();
        for profile in std::mem::take(&mut self.regrouped) {
            let root = self.resolve(&profile);
            regrouped.push([profile.into(), root.into()]);
        }
        writes.add_values(
            "UPDATE profile_identifiers SET profile = given.column2 FROM {values} AS given
             WHERE profile_identifiers.profile = given.column1",
            ["TEXT", "TEXT"],
            &regrouped,
        );
        let attached: Vec<[db::Value; 4]> = std::mem::take(&mut self.attached)
            .into_iter()
            .map(|(identifier, profile)| {
                [
                    identifier.hash.into(),
                    identifier.kind.as_str().into(),
                    identifier.verified.into(),
                    self.resolve(&profile).into(),
                ]
            })
            .collect();
        writes.add_insert(
            "INSERT INTO profile_identifiers(hash, kind, verified, profile) {values}
             ON CONFLICT DO NOTHING",
            ["TEXT", "TEXT", "BIGINT", "TEXT"],
            &attached,
        );
        let mut moved: Vec<[db::Value; 2]> = Vec::new();
        for (profile, points) in std::mem::take(&mut self.moved_points) {
            if let Some(Some(row)) = self.profiles.get_mut(&profile) {
                row.points += points;
            }
            if points != 0 {
                moved.push([profile.into(), points.into()]);
            }
        }
        writes.add_values(super::ADD_TO_PROFILE_POINTS, super::POINTS_BY_REF, &moved);
        writes.run(tx).await.map(drop)
    }
}
