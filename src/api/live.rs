//! `GET /v1/events`: the live event stream (server-sent events) a till page or kiosk UI listens
//! to: every scan from its scanners and cameras, already interpreted (coupon, app identity,
//! GS1 Digital Link, text). `?till=kiosk-1` narrows it to one till.
//!
//! Live only: a listener that falls behind by more than the buffer gets a `lagged` event with
//! the count it missed instead of slowing the devices down; what must not be missed (sales,
//! identifications) is in the journal, not here.

use std::convert::Infallible;
use std::sync::Arc;

use axum::extract::{Query, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::stream::{self, Stream, StreamExt};
use tokio::sync::broadcast;

use super::ApiState;

/// Events buffered per listener before it counts as lagging.
const BUFFER: usize = 1024;

/// The publishing side, shared by the daemon's device router.
#[derive(Clone)]
pub struct LiveEvents(broadcast::Sender<Arc<serde_json::Value>>);

impl Default for LiveEvents {
    fn default() -> Self {
        Self::new()
    }
}

impl LiveEvents {
    /// A stream with no subscribers yet.
    pub fn new() -> LiveEvents {
        LiveEvents(broadcast::channel(BUFFER).0)
    }

    /// Sends to every listener; with none, the event is simply gone.
    pub fn publish(&self, event: serde_json::Value) {
        let _ = self.0.send(Arc::new(event));
    }
}

#[derive(Debug, serde::Deserialize)]
pub(super) struct Filter {
    till: Option<String>,
}

pub(super) async fn stream(
    State(state): State<ApiState>,
    Query(filter): Query<Filter>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let receiver = state.live.0.subscribe();
    // The first event says "subscribed": a client can act (present a code) knowing it will see
    // the outcome.
    let ready = stream::iter([Ok::<_, Infallible>(
        Event::default().event("ready").data("{}"),
    )]);
    let events = stream::unfold((receiver, filter), |(mut receiver, filter)| async move {
        loop {
            match receiver.recv().await {
                Ok(event) => {
                    let wanted = filter
                        .till
                        .as_deref()
                        .is_none_or(|till| event["till"] == till);
                    if !wanted {
                        continue;
                    }
                    let kind = event["type"].as_str().unwrap_or("event").to_string();
                    let sse = Event::default().event(kind).data(event.to_string());
                    return Some((Ok(sse), (receiver, filter)));
                }
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    let sse = Event::default()
                        .event("lagged")
                        .data(serde_json::json!({ "missed": missed }).to_string());
                    return Some((Ok(sse), (receiver, filter)));
                }
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    });
    Sse::new(ready.chain(events)).keep_alive(KeepAlive::default())
}
