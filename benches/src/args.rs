//! Command-line arguments of `lantern bench` (a `clap::Args` struct the binary mounts).

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use clap::{Args, ValueEnum};
use serde::{Deserialize, Serialize};

/// Which OpenAI route the benchmark drives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Endpoint {
    /// `POST /v1/completions` (prompt as text or token ids).
    Completions,
    /// `POST /v1/chat/completions` (prompt as one user message).
    Chat,
}

impl Endpoint {
    /// The request path under the base URL.
    pub fn path(self) -> &'static str {
        match self {
            Endpoint::Completions => "/v1/completions",
            Endpoint::Chat => "/v1/chat/completions",
        }
    }
}

/// `--structured-output`: what every request's output is constrained to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StructuredPreset {
    /// `response_format: json_schema` with --json-schema FILE, or a built-in schema (an
    /// object with a long array of short strings, so outputs run to `--output-len`).
    JsonSchema,
    /// `response_format: {"type": "json_object"}`.
    JsonObject,
    /// vLLM's `structured_outputs: {"regex": ...}`: lines of lowercase words.
    Regex,
    /// vLLM's `structured_outputs: {"choice": [...]}`.
    Choice,
}

/// Which workload to generate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DatasetKind {
    /// Random tokens of `--input-len` (± `--range-ratio`) with `--output-len` outputs.
    Random,
    /// ShareGPT conversations from `--dataset-path` (first human turn, first gpt reply).
    Sharegpt,
    /// `--num-prefixes` shared prefixes of `--prefix-len` tokens, each followed by a
    /// random `--suffix-len` token suffix: exercises the prefix cache.
    PrefixRepetition,
    /// Random prompts spread over the adapters of `--lora-models`.
    Lora,
}

/// How LoRA adapters are picked per request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LoraDistribution {
    /// Every adapter equally likely.
    Uniform,
    /// Adapter `i` (0-based, in `--lora-models` order) with weight `1/(i+1)^s`,
    /// `s` = `--lora-zipf-exponent`.
    Zipf,
}

/// Request arrival rate: a finite rate in requests per second, or `inf` (all at once).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum RequestRate {
    /// Every request is sent at time zero.
    Infinite,
    /// Mean arrivals per second.
    PerSecond(f64),
}

impl FromStr for RequestRate {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim().to_ascii_lowercase();
        if t == "inf" || t == "infinity" {
            return Ok(RequestRate::Infinite);
        }
        let v: f64 = t.parse().map_err(|_| {
            format!("`--request-rate` must be a positive number or `inf`, got `{s}`")
        })?;
        if v.is_infinite() && v > 0.0 {
            return Ok(RequestRate::Infinite);
        }
        if !(v.is_finite() && v > 0.0) {
            return Err(format!("`--request-rate` must be > 0 or `inf`, got `{s}`"));
        }
        Ok(RequestRate::PerSecond(v))
    }
}

impl fmt::Display for RequestRate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RequestRate::Infinite => write!(f, "inf"),
            RequestRate::PerSecond(r) => write!(f, "{r}"),
        }
    }
}

impl Serialize for RequestRate {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            RequestRate::Infinite => s.serialize_str("inf"),
            RequestRate::PerSecond(r) => s.serialize_f64(*r),
        }
    }
}

/// Service-level objectives for goodput, in milliseconds. A request is "good" when it
/// meets every objective that is set.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Slo {
    /// Time to first token bound (ms).
    pub ttft_ms: Option<f64>,
    /// Time per output token bound (ms).
    pub tpot_ms: Option<f64>,
    /// End-to-end latency bound (ms).
    pub e2el_ms: Option<f64>,
}

impl FromStr for Slo {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut slo = Slo::default();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (key, value) = part
                .split_once(['=', ':'])
                .ok_or_else(|| format!("`--slo` entries look like `ttft=500`, got `{part}`"))?;
            let v: f64 = value.trim().parse().map_err(|_| {
                format!("`--slo {key}` must be a number of milliseconds, got `{value}`")
            })?;
            if !(v.is_finite() && v >= 0.0) {
                return Err(format!("`--slo {key}` must be >= 0 ms, got `{value}`"));
            }
            match key.trim().to_ascii_lowercase().as_str() {
                "ttft" => slo.ttft_ms = Some(v),
                "tpot" => slo.tpot_ms = Some(v),
                "e2el" => slo.e2el_ms = Some(v),
                other => {
                    return Err(format!(
                        "`--slo` knows `ttft`, `tpot` and `e2el` (milliseconds), got `{other}`"
                    ))
                }
            }
        }
        if slo.ttft_ms.is_none() && slo.tpot_ms.is_none() && slo.e2el_ms.is_none() {
            return Err("`--slo` needs at least one of ttft=MS, tpot=MS, e2el=MS".to_string());
        }
        Ok(slo)
    }
}

