//! Typed access to the `tokenizer.ggml.*` metadata values, and llama.cpp's token types.

use std::collections::HashMap;

use candle_core::quantized::gguf_file::Value;

use super::{GgufTokenizerError, Result, KEY_TOKEN_TYPE};

/// llama.cpp's `llama_token_type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum TokenType {
    Normal,
    Unknown,
    Control,
    UserDefined,
    Unused,
    Byte,
    Undefined,
}

impl TokenType {
    pub(super) fn from_i64(v: i64) -> Self {
        match v {
            1 => Self::Normal,
            2 => Self::Unknown,
            3 => Self::Control,
            4 => Self::UserDefined,
            5 => Self::Unused,
            6 => Self::Byte,
            _ => Self::Undefined,
        }
    }
}

pub(super) fn type_name(v: &Value) -> String {
    match v {
        Value::Array(items) => match items.first() {
            Some(first) => format!("an array of {:?}", first.value_type()),
            None => "an empty array".to_string(),
        },
        other => format!("{:?}", other.value_type()),
    }
}

pub(super) fn optional_str<'a>(
    md: &'a HashMap<String, Value>,
    key: &'static str,
) -> Result<Option<&'a str>> {
    match md.get(key) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.as_str())),
        Some(other) => Err(GgufTokenizerError::WrongType {
            key,
            expected: "a string",
            found: type_name(other),
        }),
    }
}

pub(super) fn required_str<'a>(
    md: &'a HashMap<String, Value>,
    key: &'static str,
    hint: &'static str,
) -> Result<&'a str> {
    optional_str(md, key)?.ok_or(GgufTokenizerError::MissingKey { key, hint })
}

pub(super) fn value_as_i64(v: &Value) -> Option<i64> {
    match *v {
        Value::U8(x) => Some(i64::from(x)),
        Value::I8(x) => Some(i64::from(x)),
        Value::U16(x) => Some(i64::from(x)),
        Value::I16(x) => Some(i64::from(x)),
        Value::U32(x) => Some(i64::from(x)),
        Value::I32(x) => Some(i64::from(x)),
        Value::U64(x) => i64::try_from(x).ok(),
        Value::I64(x) => Some(x),
        _ => None,
    }
}

pub(super) fn optional_bool(
    md: &HashMap<String, Value>,
    key: &'static str,
) -> Result<Option<bool>> {
    match md.get(key) {
        None => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(other) => match value_as_i64(other) {
            Some(0) => Ok(Some(false)),
            Some(1) => Ok(Some(true)),
            _ => Err(GgufTokenizerError::WrongType {
                key,
                expected: "a bool",
                found: type_name(other),
            }),
        },
    }
}

/// A token id key; a negative id (llama.cpp's "none") reads as absent.
pub(super) fn token_id(
    md: &HashMap<String, Value>,
    key: &'static str,
    n_tokens: usize,
) -> Result<Option<u32>> {
    let Some(v) = md.get(key) else {
        return Ok(None);
    };
    let raw = value_as_i64(v).ok_or_else(|| GgufTokenizerError::WrongType {
        key,
        expected: "an integer token id",
        found: type_name(v),
    })?;
    if raw < 0 {
        return Ok(None);
    }
    match u32::try_from(raw) {
        Ok(id) if (id as usize) < n_tokens => Ok(Some(id)),
        _ => Err(GgufTokenizerError::Inconsistent {
            key,
            reason: format!("token id {raw} is outside the vocabulary of {n_tokens} tokens"),
        }),
    }
}

pub(super) fn array<'a>(
    md: &'a HashMap<String, Value>,
    key: &'static str,
) -> Result<Option<&'a [Value]>> {
    match md.get(key) {
        None => Ok(None),
        Some(Value::Array(items)) => Ok(Some(items.as_slice())),
        Some(other) => Err(GgufTokenizerError::WrongType {
            key,
            expected: "an array",
            found: type_name(other),
        }),
    }
}

pub(super) fn string_array<'a>(
    md: &'a HashMap<String, Value>,
    key: &'static str,
) -> Result<Option<Vec<&'a str>>> {
    let Some(items) = array(md, key)? else {
        return Ok(None);
    };
    items
        .iter()
        .enumerate()
        .map(|(i, v)| match v {
            Value::String(s) => Ok(s.as_str()),
            other => Err(GgufTokenizerError::WrongType {
                key,
                expected: "an array of strings",
                found: format!("element {i} of type {}", type_name(other)),
            }),
        })
        .collect::<Result<Vec<_>>>()
        .map(Some)
}

pub(super) fn f32_array(
    md: &HashMap<String, Value>,
    key: &'static str,
) -> Result<Option<Vec<f32>>> {
    let Some(items) = array(md, key)? else {
        return Ok(None);
    };
    items
        .iter()
        .enumerate()
        .map(|(i, v)| match *v {
            Value::F32(x) => Ok(x),
            // Narrowing is fine: scores only order merges.
            #[allow(clippy::cast_possible_truncation)]
            Value::F64(x) => Ok(x as f32),
            ref other => Err(GgufTokenizerError::WrongType {
                key,
                expected: "an array of f32",
                found: format!("element {i} of type {}", type_name(other)),
            }),
        })
        .collect::<Result<Vec<_>>>()
        .map(Some)
}

/// `tokenizer.ggml.token_type`, or all-normal when absent.
pub(super) fn token_types(md: &HashMap<String, Value>, n_tokens: usize) -> Result<Vec<TokenType>> {
    let Some(items) = array(md, KEY_TOKEN_TYPE)? else {
        return Ok(vec![TokenType::Normal; n_tokens]);
    };
    if items.len() != n_tokens {
        return Err(GgufTokenizerError::Inconsistent {
            key: KEY_TOKEN_TYPE,
            reason: format!("{} token types for {n_tokens} tokens", items.len()),
        });
    }
    items
        .iter()
        .enumerate()
        .map(|(i, v)| {
            value_as_i64(v)
                .map(TokenType::from_i64)
                .ok_or_else(|| GgufTokenizerError::WrongType {
                    key: KEY_TOKEN_TYPE,
                    expected: "an array of integers",
                    found: format!("element {i} of type {}", type_name(v)),
                })
        })
        .collect()
}
