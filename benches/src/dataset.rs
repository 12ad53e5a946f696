//! Workloads: random, ShareGPT, prefix-repetition and LoRA request sets with prompt
//! lengths exact in tokens.
//!
//! Token-id prompts are exact by construction. Text prompts go through [`exact_text`]:
//! decode random ids, re-encode, truncate or pad, repeat until the re-encoded length is
//! the target (vLLM's decode-to-target-length idea), restarting with fresh ids when a
//! round trip refuses to settle.

use std::collections::HashMap;

use anyhow::{bail, Context, Result};
use rand::distr::weighted::WeightedIndex;
use rand::distr::Distribution;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use crate::args::{BenchArgs, DatasetKind, LoraDistribution};
use crate::tokenizer::TokenSource;

/// What the server receives as the prompt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Prompt {
    /// Text (completions `prompt: "..."`, or the chat user message).
    Text(String),
    /// Token ids (completions `prompt: [ids]`).
    Tokens(Vec<u32>),
}

/// One request of the workload.
#[derive(Debug, Clone, PartialEq)]
pub struct SampleRequest {
    /// The prompt.
    pub prompt: Prompt,
    /// Prompt length in tokens (exact for generated prompts).
    pub prompt_len: usize,
    /// `max_tokens` to request.
    pub output_len: usize,
    /// Per-request `model` (a LoRA adapter name) overriding `--model`.
    pub model: Option<String>,
    /// Index of the shared prefix (prefix-repetition).
    pub prefix_group: Option<usize>,
}

/// Dataset settings, decoupled from the CLI for tests.
#[derive(Debug, Clone)]
pub struct DatasetConfig {
    /// Workload kind.
    pub kind: DatasetKind,
    /// ShareGPT file.
    pub path: Option<std::path::PathBuf>,
    /// Number of requests.
    pub num_requests: usize,
    /// Random prompt length.
    pub input_len: usize,
    /// Fixed output length (None: dataset default).
    pub output_len: Option<usize>,
    /// Length spread for random prompts.
    pub range_ratio: f64,
    /// Prefix-repetition: number of prefixes.
    pub num_prefixes: usize,
    /// Prefix-repetition: prefix length.
    pub prefix_len: usize,
    /// Prefix-repetition: suffix length.
    pub suffix_len: usize,
    /// LoRA adapters.
    pub lora_models: Vec<String>,
    /// LoRA distribution.
    pub lora_distribution: LoraDistribution,
    /// Zipf exponent.
    pub zipf_exponent: f64,
    /// ShareGPT filter: longest prompt.
    pub sharegpt_max_prompt_len: usize,
    /// ShareGPT filter: longest prompt + reply.
    pub sharegpt_max_total_len: usize,
    /// Emit token-id prompts (completions only).
    pub token_ids: bool,
    /// Seed.
    pub seed: u64,
}

impl DatasetConfig {
    /// Dataset settings from the CLI, for `num_requests` requests seeded with `seed`.
    pub fn from_args(a: &BenchArgs, num_requests: usize, seed: u64) -> Self {
        Self {
            kind: a.dataset,
            path: a.dataset_path.clone(),
            num_requests,
            input_len: a.input_len,
            output_len: a.output_len,
            range_ratio: a.range_ratio,
            num_prefixes: a.num_prefixes,
            prefix_len: a.prefix_len,
            suffix_len: a.suffix_len,
            lora_models: a.lora_models.clone(),
            lora_distribution: a.lora_distribution,
            zipf_exponent: a.lora_zipf_exponent,
            sharegpt_max_prompt_len: a.sharegpt_max_prompt_len,
            sharegpt_max_total_len: a.sharegpt_max_total_len,
            token_ids: a.token_id_prompts(),
            seed,
        }
    }
}

