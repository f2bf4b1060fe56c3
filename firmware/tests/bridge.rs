//! The firmware loop and the driver against the simulated MFRC522: cards of every UID size,
//! several cards at once, debouncing, commands from the gateway and heartbeats, all observed as
//! the frames the loop writes to its UART.

use std::cell::RefCell;
use std::rc::Rc;

use storegate_firmware::bridge::{Bridge, Outputs, POLL_INTERVAL_MS, REMOVE_AFTER_MISSES};
use storegate_firmware::frame::{Decoder, MAX_FRAME};
use storegate_firmware::iso14443::Uid;
use storegate_firmware::message::{Command, Led, ReaderMessage};
use storegate_firmware::mfrc522::Mfrc522;
use storegate_firmware::sim::{CallbackPin, Field, MemoryLink, SimulatedMfrc522};

fn uid(bytes: &[u8]) -> Uid {
    Uid::new(bytes).unwrap()
}

#[test]
fn the_driver_reads_4_7_and_10_byte_uids_from_one_field_one_card_at_a_time() {
    let field = Field::default();
    let cards = [
        uid(&[0xDE, 0xAD, 0xBE, 0xEF]),
        uid(&[0x04, 0x25, 0x9A, 0x3B, 0x4C, 0x5D, 0x6E]),
        uid(&[0x08, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88, 0x99]),
    ];
    for card in cards {
        field.present(card);
    }
    let mut chip = Mfrc522::new(SimulatedMfrc522::new(field.clone()));
    assert_eq!(chip.init(), Ok(0x92));
    let mut read = Vec::new();
    // Three cards answer REQA together; anticollision picks one, HLTA silences it, repeat.
    for _ in 0..cards.len() {
        assert_eq!(chip.request(), Ok(true));
        read.push(chip.select().unwrap());
        chip.halt().unwrap();
    }
    assert_eq!(chip.request(), Ok(false), "halted cards ignore REQA");
    read.sort_by_key(|u| u.as_bytes().to_vec());
    let mut expected = cards.to_vec();
    expected.sort_by_key(|u| u.as_bytes().to_vec());
    assert_eq!(read, expected);
    // WUPA wakes halted cards: a card left on the reader is seen again.
    assert_eq!(chip.wake_up(), Ok(true));
}

/// With the IRQ pin wired the driver tells the chip to drive it, waits on it after every
/// command, and reads the status register once per command instead of until it shows; with no
/// card the timer's request asserts the pin too, so an empty field does not hang the wait.
#[test]
fn with_the_irq_line_wired_each_command_waits_on_the_pin_and_reads_the_status_once() {
    let field = Field::default();
    let sim = SimulatedMfrc522::new(field.clone());
    let line = sim.irq_line();
    let mut chip = Mfrc522::with_irq(sim, line.clone());
    chip.init().unwrap();
    assert_eq!(chip.wake_up(), Ok(false), "no card: the timer's request");
    let card = uid(&[0x04, 0x25, 0x9A, 0x3B, 0x4C, 0x5D, 0x6E]);
    field.present(card);
    assert_eq!(chip.wake_up(), Ok(true));
    assert_eq!(chip.select(), Ok(card));
    let (waits, asserted) = line.waits();
    assert!(waits >= 4, "WUPA twice and a 7-byte select wait: {waits}");
    assert_eq!(asserted, waits, "every wait found the pin asserted");
    assert_eq!(line.status_reads(), waits, "one status read per command");
}

#[test]
fn two_cards_that_share_their_first_bytes_are_told_apart() {
    let field = Field::default();
    let a = uid(&[0x04, 0x11, 0x22, 0x33, 0x44, 0x55, 0x60]);
    let b = uid(&[0x04, 0x11, 0x22, 0x33, 0x44, 0x55, 0x61]);
    field.present(a);
    field.present(b);
    let mut chip = Mfrc522::new(SimulatedMfrc522::new(field));
    chip.init().unwrap();
    assert_eq!(chip.request(), Ok(true));
    let first = chip.select().unwrap();
    chip.halt().unwrap();
    assert_eq!(chip.request(), Ok(true));
    let second = chip.select().unwrap();
    // The collision is in the last bit of level 2; the card with the 1 there goes first.
    assert_eq!((first, second), (b, a));
}

