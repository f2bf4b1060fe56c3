//! The command line: argument types and one `run_*` function per subcommand. Machine-readable
//! output is JSON on stdout; human messages and progress go to stderr.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand};

use storegate::clock::SystemClock;
use storegate::daemon::{self, terminate_signal};

#[derive(Debug, Parser)]
#[command(
    name = "storegate",
    version,
    about = "In-store edge gateway: till hardware, offline journal, MQTT sync with central"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the gateway daemon.
    Run {
        /// The gateway's TOML config (see config/storegate.example.toml).
        #[arg(long, short, env = "STOREGATE_CONFIG")]
        config: PathBuf,
    },
    /// Run the reference central profile service.
    Central {
        /// Central's TOML config (see config/central.example.toml).
        #[arg(long, short)]
        config: PathBuf,
    },
    #[cfg(feature = "embedded-broker")]
    /// Start an embedded broker, the reference central and a gateway with a simulated till,
    /// and show events being committed, synced and acked until Ctrl-C.
    Demo {
        /// Stop (exit 0) once this many purchases are acked by central; default: run until Ctrl-C.
        #[arg(long)]
        purchases: Option<u64>,
        /// Simulated purchases per second (raise it to reach `--purchases` sooner: 500
        /// purchases take 100 s at the default 5/s, 1 s at `--rate 500`).
        #[arg(long, default_value_t = 5.0)]
        rate: f64,
    },
    /// Run the embedded MQTT broker alone (loopback development and tests).
    #[cfg(feature = "embedded-broker")]
    Broker {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:1883")]
        listen: SocketAddr,
    },
    /// Measure journal ingest and backlog drain against baselines in the same run.
    #[cfg(feature = "bench")]
    Bench(crate::bench::BenchArgs),
    /// Simulate many stores' gateways against a broker and central (the embedded broker and a
    /// reference central on SQLite without `--broker`): events/s acked, ack latency,
    /// identifications/s and backlog per second, with outages and a reconnect storm.
    #[cfg(feature = "bench")]
    FleetSim(crate::fleet_sim::FleetSimArgs),
    /// Print what scanned data means, as JSON: an optional AIM identifier (`]E0`, `]C1`, …),
    /// then EAN/UPC with check digit, GS1 element strings (GS = \x1d, or bracketed), coupon
    /// token, app identity, GS1 Digital Link, or text. Exits 1, with the reason as JSON, for data
    /// that is broken (wrong check digit, bad date, control characters).
    Decode {
        /// The text a scanner or camera read.
        data: String,
        /// Also exit 1 for a digit string whose check digit fits no EAN/UPC code
        /// (`probable_misread`), which is otherwise reported as text.
        #[arg(long)]
        strict: bool,
    },
    /// Decode the QR codes in image files (PNG), one JSON line per file, with the kiosk
    /// camera's decoder.
    ScanImage {
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Coupon keys and signed coupon tokens (docs/protocol.md "Coupons").
    #[command(subcommand)]
    Coupon(CouponCommand),
    /// Fleet configuration tools.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Print the running gateway's health as JSON (exit 1 when a part is broken).
    Status {
        /// The gateway's config: its `[api] listen` address and first token are used.
        #[arg(long, short, conflicts_with_all = ["api", "url"])]
        config: Option<PathBuf>,
        /// The gateway's API address.
        #[arg(long, conflicts_with = "url")]
        api: Option<SocketAddr>,
        /// The gateway's health URL in full, e.g. http://10.0.0.5:8080/healthz.
        #[arg(long)]
        url: Option<String>,
        /// A bearer token (when `[api] tokens` are configured); defaults to the config's.
        #[arg(long, env = "STOREGATE_API_TOKEN")]
        token: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Print a new Ed25519 key for signing config layers as JSON: `private_key` (base64
    /// PKCS#8; stays with store IT) and `public_key` (for the boxes' `config.trusted_keys`).
    Keygen,
    /// Sign a config layer and print the MQTT payload (docs/protocol.md "Config layers").
    Sign {
        /// File holding the base64 PKCS#8 private key (`keygen`'s `private_key`).
        #[arg(long)]
        key: PathBuf,
        /// The key's id in the payload (a label for people).
        #[arg(long, default_value = "it")]
        key_id: String,
        /// fleet, store or gateway.
        #[arg(long)]
        layer: String,
        /// Higher than every earlier version of this layer.
        #[arg(long)]
        version: u64,
        /// The layer's body: a TOML file with the sections and keys it sets.
        body: PathBuf,
    },
    /// Print the config a gateway runs with (file, environment, applied layers) and which of
    /// them set each key, as JSON.
    Show {
        /// The gateway's config file.
        #[arg(long)]
        config: PathBuf,
    },
    /// Publish a signed layer (`config sign`'s output) retained on its topic through the
    /// fleet's broker, and wait for the broker to confirm it.
    Push {
        /// A config file whose `[mqtt]` section reaches the fleet's broker.
        #[arg(long)]
        config: PathBuf,
        /// fleet, store or gateway (must be the layer the payload carries).
        #[arg(long)]
        layer: String,
        /// The store, for a store or gateway layer.
        #[arg(long)]
        store: Option<String>,
        /// The gateway, for a gateway layer.
        #[arg(long)]
        gateway: Option<String>,
        /// The signed payload (`config sign`'s output); `-` reads stdin.
        #[arg(default_value = "-")]
        payload: PathBuf,
    },
    /// Print the fleet broker's Mosquitto ACL file: config/mosquitto-acl.conf plus, for each
    /// gateway, the grant to read its own store's config layer.
    Acl {
        /// A gateway as its certificate names it, `<store>/<gateway>`; repeat for each.
        #[arg(long = "gateway")]
        gateways: Vec<String>,
        /// A file with one `<store>/<gateway>` per line (`#` comments), e.g. the fleet list.
        #[arg(long = "gateways-file")]
        file: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
pub enum CouponCommand {
    /// Print a new Ed25519 coupon key as JSON: `private_key` (base64 PKCS#8; keep it where
    /// coupons are issued, never on a box) and `public_key` (for `coupons.public_keys`).
    Keygen,
    /// Sign a coupon payload (JSON, docs/protocol.md fields) and print `{"token": "SGC1.…"}`.
    Issue {
        /// File holding the base64 PKCS#8 private key (`keygen`'s `private_key`).
        #[arg(long)]
        key: PathBuf,
        /// The payload JSON, e.g. '{"id":"c-1","kind":"percent","value":10,"offline":true}'.
        payload: String,
        /// Also write the token as a QR code PNG here (for print and e-mail campaigns).
        #[arg(long)]
        png: Option<PathBuf>,
    },
    /// Verify a token against public keys (base64); prints `{"valid":true,"payload":…}`, or
    /// exits 1 with the reason.
    Verify {
        /// A coupon public key; repeat for several (rotation).
        #[arg(long = "public-key", required = true)]
        public_keys: Vec<String>,
        token: String,
    },
}

/// Runs the parsed command.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Run { config } => run_gateway(config),
        Command::Central { config } => run_central(config),
        #[cfg(feature = "embedded-broker")]
        Command::Demo { purchases, rate } => crate::demo::run(purchases, rate),
        #[cfg(feature = "embedded-broker")]
        Command::Broker { listen } => run_broker(listen),
        Command::Status {
            config,
            api,
            url,
            token,
        } => run_status(config, api, url, token),
        #[cfg(feature = "bench")]
        Command::Bench(args) => crate::bench::run(args),
        #[cfg(feature = "bench")]
        Command::FleetSim(args) => crate::fleet_sim::run(args),
        Command::Decode { data, strict } => run_decode(&data, strict),
        Command::ScanImage { files } => run_scan_image(&files),
        Command::Coupon(command) => run_coupon(command),
        Command::Config(command) => run_config(command),
    }
}

fn run_config(command: ConfigCommand) -> anyhow::Result<()> {
    use storegate::config::layers;
    match command {
        ConfigCommand::Push {
            config,
            layer,
            store,
            gateway,
            payload,
        } => {
            let name = parse_layer_name(&layer)?;
            let text = if payload.as_os_str() == "-" {
                std::io::read_to_string(std::io::stdin())
                    .context("reading the payload from stdin")?
            } else {
                std::fs::read_to_string(&payload)
                    .with_context(|| format!("reading {}", payload.display()))?
            };
            let signed: storegate::protocol::SignedLayer = serde_json::from_str(text.trim())
                .context(
                    "the payload is not a signed layer (`storegate config sign` prints one)",
                )?;
            // The payload's own layer must be the one it is pushed as: a store layer on the
            // fleet topic would be refused by every box anyway.
            let bytes = base64::Engine::decode(
                &base64::engine::general_purpose::URL_SAFE_NO_PAD,
                &signed.payload,
            )
            .context("the payload's `payload` is not base64url")?;
            let inner: layers::Layer =
                serde_json::from_slice(&bytes).context("the payload does not hold a layer")?;
            if inner.layer != name {
                anyhow::bail!("the payload is a {:?} layer, not {layer}", inner.layer);
            }
            let topic =
                storegate::remote_config::push::topic(name, store.as_deref(), gateway.as_deref())
                    .map_err(anyhow::Error::msg)?;
            let mqtt = storegate::config::load_mqtt(&config)?;
            let body = serde_json::to_vec(&signed)?;
            runtime()?
                .block_on(storegate::remote_config::push::push(
                    &mqtt,
                    &topic,
                    body,
                    std::time::Duration::from_secs(15),
                ))
                .map_err(anyhow::Error::msg)?;
            print_json(
                &serde_json::json!({ "pushed": { "topic": topic, "layer": layer, "version": inner.version } }),
            );
            Ok(())
        }
        ConfigCommand::Show { config } => {
            print_json(&storegate::remote_config::show(&config).map_err(anyhow::Error::msg)?);
            Ok(())
        }
        ConfigCommand::Keygen => {
            let key = storegate::codes::coupon::generate_key()?;
            print_json(&serde_json::json!(key));
            Ok(())
        }
        ConfigCommand::Sign {
            key,
            key_id,
            layer,
            version,
            body,
        } => {
            let private_key = std::fs::read_to_string(&key)
                .with_context(|| format!("reading the private key {}", key.display()))?;
            let layer = parse_layer_name(&layer)?;
            let text = std::fs::read_to_string(&body)
                .with_context(|| format!("reading the layer body {}", body.display()))?;
            let table: toml::Table = text
                .parse()
                .with_context(|| format!("{} is not TOML", body.display()))?;
            let layer = layers::Layer {
                layer,
                version,
                issued_at: storegate::protocol::timestamp(std::time::SystemTime::now()),
                body: serde_json::to_value(table)?,
            };
            print_json(&serde_json::json!(layers::sign(
                &private_key,
                &key_id,
                &layer
            )?));
            Ok(())
        }
        ConfigCommand::Acl { mut gateways, file } => {
            if let Some(file) = file {
                let text = std::fs::read_to_string(&file)
                    .with_context(|| format!("reading {}", file.display()))?;
                gateways.extend(
                    text.lines()
                        .map(|l| l.split('#').next().unwrap_or_default().trim())
                        .filter(|l| !l.is_empty())
                        .map(str::to_string),
                );
            }
            if gateways.is_empty() {
                anyhow::bail!("name the fleet's gateways with --gateway or --gateways-file");
            }
            // The file itself is the machine-readable output here (it goes to the broker).
            print!(
                "{}",
                storegate::config::broker_acl::mosquitto_acl(&gateways)?
            );
            Ok(())
        }
    }
}

fn parse_layer_name(layer: &str) -> anyhow::Result<storegate::config::layers::LayerName> {
    serde_json::from_value(serde_json::Value::String(layer.to_string()))
        .map_err(|_| anyhow::anyhow!("--layer must be fleet, store or gateway, not `{layer}`"))
}

fn run_coupon(command: CouponCommand) -> anyhow::Result<()> {
    use storegate::codes::coupon;
    let result = match command {
        CouponCommand::Keygen => coupon::generate_key()
            .map(|key| serde_json::json!(key))
            .map_err(|e| e.to_string()),
        CouponCommand::Issue { key, payload, png } => {
            let private_key = std::fs::read_to_string(&key)
                .with_context(|| format!("reading the private key {}", key.display()))?;
            serde_json::from_str::<serde_json::Value>(&payload)
                .map_err(|e| format!("the payload is not JSON: {e}"))
                .and_then(|payload| {
                    coupon::issue(&private_key, &payload).map_err(|e| e.to_string())
                })
                .and_then(|token| match &png {
                    Some(path) => write_qr_png(&token, path)
                        .map(|()| serde_json::json!({ "token": token, "png": path })),
                    None => Ok(serde_json::json!({ "token": token })),
                })
        }
        CouponCommand::Verify { public_keys, token } => {
            coupon::CouponKeys::from_base64(&public_keys)
                .map_err(|e| e.to_string())
                .and_then(|keys| keys.verify(&token).map_err(|e| e.to_string()))
                .map(|payload| serde_json::json!({ "valid": true, "payload": payload }))
        }
    };
    match result {
        Ok(json) => {
            print_json(&json);
            Ok(())
        }
        Err(message) => fail("invalid_coupon", message),
    }
}

/// Writes `text` as a QR code PNG: 6 px per module with the 4-module quiet zone a camera or
/// scanner needs, greyscale.
fn write_qr_png(text: &str, path: &std::path::Path) -> Result<(), String> {
    const MODULE_PX: usize = 6;
    const QUIET: usize = 4;
    let code = qrcode::QrCode::new(text.as_bytes()).map_err(|e| format!("QR code: {e}"))?;
    let modules = code.width();
    let colors = code.to_colors();
    let side = (modules + 2 * QUIET) * MODULE_PX;
    let mut pixels = vec![255u8; side * side];
    for (i, color) in colors.iter().enumerate() {
        if *color != qrcode::Color::Dark {
            continue;
        }
        let (mx, my) = (i % modules + QUIET, i / modules + QUIET);
        for y in my * MODULE_PX..(my + 1) * MODULE_PX {
            pixels[y * side + mx * MODULE_PX..y * side + (mx + 1) * MODULE_PX].fill(0);
        }
    }
    storegate::devices::camera::frame::LumaFrame::new(side, side, pixels)
        .and_then(|frame| frame.save_png(path))
        .map_err(|e| e.to_string())
}

fn run_decode(data: &str, strict: bool) -> anyhow::Result<()> {
    let (aim, rest) = storegate::codes::Aim::split(data);
    match storegate::codes::interpret_scan(aim, rest) {
        Ok(storegate::codes::Interpretation::Text {
            probable_misread: true,
            ..
        }) if strict => fail(
            "probable_misread",
            "the digits fit no EAN/UPC check digit: probably a misread product code".into(),
        ),
        Ok(interpretation) => {
            let mut json = serde_json::json!(interpretation);
            if matches!(
                interpretation,
                storegate::codes::Interpretation::CouponToken { .. }
            ) {
                // No keys here: a well-formed coupon is not yet a genuine one.
                json["signature"] = serde_json::json!(
                    "not checked; `storegate coupon verify --public-key K TOKEN` checks it"
                );
            }
            if let Some(aim) = aim {
                json["aim"] = serde_json::json!(aim.to_string());
                json["aim_symbology"] = serde_json::json!(aim.symbology());
            }
            print_json(&json);
            Ok(())
        }
        Err(error) => fail("invalid_code", error.to_string()),
    }
}

fn run_scan_image(files: &[PathBuf]) -> anyhow::Result<()> {
    use storegate::devices::camera::{decode, frame::LumaFrame};
    let mut unreadable = 0;
    for file in files {
        let line = match LumaFrame::load_png(file) {
            Ok(frame) => {
                let codes: Vec<serde_json::Value> = decode::QrDecoder::new()
                    .decode_all(&frame)
                    .into_iter()
                    .map(|detected| {
                        let meaning = match storegate::codes::interpret(&detected.text) {
                            Ok(interpretation) => serde_json::json!(interpretation),
                            Err(error) => serde_json::json!({ "refused": error.to_string() }),
                        };
                        serde_json::json!({ "text": detected.text, "interpretation": meaning })
                    })
                    .collect();
                serde_json::json!({ "file": file, "codes": codes })
            }
            Err(error) => {
                unreadable += 1;
                serde_json::json!({ "file": file, "error": error.to_string() })
            }
        };
        print_json(&line);
    }
    if unreadable > 0 {
        anyhow::bail!("{unreadable} file(s) could not be read");
    }
    Ok(())
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

fn run_gateway(path: PathBuf) -> anyhow::Result<()> {
    // Config is parsed and validated before any port or file is opened.
    let config = storegate::config::load_gateway(&path)?;
    runtime()?.block_on(async {
        daemon::run(
            config,
            Arc::new(SystemClock),
            |ready| print_json(&serde_json::json!({ "ready": ready })),
            terminate_signal(),
        )
        .await
    })?;
    Ok(())
}

fn run_central(path: PathBuf) -> anyhow::Result<()> {
    let config = storegate::config::load_central(&path)?;
    runtime()?.block_on(async {
        let client_id = config.central.client_id.clone();
        let ready = || print_json(&serde_json::json!({ "ready": { "central": client_id } }));
        storegate::central::run(config, ready, terminate_signal()).await
    })?;
    Ok(())
}

#[cfg(feature = "embedded-broker")]
fn run_broker(listen: SocketAddr) -> anyhow::Result<()> {
    storegate::broker::start_embedded(listen)?;
    print_json(&serde_json::json!({ "ready": { "broker": format!("mqtt://{listen}") } }));
    runtime()?.block_on(terminate_signal());
    Ok(())
}

fn run_status(
    config: Option<PathBuf>,
    api: Option<SocketAddr>,
    url: Option<String>,
    token: Option<String>,
) -> anyhow::Result<()> {
    let (url, token) = match (config, api, url) {
        (Some(path), _, _) => {
            let config = storegate::config::load_gateway(&path)?;
            let listen = config.api.listen;
            // A gateway listening on every interface is asked on loopback.
            let host = if listen.ip().is_unspecified() {
                SocketAddr::from(([127, 0, 0, 1], listen.port()))
            } else {
                listen
            };
            (
                format!("http://{host}/healthz"),
                token.or_else(|| config.api.tokens.first().cloned()),
            )
        }
        (None, Some(api), _) => (format!("http://{api}/healthz"), token),
        (None, None, Some(url)) => (url, token),
        (None, None, None) => ("http://127.0.0.1:8080/healthz".to_string(), token),
    };
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(std::time::Duration::from_secs(5)))
        .http_status_as_error(false)
        .build()
        .into();
    let mut request = agent.get(&url);
    if let Some(token) = &token {
        request = request.header("authorization", &format!("Bearer {token}"));
    }
    let mut response = request
        .call()
        .with_context(|| format!("cannot reach the gateway at {url}; is `storegate run` up?"))?;
    let status = response.status().as_u16();
    let body: serde_json::Value = response
        .body_mut()
        .read_json()
        .context("the gateway's health answer is not JSON")?;
    print_json(&body);
    match status {
        200 => Ok(()),
        503 => anyhow::bail!("the gateway reports broken parts: {}", body["broken"]),
        other => anyhow::bail!("the gateway answered {other}"),
    }
}

/// One JSON line on stdout, flushed, so a supervising program sees it at once.
/// A refused input: `{"error":{"code","message"}}` on stdout for scripts, and exit 1 with the
/// message on stderr.
fn fail(code: &str, message: String) -> anyhow::Result<()> {
    print_json(&serde_json::json!({ "error": { "code": code, "message": message } }));
    anyhow::bail!("{message}")
}

pub fn print_json(value: &serde_json::Value) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    // A closed stdout (piped into `head`) is not an error worth dying for.
    let _ = writeln!(out, "{value}");
    let _ = out.flush();
}
