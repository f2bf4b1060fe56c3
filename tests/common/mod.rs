//! Test harness: real `storegate` processes (broker, central, gateway) on loopback, a real
//! MQTT observer for central's acks, and direct reads of central's SQLite store.
//! Every process is killed when its guard drops, also when a test fails.

#![allow(dead_code)] // each test binary uses a part of the harness

pub mod scenarios;

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub const STORE: &str = "s-test";
pub const GATEWAY: &str = "gw-1";

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_storegate")
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("no free loopback port")
}

/// A child process that is killed (SIGKILL) and reaped when dropped.
pub struct Proc {
    pub name: String,
    child: Child,
    stdin: Option<std::process::ChildStdin>,
    lines: Receiver<String>,
    log: PathBuf,
}

impl Proc {
    pub fn spawn(name: &str, program: &str, args: &[&str], dir: &Path) -> Proc {
        Self::spawn_inner(name, program, args, dir, false, &[])
    }

    /// Like `spawn`, with more environment variables.
    pub fn spawn_with_env(
        name: &str,
        program: &str,
        args: &[&str],
        dir: &Path,
        env: &[(&str, &str)],
    ) -> Proc {
        Self::spawn_inner(name, program, args, dir, false, env)
    }

    /// Like `spawn`, with a pipe to the child's stdin for `send_line`.
    pub fn spawn_interactive(name: &str, program: &str, args: &[&str], dir: &Path) -> Proc {
        Self::spawn_inner(name, program, args, dir, true, &[])
    }

