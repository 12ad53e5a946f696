//! Engine behaviour on the tiny fixtures: batching invariance, prefix caching, preemption,
//! cancellation, seeded sampling, stop conditions and n > 1.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use candle_core::{DType, Device};
use lantern_engine::{
    Engine, EngineConfig, EngineHandle, FinishReason, GenerationParams, KvCacheSize, LoraConfig,
    LoraError, LoraId, RequestEvent, RequestStream, SamplingParams, StopReason, SubmitError, Usage,
};
use std::path::PathBuf;

/// Validates with the engine's validator, then submits.
trait SubmitParams {
    fn submit_params(
        &self,
        prompt: Vec<u32>,
        params: GenerationParams,
    ) -> Result<RequestStream, SubmitError>;
}

impl SubmitParams for EngineHandle {
    fn submit_params(
        &self,
        prompt: Vec<u32>,
        params: GenerationParams,
    ) -> Result<RequestStream, SubmitError> {
        self.submit_blocking(prompt, self.validate(params)?)
    }
}

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

fn reference(name: &str) -> (Vec<Vec<u32>>, Vec<Vec<u32>>) {
    let v: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(fixture(name).join("reference.json")).unwrap(),
    )
    .unwrap();
    let ids = |k: &str| -> Vec<Vec<u32>> {
        v[k].as_array()
            .unwrap()
            .iter()
            .map(|p| {
                p.as_array()
                    .unwrap()
                    .iter()
                    .map(|x| x.as_u64().unwrap() as u32)
                    .collect()
            })
            .collect()
    };
    (ids("prompts"), ids("greedy"))
}

#[derive(Debug, Clone, PartialEq)]
struct Done {
    tokens: Vec<u32>,
    text: String,
    reason: FinishReason,
    stop_reason: Option<StopReason>,
    usage: Usage,
}

fn collect(mut s: RequestStream) -> Vec<Done> {
    let mut outs: Vec<Done> = Vec::new();
    let ensure = |outs: &mut Vec<Done>, i: usize| {
        while outs.len() <= i {
            outs.push(Done {
                tokens: vec![],
                text: String::new(),
                reason: FinishReason::Abort,
                stop_reason: None,
                usage: Usage::default(),
            });
        }
    };
    while let Some(ev) = s.blocking_next() {
        match ev {
            RequestEvent::Delta(d) => {
                ensure(&mut outs, d.index);
                outs[d.index].tokens.extend(d.token_ids);
                outs[d.index].text.push_str(&d.text);
            }
            RequestEvent::Finished {
                index,
                reason,
                stop_reason,
                text,
                usage,
                ..
            } => {
                ensure(&mut outs, index);
                outs[index].text.push_str(&text);
                outs[index].reason = reason;
                outs[index].stop_reason = stop_reason;
                outs[index].usage = usage;
            }
            RequestEvent::PromptLogprobs(_) => {}
            RequestEvent::Error(e) => panic!("request failed: {e}"),
        }
    }
    outs
}

fn greedy(max_tokens: usize) -> GenerationParams {
    GenerationParams {
        sampling: SamplingParams::greedy(),
        max_tokens: Some(max_tokens),
        ignore_eos: true,
        ..GenerationParams::default()
    }
}

/// 32 prompts of mixed lengths built from the reference prompts.
fn mixed_prompts() -> Vec<Vec<u32>> {
    let (prompts, _) = reference("tiny-llama");
    (0..32)
        .map(|i| {
            let p = &prompts[i % prompts.len()];
            let len = 1 + (i * 37) % p.len();
            let mut v = p[..len].to_vec();
            v.push((i as u32 * 13) % 500 + 3);
            v
        })
        .collect()
}

fn run_all(e: &Engine, prompts: &[Vec<u32>], params: &GenerationParams) -> Vec<Done> {
    let h = e.handle();
    let streams: Vec<RequestStream> = prompts
        .iter()
        .map(|p| h.submit_params(p.clone(), params.clone()).unwrap())
        .collect();
    streams.into_iter().map(|s| collect(s).remove(0)).collect()
}

