//! Token-budget scheduling with chunked prefill, prefix hits and preemption by recompute.

use std::collections::{BTreeSet, HashMap};
use std::ops::Bound;

use crate::block_pool::KvCacheEvent;
use crate::defaults;
use crate::error::{AddRequestError, ConfigError, UpdateError};
use crate::ids::{BlockId, LoraId, SeqId};
use crate::kv_cache_manager::{ComputedBlocks, KvCacheManager};
use crate::lora_slots::{LoraLoad, LoraSlots, SlotPlan};
use crate::request::{FinishReason, Request, RequestStatus, SchedRequest, WaitKey};

/// Which waiting request goes next, and which running request is preempted first.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum SchedulingPolicy {
    /// First come, first served; the latest-admitted running request is preempted first.
    #[default]
    Fcfs,
    /// By `(priority, arrival)`, lower priority values first (as in vLLM); the running request
    /// with the largest `(priority, arrival)` is preempted first.
    Priority,
}

/// Scheduler limits. All counts are in tokens unless named otherwise.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchedulerConfig {
    /// Most requests running (holding blocks) at once, and so most sequences per step.
    pub max_num_seqs: usize,
    /// Token budget of one step: tokens fed to the model, over all sequences.
    pub max_num_batched_tokens: usize,
    /// Tokens per KV block.
    pub block_size: usize,
    /// KV blocks in the cache, including the reserved null block 0.
    pub num_blocks: usize,
    /// Longest sequence (prompt + max_tokens) accepted.
    pub max_model_len: usize,
    /// `add_request` answers `QueueFull` when this many requests wait beyond the free
    /// running slots (see [`Scheduler::num_queued`]).
    pub max_waiting_requests: usize,
    pub enable_prefix_caching: bool,
    /// Largest prefill chunk one request gets in one step; 0 = no cap beyond the budget.
    pub long_prefill_token_threshold: usize,
    pub policy: SchedulingPolicy,
    /// LoRA adapter slots on the device (distinct adapters in flight at once); 0 = LoRA
    /// disabled, and requests with a `lora_id` are refused.
    pub max_loras: usize,
    /// Record [`KvCacheEvent`]s (collected with [`Scheduler::take_kv_events`]).
    pub enable_kv_cache_events: bool,
}

impl Default for SchedulerConfig {
    /// Serving defaults ([`crate::defaults`]); `num_blocks` is a placeholder the engine replaces with what fits in
    /// memory.
    fn default() -> Self {
        Self {
            max_num_seqs: defaults::MAX_NUM_SEQS,
            max_num_batched_tokens: defaults::MAX_NUM_BATCHED_TOKENS,
            block_size: defaults::BLOCK_SIZE,
            num_blocks: 1024,
            max_model_len: 8192,
            max_waiting_requests: defaults::MAX_WAITING_REQUESTS,
            enable_prefix_caching: true,
            long_prefill_token_threshold: defaults::LONG_PREFILL_TOKEN_THRESHOLD,
            policy: SchedulingPolicy::Fcfs,
            max_loras: 0,
            enable_kv_cache_events: false,
        }
    }
}

impl SchedulerConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.block_size == 0 {
            return Err(ConfigError::ZeroBlockSize);
        }
        if self.max_num_seqs == 0 {
            return Err(ConfigError::ZeroMaxNumSeqs);
        }
        if self.max_num_batched_tokens == 0 {
            return Err(ConfigError::ZeroMaxNumBatchedTokens);
        }
        if self.max_model_len == 0 {
            return Err(ConfigError::ZeroMaxModelLen);
        }
        if self.max_waiting_requests == 0 {
            return Err(ConfigError::ZeroMaxWaitingRequests);
        }
        Ok(())
    }
}

