//! CPU RMSNorm (optionally fused with the residual add), rotary embedding in place and
//! SiLU-and-mul: f32 math per row, rows in parallel with rayon when the work is large.

use candle_core::backend::BackendStorage;
use candle_core::{bail, CpuStorage, Layout, Result};
use half::{bf16, f16};
use rayon::prelude::*;

use super::{contiguous_window, silu, Elem};

/// Below this many elements SiLU-and-mul runs on the calling thread.
const PAR_MIN_ELEMS: usize = 1 << 15;

/// Below this many elements the norms and the rotary embedding run on the calling thread:
/// they cost well under a nanosecond per element, so handing rows to rayon's workers (tens of
/// microseconds to wake them and to wait for them) only pays off for a few hundred rows of
/// 576 (measured on 2 AMD EPYC cores: 76 rows 19 us alone against 35 us on two threads, 257
/// rows 55 us against 47 us).
const NORM_PAR_MIN_ELEMS: usize = 1 << 17;

/// Rows per rayon task at least (a row of a few hundred values is ~100 ns of work).
const PAR_MIN_ROWS: usize = 16;

/// Inputs `(x, residual)` and outputs `(normed, new residual)` of one row.
type RowPair<'a, T> = ((&'a [T], &'a [T]), (&'a mut [T], &'a mut [T]));

/// `rows` of `hidden` values: normed (and, with a residual, followed by the new residual).
pub(crate) fn rms_norm_cpu(
    (x, x_l): (&CpuStorage, &Layout),
    residual: Option<(&CpuStorage, &Layout)>,
    (w, w_l): (&CpuStorage, &Layout),
    eps: f32,
) -> Result<CpuStorage> {
    match x {
        CpuStorage::F32(_) => rms_run::<f32>((x, x_l), residual, (w, w_l), eps),
        CpuStorage::F16(_) => rms_run::<f16>((x, x_l), residual, (w, w_l), eps),
        CpuStorage::BF16(_) => rms_run::<bf16>((x, x_l), residual, (w, w_l), eps),
        other => bail!(
            "rms_norm: dtype {:?} is not supported (f32, f16, bf16)",
            other.dtype()
        ),
    }
}

