//! `lantern serve`: the OpenAI-compatible server.

use crate::common::{EngineArgs, EngineModel, ModelArgs, NullDeviceArgs};
use anyhow::{anyhow, Context, Result};
use clap::Args;
use lantern_engine::Engine;
use lantern_kv_events::{KvEventsConfig, Layout, PublisherSettings};
use lantern_models::load_model;
use lantern_parsers::reasoning::ReasoningParserKind;
use lantern_parsers::tool::ToolParserKind;
use lantern_server::chat_template::ChatTemplate;
use lantern_server::defaults::SamplingDefaults;
use lantern_server::tools::ToolConfig;
use lantern_server::{AppState, Ready, ServerConfig};
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// The model, as `vllm serve MODEL` takes it (the same as --model).
    #[arg(value_name = "MODEL", conflicts_with = "model")]
    pub model_tag: Option<String>,
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub engine: EngineArgs,
    /// Address to listen on.
    #[arg(long, default_value = "0.0.0.0")]
    pub host: String,
    #[arg(long, default_value_t = 8000)]
    pub port: u16,
    /// Name(s) clients use in `model` (default: the --model argument).
    #[arg(long = "served-model-name", num_args = 1..)]
    pub served_model_name: Vec<String>,
    /// Require `Authorization: Bearer KEY` on /v1/* (also read from LANTERN_API_KEY, then
    /// VLLM_API_KEY).
    #[arg(long = "api-key", env = "LANTERN_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// Request defaults: `auto` reads the model's generation_config.json (temperature,
    /// top_p, top_k, min_p, repetition_penalty, max_new_tokens) for fields a request leaves
    /// unset, as vLLM does; `vllm` ignores it; a directory reads its generation_config.json.
    #[arg(
        long = "generation-config",
        default_value = "auto",
        value_name = "auto|vllm|DIR"
    )]
    pub generation_config: String,
    /// Largest accepted request body in bytes.
    #[arg(long = "max-request-body-bytes", default_value_t = 8 << 20)]
    pub max_body_bytes: usize,
    /// Seconds in-flight requests get to finish after SIGINT/SIGTERM; then they are aborted
    /// and open connections closed (a hard deadline). A second signal exits at once.
    #[arg(long = "shutdown-timeout", default_value_t = 30)]
    pub shutdown_timeout: u64,
    /// Seconds a request's headers may take to arrive (also how long an idle keep-alive
    /// connection stays open).
    #[arg(long = "header-read-timeout", default_value_t = 30)]
    pub header_read_timeout: u64,
    /// Seconds a request's body may take to arrive (408 after it).
    #[arg(long = "body-read-timeout", default_value_t = 60)]
    pub body_read_timeout: u64,
    /// Open connections at most; more are closed when accepted.
    #[arg(long = "max-connections", default_value_t = 4096)]
    pub max_connections: usize,
    #[command(flatten)]
    pub lora: LoraArgs,
    #[command(flatten)]
    pub chat: ChatOutputArgs,
    #[command(flatten)]
    pub vllm: VllmCompatArgs,
    #[command(flatten)]
    pub null: NullDeviceArgs,
    #[command(flatten)]
    pub kv_events: KvEventsArgs,
    /// Serve debugging endpoints (not behind --api-key; trusted networks only):
    /// GET /debug/kv_cache_blocks (the prefix cache's blocks by their KV-event ids) and
    /// POST /reset_prefix_cache.
    #[arg(long = "enable-debug-endpoints")]
    pub enable_debug_endpoints: bool,
}

