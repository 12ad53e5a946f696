//! CPU multi-LoRA add: `y[t] += scale[s] * (x[t] A[s]^T) B[s]^T` for every token `t` of a
//! LoRA segment with slot `s` (rank `r`; `A[s]` is `(max_rank, in)`, `B[s]` `(out, max_rank)`).
//!
//! 1. *Prepare*, once per call for each slot in use (in parallel over slots when large):
//!    f16/bf16 weights are widened to f32 (`A[s][..r]` and the first `r` columns of `B[s]`;
//!    f32 weights are borrowed as they are), and slots with an SGMV segment also get
//!    `Bt = B[s][.., ..r]^T` `(r, out)`.
//! 2. *Tasks* cover disjoint row ranges, so each owns its output rows:
//!    * **BGMV** (segments shorter than [`LORA_SGMV_MIN_TOKENS`]: decode tokens). One token
//!      at a time, gathering its slot's weights: shrink `h_k = scale * <A_k, x>` and expand
//!      `y_o += <B_o[..r], h>`, both as dot products four at a time against a shared operand.
//!    * **SGMV** (longer segments: prefill chunks). Tiles of up to [`TILE_TOKENS`] tokens
//!      sharing one slot: each `A` row is dotted with four tokens at a time, and the expand
//!      is `r` contiguous axpys of `Bt` rows per token, in 32-column chunks held in
//!      registers whose `r x 32` block of `Bt` stays in L1 across the tile.
//!
//! All math is f32. A token's result depends only on its row of `x`, its slot and the length
//! of its segment (which picks the path), never on the tile, the thread or the other
//! segments; with one segment per sequence (as [`crate::LoraBatch::from_host`] builds them)
//! a sequence gets bit-identical results alone or in any batch. Like the attention kernel,
//! the task code is compiled a second time with AVX2 + FMA and picked at runtime; there the
//! two innermost kernels ([`dot4`], [`expand_chunk`]) use explicit intrinsics, because LLVM's
//! auto-vectorisation of them varied from one element type to the next.

use candle_core::backend::BackendStorage;
use candle_core::{bail, CpuStorage, DType, Layout, Result, Shape, Tensor};
use half::{bf16, f16, slice::HalfFloatSliceExt};
use rayon::prelude::*;

use super::{axpy, contiguous_window, Elem};
use crate::lora::{LoraDims, LoraPlan, LORA_SGMV_MIN_TOKENS};
use simd::{dot, dot4, expand_chunk};

/// Tokens per SGMV task (one rayon task; processed four tokens at a time).
const TILE_TOKENS: usize = 32;
/// SGMV expand: output columns per register-blocked chunk (four AVX2 vectors).
pub(super) const EXPAND_CHUNK: usize = 32;
/// Below this many multiply-adds (about 30 us of single-thread work) a phase runs on the
/// calling thread: waking rayon's workers costs microseconds to tens of microseconds.
const PAR_MIN_MACS: usize = 1 << 18;

pub(crate) fn lora_add_cpu(
    x: (&CpuStorage, &Layout),
    a: (&CpuStorage, &Layout),
    b: (&CpuStorage, &Layout),
    y: &Tensor,
    plan: &LoraPlan,
    dims: LoraDims,
) -> Result<(CpuStorage, Shape)> {
    lora_add_cpu_isa(x, a, b, y, plan, dims, Isa::detect())
}

/// [`lora_add_cpu`] with the instruction set chosen by the caller (tests use the baseline).
fn lora_add_cpu_isa(
    (x, x_l): (&CpuStorage, &Layout),
    (a, a_l): (&CpuStorage, &Layout),
    (b, b_l): (&CpuStorage, &Layout),
    y: &Tensor,
    plan: &LoraPlan,
    dims: LoraDims,
    isa: Isa,
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
        CpuStorage::F32(_) => run::<f32>((x, x_l), (a, a_l), (b, b_l), y, plan, dims, isa)?,
        CpuStorage::F16(_) => run::<f16>((x, x_l), (a, a_l), (b, b_l), y, plan, dims, isa)?,
        CpuStorage::BF16(_) => run::<bf16>((x, x_l), (a, a_l), (b, b_l), y, plan, dims, isa)?,
        other => bail!(
            "lora_add: dtype {:?} is not supported (f32, f16, bf16)",
            other.dtype()
        ),
    };
    Ok((storage, shape))
}

