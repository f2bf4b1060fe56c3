//! MFRC522 NFC front end over SPI (embedded-hal 1.0 `SpiDevice`): chip setup, ISO 14443-A
//! wake-up, anticollision and select through cascade levels 1-3, and halt.
//!
//! The driver owns nothing but the SPI device, never sleeps and never allocates, so the same code
//! runs on a microcontroller, on a Pi's spidev through linux-embedded-hal, and against the
//! simulated chip in tests. The chip's own timer bounds every wait for a card (25 ms); a chip that
//! stops answering is noticed after [`MAX_IRQ_POLLS`] status reads.
//!
//! SPI framing (datasheet 8.1.2): the first byte is `addr << 1`, with bit 7 set for a read. A
//! read sends the address once per wanted byte and a 0 to finish; a write sends the address and
//! then data bytes, all going to that register (which fills the FIFO for `FIFODataReg`).

use embedded_hal::spi::{Operation, SpiDevice};

use crate::iso14443::{self, crc_a, Uid};

/// Chip registers the driver uses (datasheet 9.2).
#[allow(missing_docs)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Register {
    Command = 0x01,
    ComIEn = 0x02,
    DivIEn = 0x03,
    ComIrq = 0x04,
    Error = 0x06,
    FifoData = 0x09,
    FifoLevel = 0x0A,
    Control = 0x0C,
    BitFraming = 0x0D,
    Coll = 0x0E,
    Mode = 0x11,
    TxControl = 0x14,
    TxAsk = 0x15,
    TMode = 0x2A,
    TPrescaler = 0x2B,
    TReloadHigh = 0x2C,
    TReloadLow = 0x2D,
    Version = 0x37,
}

/// `CommandReg` commands.
pub mod command {
    /// Stop whatever runs.
    pub const IDLE: u8 = 0x00;
    /// Send the FIFO, then receive into it.
    pub const TRANSCEIVE: u8 = 0x0C;
    /// Reset every register.
    pub const SOFT_RESET: u8 = 0x0F;
    /// `CommandReg` bit set while the chip is powered down (still resetting).
    pub const POWER_DOWN: u8 = 0x10;
}

/// `ComIrqReg` bits.
pub mod irq {
    /// Writing this clears every interrupt request bit.
    pub const CLEAR_ALL: u8 = 0x7F;
    /// The receiver saw the end of a frame.
    pub const RX: u8 = 0x20;
    /// A command finished.
    pub const IDLE: u8 = 0x10;
    /// The timer ran out: no card answered.
    pub const TIMER: u8 = 0x01;
}

/// `ComIEnReg`: the IRQ pin is active low (with the request bits it passes on).
pub const IRQ_INVERTED: u8 = 0x80;
/// `DivIEnReg`: the IRQ pin drives both levels (no pull-up needed on the host side).
pub const IRQ_PUSH_PULL: u8 = 0x80;

/// The chip's IRQ pin as the host sees it. With a line wired, the driver waits on it for each
/// command's end instead of reading `ComIrqReg` over SPI until it shows (on a Linux box each
/// read is a system call; a microcontroller would sleep instead of spinning).
pub trait IrqLine {
    /// Whether a line is wired: the chip is then told to drive its IRQ pin.
    const WIRED: bool;
    /// Blocks until the pin is asserted or a bound past the chip's 25 ms timer has passed;
    /// `false` after the bound (the status register is read either way).
    fn wait(&mut self) -> bool;
}

/// No IRQ line: the driver reads the status register until a command ends.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoIrq;

impl IrqLine for NoIrq {
    const WIRED: bool = false;
    fn wait(&mut self) -> bool {
        true
    }
}

/// `ErrorReg` bits.
pub mod error_bits {
    /// FIFO overflow.
    pub const BUFFER_OVERFLOW: u8 = 0x10;
    /// A bit collision: more than one card answered differently.
    pub const COLLISION: u8 = 0x08;
    /// CRC check failed on a received frame.
    pub const CRC: u8 = 0x04;
    /// Parity check failed.
    pub const PARITY: u8 = 0x02;
    /// SOF or frame length wrong.
    pub const PROTOCOL: u8 = 0x01;
}

/// `CollReg`: the collision position is not valid (beyond the 32 bits it can name).
pub const COLL_POS_NOT_VALID: u8 = 0x20;
/// `BitFramingReg`: start transmitting (with the Transceive command).
pub const START_SEND: u8 = 0x80;
/// `FIFOLevelReg`: flush the FIFO.
pub const FLUSH_FIFO: u8 = 0x80;
/// The FIFO holds 64 bytes.
pub const FIFO_SIZE: usize = 64;
/// Status reads before a chip that never raises an interrupt is declared unresponsive. At a few
/// microseconds per SPI read this is well past the chip's own 25 ms timer.
pub const MAX_IRQ_POLLS: usize = 20_000;
/// Rounds of bit-wise anticollision per cascade level: each round learns at least one bit of 32.
const MAX_ANTICOLLISION_ROUNDS: usize = 33;