/// One sequence's work in a step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScheduledSeq {
    pub id: SeqId,
    /// `None` for the base model.
    pub lora_id: Option<LoraId>,
    /// The device slot holding this sequence's adapter (`None` for the base model).
    pub lora_slot: Option<u32>,
    /// Tokens already in the KV cache before this step: `token_ids[i]` sits at position
    /// `num_computed_tokens + i`.
    pub num_computed_tokens: usize,
    /// Exactly the tokens to feed this step (a prefill chunk, a whole prompt, or one decode
    /// token).
    pub token_ids: Vec<u32>,
    /// The whole block table; token at position `p` goes to block `block_table[p / block_size]`,
    /// slot `p % block_size`.
    pub block_table: Vec<BlockId>,
    /// This step reaches the end of all known tokens (prompt + outputs): sample one token
    /// from the last position's logits and pass it to [`Scheduler::update`].
    pub sample: bool,
    /// Prompt tokens served from the prefix cache at this request's first schedule.
    pub num_cached_tokens: usize,
}

/// What one step runs. `seqs` are running requests first, then newly admitted ones.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SchedulerOutput {
    pub seqs: Vec<ScheduledSeq>,
    /// Requests preempted during this schedule (their blocks were freed; they wait again).
    pub preempted: Vec<SeqId>,
    /// Sum of `token_ids.len()` over `seqs`; never above `max_num_batched_tokens`.
    pub num_batched_tokens: usize,
    /// Adapters to copy into their slots before running this step (the slot's previous
    /// adapter has no running request left).
    pub lora_loads: Vec<LoraLoad>,
}

impl SchedulerOutput {
    pub fn is_empty(&self) -> bool {
        self.seqs.is_empty()
    }
}

/// A snapshot of the scheduler for metrics. Block counts exclude the null block.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SchedulerStats {
    pub num_running: usize,
    pub num_waiting: usize,
    pub num_blocks_used: usize,
    pub num_blocks_free: usize,
    pub num_blocks_total: usize,
    /// Prompt (+ resumed output) tokens looked up in the prefix cache at admission.
    pub prefix_cache_queries: u64,
    /// Tokens of those served from the cache.
    pub prefix_cache_hits: u64,
    /// Of `prefix_cache_queries` and `prefix_cache_hits`, the tokens of preempted requests
    /// looked up again when they resumed (vLLM leaves these out of its prefix-cache
    /// counters).
    pub resumed_prefix_cache_queries: u64,
    pub resumed_prefix_cache_hits: u64,
    pub num_preemptions: u64,
    /// Requests that left through `finish_request`, all reasons.
    pub num_finished: u64,
    /// Of those, the ones finished with [`FinishReason::Abort`].
    pub num_aborted: u64,
    /// Adapter loads into device slots so far.
    pub num_lora_loads: u64,
}

#[derive(Debug, Clone, Copy)]
struct Planned {
    id: SeqId,
    num_new: usize,
}

/// The request state machine: `Waiting -> Running (-> Preempted -> Running)* -> finished`.
///
/// One engine step is `schedule()`, run the model on the output, `update()` with the
/// sampled tokens, then `finish_request()` for every request the engine decided is done.
#[derive(Debug, Clone)]
pub struct Scheduler {
    config: SchedulerConfig,
    kv: KvCacheManager,
    requests: HashMap<SeqId, Request>,
    waiting: BTreeSet<WaitKey>,
    /// Running requests in admission order.
    running: Vec<SeqId>,
    next_arrival: u64,
    /// Decreasing counter giving preempted requests a place at the front (FCFS).
    next_front: i64,
    num_preemptions: u64,
    num_finished: u64,
    num_aborted: u64,
    /// Prefix-cache lookups of resumed (preempted) requests, in tokens: `(queries, hits)`.
    resumed_prefix: (u64, u64),
    lora: LoraSlots,
    /// Latency cap on the next steps' tokens while some request decodes (see
    /// [`Scheduler::set_step_token_cap`]); `None` = `max_num_batched_tokens` only.
    step_token_cap: Option<usize>,
}

/// Prefill tokens a step may still take under a step token cap, however tight the cap: new
/// requests keep moving even when the decodes alone exceed the latency target.
pub const MIN_PREFILL_TOKENS_UNDER_CAP: usize = 16;

