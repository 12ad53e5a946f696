//! CPU matmul over block-quantized weights (GGUF Q4_0, Q4_1, Q5_0, Q5_1, Q8_0) without dequantizing
//! them: `y = x W^T` with `x` `(T, K)` f32 and `W` `N` rows of `K / 32` blocks.
//!
//! Each row of `x` is quantized once per call to 8 bits per block of 32 (scale
//! `d = max|x| / 127`, and the block's `d * sum(q)` for the weight formats with an offset),
//! so a block's dot product is integer multiply-adds (AVX2 `maddubs`: 32 products in one
//! instruction) scaled by `d_w * d_x`. Q4_1's and Q5_1's `m` and the implicit `-8` / `-16`
//! offsets of Q4_0 / Q5_0 add `m * d_x * sum(q_x)` per block.
//!
//! Tasks own disjoint ranges of `W`'s rows and run on rayon's pool; inside a task a register
//! block of two `W` rows by up to four `x` rows reuses each unpacked weight block for four
//! tokens and each loaded activation block for two rows. Every output element is the same
//! sequence of per-block lane-parallel sums whatever `T` or the thread that computes it, so a
//! token's result does not depend on the rest of the batch.

use super::tiled_gemm::{tiled_gemm, Unpacked};
use half::f16;
use rayon::prelude::*;

/// Elements per block (all supported formats).
pub(crate) const QK: usize = 32;
/// Below this many multiply-adds a call runs on the calling thread.
const PAR_MIN_MACS: usize = 1 << 17;
/// `W` rows per register block.
const R: usize = 2;
/// `x` rows per register block.
const C: usize = 4;

/// The weight block layouts (ggml's `block_q4_0`, `block_q4_1`, `block_q5_0`, `block_q5_1`,
/// `block_q8_0`). Element `j < 16` of a 4- or 5-bit block is the low nibble of `qs[j]`,
/// element `j + 16` its high nibble; a 5-bit block's fifth bits are bit `j` of `qh` (u32 LE).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Format {
    /// `d: f16, qs: [u8; 16]`, value `(nibble - 8) * d`.
    Q4_0,
    /// `d: f16, m: f16, qs: [u8; 16]`, value `nibble * d + m`.
    Q4_1,
    /// `d: f16, qh: [u8; 4], qs: [u8; 16]`, value `(q5 - 16) * d`.
    Q5_0,
    /// `d: f16, m: f16, qh: [u8; 4], qs: [u8; 16]`, value `q5 * d + m`.
    Q5_1,
    /// `d: f16, qs: [i8; 32]`, value `q * d`.
    Q8_0,
}

impl Format {
    pub(crate) fn block_bytes(self) -> usize {
        match self {
            Self::Q4_0 => 18,
            Self::Q4_1 => 20,
            Self::Q5_0 => 22,
            Self::Q5_1 => 24,
            Self::Q8_0 => 34,
        }
    }

    /// The offset of an unsigned 4- or 5-bit block: `m` for Q4_1 / Q5_1 (at byte 2), the
    /// implicit `-8 d` / `-16 d` for Q4_0 / Q5_0; `None` for Q8_0.
    fn offset(self, block: &[u8], d: f32) -> Option<f32> {
        match self {
            Self::Q4_0 => Some(-8.0 * d),
            Self::Q5_0 => Some(-16.0 * d),
            Self::Q4_1 | Self::Q5_1 => Some(f16_at(block, 2)),
            Self::Q8_0 => None,
        }
    }

    /// Bit `j` of a 5-bit block's `qh` (element `j`'s fifth bit), as 16 or 0.
    fn high_bits(self, block: &[u8]) -> u32 {
        match self {
            Self::Q5_0 => u32::from_le_bytes([block[2], block[3], block[4], block[5]]),
            Self::Q5_1 => u32::from_le_bytes([block[4], block[5], block[6], block[7]]),
            _ => 0,
        }
    }

    /// The unsigned value of element `j` of a 4- or 5-bit block.
    fn unsigned_value(self, block: &[u8], j: usize) -> u8 {
        let qs = &block[self.block_bytes() - 16..];
        let nib = if j < 16 {
            qs[j] & 0x0F
        } else {
            qs[j - 16] >> 4
        };
        nib | (((self.high_bits(block) >> j) & 1) as u8) << 4
    }
}

/// `x` quantized row by row: `q` `(T, K)`, and per block its scale `d` and `d * sum(q)`.
pub(crate) struct QuantizedRows {
    q: Vec<i8>,
    d: Vec<f32>,
    s: Vec<f32>,
    blocks: usize,
}

