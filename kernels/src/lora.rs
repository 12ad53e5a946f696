//! Multi-LoRA linear add over a flattened token batch.
//!
//! Every LoRA-targeted linear computes `y = x W^T + scale_i * (x A_i^T) B_i^T` per token,
//! where `i` is the token's adapter *slot* (none for base-model tokens). [`lora_add`] does the
//! second term for a whole mixed batch at once, without splitting the batch per adapter and
//! without merging weights:
//!
//! * [`LoraWeights`] holds the stacked adapters of one projection of one layer for all
//!   resident slots: `a (num_slots, max_rank, in_dim)`, `b (num_slots, out_dim, max_rank)`
//!   (PEFT's `lora_A` / `lora_B` layouts with the rank zero-padded to `max_rank`) and
//!   `scales (num_slots,)` f32.
//! * [`LoraBatch`] says which slot each token uses, both per token (`token_slots`, what a
//!   BGMV kernel gathers by) and as segments of consecutive tokens sharing a slot
//!   (`seg_starts` / `seg_slots`, what an SGMV kernel loops over). It is built once per step on
//!   the host and shared by every LoRA linear of every layer.
//!
//! The CPU implementation picks a strategy per segment: short segments (decode tokens) go
//! token by token, each gathering its slot's `A` and `B` (BGMV, "batched gather
//! matrix-vector"); segments of at least [`LORA_SGMV_MIN_TOKENS`] tokens (prefill chunks) run
//! as two small matrix products `(T_s, in) x (in, r)` and `(T_s, r) x (r, out)` in tiles of
//! tokens that reuse every weight row they load (SGMV, "segmented gather matrix-vector").
//! A token's result depends only on its own row, its slot and its segment's length (which
//! picks the path), never on the rest of the batch or the thread count; with the
//! per-sequence segments of [`LoraBatch::from_host`] a sequence's result is bit-identical
//! alone or in any batch. Base-model rows cost nothing.

use candle_core::{bail, CpuStorage, CustomOp3, DType, Device, Layout, Result, Shape, Tensor};

use crate::cache_write::check_float_dtype;

/// CPU strategy switch: LoRA segments with at least this many tokens use the SGMV path
/// (tiles of tokens sharing the slot's weights, with `B` transposed once per call for the
/// slot); shorter ones (decode tokens) use the per-token BGMV path. The two paths agree to
/// f32 rounding (they sum the expand in different orders).
pub const LORA_SGMV_MIN_TOKENS: usize = 8;

/// Stacked adapter weights of one projection of one layer for all resident slots.
///
/// * `a`: `(num_slots, max_rank, in_dim)`, `b`: `(num_slots, out_dim, max_rank)`, same float
///   dtype (f32, f16 or bf16, matching the activations), contiguous. Slot `s` with rank
///   `r_s < max_rank` keeps its adapter in rows `0..r_s` of `a[s]` and columns `0..r_s` of
///   `b[s]`; the padding should be zero.
/// * `scales`: `(num_slots,)` f32, `alpha / r` (or `alpha / sqrt(r)` for rsLoRA) per slot;
///   0 for an empty slot.
/// * `ranks`: optional host-side hint with the rank of every slot (`<= max_rank`). When
///   given, rank rows/columns at or past `ranks[s]` are never read (the reference ignores
///   them too), which saves `max_rank / r_s` of the work for low-rank adapters in a
///   high-`max_rank` pool. `None` means every slot uses the full `max_rank`.
#[derive(Debug, Clone)]
pub struct LoraWeights {
    pub a: Tensor,
    pub b: Tensor,
    pub scales: Tensor,
    pub ranks: Option<Vec<usize>>,
}

/// Sizes of one [`LoraWeights`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct WeightDims {
    pub num_slots: usize,
    pub max_rank: usize,
    pub in_dim: usize,
    pub out_dim: usize,
}

impl LoraWeights {
    /// Wraps the stacked tensors (no per-slot rank hint) after checking that their shapes,
    /// dtypes and devices agree.
    pub fn new(a: Tensor, b: Tensor, scales: Tensor) -> Result<Self> {
        let w = Self {
            a,
            b,
            scales,
            ranks: None,
        };
        w.check("LoraWeights::new")?;
        Ok(w)
    }

