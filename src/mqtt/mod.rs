//! One MQTT session driver for both ends of docs/protocol.md: the gateway's sync part and the
//! reference central. It owns what every client of the fleet must get right the same way:
//! packet limits, TLS, reconnect pacing, forgetting rumqttc's in-memory session, and logging
//! each change of connection state with the broker's address.
//!
//! # Why the limits are what they are
//! rumqttc drops the whole connection on an incoming packet above its limit, and a retained
//! one comes back on every reconnect: one oversized retained message would loop every client
//! of the fleet. So the client's incoming limit stays far above docs/protocol.md's 256 KiB
//! (`MAX_INCOMING_PACKET_BYTES`), the broker caps packets below it (`config/mosquitto.conf`
//! `max_packet_size`), and oversized payloads reach the receiver's own check, where they are
//! counted and ignored.

mod receipts;
mod session;

pub use receipts::Receipt;
pub use session::{drive, forget_session, tls_configuration, Reconnect, SessionEvent};

/// The largest packet a client accepts from the broker. Far above the protocol's payload cap
/// so an oversized payload is refused by our check instead of by a disconnect; the broker's
/// `max_packet_size` bounds what can arrive.
pub const MAX_INCOMING_PACKET_BYTES: usize = 16 * 1024 * 1024;

/// The largest packet a client sends: the protocol's payload cap plus topic and header room.
pub const MAX_OUTGOING_PACKET_BYTES: usize = crate::protocol::MAX_PAYLOAD_BYTES + 4 * 1024;

/// A client's event loop with the socket options every storegate client uses: no Nagle
/// delay, so an rpc (a till waiting on `profile.lookup`, a coupon reservation) is not held
/// back waiting for the peer's delayed ACK.
pub fn client(
    options: rumqttc::MqttOptions,
    capacity: usize,
) -> (rumqttc::AsyncClient, rumqttc::EventLoop) {
    let (client, mut eventloop) = rumqttc::AsyncClient::new(options, capacity);
    let mut network = rumqttc::NetworkOptions::new();
    network.set_tcp_nodelay(true);
    eventloop.set_network_options(network);
    (client, eventloop)
}

/// Applies the packet limits every storegate client uses.
pub fn set_packet_limits(options: &mut rumqttc::MqttOptions) {
    options.set_max_packet_size(MAX_INCOMING_PACKET_BYTES, MAX_OUTGOING_PACKET_BYTES);
}
