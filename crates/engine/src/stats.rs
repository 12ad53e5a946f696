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
    /// Structured outputs: the time to compute one sequence's token mask, once per
    /// constrained token (buckets: [`MASK_SECONDS_BUCKETS`]).
    pub structured_mask_seconds: Histogram,
    /// KV-cache events dropped instead of published (the publisher's queue was full).
    pub kv_events_dropped: u64,
}

/// Upper bounds (seconds) of the [`EngineSnapshot::structured_mask_seconds`] buckets.
pub const MASK_SECONDS_BUCKETS: [f64; 12] = [
    0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1,
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
