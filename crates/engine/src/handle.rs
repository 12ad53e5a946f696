//! The engine's handle side: [`EngineHandle`] (cheap to clone, used by the server's
//! threads), [`RequestStream`] (one per submitted request; dropping it cancels the request)
//! and the [`Command`]s they send to the engine thread.

use crate::config::ModelInfo;
use crate::error::SubmitError;
use crate::kv_events::KvCacheBlocks;
use crate::lora::{check_name, now_unix, LoraConfig, LoraError, LoraInfo, LoraRegistry};
use crate::params::RequestId;
use crate::params::{GenerationParams, RequestEvent};
use crate::stats::EngineSnapshot;
use crate::structured::{Grammar, GrammarCompiler};
use crate::validation::{check_prompt, RequestLimits, ValidParams, ValidationError};
use lantern_models::LoraAdapter;
use lantern_scheduler::LoraId;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, RwLock};
use std::time::Instant;
use tokenizers::Tokenizer;
use tokio::sync::{mpsc as tmpsc, oneshot, watch};

pub(crate) enum Command {
    Add {
        group: RequestId,
        prompt: Vec<u32>,
        params: Box<ValidParams>,
        /// The compiled structured-output grammar, if the request has one.
        grammar: Option<Box<Grammar>>,
        events: tmpsc::UnboundedSender<RequestEvent>,
        reply: oneshot::Sender<Result<(), SubmitError>>,
        arrival: Instant,
    },
    Abort(RequestId),
    Snapshot(oneshot::Sender<EngineSnapshot>),
    /// The blocks in the prefix cache (debug endpoint); pending events are published first.
    KvCacheBlocks(oneshot::Sender<KvCacheBlocks>),
    /// Empty the prefix cache if no request holds blocks; answers whether it did.
    ResetPrefixCache(oneshot::Sender<bool>),
    Shutdown,
    /// A validated adapter (read by the caller's thread) joins the host cache.
    AddLora {
        id: LoraId,
        /// The name it is registered under (KV-cache events carry it).
        name: String,
        dir: PathBuf,
        adapter: Arc<LoraAdapter>,
        seconds: f64,
        reply: oneshot::Sender<()>,
    },
    /// The user unloaded an adapter: in-flight requests finish, then it is dropped.
    RemoveLora(LoraId),
    /// A background disk read of an adapter finished.
    LoraLoaded {
        id: LoraId,
        result: Result<Arc<LoraAdapter>, AdapterLoadError>,
        seconds: f64,
    },
}

/// Why a background read of an adapter's weights failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum AdapterLoadError {
    #[error(transparent)]
    Read(#[from] lantern_models::ModelError),
    #[error("cannot spawn a loader thread: {0}")]
    Spawn(std::io::Error),
}

/// The stream of events of one submitted request. Dropping it cancels the request.
#[derive(Debug)]
pub struct RequestStream {
    id: RequestId,
    rx: tmpsc::UnboundedReceiver<RequestEvent>,
    cmd: mpsc::Sender<Command>,
    done: bool,
}

impl RequestStream {
    /// The request id (as used in logs).
    pub fn id(&self) -> RequestId {
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
    pub(crate) cmd: mpsc::Sender<Command>,
    pub(crate) next_id: Arc<AtomicU64>,
    pub(crate) info: Arc<ModelInfo>,
    pub(crate) tokenizer: Arc<Tokenizer>,
    pub(crate) snapshot: watch::Receiver<EngineSnapshot>,
    pub(crate) loras: Arc<RwLock<LoraRegistry>>,
    pub(crate) lora_cfg: Option<LoraConfig>,
    pub(crate) grammars: Arc<GrammarCompiler>,
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
    pub fn lora_id(&self, name: &str) -> Option<LoraId> {
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
                // The log gets the whole error; the caller (maybe a remote client) no
                // server paths or OS error text.
                tracing::warn!(adapter = name, source, error = %e, "cannot load LoRA adapter");
                return Err(LoraError::Invalid {
                    name: name.to_string(),
                    message: e.client_message(),
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
            name: name.to_string(),
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
            id = id.0,
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
        tracing::info!(name, id = id.0, "LoRA adapter unloaded");
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

    /// What requests to this engine are validated against.
    pub fn limits(&self) -> RequestLimits {
        self.info.limits()
    }

    /// Validates `params` against this engine's limits (the one validator; see
    /// [`GenerationParams::validate`]).
    pub fn validate(&self, params: GenerationParams) -> Result<ValidParams, ValidationError> {
        params.validate(&self.limits())
    }

    /// Adds a request. Resolves once the engine accepted it (or refused: overload, too long).
    pub async fn submit(
        &self,
        prompt: Vec<u32>,
        params: ValidParams,
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
        params: ValidParams,
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
        params: ValidParams,
    ) -> Result<(RequestStream, oneshot::Receiver<Result<(), SubmitError>>), SubmitError> {
        check_prompt(&prompt, &params, &self.limits())?;
        // Compiled here, on the caller's thread (never the engine's), within llguidance's
        // limits; an invalid grammar is a 400 before anything is queued.
        let grammar = match &params.structured {
            Some(req) => Some(Box::new(self.grammars.compile(req)?)),
            None => None,
        };
        let group = RequestId(self.next_id.fetch_add(1, Ordering::Relaxed));
        let (tx, rx) = tmpsc::unbounded_channel();
        let (reply_tx, reply_rx) = oneshot::channel();
        self.cmd
            .send(Command::Add {
                group,
                prompt,
                params: Box::new(params),
                grammar,
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

    /// The blocks in the prefix cache, by the ids KV-cache events use, after publishing every
    /// pending event (`GET /debug/kv_cache_blocks`).
    pub async fn kv_cache_blocks(&self) -> Result<KvCacheBlocks, SubmitError> {
        let (tx, rx) = oneshot::channel();
        self.cmd
            .send(Command::KvCacheBlocks(tx))
            .map_err(|_| SubmitError::EngineStopped)?;
        rx.await.map_err(|_| SubmitError::EngineStopped)
    }

    /// Empties the prefix cache (vLLM's `reset_prefix_cache`; subscribers get
    /// `AllBlocksCleared`). `Ok(false)` while some request still holds blocks.
    pub async fn reset_prefix_cache(&self) -> Result<bool, SubmitError> {
        let (tx, rx) = oneshot::channel();
        self.cmd
            .send(Command::ResetPrefixCache(tx))
            .map_err(|_| SubmitError::EngineStopped)?;
        rx.await.map_err(|_| SubmitError::EngineStopped)
    }

    /// Asks the engine to stop: running requests are aborted, the thread exits.
    pub fn shutdown(&self) {
        let _ = self.cmd.send(Command::Shutdown);
    }
}