fn rms_run<T: Elem>(
    (x, x_l): (&CpuStorage, &Layout),
    residual: Option<(&CpuStorage, &Layout)>,
    (w, w_l): (&CpuStorage, &Layout),
    eps: f32,
) -> Result<CpuStorage> {
    let x = contiguous_window(x.as_slice::<T>()?, x_l, "rms_norm: x")?;
    let w = contiguous_window(w.as_slice::<T>()?, w_l, "rms_norm: weight")?;
    let hidden = w.len();
    if hidden == 0 {
        return Ok(T::to_cpu_storage_owned(Vec::new()));
    }
    if x.len() % hidden != 0 {
        bail!(
            "rms_norm: x has {} elements, not a multiple of hidden = {hidden}",
            x.len()
        );
    }
    let w: Vec<f32> = w.iter().map(|v| v.to_f32()).collect();
    let n = x.len();
    let simd = simd_available();
    // `h` normed into `out`; `tmp` holds the f32 result for narrower types.
    let norm_row = |h: &[f32], out: &mut [T], tmp: &mut Vec<f32>| {
        let inv = 1.0 / (sum_squares(h, simd) / hidden as f32 + eps).sqrt();
        match T::as_f32_mut(out) {
            Some(o) => scale_mul(h, inv, &w, o, simd),
            None => {
                tmp.resize(hidden, 0.0);
                scale_mul(h, inv, &w, tmp, simd);
                for (o, &v) in out.iter_mut().zip(tmp.iter()) {
                    *o = T::from_f32(v);
                }
            }
        }
    };
    let par = n >= NORM_PAR_MIN_ELEMS;
    match residual {
        None => {
            let mut out = vec![T::from_f32(0.0); n];
            let row = |(h_buf, tmp): &mut (Vec<f32>, Vec<f32>), (xr, or): (&[T], &mut [T])| {
                h_buf.resize(hidden, 0.0);
                norm_row(T::row_f32(xr, h_buf), or, tmp);
            };
            if par {
                x.par_chunks(hidden)
                    .zip(out.par_chunks_mut(hidden))
                    .with_min_len(PAR_MIN_ROWS)
                    .for_each_init(Default::default, row);
            } else {
                let mut scratch = Default::default();
                x.chunks(hidden)
                    .zip(out.chunks_mut(hidden))
                    .for_each(|r| row(&mut scratch, r));
            }
            Ok(T::to_cpu_storage_owned(out))
        }
        Some((r, r_l)) => {
            let r = contiguous_window(r.as_slice::<T>()?, r_l, "fused_add_rms_norm: residual")?;
            if r.len() != n {
                bail!(
                    "fused_add_rms_norm: residual has {} elements but x has {n}",
                    r.len()
                );
            }
            let mut out = vec![T::from_f32(0.0); 2 * n];
            let (normed, new_res) = out.split_at_mut(n);
            let row = |(h, tmp): &mut (Vec<f32>, Vec<f32>),
                       ((xr, rr), (or, hr)): RowPair<'_, T>| {
                if let Some(hr) = T::as_f32_mut(hr) {
                    // f32 (so `row_f32` borrows the rows): the sum is the new residual, normed
                    // from where it was written.
                    add_rows(T::row_f32(xr, &mut []), T::row_f32(rr, &mut []), hr, simd);
                    norm_row(hr, or, tmp);
                    return;
                }
                // Narrower types: the residual is rounded to T, and normed as rounded.
                h.clear();
                for ((&a, &b), hs) in xr.iter().zip(rr).zip(hr.iter_mut()) {
                    let s = T::from_f32(a.to_f32() + b.to_f32());
                    *hs = s;
                    h.push(s.to_f32());
                }
                norm_row(h, or, tmp);
            };
            if par {
                x.par_chunks(hidden)
                    .zip(r.par_chunks(hidden))
                    .zip(
                        normed
                            .par_chunks_mut(hidden)
                            .zip(new_res.par_chunks_mut(hidden)),
                    )
                    .with_min_len(PAR_MIN_ROWS)
                    .for_each_init(Default::default, row);
            } else {
                let mut scratch = Default::default();
                x.chunks(hidden)
                    .zip(r.chunks(hidden))
                    .zip(normed.chunks_mut(hidden).zip(new_res.chunks_mut(hidden)))
                    .for_each(|r| row(&mut scratch, r));
            }
            Ok(T::to_cpu_storage_owned(out))
        }
    }
}

/// Whether the AVX2 forms of the row loops run on this CPU.
fn simd_available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        super::avx2::available()
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// `sum(h[i]^2)` in eight lanes (so the loop vectorises; a plain f32 sum is sequential),
/// then the lanes in order and the tail.
fn sum_squares(h: &[f32], simd: bool) -> f32 {
    let mut lanes = [0f32; 8];
    let whole = h.len() / 8 * 8;
    #[cfg(target_arch = "x86_64")]
    if simd {
        // SAFETY: `simd` is only true where AVX2 and FMA were detected.
        lanes = unsafe { super::avx2::sum_squares_lanes(h) };
    }
    if !simd {
        for c in h[..whole].chunks_exact(8) {
            for (l, &v) in lanes.iter_mut().zip(c) {
                *l += v * v;
            }
        }
    }
    let tail: f32 = h[whole..].iter().map(|v| v * v).sum();
    lanes.iter().sum::<f32>() + tail
}

/// `o[i] = h[i] * inv * w[i]`.
fn scale_mul(h: &[f32], inv: f32, w: &[f32], o: &mut [f32], simd: bool) {
    #[cfg(target_arch = "x86_64")]
    if simd {
        // SAFETY: AVX2 and FMA were detected; `h` and `w` are as long as `o` (one row).
        unsafe { super::avx2::scale_mul(h, inv, w, o) };
        return;
    }
    let _ = simd;
    for ((o, &v), &g) in o.iter_mut().zip(h).zip(w) {
        *o = v * inv * g;
    }
}

