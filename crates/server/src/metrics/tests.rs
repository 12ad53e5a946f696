#![allow(clippy::unwrap_used)]

use super::vllm::{self, FINISHED_REASONS};
use super::*;
use lantern_engine::{
    EngineFacts, FinishReason, LoraRequests, RequestTiming, StepStats, Usage,
    ITERATION_TOKENS_BUCKETS, ITL_SECONDS_BUCKETS, MASK_SECONDS_BUCKETS, TTFT_SECONDS_BUCKETS,
};
use std::time::{Duration, Instant};

// vLLM 0.34's bucket boundaries, copied by value from `vllm/v1/metrics/buckets.py`
// (`REQUEST_LATENCY_BUCKETS`, `TIME_TO_FIRST_TOKEN_BUCKETS`, `INTER_TOKEN_LATENCY_BUCKETS`,
// `ITERATION_TOKENS_BUCKETS`, `REQUEST_PARAMS_N_BUCKETS`, `REQUEST_NUM_PREEMPTIONS_BUCKETS`;
// token counts: `build_1_2_5_buckets(max_model_len)`).
const VLLM_REQUEST_LATENCY: &[f64] = &[
    0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0, 120.0, 240.0,
    480.0, 960.0, 1920.0, 7680.0,
];
const VLLM_TIME_TO_FIRST_TOKEN: &[f64] = &[
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
    20.0, 40.0, 80.0, 160.0, 640.0, 2560.0,
];
const VLLM_INTER_TOKEN_LATENCY: &[f64] = &[
    0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0,
    40.0, 80.0,
];
const VLLM_ITERATION_TOKENS: &[f64] = &[
    1.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 2048.0, 4096.0, 8192.0, 16384.0,
];
const VLLM_REQUEST_PARAMS_N: &[f64] = &[1.0, 2.0, 5.0, 10.0, 20.0];
const VLLM_REQUEST_NUM_PREEMPTIONS: &[f64] = &[1.0, 2.0, 3.0, 4.0, 5.0, 10.0, 20.0];
/// `build_1_2_5_buckets(2048)`.
const VLLM_REQUEST_TOKENS_2048: &[f64] = &[
    1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0, 2000.0,
];

/// A running engine's snapshot: 2048-token context, 16-token blocks, 100 usable blocks.
fn started() -> EngineSnapshot {
    EngineSnapshot {
        kv_blocks_total: 100,
        config: EngineFacts {
            block_size: 16,
            enable_prefix_caching: true,
            max_model_len: 2048,
            gpu_memory_utilization: Some(0.9),
            kv_cache_memory_bytes: None,
            max_loras: None,
        },
        ..EngineSnapshot::default()
    }
}

/// A sample line: name, labels, value.
type Line<'a> = (&'a str, Vec<(&'a str, &'a str)>, f64);

/// Splits a sample line into (name, labels, value); labels must not contain `,` or `"`.
fn parse_line(line: &str) -> Option<Line<'_>> {
    if line.starts_with('#') || line.is_empty() {
        return None;
    }
    let (head, value) = line.rsplit_once(' ')?;
    let (name, labels) = match head.split_once('{') {
        Some((n, rest)) => (n, rest.strip_suffix('}')?),
        None => (head, ""),
    };
    let labels = labels
        .split(',')
        .filter(|l| !l.is_empty())
        .filter_map(|l| {
            let (k, v) = l.split_once('=')?;
            Some((k, v.trim_matches('"')))
        })
        .collect();
    Some((name, labels, value.parse().ok()?))
}

/// The value of sample `name` whose labels include `want`.
fn value(text: &str, name: &str, want: &[(&str, &str)]) -> Option<f64> {
    text.lines()
        .filter_map(parse_line)
        .find(|(n, l, _)| *n == name && want.iter().all(|w| l.contains(w)))
        .map(|(_, _, v)| v)
}

/// The finite `le` bounds of histogram `name`.
fn bounds(text: &str, name: &str) -> Vec<f64> {
    let bucket = format!("{name}_bucket");
    text.lines()
        .filter_map(parse_line)
        .filter(|(n, _, _)| *n == bucket)
        .filter_map(|(_, l, _)| l.iter().find(|(k, _)| *k == "le").map(|(_, v)| *v))
        .filter(|le| *le != "+Inf")
        .map(|le| le.parse().unwrap())
        .collect()
}

