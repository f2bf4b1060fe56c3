//! Request/response over MQTT with deadlines (docs/protocol.md "RPC"). A call that has no answer by
//! its deadline, or is made while disconnected, fails as `Unreachable`/`Timeout` so the caller
//! falls back to its offline policy at once instead of waiting on the network.

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use rumqttc::{AsyncClient, QoS};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use crate::protocol::{timestamp, RpcError, RpcRequest, RpcResponse};

/// Why an rpc call has no answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RpcCallError {
    /// Not connected, or the request could not be sent.
    #[error("central is unreachable")]
    Unreachable,
    /// No answer by the deadline.
    #[error("central did not answer in time")]
    Timeout,
    /// Central answered with an error.
    #[error("central refused: {} ({})", .0.code, .0.message)]
    Refused(RpcError),
}

pub(super) struct Call {
    method: String,
    params: serde_json::Value,
    timeout: Duration,
    reply: oneshot::Sender<Result<serde_json::Value, RpcCallError>>,
}

impl Call {
    pub(super) fn fail(self, error: RpcCallError) {
        let _ = self.reply.send(Err(error));
    }
}

/// A handle for making rpc calls; cheap to clone.
#[derive(Clone)]
pub struct RpcClient {
    calls: mpsc::Sender<Call>,
    timeout: Duration,
}

impl RpcClient {
    pub(super) fn channel(timeout: Duration) -> (RpcClient, mpsc::Receiver<Call>) {
        let (calls, receiver) = mpsc::channel(64);
        (RpcClient { calls, timeout }, receiver)
    }

    /// Calls `method` on central; resolves by the configured deadline at the latest.
    pub async fn call(
        &self,
        method: &str,
        params: serde_json::Value,
    ) -> Result<serde_json::Value, RpcCallError> {
        self.call_within(method, params, self.timeout).await
    }

    /// Calls `method` with a deadline of its own (a till waiting on an identification).
    pub async fn call_within(
        &self,
        method: &str,
        params: serde_json::Value,
        timeout: Duration,
    ) -> Result<serde_json::Value, RpcCallError> {
        let (reply, answer) = oneshot::channel();
        let call = Call {
            method: method.to_string(),
            params,
            timeout,
            reply,
        };
        self.calls
            .send(call)
            .await
            .map_err(|_| RpcCallError::Unreachable)?;
        match tokio::time::timeout(timeout + Duration::from_millis(50), answer).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(RpcCallError::Unreachable),
            Err(_) => Err(RpcCallError::Timeout),
        }
    }
}

struct Waiting {
    deadline: Instant,
    reply: oneshot::Sender<Result<serde_json::Value, RpcCallError>>,
}

/// Calls sent and not yet answered, by request id.
#[derive(Default)]
pub(super) struct Pending {
    waiting: HashMap<String, Waiting>,
}

impl Pending {
    pub fn send(&mut self, call: Call, client: &AsyncClient, topic: &str) {
        let id = ulid::Ulid::new().to_string();
        let request = RpcRequest {
            id: id.clone(),
            method: call.method,
            params: call.params,
            deadline: timestamp(SystemTime::now() + call.timeout),
        };
        let Ok(payload) = serde_json::to_vec(&request) else {
            let _ = call.reply.send(Err(RpcCallError::Unreachable));
            return;
        };
        if client
            .try_publish(topic, QoS::AtLeastOnce, false, payload)
            .is_err()
        {
            let _ = call.reply.send(Err(RpcCallError::Unreachable));
            return;
        }
        self.waiting.insert(
            id,
            Waiting {
                deadline: Instant::now() + call.timeout,
                reply: call.reply,
            },
        );
    }