type Log = Rc<RefCell<Vec<(&'static str, bool)>>>;
type Pin = CallbackPin<Box<dyn FnMut(bool)>>;
type TestBridge = Bridge<Mfrc522<SimulatedMfrc522>, MemoryLink, Pin, Pin, Pin>;

fn pin(log: &Log, name: &'static str) -> Pin {
    let log = log.clone();
    CallbackPin::new(Box::new(move |high| log.borrow_mut().push((name, high))))
}

struct Rig {
    field: Field,
    bridge: TestBridge,
    pins: Log,
    now: u32,
    decoder: Decoder,
    read_up_to: usize,
}

#[derive(Debug, Clone, PartialEq)]
enum Sent {
    Present(Vec<u8>),
    Removed(Vec<u8>),
    Heartbeat(u32),
    Version(u8, String),
}

impl Rig {
    fn new(start_at: u32) -> Rig {
        let field = Field::default();
        let pins: Log = Rc::default();
        let outputs = Outputs {
            buzzer: pin(&pins, "buzzer"),
            green: pin(&pins, "green"),
            red: pin(&pins, "red"),
        };
        let chip = Mfrc522::new(SimulatedMfrc522::new(field.clone()));
        let mut bridge = Bridge::new(chip, MemoryLink::default(), outputs);
        bridge.start(start_at).unwrap();
        Rig {
            field,
            bridge,
            pins,
            now: start_at,
            decoder: Decoder::new(),
            read_up_to: 0,
        }
    }

    /// Runs the loop for `ms` in 10 ms steps.
    fn run_for(&mut self, ms: u32) {
        for _ in 0..ms / 10 {
            self.now = self.now.wrapping_add(10);
            self.bridge.step(self.now).unwrap();
        }
    }

    fn command(&mut self, command: Command) {
        let mut out = [0u8; MAX_FRAME];
        let n = command.encode(&mut out).unwrap();
        self.link().incoming.extend(&out[..n]);
    }

    fn link(&mut self) -> &mut MemoryLink {
        // The bridge owns the link; reach it through a short-lived take-and-put-back.
        link_of(&mut self.bridge)
    }

    /// Messages written since the last call.
    fn sent(&mut self) -> Vec<Sent> {
        let bytes = link_of(&mut self.bridge).outgoing[self.read_up_to..].to_vec();
        self.read_up_to += bytes.len();
        let mut out = Vec::new();
        for byte in bytes {
            if let Some(frame) = self.decoder.push(byte) {
                out.push(match ReaderMessage::parse(frame).unwrap() {
                    ReaderMessage::CardPresent(u) => Sent::Present(u.as_bytes().to_vec()),
                    ReaderMessage::CardRemoved(u) => Sent::Removed(u.as_bytes().to_vec()),
                    ReaderMessage::Heartbeat { uptime_s } => Sent::Heartbeat(uptime_s),
                    ReaderMessage::Version { protocol, firmware } => {
                        Sent::Version(protocol, firmware.to_string())
                    }
                });
            }
        }
        out
    }

    fn cards_only(&mut self) -> Vec<Sent> {
        self.sent()
            .into_iter()
            .filter(|s| matches!(s, Sent::Present(_) | Sent::Removed(_)))
            .collect()
    }
}

fn link_of(bridge: &mut TestBridge) -> &mut MemoryLink {
    bridge.link_mut()
}

#[test]
fn announces_its_version_then_reports_a_card_once_while_it_stays_and_once_when_it_leaves() {
    let mut rig = Rig::new(0);
    assert_eq!(
        rig.sent(),
        [Sent::Version(1, env!("CARGO_PKG_VERSION").to_string())]
    );
    let card = uid(&[0x04, 0x25, 0x9A, 0x3B, 0x4C, 0x5D, 0x6E]);
    rig.field.present(card);
    rig.run_for(2_000); // forty polls with the card lying on the reader
    assert_eq!(rig.cards_only(), [Sent::Present(card.as_bytes().to_vec())]);
    rig.field.remove(card);
    rig.run_for(POLL_INTERVAL_MS * u32::from(REMOVE_AFTER_MISSES) + 10);
    assert_eq!(rig.cards_only(), [Sent::Removed(card.as_bytes().to_vec())]);
    rig.run_for(1_000);
    assert_eq!(rig.cards_only(), []);
}

#[test]
fn a_bad_read_while_the_card_stays_does_not_flap() {
    let mut rig = Rig::new(0);
    let card = uid(&[0xDE, 0xAD, 0xBE, 0xEF]);
    rig.field.present(card);
    rig.run_for(200);
    assert_eq!(rig.cards_only(), [Sent::Present(card.as_bytes().to_vec())]);
    // Two failed reads in a row (below the removal threshold).
    rig.field
        .corrupt_sak_crcs(u32::from(REMOVE_AFTER_MISSES) - 1);
    rig.run_for(1_000);
    assert_eq!(rig.cards_only(), []);
    assert_eq!(
        rig.bridge.stats().read_errors,
        u32::from(REMOVE_AFTER_MISSES) - 1
    );
    assert_eq!(rig.bridge.current_card(), Some(card));
}

#[test]
fn swapping_cards_reports_the_old_one_removed_before_the_new_one() {
    let mut rig = Rig::new(0);
    let first = uid(&[1, 2, 3, 4]);
    let second = uid(&[5, 6, 7, 8]);
    rig.field.present(first);
    rig.run_for(100);
    rig.field.clear();
    rig.field.present(second);
    rig.run_for(100);
    assert_eq!(
        rig.cards_only(),
        [
            Sent::Present(first.as_bytes().to_vec()),
            Sent::Removed(first.as_bytes().to_vec()),
            Sent::Present(second.as_bytes().to_vec()),
        ]
    );
}

#[test]
fn beeps_for_the_commanded_time_and_sets_the_leds() {
    let mut rig = Rig::new(0);
    rig.command(Command::Beep { ms: 120 });
    rig.command(Command::Led(Led::Green));
    rig.run_for(10);
    assert_eq!(
        rig.pins.borrow().as_slice(),
        [("buzzer", true), ("green", true), ("red", false)]
    );
    rig.run_for(100);
    assert_eq!(rig.pins.borrow().len(), 3, "the buzzer is still sounding");
    rig.run_for(20);
    assert_eq!(rig.pins.borrow().last(), Some(&("buzzer", false)));
    rig.command(Command::Led(Led::Red));
    rig.run_for(10);
    assert_eq!(rig.pins.borrow()[4..], [("green", false), ("red", true)]);
}

#[test]
fn reset_forgets_the_card_and_announces_the_version_again_and_garbage_is_counted() {
    let mut rig = Rig::new(0);
    let card = uid(&[1, 2, 3, 4]);
    rig.field.present(card);
    rig.run_for(100);
    rig.sent();
    // Line noise, then a well-formed frame that is no command (a reader message echoed back).
    rig.link()
        .incoming
        .extend(b"\x7E\x01\x82\x09\x00\x00 noise");
    let mut echo = [0u8; MAX_FRAME];
    let n = storegate_firmware::frame::encode(0x01, &[1, 2, 3, 4], &mut echo).unwrap();
    rig.link().incoming.extend(&echo[..n]);
    rig.command(Command::Reset);
    rig.run_for(10);
    // The card still lies there: after the reset it is reported afresh, after the version.
    assert_eq!(
        rig.sent(),
        [
            Sent::Version(1, env!("CARGO_PKG_VERSION").to_string()),
            Sent::Present(card.as_bytes().to_vec()),
        ]
    );
    assert_eq!(rig.bridge.stats().bad_commands, 1);
    assert_eq!(rig.bridge.stats().resets, 2, "start and the reset command");
}

#[test]
fn heartbeats_carry_uptime_across_a_wrap_of_the_millisecond_counter() {
    let mut rig = Rig::new(u32::MAX - 1_500);
    rig.sent();
    rig.run_for(3_000);
    let beats: Vec<Sent> = rig
        .sent()
        .into_iter()
        .filter(|s| matches!(s, Sent::Heartbeat(_)))
        .collect();
    assert_eq!(
        beats,
        [Sent::Heartbeat(1), Sent::Heartbeat(2), Sent::Heartbeat(3)]
    );
}
