//! `[source]`: which frame source the daemon reads and how, checked here and opened here.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

#[cfg(all(target_os = "linux", feature = "v4l2"))]
use super::v4l2::V4l2Source;
#[cfg(target_os = "linux")]
use super::StreamSource;
use super::{FolderSource, FrameError, FrameSource};
use inspect_core::settings::{Checker, ConfigError};

/// `[source]`: one of the frame sources, chosen by `kind`.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum SourceSettings {
    /// A folder of PNG/JPEG frames, read in name order.
    Folder {
        /// The folder.
        path: PathBuf,
        /// Start again at the first file after the last.
        #[serde(default, rename = "loop")]
        looping: bool,
        /// Pause between frames in milliseconds (0-60000), to play a folder at camera speed.
        #[serde(default)]
        frame_interval_ms: u64,
    },
    /// An MJPEG byte stream: a recording, a FIFO fed by a camera pipeline, a character device.
    Stream {
        /// The file, FIFO or device.
        path: PathBuf,
        /// A camera (default): frames go stale, and the end of the stream means it went away:
        /// reopen it with backoff. `false`: a recording, read to its end.
        #[serde(default = "yes")]
        live: bool,
    },
    /// A V4L2 camera.
    V4l2 {
        /// Device node, e.g. `/dev/video0`.
        device: PathBuf,
        /// Capture width, 160-4096.
        width: u32,
        /// Capture height, 120-4096.
        height: u32,
        /// Frames per second, 1-120.
        fps: u32,
        /// Pixel format.
        format: PixelFormat,
    },
}

/// Camera pixel formats.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PixelFormat {
    /// Motion JPEG.
    Mjpeg,
    /// YUYV 4:2:2.
    Yuyv,
}

fn yes() -> bool {
    true
}

impl SourceSettings {
    /// The size every frame must have, when the config says it (a camera's capture mode).
    pub fn frame_size(&self) -> Option<(u32, u32)> {
        match self {
            SourceSettings::V4l2 { width, height, .. } => Some((*width, *height)),
            _ => None,
        }
    }

    /// Checks the values of the chosen kind.
    pub fn validate(&self, c: &Checker<'_>) -> Result<(), ConfigError> {
        match self {
            SourceSettings::Folder {
                frame_interval_ms, ..
            } => c.range("source.frame_interval_ms", *frame_interval_ms, 0, 60_000),
            SourceSettings::Stream { .. } => Ok(()),
            SourceSettings::V4l2 {
                width, height, fps, ..
            } => {
                c.range("source.width", *width, 160, 4096)?;
                c.range("source.height", *height, 120, 4096)?;
                c.range("source.fps", *fps, 1, 120)
            }
        }
    }

    /// Opens the source; also returns the pause to keep between frames (folders played at
    /// camera speed).
    pub fn open(&self) -> Result<(Box<dyn FrameSource>, Duration), FrameError> {
        match self {
            SourceSettings::Folder {
                path,
                looping,
                frame_interval_ms,
            } => Ok((
                Box::new(FolderSource::open(path, *looping)?),
                Duration::from_millis(*frame_interval_ms),
            )),
            #[cfg(target_os = "linux")]
            SourceSettings::Stream { path, live } => {
                Ok((Box::new(StreamSource::open(path, *live)?), Duration::ZERO))
            }
            #[cfg(not(target_os = "linux"))]
            SourceSettings::Stream { path, .. } => Err(FrameError::Unsupported {
                path: path.clone(),
                message: "MJPEG streams are read on Linux only".into(),
            }),
            #[cfg(all(target_os = "linux", feature = "v4l2"))]
            SourceSettings::V4l2 {
                device,
                width,
                height,
                fps,
                format,
            } => Ok((
                Box::new(V4l2Source::open(device, *width, *height, *fps, *format)?),
                Duration::ZERO,
            )),
            #[cfg(not(all(target_os = "linux", feature = "v4l2")))]
            SourceSettings::V4l2 { device, .. } => Err(FrameError::Unsupported {
                path: device.clone(),
                message: "this build has no V4L2 support: build with --features v4l2 \
                          (or feed the camera as an MJPEG stream, `kind = \"stream\"`)"
                    .into(),
            }),
        }
    }
}
