//! storegate: an in-store edge gateway.
//!
//! # Layout
//! The data path runs one way:
//! - [`devices`] (card readers, each supervised on its own thread) and [`api`] turn till and
//!   device input into typed events; [`identity`] turns a card or phone into a pseudonymous
//!   identifier and a profile ref (provisional while offline);
//! - [`journal`] commits each event with the next `seq` in one SQLite transaction: the single
//!   source of truth, from which every output is derived;
//! - [`sync`] pumps the journal's outbox to the broker over MQTT and moves on only when
//!   [`central`] acks, per [`protocol`];
//! - [`central`] is the reference profile service on the other side of the broker;
//! - [`mqtt`] is the one MQTT session driver both sides use; [`config`] loads and validates
//!   settings; [`daemon`] wires and supervises the gateway's parts; [`metrics`] counts and
//!   logs every refusal in one place; `broker` embeds rumqttd for the demo and tests
//!   (feature `embedded-broker`).
//!
//! The binary (`src/main.rs`) adds the command line (`cli`), the demo and the benchmark.

#![deny(unsafe_code)]

pub mod api;
pub mod backoff;
#[cfg(feature = "embedded-broker")]
pub mod broker;
pub mod central;
pub mod clock;
pub mod codes;
pub mod config;
pub mod coupons;
pub mod daemon;
pub mod devices;
pub mod identity;
pub mod journal;
pub mod loyalty;
pub mod metrics;
pub mod mqtt;
pub mod protocol;
pub mod remote_config;
pub mod sync;
