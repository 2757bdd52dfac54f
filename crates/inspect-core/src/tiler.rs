//! Cutting frames into tiles, and mapping model pixels back to frame pixels.
//!
//! Tiles are squares of `tile_size` frame pixels laid on a grid with `overlap` pixels shared by
//! neighbours. The last column and row are pushed back against the frame edge, so every tile is
//! full-size and every frame pixel is covered; a frame smaller than a tile gives one tile of the
//! whole frame. Each tile is resized to the model input with bilinear sampling.

use image::RgbImage;

pub use inspect_protocol::PixelBox;

/// One tile of a frame: its index in the grid (row-major) and its rectangle in frame pixels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tile {
    /// Row-major index in the grid.
    pub index: usize,
    /// The tile's rectangle in frame pixels.
    pub rect: PixelBox,
}

/// Start positions and length of the tiles along one axis of `len` pixels.
fn axis_spans(len: u32, tile: u32, overlap: u32) -> Vec<(u32, u32)> {
    if len <= tile {
        return vec![(0, len)];
    }
    let stride = tile - overlap;
    let mut spans = Vec::new();
    let mut start = 0;
    loop {
        spans.push((start, tile));
        if start + tile >= len {
            return spans;
        }
        start = (start + stride).min(len - tile);
    }
}

/// The tile grid of one frame size.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TileGrid {
    /// Frame width in pixels.
    pub frame_width: u32,
    /// Frame height in pixels.
    pub frame_height: u32,
    /// Number of tile columns.
    pub columns: usize,
    /// Number of tile rows.
    pub rows: usize,
    /// All tiles, row-major.
    pub tiles: Vec<Tile>,
}

impl TileGrid {
    /// Lays the grid over a `frame_width x frame_height` frame.
    ///
    /// `overlap` must be smaller than `tile_size` (the config validates this).
    pub fn new(frame_width: u32, frame_height: u32, tile_size: u32, overlap: u32) -> TileGrid {
        let xs = axis_spans(frame_width, tile_size, overlap);
        let ys = axis_spans(frame_height, tile_size, overlap);
        let mut tiles = Vec::with_capacity(xs.len() * ys.len());
        for &(y, height) in &ys {
            for &(x, width) in &xs {
                tiles.push(Tile {
                    index: tiles.len(),
                    rect: PixelBox {
                        x,
                        y,
                        width,
                        height,
                    },
                });
            }
        }
        TileGrid {
            frame_width,
            frame_height,
            columns: xs.len(),
            rows: ys.len(),
            tiles,
        }
    }
}

/// Maps a box in model-input pixels of `tile` back to frame pixels.
///
/// Model pixel `u` covers frame columns `[x + u*w/W, x + (u+1)*w/W)`; the result is the smallest
/// whole-pixel box covering the mapped region, clipped to the tile.
pub fn model_box_to_frame(
    model: PixelBox,
    tile: &PixelBox,
    input_width: u32,
    input_height: u32,
) -> PixelBox {
    let map = |lo: u32, hi: u32, origin: u32, span: u32, input: u32| -> (u32, u32) {
        let (span, input) = (span as u64, input as u64);
        let a = (lo as u64 * span) / input;
        let b = (hi as u64 * span).div_ceil(input).min(span);
        (origin + a as u32, origin + b as u32)
    };
    let (x0, x1) = map(
        model.x,
        model.x + model.width,
        tile.x,
        tile.width,
        input_width,
    );
    let (y0, y1) = map(
        model.y,
        model.y + model.height,
        tile.y,
        tile.height,
        input_height,
    );
    PixelBox {
        x: x0,
        y: y0,
        width: x1 - x0,
        height: y1 - y0,
    }
}

/// Per-channel normalization applied while sampling: `(v / 255 - mean) / std`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Normalization {
    /// RGB mean on the 0..1 scale.
    pub mean: [f32; 3],
    /// RGB standard deviation on the 0..1 scale.
    pub std: [f32; 3],
}

