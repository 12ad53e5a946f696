//! `lantern throughput`: the offline engine benchmark (no HTTP). Submits `--num-prompts`
//! random prompts of exactly `--input-len` tokens with `--output-len` tokens each
//! (ignore_eos), at most `--concurrency` in flight, and reports prefill and decode speed.

use crate::common::{EngineArgs, ModelArgs};
use anyhow::{anyhow, Context, Result};
use clap::Args;
use lantern_engine::{Engine, GenerationParams, RequestEvent, SamplingParams};
use lantern_models::load_model;
use std::time::Instant;

#[derive(Debug, Args)]
pub struct ThroughputArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub engine: EngineArgs,
    /// LoRA flags as for `serve`; with `--lora` adapters, prompt `i` uses adapter
    /// `i % count` (no `--lora` but `--enable-lora`: LoRA on, every request on the base model).
    #[command(flatten)]
    pub lora: crate::serve::LoraArgs,
    #[arg(long = "input-len", default_value_t = 256)]
    pub input_len: usize,
    #[arg(long = "output-len", default_value_t = 64)]
    pub output_len: usize,
    #[arg(long = "num-prompts", default_value_t = 32)]
    pub num_prompts: usize,
    /// Requests in flight at once (also caps --max-num-seqs).
    #[arg(long, default_value_t = 8)]
    pub concurrency: usize,
    /// Seed for the random prompts.
    #[arg(long = "prompt-seed", default_value_t = 0)]
    pub prompt_seed: u64,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

fn lcg(state: &mut u64) -> u64 {
    *state = state
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    *state >> 33
}

pub fn run(mut args: ThroughputArgs) -> Result<()> {
    args.engine.max_num_seqs = args.engine.max_num_seqs.min(args.concurrency.max(1));
    let (model, _) = args.model.resolve()?;
    let opts = args.model.load_options(false)?;
    let mut cfg = args.engine.engine_config(&opts.device)?;
    cfg.lora = args.lora.config()?;
    let modules = args.lora.modules()?;
    let loaded = load_model(&model, &opts).with_context(|| format!("loading {model}"))?;
    let vocab = loaded.meta.config.vocab_size as u64;
    let specials: Vec<u32> = loaded.meta.eos_token_ids.clone();
    let cfg_lora = cfg.lora.is_some();
    let fused_ops = opts.model.fused;
    let engine = Engine::try_start(loaded, cfg).map_err(|e| anyhow!(e))?;
    let h = engine.handle();
    let mut lora_ids = Vec::new();
    for (name, source) in &modules {
        lora_ids.push(
            h.load_lora_blocking(name, source)
                .with_context(|| format!("--lora {name}={source}"))?
                .id,
        );
    }
    let mut seed = args.prompt_seed.wrapping_add(0x5eed);
    let prompts: Vec<Vec<u32>> = (0..args.num_prompts)
        .map(|_| {
            (0..args.input_len)
                .map(|_| loop {
                    let t = (lcg(&mut seed) % vocab) as u32;
                    if !specials.contains(&t) && t > 16 {
                        break t;
                    }
                })
                .collect()
        })
        .collect();
    let params = GenerationParams {
        sampling: SamplingParams::greedy(),
        max_tokens: Some(args.output_len),
        ignore_eos: true,
        ..GenerationParams::default()
    };
    // Warm up once (allocations, thread pools).
    let mut w = h.submit_blocking(
        prompts[0][..8.min(args.input_len)].to_vec(),
        GenerationParams {
            max_tokens: Some(2),
            ..params.clone()
        },
    )?;
    while w.blocking_next().is_some() {}

    let t0 = Instant::now();
    let mut first_tokens = Vec::new();
    let mut finishes = Vec::new();
    let mut out_tokens = 0usize;
    let mut queue = prompts.into_iter().enumerate();
    let mut inflight = Vec::new();
    loop {
        while inflight.len() < args.concurrency {
            match queue.next() {
                Some((i, p)) => {
                    let lora_id = match lora_ids.len() {
                        0 => 0,
                        n => lora_ids[i % n],
                    };
                    inflight.push(h.submit_blocking(
                        p,
                        GenerationParams {
                            lora_id,
                            ..params.clone()
                        },
                    )?)
                }
                None => break,
            }
        }
        if inflight.is_empty() {
            break;
        }
        // Drain the oldest request fully (the others keep running in the engine meanwhile).
        let mut s = inflight.remove(0);
        let mut first = None;
        while let Some(ev) = s.blocking_next() {
            match ev {
                RequestEvent::Delta(d) => {
                    first.get_or_insert(d.time);
                }
                RequestEvent::Finished { usage, timing, .. } => {
                    out_tokens += usage.completion_tokens;
                    if let Some(f) = timing.first_token {
                        first_tokens.push(
                            f.duration_since(timing.first_scheduled.unwrap_or(timing.arrival))
                                .as_secs_f64(),
                        );
                    }
                    finishes.push(timing);
                }
                RequestEvent::PromptLogprobs(_) => {}
                RequestEvent::Error(e) => return Err(anyhow!("request failed: {e}")),
            }
        }
    }
    let total = t0.elapsed().as_secs_f64();
    let snap = h.fresh_snapshot_blocking()?;
    engine.shutdown();
    let n = finishes.len().max(1) as f64;
    let mean_prefill = finishes.iter().map(|t| t.prefill_s()).sum::<f64>() / n;
    let mean_decode = finishes.iter().map(|t| t.decode_s()).sum::<f64>() / n;
    let decode_tok_s_per_seq = if mean_decode > 0.0 {
        (args.output_len.saturating_sub(1)) as f64 / mean_decode
    } else {
        0.0
    };
    let result = serde_json::json!({
        "model": model,
        "input_len": args.input_len,
        "output_len": args.output_len,
        "num_prompts": args.num_prompts,
        "concurrency": args.concurrency,
        "duration_s": total,
        "requests_per_s": args.num_prompts as f64 / total,
        "output_tokens_per_s": out_tokens as f64 / total,
        "total_tokens_per_s": (out_tokens + args.num_prompts * args.input_len) as f64 / total,
        "mean_prefill_s": mean_prefill,
        "prefill_tokens_per_s_per_request": args.input_len as f64 / mean_prefill.max(1e-9),
        "mean_decode_s": mean_decode,
        "decode_tokens_per_s_per_request": decode_tok_s_per_seq,
        "decode_tokens_per_s_aggregate": decode_tok_s_per_seq * args.concurrency.min(args.num_prompts) as f64,
        "engine_steps": snap.steps,
        "mean_step_ms": 1000.0 * total / snap.steps.max(1) as f64,
        "fused_ops": fused_ops,
        "lora_enabled": cfg_lora,
        "lora_adapters": lora_ids.len(),
        "lora_slot_loads": snap.lora_slot_loads,
        "preemptions": snap.num_preemptions,
    });
    if args.json {
        println!("{result}");
    } else {
        println!("{}", serde_json::to_string_pretty(&result)?);
    }
    Ok(())
}