/// One row's input and outputs in [`quantize_rows`]: `(x, q)` and `(d, s)`.
type RowParts<'a> = ((&'a [f32], &'a mut [i8]), (&'a mut [f32], &'a mut [f32]));

/// Quantizes every row of `x` (`t` rows of `k`, `k % 32 == 0`) to 8 bits per block; rows
/// in parallel when there are many.
pub(crate) fn quantize_rows(x: &[f32], t: usize, k: usize) -> QuantizedRows {
    let blocks = k / QK;
    let mut q = vec![0i8; t * k];
    let mut d = vec![0f32; t * blocks];
    let mut s = vec![0f32; t * blocks];
    let avx2 = has_avx2();
    let row = |((xr, qr), (dr, sr)): RowParts| {
        #[cfg(target_arch = "x86_64")]
        if avx2 {
            // SAFETY: AVX2 was detected; the slices hold whole blocks.
            unsafe { simd::quantize_row(xr, qr, dr, sr) };
            return;
        }
        let _ = avx2;
        for ((xb, qb), (db, sb)) in xr
            .chunks_exact(QK)
            .zip(qr.chunks_exact_mut(QK))
            .zip(dr.iter_mut().zip(sr.iter_mut()))
        {
            let amax = xb.iter().fold(0f32, |m, &v| m.max(v.abs()));
            let scale = amax / 127.0;
            let inv = if scale > 0.0 { 1.0 / scale } else { 0.0 };
            let mut sum = 0i32;
            for (o, &v) in qb.iter_mut().zip(xb) {
                let r = (v * inv).round_ties_even().clamp(-127.0, 127.0) as i8;
                *o = r;
                sum += i32::from(r);
            }
            *db = scale;
            *sb = scale * sum as f32;
        }
    };
    if t * k >= PAR_MIN_MACS / 2 && t > 1 {
        x.par_chunks_exact(k)
            .zip(q.par_chunks_exact_mut(k))
            .zip(
                d.par_chunks_exact_mut(blocks)
                    .zip(s.par_chunks_exact_mut(blocks)),
            )
            .for_each(row);
    } else {
        x.chunks_exact(k)
            .zip(q.chunks_exact_mut(k))
            .zip(d.chunks_exact_mut(blocks).zip(s.chunks_exact_mut(blocks)))
            .for_each(row);
    }
    QuantizedRows { q, d, s, blocks }
}

/// `y` `(t, n)` = `x W^T` for `x` `(t, k)` f32 and `w` `n` rows of `k / 32` blocks of
/// `format` (`w.len() == n * k / 32 * format.block_bytes()`, checked by the caller).
pub(crate) fn qmatmul(
    x: &[f32],
    w: &[u8],
    format: Format,
    t: usize,
    n: usize,
    k: usize,
) -> Vec<f32> {
    let xq = quantize_rows(x, t, k);
    let row_bytes = k / QK * format.block_bytes();
    let avx2 = has_avx2();
    // Computed transposed, `(n, t)`, so each task owns a contiguous range of outputs.
    let mut yt = vec![0f32; n * t];
    if t == 0 || n == 0 {
        return yt;
    }
    let threads = rayon::current_num_threads().max(1);
    let per = n.div_ceil(threads * 4).div_ceil(R).max(1) * R;
    let task = |(i, chunk): (usize, &mut [f32])| {
        let row0 = i * per;
        let rows = chunk.len() / t;
        rows_kernel(
            &w[row0 * row_bytes..(row0 + rows) * row_bytes],
            &xq,
            format,
            (t, k),
            avx2,
            chunk,
        );
    };
    if n * t * k < PAR_MIN_MACS || per >= n {
        task((0, &mut yt));
    } else {
        yt.par_chunks_mut(per * t).enumerate().for_each(task);
    }
    if t == 1 {
        return yt;
    }
    let mut y = vec![0f32; t * n];
    for (o, row) in yt.chunks_exact(t).enumerate() {
        for (c, &v) in row.iter().enumerate() {
            y[c * n + o] = v;
        }
    }
    y
}

/// Dequantizes whole rows of blocks (`w`: rows of `k / 32` blocks) into `out` (rows of
/// `k` f32), rows in parallel.
pub(crate) fn dequantize_rows(w: &[u8], format: Format, k: usize, out: &mut [f32]) {
    let row_bytes = k / QK * format.block_bytes();
    let avx2 = has_avx2();
    let row = |(wr, or): (&[u8], &mut [f32])| dequantize_row(wr, format, or, avx2);
    if out.len() >= 1 << 16 {
        w.par_chunks_exact(row_bytes)
            .zip(out.par_chunks_exact_mut(k))
            .for_each(row);
    } else {
        w.chunks_exact(row_bytes)
            .zip(out.chunks_exact_mut(k))
            .for_each(row);
    }
}