/// Builds the request list.
pub async fn build(cfg: &DatasetConfig, tok: &TokenSource) -> Result<Vec<SampleRequest>> {
    let mut rng = StdRng::seed_from_u64(cfg.seed);
    let mut reqs = match cfg.kind {
        DatasetKind::Random | DatasetKind::Lora => random(cfg, tok, &mut rng).await?,
        DatasetKind::Sharegpt => {
            let path = cfg
                .path
                .as_deref()
                .context("--dataset sharegpt needs --dataset-path FILE (a ShareGPT JSON list)")?;
            let raw = std::fs::read_to_string(path)
                .with_context(|| format!("--dataset-path: cannot read {}", path.display()))?;
            sharegpt(&raw, cfg, tok, &mut rng)
                .await
                .with_context(|| format!("--dataset-path {}", path.display()))?
        }
        DatasetKind::PrefixRepetition => prefix_repetition(cfg, tok, &mut rng).await?,
    };
    if cfg.kind == DatasetKind::Lora && cfg.lora_models.is_empty() {
        bail!("--dataset lora needs --lora-models a,b,c (the adapter names the server knows)");
    }
    if !cfg.lora_models.is_empty() {
        // A separate stream so adapter choice does not shift the prompts.
        let mut lora_rng = StdRng::seed_from_u64(cfg.seed ^ 0x4C6F_5261_0000_0001);
        assign_lora(
            &mut reqs,
            &cfg.lora_models,
            cfg.lora_distribution,
            cfg.zipf_exponent,
            &mut lora_rng,
        )?;
    }
    Ok(reqs)
}

fn sample_ids(pool: &[u32], n: usize, rng: &mut StdRng) -> Vec<u32> {
    (0..n)
        .map(|_| pool[rng.random_range(0..pool.len())])
        .collect()
}

/// Inclusive length bounds `[floor(len*(1-r)), ceil(len*(1+r))]`, at least `min`.
fn length_bounds(len: usize, r: f64, min: usize) -> (usize, usize) {
    let lo = (len as f64 * (1.0 - r)).floor() as usize;
    let hi = (len as f64 * (1.0 + r)).ceil() as usize;
    (lo.max(min), hi.max(min))
}

const MAX_ROUNDS: usize = 24;
const MAX_RESTARTS: usize = 16;

/// Text whose tokenization is exactly `prefix_ids` followed by `n` more tokens.
/// `prefix_text` must be the text of `prefix_ids` (as returned by an earlier call with an
/// empty prefix). Returns the text and its ids.
pub async fn exact_text(
    tok: &TokenSource,
    pool: &[u32],
    rng: &mut StdRng,
    prefix_text: &str,
    prefix_ids: &[u32],
    n: usize,
) -> Result<(String, Vec<u32>)> {
    let p = prefix_ids.len();
    let mut last_len = 0;
    for _ in 0..MAX_RESTARTS {
        let mut suffix = sample_ids(pool, n, rng);
        for _ in 0..MAX_ROUNDS {
            let mut all = prefix_ids.to_vec();
            all.extend_from_slice(&suffix);
            let text = tok.decode(&all).await?;
            if !text.starts_with(prefix_text) {
                break;
            }
            let ids = tok.encode(&text).await?;
            last_len = ids.len();
            if ids.len() < p || ids[..p] != *prefix_ids {
                break;
            }
            if ids.len() == p + n {
                return Ok((text, ids));
            }
            suffix = ids[p..].to_vec();
            if suffix.len() > n {
                suffix.truncate(n);
            } else {
                let missing = n - suffix.len();
                suffix.extend(sample_ids(pool, missing, rng));
            }
        }
    }
    bail!(
        "could not build a text prompt of exactly {} tokens with this tokenizer (last try: {last_len}); \
         use token-id prompts (--endpoint completions without --text-prompts)",
        p + n
    )
}

async fn make_prompt(
    cfg: &DatasetConfig,
    tok: &TokenSource,
    pool: &[u32],
    rng: &mut StdRng,
    prefix: Option<(&str, &[u32])>,
    n: usize,
) -> Result<(Prompt, usize)> {
    let (prefix_text, prefix_ids) = prefix.unwrap_or(("", &[]));
    if cfg.token_ids {
        let mut ids = prefix_ids.to_vec();
        ids.extend(sample_ids(pool, n, rng));
        let len = ids.len();
        Ok((Prompt::Tokens(ids), len))
    } else {
        let (text, ids) = exact_text(tok, pool, rng, prefix_text, prefix_ids, n).await?;
        Ok((Prompt::Text(text), ids.len()))
    }
}

