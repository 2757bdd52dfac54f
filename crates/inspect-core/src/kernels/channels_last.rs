//! Depthwise convolution of a channels-last image (`H x W x C`), bias and clamp fused.
//!
//! On aarch64 tract lays EfficientNet out channels-last after its first block, so the per-plane
//! kernels of [`super::depthwise`] do not apply there. Here the vectors run across channels: for
//! each output pixel, a block of channels accumulates every tap that falls inside the image
//! (borders just skip taps, no padded copy), with the taps repacked `kh x kw x C` so that a
//! block's weights are contiguous too. The deep layers (8x8 to 32x32 maps, 240 to 1152
//! channels) keep whole vectors busy this way. NEON on aarch64 (intrinsics) and on armv7
//! (inline assembly), AVX2+FMA on x86-64 (AVX-512 CPUs run it too), a portable loop elsewhere.

use super::depthwise::{Geometry, Isa};

/// What every pixel loop needs.
struct Image<'a> {
    g: &'a Geometry,
    channels: usize,
    input: &'a [f32],
    /// `kh x kw x C`: the weights of tap `t` for every channel at `t * C`.
    taps: &'a [f32],
    /// `C` biases.
    bias: &'a [f32],
    clamp: (f32, f32),
}

impl Image<'_> {
    /// The taps of output `(oy, ox)` that fall inside the input: kernel rows and columns, and
    /// the input coordinates of tap `(0, 0)` (which may be outside).
    fn window(
        &self,
        oy: usize,
        ox: usize,
    ) -> (std::ops::Range<usize>, std::ops::Range<usize>, isize, isize) {
        let g = self.g;
        let (top, left) = (oy * g.stride.0, ox * g.stride.1);
        let ky =
            g.pad.0.saturating_sub(top)..g.kernel.0.min((g.input.0 + g.pad.0).saturating_sub(top));
        let kx = g.pad.1.saturating_sub(left)
            ..g.kernel.1.min((g.input.1 + g.pad.1).saturating_sub(left));
        (
            ky,
            kx,
            top as isize - g.pad.0 as isize,
            left as isize - g.pad.1 as isize,
        )
    }

    /// Offsets (in floats) of the input pixel and tap weights of tap `(ky, kx)` for output
    /// `(oy, ox)` whose window starts at `(y0, x0)`: only for taps [`Image::window`] returned.
    fn offsets(&self, y0: isize, x0: isize, ky: usize, kx: usize) -> (usize, usize) {
        let iy = (y0 + ky as isize) as usize;
        let ix = (x0 + kx as isize) as usize;
        (
            (iy * self.g.input.1 + ix) * self.channels,
            (ky * self.g.kernel.1 + kx) * self.channels,
        )
    }
}

/// Computes one channels-last output image: `out[y][x][c] = clamp(bias[c] + sum over taps of
/// input[..][..][c] * taps[ky][kx][c])`, zero padding implied by `g.pad`.
///
/// # Panics
/// If a slice is shorter than the geometry and channel count say (bugs in the caller).
#[allow(clippy::too_many_arguments)]
pub fn image(
    isa: Isa,
    g: &Geometry,
    channels: usize,
    input: &[f32],
    taps: &[f32],
    bias: &[f32],
    clamp: (f32, f32),
    out: &mut [f32],
) {
    let (in_h, in_w) = g.input;
    let (out_h, out_w) = g.output;
    let c = channels;
    assert!(
        input.len() >= in_h * in_w * c,
        "input shorter than H x W x C"
    );
    assert!(
        taps.len() >= g.kernel.0 * g.kernel.1 * c,
        "taps shorter than kh x kw x C"
    );
    assert!(bias.len() >= c, "fewer biases than channels");
    assert!(
        out.len() >= out_h * out_w * c,
        "output shorter than OH x OW x C"
    );
    let img = Image {
        g,
        channels: c,
        input: &input[..in_h * in_w * c],
        taps: &taps[..g.kernel.0 * g.kernel.1 * c],
        bias: &bias[..c],
        clamp,
    };
    // SAFETY: the vector loops only read `Image`'s slices at offsets `window` keeps inside them
    // and write one pixel's `C` outputs; they are only called where the CPU has the feature.
    match isa {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 | Isa::Avx512 => unsafe { x86::avx2_image(&img, out) },
        #[cfg(target_arch = "aarch64")]
        Isa::Neon => unsafe { arm::neon_image(&img, out) },
        #[cfg(target_arch = "arm")]
        Isa::Neon => unsafe { armv7::neon_image(&img, out) },
        _ => portable_image(&img, out),
    }
}

