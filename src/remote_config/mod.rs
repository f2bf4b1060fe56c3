//! Signed remote config layers on a running gateway (docs/protocol.md "Config layers"): store
//! IT publishes a layer retained on `storegate/v1/config/fleet`, `…/{store}/config` or
//! `…/{store}/{gateway}/config`; this part checks it and applies it without a restart.
//!
//! A layer is applied only if a key in `[config] trusted_keys` signed it, it came on its own
//! layer's topic, its version is above the last applied version of that layer, and it sets
//! only what a remote layer may set (the live settings: `[coupons]` keys and budgets,
//! `[loyalty]`, `[receipts]`). The settings are then the config file's, overlaid
//! fleet < store < gateway, and must validate like the file's. Once applied, the journal writer must answer within
//! the health check's time or the previous settings come back. Every outcome is reported,
//! retained, on `…/config/state` (`ok`, `rejected` with the reason and the running config
//! untouched, or `rolled_back`). Accepted layers are kept in the journal, so a box that
//! restarts offline runs with them; they are checked against the trust list again at start.

pub mod push;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};

use crate::config::layers::{self, LayerName};
use crate::config::live::LiveSettings;
use crate::config::{CouponsSection, GatewayConfig};
use crate::journal::{Journal, JournalError};
use crate::loyalty::LoyaltySection;
use crate::protocol::SignedLayer;
use crate::sync::ConfigLayer;

/// How long the journal writer may take to answer after a layer is applied.
const HEALTH_CHECK: Duration = Duration::from_secs(5);

/// The keys a remote layer may set, by section.
const REMOTE_KEYS: &[(&str, &[&str])] = &[
    (
        "coupons",
        &[
            "public_keys",
            "offline_budget_hour_minor",
            "offline_budget_day_minor",
        ],
    ),
    (
        "loyalty",
        &["points_per_unit", "unit_minor", "offline_redeem_cap"],
    ),
    ("receipts", &["header", "footer", "qr_url"]),
];

/// A body that names only remote settings; the first other key otherwise.
fn check_keys(body: &serde_json::Value) -> Result<(), String> {
    let Some(sections) = body.as_object() else {
        return Err("the body is not a table".into());
    };
    for (section, keys) in sections {
        let Some((_, allowed)) = REMOTE_KEYS.iter().find(|(name, _)| name == section) else {
            return Err(format!("unknown_key: [{section}] is not a remote setting"));
        };
        let Some(keys) = keys.as_object() else {
            return Err(format!("unknown_key: {section} must be a table"));
        };
        if let Some(key) = keys.keys().find(|key| !allowed.contains(&key.as_str())) {
            return Err(format!(
                "unknown_key: {section}.{key} is not a remote setting"
            ));
        }
    }
    Ok(())
}

/// What a remote layer may set: the live settings, nothing else.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RemoteSettings {
    coupons: CouponsSection,
    #[serde(default)]
    loyalty: Option<LoyaltySection>,
    #[serde(default)]
    receipts: crate::devices::config::ReceiptsSection,
}

/// The remote-config part's owner.
pub struct RemoteConfig {
    journal: Journal,
    trusted: Vec<crate::codes::coupon::PublicKey>,
    /// The config file's remote-settable sections, as JSON: what layers overlay.
    base: serde_json::Value,
    /// The layers applied now, by name: (version, body).
    applied: BTreeMap<LayerName, (u64, serde_json::Value)>,
    settings: watch::Sender<Arc<LiveSettings>>,
    report: watch::Sender<Option<serde_json::Value>>,
    layers: mpsc::Receiver<ConfigLayer>,
}

/// Why applying a layer went wrong, or that there was nothing to apply.
#[derive(Debug)]
enum Outcome {
    /// The layer already applied, delivered again (the retained message after a reconnect, or
    /// a push repeated): nothing to do, nothing to report.
    Unchanged,
    Rejected(String),
    RolledBack(String),
}

