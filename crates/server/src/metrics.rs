//! Prometheus metrics (`prometheus-client`, Prometheus text format 0.0.4): server-side
//! request counters and latency histograms, plus engine gauges and counters read from the
//! engine's snapshot at scrape time. Every sample carries `model_name`.
//!
//! Each scrape registers the families in a fresh [`Registry`] (cheap clones of the live
//! histograms, constants for the rest), so the exposition keeps a fixed family order and
//! labels every sample with the model name known at scrape time.

use lantern_engine::{EngineSnapshot, MASK_SECONDS_BUCKETS};
use prometheus_client::encoding::prometheus_text::encode;
use prometheus_client::encoding::{EncodeLabelSet, EncodeMetric, MetricEncoder};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Metric, Registry};
use std::borrow::Cow;
use std::sync::Mutex;

const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
    20.0, 40.0, 80.0,
];

fn latency_histogram() -> Histogram {
    Histogram::new(LATENCY_BUCKETS.iter().copied())
}

/// All server metrics.
#[derive(Debug)]
pub struct Metrics {
    /// (endpoint, status) -> count, in first-seen order.
    requests: Mutex<Vec<((String, u16), u64)>>,
    pub ttft: Histogram,
    pub itl: Histogram,
    pub e2e: Histogram,
    pub queue: Histogram,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            requests: Mutex::new(Vec::new()),
            ttft: latency_histogram(),
            itl: latency_histogram(),
            e2e: latency_histogram(),
            queue: latency_histogram(),
        }
    }
}

/// Labelled samples of one family, encoded in this order (a `Family` would hash them).
#[derive(Debug)]
struct Series<L, M> {
    ty: MetricType,
    samples: Vec<(L, M)>,
}

impl<L: EncodeLabelSet, M: EncodeMetric> EncodeMetric for Series<L, M> {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        for (labels, m) in &self.samples {
            m.encode(encoder.encode_family(labels)?)?;
        }
        Ok(())
    }

    fn metric_type(&self) -> MetricType {
        self.ty
    }
}

/// A histogram known at scrape time (the engine's, from its snapshot).
#[derive(Debug)]
struct ConstHistogram {
    sum: f64,
    count: u64,
    /// `(upper bound, count)` per bucket, not cumulative (the encoder accumulates), ending
    /// with `+Inf`.
    buckets: Vec<(f64, u64)>,
}

impl EncodeMetric for ConstHistogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        encoder.encode_histogram::<prometheus_client::encoding::NoLabelSet>(
            self.sum,
            self.count,
            &self.buckets,
            None,
        )
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

