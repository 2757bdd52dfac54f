//! An MJPEG byte stream: concatenated JPEG frames from a file (a recording), a FIFO (a camera
//! pipeline such as `rpicam-vid --codec mjpeg -o fifo`, or gstreamer) or a character device.
//!
//! Frames are cut at JPEG markers: a frame starts at `FF D8` and ends at `FF D9` (entropy-coded
//! data escapes every `FF`, so `FF D9` cannot occur inside a frame; cameras do not embed EXIF
//! thumbnails in MJPEG). Bytes between frames are ignored; a frame that does not decode is
//! skipped and counted. Reads wait at most [`READ_WAIT`], so a stalled writer never blocks
//! shutdown: the caller sees [`FrameError::Timeout`] and asks again.

use std::fs::File;
use std::io::Read;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use super::convert::decode_mjpeg;
use super::{Frame, FrameError, FrameSource};

/// Longest a read waits for bytes before returning [`FrameError::Timeout`].
pub const READ_WAIT: Duration = Duration::from_millis(250);
/// Largest frame accepted; a stream that runs longer without an end marker is resynchronised.
pub const MAX_FRAME_BYTES: usize = 16 << 20;

/// Frames from an MJPEG stream.
#[derive(Debug)]
pub struct StreamSource {
    path: PathBuf,
    file: File,
    live: bool,
    buf: Vec<u8>,
    // Where to look for the next end marker (everything before it has been searched).
    scanned: usize,
    delivered: u64,
    skipped: u64,
}

fn find(hay: &[u8], a: u8, b: u8) -> Option<usize> {
    hay.windows(2).position(|w| w[0] == a && w[1] == b)
}

impl StreamSource {
    /// Opens `path` without blocking (a FIFO opens even before its writer). `live` marks a
    /// camera: end of data then means the camera went away, not the end of a recording.
    pub fn open(path: &Path, live: bool) -> Result<StreamSource, FrameError> {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(path)
            .map_err(|source| FrameError::Io {
                path: path.to_path_buf(),
                source,
            })?;
        Ok(StreamSource {
            path: path.to_path_buf(),
            file,
            live,
            buf: Vec::with_capacity(1 << 20),
            scanned: 0,
            delivered: 0,
            skipped: 0,
        })
    }

    /// The next complete frame's bytes in the buffer, if any, removed from it.
    fn cut_frame(&mut self) -> Option<Vec<u8>> {
        let start = find(&self.buf, 0xFF, 0xD8)?;
        if start > 0 {
            self.buf.drain(..start);
            self.scanned = self.scanned.saturating_sub(start);
        }
        let from = self.scanned.max(2);
        match find(&self.buf[from..], 0xFF, 0xD9) {
            Some(end) => {
                let end = from + end + 2;
                let frame: Vec<u8> = self.buf.drain(..end).collect();
                self.scanned = 0;
                Some(frame)
            }
            None => {
                // Keep the last byte: it may be the FF of a marker split across reads.
                self.scanned = self.buf.len().saturating_sub(1);
                if self.buf.len() > MAX_FRAME_BYTES {
                    log::warn!(
                        "{}: no frame end in {} bytes; resynchronising",
                        self.path.display(),
                        self.buf.len()
                    );
                    self.skipped += 1;
                    self.buf.clear();
                    self.scanned = 0;
                }
                None
            }
        }
    }

    /// Waits up to [`READ_WAIT`] and appends what arrived; `Ok(false)` at end of data.
    fn fill(&mut self) -> Result<bool, FrameError> {
        let mut poll = libc::pollfd {
            fd: self.file.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd for the duration of the call.
        let ready = unsafe { libc::poll(&mut poll, 1, READ_WAIT.as_millis() as libc::c_int) };
        if ready == 0 {
            return Err(FrameError::Timeout(READ_WAIT));
        }
        let mut chunk = [0u8; 64 * 1024];
        match self.file.read(&mut chunk) {
            Ok(0) => Ok(false),
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                Ok(true)
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                Err(FrameError::Timeout(READ_WAIT))
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => Ok(true),
            Err(source) => Err(FrameError::Io {
                path: self.path.clone(),
                source,
            }),
        }
    }
}

impl FrameSource for StreamSource {
    fn next_frame(&mut self) -> Result<Option<Frame>, FrameError> {
        loop {
            while let Some(bytes) = self.cut_frame() {
                match decode_mjpeg(&bytes) {
                    Ok(image) => {
                        let frame = Frame {
                            position: None,
                            number: self.delivered,
                            image,
                            timestamp: SystemTime::now(),
                            origin: format!("{} frame {}", self.path.display(), self.delivered),
                        };
                        self.delivered += 1;
                        return Ok(Some(frame));
                    }
                    Err(e) => {
                        self.skipped += 1;
                        log::warn!("{}: skipping a frame: {e}", self.path.display());
                    }
                }
            }
            if !self.fill()? {
                if !self.buf.is_empty() && find(&self.buf, 0xFF, 0xD8).is_some() {
                    self.skipped += 1;
                    log::warn!("{}: stream ended inside a frame", self.path.display());
                }
                self.buf.clear();
                return if self.live {
                    Err(FrameError::Lost {
                        path: self.path.clone(),
                        reason: "end of stream".into(),
                    })
                } else {
                    Ok(None)
                };
            }
        }
    }

    fn skipped(&self) -> u64 {
        self.skipped
    }

    fn is_live(&self) -> bool {
        self.live
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jpeg(w: u32, h: u32, shade: u8) -> Vec<u8> {
        let img = image::RgbImage::from_pixel(w, h, image::Rgb([shade, shade / 2, 255 - shade]));
        let mut out = Vec::new();
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 80)
            .encode_image(&img)
            .unwrap();
        out
    }

    #[test]
    fn a_recording_yields_its_frames_and_skips_the_broken_one() {
        let dir = std::env::temp_dir().join(format!("ei-stream-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("rec.mjpeg");
        let mut bytes = b"junk before".to_vec();
        bytes.extend(jpeg(32, 24, 10));
        let mut broken = jpeg(32, 24, 90);
        let mid = broken.len() / 2;
        broken.drain(mid - 40..mid); // torn in transmission, still FFD8 .. FFD9
        bytes.extend(&broken);
        bytes.extend(jpeg(40, 30, 200));
        bytes.extend(&jpeg(8, 8, 0)[..30]); // cut off at the end of the recording
        std::fs::write(&path, &bytes).unwrap();

        let mut src = StreamSource::open(&path, false).unwrap();
        let mut sizes = Vec::new();
        while let Some(f) = src.next_frame().unwrap() {
            sizes.push((f.number, f.image.dimensions()));
        }
        // The torn frame may decode with a grey band (zune-jpeg fills) or be skipped.
        assert!(sizes.len() == 2 || sizes.len() == 3, "{sizes:?}");
        assert_eq!(sizes.first().unwrap().1, (32, 24));
        assert_eq!(sizes.last().unwrap().1, (40, 30));
        assert_eq!(src.skipped() as usize + sizes.len(), 4);
        std::fs::remove_dir_all(dir).unwrap();
    }
}
