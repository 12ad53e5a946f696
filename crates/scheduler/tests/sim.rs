//! Property test: a fake engine drives the scheduler through random workloads and checks
//! the bookkeeping invariants after every step, including the contents of a fake KV cache.
#![allow(clippy::unwrap_used)]

use std::collections::{HashMap, HashSet};

use lantern_scheduler::{
    hash_block, AddRequestError, BlockHash, CacheKeyExtra, FinishReason, KvCacheEvent,
    RequestStatus, SchedRequest, Scheduler, SchedulerConfig, SchedulingPolicy, NULL_BLOCK,
};
use lantern_scheduler::{BlockId, LoraId, SeqId};
use proptest::prelude::*;

#[derive(Debug, Clone)]
struct Spec {
    arrival: usize,
    prompt: Vec<u32>,
    max_tokens: usize,
    priority: i32,
    lora_id: Option<LoraId>,
    salt: Option<String>,
    /// Abort this many steps after arrival (`abort_mid_step`: between schedule and update).
    abort_after: Option<usize>,
    abort_mid_step: bool,
    /// The engine sees a stop after this many outputs.
    stop_after: Option<usize>,
}

fn spec() -> impl Strategy<Value = Spec> {
    (
        (
            0usize..30,
            0usize..3,
            0usize..18,
            prop::collection::vec(0u32..6, 0..16),
        ),
        (1usize..12, -2i32..3, 0u32..4, 0usize..3),
        (prop::option::weighted(0.25, 0usize..40), any::<bool>()),
        prop::option::weighted(0.3, 1usize..8),
    )
        .prop_map(
            |(
                (arrival, prefix_id, prefix_len, suffix),
                (max_tokens, priority, lora_id, salt),
                (abort_after, abort_mid_step),
                stop_after,
            )| {
                // Shared prefixes make prefix-cache hits common.
                let mut prompt: Vec<u32> = (0..prefix_len as u32)
                    .map(|i| 100 * prefix_id as u32 + i)
                    .collect();
                prompt.extend(suffix);
                Spec {
                    arrival,
                    prompt,
                    max_tokens,
                    priority,
                    lora_id: (lora_id > 0).then_some(LoraId(lora_id)),
                    salt: match salt {
                        0 => None,
                        1 => Some("a".to_string()),
                        _ => Some("b".to_string()),
                    },
                    abort_after,
                    abort_mid_step,
                    stop_after,
                }
            },
        )
}

fn config() -> impl Strategy<Value = SchedulerConfig> {
    (
        (
            1usize..7,
            1usize..40,
            prop::sample::select(vec![1usize, 2, 4, 8]),
        ),
        (2usize..80, 1usize..12, 0usize..10),
        (any::<bool>(), any::<bool>(), 1usize..3),
    )
        .prop_map(
            |(
                (max_num_seqs, max_num_batched_tokens, block_size),
                (num_blocks, max_waiting_requests, long_prefill_token_threshold),
                (enable_prefix_caching, priority, max_loras),
            )| SchedulerConfig {
                max_loras,
                enable_kv_cache_events: true,
                max_num_seqs,
                max_num_batched_tokens,
                block_size,
                num_blocks,
                max_model_len: 40,
                max_waiting_requests,
                enable_prefix_caching,
                long_prefill_token_threshold,
                policy: if priority {
                    SchedulingPolicy::Priority
                } else {
                    SchedulingPolicy::Fcfs
                },
            },
        )
}

