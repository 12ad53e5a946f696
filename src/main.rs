//! `lantern`: the command-line entry point (generate now; serve and bench join it).

mod generate;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "lantern", version, about = "Lantern: a self-hosted LLM serving engine")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run prompts through the model and print the completions.
    Generate(generate::GenerateArgs),
}

fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Generate(args) => generate::run(args),
    };
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