impl Scheduler {
    pub fn new(config: SchedulerConfig) -> Result<Self, ConfigError> {
        config.validate()?;
        let mut kv = KvCacheManager::new(
            config.num_blocks,
            config.block_size,
            config.enable_prefix_caching,
        )?;
        if config.enable_kv_cache_events {
            kv.enable_events();
        }
        let lora = LoraSlots::new(config.max_loras);
        Ok(Self {
            config,
            kv,
            requests: HashMap::new(),
            waiting: BTreeSet::new(),
            running: Vec::new(),
            next_arrival: 0,
            next_front: -1,
            num_preemptions: 0,
            num_finished: 0,
            num_aborted: 0,
            resumed_prefix: (0, 0),
            lora,
            step_token_cap: None,
        })
    }

    pub fn config(&self) -> &SchedulerConfig {
        &self.config
    }

    /// Read-only view of the KV cache manager (block tables, pool), for metrics and tests.
    pub fn kv_cache_manager(&self) -> &KvCacheManager {
        &self.kv
    }

    /// The prefix-cache events recorded since the last call, oldest first (always empty
    /// unless `enable_kv_cache_events`). The engine collects them once per step.
    pub fn take_kv_events(&mut self) -> Vec<KvCacheEvent> {
        self.kv.take_events()
    }

    /// Empties the prefix cache (vLLM's `reset_prefix_cache`) when no request holds blocks;
    /// `false`, changing nothing, otherwise.
    pub fn reset_prefix_cache(&mut self) -> bool {
        self.kv.reset_prefix_cache()
    }

    /// Queues a request. Rejects what could never run (empty prompt, `max_tokens` 0, longer
    /// than `max_model_len`, more blocks than the whole cache) and, when
    /// `max_waiting_requests` wait already, answers [`AddRequestError::QueueFull`].
    pub fn add_request(&mut self, req: SchedRequest) -> Result<(), AddRequestError> {
        let id = req.id;
        if self.requests.contains_key(&id) {
            return Err(AddRequestError::DuplicateId { id });
        }
        let prompt_len = req.prompt_token_ids.len();
        if prompt_len == 0 {
            return Err(AddRequestError::EmptyPrompt { id });
        }
        if req.max_tokens == 0 {
            return Err(AddRequestError::ZeroMaxTokens { id });
        }
        if let Some(lora_id) = req.lora_id.filter(|_| self.lora.capacity() == 0) {
            return Err(AddRequestError::LoraDisabled { id, lora_id });
        }
        let total = prompt_len.saturating_add(req.max_tokens);
        if total > self.config.max_model_len {
            return Err(AddRequestError::TooLong {
                id,
                prompt_len,
                max_tokens: req.max_tokens,
                total,
                max_model_len: self.config.max_model_len,
            });
        }
        let needed_blocks = self.kv.blocks_for_tokens(total);
        let total_blocks = self.kv.num_usable_blocks();
        if needed_blocks > total_blocks {
            return Err(AddRequestError::ExceedsKvCache {
                id,
                prompt_len,
                max_tokens: req.max_tokens,
                needed_blocks,
                block_size: self.config.block_size,
                total_blocks,
                capacity_tokens: total_blocks * self.config.block_size,
            });
        }
        if self.num_queued() >= self.config.max_waiting_requests {
            return Err(AddRequestError::QueueFull {
                id,
                max_waiting_requests: self.config.max_waiting_requests,
            });
        }
        let arrival = self.next_arrival;
        self.next_arrival += 1;
        let mut request = Request::new(req, arrival);
        let key = match self.config.policy {
            SchedulingPolicy::Fcfs => (0, arrival as i64, id),
            SchedulingPolicy::Priority => (request.priority, arrival as i64, id),
        };
        request.wait_key = Some(key);
        self.waiting.insert(key);
        self.requests.insert(id, request);
        Ok(())
    }

