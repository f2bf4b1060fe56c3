//! Acking deliveries by hand, for a session whose owner takes time over each message (central
//! stores a batch before it is done with it).
//!
//! With rumqttc's automatic acks a client acks each QoS 1 message as it reads it, so the
//! broker sends everything it has and the client must queue it all or stop reading; a client
//! that stops reading stops answering the broker's keep-alive too, and loses its session (and,
//! with a clean session, everything the broker held for it). Acking once a message is dealt
//! with instead lets the broker's in-flight limit per client (Mosquitto's
//! `max_inflight_messages`, rumqttd's 100) hold the rest, and a slower instance of a shared
//! subscription is sent less, while its event loop keeps being polled.
//!
//! MQTT 3.1.1 (4.6) has a client send PUBACKs in the order it received the messages, and
//! rumqttd drops a client that does not. Messages are dealt with out of order (a refused one
//! at once, a batch when its transaction commits, an rpc when it is answered), so each receipt
//! marks its slot and the window acks the settled prefix, the way central acks a gateway's
//! seqs.
//!
//! rumqttd sends no PINGRESP to a client whose in-flight window is full until the client acks
//! something (its scheduler parks the connection and only an incoming ack wakes it): an owner
//! that holds every slot for longer than the keep-alive would lose its session. So while a
//! ping waits past a quarter of the keep-alive, the window acks its oldest delivery early, one
//! per quarter: the delivery is still dealt with (a PUBACK is flow control here, not the
//! protocol's ack, which the gateway waits for), and the broker gets one slot back. Mosquitto
//! answers pings at once, so there this never fires.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use rumqttc::{AsyncClient, Publish, QoS};

/// Hands one PUBACK (packet id, QoS) to the event loop; false when its queue is full.
type SendAck = Box<dyn Fn(u16, QoS) -> bool + Send + Sync>;

/// One delivered message, acked to the broker when dropped: hold it until the message is
/// dealt with. Every path drops it, so no message keeps a broker's in-flight slot forever.
/// Without manual acks (the gateway, whose messages are dealt with at once) it holds nothing.
#[derive(Debug)]
pub struct Receipt(Option<Slot>);

#[derive(Debug)]
struct Slot {
    window: Arc<Window>,
    connection: u64,
    delivery: u64,
}

impl Receipt {
    /// A receipt with nothing to ack: rumqttc acked the message when it read it.
    pub fn none() -> Receipt {
        Receipt(None)
    }
}

impl Drop for Receipt {
    fn drop(&mut self) {
        if let Some(slot) = self.0.take() {
            slot.window.settle(slot.connection, slot.delivery);
        }
    }
}

/// The deliveries of the current connection not yet acked, in the order they arrived.
pub(super) struct Window {
    send_ack: SendAck,
    state: Mutex<WindowState>,
}

impl std::fmt::Debug for Window {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Window")
            .field("state", &self.state)
            .finish()
    }
}

#[derive(Debug, Default)]
struct WindowState {
    /// Counts connections: a receipt from an earlier one acks nothing, since the broker forgot
    /// that connection's deliveries (a clean session) and its packet ids now name others.
    connection: u64,
    /// The delivery number of `slots`' front.
    first: u64,
    /// Each delivery's packet id, QoS, and whether it is settled.
    slots: VecDeque<(u16, QoS, bool)>,
    /// Settled in order but not yet taken by rumqttc's full request queue.
    unsent: VecDeque<(u16, QoS)>,
    /// When the unanswered ping went out (or the window last acked early for it).
    ping_waiting_since: Option<Instant>,
}

impl Window {
    /// Acks through `client`'s request queue, which the session task's event loop drains.
    pub(super) fn new(client: AsyncClient) -> Arc<Window> {
        Window::sending_with(Box::new(move |pkid, qos| {
            let mut ack = Publish::new("", qos, Vec::new());
            ack.pkid = pkid;
            client.try_ack(&ack).is_ok()
        }))
    }

