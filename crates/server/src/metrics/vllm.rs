//! The engine metrics under vLLM's names (vLLM 0.34, `PrometheusStatLogger` in
//! `vllm/v1/metrics/loggers.py`): same metric names, types, help texts, label names and
//! histogram buckets, so Kubernetes inference routers (the Gateway API Inference
//! Extension's endpoint picker, llm-d) and vLLM dashboards read Lantern's load. Every
//! sample is labelled `model_name` (the first served name) and `engine="0"` (one engine).
//!
//! Where each value comes from:
//! - the engine's snapshot at scrape time: request gauges, KV cache usage, prefix cache,
//!   token counters, preemptions, time to first token and inter-token latency (observed on
//!   the engine thread when a token is sampled), iteration tokens (per engine step), LoRA
//!   requests and the cache configuration;
//! - [`RequestStats`], recorded by the routes when a sequence's `Finished` event reaches a
//!   live response, as vLLM's output processor does (a request the client abandoned is not
//!   counted, in vLLM neither): request success by finish reason and the per-request
//!   histograms (latency phases, token counts, preemptions, `n`).

use super::{ConstHistogram, Labels, Series};
use lantern_engine::{
    EngineSnapshot, FinishReason, Histogram as EngineHistogram, RequestTiming, Usage,
    ITERATION_TOKENS_BUCKETS, ITL_SECONDS_BUCKETS, TTFT_SECONDS_BUCKETS,
};
use prometheus_client::encoding::EncodeMetric;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Metric, Registry};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{LazyLock, Mutex};

/// vLLM's `REQUEST_LATENCY_BUCKETS` (seconds; `vllm/v1/metrics/buckets.py`): e2e, queue,
/// inference, prefill and decode time.
pub const REQUEST_LATENCY_BUCKETS: [f64; 21] = [
    0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0, 120.0, 240.0,
    480.0, 960.0, 1920.0, 7680.0,
];

/// vLLM's `REQUEST_PARAMS_N_BUCKETS` (`vllm/v1/metrics/buckets.py`).
pub const REQUEST_PARAMS_N_BUCKETS: [f64; 5] = [1.0, 2.0, 5.0, 10.0, 20.0];

/// vLLM's `REQUEST_NUM_PREEMPTIONS_BUCKETS` (`vllm/v1/metrics/buckets.py`).
pub const REQUEST_NUM_PREEMPTIONS_BUCKETS: [f64; 7] = [1.0, 2.0, 3.0, 4.0, 5.0, 10.0, 20.0];

/// vLLM's finish reasons, in `FinishReason` order (`vllm/v1/engine/__init__.py`); every one
/// is exposed, at 0 until it happens (Lantern never finishes with `repetition`).
pub const FINISHED_REASONS: [&str; 5] = ["stop", "length", "abort", "error", "repetition"];

/// vLLM's token-count buckets (`build_1_2_5_buckets(max_model_len)` in
/// `vllm/v1/metrics/buckets.py`): 1, 2, 5, 10, 20, 50, ... up to `max_value`.
pub fn request_tokens_buckets(max_value: u64) -> Vec<f64> {
    let mut out = Vec::new();
    let mut scale = 1u64;
    loop {
        for m in [1u64, 2, 5] {
            match m.checked_mul(scale) {
                Some(v) if v <= max_value => out.push(v as f64),
                _ => return out,
            }
        }
        scale = match scale.checked_mul(10) {
            Some(s) => s,
            None => return out,
        };
    }
}

/// Token counts are recorded against 1-2-5 bounds up to 10^15, whatever the context length;
/// a scrape exposes the bounds up to `max_model_len` (the counts of the bounds it keeps are
/// the same either way) and folds the rest into `+Inf`.
static TOKEN_BOUNDS: LazyLock<Vec<f64>> =
    LazyLock::new(|| request_tokens_buckets(1_000_000_000_000_000));

/// `h` (recorded against [`TOKEN_BOUNDS`]) with vLLM's bounds for `max_model_len`.
fn token_histogram(h: &EngineHistogram, max_model_len: usize) -> ConstHistogram {
    let bounds = request_tokens_buckets(max_model_len as u64);
    let all = h.buckets(&TOKEN_BOUNDS);
    let mut buckets: Vec<(f64, u64)> = all.iter().take(bounds.len()).copied().collect();
    let rest: u64 = all.iter().skip(bounds.len()).map(|&(_, n)| n).sum();
    buckets.push((f64::INFINITY, rest));
    ConstHistogram {
        sum: h.sum,
        count: h.count,
        buckets,
    }
}

fn latency_histogram() -> Histogram {
    Histogram::new(REQUEST_LATENCY_BUCKETS)
}

