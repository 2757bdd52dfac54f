//! Depthwise convolution of one channel plane (NCHW), bias and clamp fused: what EfficientNet's
//! 3x3 and 5x5 depthwise layers spend 44% of tract's extractor time on.
//!
//! Every output row is cut into a border (taps that fall in the padding: scalar, bounds-checked)
//! and an interior where every tap is inside the row; the interior runs `LANES` outputs at a time
//! with all taps accumulated in one register, using NEON on aarch64 and AVX2+FMA or AVX-512 on
//! x86-64 when the CPU has them (checked once at run time), and a portable loop elsewhere
//! (armv7: Rust's 32-bit ARM NEON intrinsics are not stable).

/// Where a kernel runs: the instruction set chosen for this CPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Isa {
    /// Plain Rust, any CPU.
    Portable,
    /// x86-64 with AVX2 and FMA: 8 lanes.
    Avx2,
    /// x86-64 with AVX-512F: 16 lanes.
    Avx512,
    /// aarch64 Advanced SIMD: 4 lanes.
    Neon,
}

impl Isa {
    /// The best instruction set this CPU offers.
    pub fn detect() -> Isa {
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx512f") {
                return Isa::Avx512;
            }
            if std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
            {
                return Isa::Avx2;
            }
        }
        #[cfg(target_arch = "aarch64")]
        if std::arch::is_aarch64_feature_detected!("neon") {
            return Isa::Neon;
        }
        Isa::Portable
    }

    /// Every instruction set this CPU can run, the portable one first (for tests).
    pub fn available() -> Vec<Isa> {
        let best = Isa::detect();
        let mut all = vec![Isa::Portable];
        if best == Isa::Avx512 {
            all.push(Isa::Avx2);
        }
        if best != Isa::Portable {
            all.push(best);
        }
        all
    }
}

/// The shape of one depthwise convolution, per channel plane.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Geometry {
    /// Kernel height and width.
    pub kernel: (usize, usize),
    /// Vertical and horizontal stride.
    pub stride: (usize, usize),
    /// Zero rows above and columns left of the input (the rest of the padding follows from the
    /// output size).
    pub pad: (usize, usize),
    /// Input plane height and width.
    pub input: (usize, usize),
    /// Output plane height and width.
    pub output: (usize, usize),
}

impl Geometry {
    /// Output columns `lo..hi` whose taps all lie inside the input row.
    fn interior_columns(&self) -> (usize, usize) {
        let (_, kw) = self.kernel;
        let (_, sw) = self.stride;
        let (_, pl) = self.pad;
        let (_, in_w) = self.input;
        let (_, out_w) = self.output;
        let lo = pl.div_ceil(sw).min(out_w);
        let hi = if in_w + pl >= kw {
            ((in_w + pl - kw) / sw + 1).min(out_w)
        } else {
            0
        };
        (lo, hi.max(lo))
    }
}