    /// Adds the per-slot rank hint (see the type docs); fails unless there is one rank per
    /// slot, each at most `max_rank`.
    pub fn with_ranks(mut self, ranks: Vec<usize>) -> Result<Self> {
        self.ranks = Some(ranks);
        self.check("LoraWeights::with_ranks")?;
        Ok(self)
    }

    /// Number of adapter slots (dim 0 of `a`, `b` and `scales`).
    pub fn num_slots(&self) -> usize {
        self.a.dims().first().copied().unwrap_or(0)
    }

    /// Padded rank (dim 1 of `a`).
    pub fn max_rank(&self) -> usize {
        self.a.dims().get(1).copied().unwrap_or(0)
    }

    /// Validates shapes, dtypes, devices and contiguity (no data is read).
    pub(crate) fn check(&self, op: &str) -> Result<WeightDims> {
        let &[num_slots, max_rank, in_dim] = self.a.dims() else {
            bail!(
                "{op}: lora a must have shape (num_slots, max_rank, in_dim), got {:?}",
                self.a.shape()
            );
        };
        let &[b_slots, out_dim, b_rank] = self.b.dims() else {
            bail!(
                "{op}: lora b must have shape (num_slots, out_dim, max_rank), got {:?}",
                self.b.shape()
            );
        };
        if (b_slots, b_rank) != (num_slots, max_rank) {
            bail!(
                "{op}: lora b has shape {:?} but a has shape {:?}: (num_slots, max_rank) must agree",
                self.b.shape(),
                self.a.shape()
            );
        }
        if self.scales.dims() != [num_slots] {
            bail!(
                "{op}: lora scales must have shape ({num_slots},), got {:?}",
                self.scales.shape()
            );
        }
        check_float_dtype(op, "lora a", self.a.dtype())?;
        if self.b.dtype() != self.a.dtype() {
            bail!(
                "{op}: lora b has dtype {:?} but a has dtype {:?}",
                self.b.dtype(),
                self.a.dtype()
            );
        }
        if self.scales.dtype() != DType::F32 {
            bail!(
                "{op}: lora scales must be f32, got {:?}",
                self.scales.dtype()
            );
        }
        for (name, t) in [("b", &self.b), ("scales", &self.scales)] {
            if !t.device().same_device(self.a.device()) {
                bail!(
                    "{op}: lora {name} is on {:?} but a is on {:?}",
                    t.device(),
                    self.a.device()
                );
            }
        }
        for (name, t) in [("a", &self.a), ("b", &self.b)] {
            if !t.is_contiguous() {
                bail!(
                    "{op}: lora {name} must be contiguous (got strides {:?})",
                    t.stride()
                );
            }
        }
        if let Some(ranks) = &self.ranks {
            if ranks.len() != num_slots {
                bail!(
                    "{op}: ranks has {} entries but there are {num_slots} slots",
                    ranks.len()
                );
            }
            if let Some((s, &r)) = ranks.iter().enumerate().find(|(_, &r)| r > max_rank) {
                bail!("{op}: ranks[{s}] = {r} exceeds max_rank = {max_rank}");
            }
        }
        Ok(WeightDims {
            num_slots,
            max_rank,
            in_dim,
            out_dim,
        })
    }

    /// Effective rank of every slot (`ranks` or `max_rank` everywhere).
    pub(crate) fn effective_ranks(&self, dims: WeightDims) -> Vec<usize> {
        match &self.ranks {
            Some(r) => r.clone(),
            None => vec![dims.max_rank; dims.num_slots],
        }
    }
}

/// Per-batch LoRA metadata: which adapter slot each token of the flattened batch uses.
///
/// Build it with [`LoraBatch::from_host`]; the fields are public for kernels and tests, and
/// a hand-built value is validated against itself before a kernel reads it (on CPU).
#[derive(Debug, Clone)]
pub struct LoraBatch {
    /// `(num_tokens,)` i32: slot of each token, `-1` = base model (no LoRA).
    pub token_slots: Tensor,
    /// `(num_segments + 1,)` u32: segment `g` covers batch rows
    /// `seg_starts[g]..seg_starts[g + 1]`; `seg_starts[0] = 0` and the last entry is
    /// `num_tokens`. Every token of a segment has the segment's slot. `from_host` makes one
    /// segment per sequence with rows this step (base sequences included) and does not merge
    /// adjacent sequences that share an adapter: the CPU kernel picks its path by segment
    /// length, so per-sequence segments keep a sequence's result independent of its
    /// neighbours. Kernels accept any such partition (merged runs are fine too).
    pub seg_starts: Tensor,
    /// `(num_segments,)` i32: slot of each segment, `-1` = base model.
    pub seg_slots: Tensor,
    /// True when at least one token uses an adapter; when false, callers skip the LoRA path
    /// entirely and [`lora_add`] returns `y` as is without reading any metadata.
    pub any_lora: bool,
    /// Number of tokens with an adapter.
    pub num_lora_tokens: usize,
    /// Longest segment with an adapter (0 when `!any_lora`): sizes SGMV grids and scratch.
    pub max_lora_segment_len: usize,
}