fn types(text: &str) -> Vec<(&str, &str)> {
    text.lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .map(|l| l.split_once(' ').unwrap())
        .collect()
}

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
    let le = |b: &str| {
        value(
            &s,
            &format!("{x}_bucket"),
            &[("model_name", "m"), ("le", b)],
        )
    };
    assert_eq!(le("0.00025"), Some(0.0), "{s}");
    assert_eq!(le("0.0005"), Some(1.0), "{s}");
    assert_eq!(le("0.1"), Some(1.0), "{s}");
    assert_eq!(le("+Inf"), Some(2.0), "{s}");
    assert_eq!(value(&s, &format!("{x}_count"), &[]), Some(2.0), "{s}");
}

/// The `lantern_*` families, their types and order (dashboards and alerts use the names).
#[test]
fn lantern_families_keep_their_names_and_types() {
    let s = Metrics::default().render(&started(), "m");
    let got: Vec<(&str, &str)> = types(&s)
        .into_iter()
        .filter(|(n, _)| n.starts_with("lantern_"))
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
    // Every family has one HELP line, ending with one period; no OpenMetrics `# EOF`.
    let helps: Vec<&str> = s.lines().filter(|l| l.starts_with("# HELP ")).collect();
    assert_eq!(helps.len(), types(&s).len());
    assert!(helps.iter().all(|h| h.ends_with('.') && !h.ends_with("..")));
    assert!(!s.contains("# EOF"));
}

/// vLLM's families (the ones Lantern has), with vLLM's types, in vLLM's order.
#[test]
fn vllm_families_have_vllms_names_types_and_labels() {
    let mut snap = started();
    snap.config.max_loras = Some(2);
    let s = Metrics::default().render(&snap, "m");
    let got: Vec<(&str, &str)> = types(&s)
        .into_iter()
        .filter(|(n, _)| n.starts_with("vllm:"))
        .collect();
    let want = [
        ("vllm:num_requests_running", "gauge"),
        ("vllm:num_requests_waiting", "gauge"),
        ("vllm:engine_sleep_state", "gauge"),
        ("vllm:kv_cache_usage_perc", "gauge"),
        ("vllm:prefix_cache_queries_total", "counter"),
        ("vllm:prefix_cache_hits_total", "counter"),
        ("vllm:num_preemptions_total", "counter"),
        ("vllm:prompt_tokens_total", "counter"),
        ("vllm:prompt_tokens_by_source_total", "counter"),
        ("vllm:prompt_tokens_cached_total", "counter"),
        ("vllm:generation_tokens_total", "counter"),
        ("vllm:request_success_total", "counter"),
        ("vllm:request_prompt_tokens", "histogram"),
        ("vllm:request_generation_tokens", "histogram"),
        ("vllm:iteration_tokens_total", "histogram"),
        ("vllm:request_max_num_generation_tokens", "histogram"),
        ("vllm:request_params_n", "histogram"),
        ("vllm:time_to_first_token_seconds", "histogram"),
        ("vllm:inter_token_latency_seconds", "histogram"),
        ("vllm:request_time_per_output_token_seconds", "histogram"),
        ("vllm:e2e_request_latency_seconds", "histogram"),
        ("vllm:request_queue_time_seconds", "histogram"),
        ("vllm:request_inference_time_seconds", "histogram"),
        ("vllm:request_prefill_time_seconds", "histogram"),
        ("vllm:request_decode_time_seconds", "histogram"),
        ("vllm:request_num_preemptions", "histogram"),
        ("vllm:request_prefill_kv_computed_tokens", "histogram"),
        ("vllm:lora_requests_info", "gauge"),
        ("vllm:cache_config_info", "gauge"),
    ];
    assert_eq!(got, want);
    // vLLM's help texts, verbatim.
    for help in [
        "# HELP vllm:num_requests_running Number of requests in model execution batches.",
        "# HELP vllm:num_requests_waiting Number of requests waiting to be processed.",
        "# HELP vllm:kv_cache_usage_perc KV-cache usage. 1 means 100 percent usage.",
        "# HELP vllm:request_success_total Count of successfully processed requests.",
        "# HELP vllm:iteration_tokens_total Histogram of number of tokens per engine_step.",
    ] {
        assert!(s.lines().any(|l| l == help), "{help}\n{s}");
    }
    // Every vllm: sample starts with model_name, then engine="0".
    let samples: Vec<_> = s
        .lines()
        .filter_map(parse_line)
        .filter(|(n, _, _)| n.starts_with("vllm:"))
        .collect();
    assert!(samples.len() > want.len());
    for (name, labels, _) in &samples {
        assert_eq!(
            labels[..2],
            [("model_name", "m"), ("engine", "0")],
            "{name}"
        );
    }
    // Without LoRA there is no LoRA info (as in vLLM); before start-up no cache info.
    let s = Metrics::default().render(&started(), "m");
    assert!(!s.contains("vllm:lora_requests_info"));
    let s = Metrics::default().render(&EngineSnapshot::default(), "m");
    assert!(!s.contains("vllm:cache_config_info"));
    assert_eq!(
        value(&s, "vllm:num_requests_running", &[("engine", "0")]),
        Some(0.0),
        "{s}"
    );
}

