//! The embedded MQTT broker (rumqttd) that `storegate demo`, `storegate broker` and the tests
//! use on loopback, so nothing needs installing. Production uses a real broker (Mosquitto,
//! EMQX, …); this one is deliberately plain TCP and bound to the address given.

use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// Payload limit of the embedded broker: above the protocol's 256 KiB so the gateway's and
/// central's own oversize refusals are what the tests exercise.
const BROKER_MAX_PAYLOAD: usize = 2 * 1024 * 1024;

/// Why the embedded broker did not start.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    /// rumqttd refused its config.
    #[error("embedded broker config: {0}")]
    Config(String),
    /// Its thread could not start.
    #[error("cannot start the embedded broker thread: {0}")]
    Thread(std::io::Error),
    /// It did not listen in time.
    #[error("embedded broker did not start listening on {0} within 5 s")]
    NotListening(SocketAddr),
    /// Another process holds the address.
    #[error("cannot listen on {addr} for the embedded broker (is another broker running there?): {source}")]
    AddressInUse {
        /// The address.
        addr: SocketAddr,
        /// Why the bind failed.
        source: std::io::Error,
    },
}

/// Starts rumqttd on `listen` in a thread of its own and returns once it accepts connections.
///
/// rumqttd has no shutdown API, so the thread lives until the process exits; callers that need
/// to stop a broker (tests of a broker restart) run `storegate broker` as a process instead.
pub fn start_embedded(listen: SocketAddr) -> Result<(), BrokerError> {
    // rumqttd binds inside its own thread and only logs a failure there, and the readiness
    // probe below would be answered by whoever holds the port: check the port is ours first.
    std::net::TcpListener::bind(listen)
        .map_err(|source| BrokerError::AddressInUse {
            addr: listen,
            source,
        })
        .map(drop)?;
    let config = serde_json::json!({
        "id": 0,
        "router": {
            "id": 0,
            "max_connections": 1024,
            "max_outgoing_packet_count": 200,
            "max_segment_size": 8 * 1024 * 1024,
            "max_segment_count": 4,
        },
        "v4": { "1": {
            "name": "v4-1",
            "listen": listen.to_string(),
            "next_connection_delay_ms": 1,
            "connections": {
                "connection_timeout_ms": 10000,
                "max_payload_size": BROKER_MAX_PAYLOAD,
                "max_inflight_count": 500,
                "dynamic_filters": true,
            },
        }},
    });
    let config: rumqttd::Config =
        serde_json::from_value(config).map_err(|e| BrokerError::Config(e.to_string()))?;
    std::thread::Builder::new()
        .name("mqtt-broker".into())
        .spawn(move || {
            let mut broker = rumqttd::Broker::new(config);
            if let Err(error) = broker.start() {
                tracing::error!(%error, "embedded broker stopped");
            }
        })
        .map_err(BrokerError::Thread)?;
    wait_listening(listen, Duration::from_secs(5))
}

/// rumqttd gives no readiness signal; the listening socket is the signal, checked a bounded
/// number of times.
fn wait_listening(addr: SocketAddr, within: Duration) -> Result<(), BrokerError> {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Err(BrokerError::NotListening(addr))
}

/// A free loopback port (bind to port 0, read it, release it).
pub fn free_loopback_addr() -> std::io::Result<SocketAddr> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    listener.local_addr()
}
