//! CFlow-AD's 2-D positional encoding (`positionalencoding2d`): the condition of every coupling
//! block, one 128-vector per feature-map position. Plain floats, so the trainer (as a tensor) and
//! the ONNX export (as a constant) share one definition.

/// Channels of the encoding.
pub const CONDITION_DIM: usize = 128;

/// The encoding of an `height x width` map, `d x height x width` row-major, `d` a multiple
/// of 4: with `f_k = exp(-2k ln(1e4) / (d/2))`, channel `2k` holds `sin(x f_k)`, `2k+1`
/// `cos(x f_k)`, `d/2 + 2k` `sin(y f_k)` and `d/2 + 2k + 1` `cos(y f_k)`, for integer map
/// coordinates `x`, `y`.
pub fn positional_encoding(d: usize, height: usize, width: usize) -> Vec<f32> {
    let half = d / 2;
    let plane = height * width;
    let mut out = vec![0.0f32; d * plane];
    for k in 0..half / 2 {
        // Computed in f64 as PyTorch's float32 arithmetic is close enough to it (1e-7).
        let f = (-((2 * k) as f64) * 10_000f64.ln() / half as f64).exp();
        for y in 0..height {
            for x in 0..width {
                let (sx, cx) = (x as f64 * f).sin_cos();
                let (sy, cy) = (y as f64 * f).sin_cos();
                let at = y * width + x;
                out[(2 * k) * plane + at] = sx as f32;
                out[(2 * k + 1) * plane + at] = cx as f32;
                out[(half + 2 * k) * plane + at] = sy as f32;
                out[(half + 2 * k + 1) * plane + at] = cy as f32;
            }
        }
    }
    out
}

/// The encoding as fibers: row `y * width + x` holds the `d` values of that position
/// (`height * width x d`, row-major), the layout the flows take as condition.
pub fn positional_fibers(d: usize, height: usize, width: usize) -> Vec<f32> {
    let planar = positional_encoding(d, height, width);
    let plane = height * width;
    let mut out = vec![0.0f32; d * plane];
    for at in 0..plane {
        for c in 0..d {
            out[at * d + c] = planar[c * plane + at];
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_values_written_in_the_design() {
        let (h, w) = (6, 8);
        let p = positional_encoding(CONDITION_DIM, h, w);
        let at = |c: usize| p[c * h * w + 3 * w + 5]; // y = 3, x = 5
        let expected = [
            -0.958924, 0.283662, -0.571127, -0.820862, 0.323935, -0.946079,
        ];
        for (c, e) in expected.iter().enumerate() {
            assert!((at(c) - e).abs() < 1e-6, "channel {c}: {} vs {e}", at(c));
        }
        // The y half at (y=3, x=5): sin(3), cos(3).
        assert!((at(64) - 3f32.sin()).abs() < 1e-6);
        assert!((at(65) - 3f32.cos()).abs() < 1e-6);
        let fibers = positional_fibers(CONDITION_DIM, h, w);
        assert_eq!(fibers[(3 * w + 5) * CONDITION_DIM + 2], at(2));
    }
}
