//! The reference central's config (`storegate central`): `[mqtt]` and `[central]`.

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
}

/// Central's own settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CentralSection {
    /// Where central stores profiles and events: a SQLite path.
    pub db: String,
    /// Shared-subscription group (`$share/<group>/…`) so several centrals split the load;
    /// leave unset for a broker without shared subscriptions.
    pub share_group: Option<String>,
    /// MQTT client id; must differ between central instances.
    #[serde(default = "default_central_client_id")]
    pub client_id: String,
}

fn default_central_client_id() -> String {
    "storegate-central".to_string()
}

impl CentralConfig {
    /// Checks every section; the error names the key and the fix.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.mqtt.validate()?;
        if self.central.db.starts_with("postgres://")
            || self.central.db.starts_with("postgresql://")
        {
            return Err(ConfigError::key(
                "central.db",
                "PostgreSQL storage is not built into this version; use a SQLite path",
            ));
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