#[test]
fn reference_greedy_through_the_engine() {
    let (prompts, greedy_ref) = reference("tiny-qwen3");
    let e = engine("tiny-qwen3", EngineConfig::default());
    let outs = run_all(&e, &prompts, &greedy(greedy_ref[0].len()));
    for (o, r) in outs.iter().zip(&greedy_ref) {
        assert_eq!(&o.tokens, r);
        assert_eq!(o.reason, FinishReason::Length);
    }
}

#[test]
fn concurrent_equals_alone_and_prefix_cache_on_off() {
    let prompts = mixed_prompts();
    let params = greedy(12);
    let alone: Vec<Done> = {
        let e = engine("tiny-llama", EngineConfig::default());
        prompts
            .iter()
            .map(|p| run_all(&e, std::slice::from_ref(p), &params).remove(0))
            .collect()
    };
    let e = engine("tiny-llama", EngineConfig::default());
    let together = run_all(&e, &prompts, &params);
    let no_cache = {
        let e = engine(
            "tiny-llama",
            EngineConfig {
                enable_prefix_caching: false,
                ..EngineConfig::default()
            },
        );
        run_all(&e, &prompts, &params)
    };
    for i in 0..prompts.len() {
        assert_eq!(
            alone[i].tokens, together[i].tokens,
            "prompt {i}: batched differs"
        );
        assert_eq!(
            alone[i].tokens, no_cache[i].tokens,
            "prompt {i}: no-cache differs"
        );
        assert_eq!(alone[i].text, together[i].text);
    }
    let snap = e.handle().fresh_snapshot_blocking().unwrap();
    assert_eq!(snap.last_step.kv_blocks_used, 0, "blocks leaked: {snap:?}");
}

#[test]
fn preemption_does_not_change_outputs() {
    let prompts = mixed_prompts();
    let params = greedy(24);
    let big = engine("tiny-llama", EngineConfig::default());
    let expected = run_all(&big, &prompts, &params);
    let small = engine(
        "tiny-llama",
        EngineConfig {
            block_size: 4,
            // Enough for the longest single request, far too little for 32 at once.
            kv_cache: KvCacheSize::Tokens(4 * 60),
            ..EngineConfig::default()
        },
    );
    let got = run_all(&small, &prompts, &params);
    let snap = small.handle().fresh_snapshot_blocking().unwrap();
    assert!(
        snap.num_preemptions > 0,
        "pool was not small enough: {snap:?}"
    );
    for i in 0..prompts.len() {
        assert_eq!(
            expected[i].tokens, got[i].tokens,
            "prompt {i} changed under preemption"
        );
    }
    assert_eq!(snap.last_step.kv_blocks_used, 0);
}

#[test]
fn shared_prefix_computes_only_uncached_tokens() {
    let (prompts, _) = reference("tiny-mistral");
    let long = prompts.iter().max_by_key(|p| p.len()).unwrap().clone(); // 131 tokens
    let e = engine("tiny-mistral", EngineConfig::default());
    let first = run_all(&e, std::slice::from_ref(&long), &greedy(4)).remove(0);
    assert_eq!(first.usage.cached_tokens, 0);
    let mut second_prompt = long[..100].to_vec();
    second_prompt.extend_from_slice(&[7, 8, 9]);
    let second = run_all(&e, &[second_prompt.clone()], &greedy(4)).remove(0);
    // 100 shared tokens = 6 full blocks of 16 = 96 tokens from the cache.
    assert_eq!(second.usage.cached_tokens, 96);
    let before = e
        .handle()
        .fresh_snapshot_blocking()
        .unwrap()
        .prefix_cache_hits_tokens;
    // A fully cached prompt still computes its last token.
    let again = run_all(&e, std::slice::from_ref(&long), &greedy(4)).remove(0);
    assert_eq!(again.usage.cached_tokens, 128);
    assert_eq!(again.tokens, first.tokens);
    assert!(
        e.handle()
            .fresh_snapshot_blocking()
            .unwrap()
            .prefix_cache_hits_tokens
            > before
    );
    // A different cache salt does not hit.
    let salted = GenerationParams {
        cache_salt: Some("tenant-b".into()),
        ..greedy(4)
    };
    let s = run_all(&e, &[long], &salted).remove(0);
    assert_eq!(s.usage.cached_tokens, 0);
    assert_eq!(s.tokens, first.tokens);
}

