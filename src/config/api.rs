//! `[api]`: the local HTTP API for tills and kiosks.

use std::net::SocketAddr;

use serde::Deserialize;

/// The local HTTP API for tills and kiosks.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiSection {
    /// Listen address; loopback by default so only the box's own tills reach it.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// Bearer tokens; when non-empty every `/v1` call and `/metrics` need one of them, and
    /// `/healthz` shows only `{"status"}` without one.
    #[serde(default)]
    pub tokens: Vec<String>,
    /// Time a client has to send a request's headers (also the idle time of a kept-alive
    /// connection); a socket that sends nothing is closed after it.
    #[serde(default = "default_header_timeout_ms")]
    pub header_timeout_ms: u64,
    /// Connections one remote address may hold; the tills of a store each have their own.
    #[serde(default = "default_connections_per_peer")]
    pub connections_per_peer: usize,
}

impl Default for ApiSection {
    fn default() -> Self {
        ApiSection {
            listen: default_listen(),
            tokens: Vec::new(),
            header_timeout_ms: default_header_timeout_ms(),
            connections_per_peer: default_connections_per_peer(),
        }
    }
}

fn default_header_timeout_ms() -> u64 {
    10_000
}

fn default_connections_per_peer() -> usize {
    32
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8080))
}