    /// Decides the next step. Running requests go first, in admission order: each gets
    /// `min(tokens left to compute, long_prefill_token_threshold, budget left)` tokens. When
    /// the cache cannot hold them, running requests are preempted (lowest priority /
    /// latest first, possibly the request itself) until it fits. Then, if nobody was
    /// preempted, waiting requests are admitted in policy order while fewer than
    /// `max_num_seqs` run and budget is left, each after a prefix-cache lookup; the first
    /// that does not fit stops admission (no overtaking).
    ///
    /// With a step token cap ([`Scheduler::set_step_token_cap`]) and some running request
    /// decoding (one token left to compute), the step's budget is the cap, but never less
    /// than the decodes plus [`MIN_PREFILL_TOKENS_UNDER_CAP`], and every decode keeps its
    /// token: prefill chunks of running requests only take what the decodes after them leave.
    pub fn schedule(&mut self) -> SchedulerOutput {
        let mut budget = self.config.max_num_batched_tokens;
        // Decodes not yet visited in the running loop, reserved against prefill chunks.
        let mut decodes_left = 0;
        if let Some(cap) = self.step_token_cap {
            decodes_left = self
                .running
                .iter()
                .filter_map(|id| self.requests.get(id))
                .filter(|r| Self::is_decoding(r))
                .count();
            if decodes_left > 0 {
                budget = budget.min(cap.max(decodes_left + MIN_PREFILL_TOKENS_UNDER_CAP));
            }
        }
        let mut planned: Vec<Planned> = Vec::new();
        let mut preempted: Vec<SeqId> = Vec::new();

        // 1. Running requests.
        let mut i = 0;
        while i < self.running.len() && budget > 0 {
            let id = self.running[i];
            let Some(req) = self.requests.get(&id) else {
                // Cannot happen (finish_request removes both); heal rather than panic.
                self.running.remove(i);
                continue;
            };
            let available = if Self::is_decoding(req) {
                decodes_left = decodes_left.saturating_sub(1);
                budget
            } else {
                budget.saturating_sub(decodes_left)
            };
            let num_new = self.num_new_tokens(req, req.num_computed_tokens, available);
            if num_new == 0 {
                i += 1;
                continue;
            }
            let scheduled = loop {
                let Some(req) = self.requests.get(&id) else {
                    break false;
                };
                let fits = self
                    .kv
                    .allocate_slots(
                        req.kv_seq(),
                        req.num_computed_tokens,
                        num_new,
                        &ComputedBlocks::default(),
                    )
                    .is_some();
                if fits {
                    break true;
                }
                let Some(vidx) = self.pick_victim(id) else {
                    break false;
                };
                let victim = self.running.remove(vidx);
                if let Some(pos) = planned.iter().position(|p| p.id == victim) {
                    budget += planned.remove(pos).num_new;
                }
                self.preempt(victim);
                preempted.push(victim);
                if victim == id {
                    break false;
                }
                if vidx < i {
                    i -= 1;
                }
            };
            if scheduled {
                planned.push(Planned { id, num_new });
                budget -= num_new;
                i += 1;
            }
            // Otherwise `id` was preempted and removed at index `i`: do not advance.
        }

        // 2. Waiting requests, unless this step already had to preempt. A request whose
        //    adapter cannot get a slot (every slot serves running requests) is skipped, and
        //    so is every later LoRA request: the slots drain, and the oldest blocked adapter
        //    gets the first one that frees, so no request waits behind adapter thrash. Base
        //    requests need no slot and go on being admitted.
        if preempted.is_empty() {
            let mut cursor: Option<WaitKey> = None;
            let mut lora_blocked = false;
            while budget > 0 && self.running.len() < self.config.max_num_seqs {
                let next = match cursor {
                    None => self.waiting.first(),
                    Some(c) => self
                        .waiting
                        .range((Bound::Excluded(c), Bound::Unbounded))
                        .next(),
                };
                let Some(&key) = next else {
                    break;
                };
                cursor = Some(key);
                let id = key.2;
                let Some(req) = self.requests.get(&id) else {
                    self.waiting.remove(&key);
                    continue;
                };
                let lora_plan = match req.lora_id {
                    None => None,
                    Some(_) if lora_blocked => continue,
                    Some(lora_id) => match self.lora.plan(lora_id) {
                        SlotPlan::Full => {
                            lora_blocked = true;
                            continue;
                        }
                        p => Some((lora_id, p)),
                    },
                };
                let resumed = req.status == RequestStatus::Preempted;
                let num_tokens = req.num_tokens();
                let computed = self.kv.get_computed_blocks(req.kv_seq());
                let num_cached = computed.num_cached_tokens;
                let num_new = self.num_new_tokens(req, num_cached, budget);
                if num_new == 0 {
                    break;
                }
                if self
                    .kv
                    .allocate_slots(req.kv_seq(), num_cached, num_new, &computed)
                    .is_none()
                {
                    break;
                }
                if let Some((lora_id, plan)) = lora_plan {
                    self.lora.acquire(lora_id, plan);
                }
                if resumed && self.kv.prefix_caching_enabled() {
                    self.resumed_prefix.0 += num_tokens as u64;
                    self.resumed_prefix.1 += num_cached as u64;
                }
                self.waiting.remove(&key);
                if let Some(req) = self.requests.get_mut(&id) {
                    req.wait_key = None;
                    req.status = RequestStatus::Running;
                    req.num_computed_tokens = num_cached;
                    req.num_cached_tokens.get_or_insert(num_cached);
                }
                self.running.push(id);
                planned.push(Planned { id, num_new });
                budget -= num_new;
            }
        }

        // 3. Materialize.
        let mut seqs = Vec::with_capacity(planned.len());
        let mut num_batched_tokens = 0;
        for p in planned {
            let Some(req) = self.requests.get(&p.id) else {
                continue;
            };
            let start = req.num_computed_tokens;
            let end = start + p.num_new;
            num_batched_tokens += p.num_new;
            seqs.push(ScheduledSeq {
                id: p.id,
                lora_id: req.lora_id,
                lora_slot: req.lora_id.and_then(|l| self.lora.slot_of(l)),
                num_computed_tokens: start,
                token_ids: req.token_ids[start..end].to_vec(),
                block_table: self.kv.block_table(p.id).unwrap_or_default().to_vec(),
                sample: end == req.num_tokens(),
                num_cached_tokens: req.num_cached_tokens.unwrap_or(0),
            });
        }
        SchedulerOutput {
            seqs,
            preempted,
            num_batched_tokens,
            lora_loads: self.lora.take_loads(),
        }
    }