/// What can go wrong talking to the chip or a card.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Error<E> {
    /// The SPI bus failed.
    Spi(E),
    /// No card answered before the chip's timer ran out.
    NoCard,
    /// The chip never signalled completion.
    ChipUnresponsive,
    /// The version register names no MFRC522 (or the chip is not wired).
    UnknownChip(u8),
    /// Parity, framing or FIFO overflow error reported by the chip (`ErrorReg` value).
    Protocol(u8),
    /// A frame failed its CRC_A check (reported by the chip or found by the driver).
    Crc,
    /// Cards collided where the driver cannot resolve it (no valid collision position).
    Collision,
    /// A UID's check byte did not match its bytes.
    Bcc,
    /// A card answered with a frame of the wrong length or shape.
    UnexpectedReply,
}

/// What a transceive received.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Received {
    /// Bytes in the FIFO.
    pub len: usize,
    /// Valid bits in the last byte; 0 means all 8.
    pub last_bits: u8,
    /// Bit position (1-based, in the frame's data bits) of the first collision, if there was one.
    pub collision_at: Option<u8>,
}

/// The MFRC522 driver.
#[derive(Debug)]
pub struct Mfrc522<SPI, IRQ = NoIrq> {
    spi: SPI,
    irq: IRQ,
}

impl<SPI: SpiDevice> Mfrc522<SPI, NoIrq> {
    /// Wraps the SPI device; call [`Mfrc522::init`] before anything else.
    pub fn new(spi: SPI) -> Self {
        Mfrc522 { spi, irq: NoIrq }
    }
}

impl<SPI: SpiDevice, IRQ: IrqLine> Mfrc522<SPI, IRQ> {
    /// Wraps the SPI device and the line wired to the chip's IRQ pin.
    pub fn with_irq(spi: SPI, irq: IRQ) -> Self {
        Mfrc522 { spi, irq }
    }

    /// Gives the SPI device back.
    pub fn release(self) -> SPI {
        self.spi
    }

    /// Soft-resets the chip, sets its timer to 25 ms, 100% ASK and the ISO 14443-A CRC preset,
    /// and switches the antenna on. Returns the version register (0x91 = v1.0, 0x92 = v2.0,
    /// 0x88 = FM17522 clone).
    pub fn init(&mut self) -> Result<u8, Error<SPI::Error>> {
        self.write(Register::Command, command::SOFT_RESET)?;
        let mut reset = false;
        for _ in 0..MAX_IRQ_POLLS {
            if self.read(Register::Command)? & command::POWER_DOWN == 0 {
                reset = true;
                break;
            }
        }
        if !reset {
            return Err(Error::ChipUnresponsive);
        }
        let version = self.read(Register::Version)?;
        if !matches!(version, 0x88 | 0x90 | 0x91 | 0x92 | 0xB2) {
            return Err(Error::UnknownChip(version));
        }
        // TAuto, prescaler 0xA9 → 40 kHz ticks; reload 1000 ticks = 25 ms per wait for a card.
        self.write(Register::TMode, 0x80)?;
        self.write(Register::TPrescaler, 0xA9)?;
        self.write(Register::TReloadHigh, 0x03)?;
        self.write(Register::TReloadLow, 0xE8)?;
        self.write(Register::TxAsk, 0x40)?;
        if IRQ::WIRED {
            // The pin follows the end-of-command requests transceive waits for.
            self.write(
                Register::ComIEn,
                IRQ_INVERTED | irq::RX | irq::IDLE | irq::TIMER,
            )?;
            self.write(Register::DivIEn, IRQ_PUSH_PULL)?;
        }
        self.write(Register::Mode, 0x3D)?;
        let tx_control = self.read(Register::TxControl)?;
        if tx_control & 0x03 != 0x03 {
            self.write(Register::TxControl, tx_control | 0x03)?;
        }
        Ok(version)
    }

    /// Sends WUPA. `Ok(true)` when at least one card answered (colliding ATQAs count: several
    /// cards are there), `Ok(false)` when none did.
    pub fn wake_up(&mut self) -> Result<bool, Error<SPI::Error>> {
        self.short_frame(iso14443::WUPA)
    }

    /// Sends REQA (wakes only cards that are not halted).
    pub fn request(&mut self) -> Result<bool, Error<SPI::Error>> {
        self.short_frame(iso14443::REQA)
    }

