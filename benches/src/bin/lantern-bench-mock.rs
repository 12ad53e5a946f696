//! Mock OpenAI server used by lantern-bench's `--embedded` tests, shaped like
//! `lantern serve`: `lantern-bench-mock serve [--host H] [--port P]
//! [--first-token-ms N] [--token-gap-ms N]`; other flags (e.g. `--model`) are ignored.
//! See `lantern_bench::mock` for what it answers.

use std::time::Duration;

use anyhow::{Context, Result};
use lantern_bench::mock::{self, MockConfig};

fn flag<T: std::str::FromStr>(args: &[String], name: &str) -> Result<Option<T>> {
    let eq = format!("{name}=");
    for (i, a) in args.iter().enumerate() {
        let v = if a == name {
            args.get(i + 1).cloned()
        } else {
            a.strip_prefix(&eq).map(str::to_string)
        };
        if let Some(v) = v {
            return v
                .parse()
                .map(Some)
                .map_err(|_| anyhow::anyhow!("{name}: cannot parse `{v}`"));
        }
    }
    Ok(None)
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let host: String = flag(&args, "--host")?.unwrap_or_else(|| "127.0.0.1".into());
    let port: u16 = flag(&args, "--port")?.unwrap_or(8000);
    let mut cfg = MockConfig::default();
    if let Some(ms) = flag::<u64>(&args, "--first-token-ms")? {
        cfg.first_token_delay = Duration::from_millis(ms);
    }
    if let Some(ms) = flag::<u64>(&args, "--token-gap-ms")? {
        cfg.token_gap = Duration::from_millis(ms);
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the runtime")?;
    rt.block_on(async {
        let listener = tokio::net::TcpListener::bind((host.as_str(), port))
            .await
            .with_context(|| format!("binding {host}:{port}"))?;
        eprintln!("lantern-bench-mock: listening on http://{host}:{port}");
        mock::serve(listener, cfg, Default::default()).await;
        Ok(())
    })
}