async fn random(
    cfg: &DatasetConfig,
    tok: &TokenSource,
    rng: &mut StdRng,
) -> Result<Vec<SampleRequest>> {
    if cfg.input_len == 0 {
        bail!("--input-len must be >= 1");
    }
    let pool = tok.token_pool().await?;
    let (in_lo, in_hi) = length_bounds(cfg.input_len, cfg.range_ratio, 1);
    let (out_lo, out_hi) = length_bounds(cfg.output_len.unwrap_or(128), cfg.range_ratio, 1);
    let mut out = Vec::with_capacity(cfg.num_requests);
    for _ in 0..cfg.num_requests {
        let in_len = rng.random_range(in_lo..=in_hi);
        let out_len = rng.random_range(out_lo..=out_hi);
        let (prompt, prompt_len) = make_prompt(cfg, tok, &pool, rng, None, in_len).await?;
        out.push(SampleRequest {
            prompt,
            prompt_len,
            output_len: out_len,
            model: None,
            prefix_group: None,
        });
    }
    Ok(out)
}

async fn prefix_repetition(
    cfg: &DatasetConfig,
    tok: &TokenSource,
    rng: &mut StdRng,
) -> Result<Vec<SampleRequest>> {
    if cfg.num_prefixes == 0 {
        bail!("--num-prefixes must be >= 1");
    }
    if cfg.prefix_len + cfg.suffix_len == 0 {
        bail!("--prefix-len + --suffix-len must be >= 1");
    }
    let pool = tok.token_pool().await?;
    let mut prefixes = Vec::with_capacity(cfg.num_prefixes);
    for _ in 0..cfg.num_prefixes {
        if cfg.token_ids {
            prefixes.push((String::new(), sample_ids(&pool, cfg.prefix_len, rng)));
        } else {
            prefixes.push(exact_text(tok, &pool, rng, "", &[], cfg.prefix_len).await?);
        }
    }
    let output_len = cfg.output_len.unwrap_or(128);
    let mut out = Vec::with_capacity(cfg.num_requests);
    for i in 0..cfg.num_requests {
        let g = i % cfg.num_prefixes;
        let (text, ids) = &prefixes[g];
        let (prompt, prompt_len) = make_prompt(
            cfg,
            tok,
            &pool,
            rng,
            Some((text.as_str(), ids.as_slice())),
            cfg.suffix_len,
        )
        .await?;
        out.push(SampleRequest {
            prompt,
            prompt_len,
            output_len,
            model: None,
            prefix_group: Some(g),
        });
    }
    out.shuffle(rng);
    Ok(out)
}

/// A (prompt, reply) pair from a ShareGPT file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharegptPair {
    /// First human turn.
    pub prompt: String,
    /// First gpt reply after it.
    pub completion: String,
}

#[derive(Deserialize)]
struct Turn {
    #[serde(alias = "role")]
    from: String,
    #[serde(alias = "content")]
    value: String,
}

#[derive(Deserialize)]
struct Conversation {
    #[serde(alias = "conversation", alias = "messages", default)]
    conversations: Vec<Turn>,
}

/// Parses a ShareGPT JSON list into (first human turn, first gpt reply) pairs; entries
/// without both are skipped.
pub fn parse_sharegpt(raw: &str) -> Result<Vec<SharegptPair>> {
    let convs: Vec<Conversation> = serde_json::from_str(raw)
        .context("not a ShareGPT file: expected a JSON list of {\"conversations\": [{\"from\", \"value\"}, ...]}")?;
    let is_human = |f: &str| matches!(f, "human" | "user");
    let is_gpt = |f: &str| matches!(f, "gpt" | "assistant" | "chatgpt" | "bard" | "bing");
    Ok(convs
        .into_iter()
        .filter_map(|c| {
            let h = c.conversations.iter().position(|t| is_human(&t.from))?;
            let g = c.conversations[h + 1..].iter().find(|t| is_gpt(&t.from))?;
            Some(SharegptPair {
                prompt: c.conversations[h].value.clone(),
                completion: g.value.clone(),
            })
        })
        .collect())
}

