//! The typed config. Every field is documented in `config/storegate.example.toml`.

use std::net::SocketAddr;
use std::path::PathBuf;

use base64::Engine;
use serde::Deserialize;

use super::ConfigError;

/// The daemon's configuration (`storegate run`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewayConfig {
    pub gateway: GatewaySection,
    pub mqtt: MqttSection,
    pub journal: JournalSection,
    #[serde(default)]
    pub api: ApiSection,
    #[serde(default)]
    pub sync: SyncSection,
    #[serde(default)]
    pub identity: IdentitySection,
    #[serde(default)]
    pub coupons: CouponsSection,
    #[serde(default)]
    pub config: TrustSection,
    #[serde(default)]
    pub devices: DevicesSection,
}

/// The till hardware this box owns. Local-only, like `[gateway]`: a remote layer never
/// names device paths.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DevicesSection {
    /// storegate loyalty readers (`firmware/PROTOCOL.md` over a serial / USB-CDC port).
    #[serde(default)]
    pub card_readers: Vec<CardReaderConfig>,
    /// Kiosk cameras reading QR codes.
    #[serde(default)]
    pub cameras: Vec<CameraConfig>,
    /// Serial / USB-CDC barcode scanners.
    #[serde(default)]
    pub scanners: Vec<ScannerConfig>,
    /// ESC/POS receipt printers.
    #[serde(default)]
    pub printers: Vec<PrinterConfig>,
    /// USB HID keyboard-wedge scanners (read through evdev, grabbed exclusively).
    #[serde(default)]
    pub keyboard_wedges: Vec<WedgeConfig>,
}

/// How a scanner tells and reads loyalty cards: which digits of a magnetic card's account
/// number identify the customer, and which barcodes are loyalty cards.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CardNumberRule {
    /// Leading digits of a magnetic card's account number to drop (an issuer prefix).
    #[serde(default)]
    pub skip: usize,
    /// Digits to keep after that; all by default.
    pub take: Option<usize>,
    /// A scanned all-digit barcode starting with one of these is a loyalty card (e.g. the
    /// store's in-store number range "2790"), its number the whole barcode.
    #[serde(default)]
    pub barcode_prefixes: Vec<String>,
}

/// One keyboard-wedge scanner.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WedgeConfig {
    /// Name in logs, metrics, events and `/v1/devices`, `[a-z0-9][a-z0-9-]{0,31}`.
    pub name: String,
    /// `/dev/input/by-id/usb-...-event-kbd`, or `usb:VID:PID` (hex).
    pub device: String,
    /// The till whose event stream gets the scans.
    pub till: String,
    /// The keyboard layout the scanner is set to type in.
    #[serde(default = "default_wedge_layout")]
    pub layout: crate::devices::wedge::keymap::Layout,
    /// For magnetic stripe readers in keyboard mode: the loyalty card number rule.
    #[serde(default)]
    pub card_number: CardNumberRule,
}

fn default_wedge_layout() -> crate::devices::wedge::keymap::Layout {
    crate::devices::wedge::keymap::Layout::Us
}

/// One ESC/POS receipt printer; it prints the receipts of its till's purchases.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrinterConfig {
    /// Name in logs, metrics, events and `/v1/devices`, `[a-z0-9][a-z0-9-]{0,31}`.
    pub name: String,
    /// `tcp:HOST:9100` (network printer), `file:/dev/usb/lp0` (USB printer class) or
    /// `serial:/dev/serial/by-id/...` (or `serial:usb:VID:PID`).
    pub address: String,
    /// The till whose purchases it prints.
    pub till: String,
    /// Paper width in mm: 58 (32 columns) or 80 (48 columns).
    #[serde(default = "default_paper_mm")]
    pub paper_mm: u32,
    /// Characters per line when the printer differs from the usual for its paper (42 on 80 mm
    /// printers with a wider margin or font B): 32, 42 or 48.
    pub columns: Option<usize>,
    #[serde(default = "default_code_page")]
    pub code_page: crate::devices::printer::escpos::CodePage,
    /// Lines at the top of every receipt (store name, address); the first is bold.
    #[serde(default)]
    pub header: Vec<String>,
    /// QR code on the receipt: a URL with `{receipt}` for the receipt id.
    pub qr_url: Option<String>,
    /// Line speed for `serial:` printers.
    #[serde(default = "default_printer_baud")]
    pub baud: u32,
}