fn parse_percentile(s: &str) -> Result<f64, String> {
    let v: f64 = s
        .trim()
        .parse()
        .map_err(|_| format!("`--percentiles` takes numbers in [0, 100], got `{s}`"))?;
    if !(0.0..=100.0).contains(&v) {
        return Err(format!(
            "`--percentiles` takes numbers in [0, 100], got `{s}`"
        ));
    }
    Ok(v)
}

fn parse_range_ratio(s: &str) -> Result<f64, String> {
    let v: f64 = s
        .trim()
        .parse()
        .map_err(|_| format!("`--range-ratio` must be a number in [0, 1), got `{s}`"))?;
    if !(0.0..1.0).contains(&v) {
        return Err(format!("`--range-ratio` must be in [0, 1), got `{s}`"));
    }
    Ok(v)
}

fn parse_positive_f64(s: &str) -> Result<f64, String> {
    let v: f64 = s
        .trim()
        .parse()
        .map_err(|_| format!("expected a positive number, got `{s}`"))?;
    if v.is_nan() || v <= 0.0 {
        return Err(format!("expected a positive number, got `{s}`"));
    }
    Ok(v)
}

/// `lantern bench`: a serving benchmark for any OpenAI-compatible endpoint.
///
/// Sends `--num-prompts` streaming requests at `--request-rate` (Poisson, or gamma with
/// `--burstiness`), optionally capped at `--max-concurrency` in flight, and reports
/// throughput, TTFT, TPOT, ITL and end-to-end latency percentiles.
#[derive(Debug, Clone, Args, Serialize)]
pub struct BenchArgs {
    // ---- target ---------------------------------------------------------------------
    /// Server base URL (without `/v1`).
    #[arg(long, default_value = "http://127.0.0.1:8000", help_heading = "Target")]
    pub base_url: String,

    /// Model name sent in each request; default: the first id of `GET /v1/models`.
    #[arg(long, help_heading = "Target")]
    pub model: Option<String>,

    /// Route to drive.
    #[arg(long, value_enum, default_value_t = Endpoint::Completions, help_heading = "Target")]
    pub endpoint: Endpoint,

