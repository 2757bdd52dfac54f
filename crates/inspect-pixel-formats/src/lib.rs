//! Camera pixel formats to RGB8: YUYV 4:2:2 (BT.601, limited range, as UVC webcams and the Pi's
//! ISP send it) and MJPEG (decoded by the `image` crate's zune-jpeg, which also supplies the
//! standard Huffman tables that webcams leave out of their frames).
//!
//! A crate of its own: it decodes bytes a camera controls, so it is fuzzed, and its fuzz target
//! should build without the rest of the daemon.

#![warn(missing_docs)]

use image::RgbImage;

/// A camera buffer that does not hold the frame it claims to.
#[derive(Debug, thiserror::Error)]
pub enum ConvertError {
    /// The buffer is smaller than `height` rows of `stride` bytes.
    #[error("YUYV buffer of {len} bytes is too short for {width}x{height} (stride {stride})")]
    ShortBuffer {
        /// Buffer length.
        len: usize,
        /// Frame width.
        width: u32,
        /// Frame height.
        height: u32,
        /// Bytes per row.
        stride: usize,
    },
    /// The driver reported a frame without pixels.
    #[error("YUYV frame of {width}x{height} has no pixels")]
    Empty {
        /// Frame width.
        width: u32,
        /// Frame height.
        height: u32,
    },
    /// YUYV needs an even width.
    #[error("YUYV frame width {0} is odd")]
    OddWidth(u32),
    /// The JPEG does not decode.
    #[error("MJPEG frame: {0}")]
    Jpeg(#[from] image::ImageError),
}

// BT.601 limited range in 16.16 fixed point: R = 1.164 (Y-16) + 1.596 (V-128), and so on.
const CY: i32 = 76_284; // 1.164
const CRV: i32 = 104_595; // 1.596
const CGU: i32 = 25_624; // 0.391
const CGV: i32 = 53_281; // 0.813
const CBU: i32 = 132_252; // 2.018

fn clamp(v: i32) -> u8 {
    (v >> 16).clamp(0, 255) as u8
}

fn yuv_to_rgb(y: u8, u: u8, v: u8) -> [u8; 3] {
    let c = (y as i32 - 16) * CY + (1 << 15);
    let (d, e) = (u as i32 - 128, v as i32 - 128);
    [
        clamp(c + CRV * e),
        clamp(c - CGU * d - CGV * e),
        clamp(c + CBU * d),
    ]
}

/// Converts a YUYV buffer (`Y0 U Y1 V` per pixel pair, rows `stride` bytes apart) into `out`,
/// which is resized to `width x height` (no allocation when it already has that size).
pub fn yuyv_to_rgb(
    src: &[u8],
    width: u32,
    height: u32,
    stride: usize,
    out: &mut RgbImage,
) -> Result<(), ConvertError> {
    if width == 0 || height == 0 {
        // Found by fuzzing: a zero width made the row loop panic.
        return Err(ConvertError::Empty { width, height });
    }
    if !width.is_multiple_of(2) {
        return Err(ConvertError::OddWidth(width));
    }
    let row_bytes = width as usize * 2;
    // Checked: the stride comes from the driver (or a fuzzer) and may be anything.
    let needed = stride
        .checked_mul(height as usize - 1)
        .and_then(|n| n.checked_add(row_bytes));
    if stride < row_bytes || needed.is_none_or(|n| src.len() < n) {
        return Err(ConvertError::ShortBuffer {
            len: src.len(),
            width,
            height,
            stride,
        });
    }
    if out.dimensions() != (width, height) {
        *out = RgbImage::new(width, height);
    }
    let dst: &mut [u8] = out;
    for (row, dst_row) in dst.chunks_exact_mut(width as usize * 3).enumerate() {
        let src_row = &src[row * stride..row * stride + row_bytes];
        for (pair, px) in src_row.chunks_exact(4).zip(dst_row.chunks_exact_mut(6)) {
            let (y0, u, y1, v) = (pair[0], pair[1], pair[2], pair[3]);
            px[..3].copy_from_slice(&yuv_to_rgb(y0, u, v));
            px[3..].copy_from_slice(&yuv_to_rgb(y1, u, v));
        }
    }
    Ok(())
}

/// Whether the JPEG's header (the segments before the scan) defines Huffman tables.
fn has_huffman_tables(jpeg: &[u8]) -> bool {
    let mut i = 2;
    while i + 4 <= jpeg.len() && jpeg[i] == 0xFF {
        match jpeg[i + 1] {
            0xC4 => return true,
            0xDA => return false,
            _ => i += 2 + u16::from_be_bytes([jpeg[i + 2], jpeg[i + 3]]) as usize,
        }
    }
    false
}

/// An `APP0 "AVI1"` segment: marks a frame as Motion-JPEG, so the decoder supplies the
/// standard Huffman tables (ITU T.81 K.3) that MJPEG frames leave out.
const AVI1: [u8; 9] = [0xFF, 0xE0, 0x00, 0x07, b'A', b'V', b'I', b'1', 0x00];

/// Decodes one MJPEG frame to RGB8. Frames without Huffman tables (most UVC webcams) are
/// decoded with the standard ones.
pub fn decode_mjpeg(bytes: &[u8]) -> Result<RgbImage, ConvertError> {
    let decode = |b: &[u8]| image::load_from_memory_with_format(b, image::ImageFormat::Jpeg);
    let img = if bytes.starts_with(&[0xFF, 0xD8]) && !has_huffman_tables(bytes) {
        let mut marked = Vec::with_capacity(bytes.len() + AVI1.len());
        marked.extend_from_slice(&bytes[..2]);
        marked.extend_from_slice(&AVI1);
        marked.extend_from_slice(&bytes[2..]);
        decode(&marked)?
    } else {
        decode(bytes)?
    };
    Ok(img.into_rgb8())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yuyv_known_colours() {
        // Reference values: BT.601 limited range (what ffmpeg's yuv422 -> rgb24 gives).
        let cases: [([u8; 4], [u8; 3]); 6] = [
            ([16, 128, 16, 128], [0, 0, 0]),         // black
            ([235, 128, 235, 128], [255, 255, 255]), // white
            ([81, 90, 81, 240], [255, 0, 0]),        // red
            ([145, 54, 145, 34], [0, 255, 0]),       // green
            ([41, 240, 41, 110], [0, 0, 255]),       // blue
            ([126, 128, 126, 128], [128, 128, 128]), // mid grey
        ];
        for (yuyv, rgb) in cases {
            let mut out = RgbImage::new(1, 1);
            yuyv_to_rgb(&yuyv, 2, 1, 4, &mut out).unwrap();
            for px in out.pixels() {
                for c in 0..3 {
                    assert!(
                        (px[c] as i32 - rgb[c] as i32).abs() <= 2,
                        "{yuyv:?} -> {:?}, want {rgb:?}",
                        px.0
                    );
                }
            }
        }
    }

    #[test]
    fn yuyv_rows_honour_the_stride_and_short_buffers_are_refused() {
        // 4x2 frame, stride 12 (4 bytes of padding per row, as drivers align rows).
        let mut buf = vec![0xEEu8; 24];
        for row in 0..2 {
            for pair in 0..2 {
                let y = if row == 0 { 16 } else { 235 };
                buf[row * 12 + pair * 4..row * 12 + pair * 4 + 4]
                    .copy_from_slice(&[y, 128, y, 128]);
            }
        }
        let mut out = RgbImage::new(0, 0);
        yuyv_to_rgb(&buf, 4, 2, 12, &mut out).unwrap();
        assert_eq!(out.dimensions(), (4, 2));
        assert!(out.rows().next().unwrap().all(|p| p.0 == [0, 0, 0]));
        assert!(out.rows().nth(1).unwrap().all(|p| p.0 == [255, 255, 255]));
        assert!(matches!(
            yuyv_to_rgb(&buf[..19], 4, 2, 12, &mut out),
            Err(ConvertError::ShortBuffer { .. })
        ));
        assert!(matches!(
            yuyv_to_rgb(&buf, 3, 2, 12, &mut out),
            Err(ConvertError::OddWidth(3))
        ));
        // Found by the camera_frame fuzz target: no pixels, and a stride whose product overflows.
        assert!(matches!(
            yuyv_to_rgb(&buf, 0, 2, 12, &mut out),
            Err(ConvertError::Empty { .. })
        ));
        assert!(matches!(
            yuyv_to_rgb(&buf, 4, 3, usize::MAX / 2 + 1, &mut out),
            Err(ConvertError::ShortBuffer { .. })
        ));
    }

    /// Removes the DHT segments of a JPEG: what many USB webcams send as MJPEG.
    fn strip_huffman_tables(jpeg: &[u8]) -> Vec<u8> {
        let mut out = jpeg[..2].to_vec();
        let mut i = 2;
        while i + 4 <= jpeg.len() && jpeg[i] == 0xFF {
            let marker = jpeg[i + 1];
            if marker == 0xDA {
                break; // start of scan: the rest is entropy-coded data
            }
            let len = u16::from_be_bytes([jpeg[i + 2], jpeg[i + 3]]) as usize;
            if marker != 0xC4 {
                out.extend_from_slice(&jpeg[i..i + 2 + len]);
            }
            i += 2 + len;
        }
        out.extend_from_slice(&jpeg[i..]);
        out
    }

    #[test]
    fn mjpeg_frames_decode_with_and_without_huffman_tables() {
        let photo = image::open(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../tests/data/photos/coffee.jpg"
        ))
        .unwrap()
        .into_rgb8();
        let mut jpeg = Vec::new();
        // The encoder writes the standard (Annex K) tables, the ones MJPEG leaves out.
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, 90)
            .encode_image(&photo)
            .unwrap();
        let full = decode_mjpeg(&jpeg).unwrap();
        assert_eq!(full.dimensions(), photo.dimensions());
        let stripped = strip_huffman_tables(&jpeg);
        assert!(stripped.len() < jpeg.len(), "DHT segments were removed");
        assert!(has_huffman_tables(&jpeg) && !has_huffman_tables(&stripped));
        let bare = decode_mjpeg(&stripped).unwrap();
        assert_eq!(bare, full, "same pixels with the default tables");
        // A torn frame must not panic (zune-jpeg may return it grey-filled or refuse it).
        if let Ok(torn) = decode_mjpeg(&jpeg[..jpeg.len() / 3]) {
            assert_eq!(torn.dimensions(), photo.dimensions());
        }
        assert!(decode_mjpeg(b"\xff\xd8\xff\xe0garbage").is_err());
    }
}