impl PrinterConfig {
    pub fn columns(&self) -> usize {
        if let Some(columns) = self.columns {
            return columns;
        }
        if self.paper_mm <= 58 {
            32
        } else {
            48
        }
    }
}

fn default_paper_mm() -> u32 {
    80
}

fn default_code_page() -> crate::devices::printer::escpos::CodePage {
    crate::devices::printer::escpos::CodePage::Cp858
}

fn default_printer_baud() -> u32 {
    38_400
}

/// One serial or USB-CDC barcode scanner.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScannerConfig {
    /// Name in logs, metrics, events and `/v1/devices`, `[a-z0-9][a-z0-9-]{0,31}`.
    pub name: String,
    /// Serial port, by its stable `/dev/serial/by-id/...` link.
    pub port: PathBuf,
    /// The till whose event stream gets the scans.
    pub till: String,
    #[serde(default = "default_scanner_baud")]
    pub baud: u32,
    /// What ends a scan: "\r", "\n" and "\r\n" all mean "a line" (either byte ends it);
    /// anything else (e.g. "\u0003") must match exactly.
    #[serde(default = "default_scanner_suffix")]
    pub suffix: String,
    /// What every scan starts with, if the scanner is programmed to send one; stripped.
    #[serde(default)]
    pub prefix: String,
    /// Longest scan in bytes; longer is line noise or a stuck trigger, and is dropped.
    #[serde(default = "default_scanner_max_len")]
    pub max_len: usize,
    /// For magnetic stripe readers in serial mode: the loyalty card number rule.
    #[serde(default)]
    pub card_number: CardNumberRule,
}

fn default_scanner_baud() -> u32 {
    9_600
}

fn default_scanner_suffix() -> String {
    "\r".into()
}

fn default_scanner_max_len() -> usize {
    1_024
}

/// One camera looking for QR codes.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CameraConfig {
    /// Name in logs, metrics and `/v1/devices`, `[a-z0-9][a-z0-9-]{0,31}`.
    pub name: String,
    /// `v4l:/dev/video0` (a camera; needs the `camera` build feature), `dir:/path` (recorded
    /// PNG frames, read in name order as they appear) or `raw:640x480:/path` (raw luma frames).
    pub source: String,
    /// The till (kiosk) whose event stream gets the scans.
    pub till: String,
    /// Frames per second for recorded sources; a camera sets its own pace.
    #[serde(default = "default_camera_fps")]
    pub fps: u32,
}

fn default_camera_fps() -> u32 {
    15
}

/// One loyalty card reader running the storegate firmware.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CardReaderConfig {
    /// Name in logs, metrics and `/v1/devices`, `[a-z0-9][a-z0-9-]{0,31}`.
    pub name: String,
    /// Serial port. Use the stable `/dev/serial/by-id/...` link, not `/dev/ttyACM0`, whose
    /// number changes on replug.
    pub port: PathBuf,
    /// The till whose customer a card identifies (the `till` of its `identity_seen`).
    pub till: String,
    /// Line speed; USB-CDC ignores it, a UART bridge needs it.
    #[serde(default = "default_reader_baud")]
    pub baud: u32,
    /// Beep after an identification was recorded, in ms; 0 for silence.
    #[serde(default = "default_reader_beep_ms")]
    pub beep_ms: u16,
    /// A reader silent this long (it sends a heartbeat every second) is reopened.
    #[serde(default = "default_reader_silence_ms")]
    pub silence_timeout_ms: u64,
}