    /// Bearer token for the `Authorization` header.
    #[arg(
        long,
        env = "OPENAI_API_KEY",
        hide_env_values = true,
        help_heading = "Target"
    )]
    #[serde(skip)]
    pub api_key: Option<String>,

    /// Extra JSON object merged into every request body (e.g. '{"top_p":0.9}').
    #[arg(long, help_heading = "Target")]
    pub extra_body: Option<String>,

    /// Constrain every request's output (structured outputs) and report the server's mask
    /// time per token (read from Lantern's `/metrics` before and after the run).
    #[arg(long, value_enum, help_heading = "Target")]
    pub structured_output: Option<StructuredPreset>,

    /// The JSON schema for `--structured-output json-schema` (default: a built-in one).
    #[arg(long, help_heading = "Target", requires = "structured_output")]
    pub json_schema: Option<PathBuf>,

    /// Sampling temperature sent with each request (omitted when not given).
    #[arg(long, help_heading = "Target")]
    pub temperature: Option<f64>,

    /// Send `ignore_eos: true` so every request generates exactly `max_tokens` tokens.
    #[arg(long, help_heading = "Target")]
    pub ignore_eos: bool,

    /// Per-request timeout in seconds (whole stream).
    #[arg(long, default_value_t = 3600.0, value_parser = parse_positive_f64, help_heading = "Target")]
    pub request_timeout: f64,

    // ---- embedded server ------------------------------------------------------------
    /// Start `lantern serve` on a free port, benchmark it, then stop it.
    #[arg(long, help_heading = "Embedded server")]
    pub embedded: bool,

    /// Arguments for the embedded `lantern serve`, as one shell-quoted string.
    #[arg(long, allow_hyphen_values = true, help_heading = "Embedded server")]
    pub serve_args: Option<String>,

    /// Binary to start for `--embedded` (default: this executable).
    #[arg(long, help_heading = "Embedded server")]
    pub server_bin: Option<PathBuf>,

    /// Seconds to wait for `GET /health` of the embedded server to answer 200.
    #[arg(long, default_value_t = 900.0, value_parser = parse_positive_f64, help_heading = "Embedded server")]
    pub health_timeout: f64,

    /// Where the embedded server's stdout/stderr go (default: a file in the temp dir).
    #[arg(long, help_heading = "Embedded server")]
    pub serve_log: Option<PathBuf>,

    /// Trailing arguments after `--` are passed to the embedded `lantern serve`.
    #[arg(last = true, help_heading = "Embedded server")]
    pub serve_trailing: Vec<String>,

    // ---- dataset --------------------------------------------------------------------
    /// Workload to generate.
    #[arg(long, value_enum, default_value_t = DatasetKind::Random, help_heading = "Dataset")]
    pub dataset: DatasetKind,

    /// Dataset file (ShareGPT JSON for `--dataset sharegpt`).
    #[arg(long, help_heading = "Dataset")]
    pub dataset_path: Option<PathBuf>,

    /// Number of measured requests.
    #[arg(long, default_value_t = 1000, help_heading = "Dataset")]
    pub num_prompts: usize,

    /// Prompt length in tokens (random, lora).
    #[arg(long, default_value_t = 1024, help_heading = "Dataset")]
    pub input_len: usize,

    /// Output length in tokens, sent as `max_tokens` (default 128; ShareGPT: the
    /// length of the first gpt reply).
    #[arg(long, help_heading = "Dataset")]
    pub output_len: Option<usize>,

    /// Lengths are drawn uniformly from `[len*(1-r), len*(1+r)]` (random, lora).
    #[arg(long, default_value_t = 0.0, value_parser = parse_range_ratio, help_heading = "Dataset")]
    pub range_ratio: f64,

    /// Number of distinct shared prefixes (prefix-repetition).
    #[arg(long, default_value_t = 10, help_heading = "Dataset")]
    pub num_prefixes: usize,

    /// Shared prefix length in tokens (prefix-repetition).
    #[arg(long, default_value_t = 256, help_heading = "Dataset")]
    pub prefix_len: usize,

    /// Unique suffix length in tokens (prefix-repetition).
    #[arg(long, default_value_t = 256, help_heading = "Dataset")]
    pub suffix_len: usize,

    /// LoRA adapter names; each request's `model` is one of them (required by
    /// `--dataset lora`, also usable with the other datasets).
    #[arg(long, value_delimiter = ',', help_heading = "Dataset")]
    pub lora_models: Vec<String>,

    /// How adapters are assigned to requests.
    #[arg(long, value_enum, default_value_t = LoraDistribution::Uniform, help_heading = "Dataset")]
    pub lora_distribution: LoraDistribution,

    /// Exponent `s` of the zipf adapter distribution.
    #[arg(long, default_value_t = 1.0, value_parser = parse_positive_f64, help_heading = "Dataset")]
    pub lora_zipf_exponent: f64,

    /// ShareGPT: drop samples whose prompt is longer than this (when `--output-len`
    /// is not given, like vLLM).
    #[arg(long, default_value_t = 1024, help_heading = "Dataset")]
    pub sharegpt_max_prompt_len: usize,

    /// ShareGPT: drop samples whose prompt + reply is longer than this (when
    /// `--output-len` is not given).
    #[arg(long, default_value_t = 2048, help_heading = "Dataset")]
    pub sharegpt_max_total_len: usize,

    /// Tokenizer: a directory holding tokenizer.json, a tokenizer.json file, or a hub
    /// id. Without it the server's `/tokenize` and `/detokenize` are used.
    #[arg(long, help_heading = "Dataset")]
    pub tokenizer: Option<String>,

    /// Send text prompts on the completions endpoint instead of token ids (token ids
    /// are the default for random/prefix-repetition/lora: exact lengths by design).
    #[arg(long, help_heading = "Dataset")]
    pub text_prompts: bool,

    /// Seed for datasets, adapter choice and arrivals.
    #[arg(long, default_value_t = 0, help_heading = "Dataset")]
    pub seed: u64,

    // ---- load -----------------------------------------------------------------------
    /// Requests per second (Poisson arrivals), or `inf` to send all at once.
    #[arg(long, default_value = "inf", help_heading = "Load")]
    #[serde(serialize_with = "ser_display")]
    pub request_rate: RequestRate,

    /// Gamma shape of inter-arrival times (1 = Poisson; < 1 burstier; > 1 smoother).
    #[arg(long, default_value_t = 1.0, value_parser = parse_positive_f64, help_heading = "Load")]
    pub burstiness: f64,

    /// Most requests in flight at once; the wait for a slot is reported as client
    /// queueing time.
    #[arg(long, help_heading = "Load")]
    pub max_concurrency: Option<usize>,

    /// Requests sent (and discarded) before measuring, from a separately seeded set.
    #[arg(long, default_value_t = 0, help_heading = "Load")]
    pub warmup: usize,

    // ---- report ---------------------------------------------------------------------
    /// Percentiles to report.
    #[arg(long, value_delimiter = ',', default_value = "50,90,95,99", value_parser = parse_percentile, help_heading = "Report")]
    pub percentiles: Vec<f64>,

    /// Goodput SLOs in ms, e.g. `ttft=500,tpot=50,e2el=10000`.
    #[arg(long, help_heading = "Report")]
    pub slo: Option<Slo>,

    /// Write every figure, the config and every per-request record to this JSON file.
    #[arg(long, help_heading = "Report")]
    pub result_json: Option<PathBuf>,

    /// Write latency percentile curves and a throughput timeline to this `.svg` or `.png` file.
    #[arg(long, help_heading = "Report")]
    pub plot: Option<PathBuf>,

    /// Print deltas of the key metrics against an earlier `--result-json` file.
    #[arg(long, help_heading = "Report")]
    pub compare: Option<PathBuf>,

    /// Free-form label stored in the result file.
    #[arg(long, help_heading = "Report")]
    pub label: Option<String>,

    /// Do not draw the progress bar.
    #[arg(long, help_heading = "Report")]
    pub disable_progress: bool,
}

