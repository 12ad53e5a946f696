//! Where a decode step's time goes: loads a model (default: SmolLM2-135M-Instruct GGUF,
//! f32 activations; QUANT `auto`/`gguf` keeps the GGUF's quantized weights as `lantern
//! serve` does on the CPU, `none` dequantizes them to f32), fills B sequences with CTX random prompt
//! tokens, then times decode steps of all B at once: the runner's forward and sampling
//! halves, and the forward's ops one by one (`lantern_models::profile`).
//!   cargo run --release -p lantern-bench --example decode_profile -- [MODEL|-] [B,B,..] [CTX] [KV_DTYPE] [QUANT] [CHUNK]
//! CHUNK > 0 makes every timed step a mixed one, as the scheduler builds them under
//! `--target-itl-ms`: the B decodes plus CHUNK prompt tokens of one more sequence, the last
//! CHUNK of a CTX-token prompt whose earlier tokens are cached.
//! With no MODEL, `$LANTERN_SMOLLM2_GGUF` or ~/.cache/lantern/SmolLM2-135M-Instruct.Q4_1.gguf.
use anyhow::{Context, Result};
use lantern_models::{load_model, profile, DTypeChoice, LoadOptions, Quantization};
use lantern_runtime::{
    KvCacheDtype, KvCacheSize, ModelRunner, RunnerConfig, SampleRow, SamplingParams, SeqChunk,
};
use rand::{Rng, SeedableRng};
use std::time::Instant;

