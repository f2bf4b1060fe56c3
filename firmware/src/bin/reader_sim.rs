//! `storegate-reader-sim`: the reader firmware's loop running on the host against a simulated
//! MFRC522, talking over a pseudo-terminal, so the gateway reads it exactly as it would read the
//! real board on `/dev/ttyACM0`.
//!
//! stdout, one JSON object per line:
//! - `{"event":"ready","port":"/dev/pts/N"}` once: point the gateway at `port`;
//! - `{"event":"buzzer","on":true}`, `{"event":"led","color":"green","on":true}` when a pin changes;
//! - `{"event":"sent","message":"card_present","uid":"04A1…"}` for every card message sent;
//! - `{"event":"ok","command":"present"}` once a stdin command has been applied;
//! - `{"event":"error","message":"…"}` for a stdin line it cannot apply.
//!
//! stdin, one command per line: `present <uid hex>`, `remove <uid hex>`, `clear`,
//! `crc-errors <n>` (the next n SAK replies are corrupted), `noise <hex bytes>` (raw bytes on the
//! line), `quit`. End of input also quits.

use std::io::{BufRead, Read as _, Write as _};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serialport::{SerialPort, TTYPort};
use storegate_firmware::bridge::{Bridge, Outputs};
use storegate_firmware::frame::Decoder;
use storegate_firmware::iso14443::Uid;
use storegate_firmware::message::ReaderMessage;
use storegate_firmware::mfrc522::Mfrc522;
use storegate_firmware::sim::{CallbackPin, Field, SimulatedMfrc522};

/// How long the loop idles between steps; the firmware polls every 50 ms, so this is plenty.
const STEP: Duration = Duration::from_millis(2);

fn emit(line: &str) {
    let mut out = std::io::stdout().lock();
    // Nobody listening on stdout is no reason to stop simulating the reader.
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02X}")).collect()
}

fn parse_hex(text: &str) -> Result<Vec<u8>, String> {
    let text = text.trim();
    if !text.len().is_multiple_of(2) {
        return Err(format!("{text:?} has an odd number of hex digits"));
    }
    (0..text.len())
        .step_by(2)
        .map(|i| {
            text.get(i..i + 2)
                .and_then(|pair| u8::from_str_radix(pair, 16).ok())
                .ok_or_else(|| format!("{text:?} is not hex"))
        })
        .collect()
}

/// The pty's controlling side as the firmware's UART. It also decodes what the firmware sends,
/// so the harness can see card messages leave.
struct PtyLink {
    port: TTYPort,
    sent: Decoder,
}

#[derive(Debug)]
struct LinkError(std::io::ErrorKind);

impl embedded_io::Error for LinkError {
    fn kind(&self) -> embedded_io::ErrorKind {
        match self.0 {
            std::io::ErrorKind::TimedOut => embedded_io::ErrorKind::TimedOut,
            _ => embedded_io::ErrorKind::Other,
        }
    }
}

impl embedded_io::ErrorType for PtyLink {
    type Error = LinkError;
}

impl embedded_io::Read for PtyLink {
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, LinkError> {
        self.port.read(buf).map_err(|e| LinkError(e.kind()))
    }
}

impl embedded_io::ReadReady for PtyLink {
    fn read_ready(&mut self) -> Result<bool, LinkError> {
        self.port
            .bytes_to_read()
            .map(|n| n > 0)
            .map_err(|_| LinkError(std::io::ErrorKind::Other))
    }
}

impl embedded_io::Write for PtyLink {
    fn write(&mut self, buf: &[u8]) -> Result<usize, LinkError> {
        let n = self.port.write(buf).map_err(|e| LinkError(e.kind()))?;
        for &byte in &buf[..n] {
            if let Some(frame) = self.sent.push(byte) {
                let (message, uid) = match ReaderMessage::parse(frame) {
                    Ok(ReaderMessage::CardPresent(uid)) => ("card_present", uid),
                    Ok(ReaderMessage::CardRemoved(uid)) => ("card_removed", uid),
                    _ => continue,
                };
                emit(&format!(
                    r#"{{"event":"sent","message":"{message}","uid":"{}"}}"#,
                    hex(uid.as_bytes())
                ));
            }
        }
        Ok(n)
    }

