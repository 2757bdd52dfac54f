//! Matrix products for the hand-written flow: strided views over slices, multiplied by the
//! `gemm` crate (packed SIMD kernels; one thread, the trainer parallelises over levels).

/// A read-only matrix view: element `(i, j)` is `data[offset + i * row_stride + j * col_stride]`.
#[derive(Clone, Copy, Debug)]
pub struct View<'a> {
    data: &'a [f32],
    offset: usize,
    rows: usize,
    cols: usize,
    row_stride: usize,
    col_stride: usize,
}

impl<'a> View<'a> {
    /// The row-major `rows x cols` matrix at the start of `data`.
    pub fn rows(data: &'a [f32], rows: usize, cols: usize) -> View<'a> {
        View {
            data,
            offset: 0,
            rows,
            cols,
            row_stride: cols,
            col_stride: 1,
        }
    }

    /// The transpose (no copy).
    pub fn t(self) -> View<'a> {
        View {
            rows: self.cols,
            cols: self.rows,
            row_stride: self.col_stride,
            col_stride: self.row_stride,
            ..self
        }
    }

    /// Columns `start..start + count` (no copy).
    pub fn columns(self, start: usize, count: usize) -> View<'a> {
        assert!(start + count <= self.cols, "columns out of range");
        View {
            offset: self.offset + start * self.col_stride,
            cols: count,
            ..self
        }
    }

    /// Rows `0..count` (no copy).
    pub fn first_rows(self, count: usize) -> View<'a> {
        assert!(count <= self.rows, "rows out of range");
        View {
            rows: count,
            ..self
        }
    }

    /// Whether every element lies inside the slice.
    fn in_bounds(&self) -> bool {
        self.rows == 0
            || self.cols == 0
            || self.offset + (self.rows - 1) * self.row_stride + (self.cols - 1) * self.col_stride
                < self.data.len()
    }
}

/// `dst = a b` (or `dst += a b` with `accumulate`), `dst` row-major `a.rows x b.cols` with row
/// stride `dst_stride` (at least `b.cols`).
pub fn matmul(dst: &mut [f32], dst_stride: usize, accumulate: bool, a: View, b: View) {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    assert_eq!(k, b.rows, "inner dimensions differ");
    assert!(a.in_bounds() && b.in_bounds(), "view outside its slice");
    assert!(n <= dst_stride, "destination row stride too small");
    if m == 0 || n == 0 {
        return;
    }
    assert!(
        (m - 1) * dst_stride + n <= dst.len(),
        "destination too small"
    );
    if k == 0 {
        if !accumulate {
            for row in dst.chunks_mut(dst_stride).take(m) {
                row[..n].fill(0.0);
            }
        }
        return;
    }
    // SAFETY: the asserts above keep every element the kernel reads or writes inside the
    // slices; `dst` is borrowed mutably, so it cannot alias `a` or `b`.
    unsafe {
        ::gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            dst_stride as isize,
            accumulate,
            a.data.as_ptr().add(a.offset),
            a.col_stride as isize,
            a.row_stride as isize,
            b.data.as_ptr().add(b.offset),
            b.col_stride as isize,
            b.row_stride as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            ::gemm::Parallelism::None,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(a: View, b: View) -> Vec<f32> {
        let at =
            |v: &View, i: usize, j: usize| v.data[v.offset + i * v.row_stride + j * v.col_stride];
        let mut out = vec![0.0; a.rows * b.cols];
        for i in 0..a.rows {
            for j in 0..b.cols {
                out[i * b.cols + j] = (0..a.cols).map(|k| at(&a, i, k) * at(&b, k, j)).sum();
            }
        }
        out
    }

    #[test]
    fn products_of_transposed_and_sliced_views_equal_the_definition() {
        let a: Vec<f32> = (0..35).map(|i| (i as f32 * 0.37).sin()).collect();
        let b: Vec<f32> = (0..42).map(|i| (i as f32 * 0.11).cos()).collect();
        let av = View::rows(&a, 5, 7);
        let bv = View::rows(&b, 6, 7);
        // (5 x 7) (7 x 6), then a column slice, then accumulation.
        let want = naive(av, bv.t());
        let mut got = vec![9.0; 5 * 6];
        matmul(&mut got, 6, false, av, bv.t());
        for (g, w) in got.iter().zip(&want) {
            assert!((g - w).abs() < 1e-5, "{g} vs {w}");
        }
        let want = naive(av.columns(2, 3), bv.t().first_rows(3));
        let mut got = vec![1.0; 5 * 8];
        matmul(&mut got, 8, true, av.columns(2, 3), bv.t().first_rows(3));
        for i in 0..5 {
            for j in 0..6 {
                assert!((got[i * 8 + j] - 1.0 - want[i * 6 + j]).abs() < 1e-5);
            }
            assert_eq!(got[i * 8 + 6], 1.0, "columns past n untouched");
        }
    }
}
