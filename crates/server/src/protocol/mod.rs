//! The OpenAI wire format: request bodies ([`request`]) and response bodies and stream
//! chunks ([`response`]), all typed so the JSON is greppable and checked by the compiler.
//! Requests are parsed with the path of any type error, so a 400 names the field.

pub mod request;
pub mod response;

pub use request::*;
pub use response::*;

use crate::error::ApiError;
use serde::de::DeserializeOwned;

/// Parses a JSON body; errors name the offending field.
pub fn parse_body<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    let de = &mut serde_json::Deserializer::from_slice(body);
    let value = serde_path_to_error::deserialize(&mut *de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if inner.is_syntax() || inner.is_eof() {
            ApiError::bad_request(format!("malformed JSON body: {}", plain(&inner)), None)
        } else if let Some(field) = missing_field(&inner) {
            ApiError::bad_request(format!("`{field}` is required"), Some(&field))
        } else if path.is_empty() || path == "." {
            // `#[serde(flatten)]` loses the path of errors inside `CommonParams`
            // (`"temperature": "hot"`): parse those fields on their own to name the field.
            common_params_error(body).unwrap_or_else(|| {
                ApiError::bad_request(format!("invalid request body: {}", plain(&inner)), None)
            })
        } else {
            field_error(&path, &inner)
        }
    })?;
    // Strict: nothing but whitespace may follow the JSON document.
    de.end().map_err(|e| {
        ApiError::bad_request(
            format!("malformed JSON body: unexpected data after the JSON document ({e})"),
            None,
        )
    })?;
    Ok(value)
}

/// The field a "missing field `x`" error names.
fn missing_field(e: &serde_json::Error) -> Option<String> {
    let msg = e.to_string();
    let rest = msg.strip_prefix("missing field `")?;
    Some(rest.split('`').next()?.to_string())
}

fn field_error(path: &str, inner: &serde_json::Error) -> ApiError {
    let field = path.split(['.', '[']).next().unwrap_or(path).to_string();
    ApiError::bad_request(
        format!("invalid value for `{path}`: {}", plain(inner)),
        Some(&field),
    )
}

/// The error of the shared sampling fields of `body`, if one of them has a bad value.
fn common_params_error(body: &[u8]) -> Option<ApiError> {
    let de = &mut serde_json::Deserializer::from_slice(body);
    let e = serde_path_to_error::deserialize::<_, CommonParams>(de).err()?;
    let path = e.path().to_string();
    if path.is_empty() || path == "." {
        return None;
    }
    Some(field_error(&path, e.inner()))
}

/// A serde error in the client's words: Rust type names (`u32`, `struct ChatRequest`,
/// `untagged enum …`) become JSON ones.
fn plain(e: &serde_json::Error) -> String {
    humanize(&e.to_string())
}

fn humanize(msg: &str) -> String {
    const UNTAGGED: &str = "data did not match any variant of untagged enum ";
    if let Some(at) = msg.find(UNTAGGED) {
        let rest = &msg[at + UNTAGGED.len()..];
        let tail = rest.find(' ').map(|i| &rest[i..]).unwrap_or("");
        return format!(
            "{}the value has none of the accepted forms{tail}",
            &msg[..at]
        );
    }
    let Some(at) = msg.find("expected ") else {
        return msg.to_string();
    };
    let (head, rest) = msg.split_at(at + "expected ".len());
    let word_end = rest
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(rest.len());
    let (word, tail) = rest.split_at(word_end);
    let replacement = match word {
        "u8" => "an integer from 0 to 255",
        "u16" => "an integer from 0 to 65535",
        "u32" => "an integer from 0 to 4294967295",
        "u64" | "usize" | "u128" => "a non-negative integer",
        "i8" | "i16" | "i32" | "i64" | "isize" | "i128" => "an integer",
        "f32" | "f64" => "a number",
        "struct" | "map" => {
            // `struct Name` / `map`: drop the type name that follows.
            let tail = tail.strip_prefix(' ').map_or(tail, |t| {
                let n = t
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .unwrap_or(t.len());
                if word == "struct" {
                    &t[n..]
                } else {
                    tail
                }
            });
            return format!("{head}an object{tail}");
        }
        "enum" => {
            let t = tail.strip_prefix(' ').unwrap_or(tail);
            let n = t
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(t.len());
            return format!("{head}one of the accepted values{}", &t[n..]);
        }
        "a" if tail.starts_with(" sequence") => {
            return format!("{head}an array{}", &tail[" sequence".len()..]);
        }
        "a" if tail.starts_with(" map") => {
            return format!("{head}an object{}", &tail[" map".len()..]);
        }
        _ => return msg.to_string(),
    };
    format!("{head}{replacement}{tail}")
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod humanize_tests {
    use super::humanize;

    #[test]
    fn rust_type_names_become_json_ones() {
        for (serde, ours) in [
            (
                "invalid type: string \"hot\", expected f32 at line 1 column 20",
                "invalid type: string \"hot\", expected a number at line 1 column 20",
            ),
            (
                "invalid value: integer `-1`, expected u32",
                "invalid value: integer `-1`, expected an integer from 0 to 4294967295",
            ),
            (
                "invalid type: integer `3`, expected struct StreamOptions",
                "invalid type: integer `3`, expected an object",
            ),
            (
                "invalid type: string \"x\", expected a sequence",
                "invalid type: string \"x\", expected an array",
            ),
            (
                "data did not match any variant of untagged enum TokenizeRequest",
                "the value has none of the accepted forms",
            ),
            (
                "invalid type: null, expected usize",
                "invalid type: null, expected a non-negative integer",
            ),
            (
                "invalid type: map, expected a string",
                "invalid type: map, expected a string",
            ),
        ] {
            assert_eq!(humanize(serde), ours, "{serde}");
        }
    }
}
