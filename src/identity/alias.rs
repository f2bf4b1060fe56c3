//! The alias table: which profile ref each ref now resolves to, after central's merges
//! (docs/protocol.md "Identity").
//!
//! Merges arrive in any order, more than once, and across restarts; the answer must not depend
//! on any of that. So the table keeps the set of merge edges it was told about and resolves a
//! ref from that set alone: the ref's root is, within its connected group of refs, the
//! smallest ref that was never merged into another (the survivor; central's merges leave
//! exactly one). Should a group have none (a cycle, which central never sends) the smallest
//! ref of the group is its root. Same edges, same roots, whatever the order.

use std::collections::{BTreeSet, HashMap, VecDeque};

/// Merge edges, `from` → `to`, and the refs on either side of each.
#[derive(Debug, Clone, Default)]
pub struct Aliases {
    merged_into: HashMap<String, BTreeSet<String>>,
    merged_from: HashMap<String, BTreeSet<String>>,
}

impl Aliases {
    /// Records that `from` was merged into `to`. Returns whether the edge was new.
    pub fn merge(&mut self, from: &str, to: &str) -> bool {
        if from == to {
            return false;
        }
        let new = self
            .merged_into
            .entry(from.to_string())
            .or_default()
            .insert(to.to_string());
        self.merged_from
            .entry(to.to_string())
            .or_default()
            .insert(from.to_string());
        new
    }

    /// The ref `profile` resolves to (itself when nothing was merged into or from it).
    pub fn resolve(&self, profile: &str) -> String {
        let group = self.group(profile);
        let survivors = group
            .iter()
            .filter(|r| !self.merged_into.contains_key(r.as_str()));
        survivors
            .min()
            .or_else(|| group.iter().min())
            .cloned()
            .unwrap_or_else(|| profile.to_string())
    }

    /// Every ref that resolves to the same root as `profile`, the root first.
    pub fn members(&self, profile: &str) -> Vec<String> {
        let root = self.resolve(profile);
        let mut members = vec![root.clone()];
        members.extend(self.group(profile).into_iter().filter(|r| *r != root));
        members
    }

    /// Every ref connected to `profile` by merges, either way.
    fn group(&self, profile: &str) -> BTreeSet<String> {
        let mut seen = BTreeSet::from([profile.to_string()]);
        let mut queue = VecDeque::from([profile.to_string()]);
        while let Some(r) = queue.pop_front() {
            let neighbours = self
                .merged_into
                .get(&r)
                .into_iter()
                .chain(self.merged_from.get(&r))
                .flatten();
            for next in neighbours {
                if seen.insert(next.clone()) {
                    queue.push_back(next.clone());
                }
            }
        }
        seen
    }

    /// Whether the table knows `profile` (it was merged, or merged into).
    pub fn contains(&self, profile: &str) -> bool {
        self.merged_into.contains_key(profile) || self.merged_from.contains_key(profile)
    }

    /// Every ref this table knows.
    pub fn refs(&self) -> impl Iterator<Item = &String> {
        self.merged_into.keys().chain(self.merged_from.keys())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chain_resolves_to_its_survivor_and_repeats_change_nothing() {
        let mut aliases = Aliases::default();
        assert!(aliases.merge("prov:gw-1:01A", "p:b"));
        assert!(aliases.merge("p:b", "p:a"));
        assert!(!aliases.merge("p:b", "p:a"), "idempotent");
        for r in ["prov:gw-1:01A", "p:b", "p:a"] {
            assert_eq!(aliases.resolve(r), "p:a");
        }
        assert_eq!(aliases.resolve("p:unknown"), "p:unknown");
    }

    /// Central's merges form a forest: every merge points a ref at an older survivor. Any
    /// subset of them, repeated and shuffled, gives every gateway the same roots as applying
    /// them in order, and extra contradictory edges still give one answer for every order.
    #[test]
    fn random_merge_sets_in_random_orders_reach_the_same_roots() {
        for seed in 0..200u64 {
            let mut rng = fastrand::Rng::with_seed(seed);
            let refs: Vec<String> = (0..rng.usize(2..40)).map(|i| format!("p:{i:02}")).collect();
            // Each ref i > 0 may be merged into some older ref j < i (central's survivor rule).
            let mut merges = Vec::new();
            for i in 1..refs.len() {
                if rng.bool() {
                    merges.push((refs[i].clone(), refs[rng.usize(..i)].clone()));
                }
            }
            if rng.u8(..4) == 0 {
                // A contradictory edge central would never send: order must still not matter.
                let (a, b) = (rng.usize(..refs.len()), rng.usize(..refs.len()));
                merges.push((refs[a].clone(), refs[b].clone()));
            }
            let in_order = apply(&merges);
            for _ in 0..5 {
                let mut shuffled = merges.clone();
                for merge in &merges {
                    if rng.bool() {
                        shuffled.push(merge.clone());
                    }
                }
                rng.shuffle(&mut shuffled);
                let other = apply(&shuffled);
                for r in &refs {
                    assert_eq!(
                        in_order.resolve(r),
                        other.resolve(r),
                        "seed {seed}, ref {r}"
                    );
                }
            }
        }
    }

    fn apply(merges: &[(String, String)]) -> Aliases {
        let mut aliases = Aliases::default();
        for (from, to) in merges {
            aliases.merge(from, to);
        }
        aliases
    }
}
