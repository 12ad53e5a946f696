//! CPU token sampling (semantics in `crate::sampling`): rows in parallel; the sorted order
//! is only materialised as far as the filters need (a partial sort of the kept prefix).

use candle_core::backend::BackendStorage;
use candle_core::{bail, CpuStorage, Layout, Result};
use half::{bf16, f16};
use rayon::prelude::*;

use super::Elem;
use crate::sampling::{HostSampling, SamplingParams, SAMPLING_PARAM_COLS};

/// `2^40`: fixed-point scale of the sampling weights.
pub(crate) const FIXED_SCALE: f32 = 1_099_511_627_776.0;

/// Order-preserving u32 key of a (non-NaN) f32.
#[inline]
pub(crate) fn fkey(x: f32) -> u32 {
    let b = x.to_bits();
    if b & 0x8000_0000 != 0 {
        !b
    } else {
        b | 0x8000_0000
    }
}

/// `trunc(exp((x - m) * inv_t) * 2^40)`, 0 for `-inf` logits.
#[inline]
pub(crate) fn fixed_mass(x: f32, m: f32, inv_t: f32) -> u64 {
    if x == f32::NEG_INFINITY {
        return 0;
    }
    let w = ((x - m) * inv_t).exp();
    if w > 0.0 {
        (w * FIXED_SCALE) as u64
    } else {
        0
    }
}

#[inline]
pub(crate) fn sanitize(x: f32) -> f32 {
    if x.is_nan() {
        f32::NEG_INFINITY
    } else {
        x
    }
}

/// Applies the processing entries (`[token, seen, count, bias bits]` rows) to `row`.
pub(crate) fn process(row: &mut [f32], p: &SamplingParams, entries: &[u32]) {
    for e in entries.chunks_exact(4) {
        let Some(x) = row.get_mut(e[0] as usize) else {
            continue;
        };
        let mut v = *x + f32::from_bits(e[3]);
        if p.repetition_penalty != 1.0 && e[1] != 0 {
            v = if v > 0.0 {
                v / p.repetition_penalty
            } else {
                v * p.repetition_penalty
            };
        }
        if e[2] > 0 {
            v -= p.presence_penalty + p.frequency_penalty * e[2] as f32;
        }
        *x = sanitize(v);
    }
}

/// Arg-max (lowest index on ties, 0 for an all `-inf` row) and the max value.
pub(crate) fn argmax(row: &[f32]) -> (u32, f32) {
    let mut best = 0usize;
    let mut m = f32::NEG_INFINITY;
    for (i, &x) in row.iter().enumerate() {
        if x > m {
            m = x;
            best = i;
        }
    }
    (best as u32, m)
}

pub(crate) fn sample_cpu(
    (logits, l): (&CpuStorage, &Layout),
    host: &HostSampling,
) -> Result<Vec<u32>> {
    match logits {
        CpuStorage::F32(d) => run::<f32>(d, l, host),
        CpuStorage::F16(d) => run::<f16>(d, l, host),
        CpuStorage::BF16(d) => run::<bf16>(d, l, host),
        other => bail!(
            "sample_tokens: logits dtype {:?} is not supported (f32, f16, bf16)",
            other.dtype()
        ),
    }
}

fn run<T: Elem>(data: &[T], l: &Layout, host: &HostSampling) -> Result<Vec<u32>> {
    let (&[rows, vocab], &[s0, s1]) = (l.dims(), l.stride()) else {
        bail!(
            "sample_tokens: logits must be 2-D, got shape {:?}",
            l.shape()
        );
    };
    if s1 != 1 && vocab > 1 {
        bail!("sample_tokens: logits must have unit stride on vocab");
    }
    if host.offsets.len() != rows + 1 {
        bail!(
            "sample_tokens: batch has {} rows but logits have {rows}",
            host.offsets.len().saturating_sub(1)
        );
    }
    let start = l.start_offset();
    if rows > 0 && start + (rows - 1) * s0 + vocab > data.len() {
        bail!("sample_tokens: logits layout exceeds its storage");
    }
    let one = |r: usize| -> u32 {
        let (p, uniform) = SamplingParams::from_table_row(
            &host.params[r * SAMPLING_PARAM_COLS..(r + 1) * SAMPLING_PARAM_COLS],
        );
        let src = &data[start + r * s0..start + r * s0 + vocab];
        let mut row: Vec<f32> = src.iter().map(|&x| sanitize(x.to_f32())).collect();
        let (lo, hi) = (host.offsets[r] as usize, host.offsets[r + 1] as usize);
        process(&mut row, &p, &host.entries[lo * 4..hi * 4]);
        pick(&row, &p, uniform)
    };
    Ok(if rows * vocab >= 1 << 16 {
        (0..rows).into_par_iter().map(one).collect()
    } else {
        (0..rows).map(one).collect()
    })
}

