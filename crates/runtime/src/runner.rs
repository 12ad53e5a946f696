//! [`ModelRunner`]: KV cache allocation, batch preparation and the forward pass.

use crate::device::{describe, gib, memory_info};
use crate::error::{Result, RuntimeError};
use crate::memory::{activation_reserve_bytes, lora_slots_bytes, plan_kv_cache, GpuMemoryBudget};
use crate::null::NullModel;
use crate::sampler::{self, SampleRow, SampledToken};
use candle_core::{DType, Device, Tensor};
use lantern_kernels::{LoraBatch, PagedAttnMetadata};
use lantern_models::{BatchInputs, CausalLm, LayerKvCache, LoraAdapter, LoraStack, ModelConfig};
use std::time::Instant;

/// How large the KV cache should be.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum KvCacheSize {
    /// Room for this many tokens (rounded up to whole blocks).
    Tokens(usize),
    /// Use this many bytes for K and V over all layers.
    Bytes(usize),
    /// What is left of a fraction of the device's memory once the weights are loaded
    /// (CUDA; `--gpu-memory-utilization`). See [`crate::memory`].
    GpuMemory(GpuMemoryBudget),
}

/// Runner settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RunnerConfig {
    pub block_size: usize,
    pub kv_cache: KvCacheSize,
    /// The KV cache's element type (`--kv-cache-dtype`).
    pub kv_cache_dtype: KvCacheDtype,
}

/// `--kv-cache-dtype`: the KV cache's element type. Another type than the model's (an f16
/// or bf16 cache for f32 weights: half the bytes that attention reads per token) runs on
/// the CPU only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum KvCacheDtype {
    /// The model's dtype (vLLM's `auto`).
    #[default]
    Auto,
    /// The model's dtype, but float16 for float32 weights on the CPU: llama.cpp's default
    /// cache type, half the bytes attention reads per cached token and twice the tokens a
    /// cache budget holds (logits within ~5e-3 relative of the f32 cache's). What
    /// `--kv-cache-dtype auto` means for `lantern serve` on the CPU.
    CpuAuto,
    Float32,
    Float16,
    BFloat16,
}

impl KvCacheDtype {
    /// The names `--kv-cache-dtype` takes.
    pub const NAMES: &'static str = "auto, float32, float16 (fp16, half), bfloat16 (bf16)";

    /// Parses a `--kv-cache-dtype` value; `None` for anything else (fp8 included).
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s.to_ascii_lowercase().as_str() {
            "auto" => Self::Auto,
            "float32" | "fp32" | "f32" => Self::Float32,
            "float16" | "fp16" | "f16" | "half" => Self::Float16,
            "bfloat16" | "bf16" => Self::BFloat16,
            _ => return None,
        })
    }

    /// The cache's dtype for a model of `model` dtype, run on the CPU or not.
    pub fn resolve(self, model: DType, on_cpu: bool) -> DType {
        match self {
            Self::Auto => model,
            Self::CpuAuto if on_cpu && model == DType::F32 => DType::F16,
            Self::CpuAuto => model,
            Self::Float32 => DType::F32,
            Self::Float16 => DType::F16,
            Self::BFloat16 => DType::BF16,
        }
    }
}

/// The part of one sequence that runs in this step.
#[derive(Debug, Clone, Copy)]
pub struct SeqChunk<'a> {
    /// The tokens to feed now (a prefill chunk, or the one latest token when decoding).
    pub token_ids: &'a [u32],
    /// How many tokens of this sequence are already in the KV cache (position of token_ids[0]).
    pub num_computed_tokens: usize,
    /// The sequence's whole block table; must cover num_computed_tokens + token_ids.len().
    pub block_table: &'a [u32],
    /// Whether logits are needed for the last token of this chunk.
    pub sample: bool,
    /// Return logits for every token of this chunk (prompt logprobs), not only the last.
    pub all_logits: bool,
    /// Resident LoRA slot of this sequence's adapter (`None`: base model).
    pub lora_slot: Option<u32>,
}

