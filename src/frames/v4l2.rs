//! A V4L2 camera (USB UVC webcams, the Pi's CSI cameras through their V4L2 nodes): mmap
//! streaming, MJPEG or YUYV converted to RGB, capture times from the driver.
//!
//! The requested format, size and rate are set and read back: drivers silently pick the
//! nearest mode they have, so a mismatch is refused with an error that lists what the camera
//! offers. An error while streaming (camera unplugged) is [`FrameError::Lost`]; the daemon's
//! capture loop reopens the device with backoff.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use image::RgbImage;
use v4l::buffer::Type;
use v4l::io::mmap::Stream;
use v4l::io::traits::CaptureStream;
use v4l::video::Capture;
use v4l::{Device, FourCC};

use super::convert::{decode_mjpeg, yuyv_to_rgb};
use super::PixelFormat;
use super::{Frame, FrameError, FrameSource};

/// Buffers the driver fills in turn: enough to ride out an inference hiccup, few enough that a
/// frame is fresh when taken.
const BUFFERS: u32 = 4;

fn fourcc(format: PixelFormat) -> FourCC {
    match format {
        PixelFormat::Mjpeg => FourCC::new(b"MJPG"),
        PixelFormat::Yuyv => FourCC::new(b"YUYV"),
    }
}

/// Frames from a V4L2 capture device.
pub struct V4l2Source {
    path: PathBuf,
    format: PixelFormat,
    width: u32,
    height: u32,
    stride: usize,
    // Declared before `device`: the stream must stop before the device closes.
    stream: Stream<'static>,
    _device: Device,
    delivered: u64,
    skipped: u64,
    // YUYV conversion target, reused (the frame handed on is a copy of it).
    rgb: RgbImage,
}

impl std::fmt::Debug for V4l2Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("V4l2Source")
            .field("path", &self.path)
            .field("size", &(self.width, self.height))
            .finish_non_exhaustive()
    }
}

/// What the camera offers, one line per format: `MJPG (Motion-JPEG): 1920x1080, 1280x720`.
fn offers(device: &Device) -> String {
    let Ok(formats) = device.enum_formats() else {
        return "(the camera does not list its formats)".into();
    };
    let mut lines = Vec::new();
    for f in formats {
        let sizes = device
            .enum_framesizes(f.fourcc)
            .unwrap_or_default()
            .into_iter()
            .flat_map(|s| s.size.to_discrete())
            .map(|d| format!("{}x{}", d.width, d.height))
            .collect::<Vec<_>>()
            .join(", ");
        lines.push(format!("{} ({}): {sizes}", f.fourcc, f.description));
    }
    lines.join("; ")
}

impl V4l2Source {
    /// Opens `path`, sets the format, size and frame rate, and maps the buffers.
    pub fn open(
        path: &Path,
        width: u32,
        height: u32,
        fps: u32,
        format: PixelFormat,
    ) -> Result<V4l2Source, FrameError> {
        let io = |source| FrameError::Io {
            path: path.to_path_buf(),
            source,
        };
        let device = Device::with_path(path).map_err(io)?;
        let mut wanted = device.format().map_err(io)?;
        (wanted.width, wanted.height, wanted.fourcc) = (width, height, fourcc(format));
        let got = device.set_format(&wanted).map_err(io)?;
        if (got.width, got.height, got.fourcc) != (width, height, fourcc(format)) {
            return Err(FrameError::Unsupported {
                path: path.to_path_buf(),
                message: format!(
                    "asked for {} {width}x{height}, the camera gave {} {}x{}; it offers: {}",
                    fourcc(format),
                    got.fourcc,
                    got.width,
                    got.height,
                    offers(&device)
                ),
            });
        }
        let params = device
            .set_params(&v4l::video::capture::Parameters::with_fps(fps))
            .map_err(io)?;
        let interval = params.interval;
        if interval.numerator > 0 && interval.denominator / interval.numerator.max(1) != fps {
            log::warn!(
                "{}: asked for {fps} frames/s, the camera runs {}/{} s per frame",
                path.display(),
                interval.numerator,
                interval.denominator
            );
        }
        let mut stream = Stream::with_buffers(&device, Type::VideoCapture, BUFFERS).map_err(io)?;
        stream.set_timeout(Duration::from_millis(500));
        log::info!(
            "camera {}: {} {width}x{height} at {fps} frames/s",
            path.display(),
            got.fourcc
        );
        Ok(V4l2Source {
            path: path.to_path_buf(),
            format,
            width,
            height,
            stride: got.stride as usize,
            stream,
            _device: device,
            delivered: 0,
            skipped: 0,
            rgb: RgbImage::new(0, 0),
        })
    }
}

/// The driver's capture time (CLOCK_MONOTONIC, as UVC and the Pi's drivers stamp buffers) as
/// wall-clock time.
fn wall_clock(monotonic: Duration) -> SystemTime {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec we own.
    let ok = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) } == 0;
    let wall = SystemTime::now();
    if !ok || monotonic.is_zero() {
        return wall;
    }
    let now = Duration::new(now.tv_sec as u64, now.tv_nsec as u32);
    wall.checked_sub(now.saturating_sub(monotonic))
        .unwrap_or(wall)
}

impl FrameSource for V4l2Source {
    fn next_frame(&mut self) -> Result<Option<Frame>, FrameError> {
        loop {
            let (buf, meta) = match self.stream.next() {
                Ok(x) => x,
                Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {
                    return Err(FrameError::Timeout(Duration::from_millis(500)))
                }
                Err(e) => {
                    return Err(FrameError::Lost {
                        path: self.path.clone(),
                        reason: e.to_string(),
                    })
                }
            };
            let used = (meta.bytesused as usize).min(buf.len());
            let timestamp = wall_clock(Duration::from(meta.timestamp));
            let image = match self.format {
                PixelFormat::Mjpeg => decode_mjpeg(&buf[..used]),
                PixelFormat::Yuyv => yuyv_to_rgb(
                    &buf[..used],
                    self.width,
                    self.height,
                    self.stride,
                    &mut self.rgb,
                )
                .map(|()| self.rgb.clone()),
            };
            match image {
                Ok(image) => {
                    let frame = Frame {
                        position: None,
                        number: self.delivered,
                        image,
                        timestamp,
                        origin: format!("{} #{}", self.path.display(), meta.sequence),
                    };
                    self.delivered += 1;
                    return Ok(Some(frame));
                }
                Err(e) => {
                    self.skipped += 1;
                    log::warn!(
                        "{}: skipping frame {}: {e}",
                        self.path.display(),
                        meta.sequence
                    );
                }
            }
        }
    }

    fn skipped(&self) -> u64 {
        self.skipped
    }

    fn is_live(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn driver_times_map_to_the_wall_clock() {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: as above.
        unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
        let now = Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32);
        let captured = wall_clock(now - Duration::from_millis(250));
        let age = SystemTime::now().duration_since(captured).unwrap();
        assert!(
            age >= Duration::from_millis(240) && age < Duration::from_secs(2),
            "{age:?}"
        );
    }

    #[test]
    fn a_missing_camera_is_an_io_error_naming_the_device() {
        let err = V4l2Source::open(
            Path::new("/dev/video-none"),
            640,
            480,
            10,
            PixelFormat::Yuyv,
        )
        .unwrap_err();
        assert!(err.to_string().contains("/dev/video-none"), "{err}");
    }
}
