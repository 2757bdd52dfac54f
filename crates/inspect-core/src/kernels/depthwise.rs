//! Depthwise convolution of one channel plane (NCHW), bias and clamp fused: what EfficientNet's
//! 3x3 and 5x5 depthwise layers spend 44% of tract's extractor time on.
//!
//! The input plane is copied once into a buffer that holds its zero padding ([`Padded`]), so
//! every output, border included, is computed the same way: a vector of outputs at a time with
//! all taps accumulated in one register (taps broadcast once per row), using NEON on aarch64
//! (intrinsics) and armv7 (inline assembly: Rust's 32-bit ARM NEON intrinsics are not stable;
//! tract keeps channel planes there, so this is what 32-bit boards run), AVX2+FMA or AVX-512 on
//! x86-64 when the CPU has them (checked once at run time), and a portable loop elsewhere and
//! for horizontal strides above 2.

/// Where a kernel runs: the instruction set chosen for this CPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Isa {
    /// Plain Rust, any CPU.
    Portable,
    /// x86-64 with AVX2 and FMA: 8 lanes.
    Avx2,
    /// x86-64 with AVX-512F: 16 lanes.
    Avx512,
    /// ARM Advanced SIMD, 4 lanes: aarch64 (every kernel) and armv7 (the channels-last one;
    /// planes take the portable loop there).
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
        #[cfg(all(target_arch = "arm", target_os = "linux"))]
        {
            // Linux's HWCAP_NEON (arch/arm/include/uapi/asm/hwcap.h); Rust's ARM feature
            // detection is unstable.
            const HWCAP_NEON: libc::c_ulong = 1 << 12;
            // SAFETY: getauxval only reads the auxiliary vector the kernel handed the process.
            if unsafe { libc::getauxval(libc::AT_HWCAP) } & HWCAP_NEON != 0 {
                return Isa::Neon;
            }
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

/// The input plane surrounded by its zero padding, reused for every channel of an op: with
/// the padding in memory every output, border included, runs on the vector path, and every
/// load of the last (partial) vector of a row stays inside the buffer.
#[derive(Debug, Default, Clone)]
pub struct Padded {
    buf: Vec<f32>,
    /// Row length in floats.
    width: usize,
    /// The geometry and lane count the buffer was laid out for.
    layout: Option<(Geometry, usize)>,
}

impl Padded {
    /// Lays the buffer out for `g` and `lanes` (zeroed) unless it already is.
    fn prepare(&mut self, g: &Geometry, lanes: usize) {
        if self.layout == Some((*g, lanes)) {
            return;
        }
        let (kh, kw) = g.kernel;
        let (sh, sw) = g.stride;
        let (pt, pl) = g.pad;
        let (in_h, in_w) = g.input;
        let (out_h, out_w) = g.output;
        let vectors = out_w.div_ceil(lanes).max(1);
        self.width = (pl + in_w).max((vectors * lanes - 1) * sw + kw + sw - 1);
        let height = (pt + in_h).max(out_h.saturating_sub(1) * sh + kh);
        self.buf.clear();
        self.buf.resize(self.width * height, 0.0);
        self.layout = Some((*g, lanes));
    }

    /// Copies `input` inside the padding (which stays zero).
    fn fill(&mut self, g: &Geometry, input: &[f32]) {
        let (pt, pl) = g.pad;
        let (_, in_w) = g.input;
        for (iy, row) in input.chunks_exact(in_w).enumerate() {
            let start = (iy + pt) * self.width + pl;
            self.buf[start..start + in_w].copy_from_slice(row);
        }
    }
}

impl Isa {
    fn lanes(self) -> usize {
        match self {
            Isa::Portable => 8,
            Isa::Avx2 => 8,
            Isa::Avx512 => 16,
            Isa::Neon => 4,
        }
    }
}

/// Computes one output plane: `out = clamp(bias + depthwise(input, taps))`, with `taps` the
/// `kh x kw` weights row-major and `clamp = (lo, hi)` (infinite bounds for none). `scratch`
/// is reused across the channels of an op.
///
/// # Panics
/// If a slice is shorter than the geometry says, or the kernel is larger than [`MAX_KERNEL`]
/// (bugs in the caller, not bad input).
#[allow(clippy::too_many_arguments)]
pub fn plane(
    isa: Isa,
    g: &Geometry,
    input: &[f32],
    taps: &[f32],
    bias: f32,
    clamp: (f32, f32),
    out: &mut [f32],
    scratch: &mut Padded,
) {
    let (kh, kw) = g.kernel;
    let (in_h, in_w) = g.input;
    let (out_h, out_w) = g.output;
    assert!(kh <= MAX_KERNEL && kw <= MAX_KERNEL);
    assert!(input.len() >= in_h * in_w && taps.len() >= kh * kw && out.len() >= out_h * out_w);
    if out_w == 0 || in_w == 0 {
        return;
    }
    let lanes = isa.lanes();
    scratch.prepare(g, lanes);
    scratch.fill(g, &input[..in_h * in_w]);
    let row = Row {
        stride: g.stride.1,
        width: scratch.width,
        kernel: g.kernel,
        taps,
        bias,
        clamp,
    };
    for (oy, out_row) in out.chunks_exact_mut(out_w).take(out_h).enumerate() {
        let src = &scratch.buf[oy * g.stride.0 * scratch.width..];
        // The layout guarantees `kh` rows of `width` floats from `src`.
        let src = &src[..(kh - 1) * scratch.width + scratch.width];
        // The vector kernels load one vector (stride 1) or de-interleave two (stride 2).
        let isa = if g.stride.1 <= 2 { isa } else { Isa::Portable };
        // SAFETY: the vector kernels read `lanes`-wide strips of `src` that `Padded::prepare`
        // sized for this geometry and lane count; they are only called where detected.
        match isa {
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => unsafe { x86::avx2_row(&row, src, out_row) },
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => unsafe { x86::avx512_row(&row, src, out_row) },
            #[cfg(target_arch = "aarch64")]
            Isa::Neon => unsafe { arm::neon_row(&row, src, out_row) },
            #[cfg(target_arch = "arm")]
            Isa::Neon => unsafe { armv7::neon_row(&row, src, out_row) },
            _ => portable_row(&row, src, out_row),
        }
    }
}

/// What a row kernel needs besides its input rows and output row.
struct Row<'a> {
    /// Horizontal stride.
    stride: usize,
    /// Padded row length.
    width: usize,
    kernel: (usize, usize),
    taps: &'a [f32],
    bias: f32,
    clamp: (f32, f32),
}

