//! Topic names (prefix `storegate/v1`).

/// Every topic starts here; a new protocol version is a new prefix.
pub const PREFIX: &str = "storegate/v1";

/// The topics of one gateway.
#[derive(Debug, Clone)]
pub struct GatewayTopics {
    base: String,
    store: String,
}

impl GatewayTopics {
    /// The topics of gateway `gateway` of store `store`.
    pub fn new(store: &str, gateway: &str) -> GatewayTopics {
        GatewayTopics {
            base: format!("{PREFIX}/{store}/{gateway}"),
            store: store.to_string(),
        }
    }
    /// `…/events`: event batches, gateway to central.
    pub fn events(&self) -> String {
        format!("{}/events", self.base)
    }
    /// `…/ack`: central's cumulative acks.
    pub fn ack(&self) -> String {
        format!("{}/ack", self.base)
    }
    /// `…/status`: retained status and last will.
    pub fn status(&self) -> String {
        format!("{}/status", self.base)
    }
    /// `…/rpc/req`: requests to central.
    pub fn rpc_req(&self) -> String {
        format!("{}/rpc/req", self.base)
    }
    /// `…/rpc/res`: central's answers.
    pub fn rpc_res(&self) -> String {
        format!("{}/rpc/res", self.base)
    }
    /// `…/orders`: order status from central.
    pub fn orders(&self) -> String {
        format!("{}/orders", self.base)
    }
    /// `…/config`: the gateway's own config layer.
    pub fn config_gateway(&self) -> String {
        format!("{}/config", self.base)
    }
    /// `storegate/v1/{store}/config`: the store's config layer.
    pub fn config_store(&self) -> String {
        store_config(&self.store)
    }
    /// `…/config/state`: the applied config report.
    pub fn config_state(&self) -> String {
        format!("{}/config/state", self.base)
    }
    /// Every topic a gateway subscribes to.
    pub fn inbound(&self) -> Vec<String> {
        vec![
            self.ack(),
            self.rpc_res(),
            self.orders(),
            IDENTITY.to_string(),
            CONFIG_FLEET.to_string(),
            self.config_store(),
            self.config_gateway(),
        ]
    }
}

/// `storegate/v1/{store}/config`: store `store`'s config layer, read by each of its gateways.
pub fn store_config(store: &str) -> String {
    format!("{PREFIX}/{store}/config")
}

/// Identity changes, central to every gateway.
pub const IDENTITY: &str = "storegate/v1/identity";
/// The fleet-wide config layer.
pub const CONFIG_FLEET: &str = "storegate/v1/config/fleet";
/// Central's retained online/offline status.
pub const CENTRAL_STATUS: &str = "storegate/v1/central/status";
/// Central's subscription for every gateway's batches.
pub const ALL_EVENTS: &str = "storegate/v1/+/+/events";
/// Central's subscription for every gateway's rpc requests.
pub const ALL_RPC_REQ: &str = "storegate/v1/+/+/rpc/req";

/// Splits `storegate/v1/{store}/{gateway}/{rest}` into its parts.
pub fn split_gateway_topic(topic: &str) -> Option<(&str, &str, &str)> {
    let rest = topic.strip_prefix(PREFIX)?.strip_prefix('/')?;
    let (store, rest) = rest.split_once('/')?;
    let (gateway, rest) = rest.split_once('/')?;
    Some((store, gateway, rest))
}

/// True for ids usable as docs/protocol.md topic segments: `[a-z0-9][a-z0-9-]{0,31}`.
pub fn is_topic_id(id: &str) -> bool {
    let bytes = id.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 32
        && (bytes[0].is_ascii_lowercase() || bytes[0].is_ascii_digit())
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_ids() {
        assert!(is_topic_id("s-042"));
        assert!(is_topic_id("gw1"));
        assert!(!is_topic_id("-gw"));
        assert!(!is_topic_id("GW"));
        assert!(!is_topic_id("a/b"));
        assert!(!is_topic_id(&"a".repeat(33)));
    }

    #[test]
    fn gateway_topics_round_trip() {
        let t = GatewayTopics::new("s-042", "gw-1");
        assert_eq!(t.events(), "storegate/v1/s-042/gw-1/events");
        assert_eq!(t.config_store(), "storegate/v1/s-042/config");
        assert_eq!(
            split_gateway_topic(&t.rpc_req()),
            Some(("s-042", "gw-1", "rpc/req"))
        );
        assert_eq!(split_gateway_topic("other/v1/a/b/events"), None);
    }
}