fn portable_image(img: &Image<'_>, out: &mut [f32]) {
    const B: usize = 8;
    let c = img.channels;
    let (out_h, out_w) = img.g.output;
    for oy in 0..out_h {
        for ox in 0..out_w {
            let (ky, kx, y0, x0) = img.window(oy, ox);
            let px = &mut out[(oy * out_w + ox) * c..][..c];
            // Blocks of 8 channels in a fixed-size array, which the compiler vectorises.
            let mut c0 = 0;
            while c0 < c {
                let n = B.min(c - c0);
                let mut acc = [0f32; B];
                acc[..n].copy_from_slice(&img.bias[c0..c0 + n]);
                for ky in ky.clone() {
                    for kx in kx.clone() {
                        let (i, t) = img.offsets(y0, x0, ky, kx);
                        let x = &img.input[i + c0..i + c0 + n];
                        let w = &img.taps[t + c0..t + c0 + n];
                        for ((a, x), w) in acc.iter_mut().zip(x).zip(w) {
                            *a += x * w;
                        }
                    }
                }
                for (o, a) in px[c0..c0 + n].iter_mut().zip(&acc) {
                    *o = a.max(img.clamp.0).min(img.clamp.1);
                }
                c0 += n;
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::Image;
    use std::arch::x86_64::*;

    /// 32 channels per step in four independent FMA chains, then 8, then one at a time.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn avx2_image(img: &Image<'_>, out: &mut [f32]) {
        const L: usize = 8;
        let c = img.channels;
        let (out_h, out_w) = img.g.output;
        let (lo, hi) = (_mm256_set1_ps(img.clamp.0), _mm256_set1_ps(img.clamp.1));
        let (inp, taps, bias) = (img.input.as_ptr(), img.taps.as_ptr(), img.bias.as_ptr());
        for oy in 0..out_h {
            for ox in 0..out_w {
                let (ky, kx, y0, x0) = img.window(oy, ox);
                let px = out.as_mut_ptr().add((oy * out_w + ox) * c);
                let mut c0 = 0;
                while c0 + 4 * L <= c {
                    let mut acc = [_mm256_setzero_ps(); 4];
                    for (j, a) in acc.iter_mut().enumerate() {
                        *a = _mm256_loadu_ps(bias.add(c0 + j * L));
                    }
                    for ky in ky.clone() {
                        for kx in kx.clone() {
                            let (i, t) = img.offsets(y0, x0, ky, kx);
                            for (j, a) in acc.iter_mut().enumerate() {
                                let x = _mm256_loadu_ps(inp.add(i + c0 + j * L));
                                let w = _mm256_loadu_ps(taps.add(t + c0 + j * L));
                                *a = _mm256_fmadd_ps(x, w, *a);
                            }
                        }
                    }
                    for (j, a) in acc.iter().enumerate() {
                        let v = _mm256_min_ps(_mm256_max_ps(*a, lo), hi);
                        _mm256_storeu_ps(px.add(c0 + j * L), v);
                    }
                    c0 += 4 * L;
                }
                while c0 + L <= c {
                    let mut a = _mm256_loadu_ps(bias.add(c0));
                    for ky in ky.clone() {
                        for kx in kx.clone() {
                            let (i, t) = img.offsets(y0, x0, ky, kx);
                            let x = _mm256_loadu_ps(inp.add(i + c0));
                            a = _mm256_fmadd_ps(x, _mm256_loadu_ps(taps.add(t + c0)), a);
                        }
                    }
                    _mm256_storeu_ps(px.add(c0), _mm256_min_ps(_mm256_max_ps(a, lo), hi));
                    c0 += L;
                }
                for ch in c0..c {
                    let mut a = *bias.add(ch);
                    for ky in ky.clone() {
                        for kx in kx.clone() {
                            let (i, t) = img.offsets(y0, x0, ky, kx);
                            a += *inp.add(i + ch) * *taps.add(t + ch);
                        }
                    }
                    *px.add(ch) = a.max(img.clamp.0).min(img.clamp.1);
                }
            }
        }
    }
}

#[cfg(target_arch = "aarch64")]
mod arm {
    use super::Image;
    use std::arch::aarch64::*;

    /// 16 channels per step in four independent FMA chains, then 4, then one at a time.
    #[target_feature(enable = "neon")]
    pub(super) unsafe fn neon_image(img: &Image<'_>, out: &mut [f32]) {
        const L: usize = 4;
        let c = img.channels;
        let (out_h, out_w) = img.g.output;
        let (lo, hi) = (vdupq_n_f32(img.clamp.0), vdupq_n_f32(img.clamp.1));
        let (inp, taps, bias) = (img.input.as_ptr(), img.taps.as_ptr(), img.bias.as_ptr());
        for oy in 0..out_h {
            for ox in 0..out_w {
                let (ky, kx, y0, x0) = img.window(oy, ox);
                let px = out.as_mut_ptr().add((oy * out_w + ox) * c);
                let mut c0 = 0;
                while c0 + 4 * L <= c {
                    let mut acc = [vdupq_n_f32(0.0); 4];
                    for (j, a) in acc.iter_mut().enumerate() {
                        *a = vld1q_f32(bias.add(c0 + j * L));
                    }
                    for ky in ky.clone() {
                        for kx in kx.clone() {
                            let (i, t) = img.offsets(y0, x0, ky, kx);
                            for (j, a) in acc.iter_mut().enumerate() {
                                let x = vld1q_f32(inp.add(i + c0 + j * L));
                                let w = vld1q_f32(taps.add(t + c0 + j * L));
                                *a = vfmaq_f32(*a, x, w);
                            }
                        }
                    }
                    for (j, a) in acc.iter().enumerate() {
                        vst1q_f32(px.add(c0 + j * L), vminq_f32(vmaxq_f32(*a, lo), hi));
                    }
                    c0 += 4 * L;
                }
                while c0 + L <= c {
                    let mut a = vld1q_f32(bias.add(c0));
                    for ky in ky.clone() {
                        for kx in kx.clone() {
                            let (i, t) = img.offsets(y0, x0, ky, kx);
                            a = vfmaq_f32(
                                a,
                                vld1q_f32(inp.add(i + c0)),
                                vld1q_f32(taps.add(t + c0)),
                            );
                        }
                    }
                    vst1q_f32(px.add(c0), vminq_f32(vmaxq_f32(a, lo), hi));
                    c0 += L;
                }
                for ch in c0..c {
                    let mut a = *bias.add(ch);
                    for ky in ky.clone() {
                        for kx in kx.clone() {
                            let (i, t) = img.offsets(y0, x0, ky, kx);
                            a += *inp.add(i + ch) * *taps.add(t + ch);
                        }
                    }
                    *px.add(ch) = a.max(img.clamp.0).min(img.clamp.1);
                }
            }
        }
    }
}

/// 32-bit ARM (Raspberry Pi OS 32-bit on a Pi 2, 3 or 4). Rust's ARMv7 NEON intrinsics and
/// `#[target_feature(enable = "neon")]` are unstable there, and LLVM does not vectorise float
/// loops for ARMv7 NEON by itself (NEON flushes denormals, so it is not IEEE), so the inner
/// loops are inline assembly: 8 channels per step in two accumulators, then 4, then one at a
/// time. Multiply and add round separately (`vmla`), as the portable loop does.
#[cfg(target_arch = "arm")]
mod armv7 {
    use super::super::depthwise::MAX_KERNEL;
    use super::Image;
    use std::arch::asm;

    /// `out[0..8] = clamp(bias[0..8] + sum over the pixel's taps of x * w)`: `pairs` holds `n`
    /// (input, taps) byte offsets from `inp` and `taps`, `clamp` points at `[lo, hi]`.
    unsafe fn block8(
        inp: *const f32,
        taps: *const f32,
        bias: *const f32,
        out: *mut f32,
        pairs: *const u32,
        n: usize,
        clamp: *const f32,
    ) {
        // `.fpu neon` lets the assembler take NEON instructions in a build for the target's
        // default FPU (the CPU has NEON: checked at run time). Clobbers are named as d
        // registers: without NEON enabled the compiler ignores q clobbers and keeps floats in
        // s0-s3 across the block. d8-d15 are callee-saved; declared, the compiler saves them.
        unsafe {
            asm!(
                ".fpu neon",
                "vld1.32 {{d0-d3}}, [{bias}]",
                "cmp {n}, #0",
                "beq 2f",
                "1:",
                "ldr {a}, [{pairs}], #4",
                "add {a}, {a}, {inp}",
                "vld1.32 {{d4-d7}}, [{a}]",
                "ldr {a}, [{pairs}], #4",
                "add {a}, {a}, {taps}",
                "vld1.32 {{d8-d11}}, [{a}]",
                "vmla.f32 q0, q2, q4",
                "vmla.f32 q1, q3, q5",
                "subs {n}, {n}, #1",
                "bne 1b",
                "2:",
                "vld1.32 {{d12[], d13[]}}, [{clamp}]!",
                "vld1.32 {{d14[], d15[]}}, [{clamp}]",
                "vmax.f32 q0, q0, q6",
                "vmax.f32 q1, q1, q6",
                "vmin.f32 q0, q0, q7",
                "vmin.f32 q1, q1, q7",
                "vst1.32 {{d0-d3}}, [{out}]",
                bias = in(reg) bias,
                inp = in(reg) inp,
                taps = in(reg) taps,
                out = in(reg) out,
                pairs = inout(reg) pairs => _,
                n = inout(reg) n => _,
                clamp = inout(reg) clamp => _,
                a = out(reg) _,
                out("d0") _, out("d1") _, out("d2") _, out("d3") _, out("d4") _, out("d5") _,
                out("d6") _, out("d7") _, out("d8") _, out("d9") _, out("d10") _, out("d11") _,
                out("d12") _, out("d13") _, out("d14") _, out("d15") _,
                options(nostack),
            );
        }
    }

    /// [`block8`] for 4 channels.
    unsafe fn block4(
        inp: *const f32,
        taps: *const f32,
        bias: *const f32,
        out: *mut f32,
        pairs: *const u32,
        n: usize,
        clamp: *const f32,
    ) {
        unsafe {
            asm!(
                ".fpu neon",
                "vld1.32 {{d0-d1}}, [{bias}]",
                "cmp {n}, #0",
                "beq 2f",
                "1:",
                "ldr {a}, [{pairs}], #4",
                "add {a}, {a}, {inp}",
                "vld1.32 {{d4-d5}}, [{a}]",
                "ldr {a}, [{pairs}], #4",
                "add {a}, {a}, {taps}",
                "vld1.32 {{d8-d9}}, [{a}]",
                "vmla.f32 q0, q2, q4",
                "subs {n}, {n}, #1",
                "bne 1b",
                "2:",
                "vld1.32 {{d12[], d13[]}}, [{clamp}]!",
                "vld1.32 {{d14[], d15[]}}, [{clamp}]",
                "vmax.f32 q0, q0, q6",
                "vmin.f32 q0, q0, q7",
                "vst1.32 {{d0-d1}}, [{out}]",
                bias = in(reg) bias,
                inp = in(reg) inp,
                taps = in(reg) taps,
                out = in(reg) out,
                pairs = inout(reg) pairs => _,
                n = inout(reg) n => _,
                clamp = inout(reg) clamp => _,
                a = out(reg) _,
                out("d0") _, out("d1") _, out("d4") _, out("d5") _, out("d8") _, out("d9") _,
                out("d12") _, out("d13") _, out("d14") _, out("d15") _,
                options(nostack),
            );
        }
    }

    /// The image, pixel by pixel: the taps inside the image listed once per pixel as byte
    /// offsets, then every channel block runs over that list.
    ///
    /// # Safety
    /// The CPU must have NEON; `img`'s slices and `out` must hold what its geometry says.
    pub(super) unsafe fn neon_image(img: &Image<'_>, out: &mut [f32]) {
        let c = img.channels;
        let (out_h, out_w) = img.g.output;
        assert!(img.g.kernel.0 <= MAX_KERNEL && img.g.kernel.1 <= MAX_KERNEL);
        let mut pairs = [0u32; 2 * MAX_KERNEL * MAX_KERNEL];
        let clamp = [img.clamp.0, img.clamp.1];
        let (inp, taps, bias) = (img.input.as_ptr(), img.taps.as_ptr(), img.bias.as_ptr());
        const F32: usize = std::mem::size_of::<f32>();
        for oy in 0..out_h {
            for ox in 0..out_w {
                let (ky, kx, y0, x0) = img.window(oy, ox);
                let mut n = 0;
                for ky in ky.clone() {
                    for kx in kx.clone() {
                        let (i, t) = img.offsets(y0, x0, ky, kx);
                        // Offsets into slices of a 32-bit address space fit a u32.
                        pairs[2 * n] = (i * F32) as u32;
                        pairs[2 * n + 1] = (t * F32) as u32;
                        n += 1;
                    }
                }
                let px = &mut out[(oy * out_w + ox) * c..][..c];
                let mut c0 = 0;
                // SAFETY: each block reads 8 (4) channels from `c0` at offsets `window` keeps
                // inside the input and taps, and writes 8 (4) of this pixel's `C` outputs.
                while c0 + 8 <= c {
                    unsafe {
                        let (i, t, b) = (inp.add(c0), taps.add(c0), bias.add(c0));
                        block8(
                            i,
                            t,
                            b,
                            px.as_mut_ptr().add(c0),
                            pairs.as_ptr(),
                            n,
                            clamp.as_ptr(),
                        );
                    }
                    c0 += 8;
                }
                while c0 + 4 <= c {
                    unsafe {
                        let (i, t, b) = (inp.add(c0), taps.add(c0), bias.add(c0));
                        block4(
                            i,
                            t,
                            b,
                            px.as_mut_ptr().add(c0),
                            pairs.as_ptr(),
                            n,
                            clamp.as_ptr(),
                        );
                    }
                    c0 += 4;
                }
                for (ch, o) in px.iter_mut().enumerate().skip(c0) {
                    let mut a = img.bias[ch];
                    for pair in pairs[..2 * n].chunks_exact(2) {
                        let (i, t) = (pair[0] as usize / F32, pair[1] as usize / F32);
                        a += img.input[i + ch] * img.taps[t + ch];
                    }
                    *o = a.max(img.clamp.0).min(img.clamp.1);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::depthwise::{plane, Padded};
    use crate::kernels::test_support::{assert_close, noise};

    /// Each channel through the portable per-plane kernel (itself checked against the
    /// definition in `depthwise`), transposed to channels-last.
    fn by_planes(
        g: &Geometry,
        c: usize,
        hwc: &[f32],
        taps: &[f32],
        bias: &[f32],
        clamp: (f32, f32),
    ) -> Vec<f32> {
        let (in_n, out_n) = (g.input.0 * g.input.1, g.output.0 * g.output.1);
        let kk = g.kernel.0 * g.kernel.1;
        let mut out = vec![0.0; out_n * c];
        let mut scratch = Padded::default();
        for ch in 0..c {
            let input: Vec<f32> = (0..in_n).map(|p| hwc[p * c + ch]).collect();
            let plane_taps: Vec<f32> = (0..kk).map(|t| taps[t * c + ch]).collect();
            let mut o = vec![0.0; out_n];
            plane(
                Isa::Portable,
                g,
                &input,
                &plane_taps,
                bias[ch],
                clamp,
                &mut o,
                &mut scratch,
            );
            for (p, v) in o.into_iter().enumerate() {
                out[p * c + ch] = v;
            }
        }
        out
    }

    #[test]
    fn every_isa_matches_the_plane_kernel_on_odd_shapes() {
        let mut cases = 0;
        for k in [1, 3, 5] {
            for s in [1, 2] {
                for (in_h, in_w) in [(1, 1), (2, 3), (5, 5), (8, 8), (7, 13)] {
                    for pad in [0, k / 2] {
                        if in_h + 2 * pad < k || in_w + 2 * pad < k {
                            continue;
                        }
                        // Channel counts around every block size: 4, 8, 16 and 32 lanes.
                        for c in [1, 3, 4, 7, 16, 19, 33, 40] {
                            let out = ((in_h + 2 * pad - k) / s + 1, (in_w + 2 * pad - k) / s + 1);
                            let g = Geometry {
                                kernel: (k, k),
                                stride: (s, s),
                                pad: (pad, pad),
                                input: (in_h, in_w),
                                output: out,
                            };
                            let seed = cases as u32;
                            let input = noise(in_h * in_w * c, seed);
                            let taps = noise(k * k * c, seed + 7);
                            let bias = noise(c, seed + 9);
                            let clamp = if cases % 2 == 0 {
                                (f32::NEG_INFINITY, f32::INFINITY)
                            } else {
                                (0.0, 0.5)
                            };
                            let want = by_planes(&g, c, &input, &taps, &bias, clamp);
                            for isa in Isa::available() {
                                let mut got = vec![f32::NAN; want.len()];
                                image(isa, &g, c, &input, &taps, &bias, clamp, &mut got);
                                assert_close(&got, &want, || format!("{isa:?} {g:?} c {c}"));
                            }
                            cases += 1;
                        }
                    }
                }
            }
        }
        assert!(cases > 200, "{cases} cases");
    }
}
