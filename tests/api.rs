//! The local HTTP API of a real gateway process (no broker needed: intake never waits on it).

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test fails by panicking

mod common;

use std::net::SocketAddr;

use common::*;

fn gateway(extra: &str) -> (tempfile::TempDir, Proc, SocketAddr) {
    let dir = tempfile::tempdir().unwrap();
    let config = gateway_config(
        dir.path(),
        &format!("mqtt://127.0.0.1:{}", free_port()),
        0,
        extra,
    );
    let (proc, api) = start_gateway(dir.path(), &config);
    (dir, proc, api)
}

fn post_raw(
    agent: &ureq::Agent,
    api: SocketAddr,
    key: Option<&str>,
    body: &str,
) -> (u16, Option<String>, serde_json::Value) {
    let mut request = agent
        .post(&format!("http://{api}/v1/purchases"))
        .header("content-type", "application/json");
    if let Some(key) = key {
        request = request.header("Idempotency-Key", key);
    }
    let mut response = request.send(body).unwrap();
    let replayed = response
        .headers()
        .get("idempotent-replayed")
        .map(|v| v.to_str().unwrap().to_string());
    let status = response.status().as_u16();
    let text = response.body_mut().read_to_string().unwrap_or_default();
    (
        status,
        replayed,
        serde_json::from_str(&text).unwrap_or(serde_json::Value::Null),
    )
}

fn last_seq(agent: &ureq::Agent, api: SocketAddr) -> u64 {
    health(agent, api)["journal"]["last_seq"].as_u64().unwrap()
}

#[test]
fn a_retried_post_with_the_same_idempotency_key_records_once() {
    let (_dir, _gw, api) = gateway("");
    let agent = http();
    let body = purchase_body("r-1").to_string();
    let (s1, replay1, first) = post_raw(&agent, api, Some("key-1"), &body);
    let (s2, replay2, second) = post_raw(&agent, api, Some("key-1"), &body);
    assert_eq!((s1, s2), (201, 201));
    assert_eq!(first, second, "the retry gets the original seq and id");
    assert_eq!((replay1, replay2.as_deref()), (None, Some("true")));
    assert_eq!(last_seq(&agent, api), 1);

    let other = purchase_body("r-2").to_string();
    let (status, _, error) = post_raw(&agent, api, Some("key-1"), &other);
    assert_eq!(status, 422);
    assert_eq!(error["error"]["code"], "idempotency_key_reused");
    assert_eq!(
        last_seq(&agent, api),
        1,
        "a reused key with another body records nothing"
    );
}

#[test]
fn a_receipt_is_recorded_once_even_without_a_key() {
    let (_dir, _gw, api) = gateway("");
    let agent = http();
    let body = purchase_body("r-9").to_string();
    let (status, _, first) = post_raw(&agent, api, None, &body);
    assert_eq!(status, 201);
    let (status, _, error) = post_raw(&agent, api, None, &body);
    assert_eq!(status, 409);
    assert_eq!(error["error"]["code"], "duplicate_receipt");
    assert_eq!(
        error["error"]["seq"], first["seq"],
        "the answer names the event already recorded"
    );
    assert_eq!(last_seq(&agent, api), 1);
}

#[test]
fn malformed_bodies_are_refused_naming_the_field_and_record_nothing() {
    let (_dir, mut gw, api) = gateway("");
    let agent = http();
    let mut missing = purchase_body("r");
    missing.as_object_mut().unwrap().remove("currency");
    let mut wrong_type = purchase_body("r");
    wrong_type["lines"][0]["qty"] = serde_json::json!("two");
    let mut bad_value = purchase_body("r");
    bad_value["lines"][0]["qty"] = serde_json::json!(0);
    let mut unknown = purchase_body("r");
    unknown["discount"] = serde_json::json!(5);
    let mut no_till = purchase_body("r");
    no_till.as_object_mut().unwrap().remove("till");
    let cases: Vec<(String, u16, &str, Option<&str>)> = vec![
        ("{not json".into(), 400, "invalid_json", None),
        ("[]".into(), 400, "invalid_json", None),
        (missing.to_string(), 422, "invalid_field", Some("currency")),
        (
            wrong_type.to_string(),
            422,
            "invalid_field",
            Some("lines[0].qty"),
        ),
        (
            bad_value.to_string(),
            422,
            "invalid_field",
            Some("lines[0].qty"),
        ),
        (unknown.to_string(), 422, "invalid_field", Some("discount")),
        (no_till.to_string(), 422, "invalid_field", Some("till")),
    ];
    for (body, status, code, field) in cases {
        let (got, _, error) = post_raw(&agent, api, None, &body);
        assert_eq!(got, status, "{body}");
        assert_eq!(error["error"]["code"], code, "{body}");
        if let Some(field) = field {
            assert!(
                error["error"]["field"]
                    .as_str()
                    .unwrap_or("")
                    .contains(field),
                "{body} -> {error}"
            );
        }
    }
    let huge = format!(
        "{{\"till\":\"t1\",\"receipt\":\"{}\"}}",
        "x".repeat(200 * 1024)
    );
    let (got, _, error) = post_raw(&agent, api, None, &huge);
    assert_eq!(got, 413);
    assert_eq!(error["error"]["code"], "payload_too_large", "{error}");
    assert_eq!(last_seq(&agent, api), 0, "nothing was recorded");
    assert!(gw.is_running());
}

