//! The command line as store IT meets it.

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
