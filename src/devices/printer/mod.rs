//! Receipt printers (ESC/POS) over raw TCP 9100 or a serial port. The driver prints the jobs of
//! the journal's print queue one at a time (each queued with its purchase, in one transaction): it sends a job only when real-time status (DLE EOT, each reply
//! matched to its request) says the printer is online with paper and the cover closed, and marks
//! it done only when the printer answers the in-order status request at the job's end. A link
//! that drops mid-job leaves the job `unconfirmed`, never resent by itself. Paper out, cover open
//! and offline are reported as they change.

pub mod config;
pub mod escpos;
pub mod layout;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use self::config::{PrinterAddress, PrinterConfig};
use self::escpos::{is_processed_status, is_realtime_status, PrinterStatus, StatusRequest};
use self::layout::{render, Layout};
use super::{DeviceContext, DeviceError, DeviceEvent, Driver};
use crate::journal::{JobState, Journal, PrintCommand};

/// A real-time status reply comes back at once; longer is a dead link.
const STATUS_TIMEOUT: Duration = Duration::from_secs(2);
/// The in-order reply comes after the whole receipt printed and cut.
const JOB_TIMEOUT: Duration = Duration::from_secs(20);
/// How often an idle or not-ready printer is asked for its status (and the queue looked at).
const POLL: Duration = Duration::from_millis(100);

trait Link: Read + Write + Send {}
impl<T: Read + Write + Send> Link for T {}

/// An ESC/POS receipt printer.
pub struct Printer {
    config: PrinterConfig,
    /// The box's `[receipts]` as remote layers leave it: read per receipt, so a pushed
    /// header or URL shows on the next one.
    settings: crate::config::live::Live,
    /// The print queue lives in the journal; its writer thread is the only one that changes
    /// a job, this driver asks it to.
    journal: Journal,
}

impl Printer {
    /// The printer of `config`, printing the jobs of `journal`.
    pub fn new(
        config: PrinterConfig,
        journal: Journal,
        settings: crate::config::live::Live,
    ) -> Printer {
        Printer {
            config,
            settings,
            journal,
        }
    }

    /// Records a job's new state through the journal's writer.
    fn set_state(&self, id: i64, state: JobState, error: Option<&str>) -> Result<(), DeviceError> {
        self.journal
            .print_blocking(PrintCommand::SetState {
                id,
                state,
                error: error.map(str::to_string),
            })
            .map(drop)
            .map_err(|e| self.queue_error(e.to_string()))
    }

    fn queue_error(&self, message: String) -> DeviceError {
        DeviceError::Protocol {
            port: self.journal.path().display().to_string(),
            message: format!("print queue: {message}"),
        }
    }

    /// How the next receipt looks: the printer's own header and URL where its config sets
    /// them (a box-specific printer), else the box's live `[receipts]`.
    fn layout(&self) -> Layout {
        let receipts = self.settings.borrow().receipts.clone();
        Layout {
            columns: self.config.columns(),
            code_page: self.config.code_page,
            header: if self.config.header.is_empty() {
                receipts.header
            } else {
                self.config.header.clone()
            },
            footer: receipts.footer,
            qr_url: self.config.qr_url.clone().or(receipts.qr_url),
        }
    }

    fn open(&self) -> Result<Box<dyn Link>, DeviceError> {
        let open_error = |message: String| DeviceError::Open {
            port: self.config.address.to_string(),
            message,
        };
        match &self.config.address {
            PrinterAddress::Tcp(addr) => {
                let stream = TcpStream::connect_timeout(addr, STATUS_TIMEOUT)
                    .map_err(|e| open_error(e.to_string()))?;
                stream
                    .set_read_timeout(Some(POLL))
                    .map_err(|e| open_error(e.to_string()))?;
                let _ = stream.set_nodelay(true);
                Ok(Box::new(stream))
            }
            PrinterAddress::File(path) => {
                // The USB printer class device (/dev/usb/lp0): bidirectional, status replies
                // are read back from it like from a socket.
                let file = std::fs::OpenOptions::new()
                    .read(true)
                    .write(true)
                    .open(path)
                    .map_err(|e| open_error(e.to_string()))?;
                Ok(Box::new(PolledFile { file }))
            }
            PrinterAddress::Serial(port) => Ok(Box::new(super::port::open_serial(
                port,
                self.config.baud,
                POLL,
            )?)),
        }
    }
}

/// A device file whose reads wait at most [`POLL`] for data, like the socket and serial
/// transports, so a silent printer is noticed instead of blocking the driver forever.
struct PolledFile {
    file: std::fs::File,
}

impl Read for PolledFile {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
        use std::os::fd::AsFd;
        let timeout = PollTimeout::from(POLL.as_millis() as u16);
        let ready = poll(
            &mut [PollFd::new(self.file.as_fd(), PollFlags::POLLIN)],
            timeout,
        )
        .map_err(std::io::Error::from)?;
        if ready == 0 {
            return Err(std::io::ErrorKind::TimedOut.into());
        }
        self.file.read(buf)
    }
}

