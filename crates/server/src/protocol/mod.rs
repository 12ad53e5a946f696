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
            ApiError::bad_request(format!("malformed JSON body: {inner}"), None)
        } else if let Some(field) = missing_field(&inner) {
            ApiError::bad_request(format!("`{field}` is required"), Some(&field))
        } else if path.is_empty() || path == "." {
            // `#[serde(flatten)]` loses the path of errors inside `CommonParams`
            // (`"temperature": "hot"`): parse those fields on their own to name the field.
            common_params_error(body).unwrap_or_else(|| {
                ApiError::bad_request(format!("invalid request body: {inner}"), None)
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
    ApiError::bad_request(format!("invalid value for `{path}`: {inner}"), Some(&field))
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
