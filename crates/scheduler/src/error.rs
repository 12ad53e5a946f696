//! Error types of the crate. Each message gives the numbers involved and says what to change.

use crate::ids::{BlockId, LoraId, SeqId};

/// Misuse of a [`crate::BlockPool`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BlockPoolError {
    #[error("a block pool needs at least 2 blocks (block 0 is the reserved null block), but num_blocks is {num_blocks}; give the KV cache more memory or use smaller blocks")]
    TooFewBlocks { num_blocks: usize },
    #[error(
        "num_blocks is {num_blocks}, more than block ids (u32) can address; use larger blocks"
    )]
    TooManyBlocks { num_blocks: usize },
    #[error("block 0 is the reserved null block and cannot be referenced, freed or cached")]
    NullBlock,
    #[error("block {block} does not exist: the pool has blocks 0..{num_blocks}")]
    OutOfRange { block: BlockId, num_blocks: usize },
    #[error("block {block} was freed more often than it was referenced (double free)")]
    DoubleFree { block: BlockId },
}

/// An invalid [`crate::SchedulerConfig`] (or [`crate::KvCacheManager`] parameters).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("block_size must be at least 1 token, got 0")]
    ZeroBlockSize,
    #[error("max_num_seqs must be at least 1, got 0")]
    ZeroMaxNumSeqs,
    #[error("max_num_batched_tokens must be at least 1, got 0")]
    ZeroMaxNumBatchedTokens,
    #[error("max_model_len must be at least 1 token, got 0")]
    ZeroMaxModelLen,
    #[error("max_waiting_requests must be at least 1, got 0 (every request would be rejected)")]
    ZeroMaxWaitingRequests,
    #[error(transparent)]
    Pool(#[from] BlockPoolError),
}

/// Why [`crate::Scheduler::add_request`] refused a request. These are the caller's fault
/// (bad request) except [`AddRequestError::QueueFull`], which is overload (retry later).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddRequestError {
    #[error("request {id}: the prompt is empty; send at least one token")]
    EmptyPrompt { id: SeqId },
    #[error("request {id}: max_tokens is 0; ask for at least 1 token")]
    ZeroMaxTokens { id: SeqId },
    #[error("request {id}: prompt of {prompt_len} tokens + max_tokens {max_tokens} = {total} tokens exceeds max_model_len {max_model_len}; shorten the prompt or lower max_tokens")]
    TooLong {
        id: SeqId,
        prompt_len: usize,
        max_tokens: usize,
        total: usize,
        max_model_len: usize,
    },
    #[error("request {id}: prompt of {prompt_len} tokens + max_tokens {max_tokens} needs {needed_blocks} KV blocks of {block_size} tokens, but the whole cache has only {total_blocks} blocks ({capacity_tokens} tokens); shorten the prompt, lower max_tokens or give the KV cache more memory")]
    ExceedsKvCache {
        id: SeqId,
        prompt_len: usize,
        max_tokens: usize,
        needed_blocks: usize,
        block_size: usize,
        total_blocks: usize,
        capacity_tokens: usize,
    },
    #[error(
        "request {id}: the waiting queue is full ({max_waiting_requests} requests); retry later"
    )]
    QueueFull {
        id: SeqId,
        max_waiting_requests: usize,
    },
    #[error("request {id}: a request with this id is already queued or running; use a fresh id")]
    DuplicateId { id: SeqId },
    #[error("request {id}: asks for LoRA adapter {lora_id} but LoRA is disabled (max_loras is 0); start the server with --max-loras >= 1")]
    LoraDisabled { id: SeqId, lora_id: LoraId },
}

impl AddRequestError {
    /// The request this refuses.
    pub fn id(&self) -> SeqId {
        match self {
            Self::EmptyPrompt { id }
            | Self::ZeroMaxTokens { id }
            | Self::TooLong { id, .. }
            | Self::ExceedsKvCache { id, .. }
            | Self::QueueFull { id, .. }
            | Self::DuplicateId { id }
            | Self::LoraDisabled { id, .. } => *id,
        }
    }

    /// The message without the internal request id, for the client.
    pub fn reason(&self) -> String {
        let full = self.to_string();
        let prefix = format!("request {}: ", self.id());
        match full.strip_prefix(&prefix) {
            Some(rest) => rest.to_string(),
            None => full,
        }
    }
}

/// [`crate::Scheduler::update`] was given results that do not match the scheduler's state.
/// Nothing is applied when this is returned.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UpdateError {
    #[error("request {id}: a token was sampled but this step did not reach the end of its known tokens (sample=false); only sample sequences with `sample == true`")]
    UnexpectedSample { id: SeqId },
    #[error("request {id}: this step ended its known tokens (sample=true) but no sampled token was given")]
    MissingSample { id: SeqId },
    #[error(
        "request {id}: {count} sampled tokens were given; give exactly one per sampling sequence"
    )]
    DuplicateSample { id: SeqId, count: usize },
    #[error(
        "request {id}: a token was sampled for a request that was not scheduled in this output"
    )]
    NotScheduled { id: SeqId },
    #[error("request {id}: the output was scheduled at {scheduled} computed tokens but the request is at {current}; apply each SchedulerOutput exactly once, in order")]
    StaleOutput {
        id: SeqId,
        scheduled: usize,
        current: usize,
    },
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn the_client_reason_has_no_internal_id() {
        let e = AddRequestError::QueueFull {
            id: SeqId(41),
            max_waiting_requests: 8,
        };
        assert!(e.to_string().contains("41"), "{e}");
        assert_eq!(
            e.reason(),
            "the waiting queue is full (8 requests); retry later"
        );
    }
}