    /// Applies a step's results: every scheduled sequence's tokens are now computed, each
    /// sequence with `sample == true` gets its sampled token (`sampled` holds exactly one
    /// `(id, token)` per such sequence), and blocks that became full enter the prefix cache.
    /// Sequences finished since `schedule()` are skipped. Everything is checked before
    /// anything changes.
    ///
    /// Returns the ids that now have `max_tokens` outputs: they will not be scheduled again,
    /// and the engine should finish them (`FinishReason::Length`, unless its own stop check
    /// on the last token says `Stopped`).
    pub fn update(
        &mut self,
        output: &SchedulerOutput,
        sampled: &[(SeqId, u32)],
    ) -> Result<Vec<SeqId>, UpdateError> {
        let mut sample_of: HashMap<SeqId, (u32, usize)> = HashMap::with_capacity(sampled.len());
        for &(id, tok) in sampled {
            sample_of.entry(id).or_insert((tok, 0)).1 += 1;
        }
        let mut scheduled: HashMap<SeqId, &ScheduledSeq> =
            HashMap::with_capacity(output.seqs.len());
        for seq in &output.seqs {
            scheduled.insert(seq.id, seq);
        }
        for (&id, &(_, count)) in &sample_of {
            let Some(seq) = scheduled.get(&id) else {
                return Err(UpdateError::NotScheduled { id });
            };
            if !seq.sample {
                return Err(UpdateError::UnexpectedSample { id });
            }
            if count > 1 {
                return Err(UpdateError::DuplicateSample { id, count });
            }
        }
        for seq in &output.seqs {
            let Some(req) = self.requests.get(&seq.id) else {
                continue; // finished in between
            };
            if req.status != RequestStatus::Running
                || req.num_computed_tokens != seq.num_computed_tokens
            {
                return Err(UpdateError::StaleOutput {
                    id: seq.id,
                    scheduled: seq.num_computed_tokens,
                    current: req.num_computed_tokens,
                });
            }
            if seq.sample && !sample_of.contains_key(&seq.id) {
                return Err(UpdateError::MissingSample { id: seq.id });
            }
        }

        let mut capped = Vec::new();
        for seq in &output.seqs {
            let Some(req) = self.requests.get_mut(&seq.id) else {
                continue;
            };
            req.num_computed_tokens += seq.token_ids.len();
            if let Some(&(tok, _)) = sample_of.get(&seq.id) {
                req.token_ids.push(tok);
                if req.is_capped() {
                    capped.push(seq.id);
                }
            }
            self.kv
                .cache_full_blocks(req.kv_seq(), req.num_computed_tokens);
        }
        Ok(capped)
    }

