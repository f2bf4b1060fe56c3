//! Coupon redemption at the till (docs/protocol.md "Coupons"): a token is checked offline
//! (signature, validity window, basket, customer, store), then reserved at central when
//! central answers in time, or else accepted under the offline policy: the token allows it,
//! this box never redeemed it, and the offline discount budget of the last hour and day is not
//! spent. Every accepted redemption is one journalled `coupon_redeemed` event, committed
//! together with the coupon's use (`journal::CouponUse`); a refusal journals nothing.
//!
//! A retried request (same coupon, same receipt) is answered with the first answer.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::watch;

use crate::clock::Clock;
use crate::codes::coupon::Refusal as TokenRefusal;
use crate::identity::alias::Aliases;
use crate::journal::{AppendError, AsyncOutbox, CouponUse, Journal, JournalError, NewEvent};
use crate::protocol::{CouponRedeemed, EventKind, FieldError};
use crate::sync::{RpcCallError, RpcClient};

/// Why a coupon was not accepted: each has its own code for the till.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The token is not a well-formed coupon (truncated, altered encoding, missing fields).
    #[error("{0}")]
    Malformed(String),
    /// No coupon key is configured.
    #[error("{0}")]
    UnknownKey(String),
    /// The signature verifies with no configured key.
    #[error("{0}")]
    BadSignature(String),
    /// `valid_to` has passed.
    #[error("the coupon expired at {0}")]
    Expired(String),
    /// `valid_from` has not come yet.
    #[error("the coupon is valid from {0}")]
    NotYetValid(String),
    /// `stores` does not list this store.
    #[error("the coupon is not valid in store {0}")]
    WrongStore(String),
    /// The coupon is personal, for another customer (or none was identified).
    #[error("the coupon belongs to another customer")]
    WrongCustomer,
    /// The basket is below `min_basket_minor`.
    #[error("the basket must be at least {0} (minor units)")]
    BasketTooSmall(i64),
    /// Used up: at this box, or (online) anywhere.
    #[error("the coupon was already redeemed")]
    AlreadyRedeemed,
    /// Central cannot be asked and the token does not allow offline use.
    #[error("central cannot be reached and this coupon needs it")]
    OfflineNotAllowed,
    /// Central cannot be asked and the offline discount budget is spent.
    #[error("central cannot be reached and the offline discount budget ({0}) is spent")]
    OfflineBudgetSpent(&'static str),
    /// A field of the request is wrong.
    #[error(transparent)]
    Field(FieldError),
    /// Central refused the reservation for another reason.
    #[error("central refused: {0}")]
    CentralRefused(String),
    /// The journal could not record it.
    #[error(transparent)]
    Journal(AppendError),
}

impl Refusal {
    /// The machine code the API answers with.
    pub fn code(&self) -> &'static str {
        match self {
            Refusal::Malformed(_) => "malformed",
            Refusal::UnknownKey(_) => "unknown_key",
            Refusal::BadSignature(_) => "bad_signature",
            Refusal::Expired(_) => "expired",
            Refusal::NotYetValid(_) => "not_yet_valid",
            Refusal::WrongStore(_) => "wrong_store",
            Refusal::WrongCustomer => "wrong_customer",
            Refusal::BasketTooSmall(_) => "basket_too_small",
            Refusal::AlreadyRedeemed => "already_redeemed",
            Refusal::OfflineNotAllowed => "offline_not_allowed",
            Refusal::OfflineBudgetSpent(_) => "offline_budget_spent",
            Refusal::Field(_) => "invalid_field",
            Refusal::CentralRefused(_) => "central_refused",
            Refusal::Journal(_) => "journal_unavailable",
        }
    }
}

/// A till's request to redeem a coupon (`POST /v1/coupons/redeem`).
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedeemRequest {
    /// The till asking.
    pub till: String,
    /// The scanned token (`SGC1.…`).
    pub token: String,
    /// The identified customer's profile ref, if any.
    pub customer: Option<String>,
    /// The sale's receipt id.
    pub receipt: String,
    /// The basket's total before this coupon, in minor units.
    pub basket_minor: i64,
}

