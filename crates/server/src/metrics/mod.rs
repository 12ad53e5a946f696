//! Prometheus metrics (`prometheus-client`, Prometheus text format 0.0.4), two groups:
//!
//! - [`lantern`]: Lantern's own `lantern_*` families (HTTP requests by endpoint, engine
//!   gauges and counters, step and LoRA load times, server-side latencies), each sample
//!   labelled `model_name`;
//! - [`vllm`]: the engine metrics under vLLM's names, types, help, labels and histogram
//!   buckets (`vllm:*`, every sample labelled `model_name` and `engine="0"`), so that
//!   routers and dashboards written for vLLM read Lantern's load.
//!
//! Engine values come from the engine's snapshot at scrape time; per-request values that
//! vLLM records in its frontend when a request finishes are recorded here, by the routes'
//! accumulator ([`vllm::RequestStats`]). Each scrape registers the families in fresh
//! [`Registry`]s (cheap clones of the live histograms, constants for the rest), so the
//! exposition keeps a fixed family order and the model name known at scrape time.

mod lantern;
#[cfg(test)]
mod tests;
pub mod vllm;

use lantern_engine::EngineSnapshot;
use prometheus_client::encoding::prometheus_text::encode;
use prometheus_client::encoding::{EncodeLabelSet, EncodeMetric, MetricEncoder};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Metric, Registry};
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
    /// What vLLM records per finished request.
    pub vllm: vllm::RequestStats,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            requests: Mutex::new(Vec::new()),
            ttft: latency_histogram(),
            itl: latency_histogram(),
            e2e: latency_histogram(),
            queue: latency_histogram(),
            vllm: vllm::RequestStats::default(),
        }
    }
}

/// Labelled samples of one family, encoded in this order (a `Family` would hash them).
#[derive(Debug)]
pub(crate) struct Series<L, M> {
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
pub(crate) struct ConstHistogram {
    sum: f64,
    count: u64,
    /// `(upper bound, count)` per bucket, not cumulative (the encoder accumulates), ending
    /// with `+Inf`.
    buckets: Vec<(f64, u64)>,
}

impl ConstHistogram {
    /// `h`, recorded against `bounds`.
    fn of(h: &lantern_engine::Histogram, bounds: &[f64]) -> Self {
        Self {
            sum: h.sum,
            count: h.count,
            buckets: h.buckets(bounds),
        }
    }
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

    /// Prometheus text exposition format: the `lantern_*` families, then the `vllm:*` ones.
    pub fn render(&self, snap: &EngineSnapshot, model: &str) -> String {
        let model = model.replace('"', "'");
        let mut out = String::new();
        for r in [
            lantern::registry(self, snap, &model),
            vllm::registry(&self.vllm, snap, &model),
        ] {
            if let Err(e) = encode(&mut out, &r) {
                tracing::error!(error = %e, "cannot encode the metrics");
            }
        }
        out
    }
}