#[test]
fn vllm_histograms_have_vllms_buckets() {
    assert_eq!(vllm::REQUEST_LATENCY_BUCKETS, VLLM_REQUEST_LATENCY);
    assert_eq!(TTFT_SECONDS_BUCKETS, VLLM_TIME_TO_FIRST_TOKEN);
    assert_eq!(ITL_SECONDS_BUCKETS, VLLM_INTER_TOKEN_LATENCY);
    assert_eq!(ITERATION_TOKENS_BUCKETS, VLLM_ITERATION_TOKENS);
    assert_eq!(vllm::REQUEST_PARAMS_N_BUCKETS, VLLM_REQUEST_PARAMS_N);
    assert_eq!(
        vllm::REQUEST_NUM_PREEMPTIONS_BUCKETS,
        VLLM_REQUEST_NUM_PREEMPTIONS
    );
    assert_eq!(vllm::request_tokens_buckets(2048), VLLM_REQUEST_TOKENS_2048);
    assert_eq!(
        vllm::request_tokens_buckets(100),
        [1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0]
    );
    assert_eq!(vllm::request_tokens_buckets(0), Vec::<f64>::new());
    let s = Metrics::default().render(&started(), "m");
    for (name, want) in [
        ("vllm:time_to_first_token_seconds", VLLM_TIME_TO_FIRST_TOKEN),
        ("vllm:inter_token_latency_seconds", VLLM_INTER_TOKEN_LATENCY),
        (
            "vllm:request_time_per_output_token_seconds",
            VLLM_INTER_TOKEN_LATENCY,
        ),
        ("vllm:e2e_request_latency_seconds", VLLM_REQUEST_LATENCY),
        ("vllm:request_queue_time_seconds", VLLM_REQUEST_LATENCY),
        ("vllm:request_inference_time_seconds", VLLM_REQUEST_LATENCY),
        ("vllm:request_prefill_time_seconds", VLLM_REQUEST_LATENCY),
        ("vllm:request_decode_time_seconds", VLLM_REQUEST_LATENCY),
        ("vllm:iteration_tokens_total", VLLM_ITERATION_TOKENS),
        ("vllm:request_params_n", VLLM_REQUEST_PARAMS_N),
        ("vllm:request_num_preemptions", VLLM_REQUEST_NUM_PREEMPTIONS),
        ("vllm:request_prompt_tokens", VLLM_REQUEST_TOKENS_2048),
        ("vllm:request_generation_tokens", VLLM_REQUEST_TOKENS_2048),
        (
            "vllm:request_max_num_generation_tokens",
            VLLM_REQUEST_TOKENS_2048,
        ),
        (
            "vllm:request_prefill_kv_computed_tokens",
            VLLM_REQUEST_TOKENS_2048,
        ),
    ] {
        assert_eq!(bounds(&s, name), want, "{name}");
    }
}