    fn sending_with(send_ack: SendAck) -> Arc<Window> {
        Arc::new(Window {
            send_ack,
            state: Mutex::default(),
        })
    }

    /// A new connection: nothing delivered yet on it.
    pub(super) fn connected(&self) {
        if let Ok(mut state) = self.state.lock() {
            state.connection += 1;
            state.first = 0;
            state.slots.clear();
            state.unsent.clear();
            state.ping_waiting_since = None;
        }
    }

    /// The event loop sent a PINGREQ.
    pub(super) fn ping_sent(&self) {
        if let Ok(mut state) = self.state.lock() {
            state.ping_waiting_since = Some(Instant::now());
        }
    }

    /// The broker answered the ping.
    pub(super) fn ping_answered(&self) {
        if let Ok(mut state) = self.state.lock() {
            state.ping_waiting_since = None;
        }
    }

    /// Until the session ends: acks the oldest delivery early whenever a ping has waited a
    /// quarter of `keep_alive` (see the module doc).
    pub(super) async fn keep_pings_answered(self: Arc<Self>, keep_alive: Duration) {
        let patience = keep_alive / 4;
        let mut tick = tokio::time::interval(patience.max(Duration::from_millis(100)) / 2);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            self.ack_oldest_if_ping_waits(patience);
        }
    }

    fn ack_oldest_if_ping_waits(&self, patience: Duration) {
        let Ok(mut state) = self.state.lock() else {
            return;
        };
        let waited = state.ping_waiting_since.map(|since| since.elapsed());
        if waited.is_none_or(|waited| waited < patience) {
            return;
        }
        let Some(oldest) = state.slots.front_mut() else {
            return;
        };
        // Its receipt, dropped later, finds its slot gone and acks nothing more.
        oldest.2 = true;
        state.ping_waiting_since = Some(Instant::now());
        tracing::debug!("acked the oldest delivery early: the broker holds back its ping answer");
        self.ack_settled_prefix(&mut state);
    }

    /// The receipt for a message just read; QoS 0 needs no ack.
    pub(super) fn deliver(self: &Arc<Self>, publish: &Publish) -> Receipt {
        if publish.qos == QoS::AtMostOnce {
            return Receipt::none();
        }
        let Ok(mut state) = self.state.lock() else {
            return Receipt::none();
        };
        let delivery = state.first + state.slots.len() as u64;
        state.slots.push_back((publish.pkid, publish.qos, false));
        Receipt(Some(Slot {
            window: self.clone(),
            connection: state.connection,
            delivery,
        }))
    }

    fn settle(&self, connection: u64, delivery: u64) {
        let Ok(mut state) = self.state.lock() else {
            return;
        };
        if connection != state.connection {
            return;
        }
        let Some(index) = delivery.checked_sub(state.first) else {
            return;
        };
        if let Some(slot) = state.slots.get_mut(index as usize) {
            slot.2 = true;
        }
        self.ack_settled_prefix(&mut state);
    }

    fn ack_settled_prefix(&self, state: &mut WindowState) {
        while let Some(&(pkid, qos, true)) = state.slots.front() {
            state.slots.pop_front();
            state.first += 1;
            state.unsent.push_back((pkid, qos));
        }
        self.send(state);
    }

    /// Hands rumqttc what the request queue had no room for; the session task calls it after
    /// each event, when the event loop has taken some of its queue.
    pub(super) fn send_unsent(&self) {
        if let Ok(mut state) = self.state.lock() {
            if !state.unsent.is_empty() {
                self.send(&mut state);
            }
        }
    }

    fn send(&self, state: &mut WindowState) {
        while let Some(&(pkid, qos)) = state.unsent.front() {
            // Full: it waits here, in order, for the next event.
            if !(self.send_ack)(pkid, qos) {
                return;
            }
            state.unsent.pop_front();
        }
    }

    /// Deliveries of this connection not yet acked, for tests.
    #[cfg(test)]
    fn open(&self) -> usize {
        self.state
            .lock()
            .map(|s| s.slots.len() + s.unsent.len())
            .unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn publish(pkid: u16) -> Publish {
        let mut publish = Publish::new("t", QoS::AtLeastOnce, Vec::new());
        publish.pkid = pkid;
        publish
    }

    /// A window whose event loop takes `room` acks before it is polled again (`take`).
    struct Queue {
        window: Arc<Window>,
        queued: Arc<Mutex<Vec<u16>>>,
    }

    impl Queue {
        fn new(room: usize) -> Queue {
            let queued = Arc::new(Mutex::new(Vec::new()));
            let into = queued.clone();
            let window = Window::sending_with(Box::new(move |pkid, _| {
                let mut queued = into.lock().unwrap();
                queued.len() < room && {
                    queued.push(pkid);
                    true
                }
            }));
            Queue { window, queued }
        }

        /// What the event loop took since the last call, in order.
        fn take(&self) -> Vec<u16> {
            std::mem::take(&mut *self.queued.lock().unwrap())
        }
    }

    #[test]
    fn acks_go_out_in_delivery_order_whatever_order_they_settle_in() {
        let queue = Queue::new(2);
        let window = &queue.window;
        window.connected();
        let first = window.deliver(&publish(7));
        let second = window.deliver(&publish(3));
        let third = window.deliver(&publish(9));
        drop(third);
        drop(second);
        assert!(queue.take().is_empty(), "nothing before the first");
        drop(first);
        assert_eq!(queue.take(), vec![7, 3]);
        // The queue held two: the third waits for room, then follows.
        assert_eq!(window.open(), 1);
        window.send_unsent();
        assert_eq!(queue.take(), vec![9]);
        assert_eq!(window.open(), 0);
    }

    #[test]
    fn a_receipt_from_an_earlier_connection_acks_nothing() {
        let queue = Queue::new(8);
        let window = &queue.window;
        window.connected();
        let old = window.deliver(&publish(1));
        window.connected();
        let new = window.deliver(&publish(1));
        drop(old);
        assert!(queue.take().is_empty());
        drop(new);
        assert_eq!(queue.take(), vec![1]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_ping_left_waiting_gets_the_oldest_delivery_acked_early_once_per_patience() {
        let patience = Duration::from_secs(1);
        let queue = Queue::new(8);
        let window = &queue.window;
        window.connected();
        let oldest = window.deliver(&publish(4));
        let next = window.deliver(&publish(5));
        let last = window.deliver(&publish(6));
        drop(last);
        window.ack_oldest_if_ping_waits(patience);
        assert!(queue.take().is_empty(), "no ping waits");
        window.ping_sent();
        tokio::time::advance(patience / 2).await;
        window.ack_oldest_if_ping_waits(patience);
        assert!(
            queue.take().is_empty(),
            "the ping has not waited long enough"
        );
        tokio::time::advance(patience).await;
        window.ack_oldest_if_ping_waits(patience);
        assert_eq!(queue.take(), vec![4], "one early ack");
        window.ack_oldest_if_ping_waits(patience);
        assert!(
            queue.take().is_empty(),
            "the next one waits another patience"
        );
        drop(oldest);
        assert!(queue.take().is_empty(), "its receipt acks nothing more");
        window.ping_answered();
        tokio::time::advance(patience * 2).await;
        window.ack_oldest_if_ping_waits(patience);
        assert!(queue.take().is_empty(), "the ping was answered");
        drop(next);
        assert_eq!(queue.take(), vec![5, 6], "the rest in order");
    }

    #[test]
    fn qos0_and_unmanaged_messages_hold_no_slot() {
        let queue = Queue::new(8);
        let window = &queue.window;
        window.connected();
        let mut publish = publish(5);
        publish.qos = QoS::AtMostOnce;
        drop(window.deliver(&publish));
        drop(Receipt::none());
        assert_eq!(window.open(), 0);
        assert!(queue.take().is_empty());
    }
}
