//! The command line as store IT meets it.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test fails by panicking

mod common;

use std::process::Command;

use common::bin;

#[test]
fn every_command_has_help() {
    for args in [
        vec!["--help"],
        vec!["run", "--help"],
        vec!["central", "--help"],
        vec!["demo", "--help"],
        vec!["broker", "--help"],
        vec!["status", "--help"],
        vec!["decode", "--help"],
        vec!["scan-image", "--help"],
        vec!["coupon", "--help"],
        vec!["coupon", "issue", "--help"],
        vec!["config", "acl", "--help"],
        vec!["config", "sign", "--help"],
        vec!["config", "push", "--help"],
        vec!["config", "show", "--help"],
    ] {
        let out = Command::new(bin()).args(&args).output().unwrap();
        assert!(out.status.success(), "{args:?}");
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("Usage"),
            "{args:?}"
        );
    }
}

#[test]
fn a_bad_config_exits_non_zero_naming_the_key_and_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("bad.toml");
    std::fs::write(
        &config,
        "[gateway]\nstore = \"s1\"\nid = \"g1\"\n[mqtt]\nurl = \"mqtt://broker.example:1883\"\n[journal]\npath = \"j.db\"\n",
    )
    .unwrap();
    let out = Command::new(bin())
        .args(["run", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("mqtt.url") && stderr.contains("mqtts://"),
        "{stderr}"
    );
    assert!(out.stdout.is_empty(), "no ready line, nothing opened");

    let out = Command::new(bin())
        .args(["run", "--config", "/no/such/file.toml"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("/no/such/file.toml"));
}

#[test]
fn environment_overrides_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("gw.toml");
    std::fs::write(
        &config,
        format!(
            "[gateway]\nstore = \"s1\"\nid = \"g1\"\n[mqtt]\nurl = \"mqtt://127.0.0.1:1\"\n[journal]\npath = \"{}\"\n",
            dir.path().join("j.db").display()
        ),
    )
    .unwrap();
    let out = Command::new(bin())
        .args(["run", "--config"])
        .arg(&config)
        .env("STOREGATE_GATEWAY_ID", "Not Valid")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("gateway.id"));
}

#[test]
fn demo_runs_the_whole_path_and_exits_once_purchases_are_acked() {
    let dir = tempfile::tempdir().unwrap();
    let mut demo = common::Proc::spawn(
        "demo",
        bin(),
        &["demo", "--purchases", "25", "--rate", "100"],
        dir.path(),
    );
    let line = demo.json_line("demo", std::time::Duration::from_secs(60));
    assert_eq!(line["purchases"], 25);
    assert!(line["acked_upto"].as_u64().unwrap() >= 25);
    assert_eq!(
        demo.wait_exit(std::time::Duration::from_secs(15)),
        Some(0),
        "{}",
        demo.log_text()
    );
    assert!(demo.log_text().contains("central acked"));
}