fn portable_row(r: &Row<'_>, src: &[f32], out: &mut [f32]) {
    let (kh, kw) = r.kernel;
    for (ox, o) in out.iter_mut().enumerate() {
        let mut acc = r.bias;
        for ky in 0..kh {
            let line = &src[ky * r.width + ox * r.stride..];
            for (t, x) in r.taps[ky * kw..(ky + 1) * kw].iter().zip(line) {
                acc += t * x;
            }
        }
        *o = acc.max(r.clamp.0).min(r.clamp.1);
    }
}

/// Largest kernel side the kernels take (EfficientNet uses 3 and 5).
pub const MAX_KERNEL: usize = 7;

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::Row;
    use std::arch::x86_64::*;

    /// One output row, 8 outputs per step; the last step goes through a buffer.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn avx2_row(r: &Row<'_>, src: &[f32], out: &mut [f32]) {
        const L: usize = 8;
        let (kh, kw) = r.kernel;
        let mut w = [_mm256_setzero_ps(); super::MAX_KERNEL * super::MAX_KERNEL];
        for (v, &t) in w.iter_mut().zip(&r.taps[..kh * kw]) {
            *v = _mm256_set1_ps(t);
        }
        let (lo, hi) = (_mm256_set1_ps(r.clamp.0), _mm256_set1_ps(r.clamp.1));
        let p = src.as_ptr();
        let mut tail = [0f32; L];
        for ox in (0..out.len()).step_by(L) {
            // One accumulator per kernel row: independent FMA chains the core can overlap (one
            // chain of kh x kw dependent FMAs was latency-bound).
            let mut acc = _mm256_set1_ps(r.bias);
            for ky in 0..kh {
                let mut row_acc = _mm256_setzero_ps();
                let line = p.add(ky * r.width + ox * r.stride);
                for kx in 0..kw {
                    let x = if r.stride == 1 {
                        _mm256_loadu_ps(line.add(kx))
                    } else {
                        // Even elements of 16: [a0 a2 b0 b2 | a4 a6 b4 b6], then the lane order.
                        let a = _mm256_loadu_ps(line.add(kx));
                        let b = _mm256_loadu_ps(line.add(kx + L));
                        let even = _mm256_shuffle_ps::<0b10_00_10_00>(a, b);
                        _mm256_castpd_ps(_mm256_permute4x64_pd::<0b11_01_10_00>(_mm256_castps_pd(
                            even,
                        )))
                    };
                    row_acc = _mm256_fmadd_ps(*w.get_unchecked(ky * kw + kx), x, row_acc);
                }
                acc = _mm256_add_ps(acc, row_acc);
            }
            acc = _mm256_min_ps(_mm256_max_ps(acc, lo), hi);
            if ox + L <= out.len() {
                _mm256_storeu_ps(out.as_mut_ptr().add(ox), acc);
            } else {
                _mm256_storeu_ps(tail.as_mut_ptr(), acc);
                let left = out.len() - ox;
                out[ox..].copy_from_slice(&tail[..left]);
            }
        }
    }

    /// One output row, 16 outputs per step (see [`avx2_row`]).
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn avx512_row(r: &Row<'_>, src: &[f32], out: &mut [f32]) {
        const L: usize = 16;
        let (kh, kw) = r.kernel;
        let mut w = [_mm512_setzero_ps(); super::MAX_KERNEL * super::MAX_KERNEL];
        for (v, &t) in w.iter_mut().zip(&r.taps[..kh * kw]) {
            *v = _mm512_set1_ps(t);
        }
        let (lo, hi) = (_mm512_set1_ps(r.clamp.0), _mm512_set1_ps(r.clamp.1));
        // Even indices of 32 consecutive floats.
        let evens = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
        let p = src.as_ptr();
        for ox in (0..out.len()).step_by(L) {
            let mut acc = _mm512_set1_ps(r.bias);
            for ky in 0..kh {
                let mut row_acc = _mm512_setzero_ps();
                let line = p.add(ky * r.width + ox * r.stride);
                for kx in 0..kw {
                    let x = if r.stride == 1 {
                        _mm512_loadu_ps(line.add(kx))
                    } else {
                        let a = _mm512_loadu_ps(line.add(kx));
                        let b = _mm512_loadu_ps(line.add(kx + L));
                        _mm512_permutex2var_ps(a, evens, b)
                    };
                    row_acc = _mm512_fmadd_ps(*w.get_unchecked(ky * kw + kx), x, row_acc);
                }
                acc = _mm512_add_ps(acc, row_acc);
            }
            acc = _mm512_min_ps(_mm512_max_ps(acc, lo), hi);
            // A masked store writes only the outputs the row has.
            let left = (out.len() - ox).min(L);
            let mask: __mmask16 = if left == L {
                0xFFFF
            } else {
                (1u16 << left) - 1
            };
            _mm512_mask_storeu_ps(out.as_mut_ptr().add(ox), mask, acc);
        }
    }
}