/// Sorts the first `k` entries of `idx` into the sampling order (logit desc, index asc),
/// leaving the rest after them (unordered).
fn partial_sort(idx: &mut [u32], row: &[f32], k: usize) {
    let cmp = |a: &u32, b: &u32| {
        fkey(row[*b as usize])
            .cmp(&fkey(row[*a as usize]))
            .then(a.cmp(b))
    };
    let k = k.min(idx.len());
    if k == 0 {
        return;
    }
    if k < idx.len() {
        idx.select_nth_unstable_by(k - 1, cmp);
    }
    idx[..k].sort_unstable_by(cmp);
}

/// The sampled token of one processed row.
/// `uniform` is the row's draw in `[0, 1)`.
pub(crate) fn pick(row: &[f32], p: &SamplingParams, uniform: f32) -> u32 {
    let (amax, m) = argmax(row);
    if p.temperature <= 0.0 || p.top_k == 1 || !m.is_finite() {
        return amax;
    }
    let inv_t = 1.0 / p.temperature;
    let w = |i: u32| fixed_mass(row[i as usize], m, inv_t);
    let v = row.len();
    let total_all: u64 = (0..v as u32).map(w).sum();
    if total_all == 0 {
        return amax;
    }
    let filtered = p.top_k > 0 || p.top_p < 1.0 || p.min_p > 0.0;
    if !filtered {
        let target = ((f64::from(uniform) * total_all as f64).floor() as u64).min(total_all - 1);
        let mut cum = 0u64;
        for i in 0..v as u32 {
            cum += w(i);
            if cum > target {
                return i;
            }
        }
        return amax;
    }
    let n_cand = if p.top_k > 0 { p.top_k.min(v) } else { v };
    let mut idx: Vec<u32> = (0..v as u32).collect();
    let total = if n_cand < v {
        partial_sort(&mut idx, row, n_cand);
        idx[..n_cand].iter().map(|&i| w(i)).sum()
    } else {
        total_all
    };
    let mut n_keep = n_cand;
    if p.min_p > 0.0 {
        let c = row
            .iter()
            .filter(|&&x| x != f32::NEG_INFINITY && ((x - m) * inv_t).exp() >= p.min_p)
            .count();
        n_keep = c.min(n_cand).max(1);
    }
    let cand = &mut idx[..n_cand];
    let target_p = if p.top_p < 1.0 {
        Some(((f64::from(p.top_p) * total as f64).ceil() as u64).max(1))
    } else {
        None
    };
    // Sort just enough: the top_k selection already sorted the candidates; otherwise sort the
    // kept prefix, first only a head of 1024 when top_p may stop early.
    let sorted = if n_cand < v {
        n_keep
    } else {
        let s = if target_p.is_some() {
            n_keep.min(1024)
        } else {
            n_keep
        };
        partial_sort(cand, row, s);
        s
    };
    let mut n = n_keep;
    if let Some(tp) = target_p {
        let find = |cand: &[u32], upto: usize| {
            let mut cum = 0u64;
            for (j, &i) in cand[..upto].iter().enumerate() {
                cum += w(i);
                if cum >= tp {
                    return Some(j + 1);
                }
            }
            None
        };
        let np = match find(cand, sorted) {
            Some(np) => Some(np),
            None if sorted < n_keep => {
                partial_sort(cand, row, n_keep);
                find(cand, n_keep)
            }
            None => None,
        };
        if let Some(np) = np {
            n = n.min(np.max(1));
        }
    }
    let kept = &cand[..n];
    let mass: u64 = kept.iter().map(|&i| w(i)).sum();
    if mass == 0 {
        return amax;
    }
    let target = ((f64::from(uniform) * mass as f64).floor() as u64).min(mass - 1);
    let mut cum = 0u64;
    for &i in kept {
        cum += w(i);
        if cum > target {
            return i;
        }
    }
    amax
}
