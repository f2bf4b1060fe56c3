//! Messages other than event bodies: batches, acks, status, rpc.

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// One journal event as it travels in a batch. `body` stays raw JSON from journal to central so
/// it is never re-encoded on the way.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WireEvent {
    /// Per-gateway position, 1 … 2^53 − 1, assigned at commit, never reused.
    pub seq: u64,
    /// ULID, globally unique; central dedups on it as well as on `seq`.
    pub id: String,
    /// `purchase`, `coupon_redeemed`, `identity_seen` or `order_placed`.
    pub kind: String,
    /// The gateway's wall clock at commit (RFC 3339, ms); order is `seq`, never this.
    pub at: String,
    /// Whether the system clock was synchronised when `at` was taken.
    pub clock_synced: bool,
    /// The till (or kiosk, or device's till) the event came from.
    pub till: String,
    /// The kind's body, as committed.
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
        // JSON allows it; PostgreSQL's jsonb and text do not, and an event central cannot
        // index would fail every batch it came in.
        if self.body.get().contains("\\u0000") {
            return Err("body holds a NUL character (\\u0000)".into());
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

    /// The customer ref a purchase, identification or coupon redemption names, if any: what
    /// central files the event under for the customer's timeline, erasure and reports.
    pub fn customer(&self) -> Option<String> {
        use super::EventKind::{CouponRedeemed, IdentitySeen, Purchase};
        if ![Purchase, IdentitySeen, CouponRedeemed]
            .iter()
            .any(|k| self.kind == k.as_str())
        {
            return None;
        }
        #[derive(Deserialize)]
        struct Customer {
            customer: Option<String>,
        }
        serde_json::from_str::<Customer>(self.body.get())
            .ok()
            .and_then(|c| c.customer)
    }
}

/// At most 64 characters of a refused value, for a log line.
fn truncated(value: &str) -> String {
    value.chars().take(64).collect()
}

/// `…/events`: a gateway's batch, in seq order.
#[derive(Debug, Serialize, Deserialize)]
pub struct EventBatch {
    /// The sending gateway's id (must match the topic).
    pub gateway: String,
    /// The sending gateway's store (must match the topic).
    pub store: String,
    /// When the batch was sent, by the gateway's clock.
    pub sent_at: String,
    /// Events in strictly increasing `seq` order.
    pub events: Vec<WireEvent>,
}

/// `…/ack`: central has durably stored every event with `seq <= upto_seq`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ack {
    /// The end of the gap-free prefix central has stored for this gateway.
    pub upto_seq: u64,
}

/// `…/status` (retained) and its last will.
#[derive(Debug, Serialize, Deserialize)]
pub struct GatewayStatus {
    /// `online` or `offline`.
    pub state: String,
    /// Increases on every connect, so a late will of an older session is recognised.
    pub session: u64,
    /// The storegate version.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Events committed but not yet acked.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backlog: Option<u64>,
    /// Applied config layer versions.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub config: Option<serde_json::Value>,
    /// Short codes of conditions an operator must act on (`ack_beyond_journal`, …).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub alarms: Vec<String>,
}

/// `…/rpc/req`.
#[derive(Debug, Serialize, Deserialize)]
pub struct RpcRequest {
    /// ULID; the response carries the same.
    pub id: String,
    /// `coupon.reserve`, `identity.since`, `profile.lookup`.
    pub method: String,
    /// The method's parameters.
    #[serde(default)]
    pub params: serde_json::Value,
    /// After this the gateway treats central as unreachable for the call.
    pub deadline: String,
}

/// `…/rpc/res`.
#[derive(Debug, Serialize, Deserialize)]
pub struct RpcResponse {
    /// The request's id.
    pub id: String,
    /// Whether `result` (true) or `error` (false) is set.
    pub ok: bool,
    /// The method's answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<serde_json::Value>,
    /// Why central refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<RpcError>,
}

/// A refusal's machine code and human message.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct RpcError {
    /// Machine-readable, e.g. `already_redeemed`.
    pub code: String,
    /// For people.
    pub message: String,
}

/// `storegate/v1/central/status`.
#[derive(Debug, Serialize, Deserialize)]
pub struct CentralStatus {
    /// `online` or `offline`.
    pub state: String,
}

