//! Configuration: the TOML file, `STOREGATE_<SECTION>_<KEY>` overrides, and validation that
//! names the key and the fix before any port or file is opened. Every value that has a shape
//! (broker URLs, ports, printer addresses, camera sources) is parsed into its type here, once.
//!
//! One file per section; each device kind's settings live beside its driver
//! (`devices/<kind>/config.rs`, gathered by `devices::config::DevicesSection`), so devices
//! never reach up into this module.
//!
//! Signed remote layers (fleet < store < gateway) are applied on top of this by the config
//! issue; the keys that only the box knows (`[gateway]`, `[journal]`, `[config] trusted_keys`)
//! are marked local-only here so that merge can refuse them.

mod api;
pub mod broker_acl;
mod central;
mod env;
mod gateway;
mod journal;
pub mod layers;
pub mod live;
mod mqtt;
mod sync;

pub use api::ApiSection;
pub use central::{CentralConfig, CentralSection};
pub use gateway::{CouponsSection, GatewayConfig, GatewaySection, IdentitySection, TrustSection};
pub use journal::JournalSection;
pub use mqtt::{BrokerAddress, MqttSection};
pub use sync::SyncSection;

use std::path::Path;

/// A config that could not be loaded; the message names the key and what to do.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not TOML.
    #[error("config file {path} is not valid TOML: {message}")]
    Syntax {
        /// The file.
        path: String,
        /// The parser's message.
        message: String,
    },
    /// A key's value does not make sense.
    #[error("config key `{key}`: {message}")]
    Key {
        /// The full key, e.g. `devices.printers[0].address`.
        key: String,
        /// What to do.
        message: String,
    },
    /// A `STOREGATE_…` variable could not be applied.
    #[error("environment variable {var}: {message}")]
    Env {
        /// The variable.
        var: String,
        /// Why.
        message: String,
    },
}

impl ConfigError {
    pub(crate) fn key(key: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError::Key {
            key: key.into(),
            message: message.into(),
        }
    }
}

/// Where a key's value came from. The signed remote layers (fleet < store < gateway) will be
/// origins of their own, merged into the same table before it is typed, so one validation
/// covers every source and `storegate config show` can say which layer set each key.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "from", rename_all = "snake_case")]
pub enum Origin {
    /// The local config file.
    File {
        /// The file.
        path: String,
    },
    /// A `STOREGATE_<SECTION>_<KEY>` environment variable.
    Env {
        /// The variable.
        var: String,
    },
}

/// A loaded config and the origin of each key that was set (`section.key`; keys not set have
/// their documented defaults).
#[derive(Debug, Clone)]
pub struct Loaded<T> {
    /// The validated config.
    pub config: T,
    /// Dotted key (`mqtt.url`) → where its value came from.
    pub origins: std::collections::BTreeMap<String, Origin>,
    /// The keys as set (file, then environment), before defaults.
    pub table: toml::Table,
}

/// Loads a gateway config from a file, applies environment overrides and validates it.
pub fn load_gateway(path: &Path) -> Result<GatewayConfig, ConfigError> {
    Ok(load_gateway_with_origins(path)?.config)
}

/// `load_gateway`, also telling where each key came from.
pub fn load_gateway_with_origins(path: &Path) -> Result<Loaded<GatewayConfig>, ConfigError> {
    let table = read_table(path)?;
    let mut origins = std::collections::BTreeMap::new();
    for (section, value) in &table {
        let file = Origin::File {
            path: path.display().to_string(),
        };
        match value.as_table() {
            Some(keys) => {
                for key in keys.keys() {
                    origins.insert(format!("{section}.{key}"), file.clone());
                }
            }
            None => {
                origins.insert(section.clone(), file);
            }
        }
    }
    let table = env::apply_overrides_noting(table, std::env::vars(), &mut |key, var| {
        origins.insert(key, Origin::Env { var });
    })?;
    let config: GatewayConfig = from_table(table.clone())?;
    config.validate()?;
    Ok(Loaded {
        config,
        origins,
        table,
    })
}

/// Loads the reference central's config (`[mqtt]` and `[central]`).
pub fn load_central(path: &Path) -> Result<CentralConfig, ConfigError> {
    let config: CentralConfig = load(path)?;
    config.validate()?;
    Ok(config)
}

/// The `[mqtt]` section of any storegate config file (a gateway's, central's, or a tool's with
/// only that section): how `storegate config push` reaches the fleet's broker.
pub fn load_mqtt(path: &Path) -> Result<MqttSection, ConfigError> {
    #[derive(serde::Deserialize)]
    struct OnlyMqtt {
        mqtt: MqttSection,
    }
    let config: OnlyMqtt = load(path)?;
    config.mqtt.validate()?;
    Ok(config.mqtt)
}

fn load<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, ConfigError> {
    let table = read_table(path)?;
    from_table(env::apply_overrides(table, std::env::vars())?)
}

/// Parses a gateway config from TOML text (no environment overrides); for tests and tools.
pub fn parse_gateway(text: &str) -> Result<GatewayConfig, ConfigError> {
    let config: GatewayConfig = from_table(parse_table(text)?)?;
    config.validate()?;
    Ok(config)
}

