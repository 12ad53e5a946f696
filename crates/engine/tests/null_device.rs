//! A short engine run on the null device (`--null-device`): requests complete through the
//! real scheduler, sampler and detokenizer, outputs are deterministic, and every KV block is
//! free at the end.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use lantern_engine::{
    Engine, EngineConfig, FinishReason, GenerationParams, KvCacheSize, ModelBackend, RequestEvent,
    SamplingParams,
};
use lantern_models::ModelMeta;
use lantern_runtime::null::{NullModel, NullSpec};
use std::path::PathBuf;
use tokenizers::Tokenizer;

fn null_engine() -> Engine {
    null_engine_with(std::time::Duration::ZERO)
}

fn null_engine_with(idle_batch_window: std::time::Duration) -> Engine {
    let tok_path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/tiny-llama/tokenizer.json");
    let tokenizer = Tokenizer::from_file(&tok_path).unwrap();
    let vocab = tokenizer.get_vocab_size(true);
    let spec = NullSpec::parse("llama-3.1-8b:h200").unwrap();
    let mut config = spec.config.clone();
    config.vocab_size = vocab;
    let meta = ModelMeta {
        config,
        eos_token_ids: vec![2],
        bos_token_id: None,
        bos_token: None,
        eos_token: None,
        chat_template: None,
        path: tok_path,
    };
    let model = NullModel::new(spec, vocab).unwrap();
    Engine::start_with(
        ModelBackend::Null(model),
        tokenizer,
        meta,
        EngineConfig {
            // Small pool, so some requests wait for blocks.
            kv_cache: KvCacheSize::Tokens(16 * 24),
            max_num_batched_tokens: 64,
            seed: Some(7),
            idle_batch_window,
            ..EngineConfig::default()
        },
    )
    .unwrap()
}

/// Runs 12 requests (greedy and seeded temperature 1) and returns (tokens, text) of each.
fn run(e: &Engine) -> Vec<(Vec<u32>, String)> {
    let h = e.handle();
    let streams: Vec<_> = (0..12u32)
        .map(|i| {
            let prompt: Vec<u32> = (0..20 + i).map(|j| 3 + (i * 37 + j * 11) % 500).collect();
            let sampling = if i % 2 == 0 {
                SamplingParams::greedy()
            } else {
                SamplingParams {
                    temperature: 1.0,
                    ..SamplingParams::default()
                }
            };
            let params = GenerationParams {
                sampling,
                max_tokens: Some(16),
                ignore_eos: true,
                seed: Some(u64::from(i)),
                ..GenerationParams::default()
            };
            h.submit_blocking(prompt, h.validate(params).unwrap())
                .unwrap()
        })
        .collect();
    streams
        .into_iter()
        .map(|mut s| {
            let (mut toks, mut text) = (Vec::new(), String::new());
            let mut finished = None;
            while let Some(ev) = s.blocking_next() {
                match ev {
                    RequestEvent::Delta(d) => {
                        toks.extend(d.token_ids);
                        text.push_str(&d.text);
                    }
                    RequestEvent::Finished { reason, .. } => finished = Some(reason),
                    RequestEvent::Error(e) => panic!("request failed: {e}"),
                    RequestEvent::PromptLogprobs(_) => {}
                }
            }
            assert_eq!(finished, Some(FinishReason::Length));
            assert_eq!(toks.len(), 16);
            (toks, text)
        })
        .collect()
}

#[test]
fn null_device_engine_run_completes_deterministically_and_frees_all_blocks() {
    let e = null_engine();
    let first = run(&e);
    let snap = e.handle().fresh_snapshot_blocking().unwrap();
    assert_eq!(snap.last_step.kv_blocks_used, 0, "blocks leaked: {snap:?}");
    assert_eq!(snap.generation_tokens_total, 12 * 16);
    assert!(snap.simulated_device_seconds_total > 0.0);
    // The engine waits out the simulated time inside each step.
    assert!(snap.step_seconds_total >= snap.simulated_device_seconds_total);
    assert!(snap.step_phases.execute >= snap.simulated_device_seconds_total);
    // Greedy outputs vary from token to token (the logits depend on token and position).
    let distinct: std::collections::HashSet<u32> = first[0].0.iter().copied().collect();
    assert!(distinct.len() > 8, "{:?}", first[0].0);
    assert!(!first[0].1.is_empty());
    e.shutdown();
    // A second engine gives the same tokens (greedy, and seeded sampling).
    let e2 = null_engine();
    assert_eq!(run(&e2), first);
    let snap = e2.handle().fresh_snapshot_blocking().unwrap();
    assert_eq!(snap.last_step.kv_blocks_used, 0, "blocks leaked: {snap:?}");
}

/// A request reaching an idle engine waits `idle_batch_window` for more: two requests 50 ms
/// apart start (and, wanting one token each, finish) in one step with a 400 ms window, and
/// in two steps without one.
#[test]
fn idle_batch_window_starts_a_burst_in_one_step() {
    for (window_ms, want_steps) in [(400, 1), (0, 2)] {
        let e = null_engine_with(std::time::Duration::from_millis(window_ms));
        let h = e.handle();
        let params = GenerationParams {
            sampling: SamplingParams::greedy(),
            max_tokens: Some(1),
            ignore_eos: true,
            ..GenerationParams::default()
        };
        let submit = |first: u32| {
            let prompt: Vec<u32> = (first..first + 20).collect();
            h.submit_blocking(prompt, h.validate(params.clone()).unwrap())
                .unwrap()
        };
        let a = submit(3);
        std::thread::sleep(std::time::Duration::from_millis(50));
        let b = submit(100);
        for mut s in [a, b] {
            let mut done = false;
            while let Some(ev) = s.blocking_next() {
                match ev {
                    RequestEvent::Finished { .. } => done = true,
                    RequestEvent::Error(e) => panic!("request failed: {e}"),
                    _ => {}
                }
            }
            assert!(done);
        }
        let snap = h.fresh_snapshot_blocking().unwrap();
        assert_eq!(snap.steps, want_steps, "window {window_ms} ms");
        assert_eq!(snap.last_step.kv_blocks_used, 0);
        e.shutdown();
    }
}
