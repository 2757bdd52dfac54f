//! Where frames come from.
//!
//! Every source (image folder, MJPEG stream, V4L2 camera) yields [`Frame`]s through the
//! [`FrameSource`] trait. A bad frame is never fatal: the source skips it, counts it and goes
//! on. A live source that fails (camera unplugged, pipe closed) returns an error and the daemon's
//! capture loop reopens it with backoff; only a recording that cannot deliver anything is fatal.

pub use inspect_pixel_formats as convert;
mod folder;
mod settings;
#[cfg(target_os = "linux")]
mod stream;
#[cfg(all(target_os = "linux", feature = "v4l2"))]
pub mod v4l2;

use std::time::SystemTime;

use image::RgbImage;

pub use folder::FolderSource;
pub use settings::{PixelFormat, SourceSettings};
#[cfg(target_os = "linux")]
pub use stream::StreamSource;

/// One captured frame.
#[derive(Clone, Debug)]
pub struct Frame {
    /// Sequence number given by the source, from 0, counting only delivered frames.
    pub number: u64,
    /// Pixels, RGB8.
    pub image: RgbImage,
    /// When the frame was captured (for a file: when it was read).
    pub timestamp: SystemTime,
    /// Where it came from (file name, device), for logs.
    pub origin: String,
    /// Where the device was when it was taken: from the folder's `positions.csv`, else set by
    /// the capture loop from the configured position source.
    pub position: Option<crate::position::Position>,
}

/// Fatal errors of a frame source.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The source's folder or device cannot be opened or listed.
    #[error("{path}: {source}")]
    Io {
        /// The folder or device.
        path: std::path::PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// No frame arrived within this time (a stalled camera); ask again.
    #[error("no frame within {0:?}")]
    Timeout(std::time::Duration),
    /// A live source went away (unplugged, pipe closed); reopen it.
    #[error("{path}: {reason}")]
    Lost {
        /// The device or pipe.
        path: std::path::PathBuf,
        /// What happened.
        reason: String,
    },
    /// The camera cannot deliver what the config asks for.
    #[error("{path}: {message}")]
    Unsupported {
        /// The device.
        path: std::path::PathBuf,
        /// What was asked and what the camera offers.
        message: String,
    },
    /// The source holds no image it could decode.
    #[error("{path}: no readable PNG or JPEG frames ({skipped} files skipped)")]
    NoFrames {
        /// The folder.
        path: std::path::PathBuf,
        /// How many files could not be decoded.
        skipped: u64,
    },
}

/// A source of frames.
pub trait FrameSource: Send {
    /// The next frame; `Ok(None)` when a finite source is exhausted.
    fn next_frame(&mut self) -> Result<Option<Frame>, FrameError>;

    /// Frames that could not be decoded and were skipped so far.
    fn skipped(&self) -> u64;

    /// Whether frames arrive in real time (a camera) and go stale: then the newest frame wins
    /// when inference falls behind. A recorded source is never dropped from, it waits.
    fn is_live(&self) -> bool;
}