/// Parses central's config from TOML text (no environment overrides); for tests and tools.
pub fn parse_central(text: &str) -> Result<CentralConfig, ConfigError> {
    let config: CentralConfig = from_table(parse_table(text)?)?;
    config.validate()?;
    Ok(config)
}

fn parse_table(text: &str) -> Result<toml::Table, ConfigError> {
    text.parse()
        .map_err(|e: toml::de::Error| ConfigError::Syntax {
            path: "<text>".into(),
            message: e.message().to_string(),
        })
}

fn read_table(path: &Path) -> Result<toml::Table, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.display().to_string(),
        source,
    })?;
    text.parse()
        .map_err(|e: toml::de::Error| ConfigError::Syntax {
            path: path.display().to_string(),
            message: e.to_string(),
        })
}

/// Deserializes with the failing key's full path in the error (`mqtt.url`, not just `url`).
fn from_table<T: serde::de::DeserializeOwned>(table: toml::Table) -> Result<T, ConfigError> {
    let value = toml::Value::Table(table);
    serde_path_to_error::deserialize(value).map_err(|e| {
        let key = e.path().to_string();
        ConfigError::key(key, e.into_inner().message().to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `text` with the paths that only exist on a deployed box pointed at `dir`, where the TLS
    /// files are created.
    fn on_this_machine(text: &str, dir: &std::path::Path) -> String {
        for f in ["ca.pem", "gw-1.pem", "gw-1.key"] {
            std::fs::write(dir.join(f), "x").unwrap();
        }
        let d = dir.display().to_string();
        text.replace("/etc/storegate/tls", &d)
            .replace("/var/lib/storegate", &d)
    }

    /// The shipped example documents every key; it must stay loadable.
    #[test]
    fn example_config_parses() {
        let dir = tempfile::tempdir().unwrap();
        let text = on_this_machine(
            include_str!("../../config/storegate.example.toml"),
            dir.path(),
        );
        let config = parse_gateway(&text).unwrap();
        assert_eq!(config.gateway.store, "s-042");
        assert_eq!(config.sync.window_batches, 8);
        assert!(config.mqtt.broker().unwrap().tls);
    }

    /// Central's example, with its online channel's keys uncommented, loads.
    #[test]
    fn central_example_config_parses() {
        let dir = tempfile::tempdir().unwrap();
        for f in ["central.pem", "central.key"] {
            std::fs::write(dir.path().join(f), "x").unwrap();
        }
        let text: String = include_str!("../../config/central.example.toml")
            .lines()
            .map(|line| match line.strip_prefix("# ") {
                Some(key) if key.starts_with("api_") || key.starts_with("hmac_key") => key,
                _ => line,
            })
            .map(|line| format!("{line}\n"))
            .collect();
        let config =
            parse_central(&on_this_machine(&text, dir.path())).unwrap_or_else(|e| panic!("{e}"));
        assert!(config.central.api_listen.is_some());
        assert!(config.identity.hmac_key.is_some());
        assert_eq!(config.loyalty.earned(1050), 10);
    }

    /// The device tables documented (commented out) in the example are valid as written.
    #[test]
    fn example_device_tables_parse_when_uncommented() {
        let dir = tempfile::tempdir().unwrap();
        let mut text = String::new();
        let mut in_device = false;
        for line in include_str!("../../config/storegate.example.toml").lines() {
            if line.starts_with("# [[devices.") {
                in_device = true;
            } else if line.trim().is_empty() {
                in_device = false;
            }
            let uncomment = (in_device
                && line.starts_with("# ")
                && (line.contains(" = ") || line.starts_with("# [[")))
                || line.starts_with("# hmac_key");
            text.push_str(if uncomment { &line[2..] } else { line });
            text.push('\n');
        }
        let text = on_this_machine(&text, dir.path());
        let config = parse_gateway(&text).unwrap_or_else(|e| panic!("{e}"));
        let devices = &config.devices;
        assert_eq!(devices.nfc_readers.len(), 1);
        assert_eq!(
            (
                devices.card_readers.len(),
                devices.cameras.len(),
                devices.scanners.len(),
                devices.printers.len(),
                devices.keyboard_wedges.len()
            ),
            (1, 1, 1, 1, 1)
        );
        assert_eq!(devices.printers[0].columns(), 48);
        assert_eq!(devices.scanners[0].suffix, "\r");
    }

    const KEY: &str = "[identity]\nhmac_key = \"c3RvcmVnYXRlLWRlbW8taG1hYy1rZXk=\"\n";
    const READER: &str = "[[devices.card_readers]]\nname = \"front\"\nport = \"/dev/serial/by-id/r\"\ntill = \"till-1\"\n";

    #[test]
    fn each_key_says_whether_the_file_or_the_environment_set_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("g.toml");
        let text = format!(
            "[gateway]\nstore = \"s1\"\nid = \"g1\"\n[mqtt]\nurl = \"mqtt://127.0.0.1:1\"\n[journal]\npath = {:?}\n",
            dir.path().join("j.db").display().to_string()
        );
        std::fs::write(&path, text).unwrap();
        let table = read_table(&path).unwrap();
        let mut noted = Vec::new();
        let vars = vec![(
            "STOREGATE_MQTT_URL".to_string(),
            "mqtt://127.0.0.1:2".to_string(),
        )];
        let table =
            env::apply_overrides_noting(table, vars.into_iter(), &mut |k, v| noted.push((k, v)))
                .unwrap();
        assert_eq!(
            noted,
            vec![("mqtt.url".to_string(), "STOREGATE_MQTT_URL".to_string())]
        );
        assert_eq!(table["mqtt"]["url"].as_str(), Some("mqtt://127.0.0.1:2"));
        let loaded = load_gateway_with_origins(&path).unwrap();
        assert!(matches!(
            loaded.origins.get("gateway.store"),
            Some(Origin::File { .. })
        ));
        assert!(
            !loaded.origins.contains_key("api.listen"),
            "defaults have no origin"
        );
    }

    #[test]
    fn a_card_reader_parses_with_defaults() {
        let base = "[gateway]\nstore = \"s1\"\nid = \"g1\"\n[mqtt]\nurl = \"mqtt://127.0.0.1:1\"\n[journal]\npath = \"j.db\"\n";
        let config = parse_gateway(&format!("{base}{KEY}{READER}")).unwrap();
        let reader = &config.devices.card_readers[0];
        assert_eq!(reader.port.to_string(), "/dev/serial/by-id/r");
        assert_eq!((reader.baud, reader.beep_ms), (115_200, 80));
    }

    #[test]
    fn bad_values_name_the_key() {
        let base = "[gateway]\nstore = \"s1\"\nid = \"g1\"\n[mqtt]\nurl = \"mqtt://127.0.0.1:1\"\n[journal]\npath = \"j.db\"\n";
        assert!(parse_gateway(base).is_ok());
        let cases = [
            (base.replace("\"s1\"", "\"S 1\""), "gateway.store"),
            (
                base.replace("mqtt://127.0.0.1:1", "mqtt://10.0.0.1:1"),
                "mqtt.url",
            ),
            (
                base.replace("mqtt://127.0.0.1:1", "mqtts://127.0.0.1:1"),
                "mqtt.ca",
            ),
            (format!("{base}[api]\nlisten = \"nope\"\n"), "api.listen"),
            (format!("{base}[api]\nlisen = \"127.0.0.1:1\"\n"), "api"),
            (
                format!("{base}[sync]\nwindow_batches = 0\n"),
                "sync.window_batches",
            ),
            (
                base.replace("path = \"j.db\"", "path = \"/no/such/dir/j.db\""),
                "journal.path",
            ),
            (format!("{base}{READER}"), "identity.hmac_key"),
            (
                format!("{base}[[devices.nfc_readers]]\nname = \"pi\"\nspi = \"/dev/spidev0.0\"\ntill = \"t1\"\n"),
                "identity.hmac_key",
            ),
            (
                format!("{base}{KEY}{READER}{READER}"),
                "devices.card_readers[1].name",
            ),
            (
                format!("{base}{KEY}{}", READER.replace("till-1", "till 1")),
                "devices.card_readers[0].till",
            ),
            (
                format!("{base}{KEY}{}", READER.replace("name = \"front\"\n", "")),
                "devices",
            ),
            (
                format!(
                    "{base}{KEY}{}",
                    READER.replace("/dev/serial/by-id/r", "usb:12:34")
                ),
                "devices.card_readers[0].port",
            ),
            (
                base.replace("path = \"j.db\"", "path = \"j.db\"\nkeep_keys = 10"),
                "journal.keep_keys",
            ),
            (
                base.replace("path = \"j.db\"", "path = \"j.db\"\nkeep_acked = 200000\nkeep_keys = 100000"),
                "journal.keep_keys",
            ),
            // Keys are decoded when config loads.
            (
                format!("{base}[identity]\nhmac_key = \"c2hvcnQ=\"\n"),
                "identity.hmac_key",
            ),
            (
                format!("{base}[coupons]\npublic_keys = [\"c2hvcnQ=\"]\n"),
                "coupons.public_keys",
            ),
            // Parsed into types at load: refused at start-up naming the key, not retried for
            // ever by the device thread.
            (
                format!("{base}[[devices.cameras]]\nname = \"k\"\nsource = \"raw:640:/x\"\ntill = \"k1\"\n"),
                "devices.cameras[0].source",
            ),
            (
                format!("{base}[[devices.printers]]\nname = \"p\"\naddress = \"tcp:printer\"\ntill = \"t1\"\n"),
                "devices.printers[0].address",
            ),
        ];
        for (text, key) in cases {
            match parse_gateway(&text) {
                Err(ConfigError::Key { key: k, .. }) => assert!(k.starts_with(key), "{k} vs {key}"),
                other => panic!("{key}: expected a key error, got {other:?}"),
            }
        }
    }
}
