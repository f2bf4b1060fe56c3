//! `[mqtt]`: the broker connection, shared by the gateway and central.

use std::path::PathBuf;

use serde::Deserialize;

use super::ConfigError;

/// The broker connection.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MqttSection {
    /// `mqtt://host:port` or `mqtts://host:port`.
    pub url: String,
    /// CA certificate (PEM) that signed the broker's certificate; required for `mqtts://`.
    pub ca: Option<PathBuf>,
    /// Client certificate (PEM) for mutual TLS; needs `key` too.
    pub cert: Option<PathBuf>,
    /// Client private key (PEM) for mutual TLS; needs `cert` too.
    pub key: Option<PathBuf>,
    /// MQTT keep-alive.
    #[serde(default = "default_keep_alive_secs")]
    pub keep_alive_secs: u64,
    /// Allow plain `mqtt://` to a host that is not loopback (the sync data is customer data).
    #[serde(default)]
    pub allow_plaintext: bool,
}

fn default_keep_alive_secs() -> u64 {
    15
}

/// A parsed `[mqtt] url`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerAddress {
    /// `mqtts://`.
    pub tls: bool,
    /// Host name or address.
    pub host: String,
    /// Port (1883, or 8883 for `mqtts://`, by default).
    pub port: u16,
}

impl BrokerAddress {
    /// Parses `mqtt://host[:port]` or `mqtts://host[:port]`.
    pub fn parse(url: &str) -> Result<BrokerAddress, String> {
        let (tls, rest) = if let Some(rest) = url.strip_prefix("mqtts://") {
            (true, rest)
        } else if let Some(rest) = url.strip_prefix("mqtt://") {
            (false, rest)
        } else {
            return Err(format!(
                "`{url}` is not a broker URL; write mqtt://host:port or mqtts://host:port"
            ));
        };
        let rest = rest.trim_end_matches('/');
        let (host, port) = match rest.rsplit_once(':') {
            Some((host, port)) => {
                let port: u16 = port
                    .parse()
                    .map_err(|_| format!("`{port}` is not a port number in `{url}`"))?;
                (host, port)
            }
            None => (rest, if tls { 8883 } else { 1883 }),
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() {
            return Err(format!("`{url}` has no host; write mqtt://host:port"));
        }
        Ok(BrokerAddress {
            tls,
            host: host.to_string(),
            port,
        })
    }

    /// Whether the broker is on this box (plain MQTT is allowed only there).
    pub fn is_loopback(&self) -> bool {
        self.host == "localhost"
            || self
                .host
                .parse::<std::net::IpAddr>()
                .map(|ip| ip.is_loopback())
                .unwrap_or(false)
    }
}

impl MqttSection {
    /// The parsed `url`, or the key error naming it.
    pub fn broker(&self) -> Result<BrokerAddress, ConfigError> {
        BrokerAddress::parse(&self.url).map_err(|m| ConfigError::key("mqtt.url", m))
    }

    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        let broker = self.broker()?;
        if broker.tls && self.ca.is_none() {
            return Err(ConfigError::key(
                "mqtt.ca",
                "mqtts:// needs the CA certificate that signed the broker's certificate; set ca = \"/etc/storegate/ca.pem\"",
            ));
        }
        if self.cert.is_some() != self.key.is_some() {
            return Err(ConfigError::key(
                "mqtt.cert",
                "client TLS needs both cert and key; set both or neither",
            ));
        }
        if (self.cert.is_some() || self.ca.is_some()) && !broker.tls {
            return Err(ConfigError::key(
                "mqtt.url",
                "ca/cert/key are set but the URL is plain mqtt://; use mqtts://",
            ));
        }
        if !broker.tls && !broker.is_loopback() && !self.allow_plaintext {
            return Err(ConfigError::key(
                "mqtt.url",
                format!(
                    "plain mqtt:// to {} would send customer data unencrypted; use mqtts:// with ca, or set allow_plaintext = true",
                    broker.host
                ),
            ));
        }
        for (key, path) in [
            ("mqtt.ca", &self.ca),
            ("mqtt.cert", &self.cert),
            ("mqtt.key", &self.key),
        ] {
            if let Some(path) = path {
                if !path.is_file() {
                    return Err(ConfigError::key(
                        key,
                        format!("{} does not exist or is not a file", path.display()),
                    ));
                }
            }
        }
        if self.keep_alive_secs < 5 {
            return Err(ConfigError::key(
                "mqtt.keep_alive_secs",
                "must be at least 5 (rumqttc refuses shorter keep-alives)",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broker_urls() {
        let b = BrokerAddress::parse("mqtt://127.0.0.1:1884").unwrap();
        assert_eq!((b.tls, b.host.as_str(), b.port), (false, "127.0.0.1", 1884));
        assert!(b.is_loopback());
        let b = BrokerAddress::parse("mqtts://broker.example").unwrap();
        assert_eq!((b.tls, b.port), (true, 8883));
        assert!(!b.is_loopback());
        assert!(BrokerAddress::parse("http://x:1").is_err());
        assert!(BrokerAddress::parse("mqtt://x:99999").is_err());
        assert!(BrokerAddress::parse("mqtt://:1").is_err());
    }
}