/// Computes one output plane: `out = clamp(bias + depthwise(input, taps))`, with `taps` the
/// `kh x kw` weights row-major and `clamp = (lo, hi)` (infinite bounds for none).
///
/// # Panics
/// If a slice is shorter than the geometry says (a bug in the caller, not bad input).
pub fn plane(
    isa: Isa,
    g: &Geometry,
    input: &[f32],
    taps: &[f32],
    bias: f32,
    clamp: (f32, f32),
    out: &mut [f32],
) {
    let (kh, kw) = g.kernel;
    let (sh, sw) = g.stride;
    let (pt, pl) = g.pad;
    let (in_h, in_w) = g.input;
    let (out_h, out_w) = g.output;
    assert!(input.len() >= in_h * in_w && taps.len() >= kh * kw && out.len() >= out_h * out_w);
    let (lo, hi) = g.interior_columns();
    // Rows of the input each output row reads: (tap row, offset of that input row).
    let mut rows: heapless::Vec<(usize, usize), MAX_KERNEL> = heapless::Vec::new();
    for oy in 0..out_h {
        rows.clear();
        for ky in 0..kh {
            let iy = (oy * sh + ky) as isize - pt as isize;
            if (0..in_h as isize).contains(&iy) {
                // Kernels are at most MAX_KERNEL rows high (checked where ops are made).
                let _ = rows.push((ky, iy as usize * in_w));
            }
        }
        let out_row = &mut out[oy * out_w..(oy + 1) * out_w];
        let point = |ox: usize| -> f32 {
            let mut acc = bias;
            for &(ky, row) in &rows {
                for kx in 0..kw {
                    let ix = (ox * sw + kx) as isize - pl as isize;
                    if (0..in_w as isize).contains(&ix) {
                        acc += taps[ky * kw + kx] * input[row + ix as usize];
                    }
                }
            }
            acc.max(clamp.0).min(clamp.1)
        };
        for (ox, o) in out_row.iter_mut().enumerate().take(lo) {
            *o = point(ox);
        }
        // The vector part stops where a vector's last load would pass the end of the row.
        let lanes = match isa {
            Isa::Portable => 1,
            Isa::Avx2 => 8,
            Isa::Avx512 => 16,
            Isa::Neon => 4,
        };
        let mut ox = lo;
        if lanes > 1 {
            let fits = |ox: usize| {
                ox + lanes <= hi && (ox + lanes - 1) * sw + (kw - 1) + (sw - 1) < in_w + pl
            };
            let rows = &rows[..];
            while fits(ox) {
                // SAFETY: `fits` keeps every load inside `input` (all rows listed are inside the
                // plane, every column read is < in_w) and the store inside `out_row`.
                unsafe {
                    let src = input.as_ptr().add(ox * sw - pl);
                    let dst = out_row.as_mut_ptr().add(ox);
                    match (isa, sw) {
                        #[cfg(target_arch = "x86_64")]
                        (Isa::Avx2, 1) => x86::avx2::<1>(src, rows, taps, kw, bias, clamp, dst),
                        #[cfg(target_arch = "x86_64")]
                        (Isa::Avx2, 2) => x86::avx2::<2>(src, rows, taps, kw, bias, clamp, dst),
                        #[cfg(target_arch = "x86_64")]
                        (Isa::Avx512, 1) => x86::avx512::<1>(src, rows, taps, kw, bias, clamp, dst),
                        #[cfg(target_arch = "x86_64")]
                        (Isa::Avx512, 2) => x86::avx512::<2>(src, rows, taps, kw, bias, clamp, dst),
                        #[cfg(target_arch = "aarch64")]
                        (Isa::Neon, 1) => arm::neon::<1>(src, rows, taps, kw, bias, clamp, dst),
                        #[cfg(target_arch = "aarch64")]
                        (Isa::Neon, 2) => arm::neon::<2>(src, rows, taps, kw, bias, clamp, dst),
                        _ => break,
                    }
                }
                ox += lanes;
            }
        }
        for (ox, o) in out_row.iter_mut().enumerate().skip(ox) {
            *o = point(ox);
        }
    }
}

/// Largest kernel side the kernels take (EfficientNet uses 3 and 5).
pub const MAX_KERNEL: usize = 7;

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    /// 8 outputs of one row; `src` is the first input column of the first output, `rows` the
    /// input rows read, with their tap row.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn avx2<const S: usize>(
        src: *const f32,
        rows: &[(usize, usize)],
        taps: &[f32],
        kw: usize,
        bias: f32,
        clamp: (f32, f32),
        dst: *mut f32,
    ) {
        let mut acc = _mm256_set1_ps(bias);
        for &(ky, row) in rows {
            let p = src.add(row);
            for kx in 0..kw {
                let w = _mm256_set1_ps(*taps.get_unchecked(ky * kw + kx));
                let x = if S == 1 {
                    _mm256_loadu_ps(p.add(kx))
                } else {
                    // Even elements of 16: [a0 a2 b0 b2 | a4 a6 b4 b6] then fix the lane order.
                    let a = _mm256_loadu_ps(p.add(kx));
                    let b = _mm256_loadu_ps(p.add(kx + 8));
                    let even = _mm256_shuffle_ps::<0b10_00_10_00>(a, b);
                    _mm256_castpd_ps(_mm256_permute4x64_pd::<0b11_01_10_00>(_mm256_castps_pd(
                        even,
                    )))
                };
                acc = _mm256_fmadd_ps(w, x, acc);
            }
        }
        acc = _mm256_max_ps(acc, _mm256_set1_ps(clamp.0));
        acc = _mm256_min_ps(acc, _mm256_set1_ps(clamp.1));
        _mm256_storeu_ps(dst, acc);
    }

    /// 16 outputs of one row (see [`avx2`]).
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn avx512<const S: usize>(
        src: *const f32,
        rows: &[(usize, usize)],
        taps: &[f32],
        kw: usize,
        bias: f32,
        clamp: (f32, f32),
        dst: *mut f32,
    ) {
        let mut acc = _mm512_set1_ps(bias);
        // Even indices of 32 consecutive floats.
        let evens = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
        for &(ky, row) in rows {
            let p = src.add(row);
            for kx in 0..kw {
                let w = _mm512_set1_ps(*taps.get_unchecked(ky * kw + kx));
                let x = if S == 1 {
                    _mm512_loadu_ps(p.add(kx))
                } else {
                    let a = _mm512_loadu_ps(p.add(kx));
                    let b = _mm512_loadu_ps(p.add(kx + 16));
                    _mm512_permutex2var_ps(a, evens, b)
                };
                acc = _mm512_fmadd_ps(w, x, acc);
            }
        }
        acc = _mm512_max_ps(acc, _mm512_set1_ps(clamp.0));
        acc = _mm512_min_ps(acc, _mm512_set1_ps(clamp.1));
        _mm512_storeu_ps(dst, acc);
    }
}

