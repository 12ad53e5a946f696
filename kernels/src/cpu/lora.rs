//! CPU multi-LoRA add: `y[t] += scale[s] * (x[t] A[s]^T) B[s]^T` for every token `t` of a
//! LoRA segment with slot `s`.
//!
//! 1. *Prepare* (once per call, per slot in use): `B[s]` `(out, max_rank)` is transposed and
//!    widened to f32 as `Bt[s]` `(r_s, out)`, so the expand step is `r_s` contiguous axpys.
//! 2. *Tasks* cover disjoint row ranges, so each owns its output rows:
//!    * BGMV (segments shorter than [`LORA_SGMV_MIN_TOKENS`], i.e. decode tokens): one token
//!      at a time, gathering its slot's rows of `A` (shrink: `r` dots of length `in`) and
//!      `Bt` (expand: `r` axpys of length `out`).
//!    * SGMV (longer segments, i.e. prefill chunks): tiles of up to [`TILE_TOKENS`] tokens
//!      sharing one slot; each `A` row is widened once per tile and dotted with four tokens
//!      at a time, and the expand walks `Bt` in column blocks that stay in L1 across the
//!      tile's tokens.
//!
//! Per token both paths run exactly the same f32 operations in the same order (8-lane dot
//! accumulators, `h_k = scale * dot`, `acc = y + sum_k h_k * Bt[k]` in `k` order), so results
//! are bit-identical whichever path, tile or thread a token lands in (batch invariance).
//! Like the attention kernel, the task code is compiled a second time with AVX2 + FMA and
//! picked at runtime.

use candle_core::backend::BackendStorage;
use candle_core::{bail, CpuStorage, Layout, Result, Shape, Tensor};
use half::{bf16, f16};
use rayon::prelude::*;

use super::{contiguous_window, Elem};
use crate::lora::{LoraDims, LoraPlan, LORA_SGMV_MIN_TOKENS};

/// Tokens per SGMV task (one rayon task; the tile is processed four tokens at a time).
const TILE_TOKENS: usize = 32;
/// Output columns per expand block in the SGMV path (`r * 256` f32 of `Bt` stay in cache).
const EXPAND_COLS: usize = 256;
/// Below this many multiply-adds the call runs on the calling thread (rayon overhead is a
/// few microseconds, about this much work).
const PAR_MIN_MACS: usize = 1 << 16;

pub(crate) fn lora_add_cpu(
    (x, x_l): (&CpuStorage, &Layout),
    (a, a_l): (&CpuStorage, &Layout),
    (b, b_l): (&CpuStorage, &Layout),
    y: &Tensor,
    plan: &LoraPlan,
    dims: LoraDims,
) -> Result<(CpuStorage, Shape)> {
    let w = dims.w;
    if x_l.dims() != [dims.num_tokens, w.in_dim]
        || a_l.dims() != [w.num_slots, w.max_rank, w.in_dim]
        || b_l.dims() != [w.num_slots, w.out_dim, w.max_rank]
        || y.dims() != [dims.num_tokens, w.out_dim]
    {
        bail!(
            "lora_add: inconsistent shapes x {:?}, a {:?}, b {:?}, y {:?}",
            x_l.shape(),
            a_l.shape(),
            b_l.shape(),
            y.shape()
        );
    }
    let shape = Shape::from((dims.num_tokens, w.out_dim));
    let storage = match x {
        CpuStorage::F32(_) => run::<f32>((x, x_l), (a, a_l), (b, b_l), y, plan, dims)?,
        CpuStorage::F16(_) => run::<f16>((x, x_l), (a, a_l), (b, b_l), y, plan, dims)?,
        CpuStorage::BF16(_) => run::<bf16>((x, x_l), (a, a_l), (b, b_l), y, plan, dims)?,
        other => bail!(
            "lora_add: dtype {:?} is not supported (f32, f16, bf16)",
            other.dtype()
        ),
    };
    Ok((storage, shape))
}

/// How a task walks its rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Token by token (BGMV).
    Gather,
    /// A tile of tokens sharing the slot (SGMV).
    Tile,
}

