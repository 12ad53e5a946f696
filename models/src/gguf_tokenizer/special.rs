//! Special tokens: typed tokens registered as added tokens, and the BOS/EOS post-processor.

use tokenizers::processors::template::TemplateProcessing;
use tokenizers::{AddedToken, Tokenizer};

use super::metadata::TokenType;
use super::{build_err, GgufTokenizerError, Result};

/// Registers CONTROL/UNKNOWN tokens as special added tokens and USER_DEFINED ones as plain
/// added tokens; both are matched whole in input text before normalization.
pub(super) fn add_typed_tokens(
    tokenizer: &mut Tokenizer,
    tokens: &[&str],
    types: &[TokenType],
    unk_token_id: Option<u32>,
) -> Result<()> {
    let mut special = Vec::new();
    let mut user_defined = Vec::new();
    for (id, (text, ty)) in tokens.iter().zip(types).enumerate() {
        if text.is_empty() {
            continue;
        }
        let is_unk = unk_token_id.is_some_and(|u| u as usize == id);
        match ty {
            TokenType::Control | TokenType::Unknown => {
                special.push(AddedToken::from((*text).to_string(), true).normalized(false))
            }
            _ if is_unk => {
                special.push(AddedToken::from((*text).to_string(), true).normalized(false))
            }
            TokenType::UserDefined => {
                user_defined.push(AddedToken::from((*text).to_string(), false).normalized(false))
            }
            _ => {}
        }
    }
    if !special.is_empty() {
        tokenizer
            .add_special_tokens(special)
            .map_err(build_err("special tokens"))?;
    }
    if !user_defined.is_empty() {
        tokenizer
            .add_tokens(user_defined)
            .map_err(build_err("user-defined tokens"))?;
    }
    Ok(())
}

/// `<bos> $A [<eos>]` (and the same around `$B`) as Hugging Face's Llama tokenizers do.
pub(super) fn template_processing(
    bos: Option<(&str, u32)>,
    eos: Option<(&str, u32)>,
) -> Result<Option<TemplateProcessing>> {
    if bos.is_none() && eos.is_none() {
        return Ok(None);
    }
    let special = |text: &str, type_id: u32| serde_json::json!({ "SpecialToken": { "id": text, "type_id": type_id } });
    let sequence = |id: &str, type_id: u32| serde_json::json!({ "Sequence": { "id": id, "type_id": type_id } });
    let mut single = Vec::new();
    let mut pair = Vec::new();
    let mut special_tokens = serde_json::Map::new();
    for (seq, type_id) in [("A", 0u32), ("B", 1u32)] {
        let target = if seq == "A" { &mut single } else { &mut pair };
        if let Some((text, _)) = bos {
            target.push(special(text, type_id));
        }
        target.push(sequence(seq, type_id));
        if let Some((text, _)) = eos {
            target.push(special(text, type_id));
        }
    }
    let pair: Vec<_> = single.iter().cloned().chain(pair).collect();
    for (text, id) in [bos, eos].into_iter().flatten() {
        special_tokens.insert(
            text.to_string(),
            serde_json::json!({ "id": text, "ids": [id], "tokens": [text] }),
        );
    }
    let json = serde_json::json!({
        "type": "TemplateProcessing",
        "single": single,
        "pair": pair,
        "special_tokens": special_tokens,
    });
    serde_json::from_value(json)
        .map(Some)
        .map_err(|e| GgufTokenizerError::Build {
            stage: "BOS/EOS post-processor",
            message: e.to_string(),
        })
}
