//! `GET /v1/openapi.json`: the API's description for POS integrators and schema-driven tests.

use axum::Json;

pub(super) async fn document() -> Json<serde_json::Value> {
    Json(serde_json::json!({
        "openapi": "3.0.3",
        "info": { "title": "storegate local API", "version": env!("CARGO_PKG_VERSION") },
        "paths": {
            "/v1/purchases": { "post": {
                "summary": "Record a purchase; answers after it is committed to the journal",
                "parameters": [{ "name": "Idempotency-Key", "in": "header", "required": false,
                                  "schema": { "type": "string", "minLength": 1, "maxLength": 255 } }],
                "requestBody": { "required": true, "content": { "application/json": {
                    "schema": { "$ref": "#/components/schemas/PurchaseRequest" } } } },
                "responses": {
                    "201": { "description": "Committed", "content": { "application/json": {
                        "schema": { "$ref": "#/components/schemas/Recorded" } } } },
                    "400": { "$ref": "#/components/responses/Error" },
                    "401": { "$ref": "#/components/responses/Error" },
                    "409": { "$ref": "#/components/responses/Error" },
                    "413": { "description": "Body too large" },
                    "422": { "$ref": "#/components/responses/Error" },
                    "503": { "$ref": "#/components/responses/Error" },
                    "507": { "$ref": "#/components/responses/Error" }
                }
            } },
            "/v1/customers/identify": { "post": {
                "summary": "Identify a customer: this box's knowledge, then central within [identity] lookup_timeout_ms, else a provisional ref; journalled as identity_seen",
                "description": "Mergeable identifiers (cards, app tokens, verified phones and emails) alone decide; an unverified one only looks up when nothing mergeable is given. Raw values are hashed at once. Refusals: junk_identifier (422), identity_not_configured (503).",
                "requestBody": { "required": true, "content": { "application/json": {
                    "schema": { "type": "object", "required": ["till", "identifiers"], "properties": {
                        "till": { "type": "string" },
                        "identifiers": { "type": "array", "minItems": 1, "maxItems": 8, "items": {
                            "type": "object", "required": ["kind", "value"], "properties": {
                                "kind": { "type": "string", "enum": ["card", "phone", "email", "app"] },
                                "value": { "type": "string" },
                                "verified": { "type": "boolean" } } } } } } } } },
                "responses": {
                    "200": { "description": "Identified", "content": { "application/json": {
                        "schema": { "type": "object", "required": ["customer", "points", "known"], "properties": {
                            "customer": { "type": "string" },
                            "points": { "type": "integer" },
                            "known": { "type": "string", "enum": ["local", "central", "provisional"] },
                            "seq": { "type": "integer" } } } } } },
                    "400": { "$ref": "#/components/responses/Error" },
                    "422": { "$ref": "#/components/responses/Error" },
                    "503": { "$ref": "#/components/responses/Error" }
                }
            } },
            "/v1/customers/{ref}": { "get": {
                "summary": "The profile a ref resolves to here, and its points: central's view plus what this box earned and spent that the view does not hold yet",
                "parameters": [{ "name": "ref", "in": "path", "required": true, "schema": { "type": "string" } }],
                "responses": {
                    "200": { "description": "The customer", "content": { "application/json": {
                        "schema": { "type": "object", "required": ["customer", "points"], "properties": {
                            "customer": { "type": "string" }, "points": { "type": "integer" },
                            "central_points": { "type": "integer" }, "pending_earned": { "type": "integer" },
                            "pending_redeemed": { "type": "integer" } } } } } },
                    "422": { "$ref": "#/components/responses/Error" } } } },
            "/v1/coupons/redeem": { "post": {
                "summary": "Redeem a coupon: reserved at central when it answers in time, else under the offline policy; journalled as coupon_redeemed",
                "description": "Refusal codes: malformed, invalid_field (400); already_redeemed (409); bad_signature, unknown_key, expired, not_yet_valid, wrong_store, wrong_customer, basket_too_small, offline_not_allowed, offline_budget_spent (422); central_refused (502).",
                "requestBody": { "required": true, "content": { "application/json": {
                    "schema": { "type": "object", "required": ["till", "token", "receipt", "basket_minor"],
                        "properties": {
                            "till": { "type": "string" }, "token": { "type": "string" },
                            "customer": { "type": "string", "nullable": true },
                            "receipt": { "type": "string" },
                            "basket_minor": { "type": "integer", "minimum": 0 } } } } } },
                "responses": {
                    "200": { "description": "Accepted", "content": { "application/json": {
                        "schema": { "type": "object", "required": ["discount_minor", "mode"], "properties": {
                            "discount_minor": { "type": "integer" },
                            "mode": { "type": "string", "enum": ["online", "offline"] } } } } } },
                    "400": { "$ref": "#/components/responses/Error" },
                    "409": { "$ref": "#/components/responses/Error" },
                    "422": { "$ref": "#/components/responses/Error" },
                    "502": { "$ref": "#/components/responses/Error" },
                    "503": { "$ref": "#/components/responses/Error" }
                }
            } },
            "/v1/devices": { "get": {
                "summary": "Every configured device and its state (connecting, up, down, stopped)",
                "responses": { "200": { "description": "Device states", "content": { "application/json": {
                    "schema": { "type": "object", "required": ["devices"], "properties": { "devices": {
                        "type": "array", "items": { "$ref": "#/components/schemas/Device" } } } } } } },
                    "401": { "$ref": "#/components/responses/Error" } } } },
            "/v1/events": { "get": {
                "summary": "Live scans from this box's scanners and cameras (server-sent events: ready, scan, scan_refused, lagged)",
                "parameters": [{ "name": "till", "in": "query", "required": false, "schema": { "type": "string" } }],
                "responses": { "200": { "description": "An event stream", "content": { "text/event-stream": {} } },
                               "401": { "$ref": "#/components/responses/Error" } } } },
            "/healthz": { "get": { "summary": "Liveness, journal position, broker connection",
                "responses": { "200": { "description": "Healthy" } } } },
            "/metrics": { "get": { "summary": "Prometheus metrics",
                "responses": { "200": { "description": "Text exposition" } } } }
        },
        "components": {
            "schemas": {
                "Line": { "type": "object", "required": ["sku", "qty", "unit_minor"], "additionalProperties": false,
                    "properties": {
                        "sku": { "type": "string", "minLength": 1, "maxLength": 64 },
                        "gtin": { "type": "string", "pattern": "^[0-9]{1,14}$" },
                        "qty": { "type": "integer" },
                        "unit_minor": { "type": "integer", "minimum": 0 } } },
                "PurchaseRequest": { "type": "object",
                    "required": ["till", "receipt", "lines", "total_minor", "currency", "customer"],
                    "additionalProperties": false,
                    "properties": {
                        "till": { "type": "string", "pattern": "^[A-Za-z0-9_-]{1,32}$" },
                        "receipt": { "type": "string", "minLength": 1, "maxLength": 64 },
                        "lines": { "type": "array", "minItems": 1, "maxItems": 500, "items": { "$ref": "#/components/schemas/Line" } },
                        "total_minor": { "type": "integer" },
                        "currency": { "type": "string", "pattern": "^[A-Z]{3}$" },
                        "customer": { "type": "string", "nullable": true },
                        "coupons": { "type": "array", "items": { "type": "string" } },
                        "points": { "type": "integer", "minimum": 0,
                                    "description": "Points earned; with [loyalty] configured the gateway's rule decides and this is ignored" },
                        "points_redeemed": { "type": "integer", "minimum": 0,
                                    "description": "Points spent on this sale: within the balance (409 insufficient_points) and, while central is unreachable, within [loyalty] offline_redeem_cap (409 offline_points_cap)" },
                        "adjustment_minor": { "type": "integer",
                                    "description": "The stated difference between total_minor and the lines' sum (a discount is negative)" } } },
                "Device": { "type": "object", "required": ["name", "kind", "port", "state", "reconnects"],
                    "properties": {
                        "name": { "type": "string" },
                        "kind": { "type": "string", "enum": ["card_reader", "scanner", "keyboard_wedge", "printer", "camera"] },
                        "port": { "type": "string" },
                        "state": { "type": "string", "enum": ["connecting", "up", "down", "stopped"] },
                        "last_error": { "type": "string" },
                        "reconnects": { "type": "integer", "minimum": 0 },
                        "firmware": { "type": "string" } } },
                "Recorded": { "type": "object", "required": ["seq", "id"],
                    "properties": { "seq": { "type": "integer" }, "id": { "type": "string" },
                        "customer": { "type": "string", "description": "For an identified customer: the profile the ref resolves to" },
                        "points": { "type": "integer" }, "points_redeemed": { "type": "integer" },
                        "balance": { "type": "integer", "description": "The customer's points after this sale" } } },
                "Error": { "type": "object", "required": ["error"], "properties": { "error": {
                    "type": "object", "required": ["code", "message"],
                    "properties": { "code": { "type": "string" }, "message": { "type": "string" },
                                    "field": { "type": "string" } } } } }
            },
            "responses": { "Error": { "description": "Refused; nothing was recorded",
                "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Error" } } } } },
            "securitySchemes": { "bearer": { "type": "http", "scheme": "bearer" } }
        }
    }))
}