async fn sharegpt(
    raw: &str,
    cfg: &DatasetConfig,
    tok: &TokenSource,
    rng: &mut StdRng,
) -> Result<Vec<SampleRequest>> {
    let mut pairs = parse_sharegpt(raw)?;
    if pairs.is_empty() {
        bail!("no conversation has a human turn followed by a gpt reply");
    }
    pairs.shuffle(rng);
    let mut out = Vec::with_capacity(cfg.num_requests);
    for pair in &pairs {
        if out.len() == cfg.num_requests {
            break;
        }
        let prompt_len = tok.encode(&pair.prompt).await?.len();
        let output_len = match cfg.output_len {
            Some(n) => n,
            None => tok.encode(&pair.completion).await?.len(),
        };
        // vLLM's filter: drop very short pairs, and over-long ones unless the output
        // length is fixed by the user.
        if prompt_len < 4 || (cfg.output_len.is_none() && output_len < 4) {
            continue;
        }
        if cfg.output_len.is_none()
            && (prompt_len > cfg.sharegpt_max_prompt_len
                || prompt_len + output_len > cfg.sharegpt_max_total_len)
        {
            continue;
        }
        out.push(SampleRequest {
            prompt: Prompt::Text(pair.prompt.clone()),
            prompt_len,
            output_len,
            model: None,
            prefix_group: None,
        });
    }
    if out.is_empty() {
        bail!("every conversation was filtered out (prompt < 4 tokens or longer than the ShareGPT limits)");
    }
    // Oversample (repeat) like vLLM when the file has too few usable pairs.
    if out.len() < cfg.num_requests {
        tracing::warn!(
            have = out.len(),
            want = cfg.num_requests,
            "ShareGPT has fewer usable conversations than --num-prompts; repeating some"
        );
        let have = out.len();
        for i in 0..cfg.num_requests - have {
            out.push(out[i % have].clone());
        }
    }
    Ok(out)
}

/// Sets each request's `model` to an adapter drawn from `models`.
pub fn assign_lora(
    reqs: &mut [SampleRequest],
    models: &[String],
    dist: LoraDistribution,
    s: f64,
    rng: &mut StdRng,
) -> Result<()> {
    if models.is_empty() {
        bail!("--lora-models is empty");
    }
    let weights: Vec<f64> = match dist {
        LoraDistribution::Uniform => vec![1.0; models.len()],
        LoraDistribution::Zipf => (0..models.len())
            .map(|i| 1.0 / ((i + 1) as f64).powf(s))
            .collect(),
    };
    let w = WeightedIndex::new(&weights)
        .context("invalid LoRA weights (is --lora-zipf-exponent finite?)")?;
    for r in reqs {
        r.model = Some(models[w.sample(rng)].clone());
    }
    Ok(())
}

