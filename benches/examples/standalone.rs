//! `lantern bench` as a standalone binary, for trying the benchmark before it is mounted
//! in `lantern`: `cargo run -p lantern-bench --example standalone -- --help`.

use clap::Parser;

#[derive(Parser)]
#[command(
    name = "lantern-bench",
    about = "Serving benchmark for OpenAI-compatible endpoints"
)]
struct Cli {
    #[command(flatten)]
    args: lantern_bench::BenchArgs,
}

fn main() {
    let cli = Cli::parse();
    if let Err(e) = lantern_bench::run_blocking(cli.args) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
