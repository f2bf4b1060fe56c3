//! The reference central profile service: the central side of docs/protocol.md. It stores each
//! gateway's events exactly once, applies them in seq order, and acks a gap-free prefix.

mod profiles;
mod service;
mod store;

pub use service::{run, CentralError};
pub use store::{BatchOutcome, Store, StoreError};