#[cfg(target_arch = "aarch64")]
mod arm {
    use super::Row;
    use std::arch::aarch64::*;

    /// One output row, 4 outputs per step; the last step goes through a buffer.
    #[target_feature(enable = "neon")]
    pub(super) unsafe fn neon_row(r: &Row<'_>, src: &[f32], out: &mut [f32]) {
        const L: usize = 4;
        let (kh, kw) = r.kernel;
        let (lo, hi) = (vdupq_n_f32(r.clamp.0), vdupq_n_f32(r.clamp.1));
        let p = src.as_ptr();
        let mut tail = [0f32; L];
        for ox in (0..out.len()).step_by(L) {
            let mut acc = vdupq_n_f32(r.bias);
            for ky in 0..kh {
                let mut row_acc = vdupq_n_f32(0.0);
                let line = p.add(ky * r.width + ox * r.stride);
                for kx in 0..kw {
                    let x = if r.stride == 1 {
                        vld1q_f32(line.add(kx))
                    } else {
                        // De-interleaving load: .0 holds the even elements of 8.
                        vld2q_f32(line.add(kx)).0
                    };
                    row_acc = vfmaq_n_f32(row_acc, x, *r.taps.get_unchecked(ky * kw + kx));
                }
                acc = vaddq_f32(acc, row_acc);
            }
            acc = vminq_f32(vmaxq_f32(acc, lo), hi);
            if ox + L <= out.len() {
                vst1q_f32(out.as_mut_ptr().add(ox), acc);
            } else {
                vst1q_f32(tail.as_mut_ptr(), acc);
                let left = out.len() - ox;
                out[ox..].copy_from_slice(&tail[..left]);
            }
        }
    }
}

