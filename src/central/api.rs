//! Central's online channel: the HTTP API the web shop and the app backend call
//! (`[central] api_listen`, bearer `[central] api_tokens`). Raw emails, phones and card numbers
//! arrive here and are hashed at once with the fleet key (`identity::HmacKey::identifier`),
//! exactly as a gateway hashes them, so a customer registered online is the same profile a
//! till finds. Every identity change it makes is committed first and then broadcast to the
//! boxes on `storegate/v1/identity`, like the changes events make.

use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, Path, Query, Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use rumqttc::AsyncClient;

use super::health::Health;
use super::store::{ChannelError, Store};
use crate::api::ApiError;
use crate::identity::{HmacKey, RawIdentifier};
use crate::loyalty::LoyaltySection;
use crate::protocol::{FieldError, Identifier, IdentifierKind, Line};

/// Timeline entries `GET /v1/customers/{ref}` shows at most.
const TIMELINE: usize = 100;

/// What the online channel's handlers share.
#[derive(Clone)]
pub struct OnlineChannel {
    store: Store,
    tokens: Arc<Vec<String>>,
    identity_key: Option<HmacKey>,
    coupon_key: Option<Arc<String>>,
    loyalty: LoyaltySection,
    client: AsyncClient,
    health: Arc<Health>,
}

impl OnlineChannel {
    /// The channel over central's store, broadcasting changes through `client`.
    pub fn new(
        store: Store,
        config: &crate::config::CentralConfig,
        client: AsyncClient,
        health: Arc<Health>,
    ) -> OnlineChannel {
        OnlineChannel {
            store,
            tokens: Arc::new(config.central.api_tokens.clone()),
            identity_key: config.identity.hmac_key.clone(),
            coupon_key: config.coupons.signing_key.clone().map(Arc::new),
            loyalty: config.loyalty.clone(),
            client,
            health,
        }
    }

    fn broadcast(&self, changes: Vec<String>) {
        super::service::publish_changes(&self.client, &self.health, changes);
    }
}

fn refusal(error: ChannelError) -> ApiError {
    let message = error.to_string();
    match error {
        ChannelError::UnknownCustomer(_) => {
            ApiError::new(StatusCode::NOT_FOUND, "unknown_customer", message)
        }
        ChannelError::Erased(_) => ApiError::new(StatusCode::GONE, "customer_erased", message),
        ChannelError::NothingMergeable => {
            let mut error = ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "nothing_mergeable",
                message,
            );
            error.field = Some("identifiers".into());
            error
        }
        ChannelError::OrderConflict(_) => {
            let mut error = ApiError::new(StatusCode::CONFLICT, "order_conflict", message);
            error.field = Some("order".into());
            error
        }
        ChannelError::Store(_) => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "store_unavailable",
            message,
        ),
    }
}

/// Every route, behind the bearer token, with the gateway API's limits and JSON errors.
pub fn router(channel: OnlineChannel) -> Router {
    let guarded = middleware::from_fn_with_state(channel.clone(), require_token);
    let v1 = Router::new()
        .route("/customers", post(register))
        .route("/customers/:customer", get(show).delete(erase))
        .route("/customers/:customer/app-token", post(app_token))
        .route("/online-purchases", post(online_purchase))
        .route("/coupons", post(issue_coupon))
        .route("/reports/kpis", get(kpis))
        .route_layer(guarded);
    Router::new()
        .nest("/v1", v1)
        .route("/v1/openapi.json", get(openapi))
        .route("/healthz", get(health))
        .layer(DefaultBodyLimit::max(crate::api::MAX_BODY_BYTES))
        .layer(middleware::from_fn(crate::api::request_timeout))
        .layer(middleware::from_fn(crate::api::json_errors))
        .with_state(channel)
}

/// `/healthz` (`health.rs`), answered as the gateway answers its own.
async fn health(State(channel): State<OnlineChannel>, headers: axum::http::HeaderMap) -> Response {
    let report = channel.health.report(&channel.store).await;
    crate::api::health_answer(
        report.broken.is_empty(),
        crate::api::bearer_matches(&channel.tokens, &headers),
        report.detail,
    )
}