/// Rows `lo..hi` of the batch, all using `slot`.
#[derive(Debug, Clone, Copy)]
struct Task {
    lo: usize,
    hi: usize,
    slot: usize,
    kind: Kind,
}

/// Read-only inputs shared by every task.
struct Shared<'a, T> {
    x: &'a [T],
    a: &'a [T],
    /// `Bt` per slot in use (empty for the others): `(rank, out_dim)` row-major f32.
    bt: &'a [Vec<f32>],
    scales: &'a [f32],
    ranks: &'a [usize],
    in_dim: usize,
    out_dim: usize,
    max_rank: usize,
}

impl<T> Shared<'_, T> {
    /// Row `k` of `A[slot]` (`in_dim` elements).
    #[inline(always)]
    fn a_row(&self, slot: usize, k: usize) -> &[T] {
        let off = (slot * self.max_rank + k) * self.in_dim;
        &self.a[off..off + self.in_dim]
    }
}

/// Per-thread buffers reused across tasks.
#[derive(Default)]
struct Scratch {
    /// `(tokens, in_dim)` inputs widened to f32 (unused for f32).
    x: Vec<f32>,
    /// `(in_dim,)` one row of `A` widened to f32 (unused for f32).
    a_row: Vec<f32>,
    /// `(tokens, rank)` shrunk activations, already scaled.
    h: Vec<f32>,
    /// `(out_dim,)` or `(EXPAND_COLS,)` output accumulator.
    acc: Vec<f32>,
}

fn run<T: Elem>(
    (x, x_l): (&CpuStorage, &Layout),
    (a, a_l): (&CpuStorage, &Layout),
    (b, b_l): (&CpuStorage, &Layout),
    y: &Tensor,
    plan: &LoraPlan,
    dims: LoraDims,
) -> Result<CpuStorage> {
    let w = dims.w;
    let x = contiguous_window(x.as_slice::<T>()?, x_l, "lora_add: x")?;
    let a = contiguous_window(a.as_slice::<T>()?, a_l, "lora_add: lora a")?;
    let b = contiguous_window(b.as_slice::<T>()?, b_l, "lora_add: lora b")?;
    // The output starts as a copy of y; only LoRA rows are touched below.
    let mut out = y.flatten_all()?.to_vec1::<T>()?;
    if out.len() != dims.num_tokens * w.out_dim
        || plan.scales.len() != w.num_slots
        || plan.ranks.len() != w.num_slots
        || plan.ranks.iter().any(|&r| r > w.max_rank)
    {
        bail!("lora_add: internal size mismatch between the plan and the tensors");
    }

    if w.out_dim == 0 || plan.segments.is_empty() {
        return Ok(T::to_cpu_storage_owned(out));
    }

    // 1. Bt for every slot in use, in parallel over slots.
    let mut used = vec![false; w.num_slots];
    for seg in &plan.segments {
        used[seg.slot] = true;
    }
    let bt: Vec<Vec<f32>> = used
        .par_iter()
        .enumerate()
        .map(|(slot, &u)| {
            if !u {
                return Vec::new();
            }
            let r = plan.ranks[slot];
            let mut t = vec![0f32; r * w.out_dim];
            let b_slot = &b[slot * w.out_dim * w.max_rank..(slot + 1) * w.out_dim * w.max_rank];
            if r > 0 {
                for (o, row) in b_slot.chunks_exact(w.max_rank).enumerate() {
                    for (k, &v) in row[..r].iter().enumerate() {
                        t[k * w.out_dim + o] = v.to_f32();
                    }
                }
            }
            t
        })
        .collect();

    // 2. Tasks over disjoint, increasing row ranges; each gets its own output rows.
    let mut tasks = Vec::new();
    let mut macs = 0usize;
    for seg in &plan.segments {
        let len = seg.hi - seg.lo;
        macs += len * plan.ranks[seg.slot] * (w.in_dim + w.out_dim);
        if plan.ranks[seg.slot] == 0 {
            continue; // a rank-0 adapter adds exactly nothing
        }
        if len >= LORA_SGMV_MIN_TOKENS {
            let mut lo = seg.lo;
            while lo < seg.hi {
                let hi = (lo + TILE_TOKENS).min(seg.hi);
                tasks.push(Task {
                    lo,
                    hi,
                    slot: seg.slot,
                    kind: Kind::Tile,
                });
                lo = hi;
            }
        } else {
            tasks.push(Task {
                lo: seg.lo,
                hi: seg.hi,
                slot: seg.slot,
                kind: Kind::Gather,
            });
        }
    }
    let mut jobs: Vec<(Task, &mut [T])> = Vec::with_capacity(tasks.len());
    let mut rest: &mut [T] = &mut out;
    let mut consumed = 0;
    for task in tasks {
        // Validated: segments are disjoint, increasing and within the batch.
        let tail = std::mem::take(&mut rest);
        let (_, tail) = tail.split_at_mut((task.lo - consumed) * w.out_dim);
        let (rows, tail) = tail.split_at_mut((task.hi - task.lo) * w.out_dim);
        jobs.push((task, rows));
        rest = tail;
        consumed = task.hi;
    }

    let shared = Shared {
        x,
        a,
        bt: &bt,
        scales: &plan.scales,
        ranks: &plan.ranks,
        in_dim: w.in_dim,
        out_dim: w.out_dim,
        max_rank: w.max_rank,
    };
    let isa = Isa::detect();
    let run_job = |scratch: &mut Scratch, (task, rows): (Task, &mut [T])| match isa {
        Isa::Baseline => run_task::<T, false>(scratch, &shared, task, rows),
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2Fma => {
            // SAFETY: `Isa::detect` returned `Avx2Fma` only after checking at runtime that
            // this CPU supports AVX2 and FMA, the features the callee enables.
            unsafe { run_task_avx2_fma(scratch, &shared, task, rows) }
        }
    };
    if macs < PAR_MIN_MACS {
        let mut scratch = Scratch::default();
        for job in jobs {
            run_job(&mut scratch, job);
        }
    } else {
        jobs.into_par_iter()
            .for_each_init(Scratch::default, run_job);
    }
    Ok(T::to_cpu_storage_owned(out))
}

