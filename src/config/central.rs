//! The reference central's config (`storegate central`): `[mqtt]`, `[central]`, and for the
//! online channel `[identity]` (the fleet key, to hash what the web shop sends), `[coupons]`
//! (the key that signs coupons) and `[loyalty]` (how online purchases earn points).

use serde::Deserialize;

use super::{ConfigError, MqttSection};

/// The reference central's configuration (`storegate central`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CentralConfig {
    /// The broker connection.
    pub mqtt: MqttSection,
    /// Central's own settings.
    pub central: CentralSection,
    /// The fleet identity key.
    #[serde(default)]
    pub identity: CentralIdentitySection,
    /// Coupon issuing.
    #[serde(default)]
    pub coupons: CentralCouponsSection,
    /// How online purchases earn points (the same rule the stores use).
    #[serde(default)]
    pub loyalty: crate::loyalty::LoyaltySection,
}

/// `[identity]` at central.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CentralIdentitySection {
    /// The fleet HMAC key (base64), the same as the gateways'.
    pub hmac_key: Option<crate::identity::HmacKey>,
}

/// `[coupons]` at central.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CentralCouponsSection {
    /// The Ed25519 private key (base64 PKCS#8, from `storegate coupon keygen`) that signs
    /// coupons issued through the online channel.
    pub signing_key: Option<String>,
}

/// Central's own settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CentralSection {
    /// Where central stores profiles and events: a SQLite path, or `postgres://…` (a build
    /// with the `postgres` feature) for several central instances on one database.
    pub db: String,
    /// Shared-subscription group (`$share/<group>/…`) so several centrals split the load;
    /// leave unset for a broker without shared subscriptions.
    pub share_group: Option<String>,
    /// MQTT client id; must differ between central instances.
    #[serde(default = "default_central_client_id")]
    pub client_id: String,
    /// Where the online channel's HTTP API listens (the web shop and app backend); unset:
    /// no HTTP API.
    pub api_listen: Option<std::net::SocketAddr>,
    /// Bearer tokens the online channel accepts; required when `api_listen` is set.
    #[serde(default)]
    pub api_tokens: Vec<String>,
    /// Transactions storing batches at once (each gateway always in the same one). SQLite
    /// has one writer whatever this says; on PostgreSQL fewer, fuller transactions beat many
    /// small ones until the database has cores to spare (README "Running central at scale").
    #[serde(default = "default_central_writers")]
    pub writers: usize,
}

fn default_central_writers() -> usize {
    2
}

fn default_central_client_id() -> String {
    "storegate-central".to_string()
}

impl CentralConfig {
    /// Checks every section; the error names the key and the fix.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.mqtt.validate()?;
        let postgres = self.central.db.starts_with("postgres://")
            || self.central.db.starts_with("postgresql://");
        if postgres && !cfg!(feature = "postgres") {
            return Err(ConfigError::key(
                "central.db",
                "this build has no PostgreSQL support: build with --features postgres, or use a SQLite path",
            ));
        }
        #[cfg(feature = "postgres")]
        if postgres && self.central.db.parse::<tokio_postgres::Config>().is_err() {
            return Err(ConfigError::key(
                "central.db",
                "is not a PostgreSQL URL: postgres://user[:password]@host[:port]/database",
            ));
        }
        if self.central.api_listen.is_some() {
            if self.central.api_tokens.is_empty() {
                return Err(ConfigError::key(
                    "central.api_tokens",
                    "the online channel faces the web shop: give at least one bearer token",
                ));
            }
            if self.central.api_tokens.iter().any(|t| t.len() < 16) {
                return Err(ConfigError::key(
                    "central.api_tokens",
                    "each token needs at least 16 characters",
                ));
            }
        }
        if let Some(key) = &self.coupons.signing_key {
            crate::codes::coupon::check_private_key(key)
                .map_err(|e| ConfigError::key("coupons.signing_key", e.to_string()))?;
        }
        self.loyalty.validate()?;
        if !(1..=64).contains(&self.central.writers) {
            return Err(ConfigError::key("central.writers", "must be 1 to 64"));
        }
        if let Some(group) = &self.central.share_group {
            if group.is_empty() || group.contains(['/', '+', '#']) {
                return Err(ConfigError::key(
                    "central.share_group",
                    "must be a plain name without / + #",
                ));
            }
        }
        Ok(())
    }
}
