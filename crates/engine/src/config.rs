//! Engine settings and the facts about the served model that the handle exposes.

use crate::lora::LoraConfig;
use crate::validation::RequestLimits;
use lantern_kv_events::PublisherSettings;
use lantern_models::ModelMeta;
use lantern_runtime::{KvCacheDtype, KvCacheSize};
use lantern_scheduler::{defaults, SchedulingPolicy};

/// Engine settings (the `lantern serve` flags that shape scheduling and memory).
#[derive(Debug, Clone, PartialEq)]
pub struct EngineConfig {
    pub max_num_seqs: usize,
    pub max_num_batched_tokens: usize,
    pub block_size: usize,
    pub kv_cache: KvCacheSize,
    /// `--kv-cache-dtype` (`Auto`: the model's dtype).
    pub kv_cache_dtype: KvCacheDtype,
    /// Cap on prompt + output tokens; defaults to the model's context length.
    pub max_model_len: Option<usize>,
    pub max_waiting_requests: usize,
    pub enable_prefix_caching: bool,
    pub long_prefill_token_threshold: usize,
    pub policy: SchedulingPolicy,
    /// Base seed for requests that give none (random when `None`).
    pub seed: Option<u64>,
    /// LoRA adapters (`None` = disabled: requests for adapters are refused).
    pub lora: Option<LoraConfig>,
    /// Replay decode-only steps through captured CUDA graphs (CUDA only; the CLI turns this on
    /// for CUDA devices unless `--enforce-eager`).
    pub cuda_graphs: bool,
    /// Publish KV-cache events (`--kv-events-config`); `None` = off. Needs prefix caching.
    pub kv_events: Option<PublisherSettings>,
    /// `--target-itl-ms`: while some request decodes, each step's tokens are capped so the
    /// step should take at most this long, from a running estimate of the step cost (prefill
    /// chunks shrink; decodes always run). `None` = only `max_num_batched_tokens`.
    pub target_itl: Option<std::time::Duration>,
    /// `--idle-batch-window-ms`: when a request arrives at an idle engine, further requests
    /// arriving within this long of each other (up to eight times it in all) join it before
    /// the first step, so a burst is prefilled together. Zero = start at once.
    pub idle_batch_window: std::time::Duration,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            max_num_seqs: defaults::MAX_NUM_SEQS,
            max_num_batched_tokens: defaults::MAX_NUM_BATCHED_TOKENS,
            block_size: defaults::BLOCK_SIZE,
            kv_cache: KvCacheSize::Bytes(1 << 30),
            kv_cache_dtype: KvCacheDtype::Auto,
            max_model_len: None,
            max_waiting_requests: defaults::MAX_WAITING_REQUESTS,
            enable_prefix_caching: true,
            long_prefill_token_threshold: defaults::LONG_PREFILL_TOKEN_THRESHOLD,
            policy: SchedulingPolicy::Fcfs,
            seed: None,
            lora: None,
            cuda_graphs: false,
            kv_events: None,
            target_itl: None,
            idle_batch_window: std::time::Duration::ZERO,
        }
    }
}

/// Facts about the served model, readable without asking the engine thread.
#[derive(Debug, Clone)]
pub struct ModelInfo {
    pub max_model_len: usize,
    pub vocab_size: usize,
    pub eos_token_ids: Vec<u32>,
    /// Usable KV blocks (the null block excluded).
    pub num_kv_blocks: usize,
    pub block_size: usize,
    pub meta: ModelMeta,
    pub dtype: String,
    pub device: String,
}

impl ModelInfo {
    /// What requests are validated against.
    pub fn limits(&self) -> RequestLimits {
        RequestLimits {
            vocab_size: self.vocab_size,
            max_model_len: self.max_model_len,
        }
    }

    /// Tokens the KV cache holds.
    pub fn kv_capacity_tokens(&self) -> usize {
        self.num_kv_blocks * self.block_size
    }
}
