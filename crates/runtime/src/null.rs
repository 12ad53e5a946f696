//! The null device: a model stand-in for host-path benchmarks (`--null-device`).
//!
//! [`NullModel`] takes the same [`BatchInputs`] as [`lantern_models::CausalLm`] but computes
//! nothing. Each forward pass lasts as long as a roofline model says the real model would take
//! on the simulated accelerator, and returns cheap deterministic logits, so the scheduler, KV
//! block accounting, the real sampler, the detokenizer and the HTTP/SSE path all run at
//! GPU-like step rates on a CPU machine.
//!
//! Roofline of one step (see [`NullModel::step_cost`]):
//! - bytes = every weight once (`weight_bytes`) + the K/V of every sequence's context read once
//!   by attention + the K/V of this step's tokens written;
//! - flops = `2 * body_params * tokens + 2 * lm_head_params * sampled_rows` (only the sampled
//!   rows go through `lm_head`) + attention `4 * layers * q_dim * context` per token;
//! - time = `max(bytes / bandwidth, flops / peak)`.
//!
//! The wait: the deadline is the forward call's entry plus the simulated time. The thread
//! sleeps until [`SPIN_BEFORE`] before the deadline, then spins, so the sleep's wake-up
//! latency is not charged to the host. Reading the batch and building the logits happen
//! inside that window (they stand in for device work); everything outside `forward`
//! (scheduling, batch preparation, sampling, detokenization, HTTP) overlaps nothing, as in
//! Lantern's synchronous step on a GPU.
//!
//! Logits: `(rows, logits_vocab)` f32, a constant floor with three peaks at ids hashed from
//! the row's (token, position), so greedy outputs vary and temperature sampling is peaked
//! (top token ~75% at temperature 1 for a 512-wide vocabulary). `logits_vocab` is the
//! tokenizer's size, usually far smaller than the simulated model's: sampling a
//! 128k-wide row on a CPU costs what the GPU does in microseconds, so it would be charged to
//! the host path. The roofline still uses the simulated model's real vocabulary.

use crate::error::{Result, RuntimeError};
use candle_core::{DType, Device, Tensor};
use lantern_models::{Architecture, BatchInputs, ModelConfig};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How long before the deadline the wait stops sleeping and starts spinning.
pub const SPIN_BEFORE: Duration = Duration::from_micros(200);

/// A simulated accelerator.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Accelerator {
    pub name: &'static str,
    /// Memory bandwidth, bytes per second.
    pub bandwidth: f64,
    /// Dense bf16 peak, FLOP per second.
    pub peak_flops: f64,
    /// Device memory in bytes (sizes the KV cache like `--gpu-memory-utilization`).
    pub memory_bytes: u64,
}

/// NVIDIA H200 SXM: ~4.2 TB/s achievable HBM3e bandwidth, ~700 TFLOP/s achievable dense
/// bf16, 143771 MiB as `nvidia-smi` reports it.
pub const H200: Accelerator = Accelerator {
    name: "h200",
    bandwidth: 4.2e12,
    peak_flops: 700e12,
    memory_bytes: 143_771 * 1024 * 1024,
};

/// NVIDIA H100 SXM: ~3.0 TB/s achievable HBM3 bandwidth, ~600 TFLOP/s achievable dense bf16,
/// 81559 MiB.
pub const H100: Accelerator = Accelerator {
    name: "h100",
    bandwidth: 3.0e12,
    peak_flops: 600e12,
    memory_bytes: 81_559 * 1024 * 1024,
};

/// The simulated models `--null-device` knows.
pub const NULL_MODELS: &[&str] = &["llama-3.1-8b"];
/// The simulated accelerators `--null-device` knows.
pub const NULL_ACCELERATORS: &[Accelerator] = &[H200, H100];

/// What `--null-device MODEL[:ACCEL]` simulates.
#[derive(Debug, Clone, PartialEq)]
pub struct NullSpec {
    /// The preset's name, e.g. `llama-3.1-8b`.
    pub model_name: String,
    /// The simulated model's real shapes (vocabulary included).
    pub config: ModelConfig,
    /// Bytes per weight (2: bf16).
    pub dtype: DType,
    pub accelerator: Accelerator,
}

