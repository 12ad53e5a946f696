//! Prometheus metrics: server-side counters and latency histograms (lock-free atomics),
//! plus engine gauges read from the engine's published snapshot.

use lantern_engine::EngineSnapshot;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
    20.0, 40.0, 80.0,
];

/// A fixed-bucket histogram.
#[derive(Debug)]
pub struct Histogram {
    buckets: Vec<AtomicU64>,
    count: AtomicU64,
    sum_bits: AtomicU64,
}

impl Default for Histogram {
    fn default() -> Self {
        Self {
            buckets: LATENCY_BUCKETS.iter().map(|_| AtomicU64::new(0)).collect(),
            count: AtomicU64::new(0),
            sum_bits: AtomicU64::new(0f64.to_bits()),
        }
    }
}

impl Histogram {
    pub fn observe(&self, v: f64) {
        for (b, &le) in self.buckets.iter().zip(LATENCY_BUCKETS) {
            if v <= le {
                b.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        let mut cur = self.sum_bits.load(Ordering::Relaxed);
        loop {
            let new = (f64::from_bits(cur) + v).to_bits();
            match self.sum_bits.compare_exchange_weak(
                cur,
                new,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => break,
                Err(x) => cur = x,
            }
        }
    }

    fn render(&self, out: &mut String, name: &str, help: &str, labels: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        let sep = if labels.is_empty() { "" } else { "," };
        for (b, &le) in self.buckets.iter().zip(LATENCY_BUCKETS) {
            let _ = writeln!(
                out,
                "{name}_bucket{{{labels}{sep}le=\"{le}\"}} {}",
                b.load(Ordering::Relaxed)
            );
        }
        let count = self.count.load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {count}");
        let braces = if labels.is_empty() {
            String::new()
        } else {
            format!("{{{labels}}}")
        };
        let _ = writeln!(
            out,
            "{name}_sum{braces} {}",
            f64::from_bits(self.sum_bits.load(Ordering::Relaxed))
        );
        let _ = writeln!(out, "{name}_count{braces} {count}");
    }
}

/// All server metrics.
#[derive(Debug, Default)]
pub struct Metrics {
    /// (endpoint, status) -> count
    requests: Mutex<Vec<((String, u16), u64)>>,
    pub ttft: Histogram,
    pub itl: Histogram,
    pub e2e: Histogram,
    pub queue: Histogram,
}

impl Metrics {
    pub fn count_request(&self, endpoint: &str, status: u16) {
        if let Ok(mut v) = self.requests.lock() {
            if let Some(e) = v
                .iter_mut()
                .find(|((ep, s), _)| ep == endpoint && *s == status)
            {
                e.1 += 1;
            } else {
                v.push(((endpoint.to_string(), status), 1));
            }
        }
    }

    /// Prometheus text exposition format.
    pub fn render(&self, snap: &EngineSnapshot, model: &str) -> String {
        let mut out = String::new();
        let lbl = format!("model_name=\"{}\"", model.replace('"', "'"));
        let _ = writeln!(out, "# HELP lantern_requests_total HTTP requests by endpoint and status code.\n# TYPE lantern_requests_total counter");
        if let Ok(v) = self.requests.lock() {
            for ((ep, st), n) in v.iter() {
                let _ = writeln!(
                    out,
                    "lantern_requests_total{{{lbl},endpoint=\"{ep}\",status=\"{st}\"}} {n}"
                );
            }
        }
        let gauge = |out: &mut String, name: &str, help: &str, v: f64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} gauge\n{name}{{{lbl}}} {v}"
            );
        };
        let counter = |out: &mut String, name: &str, help: &str, v: u64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name}{{{lbl}}} {v}"
            );
        };
        let s = &snap.last_step;
        gauge(
            &mut out,
            "lantern_num_requests_running",
            "Requests holding KV blocks.",
            s.num_running as f64,
        );
        gauge(
            &mut out,
            "lantern_num_requests_waiting",
            "Requests waiting to be scheduled.",
            s.num_waiting as f64,
        );
        let total = snap.kv_blocks_total.max(1) as f64;
        gauge(
            &mut out,
            "lantern_kv_cache_usage_perc",
            "Fraction of KV blocks in use (0-1).",
            s.kv_blocks_used as f64 / total,
        );
        gauge(
            &mut out,
            "lantern_kv_cache_blocks_total",
            "Usable KV blocks.",
            snap.kv_blocks_total as f64,
        );
        gauge(
            &mut out,
            "lantern_step_batched_tokens",
            "Tokens in the latest engine step.",
            s.num_batched_tokens as f64,
        );
        gauge(
            &mut out,
            "lantern_step_duration_seconds",
            "Duration of the latest engine step.",
            s.duration_s,
        );
        counter(
            &mut out,
            "lantern_engine_steps_total",
            "Engine steps run.",
            snap.steps,
        );
        gauge(
            &mut out,
            "lantern_engine_step_seconds_total",
            "Wall time of all engine steps (a counter in seconds).",
            snap.step_seconds_total,
        );
        gauge(
            &mut out,
            "lantern_engine_simulated_device_seconds_total",
            "Simulated device time of all engine steps (--null-device; 0 on a real device).",
            snap.simulated_device_seconds_total,
        );
        let ph = &snap.step_phases;
        let _ = writeln!(
            out,
            "# HELP lantern_engine_step_phase_seconds_total Wall time of the engine steps by phase.\n# TYPE lantern_engine_step_phase_seconds_total counter"
        );
        for (phase, v) in [
            ("schedule", ph.schedule),
            ("execute", ph.execute),
            ("sample", ph.sample),
            ("update", ph.update),
        ] {
            let _ = writeln!(
                out,
                "lantern_engine_step_phase_seconds_total{{{lbl},phase=\"{phase}\"}} {v}"
            );
        }
        counter(
            &mut out,
            "lantern_prompt_tokens_total",
            "Prompt tokens scheduled.",
            snap.prompt_tokens_total,
        );
        counter(
            &mut out,
            "lantern_generation_tokens_total",
            "Tokens generated.",
            snap.generation_tokens_total,
        );
        counter(
            &mut out,
            "lantern_prefix_cache_queries_total",
            "Prompt tokens looked up in the prefix cache.",
            snap.prefix_cache_queries_tokens,
        );
        counter(
            &mut out,
            "lantern_prefix_cache_hits_total",
            "Prompt tokens served from the prefix cache.",
            snap.prefix_cache_hits_tokens,
        );
        let rate = if snap.prefix_cache_queries_tokens == 0 {
            0.0
        } else {
            snap.prefix_cache_hits_tokens as f64 / snap.prefix_cache_queries_tokens as f64
        };
        gauge(
            &mut out,
            "lantern_prefix_cache_hit_rate",
            "Prefix cache hits / queries (tokens).",
            rate,
        );
        counter(
            &mut out,
            "lantern_num_preemptions_total",
            "Requests preempted (recomputed).",
            snap.num_preemptions,
        );
        counter(
            &mut out,
            "lantern_lora_slot_loads_total",
            "LoRA adapter copies from host memory into a device slot.",
            snap.lora_slot_loads,
        );
        gauge(
            &mut out,
            "lantern_lora_slot_load_seconds_total",
            "Time spent copying LoRA adapters into device slots.",
            snap.lora_slot_load_seconds,
        );
        counter(
            &mut out,
            "lantern_lora_disk_loads_total",
            "LoRA adapter reads from disk into host memory.",
            snap.lora_disk_loads,
        );
        gauge(
            &mut out,
            "lantern_lora_disk_load_seconds_total",
            "Time spent reading LoRA adapters from disk (and validating them).",
            snap.lora_disk_load_seconds,
        );
        gauge(
            &mut out,
            "lantern_loras_in_host_memory",
            "LoRA adapters whose weights are in host memory.",
            snap.loras_in_host_memory as f64,
        );
        let _ = writeln!(out, "# HELP lantern_request_finished_total Finished sequences by reason.\n# TYPE lantern_request_finished_total counter");
        for (reason, n) in [
            ("stop", snap.finished_stop),
            ("length", snap.finished_length),
            ("abort", snap.finished_abort),
            ("error", snap.finished_error),
        ] {
            let _ = writeln!(
                out,
                "lantern_request_finished_total{{{lbl},finished_reason=\"{reason}\"}} {n}"
            );
        }
        self.ttft.render(
            &mut out,
            "lantern_time_to_first_token_seconds",
            "Time to first token (server side).",
            &lbl,
        );
        self.itl.render(
            &mut out,
            "lantern_inter_token_latency_seconds",
            "Time between tokens (server side).",
            &lbl,
        );
        self.e2e.render(
            &mut out,
            "lantern_e2e_request_latency_seconds",
            "Arrival to finish (server side).",
            &lbl,
        );
        self.queue.render(
            &mut out,
            "lantern_request_queue_time_seconds",
            "Arrival to first schedule.",
            &lbl,
        );
        out
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative() {
        let h = Histogram::default();
        h.observe(0.003);
        h.observe(0.5);
        let mut s = String::new();
        h.render(&mut s, "x", "help", "");
        assert!(s.contains("x_bucket{le=\"0.001\"} 0"));
        assert!(s.contains("x_bucket{le=\"0.005\"} 1"));
        assert!(s.contains("x_bucket{le=\"0.5\"} 2"));
        assert!(s.contains("x_bucket{le=\"+Inf\"} 2"));
        assert!(s.contains("x_count 2"));
    }
}
