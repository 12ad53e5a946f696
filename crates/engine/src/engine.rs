//! The engine thread and its handle.

use crate::detok::IncrementalDetokenizer;
use crate::error::{EngineError, SubmitError};
use crate::lora::{check_name, now_unix, HostLoras, LoraConfig, LoraError, LoraInfo, LoraRegistry};
use crate::params::{
    FinishReason, GenerationParams, RequestEvent, RequestTiming, StopReason, TokenDelta,
    TokenLogprob, Usage,
};
use crate::stop::StopMatcher;
use lantern_models::{LoadedModel, LoraAdapter, ModelConfig, ModelMeta};
use lantern_runtime::{
    sampler, KvCacheSize, ModelBackend, ModelRunner, RunnerConfig, SampleRow, SeqChunk,
};
use lantern_scheduler::{
    AddRequestError, FinishReason as SchedFinish, SchedRequest, Scheduler, SchedulerConfig,
    SchedulingPolicy,
};
use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};
use tokenizers::Tokenizer;
use tokio::sync::{mpsc as tmpsc, oneshot, watch};

/// Engine settings (the `lantern serve` flags that shape scheduling and memory).
#[derive(Debug, Clone, PartialEq)]
pub struct EngineConfig {
    pub max_num_seqs: usize,
    pub max_num_batched_tokens: usize,
    pub block_size: usize,
    pub kv_cache: KvCacheSize,
    /// Cap on prompt + output tokens; defaults to the model's context length.
    pub max_model_len: Option<usize>,
    pub max_waiting_requests: usize,
    pub enable_prefix_caching: bool,
    pub long_prefill_token_threshold: usize,
    pub policy: SchedulingPolicy,
    /// Base seed for requests that give none (random when `None`).
    pub seed: Option<u64>,
    /// LoRA adapters (`None` = disabled: requests for adapters are refused).
    pub lora: Option<LoraConfig>,
    /// Replay decode-only steps through captured CUDA graphs (CUDA only; the CLI turns this on
    /// for CUDA devices unless `--enforce-eager`).
    pub cuda_graphs: bool,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            max_num_seqs: 256,
            max_num_batched_tokens: 2048,
            block_size: 16,
            kv_cache: KvCacheSize::Bytes(1 << 30),
            max_model_len: None,
            max_waiting_requests: 1024,
            enable_prefix_caching: true,
            long_prefill_token_threshold: 0,
            policy: SchedulingPolicy::Fcfs,
            seed: None,
            lora: None,
            cuda_graphs: false,
        }
    }
}

/// Facts about the served model, readable without asking the engine thread.
#[derive(Debug, Clone)]
pub struct ModelInfo {
    pub max_model_len: usize,
    pub vocab_size: usize,
    pub eos_token_ids: Vec<u32>,
    /// Usable KV blocks (the null block excluded).
    pub num_kv_blocks: usize,
    pub block_size: usize,
    pub meta: ModelMeta,
    pub dtype: String,
    pub device: String,
}

impl ModelInfo {
    /// Tokens the KV cache holds.
    pub fn kv_capacity_tokens(&self) -> usize {
        self.num_kv_blocks * self.block_size
    }
}

/// Stats of one engine step.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct StepStats {
    pub num_running: usize,
    pub num_waiting: usize,
    pub num_batched_tokens: usize,
    pub num_prefill_tokens: usize,
    pub num_decode_tokens: usize,
    pub kv_blocks_used: usize,
    pub kv_blocks_free: usize,
    pub duration_s: f64,
}

/// Cumulative engine counters plus the latest step, published after every step.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EngineSnapshot {
    pub steps: u64,
    pub last_step: StepStats,
    pub kv_blocks_total: usize,
    pub prompt_tokens_total: u64,
    pub generation_tokens_total: u64,
    pub prefix_cache_queries_tokens: u64,
    pub prefix_cache_hits_tokens: u64,
    pub num_preemptions: u64,
    pub finished_stop: u64,
    pub finished_length: u64,
    pub finished_abort: u64,
    pub finished_error: u64,
    /// Adapter copies from host memory into a device slot, and their total time.
    pub lora_slot_loads: u64,
    pub lora_slot_load_seconds: f64,
    /// Adapter reads from disk into host memory (at load time and on demand), and their
    /// total time.
    pub lora_disk_loads: u64,
    pub lora_disk_load_seconds: f64,
    /// Adapters with weights in host memory now.
    pub loras_in_host_memory: usize,
    /// Wall time of all steps (schedule -> execute -> sample -> update), and its parts.
    pub step_seconds_total: f64,
    pub step_phases: StepPhaseSeconds,
    /// Simulated device time of all steps (`--null-device`; 0 on a real device). The host
    /// path's share of a step is `step_seconds_total - simulated_device_seconds_total`.
    pub simulated_device_seconds_total: f64,
}

/// Cumulative wall time of each phase of the engine steps.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct StepPhaseSeconds {
    /// `Scheduler::schedule` and LoRA slot loads.
    pub schedule: f64,
    /// Batch preparation and the forward pass (`ModelRunner::execute`; with the null device
    /// this includes the simulated device time).
    pub execute: f64,
    /// Building the sampling rows and `sampler::sample`.
    pub sample: f64,
    /// `Scheduler::update`, detokenization, stop strings, events, finishing requests.
    pub update: f64,
}

enum Command {
    Add {
        group: u64,
        prompt: Vec<u32>,
        params: Box<GenerationParams>,
        events: tmpsc::UnboundedSender<RequestEvent>,
        reply: oneshot::Sender<Result<(), SubmitError>>,
        arrival: Instant,
    },
    Abort(u64),
    Snapshot(oneshot::Sender<EngineSnapshot>),
    Shutdown,
    /// A validated adapter (read by the caller's thread) joins the host cache.
    AddLora {
        id: u32,
        dir: PathBuf,
        adapter: Arc<LoraAdapter>,
        seconds: f64,
        reply: oneshot::Sender<()>,
    },
    /// The user unloaded an adapter: in-flight requests finish, then it is dropped.
    RemoveLora(u32),
    /// A background disk read of an adapter finished.
    LoraLoaded {
        id: u32,
        result: Result<Arc<LoraAdapter>, String>,
        seconds: f64,
    },
}

/// The stream of events of one submitted request. Dropping it cancels the request.
#[derive(Debug)]
pub struct RequestStream {
    id: u64,
    rx: tmpsc::UnboundedReceiver<RequestEvent>,
    cmd: mpsc::Sender<Command>,
    done: bool,
}