/// An accepted redemption.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Redeemed {
    /// The discount to take off the basket.
    pub discount_minor: i64,
    /// `online` or `offline`.
    pub mode: String,
}

/// The offline policy's budgets.
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    /// Most offline discount in any hour.
    pub budget_hour_minor: i64,
    /// Most offline discount in any 24 hours.
    pub budget_day_minor: i64,
}

/// The redemption owner: one per daemon, cheap to clone.
#[derive(Clone)]
pub struct Redeemer {
    inner: Arc<Inner>,
}

struct Inner {
    /// The coupon keys and offline budgets, read per redemption (a remote layer may change
    /// them).
    settings: crate::config::live::Live,
    store: String,
    journal: Journal,
    /// Reads of this box's redemptions, over one connection kept for them.
    redemptions: AsyncOutbox,
    rpc: Option<RpcClient>,
    /// Central's merges as this box has them: a personal coupon follows its customer's merges.
    aliases: watch::Receiver<Arc<Aliases>>,
    clock: Arc<dyn Clock>,
}

/// The payload fields redemption reads (docs/protocol.md "Coupons").
#[derive(Debug, serde::Deserialize)]
struct Payload {
    id: String,
    kind: String,
    value: u64,
    #[serde(default)]
    min_basket_minor: i64,
    valid_from: Option<String>,
    valid_to: Option<String>,
    #[serde(default = "one_use")]
    uses: u64,
    customer: Option<String>,
    #[serde(default)]
    offline: bool,
    stores: Option<Vec<String>>,
}

fn one_use() -> u64 {
    1
}

impl Redeemer {
    /// Redemption for `store`, reserving online through `rpc` when there is one; personal
    /// coupons are matched through `aliases`.
    pub fn new(
        settings: crate::config::live::Live,
        store: &str,
        journal: Journal,
        rpc: Option<RpcClient>,
        aliases: watch::Receiver<Arc<Aliases>>,
        clock: Arc<dyn Clock>,
    ) -> Result<Redeemer, JournalError> {
        Ok(Redeemer {
            inner: Arc::new(Inner {
                settings,
                store: store.to_string(),
                redemptions: AsyncOutbox::new(journal.outbox()?),
                journal,
                rpc,
                aliases,
                clock,
            }),
        })
    }

    /// Checks, reserves or applies the offline policy, and journals the redemption.
    pub async fn redeem(&self, request: RedeemRequest) -> Result<Redeemed, Refusal> {
        let this = &self.inner;
        check_request(&request)?;
        let payload = this.payload(&request.token)?;
        if let Some(earlier) = this.earlier(&payload.id, &request.receipt).await? {
            return Ok(earlier);
        }
        this.check_terms(&payload, &request)?;
        let discount_minor = discount(&payload, request.basket_minor)?;
        if this.used_up(&payload).await? {
            return Err(Refusal::AlreadyRedeemed);
        }
        let mode = match this.reserve(&payload, &request).await {
            Reserved::Online => "online",
            Reserved::Refused(refusal) => return Err(refusal),
            Reserved::Unreachable => {
                this.offline_policy(&payload, discount_minor).await?;
                "offline"
            }
        };
        this.record(&payload, &request, discount_minor, mode)
            .await?;
        Ok(Redeemed {
            discount_minor,
            mode: mode.to_string(),
        })
    }
}

enum Reserved {
    Online,
    Refused(Refusal),
    Unreachable,
}