/// Whole-row conversions between the storage type and f32 (bulk, F16C-accelerated for f16,
/// where [`Elem`]'s per-element conversions would each detect the CPU again).
/// Both slices have the same length.
trait Rows: Elem {
    /// `dst[i] = src[i]` widened to f32.
    fn load(src: &[Self], dst: &mut [f32]);
    /// `dst[i] = src[i]` rounded to `Self` (round to nearest even).
    fn store(src: &[f32], dst: &mut [Self]);
}

impl Rows for f32 {
    #[inline(always)]
    fn load(src: &[Self], dst: &mut [f32]) {
        for (d, &s) in dst.iter_mut().zip(src) {
            *d = s;
        }
    }
    #[inline(always)]
    fn store(src: &[f32], dst: &mut [Self]) {
        for (d, &s) in dst.iter_mut().zip(src) {
            *d = s;
        }
    }
}

impl Rows for bf16 {
    #[inline(always)]
    fn load(src: &[Self], dst: &mut [f32]) {
        for (d, &s) in dst.iter_mut().zip(src) {
            *d = s.to_f32();
        }
    }
    #[inline(always)]
    fn store(src: &[f32], dst: &mut [Self]) {
        for (d, &s) in dst.iter_mut().zip(src) {
            *d = bf16::from_f32(s);
        }
    }
}

impl Rows for f16 {
    #[inline(always)]
    fn load(src: &[Self], dst: &mut [f32]) {
        src.convert_to_f32_slice(dst);
    }
    #[inline(always)]
    fn store(src: &[f32], dst: &mut [Self]) {
        dst.convert_from_f32_slice(src);
    }
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

/// One slot's weights as f32 (empty slices for slots not in use).
#[derive(Clone, Copy, Default)]
struct SlotView<'a> {
    /// `A[s][..r]`: `(r, in_dim)`.
    a: &'a [f32],
    /// `B[s]`: `(out_dim, max_rank)`; only the first `r` entries of each row are read.
    b: &'a [f32],
    /// `Bt`: `(r, out_dim)`, only for slots with an SGMV segment.
    bt: &'a [f32],
}

/// Read-only inputs shared by every task.
struct Shared<'a, T> {
    x: &'a [T],
    slots: &'a [SlotView<'a>],
    scales: &'a [f32],
    ranks: &'a [usize],
    in_dim: usize,
    out_dim: usize,
    max_rank: usize,
}

/// Per-thread buffers reused across tasks.
#[derive(Default)]
struct Scratch {
    /// `(tokens, in_dim)` inputs widened to f32 (unused for f32).
    x: Vec<f32>,
    /// `(tokens, rank)` shrunk activations, already scaled.
    h: Vec<f32>,
    /// `(out_dim,)` output accumulators (BGMV) or the SGMV expand's last, partial chunk.
    acc: Vec<f32>,
}

/// Where one slot's prepared f32 weights live in the shared buffer (lengths 0 = borrowed
/// from the input, or not needed).
#[derive(Debug, Clone, Copy, Default)]
struct Prep {
    used: bool,
    sgmv: bool,
    a: (usize, usize),
    b: (usize, usize),
    bt: (usize, usize),
}