impl LoraBatch {
    /// Builds the metadata on `device` for sequences laid out one after another in the batch:
    /// sequence `s` owns the next `query_lens[s]` rows and uses adapter slot `seq_slots[s]`
    /// (`None` = base model). Each sequence with rows becomes one segment; sequences with no
    /// rows this step are skipped.
    ///
    /// Fails when the slices differ in length, when a slot does not fit in i32, or when the
    /// total token count does not fit in u32.
    pub fn from_host(
        seq_slots: &[Option<u32>],
        query_lens: &[usize],
        device: &Device,
    ) -> Result<Self> {
        const OP: &str = "LoraBatch::from_host";
        if seq_slots.len() != query_lens.len() {
            bail!(
                "{OP}: seq_slots has {} entries but query_lens has {}",
                seq_slots.len(),
                query_lens.len()
            );
        }
        let Some(num_tokens) = query_lens
            .iter()
            .try_fold(0usize, |acc, &q| acc.checked_add(q))
        else {
            bail!("{OP}: query_lens overflow usize");
        };
        if u32::try_from(num_tokens).is_err() {
            bail!("{OP}: {num_tokens} tokens do not fit in u32 segment offsets");
        }
        let mut token_slots = Vec::with_capacity(num_tokens);
        let mut seg_starts = vec![0u32];
        let mut seg_slots: Vec<i32> = Vec::new();
        for (s, (&slot, &qlen)) in seq_slots.iter().zip(query_lens).enumerate() {
            if qlen == 0 {
                continue;
            }
            let slot = match slot {
                None => -1,
                Some(v) => match i32::try_from(v) {
                    Ok(v) => v,
                    Err(_) => bail!("{OP}: seq_slots[{s}] = {v} does not fit in i32"),
                },
            };
            token_slots.resize(token_slots.len() + qlen, slot);
            seg_slots.push(slot);
            // Fits: token_slots.len() <= num_tokens, checked above.
            seg_starts.push(token_slots.len() as u32);
        }
        let num_lora_tokens = token_slots.iter().filter(|&&s| s >= 0).count();
        let max_lora_segment_len = seg_slots
            .iter()
            .zip(seg_starts.windows(2))
            .filter(|(&slot, _)| slot >= 0)
            .map(|(_, w)| (w[1] - w[0]) as usize)
            .max()
            .unwrap_or(0);
        let num_segments = seg_slots.len();
        Ok(Self {
            token_slots: Tensor::from_vec(token_slots, num_tokens, device)?,
            seg_starts: Tensor::from_vec(seg_starts, num_segments + 1, device)?,
            seg_slots: Tensor::from_vec(seg_slots, num_segments, device)?,
            any_lora: num_lora_tokens > 0,
            num_lora_tokens,
            max_lora_segment_len,
        })
    }

    /// Number of batch rows (`token_slots.len()`).
    pub fn num_tokens(&self) -> usize {
        self.token_slots.elem_count()
    }

    /// Number of segments (base segments included).
    pub fn num_segments(&self) -> usize {
        self.seg_slots.elem_count()
    }

    /// Checks ranks, dtypes and devices of the metadata tensors (no data is read).
    fn check_shapes(&self, op: &str, num_tokens: usize, device: &Device) -> Result<()> {
        if self.token_slots.dims() != [num_tokens] {
            bail!(
                "{op}: batch.token_slots must have shape ({num_tokens},) to match x and y, got {:?}",
                self.token_slots.shape()
            );
        }
        let &[num_segments] = self.seg_slots.dims() else {
            bail!(
                "{op}: batch.seg_slots must be 1-D, got {:?}",
                self.seg_slots.shape()
            );
        };
        if self.seg_starts.dims() != [num_segments + 1] {
            bail!(
                "{op}: batch.seg_starts must have shape ({},) for {num_segments} segments, got {:?}",
                num_segments + 1,
                self.seg_starts.shape()
            );
        }
        for (name, t, dtype) in [
            ("token_slots", &self.token_slots, DType::I32),
            ("seg_starts", &self.seg_starts, DType::U32),
            ("seg_slots", &self.seg_slots, DType::I32),
        ] {
            if t.dtype() != dtype {
                bail!("{op}: batch.{name} must be {dtype:?}, got {:?}", t.dtype());
            }
            if !t.device().same_device(device) {
                bail!(
                    "{op}: batch.{name} is on {:?} but y is on {device:?}",
                    t.device()
                );
            }
        }
        Ok(())
    }
}