/// What [`ModelRunner::step`] hands back: host data only (the engine holds no tensors).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RunnerOutput {
    /// One token per chunk with `sample`, in batch order.
    pub sampled: Vec<SampledToken>,
    /// For each chunk with `all_logits` (its index in the step's chunks): the f32 logits
    /// row of every token of the chunk; row `j` predicts the token after position
    /// `num_computed_tokens + j`.
    pub all_logits: Vec<(usize, Vec<Vec<f32>>)>,
    /// Wall time of batch preparation and the forward pass (with the null device: its
    /// simulated device time).
    pub forward_seconds: f64,
    /// Wall time of sampling (and of copying logprob rows to the host).
    pub sample_seconds: f64,
}

/// The result of [`ModelRunner::forward_step`]: the logits rows to sample (still on the
/// device) and the host copies of the all-logits rows.
#[derive(Debug)]
pub struct ForwardOutput {
    to_sample: Option<Tensor>,
    num_sample_rows: usize,
    all_logits: Vec<(usize, Vec<Vec<f32>>)>,
    forward_seconds: f64,
}

impl ForwardOutput {
    /// Wall time of batch preparation and the forward pass.
    pub fn forward_seconds(&self) -> f64 {
        self.forward_seconds
    }
}

/// What computes the logits: the real decoder, or the null device's stand-in
/// (`--null-device`, see [`crate::null`]), which has no KV cache tensors.
#[derive(Debug)]
pub enum ModelBackend {
    Causal(CausalLm),
    Null(NullModel),
}

impl From<CausalLm> for ModelBackend {
    fn from(m: CausalLm) -> Self {
        Self::Causal(m)
    }
}

impl From<NullModel> for ModelBackend {
    fn from(m: NullModel) -> Self {
        Self::Null(m)
    }
}

impl ModelBackend {
    /// The model's shapes (for the null device: the simulated model's).
    pub fn config(&self) -> &ModelConfig {
        match self {
            Self::Causal(m) => m.config(),
            Self::Null(m) => m.config(),
        }
    }

    pub fn dtype(&self) -> DType {
        match self {
            Self::Causal(m) => m.dtype(),
            Self::Null(m) => m.dtype(),
        }
    }

    pub fn device(&self) -> &Device {
        match self {
            Self::Causal(m) => m.device(),
            Self::Null(m) => m.device(),
        }
    }

    /// Width of the logits rows: the config's vocabulary, or the null device's tokenizer's.
    pub fn logits_vocab(&self) -> usize {
        match self {
            Self::Causal(m) => m.config().vocab_size,
            Self::Null(m) => m.logits_vocab(),
        }
    }

    fn causal(&self) -> Result<&CausalLm> {
        match self {
            Self::Causal(m) => Ok(m),
            Self::Null(_) => Err(RuntimeError::Device(
                "the null device has no weights (LoRA and CUDA graphs need a real model)".into(),
            )),
        }
    }
}

/// Owns the model and its paged KV cache.
#[derive(Debug)]
pub struct ModelRunner {
    model: ModelBackend,
    kv: Vec<LayerKvCache>,
    block_size: usize,
    num_blocks: usize,
    lora: Option<LoraStack>,
    /// Decode-only steps replay captured CUDA graphs (on by default on CUDA; `--enforce-eager` off). Behind a mutex so
    /// `execute` stays `&self`; only the engine thread ever takes it.
    #[cfg(feature = "cuda")]
    graphs: Option<std::sync::Mutex<crate::graphs::DecodeGraphs>>,
}

