//! `lantern generate`: run one or more prompts and print the completions.

use anyhow::{bail, Context, Result};
use candle_core::Device;
use clap::Args;
use lantern_models::{load_model, DTypeChoice, LoadOptions};
use lantern_runtime::{sampler, KvCacheSize, ModelRunner, RunnerConfig, SeqChunk};

#[derive(Debug, Args)]
pub struct GenerateArgs {
    /// Model: a local HF directory, a .gguf file, or a hub id (owner/name).
    #[arg(long)]
    pub model: String,
    /// A text prompt (repeat for several prompts, run as one batch).
    #[arg(long)]
    pub prompt: Vec<String>,
    /// A prompt given as comma-separated token ids (repeatable).
    #[arg(long = "prompt-ids")]
    pub prompt_ids: Vec<String>,
    /// Maximum number of new tokens per prompt.
    #[arg(long = "max-tokens", default_value_t = 64)]
    pub max_tokens: usize,
    /// Sampling temperature (0 = greedy).
    #[arg(long, default_value_t = 0.0)]
    pub temperature: f32,
    /// Weight dtype: auto, float32, bfloat16, float16.
    #[arg(long, default_value = "auto")]
    pub dtype: String,
    /// KV cache block size in tokens.
    #[arg(long = "block-size", default_value_t = 16)]
    pub block_size: usize,
    /// Print one JSON object per prompt: {"token_ids": [...], "text": "..."}.
    #[arg(long)]
    pub json: bool,
    /// Do not stop at the model's EOS tokens.
    #[arg(long = "ignore-eos")]
    pub ignore_eos: bool,
}

pub fn run(args: GenerateArgs) -> Result<()> {
    if args.temperature != 0.0 {
        bail!("only --temperature 0 (greedy) is supported by this build");
    }
    let opts = LoadOptions {
        dtype: DTypeChoice::parse(&args.dtype)?,
        device: Device::Cpu,
        progress: true,
        chat_template_override: None,
    };
    let loaded = load_model(&args.model, &opts).with_context(|| format!("loading {}", args.model))?;
    let tokenizer = loaded.tokenizer.clone();
    let mut prompts: Vec<Vec<u32>> = Vec::new();
    for p in &args.prompt {
        let enc = tokenizer
            .encode(p.as_str(), true)
            .map_err(|e| anyhow::anyhow!("tokenizing prompt: {e}"))?;
        prompts.push(enc.get_ids().to_vec());
    }
    for p in &args.prompt_ids {
        let ids: std::result::Result<Vec<u32>, _> =
            p.split(',').map(|s| s.trim().parse::<u32>()).collect();
        prompts.push(ids.with_context(|| format!("--prompt-ids `{p}` is not a list of integers"))?);
    }
    if prompts.is_empty() {
        bail!("give at least one --prompt or --prompt-ids");
    }
    if prompts.iter().any(|p| p.is_empty()) {
        bail!("a prompt tokenized to zero tokens");
    }
    let bs = args.block_size;
    let total_tokens: usize = prompts.iter().map(|p| p.len() + args.max_tokens).sum();
    let runner = ModelRunner::new(
        loaded.model,
        RunnerConfig {
            block_size: bs,
            kv_cache: KvCacheSize::Tokens(total_tokens + prompts.len() * bs + bs),
        },
    )?;
    let mut next_block = 1u32;
    let tables: Vec<Vec<u32>> = prompts
        .iter()
        .map(|p| {
            let n = (p.len() + args.max_tokens).div_ceil(bs) as u32;
            let t = (next_block..next_block + n).collect();
            next_block += n;
            t
        })
        .collect();
    let eos = if args.ignore_eos {
        Vec::new()
    } else {
        loaded.meta.eos_token_ids.clone()
    };
    let mut outputs: Vec<Vec<u32>> = vec![Vec::new(); prompts.len()];
    let mut done = vec![args.max_tokens == 0; prompts.len()];
    // Prefill every prompt in one flattened batch.
    let chunks: Vec<SeqChunk> = prompts
        .iter()
        .zip(&tables)
        .map(|(p, t)| SeqChunk {
            token_ids: p,
            num_computed_tokens: 0,
            block_table: t,
            sample: true,
        })
        .collect();
    let mut next = match runner.execute(&chunks)? {
        Some(l) => sampler::greedy(&l)?,
        None => Vec::new(),
    };
    while done.iter().any(|d| !d) {
        let mut live = Vec::new();
        for (i, &tok) in next.iter().enumerate() {
            if done[i] {
                continue;
            }
            outputs[i].push(tok);
            if eos.contains(&tok) || outputs[i].len() >= args.max_tokens {
                done[i] = true;
            } else {
                live.push(i);
            }
        }
        if live.is_empty() {
            break;
        }
        let feed: Vec<[u32; 1]> = live.iter().map(|&i| [outputs[i][outputs[i].len() - 1]]).collect();
        let chunks: Vec<SeqChunk> = live
            .iter()
            .zip(&feed)
            .map(|(&i, f)| SeqChunk {
                token_ids: f,
                num_computed_tokens: prompts[i].len() + outputs[i].len() - 1,
                block_table: &tables[i],
                sample: true,
            })
            .collect();
        let sampled = match runner.execute(&chunks)? {
            Some(l) => sampler::greedy(&l)?,
            None => Vec::new(),
        };
        let mut full = vec![0u32; prompts.len()];
        for (&i, t) in live.iter().zip(sampled) {
            full[i] = t;
        }
        next = full;
    }
    for out in &outputs {
        let text = tokenizer
            .decode(out, true)
            .map_err(|e| anyhow::anyhow!("decoding: {e}"))?;
        if args.json {
            println!("{}", serde_json::json!({"token_ids": out, "text": text}));
        } else {
            println!("{text}");
        }
    }
    Ok(())
}