/// Problem sizes of one `lora_add` call.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LoraDims {
    pub num_tokens: usize,
    pub w: WeightDims,
}

/// One run of consecutive batch rows `lo..hi` using adapter `slot`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Segment {
    pub lo: usize,
    pub hi: usize,
    pub slot: usize,
}

/// Host copy of the batch metadata and scales, validated: the LoRA segments (base segments
/// dropped) in row order, disjoint, within the batch, with in-range slots.
#[derive(Debug)]
pub(crate) struct LoraPlan {
    pub segments: Vec<Segment>,
    pub scales: Vec<f32>,
    pub ranks: Vec<usize>,
}

impl LoraPlan {
    /// Reads the metadata to host memory (cheap on CPU) and validates every index a kernel
    /// will use: segment offsets start at 0, never decrease and end at `num_tokens`; segment
    /// slots are `-1` or `< num_slots`; and every token's slot equals its segment's slot.
    pub fn read_and_validate(w: &LoraWeights, batch: &LoraBatch, dims: LoraDims) -> Result<Self> {
        const OP: &str = "lora_add";
        let token_slots = batch.token_slots.to_vec1::<i32>()?;
        let seg_starts = batch.seg_starts.to_vec1::<u32>()?;
        let seg_slots = batch.seg_slots.to_vec1::<i32>()?;
        let scales = w.scales.to_vec1::<f32>()?;
        let num_slots = dims.w.num_slots;
        if token_slots.len() != dims.num_tokens
            || seg_starts.len() != seg_slots.len() + 1
            || scales.len() != num_slots
        {
            bail!("{OP}: metadata lengths disagree with the tensors");
        }
        if seg_starts.first() != Some(&0) {
            bail!(
                "{OP}: batch.seg_starts[0] must be 0, got {:?}",
                seg_starts.first()
            );
        }
        if seg_starts.last().map(|&e| e as usize) != Some(dims.num_tokens) {
            bail!(
                "{OP}: batch.seg_starts must end at num_tokens = {}, got {:?}",
                dims.num_tokens,
                seg_starts.last()
            );
        }
        let mut segments = Vec::new();
        for (g, (&slot, w)) in seg_slots.iter().zip(seg_starts.windows(2)).enumerate() {
            let (lo, hi) = (w[0] as usize, w[1] as usize);
            if hi < lo {
                bail!("{OP}: batch.seg_starts decreases at segment {g} ({lo} > {hi})");
            }
            if slot < -1 || (slot >= 0 && slot as usize >= num_slots) {
                bail!(
                    "{OP}: batch.seg_slots[{g}] = {slot} is out of range for {num_slots} adapter slots (-1 = base)"
                );
            }
            if let Some((t, &ts)) = token_slots[lo..hi]
                .iter()
                .enumerate()
                .find(|(_, &ts)| ts != slot)
            {
                bail!(
                    "{OP}: batch.token_slots[{}] = {ts} disagrees with its segment {g} (slot {slot})",
                    lo + t
                );
            }
            if slot >= 0 && hi > lo {
                segments.push(Segment {
                    lo,
                    hi,
                    slot: slot as usize,
                });
            }
        }
        Ok(Self {
            segments,
            scales,
            ranks: w.effective_ranks(dims.w),
        })
    }
}