    /// Removes a request wherever it is and returns its blocks to the pool (exactly once).
    /// Returns `false`, changing nothing, for an unknown (or already finished) id.
    pub fn finish_request(&mut self, id: SeqId, reason: FinishReason) -> bool {
        let Some(req) = self.requests.remove(&id) else {
            return false;
        };
        if let Some(key) = req.wait_key {
            self.waiting.remove(&key);
        }
        if req.status == RequestStatus::Running {
            if let Some(pos) = self.running.iter().position(|&r| r == id) {
                self.running.remove(pos);
            }
            if let Some(lora_id) = req.lora_id {
                self.lora.release(lora_id);
            }
        }
        self.kv.free(id);
        self.num_finished += 1;
        if reason == FinishReason::Abort {
            self.num_aborted += 1;
        }
        true
    }

    pub fn num_running(&self) -> usize {
        self.running.len()
    }

    /// Waiting requests, preempted ones included.
    pub fn num_waiting(&self) -> usize {
        self.waiting.len()
    }

    /// Waiting requests beyond the free running slots (`max_num_seqs` less the running
    /// ones): what `max_waiting_requests` bounds, so a burst that the next step can start
    /// is not refused for having arrived between two steps.
    pub fn num_queued(&self) -> usize {
        let free = self.config.max_num_seqs.saturating_sub(self.running.len());
        self.waiting.len().saturating_sub(free)
    }

    pub fn has_unfinished(&self) -> bool {
        !self.requests.is_empty()
    }

    /// Whether `id` is an unfinished request.
    pub fn contains(&self, id: SeqId) -> bool {
        self.requests.contains_key(&id)
    }

    /// Running request ids, in the order they are scheduled (and the reverse of FCFS
    /// preemption order).
    pub fn running_ids(&self) -> &[SeqId] {
        &self.running
    }

    /// Waiting request ids, next to be admitted first.
    pub fn waiting_ids(&self) -> Vec<SeqId> {
        self.waiting.iter().map(|k| k.2).collect()
    }

    pub fn request_status(&self, id: SeqId) -> Option<RequestStatus> {
        self.requests.get(&id).map(|r| r.status)
    }

    /// Tokens sampled so far for `id` (kept across preemption).
    pub fn output_tokens(&self, id: SeqId) -> Option<&[u32]> {
        self.requests.get(&id).map(|r| r.output_tokens())
    }

    /// Prompt tokens served from the prefix cache at `id`'s first schedule (0 before it).
    pub fn num_cached_tokens(&self, id: SeqId) -> Option<usize> {
        self.requests
            .get(&id)
            .map(|r| r.num_cached_tokens.unwrap_or(0))
    }

    /// Tokens of `id` whose KV is currently in its blocks.
    pub fn num_computed_tokens(&self, id: SeqId) -> Option<usize> {
        self.requests.get(&id).map(|r| r.num_computed_tokens)
    }

    /// `(slot, lora_id, running users)` of the adapters resident in device slots.
    pub fn lora_residency(&self) -> Vec<(u32, LoraId, usize)> {
        self.lora.resident()
    }

