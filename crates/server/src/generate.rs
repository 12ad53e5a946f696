//! The seam between the routes and the engine: [`Generate`] is everything the HTTP layer
//! asks of an engine. [`EngineHandle`] implements it; in-process tests implement it with
//! scripted events and no model (`crates/server/tests/`).

use futures_util::stream::{self, BoxStream, StreamExt};
use lantern_engine::{
    EngineHandle, EngineSnapshot, KvCacheBlocks, LoraError, LoraId, LoraInfo, RequestEvent,
    RequestLimits, SubmitError, ValidParams,
};
use std::future::Future;
use tokenizers::Tokenizer;

/// The events of one submitted prompt, ending when every choice finished. Dropping the
/// stream cancels the request.
pub type EventStream = BoxStream<'static, RequestEvent>;

/// What the routes need from an engine. Cheap to clone (a handle).
pub trait Generate: Clone + Send + Sync + 'static {
    /// Adds a request; resolves once the engine accepted it or refused it (invalid
    /// parameters, too long, overloaded, stopped, unknown adapter).
    fn submit(
        &self,
        prompt: Vec<u32>,
        params: ValidParams,
    ) -> impl Future<Output = Result<EventStream, SubmitError>> + Send;

    /// The latest published stats.
    fn snapshot(&self) -> EngineSnapshot;

    /// Stats as of now, asked of the engine (it may not answer promptly).
    fn fresh_snapshot(&self) -> impl Future<Output = Result<EngineSnapshot, SubmitError>> + Send;

    fn tokenizer(&self) -> &Tokenizer;

    /// Cap on prompt + output tokens.
    fn max_model_len(&self) -> usize;

    fn vocab_size(&self) -> usize;

    /// What requests are validated against (the engine's one validator).
    fn limits(&self) -> RequestLimits {
        RequestLimits {
            vocab_size: self.vocab_size(),
            max_model_len: self.max_model_len(),
        }
    }

    /// The id of a loaded LoRA adapter (for [`lantern_engine::GenerationParams::lora_id`]).
    fn lora_id(&self, name: &str) -> Option<LoraId>;

    /// Loaded adapters, by name.
    fn loras(&self) -> Vec<LoraInfo>;

    /// Reads, checks and registers an adapter. Blocks on I/O: call it from a blocking
    /// context.
    fn load_lora_blocking(&self, name: &str, source: &str) -> Result<LoraInfo, LoraError>;

    fn unload_lora(&self, name: &str) -> Result<(), LoraError>;

    /// Whether adapters can be served at all (`--enable-lora`).
    fn lora_enabled(&self) -> bool {
        true
    }

    /// Aborts in-flight requests and stops the engine.
    fn shutdown(&self);

    /// The blocks in the prefix cache (`GET /debug/kv_cache_blocks`).
    fn kv_cache_blocks(&self) -> impl Future<Output = Result<KvCacheBlocks, SubmitError>> + Send {
        async { Err(SubmitError::EngineStopped) }
    }

    /// Empties the prefix cache if no request holds blocks (`POST /reset_prefix_cache`).
    fn reset_prefix_cache(&self) -> impl Future<Output = Result<bool, SubmitError>> + Send {
        async { Err(SubmitError::EngineStopped) }
    }
}

impl Generate for EngineHandle {
    async fn submit(
        &self,
        prompt: Vec<u32>,
        params: ValidParams,
    ) -> Result<EventStream, SubmitError> {
        let s = if params.structured.is_some() {
            // Compiling the grammar (and, the first time, the model's token trie) is CPU
            // work: keep it off the async workers.
            let h = self.clone();
            tokio::task::spawn_blocking(move || h.submit_blocking(prompt, params))
                .await
                .map_err(|_| SubmitError::EngineStopped)??
        } else {
            EngineHandle::submit(self, prompt, params).await?
        };
        // The stream owns the `RequestStream`, so dropping it still cancels the request.
        Ok(stream::unfold(s, |mut s| async move { s.next().await.map(|ev| (ev, s)) }).boxed())
    }

    fn snapshot(&self) -> EngineSnapshot {
        EngineHandle::snapshot(self)
    }

    fn fresh_snapshot(&self) -> impl Future<Output = Result<EngineSnapshot, SubmitError>> + Send {
        EngineHandle::fresh_snapshot(self)
    }

    fn tokenizer(&self) -> &Tokenizer {
        EngineHandle::tokenizer(self)
    }

    fn max_model_len(&self) -> usize {
        self.info().max_model_len
    }

    fn vocab_size(&self) -> usize {
        self.info().vocab_size
    }

    fn lora_id(&self, name: &str) -> Option<LoraId> {
        EngineHandle::lora_id(self, name)
    }

    fn loras(&self) -> Vec<LoraInfo> {
        EngineHandle::loras(self)
    }

    fn load_lora_blocking(&self, name: &str, source: &str) -> Result<LoraInfo, LoraError> {
        EngineHandle::load_lora_blocking(self, name, source)
    }

    fn unload_lora(&self, name: &str) -> Result<(), LoraError> {
        EngineHandle::unload_lora(self, name)
    }

    fn lora_enabled(&self) -> bool {
        self.lora_config().is_some()
    }

    fn shutdown(&self) {
        EngineHandle::shutdown(self)
    }

    fn kv_cache_blocks(&self) -> impl Future<Output = Result<KvCacheBlocks, SubmitError>> + Send {
        EngineHandle::kv_cache_blocks(self)
    }

    fn reset_prefix_cache(&self) -> impl Future<Output = Result<bool, SubmitError>> + Send {
        EngineHandle::reset_prefix_cache(self)
    }
}