/// Instruction sets the task code is compiled for; picked once per call at runtime.
#[derive(Debug, Clone, Copy)]
enum Isa {
    /// Whatever the build target guarantees (SSE2 on x86_64).
    Baseline,
    /// AVX2 + FMA (x86_64 only): 8-wide vectors and fused multiply-add.
    #[cfg(target_arch = "x86_64")]
    Avx2Fma,
}

impl Isa {
    fn detect() -> Self {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            return Isa::Avx2Fma;
        }
        Isa::Baseline
    }
}

/// [`run_task`] compiled with AVX2 and FMA enabled.
///
/// # Safety
/// The CPU must support AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn run_task_avx2_fma<T: Elem>(
    scratch: &mut Scratch,
    shared: &Shared<'_, T>,
    task: Task,
    rows: &mut [T],
) {
    run_task::<T, true>(scratch, shared, task, rows);
}

/// Adds the LoRA term to `rows` (the task's `hi - lo` output rows).
#[inline(always)]
fn run_task<T: Elem, const FMA: bool>(
    scratch: &mut Scratch,
    shared: &Shared<'_, T>,
    task: Task,
    rows: &mut [T],
) {
    match task.kind {
        Kind::Gather => bgmv::<T, FMA>(scratch, shared, task, rows),
        Kind::Tile => sgmv_tile::<T, FMA>(scratch, shared, task, rows),
    }
}

/// Token by token: shrink `h = scale * A x` (rank `r`), then `y += Bt^T h`.
#[inline(always)]
fn bgmv<T: Elem, const FMA: bool>(
    scratch: &mut Scratch,
    shared: &Shared<'_, T>,
    task: Task,
    rows: &mut [T],
) {
    let (n_in, n_out) = (shared.in_dim, shared.out_dim);
    let r = shared.ranks[task.slot];
    let scale = shared.scales[task.slot];
    let bt = &shared.bt[task.slot];
    let Scratch { x, a_row, h, acc } = scratch;
    x.resize(n_in, 0.0);
    a_row.resize(n_in, 0.0);
    acc.resize(n_out, 0.0);
    for (t, y_row) in (task.lo..task.hi).zip(rows.chunks_exact_mut(n_out)) {
        let x_row = T::row_f32(&shared.x[t * n_in..(t + 1) * n_in], x);
        h.clear();
        for k in 0..r {
            let a_k = T::row_f32(shared.a_row(task.slot, k), a_row);
            h.push(scale * dot::<FMA>(x_row, a_k));
        }
        expand_row::<T, FMA>(h, bt, n_out, 0, y_row, acc);
    }
}