impl ModelRunner {
    /// Allocates the KV cache (zeroed) for `model`. The null device gets the block count its
    /// simulated memory allows and no tensors.
    pub fn new(model: impl Into<ModelBackend>, cfg: RunnerConfig) -> Result<Self> {
        let model = model.into();
        if cfg.block_size == 0 {
            return Err(RuntimeError::KvCache(
                "--block-size must be at least 1".into(),
            ));
        }
        let mc = model.config();
        let device = model.device().clone();
        let dtype = cfg.kv_cache_dtype.resolve(model.dtype(), device.is_cpu());
        if dtype != model.dtype() && !device.is_cpu() {
            return Err(RuntimeError::KvCache(format!(
                "a KV cache of {dtype:?} for {:?} weights runs on the CPU only; on {} leave --kv-cache-dtype at auto",
                model.dtype(),
                describe(&device)
            )));
        }
        let bytes_per_token = mc.kv_bytes_per_token(dtype.size_in_bytes());
        let num_blocks = match cfg.kv_cache {
            KvCacheSize::Tokens(t) => t.div_ceil(cfg.block_size),
            KvCacheSize::Bytes(b) => b / (bytes_per_token * cfg.block_size),
            KvCacheSize::GpuMemory(budget) => {
                let mem = match &model {
                    ModelBackend::Null(m) => Some(crate::DeviceMemory {
                        total: m.spec().accelerator.memory_bytes,
                        free: m
                            .spec()
                            .accelerator
                            .memory_bytes
                            .saturating_sub(m.weight_bytes()),
                    }),
                    ModelBackend::Causal(_) => memory_info(&device)?,
                };
                let Some(mem) = mem else {
                    return Err(RuntimeError::KvCache(format!(
                        "--gpu-memory-utilization sizes the KV cache from GPU memory, but the model is on {}; give the size with --kv-cache-memory",
                        describe(&device)
                    )));
                };
                let dsize = model.dtype().size_in_bytes();
                let activations =
                    activation_reserve_bytes(mc, dsize, budget.max_num_batched_tokens);
                let lora = budget
                    .lora
                    .map(|(n, r)| lora_slots_bytes(mc, dsize, n, r))
                    .unwrap_or(0);
                let plan = plan_kv_cache(
                    mem,
                    budget.utilization,
                    activations + lora,
                    (bytes_per_token * cfg.block_size) as u64,
                )
                .map_err(RuntimeError::KvCache)?;
                tracing::info!(
                    "KV cache sizing: {:.2} GiB total, {:.2} GiB in use after loading the weights, limit {:.2} GiB (--gpu-memory-utilization {}), reserve {:.2} GiB (activations for {} tokens{}) -> {:.2} GiB for {} blocks",
                    gib(mem.total),
                    gib(plan.in_use),
                    gib(plan.limit),
                    budget.utilization,
                    gib(plan.reserve),
                    budget.max_num_batched_tokens,
                    if lora > 0 { " + LoRA slots" } else { "" },
                    gib(plan.kv_bytes),
                    plan.num_blocks
                );
                plan.num_blocks
            }
        };
        // Block 0 is the reserved null block; at least one usable block is needed.
        if num_blocks < 2 {
            return Err(RuntimeError::KvCache(format!(
                "the KV cache would hold {num_blocks} blocks of {} tokens ({bytes_per_token} bytes per token); give it more memory",
                cfg.block_size
            )));
        }
        let shape = (
            num_blocks,
            cfg.block_size,
            mc.num_key_value_heads,
            mc.head_dim,
        );
        let mut kv = Vec::with_capacity(mc.num_hidden_layers);
        let layers = match &model {
            ModelBackend::Causal(_) => mc.num_hidden_layers,
            // Block accounting only: nothing is written or read.
            ModelBackend::Null(_) => 0,
        };
        for _ in 0..layers {
            let alloc = || {
                zeroed_cache(shape, dtype, &device).map_err(|e| {
                    RuntimeError::KvCache(format!(
                        "allocating {num_blocks} blocks of {} tokens ({bytes_per_token} bytes per token) on {} failed: {e}; give the KV cache less memory (--kv-cache-memory, --gpu-memory-utilization)",
                        cfg.block_size,
                        describe(&device)
                    ))
                })
            };
            kv.push(LayerKvCache {
                k: alloc()?,
                v: alloc()?,
            });
        }
        if let (ModelBackend::Causal(_), Some(mem)) = (&model, memory_info(&device)?) {
            tracing::info!(
                "KV cache allocated: {:.2} GiB of device memory free",
                gib(mem.free)
            );
        }
        if dtype != model.dtype() {
            tracing::info!(
                "KV cache in {dtype:?} for {:?} weights (--kv-cache-dtype)",
                model.dtype()
            );
        }
        Ok(Self {
            model,
            kv,
            block_size: cfg.block_size,
            num_blocks,
            lora: None,
            #[cfg(feature = "cuda")]
            graphs: None,
        })
    }

