//! The API's accept loop: HTTP/1.1 connections with bounded header reads, bounded idle time
//! and bounded numbers, so idle or half-sent sockets from one host cannot starve the tills.
//!
//! `axum::serve` has no header timeout and no connection cap: about 1,000 idle sockets (the
//! fd limit) made the API unreachable, and 8,000 half-sent headers grew memory to 259 MB.
//! Here every connection holds a permit from a fixed pool, each remote address may hold only
//! a share of it (`[api] connections_per_peer`), a client has `[api] header_timeout_ms` to
//! send each request's headers (idle keep-alive included: hyper starts the clock whenever it
//! waits for a request head), and a connection's read buffer is capped.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::metrics::Metrics;

/// Connections served at once. The unit's `LimitNOFILE` leaves room for these beside the
/// journal, devices and the broker connection.
pub const MAX_CONNECTIONS: usize = 512;

/// How the accept loop bounds its clients (`[api]` settings).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Time a client has to send a request's headers, from connecting or its last response.
    pub header_timeout: Duration,
    /// Connections one remote address may hold: a misbehaving host gets this share, the
    /// other tills keep the rest.
    pub per_peer: usize,
}

/// A connection's read buffer; request heads beyond `MAX_HEADER_BYTES` get a 431.
const MAX_BUFFER_BYTES: usize = 64 * 1024;
const MAX_HEADER_BYTES: usize = 16 * 1024;

/// How long in-flight requests may take to finish after shutdown begins.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// Serves `app` on `listener` until `shutdown` resolves, then lets in-flight requests finish
/// (each already committed or refused) for a bounded time.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: Limits,
    metrics: Arc<Metrics>,
    shutdown: impl std::future::Future<Output = ()>,
) -> std::io::Result<()> {
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .max_buf_size(MAX_BUFFER_BYTES)
        .max_header_size(MAX_HEADER_BYTES);
    let admission = Admission::new(MAX_CONNECTIONS, limits.per_peer);
    let graceful = GracefulShutdown::new();
    let mut connections = tokio::task::JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            _ = &mut shutdown => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors or a connection reset before accept: the
                    // listener itself is fine; pause so an EMFILE storm does not spin.
                    metrics.api_connection_refused("accept_failed", &error.to_string());
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Some(ticket) = admission.admit(peer.ip()) else {
            metrics.api_connection_refused("connection_limit", &peer.to_string());
            drop(stream);
            continue;
        };
        let connection = http.serve_connection(io(stream), TowerToHyperService::new(app.clone()));
        let connection = graceful.watch(connection);
        connections.spawn(async move {
            // Errors here are a client's own broken connection (reset, header timeout).
            let _ = connection.await;
            drop(ticket);
        });
    }
    drop(listener);
    if tokio::time::timeout(DRAIN_TIMEOUT, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("API connections still open {DRAIN_TIMEOUT:?} after shutdown; closing them");
    }
    connections.shutdown().await;
    Ok(())
}

fn io(stream: TcpStream) -> TokioIo<TcpStream> {
    // Small JSON answers: send them now rather than waiting to coalesce.
    let _ = stream.set_nodelay(true);
    TokioIo::new(stream)
}

/// Connections held per remote address.
type PeerCounts = Arc<Mutex<HashMap<IpAddr, usize>>>;

/// Who may open one more connection.
#[derive(Clone)]
struct Admission {
    slots: Arc<Semaphore>,
    per_peer: PeerCounts,
    per_peer_max: usize,
}

/// A held connection slot; gives it back when dropped.
struct Ticket {
    _slot: OwnedSemaphorePermit,
    ip: IpAddr,
    counts: PeerCounts,
}

impl Admission {
    fn new(max: usize, per_peer_max: usize) -> Admission {
        Admission {
            slots: Arc::new(Semaphore::new(max)),
            per_peer: Arc::default(),
            per_peer_max,
        }
    }

    fn admit(&self, ip: IpAddr) -> Option<Ticket> {
        let slot = self.slots.clone().try_acquire_owned().ok()?;
        let mut counts = self.per_peer.lock().ok()?;
        let count = counts.entry(ip).or_insert(0);
        if *count >= self.per_peer_max {
            return None;
        }
        *count += 1;
        Some(Ticket {
            _slot: slot,
            ip,
            counts: self.per_peer.clone(),
        })
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let Ok(mut held) = self.counts.lock() else {
            return;
        };
        if let Some(count) = held.get_mut(&self.ip) {
            *count -= 1;
            if *count == 0 {
                held.remove(&self.ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_peer_gets_its_share_and_the_pool_bounds_everyone() {
        let admission = Admission::new(7, 3);
        let ip = |n: u8| IpAddr::from([192, 0, 2, n]);
        let held: Vec<Ticket> = (0..5).filter_map(|_| admission.admit(ip(7))).collect();
        assert_eq!(held.len(), 3, "one peer gets its share");
        let others: Vec<Ticket> = (8..12).filter_map(|n| admission.admit(ip(n))).collect();
        assert_eq!(others.len(), 4, "other tills still get in");
        assert!(admission.admit(ip(12)).is_none(), "the pool is full");
        drop(held);
        assert!(admission.admit(ip(7)).is_some(), "slots come back on close");
    }
}
