//! The shipped broker config (`config/mosquitto.conf` with `config/mosquitto-acl.conf`) on a
//! real Mosquitto with a TLS client certificate per client: only central can publish acks and
//! identity changes, a gateway reads and writes only its own store's topics, nobody takes over
//! another client's session by its client id, and packets above the protocol's cap never
//! reach anyone. Ignored by plain `cargo test`; `.ci/mosquitto-suite` installs Mosquitto and
//! runs it.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test fails by panicking

mod common;

use std::path::Path;
use std::sync::mpsc::{self, Receiver};
use std::time::Duration;

use common::*;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rumqttc::{Client, Event, MqttOptions, Outgoing, Packet, QoS, TlsConfiguration, Transport};

struct Ca {
    params: CertificateParams,
    key: KeyPair,
    pem: String,
}

fn ca() -> Ca {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let pem = params.clone().self_signed(&key).unwrap().pem();
    Ca { params, key, pem }
}

/// A certificate and key (PEM) signed by `ca`, named `name` (the MQTT identity).
fn leaf(ca: &Ca, name: &str, server: bool) -> (String, String) {
    let key = KeyPair::generate().unwrap();
    let sans = if server {
        vec!["localhost".to_string(), "127.0.0.1".to_string()]
    } else {
        Vec::new()
    };
    let mut params = CertificateParams::new(sans).unwrap();
    params.distinguished_name.push(DnType::CommonName, name);
    params.extended_key_usages = vec![if server {
        ExtendedKeyUsagePurpose::ServerAuth
    } else {
        ExtendedKeyUsagePurpose::ClientAuth
    }];
    let issuer = Issuer::new(ca.params.clone(), &ca.key);
    let cert = params.signed_by(&key, &issuer).unwrap();
    (cert.pem(), key.serialize_pem())
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

/// Mosquitto with the shipped config: only the listener port and the file locations change.
fn start_fleet_broker(dir: &Path, ca: &Ca, port: u16) -> Proc {
    // Mosquitto drops root for its own user before it reads the ACL: let it in.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let (cert, key) = leaf(ca, "broker", true);
    let ca_file = write(dir, "ca.pem", &ca.pem);
    let cert_file = write(dir, "broker.pem", &cert);
    let key_file = write(dir, "broker.key", &key);
    // The ACL as `storegate config acl` prints it for this fleet: the shipped file plus each
    // gateway's store layer.
    let acl = std::process::Command::new(bin())
        .args([
            "config",
            "acl",
            "--gateway",
            "s-test/gw-1",
            "--gateway",
            "s-other/gw-9",
        ])
        .output()
        .unwrap();
    assert!(acl.status.success(), "{acl:?}");
    let acl_file = write(dir, "acl.conf", &String::from_utf8(acl.stdout).unwrap());
    let shipped = std::fs::read_to_string("config/mosquitto.conf").unwrap();
    let mut conf = String::new();
    for line in shipped.lines() {
        let key = line.split_whitespace().next().unwrap_or("");
        let line = match key {
            "listener" => format!("listener {port} 127.0.0.1"),
            "cafile" => format!("cafile {ca_file}"),
            "certfile" => format!("certfile {cert_file}"),
            "keyfile" => format!("keyfile {key_file}"),
            "acl_file" => format!("acl_file {acl_file}"),
            "persistence" => "persistence false".to_string(),
            "persistence_location" => continue,
            _ => line.to_string(),
        };
        conf.push_str(&line);
        conf.push('\n');
    }
    conf.push_str("log_dest stderr\n");
    let conf_file = write(dir, "mosquitto.conf", &conf);
    let program = ["/usr/sbin/mosquitto", "/usr/bin/mosquitto"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect("mosquitto is not installed; .ci/mosquitto-suite installs it");
    let broker = Proc::spawn("mosquitto", program, &["-c", &conf_file], dir);
    wait_port(port, Duration::from_secs(10));
    broker
}

/// What one client saw: messages (topic, payload) and its connection's ups and downs.
#[derive(Debug)]
enum Seen {
    Connected,
    Message(String),
    Subscribed,
    Lost(String),
}

struct TlsClient {
    client: Client,
    seen: Receiver<Seen>,
}

impl TlsClient {
    fn connect(ca: &Ca, name: &str, client_id: &str, port: u16) -> TlsClient {
        let (cert, key) = leaf(ca, name, false);
        let mut options = MqttOptions::new(client_id, "localhost", port);
        options.set_max_packet_size(1024 * 1024, 1024 * 1024);
        options.set_transport(Transport::Tls(TlsConfiguration::Simple {
            ca: ca.pem.clone().into_bytes(),
            alpn: None,
            client_auth: Some((cert.into_bytes(), key.into_bytes())),
        }));
        let (client, mut connection) = Client::new(options, 64);
        let (tx, seen) = mpsc::channel();
        std::thread::spawn(move || {
            for event in connection.iter() {
                let seen = match event {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => Seen::Connected,
                    Ok(Event::Incoming(Packet::SubAck(_))) => Seen::Subscribed,
                    Ok(Event::Incoming(Packet::Publish(p))) => Seen::Message(p.topic),
                    Ok(Event::Outgoing(Outgoing::Disconnect)) => return,
                    Ok(_) => continue,
                    Err(error) => {
                        let _ = tx.send(Seen::Lost(error.to_string()));
                        return;
                    }
                };
                if tx.send(seen).is_err() {
                    return;
                }
            }
        });
        let tls = TlsClient { client, seen };
        tls.expect("connected", |s| matches!(s, Seen::Connected));
        tls
    }

    fn subscribe(&self, filter: &str) {
        self.client.subscribe(filter, QoS::AtLeastOnce).unwrap();
        self.expect("subscribed", |s| matches!(s, Seen::Subscribed));
    }

    fn publish(&self, topic: &str, payload: &[u8]) {
        self.client
            .publish(topic, QoS::AtLeastOnce, false, payload.to_vec())
            .unwrap();
    }

    /// The next event that `wanted` accepts; every one before it is returned too.
    fn expect(&self, what: &str, wanted: impl Fn(&Seen) -> bool) -> Vec<Seen> {
        let mut before = Vec::new();
        loop {
            match self.seen.recv_timeout(Duration::from_secs(10)) {
                Ok(seen) if wanted(&seen) => return before,
                Ok(seen) => before.push(seen),
                Err(_) => panic!("{what}: not seen within 10 s; saw {before:?}"),
            }
        }
    }

    /// Every message up to and including the one on `marker_topic` (published after the
    /// ones under test by the same client, so anything allowed arrives before it).
    fn messages_until(&self, marker_topic: &str) -> Vec<String> {
        let before = self.expect(
            marker_topic,
            |s| matches!(s, Seen::Message(topic) if topic == marker_topic),
        );
        before
            .into_iter()
            .filter_map(|s| match s {
                Seen::Message(topic) => Some(topic),
                Seen::Lost(error) => panic!("connection lost: {error}"),
                _ => None,
            })
            .collect()
    }
}

#[test]
#[ignore = "needs mosquitto; run by .ci/mosquitto-suite"]
fn the_shipped_broker_config_lets_only_central_ack_binds_client_ids_and_isolates_stores() {
    let dir = tempfile::tempdir().unwrap();
    let ca = ca();
    let port = free_port();
    let _broker = start_fleet_broker(dir.path(), &ca, port);

    let central = TlsClient::connect(&ca, "central", "central-1", port);
    central.subscribe("storegate/v1/#");
    // A gateway's own certificate, and one of another store.
    let gateway = TlsClient::connect(&ca, "s-test/gw-1", "storegate-s-test-gw-1", port);
    gateway.subscribe("storegate/v1/s-test/gw-1/ack");
    gateway.subscribe("storegate/v1/s-other/gw-9/#");
    gateway.subscribe("storegate/v1/identity");

    // 1. A gateway cannot forge acks (its own or another's), identity changes, rpc answers,
    //    nor write another store's events; its own events and status pass.
    for forged in [
        "storegate/v1/s-test/gw-1/ack",
        "storegate/v1/s-other/gw-9/ack",
        "storegate/v1/identity",
        "storegate/v1/s-test/gw-1/rpc/res",
        "storegate/v1/s-other/gw-9/events",
        "storegate/v1/config/fleet",
    ] {
        gateway.publish(forged, br#"{"upto_seq":1000000}"#);
    }
    gateway.publish("storegate/v1/s-test/gw-1/events", b"{}");
    gateway.publish("storegate/v1/s-test/gw-1/status", b"{}");
    let reached = central.messages_until("storegate/v1/s-test/gw-1/status");
    assert_eq!(
        reached,
        vec!["storegate/v1/s-test/gw-1/events".to_string()],
        "only the gateway's own events got through before its status"
    );

    // 2. A gateway reads its own acks and the fleet's identity changes, not another store's.
    central.publish("storegate/v1/s-other/gw-9/ack", br#"{"upto_seq":5}"#);
    central.publish("storegate/v1/identity", br#"{"rev":1}"#);
    central.publish("storegate/v1/s-test/gw-1/ack", br#"{"upto_seq":5}"#);
    let reached = gateway.messages_until("storegate/v1/s-test/gw-1/ack");
    assert_eq!(reached, vec!["storegate/v1/identity".to_string()]);
    // Central reads its own publishes back (it subscribes to everything).
    central.messages_until("storegate/v1/s-test/gw-1/ack");

    // 3. Session takeover: another store's certificate asking for central's client id (and
    //    for this gateway's) gets its own name as client id; nobody is knocked off.
    let _intruder = TlsClient::connect(&ca, "s-other/gw-9", "central-1", port);
    let _intruder2 = TlsClient::connect(&ca, "s-other/gw-9", "storegate-s-test-gw-1", port);
    gateway.publish("storegate/v1/s-test/gw-1/status", b"{}");
    let reached = central.messages_until("storegate/v1/s-test/gw-1/status");
    assert!(reached.is_empty(), "{reached:?}");
    central.publish("storegate/v1/s-test/gw-1/ack", br#"{"upto_seq":6}"#);
    gateway.messages_until("storegate/v1/s-test/gw-1/ack");
    central.messages_until("storegate/v1/s-test/gw-1/ack");

    // 4. Config layers: a gateway reads the fleet's and its own store's and gateway's, never
    //    another store's; it cannot write one.
    let publisher = TlsClient::connect(&ca, "config-publisher", "config-publisher", port);
    let layers = &gateway;
    layers.subscribe("storegate/v1/config/fleet");
    layers.subscribe("storegate/v1/s-test/config");
    layers.subscribe("storegate/v1/s-other/config");
    layers.subscribe("storegate/v1/s-test/gw-1/config");
    layers.publish("storegate/v1/s-test/config", b"forged");
    for topic in [
        "storegate/v1/s-other/config",
        "storegate/v1/s-test/config",
        "storegate/v1/config/fleet",
        "storegate/v1/s-test/gw-1/config",
    ] {
        publisher.publish(topic, b"{}");
    }
    let reached = layers.messages_until("storegate/v1/s-test/gw-1/config");
    assert_eq!(
        reached,
        vec![
            "storegate/v1/s-test/config".to_string(),
            "storegate/v1/config/fleet".to_string()
        ],
        "its store's and the fleet's layer, once each (its own forgery was dropped)"
    );
    central.messages_until("storegate/v1/s-test/gw-1/config");

    // 5. A packet above the cap is refused at the broker: it never reaches central.
    let other = TlsClient::connect(&ca, "s-other/gw-9", "storegate-s-other-gw-9", port);
    other.publish("storegate/v1/s-other/gw-9/events", &vec![b' '; 300 * 1024]);
    other.expect("the broker closing an oversized publisher", |s| {
        matches!(s, Seen::Lost(_))
    });
    gateway.publish("storegate/v1/s-test/gw-1/status", b"{}");
    let reached = central.messages_until("storegate/v1/s-test/gw-1/status");
    assert!(
        reached.is_empty(),
        "the oversized packet reached central: {reached:?}"
    );
}