impl NullSpec {
    /// Parses `MODEL[:ACCEL]`, e.g. `llama-3.1-8b` or `llama-3.1-8b:h200` (the default
    /// accelerator is the H200).
    pub fn parse(spec: &str) -> Result<Self> {
        let (model, accel) = match spec.split_once(':') {
            Some((m, a)) => (m.trim(), a.trim()),
            None => (spec.trim(), "h200"),
        };
        let config = match model.to_ascii_lowercase().as_str() {
            "llama-3.1-8b" | "llama3.1-8b" | "meta-llama/llama-3.1-8b" => llama_3_1_8b(),
            other => {
                return Err(RuntimeError::Device(format!(
                    "--null-device: unknown model `{other}` (known: {})",
                    NULL_MODELS.join(", ")
                )))
            }
        };
        let accelerator = NULL_ACCELERATORS
            .iter()
            .find(|a| a.name.eq_ignore_ascii_case(accel))
            .copied()
            .ok_or_else(|| {
                let names: Vec<&str> = NULL_ACCELERATORS.iter().map(|a| a.name).collect();
                RuntimeError::Device(format!(
                    "--null-device: unknown accelerator `{accel}` (known: {})",
                    names.join(", ")
                ))
            })?;
        Ok(Self {
            model_name: model.to_ascii_lowercase(),
            config,
            dtype: DType::BF16,
            accelerator,
        })
    }
}

/// Llama-3.1-8B's shapes (`meta-llama/Llama-3.1-8B-Instruct` config.json).
pub fn llama_3_1_8b() -> ModelConfig {
    ModelConfig {
        architecture: Architecture::Llama,
        vocab_size: 128_256,
        hidden_size: 4096,
        intermediate_size: 14_336,
        num_hidden_layers: 32,
        num_attention_heads: 32,
        num_key_value_heads: 8,
        head_dim: 128,
        rms_norm_eps: 1e-5,
        rope_theta: 500_000.0,
        rope_scaling: None,
        max_position_embeddings: 131_072,
        tie_word_embeddings: false,
        attention_bias: false,
        o_bias: false,
        qk_norm: false,
        bos_token_id: Some(128_000),
        eos_token_ids: vec![128_001, 128_008, 128_009],
    }
}

/// Parameter counts of a decoder (biases ignored).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParamCounts {
    /// Decoder layers and the final norm: what every token goes through.
    pub body: u64,
    /// The embedding table (a gather, no FLOPs).
    pub embedding: u64,
    /// `lm_head` (only the sampled rows go through it); 0 when tied to the embedding.
    pub lm_head: u64,
}

impl ParamCounts {
    pub fn of(c: &ModelConfig) -> Self {
        let h = c.hidden_size as u64;
        let q = (c.num_attention_heads * c.head_dim) as u64;
        let kv = (c.num_key_value_heads * c.head_dim) as u64;
        let i = c.intermediate_size as u64;
        let v = c.vocab_size as u64;
        let per_layer = h * q + 2 * h * kv + q * h + 3 * h * i + 2 * h;
        Self {
            body: per_layer * c.num_hidden_layers as u64 + h,
            embedding: v * h,
            lm_head: if c.tie_word_embeddings { 0 } else { v * h },
        }
    }

    pub fn total(&self) -> u64 {
        self.body + self.embedding + self.lm_head
    }
}

/// What one step asks of the simulated device.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct StepCost {
    pub bytes: f64,
    pub flops: f64,
    /// `max(bytes / bandwidth, flops / peak)`.
    pub seconds: f64,
}

/// The stand-in model (see the module docs).
#[derive(Debug)]
pub struct NullModel {
    spec: NullSpec,
    params: ParamCounts,
    weight_bytes: u64,
    /// Width of the logits rows (the served tokenizer's vocabulary).
    logits_vocab: usize,
    /// Simulated device time so far, in nanoseconds.
    device_nanos: AtomicU64,
    /// Steps whose logits took longer to build than the simulated time.
    overruns: AtomicU64,
    device: Device,
}