/// 32-bit ARM: the row loop in inline assembly (see `channels_last::armv7` for why), one
/// accumulator per 4 outputs with the taps in order, so the sums round as tract's do.
#[cfg(target_arch = "arm")]
mod armv7 {
    use super::{Row, MAX_KERNEL};
    use std::arch::asm;

    /// One output row, 4 outputs per step; the last step goes through a buffer.
    ///
    /// # Safety
    /// The CPU must have NEON; `src` must hold the padded rows `Padded` laid out for 4 lanes.
    pub(super) unsafe fn neon_row(r: &Row<'_>, src: &[f32], out: &mut [f32]) {
        const L: usize = 4;
        let (kh, kw) = r.kernel;
        assert!(kh <= MAX_KERNEL && kw <= MAX_KERNEL && r.taps.len() >= kh * kw);
        // Byte offset of tap (ky, kx) from the strip's first input, the same for every strip.
        let mut offsets = [0u32; MAX_KERNEL * MAX_KERNEL];
        for ky in 0..kh {
            for kx in 0..kw {
                offsets[ky * kw + kx] = ((ky * r.width + kx) * std::mem::size_of::<f32>()) as u32;
            }
        }
        let params = [r.bias, r.clamp.0, r.clamp.1];
        let mut tail = [0f32; L];
        for ox in (0..out.len()).step_by(L) {
            let first = unsafe { src.as_ptr().add(ox * r.stride) };
            let whole = ox + L <= out.len();
            let dst = if whole {
                unsafe { out.as_mut_ptr().add(ox) }
            } else {
                tail.as_mut_ptr()
            };
            // SAFETY: the padded rows hold every strip's taps (8 floats from each for stride 2);
            // `dst` has room for 4.
            unsafe {
                strip(
                    first,
                    &offsets,
                    r.taps.as_ptr(),
                    kh * kw,
                    &params,
                    dst,
                    r.stride == 2,
                );
            }
            if !whole {
                let left = out.len() - ox;
                out[ox..].copy_from_slice(&tail[..left]);
            }
        }
    }