    fn flush(&mut self) -> Result<(), LinkError> {
        self.port.flush().map_err(|e| LinkError(e.kind()))
    }
}

enum Control {
    Line(String),
    Quit,
}

fn apply(line: &str, field: &Field, link: &mut PtyLink) -> Result<&'static str, String> {
    let (command, argument) = line.trim().split_once(' ').unwrap_or((line.trim(), ""));
    let uid = || {
        parse_hex(argument)
            .and_then(|bytes| Uid::new(&bytes).ok_or_else(|| "a UID has 4, 7 or 10 bytes".into()))
    };
    match command {
        "present" => field.present(uid()?),
        "remove" => field.remove(uid()?),
        "clear" => field.clear(),
        "crc-errors" => field.corrupt_sak_crcs(
            argument
                .trim()
                .parse()
                .map_err(|_| format!("{argument:?} is not a count"))?,
        ),
        "noise" => {
            let bytes = parse_hex(argument)?;
            link.port
                .write_all(&bytes)
                .map_err(|e| format!("cannot write noise: {e}"))?;
        }
        _ => return Err(format!("unknown command {command:?}")),
    }
    Ok(match command {
        "present" => "present",
        "remove" => "remove",
        "clear" => "clear",
        "crc-errors" => "crc-errors",
        _ => "noise",
    })
}

fn main() {
    if let Some(arg) = std::env::args().nth(1) {
        if arg == "--help" || arg == "-h" {
            println!("{}", include_str!("reader_sim_help.txt"));
            return;
        }
        eprintln!("storegate-reader-sim takes no arguments (try --help)");
        std::process::exit(2);
    }
    let (master, slave) = match TTYPort::pair() {
        Ok(pair) => pair,
        Err(e) => {
            eprintln!("storegate-reader-sim: cannot open a pseudo-terminal: {e}");
            std::process::exit(1);
        }
    };
    let Some(port_name) = slave.name() else {
        eprintln!("storegate-reader-sim: the pseudo-terminal has no name");
        std::process::exit(1);
    };

    let (control_tx, control_rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            match line {
                Ok(line) if line.trim() == "quit" => break,
                Ok(line) => {
                    if control_tx.send(Control::Line(line)).is_err() {
                        return;
                    }
                }
                Err(_) => break,
            }
        }
        let _ = control_tx.send(Control::Quit);
    });

    let field = Field::default();
    let outputs = Outputs {
        buzzer: CallbackPin::new(|on| emit(&format!(r#"{{"event":"buzzer","on":{on}}}"#))),
        green: CallbackPin::new(|on| {
            emit(&format!(r#"{{"event":"led","color":"green","on":{on}}}"#))
        }),
        red: CallbackPin::new(|on| emit(&format!(r#"{{"event":"led","color":"red","on":{on}}}"#))),
    };
    let link = PtyLink {
        port: master,
        sent: Decoder::new(),
    };
    let chip = Mfrc522::new(SimulatedMfrc522::new(field.clone()));
    let mut bridge = Bridge::new(chip, link, outputs);
    let started = Instant::now();
    let now_ms = || started.elapsed().as_millis() as u32;
    if let Err(e) = bridge.start(now_ms()) {
        eprintln!("storegate-reader-sim: first write failed: {e:?}");
    }
    emit(&format!(r#"{{"event":"ready","port":"{port_name}"}}"#));

    loop {
        while let Ok(control) = control_rx.try_recv() {
            match control {
                Control::Quit => {
                    drop(slave);
                    return;
                }
                Control::Line(line) => match apply(&line, &field, bridge.link_mut()) {
                    Ok(command) => emit(&format!(r#"{{"event":"ok","command":"{command}"}}"#)),
                    Err(message) => emit(&format!(
                        r#"{{"event":"error","message":{:?}}}"#,
                        message.replace('"', "'")
                    )),
                },
            }
        }
        if let Err(e) = bridge.step(now_ms()) {
            // Nobody reading the pty fills its buffer; the real board would drop bytes too.
            eprintln!("storegate-reader-sim: link: {e:?}");
        }
        std::thread::sleep(STEP);
    }
}
