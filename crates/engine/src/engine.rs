//! [`Engine`]: start-up (KV cache sizing, scheduler, engine thread) and shutdown.

use crate::config::{EngineConfig, ModelInfo};
use crate::core::EngineCore;
use crate::error::EngineStartError;
use crate::handle::EngineHandle;
use crate::kv_events::KvEvents;
use crate::lora::{HostLoras, LoraRegistry};
use crate::requests::Requests;
use crate::stats::{EngineFacts, EngineSnapshot};
use crate::step_cost::StepCostModel;
use crate::structured::GrammarCompiler;
use lantern_models::{LoadedModel, ModelMeta};
use lantern_runtime::{KvCacheSize, ModelBackend, ModelRunner, RunnerConfig};
use lantern_scheduler::{Scheduler, SchedulerConfig};
use std::sync::atomic::AtomicU64;
use std::sync::mpsc;
use std::sync::{Arc, RwLock};
use tokenizers::Tokenizer;
use tokio::sync::watch;

#[derive(Debug)]
pub struct Engine {
    handle: EngineHandle,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Engine {
    /// Allocates the KV cache, builds the scheduler and starts the engine thread.
    pub fn start(loaded: LoadedModel, cfg: EngineConfig) -> Result<Self, EngineStartError> {
        let LoadedModel {
            model,
            tokenizer,
            meta,
        } = loaded;
        Self::start_with(model.into(), tokenizer, meta, cfg)
    }

    /// Starts an engine on any [`ModelBackend`] (e.g. the null device's stand-in, whose
    /// `meta` describes the served tokenizer). The vocabulary is the backend's logits width.
    pub fn start_with(
        model: ModelBackend,
        tokenizer: Tokenizer,
        meta: ModelMeta,
        cfg: EngineConfig,
    ) -> Result<Self, EngineStartError> {
        let model_max = meta.config.max_position_embeddings;
        let max_model_len = cfg.max_model_len.unwrap_or(model_max);
        if max_model_len > model_max {
            return Err(EngineStartError::MaxModelLen {
                requested: max_model_len,
                model_max,
            });
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
        if cfg.kv_events.is_some() && !cfg.enable_prefix_caching {
            return Err(EngineStartError::KvEventsWithoutPrefixCaching);
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
                kv_cache_dtype: cfg.kv_cache_dtype,
            },
        )?;
        if let Some(l) = &cfg.lora {
            runner.enable_lora(l.max_loras, l.max_lora_rank)?;
            tracing::info!(
                "LoRA enabled: {} device slots of rank <= {}, {} adapters in host memory",
                l.max_loras,
                l.max_lora_rank,
                l.max_cpu_loras
            );
        }
        if cfg.cuda_graphs {
            runner.enable_cuda_graphs(cfg.max_num_seqs)?;
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
            enable_kv_cache_events: cfg.kv_events.is_some(),
        })?;
        // Bound (or connected) before the engine starts, so a busy port fails start-up.
        let kv_events = match &cfg.kv_events {
            Some(s) => {
                let p = lantern_kv_events::KvEventPublisher::start(s)?;
                tracing::info!(
                    "KV-cache events: publishing on {} (topic {:?}, {:?} layout, queue {} batches, hwm {})",
                    p.endpoint(),
                    s.topic,
                    s.layout,
                    s.max_queue_size,
                    s.hwm
                );
                Some(KvEvents::new(p))
            }
            None => None,
        };
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
        let first_snapshot = EngineSnapshot {
            kv_blocks_total: usable,
            config: EngineFacts {
                block_size: cfg.block_size,
                enable_prefix_caching: cfg.enable_prefix_caching,
                max_model_len,
                gpu_memory_utilization: match &cfg.kv_cache {
                    KvCacheSize::GpuMemory(b) => Some(b.utilization),
                    _ => None,
                },
                kv_cache_memory_bytes: match cfg.kv_cache {
                    KvCacheSize::Bytes(b) => Some(b),
                    _ => None,
                },
                max_loras: cfg.lora.map(|l| l.max_loras),
            },
            ..EngineSnapshot::default()
        };
        let (snap_tx, snap_rx) = watch::channel(first_snapshot.clone());
        let base_seed = cfg.seed.unwrap_or_else(rand::random);
        let core = EngineCore {
            runner,
            sched,
            cmd_rx,
            cmd_tx: cmd_tx.clone(),
            host_loras: HostLoras::new(cfg.lora.map_or(0, |l| l.max_cpu_loras)),
            lora_cfg: cfg.lora,
            model_config,
            snap_tx,
            snapshot: first_snapshot,
            reqs: Requests::default(),
            tokenizer: tokenizer.clone(),
            info: info.clone(),
            base_seed,
            shutting_down: false,
            kv_events,
            target_itl: cfg.target_itl,
            step_cost: StepCostModel::default(),
            idle_batch_window: cfg.idle_batch_window,
        };
        let grammars = Arc::new(GrammarCompiler::new(
            tokenizer.clone(),
            vocab_size,
            info.eos_token_ids.clone(),
        ));
        let thread = std::thread::Builder::new()
            .name("lantern-engine".into())
            .spawn(move || core.run())
            .map_err(EngineStartError::Spawn)?;
        Ok(Self {
            handle: EngineHandle {
                cmd: cmd_tx,
                next_id: Arc::new(AtomicU64::new(1)),
                info,
                tokenizer,
                snapshot: snap_rx,
                loras: Arc::new(RwLock::new(LoraRegistry::default())),
                lora_cfg: cfg.lora,
                grammars,
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
