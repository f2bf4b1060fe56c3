//! `/healthz`: what each part of the daemon is really doing, for IT's monitoring and
//! `storegate status`.

use crate::devices::DeviceState;

use super::ApiState;

/// The report and the parts that are broken (empty when healthy).
pub(super) struct Report {
    pub detail: serde_json::Value,
    pub broken: Vec<&'static str>,
}

pub(super) fn report(state: &ApiState) -> Report {
    let mut broken = Vec::new();
    let position = *state.journal.position().borrow();
    let journal_error = state.journal.health().err();
    if journal_error.is_some() {
        broken.push("journal");
    }
    let sync = state.sync.borrow().clone();
    if sync.failing.is_some() {
        broken.push("sync");
    }
    let devices = state.devices.statuses();
    if devices.iter().any(|d| d.state == DeviceState::Down) {
        broken.push("devices");
    }
    let mut alarms: Vec<&str> = sync.alarms.iter().copied().collect();
    if position.disk_full {
        alarms.push("storage_full");
    } else if position.storage_low {
        alarms.push("storage_low");
    }
    let part = |ok: bool| if ok { "ok" } else { "broken" };
    let detail = serde_json::json!({
        "status": if broken.is_empty() { "ok" } else { "broken" },
        "broken": broken,
        "alarms": alarms,
        "journal": {
            "state": part(journal_error.is_none()),
            "error": journal_error,
            "last_seq": position.last_seq,
            "acked_upto": position.acked_upto,
            "backlog": position.backlog(),
        },
        "sync": {
            "state": part(sync.failing.is_none()),
            "error": sync.failing,
            "connected": sync.connected,
            "session": sync.session,
        },
        // Kept for scripts written against the first health answer.
        "mqtt": {
            "connected": sync.connected,
            "session": sync.session,
        },
        "api": { "state": "ok" },
        "devices": devices.iter().map(|d| serde_json::json!({
            "name": d.name,
            "kind": d.kind,
            "state": d.state,
            "error": d.last_error,
        })).collect::<Vec<_>>(),
    });
    Report { detail, broken }
}