impl Write for PolledFile {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.file.write(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
}

/// The printer's replies, one byte at a time, matched to what was asked by their fixed bits.
struct Replies<'a> {
    link: &'a mut dyn Link,
    address: &'a PrinterAddress,
    stray: u32,
}

impl Replies<'_> {
    fn io(&self, source: std::io::Error) -> DeviceError {
        DeviceError::Io {
            port: self.address.to_string(),
            source,
        }
    }

    /// The next byte that `matches`, skipping others (a late reply to an earlier request).
    fn wait_for(
        &mut self,
        within: Duration,
        matches: fn(u8) -> bool,
    ) -> Result<Option<u8>, DeviceError> {
        let deadline = Instant::now() + within;
        let mut byte = [0u8; 1];
        while Instant::now() < deadline {
            match self.link.read(&mut byte) {
                Ok(0) => {
                    return Err(self.io(std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        "printer closed the connection",
                    )))
                }
                Ok(_) if matches(byte[0]) => return Ok(Some(byte[0])),
                Ok(_) => self.stray += 1,
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock
                            | std::io::ErrorKind::TimedOut
                            | std::io::ErrorKind::Interrupted
                    ) => {}
                Err(e) => return Err(self.io(e)),
            }
        }
        Ok(None)
    }

    fn status(&mut self) -> Result<PrinterStatus, DeviceError> {
        let mut status = PrinterStatus::default();
        for request in [
            StatusRequest::Printer,
            StatusRequest::Offline,
            StatusRequest::Paper,
        ] {
            self.link
                .write_all(&request.bytes())
                .and_then(|()| self.link.flush())
                .map_err(|e| self.io(e))?;
            let reply = self
                .wait_for(STATUS_TIMEOUT, is_realtime_status)?
                .ok_or_else(|| DeviceError::Silent {
                    port: self.address.to_string(),
                    silent_ms: STATUS_TIMEOUT.as_millis() as u64,
                })?;
            status.apply(request, reply);
        }
        Ok(status)
    }
}

impl Driver for Printer {
    fn kind(&self) -> &'static str {
        "printer"
    }

    fn name(&self) -> &str {
        &self.config.name
    }

    fn port(&self) -> String {
        self.config.address.to_string()
    }

    fn serve(&mut self, context: &DeviceContext) -> Result<(), DeviceError> {
        let queue_error = |e: crate::journal::JournalError| self.queue_error(e.to_string());
        let queue = self.journal.print_jobs().map_err(queue_error)?;
        self.journal
            .print_blocking(PrintCommand::MarkInterrupted {
                printer: self.config.name.clone(),
            })
            .map_err(|e| self.queue_error(e.to_string()))?;
        let mut link = self.open()?;
        let mut replies = Replies {
            link: link.as_mut(),
            address: &self.config.address,
            stray: 0,
        };
        context.up();
        let mut last_status: Option<PrinterStatus> = None;
        while !context.stopping() {
            let status = replies.status()?;
            if last_status != Some(status) {
                last_status = Some(status);
                context.set_detail(serde_json::json!(status));
                context.emit(DeviceEvent::PrinterStatus {
                    device: self.config.name.clone(),
                    till: self.config.till.clone(),
                    status,
                });
            }
            let job = if status.ready() {
                queue.next_queued(&self.config.name).map_err(queue_error)?
            } else {
                None
            };
            let Some(job) = job else {
                if context.pause(POLL) {
                    break;
                }
                continue;
            };
            let purchase: crate::protocol::Purchase = match serde_json::from_str(&job.purchase) {
                Ok(purchase) => purchase,
                Err(e) => {
                    self.set_state(
                        job.id,
                        JobState::Unconfirmed,
                        Some(&format!("unreadable job: {e}")),
                    )?;
                    continue;
                }
            };
            let bytes = render(&self.layout(), &purchase, job.copy);
            self.set_state(job.id, JobState::Sending, None)?;
            let sent = replies
                .link
                .write_all(&bytes)
                .and_then(|()| replies.link.flush());
            if let Err(e) = sent {
                let message = format!("link dropped while sending: {e}");
                self.set_state(job.id, JobState::Unconfirmed, Some(&message))?;
                return Err(replies.io(e));
            }
            match replies.wait_for(JOB_TIMEOUT, is_processed_status) {
                // GS r 1: bits 2-3 set = paper ran out, so the receipt may be cut short.
                Ok(Some(reply)) if reply & 0x0C == 0 => {
                    self.set_state(job.id, JobState::Done, None)?;
                    context.receipt_printed();
                }
                Ok(Some(_)) => self.set_state(
                    job.id,
                    JobState::Unconfirmed,
                    Some("paper ran out during the receipt"),
                )?,
                Ok(None) => {
                    self.set_state(
                        job.id,
                        JobState::Unconfirmed,
                        Some("the printer never confirmed the receipt"),
                    )?;
                    return Err(DeviceError::Silent {
                        port: self.config.address.to_string(),
                        silent_ms: JOB_TIMEOUT.as_millis() as u64,
                    });
                }
                Err(e) => {
                    self.set_state(job.id, JobState::Unconfirmed, Some(&e.to_string()))?;
                    return Err(e);
                }
            }
        }
        Ok(())
    }
}