#[test]
fn configured_tokens_guard_every_v1_call() {
    let (_dir, _gw, api) = gateway("[api]\ntokens = [\"till-token-0123456789\"]\n");
    let agent = http();
    let (status, _, error) = post_raw(&agent, api, None, &purchase_body("r-1").to_string());
    assert_eq!(status, 401);
    assert_eq!(error["error"]["code"], "unauthorized");
    let mut response = agent
        .post(&format!("http://{api}/v1/purchases"))
        .header("Authorization", "Bearer till-token-0123456789")
        .send_json(purchase_body("r-1"))
        .unwrap();
    assert_eq!(response.status().as_u16(), 201);
    assert_eq!(
        response
            .body_mut()
            .read_json::<serde_json::Value>()
            .unwrap()["seq"],
        1
    );
    // Liveness stays open for monitoring, but says nothing of sales or backlog.
    let bare = health(&agent, api);
    assert_eq!(bare, serde_json::json!({ "status": "ok" }));
    let detail = health_with_token(&agent, api, "till-token-0123456789");
    assert_eq!(detail["journal"]["last_seq"], 1, "{detail}");
    let status = agent
        .get(&format!("http://{api}/metrics"))
        .call()
        .unwrap()
        .status()
        .as_u16();
    assert_eq!(status, 401, "metrics reveal sales volume: behind the token");
}

/// A till that re-encodes its JSON on retry (other key order, spacing) sent the same
/// purchase; it was refused as a different request (422).
#[test]
fn a_retry_whose_json_was_re_encoded_is_a_replay() {
    let (_dir, _gw, api) = gateway("");
    let agent = http();
    let body = purchase_body("r-1");
    let (first, _, _) = post_raw(&agent, api, Some("key-1"), &body.to_string());
    let pretty = serde_json::to_string_pretty(&body).unwrap();
    let mut reordered: Vec<(String, serde_json::Value)> = body
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    reordered.reverse();
    let reordered = format!(
        "{{{}}}",
        reordered
            .iter()
            .map(|(k, v)| format!("{:?} : {v}", k))
            .collect::<Vec<_>>()
            .join(" ,\n ")
    );
    assert_ne!(reordered, body.to_string());
    for retry in [pretty, reordered] {
        let (status, replayed, _) = post_raw(&agent, api, Some("key-1"), &retry);
        assert_eq!((first, status), (201, 201), "{retry}");
        assert_eq!(replayed.as_deref(), Some("true"));
    }
    assert_eq!(last_seq(&agent, api), 1);
}

/// A till bug sent a total that did not match its lines, and it was recorded as sent.
#[test]
fn a_total_that_is_not_the_lines_sum_is_refused_unless_adjusted() {
    let (_dir, _gw, api) = gateway("");
    let agent = http();
    let mut wrong = purchase_body("r-1");
    wrong["total_minor"] = serde_json::json!(1238);
    let (status, _, error) = post_raw(&agent, api, None, &wrong.to_string());
    assert_eq!(status, 422);
    assert_eq!(error["error"]["field"], "total_minor", "{error}");
    let mut discounted = purchase_body("r-1");
    discounted["total_minor"] = serde_json::json!(200);
    discounted["adjustment_minor"] = serde_json::json!(-38);
    let (status, _, answer) = post_raw(&agent, api, None, &discounted.to_string());
    assert_eq!(status, 201, "{answer}");
    assert_eq!(last_seq(&agent, api), 1);
}

/// 404/405/413 came back as plain text, unlike every other refusal.
#[test]
fn unknown_paths_and_wrong_methods_get_json_errors() {
    let (_dir, _gw, api) = gateway("");
    let agent = http();
    let mut missing = agent.get(&format!("http://{api}/v1/nope")).call().unwrap();
    assert_eq!(missing.status().as_u16(), 404);
    let body: serde_json::Value = missing.body_mut().read_json().unwrap();
    assert_eq!(body["error"]["code"], "not_found");
    let mut wrong = agent
        .get(&format!("http://{api}/v1/purchases"))
        .call()
        .unwrap();
    assert_eq!(wrong.status().as_u16(), 405);
    assert!(wrong.headers().get("allow").is_some());
    let body: serde_json::Value = wrong.body_mut().read_json().unwrap();
    assert_eq!(body["error"]["code"], "method_not_allowed");
}

#[test]
fn openapi_and_metrics_are_served() {
    let (_dir, _gw, api) = gateway("");
    let agent = http();
    post_purchase(&agent, api, "r-1").unwrap();
    let doc: serde_json::Value = agent
        .get(&format!("http://{api}/v1/openapi.json"))
        .call()
        .unwrap()
        .body_mut()
        .read_json()
        .unwrap();
    assert!(doc["paths"]["/v1/purchases"]["post"].is_object());
    assert_eq!(metric(&agent, api, "storegate_events_committed_total"), 1.0);
    assert_eq!(metric(&agent, api, "storegate_journal_last_seq"), 1.0);
}