fn default_reader_baud() -> u32 {
    115_200
}

fn default_reader_beep_ms() -> u16 {
    80
}

fn default_reader_silence_ms() -> u64 {
    5_000
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

/// The SQLite journal. Local-only.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JournalSection {
    /// Path of the SQLite file; its directory must exist.
    pub path: PathBuf,
    /// Events kept after central acked them (newest first), for reprints and lookups; older
    /// acked events are deleted. Unacked events are never deleted.
    #[serde(default = "default_keep_acked")]
    pub keep_acked: u64,
    /// Idempotency keys and receipts kept, counted in acked events, so a till retrying a sale
    /// after its event was deleted is still answered as a replay or a duplicate. At least
    /// `keep_acked`.
    #[serde(default = "default_keep_keys")]
    pub keep_keys: u64,
}

fn default_keep_acked() -> u64 {
    crate::journal::DEFAULT_KEEP_ACKED
}

/// The shortest window for idempotency keys and receipts, in acked events.
const MIN_KEEP_KEYS: u64 = 1_000;

fn default_keep_keys() -> u64 {
    crate::journal::DEFAULT_KEEP_KEYS
}

impl JournalSection {
    pub fn retention(&self) -> crate::journal::Retention {
        crate::journal::Retention {
            keep_acked: self.keep_acked,
            keep_keys: self.keep_keys,
        }
    }
}

/// The local HTTP API for tills and kiosks.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiSection {
    /// Listen address; loopback by default so only the box's own tills reach it.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// Bearer tokens; when non-empty every `/v1` call and `/metrics` need one of them, and
    /// `/healthz` shows only `{"status"}` without one.
    #[serde(default)]
    pub tokens: Vec<String>,
    /// Time a client has to send a request's headers (also the idle time of a kept-alive
    /// connection); a socket that sends nothing is closed after it.
    #[serde(default = "default_header_timeout_ms")]
    pub header_timeout_ms: u64,
    /// Connections one remote address may hold; the tills of a store each have their own.
    #[serde(default = "default_connections_per_peer")]
    pub connections_per_peer: usize,
}

impl Default for ApiSection {
    fn default() -> Self {
        ApiSection {
            listen: default_listen(),
            tokens: Vec::new(),
            header_timeout_ms: default_header_timeout_ms(),
            connections_per_peer: default_connections_per_peer(),
        }
    }
}

fn default_header_timeout_ms() -> u64 {
    10_000
}

fn default_connections_per_peer() -> usize {
    32
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8080))
}

/// How the journal is pumped to central.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyncSection {
    /// Most events in one batch message.
    #[serde(default = "default_batch_events")]
    pub batch_events: usize,
    /// Most payload bytes in one batch message (docs/protocol.md caps payloads at 256 KiB).
    #[serde(default = "default_batch_bytes")]
    pub batch_bytes: usize,
    /// Most batches published and not yet acked by central.
    #[serde(default = "default_window_batches")]
    pub window_batches: usize,
    /// Re-send everything unacked when central has acked nothing for this long.
    #[serde(default = "default_ack_timeout_ms")]
    pub ack_timeout_ms: u64,
    /// First pause after a failed connection attempt; doubles up to `reconnect_max_ms`.
    #[serde(default = "default_reconnect_min_ms")]
    pub reconnect_min_ms: u64,
    /// Longest pause between connection attempts (jitter is added on top of the doubling).
    #[serde(default = "default_reconnect_max_ms")]
    pub reconnect_max_ms: u64,
    /// How often the retained status (backlog) is refreshed while connected.
    #[serde(default = "default_status_interval_ms")]
    pub status_interval_ms: u64,
    /// How long an rpc to central may take before central counts as unreachable for it.
    #[serde(default = "default_rpc_timeout_ms")]
    pub rpc_timeout_ms: u64,
}