#[test]
fn cancelling_mid_stream_returns_every_block() {
    let e = engine("tiny-llama", EngineConfig::default());
    let h = e.handle();
    let (prompts, _) = reference("tiny-llama");
    let mut s = h.submit_params(prompts[3].clone(), greedy(300)).unwrap();
    let mut n = 0;
    while let Some(ev) = s.blocking_next() {
        if let RequestEvent::Delta(_) = ev {
            n += 1;
            if n == 3 {
                break;
            }
        }
    }
    let used = h
        .fresh_snapshot_blocking()
        .unwrap()
        .last_step
        .kv_blocks_used;
    assert!(used > 0);
    drop(s);
    // Run another request so the engine steps; the cancelled one must be gone by then.
    let _ = run_all(&e, &[vec![5, 6, 7]], &greedy(2));
    let snap = h.fresh_snapshot_blocking().unwrap();
    assert_eq!(snap.last_step.kv_blocks_used, 0, "{snap:?}");
    assert_eq!(snap.finished_abort, 1);
}

#[test]
fn seeded_sampling_same_alone_and_in_busy_batch() {
    let params = GenerationParams {
        sampling: SamplingParams {
            temperature: 0.9,
            top_p: 0.95,
            top_k: 50,
            ..SamplingParams::default()
        },
        seed: Some(1234),
        max_tokens: Some(20),
        ignore_eos: true,
        ..GenerationParams::default()
    };
    let prompt = vec![10, 20, 30, 40, 50];
    let e = engine("tiny-qwen2", EngineConfig::default());
    let alone = run_all(&e, std::slice::from_ref(&prompt), &params).remove(0);
    let mut batch = mixed_prompts();
    batch.insert(7, prompt.clone());
    let h = e.handle();
    let streams: Vec<RequestStream> = batch
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let pr = if i == 7 {
                params.clone()
            } else {
                GenerationParams {
                    sampling: SamplingParams::default(),
                    max_tokens: Some(15),
                    ignore_eos: true,
                    ..GenerationParams::default()
                }
            };
            h.submit_params(p.clone(), pr).unwrap()
        })
        .collect();
    let outs: Vec<Done> = streams.into_iter().map(|s| collect(s).remove(0)).collect();
    assert_eq!(outs[7].tokens, alone.tokens);
    // A different seed gives a different sequence (overwhelmingly likely at T=0.9).
    let other = run_all(
        &e,
        &[prompt],
        &GenerationParams {
            seed: Some(99),
            ..params
        },
    )
    .remove(0);
    assert_ne!(other.tokens, alone.tokens);
}

#[test]
fn stop_token_ids_min_tokens_and_eos() {
    let (prompts, greedy_ref) = reference("tiny-llama");
    let e = engine("tiny-llama", EngineConfig::default());
    let g = &greedy_ref[2];
    // Stop on the 5th greedy token: output ends with it, finish reason stop.
    let params = GenerationParams {
        stop_token_ids: vec![g[4]],
        ..greedy(30)
    };
    let first_pos = g.iter().position(|&t| t == g[4]).unwrap();
    let o = run_all(&e, &[prompts[2].clone()], &params).remove(0);
    assert_eq!(o.reason, FinishReason::Stop);
    assert_eq!(o.stop_reason, Some(StopReason::StopToken(g[4])));
    assert_eq!(o.tokens, g[..=first_pos].to_vec());
    assert_eq!(o.usage.completion_tokens, first_pos + 1);
    assert_eq!(o.usage.prompt_tokens, prompts[2].len());
    // min_tokens bans the stop token before it.
    let params = GenerationParams {
        stop_token_ids: vec![g[0]],
        min_tokens: 3,
        ..greedy(6)
    };
    let o = run_all(&e, &[prompts[2].clone()], &params).remove(0);
    assert_ne!(o.tokens[0], g[0]);
    assert!(o.tokens.len() >= 3);
}

