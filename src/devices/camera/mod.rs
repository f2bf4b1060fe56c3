//! The kiosk camera: frames from a [`frame::FrameSource`], decoded by [`decode::QrDecoder`] off
//! the async runtime on a thread of its own, filtered by [`held::HeldCodes`] so a code held up
//! is reported once, and handed on as scans like any scanner's.

pub mod config;
#[cfg(feature = "test-support")]
pub mod corpus;
pub mod decode;
pub mod frame;
pub mod geometry;
pub mod held;
pub mod locate;
#[cfg(feature = "camera")]
mod v4l;

use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use self::config::CameraConfig;
use self::decode::{Outcome, QrDecoder};
use self::frame::{open_source, LumaFrame};
use self::held::HeldCodes;
use super::{DeviceContext, DeviceError, DeviceEvent, Driver};

/// The newest frame waiting for the decoder. Capture replaces it instead of queueing: under
/// load a kiosk wants the latest picture, not a growing backlog of old ones.
#[derive(Default)]
struct Mailbox {
    state: Mutex<MailboxState>,
    ready: Condvar,
}

#[derive(Default)]
struct MailboxState {
    frame: Option<LumaFrame>,
    closed: bool,
}

impl Mailbox {
    /// Puts a frame in; returns true if it replaced one the decoder never saw.
    fn put(&self, frame: LumaFrame) -> bool {
        let Ok(mut state) = self.state.lock() else {
            return false;
        };
        let dropped = state.frame.replace(frame).is_some();
        self.ready.notify_one();
        dropped
    }

    fn close(&self) {
        if let Ok(mut state) = self.state.lock() {
            state.closed = true;
            self.ready.notify_one();
        }
    }

    /// The next frame, or `None` once closed.
    fn take(&self) -> Option<LumaFrame> {
        let mut state = self.state.lock().ok()?;
        loop {
            if let Some(frame) = state.frame.take() {
                return Some(frame);
            }
            if state.closed {
                return None;
            }
            state = self.ready.wait(state).ok()?;
        }
    }
}

/// A camera (or recorded frames) looking for QR codes.
pub struct Camera {
    config: CameraConfig,
}

impl Camera {
    /// The camera of `config`.
    pub fn new(config: CameraConfig) -> Camera {
        Camera { config }
    }
}

impl Driver for Camera {
    fn kind(&self) -> &'static str {
        "camera"
    }

    fn name(&self) -> &str {
        &self.config.name
    }

    fn port(&self) -> String {
        self.config.source.to_string()
    }

    fn serve(&mut self, context: &DeviceContext) -> Result<(), DeviceError> {
        let spec = self.config.source.clone();
        let (name, till) = (self.config.name.clone(), self.config.till.clone());
        // A V4L2 camera paces itself; recorded frames are paced like one.
        let paced = !spec.is_live();
        let source_error = |message: String| DeviceError::Open {
            port: spec.to_string(),
            message,
        };
        let mut source = open_source(&spec).map_err(|e| source_error(e.to_string()))?;
        context.up();
        let mailbox = Arc::new(Mailbox::default());
        let frame_interval = Duration::from_secs_f64(1.0 / f64::from(self.config.fps.max(1)));
        let result = std::thread::scope(|scope| {
            let decoder_mailbox = mailbox.clone();
            scope.spawn(move || {
                let mut decoder = QrDecoder::new();
                let mut held = HeldCodes::default();
                let mut in_view: Vec<String> = Vec::new();
                while let Some(frame) = decoder_mailbox.take() {
                    match decoder.decode(&frame) {
                        // The same scene again: what was in view still is (and what left stays
                        // gone, so a code taken away from a static scene is released).
                        Outcome::Unchanged => {
                            context.frame_seen("unchanged");
                            held.observe(&in_view);
                        }
                        Outcome::Decoded(found) => {
                            context.frame_seen("decoded");
                            in_view = found.into_iter().map(|d| d.text).collect();
                            for text in held.observe(&in_view) {
                                context.emit(DeviceEvent::Scanned {
                                    device: name.clone(),
                                    till: till.clone(),
                                    aim: Some(crate::codes::Aim {
                                        code: 'Q',
                                        modifier: '1',
                                    }),
                                    text,
                                });
                            }
                        }
                    }
                }
            });
            let outcome = loop {
                if context.stopping() {
                    break Ok(());
                }
                match source.next_frame() {
                    Ok(Some(frame)) => {
                        if mailbox.put(frame) {
                            context.frame_seen("dropped");
                        }
                    }
                    Ok(None) => {}
                    Err(e) => break Err(source_error(e.to_string())),
                }
                if paced && context.pause(frame_interval) {
                    break Ok(());
                }
            };
            mailbox.close();
            outcome
        });
        result
    }
}