/// Resizes a whole image to `width x height` with exactly the sampling of [`sample_tile`],
/// rounded to 8 bits: the trainer sees images resized as the daemon resizes tiles.
pub fn resize_rgb(image: &RgbImage, width: u32, height: u32) -> RgbImage {
    let rect = PixelBox {
        x: 0,
        y: 0,
        width: image.width(),
        height: image.height(),
    };
    // mean 0, std 1/255: the sampled values stay on the 0..255 scale.
    let identity = Normalization {
        mean: [0.0; 3],
        std: [1.0 / 255.0; 3],
    };
    let (w, h) = (width as usize, height as usize);
    let mut planar = vec![0.0; 3 * w * h];
    sample_tile(image, &rect, w, h, &identity, &mut planar);
    let plane = w * h;
    RgbImage::from_fn(width, height, |x, y| {
        let i = y as usize * w + x as usize;
        image::Rgb(std::array::from_fn(|c| {
            planar[c * plane + i].round().clamp(0.0, 255.0) as u8
        }))
    })
}

/// A whole image as a model input: resized to `size x size` by [`resize_rgb`] (as the trainer
/// sees images), then normalized and written planar into `out` (`3 * size * size` values).
/// Returns the resized image.
pub fn model_input(
    image: &RgbImage,
    size: usize,
    norm: &Normalization,
    out: &mut [f32],
) -> RgbImage {
    let resized = resize_rgb(image, size as u32, size as u32);
    let whole = PixelBox {
        x: 0,
        y: 0,
        width: size as u32,
        height: size as u32,
    };
    sample_tile(&resized, &whole, size, size, norm, out);
    resized
}