#[test]
fn vllm_gauges_and_counters_mean_what_vllms_do() {
    let mut snap = started();
    snap.last_step = StepStats {
        num_running: 4,
        num_waiting: 3,
        num_held: 2,
        kv_blocks_used: 25,
        ..StepStats::default()
    };
    snap.prefix_cache_queries_tokens = 1000;
    snap.prefix_cache_hits_tokens = 400;
    snap.prefix_cache_resumed_queries_tokens = 100;
    snap.prefix_cache_resumed_hits_tokens = 60;
    snap.prefilled_prompt_tokens = 900;
    snap.prefilled_cached_tokens = 340;
    snap.generation_tokens_total = 77;
    snap.num_preemptions = 5;
    let s = Metrics::default().render(&snap, "m");
    let v = |name: &str| value(&s, name, &[("model_name", "m"), ("engine", "0")]).unwrap();
    assert_eq!(v("vllm:num_requests_running"), 4.0);
    // Held-back n > 1 siblings and requests waiting for their adapter wait too.
    assert_eq!(v("vllm:num_requests_waiting"), 5.0);
    assert_eq!(v("vllm:kv_cache_usage_perc"), 0.25);
    // Resumed (preempted) requests' lookups are left out, as in vLLM.
    assert_eq!(v("vllm:prefix_cache_queries_total"), 900.0);
    assert_eq!(v("vllm:prefix_cache_hits_total"), 340.0);
    assert_eq!(v("vllm:num_preemptions_total"), 5.0);
    assert_eq!(v("vllm:prompt_tokens_total"), 900.0);
    assert_eq!(v("vllm:prompt_tokens_cached_total"), 340.0);
    assert_eq!(v("vllm:generation_tokens_total"), 77.0);
    let by = |src| value(&s, "vllm:prompt_tokens_by_source_total", &[("source", src)]);
    assert_eq!(by("local_compute"), Some(560.0));
    assert_eq!(by("local_cache_hit"), Some(340.0));
    assert_eq!(by("external_kv_transfer"), Some(0.0));
    let sleep = |st| value(&s, "vllm:engine_sleep_state", &[("sleep_state", st)]);
    assert_eq!(sleep("awake"), Some(1.0));
    assert_eq!(sleep("weights_offloaded"), Some(0.0));
    assert_eq!(sleep("discard_all"), Some(0.0));
    // The lantern_ gauges keep their meaning (scheduler queue only).
    assert_eq!(value(&s, "lantern_num_requests_waiting", &[]), Some(3.0));
    let cache = [
        ("block_size", "16"),
        ("cache_dtype", "auto"),
        ("enable_prefix_caching", "True"),
        ("gpu_memory_utilization", "0.9"),
        ("kv_cache_memory_bytes", "None"),
        ("num_cpu_blocks", "None"),
        ("num_gpu_blocks", "101"),
    ];
    assert_eq!(
        value(&s, "vllm:cache_config_info", &cache),
        Some(1.0),
        "{s}"
    );
}

fn timing(gen: usize, preemptions: u32) -> RequestTiming {
    let t0 = Instant::now();
    let ms = |n| t0 + Duration::from_millis(n);
    RequestTiming {
        arrival: t0,
        first_scheduled: Some(ms(400)),
        first_token: Some(ms(1000)),
        last_token: (gen > 0).then(|| ms(1000 + 20 * (gen as u64 - 1))),
        finished: ms(1000 + 20 * gen as u64),
        num_preemptions: preemptions,
    }
}

fn usage(prompt: usize, gen: usize, cached: usize) -> Usage {
    Usage {
        prompt_tokens: prompt,
        completion_tokens: gen,
        cached_tokens: cached,
    }
}

