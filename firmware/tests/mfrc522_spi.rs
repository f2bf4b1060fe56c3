//! The MFRC522 driver against embedded-hal-mock: every SPI transaction it makes is checked
//! against what the datasheet prescribes, and the chip's answers include collisions, CRC errors
//! and protocol errors.

use embedded_hal_mock::eh1::spi::{Mock, Transaction as T};
use storegate_firmware::iso14443::{crc_a, Uid};
use storegate_firmware::mfrc522::{Error, Mfrc522, Register};

fn write(register: Register, value: u8) -> Vec<T<u8>> {
    vec![
        T::transaction_start(),
        T::write_vec(vec![(register as u8) << 1, value]),
        T::transaction_end(),
    ]
}

fn read(register: Register, value: u8) -> Vec<T<u8>> {
    vec![
        T::transaction_start(),
        T::transfer_in_place(vec![0x80 | ((register as u8) << 1), 0], vec![0, value]),
        T::transaction_end(),
    ]
}

/// What the chip says after a transceive.
enum Answer<'a> {
    /// The timer ran out after one "still busy" status read.
    Silence,
    /// A frame arrived; `error` is ErrorReg, `coll` CollReg (read only on a collision).
    Frame {
        bytes: &'a [u8],
        error: u8,
        coll: u8,
    },
}

fn transceive(tx: &[u8], framing: u8, answer: Answer<'_>) -> Vec<T<u8>> {
    let mut t = Vec::new();
    t.extend(write(Register::Command, 0x00));
    t.extend(write(Register::ComIrq, 0x7F));
    t.extend(write(Register::FifoLevel, 0x80));
    t.extend([
        T::transaction_start(),
        T::write_vec(vec![(Register::FifoData as u8) << 1]),
        T::write_vec(tx.to_vec()),
        T::transaction_end(),
    ]);
    t.extend(write(Register::BitFraming, framing));
    t.extend(write(Register::Command, 0x0C));
    t.extend(write(Register::BitFraming, 0x80 | framing));
    match answer {
        Answer::Silence => {
            t.extend(read(Register::ComIrq, 0x00));
            t.extend(read(Register::ComIrq, 0x01));
        }
        Answer::Frame { bytes, error, coll } => {
            t.extend(read(Register::ComIrq, 0x30));
            t.extend(read(Register::Error, error));
            if error & 0x17 != 0 {
                return t;
            }
            t.extend(read(Register::FifoLevel, bytes.len() as u8));
            let address = 0x80 | ((Register::FifoData as u8) << 1);
            let mut expected = vec![address; bytes.len()];
            expected.push(0);
            let mut response = vec![0];
            response.extend_from_slice(bytes);
            t.extend([
                T::transaction_start(),
                T::transfer_in_place(expected, response),
                T::transaction_end(),
            ]);
            t.extend(read(Register::Control, 0x00));
            if error & 0x08 != 0 {
                t.extend(read(Register::Coll, coll));
            }
        }
    }
    t
}

fn ok_frame(bytes: &[u8]) -> Answer<'_> {
    Answer::Frame {
        bytes,
        error: 0,
        coll: 0,
    }
}

fn with_bcc(b: [u8; 4]) -> [u8; 5] {
    [b[0], b[1], b[2], b[3], b[0] ^ b[1] ^ b[2] ^ b[3]]
}

fn select_frame(sel: u8, level: [u8; 5]) -> Vec<u8> {
    let mut tx = vec![sel, 0x70];
    tx.extend_from_slice(&level);
    let crc = crc_a(&tx);
    tx.extend_from_slice(&crc);
    tx
}

fn sak(value: u8) -> [u8; 3] {
    let crc = crc_a(&[value]);
    [value, crc[0], crc[1]]
}

fn run<R>(expectations: Vec<T<u8>>, f: impl FnOnce(&mut Mfrc522<Mock<u8>>) -> R) -> R {
    let mut chip = Mfrc522::new(Mock::new(&expectations));
    let result = f(&mut chip);
    // Fails the test if the driver skipped an expected transaction.
    chip.release().done();
    result
}

#[test]
fn init_resets_the_chip_waits_for_power_up_configures_the_timer_and_turns_the_antenna_on() {
    let mut t = write(Register::Command, 0x0F);
    t.extend(read(Register::Command, 0x10)); // still powering up
    t.extend(read(Register::Command, 0x00));
    t.extend(read(Register::Version, 0x92));
    t.extend(write(Register::TMode, 0x80));
    t.extend(write(Register::TPrescaler, 0xA9));
    t.extend(write(Register::TReloadHigh, 0x03));
    t.extend(write(Register::TReloadLow, 0xE8));
    t.extend(write(Register::TxAsk, 0x40));
    t.extend(write(Register::Mode, 0x3D));
    t.extend(read(Register::TxControl, 0x80));
    t.extend(write(Register::TxControl, 0x83));
    assert_eq!(run(t, |chip| chip.init()), Ok(0x92));
}

#[test]
fn init_refuses_a_chip_that_is_not_an_mfrc522() {
    let mut t = write(Register::Command, 0x0F);
    t.extend(read(Register::Command, 0x00));
    t.extend(read(Register::Version, 0xFF)); // MISO floating high: nothing wired
    assert_eq!(run(t, |chip| chip.init()), Err(Error::UnknownChip(0xFF)));
}

