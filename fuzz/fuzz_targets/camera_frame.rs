//! A camera buffer, as the capture thread gets it: an MJPEG frame (torn, garbled, without
//! Huffman tables) or a YUYV buffer whose claimed geometry may not match its length. Nothing may
//! panic; a decoded frame is as large as its pixels; a converted YUYV frame has the size asked.
#![no_main]

use image::RgbImage;
use inspect_pixel_formats::{decode_mjpeg, yuyv_to_rgb};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| {
    if let Ok(rgb) = decode_mjpeg(bytes) {
        assert_eq!(
            rgb.as_raw().len(),
            rgb.width() as usize * rgb.height() as usize * 3
        );
    }
    // YUYV: geometry from the first 10 bytes (small frames; any stride, overflow included).
    if bytes.len() >= 10 {
        let width = u32::from(bytes[0] % 64);
        let height = u32::from(bytes[1] % 64);
        let stride = u64::from_le_bytes(bytes[2..10].try_into().unwrap()) as usize;
        let mut out = RgbImage::new(0, 0);
        if yuyv_to_rgb(&bytes[10..], width, height, stride, &mut out).is_ok() {
            assert_eq!(out.dimensions(), (width, height));
        }
    }
});
