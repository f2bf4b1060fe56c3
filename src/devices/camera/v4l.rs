//! Live frames from a V4L2 camera through nokhwa (feature `camera`). Frames are converted to
//! luma here, so the decoder never knows whether a frame came from a camera or a file.

use nokhwa::pixel_format::LumaFormat;
use nokhwa::utils::{CameraIndex, RequestedFormat, RequestedFormatType};

use super::frame::{FrameError, FrameSource, LumaFrame};

pub struct CameraSource {
    camera: nokhwa::Camera,
}

impl CameraSource {
    /// Opens `/dev/videoN` (or a bare index `N`) at its highest frame rate.
    pub fn open(device: &str) -> Result<CameraSource, FrameError> {
        let index: u32 = device
            .trim_start_matches("/dev/video")
            .parse()
            .map_err(|_| FrameError::Camera(format!("{device}: expected /dev/videoN")))?;
        let requested =
            RequestedFormat::new::<LumaFormat>(RequestedFormatType::AbsoluteHighestFrameRate);
        let mut camera = nokhwa::Camera::new(CameraIndex::Index(index), requested)
            .map_err(|e| FrameError::Camera(format!("{device}: {e}")))?;
        camera
            .open_stream()
            .map_err(|e| FrameError::Camera(format!("{device}: {e}")))?;
        Ok(CameraSource { camera })
    }
}

impl FrameSource for CameraSource {
    fn next_frame(&mut self) -> Result<Option<LumaFrame>, FrameError> {
        let buffer = self
            .camera
            .frame()
            .map_err(|e| FrameError::Camera(e.to_string()))?;
        let image = buffer
            .decode_image::<LumaFormat>()
            .map_err(|e| FrameError::Camera(e.to_string()))?;
        let (width, height) = (image.width() as usize, image.height() as usize);
        LumaFrame::new(width, height, image.into_raw()).map(Some)
    }
}