async fn require_token(
    State(channel): State<OnlineChannel>,
    request: Request,
    next: Next,
) -> Response {
    if crate::api::bearer_matches(&channel.tokens, request.headers()) {
        next.run(request).await
    } else {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "a valid Authorization: Bearer token is required",
        )
        .into_response()
    }
}

/// A JSON body, or a 400 that says where it broke (never what it held: it may be an email).
fn body<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(bytes).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_json",
            format!(
                "not the expected body (line {}, column {}): {}",
                e.line(),
                e.column(),
                match e.classify() {
                    serde_json::error::Category::Data => "a field is missing or of the wrong type",
                    _ => "malformed JSON",
                }
            ),
        )
    })
}

fn profile_ref(customer: &str) -> Result<(), ApiError> {
    crate::protocol::check_profile_ref("customer", customer).map_err(ApiError::field)
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RegisterRequest {
    identifiers: Vec<RawIdentifier>,
}

/// `POST /v1/customers`: the profile these identifiers belong to, created if none does.
async fn register(
    State(channel): State<OnlineChannel>,
    bytes: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let request: RegisterRequest = body(&bytes)?;
    let key = identity_key(&channel)?;
    if request.identifiers.is_empty() || request.identifiers.len() > 8 {
        return Err(ApiError::field(FieldError::new(
            "identifiers",
            "give 1 to 8 identifiers",
        )));
    }
    let mut identifiers = Vec::new();
    for (i, raw) in request.identifiers.iter().enumerate() {
        identifiers.push(hash(key, raw.kind, &raw.value, raw.verified, i)?);
    }
    let registered = channel.store.register(identifiers).await.map_err(refusal)?;
    channel.broadcast(registered.changes);
    let status = if registered.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((
        status,
        Json(serde_json::json!({ "customer": registered.customer, "created": registered.created })),
    )
        .into_response())
}

fn identity_key(channel: &OnlineChannel) -> Result<&HmacKey, ApiError> {
    channel.identity_key.as_ref().ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "identity_not_configured",
            "central has no [identity] hmac_key, so it cannot hash identifiers",
        )
    })
}

fn hash(
    key: &HmacKey,
    kind: IdentifierKind,
    raw: &str,
    verified: Option<bool>,
    index: usize,
) -> Result<Identifier, ApiError> {
    key.identifier(kind, raw, verified).map_err(|e| {
        let mut error = ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "junk_identifier",
            e.to_string(),
        );
        error.field = Some(format!("identifiers[{index}].value"));
        error
    })
}

/// `POST /v1/customers/{ref}/app-token`: a new app identity token (`SGA1.` + 256 random
/// bits), attached to the profile as an `app` identifier; the app shows it as a QR code.
async fn app_token(
    State(channel): State<OnlineChannel>,
    Path(customer): Path<String>,
) -> Result<Response, ApiError> {
    profile_ref(&customer)?;
    let key = identity_key(&channel)?;
    let mut secret = [0u8; 32];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut secret).map_err(
        |_| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "no randomness",
            )
        },
    )?;
    use base64::Engine;
    let token = format!(
        "{}{}",
        crate::codes::APP_PREFIX,
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(secret)
    );
    let identifier = hash(key, IdentifierKind::App, &token, None, 0)?;
    let (root, changes) = channel
        .store
        .attach_identifier(customer, identifier)
        .await
        .map_err(refusal)?;
    channel.broadcast(changes);
    Ok(Json(serde_json::json!({ "customer": root, "token": token })).into_response())
}

/// `GET /v1/customers/{ref}`: the profile, its identifier kinds, points and timeline.
async fn show(
    State(channel): State<OnlineChannel>,
    Path(customer): Path<String>,
) -> Result<Response, ApiError> {
    profile_ref(&customer)?;
    let view = channel
        .store
        .customer(customer, TIMELINE)
        .await
        .map_err(refusal)?;
    Ok(Json(view).into_response())
}

