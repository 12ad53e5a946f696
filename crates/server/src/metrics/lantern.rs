//! Lantern's own families (`lantern_*`): HTTP request counters, the engine's gauges and
//! counters (some also exposed under vLLM's names, see [`super::vllm`]), step timings, LoRA
//! loads, and the server-side latency histograms. Dashboards use these names: keep them.

use super::{add, counter, gauge, gauge_int, ConstHistogram, Labels, Metrics, Series};
use lantern_engine::{EngineSnapshot, MASK_SECONDS_BUCKETS};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use std::borrow::Cow;

/// The `lantern_*` families, each sample labelled `model_name`.
pub(super) fn registry(m: &Metrics, snap: &EngineSnapshot, model: &str) -> Registry {
    let mut r = Registry::with_labels(std::iter::once((
        Cow::Borrowed("model_name"),
        Cow::Owned(model.to_string()),
    )));
    let requests: Vec<(Labels, ConstCounter)> = match m.requests.lock() {
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
            &m.ttft,
        ),
        (
            "lantern_inter_token_latency_seconds",
            "Time between tokens (server side)",
            &m.itl,
        ),
        (
            "lantern_e2e_request_latency_seconds",
            "Arrival to finish (server side)",
            &m.e2e,
        ),
        (
            "lantern_request_queue_time_seconds",
            "Arrival to first schedule",
            &m.queue,
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
    r
}
