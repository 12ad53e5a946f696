//! `/metrics` of a serving binary: Prometheus text with a TYPE for every family, and the
//! `vllm:` families meaning what vLLM's do under a real workload.

use super::common::*;
use super::shapes::*;
use serde_json::{json, Value};
use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

#[test]
fn metrics_are_prometheus_text() {
    let s = shared();
    // At least one finished request, so the request counters and histograms have data.
    post_ok(
        &s.url("/v1/completions"),
        &completion_body(json!(text_prompt()), 4),
    );
    let r = get(&s.url("/metrics")).unwrap();
    assert_eq!(r.status, 200);
    assert!(r.header("content-type").unwrap().starts_with("text/plain"));
    let samples = parse_prometheus(&r.body);
    // Every sample belongs to a family declared with # TYPE.
    let mut types = HashMap::new();
    for line in r.body.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, ty) = rest.split_once(' ').unwrap();
            assert!(
                matches!(
                    ty,
                    "counter" | "gauge" | "histogram" | "summary" | "untyped"
                ),
                "{line}"
            );
            assert!(
                types.insert(name.to_string(), ty.to_string()).is_none(),
                "{line}"
            );
        }
    }
    for smp in &samples {
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|suf| {
                smp.name
                    .strip_suffix(suf)
                    .filter(|f| types.get(*f).is_some_and(|t| t == "histogram"))
            })
            .unwrap_or(&smp.name);
        assert!(types.contains_key(family), "{} has no # TYPE", smp.name);
    }
    let names: BTreeSet<&str> = samples.iter().map(|s| s.name.as_str()).collect();
    for want in [
        "lantern_time_to_first_token_seconds_bucket",
        "lantern_num_requests_running",
        "lantern_prefix_cache_hits_total",
        "lantern_requests_total",
        "lantern_kv_cache_usage_perc",
        "lantern_request_finished_total",
    ] {
        assert!(names.contains(want), "{want} missing from /metrics");
    }
    // Histogram buckets are cumulative and end with +Inf == _count.
    let buckets: Vec<&Sample> = samples
        .iter()
        .filter(|s| s.name == "lantern_time_to_first_token_seconds_bucket")
        .collect();
    assert!(buckets.windows(2).all(|w| w[0].value <= w[1].value));
    let inf = metric(
        &samples,
        "lantern_time_to_first_token_seconds_bucket",
        &[("le", "+Inf")],
    )
    .unwrap();
    let count = metric(&samples, "lantern_time_to_first_token_seconds_count", &[]).unwrap();
    assert_eq!(inf, count);
    assert!(count >= 1.0);
    assert!(
        metric(
            &samples,
            "lantern_requests_total",
            &[
                ("endpoint", "/v1/completions"),
                ("status", "200"),
                ("model_name", NAME)
            ]
        )
        .unwrap()
            >= 1.0
    );
}

