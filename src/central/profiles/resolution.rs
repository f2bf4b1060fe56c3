//! The resolution rules of docs/protocol.md "Identity", applied to a snapshot of the identity
//! graph: the owners of the identifiers at hand, every ref on the alias chains they and the
//! customers lead through, and those refs' profile rows. The snapshot is read set-wise (three
//! statements however many identifications), resolves any number of identifications in
//! order in memory, and writes what they changed in one go: one identification from the
//! online channel and a thousand queued `identity_seen` events go through the same rules.
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
    /// Profiles created in memory, in creation order.
    created: Vec<String>,
    /// Merges to write: from → to (a later merge of the same ref replaces an earlier one).
    merged: BTreeMap<String, String>,
    /// Identifiers to attach, with the profile each goes to.
    attached: Vec<(Identifier, String)>,
}

/// Every ref on the chains from the given refs to their roots, with where each points.
pub(in crate::central) const WALK_TO_ROOTS: &str = "WITH RECURSIVE walk(ref, depth) AS (
        SELECT given.column1, 0 FROM {values} AS given
        UNION
        SELECT profile_aliases.to_ref, walk.depth + 1 FROM walk
        JOIN profile_aliases ON profile_aliases.from_ref = walk.ref
        WHERE walk.depth < 64)
    SELECT DISTINCT walk.ref, profile_aliases.to_ref FROM walk
    LEFT JOIN profile_aliases ON profile_aliases.from_ref = walk.ref";

impl Graph {
    /// Reads what resolving identifications of `refs` (customers, purchasers) with
    /// `identifiers` needs.
    pub async fn load(
        tx: &mut impl Tx,
        refs: &[&str],
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
        let mut starts: Vec<&str> = refs.to_vec();
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
        let known: Vec<&str> = known.iter().map(String::as_str).collect();
        for row in db::lookup_in(
            tx,
            "SELECT ref, created, erased_at FROM profiles WHERE ref",
            &[],
            &known,
        )
        .await?
        {
            let row_of = ProfileRow {
                created: row.int(1)?,
                erased: row.opt_text(2)?.is_some(),
            };
            graph.profiles.insert(row.text(0)?, Some(row_of));
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
        };
        self.profiles.insert(profile.clone(), Some(row));
        self.aliases.insert(profile.clone(), None);
        self.created.push(profile.clone());
        profile
    }

    /// Writes the profiles, merges and identifiers resolved since the last write.
    pub async fn write(&mut self, tx: &mut impl Tx) -> Result<(), DbError> {
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
                self.profiles.insert(
                    profile.clone(),
                    Some(ProfileRow {
                        created,
                        erased: false,
                    }),
                );
                rows.push([profile.into(), created.into(), db::Value::Int(0)]);
            }
            db::insert_rows(tx, "INSERT INTO profiles(ref, created, points)", &rows).await?;
        }
        let merged: Vec<[db::Value; 2]> = std::mem::take(&mut self.merged)
            .into_iter()
            .map(|(from, to)| [from.into(), to.into()])
            .collect();
        db::insert_rows(
            tx,
            "INSERT INTO profile_aliases(from_ref, to_ref) {values}
             ON CONFLICT(from_ref) DO UPDATE SET to_ref = excluded.to_ref",
            &merged,
        )
        .await?;
        let attached: Vec<[db::Value; 4]> = std::mem::take(&mut self.attached)
            .into_iter()
            .map(|(identifier, profile)| {
                [
                    identifier.hash.into(),
                    identifier.kind.as_str().into(),
                    identifier.verified.into(),
                    profile.into(),
                ]
            })
            .collect();
        db::insert_rows(
            tx,
            "INSERT INTO profile_identifiers(hash, kind, verified, profile) {values}
             ON CONFLICT DO NOTHING",
            &attached,
        )
        .await
    }
}