impl RequestStream {
    /// The request id (as used in logs).
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The next event; `None` once every completion finished.
    pub async fn next(&mut self) -> Option<RequestEvent> {
        let ev = self.rx.recv().await;
        if ev.is_none() {
            self.done = true;
        }
        ev
    }

    /// Blocking version of [`RequestStream::next`] (not for async contexts).
    pub fn blocking_next(&mut self) -> Option<RequestEvent> {
        let ev = self.rx.blocking_recv();
        if ev.is_none() {
            self.done = true;
        }
        ev
    }
}

impl Drop for RequestStream {
    fn drop(&mut self) {
        if !self.done {
            // The engine may already be gone; then there is nothing to cancel.
            let _ = self.cmd.send(Command::Abort(self.id));
        }
    }
}

/// A cheap, cloneable handle to the engine thread.
#[derive(Debug, Clone)]
pub struct EngineHandle {
    cmd: mpsc::Sender<Command>,
    next_id: Arc<AtomicU64>,
    info: Arc<ModelInfo>,
    tokenizer: Arc<Tokenizer>,
    snapshot: watch::Receiver<EngineSnapshot>,
    loras: Arc<RwLock<LoraRegistry>>,
    lora_cfg: Option<LoraConfig>,
}

impl EngineHandle {
    /// The LoRA limits, `None` when LoRA is disabled.
    pub fn lora_config(&self) -> Option<LoraConfig> {
        self.lora_cfg
    }

    fn registry(&self) -> std::sync::RwLockReadGuard<'_, LoraRegistry> {
        self.loras.read().unwrap_or_else(|e| e.into_inner())
    }

    fn registry_mut(&self) -> std::sync::RwLockWriteGuard<'_, LoraRegistry> {
        self.loras.write().unwrap_or_else(|e| e.into_inner())
    }

    /// The id of a loaded adapter (for [`GenerationParams::lora_id`]).
    pub fn lora_id(&self, name: &str) -> Option<u32> {
        self.registry().id_of(name)
    }

    /// Loaded adapters, by name.
    pub fn loras(&self) -> Vec<LoraInfo> {
        self.registry().list()
    }

    /// Reads a PEFT adapter from `source` (a directory or a hub id), checks it against the
    /// base model and `--max-lora-rank`, and registers it as `name`. Blocks on disk (and
    /// network) I/O: call it from a blocking context. Requests that do not use the adapter
    /// are not held up.
    pub fn load_lora_blocking(&self, name: &str, source: &str) -> Result<LoraInfo, LoraError> {
        let cfg = self.lora_cfg.ok_or(LoraError::Disabled)?;
        check_name(name)?;
        let id = self.registry_mut().reserve(name)?;
        let t0 = Instant::now();
        let loaded = LoraAdapter::resolve_source(source).and_then(|dir| {
            LoraAdapter::load(&dir, &self.info.meta.config, cfg.max_lora_rank).map(|a| (dir, a))
        });
        let (dir, adapter) = match loaded {
            Ok(x) => x,
            Err(e) => {
                self.registry_mut().cancel(name);
                return Err(LoraError::Invalid {
                    name: name.to_string(),
                    message: e.to_string(),
                });
            }
        };
        let seconds = t0.elapsed().as_secs_f64();
        let info = LoraInfo {
            id,
            name: name.to_string(),
            source: source.to_string(),
            path: dir.clone(),
            rank: adapter.rank,
            created: now_unix(),
        };
        let (tx, rx) = oneshot::channel();
        let sent = self.cmd.send(Command::AddLora {
            id,
            dir,
            adapter: Arc::new(adapter),
            seconds,
            reply: tx,
        });
        if sent.is_err() || rx.blocking_recv().is_err() {
            self.registry_mut().cancel(name);
            return Err(LoraError::EngineStopped);
        }
        self.registry_mut().publish(info.clone());
        tracing::info!(
            name,
            source,
            id,
            rank = info.rank,
            seconds,
            "LoRA adapter loaded"
        );
        Ok(info)
    }

    /// Unregisters an adapter: new requests naming it are refused at once; requests already
    /// accepted finish normally, then its memory is released.
    pub fn unload_lora(&self, name: &str) -> Result<(), LoraError> {
        if self.lora_cfg.is_none() {
            return Err(LoraError::Disabled);
        }
        let id = self
            .registry_mut()
            .remove(name)
            .ok_or_else(|| LoraError::NotFound(name.to_string()))?;
        self.cmd
            .send(Command::RemoveLora(id))
            .map_err(|_| LoraError::EngineStopped)?;
        tracing::info!(name, id, "LoRA adapter unloaded");
        Ok(())
    }
    pub fn info(&self) -> &ModelInfo {
        &self.info
    }

    pub fn tokenizer(&self) -> &Arc<Tokenizer> {
        &self.tokenizer
    }

    /// The latest published stats.
    pub fn snapshot(&self) -> EngineSnapshot {
        self.snapshot.borrow().clone()
    }

    fn check(&self, prompt: &[u32], params: &GenerationParams) -> Result<(), SubmitError> {
        params.validate(self.info.vocab_size)?;
        if prompt.is_empty() {
            return Err(SubmitError::InvalidParam {
                field: "prompt".into(),
                message: "the prompt is empty; send at least one token".into(),
            });
        }
        if let Some(&bad) = prompt.iter().find(|&&t| t as usize >= self.info.vocab_size) {
            return Err(SubmitError::InvalidParam {
                field: "prompt".into(),
                message: format!(
                    "token id {bad} is out of the vocabulary (0..{})",
                    self.info.vocab_size
                ),
            });
        }
        let max_len = self.info.max_model_len;
        let max_tokens = params.max_tokens.unwrap_or(1);
        if prompt.len() + max_tokens > max_len {
            return Err(SubmitError::TooLong(match params.max_tokens {
                Some(m) => format!(
                    "this model's maximum context length is {max_len} tokens, but the request has {} prompt tokens and max_tokens {m} ({} in total); shorten the prompt or lower max_tokens",
                    prompt.len(),
                    prompt.len() + m
                ),
                None => format!(
                    "this model's maximum context length is {max_len} tokens, but the prompt has {} tokens; shorten the prompt",
                    prompt.len()
                ),
            }));
        }
        Ok(())
    }

    /// Adds a request. Resolves once the engine accepted it (or refused: overload, too long).
    pub async fn submit(
        &self,
        prompt: Vec<u32>,
        params: GenerationParams,
    ) -> Result<RequestStream, SubmitError> {
        let (stream, reply) = self.send_add(prompt, params)?;
        match reply.await {
            Ok(Ok(())) => Ok(stream),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(SubmitError::EngineStopped),
        }
    }

    /// Blocking version of [`EngineHandle::submit`] (not for async contexts).
    pub fn submit_blocking(
        &self,
        prompt: Vec<u32>,
        params: GenerationParams,
    ) -> Result<RequestStream, SubmitError> {
        let (stream, reply) = self.send_add(prompt, params)?;
        match reply.blocking_recv() {
            Ok(Ok(())) => Ok(stream),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(SubmitError::EngineStopped),
        }
    }

    #[allow(clippy::type_complexity)]
    fn send_add(
        &self,
        prompt: Vec<u32>,
        params: GenerationParams,
    ) -> Result<(RequestStream, oneshot::Receiver<Result<(), SubmitError>>), SubmitError> {
        self.check(&prompt, &params)?;
        let group = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = tmpsc::unbounded_channel();
        let (reply_tx, reply_rx) = oneshot::channel();
        self.cmd
            .send(Command::Add {
                group,
                prompt,
                params: Box::new(params),
                events: tx,
                reply: reply_tx,
                arrival: Instant::now(),
            })
            .map_err(|_| SubmitError::EngineStopped)?;
        Ok((
            RequestStream {
                id: group,
                rx,
                cmd: self.cmd.clone(),
                done: false,
            },
            reply_rx,
        ))
    }

    /// Stats read by the engine thread itself between steps: reflects every event already
    /// delivered (unlike [`EngineHandle::snapshot`], published at the end of each step).
    pub async fn fresh_snapshot(&self) -> Result<EngineSnapshot, SubmitError> {
        let (tx, rx) = oneshot::channel();
        self.cmd
            .send(Command::Snapshot(tx))
            .map_err(|_| SubmitError::EngineStopped)?;
        rx.await.map_err(|_| SubmitError::EngineStopped)
    }

    /// Blocking version of [`EngineHandle::fresh_snapshot`].
    pub fn fresh_snapshot_blocking(&self) -> Result<EngineSnapshot, SubmitError> {
        let (tx, rx) = oneshot::channel();
        self.cmd
            .send(Command::Snapshot(tx))
            .map_err(|_| SubmitError::EngineStopped)?;
        rx.blocking_recv().map_err(|_| SubmitError::EngineStopped)
    }

    /// Asks the engine to stop: running requests are aborted, the thread exits.
    pub fn shutdown(&self) {
        let _ = self.cmd.send(Command::Shutdown);
    }
}