/// One row of blocks into `out`'s `32 * blocks` f32.
fn dequantize_row(wr: &[u8], format: Format, or: &mut [f32], avx2: bool) {
    #[cfg(target_arch = "x86_64")]
    if avx2 {
        // SAFETY: AVX2, FMA and F16C were detected; `or` holds the row's values.
        unsafe { simd::dequantize_row(wr, format, or) };
        return;
    }
    let _ = avx2;
    let bb = format.block_bytes();
    for (wb, ob) in wr.chunks_exact(bb).zip(or.chunks_exact_mut(QK)) {
        let d = f16_at(wb, 0);
        match format.offset(wb, d) {
            Some(m) => {
                for (j, o) in ob.iter_mut().enumerate() {
                    *o = f32::from(format.unsigned_value(wb, j)) * d + m;
                }
            }
            None => {
                for (&q, o) in wb[2..].iter().zip(ob) {
                    *o = f32::from(q as i8) * d;
                }
            }
        }
    }
}

/// `y` `(t, n)` = `x W^T` for steps too big for the integer path: every task dequantizes a
/// tile of `tile` rows of `W` into a buffer of its own, small enough to stay in cache, and
/// multiplies it there with single-threaded f32 GEMM into its columns of `y`. The weights
/// are never written out to memory as f32, so the cost over plain f32 GEMM is the unpacking
/// arithmetic alone.
pub(crate) fn dequant_gemm(
    x: &[f32],
    w: &[u8],
    format: Format,
    (t, n, k): (usize, usize, usize),
    tile: usize,
) -> Vec<f32> {
    let row_bytes = k / QK * format.block_bytes();
    let avx2 = has_avx2();
    let unpack = |tile: &[u8], buf: &mut [f32]| -> Result<(), std::convert::Infallible> {
        for (wr, or) in tile.chunks_exact(row_bytes).zip(buf.chunks_exact_mut(k)) {
            dequantize_row(wr, format, or, avx2);
        }
        Ok(())
    };
    match tiled_gemm(
        x,
        (t, n, k),
        tile,
        &Unpacked {
            w,
            row_bytes,
            k,
            unpack,
        },
    ) {
        Ok(y) => y,
        Err(never) => match never {},
    }
}

fn has_avx2() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        static AVX2: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        *AVX2.get_or_init(|| {
            std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
                && std::arch::is_x86_feature_detected!("f16c")
                && std::env::var("LANTERN_SKINNY_ISA").as_deref() != Ok("baseline")
        })
    }
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// `yt[o * t + c] = <w_o, x_c>` for the rows of `w`.
fn rows_kernel(
    w: &[u8],
    xq: &QuantizedRows,
    format: Format,
    (t, k): (usize, usize),
    avx2: bool,
    yt: &mut [f32],
) {
    let row_bytes = k / QK * format.block_bytes();
    let rows = w.len() / row_bytes;
    let mut o = 0;
    while o < rows {
        let r = (rows - o).min(R);
        let mut c = 0;
        while c < t {
            let cols = (t - c).min(C);
            let mut out = [[0f32; C]; R];
            for (ri, out_r) in out.iter_mut().enumerate().take(r) {
                let wr = &w[(o + ri) * row_bytes..(o + ri + 1) * row_bytes];
                if !avx2 || r != R {
                    for (ci, v) in out_r.iter_mut().enumerate().take(cols) {
                        *v = dot_portable(wr, xq, format, c + ci);
                    }
                }
            }
            #[cfg(target_arch = "x86_64")]
            if avx2 && r == R {
                // SAFETY: AVX2, FMA and F16C were detected; `w` holds R rows from `o`, `xq`
                // holds `cols` rows from `c`.
                let wb = &w[o * row_bytes..(o + R) * row_bytes];
                unsafe { simd::block(wb, xq, format, c, cols, &mut out) };
            }
            for (ri, row) in out.iter().enumerate().take(r) {
                for (ci, &v) in row.iter().enumerate().take(cols) {
                    yt[(o + ri) * t + c + ci] = v;
                }
            }
            c += cols;
        }
        o += r;
    }
}

fn f16_at(b: &[u8], i: usize) -> f32 {
    f16::from_le_bytes([b[i], b[i + 1]]).to_f32()
}

