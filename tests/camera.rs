//! The kiosk camera in the loop: the real gateway reads recorded frames as a camera would (a
//! `dir:` source paced at a frame rate), decodes them, and publishes each code on the live event
//! stream once per presentation, interpreted like a scanner's.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test fails by panicking

mod common;

use std::path::Path;
use std::time::Duration;

use common::*;
use storegate::codes::coupon;
use storegate::devices::camera::corpus;

/// A coupon signed with `key`, as central issues them.
fn coupon_token(key: &coupon::NewKey, id: &str) -> String {
    let payload = serde_json::json!({"id": id, "kind": "percent", "value": 10, "offline": true});
    coupon::issue(&key.private_key, &payload).unwrap()
}

/// Writes frame `n` atomically, so the camera never reads half a file.
fn show(dir: &Path, n: usize, texts: &[&str]) {
    let tmp = dir.join(format!("{n:04}.tmp"));
    corpus::scene(texts, n as u64).save_png(&tmp).unwrap();
    std::fs::rename(&tmp, dir.join(format!("{n:04}.png"))).unwrap();
}

/// A kiosk camera reading `frames`, trusting coupons signed by `coupon_key`.
fn camera_config(dir: &Path, frames: &Path, coupon_key: &str) -> std::path::PathBuf {
    let extra = format!(
        "[coupons]\npublic_keys = [\"{coupon_key}\"]\n[[devices.cameras]]\nname = \"kiosk-cam\"\nsource = \"dir:{}\"\ntill = \"kiosk-1\"\nfps = 4\n",
        frames.display()
    );
    gateway_config(
        dir,
        &format!("mqtt://127.0.0.1:{}", free_port()),
        free_port(),
        &extra,
    )
}

#[test]
fn a_code_held_in_front_of_the_camera_is_reported_once_per_presentation() {
    let dir = tempfile::tempdir().unwrap();
    let frames = dir.path().join("frames");
    std::fs::create_dir(&frames).unwrap();
    let fleet_key = coupon::generate_key().unwrap();
    let (_gateway, api) = start_gateway(
        dir.path(),
        &camera_config(dir.path(), &frames, &fleet_key.public_key),
    );
    let live = LiveEvents::subscribe(api, "?till=kiosk-1");

    let coupon = coupon_token(&fleet_key, "c-kiosk-7");
    // Well formed, but signed by a key the store does not trust.
    let forged = coupon_token(&coupon::generate_key().unwrap(), "c-forged-1");
    let mut n = 0;
    let mut frame = |texts: &[&str]| {
        n += 1;
        show(&frames, n, texts);
    };
    // Held up for five frames, taken away for five, shown again for three; then a marker code
    // whose event says every frame before it was seen.
    for _ in 0..5 {
        frame(&[&coupon]);
    }
    for _ in 0..5 {
        frame(&[]);
    }
    for _ in 0..3 {
        frame(&[&coupon]);
    }
    for _ in 0..2 {
        frame(&[&forged]);
    }
    frame(&["END-OF-TEST-MARKER"]);

    let mut scans = Vec::new();
    let mut refused = Vec::new();
    loop {
        let (name, data) = live.next(Duration::from_secs(30));
        let text = data["text"].as_str().unwrap().to_string();
        match name.as_str() {
            "scan" => scans.push(data),
            "scan_refused" => refused.push(data),
            other => panic!("unexpected {other}: {data}"),
        }
        if text == "END-OF-TEST-MARKER" {
            break;
        }
    }
    let texts: Vec<&str> = scans.iter().map(|s| s["text"].as_str().unwrap()).collect();
    assert_eq!(
        texts,
        [coupon.as_str(), coupon.as_str(), "END-OF-TEST-MARKER"]
    );
    // The forged coupon is refused once (held for two frames), with the reason.
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert_eq!(refused[0]["text"], forged.as_str());
    assert!(
        refused[0]["refused"]
            .as_str()
            .unwrap()
            .contains("does not verify"),
        "{}",
        refused[0]
    );
    let first = &scans[0];
    assert_eq!(first["device"], "kiosk-cam");
    assert_eq!(first["till"], "kiosk-1");
    assert_eq!(first["symbology"], "qr");
    assert_eq!(first["interpretation"]["kind"], "coupon_token");
    assert_eq!(first["interpretation"]["payload"]["id"], "c-kiosk-7");
    assert_eq!(scans[2]["interpretation"]["kind"], "text");

    let agent = http();
    assert!(metric(&agent, api, "storegate_device_frames_total") >= 16.0);
}

#[test]
fn a_camera_that_disappears_is_reported_down_and_reopened() {
    let dir = tempfile::tempdir().unwrap();
    let frames = dir.path().join("frames");
    std::fs::create_dir(&frames).unwrap();
    let key = coupon::generate_key().unwrap();
    let (_gateway, api) = start_gateway(
        dir.path(),
        &camera_config(dir.path(), &frames, &key.public_key),
    );
    let agent = http();
    let wait_state = |state: &str| {
        wait_device(&agent, api, 0, Duration::from_secs(15), |d| {
            d["state"] == state
        })
    };
    let up = wait_state("up");
    assert_eq!(up["kind"], "camera");
    std::fs::remove_dir_all(&frames).unwrap();
    let down = wait_state("down");
    assert!(
        down["last_error"].as_str().unwrap().contains("frames"),
        "{down}"
    );
    std::fs::create_dir(&frames).unwrap();
    let back = wait_state("up");
    assert!(back["reconnects"].as_u64().unwrap() >= 1);
    // And it reads again.
    let live = LiveEvents::subscribe(api, "");
    show(&frames, 1, &["BACK-AGAIN"]);
    let (_, scan) = live.next(Duration::from_secs(30));
    assert_eq!(scan["text"], "BACK-AGAIN");
}

/// A kiosk configured for a camera that is not there (unplugged, wrong index) runs on, shows
/// the camera down with the reason, keeps trying, and `/healthz` says the devices are broken.
#[test]
fn a_missing_camera_is_reported_down_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let extra = "[[devices.cameras]]\nname = \"kiosk-cam\"\nsource = \"v4l:/dev/video99\"\ntill = \"kiosk-1\"\n";
    let config = gateway_config(
        dir.path(),
        &format!("mqtt://127.0.0.1:{}", free_port()),
        free_port(),
        extra,
    );
    let (_gateway, api) = start_gateway(dir.path(), &config);
    let agent = http();
    let camera = wait_device(&agent, api, 0, Duration::from_secs(15), |d| {
        d["state"] == "down" && d["reconnects"].as_u64() >= Some(1)
    });
    let error = camera["last_error"].as_str().unwrap();
    assert!(error.contains("/dev/video99"), "{error}");
    if cfg!(not(feature = "camera")) {
        assert!(error.contains("without the `camera` feature"), "{error}");
    }
    let health = health(&agent, api);
    assert_eq!(health["status"], "broken", "{health}");
    assert_eq!(health["broken"], serde_json::json!(["devices"]), "{health}");
    assert_eq!(health["devices"][0]["state"], "down", "{health}");
}