    /// Drops an unloaded adapter from its slot if no running request uses it (its slot is
    /// then the first to be reused). Returns whether it was resident and is now gone.
    pub fn evict_lora(&mut self, lora_id: LoraId) -> bool {
        self.lora.evict(lora_id)
    }

    pub fn stats(&self) -> SchedulerStats {
        let total = self.kv.num_usable_blocks();
        let free = self.kv.num_free_blocks();
        let prefix = self.kv.prefix_cache_stats();
        SchedulerStats {
            num_running: self.running.len(),
            num_waiting: self.waiting.len(),
            num_blocks_used: total - free,
            num_blocks_free: free,
            num_blocks_total: total,
            prefix_cache_queries: prefix.queries,
            prefix_cache_hits: prefix.hits,
            resumed_prefix_cache_queries: self.resumed_prefix.0,
            resumed_prefix_cache_hits: self.resumed_prefix.1,
            num_preemptions: self.num_preemptions,
            num_finished: self.num_finished,
            num_aborted: self.num_aborted,
            num_lora_loads: self.lora.num_loads(),
        }
    }

    /// Tokens to schedule for `req` this step if it has `num_computed` tokens computed and
    /// `budget` left: 0 when it has sampled `max_tokens` outputs (or has nothing to compute).
    /// Caps the tokens of the next steps in which some request decodes (the engine sizes it
    /// from its measured step cost and `--target-itl-ms`); `None` lifts the cap. The cap never
    /// exceeds `max_num_batched_tokens` in effect, and steps with only prefills ignore it.
    pub fn set_step_token_cap(&mut self, cap: Option<usize>) {
        self.step_token_cap = cap;
    }

    /// The request has exactly one token left to compute: its next step is a decode.
    fn is_decoding(req: &Request) -> bool {
        !req.is_capped() && req.num_tokens().saturating_sub(req.num_computed_tokens) == 1
    }

    fn num_new_tokens(&self, req: &Request, num_computed: usize, budget: usize) -> usize {
        if req.is_capped() {
            return 0;
        }
        let mut n = req.num_tokens().saturating_sub(num_computed);
        let threshold = self.config.long_prefill_token_threshold;
        if threshold > 0 {
            n = n.min(threshold);
        }
        n.min(budget)
    }

    /// Index in `running` of the request to preempt next. Requests that reached `max_tokens`
    /// are skipped (resuming them would sample past it); `current` is always a candidate.
    fn pick_victim(&self, current: SeqId) -> Option<usize> {
        let mut candidates = self.running.iter().enumerate().filter(|(_, id)| {
            **id == current || self.requests.get(id).is_some_and(|r| !r.is_capped())
        });
        match self.config.policy {
            SchedulingPolicy::Fcfs => candidates.next_back().map(|(i, _)| i),
            SchedulingPolicy::Priority => candidates
                .max_by_key(|(_, id)| {
                    self.requests
                        .get(id)
                        .map_or((i32::MAX, u64::MAX), |r| (r.priority, r.arrival))
                })
                .map(|(i, _)| i),
        }
    }

    /// Frees `id`'s blocks and queues it again; it will recompute prompt + outputs so far.
    fn preempt(&mut self, id: SeqId) {
        self.kv.free(id);
        self.num_preemptions += 1;
        if let Some(r) = self.requests.get(&id) {
            if let (Some(lora_id), RequestStatus::Running) = (r.lora_id, r.status) {
                self.lora.release(lora_id);
            }
        }
        let key = match self.requests.get(&id) {
            Some(r) => match self.config.policy {
                SchedulingPolicy::Fcfs => (0, self.next_front, id),
                SchedulingPolicy::Priority => (r.priority, r.arrival as i64, id),
            },
            None => return,
        };
        self.next_front -= 1;
        if let Some(r) = self.requests.get_mut(&id) {
            r.num_computed_tokens = 0;
            r.status = RequestStatus::Preempted;
            r.wait_key = Some(key);
        }
        self.waiting.insert(key);
    }
}
