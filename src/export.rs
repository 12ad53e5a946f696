//! `lantern export-tokenizer`: writes a model's tokenizer as a Hugging Face tokenizer
//! directory (`tokenizer.json` + `tokenizer_config.json`), e.g. to point a benchmark client
//! such as aiperf or `vllm bench serve` at the tokenizer of a GGUF model.

use crate::common::ModelArgs;
use anyhow::{anyhow, Context, Result};
use clap::Args;
use lantern_models::load_model;
use std::path::PathBuf;

#[derive(Debug, Args)]
pub struct ExportTokenizerArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Output directory (created if missing).
    #[arg(long)]
    pub out: PathBuf,
}

pub fn run(args: ExportTokenizerArgs) -> Result<()> {
    let (model, _) = args.model.resolve()?;
    let loaded = load_model(&model, &args.model.load_options(false)?)
        .with_context(|| format!("loading {model}"))?;
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    let tok_path = args.out.join("tokenizer.json");
    loaded
        .tokenizer
        .save(&tok_path, false)
        .map_err(|e| anyhow!("writing {}: {e}", tok_path.display()))?;
    let meta = &loaded.meta;
    let cfg = serde_json::json!({
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": meta.bos_token,
        "eos_token": meta.eos_token,
        "chat_template": meta.chat_template,
        "model_max_length": meta.config.max_position_embeddings,
        "clean_up_tokenization_spaces": false,
    });
    let cfg_path = args.out.join("tokenizer_config.json");
    std::fs::write(&cfg_path, serde_json::to_string_pretty(&cfg)?)
        .with_context(|| format!("writing {}", cfg_path.display()))?;
    println!("{}", args.out.display());
    Ok(())
}