impl RemoteConfig {
    /// Loads the accepted layers from the journal (those the trust list still verifies) and
    /// applies them over `config`. Returns the part, the live settings' readers, and the
    /// report for sync to publish.
    pub fn load(
        config: &GatewayConfig,
        journal: Journal,
        layers: mpsc::Receiver<ConfigLayer>,
    ) -> Result<
        (
            RemoteConfig,
            crate::config::live::Live,
            watch::Receiver<Option<serde_json::Value>>,
        ),
        JournalError,
    > {
        let base = serde_json::json!({
            "coupons": config.coupons,
            "loyalty": config.loyalty,
            "receipts": config.receipts,
        });
        let (settings, live) = watch::channel(Arc::new(LiveSettings::from_config(config)));
        let (report, reports) = watch::channel(None);
        let mut part = RemoteConfig {
            journal,
            trusted: config.config.trusted_keys.clone(),
            base,
            applied: BTreeMap::new(),
            settings,
            report,
            layers,
        };
        for (name, version, signed) in part.journal.outbox()?.config_layers()? {
            let restored = serde_json::from_str::<SignedLayer>(&signed)
                .map_err(|e| e.to_string())
                .and_then(|signed| {
                    layers::verify(&signed, &part.trusted).map_err(|e| e.to_string())
                });
            match restored {
                Ok(layer) => {
                    part.applied.insert(layer.layer, (version, layer.body));
                }
                Err(error) => tracing::warn!(
                    layer = name,
                    version,
                    %error,
                    "a stored config layer no longer verifies (trust list changed?); not applied"
                ),
            }
        }
        match part.compose(&part.applied) {
            Ok(settings) => {
                part.settings.send_replace(Arc::new(settings));
            }
            Err(error) => {
                tracing::error!(%error, "stored config layers do not validate over this config file; running the file's settings");
                part.applied.clear();
            }
        }
        part.publish("ok", None);
        Ok((part, live, reports))
    }

    /// Applies layers as they arrive until `shutdown`. A journal failure ends it.
    pub async fn run(
        mut self,
        shutdown: impl std::future::Future<Output = ()>,
    ) -> Result<(), JournalError> {
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                _ = &mut shutdown => return Ok(()),
                message = self.layers.recv() => match message {
                    Some((topic_layer, signed)) => self.receive(topic_layer, signed).await?,
                    None => return Ok(()),
                },
            }
        }
    }

    async fn receive(
        &mut self,
        topic_layer: LayerName,
        signed: SignedLayer,
    ) -> Result<(), JournalError> {
        match self.apply(topic_layer, &signed).await {
            Ok(version) => {
                tracing::info!(layer = ?topic_layer, version, "config layer applied");
                self.publish("ok", None);
            }
            Err(Outcome::Unchanged) => {
                tracing::debug!(layer = ?topic_layer, "config layer already applied");
            }
            Err(Outcome::Rejected(error)) => {
                tracing::warn!(layer = ?topic_layer, %error, "config layer rejected; running config untouched");
                self.publish("rejected", Some(error));
            }
            Err(Outcome::RolledBack(error)) => {
                tracing::warn!(layer = ?topic_layer, %error, "config layer rolled back");
                self.publish("rolled_back", Some(error));
            }
        }
        Ok(())
    }

    async fn apply(
        &mut self,
        topic_layer: LayerName,
        signed: &SignedLayer,
    ) -> Result<u64, Outcome> {
        let layer = layers::verify(signed, &self.trusted)
            .map_err(|refusal| Outcome::Rejected(refusal.to_string()))?;
        if layer.layer != topic_layer {
            return Err(Outcome::Rejected(format!(
                "layer_mismatch: a {:?} layer on the {topic_layer:?} layer's topic",
                layer.layer
            )));
        }
        check_keys(&layer.body).map_err(Outcome::Rejected)?;
        if let Some((applied, body)) = self.applied.get(&layer.layer) {
            if layer.version == *applied && layer.body == *body {
                return Err(Outcome::Unchanged);
            }
            if layer.version <= *applied {
                return Err(Outcome::Rejected(format!(
                    "replayed: version {} is not above the applied version {applied}",
                    layer.version
                )));
            }
        }
        let mut next = self.applied.clone();
        next.insert(layer.layer, (layer.version, layer.body.clone()));
        let settings = self
            .compose(&next)
            .map_err(|error| Outcome::RolledBack(format!("invalid: {error}")))?;
        let previous = self.settings.send_replace(Arc::new(settings));
        let healthy = matches!(
            tokio::time::timeout(HEALTH_CHECK, self.journal.ping()).await,
            Ok(Ok(()))
        ) && self.journal.health().is_ok();
        if !healthy {
            self.settings.send_replace(previous);
            return Err(Outcome::RolledBack(
                "health_check: the journal did not answer after the apply".into(),
            ));
        }
        let record = serde_json::to_string(signed).unwrap_or_default();
        if let Err(error) = self
            .journal
            .record_config_layer(layer.layer.as_str(), layer.version, record)
            .await
        {
            self.settings.send_replace(previous);
            return Err(Outcome::RolledBack(format!(
                "not stored, so not applied: {error}"
            )));
        }
        self.applied = next;
        Ok(layer.version)
    }

    /// The config file's settings overlaid with `applied` in layer order, validated.
    fn compose(
        &self,
        applied: &BTreeMap<LayerName, (u64, serde_json::Value)>,
    ) -> Result<LiveSettings, String> {
        let mut merged = self.base.clone();
        // BTreeMap order is the layers' order: fleet < store < gateway.
        for (_, body) in applied.values() {
            overlay(&mut merged, body);
        }
        if merged
            .get("loyalty")
            .is_some_and(serde_json::Value::is_null)
        {
            if let Some(object) = merged.as_object_mut() {
                object.remove("loyalty");
            }
        }
        // Keys were checked against REMOTE_KEYS already; what is left is a value's type.
        let remote: RemoteSettings = serde_json::from_value(merged).map_err(|e| e.to_string())?;
        remote.coupons.validate().map_err(|e| e.to_string())?;
        if let Some(loyalty) = &remote.loyalty {
            loyalty.validate().map_err(|e| e.to_string())?;
        }
        remote
            .receipts
            .validate()
            .map_err(|(key, message)| format!("{key}: {message}"))?;
        Ok(LiveSettings::from_sections(
            &remote.coupons,
            remote.loyalty,
            remote.receipts,
        ))
    }

    fn publish(&self, status: &str, error: Option<String>) {
        let applied: serde_json::Map<String, serde_json::Value> = self
            .applied
            .iter()
            .map(|(name, (version, _))| (name.as_str().to_string(), (*version).into()))
            .collect();
        let mut report = serde_json::json!({ "applied": applied, "status": status });
        if let Some(error) = error {
            report["error"] = error.into();
        }
        self.report.send_replace(Some(report));
    }
}