/// A tile of tokens sharing one slot: `H = scale * X A^T` four tokens per `A` row load,
/// then `Y += H Bt` in column blocks of `Bt`.
#[inline(always)]
fn sgmv_tile<T: Elem, const FMA: bool>(
    scratch: &mut Scratch,
    shared: &Shared<'_, T>,
    task: Task,
    rows: &mut [T],
) {
    let (n_in, n_out) = (shared.in_dim, shared.out_dim);
    let m = task.hi - task.lo;
    let r = shared.ranks[task.slot];
    let scale = shared.scales[task.slot];
    let bt = &shared.bt[task.slot];
    let Scratch { x, a_row, h, acc } = scratch;
    x.resize(m * n_in, 0.0);
    a_row.resize(n_in, 0.0);
    h.clear();
    h.resize(m * r, 0.0);
    let xs = T::row_f32(&shared.x[task.lo * n_in..task.hi * n_in], x);

    // Shrink: h[i][k] = scale * dot(x_i, a_k).
    if n_in == 0 {
        // Empty dot products: h stays 0 (scale * 0).
        h.iter_mut().for_each(|v| *v *= scale);
    } else {
        for k in 0..r {
            let a_k = T::row_f32(shared.a_row(task.slot, k), a_row);
            let mut quads = xs.chunks_exact(4 * n_in);
            let mut i = 0;
            for quad in &mut quads {
                let (x0, rest) = quad.split_at(n_in);
                let (x1, rest) = rest.split_at(n_in);
                let (x2, x3) = rest.split_at(n_in);
                let d = dot4::<FMA>([x0, x1, x2, x3], a_k);
                for (j, dj) in d.into_iter().enumerate() {
                    h[(i + j) * r + k] = scale * dj;
                }
                i += 4;
            }
            for x_i in quads.remainder().chunks_exact(n_in) {
                h[i * r + k] = scale * dot::<FMA>(x_i, a_k);
                i += 1;
            }
        }
    }

    // Expand, one block of output columns at a time for all tokens of the tile.
    let mut c0 = 0;
    while c0 < n_out {
        let cols = EXPAND_COLS.min(n_out - c0);
        acc.resize(cols, 0.0);
        for (i, y_row) in rows.chunks_exact_mut(n_out).enumerate() {
            expand_row::<T, FMA>(
                &h[i * r..(i + 1) * r],
                bt,
                n_out,
                c0,
                &mut y_row[c0..c0 + cols],
                &mut acc[..cols],
            );
        }
        c0 += cols;
    }
}

/// `y_cols = round(y_cols + sum_k h[k] * Bt[k][c0..c0 + len])`, summed in f32 in `k` order.
/// `acc` has the length of `y_cols`.
#[inline(always)]
fn expand_row<T: Elem, const FMA: bool>(
    h: &[f32],
    bt: &[f32],
    n_out: usize,
    c0: usize,
    y_cols: &mut [T],
    acc: &mut [f32],
) {
    let len = y_cols.len();
    for (o, &v) in acc.iter_mut().zip(y_cols.iter()) {
        *o = v.to_f32();
    }
    for (k, &hk) in h.iter().enumerate() {
        let start = k * n_out + c0;
        axpy::<FMA>(hk, &bt[start..start + len], acc);
    }
    for (y, &v) in y_cols.iter_mut().zip(acc.iter()) {
        *y = T::from_f32(v);
    }
}