    /// `dst[0..4] = clamp(bias + sum over taps t of taps[t] * x_t)`, with `x_t` the 4 floats
    /// at `first + offsets[t]` (every other one of 8 when `stride2`); `params` is
    /// `[bias, lo, hi]`. Clobbers are d registers, as in `channels_last::armv7`.
    unsafe fn strip(
        first: *const f32,
        offsets: &[u32; MAX_KERNEL * MAX_KERNEL],
        taps: *const f32,
        n: usize,
        params: &[f32; 3],
        dst: *mut f32,
        stride2: bool,
    ) {
        if stride2 {
            unsafe {
                asm!(
                    ".fpu neon",
                    "vld1.32 {{d0[], d1[]}}, [{params}]!",
                    "1:",
                    "ldr {a}, [{offsets}], #4",
                    "add {a}, {a}, {first}",
                    // Two de-interleaved vectors: q1 gets the even floats of 8.
                    "vld2.32 {{d2-d5}}, [{a}]",
                    "vld1.32 {{d6[0]}}, [{taps}]!",
                    "vmla.f32 q0, q1, d6[0]",
                    "subs {n}, {n}, #1",
                    "bne 1b",
                    "vld1.32 {{d8[], d9[]}}, [{params}]!",
                    "vld1.32 {{d10[], d11[]}}, [{params}]",
                    "vmax.f32 q0, q0, q4",
                    "vmin.f32 q0, q0, q5",
                    "vst1.32 {{d0-d1}}, [{dst}]",
                    first = in(reg) first,
                    dst = in(reg) dst,
                    offsets = inout(reg) offsets.as_ptr() => _,
                    taps = inout(reg) taps => _,
                    n = inout(reg) n => _,
                    params = inout(reg) params.as_ptr() => _,
                    a = out(reg) _,
                    out("d0") _, out("d1") _, out("d2") _, out("d3") _, out("d4") _,
                    out("d5") _, out("d6") _, out("d8") _, out("d9") _, out("d10") _,
                    out("d11") _,
                    options(nostack),
                );
            }
        } else {
            unsafe {
                asm!(
                    ".fpu neon",
                    "vld1.32 {{d0[], d1[]}}, [{params}]!",
                    "1:",
                    "ldr {a}, [{offsets}], #4",
                    "add {a}, {a}, {first}",
                    "vld1.32 {{d2-d3}}, [{a}]",
                    "vld1.32 {{d6[0]}}, [{taps}]!",
                    "vmla.f32 q0, q1, d6[0]",
                    "subs {n}, {n}, #1",
                    "bne 1b",
                    "vld1.32 {{d8[], d9[]}}, [{params}]!",
                    "vld1.32 {{d10[], d11[]}}, [{params}]",
                    "vmax.f32 q0, q0, q4",
                    "vmin.f32 q0, q0, q5",
                    "vst1.32 {{d0-d1}}, [{dst}]",
                    first = in(reg) first,
                    dst = in(reg) dst,
                    offsets = inout(reg) offsets.as_ptr() => _,
                    taps = inout(reg) taps => _,
                    n = inout(reg) n => _,
                    params = inout(reg) params.as_ptr() => _,
                    a = out(reg) _,
                    out("d0") _, out("d1") _, out("d2") _, out("d3") _, out("d6") _,
                    out("d8") _, out("d9") _, out("d10") _, out("d11") _,
                    options(nostack),
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::test_support::{assert_close, noise};

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

    #[test]
    fn every_isa_matches_the_definition_on_odd_shapes() {
        let mut cases = 0;
        for k in [1, 3, 5, 7] {
            // Stride 3 takes the portable loop (the vector ones load for strides 1 and 2).
            for s in [1, 2, 3] {
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
                                let mut scratch = Padded::default();
                                plane(isa, &g, &input, &taps, 0.25, clamp, &mut got, &mut scratch);
                                // Again on the same scratch: the padding must still be zero.
                                plane(isa, &g, &input, &taps, 0.25, clamp, &mut got, &mut scratch);
                                assert_close(&got, &want, || format!("{isa:?} {g:?} {clamp:?}"));
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
        // Every CI machine (x86-64 with AVX2, qemu's cortex-a72/a76, qemu-arm's cortex-a7) has
        // one.
        if cfg!(any(
            target_arch = "x86_64",
            target_arch = "aarch64",
            target_arch = "arm"
        )) {
            assert_ne!(Isa::detect(), Isa::Portable);
        }
    }
}