#[test]
fn status_prints_the_running_gateways_health_as_json() {
    let dir = tempfile::tempdir().unwrap();
    let config = common::gateway_config(
        dir.path(),
        &format!("mqtt://127.0.0.1:{}", common::free_port()),
        0,
        "",
    );
    let (_gateway, api) = common::start_gateway(dir.path(), &config);
    common::post_purchase(&common::http(), api, "r-1").unwrap();
    let out = Command::new(bin())
        .args(["status", "--api", &api.to_string()])
        .output()
        .unwrap();
    assert!(out.status.success());
    let health: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(health["journal"]["last_seq"], 1);
    assert_eq!(health["journal"]["backlog"], 1);

    let out = Command::new(bin())
        .args(["status", "--api", "127.0.0.1:1"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("is `storegate run` up?"));
}

#[test]
fn decode_prints_what_scanned_data_means_and_refuses_broken_data() {
    let out = Command::new(bin())
        .args([
            "decode",
            "https://id.gs1.org/01/09506000134352/10/LOT%2042?17=261231",
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["kind"], "gs1_digital_link");
    assert_eq!(json["gtin"], "09506000134352");
    assert_eq!(
        json["elements"],
        serde_json::json!([
            { "ai": "01", "value": "09506000134352" },
            { "ai": "10", "value": "LOT 42" },
            { "ai": "17", "value": "261231" }
        ])
    );

    // A wrong GTIN check digit: exit 1, the reason as JSON on stdout.
    let out = Command::new(bin())
        .args(["decode", "https://id.gs1.org/01/09506000134353"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["error"]["code"], "invalid_code");
    assert!(json["error"]["message"]
        .as_str()
        .unwrap()
        .contains("check digit"));
}

#[test]
fn scan_image_decodes_each_file_as_one_json_line() {
    let dir = tempfile::tempdir().unwrap();
    let two = dir.path().join("two.png");
    storegate::devices::camera::corpus::scene(&["SGA1.app-token-0001", "hello kiosk"], 5)
        .save_png(&two)
        .unwrap();
    let none = dir.path().join("none.png");
    storegate::devices::camera::corpus::scene(&[], 6)
        .save_png(&none)
        .unwrap();
    let out = Command::new(bin())
        .arg("scan-image")
        .args([&two, &none])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    let mut texts: Vec<&str> = lines[0]["codes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["text"].as_str().unwrap())
        .collect();
    texts.sort();
    assert_eq!(texts, ["SGA1.app-token-0001", "hello kiosk"]);
    let app = lines[0]["codes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["text"] == "SGA1.app-token-0001")
        .unwrap();
    assert_eq!(app["interpretation"]["kind"], "app_identity");
    assert_eq!(lines[1]["codes"], serde_json::json!([]));

    // A file that is no image: its line says why, and the exit code says something failed.
    let junk = dir.path().join("junk.png");
    std::fs::write(&junk, b"not a png").unwrap();
    let out = Command::new(bin())
        .arg("scan-image")
        .arg(&junk)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let line: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(line["error"].as_str().is_some(), "{line}");
}

/// What marketing's tooling does: make a key, issue a coupon, and what a store checks.
#[test]
fn coupon_keygen_issue_and_verify_round_trip_and_refuse_a_forgery() {
    let json = |out: &std::process::Output| -> serde_json::Value {
        serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)))
    };
    let keygen = || {
        let out = Command::new(bin())
            .args(["coupon", "keygen"])
            .output()
            .unwrap();
        assert!(out.status.success());
        json(&out)
    };
    let (fleet, other) = (keygen(), keygen());
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("coupon.key");
    std::fs::write(&key_file, fleet["private_key"].as_str().unwrap()).unwrap();
    let payload = r#"{"id":"c-cli-1","kind":"amount","value":500,"offline":false}"#;
    let out = Command::new(bin())
        .args(["coupon", "issue", "--key"])
        .arg(&key_file)
        .arg(payload)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = json(&out)["token"].as_str().unwrap().to_string();
    assert!(token.starts_with("SGC1."));

    let verify = |public_key: &str, token: &str| {
        Command::new(bin())
            .args(["coupon", "verify", "--public-key", public_key, token])
            .output()
            .unwrap()
    };
    // `decode` shows the payload but says it has not checked the signature.
    let out = Command::new(bin())
        .args(["decode", &token])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(json(&out)["kind"], "coupon_token");
    assert!(json(&out)["signature"]
        .as_str()
        .unwrap()
        .starts_with("not checked"));

    let out = verify(fleet["public_key"].as_str().unwrap(), &token);
    assert!(out.status.success());
    assert_eq!(json(&out)["payload"]["id"], "c-cli-1");
    assert_eq!(json(&out)["payload"]["value"], 500);

    let out = verify(other["public_key"].as_str().unwrap(), &token);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(json(&out)["error"]["code"], "invalid_coupon");

    // A payload the protocol does not allow is not signed at all.
    let out = Command::new(bin())
        .args(["coupon", "issue", "--key"])
        .arg(&key_file)
        .arg(r#"{"id":"c-2","kind":"free","value":1}"#)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(json(&out)["error"]["message"]
        .as_str()
        .unwrap()
        .contains("kind"));
}

/// `storegate status` only knew `--api`; a box with tokens showed nothing useful.
#[test]
fn status_reads_the_address_and_token_from_the_config_or_takes_a_url() {
    let dir = tempfile::tempdir().unwrap();
    let port = common::free_port();
    let config = common::gateway_config(
        dir.path(),
        &format!("mqtt://127.0.0.1:{}", common::free_port()),
        port,
        "[api]\ntokens = [\"status-token-0123456789\"]\n",
    );
    let (_gateway, _api) = common::start_gateway(dir.path(), &config);
    let out = Command::new(bin())
        .args(["status", "--config", &config.display().to_string()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let health: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        health["journal"]["last_seq"], 0,
        "the token showed the detail: {health}"
    );
    let out = Command::new(bin())
        .args([
            "status",
            "--url",
            &format!("http://127.0.0.1:{port}/healthz"),
        ])
        .output()
        .unwrap();
    let bare: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        bare,
        serde_json::json!({"status": "ok"}),
        "no token, no detail"
    );
}

/// `storegate broker` printed ready on a port another process held and ran with no listener.
#[test]
fn broker_on_a_port_that_is_taken_fails_naming_it() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let out = Command::new(bin())
        .args(["broker", "--listen", &addr])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty(), "it printed ready");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(&addr), "{stderr}");
}

