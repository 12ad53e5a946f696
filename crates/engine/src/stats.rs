//! Engine statistics published after every step (read by `/metrics` and the benchmarks).

#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct StepStats {
    /// Sequences in the scheduler's running list (holding KV blocks).
    pub num_running: usize,
    /// Sequences in the scheduler's waiting queue, preempted ones included.
    pub num_waiting: usize,
    /// Sequences accepted but not in the scheduler yet: `n > 1` siblings held back until
    /// their leader's prompt is cached, and requests waiting for their adapter's weights.
    /// vLLM would have them in its waiting queue.
    pub num_held: usize,
    pub num_batched_tokens: usize,
    pub num_prefill_tokens: usize,
    pub num_decode_tokens: usize,
    pub kv_blocks_used: usize,
    pub kv_blocks_free: usize,
    pub duration_s: f64,
}

/// Cumulative engine counters plus the latest step, published after every step.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EngineSnapshot {
    pub steps: u64,
    pub last_step: StepStats,
    pub kv_blocks_total: usize,
    pub prompt_tokens_total: u64,
    pub generation_tokens_total: u64,
    /// Prefix-cache lookups at admission, in tokens (a resumed, preempted sequence counts
    /// again), and the tokens served from the cache.
    pub prefix_cache_queries_tokens: u64,
    pub prefix_cache_hits_tokens: u64,
    /// Of those, the lookups of resumed (preempted) sequences.
    pub prefix_cache_resumed_queries_tokens: u64,
    pub prefix_cache_resumed_hits_tokens: u64,
    pub num_preemptions: u64,
    /// Sequences that produced their first token: their prompt tokens, and of those the
    /// tokens served from the prefix cache (vLLM counts prompt tokens when the prefill
    /// ends, once per sequence).
    pub prefilled_prompt_tokens: u64,
    pub prefilled_cached_tokens: u64,
    pub finished_stop: u64,
    pub finished_length: u64,
    pub finished_abort: u64,
    pub finished_error: u64,
    /// Adapter copies from host memory into a device slot, and their total time.
    pub lora_slot_loads: u64,
    pub lora_slot_load_seconds: f64,
    /// Adapter reads from disk into host memory (at load time and on demand), and their
    /// total time.
    pub lora_disk_loads: u64,
    pub lora_disk_load_seconds: f64,
    /// Adapters with weights in host memory now.
    pub loras_in_host_memory: usize,
    /// Wall time of all steps (schedule -> execute -> sample -> update), and its parts.
    pub step_seconds_total: f64,
    pub step_phases: StepPhaseSeconds,
    /// Simulated device time of all steps (`--null-device`; 0 on a real device). The host
    /// path's share of a step is `step_seconds_total - simulated_device_seconds_total`.
    pub simulated_device_seconds_total: f64,
    /// Structured outputs: the time to compute one sequence's token mask, once per
    /// constrained token (buckets: [`MASK_SECONDS_BUCKETS`]).
    pub structured_mask_seconds: Histogram,
    /// Arrival to first token, once per sequence, observed when the token is sampled
    /// (buckets: [`TTFT_SECONDS_BUCKETS`]).
    pub time_to_first_token: Histogram,
    /// Time between two consecutive tokens of a sequence, once per token after the first
    /// (buckets: [`ITL_SECONDS_BUCKETS`]).
    pub inter_token_latency: Histogram,
    /// Per step that sampled tokens: the prompt tokens computed for the sequences that got
    /// their first token in it (prompt minus prefix-cache hits) plus the tokens sampled, as
    /// vLLM counts an iteration (buckets: [`ITERATION_TOKENS_BUCKETS`]).
    pub iteration_tokens: Histogram,
    /// LoRA only: per adapter with a live request, its waiting and running sequences,
    /// sorted by name.
    pub lora_requests: Vec<LoraRequests>,
    /// LoRA only: Unix time (seconds) at which `lora_requests` was taken.
    pub lora_requests_unix: f64,
    /// Fixed at start-up.
    pub config: EngineFacts,
    /// KV-cache events dropped instead of published (the publisher's queue was full).
    pub kv_events_dropped: u64,
}

/// One adapter's live sequences: running (in the scheduler's running list) and waiting
/// (everything else: queued, preempted, held-back siblings, waiting for the weights).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LoraRequests {
    pub name: String,
    pub waiting: usize,
    pub running: usize,
}

