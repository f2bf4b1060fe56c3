//! The task that polls rumqttc's event loop: reports connects, losses and messages to its
//! owner, paces reconnects, and lets the owner renew the last will before each attempt.
//!
//! It never waits on its owner while the owner has room for the next message, so the event
//! loop keeps answering the broker's keep-alive however long the owner takes over a message.
//! An owner that takes time over each message (central) sets rumqttc's manual acks: its
//! receipts (`receipts.rs`) then let the broker hold back what the owner has no room for.

use rumqttc::{AsyncClient, Event, EventLoop, LastWill, Outgoing, Packet, TlsConfiguration};
use std::future::Future;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use super::receipts::{Receipt, Window};
use crate::backoff::Backoff;

/// What the session task reports to its owner.
#[derive(Debug)]
pub enum SessionEvent {
    /// The broker accepted a connection.
    Connected {
        /// The session number it carries.
        session: u64,
    },
    /// A connection was lost or an attempt failed; the next attempt follows a backoff.
    Disconnected {
        /// What failed.
        error: String,
    },
    /// A message on a subscribed topic.
    Message {
        /// Its topic.
        topic: String,
        /// Its payload, unchecked.
        payload: bytes::Bytes,
        /// Set on a message the broker kept for the topic: a receiver ignores it on topics
        /// docs/protocol.md does not mark retained.
        retain: bool,
        /// Acks the message when dropped, if the session acks by hand.
        receipt: Receipt,
    },
}

/// What the owner answers before each reconnect: the session number the next connection
/// carries and, when it changed, the last will naming it.
#[derive(Debug)]
pub struct Reconnect {
    /// The session number of the next connection.
    pub session: u64,
    /// Its last will, when the session number changed.
    pub will: Option<LastWill>,
}

/// Polls `eventloop` until `stop` flips; after that it keeps polling just long enough to
/// flush the owner's last publishes and DISCONNECT.
///
/// `before_reconnect` runs before every attempt after the first. When it fails (the journal
/// cannot advance the session counter) the attempt waits for the next backoff step instead
/// of connecting with a stale session number: the owner sees a disconnected session, which
/// is what `/healthz` and the status report, never a silently stopped task.
///
/// `client` is the event loop's own: with manual acks set in its options, the receipts of
/// `SessionEvent::Message` send their acks through it.
pub async fn drive<R, F>(
    mut eventloop: EventLoop,
    client: AsyncClient,
    mut backoff: Backoff,
    first_session: u64,
    net: mpsc::Sender<SessionEvent>,
    mut stop: watch::Receiver<bool>,
    mut before_reconnect: R,
) where
    R: FnMut() -> F,
    F: Future<Output = Result<Reconnect, String>>,
{
    let address = format!(
        "{}:{}",
        eventloop.mqtt_options.broker_address().0,
        eventloop.mqtt_options.broker_address().1
    );
    let mut session = first_session;
    let mut connected_at: Option<Instant> = None;
    let mut last_error: Option<String> = None;
    let mut stopping = false;
    let receipts = eventloop
        .mqtt_options
        .manual_acks()
        .then(|| Window::new(client));
    let keep_alive = eventloop.mqtt_options.keep_alive();
    let _ping_keeper = receipts
        .as_ref()
        .filter(|_| !keep_alive.is_zero())
        .map(|window| AbortOnDrop(tokio::spawn(window.clone().keep_pings_answered(keep_alive))));
    loop {
        let polled = if stopping {
            eventloop.poll().await
        } else {
            tokio::select! {
                _ = stop.changed() => {
                    stopping = true;
                    if connected_at.is_none() {
                        return;
                    }
                    continue;
                }
                polled = eventloop.poll() => polled,
            }
        };
        if let Some(receipts) = &receipts {
            receipts.send_unsent();
        }
        match polled {
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                tracing::info!(broker = %address, session, "connected to the MQTT broker");
                connected_at = Some(Instant::now());
                last_error = None;
                if let Some(receipts) = &receipts {
                    receipts.connected();
                }
                if net.send(SessionEvent::Connected { session }).await.is_err() {
                    return;
                }
            }
            Ok(Event::Incoming(Packet::Publish(publish))) => {
                let receipt = match &receipts {
                    Some(receipts) => receipts.deliver(&publish),
                    None => Receipt::none(),
                };
                let message = SessionEvent::Message {
                    topic: publish.topic,
                    payload: publish.payload,
                    retain: publish.retain,
                    receipt,
                };
                if net.send(message).await.is_err() {
                    return;
                }
            }
            Ok(Event::Outgoing(Outgoing::PingReq)) => {
                if let Some(receipts) = &receipts {
                    receipts.ping_sent();
                }
            }
            Ok(Event::Incoming(Packet::PingResp)) => {
                if let Some(receipts) = &receipts {
                    receipts.ping_answered();
                }
            }
            Ok(Event::Outgoing(Outgoing::Disconnect)) if stopping => return,
            Ok(_) => {}
            Err(error) => {
                if stopping {
                    return;
                }
                let error = error.to_string();
                log_failure(&address, connected_at, last_error.as_deref(), &error);
                if let Some(since) = connected_at.take() {
                    backoff.ended_after(since.elapsed());
                }
                last_error = Some(error.clone());
                if net
                    .send(SessionEvent::Disconnected { error })
                    .await
                    .is_err()
                {
                    return;
                }
                forget_session(&mut eventloop);
                loop {
                    tokio::select! {
                        _ = stop.changed() => return,
                        _ = tokio::time::sleep(backoff.next_delay()) => {}
                    }
                    match before_reconnect().await {
                        Ok(next) => {
                            session = next.session;
                            if let Some(will) = next.will {
                                eventloop.mqtt_options.set_last_will(will);
                            }
                            break;
                        }
                        Err(error) => tracing::error!(
                            %error,
                            "cannot prepare the next MQTT session; retrying after a pause"
                        ),
                    }
                }
            }
        }
    }
}

/// Ends a task spawned for the session when the session task ends, by whatever return.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The first failure and every change of state is a line at warn; the same failure again is
/// at debug, so a broker that is down for hours costs a line, not a log full.
fn log_failure(address: &str, connected_at: Option<Instant>, last: Option<&str>, error: &str) {
    if let Some(since) = connected_at {
        if since.elapsed() < crate::backoff::SETTLED {
            // A broker closes a fresh connection when another client connects with the same
            // client id: the usual cause is a second box configured with this gateway id.
            tracing::warn!(broker = %address, %error, up_for = ?since.elapsed(), "the MQTT broker closed a connection that had just come up; if this repeats, another client may be using the same client id (a second box with this gateway id?) or the broker refuses a message or topic");
        } else {
            tracing::warn!(broker = %address, %error, up_for = ?since.elapsed(), "lost the MQTT broker; intake goes on, sync resumes on reconnect");
        }
    } else if last != Some(error) {
        tracing::warn!(broker = %address, %error, "cannot reach the MQTT broker; retrying with backoff");
    } else {
        tracing::debug!(broker = %address, %error, "MQTT broker still unreachable");
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
