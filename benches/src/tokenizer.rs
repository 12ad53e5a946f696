//! Where token counts come from: a local `tokenizers` tokenizer, or the server's
//! `POST /tokenize` and `POST /detokenize` (vLLM's shape).

use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use serde_json::json;
use tokenizers::Tokenizer;

use crate::http::{join_url, snippet, HttpClient};

/// Plain English used to collect real token ids when only the server tokenizer is
/// available (random prompts then draw from these ids).
const CORPUS: &str = "The quick brown fox jumps over the lazy dog while a gentle breeze moves \
through the valley. Scientists measured the temperature of the river every morning, and the \
numbers told a story about seasons, rainfall and the slow return of fish to cleaner water. \
In the city, engineers planned new bridges, teachers graded essays about history, and cooks \
prepared soup with carrots, onions, garlic, pepper and fresh bread. Music played from an open \
window; children counted stars, dreamed about oceans, mountains, forests, deserts and distant \
planets. Every question invites another answer: why, how, when, where, what and who? Numbers \
like 1, 2, 3, 42, 100 and 2024 appear beside words such as system, network, memory, energy, \
language, market, garden, window, library, doctor, village, machine, picture and journey.";

/// A tokenizer the benchmark can count with.
pub enum TokenSource {
    /// A local tokenizer (exact, fast).
    Local(Box<Tokenizer>),
    /// The server's `/tokenize` and `/detokenize` routes.
    Server {
        /// Shared HTTP client.
        client: HttpClient,
        /// Server base URL.
        base_url: String,
        /// Model name sent in each call.
        model: String,
    },
}

impl TokenSource {
    /// Loads `spec`: a `tokenizer.json` file, a directory holding one, or a hub id.
    pub async fn load_local(spec: &str) -> Result<Self> {
        let path = Path::new(spec);
        let file = if path.is_file() {
            path.to_path_buf()
        } else if path.is_dir() {
            let f = path.join("tokenizer.json");
            if !f.is_file() {
                bail!("--tokenizer {spec}: the directory has no tokenizer.json");
            }
            f
        } else {
            let id = spec.to_string();
            tokio::task::spawn_blocking(move || -> Result<std::path::PathBuf> {
                let api = hf_hub::api::sync::Api::new().context("starting the hub client")?;
                api.model(id.clone())
                    .get("tokenizer.json")
                    .with_context(|| {
                        format!(
                            "--tokenizer {id}: not a local file or directory, and fetching \
                         tokenizer.json from the hub failed (give a local path offline)"
                        )
                    })
            })
            .await
            .context("hub download task failed")??
        };
        let tok = Tokenizer::from_file(&file)
            .map_err(|e| anyhow!("--tokenizer: cannot load {}: {e}", file.display()))?;
        Ok(TokenSource::Local(Box::new(tok)))
    }

    /// Uses the server's tokenizer routes; fails with a hint when they are missing.
    pub async fn server(client: HttpClient, base_url: &str, model: &str) -> Result<Self> {
        let src = TokenSource::Server {
            client,
            base_url: base_url.to_string(),
            model: model.to_string(),
        };
        src.encode("hello world")
            .await
            .context("no --tokenizer was given and the server's POST /tokenize does not work; pass --tokenizer DIR|FILE|HUB_ID")?;
        Ok(src)
    }

    /// A short description for the report.
    pub fn describe(&self) -> String {
        match self {
            TokenSource::Local(_) => "local".into(),
            TokenSource::Server { base_url, .. } => format!("server {base_url}/tokenize"),
        }
    }

