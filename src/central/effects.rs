//! The resolver: what applied events do beyond being stored, off the ack path. An ack means
//! stored (docs/protocol.md "Cumulative ack"); the transaction that stores an applied
//! `identity_seen`, or a purchase that moves a customer's points, also queues it in
//! `pending_effects`. The resolver takes the queue in application order, a group at a time,
//! under the identity lock (so one resolver runs at once across central instances, whichever
//! instance gets there): it resolves the group's identifications on one snapshot of the
//! identity graph, enters its purchases into the points ledger, records one change with every
//! merge and the new view of every profile the group touched, and deletes what it applied,
//! all in one transaction. A box hears its ack first and the new balance a moment later: it
//! shows too few points for that moment, never points that could be spent twice.

use super::db::{self, params, DbError, Tx};
use super::profiles::{self, Graph};
use crate::protocol::{EventKind, Identifier, PurchaseBody, SeenBody};

/// What one round of the resolver did.
#[derive(Debug, Default)]
pub struct EffectsApplied {
    /// Queued events it applied.
    pub events: usize,
    /// The changes it recorded, to broadcast after the commit (JSON, rev order).
    pub changes: Vec<String>,
}

/// Whether every ref and hash of `identification` passes the boxes' check of identity changes.
fn sendable(identification: &SeenBody) -> bool {
    crate::protocol::check_profile_ref("customer", &identification.customer).is_ok()
        && identification
            .identifiers
            .iter()
            .all(Identifier::has_valid_hash)
}

/// Applies up to `limit` queued events, oldest application first.
pub(super) async fn apply_pending(
    tx: &mut impl Tx,
    limit: usize,
) -> Result<EffectsApplied, DbError> {
    profiles::lock(tx).await?;
    let rows = tx
        .query(
            "SELECT applied, kind, body, id FROM pending_effects ORDER BY applied LIMIT $1",
            params![limit as u64],
        )
        .await?;
    if rows.is_empty() {
        return Ok(EffectsApplied::default());
    }
    let mut applied = Vec::with_capacity(rows.len());
    let mut seen = Vec::new();
    let mut earned = Vec::new();
    for row in &rows {
        applied.push(row.int(0)?);
        let (kind, body) = (row.text(1)?, row.text(2)?);
        // Bodies were checked when stored; one that does not read is applied to nothing, and
        // so is an identification no box would accept in a change (queued by a central from
        // before that check).
        if kind == EventKind::IdentitySeen.as_str() {
            match serde_json::from_str::<SeenBody>(&body) {
                Ok(identification) if sendable(&identification) => seen.push(identification),
                _ => {
                    tracing::warn!(id = %row.text(3)?, "queued identification applied to nothing: not one the boxes could take")
                }
            }
        } else if kind == EventKind::Purchase.as_str() {
            let purchase = serde_json::from_str::<PurchaseBody>(&body).ok();
            if let Some((customer, points)) = purchase.as_ref().and_then(PurchaseBody::moved) {
                earned.push((row.text(3)?, customer.to_string(), points));
            }
        }
    }

    let identifying: Vec<&str> = seen.iter().map(|s| s.customer.as_str()).collect();
    let purchasers: Vec<&str> = earned.iter().map(|(_, c, _)| c.as_str()).collect();
    let identifiers: Vec<&Identifier> = seen.iter().flat_map(|s| &s.identifiers).collect();
    let mut graph = Graph::load(tx, &identifying, &purchasers, &identifiers).await?;
    let mut merges = Vec::new();
    let mut touched = Vec::new();
    for identification in &seen {
        let decision = graph.identify(Some(&identification.customer), &identification.identifiers);
        if let Some(decision) = decision.filter(|d| d.changed()) {
            merges.extend(decision.merges);
            touched.push(decision.survivor);
        }
    }
    graph.write(tx).await?;

    // Once per event id: the ledger's key holds it whoever applies the event. Each entry
    // counts for the root its ref resolves to after the group's merges.
    let roots: Vec<String> = earned
        .iter()
        .map(|(_, customer, _)| graph.resolve(customer))
        .collect();
    let entries: Vec<(&str, &str, &str, i64)> = earned
        .iter()
        .zip(&roots)
        .map(|((id, customer, points), root)| {
            (id.as_str(), customer.as_str(), root.as_str(), *points)
        })
        .collect();
    touched.extend(profiles::enter_points(tx, &entries, "store").await?);

    // Every touched profile as it stands after the whole group (a survivor merged later in
    // the group shows as the profile it went into); refs without a live profile have none.
    let mut roots: Vec<String> = touched
        .iter()
        .map(|profile| graph.resolve(profile))
        .filter(|root| graph.exists(root))
        .collect();
    roots.sort();
    roots.dedup();
    let root_refs: Vec<&str> = roots.iter().map(String::as_str).collect();
    let views = profiles::views(tx, &root_refs).await?;
    let changes = if merges.is_empty() && views.is_empty() {
        Vec::new()
    } else {
        profiles::record_changes(tx, merges, views).await?
    };

    let mut applied_now = db::Pipeline::new();
    applied_now.add_in("DELETE FROM pending_effects WHERE applied", &[], &applied);
    applied_now.run(tx).await?;
    Ok(EffectsApplied {
        events: rows.len(),
        changes,
    })
}