/// KV-cache events for KV-aware routers (llm-d, NVIDIA Dynamo), as vLLM publishes them.
#[derive(Debug, Clone, Args)]
pub struct KvEventsArgs {
    /// Publish KV-cache events over ZeroMQ, configured as vLLM's --kv-events-config: a JSON
    /// object with enable_kv_cache_events (false), publisher ("zmq" | "null"), endpoint
    /// ("tcp://*:5557"), replay_endpoint (null), buffer_steps (10000), hwm (100000),
    /// max_queue_size (100000), topic (""). E.g.
    /// '{"enable_kv_cache_events":true,"endpoint":"tcp://*:5557","topic":"kv@pod-0@model"}'.
    #[arg(long = "kv-events-config", value_name = "JSON")]
    pub kv_events_config: Option<String>,
    /// How each event is encoded: map (named fields, what vLLM sends since mid-2026; vLLM
    /// 0.34) or array (positional, what older vLLM sent; for llm-d-kv-cache up to v0.8).
    #[arg(long = "kv-events-layout", value_enum, default_value_t = KvEventsLayout::Map)]
    pub kv_events_layout: KvEventsLayout,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum KvEventsLayout {
    Map,
    Array,
}

impl KvEventsArgs {
    /// The publisher's settings, `None` when events are off; bad JSON or values fail here.
    pub fn settings(&self) -> Result<Option<PublisherSettings>> {
        let Some(json) = &self.kv_events_config else {
            return Ok(None);
        };
        let layout = match self.kv_events_layout {
            KvEventsLayout::Map => Layout::Map,
            KvEventsLayout::Array => Layout::Array,
        };
        let cfg = KvEventsConfig::from_json(json)?;
        let settings = cfg.resolve(layout)?;
        if settings.is_none() {
            tracing::info!(
                "--kv-events-config: events are off (enable_kv_cache_events is false or publisher is \"null\")"
            );
        }
        Ok(settings)
    }
}

/// `vllm serve` flags Lantern accepts with vLLM's spelling, for the values it supports;
/// other values stop start-up with a message saying what is not supported yet.
#[derive(Debug, Clone, Args)]
pub struct VllmCompatArgs {
    /// GPUs one replica shards the model over: only 1 (run one replica per GPU).
    #[arg(
        long = "tensor-parallel-size",
        value_name = "N",
        help_heading = "vLLM compatibility"
    )]
    pub tensor_parallel_size: Option<usize>,
    /// Pipeline stages: only 1.
    #[arg(
        long = "pipeline-parallel-size",
        value_name = "N",
        help_heading = "vLLM compatibility"
    )]
    pub pipeline_parallel_size: Option<usize>,
    /// Data-parallel engines in one server: only 1 (run replicas behind a router).
    #[arg(
        long = "data-parallel-size",
        value_name = "N",
        help_heading = "vLLM compatibility"
    )]
    pub data_parallel_size: Option<usize>,
    /// Accepted and without effect: Lantern never runs code from a model repository.
    #[arg(long = "trust-remote-code", help_heading = "vLLM compatibility")]
    pub trust_remote_code: bool,
    /// Accepted: prefill is always chunked (--max-num-batched-tokens per step).
    #[arg(long = "enable-chunked-prefill", help_heading = "vLLM compatibility")]
    pub enable_chunked_prefill: bool,
    /// Not supported: prefill is always chunked.
    #[arg(
        long = "no-enable-chunked-prefill",
        help_heading = "vLLM compatibility"
    )]
    pub no_enable_chunked_prefill: bool,
    /// CPU offload of weights: only 0.
    #[arg(
        long = "cpu-offload-gb",
        value_name = "GB",
        help_heading = "vLLM compatibility"
    )]
    pub cpu_offload_gb: Option<f64>,
    /// Accepted: Lantern's per-request log lines are at info level (RUST_LOG sets levels).
    #[arg(
        long = "disable-log-requests",
        visible_alias = "enable-log-requests",
        help_heading = "vLLM compatibility"
    )]
    pub log_requests: bool,
    /// Accepted: Lantern logs no periodic stats (scrape /metrics).
    #[arg(long = "disable-log-stats", help_heading = "vLLM compatibility")]
    pub disable_log_stats: bool,
}

