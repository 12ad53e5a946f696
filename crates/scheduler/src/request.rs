//! Requests as submitted and as tracked by the scheduler.

use crate::ids::{LoraId, SeqId};
use crate::kv_cache_manager::KvSeq;

/// A request as the engine submits it: already tokenized and validated for its own fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchedRequest {
    /// Unique among unfinished requests.
    pub id: SeqId,
    pub prompt_token_ids: Vec<u32>,
    /// Upper bound on generated tokens (>= 1). The scheduler never schedules a request to
    /// sample beyond it.
    pub max_tokens: usize,
    /// With [`crate::SchedulingPolicy::Priority`]: lower values are scheduled first (and
    /// preempted last), ties broken by arrival. Ignored by FCFS.
    pub priority: i32,
    /// LoRA adapter, `None` for the base model. Part of the prefix-cache key.
    pub lora_id: Option<LoraId>,
    /// Optional cache salt: only requests with equal salts share cached KV.
    pub cache_salt: Option<String>,
}

/// Why a request finished: OpenAI's `finish_reason`, and why it left the scheduler (see
/// [`crate::Scheduler::finish_request`]). The one definition; the engine and the server use
/// it too.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FinishReason {
    /// EOS, a stop token or a stop string.
    Stop,
    /// Reached `max_tokens` or the context length.
    Length,
    /// Cancelled: the client went away, shutdown, or the engine failed the request.
    Abort,
}

impl FinishReason {
    /// The wire name (`finish_reason`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Stop => "stop",
            Self::Length => "length",
            Self::Abort => "abort",
        }
    }
}

/// Where an unfinished request is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RequestStatus {
    /// Queued, never scheduled yet.
    Waiting,
    /// Holds blocks and is scheduled step by step.
    Running,
    /// Was running, lost its blocks to preemption and waits to be recomputed.
    Preempted,
}

#[derive(Debug, Clone)]
pub(crate) struct Request {
    pub(crate) id: SeqId,
    /// Prompt followed by the outputs sampled so far.
    pub(crate) token_ids: Vec<u32>,
    pub(crate) prompt_len: usize,
    pub(crate) max_tokens: usize,
    pub(crate) priority: i32,
    pub(crate) lora_id: Option<LoraId>,
    pub(crate) cache_salt: Option<String>,
    /// Submission order.
    pub(crate) arrival: u64,
    /// Tokens whose KV is in this request's blocks.
    pub(crate) num_computed_tokens: usize,
    /// Prefix-cache hit at the first schedule (`None` before it).
    pub(crate) num_cached_tokens: Option<usize>,
    pub(crate) status: RequestStatus,
    /// The waiting-queue key while waiting or preempted.
    pub(crate) wait_key: Option<WaitKey>,
}

/// Waiting-queue order: smallest first. `(priority, order, id)`; FCFS uses priority 0, and a
/// preempted request gets a negative `order` so that it goes to the front.
pub(crate) type WaitKey = (i32, i64, SeqId);

impl Request {
    pub(crate) fn new(req: SchedRequest, arrival: u64) -> Self {
        Self {
            id: req.id,
            prompt_len: req.prompt_token_ids.len(),
            token_ids: req.prompt_token_ids,
            max_tokens: req.max_tokens,
            priority: req.priority,
            lora_id: req.lora_id,
            cache_salt: req.cache_salt,
            arrival,
            num_computed_tokens: 0,
            num_cached_tokens: None,
            status: RequestStatus::Waiting,
            wait_key: None,
        }
    }

    pub(crate) fn num_tokens(&self) -> usize {
        self.token_ids.len()
    }

    pub(crate) fn output_tokens(&self) -> &[u32] {
        &self.token_ids[self.prompt_len..]
    }

    /// Has sampled `max_tokens` outputs: must not be scheduled again.
    pub(crate) fn is_capped(&self) -> bool {
        self.token_ids.len() - self.prompt_len >= self.max_tokens
    }

    pub(crate) fn kv_seq(&self) -> KvSeq<'_> {
        KvSeq {
            id: self.id,
            token_ids: &self.token_ids,
            lora_id: self.lora_id,
            cache_salt: self.cache_salt.as_deref(),
        }
    }
}
