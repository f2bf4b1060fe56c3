//! Routes device events to the parts that act on them:
//! - a card tap becomes an `identity_seen` through the identity part, and only once it is
//!   committed does the reader beep and light green (red, with no beep, when refused);
//! - a scanned code is interpreted by the codes part (a coupon's signature verified against
//!   the configured coupon keys) and published on the API's live event stream for the till or
//!   kiosk it belongs to (a scan is not a sale: the till decides what to do with it).

use std::sync::Arc;

use storegate_firmware::message::Led;
use tokio::sync::mpsc;

use crate::api::LiveEvents;
use crate::codes::{Aim, Interpretation};
use crate::devices::{DeviceCommand, DeviceEvent, DeviceHandle};
use crate::identity::{card_number_from_uid, Identity, Recorded};
use crate::metrics::Metrics;
use crate::protocol::{EventKind, IdentifierKind};

pub struct Router {
    pub identity: Arc<Identity>,
    pub devices: DeviceHandle,
    pub live: LiveEvents,
    pub beep_ms: Box<dyn Fn(&str) -> u16 + Send + Sync>,
    /// Magnetic loyalty card number rule per device.
    pub card_rules: std::collections::HashMap<String, crate::devices::config::CardNumberRule>,
    /// A scanned coupon reaches a till only if its signature verifies with one of these.
    /// The coupon keys scanned coupons are checked with (read per scan).
    pub settings: crate::config::live::Live,
    pub metrics: Arc<Metrics>,
}

impl Router {
    pub async fn run(self, mut events: mpsc::Receiver<DeviceEvent>) {
        while let Some(event) = events.recv().await {
            match event {
                DeviceEvent::CardPresented { device, till, uid } => {
                    self.card_presented(device, till, uid).await
                }
                DeviceEvent::CardRemoved { device, .. } => {
                    self.devices.command(&device, DeviceCommand::Led(Led::Off));
                }
                DeviceEvent::Scanned {
                    device,
                    till,
                    aim,
                    text,
                } => self.scanned(device, till, aim, text).await,
                DeviceEvent::PrinterStatus {
                    device,
                    till,
                    status,
                } => {
                    self.metrics.printer_ready(
                        &device,
                        status.ready(),
                        &serde_json::json!(status).to_string(),
                    );
                    self.live.publish(serde_json::json!({
                        "type": "printer_status",
                        "device": device,
                        "till": till,
                        "status": status,
                        "ready": status.ready(),
                    }));
                }
            }
        }
    }

    async fn card_presented(&self, device: String, till: String, uid: Vec<u8>) {
        match self
            .record(
                &device,
                &till,
                IdentifierKind::Card,
                Ok(card_number_from_uid(&uid)),
            )
            .await
        {
            Ok(_) => {
                let ms = (self.beep_ms)(&device);
                if ms > 0 {
                    self.devices.command(&device, DeviceCommand::Beep { ms });
                }
                self.devices
                    .command(&device, DeviceCommand::Led(Led::Green));
            }
            Err(_) => self.devices.command(&device, DeviceCommand::Led(Led::Red)),
        }
    }