#[test]
fn stop_strings_are_never_emitted() {
    let e = engine("tiny-llama", EngineConfig::default());
    let (prompts, _) = reference("tiny-llama");
    let full = run_all(&e, &[prompts[1].clone()], &greedy(24)).remove(0);
    assert!(full.text.len() > 6, "need some text: {:?}", full.text);
    // Pick a stop string from the middle of the text.
    let chars: Vec<char> = full.text.chars().collect();
    let start = chars.len() / 2;
    let stop: String = chars[start..(start + 3).min(chars.len())].iter().collect();
    let expected_prefix = &full.text[..full.text.find(&stop).unwrap()];
    for include in [false, true] {
        let params = GenerationParams {
            stop: vec![stop.clone()],
            include_stop_str_in_output: include,
            ..greedy(24)
        };
        let o = run_all(&e, &[prompts[1].clone()], &params).remove(0);
        assert_eq!(o.reason, FinishReason::Stop);
        assert_eq!(o.stop_reason, Some(StopReason::StopString(stop.clone())));
        if include {
            assert_eq!(o.text, format!("{expected_prefix}{stop}"));
        } else {
            assert_eq!(o.text, expected_prefix);
        }
    }
}

#[test]
fn n_greater_than_one_shares_the_prompt() {
    let e = engine("tiny-qwen2", EngineConfig::default());
    let (prompts, _) = reference("tiny-qwen2");
    let params = GenerationParams {
        sampling: SamplingParams {
            temperature: 1.0,
            ..SamplingParams::default()
        },
        seed: Some(7),
        n: 4,
        max_tokens: Some(8),
        ignore_eos: true,
        ..GenerationParams::default()
    };
    let outs = collect(
        e.handle()
            .submit_params(prompts[3].clone(), params)
            .unwrap(),
    );
    assert_eq!(outs.len(), 4);
    // 131-token prompt: siblings reuse 8 full blocks (128 tokens).
    assert_eq!(outs[0].usage.cached_tokens, 0);
    for o in &outs[1..] {
        assert_eq!(o.usage.cached_tokens, 128);
    }
    assert!(outs.iter().all(|o| o.tokens.len() == 8));
    let distinct: std::collections::HashSet<_> = outs.iter().map(|o| o.tokens.clone()).collect();
    assert!(distinct.len() > 1, "n>1 with sampling should differ");
    assert_eq!(
        e.handle()
            .fresh_snapshot_blocking()
            .unwrap()
            .last_step
            .kv_blocks_used,
        0
    );
}