impl Default for SyncSection {
    fn default() -> Self {
        SyncSection {
            batch_events: default_batch_events(),
            batch_bytes: default_batch_bytes(),
            window_batches: default_window_batches(),
            ack_timeout_ms: default_ack_timeout_ms(),
            reconnect_min_ms: default_reconnect_min_ms(),
            reconnect_max_ms: default_reconnect_max_ms(),
            status_interval_ms: default_status_interval_ms(),
            rpc_timeout_ms: default_rpc_timeout_ms(),
        }
    }
}

fn default_batch_events() -> usize {
    500
}
fn default_batch_bytes() -> usize {
    192 * 1024
}
fn default_window_batches() -> usize {
    8
}
fn default_ack_timeout_ms() -> u64 {
    10_000
}
fn default_reconnect_min_ms() -> u64 {
    250
}
fn default_reconnect_max_ms() -> u64 {
    30_000
}
fn default_status_interval_ms() -> u64 {
    30_000
}
fn default_rpc_timeout_ms() -> u64 {
    2_000
}

/// Customer identifiers.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdentitySection {
    /// Fleet HMAC key (base64, at least 16 bytes) that pseudonymises card numbers, phones, emails.
    pub hmac_key: Option<String>,
}

/// Coupon verification.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CouponsSection {
    /// Ed25519 public keys (base64, 32 bytes) whose coupons are honoured.
    #[serde(default)]
    pub public_keys: Vec<String>,
}

/// Remote config trust. Local-only.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrustSection {
    /// Ed25519 public keys (base64, 32 bytes) that may sign remote config layers.
    #[serde(default)]
    pub trusted_keys: Vec<String>,
}

/// The reference central's configuration (`storegate central`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CentralConfig {
    pub mqtt: MqttSection,
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

/// A parsed `[mqtt] url`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerAddress {
    pub tls: bool,
    pub host: String,
    pub port: u16,
}

impl BrokerAddress {
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

    pub fn is_loopback(&self) -> bool {
        self.host == "localhost"
            || self
                .host
                .parse::<std::net::IpAddr>()
                .map(|ip| ip.is_loopback())
                .unwrap_or(false)
    }
}

/// True for ids usable as docs/protocol.md topic segments: `[a-z0-9][a-z0-9-]{0,31}`.
pub fn is_topic_id(id: &str) -> bool {
    let bytes = id.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 32
        && (bytes[0].is_ascii_lowercase() || bytes[0].is_ascii_digit())
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
}

impl MqttSection {
    pub fn broker(&self) -> Result<BrokerAddress, ConfigError> {
        BrokerAddress::parse(&self.url).map_err(|m| ConfigError::key("mqtt.url", m))
    }