type Labels = Vec<(&'static str, String)>;

/// Registers a family. `help` is given without its final period: the registry adds it.
fn add(r: &mut Registry, name: &str, help: &str, metric: impl Metric) {
    r.register(name, help, metric);
}

/// A counter family: prometheus-client writes counters with the `_total` suffix, so
/// `name` is the name without it.
fn counter(r: &mut Registry, name: &str, help: &str, v: u64) {
    add(r, name, help, ConstCounter::new(v));
}

fn gauge_int(r: &mut Registry, name: &str, help: &str, v: usize) {
    add(r, name, help, ConstGauge::new(v));
}

fn gauge(r: &mut Registry, name: &str, help: &str, v: f64) {
    add(r, name, help, ConstGauge::new(v));
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
        let model = model.replace('"', "'");
        let mut r = Registry::with_labels(std::iter::once((
            Cow::Borrowed("model_name"),
            Cow::Owned(model),
        )));
        let requests: Vec<(Labels, ConstCounter)> = match self.requests.lock() {
            Ok(v) => v
                .iter()
                .map(|((ep, st), n)| {
                    (
                        vec![("endpoint", ep.clone()), ("status", st.to_string())],
                        ConstCounter::new(*n),
                    )
                })
                .collect(),
            Err(_) => Vec::new(),
        };
        add(
            &mut r,
            "lantern_requests",
            "HTTP requests by endpoint and status code",
            Series {
                ty: MetricType::Counter,
                samples: requests,
            },
        );
        let s = &snap.last_step;
        gauge_int(
            &mut r,
            "lantern_num_requests_running",
            "Requests holding KV blocks",
            s.num_running,
        );
        gauge_int(
            &mut r,
            "lantern_num_requests_waiting",
            "Requests waiting to be scheduled",
            s.num_waiting,
        );
        let total = snap.kv_blocks_total.max(1) as f64;
        gauge(
            &mut r,
            "lantern_kv_cache_usage_perc",
            "Fraction of KV blocks in use (0-1)",
            s.kv_blocks_used as f64 / total,
        );
        gauge_int(
            &mut r,
            "lantern_kv_cache_blocks_total",
            "Usable KV blocks",
            snap.kv_blocks_total,
        );
        gauge_int(
            &mut r,
            "lantern_step_batched_tokens",
            "Tokens in the latest engine step",
            s.num_batched_tokens,
        );
        gauge(
            &mut r,
            "lantern_step_duration_seconds",
            "Duration of the latest engine step",
            s.duration_s,
        );
        counter(
            &mut r,
            "lantern_engine_steps",
            "Engine steps run",
            snap.steps,
        );
        gauge(
            &mut r,
            "lantern_engine_step_seconds_total",
            "Wall time of all engine steps (a counter in seconds)",
            snap.step_seconds_total,
        );
        gauge(
            &mut r,
            "lantern_engine_simulated_device_seconds_total",
            "Simulated device time of all engine steps (--null-device; 0 on a real device)",
            snap.simulated_device_seconds_total,
        );
        let ph = &snap.step_phases;
        add(
            &mut r,
            "lantern_engine_step_phase_seconds",
            "Wall time of the engine steps by phase",
            Series {
                ty: MetricType::Counter,
                samples: [
                    ("schedule", ph.schedule),
                    ("execute", ph.execute),
                    ("sample", ph.sample),
                    ("update", ph.update),
                ]
                .into_iter()
                .map(|(phase, v)| ([("phase", phase)], ConstCounter::new(v)))
                .collect(),
            },
        );
        counter(
            &mut r,
            "lantern_prompt_tokens",
            "Prompt tokens scheduled",
            snap.prompt_tokens_total,
        );
        counter(
            &mut r,
            "lantern_generation_tokens",
            "Tokens generated",
            snap.generation_tokens_total,
        );
        counter(
            &mut r,
            "lantern_prefix_cache_queries",
            "Prompt tokens looked up in the prefix cache",
            snap.prefix_cache_queries_tokens,
        );
        counter(
            &mut r,
            "lantern_prefix_cache_hits",
            "Prompt tokens served from the prefix cache",
            snap.prefix_cache_hits_tokens,
        );
        let rate = if snap.prefix_cache_queries_tokens == 0 {
            0.0
        } else {
            snap.prefix_cache_hits_tokens as f64 / snap.prefix_cache_queries_tokens as f64
        };
        gauge(
            &mut r,
            "lantern_prefix_cache_hit_rate",
            "Prefix cache hits / queries (tokens)",
            rate,
        );
        counter(
            &mut r,
            "lantern_num_preemptions",
            "Requests preempted (recomputed)",
            snap.num_preemptions,
        );
        counter(
            &mut r,
            "lantern_kv_events_dropped",
            "KV-cache events dropped because the publisher's queue was full",
            snap.kv_events_dropped,
        );
        counter(
            &mut r,
            "lantern_lora_slot_loads",
            "LoRA adapter copies from host memory into a device slot",
            snap.lora_slot_loads,
        );
        gauge(
            &mut r,
            "lantern_lora_slot_load_seconds_total",
            "Time spent copying LoRA adapters into device slots",
            snap.lora_slot_load_seconds,
        );
        counter(
            &mut r,
            "lantern_lora_disk_loads",
            "LoRA adapter reads from disk into host memory",
            snap.lora_disk_loads,
        );
        gauge(
            &mut r,
            "lantern_lora_disk_load_seconds_total",
            "Time spent reading LoRA adapters from disk (and validating them)",
            snap.lora_disk_load_seconds,
        );
        gauge_int(
            &mut r,
            "lantern_loras_in_host_memory",
            "LoRA adapters whose weights are in host memory",
            snap.loras_in_host_memory,
        );
        add(
            &mut r,
            "lantern_request_finished",
            "Finished sequences by reason",
            Series {
                ty: MetricType::Counter,
                samples: [
                    ("stop", snap.finished_stop),
                    ("length", snap.finished_length),
                    ("abort", snap.finished_abort),
                    ("error", snap.finished_error),
                ]
                .into_iter()
                .map(|(reason, n)| ([("finished_reason", reason)], ConstCounter::new(n)))
                .collect(),
            },
        );
        for (name, help, h) in [
            (
                "lantern_time_to_first_token_seconds",
                "Time to first token (server side)",
                &self.ttft,
            ),
            (
                "lantern_inter_token_latency_seconds",
                "Time between tokens (server side)",
                &self.itl,
            ),
            (
                "lantern_e2e_request_latency_seconds",
                "Arrival to finish (server side)",
                &self.e2e,
            ),
            (
                "lantern_request_queue_time_seconds",
                "Arrival to first schedule",
                &self.queue,
            ),
        ] {
            add(&mut r, name, help, h.clone());
        }
        let mask = &snap.structured_mask_seconds;
        add(
            &mut r,
            "lantern_structured_mask_seconds",
            "Time to compute one sequence's structured-output token mask (once per constrained token)",
            ConstHistogram {
                sum: mask.sum,
                count: mask.count,
                buckets: mask.buckets(&MASK_SECONDS_BUCKETS),
            },
        );
        let mut out = String::new();
        if let Err(e) = encode(&mut out, &r) {
            tracing::error!(error = %e, "cannot encode the metrics");
        }
        out
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative() {
        let m = Metrics::default();
        m.ttft.observe(0.003);
        m.ttft.observe(0.5);
        let s = m.render(&EngineSnapshot::default(), "m");
        let x = "lantern_time_to_first_token_seconds";
        assert!(s.contains(&format!("{x}_bucket{{model_name=\"m\",le=\"0.001\"}} 0\n")));
        assert!(s.contains(&format!("{x}_bucket{{model_name=\"m\",le=\"0.005\"}} 1\n")));
        assert!(s.contains(&format!("{x}_bucket{{model_name=\"m\",le=\"0.5\"}} 2\n")));
        assert!(s.contains(&format!("{x}_bucket{{model_name=\"m\",le=\"1\"}} 2\n")));
        assert!(s.contains(&format!("{x}_bucket{{model_name=\"m\",le=\"+Inf\"}} 2\n")));
        assert!(s.contains(&format!("{x}_count{{model_name=\"m\"}} 2\n")));
    }

    #[test]
    fn the_engine_mask_histogram_is_exposed() {
        let mut snap = EngineSnapshot::default();
        snap.structured_mask_seconds
            .observe(&MASK_SECONDS_BUCKETS, 0.0003);
        snap.structured_mask_seconds
            .observe(&MASK_SECONDS_BUCKETS, 0.2);
        let s = Metrics::default().render(&snap, "m");
        let x = "lantern_structured_mask_seconds";
        assert!(
            s.contains(&format!(
                "{x}_bucket{{model_name=\"m\",le=\"0.00025\"}} 0\n"
            )),
            "{s}"
        );
        assert!(
            s.contains(&format!("{x}_bucket{{model_name=\"m\",le=\"0.1\"}} 1\n")),
            "{s}"
        );
        assert!(
            s.contains(&format!("{x}_bucket{{model_name=\"m\",le=\"0.0005\"}} 1\n")),
            "{s}"
        );
        assert!(
            s.contains(&format!("{x}_bucket{{model_name=\"m\",le=\"+Inf\"}} 2\n")),
            "{s}"
        );
        assert!(
            s.contains(&format!("{x}_count{{model_name=\"m\"}} 2\n")),
            "{s}"
        );
    }

    /// The exposed families, their types and order (dashboards and alerts use the names).
    #[test]
    fn families_keep_their_names_and_types() {
        let s = Metrics::default().render(&EngineSnapshot::default(), "m");
        let got: Vec<(&str, &str)> = s
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .map(|l| l.split_once(' ').unwrap())
            .collect();
        let want = [
            ("lantern_requests_total", "counter"),
            ("lantern_num_requests_running", "gauge"),
            ("lantern_num_requests_waiting", "gauge"),
            ("lantern_kv_cache_usage_perc", "gauge"),
            ("lantern_kv_cache_blocks_total", "gauge"),
            ("lantern_step_batched_tokens", "gauge"),
            ("lantern_step_duration_seconds", "gauge"),
            ("lantern_engine_steps_total", "counter"),
            ("lantern_engine_step_seconds_total", "gauge"),
            ("lantern_engine_simulated_device_seconds_total", "gauge"),
            ("lantern_engine_step_phase_seconds_total", "counter"),
            ("lantern_prompt_tokens_total", "counter"),
            ("lantern_generation_tokens_total", "counter"),
            ("lantern_prefix_cache_queries_total", "counter"),
            ("lantern_prefix_cache_hits_total", "counter"),
            ("lantern_prefix_cache_hit_rate", "gauge"),
            ("lantern_num_preemptions_total", "counter"),
            ("lantern_kv_events_dropped_total", "counter"),
            ("lantern_lora_slot_loads_total", "counter"),
            ("lantern_lora_slot_load_seconds_total", "gauge"),
            ("lantern_lora_disk_loads_total", "counter"),
            ("lantern_lora_disk_load_seconds_total", "gauge"),
            ("lantern_loras_in_host_memory", "gauge"),
            ("lantern_request_finished_total", "counter"),
            ("lantern_time_to_first_token_seconds", "histogram"),
            ("lantern_inter_token_latency_seconds", "histogram"),
            ("lantern_e2e_request_latency_seconds", "histogram"),
            ("lantern_request_queue_time_seconds", "histogram"),
            ("lantern_structured_mask_seconds", "histogram"),
        ];
        assert_eq!(got, want);
        // Every family has its HELP line, ending with one period; no OpenMetrics `# EOF`.
        let helps: Vec<&str> = s.lines().filter(|l| l.starts_with("# HELP ")).collect();
        assert_eq!(helps.len(), want.len());
        assert!(helps.iter().all(|h| h.ends_with('.') && !h.ends_with("..")));
        assert!(!s.contains("# EOF"));
    }
}
