//! Engine settings and the facts about the served model that the handle exposes.

use crate::lora::LoraConfig;
use lantern_models::ModelMeta;
use lantern_runtime::KvCacheSize;
use lantern_scheduler::SchedulingPolicy;

/// Engine settings (the `lantern serve` flags that shape scheduling and memory).
#[derive(Debug, Clone, PartialEq)]
pub struct EngineConfig {
    pub max_num_seqs: usize,
    pub max_num_batched_tokens: usize,
    pub block_size: usize,
    pub kv_cache: KvCacheSize,
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
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            max_num_seqs: 256,
            max_num_batched_tokens: 2048,
            block_size: 16,
            kv_cache: KvCacheSize::Bytes(1 << 30),
            max_model_len: None,
            max_waiting_requests: 1024,
            enable_prefix_caching: true,
            long_prefill_token_threshold: 0,
            policy: SchedulingPolicy::Fcfs,
            seed: None,
            lora: None,
            cuda_graphs: false,
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
    /// Tokens the KV cache holds.
    pub fn kv_capacity_tokens(&self) -> usize {
        self.num_kv_blocks * self.block_size
    }
}

