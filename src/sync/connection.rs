//! The MQTT connection: options (TLS, limits, last will), and the task that polls rumqttc's
//! event loop, paces reconnects and renews the session counter of the will on each attempt.

use std::time::Duration;

use rumqttc::{
    Event, EventLoop, LastWill, MqttOptions, Outgoing, Packet, QoS, TlsConfiguration, Transport,
};
use tokio::sync::{mpsc, watch};

use super::{Backoff, SyncError, SyncSettings};
use crate::journal::Journal;
use crate::protocol::topics::GatewayTopics;
use crate::protocol::{GatewayStatus, MAX_PACKET_BYTES, MAX_PAYLOAD_BYTES};

/// Requests queued for rumqttc beyond this make `try_publish` fail, which the pump treats as
/// "window full, try on the next tick" instead of buffering without bound.
pub(super) const REQUEST_CHANNEL_CAPACITY: usize = 128;

/// What the connection task reports to the sync owner.
#[derive(Debug)]
pub(super) enum NetEvent {
    Connected {
        session: u64,
    },
    Disconnected {
        error: String,
    },
    Message {
        topic: String,
        payload: bytes::Bytes,
    },
}

pub(super) fn options(
    settings: &SyncSettings,
    topics: &GatewayTopics,
    session: u64,
) -> Result<MqttOptions, SyncError> {
    let broker = settings.mqtt.broker()?;
    let client_id = format!(
        "storegate-{}-{}",
        settings.identity.store, settings.identity.gateway
    );
    let mut options = MqttOptions::new(client_id, broker.host.clone(), broker.port);
    options.set_keep_alive(Duration::from_secs(settings.mqtt.keep_alive_secs));
    // The broker's session is not where our state lives (the journal is), so start clean and
    // never depend on the broker having kept anything.
    options.set_clean_session(true);
    options.set_max_packet_size(MAX_PACKET_BYTES, MAX_PAYLOAD_BYTES + 4 * 1024);
    let inflight = (settings.sync.window_batches * 2 + 16).min(u16::MAX as usize) as u16;
    options.set_inflight(inflight);
    options.set_last_will(will(topics, session));
    if broker.tls {
        options.set_transport(Transport::Tls(
            tls_configuration(&settings.mqtt).map_err(SyncError::Tls)?,
        ));
    }
    Ok(options)
}

/// TLS for `mqtts://`: the broker's CA from `[mqtt] ca`, and the client certificate and key
/// when `[mqtt] cert`/`key` are set. Shared by the gateway and the reference central.
pub fn tls_configuration(mqtt: &crate::config::MqttSection) -> Result<TlsConfiguration, String> {
    let read = |path: &std::path::Path| {
        std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
    };
    let ca = match &mqtt.ca {
        Some(path) => read(path)?,
        None => return Err("mqtts:// needs [mqtt] ca".into()),
    };
    let client_auth = match (&mqtt.cert, &mqtt.key) {
        (Some(cert), Some(key)) => Some((read(cert)?, read(key)?)),
        _ => None,
    };
    Ok(TlsConfiguration::Simple {
        ca,
        alpn: None,
        client_auth,
    })
}

fn will(topics: &GatewayTopics, session: u64) -> LastWill {
    let status = GatewayStatus {
        state: "offline".into(),
        session,
        version: None,
        backlog: None,
        config: None,
    };
    let payload = serde_json::to_vec(&status).unwrap_or_default();
    LastWill::new(topics.status(), payload, QoS::AtLeastOnce, true)
}

/// Polls the event loop until `stop`; after `stop` it keeps polling just long enough to flush
/// the owner's offline status and DISCONNECT.
pub(super) async fn drive(
    mut eventloop: EventLoop,
    journal: Journal,
    topics: GatewayTopics,
    mut backoff: Backoff,
    net: mpsc::Sender<NetEvent>,
    mut stop: watch::Receiver<bool>,
) {
    let mut session = will_session(&eventloop);
    let mut connected = false;
    let mut stopping = false;
    loop {
        let polled = if stopping {
            eventloop.poll().await
        } else {
            tokio::select! {
                _ = stop.changed() => {
                    stopping = true;
                    if !connected {
                        return;
                    }
                    continue;
                }
                polled = eventloop.poll() => polled,
            }
        };
        match polled {
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                backoff.reset();
                connected = true;
                if net.send(NetEvent::Connected { session }).await.is_err() {
                    return;
                }
            }
            Ok(Event::Incoming(Packet::Publish(publish))) => {
                let message = NetEvent::Message {
                    topic: publish.topic,
                    payload: publish.payload,
                };
                if net.send(message).await.is_err() {
                    return;
                }
            }
            Ok(Event::Outgoing(Outgoing::Disconnect)) if stopping => return,
            Ok(_) => {}
            Err(error) => {
                if stopping {
                    return;
                }
                connected = false;
                if net
                    .send(NetEvent::Disconnected {
                        error: error.to_string(),
                    })
                    .await
                    .is_err()
                {
                    return;
                }
                forget_session(&mut eventloop);
                let delay = backoff.next_delay();
                tokio::select! {
                    _ = stop.changed() => return,
                    _ = tokio::time::sleep(delay) => {}
                }
                match journal.next_session().await {
                    Ok(next) => {
                        session = next;
                        eventloop.mqtt_options.set_last_will(will(&topics, session));
                    }
                    Err(error) => {
                        tracing::error!(%error, "cannot advance the session counter; stopping sync");
                        return;
                    }
                }
            }
        }
    }
}

/// After a lost connection, starts the next one with no memory of the last.
///
/// rumqttc would re-send its in-memory copies of unacked publishes; the journal and the pump
/// re-send what central has not acked, so those copies are only duplicates. And its
/// `MqttState::clean()` keeps a pending packet-id collision across a clean-session reconnect
/// (rumqtt issues #1056, #1014): the event loop then never dequeues another publish. A fresh
/// state per connection avoids both.
pub fn forget_session(eventloop: &mut EventLoop) {
    eventloop.pending.clear();
    let inflight = eventloop.mqtt_options.inflight();
    let manual_acks = eventloop.mqtt_options.manual_acks();
    eventloop.state = rumqttc::MqttState::new(inflight, manual_acks);
}

fn will_session(eventloop: &EventLoop) -> u64 {
    eventloop
        .mqtt_options
        .last_will()
        .and_then(|will| serde_json::from_slice::<GatewayStatus>(&will.message).ok())
        .map_or(0, |status| status.session)
}