fn ser_display<T: fmt::Display, S: serde::Serializer>(v: &T, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&v.to_string())
}

impl BenchArgs {
    /// Output length to request, with the dataset-independent default.
    pub fn output_len_or_default(&self) -> usize {
        self.output_len.unwrap_or(128)
    }

    /// True when prompts go out as token ids (`prompt: [ids]`).
    pub fn token_id_prompts(&self) -> bool {
        self.endpoint == Endpoint::Completions
            && !self.text_prompts
            && self.dataset != DatasetKind::Sharegpt
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: BenchArgs,
    }

    #[test]
    fn parses_request_rate() {
        assert_eq!("inf".parse::<RequestRate>(), Ok(RequestRate::Infinite));
        assert_eq!(
            "2.5".parse::<RequestRate>(),
            Ok(RequestRate::PerSecond(2.5))
        );
        assert!("0".parse::<RequestRate>().is_err());
        assert!("-1".parse::<RequestRate>().is_err());
        assert!("fast".parse::<RequestRate>().is_err());
    }

    #[test]
    fn parses_slo() {
        let s: Slo = "ttft=500,tpot=50".parse().unwrap();
        assert_eq!(s.ttft_ms, Some(500.0));
        assert_eq!(s.tpot_ms, Some(50.0));
        assert_eq!(s.e2el_ms, None);
        assert!("latency=3".parse::<Slo>().is_err());
        assert!("ttft".parse::<Slo>().is_err());
    }

    #[test]
    fn parses_full_command_line() {
        let cli = Cli::try_parse_from([
            "bench",
            "--model",
            "m",
            "--endpoint",
            "chat",
            "--dataset",
            "prefix-repetition",
            "--request-rate",
            "4",
            "--percentiles",
            "50,99.9",
            "--lora-models",
            "a,b,c",
            "--slo",
            "ttft=100",
            "--embedded",
            "--",
            "--model",
            "x",
            "--max-num-seqs",
            "8",
        ])
        .unwrap();
        let a = cli.args;
        assert_eq!(a.endpoint, Endpoint::Chat);
        assert_eq!(a.dataset, DatasetKind::PrefixRepetition);
        assert_eq!(a.request_rate, RequestRate::PerSecond(4.0));
        assert_eq!(a.percentiles, vec![50.0, 99.9]);
        assert_eq!(a.lora_models, vec!["a", "b", "c"]);
        assert_eq!(
            a.serve_trailing,
            vec!["--model", "x", "--max-num-seqs", "8"]
        );
        assert!(!a.token_id_prompts());
        let json = serde_json::to_value(&a).unwrap();
        assert_eq!(json["request_rate"], "4");
        assert!(json.get("api_key").is_none());
    }
}