/// `s[i] = a[i] + b[i]`.
fn add_rows(a: &[f32], b: &[f32], s: &mut [f32], simd: bool) {
    debug_assert!(a.len() == s.len() && b.len() == s.len());
    #[cfg(target_arch = "x86_64")]
    if simd {
        // SAFETY: AVX2 and FMA were detected; the rows are as long as `s`.
        unsafe { super::avx2::add(a, b, s) };
        return;
    }
    let _ = simd;
    for ((o, &x), &y) in s.iter_mut().zip(a).zip(b) {
        *o = x + y;
    }
}

/// Rotates `x` `(tokens, heads, head_dim)` (strides `(s0, s1, 1)`) in place.
pub(crate) fn rope_cpu(
    x: &mut CpuStorage,
    x_l: &Layout,
    (cos, cos_l): (&CpuStorage, &Layout),
    (sin, sin_l): (&CpuStorage, &Layout),
    positions: &[u32],
) -> Result<()> {
    match x {
        CpuStorage::F32(d) => rope_run::<f32>(d, x_l, (cos, cos_l), (sin, sin_l), positions),
        CpuStorage::F16(d) => rope_run::<f16>(d, x_l, (cos, cos_l), (sin, sin_l), positions),
        CpuStorage::BF16(d) => rope_run::<bf16>(d, x_l, (cos, cos_l), (sin, sin_l), positions),
        other => bail!(
            "rotary_embedding_inplace: dtype {:?} is not supported (f32, f16, bf16)",
            other.dtype()
        ),
    }
}

fn rope_run<T: Elem>(
    data: &mut [T],
    x_l: &Layout,
    (cos, cos_l): (&CpuStorage, &Layout),
    (sin, sin_l): (&CpuStorage, &Layout),
    positions: &[u32],
) -> Result<()> {
    const OP: &str = "rotary_embedding_inplace";
    let cos = contiguous_window(cos.as_slice::<T>()?, cos_l, "rotary_embedding_inplace: cos")?;
    let sin = contiguous_window(sin.as_slice::<T>()?, sin_l, "rotary_embedding_inplace: sin")?;
    let (&[tokens, heads, head_dim], &[s0, s1, _]) = (x_l.dims(), x_l.stride()) else {
        bail!("{OP}: x must be 3-D, got shape {:?}", x_l.shape());
    };
    let half = head_dim / 2;
    let max_pos = cos.len().checked_div(half).unwrap_or(0);
    if positions.len() != tokens {
        bail!("{OP}: {} positions for {tokens} tokens", positions.len());
    }
    if let Some((t, &p)) = positions
        .iter()
        .enumerate()
        .find(|(_, &p)| p as usize >= max_pos)
    {
        bail!("{OP}: positions[{t}] = {p} is out of range for a table of {max_pos} positions");
    }
    if tokens == 0 || heads == 0 || half == 0 {
        return Ok(());
    }
    let start = x_l.start_offset();
    let last = start + (tokens - 1) * s0 + (heads - 1) * s1 + head_dim;
    if last > data.len() {
        bail!(
            "{OP}: x layout needs {last} elements but its storage has {}",
            data.len()
        );
    }
    let rotate = |row: &mut [T], pos: usize| {
        let (c, s) = (
            &cos[pos * half..(pos + 1) * half],
            &sin[pos * half..(pos + 1) * half],
        );
        for i in 0..half {
            let (a, b) = (row[i].to_f32(), row[i + half].to_f32());
            let (cv, sv) = (c[i].to_f32(), s[i].to_f32());
            row[i] = T::from_f32(a * cv - b * sv);
            row[i + half] = T::from_f32(b * cv + a * sv);
        }
    };
    let contiguous = s1 == head_dim && s0 == heads * head_dim;
    if contiguous && tokens * heads * head_dim >= NORM_PAR_MIN_ELEMS {
        data[start..start + tokens * s0]
            .par_chunks_mut(s0)
            .zip(positions.par_iter())
            .for_each(|(tok, &p)| {
                for row in tok.chunks_mut(head_dim) {
                    rotate(row, p as usize);
                }
            });
    } else {
        for (t, &p) in positions.iter().enumerate() {
            for h in 0..heads {
                let off = start + t * s0 + h * s1;
                rotate(&mut data[off..off + head_dim], p as usize);
            }
        }
    }
    Ok(())
}

