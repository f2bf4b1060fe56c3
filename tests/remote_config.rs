//! Signed config layers pushed to a running gateway over a real broker, as store IT does it
//! (docs/protocol.md "Config layers"): a store layer and a gateway layer change the loyalty
//! rule without a restart and are reported on `…/config/state`; a replayed version, a layer
//! signed by an untrusted key, unknown and local-only keys are rejected and an invalid value is
//! rolled back, each with its reason and the running config untouched; after a restart with
//! no broker the box still runs with the layers it accepted.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test fails by panicking

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use base64::Engine;
use common::scenarios::wait_connected;
use common::*;
use rumqttc::QoS;
use serde_json::{json, Value};
use storegate::config::layers::{self, Layer, LayerName};

const STATE_TOPIC: &str = "storegate/v1/s-test/gw-1/config/state";
const STORE_TOPIC: &str = "storegate/v1/s-test/config";
const GATEWAY_TOPIC: &str = "storegate/v1/s-test/gw-1/config";

fn signed(private_key: &str, layer: LayerName, version: u64, body: Value) -> Vec<u8> {
    let layer = Layer {
        layer,
        version,
        issued_at: "2026-11-26T09:00:00Z".into(),
        body,
    };
    serde_json::to_vec(&layers::sign(private_key, "it-2026", &layer).unwrap()).unwrap()
}

/// A layer signed with a valid key whose body no signing tool would let through: only the
/// gateway's own check stands between it and the box.
fn hand_signed(private_key: &str, layer_json: Value) -> Vec<u8> {
    let b64 = base64::engine::general_purpose::STANDARD;
    let b64url = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let pair = ring::signature::Ed25519KeyPair::from_pkcs8_maybe_unchecked(
        &b64.decode(private_key).unwrap(),
    )
    .unwrap();
    let bytes = serde_json::to_vec(&layer_json).unwrap();
    serde_json::to_vec(&json!({
        "key_id": "it-2026",
        "payload": b64url.encode(&bytes),
        "sig": b64url.encode(pair.sign(&bytes).as_ref()),
    }))
    .unwrap()
}

/// The points a purchase of 10.00 by new customer `n` earns.
fn points_for_ten(api: SocketAddr, n: u32) -> i64 {
    let agent = http();
    let receipt = format!("r-{n}");
    let customer: Value = agent
        .post(&format!("http://{api}/v1/customers/identify"))
        .send_json(json!({ "till": "t1", "identifiers": [{ "kind": "card", "value": format!("60010000{n:04}") }] }))
        .unwrap()
        .body_mut()
        .read_json()
        .unwrap();
    let mut response = agent
        .post(&format!("http://{api}/v1/purchases"))
        .send_json(json!({
            "till": "t1", "receipt": receipt, "customer": customer["customer"],
            "lines": [{ "sku": "basket", "qty": 1, "unit_minor": 1000 }],
            "total_minor": 1000, "currency": "EUR",
        }))
        .unwrap();
    let sale: Value = response.body_mut().read_json().unwrap();
    assert_eq!(response.status().as_u16(), 201, "{sale}");
    sale["points"].as_i64().unwrap()
}