    pub fn complete(&mut self, response: RpcResponse) {
        // An answer to a call that already timed out (or to another process) is ignored.
        let Some(waiting) = self.waiting.remove(&response.id) else {
            return;
        };
        let result = match (response.ok, response.result, response.error) {
            (true, result, _) => Ok(result.unwrap_or(serde_json::Value::Null)),
            (false, _, Some(error)) => Err(RpcCallError::Refused(error)),
            (false, _, None) => Err(RpcCallError::Refused(RpcError {
                code: "unknown".into(),
                message: "central refused without an error".into(),
            })),
        };
        let _ = waiting.reply.send(result);
    }

    pub fn expire(&mut self) {
        let now = Instant::now();
        let expired: Vec<String> = self
            .waiting
            .iter()
            .filter(|(_, w)| w.deadline <= now)
            .map(|(id, _)| id.clone())
            .collect();
        for id in expired {
            if let Some(waiting) = self.waiting.remove(&id) {
                let _ = waiting.reply.send(Err(RpcCallError::Timeout));
            }
        }
    }

    pub fn fail_all(&mut self, error: RpcCallError) {
        for (_, waiting) in self.waiting.drain() {
            let _ = waiting.reply.send(Err(error.clone()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Never connected: publishes only queue (in the event loop's channel, kept alive by the
    /// second half), which is all `Pending::send` needs.
    fn client() -> (AsyncClient, rumqttc::EventLoop) {
        AsyncClient::new(rumqttc::MqttOptions::new("t", "127.0.0.1", 1), 16)
    }

    fn call(
        timeout: Duration,
    ) -> (
        Call,
        oneshot::Receiver<Result<serde_json::Value, RpcCallError>>,
    ) {
        let (reply, answer) = oneshot::channel();
        let call = Call {
            method: "coupon.reserve".into(),
            params: serde_json::json!({}),
            timeout,
            reply,
        };
        (call, answer)
    }

    #[tokio::test(start_paused = true)]
    async fn a_call_expires_at_its_deadline_and_not_before() {
        let (client, _eventloop) = client();
        let mut pending = Pending::default();
        let (c, mut answer) = call(Duration::from_millis(300));
        pending.send(c, &client, "t");
        tokio::time::advance(Duration::from_millis(299)).await;
        pending.expire();
        assert!(answer.try_recv().is_err(), "expired early");
        tokio::time::advance(Duration::from_millis(1)).await;
        pending.expire();
        assert_eq!(answer.try_recv().unwrap(), Err(RpcCallError::Timeout));
    }

    #[tokio::test(start_paused = true)]
    async fn answers_complete_their_call_and_late_or_foreign_ones_are_ignored() {
        let (client, _eventloop) = client();
        let mut pending = Pending::default();
        let (c, answer) = call(Duration::from_secs(1));
        pending.send(c, &client, "t");
        let id = pending.waiting.keys().next().unwrap().clone();
        pending.complete(RpcResponse {
            id: "someone-else".into(),
            ok: true,
            result: None,
            error: None,
        });
        pending.complete(RpcResponse {
            id: id.clone(),
            ok: false,
            result: None,
            error: Some(RpcError {
                code: "already_redeemed".into(),
                message: "".into(),
            }),
        });
        assert!(
            matches!(answer.await.unwrap(), Err(RpcCallError::Refused(e)) if e.code == "already_redeemed")
        );
        // The same answer again (QoS 1 duplicate) finds nothing waiting.
        pending.complete(RpcResponse {
            id,
            ok: true,
            result: None,
            error: None,
        });
        assert!(pending.waiting.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn a_lost_connection_fails_every_waiting_call_as_unreachable() {
        let (client, _eventloop) = client();
        let mut pending = Pending::default();
        let (a, answer_a) = call(Duration::from_secs(1));
        let (b, answer_b) = call(Duration::from_secs(1));
        pending.send(a, &client, "t");
        pending.send(b, &client, "t");
        pending.fail_all(RpcCallError::Unreachable);
        assert_eq!(answer_a.await.unwrap(), Err(RpcCallError::Unreachable));
        assert_eq!(answer_b.await.unwrap(), Err(RpcCallError::Unreachable));
    }
}