/// `storegate config show`: the config a gateway runs with — its file, environment overrides,
/// and the layers its journal holds (those its trust list still verifies) — and where each key
/// set came from. Keys not listed have their documented defaults.
pub fn show(path: &std::path::Path) -> Result<serde_json::Value, String> {
    let loaded = crate::config::load_gateway_with_origins(path).map_err(|e| e.to_string())?;
    let mut effective = serde_json::to_value(&loaded.table).map_err(|e| e.to_string())?;
    let mut origins: BTreeMap<String, String> = loaded
        .origins
        .iter()
        .map(|(key, origin)| {
            let origin = match origin {
                crate::config::Origin::File { path } => format!("file {path}"),
                crate::config::Origin::Env { var } => format!("env {var}"),
            };
            (key.clone(), origin)
        })
        .collect();
    let journal = &loaded.config.journal.path;
    let mut layers = Vec::new();
    if journal.exists() {
        // A journal no daemon has opened since before layers existed holds none.
        let stored = crate::journal::Outbox::open(journal)
            .and_then(|outbox| outbox.config_layers())
            .unwrap_or_default();
        for (_, version, signed) in stored {
            let Ok(signed) = serde_json::from_str::<SignedLayer>(&signed) else {
                continue;
            };
            if let Ok(layer) = layers::verify(&signed, &loaded.config.config.trusted_keys) {
                layers.push((layer.layer, version, layer.body));
            }
        }
    }
    layers.sort_by_key(|(name, _, _)| *name);
    for (name, version, body) in &layers {
        overlay(&mut effective, body);
        for (section, keys) in body.as_object().into_iter().flatten() {
            for key in keys.as_object().into_iter().flat_map(|k| k.keys()) {
                origins.insert(
                    format!("{section}.{key}"),
                    format!("layer {} v{version}", name.as_str()),
                );
            }
        }
    }
    Ok(serde_json::json!({ "config": effective, "origins": origins }))
}

/// Sets every key of `layer` in `into`: tables merge key by key, anything else replaces.
fn overlay(into: &mut serde_json::Value, layer: &serde_json::Value) {
    match (into, layer) {
        (serde_json::Value::Object(into), serde_json::Value::Object(layer)) => {
            for (key, value) in layer {
                match into.get_mut(key) {
                    Some(existing) if existing.is_object() && value.is_object() => {
                        overlay(existing, value)
                    }
                    _ => {
                        into.insert(key.clone(), value.clone());
                    }
                }
            }
        }
        (into, layer) => *into = layer.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn later_layers_win_key_by_key() {
        let mut merged = serde_json::json!({
            "coupons": { "public_keys": ["a"], "offline_budget_hour_minor": 100, "offline_budget_day_minor": 500 }
        });
        overlay(
            &mut merged,
            &serde_json::json!({ "coupons": { "offline_budget_hour_minor": 50 } }),
        );
        overlay(
            &mut merged,
            &serde_json::json!({ "loyalty": { "points_per_unit": 2 }, "coupons": { "public_keys": ["b", "c"] } }),
        );
        assert_eq!(
            merged,
            serde_json::json!({
                "coupons": { "public_keys": ["b", "c"], "offline_budget_hour_minor": 50, "offline_budget_day_minor": 500 },
                "loyalty": { "points_per_unit": 2 }
            })
        );
    }
}