impl Inner {
    fn payload(&self, token: &str) -> Result<Payload, Refusal> {
        let keys = self.settings.borrow().coupon_keys.clone();
        let payload = keys.check(token).map_err(|refusal| match refusal {
            TokenRefusal::Malformed(error) => Refusal::Malformed(error.to_string()),
            TokenRefusal::UnknownKey => Refusal::UnknownKey(refusal.to_string()),
            TokenRefusal::BadSignature => Refusal::BadSignature(refusal.to_string()),
        })?;
        serde_json::from_value(payload).map_err(|e| Refusal::Malformed(format!("payload: {e}")))
    }

    fn check_terms(&self, payload: &Payload, request: &RedeemRequest) -> Result<(), Refusal> {
        let now = self.clock.now();
        if let Some(from) = &payload.valid_from {
            if now < time(from)? {
                return Err(Refusal::NotYetValid(from.clone()));
            }
        }
        if let Some(to) = &payload.valid_to {
            if now > time(to)? {
                return Err(Refusal::Expired(to.clone()));
            }
        }
        if let Some(stores) = &payload.stores {
            if !stores.contains(&self.store) {
                return Err(Refusal::WrongStore(self.store.clone()));
            }
        }
        // A personal coupon issued to a profile is the customer's under any ref merged with
        // it: the provisional ref an offline till gave them, or an older profile.
        if let Some(owner) = &payload.customer {
            let aliases = self.aliases.borrow();
            let matches = request
                .customer
                .as_ref()
                .is_some_and(|customer| aliases.resolve(customer) == aliases.resolve(owner));
            if !matches {
                return Err(Refusal::WrongCustomer);
            }
        }
        if request.basket_minor < payload.min_basket_minor {
            return Err(Refusal::BasketTooSmall(payload.min_basket_minor));
        }
        Ok(())
    }

    async fn earlier(&self, coupon: &str, receipt: &str) -> Result<Option<Redeemed>, Refusal> {
        let (coupon, receipt) = (coupon.to_string(), receipt.to_string());
        self.read(move |outbox| outbox.redemption(&coupon, &receipt))
            .await
            .map(|found| {
                found.map(|r| Redeemed {
                    discount_minor: r.discount_minor,
                    mode: r.mode,
                })
            })
    }

    async fn used_up(&self, payload: &Payload) -> Result<bool, Refusal> {
        let coupon = payload.id.clone();
        let used = self
            .read(move |outbox| outbox.redemptions_of(&coupon))
            .await?;
        Ok(used >= payload.uses)
    }

    async fn reserve(&self, payload: &Payload, request: &RedeemRequest) -> Reserved {
        let Some(rpc) = &self.rpc else {
            return Reserved::Unreachable;
        };
        let params = serde_json::json!({
            "coupon": payload.id,
            "customer": request.customer,
            "receipt": request.receipt,
        });
        match rpc.call("coupon.reserve", params).await {
            Ok(_) => Reserved::Online,
            Err(RpcCallError::Refused(error)) if error.code == "already_redeemed" => {
                Reserved::Refused(Refusal::AlreadyRedeemed)
            }
            Err(RpcCallError::Refused(error)) => {
                Reserved::Refused(Refusal::CentralRefused(error.message))
            }
            Err(RpcCallError::Unreachable | RpcCallError::Timeout) => Reserved::Unreachable,
        }
    }

    async fn offline_policy(&self, payload: &Payload, discount: i64) -> Result<(), Refusal> {
        if !payload.offline {
            return Err(Refusal::OfflineNotAllowed);
        }
        let now = self.clock.now();
        let policy = self.settings.borrow().coupon_policy;
        for (window, budget, name) in [
            (Duration::from_secs(3600), policy.budget_hour_minor, "hour"),
            (Duration::from_secs(86_400), policy.budget_day_minor, "day"),
        ] {
            let since = crate::protocol::timestamp(
                now.checked_sub(window).unwrap_or(SystemTime::UNIX_EPOCH),
            );
            let spent = self
                .read(move |outbox| outbox.offline_discounts_since(&since))
                .await?;
            if spent.saturating_add(discount) > budget {
                return Err(Refusal::OfflineBudgetSpent(name));
            }
        }
        Ok(())
    }