/// `a * b + c`, fused when `FMA` (callers only pass `true` under `target_feature = "fma"`,
/// where this is one instruction; elsewhere `mul_add` would be a slow libm call).
#[inline(always)]
fn madd<const FMA: bool>(a: f32, b: f32, c: f32) -> f32 {
    if FMA {
        a.mul_add(b, c)
    } else {
        a * b + c
    }
}

/// Final reduction shared by [`dot`] and [`dot4`] so both round identically.
#[inline(always)]
fn reduce(acc: &[f32; 8], tail: f32) -> f32 {
    ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7])) + tail
}

/// `sum(x[i] * a[i])` over the elements past the last full chunk of 8.
#[inline(always)]
fn tail_dot(x: &[f32], a: &[f32]) -> f32 {
    let n = a.len() / 8 * 8;
    x[n..].iter().zip(&a[n..]).map(|(&p, &q)| p * q).sum()
}

/// `acc[l] += x[l] * a[l]` for one chunk of 8 (one vector register).
#[inline(always)]
fn lanes_madd<const FMA: bool>(acc: &mut [f32; 8], x: &[f32], a: &[f32]) {
    for ((s, &p), &q) in acc.iter_mut().zip(x).zip(a) {
        *s = madd::<FMA>(p, q, *s);
    }
}

/// `sum(x[i] * a[i])` with 8 lane accumulators so the loop vectorises.
#[inline(always)]
fn dot<const FMA: bool>(x: &[f32], a: &[f32]) -> f32 {
    let mut acc = [0.0f32; 8];
    for (x8, a8) in x.chunks_exact(8).zip(a.chunks_exact(8)) {
        lanes_madd::<FMA>(&mut acc, x8, a8);
    }
    reduce(&acc, tail_dot(x, a))
}

/// Four [`dot`]s against the same `a`, sharing its loads; bit-identical to four `dot` calls.
#[inline(always)]
fn dot4<const FMA: bool>(xs: [&[f32]; 4], a: &[f32]) -> [f32; 4] {
    let (mut s0, mut s1, mut s2, mut s3) = ([0.0f32; 8], [0.0f32; 8], [0.0f32; 8], [0.0f32; 8]);
    let [x0, x1, x2, x3] = xs;
    for ((((a8, c0), c1), c2), c3) in a
        .chunks_exact(8)
        .zip(x0.chunks_exact(8))
        .zip(x1.chunks_exact(8))
        .zip(x2.chunks_exact(8))
        .zip(x3.chunks_exact(8))
    {
        lanes_madd::<FMA>(&mut s0, c0, a8);
        lanes_madd::<FMA>(&mut s1, c1, a8);
        lanes_madd::<FMA>(&mut s2, c2, a8);
        lanes_madd::<FMA>(&mut s3, c3, a8);
    }
    [
        reduce(&s0, tail_dot(x0, a)),
        reduce(&s1, tail_dot(x1, a)),
        reduce(&s2, tail_dot(x2, a)),
        reduce(&s3, tail_dot(x3, a)),
    ]
}

/// `acc[i] += w * v[i]`.
#[inline(always)]
fn axpy<const FMA: bool>(w: f32, v: &[f32], acc: &mut [f32]) {
    for (s, &x) in acc.iter_mut().zip(v) {
        *s = madd::<FMA>(w, x, *s);
    }
}

#[cfg(test)]
mod tests {
    use super::{dot, dot4};

    #[test]
    fn dot4_is_bit_identical_to_dot() {
        for n in [0usize, 1, 7, 8, 9, 31, 576, 577] {
            let v = |s: f32| {
                (0..n)
                    .map(|i| ((i as f32 + s) * 0.37).sin())
                    .collect::<Vec<_>>()
            };
            let (a, x0, x1, x2, x3) = (v(0.0), v(1.0), v(2.0), v(3.0), v(4.0));
            let four = dot4::<false>([&x0, &x1, &x2, &x3], &a);
            let one = [
                dot::<false>(&x0, &a),
                dot::<false>(&x1, &a),
                dot::<false>(&x2, &a),
                dot::<false>(&x3, &a),
            ];
            assert_eq!(four.map(f32::to_bits), one.map(f32::to_bits), "n = {n}");
        }
    }
}
