//! The reference central profile service: the central side of docs/protocol.md. It stores each
//! gateway's events exactly once, applies them in seq order, and acks a gap-free prefix;
//! resolves identities, keeps the points ledger and serves the online channel (`api.rs`).

pub mod api;
mod batches;
pub(crate) mod db;
mod effects;
mod health;
mod profiles;
mod service;
mod store;

pub use effects::EffectsApplied;
pub use service::{check_batch, run, CentralError};
pub use store::{
    BatchOutcome, ChannelError, CustomerView, GatewayBatch, OnlinePurchase, Registered, Store,
    StoreError,
};
