//! Routes device events to the parts that act on them: a card tap becomes an `identity_seen`
//! through the identity part, and only once it is committed does the reader beep and light
//! green (red, with no beep, when the card is refused).

use std::sync::Arc;

use storegate_firmware::message::Led;
use tokio::sync::mpsc;

use crate::devices::{DeviceCommand, DeviceEvent, DeviceHandle};
use crate::identity::{card_number_from_uid, Identity};
use crate::metrics::Metrics;
use crate::protocol::{EventKind, IdentifierKind};

pub async fn route(
    mut events: mpsc::Receiver<DeviceEvent>,
    identity: Arc<Identity>,
    devices: DeviceHandle,
    beep_ms: impl Fn(&str) -> u16,
    metrics: Arc<Metrics>,
) {
    while let Some(event) = events.recv().await {
        match event {
            DeviceEvent::CardPresented { device, till, uid } => {
                let number = card_number_from_uid(&uid);
                let recorded = match identity.identifier(IdentifierKind::Card, &number, None) {
                    Ok(identifier) => identity.seen(&till, vec![identifier]).await,
                    Err(error) => Err(error),
                };
                match recorded {
                    Ok(recorded) => {
                        metrics
                            .event_committed(EventKind::IdentitySeen.as_str(), recorded.event.seq);
                        tracing::info!(
                            device,
                            till,
                            seq = recorded.event.seq,
                            customer = recorded.customer,
                            "card identified"
                        );
                        let ms = beep_ms(&device);
                        if ms > 0 {
                            devices.command(&device, DeviceCommand::Beep { ms });
                        }
                        devices.command(&device, DeviceCommand::Led(Led::Green));
                    }
                    Err(error) => {
                        metrics.device_input_invalid(&device, "card_refused", &error.to_string());
                        devices.command(&device, DeviceCommand::Led(Led::Red));
                    }
                }
            }
            DeviceEvent::CardRemoved { device, .. } => {
                devices.command(&device, DeviceCommand::Led(Led::Off));
            }
        }
    }
}
