//! `lantern bench`: a serving benchmark for OpenAI-compatible endpoints, in the spirit
//! of `vllm bench serve`.
//!
//! Mount it as a subcommand:
//!
//! ```text
//! #[derive(clap::Subcommand)]
//! enum Command {
//!     /// Benchmark a running server (or an embedded one with --embedded).
//!     Bench(lantern_bench::BenchArgs),
//! }
//! // sync main:
//! Command::Bench(args) => lantern_bench::run_blocking(args),
//! // inside a tokio runtime:
//! Command::Bench(args) => lantern_bench::run(args).await,
//! ```
//!
//! Bird's-eye view, following one run:
//! - [`BenchArgs`] (`args`): the flags.
//! - `tokenizer`: [`TokenSource`], a local `tokenizers` tokenizer or the server's
//!   `/tokenize` + `/detokenize`.
//! - `dataset`: random / ShareGPT / prefix-repetition / LoRA request sets with exact
//!   prompt lengths (token-id prompts, or decode→re-encode→adjust for text).
//! - `arrival`: gamma/Poisson arrival offsets, seeded.
//! - `runner`: warm-up, dispatch under `--max-concurrency`, progress bar, embedded server.
//! - `client` + `sse` + `http`: one streaming request over plain HTTP/1.1, timed per
//!   content chunk (TTFT, ITL, E2EL), usage and Lantern's `lantern_timing` read from the
//!   final chunk.
//! - `metrics`: per-request [`RequestRecord`]s into [`Metrics`] (numpy-style percentiles,
//!   goodput, peak throughput).
//! - `report` and `plot`: the vLLM-style table, `--result-json`, `--compare`, `--plot`
//!   SVG or PNG (drawn with `plotters`, PNG text from an embedded DejaVu Sans).
//!
//! Invariants: all timing uses the monotonic clock; a failed request never panics the
//! run, it becomes a record with an `error_kind`; datasets and arrivals depend only on
//! `--seed` and the tokenizer.

mod args;
mod arrival;
mod client;
mod dataset;
mod embedded;
mod http;
mod metrics;
pub mod mock;
mod plot;
mod report;
mod runner;
mod sse;
mod structured;
mod tokenizer;

pub use args::{BenchArgs, DatasetKind, Endpoint, LoraDistribution, RequestRate, Slo};
pub use client::ServerTiming;
pub use metrics::{percentile, Metrics, RequestRecord, Stats, Timeline};
pub use report::BenchResult;
pub use runner::{emit, execute, run, run_blocking, run_collect};
pub use sse::{SseEvent, SseParser};
pub use tokenizer::TokenSource;