fn run<T: Rows>(
    (x, x_l): (&CpuStorage, &Layout),
    (a, a_l): (&CpuStorage, &Layout),
    (b, b_l): (&CpuStorage, &Layout),
    y: &Tensor,
    plan: &LoraPlan,
    dims: LoraDims,
    isa: Isa,
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
    if w.out_dim == 0 {
        return Ok(T::to_cpu_storage_owned(out));
    }

    // 1. Tasks over disjoint, increasing row ranges, and the slots they use.
    let mut tasks = Vec::new();
    let mut macs = 0usize;
    let mut prep = vec![Prep::default(); w.num_slots];
    for seg in &plan.segments {
        let r = plan.ranks[seg.slot];
        if r == 0 {
            continue; // a rank-0 adapter adds exactly nothing
        }
        let len = seg.hi - seg.lo;
        macs += len * r * (w.in_dim + w.out_dim);
        prep[seg.slot].used = true;
        if len >= LORA_SGMV_MIN_TOKENS {
            prep[seg.slot].sgmv = true;
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
    if tasks.is_empty() {
        return Ok(T::to_cpu_storage_owned(out));
    }

    // 2. Prepared f32 weights of the slots in use, in one buffer.
    let widen = T::DTYPE != DType::F32;
    let slot_a = |slot: usize| {
        let off = slot * w.max_rank * w.in_dim;
        &a[off..off + plan.ranks[slot] * w.in_dim]
    };
    let slot_b = |slot: usize| {
        let len = w.out_dim * w.max_rank;
        &b[slot * len..(slot + 1) * len]
    };
    let mut buf_len = 0;
    for (slot, p) in prep.iter_mut().enumerate().filter(|(_, p)| p.used) {
        let r = plan.ranks[slot];
        let mut take = |n: usize| {
            buf_len += n;
            (buf_len - n, n)
        };
        if widen {
            p.a = take(r * w.in_dim);
            p.b = take(w.out_dim * w.max_rank);
        }
        if p.sgmv {
            p.bt = take(r * w.out_dim);
        }
    }
    let mut buf = vec![0f32; buf_len];
    {
        let mut parts = Vec::new();
        let mut rest: &mut [f32] = &mut buf;
        for (slot, p) in prep.iter().enumerate().filter(|(_, p)| p.used) {
            let (a_part, tail) = std::mem::take(&mut rest).split_at_mut(p.a.1);
            let (b_part, tail) = tail.split_at_mut(p.b.1);
            let (bt_part, tail) = tail.split_at_mut(p.bt.1);
            parts.push((slot, a_part, b_part, bt_part));
            rest = tail;
        }
        let fill =
            |(slot, a_part, b_part, bt_part): (usize, &mut [f32], &mut [f32], &mut [f32])| {
                let r = plan.ranks[slot];
                let b_f32: &[f32] = match borrow_f32(slot_b(slot)) {
                    Some(b) => b,
                    None => {
                        T::load(slot_a(slot), a_part);
                        for (src, dst) in slot_b(slot)
                            .chunks_exact(w.max_rank)
                            .zip(b_part.chunks_exact_mut(w.max_rank))
                        {
                            T::load(&src[..r], &mut dst[..r]);
                        }
                        b_part
                    }
                };
                transpose_rank(b_f32, w.max_rank, r, w.out_dim, bt_part);
            };
        if buf_len < PAR_MIN_MACS {
            parts.into_iter().for_each(fill);
        } else {
            parts.into_par_iter().for_each(fill);
        }
    }
    let views: Vec<SlotView<'_>> = prep
        .iter()
        .enumerate()
        .map(|(slot, p)| {
            if !p.used {
                return SlotView::default();
            }
            let part = |(off, len): (usize, usize)| &buf[off..off + len];
            SlotView {
                a: borrow_f32(slot_a(slot)).unwrap_or_else(|| part(p.a)),
                b: borrow_f32(slot_b(slot)).unwrap_or_else(|| part(p.b)),
                bt: part(p.bt),
            }
        })
        .collect();

    // 3. Each task gets its own output rows.
    let mut jobs: Vec<(Task, &mut [T])> = Vec::with_capacity(tasks.len());
    let mut rest: &mut [T] = &mut out;
    let mut consumed = 0;
    for task in tasks {
        // Validated: segments are disjoint, increasing and within the batch.
        let (_, tail) = std::mem::take(&mut rest).split_at_mut((task.lo - consumed) * w.out_dim);
        let (rows, tail) = tail.split_at_mut((task.hi - task.lo) * w.out_dim);
        jobs.push((task, rows));
        rest = tail;
        consumed = task.hi;
    }

    let shared = Shared {
        x,
        slots: &views,
        scales: &plan.scales,
        ranks: &plan.ranks,
        in_dim: w.in_dim,
        out_dim: w.out_dim,
        max_rank: w.max_rank,
    };
    let run_job = |scratch: &mut Scratch, (task, rows): (Task, &mut [T])| match isa {
        // SAFETY: with `FMA = false` no CPU feature is required.
        Isa::Baseline => unsafe { run_task::<T, false>(scratch, &shared, task, rows) },
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

/// `src` itself when `T` is f32 (no copy), `None` for the half types.
#[inline(always)]
fn borrow_f32<T: Elem>(src: &[T]) -> Option<&[f32]> {
    // For f32, `row_f32` returns `src` and ignores the (empty) buffer.
    (T::DTYPE == DType::F32).then(|| T::row_f32(src, &mut []))
}

/// `bt[k][o] = b_slot[o][k]` for `k < r`: `b_slot` is `(out, max_rank)`, `bt` `(r, out)`
/// (empty when not needed). Goes through 8 x 8 tiles held in a local array, so both the
/// reads (8 contiguous entries of a `B` row) and the writes (8 contiguous entries of a `Bt`
/// row) are short contiguous runs.
fn transpose_rank(b_slot: &[f32], max_rank: usize, r: usize, out: usize, bt: &mut [f32]) {
    const TILE: usize = 8;
    if r == 0 || bt.len() != r * out || b_slot.len() != out * max_rank {
        return;
    }
    let mut tile = [[0.0f32; TILE]; TILE];
    for o0 in (0..out).step_by(TILE) {
        let no = TILE.min(out - o0);
        for k0 in (0..r).step_by(TILE) {
            let nk = TILE.min(r - k0);
            for (i, t) in tile.iter_mut().enumerate().take(no) {
                let src = &b_slot[(o0 + i) * max_rank + k0..][..nk];
                t[..nk].copy_from_slice(src);
            }
            for j in 0..nk {
                let dst = &mut bt[(k0 + j) * out + o0..][..no];
                for (d, t) in dst.iter_mut().zip(&tile) {
                    *d = t[j];
                }
            }
        }
    }
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
unsafe fn run_task_avx2_fma<T: Rows>(
    scratch: &mut Scratch,
    shared: &Shared<'_, T>,
    task: Task,
    rows: &mut [T],
) {
    // SAFETY: this function's own contract (AVX2 and FMA present) is what `FMA = true` needs.
    unsafe { run_task::<T, true>(scratch, shared, task, rows) }
}

/// Adds the LoRA term to `rows` (the task's `hi - lo` output rows).
///
/// # Safety
/// When `FMA` is true the CPU must support AVX2 and FMA.
#[inline(always)]
unsafe fn run_task<T: Rows, const FMA: bool>(
    scratch: &mut Scratch,
    shared: &Shared<'_, T>,
    task: Task,
    rows: &mut [T],
) {
    // SAFETY: forwarded contract.
    unsafe {
        match task.kind {
            Kind::Gather => bgmv::<T, FMA>(scratch, shared, task, rows),
            Kind::Tile => sgmv_tile::<T, FMA>(scratch, shared, task, rows),
        }
    }
}

/// Token by token, gathering the slot's weights: `h = scale * A[..r] x`, then
/// `y_o = y_o + <B_o[..r], h>`, four rank rows / four outputs per [`dot4`].
///
/// # Safety
/// When `FMA` is true the CPU must support AVX2 and FMA.
#[inline(always)]
unsafe fn bgmv<T: Rows, const FMA: bool>(
    scratch: &mut Scratch,
    shared: &Shared<'_, T>,
    task: Task,
    rows: &mut [T],
) {
    let (n_in, n_out, stride) = (shared.in_dim, shared.out_dim, shared.max_rank);
    let slot = task.slot;
    let r = shared.ranks[slot];
    let scale = shared.scales[slot];
    let SlotView { a, b, .. } = shared.slots[slot];
    let a_row = |k: usize| &a[k * n_in..(k + 1) * n_in];
    let b_row = |o: usize| &b[o * stride..o * stride + r];
    let Scratch { x, h, acc } = scratch;
    x.resize(n_in, 0.0);
    acc.resize(n_out, 0.0);
    for (t, y_row) in (task.lo..task.hi).zip(rows.chunks_exact_mut(n_out)) {
        let x_row = T::row_f32(&shared.x[t * n_in..(t + 1) * n_in], x);

        // Shrink: h_k = scale * <A_k, x>.
        h.clear();
        let mut k = 0;
        while k + 4 <= r {
            let a4 = [a_row(k), a_row(k + 1), a_row(k + 2), a_row(k + 3)];
            // SAFETY: forwarded contract.
            let d = unsafe { dot4::<FMA>(x_row, a4) };
            h.extend(d.iter().map(|&v| scale * v));
            k += 4;
        }
        for k in k..r {
            h.push(scale * dot::<FMA>(a_row(k), x_row));
        }

        // Expand: y_o = y_o + <B_o[..r], h>.
        T::load(y_row, acc);
        let mut o = 0;
        while o + 4 <= n_out {
            let b4 = [b_row(o), b_row(o + 1), b_row(o + 2), b_row(o + 3)];
            // SAFETY: forwarded contract.
            let d = unsafe { dot4::<FMA>(h, b4) };
            for (s, dj) in acc[o..o + 4].iter_mut().zip(d) {
                *s += dj;
            }
            o += 4;
        }
        for (o, s) in acc.iter_mut().enumerate().skip(o) {
            *s += dot::<FMA>(b_row(o), h);
        }
        T::store(acc, y_row);
    }
}

/// A tile of tokens sharing one slot: `H = scale * X A[..r]^T`, four tokens per `A` row,
/// then `y_i = y_i + sum_k H[i][k] Bt[k]` in register-blocked chunks of 32 columns.
///
/// # Safety
/// When `FMA` is true the CPU must support AVX2 and FMA.
#[inline(always)]
unsafe fn sgmv_tile<T: Rows, const FMA: bool>(
    scratch: &mut Scratch,
    shared: &Shared<'_, T>,
    task: Task,
    rows: &mut [T],
) {
    let (n_in, n_out) = (shared.in_dim, shared.out_dim);
    let m = task.hi - task.lo;
    let slot = task.slot;
    let r = shared.ranks[slot];
    let scale = shared.scales[slot];
    let SlotView { a, bt, .. } = shared.slots[slot];
    let Scratch { x, h, acc } = scratch;
    x.resize(m * n_in, 0.0);
    h.clear();
    h.resize(m * r, 0.0);
    let xs = T::row_f32(&shared.x[task.lo * n_in..task.hi * n_in], x);

    // Shrink: h[i][k] = scale * <A_k, x_i>, four tokens (in L1) against each row of A.
    let x_row = |i: usize| &xs[i * n_in..(i + 1) * n_in];
    let mut i = 0;
    while i + 4 <= m {
        let x4 = [x_row(i), x_row(i + 1), x_row(i + 2), x_row(i + 3)];
        for k in 0..r {
            // SAFETY: forwarded contract.
            let d = unsafe { dot4::<FMA>(&a[k * n_in..(k + 1) * n_in], x4) };
            for (j, dj) in d.into_iter().enumerate() {
                h[(i + j) * r + k] = scale * dj;
            }
        }
        i += 4;
    }
    for i in i..m {
        for k in 0..r {
            h[i * r + k] = scale * dot::<FMA>(x_row(i), &a[k * n_in..(k + 1) * n_in]);
        }
    }

    // Expand, one chunk of EXPAND_CHUNK output columns at a time for all tokens of the tile:
    // the chunk's accumulators stay in registers over the `r` steps, and its `r` rows of
    // `Bt` (at most 16 KiB) stay in L1 across the tokens.
    let mut c0 = 0;
    while c0 < n_out {
        let cols = EXPAND_CHUNK.min(n_out - c0);
        for (i, y_row) in rows.chunks_exact_mut(n_out).enumerate() {
            let y_cols = &mut y_row[c0..c0 + cols];
            let h_i = &h[i * r..(i + 1) * r];
            if cols == EXPAND_CHUNK {
                let mut chunk = [0.0f32; EXPAND_CHUNK];
                T::load(y_cols, &mut chunk);
                // SAFETY: forwarded contract.
                unsafe { expand_chunk::<FMA>(h_i, &bt[c0..], n_out, &mut chunk) };
                T::store(&chunk, y_cols);
            } else {
                acc.resize(cols, 0.0);
                T::load(y_cols, acc);
                for (k, &hk) in h_i.iter().enumerate() {
                    axpy::<FMA>(hk, &bt[k * n_out + c0..k * n_out + c0 + cols], acc);
                }
                T::store(acc, y_cols);
            }
        }
        c0 += cols;
    }
}

mod simd;

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;
