//! Central's identity changes on this box (docs/protocol.md "Identity"): the live ones from
//! `storegate/v1/identity` and, on every (re)connect and after a restart, the ones missed,
//! asked for with rpc `identity.since` page by page until caught up.
//!
//! Only merges that concern a ref this box has seen are kept: a box must not become a copy of
//! the fleet's customer base. They go into the journal's alias table (`identity/alias.rs`
//! resolves from it); the stored `rev` is the highest up to which every change was applied, so
//! a change that arrived early (rev 7 before 6) is applied at once and 6 is still asked for.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};

use super::alias::Aliases;
use crate::journal::{AsyncOutbox, Journal, JournalError};
use crate::journal::{CachedProfile, KeptChange};
use crate::protocol::IdentityChange;
use crate::sync::{RpcClient, SyncState};

/// Changes central answers per `identity.since` call at most; a full page means ask again.
const PAGE: usize = 1000;
/// Pages asked for in one catch-up at most; the next connect goes on from there.
const MAX_PAGES: usize = 1000;

/// The owner of the alias table: applies changes, persists them, and publishes each new
/// table to the parts that resolve refs (coupons, the API).
pub struct IdentityChanges {
    journal: Journal,
    /// Reads of what this box has seen, over one connection kept for them.
    reads: AsyncOutbox,
    rpc: RpcClient,
    live: mpsc::Receiver<IdentityChange>,
    sync: watch::Receiver<SyncState>,
    table: watch::Sender<Arc<Aliases>>,
    aliases: Aliases,
    /// Every change up to here is applied.
    complete: u64,
    /// Applied changes above `complete`.
    ahead: BTreeSet<u64>,
    /// Merges applied to `aliases` but not yet published to readers.
    unpublished_edges: usize,
}

impl IdentityChanges {
    /// Loads the alias table from `journal`. Live changes arrive on `live`; catch-up runs
    /// through `rpc` whenever `sync` reports a new connection. Returns the owner and the
    /// table's watch, for readers.
    pub fn load(
        journal: Journal,
        rpc: RpcClient,
        live: mpsc::Receiver<IdentityChange>,
        sync: watch::Receiver<SyncState>,
    ) -> Result<(IdentityChanges, watch::Receiver<Arc<Aliases>>), JournalError> {
        let reads = journal.outbox()?;
        let (merges, complete) = reads.aliases()?;
        let mut aliases = Aliases::default();
        for (from, to) in &merges {
            aliases.merge(from, to);
        }
        let (table, readers) = watch::channel(Arc::new(aliases.clone()));
        Ok((
            IdentityChanges {
                journal,
                reads: AsyncOutbox::new(reads),
                rpc,
                live,
                sync,
                table,
                aliases,
                complete,
                ahead: BTreeSet::new(),
                unpublished_edges: 0,
            },
            readers,
        ))
    }

    /// Runs until `shutdown`. A journal failure ends it (the daemon's supervisor notices).
    pub async fn run(
        mut self,
        shutdown: impl std::future::Future<Output = ()>,
    ) -> Result<(), JournalError> {
        tokio::pin!(shutdown);
        let mut session = None;
        loop {
            let connected = {
                let state = self.sync.borrow_and_update();
                state.connected.then_some(state.session)
            };
            if connected.is_some() && connected != session {
                session = connected;
                self.catch_up().await?;
            }
            tokio::select! {
                _ = &mut shutdown => return Ok(()),
                change = self.live.recv() => match change {
                    Some(change) => self.apply(change).await?,
                    None => return Ok(()),
                },
                changed = self.sync.changed() => {
                    if changed.is_err() {
                        return Ok(());
                    }
                }
            }
        }
    }