    fn short_frame(&mut self, command: u8) -> Result<bool, Error<SPI::Error>> {
        let mut atqa = [0u8; 2];
        match self.transceive(&[command], 7, 0, &mut atqa) {
            Ok(received) if received.collision_at.is_some() => Ok(true),
            Ok(received) if received.len == 2 && received.last_bits == 0 => Ok(true),
            Ok(_) => Err(Error::UnexpectedReply),
            Err(Error::NoCard) => Ok(false),
            Err(other) => Err(other),
        }
    }

    /// Runs anticollision and SELECT through as many cascade levels as the card's UID needs.
    /// With several cards in the field, the one whose UID has a 1 at the first differing bit
    /// wins; the others stay unselected.
    pub fn select(&mut self) -> Result<Uid, Error<SPI::Error>> {
        let mut uid = [0u8; 10];
        let mut uid_len = 0;
        for sel in iso14443::SEL {
            let level = self.anticollision(sel)?;
            let sak = self.select_level(sel, &level)?;
            if sak & iso14443::SAK_CASCADE != 0 {
                if level[0] != iso14443::CASCADE_TAG || uid_len + 3 > 6 {
                    return Err(Error::UnexpectedReply);
                }
                uid[uid_len..uid_len + 3].copy_from_slice(&level[1..4]);
                uid_len += 3;
            } else {
                uid[uid_len..uid_len + 4].copy_from_slice(&level[..4]);
                uid_len += 4;
                return Uid::new(&uid[..uid_len]).ok_or(Error::UnexpectedReply);
            }
        }
        Err(Error::UnexpectedReply)
    }

    /// Bit-wise anticollision at one cascade level: returns the level's four bytes and BCC.
    fn anticollision(&mut self, sel: u8) -> Result<[u8; 5], Error<SPI::Error>> {
        let mut level = [0u8; 5];
        let mut known_bits = 0usize;
        for _ in 0..MAX_ANTICOLLISION_ROUNDS {
            let full_bytes = known_bits / 8;
            let extra_bits = (known_bits % 8) as u8;
            let mut tx = [0u8; 7];
            tx[0] = sel;
            tx[1] = (((2 + full_bytes) as u8) << 4) | extra_bits;
            let sent_bytes = full_bytes + usize::from(extra_bits > 0);
            tx[2..2 + sent_bytes].copy_from_slice(&level[..sent_bytes]);
            let mut rx = [0u8; 5];
            let received = self.transceive(
                &tx[..2 + sent_bytes],
                extra_bits,
                extra_bits,
                &mut rx[..5 - full_bytes],
            )?;
            if received.len == 0 || full_bytes + received.len > 5 {
                return Err(Error::UnexpectedReply);
            }
            // The first received byte shares its low bits with the partial byte we sent.
            let keep_mask = (1u8 << extra_bits) - 1;
            level[full_bytes] = (level[full_bytes] & keep_mask) | (rx[0] & !keep_mask);
            level[full_bytes + 1..full_bytes + received.len].copy_from_slice(&rx[1..received.len]);
            match received.collision_at {
                None => {
                    if full_bytes + received.len != 5 || received.last_bits != 0 {
                        return Err(Error::UnexpectedReply);
                    }
                    if level[0] ^ level[1] ^ level[2] ^ level[3] != level[4] {
                        return Err(Error::Bcc);
                    }
                    return Ok(level);
                }
                Some(position) => {
                    let position = if position == 0 {
                        32
                    } else {
                        usize::from(position)
                    };
                    if position <= known_bits {
                        return Err(Error::Collision);
                    }
                    // Bits before the collision are shared by every answering card; take the
                    // branch of cards with a 1 at the collision and keep only bits we know.
                    known_bits = position;
                    let bit = position - 1;
                    level[bit / 8] |= 1 << (bit % 8);
                    level[bit / 8] &= (((1u16 << (bit % 8 + 1)) - 1) & 0xFF) as u8;
                    for byte in level.iter_mut().skip(bit / 8 + 1) {
                        *byte = 0;
                    }
                }
            }
        }
        Err(Error::Collision)
    }

    /// SELECT at one level; returns the SAK after checking its CRC_A.
    fn select_level(&mut self, sel: u8, level: &[u8; 5]) -> Result<u8, Error<SPI::Error>> {
        let mut tx = [0u8; 9];
        tx[0] = sel;
        tx[1] = 0x70;
        tx[2..7].copy_from_slice(level);
        let crc = crc_a(&tx[..7]);
        tx[7..9].copy_from_slice(&crc);
        let mut rx = [0u8; 3];
        let received = self.transceive(&tx, 0, 0, &mut rx)?;
        if received.collision_at.is_some() || received.len != 3 || received.last_bits != 0 {
            return Err(Error::UnexpectedReply);
        }
        if crc_a(&rx[..1]) != [rx[1], rx[2]] {
            return Err(Error::Crc);
        }
        Ok(rx[0])
    }