/// One weight row against one quantized `x` row, in scalar code with the SIMD path's math.
fn dot_portable(w: &[u8], xq: &QuantizedRows, format: Format, row: usize) -> f32 {
    let bb = format.block_bytes();
    let nb = xq.blocks;
    let xs = &xq.q[row * nb * QK..(row + 1) * nb * QK];
    let mut acc = 0f32;
    for (b, wb) in w.chunks_exact(bb).enumerate().take(nb) {
        let qx = &xs[b * QK..(b + 1) * QK];
        let (dx, sx) = (xq.d[row * nb + b], xq.s[row * nb + b]);
        let dw = f16_at(wb, 0);
        let (dot, offset) = match format.offset(wb, dw) {
            Some(m) => {
                let mut dot = 0i32;
                for (j, &q) in qx.iter().enumerate() {
                    dot += i32::from(format.unsigned_value(wb, j)) * i32::from(q);
                }
                (dot, m * sx)
            }
            None => {
                let mut dot = 0i32;
                for j in 0..QK {
                    dot += i32::from(wb[2 + j] as i8) * i32::from(qx[j]);
                }
                (dot, 0.0)
            }
        };
        acc += dot as f32 * (dw * dx) + offset;
    }
    acc
}

#[cfg(target_arch = "x86_64")]
mod simd {
    use super::{Format, QuantizedRows, C, QK, R};
    use std::arch::x86_64::*;

    /// [`super::quantize_rows`] for one row, eight lanes at a time (the same values: max of
    /// |x|, `d = max / 127`, `q = round_ties_even(x / d)`).
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn quantize_row(x: &[f32], q: &mut [i8], d: &mut [f32], s: &mut [f32]) {
        let sign = _mm256_set1_ps(-0.0);
        for (b, (db, sb)) in d.iter_mut().zip(s.iter_mut()).enumerate() {
            let p = x.as_ptr().add(b * QK);
            let v: [__m256; 4] = std::array::from_fn(|i| _mm256_loadu_ps(p.add(8 * i)));
            let m = v.iter().fold(_mm256_setzero_ps(), |m, &x| {
                _mm256_max_ps(m, _mm256_andnot_ps(sign, x))
            });
            let m4 = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps::<1>(m));
            let m2 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
            let amax = _mm_cvtss_f32(_mm_max_ss(m2, _mm_shuffle_ps::<0b01>(m2, m2)));
            let scale = amax / 127.0;
            let inv = _mm256_set1_ps(if scale > 0.0 { 1.0 / scale } else { 0.0 });
            let i: [__m256i; 4] = std::array::from_fn(|k| {
                _mm256_cvtps_epi32(_mm256_round_ps::<
                    { _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC },
                >(_mm256_mul_ps(v[k], inv)))
            });
            // i32 -> i16 -> i8 (saturating; |values| <= 127), then undo the lane interleave
            // of the two packs.
            let w = _mm256_packs_epi16(
                _mm256_packs_epi32(i[0], i[1]),
                _mm256_packs_epi32(i[2], i[3]),
            );
            let w = _mm256_permutevar8x32_epi32(w, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
            _mm256_storeu_si256(q.as_mut_ptr().add(b * QK) as *mut __m256i, w);
            let sum16 = _mm256_maddubs_epi16(_mm256_set1_epi8(1), w);
            let sum32 = _mm256_madd_epi16(sum16, _mm256_set1_epi16(1));
            let s4 = _mm_add_epi32(
                _mm256_castsi256_si128(sum32),
                _mm256_extracti128_si256::<1>(sum32),
            );
            let s2 = _mm_add_epi32(s4, _mm_shuffle_epi32::<0b1110>(s4));
            let total = _mm_cvtsi128_si32(_mm_add_epi32(s2, _mm_shuffle_epi32::<0b01>(s2)));
            *db = scale;
            *sb = scale * total as f32;
        }
    }

