//! `GET /v1/openapi.json`: the API's description for POS integrators and schema-driven tests.
//! The document lives in `docs/openapi/gateway.json` (readable without a running box); the
//! running version is filled in when it is served.

use axum::Json;

pub(super) async fn document() -> Json<serde_json::Value> {
    Json(with_version(include_str!(
        "../../docs/openapi/gateway.json"
    )))
}

/// A shipped OpenAPI document with `info.version` set to this build's version.
pub(crate) fn with_version(document: &str) -> serde_json::Value {
    let mut document: serde_json::Value = serde_json::from_str(document).unwrap_or_default();
    if let Some(info) = document.get_mut("info").and_then(|i| i.as_object_mut()) {
        info.insert("version".into(), env!("CARGO_PKG_VERSION").into());
    }
    document
}

#[cfg(test)]
mod tests {
    /// Both shipped documents parse and name every route the routers serve.
    #[test]
    fn the_shipped_documents_parse_and_carry_the_version() {
        for (document, paths) in [
            (
                include_str!("../../docs/openapi/gateway.json"),
                &[
                    "/v1/purchases",
                    "/v1/customers/identify",
                    "/v1/customers/{ref}",
                    "/v1/coupons/redeem",
                ][..],
            ),
            (
                include_str!("../../docs/openapi/central.json"),
                &[
                    "/v1/customers",
                    "/v1/customers/{ref}",
                    "/v1/online-purchases",
                    "/v1/reports/kpis",
                ][..],
            ),
        ] {
            let served = super::with_version(document);
            assert_eq!(served["info"]["version"], env!("CARGO_PKG_VERSION"));
            for path in paths {
                assert!(served["paths"].get(*path).is_some(), "{path}");
            }
        }
    }
}