/// `…/orders`: an order's status from central.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OrderStatus {
    /// The order's ULID.
    pub order: String,
    /// Where the order stands.
    pub status: OrderState,
    /// When central set this status; the latest `at` wins.
    pub at: String,
    /// Free text for the cashier.
    #[serde(default)]
    pub detail: Option<String>,
}

/// An order's status as central reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OrderState {
    /// Central took the order.
    Accepted,
    /// Central refused the order.
    Rejected,
    /// Sent to the customer.
    Shipped,
    /// Waiting in the store for pickup.
    ReadyForPickup,
    /// Called off.
    Cancelled,
}

/// An identifier as it travels: a kind and the HMAC of the normalised value, never the value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identifier {
    /// What kind of identifier it is.
    pub kind: IdentifierKind,
    /// Hex HMAC-SHA256 of the normalised value under the fleet key.
    pub hash: String,
    /// For phones and emails: whether the customer proved they own it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verified: Option<bool>,
}

impl Identifier {
    /// Whether `hash` is what docs/protocol.md says it is: 64 lower-case hex digits.
    pub fn has_valid_hash(&self) -> bool {
        self.hash.len() == 64
            && self
                .hash
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    }

    /// Whether it may decide which profile an identification belongs to (docs/protocol.md
    /// "Identity"): cards, app tokens, verified phones and emails. An unverified one is
    /// recorded beside them and decides nothing, so a phone typed at a shared kiosk never glues
    /// two people together.
    pub fn is_mergeable(&self) -> bool {
        match self.kind {
            IdentifierKind::Card | IdentifierKind::App => true,
            IdentifierKind::Phone | IdentifierKind::Email => self.verified == Some(true),
        }
    }
}

impl IdentifierKind {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            IdentifierKind::Card => "card",
            IdentifierKind::Phone => "phone",
            IdentifierKind::Email => "email",
            IdentifierKind::App => "app",
        }
    }
}

/// The kinds of customer identifier.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IdentifierKind {
    /// A loyalty card number.
    Card,
    /// A phone number (E.164).
    Phone,
    /// An email address.
    Email,
    /// The customer app's identity token.
    App,
}

/// `storegate/v1/identity`: merges and profile updates from central.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct IdentityChange {
    /// Fleet-wide change number, up by 1 per change.
    pub rev: u64,
    /// Refs merged into others.
    #[serde(default)]
    pub merges: Vec<Merge>,
    /// Current views of affected profiles.
    #[serde(default)]
    pub profiles: Vec<ProfileView>,
    /// Profiles erased (right to erasure): every cached detail goes.
    #[serde(default)]
    pub erased: Vec<String>,
}

impl IdentityChange {
    /// docs/protocol.md's rules for a change: a rev in range, well-formed refs and hashes.
    pub fn check(&self) -> Result<(), String> {
        if !super::is_valid_seq(self.rev) {
            return Err(format!("rev {} is outside 1 .. 2^53-1", self.rev));
        }
        let refs = self
            .merges
            .iter()
            .flat_map(|m| [&m.from, &m.to])
            .chain(self.profiles.iter().map(|p| &p.profile))
            .chain(self.erased.iter());
        for profile in refs {
            super::check_profile_ref("ref", profile).map_err(|e| e.to_string())?;
        }
        if let Some(bad) = self
            .profiles
            .iter()
            .flat_map(|p| &p.identifiers)
            .find(|i| !i.has_valid_hash())
        {
            return Err(format!(
                "identifier hash {:?} is not 64 hex digits",
                bad.hash
            ));
        }
        Ok(())
    }
}

/// One ref merged into another: `from` now resolves to `to`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Merge {
    /// The ref that stops being a root.
    pub from: String,
    /// The ref it now resolves to.
    pub to: String,
}

/// A profile as central shares it with gateways.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProfileView {
    /// The profile's ref (`p:…`).
    #[serde(rename = "ref")]
    pub profile: String,
    /// Its identifiers.
    #[serde(default)]
    pub identifiers: Vec<Identifier>,
    /// Its loyalty points balance at central.
    #[serde(default)]
    pub points: i64,
}

/// A signed config layer as published by IT (`…/config`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SignedLayer {
    /// Names the trusted key that signed it.
    pub key_id: String,
    /// Base64url of the layer JSON, signed as bytes.
    pub payload: String,
    /// Base64url Ed25519 signature over `payload`'s bytes.
    pub sig: String,
}