#[test]
fn signed_layers_apply_live_and_everything_else_is_refused_with_its_reason() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut broker = start_broker(BrokerKind::Embedded, dir.path(), port);
    let it = storegate::codes::coupon::generate_key().unwrap();
    let rogue = storegate::codes::coupon::generate_key().unwrap();
    let extra = format!(
        "[identity]\nhmac_key = \"c3RvcmVnYXRlLXRlc3QtaWRlbnRpdHkta2V5IQ==\"\nlookup_timeout_ms = 50\n[loyalty]\npoints_per_unit = 1\nunit_minor = 100\n[config]\ntrusted_keys = [\"{}\"]\n",
        it.public_key
    );
    let config = gateway_config(dir.path(), &format!("mqtt://127.0.0.1:{port}"), 0, &extra);
    let (gateway, api) = start_gateway(dir.path(), &config);
    wait_connected(&http(), api);
    let states = Subscription::start(port, STATE_TOPIC);
    let (publisher, _thread) = publisher(port);
    let push = |topic: &str, payload: Vec<u8>| {
        publisher
            .publish(topic, QoS::AtLeastOnce, true, payload)
            .unwrap();
    };
    let next_report = |status: &str| -> Value {
        states.next_matching(Duration::from_secs(10), |r| r["status"] == status)
    };
    assert_eq!(points_for_ten(api, 1), 10, "the file's rule");

    push(
        STORE_TOPIC,
        signed(
            &it.private_key,
            LayerName::Store,
            1,
            json!({ "loyalty": { "points_per_unit": 5 } }),
        ),
    );
    let applied = states.next_matching(Duration::from_secs(10), |r| r["applied"]["store"] == 1);
    assert_eq!(applied["status"], "ok", "{applied}");
    assert_eq!(points_for_ten(api, 2), 50, "applied without a restart");

    let refusals = [
        (
            signed(
                &it.private_key,
                LayerName::Store,
                1,
                json!({ "loyalty": { "points_per_unit": 9 } }),
            ),
            "replayed",
        ),
        (
            signed(
                &rogue.private_key,
                LayerName::Store,
                2,
                json!({ "loyalty": { "points_per_unit": 9 } }),
            ),
            "bad_signature",
        ),
        (
            signed(
                &it.private_key,
                LayerName::Store,
                3,
                json!({ "api": { "tokens": ["x"] } }),
            ),
            "unknown_key",
        ),
        (
            hand_signed(
                &it.private_key,
                json!({ "layer": "store", "version": 4, "issued_at": "2026-11-26T09:00:00Z",
                                                 "body": { "journal": { "path": "/tmp/elsewhere.db" } } }),
            ),
            "local_only_key",
        ),
        (
            signed(
                &it.private_key,
                LayerName::Gateway,
                5,
                json!({ "loyalty": { "points_per_unit": 9 } }),
            ),
            "layer_mismatch",
        ),
        (
            b"{\"key_id\":\"it\",\"payload\":\"e30\",\"sig\":\"AAAA\"}".to_vec(),
            "bad_signature",
        ),
    ];
    for (payload, reason) in refusals {
        push(STORE_TOPIC, payload);
        let report = next_report("rejected");
        assert!(
            report["error"].as_str().unwrap().starts_with(reason),
            "{reason}: {report}"
        );
        assert_eq!(report["applied"], json!({ "store": 1 }), "{report}");
    }
    push(
        STORE_TOPIC,
        signed(
            &it.private_key,
            LayerName::Store,
            6,
            json!({ "loyalty": { "unit_minor": 0 } }),
        ),
    );
    let rolled_back = next_report("rolled_back");
    assert!(
        rolled_back["error"]
            .as_str()
            .unwrap()
            .contains("unit_minor"),
        "{rolled_back}"
    );
    assert_eq!(
        points_for_ten(api, 3),
        50,
        "the running config is untouched"
    );

    push(
        GATEWAY_TOPIC,
        signed(
            &it.private_key,
            LayerName::Gateway,
            1,
            json!({ "loyalty": { "points_per_unit": 7 } }),
        ),
    );
    let both = states.next_matching(Duration::from_secs(10), |r| r["applied"]["gateway"] == 1);
    assert_eq!(
        (both["status"].as_str(), both["applied"]["store"].as_u64()),
        (Some("ok"), Some(1)),
        "{both}"
    );
    assert_eq!(
        points_for_ten(api, 4),
        70,
        "the gateway layer overrides the store's"
    );

    // A restart with no broker: the accepted layers come from the journal.
    drop(gateway);
    broker.kill9();
    let (_gateway, api) = start_gateway(dir.path(), &config);
    assert_eq!(
        points_for_ten(api, 5),
        70,
        "the layers outlive a restart offline"
    );
}

