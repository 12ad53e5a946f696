//! `lantern`: the command-line entry point: `serve`, `generate`, `bench`.

mod common;
mod export;
mod generate;
mod serve;
mod throughput;

use clap::error::{ContextKind, ContextValue, ErrorKind};
use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "lantern",
    version,
    about = "Lantern: a self-hosted LLM serving engine"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve a model with an OpenAI-compatible HTTP API.
    Serve(Box<serve::ServeArgs>),
    /// Run prompts through the model and print the completions.
    Generate(Box<generate::GenerateArgs>),
    /// Benchmark an OpenAI-compatible server (or start one with --embedded): TTFT, TPOT,
    /// ITL, E2E latency percentiles, throughput, goodput.
    Bench(Box<lantern_bench::BenchArgs>),
    /// Offline engine benchmark (no HTTP): prefill/decode throughput.
    Throughput(Box<throughput::ThroughputArgs>),
    /// Write the model's tokenizer as a Hugging Face tokenizer directory.
    ExportTokenizer(Box<export::ExportTokenizerArgs>),
}

/// `vllm serve`'s flags (vLLM 0.34), for a clear message when one is not implemented.
const VLLM_SERVE_FLAGS: &str = include_str!("vllm_serve_flags.txt");

/// The flag of an unknown-argument error, when it is one of `vllm serve`'s.
fn unsupported_vllm_flag(e: &clap::Error) -> Option<String> {
    if e.kind() != ErrorKind::UnknownArgument {
        return None;
    }
    let ContextValue::String(arg) = e.get(ContextKind::InvalidArg)? else {
        return None;
    };
    let flag = arg.split('=').next().unwrap_or(arg);
    VLLM_SERVE_FLAGS
        .lines()
        .any(|l| !l.starts_with('#') && l.trim() == flag)
        .then(|| flag.to_string())
}

fn main() {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            if let Some(flag) = unsupported_vllm_flag(&e) {
                eprintln!(
                    "error: `{flag}` is a `vllm serve` flag that Lantern does not support yet; remove it (README: \"vLLM flags\" lists what is supported)"
                );
                std::process::exit(2);
            }
            e.exit()
        }
    };
    let default_level = match cli.command {
        Command::Serve(_) => "info",
        Command::Generate(_)
        | Command::Throughput(_)
        | Command::ExportTokenizer(_)
        | Command::Bench(_) => "warn",
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level)),
        )
        .with_writer(std::io::stderr)
        .init();
    let result = match cli.command {
        Command::Serve(args) => serve::run(*args),
        Command::Generate(args) => generate::run(*args),
        Command::Throughput(args) => throughput::run(*args),
        Command::ExportTokenizer(args) => export::run(*args),
        Command::Bench(args) => lantern_bench::run_blocking(*args),
    };
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vllm_flags_we_lack_get_a_clear_error() {
        let e = Cli::try_parse_from(["lantern", "serve", "--speculative-config", "{}"]).err();
        assert_eq!(
            e.as_ref().and_then(unsupported_vllm_flag).as_deref(),
            Some("--speculative-config")
        );
        let e = Cli::try_parse_from(["lantern", "serve", "--no-such-flag"]).err();
        assert_eq!(e.as_ref().and_then(unsupported_vllm_flag), None);
        // Flags Lantern has parse, with vLLM's spellings too.
        assert!(Cli::try_parse_from(["lantern", "serve", "--max-num-seqs", "4"]).is_ok());
        assert!(Cli::try_parse_from([
            "lantern",
            "serve",
            "Qwen/Qwen2.5-0.5B-Instruct",
            "--kv-cache-memory-bytes",
            "1073741824",
            "--generation-config",
            "vllm",
        ])
        .is_ok());
        // The model positionally or with --model, not both.
        assert!(Cli::try_parse_from(["lantern", "serve", "a", "--model", "b"]).is_err());
    }
}
