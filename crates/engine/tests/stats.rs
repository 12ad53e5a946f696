//! The engine's snapshot as the metrics read it (vLLM's meanings): token counters, latency
//! and iteration histograms, sequences held outside the scheduler, per-request preemptions.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use candle_core::{DType, Device};
use lantern_engine::{
    Engine, EngineConfig, GenerationParams, KvCacheSize, LoraConfig, LoraRequests, RequestEvent,
    RequestStream, RequestTiming, SamplingParams, Usage,
};
use std::path::PathBuf;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures")
        .join(name)
}

fn engine(name: &str, cfg: EngineConfig) -> Engine {
    let loaded = lantern_models::load_hf_dir(
        &fixture(name),
        DType::F32,
        &Device::Cpu,
        &lantern_models::ModelOptions::default(),
    )
    .unwrap();
    Engine::start(loaded, cfg).unwrap()
}

fn params(n: usize, max_tokens: usize) -> GenerationParams {
    GenerationParams {
        sampling: SamplingParams {
            temperature: 1.0,
            ..SamplingParams::default()
        },
        seed: Some(7),
        n,
        max_tokens: Some(max_tokens),
        ignore_eos: true,
        ..GenerationParams::default()
    }
}

fn submit(e: &Engine, prompt: Vec<u32>, p: GenerationParams) -> RequestStream {
    let h = e.handle();
    h.submit_blocking(prompt, h.validate(p).unwrap()).unwrap()
}

/// Usage and timing of every finished sequence of `s`.
fn finished(mut s: RequestStream) -> Vec<(Usage, RequestTiming)> {
    let mut out = Vec::new();
    while let Some(ev) = s.blocking_next() {
        match ev {
            RequestEvent::Finished { usage, timing, .. } => out.push((usage, timing)),
            RequestEvent::Error(e) => panic!("request failed: {e}"),
            _ => {}
        }
    }
    out
}

fn prompt(len: u32) -> Vec<u32> {
    (0..len).map(|i| 3 + (i * 7) % 400).collect()
}

#[test]
fn tokens_latencies_and_iterations_are_counted_as_vllm_does() {
    let e = engine("tiny-llama", EngineConfig::default());
    // 40-token prompt, n = 4: the siblings reuse the leader's two full blocks (32 tokens).
    let outs = finished(submit(&e, prompt(40), params(4, 8)));
    assert_eq!(outs.len(), 4);
    let snap = e.handle().fresh_snapshot_blocking().unwrap();
    let cached: usize = outs.iter().map(|(u, _)| u.cached_tokens).sum();
    assert_eq!(cached, 3 * 32);
    assert_eq!(snap.prefilled_prompt_tokens, 4 * 40);
    assert_eq!(snap.prefilled_cached_tokens, 3 * 32);
    assert_eq!(snap.generation_tokens_total, 4 * 8);
    // One first token per sequence, one gap per later token.
    assert_eq!(snap.time_to_first_token.count, 4);
    assert_eq!(snap.inter_token_latency.count, 4 * 7);
    // Every sampled token plus every computed prompt token is in exactly one iteration.
    assert_eq!(snap.iteration_tokens.sum, (4 * 8 + 40 + 3 * 8) as f64);
    assert!(snap.iteration_tokens.count >= 8);
    // The prefix cache, vLLM's way: first admissions only.
    assert_eq!(snap.prefix_cache_queries_tokens, 4 * 40);
    assert_eq!(snap.prefix_cache_hits_tokens, 3 * 32);
    assert_eq!(snap.prefix_cache_resumed_queries_tokens, 0);
    for (u, t) in &outs {
        assert_eq!(u.completion_tokens, 8);
        assert!(t.first_token <= t.last_token);
        assert!(t.last_token.unwrap() <= t.finished);
        assert_eq!(t.num_preemptions, 0);
    }
    let c = &snap.config;
    assert_eq!((c.block_size, c.max_model_len), (16, 512));
    assert!(c.enable_prefix_caching);
    assert_eq!(c.kv_cache_memory_bytes, Some(1 << 30));
    assert_eq!((c.gpu_memory_utilization, c.max_loras), (None, None));
    assert_eq!(snap.last_step.kv_blocks_used, 0);
}