impl NullModel {
    /// A stand-in for `spec` whose logits rows are `logits_vocab` wide.
    pub fn new(spec: NullSpec, logits_vocab: usize) -> Result<Self> {
        if logits_vocab < 4 {
            return Err(RuntimeError::Device(format!(
                "--null-device: the logits need at least 4 columns, the tokenizer has {logits_vocab} tokens"
            )));
        }
        let params = ParamCounts::of(&spec.config);
        let weight_bytes = params.total() * spec.dtype.size_in_bytes() as u64;
        Ok(Self {
            spec,
            params,
            weight_bytes,
            logits_vocab,
            device_nanos: AtomicU64::new(0),
            overruns: AtomicU64::new(0),
            device: Device::Cpu,
        })
    }

    pub fn spec(&self) -> &NullSpec {
        &self.spec
    }

    /// The simulated model's shapes (its real vocabulary; the logits are narrower).
    pub fn config(&self) -> &ModelConfig {
        &self.spec.config
    }

    /// The simulated weights' dtype (sizes the simulated KV cache).
    pub fn dtype(&self) -> DType {
        self.spec.dtype
    }

    /// Where the logits live (the CPU).
    pub fn device(&self) -> &Device {
        &self.device
    }

    pub fn logits_vocab(&self) -> usize {
        self.logits_vocab
    }

    pub fn params(&self) -> ParamCounts {
        self.params
    }

    /// Bytes of the simulated weights.
    pub fn weight_bytes(&self) -> u64 {
        self.weight_bytes
    }

    /// Simulated device seconds of every forward pass so far.
    pub fn device_seconds(&self) -> f64 {
        self.device_nanos.load(Ordering::Relaxed) as f64 * 1e-9
    }

    /// Forward passes whose stand-in work took longer than their simulated time.
    pub fn overruns(&self) -> u64 {
        self.overruns.load(Ordering::Relaxed)
    }

    /// The roofline cost of a step. `seqs` holds `(query_len, context_len)` per sequence
    /// (context after this step's tokens); `sampled_rows` go through `lm_head`.
    pub fn step_cost(&self, seqs: &[(usize, usize)], sampled_rows: usize) -> StepCost {
        let c = &self.spec.config;
        let kv_per_token = c.kv_bytes_per_token(self.spec.dtype.size_in_bytes()) as f64;
        let q_dim = (c.num_attention_heads * c.head_dim) as f64;
        let layers = c.num_hidden_layers as f64;
        let mut tokens = 0f64;
        let mut attn_ctx = 0f64;
        let mut kv_read = 0f64;
        for &(q, ctx) in seqs {
            let (q, ctx) = (q as f64, ctx as f64);
            tokens += q;
            // Token j of the chunk (0-based) attends to ctx - q + j + 1 positions.
            attn_ctx += q * ctx - q * (q - 1.0) / 2.0;
            kv_read += ctx;
        }
        let flops = 2.0 * self.params.body as f64 * tokens
            + 2.0 * self.params.lm_head.max(self.params.embedding) as f64 * sampled_rows as f64
            + 4.0 * layers * q_dim * attn_ctx;
        let bytes = self.weight_bytes as f64 + kv_per_token * (kv_read + tokens);
        let a = &self.spec.accelerator;
        StepCost {
            bytes,
            flops,
            seconds: (bytes / a.bandwidth).max(flops / a.peak_flops),
        }
    }

    /// Deterministic logits of a row whose last token is `token` at `position`: 0 everywhere
    /// but three peaks (8, 6, 4) at hashed ids.
    pub fn peaks(&self, token: u32, position: u32) -> [(usize, f32); 3] {
        let v = self.logits_vocab as u64;
        let h = crate::sampler::mix((u64::from(token) << 32) | u64::from(position));
        let a = (h % v) as usize;
        let b = ((h >> 21) % v) as usize;
        let c = ((h >> 42) % v) as usize;
        [(c, 4.0), (b, 6.0), (a, 8.0)]
    }

