//! Token sampling on the device: one token id per logits row, without copying the logits to
//! the host.
//!
//! [`SamplingBatch`] packs the per-row parameters (built once per step on the host with
//! [`SamplingBatch::from_host`]) and [`sample_tokens`] returns `(num_rows,)` u32 token ids.
//! This is the runtime's sampler (`crates/runtime/src/sampler.rs` builds the batch, derives
//! each row's draw from its seed and output index, and adds logprobs). The random draw is
//! supplied per row (`uniform` in `[0, 1)`) so results are reproducible:
//!
//! 1. *Processing* (sparse, per row): `x = logit + bias`; if `repetition_penalty != 1` and the
//!    token was seen (prompt or output): `x = x > 0 ? x / rp : x * rp`; if it occurs `c > 0`
//!    times in the output: `x -= presence + frequency * c`; banned tokens get `-inf`. NaN
//!    logits count as `-inf`.
//! 2. *Greedy* (`temperature == 0` or `top_k == 1`, or a row whose max is not finite): the
//!    arg-max (lowest index on ties).
//! 3. Otherwise weights `w_i = exp((x_i - max) / T)` (f32), held as fixed-point integers
//!    `W_i = trunc(w_i * 2^40)` so every sum is exact and order-independent (CPU and GPU agree
//!    except where their `exp` differ in the last bit).
//!    * No filter (`top_k == 0`, `top_p == 1`, `min_p == 0`): walk the CDF in index order and
//!      pick the first `i` whose cumulative weight exceeds `floor(u * sum W)`.
//!    * Filters, over the order *logit descending, index ascending*: the first
//!      `n_cand = min(top_k, V)` tokens (all without top_k) are the candidates and their
//!      weight is `total`; min-p keeps the candidates with `w_i >= min_p` (at least one);
//!      top-p keeps the shortest prefix whose weight reaches `ceil(top_p * total)` (within
//!      what min-p kept); the token is drawn from the kept prefix with target
//!      `floor(u * kept_weight)`, walking in that order.

use candle_core::{bail, CpuStorage, CustomOp1, DType, Device, Layout, Result, Shape, Tensor};

/// Columns of [`SamplingBatch::params`].
pub const SAMPLING_PARAM_COLS: usize = 8;
/// Largest vocabulary [`sample_tokens`] accepts (fixed-point sums must fit in u64, and
/// `top_k` is stored exactly in an f32).
pub const MAX_SAMPLING_VOCAB: usize = 1 << 24;

/// A request's logits processing and sampling parameters: the one definition shared by the
/// runtime's sampler, the engine's request parameters and both kernels (whose params table row
/// is these seven values plus the row's draw).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SamplingParams {
    /// 0 = greedy; otherwise finite and > 0.
    pub temperature: f32,
    /// 0 = disabled.
    pub top_k: usize,
    /// In `(0, 1]`; 1 = disabled.
    pub top_p: f32,
    /// In `[0, 1]`; 0 = disabled.
    pub min_p: f32,
    /// > 0; 1 = disabled. HF semantics: applies to prompt and output tokens.
    pub repetition_penalty: f32,
    /// OpenAI semantics: applies to output tokens.
    pub presence_penalty: f32,
    /// Times the token's count in the output.
    pub frequency_penalty: f32,
}

impl Default for SamplingParams {
    /// OpenAI's defaults: temperature 1, no filter, no penalty.
    fn default() -> Self {
        Self {
            temperature: 1.0,
            top_k: 0,
            top_p: 1.0,
            min_p: 0.0,
            repetition_penalty: 1.0,
            presence_penalty: 0.0,
            frequency_penalty: 0.0,
        }
    }
}

impl SamplingParams {
    /// Greedy decoding with no processing.
    pub fn greedy() -> Self {
        Self {
            temperature: 0.0,
            ..Self::default()
        }
    }

    /// Decodes one row of [`SamplingBatch::params`]: the parameters and the row's draw.
    pub(crate) fn from_table_row(p: &[f32]) -> (Self, f32) {
        let params = Self {
            temperature: p[0],
            top_k: if p[1] > 0.0 { p[1] as usize } else { 0 },
            top_p: p[2],
            min_p: p[3],
            repetition_penalty: p[4],
            presence_penalty: p[5],
            frequency_penalty: p[6],
        };
        (params, p[7])
    }
}

/// One row to sample: its parameters, the token history its penalties need, and its draw.
#[derive(Debug, Clone, Copy)]
pub struct SamplingRow<'a> {
    pub params: SamplingParams,
    /// Added to the logits first; biases of the same token are summed. Finite.
    pub logit_bias: &'a [(u32, f32)],
    pub prompt_tokens: &'a [u32],
    pub output_tokens: &'a [u32],
    /// Tokens that must not be sampled (e.g. EOS below `min_tokens`).
    pub banned: &'a [u32],
    /// The row's uniform random number in `[0, 1)`.
    pub uniform: f32,
}

