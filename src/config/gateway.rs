//! The gateway's config (`storegate run`): the sections only it has (`[gateway]`,
//! `[identity]`, `[coupons]`, `[config]`) and the checks across sections.

use serde::Deserialize;

use super::{ApiSection, ConfigError, JournalSection, MqttSection, SyncSection};

/// The daemon's configuration (`storegate run`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewayConfig {
    /// Who this box is.
    pub gateway: GatewaySection,
    /// The broker connection.
    pub mqtt: MqttSection,
    /// The journal.
    pub journal: JournalSection,
    /// The local HTTP API.
    #[serde(default)]
    pub api: ApiSection,
    /// How the journal is pumped to central.
    #[serde(default)]
    pub sync: SyncSection,
    /// Customer identifiers.
    #[serde(default)]
    pub identity: IdentitySection,
    /// Coupon verification.
    #[serde(default)]
    pub coupons: CouponsSection,
    /// Loyalty points (`[loyalty]`); without it the till's own `points` are recorded.
    #[serde(default)]
    pub loyalty: Option<crate::loyalty::LoyaltySection>,
    /// What every receipt carries (`[receipts]`); a remote layer may set it.
    #[serde(default)]
    pub receipts: crate::devices::config::ReceiptsSection,
    /// Remote config trust (`[config]`).
    #[serde(default)]
    pub config: TrustSection,
    /// The till hardware.
    #[serde(default)]
    pub devices: crate::devices::config::DevicesSection,
}

/// Who this box is. Local-only: a remote layer may never change it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewaySection {
    /// Store id, `[a-z0-9][a-z0-9-]{0,31}` (docs/protocol.md topic segment).
    pub store: String,
    /// Gateway id within the store, same alphabet.
    pub id: String,
}

/// Customer identifiers.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdentitySection {
    /// Fleet HMAC key (base64, at least 16 bytes) that pseudonymises card numbers, phones, emails.
    pub hmac_key: Option<crate::identity::HmacKey>,
    /// Longest a till waits for central (`profile.lookup`) before a customer this box does not
    /// know gets a provisional ref.
    #[serde(default = "default_lookup_timeout_ms")]
    pub lookup_timeout_ms: u64,
}

impl Default for IdentitySection {
    fn default() -> Self {
        IdentitySection {
            hmac_key: None,
            lookup_timeout_ms: default_lookup_timeout_ms(),
        }
    }
}

fn default_lookup_timeout_ms() -> u64 {
    300
}

/// Coupon verification and the offline redemption policy. A remote layer may set it.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct CouponsSection {
    /// Ed25519 public keys (base64, 32 bytes) whose coupons are honoured.
    #[serde(default)]
    pub public_keys: Vec<crate::codes::coupon::PublicKey>,
    /// Most discount (minor units) granted offline in any hour; 0 accepts no coupon offline.
    #[serde(default = "default_offline_budget_hour_minor")]
    pub offline_budget_hour_minor: i64,
    /// Most discount (minor units) granted offline in any 24 hours.
    #[serde(default = "default_offline_budget_day_minor")]
    pub offline_budget_day_minor: i64,
}

impl Default for CouponsSection {
    fn default() -> Self {
        CouponsSection {
            public_keys: Vec::new(),
            offline_budget_hour_minor: default_offline_budget_hour_minor(),
            offline_budget_day_minor: default_offline_budget_day_minor(),
        }
    }
}

impl CouponsSection {
    /// Budgets that make sense.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.offline_budget_hour_minor < 0
            || self.offline_budget_day_minor < self.offline_budget_hour_minor
        {
            return Err(ConfigError::key(
                "coupons.offline_budget_day_minor",
                "budgets must not be negative, and the day's at least the hour's",
            ));
        }
        Ok(())
    }
}

fn default_offline_budget_hour_minor() -> i64 {
    5_000
}

fn default_offline_budget_day_minor() -> i64 {
    20_000
}

/// Remote config trust. Local-only.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrustSection {
    /// Ed25519 public keys (base64, 32 bytes) that may sign remote config layers.
    #[serde(default)]
    pub trusted_keys: Vec<crate::codes::coupon::PublicKey>,
}

impl GatewayConfig {
    /// Checks every section; the error names the key and the fix.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !crate::protocol::is_topic_id(&self.gateway.store) {
            return Err(ConfigError::key(
                "gateway.store",
                format!(
                    "`{}` must match [a-z0-9][a-z0-9-]{{0,31}} (lower-case letters, digits, dashes)",
                    self.gateway.store
                ),
            ));
        }
        if !crate::protocol::is_topic_id(&self.gateway.id) {
            return Err(ConfigError::key(
                "gateway.id",
                format!(
                    "`{}` must match [a-z0-9][a-z0-9-]{{0,31}} (lower-case letters, digits, dashes)",
                    self.gateway.id
                ),
            ));
        }
        self.mqtt.validate()?;
        if self.journal.path.as_os_str().is_empty() {
            return Err(ConfigError::key(
                "journal.path",
                "must name the SQLite file, e.g. /var/lib/storegate/journal.db",
            ));
        }
        if let Some(parent) = self.journal.path.parent() {
            if !parent.as_os_str().is_empty() && !parent.is_dir() {
                return Err(ConfigError::key(
                    "journal.path",
                    format!(
                        "directory {} does not exist; create it first",
                        parent.display()
                    ),
                ));
            }
        }
        if self.journal.keep_keys < super::journal::MIN_KEEP_KEYS {
            return Err(ConfigError::key(
                "journal.keep_keys",
                format!("must be at least {}: a till's retry must be recognised after its event is compacted", super::journal::MIN_KEEP_KEYS),
            ));
        }
        if self.journal.keep_keys < self.journal.keep_acked {
            return Err(ConfigError::key(
                "journal.keep_keys",
                format!(
                    "must be at least journal.keep_acked ({}): receipts and idempotency keys outlive their events",
                    self.journal.keep_acked
                ),
            ));
        }
        if self.journal.reserve_mb > self.journal.low_space_mb {
            return Err(ConfigError::key(
                "journal.reserve_mb",
                format!(
                    "must not exceed journal.low_space_mb ({}): sales use the reserve after identifications stop",
                    self.journal.low_space_mb
                ),
            ));
        }
        if !(100..=300_000).contains(&self.api.header_timeout_ms) {
            return Err(ConfigError::key(
                "api.header_timeout_ms",
                "must be between 100 and 300000 (10000 is the default)",
            ));
        }
        if !(1..=crate::api::MAX_CONNECTIONS).contains(&self.api.connections_per_peer) {
            return Err(ConfigError::key(
                "api.connections_per_peer",
                format!(
                    "must be between 1 and {} (32 is the default)",
                    crate::api::MAX_CONNECTIONS
                ),
            ));
        }
        if self.api.tokens.iter().any(|t| t.len() < 16) {
            return Err(ConfigError::key(
                "api.tokens",
                "each token needs at least 16 characters",
            ));
        }
        self.sync.validate()?;
        if let Some(loyalty) = &self.loyalty {
            loyalty.validate()?;
        }
        if !(10..=10_000).contains(&self.identity.lookup_timeout_ms) {
            return Err(ConfigError::key(
                "identity.lookup_timeout_ms",
                "must be between 10 and 10000 (300 is the default)",
            ));
        }
        self.coupons.validate()?;
        self.receipts
            .validate()
            .map_err(|(key, message)| ConfigError::key(key, message))?;
        self.devices
            .validate(self.identity.hmac_key.is_some())
            .map_err(|e| ConfigError::key(e.key, e.message))
    }
}