    fn validate(&self) -> Result<(), ConfigError> {
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

impl GatewayConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !is_topic_id(&self.gateway.store) {
            return Err(ConfigError::key(
                "gateway.store",
                format!(
                    "`{}` must match [a-z0-9][a-z0-9-]{{0,31}} (lower-case letters, digits, dashes)",
                    self.gateway.store
                ),
            ));
        }
        if !is_topic_id(&self.gateway.id) {
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
        if self.journal.keep_keys < MIN_KEEP_KEYS {
            return Err(ConfigError::key(
                "journal.keep_keys",
                format!("must be at least {MIN_KEEP_KEYS}: a till's retry must be recognised after its event is compacted"),
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
        if let Some(key) = &self.identity.hmac_key {
            let bytes = decode_base64(key).map_err(|m| ConfigError::key("identity.hmac_key", m))?;
            if bytes.len() < 16 {
                return Err(ConfigError::key(
                    "identity.hmac_key",
                    "needs at least 16 bytes of key material (base64)",
                ));
            }
        }
        check_ed25519_keys("coupons.public_keys", &self.coupons.public_keys)?;
        check_ed25519_keys("config.trusted_keys", &self.config.trusted_keys)?;
        self.devices.validate(self.identity.hmac_key.is_some())
    }
}

/// A device's name (unique across all devices, a topic-safe id) and its till.
fn check_device<'a>(
    key: &dyn Fn(&str) -> String,
    name: &'a str,
    till: &str,
    names: &mut std::collections::HashSet<&'a str>,
) -> Result<(), ConfigError> {
    if !is_topic_id(name) {
        return Err(ConfigError::key(
            key("name"),
            format!(
                "`{name}` must match [a-z0-9][a-z0-9-]{{0,31}} (lower-case letters, digits, dashes)"
            ),
        ));
    }
    if !names.insert(name) {
        return Err(ConfigError::key(
            key("name"),
            format!("`{name}` names two devices; names must be unique"),
        ));
    }
    if !crate::protocol::is_till_id(till) {
        return Err(ConfigError::key(
            key("till"),
            "must be 1-32 letters, digits, '-' or '_' (as the API's till)",
        ));
    }
    Ok(())
}

/// A serial port: a path (best a /dev/serial/by-id link) or `usb:VID:PID[:SERIAL]`.
fn check_port(key: &dyn Fn(&str) -> String, port: &std::path::Path) -> Result<(), ConfigError> {
    let text = port.to_string_lossy();
    if text.is_empty() {
        return Err(ConfigError::key(
            key("port"),
            "must name the port: /dev/serial/by-id/... or usb:VID:PID[:SERIAL]",
        ));
    }
    crate::devices::port::PortSpec::parse(&text)
        .map(|_| ())
        .map_err(|message| ConfigError::key(key("port"), message))
}

impl DevicesSection {
    fn validate(&self, has_identity_key: bool) -> Result<(), ConfigError> {
        let mut names = std::collections::HashSet::new();
        for (i, reader) in self.card_readers.iter().enumerate() {
            let key = |field: &str| format!("devices.card_readers[{i}].{field}");
            check_device(&key, &reader.name, &reader.till, &mut names)?;
            check_port(&key, &reader.port)?;
            if !(500..=600_000).contains(&reader.silence_timeout_ms) {
                return Err(ConfigError::key(
                    key("silence_timeout_ms"),
                    "must be between 500 and 600000 (the reader sends a heartbeat every second)",
                ));
            }
            if !has_identity_key {
                return Err(ConfigError::key(
                    "identity.hmac_key",
                    "card readers identify customers, which needs the fleet identity key; set identity.hmac_key",
                ));
            }
        }
        for (i, scanner) in self.scanners.iter().enumerate() {
            let key = |field: &str| format!("devices.scanners[{i}].{field}");
            check_device(&key, &scanner.name, &scanner.till, &mut names)?;
            check_port(&key, &scanner.port)?;
            if scanner.suffix.is_empty() || scanner.suffix.len() > 8 {
                return Err(ConfigError::key(
                    key("suffix"),
                    "must be 1 to 8 bytes, e.g. \"\\r\" (the factory setting of most scanners)",
                ));
            }
            if !(8..=65_536).contains(&scanner.max_len) {
                return Err(ConfigError::key(
                    key("max_len"),
                    "must be between 8 and 65536",
                ));
            }
        }
        for (i, wedge) in self.keyboard_wedges.iter().enumerate() {
            let key = |field: &str| format!("devices.keyboard_wedges[{i}].{field}");
            check_device(&key, &wedge.name, &wedge.till, &mut names)?;
            if wedge.device.is_empty() {
                return Err(ConfigError::key(
                    key("device"),
                    "must name the input device: /dev/input/by-id/...-event-kbd or usb:VID:PID",
                ));
            }
        }
        let mut printing_tills = std::collections::HashSet::new();
        for (i, printer) in self.printers.iter().enumerate() {
            let key = |field: &str| format!("devices.printers[{i}].{field}");
            check_device(&key, &printer.name, &printer.till, &mut names)?;
            if !["tcp:", "file:", "serial:"]
                .iter()
                .any(|p| printer.address.starts_with(p))
            {
                return Err(ConfigError::key(
                    key("address"),
                    "use tcp:HOST:9100, file:/dev/usb/lp0 or serial:/dev/serial/by-id/...",
                ));
            }
            if printer.columns.is_some_and(|c| ![32, 42, 48].contains(&c)) {
                return Err(ConfigError::key(key("columns"), "must be 32, 42 or 48"));
            }
            if ![58, 80].contains(&printer.paper_mm) {
                return Err(ConfigError::key(key("paper_mm"), "must be 58 or 80"));
            }
            if !printing_tills.insert(printer.till.as_str()) {
                return Err(ConfigError::key(
                    key("till"),
                    format!(
                        "till `{}` already has a printer; one receipt printer per till",
                        printer.till
                    ),
                ));
            }
        }
        for (i, camera) in self.cameras.iter().enumerate() {
            let key = |field: &str| format!("devices.cameras[{i}].{field}");
            check_device(&key, &camera.name, &camera.till, &mut names)?;
            if !["v4l:", "dir:", "raw:"]
                .iter()
                .any(|p| camera.source.starts_with(p))
            {
                return Err(ConfigError::key(
                    key("source"),
                    "use v4l:/dev/video0, dir:/path/to/pngs or raw:640x480:/path",
                ));
            }
            if !(1..=120).contains(&camera.fps) {
                return Err(ConfigError::key(key("fps"), "must be between 1 and 120"));
            }
        }
        Ok(())
    }
}

impl SyncSection {
    fn validate(&self) -> Result<(), ConfigError> {
        if !(1..=10_000).contains(&self.batch_events) {
            return Err(ConfigError::key(
                "sync.batch_events",
                "must be between 1 and 10000",
            ));
        }
        if !(1024..=crate::protocol::MAX_PAYLOAD_BYTES - 1024).contains(&self.batch_bytes) {
            return Err(ConfigError::key(
                "sync.batch_bytes",
                "must be between 1024 and 261120 (the protocol caps a payload at 256 KiB)",
            ));
        }
        if !(1..=64).contains(&self.window_batches) {
            return Err(ConfigError::key(
                "sync.window_batches",
                "must be between 1 and 64",
            ));
        }
        if self.reconnect_min_ms == 0 || self.reconnect_min_ms > self.reconnect_max_ms {
            return Err(ConfigError::key(
                "sync.reconnect_min_ms",
                "must be above 0 and not above sync.reconnect_max_ms",
            ));
        }
        if self.ack_timeout_ms < 100 {
            return Err(ConfigError::key(
                "sync.ack_timeout_ms",
                "must be at least 100",
            ));
        }
        Ok(())
    }
}

impl CentralConfig {
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

fn decode_base64(text: &str) -> Result<Vec<u8>, String> {
    base64::engine::general_purpose::STANDARD
        .decode(text.trim())
        .map_err(|e| format!("not valid base64: {e}"))
}

/// An Ed25519 public key as config holds it (coupon keys, config-signing keys): standard
/// base64 of 32 bytes.
pub fn decode_ed25519_public_key(text: &str) -> Result<Vec<u8>, String> {
    let bytes = decode_base64(text)?;
    if bytes.len() == 32 {
        Ok(bytes)
    } else {
        Err(format!(
            "an Ed25519 public key is 32 bytes, this one is {}",
            bytes.len()
        ))
    }
}

fn check_ed25519_keys(key: &str, keys: &[String]) -> Result<(), ConfigError> {
    for (i, k) in keys.iter().enumerate() {
        decode_ed25519_public_key(k).map_err(|m| ConfigError::key(format!("{key}[{i}]"), m))?;
    }
    Ok(())
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

    #[test]
    fn topic_ids() {
        assert!(is_topic_id("s-042"));
        assert!(is_topic_id("gw1"));
        assert!(!is_topic_id("-gw"));
        assert!(!is_topic_id("GW"));
        assert!(!is_topic_id("a/b"));
        assert!(!is_topic_id(&"a".repeat(33)));
    }
}
