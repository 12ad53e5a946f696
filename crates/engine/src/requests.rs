//! The engine thread's table of live requests: each sequence's decoding state, which
//! sequences make up a request (`n > 1` completions are one group), the siblings held back
//! until their leader's prompt is cached, and the groups waiting for their adapter's weights.
//!
//! The four maps are kept consistent here and only here: a sequence is removed with
//! [`Requests::remove_seq`], which also forgets its group once the last sequence is gone.

use crate::detok::IncrementalDetokenizer;
use crate::params::RequestId;
use crate::params::{GenerationParams, RequestEvent, TokenLogprob};
use crate::stop::StopMatcher;
use crate::structured::Constraint;
use lantern_scheduler::{LoraId, SchedRequest, SeqId};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::mpsc as tmpsc;

/// The sequence id of completion `index` of request `group`.
pub(crate) fn seq_id(group: RequestId, index: usize) -> SeqId {
    SeqId((group.0 << 8) | index as u64)
}

/// Decoding state of one sequence (one completion of a group).
pub(crate) struct SeqState {
    pub group: RequestId,
    pub index: usize,
    /// LoRA adapter (`None`: the base model).
    pub lora_id: Option<LoraId>,
    pub prompt: Arc<Vec<u32>>,
    pub params: Arc<GenerationParams>,
    pub seed: u64,
    pub max_tokens: usize,
    pub detok: IncrementalDetokenizer,
    pub stop: StopMatcher,
    pub events: tmpsc::UnboundedSender<RequestEvent>,
    pub arrival: Instant,
    pub first_scheduled: Option<Instant>,
    pub first_token: Option<Instant>,
    pub last_token: Option<Instant>,
    /// Times the scheduler preempted it.
    pub num_preemptions: u32,
    pub num_output: usize,
    pub num_cached: usize,
    /// Prompt logprobs collected so far (index = prompt position); `Some` when asked for.
    pub prompt_lps: Option<Vec<Option<TokenLogprob>>>,
    pub prompt_lps_sent: bool,
    /// Structured outputs: this sequence's matcher.
    pub constraint: Option<Constraint>,
}

impl SeqState {
    /// The scheduler's view of this sequence.
    pub fn sched_request(&self, id: SeqId) -> SchedRequest {
        // Prompt logprobs need logits for every prompt position: keep the group off shared
        // cache entries (a private salt); siblings still share the leader's blocks.
        let cache_salt = if self.params.prompt_logprobs.is_some() {
            Some(format!("\u{0}prompt-logprobs-{}", self.group))
        } else {
            self.params.cache_salt.clone()
        };
        SchedRequest {
            id,
            prompt_token_ids: self.prompt.to_vec(),
            max_tokens: self.max_tokens,
            priority: self.params.priority,
            lora_id: self.lora_id,
            cache_salt,
        }
    }

    /// Whether this step must return the logits of every token of the chunk (prompt
    /// logprobs still missing).
    pub fn wants_all_logits(&self) -> bool {
        self.prompt_lps
            .as_ref()
            .is_some_and(|v| v.len() < self.prompt.len())
    }
}

/// Siblings of an `n > 1` request waiting for the first one's prompt to be cached.
pub(crate) struct Deferred {
    pub leader: SeqId,
    pub children: Vec<SeqId>,
}

/// Every live request of the engine thread.
#[derive(Default)]
pub(crate) struct Requests {
    seqs: HashMap<SeqId, SeqState>,
    /// group -> sequence ids still alive.
    groups: HashMap<RequestId, Vec<SeqId>>,
    /// group -> deferred siblings (not yet in the scheduler; their state is in `seqs`).
    deferred: HashMap<RequestId, Deferred>,
    /// Groups whose adapter weights are being read from disk (not in the scheduler yet).
    pending: HashSet<RequestId>,
}

impl Requests {
    pub fn get(&self, id: SeqId) -> Option<&SeqState> {
        self.seqs.get(&id)
    }