    /// Asks central for every change after the stored rev, page by page. An unreachable
    /// central ends the catch-up; the next connect starts it again.
    async fn catch_up(&mut self) -> Result<(), JournalError> {
        for _ in 0..MAX_PAGES {
            let since = self.complete;
            let answer = match self
                .rpc
                .call("identity.since", serde_json::json!({ "rev": since }))
                .await
            {
                Ok(answer) => answer,
                Err(error) => {
                    tracing::info!(%error, since, "identity catch-up paused");
                    return Ok(());
                }
            };
            let changes = answer
                .get("changes")
                .and_then(|c| c.as_array())
                .cloned()
                .unwrap_or_default();
            let count = changes.len();
            // A page is recorded in one transaction: a box back from a long absence catches
            // up in a few commits, not one per change.
            let mut kept = Vec::new();
            for change in changes {
                match serde_json::from_value::<IdentityChange>(change) {
                    Ok(change) => match change.check() {
                        Ok(()) => kept.extend(self.keep(change).await?),
                        Err(error) => tracing::warn!(%error, "invalid identity change ignored"),
                    },
                    Err(error) => tracing::warn!(%error, "malformed identity change ignored"),
                }
            }
            self.record(kept).await?;
            if count < PAGE || self.complete == since {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Ok(())
    }

    /// Applies one live change.
    async fn apply(&mut self, change: IdentityChange) -> Result<(), JournalError> {
        let kept = self.keep(change).await?;
        self.record(kept.into_iter().collect()).await
    }

    /// What `change` means for this box, already applied to the in-memory table (published to
    /// readers only once recorded); `None` when there is nothing to record.
    async fn keep(&mut self, change: IdentityChange) -> Result<Option<KeptChange>, JournalError> {
        let mut kept = KeptChange::default();
        for merge in &change.merges {
            if self.concerns_this_box(&merge.from).await?
                || self.concerns_this_box(&merge.to).await?
            {
                kept.merges.push((merge.from.clone(), merge.to.clone()));
            }
        }
        for (from, to) in &kept.merges {
            self.unpublished_edges += usize::from(self.aliases.merge(from, to));
        }
        for view in change.profiles {
            let members = self.aliases.members(&view.profile);
            if self.concerns(&members).await? {
                kept.views.push(CachedProfile {
                    members,
                    profile: view.profile,
                    points: view.points,
                    rev: change.rev,
                    hashes: view.identifiers.into_iter().map(|i| i.hash).collect(),
                });
            }
        }
        for erased in &change.erased {
            let members = self.aliases.members(erased);
            if self.concerns(&members).await? {
                kept.erased.push(members);
            }
        }
        let before = self.complete;
        if change.rev > self.complete {
            self.ahead.insert(change.rev);
        }
        while self.ahead.remove(&(self.complete + 1)) {
            self.complete += 1;
        }
        let nothing_kept =
            kept.merges.is_empty() && kept.views.is_empty() && kept.erased.is_empty();
        if nothing_kept && self.complete == before {
            return Ok(None);
        }
        kept.complete_upto = self.complete;
        kept.rev = change.rev;
        Ok(Some(kept))
    }

    /// Records kept changes in one journal transaction, then publishes the table. A failed
    /// commit ends this part (and the daemon restarts from what is on disk).
    async fn record(&mut self, kept: Vec<KeptChange>) -> Result<(), JournalError> {
        if kept.is_empty() {
            return Ok(());
        }
        let erasures: usize = kept.iter().map(|k| k.erased.len()).sum();
        let rev = kept.last().map_or(0, |k| k.rev);
        self.journal.record_identity_changes(kept).await?;
        if erasures > 0 {
            tracing::info!(rev, erasures, "erased customers removed from this box");
        }
        if self.unpublished_edges > 0 {
            self.table.send_replace(Arc::new(self.aliases.clone()));
            tracing::info!(
                rev,
                merges = self.unpublished_edges,
                "identity merges applied"
            );
            self.unpublished_edges = 0;
        }
        Ok(())
    }

    /// Whether any of a profile's `members` (the refs that resolve to it) is a ref this box
    /// has seen.
    async fn concerns(&self, members: &[String]) -> Result<bool, JournalError> {
        for member in members {
            if self.concerns_this_box(member).await? {
                return Ok(true);
            }
        }
        Ok(false)
    }

    async fn concerns_this_box(&self, profile: &str) -> Result<bool, JournalError> {
        if self.aliases.contains(profile) {
            return Ok(true);
        }
        let profile = profile.to_string();
        self.reads
            .read(move |outbox| outbox.knows_profile(&profile))
            .await
    }
}
