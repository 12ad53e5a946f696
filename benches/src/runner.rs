//! Orchestration: resolve model and tokenizer, build the workload, warm up, dispatch
//! requests on the arrival schedule under the concurrency cap, and collect records.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context, Result};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use rand::rngs::StdRng;
use rand::SeedableRng;
use serde_json::{Map, Value};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::args::{BenchArgs, Endpoint, RequestRate};
use crate::arrival;
use crate::client::{build_body, stream_request, RequestSpec};
use crate::dataset::{self, DatasetConfig, SampleRequest};
use crate::embedded::{self, EmbeddedServer};
use crate::http::{join_url, snippet, HttpClient};
use crate::metrics::{self, tpot, RequestRecord};
use crate::plot;
use crate::report::{self, BenchResult};
use crate::structured::{self, StructuredStats};
use crate::tokenizer::TokenSource;

const WARMUP_SEED_XOR: u64 = 0x5741_524D_5550_0000;
const ARRIVAL_SEED_XOR: u64 = 0x4152_5249_5641_4C00;

/// What every request task shares.
struct Shared {
    client: HttpClient,
    url: String,
    endpoint: Endpoint,
    model: String,
    ignore_eos: bool,
    temperature: Option<f64>,
    extra_body: Option<Map<String, Value>>,
    timeout: Duration,
}