    /// Waits out the step's simulated time and returns `(rows, logits_vocab)` f32 logits of
    /// the rows `batch.logits_indices` selects.
    pub fn forward(&self, batch: &BatchInputs) -> Result<Tensor> {
        let start = Instant::now();
        let ids = batch.input_ids.to_vec1::<u32>()?;
        let pos = batch.positions.to_vec1::<u32>()?;
        let rows = batch.logits_indices.to_vec1::<u32>()?;
        let cu = batch.attn.cu_seqlens_q.to_vec1::<u32>()?;
        let ctx = batch.attn.context_lens.to_vec1::<u32>()?;
        let seqs: Vec<(usize, usize)> = cu
            .windows(2)
            .zip(&ctx)
            .map(|(w, &c)| (w[1].saturating_sub(w[0]) as usize, c as usize))
            .collect();
        let cost = self.step_cost(&seqs, rows.len());
        let v = self.logits_vocab;
        let mut data = vec![0f32; rows.len() * v];
        for (r, &row) in rows.iter().enumerate() {
            let i = row as usize;
            let (Some(&t), Some(&p)) = (ids.get(i), pos.get(i)) else {
                return Err(RuntimeError::InvalidBatch(format!(
                    "logits row {i} is outside the batch's {} tokens",
                    ids.len()
                )));
            };
            for (col, val) in self.peaks(t, p) {
                data[r * v + col] = val;
            }
        }
        let logits = Tensor::from_vec(data, (rows.len(), v), &self.device)?;
        let sim = Duration::from_secs_f64(cost.seconds);
        self.device_nanos
            .fetch_add(sim.as_nanos() as u64, Ordering::Relaxed);
        if start.elapsed() > sim {
            self.overruns.fetch_add(1, Ordering::Relaxed);
        }
        wait_until(start + sim);
        Ok(logits)
    }
}

/// Sleeps until [`SPIN_BEFORE`] before `deadline`, then spins until it.
pub fn wait_until(deadline: Instant) {
    let now = Instant::now();
    if deadline <= now {
        return;
    }
    let left = deadline - now;
    if left > SPIN_BEFORE {
        std::thread::sleep(left - SPIN_BEFORE);
    }
    while Instant::now() < deadline {
        std::hint::spin_loop();
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn llama_3_1_8b_sizes() {
        let p = ParamCounts::of(&llama_3_1_8b());
        // 8.03B parameters, 16.06 GB in bf16.
        assert_eq!(p.total(), 8_030_261_248);
        let m = NullModel::new(NullSpec::parse("llama-3.1-8b:h200").unwrap(), 512).unwrap();
        assert_eq!(m.weight_bytes(), 16_060_522_496);
    }

    #[test]
    fn roofline_decode_is_memory_bound_at_batch_1_and_compute_bound_at_256() {
        let m = NullModel::new(NullSpec::parse("llama-3.1-8b").unwrap(), 512).unwrap();
        let one = m.step_cost(&[(1, 1)], 1);
        // 16.06 GB / 4.2 TB/s = 3.82 ms.
        assert!((one.seconds - 16_060_522_496.0 / 4.2e12).abs() < 1e-6);
        let many = vec![(1usize, 1usize); 256];
        let c = m.step_cost(&many, 256);
        assert!(c.flops / H200.peak_flops > c.bytes / H200.bandwidth);
        // A 2048-token prefill chunk is compute-bound too.
        let p = m.step_cost(&[(2048, 2048)], 1);
        assert!(p.seconds > 0.04 && p.seconds < 0.06, "{}", p.seconds);
    }

    #[test]
    fn parse_rejects_unknown_names() {
        assert!(NullSpec::parse("gpt-5").is_err());
        assert!(NullSpec::parse("llama-3.1-8b:tpu").is_err());
        assert_eq!(
            NullSpec::parse("llama-3.1-8b:H100").unwrap().accelerator,
            H100
        );
    }
}
