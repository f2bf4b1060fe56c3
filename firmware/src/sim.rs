//! A simulated MFRC522 with ISO 14443-A cards in its field, for host tests and the reader
//! simulator binary. It answers the SPI byte protocol register by register as the datasheet
//! describes, so the real driver runs against it unchanged; the cards follow the ISO 14443-3
//! state machine closely enough for REQA/WUPA, bit-wise anticollision across cascade levels,
//! SELECT and HLTA.

extern crate std;

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::vec::Vec;

use core::convert::Infallible;

use embedded_hal::digital::{ErrorType as PinErrorType, OutputPin};
use embedded_hal::spi::{ErrorType, Operation, SpiDevice};

use crate::iso14443::{self, crc_a, Uid};
use crate::mfrc522::{
    command, error_bits, irq, IrqLine, Register, COLL_POS_NOT_VALID, FIFO_SIZE, START_SEND,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CardState {
    Idle,
    /// Woken, taking part in anticollision at this cascade level.
    Ready(usize),
    Active,
    Halt,
}

#[derive(Debug)]
struct SimCard {
    uid: Uid,
    state: CardState,
}

#[derive(Debug, Default)]
struct FieldState {
    cards: Vec<SimCard>,
    corrupt_next_sak_crcs: u32,
}

/// The RF field: which cards are on the reader. Cloned handles share one field.
#[derive(Debug, Clone, Default)]
pub struct Field(Arc<Mutex<FieldState>>);

impl Field {
    fn lock(&self) -> MutexGuard<'_, FieldState> {
        // A panic elsewhere while holding the lock leaves plain data behind; keep using it.
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Puts a card on the reader (no-op if it is there).
    pub fn present(&self, uid: Uid) {
        let mut field = self.lock();
        if !field.cards.iter().any(|card| card.uid == uid) {
            field.cards.push(SimCard {
                uid,
                state: CardState::Idle,
            });
        }
    }

    /// Takes a card away.
    pub fn remove(&self, uid: Uid) {
        self.lock().cards.retain(|card| card.uid != uid);
    }

    /// Takes every card away.
    pub fn clear(&self) {
        self.lock().cards.clear();
    }

    /// The next `count` SAK replies carry a wrong CRC_A, as a weakly coupled card's would.
    pub fn corrupt_sak_crcs(&self, count: u32) {
        self.lock().corrupt_next_sak_crcs = count;
    }

    fn respond(&self, tx: &[u8], tx_last_bits: u8) -> Option<Reply> {
        let mut field = self.lock();
        match (tx, tx_last_bits) {
            ([cmd], 7) if *cmd == iso14443::REQA || *cmd == iso14443::WUPA => {
                let wupa = *cmd == iso14443::WUPA;
                let mut answers = Vec::new();
                for card in field.cards.iter_mut() {
                    let wakes = match card.state {
                        CardState::Halt => wupa,
                        _ => true,
                    };
                    if wakes {
                        card.state = CardState::Ready(0);
                        let size_bits = match card.uid.levels() {
                            1 => 0x04,
                            2 => 0x44,
                            _ => 0x84,
                        };
                        answers.push([size_bits, 0x00]);
                    }
                }
                let answers: Vec<&[u8]> = answers.iter().map(|a| &a[..]).collect();
                combine(&answers, 0)
            }
            ([iso14443::HLTA, 0x00, crc @ ..], 0) if crc == crc_a(&[iso14443::HLTA, 0]) => {
                for card in field.cards.iter_mut() {
                    if card.state == CardState::Active {
                        card.state = CardState::Halt;
                    }
                }
                None
            }
            ([sel, nvb, rest @ ..], _) => {
                let level = iso14443::SEL.iter().position(|s| s == sel)?;
                if *nvb == 0x70 {
                    select(&mut field, level, tx)
                } else {
                    anticollision(&mut field, level, *nvb, rest)
                }
            }
            _ => None,
        }
    }
}

fn select(field: &mut FieldState, level: usize, tx: &[u8]) -> Option<Reply> {
    if tx.len() != 9 || crc_a(&tx[..7]) != [tx[7], tx[8]] {
        return None;
    }
    let mut sak = None;
    for card in field.cards.iter_mut() {
        if card.state != CardState::Ready(level) {
            continue;
        }
        if card.uid.cascade_level(level).as_ref().map(|l| &l[..]) == Some(&tx[2..7]) {
            if level + 1 < card.uid.levels() {
                card.state = CardState::Ready(level + 1);
                sak = Some(iso14443::SAK_CASCADE);
            } else {
                card.state = CardState::Active;
                sak = Some(0x08);
            }
        } else {
            card.state = CardState::Idle;
        }
    }
    let sak = sak?;
    let mut crc = crc_a(&[sak]);
    if field.corrupt_next_sak_crcs > 0 {
        field.corrupt_next_sak_crcs -= 1;
        crc[0] ^= 0xFF;
    }
    Some(Reply {
        bytes: [sak, crc[0], crc[1]].to_vec(),
        last_bits: 0,
        collision_at: None,
    })
}

fn anticollision(field: &mut FieldState, level: usize, nvb: u8, sent: &[u8]) -> Option<Reply> {
    let bytes = usize::from(nvb >> 4).checked_sub(2)?;
    let known_bits = bytes * 8 + usize::from(nvb & 0x0F);
    if known_bits >= 40 || sent.len() < known_bits.div_ceil(8) {
        return None;
    }
    let bit = |data: &[u8], i: usize| data[i / 8] >> (i % 8) & 1;
    let mut answers = Vec::new();
    for card in &field.cards {
        if card.state != CardState::Ready(level) {
            continue;
        }
        let Some(cl) = card.uid.cascade_level(level) else {
            continue;
        };
        if (0..known_bits).all(|i| bit(&cl, i) == bit(sent, i)) {
            answers.push(cl);
        }
    }
    let answers: Vec<&[u8]> = answers.iter().map(|a| &a[..]).collect();
    combine(&answers, known_bits)
}

/// What several cards answering at once look like to the receiver: from bit `from` on, the OR
/// of their bits, with the first bit where they differ reported as a collision. The first byte
/// is aligned so bit `from` sits at bit `from % 8` (the driver's RxAlign).
fn combine(answers: &[&[u8]], from: usize) -> Option<Reply> {
    let first = answers.first()?;
    let total_bits = first.len() * 8;
    let bit = |data: &[u8], i: usize| data[i / 8] >> (i % 8) & 1;
    let mut out = std::vec![0u8; first.len() - from / 8];
    let mut collision_at = None;
    for i in from..total_bits {
        let ones = answers.iter().filter(|a| bit(a, i) == 1).count();
        if ones != 0 && ones != answers.len() && collision_at.is_none() {
            // CollReg counts data bits from 1 and writes 32 as 0; past 32 it cannot say.
            collision_at = Some(if i + 1 > 32 {
                COLL_POS_NOT_VALID
            } else {
                ((i + 1) % 32) as u8
            });
        }
        if ones > 0 {
            out[i / 8 - from / 8] |= 1 << (i % 8);
        }
    }
    Some(Reply {
        bytes: out,
        last_bits: 0,
        collision_at,
    })
}

#[derive(Debug)]
struct Reply {
    bytes: Vec<u8>,
    last_bits: u8,
    collision_at: Option<u8>,
}

/// The simulated chip. Its registers start as after power-on; a soft reset restores them.
#[derive(Debug)]
pub struct SimulatedMfrc522 {
    registers: [u8; 64],
    fifo: VecDeque<u8>,
    field: Field,
    transactions: u64,
    pin: Arc<IrqPin>,
}

/// The simulated chip's IRQ pin and what was asked of it.
#[derive(Debug, Default)]
struct IrqPin {
    asserted: AtomicBool,
    waits: AtomicU64,
    waits_asserted: AtomicU64,
    status_reads: AtomicU64,
}

/// The host's end of the simulated chip's IRQ pin (the chip completes commands at once, so a
/// wait sees the pin as the chip left it).
#[derive(Debug, Clone)]
pub struct SimulatedIrq(Arc<IrqPin>);

impl SimulatedIrq {
    /// Waits so far, and how many found the pin asserted.
    pub fn waits(&self) -> (u64, u64) {
        (
            self.0.waits.load(Ordering::SeqCst),
            self.0.waits_asserted.load(Ordering::SeqCst),
        )
    }

    /// `ComIrqReg` reads the driver made so far.
    pub fn status_reads(&self) -> u64 {
        self.0.status_reads.load(Ordering::SeqCst)
    }
}

impl IrqLine for SimulatedIrq {
    const WIRED: bool = true;
    fn wait(&mut self) -> bool {
        self.0.waits.fetch_add(1, Ordering::SeqCst);
        let asserted = self.0.asserted.load(Ordering::SeqCst);
        if asserted {
            self.0.waits_asserted.fetch_add(1, Ordering::SeqCst);
        }
        asserted
    }
}

const VERSION_V2: u8 = 0x92;

impl SimulatedMfrc522 {
    /// A chip looking at `field`.
    pub fn new(field: Field) -> Self {
        let mut chip = SimulatedMfrc522 {
            registers: [0; 64],
            fifo: VecDeque::new(),
            field,
            transactions: 0,
            pin: Arc::default(),
        };
        chip.power_on();
        chip
    }

    /// The host's end of this chip's IRQ pin.
    pub fn irq_line(&self) -> SimulatedIrq {
        SimulatedIrq(self.pin.clone())
    }

    /// SPI transactions so far.
    pub fn transactions(&self) -> u64 {
        self.transactions
    }

    fn power_on(&mut self) {
        self.registers = [0; 64];
        self.registers[Register::Version as usize] = VERSION_V2;
        self.registers[Register::TxControl as usize] = 0x80;
        self.fifo.clear();
    }

    fn read_register(&mut self, register: usize) -> u8 {
        if register == Register::ComIrq as usize {
            self.pin.status_reads.fetch_add(1, Ordering::SeqCst);
        }
        match register {
            r if r == Register::FifoData as usize => self.fifo.pop_front().unwrap_or(0),
            r if r == Register::FifoLevel as usize => self.fifo.len() as u8,
            r => self.registers[r],
        }
    }

    fn write_register(&mut self, register: usize, value: u8) {
        match register {
            r if r == Register::Command as usize => {
                if value & 0x0F == command::SOFT_RESET {
                    self.power_on();
                } else {
                    self.registers[r] = value & 0x0F;
                }
            }
            r if r == Register::ComIrq as usize => {
                if value & 0x80 != 0 {
                    self.registers[r] |= value & 0x7F;
                } else {
                    self.registers[r] &= !value;
                }
            }
            r if r == Register::FifoLevel as usize => {
                if value & 0x80 != 0 {
                    self.fifo.clear();
                }
            }
            r if r == Register::FifoData as usize => {
                if self.fifo.len() < FIFO_SIZE {
                    self.fifo.push_back(value);
                }
            }
            r if r == Register::BitFraming as usize => {
                self.registers[r] = value & 0x7F;
                let transceiving =
                    self.registers[Register::Command as usize] == command::TRANSCEIVE;
                if value & START_SEND != 0 && transceiving {
                    self.transceive();
                }
            }
            r => self.registers[r] = value,
        }
        // The pin passes on the requests ComIEnReg enables (active low with IRqInv, which
        // the host's line abstracts away).
        let requests = self.registers[Register::ComIrq as usize]
            & self.registers[Register::ComIEn as usize]
            & 0x7F;
        self.pin.asserted.store(requests != 0, Ordering::SeqCst);
    }

    fn transceive(&mut self) {
        let tx: Vec<u8> = self.fifo.drain(..).collect();
        let framing = self.registers[Register::BitFraming as usize];
        self.registers[Register::Error as usize] = 0;
        self.registers[Register::Coll as usize] = 0;
        match self.field.respond(&tx, framing & 0x07) {
            None => self.registers[Register::ComIrq as usize] |= irq::TIMER,
            Some(reply) => {
                self.fifo.extend(reply.bytes);
                self.registers[Register::Control as usize] = reply.last_bits;
                if let Some(position) = reply.collision_at {
                    self.registers[Register::Error as usize] |= error_bits::COLLISION;
                    self.registers[Register::Coll as usize] = position;
                }
                self.registers[Register::ComIrq as usize] |= irq::RX | irq::IDLE;
            }
        }
    }

    /// Feeds one MOSI byte of a transaction; returns the MISO byte.
    fn exchange(&mut self, state: &mut Exchange, mosi: u8) -> u8 {
        let index = state.index;
        state.index += 1;
        if index == 0 {
            state.read = mosi & 0x80 != 0;
            state.register = usize::from((mosi >> 1) & 0x3F);
            return 0;
        }
        if state.read {
            // Each MOSI byte of a read names the register whose value comes back next.
            let value = self.read_register(state.register);
            state.register = usize::from((mosi >> 1) & 0x3F);
            value
        } else {
            self.write_register(state.register, mosi);
            0
        }
    }
}

#[derive(Default)]
struct Exchange {
    index: usize,
    read: bool,
    register: usize,
}

impl ErrorType for SimulatedMfrc522 {
    type Error = Infallible;
}

impl SpiDevice for SimulatedMfrc522 {
    fn transaction(&mut self, operations: &mut [Operation<'_, u8>]) -> Result<(), Infallible> {
        self.transactions += 1;
        let mut state = Exchange::default();
        for operation in operations {
            match operation {
                Operation::Write(bytes) => {
                    for &byte in bytes.iter() {
                        self.exchange(&mut state, byte);
                    }
                }
                Operation::Read(bytes) => {
                    for byte in bytes.iter_mut() {
                        *byte = self.exchange(&mut state, 0);
                    }
                }
                Operation::Transfer(read, write) => {
                    for i in 0..read.len().max(write.len()) {
                        let miso = self.exchange(&mut state, write.get(i).copied().unwrap_or(0));
                        if let Some(slot) = read.get_mut(i) {
                            *slot = miso;
                        }
                    }
                }
                Operation::TransferInPlace(bytes) => {
                    for byte in bytes.iter_mut() {
                        *byte = self.exchange(&mut state, *byte);
                    }
                }
                Operation::DelayNs(_) => {}
            }
        }
        Ok(())
    }
}

/// An output pin that hands every level change to a callback (the simulator prints it; tests
/// record it).
pub struct CallbackPin<F: FnMut(bool)> {
    on_change: F,
    level: Option<bool>,
}

impl<F: FnMut(bool)> CallbackPin<F> {
    /// A pin reporting to `on_change`.
    pub fn new(on_change: F) -> Self {
        CallbackPin {
            on_change,
            level: None,
        }
    }

    fn set(&mut self, high: bool) {
        if self.level != Some(high) {
            self.level = Some(high);
            (self.on_change)(high);
        }
    }
}

impl<F: FnMut(bool)> PinErrorType for CallbackPin<F> {
    type Error = Infallible;
}

impl<F: FnMut(bool)> OutputPin for CallbackPin<F> {
    fn set_low(&mut self) -> Result<(), Infallible> {
        self.set(false);
        Ok(())
    }

    fn set_high(&mut self) -> Result<(), Infallible> {
        self.set(true);
        Ok(())
    }
}

/// A UART in memory: bytes queued for the firmware to read, and everything it wrote.
#[derive(Debug, Default)]
pub struct MemoryLink {
    /// Bytes from the gateway, not read yet.
    pub incoming: VecDeque<u8>,
    /// Bytes the firmware sent.
    pub outgoing: Vec<u8>,
}

impl embedded_io::ErrorType for MemoryLink {
    type Error = Infallible;
}

impl embedded_io::Read for MemoryLink {
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, Infallible> {
        let n = buf.len().min(self.incoming.len());
        for (slot, byte) in buf.iter_mut().zip(self.incoming.drain(..n)) {
            *slot = byte;
        }
        Ok(n)
    }
}

impl embedded_io::ReadReady for MemoryLink {
    fn read_ready(&mut self) -> Result<bool, Infallible> {
        Ok(!self.incoming.is_empty())
    }
}

impl embedded_io::Write for MemoryLink {
    fn write(&mut self, buf: &[u8]) -> Result<usize, Infallible> {
        self.outgoing.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> Result<(), Infallible> {
        Ok(())
    }
}