/// With the one running slot taken, an `n = 3` request's leader waits in the scheduler and
/// its two siblings are held back by the engine: vLLM would count three waiting requests.
#[test]
fn held_back_siblings_are_counted() {
    let e = engine(
        "tiny-llama",
        EngineConfig {
            max_num_seqs: 1,
            ..EngineConfig::default()
        },
    );
    let long = submit(&e, prompt(20), params(1, 480));
    // The long request is running once it produced a token.
    let mut long = long;
    assert!(matches!(long.blocking_next(), Some(RequestEvent::Delta(_))));
    let group = submit(&e, prompt(24), params(3, 4));
    let snap = e.handle().fresh_snapshot_blocking().unwrap();
    let s = snap.last_step;
    assert_eq!(
        (s.num_running, s.num_waiting, s.num_held),
        (1, 1, 2),
        "{s:?}"
    );
    drop(long);
    assert_eq!(finished(group).len(), 3);
    let s = e.handle().fresh_snapshot_blocking().unwrap().last_step;
    assert_eq!((s.num_running, s.num_waiting, s.num_held), (0, 0, 0));
}

/// Preempted sequences carry their preemption count; their second lookup of the prefix
/// cache is counted apart.
#[test]
fn preemptions_are_counted_per_request() {
    let e = engine(
        "tiny-llama",
        EngineConfig {
            block_size: 4,
            kv_cache: KvCacheSize::Tokens(4 * 60),
            ..EngineConfig::default()
        },
    );
    let streams: Vec<RequestStream> = (0..16)
        .map(|i| submit(&e, prompt(10 + i), params(1, 24)))
        .collect();
    let outs: Vec<(Usage, RequestTiming)> = streams.into_iter().flat_map(finished).collect();
    let snap = e.handle().fresh_snapshot_blocking().unwrap();
    assert!(snap.num_preemptions > 0, "pool was not small enough");
    let per_request: u64 = outs.iter().map(|(_, t)| u64::from(t.num_preemptions)).sum();
    assert_eq!(per_request, snap.num_preemptions);
    assert!(snap.prefix_cache_resumed_queries_tokens > 0);
    assert_eq!(
        snap.prefilled_prompt_tokens,
        (0..16).map(|i| 10 + i).sum::<u64>()
    );
}

/// Per adapter: running sequences (in the running batch) and waiting ones (queued, held
/// back); adapters without a live sequence are not listed.
#[test]
fn lora_requests_are_listed_by_adapter_and_state() {
    let e = engine(
        "tiny-llama",
        EngineConfig {
            max_num_seqs: 2,
            lora: Some(LoraConfig {
                max_loras: 2,
                max_lora_rank: 8,
                max_cpu_loras: 2,
            }),
            ..EngineConfig::default()
        },
    );
    let h = e.handle();
    for (name, dir) in [("ada", "lora-a"), ("bob", "lora-b")] {
        h.load_lora_blocking(
            name,
            fixture(&format!("tiny-llama/{dir}")).to_str().unwrap(),
        )
        .unwrap();
    }
    let with = |name: &str, n: usize, max_tokens: usize| GenerationParams {
        lora_id: Some(h.lora_id(name).unwrap()),
        ..params(n, max_tokens)
    };
    let snap = h.fresh_snapshot_blocking().unwrap();
    assert!(snap.lora_requests.is_empty());
    assert_eq!(snap.config.max_loras, Some(2));
    // ada and a base request fill the batch; bob (n = 2) waits: its leader queued, its
    // sibling held back.
    let mut ada = submit(&e, prompt(20), with("ada", 1, 480));
    let mut base = submit(&e, prompt(21), params(1, 480));
    for s in [&mut ada, &mut base] {
        assert!(matches!(s.blocking_next(), Some(RequestEvent::Delta(_))));
    }
    let bob = submit(&e, prompt(22), with("bob", 2, 4));
    let snap = h.fresh_snapshot_blocking().unwrap();
    let entry = |name: &str, waiting, running| LoraRequests {
        name: name.into(),
        waiting,
        running,
    };
    assert_eq!(
        snap.lora_requests,
        vec![entry("ada", 0, 1), entry("bob", 2, 0)]
    );
    assert!(snap.lora_requests_unix > 1.0e9);
    drop(ada);
    drop(base);
    assert_eq!(finished(bob).len(), 2);
    assert!(h
        .fresh_snapshot_blocking()
        .unwrap()
        .lora_requests
        .is_empty());
}