#[test]
fn finished_requests_fill_success_and_request_histograms() {
    let m = Metrics::default();
    m.vllm
        .finished(FinishReason::Stop, &usage(30, 11, 16), &timing(11, 0));
    m.vllm
        .finished(FinishReason::Length, &usage(30, 4, 0), &timing(4, 2));
    m.vllm.failed();
    m.vllm.request_finished(2, 11);
    let s = m.render(&started(), "m");
    let success = |r| value(&s, "vllm:request_success_total", &[("finished_reason", r)]).unwrap();
    let got: Vec<f64> = FINISHED_REASONS.iter().map(|r| success(r)).collect();
    assert_eq!(got, [1.0, 1.0, 0.0, 1.0, 0.0]);
    let count = |h: &str| value(&s, &format!("{h}_count"), &[("engine", "0")]).unwrap();
    let sum = |h: &str| value(&s, &format!("{h}_sum"), &[("engine", "0")]).unwrap();
    let le = |h: &str, b| value(&s, &format!("{h}_bucket"), &[("le", b)]).unwrap();
    for h in [
        "vllm:e2e_request_latency_seconds",
        "vllm:request_queue_time_seconds",
        "vllm:request_prefill_time_seconds",
        "vllm:request_decode_time_seconds",
        "vllm:request_inference_time_seconds",
        "vllm:request_time_per_output_token_seconds",
        "vllm:request_prompt_tokens",
        "vllm:request_generation_tokens",
        "vllm:request_prefill_kv_computed_tokens",
        "vllm:request_num_preemptions",
    ] {
        assert_eq!(count(h), 2.0, "{h}");
    }
    assert!((sum("vllm:request_queue_time_seconds") - 0.8).abs() < 1e-9);
    assert!((sum("vllm:request_prefill_time_seconds") - 1.2).abs() < 1e-9);
    // Decode: first to last token, 10 and 3 gaps of 20 ms; per output token 20 ms each.
    assert!((sum("vllm:request_decode_time_seconds") - 0.26).abs() < 1e-9);
    assert!((sum("vllm:request_inference_time_seconds") - 1.46).abs() < 1e-9);
    assert!((sum("vllm:request_time_per_output_token_seconds") - 0.04).abs() < 1e-9);
    assert_eq!(sum("vllm:request_prompt_tokens"), 60.0);
    assert_eq!(sum("vllm:request_generation_tokens"), 15.0);
    assert_eq!(sum("vllm:request_prefill_kv_computed_tokens"), 44.0);
    assert_eq!(le("vllm:request_generation_tokens", "5"), 1.0);
    assert_eq!(le("vllm:request_generation_tokens", "20"), 2.0);
    assert_eq!(le("vllm:request_num_preemptions", "1"), 1.0);
    assert_eq!(le("vllm:request_num_preemptions", "2"), 2.0);
    assert_eq!(count("vllm:request_params_n"), 1.0);
    assert_eq!(le("vllm:request_params_n", "1"), 0.0);
    assert_eq!(le("vllm:request_params_n", "2"), 1.0);
    assert_eq!(sum("vllm:request_max_num_generation_tokens"), 11.0);
}

/// Token counts above the last bound kept for the context length land in `+Inf` only.
#[test]
fn token_histograms_fold_into_the_context_length() {
    let m = Metrics::default();
    m.vllm
        .finished(FinishReason::Stop, &usage(3000, 1, 0), &timing(1, 0));
    let s = m.render(&started(), "m");
    let h = "vllm:request_prompt_tokens_bucket";
    assert_eq!(value(&s, h, &[("le", "2000")]), Some(0.0));
    assert_eq!(value(&s, h, &[("le", "+Inf")]), Some(1.0));
    assert_eq!(value(&s, h, &[("le", "5000")]), None);
}

#[test]
fn lora_requests_info_lists_adapters_by_state() {
    let mut snap = started();
    snap.config.max_loras = Some(4);
    snap.lora_requests_unix = 1_700_000_000.5;
    snap.lora_requests = vec![
        LoraRequests {
            name: "a".into(),
            waiting: 2,
            running: 1,
        },
        LoraRequests {
            name: "b".into(),
            waiting: 0,
            running: 3,
        },
        LoraRequests {
            name: "c".into(),
            waiting: 1,
            running: 0,
        },
    ];
    let s = Metrics::default().render(&snap, "m");
    // Adapter names are comma-joined: read the raw line.
    let line = s
        .lines()
        .find(|l| l.starts_with("vllm:lora_requests_info{"))
        .unwrap();
    assert_eq!(
        line,
        "vllm:lora_requests_info{model_name=\"m\",engine=\"0\",max_lora=\"4\",\
         waiting_lora_adapters=\"a,c\",running_lora_adapters=\"a,b\"} 1700000000.5"
    );
    // Nothing live: empty lists, still one series.
    snap.lora_requests.clear();
    let s = Metrics::default().render(&snap, "m");
    assert!(s.contains(
        "vllm:lora_requests_info{model_name=\"m\",engine=\"0\",max_lora=\"4\",\
         waiting_lora_adapters=\"\",running_lora_adapters=\"\"} "
    ));
}