/// First model id of `GET /v1/models`.
pub async fn first_model(client: &HttpClient, base_url: &str) -> Result<String> {
    let url = join_url(base_url, "/v1/models");
    let (status, body) = client.get(&url).await?;
    if !status.is_success() {
        bail!(
            "GET {url} answered {status}: {} (pass --model NAME)",
            snippet(&body)
        );
    }
    let v: Value =
        serde_json::from_slice(&body).with_context(|| format!("GET {url} did not return JSON"))?;
    v.get("data")
        .and_then(Value::as_array)
        .and_then(|d| d.first())
        .and_then(|m| m.get("id"))
        .and_then(Value::as_str)
        .map(str::to_string)
        .ok_or_else(|| anyhow!("GET {url} listed no model (pass --model NAME)"))
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

/// Sends `reqs` at `offsets` (seconds from start) with at most `max_concurrency` in
/// flight. Returns the records (in dataset order) and the run's duration.
async fn dispatch(
    shared: Arc<Shared>,
    reqs: Arc<Vec<SampleRequest>>,
    offsets: Vec<f64>,
    max_concurrency: Option<usize>,
    pb: ProgressBar,
) -> Result<(Vec<RequestRecord>, f64)> {
    let sem = max_concurrency.map(|c| Arc::new(Semaphore::new(c.max(1))));
    let start = Instant::now();
    let mut tasks = JoinSet::new();
    for (i, offset) in offsets.iter().copied().enumerate() {
        let due = start + Duration::from_secs_f64(offset.max(0.0));
        tokio::time::sleep_until(due.into()).await;
        let (shared, reqs, sem, pb) = (shared.clone(), reqs.clone(), sem.clone(), pb.clone());
        tasks.spawn(async move {
            let arrival = Instant::now();
            let _permit = match sem {
                Some(s) => Some(
                    s.acquire_owned()
                        .await
                        .map_err(|_| anyhow!("concurrency semaphore closed"))?,
                ),
                None => None,
            };
            let sent = Instant::now();
            let req = &reqs[i];
            let model = req.model.as_deref().unwrap_or(&shared.model);
            let body = build_body(&RequestSpec {
                endpoint: shared.endpoint,
                model,
                prompt: &req.prompt,
                max_tokens: req.output_len,
                ignore_eos: shared.ignore_eos,
                temperature: shared.temperature,
                extra_body: shared.extra_body.as_ref(),
            });
            let r = stream_request(&shared.client, &shared.url, &body, shared.timeout).await;
            pb.inc(1);
            let output_tokens = r.output_tokens();
            let (error_kind, error) = match r.error.clone() {
                Some((k, m)) => (Some(k), Some(m)),
                None => (None, None),
            };
            Ok::<_, anyhow::Error>(RequestRecord {
                index: i,
                model: model.to_string(),
                prompt_len: req.prompt_len,
                max_tokens: req.output_len,
                scheduled_s: offset,
                arrival_s: secs(arrival - start),
                start_s: secs(sent - start),
                client_queue_s: secs(sent - arrival),
                success: error.is_none(),
                error_kind,
                error,
                ttft_s: r.ttft_s,
                tpot_s: tpot(r.e2el_s, r.ttft_s, output_tokens),
                itl_s: r.itl_s.clone(),
                e2el_s: r.e2el_s,
                output_tokens,
                output_tokens_from_usage: r.usage_completion_tokens.is_some(),
                server_prompt_tokens: r.usage_prompt_tokens,
                content_chunks: r.content_chunks,
                generated_chars: r.generated_chars,
                server_timing: r.server_timing,
            })
        });
    }
    let mut records = Vec::with_capacity(offsets.len());
    while let Some(joined) = tasks.join_next().await {
        records.push(joined.context("a request task panicked")??);
    }
    let duration = secs(start.elapsed());
    records.sort_by_key(|r| r.index);
    Ok((records, duration))
}

fn progress_bar(n: usize, hidden: bool, msg: &'static str) -> ProgressBar {
    if hidden {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::with_draw_target(Some(n as u64), ProgressDrawTarget::stderr());
    if let Ok(style) = ProgressStyle::with_template(
        "{msg} [{elapsed_precise}] {wide_bar} {pos}/{len} ({per_sec}, eta {eta})",
    ) {
        pb.set_style(style);
    }
    pb.set_message(msg);
    pb
}

/// Runs the benchmark against `args.base_url` (no embedded server) and returns the
/// full result without printing the table.
pub async fn execute(args: &BenchArgs) -> Result<BenchResult> {
    if args.num_prompts == 0 {
        bail!("--num-prompts must be >= 1");
    }
    if args.max_concurrency == Some(0) {
        bail!("--max-concurrency must be >= 1");
    }
    let started_unix_s = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let client = HttpClient::new(args.api_key.as_deref())?;
    let extra_body = match &args.extra_body {
        Some(s) => match serde_json::from_str::<Value>(s) {
            Ok(Value::Object(m)) => Some(m),
            _ => bail!("--extra-body must be a JSON object, e.g. '{{\"top_p\": 0.9}}'"),
        },
        None => None,
    };
    let extra_body = match args.structured_output {
        Some(preset) => {
            let mut m = extra_body.unwrap_or_default();
            m.extend(structured::request_fields(
                preset,
                args.json_schema.as_deref(),
                args.output_len_or_default(),
            )?);
            Some(m)
        }
        None => extra_body,
    };
    let model = match &args.model {
        Some(m) => m.clone(),
        None => first_model(&client, &args.base_url)
            .await
            .context("no --model given and the server's model list is unavailable")?,
    };
    let tok = match &args.tokenizer {
        Some(spec) => TokenSource::load_local(spec).await?,
        None => TokenSource::server(client.clone(), &args.base_url, &model).await?,
    };
    let cfg = DatasetConfig::from_args(args, args.num_prompts, args.seed);
    let reqs = dataset::build(&cfg, &tok)
        .await
        .context("building the dataset")?;
    let lora = dataset::lora_counts(&reqs);
    eprintln!(
        "lantern bench: {} {:?} requests ({} prompts), model {model}, tokenizer {}, rate {}, max concurrency {}",
        reqs.len(),
        args.dataset,
        if cfg.token_ids { "token-id" } else { "text" },
        tok.describe(),
        args.request_rate,
        args.max_concurrency.map(|c| c.to_string()).unwrap_or_else(|| "none".into()),
    );
    if !lora.is_empty() {
        let mut v: Vec<_> = lora.into_iter().collect();
        v.sort();
        eprintln!("lantern bench: requests per adapter: {v:?}");
    }
    let shared = Arc::new(Shared {
        client,
        url: join_url(&args.base_url, args.endpoint.path()),
        endpoint: args.endpoint,
        model: model.clone(),
        ignore_eos: args.ignore_eos,
        temperature: args.temperature,
        extra_body,
        timeout: Duration::from_secs_f64(args.request_timeout),
    });

    let (mut warmup_failed, warmup_requests) = (0, args.warmup);
    if args.warmup > 0 {
        let wcfg = DatasetConfig::from_args(args, args.warmup, args.seed ^ WARMUP_SEED_XOR);
        let wreqs = dataset::build(&wcfg, &tok)
            .await
            .context("building the warm-up requests")?;
        let pb = progress_bar(wreqs.len(), args.disable_progress, "warmup");
        let offsets = vec![0.0; wreqs.len()];
        let (records, _) = dispatch(
            shared.clone(),
            Arc::new(wreqs),
            offsets,
            args.max_concurrency,
            pb.clone(),
        )
        .await?;
        pb.finish_and_clear();
        warmup_failed = records.iter().filter(|r| !r.success).count();
        if warmup_failed == records.len() {
            let first = records
                .iter()
                .find_map(|r| r.error.clone())
                .unwrap_or_default();
            bail!("every warm-up request failed; the server is not serving this workload: {first}");
        }
        if warmup_failed > 0 {
            eprintln!(
                "lantern bench: warning: {warmup_failed} of {} warm-up requests failed",
                records.len()
            );
        }
    }

    let mut arrival_rng = StdRng::seed_from_u64(args.seed ^ ARRIVAL_SEED_XOR);
    let offsets = arrival::offsets(
        reqs.len(),
        args.request_rate,
        args.burstiness,
        &mut arrival_rng,
    )?;
    let pb = progress_bar(reqs.len(), args.disable_progress, "bench");
    let masks_before = match args.structured_output {
        Some(_) => structured::scrape(&shared.client, &args.base_url).await,
        None => None,
    };
    let (records, duration_s) = dispatch(
        shared.clone(),
        Arc::new(reqs),
        offsets,
        args.max_concurrency,
        pb.clone(),
    )
    .await?;
    pb.finish_and_clear();
    let structured = match args.structured_output {
        Some(preset) => {
            // The engine publishes its stats after each step: give it a moment.
            tokio::time::sleep(Duration::from_millis(200)).await;
            let after = structured::scrape(&shared.client, &args.base_url).await;
            Some(StructuredStats::new(preset, masks_before, after))
        }
        None => None,
    };

    let metrics = metrics::compute(&records, duration_s, &args.percentiles, args.slo.as_ref());
    let timeline = metrics::timeline(&records, duration_s);
    Ok(BenchResult {
        tool: "lantern-bench".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        label: args.label.clone(),
        started_unix_s,
        base_url: args.base_url.clone(),
        model,
        tokenizer: tok.describe(),
        config: serde_json::to_value(args).context("serializing the config")?,
        warmup_requests,
        warmup_failed,
        metrics,
        structured,
        timeline,
        requests: records,
    })
}

/// Prints the table and writes the requested files for a finished run.
pub fn emit(args: &BenchArgs, result: &BenchResult) -> Result<()> {
    let rate = match args.request_rate {
        RequestRate::Infinite => "inf".to_string(),
        RequestRate::PerSecond(r) => format!("{r:.2}"),
    };
    print!(
        "{}",
        report::render_table(result, args.max_concurrency, &rate)
    );
    let failed: Vec<&RequestRecord> = result
        .requests
        .iter()
        .filter(|r| !r.success)
        .take(5)
        .collect();
    for r in failed {
        eprintln!(
            "lantern bench: request {} failed ({}): {}",
            r.index,
            r.error_kind.as_deref().unwrap_or("?"),
            r.error.as_deref().unwrap_or("")
        );
    }
    if let Some(path) = &args.result_json {
        result.write_json(path)?;
        eprintln!("lantern bench: wrote {}", path.display());
    }
    if let Some(path) = &args.plot {
        plot::write_plot(path, result)?;
        eprintln!("lantern bench: wrote {}", path.display());
    }
    if let Some(path) = &args.compare {
        print!("{}", report::compare_file(path, result)?);
    }
    Ok(())
}

/// `lantern bench`: runs the benchmark (starting and stopping an embedded server for
/// `--embedded`), prints the report and writes the requested files. Async: call it
/// from a tokio runtime, or use [`run_blocking`].
pub async fn run(args: BenchArgs) -> Result<()> {
    let result = run_collect(args.clone()).await?;
    emit(&args, &result)
}

/// Like [`run`] but returns the result instead of printing it (the embedded server, if
/// any, is stopped before returning).
pub async fn run_collect(mut args: BenchArgs) -> Result<BenchResult> {
    if let Some(p) = &args.plot {
        plot::check_path(p)?;
    }
    if !args.embedded {
        return execute(&args).await;
    }
    let mut user = match &args.serve_args {
        Some(s) => embedded::split_shell(s)?,
        None => vec![],
    };
    user.extend(args.serve_trailing.iter().cloned());
    let (serve_args, port) = embedded::serve_args(&user, args.model.as_deref())?;
    let bin = match &args.server_bin {
        Some(b) => b.clone(),
        None => std::env::current_exe()
            .context("cannot find the lantern executable; pass --server-bin")?,
    };
    let client = HttpClient::new(args.api_key.as_deref())?;
    let server = EmbeddedServer::start(
        &bin,
        &serve_args,
        port,
        args.serve_log.clone(),
        Duration::from_secs_f64(args.health_timeout),
        &client,
    )
    .await?;
    args.base_url = server.base_url.clone();
    let outcome = tokio::select! {
        r = execute(&args) => r,
        _ = tokio::signal::ctrl_c() => Err(anyhow!("interrupted")),
    };
    if let Err(e) = server.stop().await {
        eprintln!("lantern bench: warning: stopping the embedded server failed: {e:#}");
    }
    outcome
}

/// [`run`] on a fresh multi-threaded tokio runtime, for a synchronous `main`.
pub fn run_blocking(args: BenchArgs) -> Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the tokio runtime")?;
    rt.block_on(run(args))
}