impl SamplingRow<'_> {
    /// Greedy decoding with no processing.
    pub fn greedy() -> Self {
        Self {
            params: SamplingParams::greedy(),
            logit_bias: &[],
            prompt_tokens: &[],
            output_tokens: &[],
            banned: &[],
            uniform: 0.0,
        }
    }

    fn is_greedy(&self) -> bool {
        self.params.temperature == 0.0 || self.params.top_k == 1
    }
}

/// Per-step sampling metadata on the logits' device.
#[derive(Debug, Clone)]
pub struct SamplingBatch {
    /// `(num_rows, 8)` f32: temperature, top_k (an exact integer), top_p, min_p,
    /// repetition_penalty, presence_penalty, frequency_penalty, uniform.
    pub params: Tensor,
    /// `(num_rows + 1,)` u32: row `r` owns entries `entry_offsets[r]..entry_offsets[r + 1]`.
    pub entry_offsets: Tensor,
    /// `(max(num_entries, 1), 4)` u32 processing entries, at most one per (row, token):
    /// `[token, seen (0/1, for the repetition penalty), output count, f32 bits of the bias]`
    /// (banned tokens have bias `-inf`). A single dummy row when there are none.
    pub entries: Tensor,
    pub num_entries: usize,
    /// Every row is greedy and has no entries: the arg-max fast path.
    pub all_greedy: bool,
}