#[test]
fn rejections_give_numbers() {
    let e = engine(
        "tiny-llama",
        EngineConfig {
            max_model_len: Some(64),
            ..EngineConfig::default()
        },
    );
    let h = e.handle();
    let err = h.submit_params(vec![1; 60], greedy(10)).unwrap_err();
    match err {
        SubmitError::Invalid(e) => {
            let m = e.to_string();
            assert!(m.contains("64") && m.contains("70"), "{m}");
            assert_eq!(e.field(), "prompt");
        }
        other => panic!("{other:?}"),
    }
    let bad = GenerationParams {
        sampling: SamplingParams {
            top_p: 1.5,
            ..SamplingParams::default()
        },
        ..GenerationParams::default()
    };
    match h.submit_params(vec![1, 2], bad).unwrap_err() {
        SubmitError::Invalid(e) => {
            assert_eq!(e.field(), "top_p");
            let message = e.to_string();
            assert!(message.contains("<= 1"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    match h.submit_params(vec![1, 100_000], greedy(1)).unwrap_err() {
        SubmitError::Invalid(e) => assert_eq!(e.field(), "prompt"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn queue_full_is_overload() {
    let e = engine(
        "tiny-llama",
        EngineConfig {
            max_waiting_requests: 2,
            max_num_seqs: 1,
            ..EngineConfig::default()
        },
    );
    let h = e.handle();
    let mut streams = Vec::new();
    let mut overloaded = 0;
    for _ in 0..10 {
        match h.submit_params(vec![1, 2, 3], greedy(50)) {
            Ok(s) => streams.push(s),
            Err(SubmitError::Overloaded(_)) => overloaded += 1,
            Err(other) => panic!("{other:?}"),
        }
    }
    assert!(overloaded > 0);
    for s in streams {
        assert_eq!(collect(s)[0].tokens.len(), 50);
    }
}

/// Issue 14, defect 1: six concurrent `n: 8` requests with room for 16 waiting sequences.
/// Each is refused up front (429) or completes all eight completions; none fails after it
/// was accepted (held-back siblings used to overflow the queue later: 500s).
#[test]
fn n_greater_than_one_is_admitted_only_with_room_for_every_sibling() {
    let e = engine(
        "tiny-llama",
        EngineConfig {
            max_waiting_requests: 16,
            max_num_seqs: 4,
            ..EngineConfig::default()
        },
    );
    let h = e.handle();
    let mut streams = Vec::new();
    let mut overloaded = 0;
    for i in 0..6u32 {
        let p = GenerationParams {
            n: 8,
            seed: Some(1),
            ..greedy(20)
        };
        match h.submit_params(vec![1, 2, 3 + i, 4, 5, 6, 7, 8], p) {
            Ok(s) => streams.push(s),
            Err(SubmitError::Overloaded(_)) => overloaded += 1,
            Err(other) => panic!("{other:?}"),
        }
    }
    assert!(overloaded > 0, "16 waiting sequences cannot hold 48");
    assert!(!streams.is_empty());
    for s in streams {
        let outs = collect(s);
        assert_eq!(outs.len(), 8);
        assert!(
            outs.iter().all(|o| o.tokens.len() == 20),
            "{:?}",
            outs.iter().map(|o| o.tokens.len()).collect::<Vec<_>>()
        );
    }
}

#[test]
fn prompt_logprobs_match_reference_and_skip_the_cache() {
    let (prompts, _) = reference("tiny-qwen3");
    let reference = candle_core::safetensors::load(
        fixture("tiny-qwen3").join("reference.safetensors"),
        &candle_core::Device::Cpu,
    )
    .unwrap();
    let e = engine(
        "tiny-qwen3",
        EngineConfig {
            // Force the prompt through several chunks.
            max_num_batched_tokens: 32,
            ..EngineConfig::default()
        },
    );
    let prompt = prompts[2].clone(); // 70 tokens
    let rows = reference["prefill_logits.2"].to_vec2::<f32>().unwrap();
    for round in 0..2 {
        let params = GenerationParams {
            prompt_logprobs: Some(3),
            ..greedy(2)
        };
        let mut s = e.handle().submit_params(prompt.clone(), params).unwrap();
        let mut got = None;
        let mut cached = None;
        while let Some(ev) = s.blocking_next() {
            match ev {
                RequestEvent::PromptLogprobs(v) => {
                    assert!(got.is_none(), "prompt logprobs sent twice");
                    got = Some(v);
                }
                RequestEvent::Delta(_) => assert!(got.is_some(), "prompt logprobs after a delta"),
                RequestEvent::Finished { usage, .. } => cached = Some(usage.cached_tokens),
                RequestEvent::Error(e) => panic!("{e}"),
            }
        }
        let got = got.unwrap();
        assert_eq!(
            cached,
            Some(0),
            "round {round}: prompt logprobs must not use cached blocks"
        );
        assert_eq!(got.len(), prompt.len());
        assert!(got[0].is_none());
        for j in 1..prompt.len() {
            let row = &rows[j - 1];
            let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let lse = max + row.iter().map(|x| (x - max).exp()).sum::<f32>().ln();
            let want = row[prompt[j] as usize] - lse;
            let lp = got[j].as_ref().unwrap();
            assert_eq!(lp.token_id, prompt[j]);
            assert!(
                (lp.logprob - want).abs() < 1e-4,
                "position {j}: {} vs {want}",
                lp.logprob
            );
            assert_eq!(lp.top.len(), 3);
            assert!(lp.top[0].1 >= lp.top[1].1);
        }
    }
}

fn adapter_reference(dir: &str) -> (Vec<Vec<u32>>, Vec<Vec<u32>>) {
    reference(&format!("tiny-llama/{dir}"))
}

fn lora_engine(max_loras: usize, max_cpu_loras: usize) -> Engine {
    engine(
        "tiny-llama",
        EngineConfig {
            kv_cache: KvCacheSize::Tokens(4096),
            lora: Some(LoraConfig {
                max_loras,
                max_lora_rank: 8,
                max_cpu_loras,
            }),
            ..EngineConfig::default()
        },
    )
}

#[test]
fn an_adapter_read_from_disk_holds_up_only_its_own_requests() {
    // Adapter x (a copy of lora-a) is registered, then pushed out of host memory by y and z
    // (--max-cpu-loras 2). Its weights file is then replaced by a named pipe, so the
    // background re-read blocks until the test writes the bytes: while it is blocked, base
    // and y requests must run to completion (y itself is re-read from disk: x's load took
    // its place in host memory).
    let dir = std::env::temp_dir().join(format!("lantern-lora-fifo-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let src = fixture("tiny-llama/lora-a");
    std::fs::copy(
        src.join("adapter_config.json"),
        dir.join("adapter_config.json"),
    )
    .unwrap();
    let weights = std::fs::read(src.join("adapter_model.safetensors")).unwrap();
    let st = dir.join("adapter_model.safetensors");
    std::fs::write(&st, &weights).unwrap();

    let e = lora_engine(1, 2);
    let h = e.handle();
    h.load_lora_blocking("x", dir.to_str().unwrap()).unwrap();
    h.load_lora_blocking("y", fixture("tiny-llama/lora-b").to_str().unwrap())
        .unwrap();
    h.load_lora_blocking("z", fixture("tiny-llama/lora-a").to_str().unwrap())
        .unwrap();
    assert_eq!(h.fresh_snapshot_blocking().unwrap().loras_in_host_memory, 2);
    std::fs::remove_file(&st).unwrap();
    let ok = std::process::Command::new("mkfifo")
        .arg(&st)
        .status()
        .unwrap();
    assert!(ok.success(), "mkfifo failed");

    let (pa, ga) = adapter_reference("lora-a");
    let (pb, gb) = adapter_reference("lora-b");
    let (p0, g0) = reference("tiny-llama");
    let x = h
        .submit_params(
            pa[0].clone(),
            GenerationParams {
                lora_id: Some(h.lora_id("x").unwrap()),
                ..greedy(33)
            },
        )
        .unwrap();
    // x's adapter is being read (blocked on the pipe); others run.
    let base = collect(h.submit_params(p0[1].clone(), greedy(33)).unwrap());
    assert_eq!(base[0].tokens, g0[1]);
    let y = collect(
        h.submit_params(
            pb[1].clone(),
            GenerationParams {
                lora_id: Some(h.lora_id("y").unwrap()),
                ..greedy(33)
            },
        )
        .unwrap(),
    );
    assert_eq!(y[0].tokens, gb[1]);
    // Release the read: x completes with lora-a's reference output.
    std::fs::write(&st, &weights).unwrap();
    let x = collect(x);
    assert_eq!(x[0].tokens, ga[0]);
    let snap = h.fresh_snapshot_blocking().unwrap();
    assert_eq!(snap.lora_disk_loads, 5, "x, y, z, then x and y again");
    assert!(snap.lora_slot_loads >= 2);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn unknown_and_unloaded_adapters_are_refused() {
    let e = lora_engine(2, 2);
    let h = e.handle();
    let (pa, _) = adapter_reference("lora-a");
    let r = h.submit_params(
        pa[0].clone(),
        GenerationParams {
            lora_id: Some(LoraId(77)),
            ..greedy(4)
        },
    );
    assert_eq!(r.err(), Some(SubmitError::UnknownAdapter));
    let info = h
        .load_lora_blocking("a", fixture("tiny-llama/lora-a").to_str().unwrap())
        .unwrap();
    assert_eq!(info.rank, 4);
    assert_eq!(
        h.load_lora_blocking("a", "x").unwrap_err(),
        LoraError::AlreadyLoaded("a".into())
    );
    let id = h.lora_id("a").unwrap();
    h.unload_lora("a").unwrap();
    assert_eq!(h.lora_id("a"), None);
    let r = h.submit_params(
        pa[0].clone(),
        GenerationParams {
            lora_id: Some(id),
            ..greedy(4)
        },
    );
    assert_eq!(r.err(), Some(SubmitError::UnknownAdapter));
    assert_eq!(
        h.unload_lora("a").unwrap_err(),
        LoraError::NotFound("a".into())
    );
    // Rank above --max-lora-rank is refused with the numbers.
    let e = engine(
        "tiny-llama",
        EngineConfig {
            lora: Some(LoraConfig {
                max_loras: 1,
                max_lora_rank: 4,
                max_cpu_loras: 1,
            }),
            ..EngineConfig::default()
        },
    );
    let err = e
        .handle()
        .load_lora_blocking("b", fixture("tiny-llama/lora-b").to_str().unwrap())
        .unwrap_err();
    assert!(err.to_string().contains("--max-lora-rank"), "{err}");
}
