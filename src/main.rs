//! `lantern`: the command-line entry point: `serve`, `generate`, `bench`.

mod common;
mod export;
mod generate;
mod serve;
mod throughput;

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

fn main() {
    let cli = Cli::parse();
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