/// The engine: its handle plus the thread, joined on [`Engine::shutdown`].
#[derive(Debug)]
pub struct Engine {
    handle: EngineHandle,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Engine {
    /// Allocates the KV cache, builds the scheduler and starts the engine thread.
    pub fn start(loaded: LoadedModel, cfg: EngineConfig) -> Result<Self, SubmitError> {
        Self::try_start(loaded, cfg).map_err(|e| {
            tracing::error!(error = %e, "engine failed to start");
            SubmitError::EngineStopped
        })
    }

    /// Like [`Engine::start`] but returns the underlying error message.
    pub fn try_start(loaded: LoadedModel, cfg: EngineConfig) -> Result<Self, String> {
        let LoadedModel {
            model,
            tokenizer,
            meta,
        } = loaded;
        Self::try_start_with(model.into(), tokenizer, meta, cfg)
    }

    /// Starts an engine on any [`ModelBackend`] (e.g. the null device's stand-in, whose
    /// `meta` describes the served tokenizer). The vocabulary is the backend's logits width.
    pub fn try_start_with(
        model: ModelBackend,
        tokenizer: Tokenizer,
        meta: ModelMeta,
        cfg: EngineConfig,
    ) -> Result<Self, String> {
        let model_max = meta.config.max_position_embeddings;
        let max_model_len = cfg.max_model_len.unwrap_or(model_max);
        if max_model_len > model_max {
            return Err(format!(
                "--max-model-len {max_model_len} is larger than the model's context length {model_max}"
            ));
        }
        let dtype = format!("{:?}", model.dtype()).to_lowercase();
        let device = if let ModelBackend::Null(m) = &model {
            format!(
                "null device (simulated {} on {})",
                m.spec().model_name,
                m.spec().accelerator.name
            )
        } else if model.device().is_cpu() {
            "cpu".to_string()
        } else {
            format!("{:?}", model.device().location())
        };
        let vocab_size = model.logits_vocab();
        if let Some(l) = &cfg.lora {
            l.validate()?;
        }
        let model_config = meta.config.clone();
        let mut kv_cache = cfg.kv_cache;
        if let (KvCacheSize::GpuMemory(budget), Some(l)) = (&mut kv_cache, &cfg.lora) {
            // The adapter slots are allocated after the KV cache: keep their bytes out of it.
            budget.lora = Some((l.max_loras, l.max_lora_rank));
        }
        let mut runner = ModelRunner::new(
            model,
            RunnerConfig {
                block_size: cfg.block_size,
                kv_cache,
            },
        )
        .map_err(|e| e.to_string())?;
        if let Some(l) = &cfg.lora {
            runner
                .enable_lora(l.max_loras, l.max_lora_rank)
                .map_err(|e| e.to_string())?;
            tracing::info!(
                "LoRA enabled: {} device slots of rank <= {}, {} adapters in host memory",
                l.max_loras,
                l.max_lora_rank,
                l.max_cpu_loras
            );
        }
        if cfg.cuda_graphs {
            runner
                .enable_cuda_graphs(cfg.max_num_seqs)
                .map_err(|e| e.to_string())?;
            tracing::info!(
                "CUDA graphs on: decode-only steps of up to {} sequences replay captured graphs",
                cfg.max_num_seqs
            );
        }
        let num_blocks = runner.num_blocks();
        let sched = Scheduler::new(SchedulerConfig {
            max_num_seqs: cfg.max_num_seqs,
            max_num_batched_tokens: cfg.max_num_batched_tokens,
            block_size: cfg.block_size,
            num_blocks,
            max_model_len,
            max_waiting_requests: cfg.max_waiting_requests,
            enable_prefix_caching: cfg.enable_prefix_caching,
            long_prefill_token_threshold: cfg.long_prefill_token_threshold,
            policy: cfg.policy,
            max_loras: cfg.lora.map_or(0, |l| l.max_loras),
        })
        .map_err(|e| e.to_string())?;
        let usable = num_blocks - 1;
        let tokens = usable * cfg.block_size;
        tracing::info!(
            "KV cache: {usable} blocks x {} tokens = {tokens} tokens; max concurrency at full context ({max_model_len} tokens): {:.2}",
            cfg.block_size,
            tokens as f64 / max_model_len as f64
        );
        let info = Arc::new(ModelInfo {
            max_model_len,
            vocab_size,
            eos_token_ids: meta.eos_token_ids.clone(),
            num_kv_blocks: usable,
            block_size: cfg.block_size,
            meta,
            dtype,
            device,
        });
        let tokenizer = Arc::new(tokenizer);
        let (cmd_tx, cmd_rx) = mpsc::channel();
        let (snap_tx, snap_rx) = watch::channel(EngineSnapshot {
            kv_blocks_total: usable,
            ..EngineSnapshot::default()
        });
        let base_seed = cfg.seed.unwrap_or_else(rand::random);
        let core = EngineCore {
            runner,
            sched,
            cmd_rx,
            cmd_tx: cmd_tx.clone(),
            host_loras: HostLoras::new(cfg.lora.map_or(0, |l| l.max_cpu_loras)),
            pending_groups: HashSet::new(),
            lora_cfg: cfg.lora,
            model_config,
            snap_tx,
            snapshot: EngineSnapshot {
                kv_blocks_total: usable,
                ..EngineSnapshot::default()
            },
            reqs: HashMap::new(),
            deferred: HashMap::new(),
            groups: HashMap::new(),
            tokenizer: tokenizer.clone(),
            info: info.clone(),
            base_seed,
            shutting_down: false,
        };
        let thread = std::thread::Builder::new()
            .name("lantern-engine".into())
            .spawn(move || core.run())
            .map_err(|e| format!("cannot spawn the engine thread: {e}"))?;
        Ok(Self {
            handle: EngineHandle {
                cmd: cmd_tx,
                next_id: Arc::new(AtomicU64::new(1)),
                info,
                tokenizer,
                snapshot: snap_rx,
                loras: Arc::new(RwLock::new(LoraRegistry::default())),
                lora_cfg: cfg.lora,
            },
            thread: Some(thread),
        })
    }

    pub fn handle(&self) -> EngineHandle {
        self.handle.clone()
    }

    /// Stops the engine thread (aborting what still runs) and waits for it.
    pub fn shutdown(mut self) {
        self.handle.shutdown();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.handle.shutdown();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Decoding state of one sequence (one completion of a group).
struct SeqState {
    group: u64,
    index: usize,
    /// LoRA adapter id (0 = base model).
    lora_id: u32,
    prompt: Arc<Vec<u32>>,
    params: Arc<GenerationParams>,
    seed: u64,
    max_tokens: usize,
    detok: IncrementalDetokenizer,
    stop: StopMatcher,
    events: tmpsc::UnboundedSender<RequestEvent>,
    arrival: Instant,
    first_scheduled: Option<Instant>,
    first_token: Option<Instant>,
    num_output: usize,
    num_cached: usize,
    /// Prompt logprobs collected so far (index = prompt position); `Some` when asked for.
    prompt_lps: Option<Vec<Option<TokenLogprob>>>,
    prompt_lps_sent: bool,
}

/// Siblings of an `n > 1` request waiting for the first one's prompt to be cached.
struct Deferred {
    leader: u64,
    children: Vec<u64>,
}

struct EngineCore {
    runner: ModelRunner,
    sched: Scheduler,
    cmd_rx: mpsc::Receiver<Command>,
    /// For background adapter loads to report back on.
    cmd_tx: mpsc::Sender<Command>,
    host_loras: HostLoras,
    /// Groups whose adapter weights are being read from disk (not in the scheduler yet).
    pending_groups: HashSet<u64>,
    lora_cfg: Option<LoraConfig>,
    model_config: ModelConfig,
    snap_tx: watch::Sender<EngineSnapshot>,
    snapshot: EngineSnapshot,
    reqs: HashMap<u64, SeqState>,
    /// group -> deferred siblings (not yet in the scheduler; their state is in `reqs`).
    deferred: HashMap<u64, Deferred>,
    /// group -> sequence ids still alive.
    groups: HashMap<u64, Vec<u64>>,
    tokenizer: Arc<Tokenizer>,
    info: Arc<ModelInfo>,
    base_seed: u64,
    shutting_down: bool,
}

fn seq_id(group: u64, index: usize) -> u64 {
    (group << 8) | index as u64
}

impl EngineCore {
    fn run(mut self) {
        loop {
            // Deferred siblings of a group still waiting for its adapter cannot move either.
            let idle = !self.sched.has_unfinished()
                && self
                    .deferred
                    .keys()
                    .all(|g| self.pending_groups.contains(g));
            if idle {
                if self.shutting_down {
                    break;
                }
                match self.cmd_rx.recv() {
                    Ok(c) => self.handle_command(c),
                    Err(_) => break,
                }
            }
            loop {
                match self.cmd_rx.try_recv() {
                    Ok(c) => self.handle_command(c),
                    Err(mpsc::TryRecvError::Empty) => break,
                    Err(mpsc::TryRecvError::Disconnected) => {
                        self.shutting_down = true;
                        break;
                    }
                }
            }
            if self.shutting_down {
                self.abort_all();
                break;
            }
            self.reap_cancelled();
            if !self.sched.has_unfinished() {
                // Idle: publish what the commands changed (aborts free blocks too).
                self.refresh_snapshot();
                let _ = self.snap_tx.send(self.snapshot.clone());
                continue;
            }
            if !self.step() {
                // Nothing could be scheduled; wait briefly for commands instead of spinning.
                if let Ok(c) = self.cmd_rx.recv_timeout(Duration::from_millis(5)) {
                    self.handle_command(c);
                }
            }
        }
        tracing::info!("engine thread stopped");
    }

    fn handle_command(&mut self, c: Command) {
        match c {
            Command::Add {
                group,
                prompt,
                params,
                events,
                reply,
                arrival,
            } => {
                let r = self.add(group, prompt, *params, events, arrival);
                let _ = reply.send(r);
            }
            Command::Abort(group) => self.abort_group(group),
            Command::Snapshot(reply) => {
                self.refresh_snapshot();
                let _ = reply.send(self.snapshot.clone());
            }
            Command::Shutdown => self.shutting_down = true,
            Command::AddLora {
                id,
                dir,
                adapter,
                seconds,
                reply,
            } => {
                self.host_loras.insert(id, dir, adapter);
                self.snapshot.lora_disk_loads += 1;
                self.snapshot.lora_disk_load_seconds += seconds;
                let _ = reply.send(());
            }
            Command::RemoveLora(id) => {
                if self.host_loras.remove(id) {
                    self.sched.evict_lora(id);
                }
                self.start_lora_loads();
            }
            Command::LoraLoaded {
                id,
                result,
                seconds,
            } => self.on_lora_loaded(id, result, seconds),
        }
    }

    /// Starts background disk reads for adapters whose load waited for host room.
    fn start_lora_loads(&mut self) {
        for (id, dir) in self.host_loras.pump() {
            self.spawn_lora_load(id, dir);
        }
    }

    fn spawn_lora_load(&mut self, id: u32, dir: PathBuf) {
        let tx = self.cmd_tx.clone();
        let cfg = self.model_config.clone();
        let max_rank = self.lora_cfg.map_or(0, |l| l.max_lora_rank);
        let spawned = std::thread::Builder::new()
            .name("lantern-lora-load".into())
            .spawn(move || {
                let t0 = Instant::now();
                let result = LoraAdapter::load(&dir, &cfg, max_rank)
                    .map(Arc::new)
                    .map_err(|e| e.to_string());
                let _ = tx.send(Command::LoraLoaded {
                    id,
                    result,
                    seconds: t0.elapsed().as_secs_f64(),
                });
            });
        if let Err(e) = spawned {
            tracing::error!(error = %e, "cannot spawn an adapter loader thread");
            self.on_lora_loaded(id, Err(format!("cannot spawn a loader thread: {e}")), 0.0);
        }
    }

    /// Puts the groups that waited for adapter `id` into the scheduler (or fails them).
    fn on_lora_loaded(&mut self, id: u32, result: Result<Arc<LoraAdapter>, String>, seconds: f64) {
        let ok = result.is_ok();
        let pending = match self.host_loras.get_mut(id) {
            Some(e) => std::mem::take(&mut e.pending),
            None => Vec::new(),
        };
        match result {
            Ok(a) => {
                self.snapshot.lora_disk_loads += 1;
                self.snapshot.lora_disk_load_seconds += seconds;
                self.host_loras.loaded(id, Some(a));
            }
            Err(e) => {
                tracing::error!(adapter = id, error = %e, "reading a LoRA adapter from disk failed");
                self.host_loras.loaded(id, None);
            }
        }
        for group in pending {
            if !self.pending_groups.remove(&group) {
                continue; // aborted meanwhile
            }
            let leader = seq_id(group, 0);
            if !ok {
                self.fail_group(group, EngineError::AdapterLoad);
                continue;
            }
            if let Err(e) = self.schedule_seq(leader) {
                tracing::warn!(error = %e, "cannot schedule a request after its adapter loaded");
                self.fail_group(group, EngineError::Execution);
            }
        }
        self.start_lora_loads();
    }

    fn fail_group(&mut self, group: u64, err: EngineError) {
        self.deferred.remove(&group);
        let ids = self.groups.get(&group).cloned().unwrap_or_default();
        for id in ids {
            self.fail_seq(id, err.clone());
        }
    }

    /// The scheduler request of a known sequence.
    fn sched_request(&self, id: u64) -> Option<SchedRequest> {
        let s = self.reqs.get(&id)?;
        // Prompt logprobs need logits for every prompt position: keep the group off shared
        // cache entries (a private salt); siblings still share the leader's blocks.
        let cache_salt = if s.params.prompt_logprobs.is_some() {
            Some(format!("\u{0}prompt-logprobs-{}", s.group))
        } else {
            s.params.cache_salt.clone()
        };
        Some(SchedRequest {
            id,
            prompt_token_ids: s.prompt.to_vec(),
            max_tokens: s.max_tokens,
            priority: s.params.priority,
            lora_id: s.lora_id,
            cache_salt,
        })
    }

    fn schedule_seq(&mut self, id: u64) -> Result<(), SubmitError> {
        let req = self.sched_request(id).ok_or(SubmitError::EngineStopped)?;
        self.sched.add_request(req).map_err(|e| match e {
            AddRequestError::QueueFull { .. } => SubmitError::Overloaded(e.to_string()),
            AddRequestError::TooLong { .. } | AddRequestError::ExceedsKvCache { .. } => {
                SubmitError::TooLong(e.to_string())
            }
            other => SubmitError::InvalidParam {
                field: "prompt".into(),
                message: other.to_string(),
            },
        })
    }

    /// A sequence's state is gone: release its hold on its adapter.
    fn release_lora(&mut self, lora_id: u32) {
        if lora_id != 0 {
            if self.host_loras.unpin(lora_id) {
                self.sched.evict_lora(lora_id);
            }
            self.start_lora_loads();
        }
    }

    fn add(
        &mut self,
        group: u64,
        prompt: Vec<u32>,
        params: GenerationParams,
        events: tmpsc::UnboundedSender<RequestEvent>,
        arrival: Instant,
    ) -> Result<(), SubmitError> {
        if self.shutting_down {
            return Err(SubmitError::EngineStopped);
        }
        let n = params.n;
        let waiting = self.sched.num_waiting();
        let max_waiting = self.sched.config().max_waiting_requests;
        if waiting + n > max_waiting {
            return Err(SubmitError::Overloaded(format!(
                "{waiting} requests are waiting (limit {max_waiting}); retry later"
            )));
        }
        let lora_id = params.lora_id;
        if lora_id != 0 && !self.host_loras.is_live(lora_id) {
            return Err(SubmitError::UnknownAdapter);
        }
        let max_tokens = params
            .max_tokens
            .unwrap_or_else(|| self.info.max_model_len.saturating_sub(prompt.len()));
        let prompt = Arc::new(prompt);
        let params = Arc::new(params);
        let group_seed = params
            .seed
            .unwrap_or_else(|| self.base_seed ^ group.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let leader = seq_id(group, 0);
        let mut ids = Vec::with_capacity(n);
        for index in 0..n {
            let id = seq_id(group, index);
            let detok = match IncrementalDetokenizer::new(
                self.tokenizer.clone(),
                &prompt,
                params.skip_special_tokens,
            ) {
                Ok(d) => d,
                Err(e) => {
                    tracing::error!(error = %e, "cannot start detokenizer");
                    for id in &ids {
                        self.reqs.remove(id);
                    }
                    return Err(SubmitError::InvalidParam {
                        field: "prompt".into(),
                        message: "the prompt cannot be decoded by the tokenizer".into(),
                    });
                }
            };
            self.reqs.insert(
                id,
                SeqState {
                    group,
                    index,
                    lora_id,
                    prompt: prompt.clone(),
                    params: params.clone(),
                    seed: group_seed.wrapping_add(index as u64),
                    max_tokens,
                    detok,
                    stop: StopMatcher::new(&params.stop, params.include_stop_str_in_output),
                    events: events.clone(),
                    arrival,
                    first_scheduled: None,
                    first_token: None,
                    num_output: 0,
                    num_cached: 0,
                    prompt_lps: (index == 0 && params.prompt_logprobs.is_some())
                        .then(|| vec![None]),
                    prompt_lps_sent: false,
                },
            );
            ids.push(id);
        }
        // The adapter's weights must be in host memory before the scheduler may pick the
        // request (it copies them into a device slot right before the step).
        let adapter_ready = lora_id == 0
            || self
                .host_loras
                .get(lora_id)
                .is_some_and(|e| e.host.is_some());
        if adapter_ready {
            if let Err(e) = self.schedule_seq(leader) {
                for id in &ids {
                    self.reqs.remove(id);
                }
                return Err(e);
            }
        } else {
            self.pending_groups.insert(group);
            if let Some(e) = self.host_loras.get_mut(lora_id) {
                e.pending.push(group);
            }
            if let Some(dir) = self.host_loras.request_load(lora_id) {
                self.spawn_lora_load(lora_id, dir);
            }
        }
        if lora_id != 0 {
            self.host_loras.pin(lora_id, n);
        }
        if n > 1 {
            self.deferred.insert(
                group,
                Deferred {
                    leader,
                    children: ids[1..].to_vec(),
                },
            );
        }
        self.groups.insert(group, ids);
        Ok(())
    }

    /// Releases deferred siblings once their leader's prompt is in the cache (or it ended).
    fn release_deferred(&mut self) {
        let ready: Vec<u64> = self
            .deferred
            .iter()
            .filter(|(g, d)| {
                if self.pending_groups.contains(g) {
                    return false; // the leader waits for its adapter
                }
                let prompt_len = self
                    .reqs
                    .get(&d.leader)
                    .map(|s| s.prompt.len())
                    .unwrap_or(0);
                match self.sched.num_computed_tokens(d.leader) {
                    Some(c) => c + 1 >= prompt_len,
                    None => true,
                }
            })
            .map(|(&g, _)| g)
            .collect();
        for g in ready {
            let Some(d) = self.deferred.remove(&g) else {
                continue;
            };
            for id in d.children {
                if !self.reqs.contains_key(&id) {
                    continue;
                }
                if let Err(e) = self.schedule_seq(id) {
                    tracing::warn!(error = %e, "cannot schedule an n>1 sibling");
                    self.fail_seq(id, EngineError::Execution);
                }
            }
        }
    }

    fn reap_cancelled(&mut self) {
        let closed: Vec<u64> = self
            .groups
            .iter()
            .filter(|(g, ids)| {
                ids.first()
                    .and_then(|id| self.reqs.get(id))
                    .map(|s| s.events.is_closed())
                    .unwrap_or(false)
                    || !self.groups.contains_key(g)
            })
            .map(|(&g, _)| g)
            .collect();
        for g in closed {
            self.abort_group(g);
        }
    }

    fn abort_group(&mut self, group: u64) {
        self.deferred.remove(&group);
        let Some(ids) = self.groups.get(&group).cloned() else {
            return;
        };
        for id in ids {
            self.finish(id, FinishReason::Abort, None);
        }
    }

    fn abort_all(&mut self) {
        let groups: Vec<u64> = self.groups.keys().copied().collect();
        for g in groups {
            self.abort_group(g);
        }
    }

    fn fail_seq(&mut self, id: u64, err: EngineError) {
        self.sched.finish_request(id, SchedFinish::Aborted);
        if let Some(s) = self.reqs.remove(&id) {
            let _ = s.events.send(RequestEvent::Error(err));
            self.snapshot.finished_error += 1;
            self.forget(s.group, id);
            self.release_lora(s.lora_id);
        }
    }

    fn forget(&mut self, group: u64, id: u64) {
        if let Some(ids) = self.groups.get_mut(&group) {
            ids.retain(|&x| x != id);
            if ids.is_empty() {
                self.groups.remove(&group);
                self.deferred.remove(&group);
                self.pending_groups.remove(&group);
            }
        }
    }

    /// Ends a sequence: frees its blocks, releases held-back text, sends `Finished`.
    fn finish(&mut self, id: u64, reason: FinishReason, stop_reason: Option<StopReason>) {
        let sched_reason = match reason {
            FinishReason::Stop => SchedFinish::Stopped,
            FinishReason::Length => SchedFinish::Length,
            FinishReason::Abort => SchedFinish::Aborted,
        };
        self.sched.finish_request(id, sched_reason);
        let Some(mut s) = self.reqs.remove(&id) else {
            return;
        };
        let mut text = String::new();
        if !matches!(stop_reason, Some(StopReason::StopString(_))) && reason != FinishReason::Abort
        {
            match s.detok.flush() {
                Ok(t) => {
                    let step = s.stop.push(&t);
                    text.push_str(&step.text);
                }
                Err(e) => tracing::warn!(error = %e, "detokenizer flush failed"),
            }
            text.push_str(&s.stop.finish());
        }
        match reason {
            FinishReason::Stop => self.snapshot.finished_stop += 1,
            FinishReason::Length => self.snapshot.finished_length += 1,
            FinishReason::Abort => self.snapshot.finished_abort += 1,
        }
        let timing = RequestTiming {
            arrival: s.arrival,
            first_scheduled: s.first_scheduled,
            first_token: s.first_token,
            finished: Instant::now(),
        };
        let _ = s.events.send(RequestEvent::Finished {
            index: s.index,
            reason,
            stop_reason,
            text,
            usage: Usage {
                prompt_tokens: s.prompt.len(),
                completion_tokens: s.num_output,
                cached_tokens: s.num_cached,
            },
            timing,
        });
        self.forget(s.group, id);
        self.release_lora(s.lora_id);
    }

    /// One `schedule -> execute -> update` step. Returns false when nothing was scheduled.
    fn step(&mut self) -> bool {
        let t0 = Instant::now();
        let out = self.sched.schedule();
        if out.is_empty() {
            return false;
        }
        if !self.load_lora_slots(&out) {
            return true;
        }
        let t_sched = Instant::now();
        let now = t_sched;
        let mut prefill_tokens = 0;
        let mut decode_tokens = 0;
        for seq in &out.seqs {
            if let Some(s) = self.reqs.get_mut(&seq.id) {
                if s.first_scheduled.is_none() {
                    s.first_scheduled = Some(now);
                    s.num_cached = seq.num_cached_tokens;
                    self.snapshot.prompt_tokens_total += s.prompt.len() as u64;
                }
            }
            if seq.num_computed_tokens
                >= self.reqs.get(&seq.id).map(|s| s.prompt.len()).unwrap_or(0)
            {
                decode_tokens += seq.token_ids.len();
            } else {
                prefill_tokens += seq.token_ids.len();
            }
        }
        let wants_all: Vec<bool> = out
            .seqs
            .iter()
            .map(|q| {
                self.reqs
                    .get(&q.id)
                    .map(|s| {
                        s.prompt_lps
                            .as_ref()
                            .is_some_and(|v| v.len() < s.prompt.len())
                    })
                    .unwrap_or(false)
            })
            .collect();
        let chunks: Vec<SeqChunk> = out
            .seqs
            .iter()
            .zip(&wants_all)
            .map(|(s, &all)| SeqChunk {
                token_ids: &s.token_ids,
                num_computed_tokens: s.num_computed_tokens,
                block_table: &s.block_table,
                sample: s.sample,
                all_logits: all,
                lora_slot: s.lora_slot,
            })
            .collect();
        let logits = match self.runner.execute(&chunks) {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(error = %e, "forward pass failed; failing the batch");
                for seq in &out.seqs {
                    self.fail_seq(seq.id, EngineError::Execution);
                }
                return true;
            }
        };
        let t_exec = Instant::now();
        let sampled_seqs: Vec<u64> = out.seqs.iter().filter(|s| s.sample).map(|s| s.id).collect();
        let logits = match logits {
            Some(l) if wants_all.iter().any(|&w| w) => {
                match self.split_prompt_logits(&out, &wants_all, &l) {
                    Ok(s) => s,
                    Err(e) => {
                        tracing::error!(error = %e, "prompt logprobs failed; failing the batch");
                        for seq in &out.seqs {
                            self.fail_seq(seq.id, EngineError::Execution);
                        }
                        return true;
                    }
                }
            }
            other => other,
        };
        let mut sampled = Vec::new();
        if let Some(logits) = logits {
            let empty: Vec<u32> = Vec::new();
            let mut banned_lists: Vec<Vec<u32>> = Vec::with_capacity(sampled_seqs.len());
            for id in &sampled_seqs {
                let mut banned = Vec::new();
                if let Some(s) = self.reqs.get(id) {
                    if s.num_output < s.params.min_tokens {
                        if !s.params.ignore_eos {
                            banned.extend_from_slice(&self.info.eos_token_ids);
                        }
                        banned.extend_from_slice(&s.params.stop_token_ids);
                    }
                }
                banned_lists.push(banned);
            }
            let default_params = lantern_runtime::SamplingParams::greedy();
            let rows: Vec<SampleRow> = sampled_seqs
                .iter()
                .zip(&banned_lists)
                .map(|(id, banned)| {
                    let s = self.reqs.get(id);
                    SampleRow {
                        params: s.map(|s| &s.params.sampling).unwrap_or(&default_params),
                        seed: s.map(|s| s.seed).unwrap_or(0),
                        prompt_tokens: s.map(|s| s.prompt.as_slice()).unwrap_or(&empty),
                        output_tokens: self.sched.output_tokens(*id).unwrap_or(&empty),
                        banned,
                    }
                })
                .collect();
            match sampler::sample(&logits, &rows) {
                Ok(v) => sampled = v,
                Err(e) => {
                    tracing::error!(error = %e, "sampling failed; failing the batch");
                    for seq in &out.seqs {
                        self.fail_seq(seq.id, EngineError::Execution);
                    }
                    return true;
                }
            }
        }
        let t_sample = Instant::now();
        let pairs: Vec<(u64, u32)> = sampled_seqs
            .iter()
            .zip(&sampled)
            .map(|(&id, t)| (id, t.token))
            .collect();
        let reached_max = match self.sched.update(&out, &pairs) {
            Ok(v) => v,
            Err(e) => {
                tracing::error!(error = %e, "scheduler update failed; failing the batch");
                for seq in &out.seqs {
                    self.fail_seq(seq.id, EngineError::Execution);
                }
                return true;
            }
        };
        let now = Instant::now();
        for (id, tok) in sampled_seqs.iter().zip(sampled) {
            let at_max = reached_max.contains(id);
            self.on_token(*id, tok, at_max, now);
        }
        for id in reached_max {
            if self.reqs.contains_key(&id) {
                self.finish(id, FinishReason::Length, None);
            }
        }
        self.release_deferred();
        let t_end = Instant::now();
        let secs = |a: Instant, b: Instant| b.duration_since(a).as_secs_f64();
        let duration_s = secs(t0, t_end);
        self.snapshot.steps += 1;
        self.snapshot.step_seconds_total += duration_s;
        let ph = &mut self.snapshot.step_phases;
        ph.schedule += secs(t0, t_sched);
        ph.execute += secs(t_sched, t_exec);
        ph.sample += secs(t_exec, t_sample);
        ph.update += secs(t_sample, t_end);
        if let Some(d) = self.runner.simulated_device_seconds() {
            self.snapshot.simulated_device_seconds_total = d;
        }
        self.snapshot.last_step = StepStats {
            num_batched_tokens: out.num_batched_tokens,
            num_prefill_tokens: prefill_tokens,
            num_decode_tokens: decode_tokens,
            duration_s,
            ..StepStats::default()
        };
        self.refresh_snapshot();
        let _ = self.snap_tx.send(self.snapshot.clone());
        true
    }

    /// Copies the adapters this step needs into their device slots. On failure the
    /// sequences using the failed slots are failed (and the step skipped: returns false).
    fn load_lora_slots(&mut self, out: &lantern_scheduler::SchedulerOutput) -> bool {
        let mut failed: Vec<u32> = Vec::new();
        for ld in &out.lora_loads {
            let t0 = Instant::now();
            let r = match self.host_loras.get(ld.lora_id).and_then(|e| e.host.clone()) {
                Some(a) => self
                    .runner
                    .load_lora(ld.slot, &a)
                    .map_err(|e| e.to_string()),
                None => Err("its weights are not in host memory".to_string()),
            };
            match r {
                Ok(()) => {
                    self.snapshot.lora_slot_loads += 1;
                    self.snapshot.lora_slot_load_seconds += t0.elapsed().as_secs_f64();
                }
                Err(e) => {
                    tracing::error!(adapter = ld.lora_id, slot = ld.slot, error = %e, "cannot load a LoRA adapter into its device slot");
                    let _ = self.runner.clear_lora(ld.slot);
                    self.sched.evict_lora(ld.lora_id);
                    failed.push(ld.slot);
                }
            }
        }
        if failed.is_empty() {
            return true;
        }
        for q in &out.seqs {
            if q.lora_slot.is_some_and(|s| failed.contains(&s)) {
                self.fail_seq(q.id, EngineError::AdapterLoad);
            }
        }
        // The others were scheduled too: they run again next step from the same state
        // (nothing was computed), so undo nothing but skip this step.
        false
    }

    /// Copies the scheduler's current counters into the snapshot.
    fn refresh_snapshot(&mut self) {
        let st = self.sched.stats();
        self.snapshot.prefix_cache_queries_tokens = st.prefix_cache_queries;
        self.snapshot.prefix_cache_hits_tokens = st.prefix_cache_hits;
        self.snapshot.num_preemptions = st.num_preemptions;
        self.snapshot.last_step.num_running = st.num_running;
        self.snapshot.last_step.num_waiting = st.num_waiting;
        self.snapshot.last_step.kv_blocks_used = st.num_blocks_used;
        self.snapshot.last_step.kv_blocks_free = st.num_blocks_free;
        self.snapshot.loras_in_host_memory = self.host_loras.num_resident();
    }

    /// Records prompt logprobs from the all-logits rows and returns the rows to sample.
    fn split_prompt_logits(
        &mut self,
        out: &lantern_scheduler::SchedulerOutput,
        wants_all: &[bool],
        logits: &candle_core::Tensor,
    ) -> Result<Option<candle_core::Tensor>, candle_core::Error> {
        let mut sample_rows: Vec<u32> = Vec::new();
        let mut row = 0usize;
        for (q, &all) in out.seqs.iter().zip(wants_all) {
            if all {
                let n = q.token_ids.len();
                let block = logits.narrow(0, row, n)?.to_vec2::<f32>()?;
                if let Some(s) = self.reqs.get_mut(&q.id) {
                    let top = s.params.prompt_logprobs.unwrap_or(0);
                    if let Some(lps) = s.prompt_lps.as_mut() {
                        for (j, r) in block.iter().enumerate() {
                            // Row j predicts the token at position num_computed + j + 1.
                            let target = q.num_computed_tokens + j + 1;
                            if target < s.prompt.len() && target == lps.len() {
                                let tok = s.prompt[target];
                                let (lp, topv) = sampler::token_logprob(r, tok, top);
                                lps.push(Some(TokenLogprob {
                                    token_id: tok,
                                    logprob: lp,
                                    top: topv,
                                }));
                            }
                        }
                    }
                }
                if q.sample {
                    sample_rows.push((row + n - 1) as u32);
                }
                row += n;
            } else if q.sample {
                sample_rows.push(row as u32);
                row += 1;
            }
        }
        if sample_rows.is_empty() {
            return Ok(None);
        }
        let len = sample_rows.len();
        let idx = candle_core::Tensor::from_vec(sample_rows, len, logits.device())?;
        Ok(Some(logits.index_select(&idx, 0)?))
    }

    fn on_token(
        &mut self,
        id: u64,
        tok: lantern_runtime::SampledToken,
        at_max: bool,
        now: Instant,
    ) {
        let eos_ids = &self.info.eos_token_ids;
        let Some(s) = self.reqs.get_mut(&id) else {
            return;
        };
        if !s.prompt_lps_sent {
            if let Some(lps) = s.prompt_lps.take() {
                let _ = s.events.send(RequestEvent::PromptLogprobs(lps));
            }
            s.prompt_lps_sent = true;
        }
        if !s.prompt_lps_sent {
            if let Some(lps) = s.prompt_lps.take() {
                let _ = s.events.send(RequestEvent::PromptLogprobs(lps));
            }
            s.prompt_lps_sent = true;
        }
        s.num_output += 1;
        self.snapshot.generation_tokens_total += 1;
        if s.first_token.is_none() {
            s.first_token = Some(now);
        }
        let logprobs = if s.params.sampling.logprobs.is_some() {
            vec![TokenLogprob {
                token_id: tok.token,
                logprob: tok.logprob,
                top: tok.top_logprobs,
            }]
        } else {
            Vec::new()
        };
        let past_min = s.num_output > s.params.min_tokens;
        let mut stop_reason = None;
        if past_min && !s.params.ignore_eos && eos_ids.contains(&tok.token) {
            stop_reason = Some(StopReason::Eos(tok.token));
        } else if past_min && s.params.stop_token_ids.contains(&tok.token) {
            stop_reason = Some(StopReason::StopToken(tok.token));
        }
        let mut text = String::new();
        if stop_reason.is_none() {
            match s.detok.push(tok.token) {
                Ok(delta) => {
                    let step = s.stop.push(&delta);
                    text = step.text;
                    if let Some(i) = step.stopped {
                        stop_reason = Some(StopReason::StopString(
                            s.params.stop.get(i).cloned().unwrap_or_default(),
                        ));
                    }
                }
                Err(e) => {
                    tracing::error!(error = %e, "detokenization failed");
                    self.fail_seq(id, EngineError::Execution);
                    return;
                }
            }
        }
        let _ = s.events.send(RequestEvent::Delta(TokenDelta {
            index: s.index,
            text,
            token_ids: vec![tok.token],
            logprobs,
            time: now,
        }));
        if let Some(r) = stop_reason {
            self.finish(id, FinishReason::Stop, Some(r));
        } else if at_max {
            self.finish(id, FinishReason::Length, None);
        }
    }
}