/// The `vllm:` families routers and vLLM dashboards read, with vLLM's types, on every
/// sample the labels `model_name` and `engine="0"`, and the cache configuration.
#[test]
fn vllm_families_are_exposed() {
    let s = shared();
    post_ok(
        &s.url("/v1/completions"),
        &completion_body(json!(text_prompt()), 4),
    );
    let r = get(&s.url("/metrics")).unwrap();
    let types: HashMap<&str, &str> = r
        .body
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .map(|l| l.split_once(' ').unwrap())
        .collect();
    for (name, ty) in [
        ("vllm:num_requests_running", "gauge"),
        ("vllm:num_requests_waiting", "gauge"),
        ("vllm:kv_cache_usage_perc", "gauge"),
        ("vllm:cache_config_info", "gauge"),
        ("vllm:prompt_tokens_total", "counter"),
        ("vllm:generation_tokens_total", "counter"),
        ("vllm:request_success_total", "counter"),
        ("vllm:num_preemptions_total", "counter"),
        ("vllm:prefix_cache_queries_total", "counter"),
        ("vllm:prefix_cache_hits_total", "counter"),
        ("vllm:time_to_first_token_seconds", "histogram"),
        ("vllm:inter_token_latency_seconds", "histogram"),
        ("vllm:e2e_request_latency_seconds", "histogram"),
        ("vllm:request_queue_time_seconds", "histogram"),
        ("vllm:request_prefill_time_seconds", "histogram"),
        ("vllm:request_decode_time_seconds", "histogram"),
        ("vllm:request_prompt_tokens", "histogram"),
        ("vllm:request_generation_tokens", "histogram"),
        ("vllm:iteration_tokens_total", "histogram"),
    ] {
        assert_eq!(types.get(name), Some(&ty), "{name}");
    }
    // No LoRA on this server: no LoRA info, as in vLLM.
    assert!(!types.contains_key("vllm:lora_requests_info"));
    let m = parse_prometheus(&r.body);
    let vllm: Vec<&Sample> = m.iter().filter(|s| s.name.starts_with("vllm:")).collect();
    assert!(vllm.len() > 100, "{} vllm: samples", vllm.len());
    for smp in vllm {
        let l = |k: &str| {
            smp.labels
                .iter()
                .find(|(lk, _)| lk == k)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(l("model_name"), Some(NAME), "{smp:?}");
        assert_eq!(l("engine"), Some("0"), "{smp:?}");
    }
    // vLLM's block count includes the null block, as Lantern's pool does.
    let blocks = metric(&m, "lantern_kv_cache_blocks_total", &[]).unwrap() as u64 + 1;
    let blocks = blocks.to_string();
    let cache = [
        ("block_size", "16"),
        ("num_gpu_blocks", blocks.as_str()),
        ("enable_prefix_caching", "True"),
        ("cache_dtype", "auto"),
        ("kv_cache_memory_bytes", "67108864"),
        ("gpu_memory_utilization", "None"),
    ];
    assert_eq!(metric(&m, "vllm:cache_config_info", &cache), Some(1.0));
    let success = |r| metric(&m, "vllm:request_success_total", &[("finished_reason", r)]);
    assert!(success("stop").unwrap() + success("length").unwrap() >= 1.0);
    assert!(success("abort").is_some() && success("error").is_some());
    assert_eq!(success("repetition"), Some(0.0));
}

/// Scrapes with the values of the vLLM gauges (and the lantern_ waiting gauge).
struct Gauges {
    running: f64,
    waiting: f64,
    lantern_waiting: f64,
}

fn gauges(s: &Server) -> Gauges {
    let m = scrape(s);
    let v = |n| metric(&m, n, &[("model_name", NAME), ("engine", "0")]).unwrap();
    Gauges {
        running: v("vllm:num_requests_running"),
        waiting: v("vllm:num_requests_waiting"),
        lantern_waiting: metric(&m, "lantern_num_requests_waiting", &[]).unwrap(),
    }
}

/// A prompt of `len` token ids, distinct per `k`.
fn prompt(k: u32, len: u32) -> Value {
    json!((0..len).map(|i| 10 + k * 40 + i).collect::<Vec<u32>>())
}

/// A request of `n` sequences, each generating exactly `max_tokens`.
fn spawn_request(
    s: &Server,
    k: u32,
    n: usize,
    max_tokens: usize,
) -> std::thread::JoinHandle<Value> {
    let url = s.url("/v1/completions");
    let body = json!({
        "model": NAME, "prompt": prompt(k, 20), "max_tokens": max_tokens, "n": n,
        "ignore_eos": true, "temperature": 1.0, "seed": k,
    });
    std::thread::spawn(move || post_ok(&url, &body))
}

/// Polls the gauges until `ok`; panics with the last value after `within`.
fn wait_for(s: &Server, within: Duration, ok: impl Fn(&Gauges) -> bool) -> Gauges {
    let t0 = Instant::now();
    loop {
        let g = gauges(s);
        if ok(&g) {
            return g;
        }
        assert!(
            t0.elapsed() < within,
            "not reached in {within:?}: running {}, waiting {} (lantern waiting {})",
            g.running,
            g.waiting,
            g.lantern_waiting
        );
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// More sequences than `--max-num-seqs`: `running` never exceeds it, the others are
/// `waiting`, `n > 1` siblings counting one each (held back or queued, as vLLM's child
/// requests do); at the end the success counts and histogram counts equal the sequences
/// and requests, the KV cache is free (`kv_cache_usage_perc` 0) yet its blocks stay cached:
/// a repeated prompt hits them.
#[test]
fn vllm_metrics_follow_a_workload() {
    let s = start(&["--max-num-seqs", "2"]);
    // Two long requests fill the running batch (480 tokens each; the context is 512).
    let long: Vec<_> = (0..2).map(|k| spawn_request(&s, k, 1, 480)).collect();
    wait_for(&s, Duration::from_secs(20), |g| g.running == 2.0);
    // One more single request and one of n = 3: the leader waits in the scheduler and its
    // siblings are held back until its prompt is cached; vLLM counts all four as waiting.
    let more = vec![spawn_request(&s, 2, 1, 40), spawn_request(&s, 3, 3, 40)];
    let g = wait_for(&s, Duration::from_secs(20), |g| g.waiting >= 4.0);
    assert_eq!((g.running, g.waiting), (2.0, 4.0));
    assert_eq!(g.lantern_waiting, 2.0, "the scheduler's queue only");
    // The whole run: never more than 2 running, never more than 6 sequences.
    let all: Vec<_> = long.into_iter().chain(more).collect();
    while all.iter().any(|h| !h.is_finished()) {
        let g = gauges(&s);
        assert!(g.running <= 2.0, "running {}", g.running);
        assert!(
            g.running + g.waiting <= 6.0,
            "{} + {}",
            g.running,
            g.waiting
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    let outputs: Vec<Value> = all.into_iter().map(|h| h.join().unwrap()).collect();
    assert_eq!(outputs[3]["choices"].as_array().unwrap().len(), 3);

    let m = wait_idle(&s, Duration::from_secs(10));
    let v = |name: &str, extra: &[(&str, &str)]| {
        let mut want = vec![("model_name", NAME), ("engine", "0")];
        want.extend_from_slice(extra);
        metric(&m, name, &want).unwrap_or_else(|| panic!("{name} {extra:?}"))
    };
    assert_eq!(v("vllm:num_requests_running", &[]), 0.0);
    assert_eq!(v("vllm:num_requests_waiting", &[]), 0.0);
    assert_eq!(v("vllm:kv_cache_usage_perc", &[]), 0.0);
    // Six sequences, each ran to max_tokens.
    let success = |r| v("vllm:request_success_total", &[("finished_reason", r)]);
    assert_eq!(success("length"), 6.0);
    assert_eq!(success("stop") + success("abort") + success("error"), 0.0);
    let generated = 2.0 * 480.0 + 4.0 * 40.0;
    assert_eq!(v("vllm:generation_tokens_total", &[]), generated);
    assert_eq!(v("vllm:prompt_tokens_total", &[]), 6.0 * 20.0);
    for h in [
        "vllm:time_to_first_token_seconds",
        "vllm:e2e_request_latency_seconds",
        "vllm:request_queue_time_seconds",
        "vllm:request_prefill_time_seconds",
        "vllm:request_decode_time_seconds",
        "vllm:request_inference_time_seconds",
        "vllm:request_time_per_output_token_seconds",
        "vllm:request_prompt_tokens",
        "vllm:request_generation_tokens",
        "vllm:request_num_preemptions",
    ] {
        let count = v(&format!("{h}_count"), &[]);
        assert_eq!(count, 6.0, "{h}");
        assert_eq!(v(&format!("{h}_bucket"), &[("le", "+Inf")]), count, "{h}");
    }
    assert_eq!(v("vllm:request_generation_tokens_sum", &[]), generated);
    assert_eq!(v("vllm:request_prompt_tokens_sum", &[]), 120.0);
    // One inter-token gap per token after each sequence's first.
    assert_eq!(
        v("vllm:inter_token_latency_seconds_count", &[]),
        generated - 6.0
    );
    // Four requests (one of n = 3).
    assert_eq!(v("vllm:request_params_n_count", &[]), 4.0);
    assert_eq!(v("vllm:request_params_n_sum", &[]), 6.0);
    assert_eq!(v("vllm:request_max_num_generation_tokens_count", &[]), 4.0);
    // Every sampled token is in some iteration, and so is every computed prompt token.
    let iter_sum = v("vllm:iteration_tokens_total_sum", &[]);
    let computed = v(
        "vllm:prompt_tokens_by_source_total",
        &[("source", "local_compute")],
    );
    assert_eq!(iter_sum, generated + computed);
    assert!(v("vllm:iteration_tokens_total_count", &[]) >= 480.0);
    // The siblings of the n = 3 request hit their leader's cached prompt (one block of 16).
    assert_eq!(v("vllm:prefix_cache_hits_total", &[]), 2.0 * 16.0);
    assert_eq!(v("vllm:prompt_tokens_cached_total", &[]), 2.0 * 16.0);
    assert_eq!(v("vllm:prefix_cache_queries_total", &[]), 6.0 * 20.0);

    // Nothing runs, so no block is in use, but the finished prompts' blocks stay cached:
    // the same prompt again is served from them.
    let hits0 = v("vllm:prefix_cache_hits_total", &[]);
    let r = post_ok(
        &s.url("/v1/completions"),
        &json!({"model": NAME, "prompt": prompt(0, 20), "max_tokens": 2, "temperature": 0}),
    );
    assert_eq!(r["usage"]["prompt_tokens_details"]["cached_tokens"], 16);
    let m = wait_idle(&s, Duration::from_secs(10));
    let hits = metric(&m, "vllm:prefix_cache_hits_total", &[]).unwrap();
    assert_eq!(hits, hits0 + 16.0);
    assert_eq!(metric(&m, "vllm:kv_cache_usage_perc", &[]), Some(0.0));
}

/// A request whose client went away is not a finished request in vLLM's counters (vLLM's
/// output processor drops it without stats); its tokens still count as generated.
#[test]
fn abandoned_requests_are_not_successes() {
    let s = start(&[]);
    let body = json!({
        "model": NAME, "prompt": text_prompt(), "max_tokens": 500, "ignore_eos": true,
        "temperature": 0, "stream": true,
    });
    let mut sse = stream(&s.url("/v1/completions"), &body);
    for _ in 0..4 {
        assert_ne!(sse.next_data().expect("a chunk"), "[DONE]");
    }
    drop(sse);
    let m = wait_idle(&s, Duration::from_secs(5));
    for reason in ["stop", "length", "abort", "error"] {
        let n = metric(
            &m,
            "vllm:request_success_total",
            &[("finished_reason", reason)],
        );
        assert_eq!(n, Some(0.0), "{reason}");
    }
    assert_eq!(
        metric(&m, "vllm:e2e_request_latency_seconds_count", &[]),
        Some(0.0)
    );
    assert_eq!(
        metric(&m, "vllm:time_to_first_token_seconds_count", &[]),
        Some(1.0)
    );
    assert!(metric(&m, "vllm:generation_tokens_total", &[]).unwrap() >= 4.0);
    // Lantern's own counter does count the abort.
    let aborted = metric(
        &m,
        "lantern_request_finished_total",
        &[("finished_reason", "abort")],
    );
    assert_eq!(aborted, Some(1.0));
}