/// Resizes the `rect` of `frame` to `width x height` with bilinear sampling (pixel centres
/// aligned, as OpenCV's `INTER_LINEAR`), normalizes it and writes it planar (`3 x H x W`) into `out`.
///
/// `out` must hold `3 * width * height` values; `rect` must lie inside the frame.
pub fn sample_tile(
    frame: &RgbImage,
    rect: &PixelBox,
    width: usize,
    height: usize,
    norm: &Normalization,
    out: &mut [f32],
) {
    debug_assert_eq!(out.len(), 3 * width * height);
    let plane = width * height;
    let scale_x = rect.width as f32 / width as f32;
    let scale_y = rect.height as f32 / height as f32;
    let max_x = rect.width as i64 - 1;
    let max_y = rect.height as i64 - 1;
    let raw = frame.as_raw();
    let stride = frame.width() as usize * 3;
    let gain: [f32; 3] = std::array::from_fn(|c| 1.0 / (255.0 * norm.std[c]));
    let bias: [f32; 3] = std::array::from_fn(|c| -norm.mean[c] / norm.std[c]);
    for oy in 0..height {
        let sy = ((oy as f32 + 0.5) * scale_y - 0.5).max(0.0);
        let y0 = (sy.floor() as i64).min(max_y);
        let y1 = (y0 + 1).min(max_y);
        let fy = sy - y0 as f32;
        let row0 = (rect.y as usize + y0 as usize) * stride;
        let row1 = (rect.y as usize + y1 as usize) * stride;
        for ox in 0..width {
            let sx = ((ox as f32 + 0.5) * scale_x - 0.5).max(0.0);
            let x0 = (sx.floor() as i64).min(max_x);
            let x1 = (x0 + 1).min(max_x);
            let fx = sx - x0 as f32;
            let c0 = (rect.x as usize + x0 as usize) * 3;
            let c1 = (rect.x as usize + x1 as usize) * 3;
            for c in 0..3 {
                let top = raw[row0 + c0 + c] as f32 * (1.0 - fx) + raw[row0 + c1 + c] as f32 * fx;
                let bottom =
                    raw[row1 + c0 + c] as f32 * (1.0 - fx) + raw[row1 + c1 + c] as f32 * fx;
                let v = top * (1.0 - fy) + bottom * fy;
                out[c * plane + oy * width + ox] = v * gain[c] + bias[c];
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn covered(grid: &TileGrid) -> Vec<bool> {
        let mut seen = vec![false; (grid.frame_width * grid.frame_height) as usize];
        for t in &grid.tiles {
            for y in t.rect.y..t.rect.y + t.rect.height {
                for x in t.rect.x..t.rect.x + t.rect.width {
                    seen[(y * grid.frame_width + x) as usize] = true;
                }
            }
        }
        seen
    }

    #[test]
    fn hd_frame_grid_has_full_size_edge_tiles() {
        let grid = TileGrid::new(1280, 720, 256, 32);
        assert_eq!((grid.columns, grid.rows), (6, 4));
        let xs: Vec<u32> = grid.tiles[..6].iter().map(|t| t.rect.x).collect();
        assert_eq!(xs, vec![0, 224, 448, 672, 896, 1024]);
        let ys: Vec<u32> = grid.tiles.iter().step_by(6).map(|t| t.rect.y).collect();
        assert_eq!(ys, vec![0, 224, 448, 464]);
        for t in &grid.tiles {
            assert_eq!((t.rect.width, t.rect.height), (256, 256));
            assert!(t.rect.x + t.rect.width <= 1280 && t.rect.y + t.rect.height <= 720);
        }
        assert!(covered(&grid).iter().all(|&c| c));
    }

    #[test]
    fn non_divisible_and_small_frames_are_covered() {
        for (w, h, tile, overlap) in [(1000, 333, 128, 16), (97, 61, 64, 0), (50, 300, 64, 8)] {
            let grid = TileGrid::new(w, h, tile, overlap);
            assert!(covered(&grid).iter().all(|&c| c), "{w}x{h}");
            for (i, t) in grid.tiles.iter().enumerate() {
                assert_eq!(t.index, i);
                assert!(t.rect.x + t.rect.width <= w && t.rect.y + t.rect.height <= h);
            }
        }
        let small = TileGrid::new(50, 40, 64, 8);
        assert_eq!(small.tiles.len(), 1);
        assert_eq!(
            small.tiles[0].rect,
            PixelBox {
                x: 0,
                y: 0,
                width: 50,
                height: 40
            }
        );
    }

    #[test]
    fn model_pixels_map_back_exactly() {
        let tile = PixelBox {
            x: 1024,
            y: 464,
            width: 256,
            height: 256,
        };
        // 128-pixel model input: each model pixel is 2x2 frame pixels.
        let whole = PixelBox {
            x: 0,
            y: 0,
            width: 128,
            height: 128,
        };
        assert_eq!(model_box_to_frame(whole, &tile, 128, 128), tile);
        let one = PixelBox {
            x: 127,
            y: 5,
            width: 1,
            height: 1,
        };
        assert_eq!(
            model_box_to_frame(one, &tile, 128, 128),
            PixelBox {
                x: 1278,
                y: 474,
                width: 2,
                height: 2
            }
        );
        // A 50-pixel tile shown as 128 model pixels: boxes round outwards, never past the tile.
        let small = PixelBox {
            x: 10,
            y: 0,
            width: 50,
            height: 50,
        };
        let mapped = model_box_to_frame(
            PixelBox {
                x: 3,
                y: 100,
                width: 10,
                height: 28,
            },
            &small,
            128,
            128,
        );
        assert_eq!(
            mapped,
            PixelBox {
                x: 11,
                y: 39,
                width: 5,
                height: 11
            }
        );
    }

    #[test]
    fn sampling_a_constant_tile_normalizes_each_channel() {
        let frame = RgbImage::from_pixel(40, 30, image::Rgb([255, 0, 51]));
        let norm = Normalization {
            mean: [0.5, 0.0, 0.1],
            std: [0.5, 1.0, 0.1],
        };
        let rect = PixelBox {
            x: 5,
            y: 3,
            width: 20,
            height: 20,
        };
        let mut out = vec![0.0; 3 * 8 * 8];
        sample_tile(&frame, &rect, 8, 8, &norm, &mut out);
        for (c, want) in [1.0f32, 0.0, 1.0].iter().enumerate() {
            for v in &out[c * 64..(c + 1) * 64] {
                assert!((v - want).abs() < 1e-5, "channel {c}: {v} vs {want}");
            }
        }
    }

    #[test]
    fn sampling_interpolates_between_pixel_centres() {
        // A horizontal ramp 0, 10, 20, 30 shrunk to two pixels: centres fall at 0.5 and 2.5.
        let mut frame = RgbImage::new(4, 1);
        for x in 0..4 {
            frame.put_pixel(x, 0, image::Rgb([(x * 10) as u8; 3]));
        }
        let norm = Normalization {
            mean: [0.0; 3],
            std: [1.0 / 255.0; 3],
        };
        let rect = PixelBox {
            x: 0,
            y: 0,
            width: 4,
            height: 1,
        };
        let mut out = vec![0.0; 3 * 2];
        sample_tile(&frame, &rect, 2, 1, &norm, &mut out);
        assert!(
            (out[0] - 5.0).abs() < 1e-4 && (out[1] - 25.0).abs() < 1e-4,
            "{out:?}"
        );
    }
}