const BLOCK: usize = 16;
const STEPS: usize = 24;

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let model = match args.first() {
        Some(m) if m != "-" => m.clone(),
        _ => std::env::var("LANTERN_SMOLLM2_GGUF").unwrap_or_else(|_| {
            let home = std::env::var("HOME").unwrap_or_default();
            format!("{home}/.cache/lantern/SmolLM2-135M-Instruct.Q4_1.gguf")
        }),
    };
    let batches: Vec<usize> = args
        .get(1)
        .map(|s| s.split(',').map(|b| b.parse()).collect())
        .transpose()
        .context("batch sizes: a comma-separated list")?
        .unwrap_or_else(|| vec![1, 8, 32]);
    let ctx: usize = args.get(2).map(|s| s.parse()).transpose()?.unwrap_or(256);
    let kv_cache_dtype = match args.get(3) {
        Some(s) => KvCacheDtype::parse(s).context("KV cache dtype: auto, float16, bfloat16")?,
        None => KvCacheDtype::Auto,
    };
    let quantization = match args.get(4) {
        None => Quantization::Auto,
        Some(q) => Quantization::parse(q)
            .with_context(|| format!("quantization `{q}`: {}", Quantization::NAMES))?,
    };
    let chunk_len: usize = args.get(5).map(|s| s.parse()).transpose()?.unwrap_or(0);
    if chunk_len > ctx {
        anyhow::bail!("CHUNK {chunk_len} is longer than the CTX {ctx} prompt");
    }
    let opts = LoadOptions {
        dtype: DTypeChoice::F32,
        progress: false,
        quantization,
        ..LoadOptions::default()
    };
    let loaded = load_model(&model, &opts).with_context(|| format!("loading {model}"))?;
    let vocab = loaded.model.config().vocab_size as u32;
    let max_b = batches.iter().copied().max().unwrap_or(1);
    let blocks_per_seq = (ctx + STEPS + 2).div_ceil(BLOCK);
    let runner = ModelRunner::new(
        loaded.model,
        RunnerConfig {
            block_size: BLOCK,
            kv_cache: KvCacheSize::Tokens(((max_b + 1) * blocks_per_seq + 1) * BLOCK),
            kv_cache_dtype,
        },
    )?;
    println!("model {model}, f32, KV cache {kv_cache_dtype:?}, prompts of {ctx} tokens, {STEPS} decode steps per batch size");
    let greedy = SamplingParams {
        temperature: 0.0,
        ..SamplingParams::default()
    };
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    for &b in &batches {
        let tables: Vec<Vec<u32>> = (0..b)
            .map(|i| {
                (0..blocks_per_seq)
                    .map(|j| (1 + i * blocks_per_seq + j) as u32)
                    .collect()
            })
            .collect();
        let mut seqs: Vec<Vec<u32>> = (0..b)
            .map(|_| (0..ctx).map(|_| rng.random_range(0..vocab)).collect())
            .collect();
        let row = SampleRow {
            params: &greedy,
            logit_bias: &[],
            logprobs: None,
            allowed: None,
            seed: 0,
            prompt_tokens: &[],
            output_tokens: &[],
            banned: &[],
        };
        // Prefill, one sequence at a time (or, with LANTERN_PROFILE_PREFILL_TOGETHER=1, all B
        // prompts in one step, as a burst is served; its ops are printed).
        let together = std::env::var("LANTERN_PROFILE_PREFILL_TOGETHER").as_deref() == Ok("1");
        let t = Instant::now();
        if together {
            profile::set_enabled(true);
            let _ = profile::take();
            let chunks: Vec<SeqChunk> = seqs
                .iter()
                .zip(&tables)
                .map(|(s, table)| SeqChunk {
                    token_ids: s,
                    num_computed_tokens: 0,
                    block_table: table,
                    sample: true,
                    all_logits: false,
                    lora_slot: None,
                })
                .collect();
            let out = runner.step(&chunks, &vec![row; b])?;
            drop(chunks);
            for (s, tok) in seqs.iter_mut().zip(&out.sampled) {
                s.push(tok.token);
            }
            profile::set_enabled(false);
            println!(
                "\nB={b:3}: one prefill step of {} tokens: {:.1} ms",
                b * ctx,
                t.elapsed().as_secs_f64() * 1e3
            );
            for o in &profile::take() {
                println!(
                    "  {:<16} {:5} calls {:9.3} ms",
                    o.label,
                    o.calls,
                    o.seconds * 1e3
                );
            }
        } else {
            for (s, table) in seqs.iter_mut().zip(&tables) {
                let chunk = [SeqChunk {
                    token_ids: s,
                    num_computed_tokens: 0,
                    block_table: table,
                    sample: true,
                    all_logits: false,
                    lora_slot: None,
                }];
                let out = runner.step(&chunk, &[row])?;
                s.push(out.sampled[0].token);
            }
        }
        let prefill = t.elapsed().as_secs_f64() / b as f64;
        // The mixed steps' prompt: its first CTX - CHUNK tokens cached once here.
        let chunk_table: Vec<u32> = (0..blocks_per_seq)
            .map(|j| (1 + b * blocks_per_seq + j) as u32)
            .collect();
        let chunk_prompt: Vec<u32> = (0..ctx).map(|_| rng.random_range(0..vocab)).collect();
        let cached = ctx - chunk_len;
        if chunk_len > 0 && cached > 0 {
            let head = [SeqChunk {
                token_ids: &chunk_prompt[..cached],
                num_computed_tokens: 0,
                block_table: &chunk_table,
                sample: false,
                all_logits: false,
                lora_slot: None,
            }];
            runner.step(&head, &[])?;
        }
        profile::set_enabled(true);
        let _ = profile::take();
        let (mut fwd, mut smp, mut wall) = (Vec::new(), Vec::new(), Vec::new());
        // LANTERN_AB_KEEP_AWAKE=1: odd steps without keeping rayon's workers awake.
        let ab = std::env::var("LANTERN_AB_KEEP_AWAKE").as_deref() == Ok("1");
        let mut wall_off = Vec::new();
        for step in 0..STEPS {
            if ab {
                lantern_runtime::set_cpu_keep_awake(step % 2 == 0);
            }
            let t = Instant::now();
            let mut chunks: Vec<SeqChunk> = seqs
                .iter()
                .zip(&tables)
                .map(|(s, table)| SeqChunk {
                    token_ids: &s[s.len() - 1..],
                    num_computed_tokens: s.len() - 1,
                    block_table: table,
                    sample: true,
                    all_logits: false,
                    lora_slot: None,
                })
                .collect();
            if chunk_len > 0 {
                chunks.push(SeqChunk {
                    token_ids: &chunk_prompt[cached..],
                    num_computed_tokens: cached,
                    block_table: &chunk_table,
                    sample: false,
                    all_logits: false,
                    lora_slot: None,
                });
            }
            let rows = vec![row; b];
            let out = runner.step(&chunks, &rows)?;
            drop(chunks);
            for (s, tok) in seqs.iter_mut().zip(&out.sampled) {
                s.push(tok.token);
            }
            fwd.push(out.forward_seconds);
            smp.push(out.sample_seconds);
            if ab && step % 2 == 1 {
                wall_off.push(t.elapsed().as_secs_f64());
            } else {
                wall.push(t.elapsed().as_secs_f64());
            }
        }
        if ab {
            lantern_runtime::set_cpu_keep_awake(true);
            wall_off.sort_by(|a, c| a.total_cmp(c));
            println!(
                "B={b:3}: A/B keep-awake off: decode step median {:.2} ms",
                wall_off[wall_off.len() / 2] * 1e3
            );
        }
        profile::set_enabled(false);
        let ops = profile::take();
        let med = |v: &mut Vec<f64>| {
            v.sort_by(|a, c| a.total_cmp(c));
            v[v.len() / 2] * 1e3
        };
        let (f, s, w) = (med(&mut fwd), med(&mut smp), med(&mut wall));
        println!(
            "\nB={b:3}{}: prefill {:.1} ms/seq; decode step median {w:.2} ms (forward {f:.2}, sample {s:.2}); {:.1} tok/s",
            if chunk_len > 0 { format!(" + {chunk_len} prompt tokens") } else { String::new() },
            prefill * 1e3,
            b as f64 / w * 1e3
        );
        let total: f64 = ops.iter().map(|o| o.seconds).sum::<f64>() / STEPS as f64;
        println!(
            "  ops per step (mean, profiled steps): {:.2} ms in ops",
            total * 1e3
        );
        for o in &ops {
            println!(
                "  {:<16} {:5} calls/step {:8.3} ms/step {:7.1} us/call",
                o.label,
                o.calls / STEPS as u64,
                o.seconds / STEPS as f64 * 1e3,
                o.seconds / o.calls as f64 * 1e6
            );
        }
    }
    Ok(())
}