/// Store IT's commands end to end: `config keygen`, `config sign` on a TOML body, `config push`
/// through the broker (retained, on the store's topic); the running gateway applies it.
#[test]
fn config_sign_and_push_reach_a_running_gateway() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let _broker = start_broker(BrokerKind::Embedded, dir.path(), port);
    let run = |args: &[&str], stdin: Option<&[u8]>| -> std::process::Output {
        use std::io::Write;
        let mut child = std::process::Command::new(bin())
            .args(args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut input = child.stdin.take().unwrap();
        input.write_all(stdin.unwrap_or_default()).unwrap();
        drop(input);
        child.wait_with_output().unwrap()
    };
    let key: Value = serde_json::from_slice(&run(&["config", "keygen"], None).stdout).unwrap();
    let key_file = dir.path().join("it.key");
    std::fs::write(&key_file, key["private_key"].as_str().unwrap()).unwrap();
    let extra = format!(
        "[identity]\nhmac_key = \"c3RvcmVnYXRlLXRlc3QtaWRlbnRpdHkta2V5IQ==\"\nlookup_timeout_ms = 50\n[loyalty]\npoints_per_unit = 1\n[config]\ntrusted_keys = [\"{}\"]\n",
        key["public_key"].as_str().unwrap()
    );
    let config = gateway_config(dir.path(), &format!("mqtt://127.0.0.1:{port}"), 0, &extra);
    let (_gateway, api) = start_gateway(dir.path(), &config);
    wait_connected(&http(), api);
    let states = Subscription::start(port, STATE_TOPIC);

    let body = dir.path().join("store-layer.toml");
    std::fs::write(&body, "[loyalty]\npoints_per_unit = 3\n").unwrap();
    // Version 1 of `layer`, signed from the body file as it is now.
    let sign = |layer: &str| {
        run(
            &[
                "config",
                "sign",
                "--key",
                key_file.to_str().unwrap(),
                "--layer",
                layer,
                "--version",
                "1",
                body.to_str().unwrap(),
            ],
            None,
        )
    };
    let signed = sign("store");
    assert!(signed.status.success(), "{signed:?}");
    let config_path = config.to_str().unwrap();
    let push_store = |payload: &[u8]| {
        run(
            &[
                "config",
                "push",
                "--config",
                config_path,
                "--layer",
                "store",
                "--store",
                "s-test",
            ],
            Some(payload),
        )
    };
    // The wrong layer is refused before anything is sent.
    let wrong = run(
        &[
            "config",
            "push",
            "--config",
            config_path,
            "--layer",
            "fleet",
        ],
        Some(&signed.stdout),
    );
    assert_eq!(wrong.status.code(), Some(1), "{wrong:?}");
    let pushed = push_store(&signed.stdout);
    assert!(pushed.status.success(), "{pushed:?}");
    let answer: Value = serde_json::from_slice(&pushed.stdout).unwrap();
    assert_eq!(answer["pushed"]["topic"], STORE_TOPIC);

    let report = states.next_matching(Duration::from_secs(10), |r| r["applied"]["store"] == 1);
    assert_eq!(report["status"], "ok", "{report}");
    assert_eq!(points_for_ten(api, 1), 30);

    // The same push again (a retry, or the retained layer after a reconnect) changes nothing
    // and is not reported as a replay: the next report is the next layer's.
    let again = push_store(&signed.stdout);
    assert!(again.status.success(), "{again:?}");
    std::fs::write(&body, "[loyalty]\npoints_per_unit = 4\n").unwrap();
    let gateway_layer = sign("gateway");
    let pushed = run(
        &[
            "config",
            "push",
            "--config",
            config_path,
            "--layer",
            "gateway",
            "--store",
            "s-test",
            "--gateway",
            "gw-1",
        ],
        Some(&gateway_layer.stdout),
    );
    assert!(pushed.status.success(), "{pushed:?}");
    let next = states.next_matching(Duration::from_secs(10), |r| {
        r["status"] != "ok" || r["applied"]["gateway"] == 1
    });
    assert_eq!(
        next["status"], "ok",
        "the repeated push was reported: {next}"
    );
    assert_eq!(points_for_ten(api, 2), 40);

    // `config show` names the layer that set the key, and the file for the rest.
    let shown = run(&["config", "show", "--config", config_path], None);
    assert!(shown.status.success(), "{shown:?}");
    let shown: Value = serde_json::from_slice(&shown.stdout).unwrap();
    // Store and gateway layer both set it: the gateway's wins.
    assert_eq!(shown["config"]["loyalty"]["points_per_unit"], 4, "{shown}");
    assert_eq!(
        shown["origins"]["loyalty.points_per_unit"], "layer gateway v1",
        "{shown}"
    );
    assert!(
        shown["origins"]["journal.path"]
            .as_str()
            .unwrap()
            .starts_with("file "),
        "{shown}"
    );
}
