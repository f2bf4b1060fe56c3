//! Loyalty points at the till. A purchase by an identified customer earns points by the rule in
//! `[loyalty]`; the balance a till sees is central's balance (as last shared with this box)
//! plus the points this box's unacked purchases earned, minus those they spent. While central
//! is unreachable a customer may spend at most `offline_redeem_cap` points at this box, so a
//! balance that central has not confirmed cannot be spent twice at two stores.
//!
//! The balance check runs in the journal writer, in the purchase's own transaction
//! (`journal::PointsUse`): two tills spending the same points at once cannot both succeed.

use std::sync::Arc;

use serde::Deserialize;
use tokio::sync::watch;

use crate::identity::alias::Aliases;
use crate::journal::{AsyncOutbox, JournalError, PointsBalance, PointsUse};
use crate::sync::SyncState;

/// `[loyalty]`: how purchases earn points, and the offline spending cap.
#[derive(Debug, Clone, Deserialize, serde::Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct LoyaltySection {
    /// Points earned per `unit_minor` of a purchase's total.
    #[serde(default = "default_points_per_unit")]
    pub points_per_unit: i64,
    /// The amount (minor units) that earns `points_per_unit` points: 100 = per euro.
    #[serde(default = "default_unit_minor")]
    pub unit_minor: i64,
    /// Most points one customer may spend at this box while central is unreachable.
    #[serde(default)]
    pub offline_redeem_cap: i64,
}

fn default_points_per_unit() -> i64 {
    1
}

fn default_unit_minor() -> i64 {
    100
}

impl Default for LoyaltySection {
    fn default() -> Self {
        LoyaltySection {
            points_per_unit: default_points_per_unit(),
            unit_minor: default_unit_minor(),
            offline_redeem_cap: 0,
        }
    }
}

impl LoyaltySection {
    /// Points a purchase of `total_minor` earns (none for a zero or negative total).
    pub fn earned(&self, total_minor: i64) -> i64 {
        if total_minor <= 0 || self.unit_minor <= 0 {
            return 0;
        }
        (total_minor / self.unit_minor).saturating_mul(self.points_per_unit)
    }

    /// Checks the section; the error names the key and the fix.
    pub fn validate(&self) -> Result<(), crate::config::ConfigError> {
        use crate::config::ConfigError;
        if !(0..=1_000_000).contains(&self.points_per_unit) {
            return Err(ConfigError::key(
                "loyalty.points_per_unit",
                "must be between 0 and 1000000",
            ));
        }
        if self.unit_minor < 1 {
            return Err(ConfigError::key(
                "loyalty.unit_minor",
                "must be at least 1 (100 earns points per currency unit)",
            ));
        }
        if self.offline_redeem_cap < 0 {
            return Err(ConfigError::key(
                "loyalty.offline_redeem_cap",
                "must not be negative (0 allows no spending offline)",
            ));
        }
        Ok(())
    }
}

/// The loyalty part's owner on the gateway.
pub struct Loyalty {
    /// The rule, read per purchase (a remote layer may change it); `None` in it: no
    /// `[loyalty]` section, the till's own `points` are recorded as sent.
    settings: crate::config::live::Live,
    reads: AsyncOutbox,
    aliases: watch::Receiver<Arc<Aliases>>,
    sync: watch::Receiver<SyncState>,
}

impl Loyalty {
    /// `settings` holds the rule, `reads` is a journal view, `aliases` central's merges, `sync`
    /// tells whether central is reachable.
    pub fn new(
        settings: crate::config::live::Live,
        reads: AsyncOutbox,
        aliases: watch::Receiver<Arc<Aliases>>,
        sync: watch::Receiver<SyncState>,
    ) -> Loyalty {
        Loyalty {
            settings,
            reads,
            aliases,
            sync,
        }
    }

    /// Every ref that resolves to the same profile as `customer`, the root first.
    pub fn members(&self, customer: &str) -> Vec<String> {
        self.aliases.borrow().members(customer)
    }

    /// The profile `customer` resolves to.
    pub fn resolve(&self, customer: &str) -> String {
        self.aliases.borrow().resolve(customer)
    }

    /// The customer's balance as this box knows it.
    pub async fn balance(&self, customer: &str) -> Result<PointsBalance, JournalError> {
        let members = self.members(customer);
        self.reads.read(move |outbox| outbox.points(&members)).await
    }

    /// The points a purchase of `total_minor` by `customer` earns and spends: by the rule
    /// when there is one, else the till's own `till_points`. Spending is checked when the
    /// purchase is committed; offline within the cap.
    pub fn purchase(
        &self,
        customer: &str,
        total_minor: i64,
        till_points: i64,
        redeemed: i64,
    ) -> PointsUse {
        let rule = self.settings.borrow().loyalty.clone();
        let earned = rule
            .as_ref()
            .map_or(till_points, |rule| rule.earned(total_minor));
        let offline = !self.sync.borrow().connected;
        let cap = rule.as_ref().map_or(0, |rule| rule.offline_redeem_cap);
        PointsUse {
            customer: customer.to_string(),
            members: self.members(customer),
            earned,
            redeemed,
            offline_cap: offline.then_some(cap),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn points_are_earned_per_whole_unit_and_never_for_refunds() {
        let rule = LoyaltySection {
            points_per_unit: 2,
            unit_minor: 100,
            offline_redeem_cap: 0,
        };
        assert_eq!(rule.earned(1999), 38);
        assert_eq!(rule.earned(99), 0);
        assert_eq!(rule.earned(-500), 0);
        let generous = LoyaltySection {
            points_per_unit: 1_000_000,
            unit_minor: 1,
            offline_redeem_cap: 0,
        };
        assert_eq!(
            generous.earned(i64::MAX),
            i64::MAX,
            "saturates, never wraps"
        );
    }
}