#[test]
fn wake_up_reports_no_card_when_the_timer_runs_out() {
    let t = transceive(&[0x52], 0x07, Answer::Silence);
    assert_eq!(run(t, |chip| chip.wake_up()), Ok(false));
}

#[test]
fn wake_up_sees_a_card_by_its_atqa() {
    let t = transceive(&[0x52], 0x07, ok_frame(&[0x44, 0x00]));
    assert_eq!(run(t, |chip| chip.wake_up()), Ok(true));
}

#[test]
fn selects_a_single_size_uid() {
    let level = with_bcc([0xDE, 0xAD, 0xBE, 0xEF]);
    let mut t = transceive(&[0x93, 0x20], 0x00, ok_frame(&level));
    t.extend(transceive(
        &select_frame(0x93, level),
        0x00,
        ok_frame(&sak(0x08)),
    ));
    let uid = run(t, |chip| chip.select()).unwrap();
    assert_eq!(uid.as_bytes(), [0xDE, 0xAD, 0xBE, 0xEF]);
}

#[test]
fn selects_a_double_size_uid_through_the_cascade_tag() {
    let uid = Uid::new(&[0x04, 0x25, 0x9A, 0x3B, 0x4C, 0x5D, 0x6E]).unwrap();
    let one = uid.cascade_level(0).unwrap();
    let two = uid.cascade_level(1).unwrap();
    assert_eq!(one[0], 0x88);
    let mut t = transceive(&[0x93, 0x20], 0x00, ok_frame(&one));
    t.extend(transceive(
        &select_frame(0x93, one),
        0x00,
        ok_frame(&sak(0x04)),
    ));
    t.extend(transceive(&[0x95, 0x20], 0x00, ok_frame(&two)));
    t.extend(transceive(
        &select_frame(0x95, two),
        0x00,
        ok_frame(&sak(0x00)),
    ));
    assert_eq!(run(t, |chip| chip.select()), Ok(uid));
}

#[test]
fn resolves_a_collision_bit_by_bit_and_selects_the_card_with_the_one() {
    // Two cards differ first at bit 9 (0x34 vs 0x36 in byte 1): CollReg says position 10.
    let a = with_bcc([0x12, 0x34, 0x56, 0x78]);
    let b = with_bcc([0x12, 0x36, 0x56, 0x78]);
    let overlaid: Vec<u8> = a.iter().zip(b).map(|(x, y)| x | y).collect();
    let mut t = transceive(
        &[0x93, 0x20],
        0x00,
        Answer::Frame {
            bytes: &overlaid,
            error: 0x08,
            coll: 10,
        },
    );
    // Ten bits known: one full byte and two bits, sent with TxLastBits = RxAlign = 2.
    t.extend(transceive(
        &[0x93, 0x32, 0x12, 0x02],
        0x22,
        ok_frame(&[b[1] & !0x03, b[2], b[3], b[4]]),
    ));
    t.extend(transceive(
        &select_frame(0x93, b),
        0x00,
        ok_frame(&sak(0x08)),
    ));
    let uid = run(t, |chip| chip.select()).unwrap();
    assert_eq!(uid.as_bytes(), &b[..4]);
}

#[test]
fn a_collision_without_a_valid_position_is_an_error() {
    let t = transceive(
        &[0x93, 0x20],
        0x00,
        Answer::Frame {
            bytes: &[0xFF; 5],
            error: 0x08,
            coll: 0x20,
        },
    );
    assert_eq!(run(t, |chip| chip.select()), Err(Error::Collision));
}

#[test]
fn a_sak_with_a_wrong_crc_is_refused() {
    let level = with_bcc([0xDE, 0xAD, 0xBE, 0xEF]);
    let mut bad = sak(0x08);
    bad[2] ^= 0x40;
    let mut t = transceive(&[0x93, 0x20], 0x00, ok_frame(&level));
    t.extend(transceive(&select_frame(0x93, level), 0x00, ok_frame(&bad)));
    assert_eq!(run(t, |chip| chip.select()), Err(Error::Crc));
}

#[test]
fn a_crc_error_flagged_by_the_chip_is_refused() {
    let t = transceive(
        &[0x93, 0x20],
        0x00,
        Answer::Frame {
            bytes: &[],
            error: 0x04,
            coll: 0,
        },
    );
    assert_eq!(run(t, |chip| chip.select()), Err(Error::Crc));
}

#[test]
fn parity_and_protocol_errors_from_the_chip_are_reported() {
    let t = transceive(
        &[0x93, 0x20],
        0x00,
        Answer::Frame {
            bytes: &[],
            error: 0x02,
            coll: 0,
        },
    );
    assert_eq!(run(t, |chip| chip.select()), Err(Error::Protocol(0x02)));
}

#[test]
fn a_uid_with_a_wrong_check_byte_is_refused() {
    let mut level = with_bcc([0xDE, 0xAD, 0xBE, 0xEF]);
    level[4] ^= 0x01;
    let t = transceive(&[0x93, 0x20], 0x00, ok_frame(&level));
    assert_eq!(run(t, |chip| chip.select()), Err(Error::Bcc));
}

#[test]
fn halt_succeeds_when_the_card_stays_silent() {
    let t = transceive(&[0x50, 0x00, 0x57, 0xCD], 0x00, Answer::Silence);
    assert_eq!(run(t, |chip| chip.halt()), Ok(()));
}
