//! `lantern throughput`: the offline engine benchmark (no HTTP). Submits `--num-prompts`
//! random prompts of exactly `--input-len` tokens with `--output-len` tokens each
//! (ignore_eos), at most `--concurrency` in flight, and reports prefill and decode speed.

use crate::common::{EngineArgs, ModelArgs, NullDeviceArgs};
use anyhow::{anyhow, Context, Result};
use clap::Args;
use lantern_engine::{Engine, EngineSnapshot, GenerationParams, RequestEvent, SamplingParams};
use lantern_models::load_model;
use std::time::Instant;

/// Per-step wall time, simulated device time and host time (wall - simulated) between two
/// snapshots (`base`: `None` = since the start), in milliseconds per step.
pub fn step_stats(now: &EngineSnapshot, base: Option<&EngineSnapshot>) -> serde_json::Value {
    let zero = EngineSnapshot::default();
    let b = base.unwrap_or(&zero);
    let steps = now.steps.saturating_sub(b.steps);
    let per = |x: f64| 1000.0 * x / steps.max(1) as f64;
    let wall = now.step_seconds_total - b.step_seconds_total;
    let sim = now.simulated_device_seconds_total - b.simulated_device_seconds_total;
    let (p, q) = (&now.step_phases, &b.step_phases);
    serde_json::json!({
        "steps": steps,
        "mean_step_wall_ms": per(wall),
        "mean_simulated_device_ms": per(sim),
        "mean_host_ms": per(wall - sim),
        "host_fraction_of_simulated": if sim > 0.0 { (wall - sim) / sim } else { 0.0 },
        "phase_ms": {
            "schedule": per(p.schedule - q.schedule),
            "execute_minus_simulated": per(p.execute - q.execute - sim),
            "sample": per(p.sample - q.sample),
            "update_detok_events": per(p.update - q.update),
        },
        "generation_tokens": now.generation_tokens_total - b.generation_tokens_total,
    })
}

/// One line of [`step_stats`].
pub fn step_summary(now: &EngineSnapshot, base: Option<&EngineSnapshot>) -> String {
    let v = step_stats(now, base);
    let f = |k: &str| v[k].as_f64().unwrap_or(0.0);
    let ph = |k: &str| v["phase_ms"][k].as_f64().unwrap_or(0.0);
    format!(
        "engine steps: {} steps, mean {:.3} ms wall = {:.3} ms simulated device + {:.3} ms host ({:.1}% of the simulated step); host per step: schedule {:.3} ms, prepare+forward overhead {:.3} ms, sample {:.3} ms, update/detokenize/events {:.3} ms",
        v["steps"].as_u64().unwrap_or(0),
        f("mean_step_wall_ms"),
        f("mean_simulated_device_ms"),
        f("mean_host_ms"),
        100.0 * f("host_fraction_of_simulated"),
        ph("schedule"),
        ph("execute_minus_simulated"),
        ph("sample"),
        ph("update_detok_events"),
    )
}

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
    #[command(flatten)]
    pub null: NullDeviceArgs,
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
    let null = args.null.enabled();
    let (loaded, model, fused_ops) = match args.null.load()? {
        Some((m, name)) => (m, format!("null:{name}"), false),
        None => {
            let (model, _) = args.model.resolve()?;
            let opts = args.model.load_options(false)?;
            let l = load_model(&model, &opts).with_context(|| format!("loading {model}"))?;
            let m = crate::common::EngineModel {
                backend: l.model.into(),
                tokenizer: l.tokenizer,
                meta: l.meta,
            };
            (m, model, opts.model.fused)
        }
    };
    let mut cfg = args.engine.engine_config(loaded.backend.device(), null)?;
    cfg.lora = args.lora.config()?;
    let modules = args.lora.modules()?;
    let specials: Vec<u32> = loaded.meta.eos_token_ids.clone();
    let cfg_lora = cfg.lora.is_some();
    let engine = Engine::start_with(loaded.backend, loaded.tokenizer, loaded.meta, cfg)
        .map_err(|e| anyhow!(e))?;
    let h = engine.handle();
    let vocab = h.info().vocab_size as u64;
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
        h.validate(GenerationParams {
            max_tokens: Some(2),
            ..params.clone()
        })?,
    )?;
    while w.blocking_next().is_some() {}

    let base = h.fresh_snapshot_blocking()?;
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
                        0 => None,
                        n => Some(lora_ids[i % n]),
                    };
                    inflight.push(h.submit_blocking(
                        p,
                        h.validate(GenerationParams {
                            lora_id,
                            ..params.clone()
                        })?,
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
        "engine_steps": snap.steps - base.steps,
        "mean_step_ms": 1000.0 * total / (snap.steps - base.steps).max(1) as f64,
        "step_time": step_stats(&snap, Some(&base)),
        "fused_ops": fused_ops,
        "lora_enabled": cfg_lora,
        "lora_adapters": lora_ids.len(),
        "lora_slot_loads": snap.lora_slot_loads,
        "preemptions": snap.num_preemptions,
    });
    if null {
        eprintln!("{}", step_summary(&snap, Some(&base)));
    }
    if args.json {
        println!("{result}");
    } else {
        println!("{}", serde_json::to_string_pretty(&result)?);
    }
    Ok(())
}