    /// Token ids of `text`, without special tokens.
    pub async fn encode(&self, text: &str) -> Result<Vec<u32>> {
        match self {
            TokenSource::Local(t) => Ok(t
                .encode(text, false)
                .map_err(|e| anyhow!("tokenizing failed: {e}"))?
                .get_ids()
                .to_vec()),
            TokenSource::Server {
                client,
                base_url,
                model,
            } => {
                let url = join_url(base_url, "/tokenize");
                let body = json!({"model": model, "prompt": text, "add_special_tokens": false});
                let (status, bytes) = client.post_json(&url, &body).await?;
                if !status.is_success() {
                    bail!("POST {url} answered {status}: {}", snippet(&bytes));
                }
                let v: serde_json::Value = serde_json::from_slice(&bytes).with_context(|| {
                    format!("POST {url} did not return JSON: {}", snippet(&bytes))
                })?;
                let tokens = v.get("tokens").and_then(|t| t.as_array()).ok_or_else(|| {
                    anyhow!("POST {url} returned no `tokens` array: {}", snippet(&bytes))
                })?;
                tokens
                    .iter()
                    .map(|t| {
                        t.as_u64()
                            .and_then(|x| u32::try_from(x).ok())
                            .ok_or_else(|| anyhow!("POST {url}: token {t} is not a u32"))
                    })
                    .collect()
            }
        }
    }

    /// Text of `ids` (special tokens kept).
    pub async fn decode(&self, ids: &[u32]) -> Result<String> {
        match self {
            TokenSource::Local(t) => t
                .decode(ids, false)
                .map_err(|e| anyhow!("detokenizing failed: {e}")),
            TokenSource::Server {
                client,
                base_url,
                model,
            } => {
                let url = join_url(base_url, "/detokenize");
                let body = json!({"model": model, "tokens": ids});
                let (status, bytes) = client.post_json(&url, &body).await?;
                if !status.is_success() {
                    bail!("POST {url} answered {status}: {}", snippet(&bytes));
                }
                let v: serde_json::Value = serde_json::from_slice(&bytes).with_context(|| {
                    format!("POST {url} did not return JSON: {}", snippet(&bytes))
                })?;
                v.get("prompt")
                    .and_then(|p| p.as_str())
                    .map(str::to_string)
                    .ok_or_else(|| {
                        anyhow!(
                            "POST {url} returned no `prompt` string: {}",
                            snippet(&bytes)
                        )
                    })
            }
        }
    }

    /// Ids random prompts draw from: every non-special id of a local tokenizer, or the
    /// distinct ids of a stock English text for a server tokenizer.
    pub async fn token_pool(&self) -> Result<Vec<u32>> {
        let pool: Vec<u32> = match self {
            TokenSource::Local(t) => {
                let special: std::collections::HashSet<u32> = t
                    .get_added_tokens_decoder()
                    .iter()
                    .filter(|(_, tok)| tok.special)
                    .map(|(id, _)| *id)
                    .collect();
                let n = u32::try_from(t.get_vocab_size(true)).unwrap_or(u32::MAX);
                (0..n)
                    .filter(|id| !special.contains(id) && t.id_to_token(*id).is_some())
                    .collect()
            }
            TokenSource::Server { .. } => {
                let mut ids = self.encode(CORPUS).await?;
                ids.sort_unstable();
                ids.dedup();
                ids
            }
        };
        if pool.is_empty() {
            bail!("the tokenizer has no usable (non-special) token ids");
        }
        Ok(pool)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
pub(crate) fn fixture_tokenizer() -> TokenSource {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../tests/fixtures/tiny-llama/tokenizer.json"
    );
    TokenSource::Local(Box::new(Tokenizer::from_file(path).unwrap()))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn local_pool_excludes_special_tokens() {
        let tok = fixture_tokenizer();
        let pool = tok.token_pool().await.unwrap();
        assert_eq!(pool.len(), 512 - 3);
        assert!(!pool.contains(&0) && !pool.contains(&1) && !pool.contains(&2));
        let ids = tok.encode("hello world").await.unwrap();
        assert_eq!(tok.decode(&ids).await.unwrap(), "hello world");
    }

    #[tokio::test]
    async fn loads_from_dir_and_file() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/fixtures/tiny-llama");
        assert!(TokenSource::load_local(dir).await.is_ok());
        assert!(TokenSource::load_local(&format!("{dir}/tokenizer.json"))
            .await
            .is_ok());
        let missing = concat!(env!("CARGO_MANIFEST_DIR"), "/src");
        assert!(TokenSource::load_local(missing).await.is_err());
    }
}
