//! One simulated store's gateway: its traffic, its MQTT session and its unacked events.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use tokio::sync::{mpsc, watch};

use storegate::protocol::{Ack, EventBatch, WireEvent};

use super::{Phase, Totals};

const TICK: Duration = Duration::from_millis(50);

/// What one store does.
pub(super) struct StorePlan {
    pub store: String,
    pub rate: f64,
    pub batch: usize,
    /// When its connection drops, and for how long.
    pub outage: Option<(Duration, Duration)>,
    pub seed: u64,
    /// The fleet's loyalty cards (identifier hashes): customers shop in several stores.
    pub cards: Arc<Vec<String>>,
}

struct Unacked {
    event: WireEvent,
    identity: bool,
    /// Whether central's resolver has work to do for it (an identification, or points).
    effects: bool,
    sent: Option<Instant>,
}

/// What the session task tells the store.
enum Session {
    Up,
    Down,
    Ack(u64),
}

pub(super) struct SimStore {
    plan: StorePlan,
    client: AsyncClient,
    eventloop: Option<rumqttc::EventLoop>,
    totals: Arc<Totals>,
    rng: fastrand::Rng,
    next_seq: u64,
    unacked: VecDeque<Unacked>,
    /// The provisional ref this store gave each card it met.
    refs: HashMap<usize, String>,
    last_progress: Instant,
    storm_mark: Option<u64>,
    acked_upto: u64,
    /// The last seq of each batch sent and not yet acked.
    in_flight: VecDeque<u64>,
    /// A real gateway's defaults: a window of batches in flight, and everything unacked sent
    /// again from the acked position when no ack came for the ack timeout.
    sync: storegate::config::SyncSection,
}

const GATEWAY: &str = "gw-1";

impl SimStore {
    pub(super) fn new(
        plan: StorePlan,
        broker: &storegate::config::BrokerAddress,
        totals: Arc<Totals>,
    ) -> SimStore {
        let mut options = MqttOptions::new(
            format!("storegate-{}-{GATEWAY}", plan.store),
            broker.host.clone(),
            broker.port,
        );
        options.set_keep_alive(Duration::from_secs(30));
        options.set_clean_session(true);
        options.set_max_packet_size(1 << 20, 1 << 20);
        options.set_inflight(64);
        let (client, eventloop) = storegate::mqtt::client(options, 64);
        let rng = fastrand::Rng::with_seed(plan.seed);
        SimStore {
            plan,
            client,
            eventloop: Some(eventloop),
            totals,
            rng,
            next_seq: 1,
            unacked: VecDeque::new(),
            refs: HashMap::new(),
            last_progress: Instant::now(),
            storm_mark: None,
            acked_upto: 0,
            in_flight: VecDeque::new(),
            sync: storegate::config::SyncSection::default(),
        }
    }