    pub fn get_mut(&mut self, id: SeqId) -> Option<&mut SeqState> {
        self.seqs.get_mut(&id)
    }

    pub fn contains(&self, id: SeqId) -> bool {
        self.seqs.contains_key(&id)
    }

    /// Every live sequence.
    pub fn iter(&self) -> impl Iterator<Item = (SeqId, &SeqState)> {
        self.seqs.iter().map(|(&id, s)| (id, s))
    }

    /// Live sequences the scheduler does not have yet: every sequence of a group waiting
    /// for its adapter's weights, and the held back siblings of the other groups.
    pub fn num_held(&self) -> usize {
        let live = |ids: &[SeqId]| ids.iter().filter(|id| self.seqs.contains_key(id)).count();
        let pending: usize = self
            .pending
            .iter()
            .filter_map(|g| self.groups.get(g))
            .map(|ids| live(ids))
            .sum();
        let deferred: usize = self
            .deferred
            .iter()
            .filter(|(g, _)| !self.pending.contains(g))
            .map(|(_, d)| live(&d.children))
            .sum();
        pending + deferred
    }

    /// Adds a whole group: its sequences (leader first), held back siblings when `n > 1`,
    /// and whether it waits for its adapter's weights.
    pub fn insert_group(&mut self, group: RequestId, seqs: Vec<(SeqId, SeqState)>, pending: bool) {
        let ids: Vec<SeqId> = seqs.iter().map(|(id, _)| *id).collect();
        if pending {
            self.pending.insert(group);
        }
        if let [leader, children @ ..] = ids.as_slice() {
            if !children.is_empty() {
                self.deferred.insert(
                    group,
                    Deferred {
                        leader: *leader,
                        children: children.to_vec(),
                    },
                );
            }
        }
        self.seqs.extend(seqs);
        self.groups.insert(group, ids);
    }

    /// Removes a sequence's state; the group is forgotten with its last sequence.
    pub fn remove_seq(&mut self, id: SeqId) -> Option<SeqState> {
        let s = self.seqs.remove(&id)?;
        if let Some(ids) = self.groups.get_mut(&s.group) {
            ids.retain(|&x| x != id);
            if ids.is_empty() {
                self.groups.remove(&s.group);
                self.deferred.remove(&s.group);
                self.pending.remove(&s.group);
            }
        }
        Some(s)
    }

    /// The live sequence ids of a group.
    pub fn group_seqs(&self, group: RequestId) -> Vec<SeqId> {
        self.groups.get(&group).cloned().unwrap_or_default()
    }

    /// Every live group.
    pub fn group_ids(&self) -> Vec<RequestId> {
        self.groups.keys().copied().collect()
    }

    /// Groups whose client went away (the leader's event channel is closed).
    pub fn closed_groups(&self) -> Vec<RequestId> {
        self.groups
            .iter()
            .filter(|(_, ids)| {
                ids.first()
                    .and_then(|id| self.seqs.get(id))
                    .is_some_and(|s| s.events.is_closed())
            })
            .map(|(&g, _)| g)
            .collect()
    }

    /// Drops the held back siblings of a group (they stay in the table).
    pub fn drop_deferred(&mut self, group: RequestId) -> Option<Deferred> {
        self.deferred.remove(&group)
    }

    pub fn deferred(&self) -> impl Iterator<Item = (RequestId, &Deferred)> {
        self.deferred.iter().map(|(&g, d)| (g, d))
    }

    /// Whether every held back group waits for its adapter (nothing can move without a
    /// command).
    pub fn deferred_all_pending(&self) -> bool {
        self.deferred.keys().all(|g| self.pending.contains(g))
    }

    pub fn is_pending(&self, group: RequestId) -> bool {
        self.pending.contains(&group)
    }

    /// The group's adapter is in host memory now; false if the group was aborted meanwhile.
    pub fn take_pending(&mut self, group: RequestId) -> bool {
        self.pending.remove(&group)
    }
}