/// `y + scale[s] * (x A[s]^T) B[s]^T` for every token whose slot `s >= 0`; rows of base
/// tokens are copied from `y` unchanged.
///
/// * `y`: `(num_tokens, out_dim)`, the base projection `x W^T`; any layout.
/// * `x`: `(num_tokens, in_dim)`, the projection's input; any layout (made contiguous).
/// * `w`: the stacked adapters of this projection (see [`LoraWeights`]).
/// * `batch`: the step's slot metadata (see [`LoraBatch`]).
///
/// `x`, `y`, `w.a` and `w.b` share one dtype (f32, f16 or bf16); products are accumulated in
/// f32 and the result has `y`'s dtype and shape. Returns a new tensor; when
/// `batch.any_lora` is false (or the batch is empty) it returns `y` itself (a cheap clone
/// sharing storage) after the shape checks, without reading any metadata.
///
/// Shapes, dtypes and devices are checked before any data is read; on CPU the metadata is
/// then validated (segment offsets, slot range, token slots agreeing with their segments)
/// before anything is computed, so a slot `>= num_slots` is an error, never a wild read.
pub fn lora_add(y: &Tensor, x: &Tensor, w: &LoraWeights, batch: &LoraBatch) -> Result<Tensor> {
    const OP: &str = "lora_add";
    let &[num_tokens, out_dim] = y.dims() else {
        bail!(
            "{OP}: y must have shape (num_tokens, out_dim), got {:?}",
            y.shape()
        );
    };
    let &[x_tokens, in_dim] = x.dims() else {
        bail!(
            "{OP}: x must have shape (num_tokens, in_dim), got {:?}",
            x.shape()
        );
    };
    if x_tokens != num_tokens {
        bail!("{OP}: x has {x_tokens} rows but y has {num_tokens}");
    }
    let wd = w.check(OP)?;
    if wd.in_dim != in_dim {
        bail!(
            "{OP}: x has in_dim {in_dim} but lora a has in_dim {}",
            wd.in_dim
        );
    }
    if wd.out_dim != out_dim {
        bail!(
            "{OP}: y has out_dim {out_dim} but lora b has out_dim {}",
            wd.out_dim
        );
    }
    check_float_dtype(OP, "y", y.dtype())?;
    for (name, t) in [("x", x), ("lora a", &w.a), ("lora b", &w.b)] {
        if t.dtype() != y.dtype() {
            bail!(
                "{OP}: {name} has dtype {:?} but y has dtype {:?}",
                t.dtype(),
                y.dtype()
            );
        }
    }
    for (name, t) in [("x", x), ("lora a", &w.a)] {
        if !t.device().same_device(y.device()) {
            bail!(
                "{OP}: {name} is on {:?} but y is on {:?}",
                t.device(),
                y.device()
            );
        }
    }
    batch.check_shapes(OP, num_tokens, y.device())?;
    if !batch.any_lora || num_tokens == 0 {
        return Ok(y.clone());
    }
    let x = x.contiguous()?;
    let op = LoraAddOp {
        y: y.clone(),
        w: w.clone(),
        batch: batch.clone(),
        dims: LoraDims { num_tokens, w: wd },
    };
    x.apply_op3_no_bwd(&w.a, &w.b, &op)
}

/// `x.apply_op3_no_bwd(a, b)`: candle's op traits carry three tensors, so `y` (read once to
/// seed the output), the scales and the metadata ride along in the op.
struct LoraAddOp {
    y: Tensor,
    w: LoraWeights,
    batch: LoraBatch,
    dims: LoraDims,
}

impl CustomOp3 for LoraAddOp {
    fn name(&self) -> &'static str {
        "lantern-lora-add"
    }

    fn cpu_fwd(
        &self,
        x: &CpuStorage,
        x_l: &Layout,
        a: &CpuStorage,
        a_l: &Layout,
        b: &CpuStorage,
        b_l: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let plan = LoraPlan::read_and_validate(&self.w, &self.batch, self.dims)?;
        crate::cpu::lora::lora_add_cpu((x, x_l), (a, a_l), (b, b_l), &self.y, &plan, self.dims)
    }

    /// CUDA: the metadata is not read back to the host (no validation of its values; tokens
    /// with an out-of-range slot are skipped), and the rank hint is passed to the kernels for
    /// the first 64 slots (later slots use `max_rank`, which is exact when the padding is zero).
    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        x: &candle_core::CudaStorage,
        x_l: &Layout,
        a: &candle_core::CudaStorage,
        a_l: &Layout,
        b: &candle_core::CudaStorage,
        b_l: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        crate::cuda::lora::lora_add_cuda(
            (x, x_l),
            (a, a_l),
            (b, b_l),
            &self.y,
            &self.w,
            &self.batch,
            self.dims,
        )
    }
}