/// Engine settings fixed at start-up that the metrics describe.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EngineFacts {
    /// Tokens per KV block.
    pub block_size: usize,
    pub enable_prefix_caching: bool,
    pub max_model_len: usize,
    /// `--gpu-memory-utilization` when the KV cache was sized from free device memory.
    pub gpu_memory_utilization: Option<f64>,
    /// `--kv-cache-memory` when the KV cache was given in bytes.
    pub kv_cache_memory_bytes: Option<usize>,
    /// Device adapter slots (`--max-loras`); `None` when LoRA is off.
    pub max_loras: Option<usize>,
}

/// Upper bounds (seconds) of the [`EngineSnapshot::structured_mask_seconds`] buckets.
pub const MASK_SECONDS_BUCKETS: [f64; 12] = [
    0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1,
];

/// Upper bounds (seconds) of [`EngineSnapshot::time_to_first_token`]: vLLM's
/// `TIME_TO_FIRST_TOKEN_BUCKETS` (`vllm/v1/metrics/buckets.py`, vLLM 0.34).
pub const TTFT_SECONDS_BUCKETS: [f64; 22] = [
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
    20.0, 40.0, 80.0, 160.0, 640.0, 2560.0,
];

/// Upper bounds (seconds) of [`EngineSnapshot::inter_token_latency`]: vLLM's
/// `INTER_TOKEN_LATENCY_BUCKETS` (`vllm/v1/metrics/buckets.py`, vLLM 0.34).
pub const ITL_SECONDS_BUCKETS: [f64; 19] = [
    0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0,
    40.0, 80.0,
];

/// Upper bounds (tokens) of [`EngineSnapshot::iteration_tokens`]: vLLM's
/// `ITERATION_TOKENS_BUCKETS` (`vllm/v1/metrics/buckets.py`, vLLM 0.34).
pub const ITERATION_TOKENS_BUCKETS: [f64; 13] = [
    1.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 2048.0, 4096.0, 8192.0, 16384.0,
];

/// A histogram with fixed bucket bounds kept elsewhere: per-bucket counts (not
/// cumulative; one more than the bounds, the last for larger values), their sum and count.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Histogram {
    pub counts: Vec<u64>,
    pub sum: f64,
    pub count: u64,
}

impl Histogram {
    /// Records `v` against the upper bounds `bounds` (ascending).
    pub fn observe(&mut self, bounds: &[f64], v: f64) {
        if self.counts.len() != bounds.len() + 1 {
            self.counts = vec![0; bounds.len() + 1];
        }
        let i = bounds.iter().position(|&b| v <= b).unwrap_or(bounds.len());
        self.counts[i] += 1;
        self.sum += v;
        self.count += 1;
    }

    /// `(upper bound, count)` per bucket (not cumulative), ending with `+Inf`.
    pub fn buckets(&self, bounds: &[f64]) -> Vec<(f64, u64)> {
        bounds
            .iter()
            .copied()
            .chain(std::iter::once(f64::INFINITY))
            .enumerate()
            .map(|(i, b)| (b, self.counts.get(i).copied().unwrap_or(0)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_upper_bounds() {
        let mut h = Histogram::default();
        let b = [0.1, 1.0];
        for v in [0.05, 0.1, 0.5, 3.0] {
            h.observe(&b, v);
        }
        assert_eq!(h.counts, vec![2, 1, 1]);
        assert_eq!(h.count, 4);
        assert!((h.sum - 3.65).abs() < 1e-12);
        assert_eq!(h.buckets(&b), vec![(0.1, 2), (1.0, 1), (f64::INFINITY, 1)]);
        assert_eq!(
            Histogram::default().buckets(&b).last(),
            Some(&(f64::INFINITY, 0))
        );
    }
}

/// Cumulative wall time of each phase of the engine steps.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct StepPhaseSeconds {
    /// `Scheduler::schedule` and LoRA slot loads.
    pub schedule: f64,
    /// Batch preparation and the forward pass (`ModelRunner::execute`; with the null device
    /// this includes the simulated device time).
    pub execute: f64,
    /// Building the sampling rows and `sampler::sample`.
    pub sample: f64,
    /// `Scheduler::update`, detokenization, stop strings, events, finishing requests.
    pub update: f64,
}