fn mix(a: u64, b: u64) -> u64 {
    let x = (a ^ b.wrapping_mul(0x9e37_79b9_7f4a_7c15)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x ^ (x >> 31)
}

/// What the fake engine knows about a live request.
struct Live {
    spec: Spec,
    added_at: usize,
    tokens: Vec<u32>,
}

impl Live {
    /// Fingerprint of the KV at each position: depends on the adapter, the salt and every
    /// token up to and including that position, like real KV does.
    fn fingerprints(&self) -> Vec<u64> {
        let salt = self
            .spec
            .salt
            .as_deref()
            .map_or(0, |s| 1 + s.len() as u64 * 7 + s.as_bytes()[0] as u64);
        let mut h = mix(u64::from(self.spec.lora_id.map_or(0, |l| l.0)) + 1, salt);
        self.tokens
            .iter()
            .map(|&t| {
                h = mix(h, u64::from(t));
                h
            })
            .collect()
    }
}

fn check_blocks(s: &Scheduler) -> Result<(), TestCaseError> {
    let kv = s.kv_cache_manager();
    let pool = kv.pool();
    pool.check_consistency().map_err(TestCaseError::fail)?;
    let mut holders = vec![0u32; pool.num_blocks()];
    for (id, table) in kv.block_tables() {
        prop_assert!(s.contains(id), "manager tracks finished request {}", id);
        if s.request_status(id) != Some(RequestStatus::Running) {
            prop_assert!(table.is_empty(), "non-running request {} holds blocks", id);
        }
        for &b in table {
            prop_assert_ne!(b, NULL_BLOCK);
            holders[b.index()] += 1;
        }
    }
    for (b, &n) in holders.iter().enumerate() {
        prop_assert_eq!(
            pool.ref_count(BlockId(b as u32)),
            n,
            "ref count of block {}",
            b
        );
    }
    let st = s.stats();
    prop_assert_eq!(st.num_blocks_used + st.num_blocks_free, st.num_blocks_total);
    Ok(())
}

/// Replays the recorded KV-cache events onto `mirror` (what a subscriber would know) and
/// checks it equals the pool's prefix-cache map.
fn check_events(s: &mut Scheduler, mirror: &mut HashSet<BlockHash>) -> Result<(), TestCaseError> {
    let bs = s.config().block_size;
    for ev in s.take_kv_events() {
        match ev {
            KvCacheEvent::BlockStored {
                block_hashes,
                parent_block_hash,
                token_ids,
                block_size,
                lora_id,
                cache_salt,
            } => {
                prop_assert_eq!(block_size, bs);
                prop_assert!(!block_hashes.is_empty());
                prop_assert_eq!(token_ids.len(), block_hashes.len() * bs);
                if parent_block_hash.is_none() {
                    // A chain from the root: every hash is recomputable from the event.
                    let extra = CacheKeyExtra {
                        lora_id,
                        cache_salt: cache_salt.as_deref(),
                    };
                    let mut parent = None;
                    for (h, toks) in block_hashes.iter().zip(token_ids.chunks(bs)) {
                        let want = hash_block(parent, toks, &extra);
                        prop_assert_eq!(*h, want, "stored hash does not chain");
                        parent = Some(want);
                    }
                } else {
                    prop_assert!(cache_salt.is_none(), "salt outside the first block");
                }
                for h in block_hashes {
                    prop_assert!(mirror.insert(h), "hash stored twice");
                }
            }
            KvCacheEvent::BlockRemoved { block_hashes } => {
                for h in block_hashes {
                    prop_assert!(mirror.remove(&h), "removed a hash never stored");
                }
            }
            KvCacheEvent::AllBlocksCleared => mirror.clear(),
        }
    }
    let pool: HashSet<BlockHash> = s.kv_cache_manager().pool().cached_hashes().collect();
    prop_assert_eq!(&pool, mirror, "events disagree with the prefix cache");
    Ok(())
}

fn simulate(cfg: SchedulerConfig, specs: Vec<Spec>) -> Result<(), TestCaseError> {
    let mut s = Scheduler::new(cfg.clone()).map_err(|e| TestCaseError::fail(e.to_string()))?;
    let mut mirror = HashSet::new();
    let bs = cfg.block_size;
    let usable = cfg.num_blocks - 1;
    // Fake KV memory: one fingerprint per slot.
    let mut kv_mem: Vec<Option<u64>> = vec![None; cfg.num_blocks * bs];
    let mut pending: Vec<(usize, SeqId, Spec)> = specs
        .into_iter()
        .enumerate()
        .map(|(i, sp)| (sp.arrival, SeqId(i as u64), sp))
        .collect();
    let mut live: HashMap<SeqId, Live> = HashMap::new();
    // Fake adapter slots: which adapter each device slot holds.
    let mut lora_slots: Vec<Option<LoraId>> = vec![None; cfg.max_loras];
    let mut done = 0usize;
    let total = pending.len();

    for step in 0..5000 {
        if pending.is_empty() && !s.has_unfinished() {
            break;
        }
        // Arrivals (a full queue is retried next step).
        let mut retry = Vec::new();
        for (at, id, sp) in std::mem::take(&mut pending) {
            if at > step {
                retry.push((at, id, sp));
                continue;
            }
            let r = s.add_request(SchedRequest {
                id,
                prompt_token_ids: sp.prompt.clone(),
                max_tokens: sp.max_tokens,
                priority: sp.priority,
                lora_id: sp.lora_id,
                cache_salt: sp.salt.clone(),
            });
            let need = (sp.prompt.len() + sp.max_tokens).div_ceil(bs);
            match r {
                Ok(()) => {
                    prop_assert!(!sp.prompt.is_empty());
                    prop_assert!(sp.prompt.len() + sp.max_tokens <= cfg.max_model_len);
                    prop_assert!(need <= usable);
                    live.insert(
                        id,
                        Live {
                            tokens: sp.prompt.clone(),
                            spec: sp,
                            added_at: step,
                        },
                    );
                }
                Err(AddRequestError::QueueFull { .. }) => {
                    // Preempted requests may push the queue past the limit.
                    prop_assert!(s.num_waiting() >= cfg.max_waiting_requests);
                    retry.push((step + 1, id, sp));
                }
                Err(AddRequestError::EmptyPrompt { .. }) => {
                    prop_assert!(sp.prompt.is_empty());
                    done += 1;
                }
                Err(AddRequestError::TooLong { .. }) => {
                    prop_assert!(sp.prompt.len() + sp.max_tokens > cfg.max_model_len);
                    done += 1;
                }
                Err(AddRequestError::ExceedsKvCache { needed_blocks, .. }) => {
                    prop_assert_eq!(needed_blocks, need);
                    prop_assert!(need > usable);
                    done += 1;
                }
                Err(e) => return Err(TestCaseError::fail(format!("unexpected {e}"))),
            }
        }
        pending = retry;

        // Aborts before scheduling.
        let abort_now = |l: &Live, mid: bool| {
            l.spec.abort_mid_step == mid
                && l.spec.abort_after.is_some_and(|a| l.added_at + a == step)
        };
        let ids: Vec<SeqId> = live.keys().copied().collect();
        for id in ids {
            if live.get(&id).is_some_and(|l| abort_now(l, false)) {
                prop_assert!(s.finish_request(id, FinishReason::Abort));
                prop_assert!(!s.finish_request(id, FinishReason::Abort));
                live.remove(&id);
                done += 1;
            }
        }
        check_blocks(&s)?;
        check_events(&mut s, &mut mirror)?;

        let running_before: Vec<SeqId> = s.running_ids().to_vec();
        let out = s.schedule();
        prop_assert!(out.num_batched_tokens <= cfg.max_num_batched_tokens);
        prop_assert_eq!(
            out.num_batched_tokens,
            out.seqs.iter().map(|q| q.token_ids.len()).sum::<usize>()
        );
        prop_assert!(out.seqs.len() <= cfg.max_num_seqs);
        prop_assert!(s.num_running() <= cfg.max_num_seqs);
        for &p in &out.preempted {
            prop_assert_eq!(s.request_status(p), Some(RequestStatus::Preempted));
            prop_assert_eq!(s.num_computed_tokens(p), Some(0));
            prop_assert!(!out.seqs.iter().any(|q| q.id == p));
        }
        if !out.preempted.is_empty() {
            prop_assert!(s.stats().num_preemptions > 0);
        }
        // Progress: if anything is unfinished and not capped, something runs.
        if s.num_running() + s.num_waiting() > 0 {
            prop_assert!(!out.seqs.is_empty(), "no progress at step {}", step);
        }
        check_blocks(&s)?;
        check_events(&mut s, &mut mirror)?;

        // Fake runner: load adapters, then every sequence must find its own in its slot.
        for ld in &out.lora_loads {
            let slot = ld.slot as usize;
            prop_assert!(slot < cfg.max_loras);
            let old = lora_slots[slot];
            // Never swap out an adapter that a request running before and after this
            // schedule still uses.
            for &r in running_before
                .iter()
                .filter(|r| s.running_ids().contains(r))
            {
                if let (Some(o), Some(l)) = (old, live.get(&r)) {
                    prop_assert!(
                        l.spec.lora_id != Some(o) || o == ld.lora_id,
                        "slot {} swapped from adapter {} under running request {}: loads {:?}",
                        slot,
                        o,
                        r,
                        out.lora_loads
                    );
                }
            }
            lora_slots[slot] = Some(ld.lora_id);
        }
        let distinct: std::collections::HashSet<LoraId> =
            out.seqs.iter().filter_map(|q| q.lora_id).collect();
        prop_assert!(distinct.len() <= cfg.max_loras);
        for q in &out.seqs {
            let l = &live[&q.id];
            prop_assert_eq!(q.lora_id, l.spec.lora_id);
            if let Some(lora_id) = q.lora_id {
                let slot = q.lora_slot.map(|s| s as usize);
                prop_assert!(slot.is_some(), "adapter request {} without a slot", q.id);
                prop_assert_eq!(lora_slots[slot.unwrap_or(0)], Some(lora_id));
            } else {
                prop_assert_eq!(q.lora_slot, None);
            }
            let nc = q.num_computed_tokens;
            let end = nc + q.token_ids.len();
            prop_assert!(!q.token_ids.is_empty());
            prop_assert_eq!(&q.token_ids[..], &l.tokens[nc..end]);
            prop_assert_eq!(q.sample, end == l.tokens.len());
            prop_assert!(q.block_table.len() * bs >= end);
            prop_assert!(!q.block_table.contains(&NULL_BLOCK));
            let fp = l.fingerprints();
            let slot = |p: usize| q.block_table[p / bs].index() * bs + p % bs;
            for (p, &f) in fp.iter().enumerate().take(nc) {
                prop_assert_eq!(kv_mem[slot(p)], Some(f), "request {} position {}", q.id, p);
            }
            let pool = s.kv_cache_manager().pool();
            for (p, &f) in fp.iter().enumerate().take(end).skip(nc) {
                let b = q.block_table[p / bs];
                prop_assert_eq!(pool.ref_count(b), 1, "writing into shared block {}", b);
                prop_assert!(
                    pool.block_hash(b).is_none(),
                    "writing into cached block {}",
                    b
                );
                kv_mem[slot(p)] = Some(f);
            }
        }

        // Aborts while the model ran.
        let ids: Vec<SeqId> = live.keys().copied().collect();
        for id in ids {
            if live.get(&id).is_some_and(|l| abort_now(l, true)) {
                prop_assert!(s.finish_request(id, FinishReason::Abort));
                live.remove(&id);
                done += 1;
            }
        }

        // Fake sampler over a tiny vocabulary (so outputs also share prefixes).
        let sampled: Vec<(SeqId, u32)> = out
            .seqs
            .iter()
            .filter(|q| q.sample)
            .map(|q| {
                let n = live.get(&q.id).map_or(0, |l| l.tokens.len());
                (q.id, ((q.id.0 as usize * 3 + n) % 4) as u32)
            })
            .collect();
        let capped = s
            .update(&out, &sampled)
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        for &(id, tok) in &sampled {
            if let Some(l) = live.get_mut(&id) {
                l.tokens.push(tok);
            }
        }
        // Engine stop checks.
        let ids: Vec<SeqId> = live.keys().copied().collect();
        for id in ids {
            let Some(l) = live.get(&id) else { continue };
            let outputs = l.tokens.len() - l.spec.prompt.len();
            prop_assert!(outputs <= l.spec.max_tokens);
            prop_assert_eq!(s.output_tokens(id), Some(&l.tokens[l.spec.prompt.len()..]));
            let is_capped = capped.contains(&id);
            prop_assert_eq!(
                is_capped,
                outputs == l.spec.max_tokens && sampled.iter().any(|x| x.0 == id)
            );
            let stop = l.spec.stop_after.is_some_and(|n| outputs >= n);
            if stop || is_capped {
                let reason = if stop {
                    FinishReason::Stop
                } else {
                    FinishReason::Length
                };
                prop_assert!(s.finish_request(id, reason));
                live.remove(&id);
                done += 1;
            }
        }
        check_blocks(&s)?;
        check_events(&mut s, &mut mirror)?;
    }

    prop_assert!(
        pending.is_empty() && !s.has_unfinished(),
        "did not finish in 5000 steps"
    );
    prop_assert_eq!(done, total);
    prop_assert_eq!(s.num_running() + s.num_waiting(), 0);
    let st = s.stats();
    prop_assert_eq!(st.num_blocks_free, st.num_blocks_total);
    prop_assert_eq!(s.kv_cache_manager().num_tracked_seqs(), 0);
    // Everything is free: the prefix cache can be reset, and subscribers learn it.
    prop_assert!(s.reset_prefix_cache());
    check_events(&mut s, &mut mirror)?;
    prop_assert!(mirror.is_empty());
    s.kv_cache_manager()
        .pool()
        .check_consistency()
        .map_err(TestCaseError::fail)?;
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, failure_persistence: None, rng_seed: proptest::test_runner::RngSeed::Fixed(0x5eed), ..ProptestConfig::default() })]

    #[test]
    fn random_workloads_keep_the_books(
        cfg in config(),
        specs in prop::collection::vec(spec(), 1..14),
    ) {
        simulate(cfg, specs)?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, failure_persistence: None, rng_seed: proptest::test_runner::RngSeed::Fixed(0x5eed), ..ProptestConfig::default() })]

    /// Prefix caching on with roomy pools: many hits, shared blocks and evictions.
    #[test]
    fn prefix_sharing_workloads_keep_the_books(
        cfg in config().prop_map(|c| SchedulerConfig {
            enable_prefix_caching: true,
            block_size: 1 + c.block_size % 4,
            num_blocks: 20 + c.num_blocks,
            ..c
        }),
        specs in prop::collection::vec(spec().prop_map(|mut sp| {
            // Mostly the base model without salt, so that prompts can share blocks.
            if sp.max_tokens % 4 != 0 {
                sp.lora_id = None;
                sp.salt = None;
            }
            sp
        }), 4..14),
    ) {
        simulate(cfg, specs)?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, failure_persistence: None, rng_seed: proptest::test_runner::RngSeed::Fixed(0x5eed), ..ProptestConfig::default() })]

    /// Tight pools: lots of preemption.
    #[test]
    fn tight_pools_preempt_and_still_finish(
        cfg in config().prop_map(|c| SchedulerConfig {
            num_blocks: 4 + c.num_blocks % 9,
            block_size: 2,
            max_num_seqs: 2 + c.max_num_seqs % 3,
            ..c
        }),
        specs in prop::collection::vec(spec().prop_map(|mut sp| {
            // Short requests that fit the small pool alone but not all together.
            let keep = sp.prompt.len().min(8);
            sp.prompt = sp.prompt.split_off(sp.prompt.len() - keep);
            sp.max_tokens = 1 + sp.max_tokens % 6;
            sp
        }), 4..14),
    ) {
        simulate(cfg, specs)?;
    }
}
