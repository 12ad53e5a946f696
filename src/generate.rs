//! `lantern generate`: run prompts through the engine (batched) and print the completions.

use crate::common::{EngineArgs, ModelArgs};
use anyhow::{anyhow, bail, Context, Result};
use clap::Args;
use lantern_engine::{Engine, GenerationParams, RequestEvent, SamplingParams};
use lantern_models::load_model;

#[derive(Debug, Args)]
pub struct GenerateArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub engine: EngineArgs,
    /// A text prompt (repeat for several prompts; they run batched).
    #[arg(long)]
    pub prompt: Vec<String>,
    /// A prompt given as comma-separated token ids (repeatable).
    #[arg(long = "prompt-ids")]
    pub prompt_ids: Vec<String>,
    /// Format each --prompt as a user message with the model's chat template.
    #[arg(long)]
    pub chat: bool,
    /// Maximum new tokens per prompt.
    #[arg(long = "max-tokens", default_value_t = 64)]
    pub max_tokens: usize,
    #[arg(long = "min-tokens", default_value_t = 0)]
    pub min_tokens: usize,
    /// Sampling temperature (0 = greedy).
    #[arg(long, default_value_t = 0.0)]
    pub temperature: f32,
    #[arg(long = "top-p", default_value_t = 1.0)]
    pub top_p: f32,
    /// 0 disables.
    #[arg(long = "top-k", default_value_t = 0)]
    pub top_k: usize,
    #[arg(long = "min-p", default_value_t = 0.0)]
    pub min_p: f32,
    #[arg(long = "repetition-penalty", default_value_t = 1.0)]
    pub repetition_penalty: f32,
    #[arg(long = "presence-penalty", default_value_t = 0.0)]
    pub presence_penalty: f32,
    #[arg(long = "frequency-penalty", default_value_t = 0.0)]
    pub frequency_penalty: f32,
    /// Per-request sampling seed.
    #[arg(long = "sample-seed")]
    pub sample_seed: Option<u64>,
    /// Stop string (repeatable).
    #[arg(long)]
    pub stop: Vec<String>,
    /// Completions per prompt.
    #[arg(long, default_value_t = 1)]
    pub n: usize,
    /// Do not stop at the model's EOS tokens.
    #[arg(long = "ignore-eos")]
    pub ignore_eos: bool,
    /// Print one JSON object per completion: {"token_ids": [...], "text": "..."}.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: GenerateArgs) -> Result<()> {
    let (model, _) = args.model.resolve()?;
    let opts = args.model.load_options(true)?;
    let engine_cfg = args.engine.engine_config(&opts.device, false)?;
    let loaded = load_model(&model, &opts).with_context(|| format!("loading {model}"))?;
    let tokenizer = loaded.tokenizer.clone();
    let chat_template = loaded.meta.chat_template.clone();
    let mut prompts: Vec<Vec<u32>> = Vec::new();
    for p in &args.prompt {
        let ids = if args.chat {
            let src = chat_template
                .as_deref()
                .ok_or_else(|| anyhow!("--chat: this model has no chat template"))?;
            let t = lantern_server::chat_template::ChatTemplate::new(
                src,
                loaded.meta.bos_token.clone(),
                loaded.meta.eos_token.clone(),
            )?;
            let msg = serde_json::json!({"role": "user", "content": p});
            let text = t.render(&[msg], None, true, &serde_json::Map::new())?;
            tokenizer
                .encode(text.as_str(), false)
                .map_err(|e| anyhow!("tokenizing prompt: {e}"))?
        } else {
            tokenizer
                .encode(p.as_str(), true)
                .map_err(|e| anyhow!("tokenizing prompt: {e}"))?
        };
        prompts.push(ids.get_ids().to_vec());
    }
    for p in &args.prompt_ids {
        let ids: std::result::Result<Vec<u32>, _> =
            p.split(',').map(|s| s.trim().parse::<u32>()).collect();
        prompts.push(ids.with_context(|| format!("--prompt-ids `{p}` is not a list of integers"))?);
    }
    if prompts.is_empty() {
        bail!("give at least one --prompt or --prompt-ids");
    }
    let params = GenerationParams {
        sampling: SamplingParams {
            temperature: args.temperature,
            top_k: args.top_k,
            top_p: args.top_p,
            min_p: args.min_p,
            repetition_penalty: args.repetition_penalty,
            presence_penalty: args.presence_penalty,
            frequency_penalty: args.frequency_penalty,
        },
        seed: args.sample_seed,
        max_tokens: Some(args.max_tokens),
        min_tokens: args.min_tokens,
        stop: args.stop.clone(),
        ignore_eos: args.ignore_eos,
        n: args.n,
        ..GenerationParams::default()
    };
    let engine = Engine::start(loaded, engine_cfg).map_err(|e| anyhow!(e))?;
    let handle = engine.handle();
    let params = handle.validate(params)?;
    // Submit everything first so the prompts share steps.
    let mut streams = Vec::new();
    for p in prompts {
        streams.push(handle.submit_blocking(p, params.clone())?);
    }
    for s in streams.iter_mut() {
        let mut outs: Vec<(Vec<u32>, String)> = vec![(Vec::new(), String::new()); args.n];
        while let Some(ev) = s.blocking_next() {
            match ev {
                RequestEvent::Delta(d) => {
                    if let Some(o) = outs.get_mut(d.index) {
                        o.0.extend(d.token_ids);
                        o.1.push_str(&d.text);
                    }
                }
                RequestEvent::Finished { index, text, .. } => {
                    if let Some(o) = outs.get_mut(index) {
                        o.1.push_str(&text);
                    }
                }
                RequestEvent::PromptLogprobs(_) => {}
                RequestEvent::Error(e) => bail!("generation failed: {e}"),
            }
        }
        for (ids, text) in outs {
            if args.json {
                println!("{}", serde_json::json!({"token_ids": ids, "text": text}));
            } else {
                println!("{text}");
            }
        }
    }
    engine.shutdown();
    Ok(())
}
