//! Lantern's scheduler and KV-cache bookkeeping. Integers only: no tensors, no async, no I/O.
//!
//! Main types, bottom up:
//!
//! * [`BlockPool`] — `num_blocks` KV blocks (block 0 is the reserved null block), per-block
//!   ref counts, an O(1) LRU free list, and the hash → block map of cached full blocks. A
//!   freed block keeps its hash (it can still be hit) until it is handed out again. On
//!   request it records every change to the cached set as a [`KvCacheEvent`] (stored,
//!   removed, all cleared), which the engine publishes as vLLM's KV-cache events.
//! * [`BlockHash`] / [`hash_block`] — 128-bit chained prefix hashes of full blocks, keyed by
//!   the parent hash, the block's tokens, the LoRA adapter id and the optional cache salt.
//! * [`KvCacheManager`] — per-request block tables over the pool: prefix lookup
//!   ([`KvCacheManager::get_computed_blocks`]), all-or-nothing allocation
//!   ([`KvCacheManager::allocate_slots`]), caching of newly full blocks, and freeing.
//! * [`Scheduler`] — the request state machine (vLLM v1 style). One rule for prefill and
//!   decode: every request has `num_computed_tokens` and a known token list (prompt +
//!   outputs); each step hands out tokens under a budget, so chunked prefill, prefix hits and
//!   mixed prefill/decode batches all fall out of it. Preemption is by recompute.
//!
//! # Driving the scheduler (one engine step)
//!
//! ```
//! use lantern_scheduler::{FinishReason, SchedRequest, Scheduler, SchedulerConfig, SeqId};
//!
//! let mut sched = Scheduler::new(SchedulerConfig { num_blocks: 64, ..Default::default() })?;
//! sched.add_request(SchedRequest {
//!     id: SeqId(7),
//!     prompt_token_ids: vec![1, 2, 3],
//!     max_tokens: 2,
//!     priority: 0,
//!     lora_id: None,
//!     cache_salt: None,
//! })?;
//! while sched.has_unfinished() {
//!     let out = sched.schedule();
//!     // The runner feeds `seq.token_ids` at positions `seq.num_computed_tokens..`, writes
//!     // their KV through `seq.block_table`, and samples where `seq.sample` is true.
//!     let sampled: Vec<(SeqId, u32)> =
//!         out.seqs.iter().filter(|s| s.sample).map(|s| (s.id, 42)).collect();
//!     let reached_max_tokens = sched.update(&out, &sampled)?;
//!     // The engine checks EOS / stop strings on the sampled tokens, then:
//!     for id in reached_max_tokens {
//!         sched.finish_request(id, FinishReason::Length);
//!     }
//! }
//! assert_eq!(sched.stats().num_blocks_free, sched.stats().num_blocks_total);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod block_pool;
pub mod defaults;
mod error;
mod hash;
mod ids;
mod kv_cache_manager;
mod lora_slots;
mod request;
mod scheduler;

pub use block_pool::{BlockPool, FullBlocks, KvCacheEvent, NULL_BLOCK};
pub use error::{AddRequestError, BlockPoolError, ConfigError, UpdateError};
pub use hash::{hash_block, BlockHash, CacheKeyExtra};
pub use ids::{BlockId, LoraId, SeqId};
pub use kv_cache_manager::{ComputedBlocks, KvCacheManager, KvSeq, PrefixCacheStats};
pub use lora_slots::LoraLoad;
pub use request::{FinishReason, RequestStatus, SchedRequest};
pub use scheduler::{
    ScheduledSeq, Scheduler, SchedulerConfig, SchedulerOutput, SchedulerStats, SchedulingPolicy,
    MIN_PREFILL_TOKENS_UNDER_CAP,
};