/// `silu(gate) * up` for `(rows, n)` inputs with row strides and unit last stride.
pub(crate) fn silu_mul_cpu(
    (g, g_l): (&CpuStorage, &Layout),
    (u, u_l): (&CpuStorage, &Layout),
) -> Result<CpuStorage> {
    match g {
        CpuStorage::F32(_) => silu_run::<f32>((g, g_l), (u, u_l)),
        CpuStorage::F16(_) => silu_run::<f16>((g, g_l), (u, u_l)),
        CpuStorage::BF16(_) => silu_run::<bf16>((g, g_l), (u, u_l)),
        other => bail!(
            "silu_mul: dtype {:?} is not supported (f32, f16, bf16)",
            other.dtype()
        ),
    }
}

/// Rows `(start, row_stride)` of a 2-D layout with unit last stride, bounds-checked.
fn rows_of<'a, T>(data: &'a [T], l: &Layout, name: &str) -> Result<(&'a [T], usize)> {
    let (&[rows, n], &[s0, s1]) = (l.dims(), l.stride()) else {
        bail!("silu_mul: {name} must be 2-D, got shape {:?}", l.shape());
    };
    if s1 != 1 && n > 1 {
        bail!("silu_mul: {name} must have unit stride on its last dim");
    }
    let start = l.start_offset();
    let end = if rows == 0 {
        start
    } else {
        start + (rows - 1) * s0 + n
    };
    match data.get(start..end) {
        Some(s) => Ok((s, s0)),
        None => bail!("silu_mul: {name} layout exceeds its storage"),
    }
}

fn silu_run<T: Elem>(
    (g, g_l): (&CpuStorage, &Layout),
    (u, u_l): (&CpuStorage, &Layout),
) -> Result<CpuStorage> {
    let &[rows, n] = g_l.dims() else {
        bail!("silu_mul: gate must be 2-D, got shape {:?}", g_l.shape());
    };
    let (gd, gs) = rows_of(g.as_slice::<T>()?, g_l, "gate")?;
    let (ud, us) = rows_of(u.as_slice::<T>()?, u_l, "up")?;
    let mut out = vec![T::from_f32(0.0); rows * n];
    if n == 0 {
        return Ok(T::to_cpu_storage_owned(out));
    }
    #[cfg(target_arch = "x86_64")]
    let avx2 =
        std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma");
    let row = |(r, o): (usize, &mut [T])| {
        let (gr, ur) = (&gd[r * gs..r * gs + n], &ud[r * us..r * us + n]);
        #[cfg(target_arch = "x86_64")]
        if avx2 && T::DTYPE == candle_core::DType::F32 {
            if let Some(of) = T::as_f32_mut(o) {
                // SAFETY: AVX2 and FMA were detected; f32 rows borrow (`row_f32`), `n` long.
                unsafe {
                    super::avx2::silu_mul(T::row_f32(gr, &mut []), T::row_f32(ur, &mut []), of)
                };
                return;
            }
        }
        #[cfg(target_arch = "x86_64")]
        if avx2 {
            // SAFETY: AVX2 and FMA were detected on this CPU just above.
            return unsafe { silu_row_avx2(gr, ur, o) };
        }
        silu_row::<T, false>(gr, ur, o);
    };
    if rows * n < PAR_MIN_ELEMS {
        out.chunks_mut(n).enumerate().for_each(row);
    } else {
        out.par_chunks_mut(n)
            .enumerate()
            .with_min_len(PAR_MIN_ROWS / 4)
            .for_each(row);
    }
    Ok(T::to_cpu_storage_owned(out))
}

/// `o = silu(g) * u`, elementwise; the exponential is polynomial, so the loop vectorises.
#[inline(always)]
fn silu_row<T: Elem, const FMA: bool>(g: &[T], u: &[T], o: &mut [T]) {
    for ((o, &a), &b) in o.iter_mut().zip(g).zip(u) {
        *o = T::from_f32(silu::<FMA>(a.to_f32()) * b.to_f32());
    }
}

/// [`silu_row`] compiled with AVX2 and FMA.
///
/// # Safety
/// The CPU must support AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn silu_row_avx2<T: Elem>(g: &[T], u: &[T], o: &mut [T]) {
    silu_row::<T, true>(g, u, o);
}