impl VllmCompatArgs {
    /// Fails on a value Lantern does not support yet.
    pub fn check(&self) -> Result<()> {
        let one = |flag: &str, v: Option<usize>, what: &str| -> Result<()> {
            match v {
                Some(n) if n != 1 => Err(anyhow!("`{flag} {n}` is not supported yet: {what}")),
                _ => Ok(()),
            }
        };
        one(
            "--tensor-parallel-size",
            self.tensor_parallel_size,
            "a Lantern server runs on one GPU; run one replica per GPU behind a router",
        )?;
        one(
            "--pipeline-parallel-size",
            self.pipeline_parallel_size,
            "a Lantern server runs on one GPU",
        )?;
        one(
            "--data-parallel-size",
            self.data_parallel_size,
            "run one Lantern replica per GPU behind a router",
        )?;
        if self.no_enable_chunked_prefill {
            return Err(anyhow!(
                "`--no-enable-chunked-prefill` is not supported: Lantern always chunks prefill (set --max-num-batched-tokens)"
            ));
        }
        if let Some(gb) = self.cpu_offload_gb.filter(|g| *g != 0.0) {
            return Err(anyhow!(
                "`--cpu-offload-gb {gb}` is not supported yet: the weights must fit the device"
            ));
        }
        Ok(())
    }
}

/// The request defaults `--generation-config` asks for, read from the model at `model_path`
/// (a directory, or a file whose directory holds the model).
fn sampling_defaults(setting: &str, model_path: &std::path::Path) -> Result<SamplingDefaults> {
    let dir = match setting {
        "vllm" => return Ok(SamplingDefaults::default()),
        "auto" => {
            if model_path.is_dir() {
                model_path.to_path_buf()
            } else {
                // A GGUF file carries no generation config.
                return Ok(SamplingDefaults::default());
            }
        }
        path => std::path::PathBuf::from(path),
    };
    let file = dir.join("generation_config.json");
    if !file.exists() {
        if setting == "auto" {
            return Ok(SamplingDefaults::default());
        }
        return Err(anyhow!(
            "--generation-config {setting}: {} does not exist",
            file.display()
        ));
    }
    let text =
        std::fs::read_to_string(&file).with_context(|| format!("reading {}", file.display()))?;
    let v: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("{} is not JSON", file.display()))?;
    Ok(SamplingDefaults::from_generation_config(&v))
}

/// Tool calling and reasoning (vLLM's flags and parser names).
#[derive(Debug, Clone, Args)]
pub struct ChatOutputArgs {
    /// Let the model decide to call tools (`tool_choice: "auto"`, the default when a
    /// request has tools); needs --tool-call-parser.
    #[arg(long = "enable-auto-tool-choice")]
    pub enable_auto_tool_choice: bool,
    /// How tool calls are found in the model's output: hermes (Qwen2.5, Qwen3, Hermes),
    /// llama3_json (Llama 3.1-3.3), mistral, pythonic (Llama 3.2, Llama 4).
    #[arg(long = "tool-call-parser", value_name = "NAME")]
    pub tool_call_parser: Option<ToolParserKind>,
    /// Split the model's thinking into `reasoning_content`: qwen3, deepseek_r1.
    #[arg(long = "reasoning-parser", value_name = "NAME")]
    pub reasoning_parser: Option<ReasoningParserKind>,
}

impl ChatOutputArgs {
    pub fn tools(&self) -> Result<ToolConfig> {
        if self.enable_auto_tool_choice && self.tool_call_parser.is_none() {
            return Err(anyhow!(
                "--enable-auto-tool-choice requires --tool-call-parser (hermes, llama3_json, mistral or pythonic)"
            ));
        }
        Ok(ToolConfig {
            auto: self.enable_auto_tool_choice,
            parser: self.tool_call_parser,
        })
    }
}

