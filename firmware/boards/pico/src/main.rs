//! The storegate loyalty reader on a Raspberry Pi Pico (RP2040): the firmware loop of
//! `storegate-firmware` wired to the board's SPI (MFRC522), UART (gateway link) and GPIO
//! (buzzer, LEDs). Everything the reader does lives in the shared crate; this file only says
//! which pin is which.
//!
//! | signal | Pico pin |
//! |---|---|
//! | UART0 TX → gateway RX | GP0 |
//! | UART0 RX ← gateway TX | GP1 |
//! | MFRC522 MISO | GP16 (SPI0 RX) |
//! | MFRC522 SDA/NSS | GP17 (chip select) |
//! | MFRC522 SCK | GP18 |
//! | MFRC522 MOSI | GP19 |
//! | MFRC522 RST | GP20 |
//! | red LED / green LED / buzzer | GP13 / GP14 / GP15 |
//!
//! Build: `cargo build --release` in this folder (target thumbv6m-none-eabi, set in
//! `.cargo/config.toml`); `cargo run --release` flashes a Pico in BOOTSEL mode.

#![no_std]
#![no_main]

use embedded_hal::digital::OutputPin;
use embedded_hal_bus::spi::ExclusiveDevice;
use panic_halt as _;
use rp2040_hal as hal;

use hal::fugit::RateExtU32;
use hal::gpio::{FunctionSpi, FunctionUart, Pins};
use hal::pac;
use hal::uart::{DataBits, StopBits, UartConfig, UartPeripheral};
use hal::Clock;
use storegate_firmware::bridge::{Bridge, Outputs};
use storegate_firmware::mfrc522::Mfrc522;

/// The second-stage bootloader for the Pico's W25Q080 flash.
#[link_section = ".boot2"]
#[used]
pub static BOOT2: [u8; 256] = rp2040_boot2::BOOT_LOADER_W25Q080;

/// The Pico's crystal.
const XTAL_FREQ_HZ: u32 = 12_000_000;
/// The link's line speed (PROTOCOL.md; the gateway's `baud` default).
const LINK_BAUD: u32 = 115_200;
/// The MFRC522 is specified up to 10 MHz; 4 MHz leaves margin for breadboard wiring.
const SPI_HZ: u32 = 4_000_000;

/// Board bring-up failed (clocks, UART divisor): nothing can talk to the gateway, so stop and
/// let the watchdog-less board sit visibly dead rather than half-working.
fn halt() -> ! {
    loop {
        cortex_m::asm::wfi();
    }
}

#[hal::entry]
fn main() -> ! {
    let Some(mut pac) = pac::Peripherals::take() else {
        halt()
    };
    let mut watchdog = hal::Watchdog::new(pac.WATCHDOG);
    let Ok(clocks) = hal::clocks::init_clocks_and_plls(
        XTAL_FREQ_HZ,
        pac.XOSC,
        pac.CLOCKS,
        pac.PLL_SYS,
        pac.PLL_USB,
        &mut pac.RESETS,
        &mut watchdog,
    ) else {
        halt()
    };
    let sio = hal::Sio::new(pac.SIO);
    let pins = Pins::new(
        pac.IO_BANK0,
        pac.PADS_BANK0,
        sio.gpio_bank0,
        &mut pac.RESETS,
    );
    let timer = hal::Timer::new(pac.TIMER, &mut pac.RESETS, &clocks);

    let uart_pins = (
        pins.gpio0.into_function::<FunctionUart>(),
        pins.gpio1.into_function::<FunctionUart>(),
    );
    let Ok(link) = UartPeripheral::new(pac.UART0, uart_pins, &mut pac.RESETS).enable(
        UartConfig::new(LINK_BAUD.Hz(), DataBits::Eight, None, StopBits::One),
        clocks.peripheral_clock.freq(),
    ) else {
        halt()
    };

    let spi_pins = (
        pins.gpio19.into_function::<FunctionSpi>(),
        pins.gpio16.into_function::<FunctionSpi>(),
        pins.gpio18.into_function::<FunctionSpi>(),
    );
    let spi_bus = hal::spi::Spi::<_, _, _, 8>::new(pac.SPI0, spi_pins).init(
        &mut pac.RESETS,
        clocks.peripheral_clock.freq(),
        SPI_HZ.Hz(),
        embedded_hal::spi::MODE_0,
    );
    let chip_select = pins.gpio17.into_push_pull_output();
    // RP2040 pins cannot fail to switch, so the chip select cannot either.
    let Ok(spi) = ExclusiveDevice::new(spi_bus, chip_select, timer);
    // NRSTPD high takes the MFRC522 out of hard power-down.
    let mut chip_reset = pins.gpio20.into_push_pull_output();
    let _ = chip_reset.set_high();

    let outputs = Outputs {
        buzzer: pins.gpio15.into_push_pull_output(),
        green: pins.gpio14.into_push_pull_output(),
        red: pins.gpio13.into_push_pull_output(),
    };
    let mut bridge = Bridge::new(Mfrc522::new(spi), link, outputs);
    // The 64-bit microsecond counter, as the wrapping millisecond clock the loop expects.
    let now_ms = || (timer.get_counter().ticks() / 1_000) as u32;
    // A link error (the gateway unplugged) is not fatal: the next step tries again.
    let _ = bridge.start(now_ms());
    loop {
        let _ = bridge.step(now_ms());
    }
}