#[cfg(target_arch = "aarch64")]
mod arm {
    use std::arch::aarch64::*;

    /// 4 outputs of one row (see the x86 kernels).
    #[target_feature(enable = "neon")]
    pub(super) unsafe fn neon<const S: usize>(
        src: *const f32,
        rows: &[(usize, usize)],
        taps: &[f32],
        kw: usize,
        bias: f32,
        clamp: (f32, f32),
        dst: *mut f32,
    ) {
        let mut acc = vdupq_n_f32(bias);
        for &(ky, row) in rows {
            let p = src.add(row);
            for kx in 0..kw {
                let w = *taps.get_unchecked(ky * kw + kx);
                let x = if S == 1 {
                    vld1q_f32(p.add(kx))
                } else {
                    // De-interleaving load: .0 holds the even elements of 8.
                    vld2q_f32(p.add(kx)).0
                };
                acc = vfmaq_n_f32(acc, x, w);
            }
        }
        acc = vmaxq_f32(acc, vdupq_n_f32(clamp.0));
        acc = vminq_f32(acc, vdupq_n_f32(clamp.1));
        vst1q_f32(dst, acc);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The definition, nothing clever: zero padding, every tap bounds-checked.
    fn reference(
        g: &Geometry,
        input: &[f32],
        taps: &[f32],
        bias: f32,
        clamp: (f32, f32),
    ) -> Vec<f32> {
        let mut out = vec![0.0; g.output.0 * g.output.1];
        for oy in 0..g.output.0 {
            for ox in 0..g.output.1 {
                let mut acc = bias as f64;
                for ky in 0..g.kernel.0 {
                    for kx in 0..g.kernel.1 {
                        let iy = (oy * g.stride.0 + ky) as isize - g.pad.0 as isize;
                        let ix = (ox * g.stride.1 + kx) as isize - g.pad.1 as isize;
                        if iy >= 0
                            && ix >= 0
                            && (iy as usize) < g.input.0
                            && (ix as usize) < g.input.1
                        {
                            acc += taps[ky * g.kernel.1 + kx] as f64
                                * input[iy as usize * g.input.1 + ix as usize] as f64;
                        }
                    }
                }
                out[oy * g.output.1 + ox] = (acc as f32).max(clamp.0).min(clamp.1);
            }
        }
        out
    }

    fn noise(n: usize, seed: u32) -> Vec<f32> {
        let mut s = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 17;
                s ^= s << 5;
                (s % 2001) as f32 / 1000.0 - 1.0
            })
            .collect()
    }

    #[test]
    fn every_isa_matches_the_definition_on_odd_shapes() {
        let mut cases = 0;
        for k in [1, 3, 5, 7] {
            for s in [1, 2] {
                for (in_h, in_w) in [(1, 1), (2, 3), (5, 5), (7, 19), (16, 16), (13, 40), (9, 67)] {
                    for pad in [0, k / 2] {
                        if in_h + 2 * pad < k || in_w + 2 * pad < k {
                            continue;
                        }
                        let out = ((in_h + 2 * pad - k) / s + 1, (in_w + 2 * pad - k) / s + 1);
                        let g = Geometry {
                            kernel: (k, k),
                            stride: (s, s),
                            pad: (pad, pad),
                            input: (in_h, in_w),
                            output: out,
                        };
                        let input = noise(in_h * in_w, cases);
                        let taps = noise(k * k, cases + 7);
                        for clamp in [(f32::NEG_INFINITY, f32::INFINITY), (0.0, 0.5)] {
                            let want = reference(&g, &input, &taps, 0.25, clamp);
                            for isa in Isa::available() {
                                let mut got = vec![f32::NAN; out.0 * out.1];
                                plane(isa, &g, &input, &taps, 0.25, clamp, &mut got);
                                for (i, (a, b)) in got.iter().zip(&want).enumerate() {
                                    assert!(
                                        (a - b).abs() <= 1e-5 * (1.0 + b.abs()),
                                        "{isa:?} {g:?} clamp {clamp:?} at {i}: {a} vs {b}"
                                    );
                                }
                            }
                            cases += 1;
                        }
                    }
                }
            }
        }
        assert!(cases > 80, "{cases} cases");
    }

    #[test]
    fn this_cpu_gets_a_vector_kernel() {
        // Every CI machine (x86-64 with AVX2, qemu's cortex-a72/a76) has one.
        if cfg!(any(target_arch = "x86_64", target_arch = "aarch64")) {
            assert_ne!(Isa::detect(), Isa::Portable);
        }
    }
}