/// Multi-LoRA flags (vLLM spellings accepted).
#[derive(Debug, Clone, Args)]
pub struct LoraArgs {
    /// Serve LoRA adapters (implied by --lora); adapters can then also be loaded at
    /// runtime with POST /v1/load_lora_adapter.
    #[arg(long = "enable-lora")]
    pub enable_lora: bool,
    /// A LoRA adapter to serve as NAME=PATH (a PEFT directory or a hub id). Repeatable;
    /// `--lora-modules a=PATH b=PATH` (vLLM's spelling, also JSON
    /// '{"name": "a", "path": "PATH"}') works too. Requests select it with `model: NAME`.
    #[arg(long = "lora", visible_alias = "lora-modules", num_args = 1.., value_name = "NAME=PATH")]
    pub lora: Vec<String>,
    /// Adapter slots on the device: how many different adapters one batch can mix.
    #[arg(long = "max-loras", default_value_t = 1)]
    pub max_loras: usize,
    /// Largest adapter rank accepted (device slots are padded to it).
    #[arg(long = "max-lora-rank", default_value_t = 16)]
    pub max_lora_rank: usize,
    /// Adapters kept in host memory (default: --max-loras); others are re-read from disk
    /// when a request needs them.
    #[arg(long = "max-cpu-loras")]
    pub max_cpu_loras: Option<usize>,
    /// A directory POST /v1/load_lora_adapter may load adapters from (repeatable): a
    /// `lora_path` must lie under one of them (absolute, or relative to a root). Without
    /// it, adapters load at run time from the Hugging Face hub only. --lora at start-up is
    /// not confined.
    #[arg(long = "lora-root", value_name = "DIR")]
    pub lora_root: Vec<std::path::PathBuf>,
}

impl LoraArgs {
    /// `(name, source)` of every --lora entry.
    pub fn modules(&self) -> Result<Vec<(String, String)>> {
        self.lora.iter().map(|m| parse_lora_module(m)).collect()
    }

    pub fn config(&self) -> Result<Option<lantern_engine::LoraConfig>> {
        if !self.enable_lora && self.lora.is_empty() {
            return Ok(None);
        }
        let c = lantern_engine::LoraConfig {
            max_loras: self.max_loras,
            max_lora_rank: self.max_lora_rank,
            max_cpu_loras: self.max_cpu_loras.unwrap_or(self.max_loras),
        };
        c.validate().map_err(|e| anyhow!(e))?;
        Ok(Some(c))
    }

    /// The --lora-root directories, resolved (symlinks followed) so that containment
    /// checks compare real paths.
    pub fn roots(&self) -> Result<Vec<std::path::PathBuf>> {
        self.lora_root
            .iter()
            .map(|r| {
                let c = std::fs::canonicalize(r)
                    .with_context(|| format!("--lora-root {}: cannot open it", r.display()))?;
                if !c.is_dir() {
                    return Err(anyhow!("--lora-root {}: not a directory", r.display()));
                }
                Ok(c)
            })
            .collect()
    }
}

/// `name=path` or `{"name": ..., "path": ...}`.
fn parse_lora_module(m: &str) -> Result<(String, String)> {
    let t = m.trim();
    if t.starts_with('{') {
        let v: serde_json::Value =
            serde_json::from_str(t).with_context(|| format!("--lora `{t}` is not valid JSON"))?;
        let get = |k: &str| v.get(k).and_then(|x| x.as_str()).map(str::to_string);
        return match (get("name"), get("path")) {
            (Some(n), Some(p)) => Ok((n, p)),
            _ => Err(anyhow!(
                "--lora `{t}`: JSON form needs string fields \"name\" and \"path\""
            )),
        };
    }
    match t.split_once('=') {
        Some((n, p)) if !n.is_empty() && !p.is_empty() => Ok((n.to_string(), p.to_string())),
        _ => Err(anyhow!(
            "--lora `{t}` is not NAME=PATH (e.g. --lora sql=/adapters/sql-lora)"
        )),
    }
}

/// Whether `host` (an address or a name) only reaches this machine.
fn is_loopback(host: &str) -> bool {
    match host.parse::<std::net::IpAddr>() {
        Ok(ip) => ip.is_loopback(),
        Err(_) => host.eq_ignore_ascii_case("localhost"),
    }
}