    pub(super) async fn run(mut self, mut phase: watch::Receiver<Phase>) {
        let (session_tx, mut session) = mpsc::channel(64);
        let (online_tx, online) = watch::channel(true);
        let ack_topic = format!("storegate/v1/{}/{GATEWAY}/ack", self.plan.store);
        let Some(eventloop) = self.eventloop.take() else {
            return;
        };
        let driver = tokio::spawn(drive(
            eventloop,
            self.client.clone(),
            ack_topic,
            session_tx,
            online,
        ));
        let started = Instant::now();
        let mut connected = false;
        let mut in_storm = false;
        let mut owed = 0.0;
        let mut last_generated = Instant::now();
        let mut tick = tokio::time::interval(TICK);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                message = session.recv() => match message {
                    Some(Session::Up) => {
                        connected = true;
                        self.totals.connected.fetch_add(1, Ordering::Relaxed);
                        // A gateway sends everything unacked again after a connect.
                        self.rewind();
                    }
                    Some(Session::Down) => {
                        if connected {
                            self.totals.connected.fetch_sub(1, Ordering::Relaxed);
                        }
                        connected = false;
                    }
                    Some(Session::Ack(upto)) => self.acked(upto),
                    None => break,
                },
                _ = phase.changed() => {}
            }
            let now = *phase.borrow();
            if now == Phase::Stop {
                break;
            }
            let in_outage = self
                .plan
                .outage
                .is_some_and(|(at, length)| (at..at + length).contains(&started.elapsed()));
            let wanted = !in_outage && now != Phase::Storm;
            if *online_tx.borrow() != wanted {
                online_tx.send_replace(wanted);
            }
            if now == Phase::Storm {
                in_storm = true;
            } else if in_storm {
                // Everything from before the reconnect counts for the storm's absorption; a
                // store in an outage of its own then is not part of the storm.
                in_storm = false;
                if in_outage {
                    self.totals.storm_absorbed.fetch_add(1, Ordering::Relaxed);
                } else {
                    self.storm_mark = Some(self.next_seq - 1);
                    self.acked(self.acked_upto);
                }
            }
            let since = last_generated.elapsed();
            last_generated = Instant::now();
            if matches!(now, Phase::Running | Phase::Storm) {
                owed += self.plan.rate * since.as_secs_f64();
                while owed >= 1.0 {
                    owed -= 1.0;
                    self.generate();
                }
            }
            if connected && wanted {
                self.send();
            }
        }
        if connected {
            self.totals.connected.fetch_sub(1, Ordering::Relaxed);
        }
        let _ = self.client.try_disconnect();
        driver.abort();
    }

    fn generate(&mut self) {
        let seq = self.next_seq;
        self.next_seq += 1;
        let roll = self.rng.u32(..100);
        let receipt = format!("{}-{seq}", self.plan.store);
        let (kind, body) = match roll {
            0..=19 => {
                let card = self.rng.usize(..self.plan.cards.len());
                let customer = self.customer(card);
                (
                    "identity_seen",
                    serde_json::json!({
                        "customer": customer,
                        "identifiers": [{ "kind": "card", "hash": self.plan.cards[card] }],
                    }),
                )
            }
            20..=24 => (
                "coupon_redeemed",
                serde_json::json!({
                    "coupon": format!("c-{}-{seq}", self.plan.store), "customer": null,
                    "receipt": receipt, "discount_minor": 500, "mode": "online", "uses": 1,
                }),
            ),
            25..=27 => (
                "order_placed",
                serde_json::json!({
                    "order": format!("o-{}-{seq}", self.plan.store), "customer": null,
                    "total_minor": 4_999, "currency": "EUR",
                }),
            ),
            _ => {
                let customer = if self.rng.bool() && !self.refs.is_empty() {
                    let known: Vec<&String> = self.refs.values().collect();
                    Some(known[self.rng.usize(..known.len())].clone())
                } else {
                    None
                };
                let qty = i64::from(self.rng.u8(1..4));
                let unit = i64::from(self.rng.u16(99..5_000));
                (
                    "purchase",
                    serde_json::json!({
                        "receipt": receipt,
                        "lines": [{ "sku": "sku-1", "qty": qty, "unit_minor": unit }],
                        "total_minor": qty * unit, "currency": "EUR", "customer": customer,
                        "points": if customer.is_some() { qty * unit / 100 } else { 0 },
                    }),
                )
            }
        };
        let effects = kind == "identity_seen"
            || (kind == "purchase"
                && !body["customer"].is_null()
                && body["points"].as_i64().is_some_and(|p| p != 0));
        let Ok(event) = crate::bench::identity::event(seq, kind, body) else {
            return;
        };
        self.unacked.push_back(Unacked {
            identity: kind == "identity_seen",
            effects,
            event,
            sent: None,
        });
        self.totals.generated.fetch_add(1, Ordering::Relaxed);
        self.totals.backlog.fetch_add(1, Ordering::Relaxed);
    }

    fn customer(&mut self, card: usize) -> String {
        self.refs
            .entry(card)
            .or_insert_with(|| format!("prov:{GATEWAY}:{}", ulid::Ulid::new()))
            .clone()
    }

    fn send(&mut self) {
        let ack_timeout = Duration::from_millis(self.sync.ack_timeout_ms);
        if let Some(first_sent) = self.unacked.front().and_then(|e| e.sent) {
            if first_sent.elapsed() > ack_timeout && self.last_progress.elapsed() > ack_timeout {
                self.rewind();
            }
        }
        // Like the gateway's pump: a window of batches, not of events, so a slow central gets
        // fuller batches rather than more of them.
        let topic = format!("storegate/v1/{}/{GATEWAY}/events", self.plan.store);
        while self.in_flight.len() < self.sync.window_batches {
            let unsent: Vec<usize> = (0..self.unacked.len())
                .filter(|&index| self.unacked[index].sent.is_none())
                .take(self.plan.batch)
                .collect();
            let batch: Vec<WireEvent> = unsent
                .iter()
                .map(|&index| self.unacked[index].event.clone())
                .collect();
            let Some(last) = batch.last().map(|e| e.seq) else {
                return;
            };
            let payload = EventBatch {
                gateway: GATEWAY.into(),
                store: self.plan.store.clone(),
                sent_at: storegate::protocol::timestamp(std::time::SystemTime::now()),
                events: batch,
            };
            let Ok(bytes) = serde_json::to_vec(&payload) else {
                return;
            };
            if self
                .client
                .try_publish(&topic, QoS::AtLeastOnce, false, bytes)
                .is_err()
            {
                // The request queue is full: like the gateway's pump, nothing counts as sent,
                // and the next tick tries again. Marked sent, the batch was a gap central could
                // not ack past until the ack timeout.
                return;
            }
            let now = Instant::now();
            for index in unsent {
                self.unacked[index].sent = Some(now);
            }
            self.in_flight.push_back(last);
        }
    }

    /// Everything unacked goes again, from the acked position.
    fn rewind(&mut self) {
        for event in &mut self.unacked {
            event.sent = None;
        }
        self.in_flight.clear();
    }

    fn acked(&mut self, upto: u64) {
        self.acked_upto = self.acked_upto.max(upto);
        while self.in_flight.front().is_some_and(|last| *last <= upto) {
            self.in_flight.pop_front();
        }
        let now = Instant::now();
        let mut latencies = Vec::new();
        while self.unacked.front().is_some_and(|e| e.event.seq <= upto) {
            let Some(event) = self.unacked.pop_front() else {
                break;
            };
            self.last_progress = now;
            self.totals.acked.fetch_add(1, Ordering::Relaxed);
            self.totals.backlog.fetch_sub(1, Ordering::Relaxed);
            if event.effects {
                self.totals.effects_acked.fetch_add(1, Ordering::Relaxed);
            }
            if event.identity {
                self.totals.identities_acked.fetch_add(1, Ordering::Relaxed);
            }
            if let Some(sent) = event.sent {
                let micros = now.duration_since(sent).as_micros();
                latencies.push(u32::try_from(micros).unwrap_or(u32::MAX));
            }
        }
        if self.storm_mark.is_some_and(|mark| self.acked_upto >= mark) {
            self.storm_mark = None;
            self.totals.storm_absorbed.fetch_add(1, Ordering::Relaxed);
        }
        if !latencies.is_empty() {
            if let Ok(mut all) = self.totals.latencies_us.lock() {
                all.extend(latencies);
            }
        }
    }
}

/// Polls the session, subscribes to the store's ack topic on every connect, and stays away
/// while `online` says so: going away drops the connection as a network outage would (a
/// poll cut short is harmless then, since its connection is dropped with it).
async fn drive(
    mut eventloop: rumqttc::EventLoop,
    client: AsyncClient,
    ack_topic: String,
    session: mpsc::Sender<Session>,
    mut online: watch::Receiver<bool>,
) {
    loop {
        if !*online.borrow() {
            eventloop.clean();
            let _ = session.send(Session::Down).await;
            if online.wait_for(|up| *up).await.is_err() {
                return;
            }
        }
        let polled = tokio::select! {
            polled = eventloop.poll() => polled,
            _ = online.wait_for(|up| !*up) => continue,
        };
        match polled {
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                let _ = client.try_subscribe(&ack_topic, QoS::AtLeastOnce);
                let _ = session.send(Session::Up).await;
            }
            Ok(Event::Incoming(Packet::Publish(publish))) => {
                if let Ok(ack) = serde_json::from_slice::<Ack>(&publish.payload) {
                    let _ = session.send(Session::Ack(ack.upto_seq)).await;
                }
            }
            Ok(_) => {}
            Err(_) => {
                let _ = session.send(Session::Down).await;
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
}
