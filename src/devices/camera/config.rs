//! A camera's config, its frame source parsed when the config loads (`raw:640:/x` is refused
//! at start-up naming the key, not retried for ever by the camera thread).

use std::path::PathBuf;

use serde::Deserialize;

/// One camera looking for QR codes.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CameraConfig {
    /// Name in logs, metrics and `/v1/devices`, `[a-z0-9][a-z0-9-]{0,31}`.
    pub name: String,
    /// `v4l:/dev/video0` (a camera; needs the `camera` build feature), `dir:/path` (recorded
    /// PNG frames, read in name order as they appear) or `raw:640x480:/path` (raw luma frames).
    pub source: SourceSpec,
    /// The till (kiosk) whose event stream gets the scans.
    pub till: String,
    /// Frames per second for recorded sources; a camera sets its own pace.
    #[serde(default = "default_camera_fps")]
    pub fps: u32,
}

fn default_camera_fps() -> u32 {
    15
}

/// Where a camera's frames come from.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub enum SourceSpec {
    /// A V4L2 camera (`v4l:/dev/video0`; needs the `camera` build feature).
    V4l(PathBuf),
    /// Recorded PNG frames in a folder, read in name order as they appear.
    Dir(PathBuf),
    /// Concatenated raw 8-bit luma frames of one size.
    Raw {
        /// Frame width in pixels.
        width: u32,
        /// Frame height in pixels.
        height: u32,
        /// The file of frames.
        path: PathBuf,
    },
}

impl SourceSpec {
    /// A camera paces itself; recorded sources are paced by `fps`.
    pub fn is_live(&self) -> bool {
        matches!(self, SourceSpec::V4l(_))
    }
}

impl TryFrom<String> for SourceSpec {
    type Error = String;

    fn try_from(text: String) -> Result<SourceSpec, String> {
        const USE: &str = "use v4l:/dev/video0, dir:/path/to/pngs or raw:640x480:/path";
        let path = |p: &str| -> Result<PathBuf, String> {
            if p.is_empty() {
                Err(format!("`{text}` names no path; {USE}"))
            } else {
                Ok(PathBuf::from(p))
            }
        };
        if let Some(device) = text.strip_prefix("v4l:") {
            return path(device).map(SourceSpec::V4l);
        }
        if let Some(dir) = text.strip_prefix("dir:") {
            return path(dir).map(SourceSpec::Dir);
        }
        if let Some(rest) = text.strip_prefix("raw:") {
            let size = rest
                .split_once(':')
                .and_then(|(size, file)| Some((size.split_once('x')?, file)));
            let Some(((w, h), file)) = size else {
                return Err(format!("`{text}`: raw sources are raw:WIDTHxHEIGHT:/path"));
            };
            let (width, height) = match (w.parse::<u32>(), h.parse::<u32>()) {
                (Ok(w), Ok(h)) if (16..=8192).contains(&w) && (16..=8192).contains(&h) => (w, h),
                _ => {
                    return Err(format!(
                        "`{text}`: the size must be WIDTHxHEIGHT, 16 to 8192 each"
                    ))
                }
            };
            return Ok(SourceSpec::Raw {
                width,
                height,
                path: path(file)?,
            });
        }
        Err(format!("`{text}`: {USE}"))
    }
}

impl std::fmt::Display for SourceSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SourceSpec::V4l(device) => write!(f, "v4l:{}", device.display()),
            SourceSpec::Dir(dir) => write!(f, "dir:{}", dir.display()),
            SourceSpec::Raw {
                width,
                height,
                path,
            } => write!(f, "raw:{width}x{height}:{}", path.display()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_parse_once_and_broken_ones_are_refused() {
        for text in ["v4l:/dev/video0", "dir:/frames", "raw:640x480:/x.raw"] {
            assert_eq!(
                SourceSpec::try_from(text.to_string()).unwrap().to_string(),
                text
            );
        }
        for bad in ["raw:640:/x", "raw:640x480", "raw:0x480:/x", "dir:", "usb:0"] {
            assert!(SourceSpec::try_from(bad.to_string()).is_err(), "{bad}");
        }
    }
}
