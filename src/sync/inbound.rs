//! Inbound messages: every topic a gateway subscribes to is parsed and checked here, and a
//! message that breaks docs/protocol.md becomes a `Refusal` that is counted and ignored, never a
//! crash or a stuck loop.

use base64::Engine;

use crate::protocol::topics::{GatewayTopics, CONFIG_FLEET, IDENTITY};
use crate::protocol::{
    is_valid_seq, Ack, IdentityChange, OrderStatus, RpcResponse, SignedLayer, MAX_PAYLOAD_BYTES,
};

#[derive(Debug)]
pub(super) enum Inbound {
    Ack(Ack),
    RpcResponse(RpcResponse),
    Identity(IdentityChange),
    /// A signed config layer, by the topic it came on (checked further by `remote_config`).
    Layer {
        layer: crate::config::layers::LayerName,
        signed: SignedLayer,
    },
    /// A valid message for a part that applies it itself (orders).
    Accepted {
        family: &'static str,
    },
}

#[derive(Debug)]
pub(super) struct Refusal {
    pub family: &'static str,
    pub reason: &'static str,
    pub detail: String,
}

pub(super) fn parse(
    topics: &GatewayTopics,
    topic: &str,
    payload: &[u8],
    retain: bool,
) -> Result<Inbound, Refusal> {
    let family = family(topics, topic);
    let refuse = |reason: &'static str, detail: String| Refusal {
        family,
        reason,
        detail,
    };
    if payload.len() > MAX_PAYLOAD_BYTES {
        return Err(refuse("oversized", format!("{} bytes", payload.len())));
    }
    // docs/protocol.md marks only config layers retained (among what a gateway reads): anything
    // else the broker kept was left there by someone else and would come back every connect.
    if retain && family != "config" {
        return Err(refuse("retained_not_allowed", topic.to_string()));
    }
    match family {
        "ack" => {
            let ack: Ack = decode(payload).map_err(|d| refuse("invalid_message", d))?;
            if !is_valid_seq(ack.upto_seq) {
                return Err(refuse(
                    "invalid_message",
                    format!("upto_seq {} is outside 1 .. 2^53-1", ack.upto_seq),
                ));
            }
            Ok(Inbound::Ack(ack))
        }
        "rpc_res" => {
            let response: RpcResponse =
                decode(payload).map_err(|d| refuse("invalid_message", d))?;
            if response.id.is_empty() {
                return Err(refuse("invalid_message", "empty id".into()));
            }
            Ok(Inbound::RpcResponse(response))
        }
        "orders" => {
            let status: OrderStatus = decode(payload).map_err(|d| refuse("invalid_message", d))?;
            if status.order.parse::<ulid::Ulid>().is_err() {
                return Err(refuse("invalid_message", "order is not a ULID".into()));
            }
            if humantime::parse_rfc3339(&status.at).is_err() {
                return Err(refuse(
                    "invalid_message",
                    "at is not an RFC 3339 time".into(),
                ));
            }
            Ok(Inbound::Accepted { family })
        }
        "identity" => {
            let change: IdentityChange =
                decode(payload).map_err(|d| refuse("invalid_message", d))?;
            change
                .check()
                .map_err(|detail| refuse("invalid_message", detail))?;
            Ok(Inbound::Identity(change))
        }
        "config" => {
            let layer_message: SignedLayer =
                decode(payload).map_err(|d| refuse("invalid_message", d))?;
            let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
            if b64.decode(&layer_message.payload).is_err()
                || b64.decode(&layer_message.sig).is_err()
            {
                return Err(refuse(
                    "invalid_message",
                    "payload or sig is not base64url".into(),
                ));
            }
            use crate::config::layers::LayerName;
            let layer = if topic == CONFIG_FLEET {
                LayerName::Fleet
            } else if topic == topics.config_store() {
                LayerName::Store
            } else {
                LayerName::Gateway
            };
            Ok(Inbound::Layer {
                layer,
                signed: layer_message,
            })
        }
        _ => Err(refuse("unexpected_topic", topic.to_string())),
    }
}

fn family(topics: &GatewayTopics, topic: &str) -> &'static str {
    if topic == topics.ack() {
        "ack"
    } else if topic == topics.rpc_res() {
        "rpc_res"
    } else if topic == topics.orders() {
        "orders"
    } else if topic == IDENTITY {
        "identity"
    } else if topic == CONFIG_FLEET
        || topic == topics.config_store()
        || topic == topics.config_gateway()
    {
        "config"
    } else {
        "unknown"
    }
}

fn decode<T: serde::de::DeserializeOwned>(payload: &[u8]) -> Result<T, String> {
    serde_json::from_slice(payload).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_on_each_topic_is_refused_with_its_family() {
        let t = GatewayTopics::new("s1", "g1");
        for topic in t.inbound() {
            for payload in [
                &b"\xff\xfe"[..],
                b"{}",
                b"[]",
                b"{\"upto_seq\":-1}",
                b"{\"upto_seq\":0}",
                b"{\"upto_seq\":18446744073709551615}",
                b"{\"upto_seq\":9007199254740992}",
                b"null",
            ] {
                let refusal = parse(&t, &topic, payload, false).unwrap_err();
                assert_ne!(refusal.family, "unknown", "{topic}");
            }
        }
        let big = vec![b' '; MAX_PAYLOAD_BYTES + 1];
        assert_eq!(
            parse(&t, &t.ack(), &big, false).unwrap_err().reason,
            "oversized"
        );
    }

    #[test]
    fn a_retained_message_is_refused_where_the_protocol_does_not_retain() {
        let t = GatewayTopics::new("s1", "g1");
        let refusal = parse(&t, &t.ack(), br#"{"upto_seq":7}"#, true).unwrap_err();
        assert_eq!(refusal.reason, "retained_not_allowed");
        let layer = br#"{"key_id":"k","payload":"e30","sig":"AAAA"}"#;
        assert!(parse(&t, CONFIG_FLEET, layer, true).is_ok());
    }

    #[test]
    fn valid_ack_and_identity_pass() {
        let t = GatewayTopics::new("s1", "g1");
        assert!(matches!(
            parse(&t, &t.ack(), br#"{"upto_seq":7,"extra":1}"#, false),
            Ok(Inbound::Ack(Ack { upto_seq: 7 }))
        ));
        let change = br#"{"rev":1,"merges":[{"from":"prov:g1:01JD0000000000000000000000","to":"p:abc"}],"profiles":[]}"#;
        assert!(parse(&t, IDENTITY, change, false).is_ok());
    }
}
