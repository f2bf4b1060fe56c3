//! Frames and where they come from. The decoder sees only 8-bit luma frames; a [`FrameSource`]
//! is a camera (feature `camera`), a folder of recorded PNG frames, or a file of raw frames,
//! so tests and benchmarks run the exact pipeline a kiosk runs.

use super::config::SourceSpec;
use std::io::Read;
use std::path::{Path, PathBuf};

/// Largest frame side accepted; bigger is no webcam, and keeps `w * h` far from overflow.
pub const MAX_SIDE: usize = 8192;

/// An 8-bit greyscale frame, row-major.
#[derive(Clone, PartialEq, Eq)]
pub struct LumaFrame {
    width: usize,
    height: usize,
    pixels: Vec<u8>,
}

impl std::fmt::Debug for LumaFrame {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "LumaFrame({}x{})", self.width, self.height)
    }
}

/// Why a frame or a source could not be had.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The pixels do not make a frame of that size.
    #[error("frame of {width}x{height} with {len} bytes (needs width*height, sides 1..=8192)")]
    BadSize {
        /// Width in pixels.
        width: usize,
        /// Height in pixels.
        height: usize,
        /// Bytes given.
        len: usize,
    },
    /// A frame file could not be read or decoded.
    #[error("{path}: {message}")]
    File {
        /// The file.
        path: String,
        /// Why.
        message: String,
    },
    /// The camera could not be opened or read.
    #[error("camera: {0}")]
    Camera(String),
    /// The source's config does not name a source.
    #[error("camera source {0:?}: use v4l:/dev/videoN, dir:/path/to/pngs or raw:WxH:/path")]
    BadSpec(String),
}

impl LumaFrame {
    /// A frame of 8-bit luma pixels, row by row.
    pub fn new(width: usize, height: usize, pixels: Vec<u8>) -> Result<LumaFrame, FrameError> {
        let ok = (1..=MAX_SIDE).contains(&width)
            && (1..=MAX_SIDE).contains(&height)
            && pixels.len() == width * height;
        if !ok {
            return Err(FrameError::BadSize {
                width,
                height,
                len: pixels.len(),
            });
        }
        Ok(LumaFrame {
            width,
            height,
            pixels,
        })
    }

    /// Width in pixels.
    pub fn width(&self) -> usize {
        self.width
    }

    /// Height in pixels.
    pub fn height(&self) -> usize {
        self.height
    }

    /// The pixels, row by row.
    pub fn pixels(&self) -> &[u8] {
        &self.pixels
    }

    /// The pixel at (x, y).
    pub fn at(&self, x: usize, y: usize) -> u8 {
        self.pixels[y * self.width + x]
    }

    /// Reads a PNG (any colour type and depth; converted to 8-bit luma).
    pub fn load_png(path: &Path) -> Result<LumaFrame, FrameError> {
        let file_error = |message: String| FrameError::File {
            path: path.display().to_string(),
            message,
        };
        let file = std::fs::File::open(path).map_err(|e| file_error(e.to_string()))?;
        let mut decoder = png::Decoder::new(std::io::BufReader::new(file));
        decoder.set_transformations(png::Transformations::normalize_to_color8());
        let mut reader = decoder.read_info().map_err(|e| file_error(e.to_string()))?;
        let (width, height) = (reader.info().width as usize, reader.info().height as usize);
        if width > MAX_SIDE || height > MAX_SIDE {
            return Err(file_error(format!(
                "{width}x{height} is larger than a camera frame"
            )));
        }
        let size = reader
            .output_buffer_size()
            .ok_or_else(|| file_error("image too large".into()))?;
        let mut buf = vec![0; size];
        let info = reader
            .next_frame(&mut buf)
            .map_err(|e| file_error(e.to_string()))?;
        let channels = info.color_type.samples();
        let stride = info.line_size;
        let mut pixels = Vec::with_capacity(width * height);
        for y in 0..height {
            let row = buf
                .get(y * stride..y * stride + width * channels)
                .ok_or_else(|| file_error("truncated image data".into()))?;
            pixels.extend(row.chunks_exact(channels).map(|px| match px {
                // ITU-R BT.601 luma, integer weights summing to 256.
                [r, g, b, ..] if channels >= 3 => {
                    ((77 * u32::from(*r) + 150 * u32::from(*g) + 29 * u32::from(*b)) >> 8) as u8
                }
                [grey, ..] => *grey,
                [] => 0,
            }));
        }
        LumaFrame::new(width, height, pixels)
    }