#[derive(Debug, Default)]
struct TokenHistograms {
    prompt: EngineHistogram,
    generation: EngineHistogram,
    prefill_kv_computed: EngineHistogram,
    max_generation: EngineHistogram,
}

/// What vLLM records per finished request (one per sequence: `n > 1` completions count as
/// `n` requests, like vLLM's child requests), and per finished `n` group.
#[derive(Debug)]
pub struct RequestStats {
    /// By [`FINISHED_REASONS`] index.
    success: [AtomicU64; 5],
    e2e: Histogram,
    queue: Histogram,
    inference: Histogram,
    prefill: Histogram,
    decode: Histogram,
    time_per_output_token: Histogram,
    num_preemptions: Histogram,
    params_n: Histogram,
    tokens: Mutex<TokenHistograms>,
}

impl Default for RequestStats {
    fn default() -> Self {
        Self {
            success: Default::default(),
            e2e: latency_histogram(),
            queue: latency_histogram(),
            inference: latency_histogram(),
            prefill: latency_histogram(),
            decode: latency_histogram(),
            time_per_output_token: Histogram::new(ITL_SECONDS_BUCKETS),
            num_preemptions: Histogram::new(REQUEST_NUM_PREEMPTIONS_BUCKETS),
            params_n: Histogram::new(REQUEST_PARAMS_N_BUCKETS),
            tokens: Mutex::new(TokenHistograms::default()),
        }
    }
}