    /// Replays decode-only steps (one token per sequence, no LoRA) through CUDA graphs
    /// captured per (padded batch size, block-table width), for batches of up to
    /// `max_num_seqs` sequences (see [`crate::graphs`]). Needs a CUDA build and device.
    pub fn enable_cuda_graphs(&mut self, max_num_seqs: usize) -> Result<()> {
        #[cfg(feature = "cuda")]
        {
            let g = crate::graphs::DecodeGraphs::new(
                self.model.causal()?,
                self.block_size,
                max_num_seqs,
            )?;
            self.graphs = Some(std::sync::Mutex::new(g));
            Ok(())
        }
        #[cfg(not(feature = "cuda"))]
        {
            let _ = max_num_seqs;
            Err(RuntimeError::Device(
                "CUDA graphs need a build with the `cuda` feature and a CUDA device".into(),
            ))
        }
    }

    /// Whether decode steps may run through CUDA graphs.
    pub fn cuda_graphs_enabled(&self) -> bool {
        #[cfg(feature = "cuda")]
        {
            self.graphs.is_some()
        }
        #[cfg(not(feature = "cuda"))]
        {
            false
        }
    }

    /// Runs a decode-only step through a CUDA graph; `None` when graphs are off or cannot
    /// serve this step (the caller runs it eagerly).
    #[cfg(feature = "cuda")]
    fn execute_graph(&self, seqs: &[SeqChunk<'_>]) -> Result<Option<Tensor>> {
        let (Some(graphs), ModelBackend::Causal(model)) = (&self.graphs, &self.model) else {
            return Ok(None);
        };
        let decode_only = seqs
            .iter()
            .all(|s| s.token_ids.len() == 1 && s.sample && !s.all_logits && s.lora_slot.is_none());
        if !decode_only {
            return Ok(None);
        }
        // The same checks and arithmetic as `prepare`, for one token per sequence.
        let bs = self.block_size;
        let max_pos = self.model.config().max_position_embeddings;
        let mut rows = Vec::with_capacity(seqs.len());
        for (i, s) in seqs.iter().enumerate() {
            let pos = s.num_computed_tokens;
            let ctx = pos + 1;
            let nblocks = ctx.div_ceil(bs);
            if ctx > max_pos || s.block_table.len() < nblocks {
                // Let `prepare` report it.
                return Ok(None);
            }
            let block = s.block_table[pos / bs] as usize;
            if block == 0 || block >= self.num_blocks {
                return Err(RuntimeError::InvalidBatch(format!(
                    "sequence {i} uses block {block}, outside 1..{}",
                    self.num_blocks
                )));
            }
            rows.push(crate::graphs::DecodeRow {
                token: s.token_ids[0],
                position: pos as u32,
                slot: (block * bs + pos % bs) as i64,
                table: &s.block_table[..nblocks],
                context_len: ctx as u32,
            });
        }
        let mut g = graphs
            .lock()
            .map_err(|_| RuntimeError::Device("CUDA graph state poisoned by a panic".into()))?;
        g.run(model, &self.kv, &rows)
    }

    /// Allocates `max_loras` adapter slots of rank up to `max_rank` on the model's device.
    pub fn enable_lora(&mut self, max_loras: usize, max_rank: usize) -> Result<()> {
        if max_loras == 0 || max_rank == 0 {
            return Err(RuntimeError::InvalidBatch(
                "--max-loras and --max-lora-rank must be at least 1".into(),
            ));
        }
        let model = self.model.causal()?;
        self.lora = Some(LoraStack::new(
            model.config(),
            max_loras,
            max_rank,
            model.dtype(),
            model.device(),
        )?);
        Ok(())
    }

    /// Copies `adapter` into a resident slot.
    pub fn load_lora(&mut self, slot: u32, adapter: &LoraAdapter) -> Result<()> {
        match self.lora.as_mut() {
            Some(l) => Ok(l.load_slot(slot as usize, adapter)?),
            None => Err(RuntimeError::InvalidBatch("LoRA is not enabled".into())),
        }
    }

    /// Empties a resident slot.
    pub fn clear_lora(&mut self, slot: u32) -> Result<()> {
        match self.lora.as_mut() {
            Some(l) => Ok(l.clear_slot(slot as usize)?),
            None => Ok(()),
        }
    }

    /// The model behind this runner.
    pub fn backend(&self) -> &ModelBackend {
        &self.model
    }

    /// The model's shapes (for the null device: the simulated model's).
    pub fn config(&self) -> &ModelConfig {
        self.model.config()
    }

    /// Simulated device seconds of all steps so far (`None` on a real device).
    pub fn simulated_device_seconds(&self) -> Option<f64> {
        match &self.model {
            ModelBackend::Null(m) => Some(m.device_seconds()),
            ModelBackend::Causal(_) => None,
        }
    }

    pub fn block_size(&self) -> usize {
        self.block_size
    }

    /// Total blocks in the pool, including the reserved null block 0.
    pub fn num_blocks(&self) -> usize {
        self.num_blocks
    }

    pub fn device(&self) -> &Device {
        self.model.device()
    }

    /// Turns a step description into tensors.
    pub fn prepare(&self, seqs: &[SeqChunk<'_>]) -> Result<BatchInputs> {
        let bs = self.block_size;
        let total: usize = seqs.iter().map(|s| s.token_ids.len()).sum();
        let mut input_ids = Vec::with_capacity(total);
        let mut positions = Vec::with_capacity(total);
        let mut slots = Vec::with_capacity(total);
        let mut logits_indices = Vec::new();
        let mut query_lens = Vec::with_capacity(seqs.len());
        let mut context_lens = Vec::with_capacity(seqs.len());
        let mut tables: Vec<Vec<u32>> = Vec::with_capacity(seqs.len());
        let max_pos = self.model.config().max_position_embeddings;
        for (i, s) in seqs.iter().enumerate() {
            let q = s.token_ids.len();
            if q == 0 {
                return Err(RuntimeError::InvalidBatch(format!(
                    "sequence {i} has no tokens"
                )));
            }
            let ctx = s.num_computed_tokens + q;
            if ctx > max_pos {
                return Err(RuntimeError::InvalidBatch(format!(
                    "sequence {i} reaches position {ctx}, beyond the model's {max_pos}"
                )));
            }
            if s.block_table.len() * bs < ctx {
                return Err(RuntimeError::InvalidBatch(format!(
                    "sequence {i} needs {} blocks for {ctx} tokens but its table has {}",
                    ctx.div_ceil(bs),
                    s.block_table.len()
                )));
            }
            for (j, &tok) in s.token_ids.iter().enumerate() {
                let pos = s.num_computed_tokens + j;
                let block = s.block_table[pos / bs] as usize;
                if block == 0 || block >= self.num_blocks {
                    return Err(RuntimeError::InvalidBatch(format!(
                        "sequence {i} uses block {block}, outside 1..{}",
                        self.num_blocks
                    )));
                }
                input_ids.push(tok);
                positions.push(pos as u32);
                slots.push((block * bs + pos % bs) as i64);
            }
            if s.all_logits {
                let end = input_ids.len() as u32;
                logits_indices.extend(end - q as u32..end);
            } else if s.sample {
                logits_indices.push((input_ids.len() - 1) as u32);
            }
            query_lens.push(q);
            context_lens.push(ctx);
            tables.push(s.block_table[..ctx.div_ceil(bs)].to_vec());
        }
        let dev = self.model.device();
        let attn =
            PagedAttnMetadata::from_host(&slots, &tables, &query_lens, &context_lens, bs, dev)?;
        let lora = if seqs.iter().any(|s| s.lora_slot.is_some()) {
            let max = self.lora.as_ref().map(|l| l.max_loras()).unwrap_or(0);
            if let Some(bad) = seqs
                .iter()
                .filter_map(|s| s.lora_slot)
                .find(|&x| x as usize >= max)
            {
                return Err(RuntimeError::InvalidBatch(format!(
                    "LoRA slot {bad} is not resident (LoRA slots: {max})"
                )));
            }
            let seq_slots: Vec<Option<u32>> = seqs.iter().map(|s| s.lora_slot).collect();
            Some(LoraBatch::from_host(&seq_slots, &query_lens, dev)?)
        } else {
            None
        };
        Ok(BatchInputs {
            input_ids: Tensor::from_vec(input_ids, total, dev)?,
            positions: Tensor::from_vec(positions, total, dev)?,
            attn,
            logits_indices: Tensor::from_vec(logits_indices.clone(), logits_indices.len(), dev)?,
            lora,
        })
    }

    /// Runs one step and returns f32 logits for every token of the batch (T, vocab), e.g.
    /// for prompt logprobs (`echo` with `logprobs`) and parity tests.
    pub fn execute_all_logits(&self, seqs: &[SeqChunk<'_>]) -> Result<Tensor> {
        let batch = self.prepare(seqs)?;
        let t = batch.input_ids.dim(0)?;
        let rows: Vec<u32> = (0..t as u32).collect();
        let batch = BatchInputs {
            logits_indices: Tensor::from_vec(rows, t, self.model.device())?,
            ..batch
        };
        self.forward(&batch)
    }

    /// The forward pass of the backend: f32 logits of the rows `batch.logits_indices` selects.
    fn forward(&self, batch: &BatchInputs) -> Result<Tensor> {
        match &self.model {
            ModelBackend::Causal(m) => Ok(on_cpu_pool(m.device(), || {
                m.forward_with_lora(batch, &self.kv, self.lora.as_ref())
            })?),
            ModelBackend::Null(m) => m.forward(batch),
        }
    }

    /// Runs one step and samples it: [`ModelRunner::forward_step`] then
    /// [`ModelRunner::sample_step`]. `rows` holds one [`SampleRow`] per chunk with `sample`,
    /// in batch order. Everything that comes back is host data: the sampled tokens (with
    /// logprobs when a row asked) and, for each chunk with `all_logits`, the f32 logits of
    /// all its tokens (prompt logprobs).
    pub fn step(&self, seqs: &[SeqChunk<'_>], rows: &[SampleRow<'_>]) -> Result<RunnerOutput> {
        let fwd = self.forward_step(seqs)?;
        self.sample_step(fwd, rows)
    }

    /// The forward half of [`ModelRunner::step`]: runs the model and keeps the logits rows
    /// to sample on the device. The engine overlaps host work with it (structured-output
    /// masks) and builds the sample rows afterwards.
    pub fn forward_step(&self, seqs: &[SeqChunk<'_>]) -> Result<ForwardOutput> {
        let t0 = Instant::now();
        let logits = self.execute(seqs)?;
        let mut all_logits = Vec::new();
        let mut to_sample = None;
        if let Some(logits) = logits {
            to_sample = if seqs.iter().any(|s| s.all_logits) {
                self.split_all_logits(seqs, &logits, &mut all_logits)?
            } else {
                Some(logits)
            };
        }
        Ok(ForwardOutput {
            to_sample,
            num_sample_rows: seqs.iter().filter(|s| s.sample).count(),
            all_logits,
            forward_seconds: t0.elapsed().as_secs_f64(),
        })
    }

    /// The sampling half of [`ModelRunner::step`].
    pub fn sample_step(&self, fwd: ForwardOutput, rows: &[SampleRow<'_>]) -> Result<RunnerOutput> {
        if fwd.num_sample_rows != rows.len() {
            return Err(RuntimeError::InvalidBatch(format!(
                "{} sampling rows for {} chunks that sample",
                rows.len(),
                fwd.num_sample_rows
            )));
        }
        let t0 = Instant::now();
        let mut out = RunnerOutput {
            all_logits: fwd.all_logits,
            forward_seconds: fwd.forward_seconds,
            ..RunnerOutput::default()
        };
        if let Some(l) = fwd.to_sample {
            out.sampled = on_cpu_pool(l.device(), || sampler::sample(&l, rows))?;
        }
        out.sample_seconds = t0.elapsed().as_secs_f64();
        Ok(out)
    }

    /// Copies the rows of the `all_logits` chunks to the host (into `all`) and returns the
    /// rows to sample (the last row of each sampling chunk), `None` when no chunk samples.
    fn split_all_logits(
        &self,
        seqs: &[SeqChunk<'_>],
        logits: &Tensor,
        all: &mut Vec<(usize, Vec<Vec<f32>>)>,
    ) -> Result<Option<Tensor>> {
        let mut sample_rows: Vec<u32> = Vec::new();
        let mut row = 0usize;
        for (i, q) in seqs.iter().enumerate() {
            if q.all_logits {
                let n = q.token_ids.len();
                all.push((i, logits.narrow(0, row, n)?.to_vec2::<f32>()?));
                if q.sample {
                    sample_rows.push((row + n - 1) as u32);
                }
                row += n;
            } else if q.sample {
                sample_rows.push(row as u32);
                row += 1;
            }
        }
        if sample_rows.is_empty() {
            return Ok(None);
        }
        let len = sample_rows.len();
        let idx = Tensor::from_vec(sample_rows, len, logits.device())?;
        Ok(Some(logits.index_select(&idx, 0)?))
    }

    /// Runs one step. Returns f32 logits in batch order: every row of a chunk with
    /// `all_logits`, else one row per chunk with `sample`; `None` when there are none.
    pub fn execute(&self, seqs: &[SeqChunk<'_>]) -> Result<Option<Tensor>> {
        if seqs.is_empty() {
            return Ok(None);
        }
        #[cfg(feature = "cuda")]
        if let Some(logits) = self.execute_graph(seqs)? {
            return Ok(Some(logits));
        }
        let batch = self.prepare(seqs)?;
        if batch.logits_indices.dim(0)? == 0 {
            // Still run the forward pass for its KV writes; select one row to keep shapes valid.
            let batch = BatchInputs {
                logits_indices: Tensor::from_vec(vec![0u32], 1, self.model.device())?,
                ..batch
            };
            self.forward(&batch)?;
            return Ok(None);
        }
        let logits = self.forward(&batch)?;
        debug_assert_eq!(logits.dtype(), DType::F32);
        Ok(Some(logits))
    }
}

/// A zeroed KV cache tensor. On the CPU its pages stay untouched (not resident) until a block
/// is first written, whatever the dtype: candle fills f16 / bf16 zeros value by value, which
/// would make a whole 1 GiB cache resident at start, so those are allocated as zeroed u16
/// bits (the allocator's zeroed pages) and reinterpreted, as f32 zeros already are.
fn zeroed_cache(
    shape: (usize, usize, usize, usize),
    dtype: DType,
    device: &Device,
) -> candle_core::Result<Tensor> {
    use half::vec::HalfBitsVecExt;
    if !device.is_cpu() {
        return Tensor::zeros(shape, dtype, device);
    }
    let n = shape.0 * shape.1 * shape.2 * shape.3;
    match dtype {
        DType::F16 => {
            Tensor::from_vec(vec![0u16; n].reinterpret_into::<half::f16>(), shape, device)
        }
        DType::BF16 => Tensor::from_vec(
            vec![0u16; n].reinterpret_into::<half::bf16>(),
            shape,
            device,
        ),
        _ => Tensor::zeros(shape, dtype, device),
    }
}

/// Whether [`on_cpu_pool`] keeps rayon's other workers awake during a forward pass (see
/// [`keep_awake`]); on unless `LANTERN_CPU_KEEP_AWAKE=0`.
static CPU_KEEP_AWAKE: std::sync::atomic::AtomicU8 = std::sync::atomic::AtomicU8::new(2);

/// Turns keeping rayon's workers awake during CPU forward passes on or off (A/B benchmarks).
#[doc(hidden)]
pub fn set_cpu_keep_awake(on: bool) {
    CPU_KEEP_AWAKE.store(u8::from(on), std::sync::atomic::Ordering::Relaxed);
}

fn cpu_keep_awake() -> bool {
    use std::sync::atomic::Ordering;
    match CPU_KEEP_AWAKE.load(Ordering::Relaxed) {
        2 => {
            let on = std::env::var("LANTERN_CPU_KEEP_AWAKE").as_deref() != Ok("0");
            CPU_KEEP_AWAKE.store(u8::from(on), Ordering::Relaxed);
            on
        }
        v => v == 1,
    }
}

/// Runs `f` on one of rayon's worker threads when `device` is the CPU (on the calling thread
/// otherwise). The CPU kernels split their work with rayon: called from a worker, a split is
/// a push onto that worker's own queue that the other workers steal from; called from any
/// other thread (the engine's), every split is a job injected into the pool while the caller
/// sleeps until it is done, a round trip of tens of microseconds that a decode step of a
/// small model pays hundreds of times. One injection per forward pass instead.
///
/// Between two splits the other workers spin only briefly before they sleep, and waking a
/// sleeping one takes ~50-100 us on a VM (its virtual CPU halted); the serial stretches of a
/// forward pass (candle's own ops, small copies) are often longer. So while `f` runs, every
/// other worker keeps looking for work ([`keep_awake`]) and takes each split at once.
fn on_cpu_pool<R: Send>(device: &Device, f: impl FnOnce() -> R + Send) -> R {
    if !device.is_cpu() || rayon::current_thread_index().is_some() {
        return f();
    }
    // Not next to candle's quantized matmul: its own pinned, spinning threads would share a
    // core with a worker kept spinning here (measured on a K-quant file at batch 1: every
    // tenth token 3x slower).
    if !cpu_keep_awake() || lantern_models::candle_cpu_qmatmul_used() {
        return rayon::scope(|_| f());
    }
    let done = std::sync::atomic::AtomicBool::new(false);
    rayon::scope(|s| {
        for _ in 1..rayon::current_num_threads() {
            s.spawn(|_| keep_awake(&done));
        }
        let out = f();
        done.store(true, std::sync::atomic::Ordering::Release);
        out
    })
}

/// Runs the pool's pending jobs as they come until `done` is set, yielding the CPU to other
/// threads (tokenizer, HTTP) whenever there is none.
fn keep_awake(done: &std::sync::atomic::AtomicBool) {
    while !done.load(std::sync::atomic::Ordering::Acquire) {
        if rayon::yield_now() != Some(rayon::Yield::Executed) {
            std::thread::yield_now();
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// A 128 MiB f16 or bf16 CPU cache is all zeros and does not become resident when
    /// allocated (candle's own zeros would write every value: the whole cache resident at
    /// start). Checked on Linux, where the resident size can be read; retried, since other
    /// tests allocate in parallel.
    #[test]
    fn half_precision_cpu_caches_stay_untouched_until_written() {
        let shape = (8192, 16, 8, 64); // 64 Mi values, 128 MiB of f16
        for dtype in [DType::F16, DType::BF16] {
            let mut grown = u64::MAX;
            for _ in 0..3 {
                let Some(before) = crate::heap::resident_bytes() else {
                    return;
                };
                let t = zeroed_cache(shape, dtype, &Device::Cpu).unwrap();
                let after = crate::heap::resident_bytes().unwrap();
                grown = grown.min(after.saturating_sub(before));
                let corner = t.get(8191).unwrap().get(15).unwrap().to_dtype(DType::F32);
                assert_eq!(
                    corner
                        .unwrap()
                        .sum_all()
                        .unwrap()
                        .to_scalar::<f32>()
                        .unwrap(),
                    0.0
                );
                assert_eq!(t.dtype(), dtype);
                if grown < 16 << 20 {
                    break;
                }
            }
            assert!(
                grown < 16 << 20,
                "{dtype:?}: {grown} bytes resident after allocating"
            );
        }
    }
}