    /// Writes the frame as an 8-bit greyscale PNG.
    pub fn save_png(&self, path: &Path) -> Result<(), FrameError> {
        let file_error = |message: String| FrameError::File {
            path: path.display().to_string(),
            message,
        };
        let file = std::fs::File::create(path).map_err(|e| file_error(e.to_string()))?;
        let mut encoder = png::Encoder::new(
            std::io::BufWriter::new(file),
            self.width as u32,
            self.height as u32,
        );
        encoder.set_color(png::ColorType::Grayscale);
        encoder.set_depth(png::BitDepth::Eight);
        let mut writer = encoder
            .write_header()
            .map_err(|e| file_error(e.to_string()))?;
        writer
            .write_image_data(&self.pixels)
            .and_then(|()| writer.finish())
            .map_err(|e| file_error(e.to_string()))
    }
}

/// Where frames come from. `next_frame` blocks until a frame is there (a camera paces itself);
/// `Ok(None)` means the source has nothing more right now and should be reopened later.
pub trait FrameSource {
    /// The next frame; `Ok(None)` when there is none right now.
    fn next_frame(&mut self) -> Result<Option<LumaFrame>, FrameError>;
}

/// Opens a source as config parsed it: a V4L2 camera (feature `camera`), a folder of PNG
/// files (name order), or concatenated raw luma frames.
pub fn open_source(spec: &SourceSpec) -> Result<Box<dyn FrameSource>, FrameError> {
    match spec {
        SourceSpec::Dir(dir) => Ok(Box::new(DirectorySource::open(dir)?)),
        SourceSpec::Raw {
            width,
            height,
            path,
        } => Ok(Box::new(RawSource::open(
            path,
            *width as usize,
            *height as usize,
        )?)),
        SourceSpec::V4l(device) => open_camera(&device.to_string_lossy()),
    }
}

#[cfg(feature = "camera")]
fn open_camera(device: &str) -> Result<Box<dyn FrameSource>, FrameError> {
    Ok(Box::new(super::v4l::CameraSource::open(device)?))
}

#[cfg(not(feature = "camera"))]
fn open_camera(device: &str) -> Result<Box<dyn FrameSource>, FrameError> {
    Err(FrameError::Camera(format!(
        "{device}: this storegate was built without the `camera` feature"
    )))
}

/// PNG files of a folder, in name order, each once. A folder that disappears is an error (the
/// camera is gone); files added later are read on the next pass.
pub struct DirectorySource {
    dir: PathBuf,
    pending: std::vec::IntoIter<PathBuf>,
    seen: std::collections::HashSet<PathBuf>,
}

impl DirectorySource {
    /// Reads the PNG files of `dir` in name order.
    pub fn open(dir: &Path) -> Result<DirectorySource, FrameError> {
        let mut source = DirectorySource {
            dir: dir.to_path_buf(),
            pending: Vec::new().into_iter(),
            seen: Default::default(),
        };
        source.rescan()?;
        Ok(source)
    }

    fn rescan(&mut self) -> Result<(), FrameError> {
        let entries = std::fs::read_dir(&self.dir).map_err(|e| FrameError::File {
            path: self.dir.display().to_string(),
            message: e.to_string(),
        })?;
        let mut fresh: Vec<PathBuf> = entries
            .filter_map(|entry| entry.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e.eq_ignore_ascii_case("png")))
            .filter(|p| !self.seen.contains(p))
            .collect();
        fresh.sort();
        self.seen.extend(fresh.iter().cloned());
        self.pending = fresh.into_iter();
        Ok(())
    }
}

impl FrameSource for DirectorySource {
    fn next_frame(&mut self) -> Result<Option<LumaFrame>, FrameError> {
        if let Some(path) = self.pending.next() {
            return LumaFrame::load_png(&path).map(Some);
        }
        self.rescan()?;
        match self.pending.next() {
            Some(path) => LumaFrame::load_png(&path).map(Some),
            None => Ok(None),
        }
    }
}

/// Raw 8-bit luma frames of a fixed size, back to back in one file (or a FIFO a capture tool
/// writes to).
pub struct RawSource {
    file: std::fs::File,
    path: String,
    width: usize,
    height: usize,
}

impl RawSource {
    /// Reads concatenated raw frames of `width` × `height` from `path`.
    pub fn open(path: &Path, width: usize, height: usize) -> Result<RawSource, FrameError> {
        LumaFrame::new(
            width,
            height,
            vec![0; width.min(MAX_SIDE) * height.min(MAX_SIDE)],
        )?;
        let file = std::fs::File::open(path).map_err(|e| FrameError::File {
            path: path.display().to_string(),
            message: e.to_string(),
        })?;
        Ok(RawSource {
            file,
            path: path.display().to_string(),
            width,
            height,
        })
    }
}

impl FrameSource for RawSource {
    fn next_frame(&mut self) -> Result<Option<LumaFrame>, FrameError> {
        let mut pixels = vec![0; self.width * self.height];
        match self.file.read_exact(&mut pixels) {
            Ok(()) => LumaFrame::new(self.width, self.height, pixels).map(Some),
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Ok(None),
            Err(e) => Err(FrameError::File {
                path: self.path.clone(),
                message: e.to_string(),
            }),
        }
    }
}
