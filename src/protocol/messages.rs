//! Messages other than event bodies: batches, acks, status, rpc.

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// One journal event as it travels in a batch. `body` stays raw JSON from journal to central so
/// it is never re-encoded on the way.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WireEvent {
    pub seq: u64,
    pub id: String,
    pub kind: String,
    pub at: String,
    pub clock_synced: bool,
    pub till: String,
    pub body: Box<RawValue>,
}

impl WireEvent {
    /// What a receiver checks before an event may touch its state (docs/protocol.md "Event
    /// batch"): a known kind, a ULID id, an RFC 3339 `at`, a till id, an object body, and for
    /// a purchase the fields central applies (`receipt`, integer money). Unknown fields pass.
    pub fn check(&self) -> Result<(), String> {
        let kind = super::EventKind::from_wire(&self.kind)
            .ok_or_else(|| format!("unknown event kind {:?}", truncated(&self.kind)))?;
        if self.id.parse::<ulid::Ulid>().is_err() {
            return Err(format!("id {:?} is not a ULID", truncated(&self.id)));
        }
        if humantime::parse_rfc3339(&self.at).is_err() {
            return Err(format!(
                "at {:?} is not an RFC 3339 time",
                truncated(&self.at)
            ));
        }
        if !super::is_till_id(&self.till) {
            return Err(format!("till {:?} is not a till id", truncated(&self.till)));
        }
        let body: serde_json::Value =
            serde_json::from_str(self.body.get()).map_err(|e| format!("body: {e}"))?;
        let body = body.as_object().ok_or("body is not a JSON object")?;
        if kind == super::EventKind::Purchase {
            let receipt = body.get("receipt").and_then(|r| r.as_str());
            if receipt.is_none_or(|r| r.trim().is_empty()) {
                return Err("purchase without a receipt".into());
            }
            for field in ["total_minor"] {
                if !body.get(field).is_some_and(|v| v.is_i64()) {
                    return Err(format!("purchase {field} is not an integer"));
                }
            }
            if !body.get("currency").is_some_and(|v| v.is_string()) {
                return Err("purchase currency is not a string".into());
            }
        }
        Ok(())
    }

    /// A purchase's receipt id (unique per gateway), if this event is one.
    pub fn receipt(&self) -> Option<String> {
        if self.kind != super::EventKind::Purchase.as_str() {
            return None;
        }
        #[derive(Deserialize)]
        struct Receipt {
            receipt: String,
        }
        serde_json::from_str::<Receipt>(self.body.get())
            .ok()
            .map(|r| r.receipt)
    }
}

/// At most 64 characters of a refused value, for a log line.
fn truncated(value: &str) -> String {
    value.chars().take(64).collect()
}

/// `…/events`: a gateway's batch, in seq order.
#[derive(Debug, Serialize, Deserialize)]
pub struct EventBatch {
    pub gateway: String,
    pub store: String,
    pub sent_at: String,
    pub events: Vec<WireEvent>,
}

/// `…/ack`: central has durably stored every event with `seq <= upto_seq`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ack {
    pub upto_seq: u64,
}

/// `…/status` (retained) and its last will.
#[derive(Debug, Serialize, Deserialize)]
pub struct GatewayStatus {
    pub state: String,
    pub session: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backlog: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub config: Option<serde_json::Value>,
    /// Short codes of conditions an operator must act on (`ack_beyond_journal`, …).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub alarms: Vec<String>,
}

/// `…/rpc/req`.
#[derive(Debug, Serialize, Deserialize)]
pub struct RpcRequest {
    pub id: String,
    pub method: String,
    #[serde(default)]
    pub params: serde_json::Value,
    pub deadline: String,
}

/// `…/rpc/res`.
#[derive(Debug, Serialize, Deserialize)]
pub struct RpcResponse {
    pub id: String,
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<RpcError>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct RpcError {
    pub code: String,
    pub message: String,
}

/// `storegate/v1/central/status`.
#[derive(Debug, Serialize, Deserialize)]
pub struct CentralStatus {
    pub state: String,
}

/// `…/orders`: an order's status from central.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OrderStatus {
    pub order: String,
    pub status: OrderState,
    pub at: String,
    #[serde(default)]
    pub detail: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OrderState {
    Accepted,
    Rejected,
    Shipped,
    ReadyForPickup,
    Cancelled,
}

/// An identifier as it travels: a kind and the HMAC of the normalised value, never the value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identifier {
    pub kind: IdentifierKind,
    pub hash: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verified: Option<bool>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IdentifierKind {
    Card,
    Phone,
    Email,
    App,
}

/// `storegate/v1/identity`: merges and profile updates from central.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct IdentityChange {
    pub rev: u64,
    #[serde(default)]
    pub merges: Vec<Merge>,
    #[serde(default)]
    pub profiles: Vec<ProfileView>,
    #[serde(default)]
    pub erased: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Merge {
    pub from: String,
    pub to: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProfileView {
    #[serde(rename = "ref")]
    pub profile: String,
    #[serde(default)]
    pub identifiers: Vec<Identifier>,
    #[serde(default)]
    pub points: i64,
}

/// A signed config layer as published by IT (`…/config`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SignedLayer {
    pub key_id: String,
    pub payload: String,
    pub sig: String,
}