impl SamplingBatch {
    /// Validates the rows and packs them on `device` (three small host-to-device copies).
    /// Errors name the row and field that is out of range.
    pub fn from_host(rows: &[SamplingRow<'_>], device: &Device) -> Result<Self> {
        const OP: &str = "SamplingBatch::from_host";
        let mut params = Vec::with_capacity(rows.len() * SAMPLING_PARAM_COLS);
        let mut offsets = Vec::with_capacity(rows.len() + 1);
        let mut entries: Vec<u32> = Vec::new();
        offsets.push(0u32);
        for (i, r) in rows.iter().enumerate() {
            if !(r.params.temperature.is_finite() && r.params.temperature >= 0.0) {
                bail!(
                    "{OP}: rows[{i}].temperature must be finite and >= 0, got {}",
                    r.params.temperature
                );
            }
            if !(r.params.top_p > 0.0 && r.params.top_p <= 1.0) {
                bail!(
                    "{OP}: rows[{i}].top_p must be > 0 and <= 1, got {}",
                    r.params.top_p
                );
            }
            if !(0.0..=1.0).contains(&r.params.min_p) {
                bail!(
                    "{OP}: rows[{i}].min_p must be in [0, 1], got {}",
                    r.params.min_p
                );
            }
            if !(r.params.repetition_penalty.is_finite() && r.params.repetition_penalty > 0.0) {
                bail!(
                    "{OP}: rows[{i}].repetition_penalty must be finite and > 0, got {}",
                    r.params.repetition_penalty
                );
            }
            if !(r.params.presence_penalty.is_finite() && r.params.frequency_penalty.is_finite()) {
                bail!("{OP}: rows[{i}] presence/frequency penalties must be finite");
            }
            if !(0.0..1.0).contains(&r.uniform) {
                bail!(
                    "{OP}: rows[{i}].uniform must be in [0, 1), got {}",
                    r.uniform
                );
            }
            if let Some((t, b)) = r.logit_bias.iter().find(|(_, b)| !b.is_finite()) {
                bail!("{OP}: rows[{i}].logit_bias for token {t} must be finite, got {b}");
            }
            let top_k = r.params.top_k.min(MAX_SAMPLING_VOCAB);
            params.extend_from_slice(&[
                r.params.temperature,
                top_k as f32,
                r.params.top_p,
                r.params.min_p,
                r.params.repetition_penalty,
                r.params.presence_penalty,
                r.params.frequency_penalty,
                r.uniform,
            ]);
            // token -> (seen, count, bias)
            let mut map = std::collections::BTreeMap::<u32, (bool, u32, f32)>::new();
            for &(t, b) in r.logit_bias {
                map.entry(t).or_insert((false, 0, 0.0)).2 += b;
            }
            if r.params.repetition_penalty != 1.0 {
                for &t in r.prompt_tokens.iter().chain(r.output_tokens) {
                    map.entry(t).or_insert((false, 0, 0.0)).0 = true;
                }
            }
            if r.params.presence_penalty != 0.0 || r.params.frequency_penalty != 0.0 {
                for &t in r.output_tokens {
                    let e = map.entry(t).or_insert((false, 0, 0.0));
                    e.1 = e.1.saturating_add(1);
                }
            }
            for &t in r.banned {
                map.entry(t).or_insert((false, 0, 0.0)).2 = f32::NEG_INFINITY;
            }
            for (t, (seen, count, bias)) in map {
                entries.extend_from_slice(&[t, u32::from(seen), count, bias.to_bits()]);
            }
            match u32::try_from(entries.len() / 4) {
                Ok(n) => offsets.push(n),
                Err(_) => bail!("{OP}: too many processing entries"),
            }
        }
        let num_entries = entries.len() / 4;
        let all_greedy = num_entries == 0 && rows.iter().all(|r| r.is_greedy());
        if entries.is_empty() {
            entries.extend_from_slice(&[u32::MAX, 0, 0, 0]);
        }
        let n = rows.len();
        Ok(Self {
            params: Tensor::from_vec(params, (n, SAMPLING_PARAM_COLS), device)?,
            entry_offsets: Tensor::from_vec(offsets, n + 1, device)?,
            entries: Tensor::from_vec(entries, (num_entries.max(1), 4), device)?,
            num_entries,
            all_greedy,
        })
    }

    /// Number of rows.
    pub fn num_rows(&self) -> usize {
        self.params.dims().first().copied().unwrap_or(0)
    }

    fn check(&self, op: &str, rows: usize, device: &Device) -> Result<()> {
        if self.params.dims() != [rows, SAMPLING_PARAM_COLS] {
            bail!(
                "{op}: batch.params must have shape ({rows}, {SAMPLING_PARAM_COLS}) for {rows} logits rows, got {:?}",
                self.params.shape()
            );
        }
        if self.entry_offsets.dims() != [rows + 1] {
            bail!(
                "{op}: batch.entry_offsets must have shape ({},), got {:?}",
                rows + 1,
                self.entry_offsets.shape()
            );
        }
        let &[ne, 4] = self.entries.dims() else {
            bail!(
                "{op}: batch.entries must have shape (n, 4), got {:?}",
                self.entries.shape()
            );
        };
        if ne < self.num_entries.max(1) {
            bail!(
                "{op}: batch.entries has {ne} rows but num_entries = {}",
                self.num_entries
            );
        }
        for (name, t, dtype) in [
            ("params", &self.params, DType::F32),
            ("entry_offsets", &self.entry_offsets, DType::U32),
            ("entries", &self.entries, DType::U32),
        ] {
            if t.dtype() != dtype {
                bail!("{op}: batch.{name} must be {dtype:?}, got {:?}", t.dtype());
            }
            if !t.device().same_device(device) {
                bail!(
                    "{op}: batch.{name} is on {:?} but the logits are on {device:?}",
                    t.device()
                );
            }
        }
        Ok(())
    }
}

/// Samples one token per row of `logits` (see the module docs for the exact semantics).
///
/// * `logits`: `(num_rows, vocab)` f32, f16 or bf16, unit stride on `vocab` (rows may be
///   strided); `0 < vocab <= 2^24`.
/// * `batch`: built for `num_rows` rows on the logits' device.
///
/// Returns `(num_rows,)` u32 token ids on the logits' device.
pub fn sample_tokens(logits: &Tensor, batch: &SamplingBatch) -> Result<Tensor> {
    const OP: &str = "sample_tokens";
    let &[rows, vocab] = logits.dims() else {
        bail!(
            "{OP}: logits must have shape (num_rows, vocab), got {:?}",
            logits.shape()
        );
    };
    if vocab == 0 || vocab > MAX_SAMPLING_VOCAB {
        bail!("{OP}: vocab = {vocab} must be in 1..={MAX_SAMPLING_VOCAB}");
    }
    crate::cache_write::check_float_dtype(OP, "logits", logits.dtype())?;
    batch.check(OP, rows, logits.device())?;
    let logits = if logits.stride()[1] == 1 {
        logits.clone()
    } else {
        logits.contiguous()?
    };
    logits.apply_op1_no_bwd(&SampleOp {
        batch: batch.clone(),
    })
}

/// Host copy of a [`SamplingBatch`].
pub(crate) struct HostSampling {
    pub params: Vec<f32>,
    pub offsets: Vec<u32>,
    pub entries: Vec<u32>,
}

impl HostSampling {
    pub fn read(batch: &SamplingBatch) -> Result<Self> {
        let h = Self {
            params: batch.params.flatten_all()?.to_vec1::<f32>()?,
            offsets: batch.entry_offsets.to_vec1::<u32>()?,
            entries: batch.entries.flatten_all()?.to_vec1::<u32>()?,
        };
        let rows = h.offsets.len().saturating_sub(1);
        if h.params.len() != rows * SAMPLING_PARAM_COLS {
            bail!("sample_tokens: batch.params and batch.entry_offsets disagree");
        }
        let mut prev = 0u32;
        for (r, &o) in h.offsets.iter().enumerate() {
            if o < prev || o as usize * 4 > h.entries.len() {
                bail!(
                    "sample_tokens: batch.entry_offsets[{r}] = {o} is decreasing or past the {} entries",
                    h.entries.len() / 4
                );
            }
            prev = o;
        }
        Ok(h)
    }
}

struct SampleOp {
    batch: SamplingBatch,
}

impl CustomOp1 for SampleOp {
    fn name(&self) -> &'static str {
        "lantern-sample-tokens"
    }

    fn cpu_fwd(&self, logits: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let host = HostSampling::read(&self.batch)?;
        let ids = crate::cpu::sampling::sample_cpu((logits, l), &host)?;
        let n = ids.len();
        Ok((CpuStorage::U32(ids), Shape::from(n)))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        logits: &candle_core::CudaStorage,
        l: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        let s = crate::cuda::sampling::sample_cuda((logits, l), &self.batch)?;
        Ok((s, Shape::from(l.dims()[0])))
    }
}