impl RequestStats {
    fn count(&self, reason: &str) {
        if let Some(i) = FINISHED_REASONS.iter().position(|r| *r == reason) {
            self.success[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// A sequence finished (vLLM's `IterationStats.update_from_finished_request`): queue =
    /// arrival to first schedule, prefill = first schedule to first token, decode = first to
    /// last token, inference = first schedule to last token, e2e = arrival to finish.
    pub fn finished(&self, reason: FinishReason, usage: &Usage, t: &RequestTiming) {
        self.count(reason.as_str());
        self.e2e.observe(
            t.finished
                .saturating_duration_since(t.arrival)
                .as_secs_f64(),
        );
        self.queue.observe(t.queue_s());
        self.prefill.observe(t.prefill_s());
        let decode = t.first_to_last_token_s();
        self.decode.observe(decode);
        self.inference.observe(t.scheduled_to_last_token_s());
        let tpot = if usage.completion_tokens > 1 {
            decode / (usage.completion_tokens - 1) as f64
        } else {
            0.0
        };
        self.time_per_output_token.observe(tpot);
        self.num_preemptions.observe(f64::from(t.num_preemptions));
        if let Ok(mut h) = self.tokens.lock() {
            h.prompt.observe(&TOKEN_BOUNDS, usage.prompt_tokens as f64);
            h.generation
                .observe(&TOKEN_BOUNDS, usage.completion_tokens as f64);
            let computed = usage.prompt_tokens.saturating_sub(usage.cached_tokens);
            h.prefill_kv_computed
                .observe(&TOKEN_BOUNDS, computed as f64);
        }
    }

    /// A sequence failed in the engine (vLLM's `error` finish reason).
    pub fn failed(&self) {
        self.count("error");
    }

    /// Every completion of one prompt ended: its `n` and the most tokens one of them
    /// generated (vLLM's `ParentRequest.observe_finished_request`).
    pub fn request_finished(&self, n: usize, max_generation_tokens: usize) {
        self.params_n.observe(n as f64);
        if let Ok(mut h) = self.tokens.lock() {
            h.max_generation
                .observe(&TOKEN_BOUNDS, max_generation_tokens as f64);
        }
    }

    fn success_count(&self, i: usize) -> u64 {
        self.success[i].load(Ordering::Relaxed)
    }
}

/// Python's `str()` of a float, as vLLM writes config values into labels.
fn py_float(v: f64) -> String {
    if v.is_finite() && v.fract() == 0.0 {
        format!("{v:.1}")
    } else {
        v.to_string()
    }
}

/// Python's `str()` of an optional value (`None` when absent).
fn py_opt<T: ToString>(v: Option<T>) -> String {
    v.map_or_else(|| "None".to_string(), |v| v.to_string())
}

fn py_bool(v: bool) -> String {
    if v { "True" } else { "False" }.to_string()
}

/// Registers vLLM's families on a fresh registry, each sample labelled `model_name` and
/// `engine` first.
struct Families<'a> {
    r: Registry,
    model: &'a str,
}

impl Families<'_> {
    fn labels(&self, extra: &[(&'static str, String)]) -> Labels {
        let mut l = vec![
            ("model_name", self.model.to_string()),
            ("engine", "0".to_string()),
        ];
        l.extend_from_slice(extra);
        l
    }

    /// `help` is vLLM's text; the registry adds the final period itself.
    fn series<M: EncodeMetric + Send + Sync + std::fmt::Debug + 'static>(
        &mut self,
        name: &str,
        help: &str,
        ty: MetricType,
        samples: Vec<(Labels, M)>,
    ) {
        let help = help.strip_suffix('.').unwrap_or(help);
        self.r.register(name, help, Series { ty, samples });
    }

    fn one(&mut self, name: &str, help: &str, ty: MetricType, m: impl Metric) {
        let labels = self.labels(&[]);
        self.series(name, help, ty, vec![(labels, m)]);
    }

    fn gauge(&mut self, name: &str, help: &str, v: f64) {
        self.one(name, help, MetricType::Gauge, ConstGauge::new(v));
    }

    /// `name` without `_total` (the encoder adds it to counters).
    fn counter(&mut self, name: &str, help: &str, v: u64) {
        self.one(name, help, MetricType::Counter, ConstCounter::new(v));
    }

    fn histogram(&mut self, name: &str, help: &str, h: impl Metric) {
        self.one(name, help, MetricType::Histogram, h);
    }
}

/// The `vllm:*` families, in the order vLLM registers them.
pub(super) fn registry(stats: &RequestStats, snap: &EngineSnapshot, model: &str) -> Registry {
    let mut f = Families {
        r: Registry::default(),
        model,
    };
    let s = &snap.last_step;
    let cfg = &snap.config;
    f.gauge(
        "vllm:num_requests_running",
        "Number of requests in model execution batches.",
        s.num_running as f64,
    );
    f.gauge(
        "vllm:num_requests_waiting",
        "Number of requests waiting to be processed.",
        (s.num_waiting + s.num_held) as f64,
    );
    let sleep: Vec<(Labels, ConstGauge<f64>)> = [
        ("awake", 1.0),
        ("weights_offloaded", 0.0),
        ("discard_all", 0.0),
    ]
    .into_iter()
    .map(|(state, v)| {
        (
            f.labels(&[("sleep_state", state.to_string())]),
            ConstGauge::new(v),
        )
    })
    .collect();
    f.series(
        "vllm:engine_sleep_state",
        "Engine sleep state; awake = 0 means engine is sleeping; awake = 1 means engine is awake; weights_offloaded = 1 means sleep level 1; discard_all = 1 means sleep level 2.",
        MetricType::Gauge,
        sleep,
    );
    let usage = if snap.kv_blocks_total == 0 {
        0.0
    } else {
        s.kv_blocks_used as f64 / snap.kv_blocks_total as f64
    };
    f.gauge(
        "vllm:kv_cache_usage_perc",
        "KV-cache usage. 1 means 100 percent usage.",
        usage,
    );
    f.counter(
        "vllm:prefix_cache_queries",
        "Prefix cache queries, in terms of number of queried tokens.",
        snap.prefix_cache_queries_tokens
            .saturating_sub(snap.prefix_cache_resumed_queries_tokens),
    );
    f.counter(
        "vllm:prefix_cache_hits",
        "Prefix cache hits, in terms of number of cached tokens.",
        snap.prefix_cache_hits_tokens
            .saturating_sub(snap.prefix_cache_resumed_hits_tokens),
    );
    f.counter(
        "vllm:num_preemptions",
        "Cumulative number of preemption from the engine.",
        snap.num_preemptions,
    );
    f.counter(
        "vllm:prompt_tokens",
        "Number of prefill tokens processed.",
        snap.prefilled_prompt_tokens,
    );
    let cached = snap.prefilled_cached_tokens;
    let by_source: Vec<(Labels, ConstCounter)> = [
        (
            "local_compute",
            snap.prefilled_prompt_tokens.saturating_sub(cached),
        ),
        ("local_cache_hit", cached),
        ("external_kv_transfer", 0),
    ]
    .into_iter()
    .map(|(src, v)| {
        (
            f.labels(&[("source", src.to_string())]),
            ConstCounter::new(v),
        )
    })
    .collect();
    f.series(
        "vllm:prompt_tokens_by_source",
        "Number of prompt tokens by source.",
        MetricType::Counter,
        by_source,
    );
    f.counter(
        "vllm:prompt_tokens_cached",
        "Number of cached prompt tokens (local + external).",
        cached,
    );
    f.counter(
        "vllm:generation_tokens",
        "Number of generation tokens processed.",
        snap.generation_tokens_total,
    );
    let success: Vec<(Labels, ConstCounter)> = FINISHED_REASONS
        .iter()
        .enumerate()
        .map(|(i, reason)| {
            (
                f.labels(&[("finished_reason", reason.to_string())]),
                ConstCounter::new(stats.success_count(i)),
            )
        })
        .collect();
    f.series(
        "vllm:request_success",
        "Count of successfully processed requests.",
        MetricType::Counter,
        success,
    );
    let max_len = cfg.max_model_len;
    let tokens = stats.tokens.lock().map(|t| {
        [
            token_histogram(&t.prompt, max_len),
            token_histogram(&t.generation, max_len),
            token_histogram(&t.max_generation, max_len),
            token_histogram(&t.prefill_kv_computed, max_len),
        ]
    });
    let empty = EngineHistogram::default();
    let [prompt, generation, max_generation, prefill_kv_computed] =
        tokens.unwrap_or_else(|_| std::array::from_fn(|_| token_histogram(&empty, max_len)));
    f.histogram(
        "vllm:request_prompt_tokens",
        "Number of prefill tokens processed.",
        prompt,
    );
    f.histogram(
        "vllm:request_generation_tokens",
        "Number of generation tokens processed.",
        generation,
    );
    f.histogram(
        "vllm:iteration_tokens_total",
        "Histogram of number of tokens per engine_step.",
        ConstHistogram::of(&snap.iteration_tokens, &ITERATION_TOKENS_BUCKETS),
    );
    f.histogram(
        "vllm:request_max_num_generation_tokens",
        "Histogram of maximum number of requested generation tokens.",
        max_generation,
    );
    f.histogram(
        "vllm:request_params_n",
        "Histogram of the n request parameter.",
        stats.params_n.clone(),
    );
    f.histogram(
        "vllm:time_to_first_token_seconds",
        "Histogram of time to first token in seconds.",
        ConstHistogram::of(&snap.time_to_first_token, &TTFT_SECONDS_BUCKETS),
    );
    f.histogram(
        "vllm:inter_token_latency_seconds",
        "Histogram of inter-token latency in seconds.",
        ConstHistogram::of(&snap.inter_token_latency, &ITL_SECONDS_BUCKETS),
    );
    for (name, help, h) in [
        (
            "vllm:request_time_per_output_token_seconds",
            "Histogram of time_per_output_token_seconds per request.",
            &stats.time_per_output_token,
        ),
        (
            "vllm:e2e_request_latency_seconds",
            "Histogram of e2e request latency in seconds.",
            &stats.e2e,
        ),
        (
            "vllm:request_queue_time_seconds",
            "Histogram of time spent in WAITING phase for request.",
            &stats.queue,
        ),
        (
            "vllm:request_inference_time_seconds",
            "Histogram of time spent in RUNNING phase for request.",
            &stats.inference,
        ),
        (
            "vllm:request_prefill_time_seconds",
            "Histogram of time spent in PREFILL phase for request.",
            &stats.prefill,
        ),
        (
            "vllm:request_decode_time_seconds",
            "Histogram of time spent in DECODE phase for request.",
            &stats.decode,
        ),
        (
            "vllm:request_num_preemptions",
            "Histogram of the number of times a request was preempted.",
            &stats.num_preemptions,
        ),
    ] {
        f.histogram(name, help, h.clone());
    }
    f.histogram(
        "vllm:request_prefill_kv_computed_tokens",
        "Histogram of new KV tokens computed during prefill (excluding cached tokens).",
        prefill_kv_computed,
    );
    if let Some(max_loras) = cfg.max_loras {
        let join = |pick: fn(&lantern_engine::LoraRequests) -> usize| {
            snap.lora_requests
                .iter()
                .filter(|l| pick(l) > 0)
                .map(|l| l.name.as_str())
                .collect::<Vec<_>>()
                .join(",")
        };
        let labels = f.labels(&[
            ("max_lora", max_loras.to_string()),
            ("waiting_lora_adapters", join(|l| l.waiting)),
            ("running_lora_adapters", join(|l| l.running)),
        ]);
        f.series(
            "vllm:lora_requests_info",
            "Running stats on lora requests.",
            MetricType::Gauge,
            vec![(labels, ConstGauge::new(snap.lora_requests_unix))],
        );
    }
    if cfg.block_size == 0 {
        return f.r; // the engine is not started yet: no cache configuration to describe
    }
    let cache = f.labels(&[
        ("block_size", cfg.block_size.to_string()),
        ("cache_dtype", "auto".to_string()),
        ("enable_prefix_caching", py_bool(cfg.enable_prefix_caching)),
        (
            "gpu_memory_utilization",
            py_opt(cfg.gpu_memory_utilization.map(py_float)),
        ),
        ("kv_cache_memory_bytes", py_opt(cfg.kv_cache_memory_bytes)),
        ("num_cpu_blocks", "None".to_string()),
        // vLLM's count includes the reserved null block, as Lantern's pool does.
        ("num_gpu_blocks", (snap.kv_blocks_total + 1).to_string()),
    ]);
    f.series(
        "vllm:cache_config_info",
        "Information of the LLMEngine CacheConfig",
        MetricType::Gauge,
        vec![(cache, ConstGauge::new(1.0))],
    );
    f.r
}