/// `DELETE /v1/customers/{ref}`: the right to erasure, broadcast to every box.
async fn erase(
    State(channel): State<OnlineChannel>,
    Path(customer): Path<String>,
) -> Result<Response, ApiError> {
    profile_ref(&customer)?;
    let (root, changes) = channel.store.erase(customer).await.map_err(refusal)?;
    channel.broadcast(changes);
    tracing::info!(customer = %root, "customer erased");
    Ok(Json(serde_json::json!({ "customer": root, "erased": true })).into_response())
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct OnlinePurchaseRequest {
    customer: String,
    order: String,
    lines: Vec<Line>,
    total_minor: i64,
    currency: String,
}

/// `POST /v1/online-purchases`: a web shop or app order, once per `order`; it earns points by
/// `[loyalty]` like a store purchase.
async fn online_purchase(
    State(channel): State<OnlineChannel>,
    bytes: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let request: OnlinePurchaseRequest = body(&bytes)?;
    profile_ref(&request.customer)?;
    // The same checks a till's purchase gets, through the one purchase validator.
    let purchase = crate::protocol::Purchase {
        receipt: request.order.clone(),
        lines: request.lines.clone(),
        total_minor: request.total_minor,
        currency: request.currency.clone(),
        customer: Some(request.customer.clone()),
        coupons: Vec::new(),
        points: 0,
        points_redeemed: 0,
        adjustment_minor: request.total_minor.saturating_sub(
            request
                .lines
                .iter()
                .map(|l| l.qty.saturating_mul(l.unit_minor))
                .fold(0i64, i64::saturating_add),
        ),
    };
    purchase.validate().map_err(|mut e| {
        if e.field == "receipt" {
            e.field = "order".into();
        }
        ApiError::field(e)
    })?;
    let points = channel.loyalty.earned(request.total_minor);
    let lines = serde_json::to_string(&request.lines).unwrap_or_default();
    let recorded = channel
        .store
        .online_purchase(
            request.customer,
            request.order,
            lines,
            request.total_minor,
            request.currency,
            points,
        )
        .await
        .map_err(refusal)?;
    let status = if recorded.replayed {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    let answer = serde_json::json!({
        "customer": recorded.customer,
        "points": recorded.points,
        "balance": recorded.balance,
        "replayed": recorded.replayed,
    });
    channel.broadcast(recorded.changes);
    Ok((status, Json(answer)).into_response())
}

/// `POST /v1/coupons`: a coupon payload (docs/protocol.md fields) signed with
/// `[coupons] signing_key` → `{"token":"SGC1.…"}`.
async fn issue_coupon(
    State(channel): State<OnlineChannel>,
    bytes: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let payload: serde_json::Value = body(&bytes)?;
    let key = channel.coupon_key.as_ref().ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "coupons_not_configured",
            "central has no [coupons] signing_key",
        )
    })?;
    if let Some(customer) = payload.get("customer").and_then(|c| c.as_str()) {
        profile_ref(customer)?;
    }
    let token = crate::codes::coupon::issue(key, &payload).map_err(|e| {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_coupon",
            e.to_string(),
        )
    })?;
    Ok((
        StatusCode::CREATED,
        Json(serde_json::json!({ "token": token })),
    )
        .into_response())
}

#[derive(serde::Deserialize)]
struct KpiQuery {
    from: String,
    to: String,
    store: Option<String>,
    channel: Option<String>,
}

/// `GET /v1/reports/kpis?from=&to=[&store=&channel=]`.
async fn kpis(
    State(channel): State<OnlineChannel>,
    Query(query): Query<KpiQuery>,
) -> Result<Response, ApiError> {
    let stamp = |field: &str, value: &str| {
        humantime::parse_rfc3339_weak(value)
            .map(crate::protocol::timestamp)
            .map_err(|_| ApiError::field(FieldError::new(field, "must be an RFC 3339 time")))
    };
    let (from, to) = (stamp("from", &query.from)?, stamp("to", &query.to)?);
    if let Some(store) = &query.store {
        if !crate::protocol::is_topic_id(store) {
            return Err(ApiError::field(FieldError::new(
                "store",
                "is not a store id",
            )));
        }
    }
    if let Some(c) = &query.channel {
        if c != "store" && c != "online" {
            return Err(ApiError::field(FieldError::new(
                "channel",
                "must be store or online",
            )));
        }
    }
    let report = channel
        .store
        .kpis(from, to, query.store, query.channel)
        .await
        .map_err(|e| refusal(e.into()))?;
    Ok(Json(report).into_response())
}

/// The document lives in `docs/openapi/central.json`.
async fn openapi() -> Json<serde_json::Value> {
    Json(crate::api::openapi_with_version(include_str!(
        "../../docs/openapi/central.json"
    )))
}
