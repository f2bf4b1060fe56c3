//! `storegate config push`: a signed layer published retained on its layer's topic, through
//! the fleet's broker, confirmed by the broker's PUBACK.

use std::time::Duration;

use rumqttc::{Event, Incoming, MqttOptions, QoS, Transport};

use crate::config::layers::LayerName;
use crate::config::MqttSection;
use crate::protocol::topics;

/// The topic a layer is published on (docs/protocol.md "Topics").
pub fn topic(
    layer: LayerName,
    store: Option<&str>,
    gateway: Option<&str>,
) -> Result<String, String> {
    let id = |name: &str, value: Option<&str>| -> Result<String, String> {
        let value = value.ok_or_else(|| format!("a {layer:?} layer needs --{name}"))?;
        if crate::protocol::is_topic_id(value) {
            Ok(value.to_string())
        } else {
            Err(format!(
                "--{name} `{value}` must match [a-z0-9][a-z0-9-]{{0,31}}"
            ))
        }
    };
    Ok(match layer {
        LayerName::Fleet => topics::CONFIG_FLEET.to_string(),
        LayerName::Store => topics::store_config(&id("store", store)?),
        LayerName::Gateway => {
            topics::GatewayTopics::new(&id("store", store)?, &id("gateway", gateway)?)
                .config_gateway()
        }
    })
}

/// Publishes `payload` retained on `topic` and waits (at most `within`) for the broker's
/// PUBACK.
pub async fn push(
    mqtt: &MqttSection,
    topic: &str,
    payload: Vec<u8>,
    within: Duration,
) -> Result<(), String> {
    let broker = mqtt.broker().map_err(|e| e.to_string())?;
    let mut options = MqttOptions::new(
        format!(
            "storegate-config-push-{}",
            ulid::Ulid::new().to_string().to_lowercase()
        ),
        broker.host.clone(),
        broker.port,
    );
    options.set_keep_alive(Duration::from_secs(mqtt.keep_alive_secs));
    crate::mqtt::set_packet_limits(&mut options);
    if broker.tls {
        options.set_transport(Transport::Tls(crate::mqtt::tls_configuration(mqtt)?));
    }
    let (client, mut eventloop) = crate::mqtt::client(options, 8);
    let exchange = async {
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Incoming::ConnAck(_))) => {
                    client
                        .publish(topic, QoS::AtLeastOnce, true, payload.clone())
                        .await
                        .map_err(|e| e.to_string())?;
                }
                Ok(Event::Incoming(Incoming::PubAck(_))) => return Ok(()),
                Ok(_) => {}
                Err(error) => {
                    return Err(format!("broker {}:{}: {error}", broker.host, broker.port))
                }
            }
        }
    };
    let outcome = tokio::time::timeout(within, exchange)
        .await
        .map_err(|_| format!("no PUBACK from the broker within {within:?}"))?;
    let _ = client.try_disconnect();
    outcome
}