/// How many requests each adapter got (for the report).
pub fn lora_counts(reqs: &[SampleRequest]) -> HashMap<String, usize> {
    let mut m = HashMap::new();
    for r in reqs {
        if let Some(name) = &r.model {
            *m.entry(name.clone()).or_insert(0) += 1;
        }
    }
    m
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::tokenizer::fixture_tokenizer;

    fn cfg(kind: DatasetKind) -> DatasetConfig {
        DatasetConfig {
            kind,
            path: None,
            num_requests: 12,
            input_len: 40,
            output_len: Some(16),
            range_ratio: 0.0,
            num_prefixes: 3,
            prefix_len: 24,
            suffix_len: 10,
            lora_models: vec![],
            lora_distribution: LoraDistribution::Uniform,
            zipf_exponent: 1.0,
            sharegpt_max_prompt_len: 1024,
            sharegpt_max_total_len: 2048,
            token_ids: false,
            seed: 7,
        }
    }

    #[tokio::test]
    async fn random_text_prompts_have_exact_token_lengths() {
        let tok = fixture_tokenizer();
        let mut c = cfg(DatasetKind::Random);
        c.range_ratio = 0.5;
        c.num_requests = 40;
        let reqs = build(&c, &tok).await.unwrap();
        assert_eq!(reqs.len(), 40);
        let mut lens = std::collections::HashSet::new();
        for r in &reqs {
            let Prompt::Text(t) = &r.prompt else {
                panic!("want text")
            };
            assert_eq!(tok.encode(t).await.unwrap().len(), r.prompt_len);
            assert!((20..=60).contains(&r.prompt_len), "{}", r.prompt_len);
            assert!((8..=24).contains(&r.output_len));
            lens.insert(r.prompt_len);
        }
        assert!(lens.len() > 5, "range ratio spreads lengths");
    }

    #[tokio::test]
    async fn many_lengths_converge_exactly() {
        let tok = fixture_tokenizer();
        let pool = tok.token_pool().await.unwrap();
        let mut rng = StdRng::seed_from_u64(3);
        for n in (1..200).step_by(7) {
            let (text, ids) = exact_text(&tok, &pool, &mut rng, "", &[], n).await.unwrap();
            assert_eq!(ids.len(), n);
            assert_eq!(tok.encode(&text).await.unwrap(), ids);
        }
    }

    #[tokio::test]
    async fn random_token_prompts_and_seed_determinism() {
        let tok = fixture_tokenizer();
        let mut c = cfg(DatasetKind::Random);
        c.token_ids = true;
        let a = build(&c, &tok).await.unwrap();
        let b = build(&c, &tok).await.unwrap();
        assert_eq!(a, b);
        for r in &a {
            let Prompt::Tokens(ids) = &r.prompt else {
                panic!("want ids")
            };
            assert_eq!(ids.len(), 40);
            assert!(ids.iter().all(|i| (3..512).contains(i)));
        }
        c.seed = 8;
        assert_ne!(build(&c, &tok).await.unwrap(), a);
    }

    /// Real tokenizers checked into the repo: byte-level (Llama 3, Qwen3) and
    /// SentencePiece with `▁` spaces and byte fallback (Llama 2).
    #[tokio::test]
    async fn exact_text_lengths_with_real_tokenizers() {
        for name in ["llama2", "llama3", "qwen3"] {
            let path = format!(
                "{}/../tests/data/tokenizers/{name}/tokenizer.json",
                env!("CARGO_MANIFEST_DIR")
            );
            let tok = TokenSource::load_local(&path).await.unwrap();
            let pool = tok.token_pool().await.unwrap();
            let mut rng = StdRng::seed_from_u64(11);
            for n in [1, 2, 5, 17, 64, 300] {
                let (text, ids) = exact_text(&tok, &pool, &mut rng, "", &[], n).await.unwrap();
                assert_eq!(tok.encode(&text).await.unwrap().len(), n, "{name} n={n}");
                assert_eq!(ids.len(), n);
            }
            // Prefix sharing holds in text form too.
            let (ptext, pids) = exact_text(&tok, &pool, &mut rng, "", &[], 32)
                .await
                .unwrap();
            for _ in 0..4 {
                let (text, ids) = exact_text(&tok, &pool, &mut rng, &ptext, &pids, 20)
                    .await
                    .unwrap();
                assert!(text.starts_with(&ptext));
                let again = tok.encode(&text).await.unwrap();
                assert_eq!(again.len(), 52, "{name}");
                assert_eq!(again[..32], pids[..], "{name}");
                assert_eq!(again, ids);
            }
        }
    }

    async fn check_prefix_sharing(token_ids: bool) {
        let tok = fixture_tokenizer();
        let mut c = cfg(DatasetKind::PrefixRepetition);
        c.token_ids = token_ids;
        let reqs = build(&c, &tok).await.unwrap();
        assert_eq!(reqs.len(), 12);
        let mut by_group: HashMap<usize, Vec<Vec<u32>>> = HashMap::new();
        for r in &reqs {
            let ids = match &r.prompt {
                Prompt::Tokens(ids) => ids.clone(),
                Prompt::Text(t) => tok.encode(t).await.unwrap(),
            };
            assert_eq!(ids.len(), 34);
            assert_eq!(r.prompt_len, 34);
            by_group
                .entry(r.prefix_group.unwrap())
                .or_default()
                .push(ids);
        }
        assert_eq!(by_group.len(), 3);
        let firsts: Vec<Vec<u32>> = by_group.values().map(|v| v[0][..24].to_vec()).collect();
        for (g, group) in &by_group {
            assert_eq!(group.len(), 4, "group {g}");
            for ids in group {
                assert_eq!(ids[..24], group[0][..24], "same prefix in group {g}");
            }
            // Suffixes differ.
            assert_ne!(group[0][24..], group[1][24..]);
        }
        // Different groups have different prefixes.
        assert_ne!(firsts[0], firsts[1]);
        assert_ne!(firsts[1], firsts[2]);
    }

    #[tokio::test]
    async fn prefix_repetition_shares_exact_prefixes_text() {
        check_prefix_sharing(false).await;
    }

    #[tokio::test]
    async fn prefix_repetition_shares_exact_prefixes_ids() {
        check_prefix_sharing(true).await;
    }

    const SHAREGPT: &str = r#"[
      {"id": "a", "conversations": [
        {"from": "human", "value": "What is the capital city of France, and why is it famous?"},
        {"from": "gpt", "value": "Paris is the capital of France. It is famous for art, food and the Eiffel Tower."},
        {"from": "human", "value": "thanks"}]},
      {"id": "b", "conversations": [{"from": "human", "value": "only a question"}]},
      {"id": "c", "conversations": [
        {"from": "system", "value": "be nice"},
        {"from": "human", "value": "Tell me a long story about a brave little robot."},
        {"from": "gpt", "value": "Once upon a time a tiny robot named Bolt wanted to see the sea."}]},
      {"id": "d", "conversations": [
        {"from": "human", "value": "hi"},
        {"from": "gpt", "value": "Hello there, how can I help you today?"}]}
    ]"#;

    #[test]
    fn parses_sharegpt_pairs() {
        let pairs = parse_sharegpt(SHAREGPT).unwrap();
        assert_eq!(pairs.len(), 3);
        assert!(pairs[0].prompt.starts_with("What is the capital"));
        assert!(pairs[0].completion.starts_with("Paris"));
        assert!(pairs[1].prompt.starts_with("Tell me"));
        assert!(parse_sharegpt("{\"not\": \"a list\"}").is_err());
    }

    #[tokio::test]
    async fn sharegpt_lengths_and_filter() {
        let tok = fixture_tokenizer();
        let mut c = cfg(DatasetKind::Sharegpt);
        c.output_len = None;
        c.num_requests = 2;
        let mut rng = StdRng::seed_from_u64(1);
        let reqs = sharegpt(SHAREGPT, &c, &tok, &mut rng).await.unwrap();
        assert_eq!(reqs.len(), 2);
        for r in &reqs {
            let Prompt::Text(t) = &r.prompt else { panic!() };
            // "hi" (< 4 tokens) is filtered out.
            assert_ne!(t, "hi");
            assert_eq!(r.prompt_len, tok.encode(t).await.unwrap().len());
            let pairs = parse_sharegpt(SHAREGPT).unwrap();
            let pair = pairs.iter().find(|p| &p.prompt == t).unwrap();
            assert_eq!(
                r.output_len,
                tok.encode(&pair.completion).await.unwrap().len()
            );
        }
        // Fixed output length overrides; oversampling fills up to num_requests.
        c.output_len = Some(5);
        c.num_requests = 7;
        let reqs = sharegpt(SHAREGPT, &c, &tok, &mut rng).await.unwrap();
        assert_eq!(reqs.len(), 7);
        assert!(reqs.iter().all(|r| r.output_len == 5));
    }

    #[tokio::test]
    async fn lora_assignment_uniform_and_zipf() {
        let tok = fixture_tokenizer();
        let mut c = cfg(DatasetKind::Lora);
        c.token_ids = true;
        c.input_len = 4;
        c.num_requests = 3000;
        c.lora_models = vec!["a".into(), "b".into(), "c".into()];
        let reqs = build(&c, &tok).await.unwrap();
        let counts = lora_counts(&reqs);
        for name in ["a", "b", "c"] {
            let n = counts[name] as f64;
            assert!((n - 1000.0).abs() < 120.0, "{name}: {n}");
        }
        c.lora_distribution = LoraDistribution::Zipf;
        let reqs = build(&c, &tok).await.unwrap();
        let counts = lora_counts(&reqs);
        // weights 1, 1/2, 1/3 -> 6/11, 3/11, 2/11
        let expect = [
            ("a", 3000.0 * 6.0 / 11.0),
            ("b", 3000.0 * 3.0 / 11.0),
            ("c", 3000.0 * 2.0 / 11.0),
        ];
        for (name, e) in expect {
            let n = counts[name] as f64;
            assert!((n - e).abs() < 0.1 * e, "{name}: {n} vs {e}");
        }
        c.lora_models.clear();
        assert!(build(&c, &tok).await.is_err());
    }
}