    /// Puts the selected card to sleep (HLTA). A card acknowledges HLTA by saying nothing, so
    /// the chip's timer running out is the success case.
    pub fn halt(&mut self) -> Result<(), Error<SPI::Error>> {
        let mut tx = [iso14443::HLTA, 0x00, 0, 0];
        let crc = crc_a(&tx[..2]);
        tx[2..].copy_from_slice(&crc);
        let mut rx = [0u8; 1];
        match self.transceive(&tx, 0, 0, &mut rx) {
            Err(Error::NoCard) => Ok(()),
            Ok(_) => Err(Error::UnexpectedReply),
            Err(other) => Err(other),
        }
    }

    /// Sends `tx` (its last byte holding `tx_last_bits` bits, 0 = 8) and receives into `rx`,
    /// the first received bit landing at bit `rx_align` of `rx[0]`.
    pub fn transceive(
        &mut self,
        tx: &[u8],
        tx_last_bits: u8,
        rx_align: u8,
        rx: &mut [u8],
    ) -> Result<Received, Error<SPI::Error>> {
        let framing = ((rx_align & 0x07) << 4) | (tx_last_bits & 0x07);
        self.write(Register::Command, command::IDLE)?;
        self.write(Register::ComIrq, irq::CLEAR_ALL)?;
        self.write(Register::FifoLevel, FLUSH_FIFO)?;
        self.write_fifo(tx)?;
        self.write(Register::BitFraming, framing)?;
        self.write(Register::Command, command::TRANSCEIVE)?;
        self.write(Register::BitFraming, START_SEND | framing)?;
        // A timed-out wait still reads the status: a missed edge costs polls, not a card.
        self.irq.wait();

        let mut finished = false;
        for _ in 0..MAX_IRQ_POLLS {
            let irq = self.read(Register::ComIrq)?;
            if irq & (irq::RX | irq::IDLE) != 0 {
                finished = true;
                break;
            }
            if irq & irq::TIMER != 0 {
                return Err(Error::NoCard);
            }
        }
        if !finished {
            return Err(Error::ChipUnresponsive);
        }

        let error = self.read(Register::Error)?;
        if error & (error_bits::BUFFER_OVERFLOW | error_bits::PARITY | error_bits::PROTOCOL) != 0 {
            return Err(Error::Protocol(error));
        }
        if error & error_bits::CRC != 0 {
            return Err(Error::Crc);
        }
        let len = usize::from(self.read(Register::FifoLevel)? & 0x7F);
        if len > rx.len() {
            return Err(Error::UnexpectedReply);
        }
        self.read_fifo(&mut rx[..len])?;
        let last_bits = self.read(Register::Control)? & 0x07;
        let collision_at = if error & error_bits::COLLISION != 0 {
            let coll = self.read(Register::Coll)?;
            if coll & COLL_POS_NOT_VALID != 0 {
                return Err(Error::Collision);
            }
            Some(coll & 0x1F)
        } else {
            None
        };
        Ok(Received {
            len,
            last_bits,
            collision_at,
        })
    }

    fn write(&mut self, register: Register, value: u8) -> Result<(), Error<SPI::Error>> {
        self.spi
            .write(&[(register as u8) << 1, value])
            .map_err(Error::Spi)
    }

    fn read(&mut self, register: Register) -> Result<u8, Error<SPI::Error>> {
        let mut frame = [0x80 | ((register as u8) << 1), 0];
        self.spi.transfer_in_place(&mut frame).map_err(Error::Spi)?;
        Ok(frame[1])
    }

    fn write_fifo(&mut self, data: &[u8]) -> Result<(), Error<SPI::Error>> {
        let address = [(Register::FifoData as u8) << 1];
        self.spi
            .transaction(&mut [Operation::Write(&address), Operation::Write(data)])
            .map_err(Error::Spi)
    }

    fn read_fifo(&mut self, out: &mut [u8]) -> Result<(), Error<SPI::Error>> {
        if out.is_empty() {
            return Ok(());
        }
        let mut frame = [0u8; FIFO_SIZE + 1];
        let frame = &mut frame[..out.len() + 1];
        let address = 0x80 | ((Register::FifoData as u8) << 1);
        for byte in frame[..out.len()].iter_mut() {
            *byte = address;
        }
        self.spi.transfer_in_place(frame).map_err(Error::Spi)?;
        out.copy_from_slice(&frame[1..]);
        Ok(())
    }
}
