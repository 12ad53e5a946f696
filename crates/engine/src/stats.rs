//! Engine statistics published after every step (read by `/metrics` and the benchmarks).

#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct StepStats {
    pub num_running: usize,
    pub num_waiting: usize,
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
    pub prefix_cache_queries_tokens: u64,
    pub prefix_cache_hits_tokens: u64,
    pub num_preemptions: u64,
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
