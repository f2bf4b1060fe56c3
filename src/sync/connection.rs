//! The gateway's MQTT connection options: TLS, packet limits, a client id, and the last will
//! that names the session (docs/protocol.md "Status and last will").

use std::time::Duration;

use rumqttc::{LastWill, MqttOptions, QoS, Transport};

use super::{SyncError, SyncSettings};
use crate::protocol::topics::GatewayTopics;
use crate::protocol::GatewayStatus;

/// Requests queued for rumqttc beyond this make `try_publish` fail, which the pump treats as
/// "window full, try on the next tick" instead of buffering without bound.
pub(super) const REQUEST_CHANNEL_CAPACITY: usize = 128;

pub(super) fn options(
    settings: &SyncSettings,
    topics: &GatewayTopics,
    session: u64,
) -> Result<MqttOptions, SyncError> {
    let broker = settings.mqtt.broker()?;
    // With TLS client certificates the shipped Mosquitto config replaces this id by the
    // certificate's name (`use_username_as_clientid`), so no one can take over this session.
    let client_id = format!(
        "storegate-{}-{}",
        settings.name.store, settings.name.gateway
    );
    let mut options = MqttOptions::new(client_id, broker.host.clone(), broker.port);
    options.set_keep_alive(Duration::from_secs(settings.mqtt.keep_alive_secs));
    // The broker's session is not where our state lives (the journal is), so start clean and
    // never depend on the broker having kept anything.
    options.set_clean_session(true);
    crate::mqtt::set_packet_limits(&mut options);
    let inflight = (settings.sync.window_batches * 2 + 16).min(u16::MAX as usize) as u16;
    options.set_inflight(inflight);
    options.set_last_will(will(topics, session));
    if broker.tls {
        options.set_transport(Transport::Tls(
            crate::mqtt::tls_configuration(&settings.mqtt).map_err(SyncError::Tls)?,
        ));
    }
    Ok(options)
}

pub(super) fn will(topics: &GatewayTopics, session: u64) -> LastWill {
    let status = GatewayStatus {
        state: "offline".into(),
        session,
        version: None,
        backlog: None,
        config: None,
        alarms: Vec::new(),
    };
    let payload = serde_json::to_vec(&status).unwrap_or_default();
    LastWill::new(topics.status(), payload, QoS::AtLeastOnce, true)
}