pub fn run(mut args: ServeArgs) -> Result<()> {
    args.vllm.check()?;
    if let Some(m) = args.model_tag.take() {
        args.model.model = Some(m);
    }
    if args.api_key.is_none() {
        args.api_key = std::env::var("VLLM_API_KEY").ok();
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .worker_threads(2)
        .build()
        .context("starting the async runtime")?;
    rt.block_on(serve(args))
}

async fn serve(args: ServeArgs) -> Result<()> {
    // Checked before anything loads: a bad --kv-events-config stops start-up at once.
    let kv_events = args.kv_events.settings()?;
    if kv_events.is_some() && args.engine.no_enable_prefix_caching {
        return Err(anyhow!(
            "--kv-events-config needs prefix caching: KV-cache events describe the prefix cache (drop --no-enable-prefix-caching)"
        ));
    }
    let state = Arc::new(AppState::new(ServerConfig {
        api_key: args.api_key.clone().filter(|k| !k.is_empty()),
        max_body_bytes: args.max_body_bytes,
        shutdown_timeout: Duration::from_secs(args.shutdown_timeout),
        header_read_timeout: Duration::from_secs(args.header_read_timeout.max(1)),
        body_read_timeout: Duration::from_secs(args.body_read_timeout.max(1)),
        max_connections: args.max_connections,
        tools: args.chat.tools()?,
        reasoning_parser: args.chat.reasoning_parser,
        debug_endpoints: args.enable_debug_endpoints,
        lora_roots: args.lora.roots()?,
        ..ServerConfig::default()
    }));
    let addr = format!("{}:{}", args.host, args.port);
    let listener = tokio::net::TcpListener::bind(&addr)
        .await
        .with_context(|| format!("binding {addr}"))?;
    tracing::info!(
        "listening on http://{addr} (GET /health answers 503 until the model is loaded)"
    );
    if state.config.api_key.is_none() && !is_loopback(&args.host) {
        tracing::warn!(
            "listening on {} without --api-key: anyone who can reach this address can use the model; set --api-key (or LANTERN_API_KEY / VLLM_API_KEY), or bind 127.0.0.1",
            args.host
        );
    }
    let st = state.clone();
    let load_args = args.clone();
    let loader = tokio::task::spawn_blocking(move || -> Result<Engine> {
        let t0 = std::time::Instant::now();
        // Load buffers and the KV cache on fresh pages (see `lantern_runtime::heap`).
        lantern_runtime::heap::set_allocator_phase(lantern_runtime::heap::AllocatorPhase::Loading);
        let null = load_args.null.enabled();
        let (loaded, model, default_name) = match load_args.null.load()? {
            Some((m, name)) => (m, name.clone(), name),
            None => {
                let (model, default_name) = load_args.model.resolve()?;
                let opts = load_args.model.load_options(true)?;
                tracing::info!(model = %model, fused_ops = opts.model.fused, "loading model");
                let l = load_model(&model, &opts).with_context(|| format!("loading {model}"))?;
                let m = EngineModel {
                    backend: l.model.into(),
                    tokenizer: l.tokenizer,
                    meta: l.meta,
                };
                (m, model, default_name)
            }
        };
        let mut engine_cfg = load_args
            .engine
            .engine_config(loaded.backend.device(), null)?;
        engine_cfg.lora = load_args.lora.config()?;
        engine_cfg.kv_events = kv_events;
        let modules = load_args.lora.modules()?;
        let template = match &loaded.meta.chat_template {
            Some(src) => Some(
                ChatTemplate::new(
                    src,
                    loaded.meta.bos_token.clone(),
                    loaded.meta.eos_token.clone(),
                )
                .map_err(|e| anyhow!("the model's chat template does not compile: {e}"))?,
            ),
            None => None,
        };
        let sampling_defaults = if null {
            SamplingDefaults::default()
        } else {
            sampling_defaults(&load_args.generation_config, &loaded.meta.path)?
        };
        if !sampling_defaults.is_empty() {
            tracing::info!(
                defaults = ?sampling_defaults,
                "request defaults from the model's generation_config.json (--generation-config vllm ignores them)"
            );
        }
        let cfg = loaded.meta.config.clone();
        let engine = Engine::start_with(loaded.backend, loaded.tokenizer, loaded.meta, engine_cfg)
            .map_err(|e| anyhow!(e))?;
        let h = engine.handle();
        let info = h.info();
        let names = if load_args.served_model_name.is_empty() {
            vec![default_name.clone()]
        } else {
            load_args.served_model_name.clone()
        };
        tracing::info!(
            "ready in {:.1}s: model {} ({:?}, {} layers, vocab {}), dtype {}, device {}, KV cache {} blocks x {} = {} tokens, max model len {}, max concurrency at full context {:.1}, served as {:?}",
            t0.elapsed().as_secs_f64(),
            model,
            cfg.architecture,
            cfg.num_hidden_layers,
            cfg.vocab_size,
            info.dtype,
            info.device,
            info.num_kv_blocks,
            info.block_size,
            info.kv_capacity_tokens(),
            info.max_model_len,
            info.kv_capacity_tokens() as f64 / info.max_model_len as f64,
            names
        );
        for (name, source) in &modules {
            if names.contains(name) {
                return Err(anyhow!(
                    "--lora {name}=...: `{name}` is also the base model's served name; rename the adapter"
                ));
            }
            h.load_lora_blocking(name, source)
                .with_context(|| format!("--lora {name}={source}"))?;
        }
        // Loading read and converted the weights through temporary buffers the allocator
        // would otherwise keep for the life of the process.
        let rss_loaded = lantern_runtime::heap::resident_bytes();
        lantern_runtime::heap::release_free_heap();
        lantern_runtime::heap::set_allocator_phase(lantern_runtime::heap::AllocatorPhase::Serving);
        if let (Some(a), Some(b)) = (rss_loaded, lantern_runtime::heap::resident_bytes()) {
            tracing::info!(
                "resident memory after loading: {} MiB ({} MiB of load-time buffers returned to the OS)",
                b >> 20,
                a.saturating_sub(b) >> 20
            );
        }
        let root = if null {
            default_name
        } else {
            load_args.model.model.clone().unwrap_or(default_name)
        };
        st.ready
            .set(Ready {
                engine: h,
                template,
                served_names: names,
                root,
                sampling_defaults,
                prompt_byte_cap: Default::default(),
            })
            .map_err(|_| anyhow!("model loaded twice"))?;
        Ok(engine)
    });
    let server_state = state.clone();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        lantern_server::serve(listener, server_state, async move {
            tokio::select! {
                _ = lantern_server::shutdown_signal() => {},
                _ = stop_rx => {},
            }
        })
        .await
    });
    let engine = match loader.await {
        Ok(Ok(engine)) => Some(engine),
        Ok(Err(e)) => {
            let _ = stop_tx.send(());
            let _ = server.await;
            return Err(e);
        }
        Err(e) => {
            let _ = stop_tx.send(());
            return Err(anyhow!("model loading task failed: {e}"));
        }
    };
    let r = server
        .await
        .map_err(|e| anyhow!("server task failed: {e}"))?;
    if let Some(e) = engine {
        if args.null.enabled() {
            // The last snapshot the engine published (it may have stopped already).
            let snap = e.handle().snapshot();
            tracing::info!("{}", crate::throughput::step_summary(&snap, None));
        }
        tokio::task::spawn_blocking(move || e.shutdown()).await.ok();
    }
    r.context("serving")?;
    tracing::info!("bye");
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn lora_modules_parse_both_spellings() {
        assert_eq!(
            parse_lora_module("sql=/a/b").unwrap(),
            ("sql".to_string(), "/a/b".to_string())
        );
        assert_eq!(
            parse_lora_module(r#"{"name": "x", "path": "org/adapter", "base_model_name": "m"}"#)
                .unwrap(),
            ("x".to_string(), "org/adapter".to_string())
        );
        assert!(parse_lora_module("nopath").is_err());
        assert!(parse_lora_module("=p").is_err());
        assert!(parse_lora_module(r#"{"name": "x"}"#).is_err());
    }
}
