//! The wire contract of `shared/PROTOCOL.md` (version 1), shared by the gateway's sync part and
//! the reference central: topic names, message types, event bodies and limits.

pub mod events;
pub mod messages;
pub mod topics;

pub use events::*;
pub use messages::*;

/// PROTOCOL.md: "no payload exceeds 256 KiB"; larger inbound payloads are refused and counted.
pub const MAX_PAYLOAD_BYTES: usize = 256 * 1024;

/// rumqttc refuses packets above its limit by dropping the connection; set it well above the
/// protocol's payload cap (topic and header bytes come on top) so an oversized payload reaches
/// our own check, is counted and ignored, instead of looping the connection on a retained one.
pub const MAX_PACKET_BYTES: usize = 1024 * 1024;

/// Formats a wall-clock time as PROTOCOL.md wants it: RFC 3339 UTC with milliseconds.
pub fn timestamp(at: std::time::SystemTime) -> String {
    // Times before 1970 cannot be formatted; a clock that far back is already flagged unsynced.
    let at = at.max(std::time::UNIX_EPOCH);
    humantime::format_rfc3339_millis(at).to_string()
}