    /// [`super::dequantize_rows`] for one row, eight values at a time (`q * d + m` with one
    /// rounding, as the portable code's `mul_add`-free form may differ in the last bit).
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn dequantize_row(w: &[u8], format: Format, out: &mut [f32]) {
        let bb = format.block_bytes();
        for (b, o) in out.chunks_exact_mut(QK).enumerate() {
            let p = w.as_ptr().add(b * bb);
            let d = f16_at(p);
            let op = o.as_mut_ptr();
            match format {
                Format::Q4_0 | Format::Q4_1 | Format::Q5_0 | Format::Q5_1 => {
                    let m = match format {
                        Format::Q4_1 | Format::Q5_1 => f16_at(p.add(2)),
                        Format::Q5_0 => -16.0 * d,
                        _ => -8.0 * d,
                    };
                    let (dv, mv) = (_mm256_set1_ps(d), _mm256_set1_ps(m));
                    let q = unsigned_values(p, format);
                    let lo = _mm256_castsi256_si128(q);
                    let hi = _mm256_extracti128_si256::<1>(q);
                    for (i, half) in [lo, hi].into_iter().enumerate() {
                        let a = _mm256_cvtepu8_epi32(half);
                        let b8 = _mm256_cvtepu8_epi32(_mm_srli_si128::<8>(half));
                        _mm256_storeu_ps(
                            op.add(16 * i),
                            _mm256_fmadd_ps(_mm256_cvtepi32_ps(a), dv, mv),
                        );
                        _mm256_storeu_ps(
                            op.add(16 * i + 8),
                            _mm256_fmadd_ps(_mm256_cvtepi32_ps(b8), dv, mv),
                        );
                    }
                }
                Format::Q8_0 => {
                    let dv = _mm256_set1_ps(d);
                    for i in 0..4 {
                        let v = _mm_loadl_epi64(p.add(2 + 8 * i) as *const __m128i);
                        let f = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(v));
                        _mm256_storeu_ps(op.add(8 * i), _mm256_mul_ps(f, dv));
                    }
                }
            }
        }
    }

    #[inline(always)]
    unsafe fn f16_at(p: *const u8) -> f32 {
        let bits = i32::from(u16::from_le_bytes([*p, *p.add(1)]));
        _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(bits)))
    }

    /// The 32 values of a 4-bit block as unsigned bytes, element order (low nibbles are
    /// elements 0..16, high nibbles 16..32).
    #[inline(always)]
    unsafe fn nibbles(p: *const u8) -> __m256i {
        let lo = _mm_loadu_si128(p as *const __m128i);
        let hi = _mm_srli_epi16::<4>(lo);
        let both = _mm256_set_m128i(hi, lo);
        _mm256_and_si256(both, _mm256_set1_epi8(0x0F))
    }

    /// The 32 unsigned values (0..16 or 0..32) of the 4- or 5-bit block at `p`, element
    /// order: the nibbles, plus 16 where bit `j` of a 5-bit block's `qh` is set.
    #[inline(always)]
    unsafe fn unsigned_values(p: *const u8, format: Format) -> __m256i {
        let q = nibbles(p.add(format.block_bytes() - 16));
        let qh = match format {
            Format::Q5_0 => p.add(2),
            Format::Q5_1 => p.add(4),
            _ => return q,
        };
        let bits = i32::from_le_bytes([*qh, *qh.add(1), *qh.add(2), *qh.add(3)]);
        // Byte j takes byte j / 8 of qh, keeps bit j % 8, and becomes 0x10 where it is set.
        let spread = _mm256_shuffle_epi8(
            _mm256_set1_epi32(bits),
            _mm256_setr_epi8(
                0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3,
                3, 3, 3, 3,
            ),
        );
        let mask = _mm256_set1_epi64x(0x8040_2010_0804_0201u64 as i64);
        let set = _mm256_cmpeq_epi8(_mm256_and_si256(spread, mask), mask);
        _mm256_or_si256(q, _mm256_and_si256(set, _mm256_set1_epi8(0x10)))
    }

    /// `out[r][c] = <w_r, x_(c0 + c)>` for the R rows of `w` and `cols` rows of `xq`: per
    /// block, each (row, token) pair's eight lanes of integer sums are converted and
    /// accumulated with the scale `d_w * d_x`; the lanes are added up at the end. A token's
    /// arithmetic is the same whatever `cols` or its place in the tile.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn block(
        w: &[u8],
        xq: &QuantizedRows,
        format: Format,
        c0: usize,
        cols: usize,
        out: &mut [[f32; C]; R],
    ) {
        // A constant token count, so the accumulators stay in registers.
        match (format, cols) {
            (Format::Q4_0, 1) => block_n::<1, 0>(w, xq, c0, out),
            (Format::Q4_0, 2) => block_n::<2, 0>(w, xq, c0, out),
            (Format::Q4_0, 3) => block_n::<3, 0>(w, xq, c0, out),
            (Format::Q4_0, _) => block_n::<4, 0>(w, xq, c0, out),
            (Format::Q4_1, 1) => block_n::<1, 1>(w, xq, c0, out),
            (Format::Q4_1, 2) => block_n::<2, 1>(w, xq, c0, out),
            (Format::Q4_1, 3) => block_n::<3, 1>(w, xq, c0, out),
            (Format::Q4_1, _) => block_n::<4, 1>(w, xq, c0, out),
            (Format::Q8_0, 1) => block_n::<1, 2>(w, xq, c0, out),
            (Format::Q8_0, 2) => block_n::<2, 2>(w, xq, c0, out),
            (Format::Q8_0, 3) => block_n::<3, 2>(w, xq, c0, out),
            (Format::Q8_0, _) => block_n::<4, 2>(w, xq, c0, out),
            (Format::Q5_0, 1) => block_n::<1, 3>(w, xq, c0, out),
            (Format::Q5_0, 2) => block_n::<2, 3>(w, xq, c0, out),
            (Format::Q5_0, 3) => block_n::<3, 3>(w, xq, c0, out),
            (Format::Q5_0, _) => block_n::<4, 3>(w, xq, c0, out),
            (Format::Q5_1, 1) => block_n::<1, 4>(w, xq, c0, out),
            (Format::Q5_1, 2) => block_n::<2, 4>(w, xq, c0, out),
            (Format::Q5_1, 3) => block_n::<3, 4>(w, xq, c0, out),
            (Format::Q5_1, _) => block_n::<4, 4>(w, xq, c0, out),
        }
    }

    /// [`block`] for `COLS` tokens of format `F` (0: Q4_0, 1: Q4_1, 2: Q8_0, 3: Q5_0, 4: Q5_1).
    // Index loops over the constant-size register arrays keep them in registers.
    #[allow(clippy::needless_range_loop)]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn block_n<const COLS: usize, const F: u8>(
        w: &[u8],
        xq: &QuantizedRows,
        c0: usize,
        out: &mut [[f32; C]; R],
    ) {
        let (format, cols) = (
            match F {
                0 => Format::Q4_0,
                1 => Format::Q4_1,
                3 => Format::Q5_0,
                4 => Format::Q5_1,
                _ => Format::Q8_0,
            },
            COLS,
        );
        let nb = xq.blocks;
        let bb = format.block_bytes();
        let row_bytes = nb * bb;
        let mut acc = [[_mm256_setzero_ps(); COLS]; R];
        // The offset terms `m_w * d_x * sum(q_x)` of the COLS tokens, one lane each.
        let mut offs = [_mm_setzero_ps(); R];
        let wp = w.as_ptr();
        let xp = xq.q.as_ptr().add(c0 * nb * QK);
        let dx = xq.d.as_ptr().add(c0 * nb);
        let sx = xq.s.as_ptr().add(c0 * nb);
        let ones = _mm256_set1_epi16(1);
        let s_at = |c: usize, b: usize| if c < COLS { *sx.add(c * nb + b) } else { 0.0 };
        for b in 0..nb {
            let mut wv = [_mm256_setzero_si256(); R];
            let mut dw = [_mm256_setzero_ps(); R];
            let mut mw = [_mm_setzero_ps(); R];
            for r in 0..R {
                let p = wp.add(r * row_bytes + b * bb);
                match format {
                    Format::Q4_0 | Format::Q5_0 => {
                        let d = f16_at(p);
                        wv[r] = unsigned_values(p, format);
                        dw[r] = _mm256_set1_ps(d);
                        let k = if F == 0 { -8.0 } else { -16.0 };
                        mw[r] = _mm_set1_ps(k * d);
                    }
                    Format::Q4_1 | Format::Q5_1 => {
                        // d and m side by side: one conversion.
                        let dm = _mm_cvtph_ps(_mm_cvtsi32_si128(i32::from_le_bytes([
                            *p,
                            *p.add(1),
                            *p.add(2),
                            *p.add(3),
                        ])));
                        wv[r] = unsigned_values(p, format);
                        dw[r] = _mm256_broadcastss_ps(dm);
                        mw[r] = _mm_shuffle_ps::<0b0101_0101>(dm, dm);
                    }
                    Format::Q8_0 => {
                        let v = _mm256_loadu_si256(p.add(2) as *const __m256i);
                        // |w|; x takes w's sign below.
                        wv[r] = v;
                        dw[r] = _mm256_set1_ps(f16_at(p));
                    }
                }
            }
            let aw: [__m256i; R] = std::array::from_fn(|r| _mm256_sign_epi8(wv[r], wv[r]));
            if F != 2 {
                let sv = _mm_set_ps(s_at(3, b), s_at(2, b), s_at(1, b), s_at(0, b));
                for r in 0..R {
                    offs[r] = _mm_fmadd_ps(mw[r], sv, offs[r]);
                }
            }
            for c in 0..cols {
                let xv = _mm256_loadu_si256(xp.add((c * nb + b) * QK) as *const __m256i);
                let d = _mm256_set1_ps(*dx.add(c * nb + b));
                for r in 0..R {
                    let prod = match format {
                        Format::Q8_0 => _mm256_maddubs_epi16(aw[r], _mm256_sign_epi8(xv, wv[r])),
                        // Unsigned weights below 32: pairs of products fit in i16.
                        _ => _mm256_maddubs_epi16(wv[r], xv),
                    };
                    let v = _mm256_cvtepi32_ps(_mm256_madd_epi16(prod, ones));
                    acc[r][c] = _mm256_fmadd_ps(v, _mm256_mul_ps(dw[r], d), acc[r][c]);
                }
            }
        }
        let mut off = [[0f32; 4]; R];
        for r in 0..R {
            _mm_storeu_ps(off[r].as_mut_ptr(), offs[r]);
        }
        for r in 0..R {
            for c in 0..cols {
                let q = _mm_add_ps(
                    _mm256_castps256_ps128(acc[r][c]),
                    _mm256_extractf128_ps::<1>(acc[r][c]),
                );
                let h = _mm_add_ps(q, _mm_movehl_ps(q, q));
                out[r][c] = _mm_cvtss_f32(_mm_add_ss(h, _mm_shuffle_ps::<0b01>(h, h))) + off[r][c];
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// Exact dequantized weights of a row of blocks.
    fn dequantize(w: &[u8], format: Format) -> Vec<f32> {
        let bb = format.block_bytes();
        let mut out = Vec::new();
        for wb in w.chunks_exact(bb) {
            let d = f16_at(wb, 0);
            match format {
                Format::Q4_0 | Format::Q4_1 => {
                    let m = if format == Format::Q4_1 {
                        f16_at(wb, 2)
                    } else {
                        -8.0 * d
                    };
                    let qs = &wb[bb - 16..];
                    let lo: Vec<f32> = qs.iter().map(|&q| (q & 15) as f32 * d + m).collect();
                    let hi: Vec<f32> = qs.iter().map(|&q| (q >> 4) as f32 * d + m).collect();
                    out.extend(lo);
                    out.extend(hi);
                }
                Format::Q5_0 | Format::Q5_1 => {
                    // ggml: d, (m), qh (u32 LE: bit j = element j's fifth bit), qs.
                    let (m, h0) = if format == Format::Q5_1 {
                        (f16_at(wb, 2), 4)
                    } else {
                        (-16.0 * d, 2)
                    };
                    let qh = u32::from_le_bytes([wb[h0], wb[h0 + 1], wb[h0 + 2], wb[h0 + 3]]);
                    let qs = &wb[h0 + 4..];
                    for j in 0..32 {
                        let nib = if j < 16 { qs[j] & 15 } else { qs[j - 16] >> 4 };
                        let q = u32::from(nib) + 16 * ((qh >> j) & 1);
                        out.push(q as f32 * d + m);
                    }
                }
                Format::Q8_0 => out.extend(wb[2..].iter().map(|&q| (q as i8) as f32 * d)),
            }
        }
        out
    }

    const ALL: [Format; 5] = [
        Format::Q4_0,
        Format::Q4_1,
        Format::Q5_0,
        Format::Q5_1,
        Format::Q8_0,
    ];

    fn lcg(seed: u64) -> impl FnMut() -> u64 {
        let mut s = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
        move || {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            s >> 33
        }
    }

    /// Random blocks of `format` (scales in [0.005, 0.02), offsets in [-0.1, 0.1)).
    fn random_blocks(n_blocks: usize, format: Format, seed: u64) -> Vec<u8> {
        let mut rnd = lcg(seed);
        let mut w = Vec::new();
        for _ in 0..n_blocks {
            let d = 0.005 + (rnd() % 1000) as f32 * 1.5e-5;
            w.extend_from_slice(&f16::from_f32(d).to_le_bytes());
            match format {
                Format::Q4_0 => w.extend((0..16).map(|_| (rnd() & 0xFF) as u8)),
                Format::Q4_1 => {
                    let m = ((rnd() % 2000) as f32 - 1000.0) * 1e-4;
                    w.extend_from_slice(&f16::from_f32(m).to_le_bytes());
                    w.extend((0..16).map(|_| (rnd() & 0xFF) as u8));
                }
                Format::Q5_0 => w.extend((0..20).map(|_| (rnd() & 0xFF) as u8)),
                Format::Q5_1 => {
                    let m = ((rnd() % 2000) as f32 - 1000.0) * 1e-4;
                    w.extend_from_slice(&f16::from_f32(m).to_le_bytes());
                    w.extend((0..20).map(|_| (rnd() & 0xFF) as u8));
                }
                Format::Q8_0 => w.extend((0..32).map(|_| (rnd() & 0xFF) as u8)),
            }
        }
        w
    }

    fn random_x(len: usize, seed: u64) -> Vec<f32> {
        let mut rnd = lcg(seed);
        (0..len)
            .map(|_| (rnd() % 20001) as f32 / 10000.0 - 1.0)
            .collect()
    }

    /// Against f64 products of the dequantized weights and the unquantized activations:
    /// within the 8-bit activation rounding (|err| <= sum |w| * d_x / 2 per block), for
    /// every format, edge shapes (one row, an odd row out of the 2-row blocks, token counts
    /// across the 4-token blocks) and the threaded path.
    #[test]
    fn matches_dequantized_reference() {
        for format in ALL {
            for &(t, k, n) in &[
                (1, 32, 1),
                (1, 576, 7),
                (3, 64, 5),
                (5, 576, 96),
                (9, 1536, 130),
                (32, 576, 64),
            ] {
                let w = random_blocks(n * k / QK, format, (t * 31 + n) as u64);
                let x = random_x(t * k, k as u64);
                let y = qmatmul(&x, &w, format, t, n, k);
                let rb = k / QK * format.block_bytes();
                for c in 0..t {
                    let xr = &x[c * k..(c + 1) * k];
                    for o in 0..n {
                        let wd = dequantize(&w[o * rb..(o + 1) * rb], format);
                        let exact: f64 =
                            wd.iter().zip(xr).map(|(&a, &b)| a as f64 * b as f64).sum();
                        let mut bound = 1e-4;
                        for (wb, xb) in wd.chunks(QK).zip(xr.chunks(QK)) {
                            let dx = xb.iter().fold(0f32, |m, v| m.max(v.abs())) / 127.0;
                            bound +=
                                wb.iter().map(|v| v.abs() as f64).sum::<f64>() * dx as f64 * 0.5;
                        }
                        let got = y[c * n + o] as f64;
                        assert!(
                            (got - exact).abs() <= bound,
                            "{format:?} ({t},{k},{n}) y[{c}][{o}] = {got}, exact {exact}, bound {bound}"
                        );
                    }
                }
            }
        }
    }

    /// Dequantizing rows (the GEMM path's weights) gives the blocks' values, for every
    /// format, on the serial and the parallel path.
    #[test]
    fn dequantized_rows_are_the_block_values() {
        for format in ALL {
            for &(rows, k) in &[(3, 64), (700, 128)] {
                let w = random_blocks(rows * k / QK, format, rows as u64);
                let mut out = vec![0f32; rows * k];
                dequantize_rows(&w, format, k, &mut out);
                let want = dequantize(&w, format);
                for (i, (&g, &e)) in out.iter().zip(&want).enumerate() {
                    assert!(
                        (g - e).abs() <= 1e-6 * (1.0 + e.abs()),
                        "{format:?} [{i}] {g} vs {e}"
                    );
                }
            }
        }
    }

    /// The AVX2 quantization of activations gives the portable code's values exactly.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn simd_quantization_matches_scalar() {
        if !has_avx2() {
            return;
        }
        let k = 576;
        let mut x = random_x(3 * k, 11);
        x[5] = 0.0;
        x[40..72].iter_mut().for_each(|v| *v = 0.0); // an all-zero block
        x[100] = 2.5; // an outlier
        let got = quantize_rows(&x, 3, k);
        for (r, xr) in x.chunks_exact(k).enumerate() {
            for (b, xb) in xr.chunks_exact(QK).enumerate() {
                let amax = xb.iter().fold(0f32, |m, &v| m.max(v.abs()));
                let d = amax / 127.0;
                let inv = if d > 0.0 { 1.0 / d } else { 0.0 };
                let q: Vec<i8> = xb
                    .iter()
                    .map(|&v| (v * inv).round_ties_even() as i8)
                    .collect();
                let sum: i32 = q.iter().map(|&v| i32::from(v)).sum();
                let i = r * (k / QK) + b;
                assert_eq!(&got.q[i * QK..(i + 1) * QK], &q[..], "row {r} block {b}");
                assert_eq!(
                    (got.d[i], got.s[i]),
                    (d, d * sum as f32),
                    "row {r} block {b}"
                );
            }
        }
    }

    /// A token's output does not depend on the other tokens of the batch, and the SIMD and
    /// portable paths agree to rounding.
    #[test]
    fn batch_invariant_and_paths_agree() {
        let (k, n) = (576, 70);
        for format in ALL {
            let w = random_blocks(n * k / QK, format, 7);
            let x = random_x(7 * k, 3);
            let all = qmatmul(&x, &w, format, 7, n, k);
            for c in 0..7 {
                let one = qmatmul(&x[c * k..(c + 1) * k], &w, format, 1, n, k);
                assert_eq!(&all[c * n..(c + 1) * n], &one[..], "{format:?} token {c}");
            }
            let xq = quantize_rows(&x, 7, k);
            let rb = k / QK * format.block_bytes();
            for c in 0..7 {
                for o in 0..n {
                    let p = dot_portable(&w[o * rb..(o + 1) * rb], &xq, format, c);
                    let s = all[c * n + o];
                    assert!(
                        (p - s).abs() <= 1e-4 * (1.0 + p.abs()),
                        "{format:?} {p} vs {s}"
                    );
                }
            }
        }
    }
}
