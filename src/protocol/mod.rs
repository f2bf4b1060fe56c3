//! The wire contract of `docs/protocol.md` (version 1), shared by the gateway's sync part and
//! the reference central: topic names, message types, event bodies and limits.

pub mod events;
pub mod messages;
pub mod topics;

pub use events::*;
pub use messages::*;
pub use topics::is_topic_id;

/// docs/protocol.md: "no payload exceeds 256 KiB"; larger inbound payloads are refused and counted.
pub const MAX_PAYLOAD_BYTES: usize = 256 * 1024;

/// docs/protocol.md: `seq` and `rev` lie in 1 … 2^53 − 1 (exact in every JSON reader).
pub const MAX_SEQ: u64 = (1 << 53) - 1;

/// Whether `n` is a `seq` or `rev` docs/protocol.md allows.
pub fn is_valid_seq(n: u64) -> bool {
    (1..=MAX_SEQ).contains(&n)
}

/// Formats a wall-clock time as docs/protocol.md wants it: RFC 3339 UTC with milliseconds.
pub fn timestamp(at: std::time::SystemTime) -> String {
    // Times before 1970 cannot be formatted; a clock that far back is already flagged unsynced.
    let at = at.max(std::time::UNIX_EPOCH);
    humantime::format_rfc3339_millis(at).to_string()
}
