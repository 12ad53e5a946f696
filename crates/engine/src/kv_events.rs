//! KV-cache events on the engine thread: the scheduler's block pool records what changed in
//! the prefix cache ([`KvCacheEvent`]); once per step (and after commands that change the
//! cache) the engine turns them into vLLM's wire events and hands them, as one batch, to the
//! publisher thread ([`KvEventPublisher`]), which never makes the engine wait.

use lantern_kv_events::{
    BlockRemoved, BlockStored, EventBatch, KvEvent, KvEventPublisher, FULL_ATTENTION, MEDIUM_GPU,
};
use lantern_scheduler::{BlockHash, KvCacheEvent, LoraId};
use std::collections::HashMap;
use std::time::{SystemTime, UNIX_EPOCH};

/// What `GET /debug/kv_cache_blocks` shows: the prefix cache as the events describe it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KvCacheBlocks {
    /// The published id ([`external_hash`]) of every block in the prefix cache, ascending.
    pub block_hashes: Vec<u64>,
    pub block_size: usize,
    /// Whether KV-cache events are published.
    pub events_enabled: bool,
    /// Sequence number of the last event batch handed to the publisher (every event
    /// recorded before this answer is in it or in an earlier batch).
    pub last_event_seq: Option<u64>,
    /// Events dropped because the publisher's queue was full.
    pub events_dropped: u64,
}

/// The 64-bit id under which a block is published: the low 64 bits of its 128-bit hash, as
/// vLLM publishes the low 64 bits of its SHA-256 block hashes
/// (`VLLM_KV_EVENTS_USE_INT_BLOCK_HASHES`, on by default).
pub fn external_hash(h: BlockHash) -> u64 {
    h.as_u128() as u64
}

/// The engine thread's end of the KV-events pipeline.
#[derive(Debug)]
pub(crate) struct KvEvents {
    publisher: KvEventPublisher,
    /// Adapter names by id, for `lora_name` (ids are never reused; kept after an unload,
    /// since blocks computed with the adapter may still be cached, and even stored later).
    lora_names: HashMap<LoraId, String>,
}

impl KvEvents {
    pub fn new(publisher: KvEventPublisher) -> Self {
        Self {
            publisher,
            lora_names: HashMap::new(),
        }
    }

    pub fn add_lora_name(&mut self, id: LoraId, name: String) {
        self.lora_names.insert(id, name);
    }

    pub fn last_seq(&self) -> Option<u64> {
        self.publisher.last_seq()
    }

    pub fn dropped(&self) -> u64 {
        self.publisher.dropped_events()
    }

    /// Publishes one step's events as one batch (nothing when there are none).
    pub fn publish(&mut self, events: Vec<KvCacheEvent>) {
        if events.is_empty() {
            return;
        }
        let events = events.into_iter().map(|e| self.to_wire(e)).collect();
        let ts = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        let batch = EventBatch {
            ts,
            events,
            data_parallel_rank: Some(0),
        };
        if let Err(e) = self.publisher.publish(batch) {
            tracing::debug!(error = %e, "KV-cache event batch dropped");
        }
    }

    fn to_wire(&self, e: KvCacheEvent) -> KvEvent {
        match e {
            KvCacheEvent::BlockStored {
                block_hashes,
                parent_block_hash,
                token_ids,
                block_size,
                lora_id,
                cache_salt,
            } => {
                let lora_name = lora_id.and_then(|l| self.lora_names.get(&l).cloned());
                // vLLM's `extra_keys`: per block, the untagged keys that went into its hash
                // besides the tokens: the adapter name, then (first block of a sequence only)
                // a non-empty cache salt.
                let salt = cache_salt.filter(|s| !s.is_empty());
                let extra_keys = (0..block_hashes.len())
                    .map(|i| {
                        let keys: Vec<String> = lora_name
                            .iter()
                            .cloned()
                            .chain(salt.iter().filter(|_| i == 0).cloned())
                            .collect();
                        (!keys.is_empty()).then_some(keys)
                    })
                    .collect();
                KvEvent::BlockStored(BlockStored {
                    block_hashes: block_hashes.into_iter().map(external_hash).collect(),
                    parent_block_hash: parent_block_hash.map(external_hash),
                    token_ids,
                    block_size: u32::try_from(block_size).unwrap_or(u32::MAX),
                    lora_id: lora_id.map(|l| l.0),
                    medium: Some(MEDIUM_GPU),
                    lora_name,
                    extra_keys: Some(extra_keys),
                    group_idx: Some(0),
                    kv_cache_spec_kind: Some(FULL_ATTENTION),
                    kv_cache_spec_sliding_window: None,
                })
            }
            KvCacheEvent::BlockRemoved { block_hashes } => KvEvent::BlockRemoved(BlockRemoved {
                block_hashes: block_hashes.into_iter().map(external_hash).collect(),
                medium: Some(MEDIUM_GPU),
                group_idx: Some(0),
            }),
            KvCacheEvent::AllBlocksCleared => KvEvent::AllBlocksCleared,
        }
    }
}