    /// A good scan is a `scan` event; one the codes part refuses (a wrong check digit, a
    /// control character) is a `scan_refused` event, so the till can ask for a rescan.
    async fn scanned(&self, device: String, till: String, aim: Option<Aim>, text: String) {
        let mut event = serde_json::json!({
            "type": "scan",
            "device": device,
            "till": till,
            "symbology": aim.map_or("unknown", |a| a.symbology()),
            "aim": aim.map(|a| a.to_string()),
            "text": text,
        });
        let rule = self.card_rules.get(&device).cloned().unwrap_or_default();
        let loyalty_barcode = !text.is_empty()
            && text.bytes().all(|b| b.is_ascii_digit())
            && rule
                .barcode_prefixes
                .iter()
                .any(|p| text.starts_with(p.as_str()));
        if loyalty_barcode {
            let masked = crate::codes::mask_number(&text);
            event["text"] = serde_json::json!(masked);
            event["interpretation"] =
                serde_json::json!({ "kind": "loyalty_card", "masked_number": masked });
            self.live.publish(event);
            self.identify_card(&device, &till, Ok(text)).await;
            return;
        }
        // A forged or altered coupon is refused here, like a broken barcode: the till never
        // sees it as a coupon.
        let interpreted = match crate::codes::interpret_scan(aim, &text) {
            Ok(Interpretation::CouponToken { token, .. }) => {
                let keys = self.settings.borrow().coupon_keys.clone();
                keys.verify(&token)
                    .map(|payload| Interpretation::CouponToken { token, payload })
            }
            other => other,
        };
        match interpreted {
            Ok(Interpretation::AppIdentity { token }) => {
                // The app's code identifies the customer like a card; it is shown to no one.
                let masked = format!("{}…", crate::codes::APP_PREFIX);
                event["text"] = serde_json::json!(masked);
                event["interpretation"] = serde_json::json!({ "kind": "app_identity" });
                self.live.publish(event);
                self.identify(&device, &till, IdentifierKind::App, Ok(token))
                    .await;
                return;
            }
            Ok(Interpretation::MagneticStripe {
                tracks,
                masked_number,
            }) => {
                // A card number never goes out raw, not even to the till page.
                event["text"] = serde_json::json!(masked_number);
                event["interpretation"] = serde_json::json!(Interpretation::MagneticStripe {
                    tracks,
                    masked_number
                });
                self.live.publish(event);
                let number = crate::codes::magstripe::parse_tracks(&text)
                    .and_then(|tracks| {
                        crate::codes::magstripe::loyalty_number(&tracks, rule.skip, rule.take)
                    })
                    .map_err(|e| e.to_string());
                self.identify_card(&device, &till, number).await;
                return;
            }
            Ok(interpretation) => event["interpretation"] = serde_json::json!(interpretation),
            Err(error) => {
                self.metrics
                    .device_input_invalid(&device, "code_refused", &error.to_string());
                event["type"] = serde_json::json!("scan_refused");
                event["refused"] = serde_json::json!(error.to_string());
            }
        }
        self.live.publish(event);
    }

    /// A loyalty card's number (from a magnetic stripe or a barcode) becomes an
    /// `identity_seen`; the till hears `identified` with the customer's ref, or `card_refused`.
    async fn identify_card(&self, device: &str, till: &str, number: Result<String, String>) {
        self.identify(device, till, IdentifierKind::Card, number)
            .await
    }

    /// A card number or an app token becomes an `identity_seen`.
    async fn identify(
        &self,
        device: &str,
        till: &str,
        kind: IdentifierKind,
        value: Result<String, String>,
    ) {
        match self.record(device, till, kind, value).await {
            Ok(recorded) => self.live.publish(serde_json::json!({
                "type": "identified",
                "device": device,
                "till": till,
                "customer": recorded.customer,
                "seq": recorded.event.seq,
            })),
            Err(error) => self.live.publish(serde_json::json!({
                "type": "card_refused",
                "device": device,
                "till": till,
                "refused": error,
            })),
        }
    }

    /// Every identification a device made, whatever read it: the value as an identifier
    /// through the identity part into the journal, counted either way.
    async fn record(
        &self,
        device: &str,
        till: &str,
        kind: IdentifierKind,
        value: Result<String, String>,
    ) -> Result<Recorded, String> {
        let recorded = match value {
            Ok(value) => match self.identity.identifier(kind, &value, None) {
                Ok(identifier) => self
                    .identity
                    .seen(till, vec![identifier])
                    .await
                    .map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            },
            Err(e) => Err(e),
        };
        match &recorded {
            Ok(recorded) => {
                self.metrics
                    .event_committed(EventKind::IdentitySeen.as_str(), recorded.event.seq);
                tracing::info!(
                    device,
                    till,
                    seq = recorded.event.seq,
                    customer = recorded.customer,
                    kind = kind.as_str(),
                    "customer identified"
                );
            }
            Err(error) => self
                .metrics
                .device_input_invalid(device, "card_refused", error),
        }
        recorded
    }
}