/// A bare digit string whose check digit fits nothing was plain text; `--strict` refuses it.
#[test]
fn decode_flags_a_probable_misread_and_strict_refuses_it() {
    let out = Command::new(bin())
        .args(["decode", "4006381333932"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["probable_misread"], true, "{json}");
    let out = Command::new(bin())
        .args(["decode", "--strict", "4006381333932"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["error"]["code"], "probable_misread");
    let out = Command::new(bin())
        .args(["decode", "04252614"])
        .output()
        .unwrap();
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["symbology"], "upc_e", "{json}");
}

/// Errors that already name their cause printed it twice ("journal …: unable to open
/// database file: unable to open database file").
#[test]
fn an_error_prints_its_cause_once() {
    let dir = tempfile::tempdir().unwrap();
    let config = common::gateway_config(
        dir.path(),
        &format!("mqtt://127.0.0.1:{}", common::free_port()),
        0,
        "",
    );
    // A directory where the journal file should be.
    std::fs::create_dir(dir.path().join("journal.db")).unwrap();
    let out = Command::new(bin())
        .args(["run", "--config", &config.display().to_string()])
        .env("STOREGATE_LOG", "off")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert_eq!(
        stderr.matches("unable to open database file").count(),
        1,
        "{stderr}"
    );
}

/// A campaign's coupon as a QR image: what `coupon issue --png` writes is read back, token for
/// token, by the kiosk camera's decoder (`scan-image`).
#[test]
fn coupon_issue_writes_a_qr_png_that_scans_back_to_the_token() {
    let dir = tempfile::tempdir().unwrap();
    let keygen = Command::new(bin())
        .args(["coupon", "keygen"])
        .output()
        .unwrap();
    let key: serde_json::Value = serde_json::from_slice(&keygen.stdout).unwrap();
    let key_file = dir.path().join("coupon.key");
    std::fs::write(&key_file, key["private_key"].as_str().unwrap()).unwrap();
    let png = dir.path().join("coupon.png");
    let payload = r#"{"id":"c-print-1","campaign":"spring","kind":"percent","value":10,"min_basket_minor":0,"valid_from":"2026-01-01T00:00:00.000Z","valid_to":"2027-01-01T00:00:00.000Z","uses":1,"customer":null,"offline":true,"stores":null}"#;
    let out = Command::new(bin())
        .args(["coupon", "issue", "--key"])
        .arg(&key_file)
        .arg("--png")
        .arg(&png)
        .arg(payload)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let issued: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let token = issued["token"].as_str().unwrap();
    let out = Command::new(bin())
        .arg("scan-image")
        .arg(&png)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let scanned: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(scanned["codes"][0]["text"], token, "{scanned}");
}

/// `storegate config keygen` and `config sign`: the printed payload verifies with the public
/// key and carries the body as given; a body that sets a local-only section is refused.
#[test]
fn config_sign_prints_a_layer_that_verifies_and_refuses_local_only_keys() {
    let dir = tempfile::tempdir().unwrap();
    let keygen = Command::new(bin())
        .args(["config", "keygen"])
        .output()
        .unwrap();
    assert!(keygen.status.success());
    let key: serde_json::Value = serde_json::from_slice(&keygen.stdout).unwrap();
    let private = dir.path().join("it.key");
    std::fs::write(&private, key["private_key"].as_str().unwrap()).unwrap();
    let body = dir.path().join("body.toml");
    std::fs::write(&body, "[coupons]\noffline_budget_hour_minor = 2000\n").unwrap();
    let sign = |body: &std::path::Path| {
        Command::new(bin())
            .args([
                "config",
                "sign",
                "--key",
                private.to_str().unwrap(),
                "--layer",
                "store",
                "--version",
                "8",
            ])
            .arg(body)
            .output()
            .unwrap()
    };
    let signed = sign(&body);
    assert!(signed.status.success(), "{signed:?}");
    let signed: storegate::protocol::SignedLayer = serde_json::from_slice(&signed.stdout).unwrap();
    let public = storegate::codes::coupon::PublicKey::try_from(
        key["public_key"].as_str().unwrap().to_string(),
    )
    .unwrap();
    let layer = storegate::config::layers::verify(&signed, &[public]).unwrap();
    assert_eq!(
        (layer.layer, layer.version),
        (storegate::config::layers::LayerName::Store, 8)
    );
    assert_eq!(layer.body["coupons"]["offline_budget_hour_minor"], 2000);

    std::fs::write(&body, "[gateway]\nid = \"gw-9\"\n").unwrap();
    let refused = sign(&body);
    assert_eq!(refused.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("local_only_key"),
        "{refused:?}"
    );
}
