//! The settings a running gateway re-reads on every use, so a signed remote layer can change
//! them without a restart: the coupon keys (rotation), the offline coupon budgets, the
//! loyalty rule and what receipts carry. Each part that uses them holds a [`Live`] watch and
//! reads the current value per request; `remote_config` is the only writer.

use std::sync::Arc;

use tokio::sync::watch;

use super::GatewayConfig;
use crate::codes::coupon::CouponKeys;

/// The live settings.
#[derive(Debug, Clone)]
pub struct LiveSettings {
    /// Coupon keys honoured now.
    pub coupon_keys: CouponKeys,
    /// The offline coupon budgets.
    pub coupon_policy: crate::coupons::Policy,
    /// The loyalty rule (`None`: the till's own points are recorded).
    pub loyalty: Option<crate::loyalty::LoyaltySection>,
    /// What every receipt carries, unless its printer sets its own.
    pub receipts: crate::devices::config::ReceiptsSection,
}

/// A reader of the live settings.
pub type Live = watch::Receiver<Arc<LiveSettings>>;

impl LiveSettings {
    /// The settings as the config file (and any applied layers merged into it) has them.
    pub fn from_config(config: &GatewayConfig) -> LiveSettings {
        LiveSettings::from_sections(
            &config.coupons,
            config.loyalty.clone(),
            config.receipts.clone(),
        )
    }

    /// The settings of these sections (the file's, or the file's overlaid with layers).
    pub fn from_sections(
        coupons: &super::CouponsSection,
        loyalty: Option<crate::loyalty::LoyaltySection>,
        receipts: crate::devices::config::ReceiptsSection,
    ) -> LiveSettings {
        LiveSettings {
            coupon_keys: CouponKeys::new(&coupons.public_keys),
            coupon_policy: crate::coupons::Policy {
                budget_hour_minor: coupons.offline_budget_hour_minor,
                budget_day_minor: coupons.offline_budget_day_minor,
            },
            loyalty,
            receipts,
        }
    }

    /// A fixed value, for parts used without a remote config (tests, tools).
    pub fn fixed(self) -> Live {
        watch::channel(Arc::new(self)).1
    }
}