    async fn record(
        &self,
        payload: &Payload,
        request: &RedeemRequest,
        discount_minor: i64,
        mode: &str,
    ) -> Result<(), Refusal> {
        let body = CouponRedeemed {
            coupon: payload.id.clone(),
            customer: request.customer.clone(),
            receipt: request.receipt.clone(),
            discount_minor,
            mode: mode.to_string(),
            uses: payload.uses,
        };
        let body = serde_json::to_string(&body)
            .map_err(|e| Refusal::Journal(AppendError::Storage(e.to_string())))?;
        self.journal
            .append(NewEvent {
                kind: EventKind::CouponRedeemed,
                till: request.till.clone(),
                body,
                receipt: None,
                idempotency: None,
                identity_refs: Vec::new(),
                print_on: None,
                points: None,
                coupon: Some(CouponUse {
                    coupon: payload.id.clone(),
                    receipt: request.receipt.clone(),
                    uses: payload.uses,
                    mode: mode.to_string(),
                    discount_minor,
                }),
            })
            .await
            .map(drop)
            .map_err(|error| match error {
                AppendError::AlreadyRedeemed(_) => Refusal::AlreadyRedeemed,
                other => Refusal::Journal(other),
            })
    }

    /// Reads this box's redemptions off the runtime.
    async fn read<T: Send + 'static>(
        &self,
        work: impl FnOnce(&crate::journal::Outbox) -> Result<T, JournalError> + Send + 'static,
    ) -> Result<T, Refusal> {
        self.redemptions
            .read(work)
            .await
            .map_err(|e| Refusal::Journal(AppendError::Storage(e.to_string())))
    }
}

fn check_request(request: &RedeemRequest) -> Result<(), Refusal> {
    let field = |name: &str, message: &str| Err(Refusal::Field(FieldError::new(name, message)));
    if !crate::protocol::is_till_id(&request.till) {
        return field("till", "must be 1-32 letters, digits, '-' or '_'");
    }
    if request.receipt.trim().is_empty() || request.receipt.len() > 64 {
        return field("receipt", "must be 1-64 characters");
    }
    if !(0..=100_000_000_000).contains(&request.basket_minor) {
        return field(
            "basket_minor",
            "must be a non-negative amount in minor units",
        );
    }
    if let Some(customer) = &request.customer {
        crate::protocol::check_profile_ref("customer", customer).map_err(Refusal::Field)?;
    }
    Ok(())
}

/// The discount a coupon grants on a basket: a percentage (rounded down) or an amount, never
/// more than the basket.
fn discount(payload: &Payload, basket_minor: i64) -> Result<i64, Refusal> {
    let value = i64::try_from(payload.value)
        .map_err(|_| Refusal::Malformed("value is out of range".into()))?;
    match payload.kind.as_str() {
        "percent" if value <= 100 => Ok(basket_minor.saturating_mul(value) / 100),
        "percent" => Err(Refusal::Malformed(
            "a percent coupon's value is at most 100".into(),
        )),
        _ => Ok(value.min(basket_minor)),
    }
}

fn time(stamp: &str) -> Result<SystemTime, Refusal> {
    humantime::parse_rfc3339_weak(stamp)
        .map_err(|e| Refusal::Malformed(format!("{stamp:?} is not an RFC 3339 time: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payload(kind: &str, value: u64) -> Payload {
        serde_json::from_value(serde_json::json!({"id": "c-1", "kind": kind, "value": value}))
            .unwrap()
    }

    #[test]
    fn discounts_never_exceed_the_basket_and_percentages_round_down() {
        assert_eq!(discount(&payload("percent", 10), 999).unwrap(), 99);
        assert_eq!(discount(&payload("amount", 500), 300).unwrap(), 300);
        assert_eq!(discount(&payload("amount", 500), 800).unwrap(), 500);
        assert!(discount(&payload("percent", 101), 800).is_err());
    }
}