    fn spawn_inner(
        name: &str,
        program: &str,
        args: &[&str],
        dir: &Path,
        interactive: bool,
        env: &[(&str, &str)],
    ) -> Proc {
        let log = dir.join(format!("{name}-{}.log", ulid::Ulid::new()));
        let stderr = std::fs::File::create(&log).expect("create log");
        let mut command = Command::new(program);
        // Inherited STOREGATE_* variables would override the test's own config files.
        for (var, _) in std::env::vars().filter(|(v, _)| v.starts_with("STOREGATE_")) {
            command.env_remove(var);
        }
        command.envs(env.iter().copied());
        let mut child = command
            .args(args)
            .stdin(if interactive {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(stderr)
            .env(
                "STOREGATE_LOG",
                std::env::var("TEST_STOREGATE_LOG")
                    .unwrap_or_else(|_| "info,rumqttd=off,rumqttc=warn".into()),
            )
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name} ({program}): {e}"));
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().expect("stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Proc {
            name: name.to_string(),
            child,
            stdin,
            lines,
            log,
        }
    }

    /// Waits for the `{"ready":…}` line the process prints once it serves.
    pub fn ready(&mut self, within: Duration) -> serde_json::Value {
        self.json_line("ready", within)
    }

    /// Waits for a stdout JSON line with `key` at its top and returns that value.
    pub fn json_line(&mut self, key: &str, within: Duration) -> serde_json::Value {
        let line = self.line_where(&format!("a {key} line"), within, |v| v.get(key).is_some());
        line[key].clone()
    }

    /// Waits for the next stdout JSON line that `wanted` accepts, skipping others.
    pub fn line_where(
        &mut self,
        what: &str,
        within: Duration,
        wanted: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) {
                        if wanted(&v) {
                            return v;
                        }
                    }
                }
                Err(_) => panic!(
                    "{} printed no {what} within {within:?}; log:\n{}",
                    self.name,
                    self.log_text()
                ),
            }
        }
    }

    /// Writes one line to the child's stdin (`spawn_interactive` only).
    pub fn send_line(&mut self, line: &str) {
        use std::io::Write;
        let stdin = self.stdin.as_mut().expect("spawned with spawn_interactive");
        writeln!(stdin, "{line}")
            .and_then(|()| stdin.flush())
            .unwrap_or_else(|e| panic!("{} stdin: {e}", self.name));
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    pub fn exit_status(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then waits for a clean exit; returns the exit status code.
    pub fn terminate(&mut self, within: Duration) -> Option<i32> {
        unsafe_sigterm(self.pid());
        self.wait_exit(within)
    }

    /// Waits (bounded) for the process to exit by itself; its exit code, or None on timeout.
    pub fn wait_exit(&mut self, within: Duration) -> Option<i32> {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        None
    }
}

#[allow(unsafe_code)]
fn unsafe_sigterm(pid: i32) {
    // SAFETY: sends a signal to our own child process; no memory is touched.
    unsafe {
        libc::kill(pid, libc::SIGTERM);
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Which broker a scenario runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BrokerKind {
    /// `storegate broker` (rumqttd), no install needed.
    Embedded,
    /// Debian's Mosquitto, started by the test on its own port without persistence.
    Mosquitto,
}

pub fn start_broker(kind: BrokerKind, dir: &Path, port: u16) -> Proc {
    match kind {
        BrokerKind::Embedded => {
            let listen = format!("127.0.0.1:{port}");
            let mut p = Proc::spawn("broker", bin(), &["broker", "--listen", &listen], dir);
            p.ready(Duration::from_secs(10));
            p
        }
        BrokerKind::Mosquitto => {
            let conf = dir.join(format!("mosquitto-{port}.conf"));
            std::fs::write(
                &conf,
                format!(
                    "listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\nmax_queued_messages 100000\nmessage_size_limit 2097152\n"
                ),
            )
            .expect("write mosquitto.conf");
            let program = mosquitto_binary();
            let conf = conf.display().to_string();
            let p = Proc::spawn("mosquitto", &program, &["-c", &conf], dir);
            wait_port(port, Duration::from_secs(10));
            p
        }
    }
}

fn mosquitto_binary() -> String {
    for candidate in [
        "/usr/sbin/mosquitto",
        "/usr/bin/mosquitto",
        "/usr/local/sbin/mosquitto",
    ] {
        if Path::new(candidate).exists() {
            return candidate.to_string();
        }
    }
    panic!(
        "mosquitto is not installed; .ci/mosquitto-suite installs it (apt-get install mosquitto)"
    );
}

/// A broker gives no readiness line; its listening socket is the signal (bounded attempts).
pub fn wait_port(port: u16, within: Duration) {
    let deadline = Instant::now() + within;
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    while Instant::now() < deadline {
        if std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(100)).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("nothing listens on {addr} after {within:?}");
}

pub fn start_central(dir: &Path, broker_url: &str) -> (Proc, PathBuf) {
    start_central_with(dir, broker_url, "", "")
}

/// Central with more keys in its `[central]` table (`central_keys`, e.g. `api_listen`) and
/// more sections after it (`sections`, e.g. `[identity]`).
pub fn start_central_with(
    dir: &Path,
    broker_url: &str,
    central_keys: &str,
    sections: &str,
) -> (Proc, PathBuf) {
    let db = dir.join("central.db");
    let config = dir.join("central.toml");
    std::fs::write(
        &config,
        format!(
            "[mqtt]\nurl = \"{broker_url}\"\n[central]\ndb = \"{}\"\nclient_id = \"central-{}\"\n{central_keys}\n{sections}",
            db.display(),
            ulid::Ulid::new().to_string().to_lowercase()
        ),
    )
    .expect("write central.toml");
    let mut p = Proc::spawn(
        "central",
        bin(),
        &["central", "--config", &config.display().to_string()],
        dir,
    );
    p.ready(Duration::from_secs(10));
    (p, db)
}

/// Writes a gateway config: the test store and gateway, the broker, a journal in `dir`, the
/// API on `api_port` (0: any), quick reconnects; `extra` is TOML merged over it key by key
/// (`[api]\ntokens = [...]` adds to the `[api]` table, `[sync]\nbatch_events = 20` overrides
/// one sync key and keeps the others, `[[devices.printers]]` adds a device).
pub fn gateway_config(dir: &Path, broker_url: &str, api_port: u16, extra: &str) -> PathBuf {
    let base = format!(
        "[gateway]\nstore = \"{STORE}\"\nid = \"{GATEWAY}\"\n[mqtt]\nurl = \"{broker_url}\"\n[journal]\npath = {:?}\n[api]\nlisten = \"127.0.0.1:{api_port}\"\n[sync]\nreconnect_min_ms = 50\nreconnect_max_ms = 500\nack_timeout_ms = 2000\n",
        dir.join("journal.db").display().to_string()
    );
    let mut table: toml::Table = base.parse().expect("base config");
    let extra: toml::Table = extra.parse().expect("extra config is TOML");
    merge(&mut table, extra);
    let config = dir.join("gateway.toml");
    std::fs::write(&config, toml::to_string(&table).expect("config as TOML"))
        .expect("write gateway.toml");
    config
}

/// Merges `over` into `into`: tables key by key, everything else replaced.
fn merge(into: &mut toml::Table, over: toml::Table) {
    for (key, value) in over {
        match (into.get_mut(&key), value) {
            (Some(toml::Value::Table(inner)), toml::Value::Table(over)) => merge(inner, over),
            (_, value) => {
                into.insert(key, value);
            }
        }
    }
}

pub fn start_gateway(dir: &Path, config: &Path) -> (Proc, SocketAddr) {
    let mut p = Proc::spawn(
        "gateway",
        bin(),
        &["run", "--config", &config.display().to_string()],
        dir,
    );
    let ready = p.ready(Duration::from_secs(10));
    let api = ready["api"]
        .as_str()
        .and_then(|a| a.parse().ok())
        .expect("ready line names the API address");
    (p, api)
}

pub fn http() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .into()
}

pub fn purchase_body(receipt: &str) -> serde_json::Value {
    serde_json::json!({
        "till": "t1",
        "receipt": receipt,
        "lines": [{"sku": "milk-1l", "gtin": "4006381333931", "qty": 2, "unit_minor": 119}],
        "total_minor": 238,
        "currency": "EUR",
        "customer": null,
        "coupons": [],
        "points": 2
    })
}

/// Posts a purchase; Ok((seq, id)) only on 201.
pub fn post_purchase(
    agent: &ureq::Agent,
    api: SocketAddr,
    receipt: &str,
) -> Result<(u64, String), String> {
    let mut response = agent
        .post(&format!("http://{api}/v1/purchases"))
        .send_json(purchase_body(receipt))
        .map_err(|e| e.to_string())?;
    let status = response.status().as_u16();
    let body: serde_json::Value = response.body_mut().read_json().map_err(|e| e.to_string())?;
    if status != 201 {
        return Err(format!("{status}: {body}"));
    }
    Ok((
        body["seq"].as_u64().unwrap_or(0),
        body["id"].as_str().unwrap_or_default().to_string(),
    ))
}

pub fn health(agent: &ureq::Agent, api: SocketAddr) -> serde_json::Value {
    agent
        .get(&format!("http://{api}/healthz"))
        .call()
        .expect("healthz")
        .body_mut()
        .read_json()
        .expect("healthz JSON")
}

/// The value of a metric from /metrics summed over its label sets.
pub fn metric(agent: &ureq::Agent, api: SocketAddr, name: &str) -> f64 {
    let text = agent
        .get(&format!("http://{api}/metrics"))
        .call()
        .expect("metrics")
        .body_mut()
        .read_to_string()
        .expect("metrics text");
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.split(['{', ' ']).next() == Some(name))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Polls `check` (a state that has no push: a metric, `/healthz`, a file) until it holds;
/// panics naming `what` after `within`. The one bounded wait of the test suite.
pub fn eventually(what: &str, within: Duration, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !check() {
        assert!(Instant::now() < deadline, "{what}: not within {within:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `POST /v1/coupons/redeem` at till `t1` for a 1000 basket: the status and the answer.
pub fn redeem_coupon(
    api: SocketAddr,
    token: &str,
    receipt: &str,
    customer: Option<&str>,
) -> (u16, serde_json::Value) {
    let mut response = http()
        .post(&format!("http://{api}/v1/coupons/redeem"))
        .send_json(serde_json::json!({
            "till": "t1", "token": token, "customer": customer, "receipt": receipt,
            "basket_minor": 1000
        }))
        .expect("redeem request");
    let status = response.status().as_u16();
    (
        status,
        response.body_mut().read_json().expect("redeem answer"),
    )
}

/// A random source for a scenario, seeded from `TEST_SEED` when set, else at random; the seed
/// is printed first so a failing run can be replayed exactly.
pub fn scenario_rng(scenario: &str) -> (fastrand::Rng, u64) {
    let seed = std::env::var("TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| fastrand::u64(..));
    eprintln!("{scenario}: TEST_SEED={seed} replays this run");
    (fastrand::Rng::with_seed(seed), seed)
}

/// `/healthz` with a bearer token (a gateway with `[api] tokens`).
pub fn health_with_token(agent: &ureq::Agent, api: SocketAddr, token: &str) -> serde_json::Value {
    agent
        .get(&format!("http://{api}/healthz"))
        .header("authorization", &format!("Bearer {token}"))
        .call()
        .expect("healthz")
        .body_mut()
        .read_json()
        .expect("healthz JSON")
}

/// The resident memory of a process, from /proc, in bytes.
pub fn rss_bytes(pid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// A row of central's event store.
#[derive(Debug, Clone)]
pub struct CentralEvent {
    pub seq: u64,
    pub id: String,
    pub applied: Option<i64>,
    pub duplicate_id: bool,
    pub at: String,
    pub clock_synced: bool,
}

pub fn central_events(db: &Path) -> Vec<CentralEvent> {
    let conn =
        rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .expect("open central db");
    let mut stmt = conn
        .prepare("SELECT seq, id, applied, duplicate_id, at, clock_synced FROM events WHERE store = ?1 AND gateway = ?2 ORDER BY seq")
        .expect("query");
    stmt.query_map([STORE, GATEWAY], |r| {
        Ok(CentralEvent {
            seq: r.get::<_, i64>(0)? as u64,
            id: r.get(1)?,
            applied: r.get(2)?,
            duplicate_id: r.get(3)?,
            at: r.get(4)?,
            clock_synced: r.get(5)?,
        })
    })
    .expect("rows")
    .collect::<Result<_, _>>()
    .expect("decode")
}

pub fn central_conflicts(db: &Path) -> i64 {
    let conn =
        rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .expect("open central db");
    conn.query_row("SELECT COUNT(*) FROM seq_conflicts", [], |r| r.get(0))
        .expect("count")
}

/// Asserts central holds exactly seqs 1..=last, each once, applied in seq order, and that every
/// acknowledged (seq, id) is among them with the same seq.
pub fn assert_central_exact(db: &Path, last: u64, acknowledged: &HashMap<String, u64>) {
    let events = central_events(db);
    let seqs: Vec<u64> = events.iter().map(|e| e.seq).collect();
    let expected: Vec<u64> = (1..=last).collect();
    assert_eq!(
        seqs.len(),
        expected.len(),
        "central holds {} events, expected {last}",
        seqs.len()
    );
    assert_eq!(seqs, expected, "central's seqs are not exactly 1..={last}");
    assert!(
        events.iter().all(|e| !e.duplicate_id),
        "central stored a duplicate id"
    );
    let mut applied: Vec<(i64, u64)> = events
        .iter()
        .map(|e| (e.applied.expect("every acked event applied"), e.seq))
        .collect();
    applied.sort();
    assert!(
        applied.windows(2).all(|w| w[0].1 < w[1].1),
        "central applied events out of seq order"
    );
    let by_id: HashMap<&str, u64> = events.iter().map(|e| (e.id.as_str(), e.seq)).collect();
    assert_eq!(by_id.len(), events.len(), "an id appears twice at central");
    for (id, seq) in acknowledged {
        assert_eq!(
            by_id.get(id.as_str()),
            Some(seq),
            "acknowledged event {id} (seq {seq}) missing or moved at central"
        );
    }
    assert_eq!(central_conflicts(db), 0, "central recorded seq conflicts");
}

/// Watches `storegate/v1/+/+/ack` on the broker, so a test waits on central's real ack
/// instead of sleeping. Survives broker restarts.
pub struct AckWatcher {
    acks: Subscription,
    best: std::cell::Cell<u64>,
}

impl AckWatcher {
    pub fn start(port: u16) -> AckWatcher {
        AckWatcher {
            acks: Subscription::start(port, "storegate/v1/+/+/ack"),
            best: std::cell::Cell::new(0),
        }
    }

    fn note(&self, ack: &serde_json::Value) {
        if let Some(upto) = ack["upto_seq"].as_u64() {
            self.best.set(self.best.get().max(upto));
        }
    }

    pub fn highest(&self) -> u64 {
        while let Ok(ack) = self.acks.messages.try_recv() {
            self.note(&ack);
        }
        self.best.get()
    }

    /// Waits until central has acked at least `upto`; false on timeout.
    pub fn wait_for(&self, upto: u64, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        while self.highest() < upto {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.acks.messages.recv_timeout(left) {
                Ok(ack) => self.note(&ack),
                Err(_) => return false,
            }
        }
        true
    }
}

/// A plain MQTT client for publishing crafted messages.
pub fn publisher(port: u16) -> (rumqttc::Client, std::thread::JoinHandle<()>) {
    let mut options =
        rumqttc::MqttOptions::new(format!("prober-{}", ulid::Ulid::new()), "127.0.0.1", port);
    options.set_max_packet_size(4 * 1024 * 1024, 4 * 1024 * 1024);
    let (client, mut connection) = rumqttc::Client::new(options, 64);
    let thread = std::thread::spawn(move || {
        for event in connection.iter() {
            match event {
                Ok(rumqttc::Event::Outgoing(rumqttc::Outgoing::Disconnect)) | Err(_) => break,
                Ok(_) => {}
            }
        }
    });
    (client, thread)
}

/// Collects every message on `filter` as JSON, in arrival order. Stops when dropped.
pub struct Subscription {
    pub messages: Receiver<serde_json::Value>,
    stop: Arc<std::sync::atomic::AtomicBool>,
    client: rumqttc::Client,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Subscription {
    pub fn start(port: u16, filter: &str) -> Subscription {
        Self::spawn(port, filter, false)
    }

    /// Like `start`, each message as `{"topic": …, "message": …}`, for a filter with
    /// wildcards where the topic says whose message it is.
    pub fn start_with_topics(port: u16, filter: &str) -> Subscription {
        Self::spawn(port, filter, true)
    }

    fn spawn(port: u16, filter: &str, with_topics: bool) -> Subscription {
        let mut options =
            rumqttc::MqttOptions::new(format!("sub-{}", ulid::Ulid::new()), "127.0.0.1", port);
        // Tests publish oversized garbage on the topics they watch: a 10 KiB limit (rumqttc's
        // default) would cut this client off and make it miss what follows.
        options.set_max_packet_size(4 * 1024 * 1024, 4 * 1024 * 1024);
        let (client, mut connection) = rumqttc::Client::new(options, 16);
        let (tx, messages) = mpsc::channel();
        let (subscribed_tx, subscribed) = mpsc::channel();
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stopping = stop.clone();
        let subscriber = client.clone();
        let filter = filter.to_string();
        let thread = std::thread::spawn(move || {
            for event in connection.iter() {
                if stopping.load(std::sync::atomic::Ordering::Relaxed) {
                    break;
                }
                match event {
                    Ok(rumqttc::Event::Incoming(rumqttc::Packet::ConnAck(_))) => {
                        let _ =
                            subscriber.try_subscribe(filter.as_str(), rumqttc::QoS::AtLeastOnce);
                    }
                    Ok(rumqttc::Event::Incoming(rumqttc::Packet::SubAck(_))) => {
                        let _ = subscribed_tx.send(());
                    }
                    Ok(rumqttc::Event::Incoming(rumqttc::Packet::Publish(p))) => {
                        if let Ok(v) = serde_json::from_slice::<serde_json::Value>(&p.payload) {
                            let _ = tx.send(if with_topics {
                                serde_json::json!({ "topic": p.topic, "message": v })
                            } else {
                                v
                            });
                        }
                    }
                    Ok(rumqttc::Event::Outgoing(rumqttc::Outgoing::Disconnect)) => break,
                    Ok(_) => {}
                    Err(_) => std::thread::sleep(Duration::from_millis(50)),
                }
            }
        });
        subscribed
            .recv_timeout(Duration::from_secs(10))
            .expect("subscribed");
        Subscription {
            messages,
            stop,
            client,
            thread: Some(thread),
        }
    }

    /// The next message for which `pred` holds, skipping others; panics after `within`.
    pub fn next_matching(
        &self,
        within: Duration,
        pred: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.messages.recv_timeout(left) {
                Ok(v) if pred(&v) => return v,
                Ok(_) => continue,
                Err(_) => panic!("no matching message within {within:?}"),
            }
        }
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let _ = self.client.try_disconnect();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A listener on the gateway's `GET /v1/events` (server-sent events): each event arrives as
/// (event name, JSON data) on a channel, read by a thread that ends when the gateway goes.
pub struct LiveEvents {
    events: Receiver<(String, serde_json::Value)>,
}

impl LiveEvents {
    /// Subscribes and waits until the gateway confirmed the subscription.
    pub fn subscribe(api: SocketAddr, query: &str) -> LiveEvents {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into();
        let response = agent
            .get(&format!("http://{api}/v1/events{query}"))
            .call()
            .expect("GET /v1/events");
        assert_eq!(response.status(), 200);
        let reader = BufReader::new(response.into_body().into_reader());
        let (tx, events) = mpsc::channel();
        std::thread::spawn(move || {
            let mut name = String::new();
            for line in reader.lines().map_while(Result::ok) {
                if let Some(event) = line.strip_prefix("event: ") {
                    name = event.to_string();
                } else if let Some(data) = line.strip_prefix("data: ") {
                    let value = serde_json::from_str(data).unwrap_or(serde_json::Value::Null);
                    if tx.send((std::mem::take(&mut name), value)).is_err() {
                        return;
                    }
                }
            }
        });
        let live = LiveEvents { events };
        let (name, _) = live.next(Duration::from_secs(5));
        assert_eq!(name, "ready");
        live
    }

    pub fn next(&self, within: Duration) -> (String, serde_json::Value) {
        self.events
            .recv_timeout(within)
            .unwrap_or_else(|_| panic!("no live event within {within:?}"))
    }
}

/// Polls `GET /v1/devices` (device state has no push) until device `index` satisfies `wanted`;
/// returns its status. Panics with the last status after `within`.
pub fn wait_device(
    agent: &ureq::Agent,
    api: SocketAddr,
    index: usize,
    within: Duration,
    wanted: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let device = || -> serde_json::Value {
        let devices: serde_json::Value = agent
            .get(&format!("http://{api}/v1/devices"))
            .call()
            .expect("GET /v1/devices")
            .body_mut()
            .read_json()
            .expect("devices JSON");
        devices["devices"][index].clone()
    };
    let mut found = serde_json::Value::Null;
    eventually("device state", within, || {
        let now = device();
        let reached = wanted(&now);
        if reached {
            found = now;
        }
        reached
    });
    found
}
