//! Scheduler behaviour through the public API.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;

use lantern_scheduler::{
    AddRequestError, ConfigError, FinishReason, KvCacheEvent, RequestStatus, SchedRequest,
    Scheduler, SchedulerConfig, SchedulerOutput, SchedulingPolicy, UpdateError, NULL_BLOCK,
};
use lantern_scheduler::{LoraId, SeqId};

fn cfg() -> SchedulerConfig {
    SchedulerConfig {
        max_num_seqs: 8,
        max_num_batched_tokens: 64,
        block_size: 4,
        num_blocks: 65,
        max_model_len: 256,
        max_waiting_requests: 16,
        enable_prefix_caching: true,
        long_prefill_token_threshold: 0,
        policy: SchedulingPolicy::Fcfs,
        max_loras: 0,
        enable_kv_cache_events: false,
    }
}

fn req(id: u64, prompt: Vec<u32>, max_tokens: usize) -> SchedRequest {
    SchedRequest {
        id: SeqId(id),
        prompt_token_ids: prompt,
        max_tokens,
        priority: 0,
        lora_id: None,
        cache_salt: None,
    }
}

fn toks(n: usize) -> Vec<u32> {
    (0..n as u32).map(|i| 1000 + i).collect()
}

/// Samples token `id * 100 + output index` for every sampling sequence and applies it.
fn step(s: &mut Scheduler) -> SchedulerOutput {
    let out = s.schedule();
    let sampled: Vec<(SeqId, u32)> = out
        .seqs
        .iter()
        .filter(|q| q.sample)
        .map(|q| {
            let n = s.output_tokens(q.id).map_or(0, |o| o.len());
            (q.id, (q.id.0 * 100) as u32 + n as u32)
        })
        .collect();
    let capped = s.update(&out, &sampled).unwrap();
    for id in capped {
        assert!(s.finish_request(id, FinishReason::Length));
    }
    out
}

fn assert_pool_full(s: &Scheduler) {
    let st = s.stats();
    assert_eq!(st.num_blocks_free, st.num_blocks_total, "{st:?}");
    assert_eq!(s.kv_cache_manager().num_tracked_seqs(), 0);
    s.kv_cache_manager().pool().check_consistency().unwrap();
}

#[test]
fn config_is_validated() {
    let bad = |f: fn(&mut SchedulerConfig)| {
        let mut c = cfg();
        f(&mut c);
        Scheduler::new(c).unwrap_err()
    };
    assert_eq!(bad(|c| c.block_size = 0), ConfigError::ZeroBlockSize);
    assert_eq!(bad(|c| c.max_num_seqs = 0), ConfigError::ZeroMaxNumSeqs);
    assert_eq!(
        bad(|c| c.max_num_batched_tokens = 0),
        ConfigError::ZeroMaxNumBatchedTokens
    );
    assert!(bad(|c| c.num_blocks = 1)
        .to_string()
        .contains("num_blocks is 1"));
}

#[test]
fn single_request_prefill_then_decode() {
    let mut s = Scheduler::new(cfg()).unwrap();
    s.add_request(req(1, toks(10), 3)).unwrap();
    assert_eq!(s.request_status(SeqId(1)), Some(RequestStatus::Waiting));
    let out = step(&mut s);
    assert_eq!(out.seqs.len(), 1);
    let q = &out.seqs[0];
    assert_eq!(q.token_ids, toks(10));
    assert_eq!(q.num_computed_tokens, 0);
    assert!(q.sample);
    assert_eq!(q.block_table.len(), 3);
    assert!(!q.block_table.contains(&NULL_BLOCK));
    assert_eq!(out.num_batched_tokens, 10);
    assert_eq!(s.output_tokens(SeqId(1)), Some(&[100][..]));
    let out = step(&mut s);
    assert_eq!(out.seqs[0].token_ids, vec![100]);
    assert_eq!(out.seqs[0].num_computed_tokens, 10);
    assert!(out.seqs[0].sample);
    let out = step(&mut s);
    assert_eq!(out.seqs[0].token_ids, vec![101]);
    // Third output reached max_tokens: step() finished it.
    assert!(!s.has_unfinished());
    assert_pool_full(&s);
    assert_eq!(s.stats().num_finished, 1);
}

#[test]
fn chunked_prefill_respects_budget() {
    let mut s = Scheduler::new(SchedulerConfig {
        max_num_batched_tokens: 8,
        ..cfg()
    })
    .unwrap();
    s.add_request(req(1, toks(20), 2)).unwrap();
    let chunks: Vec<(usize, usize, bool)> = (0..3)
        .map(|_| {
            let out = step(&mut s);
            let q = &out.seqs[0];
            (q.num_computed_tokens, q.token_ids.len(), q.sample)
        })
        .collect();
    assert_eq!(chunks, vec![(0, 8, false), (8, 8, false), (16, 4, true)]);
    assert_eq!(s.output_tokens(SeqId(1)).unwrap().len(), 1);
}

#[test]
fn long_prefill_threshold_caps_chunks_and_mixes_with_decode() {
    let mut s = Scheduler::new(SchedulerConfig {
        max_num_batched_tokens: 8,
        long_prefill_token_threshold: 5,
        ..cfg()
    })
    .unwrap();
    s.add_request(req(1, toks(3), 4)).unwrap();
    let out = step(&mut s);
    assert_eq!(out.seqs[0].token_ids.len(), 3);
    s.add_request(req(2, toks(12), 2)).unwrap();
    let out = step(&mut s);
    // Decode of 1 (1 token) and the first 5-token chunk of 2.
    let lens: Vec<(u64, usize)> = out
        .seqs
        .iter()
        .map(|q| (q.id.0, q.token_ids.len()))
        .collect();
    assert_eq!(lens, vec![(1, 1), (2, 5)]);
    assert_eq!(out.num_batched_tokens, 6);
    let out = step(&mut s);
    let lens: Vec<(u64, usize)> = out
        .seqs
        .iter()
        .map(|q| (q.id.0, q.token_ids.len()))
        .collect();
    assert_eq!(lens, vec![(1, 1), (2, 5)]);
    let out = step(&mut s);
    let lens: Vec<(u64, usize, bool)> = out
        .seqs
        .iter()
        .map(|q| (q.id.0, q.token_ids.len(), q.sample))
        .collect();
    assert_eq!(lens, vec![(1, 1, true), (2, 2, true)]);
}

#[test]
fn budget_stops_admission_and_max_num_seqs_caps_running() {
    let mut s = Scheduler::new(SchedulerConfig {
        max_num_seqs: 2,
        max_num_batched_tokens: 10,
        ..cfg()
    })
    .unwrap();
    for id in 1..=3 {
        s.add_request(req(id, toks(4), 5)).unwrap();
    }
    let out = s.schedule();
    assert_eq!(out.seqs.len(), 2);
    assert_eq!(s.num_running(), 2);
    assert_eq!(s.num_waiting(), 1);
    assert_eq!(s.waiting_ids(), vec![SeqId(3)]);
}

#[test]
fn full_prompt_cached_backs_off_one_token() {
    let mut s = Scheduler::new(cfg()).unwrap();
    s.add_request(req(1, toks(8), 1)).unwrap();
    step(&mut s);
    assert!(!s.has_unfinished());
    // Same 8-token prompt: both blocks are cached, but the last token must be recomputed,
    // so only the first block is a hit.
    s.add_request(req(2, toks(8), 1)).unwrap();
    let out = s.schedule();
    let q = &out.seqs[0];
    assert_eq!(q.num_cached_tokens, 4);
    assert_eq!(q.num_computed_tokens, 4);
    assert_eq!(q.token_ids, toks(8)[4..].to_vec());
    assert!(q.sample);
    assert_eq!(s.num_cached_tokens(SeqId(2)), Some(4));
    let st = s.stats();
    assert_eq!((st.prefix_cache_queries, st.prefix_cache_hits), (16, 4));
}

#[test]
fn prefix_hit_shares_blocks_and_lora_or_salt_prevent_it() {
    let mut s = Scheduler::new(SchedulerConfig {
        max_loras: 1,
        ..cfg()
    })
    .unwrap();
    s.add_request(req(1, toks(9), 4)).unwrap();
    let first = step(&mut s);
    let mut other_lora = req(2, toks(9), 4);
    other_lora.lora_id = Some(LoraId(3));
    let mut salted = req(3, toks(9), 4);
    salted.cache_salt = Some("tenant".into());
    s.add_request(other_lora).unwrap();
    s.add_request(salted).unwrap();
    s.add_request(req(4, toks(9), 4)).unwrap();
    let out = s.schedule();
    let by_id = |id| out.seqs.iter().find(|q| q.id == SeqId(id)).unwrap();
    assert_eq!(by_id(2).num_cached_tokens, 0);
    assert_eq!(by_id(3).num_cached_tokens, 0);
    assert_eq!(by_id(4).num_cached_tokens, 8);
    assert_eq!(by_id(4).token_ids, vec![1008]);
    assert_eq!(
        &by_id(4).block_table[..2],
        &first.seqs[0].block_table[..2],
        "shared physical blocks"
    );
    assert_eq!(by_id(2).lora_id, Some(LoraId(3)));
}

#[test]
fn disabled_prefix_caching_never_hits() {
    let mut s = Scheduler::new(SchedulerConfig {
        enable_prefix_caching: false,
        ..cfg()
    })
    .unwrap();
    s.add_request(req(1, toks(9), 1)).unwrap();
    step(&mut s);
    s.add_request(req(2, toks(9), 1)).unwrap();
    let out = step(&mut s);
    assert_eq!(out.seqs[0].num_cached_tokens, 0);
    assert_eq!(out.seqs[0].token_ids.len(), 9);
    assert_eq!(s.stats().prefix_cache_queries, 0);
}

#[test]
fn preemption_requeues_at_front_and_resumes_with_outputs() {
    // 4 usable blocks of 2 tokens; two requests of 3-token prompts fill them after a decode.
    let mut s = Scheduler::new(SchedulerConfig {
        max_num_seqs: 2,
        block_size: 2,
        num_blocks: 5,
        enable_prefix_caching: false,
        ..cfg()
    })
    .unwrap();
    s.add_request(req(1, vec![1, 2, 3], 5)).unwrap();
    s.add_request(req(2, vec![4, 5, 6], 3)).unwrap();
    s.add_request(req(3, vec![7], 1)).unwrap();
    step(&mut s); // both prefill: 2 + 2 blocks
    step(&mut s); // both decode position 3: still fits
    assert_eq!(s.stats().num_blocks_free, 0);
    let out = step(&mut s);
    // Request 1 needs a third block: request 2 (latest) is preempted.
    assert_eq!(out.preempted, vec![SeqId(2)]);
    assert_eq!(out.seqs.len(), 1);
    assert_eq!(out.seqs[0].id, SeqId(1));
    assert_eq!(s.request_status(SeqId(2)), Some(RequestStatus::Preempted));
    assert_eq!(s.num_computed_tokens(SeqId(2)), Some(0));
    assert_eq!(
        s.waiting_ids(),
        vec![SeqId(2), SeqId(3)],
        "preempted goes to the front"
    );
    assert_eq!(s.output_tokens(SeqId(2)), Some(&[200, 201][..]));
    assert_eq!(s.stats().num_preemptions, 1);
    // Run until request 2 is scheduled again: it recomputes prompt + outputs and samples.
    let resumed = loop {
        let out = step(&mut s);
        if let Some(q) = out.seqs.iter().find(|q| q.id == SeqId(2)) {
            break q.clone();
        }
    };
    assert_eq!(resumed.num_computed_tokens, 0);
    assert_eq!(resumed.token_ids, vec![4, 5, 6, 200, 201]);
    assert!(resumed.sample);
    while s.has_unfinished() {
        step(&mut s);
    }
    assert_pool_full(&s);
}

#[test]
fn growing_request_preempts_the_latest_admitted() {
    let mut s = Scheduler::new(SchedulerConfig {
        block_size: 2,
        num_blocks: 5,
        enable_prefix_caching: false,
        ..cfg()
    })
    .unwrap();
    s.add_request(req(1, vec![1, 2, 3, 4], 2)).unwrap();
    s.add_request(req(2, vec![5, 6, 7, 8], 2)).unwrap();
    step(&mut s);
    // Both need a third block now; request 1 preempts request 2 (FCFS: latest first).
    let out = s.schedule();
    assert_eq!(out.preempted, vec![SeqId(2)]);
    assert_eq!(out.seqs.iter().map(|q| q.id.0).collect::<Vec<_>>(), vec![1]);
}

#[test]
fn priority_policy_orders_admission_and_preemption() {
    let mut s = Scheduler::new(SchedulerConfig {
        max_num_seqs: 1,
        policy: SchedulingPolicy::Priority,
        ..cfg()
    })
    .unwrap();
    for (id, prio) in [(1, 5), (2, 1), (3, 3), (4, 1)] {
        let mut r = req(id, toks(2), 1);
        r.priority = prio;
        s.add_request(r).unwrap();
    }
    assert_eq!(
        s.waiting_ids(),
        vec![SeqId(2), SeqId(4), SeqId(3), SeqId(1)]
    );
    let mut order = Vec::new();
    while s.has_unfinished() {
        let out = step(&mut s);
        order.extend(out.seqs.iter().map(|q| q.id.0));
    }
    assert_eq!(order, vec![2, 4, 3, 1]);

    // Preemption picks the largest (priority, arrival), not the latest admitted.
    let mut s = Scheduler::new(SchedulerConfig {
        block_size: 2,
        num_blocks: 5,
        enable_prefix_caching: false,
        policy: SchedulingPolicy::Priority,
        ..cfg()
    })
    .unwrap();
    let mut low = req(1, vec![1, 2, 3, 4], 2);
    low.priority = 9;
    let mut high = req(2, vec![5, 6, 7, 8], 2);
    high.priority = 0;
    s.add_request(low).unwrap();
    s.add_request(high).unwrap();
    step(&mut s);
    let out = s.schedule();
    assert_eq!(out.preempted, vec![SeqId(1)]);
    assert_eq!(out.seqs.iter().map(|q| q.id.0).collect::<Vec<_>>(), vec![2]);
}

#[test]
fn preempting_an_already_scheduled_request_refunds_its_budget() {
    let mut s = Scheduler::new(SchedulerConfig {
        block_size: 2,
        num_blocks: 5,
        enable_prefix_caching: false,
        policy: SchedulingPolicy::Priority,
        ..cfg()
    })
    .unwrap();
    let mut x = req(1, vec![1, 2], 3);
    x.priority = 9;
    let mut y = req(2, vec![4, 5, 6, 7], 3);
    y.priority = 0;
    s.add_request(x).unwrap();
    step(&mut s); // X prefill: 1 block
    s.add_request(y).unwrap();
    step(&mut s); // X decode (2nd block), Y prefill (2 blocks): pool full
    assert_eq!(s.running_ids(), &[SeqId(1), SeqId(2)]);
    assert_eq!(s.stats().num_blocks_free, 0);
    // X (first in running order) fits its decode, then Y needs a block and the victim is X.
    let out = s.schedule();
    assert_eq!(out.preempted, vec![SeqId(1)]);
    assert_eq!(out.seqs.iter().map(|q| q.id.0).collect::<Vec<_>>(), vec![2]);
    assert_eq!(out.num_batched_tokens, 1);
    assert_eq!(s.running_ids(), &[SeqId(2)]);
    assert_eq!(s.waiting_ids(), vec![SeqId(1)]);
}

#[test]
fn fcfs_admission_order() {
    let mut s = Scheduler::new(SchedulerConfig {
        max_num_seqs: 1,
        ..cfg()
    })
    .unwrap();
    for (id, prio) in [(1, 5), (2, 1), (3, 3)] {
        let mut r = req(id, toks(2), 1);
        r.priority = prio;
        s.add_request(r).unwrap();
    }
    assert_eq!(s.waiting_ids(), vec![SeqId(1), SeqId(2), SeqId(3)]);
}

#[test]
fn rejections_give_the_numbers() {
    let mut s = Scheduler::new(SchedulerConfig {
        max_model_len: 100,
        num_blocks: 11, // 10 usable blocks of 4 tokens = 40 tokens
        max_num_seqs: 1,
        max_waiting_requests: 2,
        ..cfg()
    })
    .unwrap();
    let e = s.add_request(req(1, vec![], 5)).unwrap_err();
    assert_eq!(e, AddRequestError::EmptyPrompt { id: SeqId(1) });
    assert!(e.to_string().contains("empty"));
    let e = s.add_request(req(1, toks(3), 0)).unwrap_err();
    assert_eq!(e, AddRequestError::ZeroMaxTokens { id: SeqId(1) });
    let e = s.add_request(req(1, toks(90), 20)).unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.contains("90") && msg.contains("20") && msg.contains("110") && msg.contains("100"),
        "{msg}"
    );
    let e = s.add_request(req(1, toks(30), 11)).unwrap_err();
    assert!(matches!(
        e,
        AddRequestError::ExceedsKvCache {
            needed_blocks: 11,
            total_blocks: 10,
            ..
        }
    ));
    let msg = e.to_string();
    assert!(
        msg.contains("11 KV blocks") && msg.contains("only 10 blocks"),
        "{msg}"
    );
    // Exactly the whole cache is fine.
    s.add_request(req(1, toks(30), 10)).unwrap();
    let e = s.add_request(req(1, toks(3), 1)).unwrap_err();
    assert_eq!(e, AddRequestError::DuplicateId { id: SeqId(1) });
    s.add_request(req(2, toks(3), 1)).unwrap();
    s.add_request(req(3, toks(3), 1)).unwrap();
    let e = s.add_request(req(4, toks(3), 1)).unwrap_err();
    assert_eq!(
        e,
        AddRequestError::QueueFull {
            id: SeqId(4),
            max_waiting_requests: 2
        }
    );
    assert!(e.to_string().contains("(2 requests)"));
    // One of the three would start in the one running slot; two are queued.
    assert_eq!((s.num_waiting(), s.num_queued()), (3, 2));
}

#[test]
fn a_burst_that_fills_free_running_slots_is_not_refused() {
    let mut s = Scheduler::new(SchedulerConfig {
        max_num_seqs: 3,
        max_waiting_requests: 2,
        ..cfg()
    })
    .unwrap();
    // All five arrive between two steps: three take the free slots, two queue.
    for id in 1..=5 {
        s.add_request(req(id, toks(3), 2)).unwrap();
    }
    assert_eq!((s.num_waiting(), s.num_queued()), (5, 2));
    assert!(matches!(
        s.add_request(req(6, toks(3), 2)),
        Err(AddRequestError::QueueFull { .. })
    ));
    s.schedule();
    assert_eq!(
        (s.num_running(), s.num_waiting(), s.num_queued()),
        (3, 2, 2)
    );
    assert!(matches!(
        s.add_request(req(6, toks(3), 2)),
        Err(AddRequestError::QueueFull { .. })
    ));
    // A finished request frees a slot: one more fits.
    assert!(s.finish_request(SeqId(1), FinishReason::Abort));
    assert_eq!(s.num_queued(), 1);
    s.add_request(req(6, toks(3), 2)).unwrap();
}

#[test]
fn finish_request_frees_exactly_once() {
    let mut s = Scheduler::new(cfg()).unwrap();
    s.add_request(req(1, toks(10), 5)).unwrap();
    s.add_request(req(2, toks(10), 5)).unwrap();
    s.add_request(req(3, toks(10), 5)).unwrap();
    s.schedule();
    assert!(s.stats().num_blocks_used > 0);
    assert!(s.finish_request(SeqId(1), FinishReason::Abort));
    assert!(!s.finish_request(SeqId(1), FinishReason::Abort));
    assert!(!s.finish_request(SeqId(99), FinishReason::Stop));
    assert!(s.finish_request(SeqId(2), FinishReason::Stop));
    assert!(s.finish_request(SeqId(3), FinishReason::Length));
    assert!(!s.has_unfinished());
    assert_eq!(s.num_running(), 0);
    assert_pool_full(&s);
    let st = s.stats();
    assert_eq!((st.num_finished, st.num_aborted), (3, 1));
    // A waiting request can be finished too.
    s.add_request(req(4, toks(3), 1)).unwrap();
    assert!(s.finish_request(SeqId(4), FinishReason::Abort));
    assert_eq!(s.num_waiting(), 0);
    assert_pool_full(&s);
}

#[test]
fn finishing_between_schedule_and_update_is_fine() {
    let mut s = Scheduler::new(cfg()).unwrap();
    s.add_request(req(1, toks(5), 5)).unwrap();
    s.add_request(req(2, toks(5), 5)).unwrap();
    let out = s.schedule();
    assert!(s.finish_request(SeqId(1), FinishReason::Abort));
    s.update(&out, &[(SeqId(1), 7), (SeqId(2), 8)]).unwrap();
    assert_eq!(s.output_tokens(SeqId(2)), Some(&[8][..]));
    assert_eq!(s.output_tokens(SeqId(1)), None);
}

#[test]
fn capped_request_is_never_scheduled_again() {
    let mut s = Scheduler::new(cfg()).unwrap();
    s.add_request(req(1, toks(5), 1)).unwrap();
    let out = s.schedule();
    let capped = s.update(&out, &[(SeqId(1), 9)]).unwrap();
    assert_eq!(capped, vec![SeqId(1)]);
    // The engine "forgot" to finish it: it gets nothing more.
    assert!(s.schedule().is_empty());
    assert_eq!(s.output_tokens(SeqId(1)).unwrap().len(), 1);
}

#[test]
fn update_rejects_mismatched_results_without_changing_anything() {
    let mut s = Scheduler::new(SchedulerConfig {
        max_num_batched_tokens: 4,
        ..cfg()
    })
    .unwrap();
    s.add_request(req(1, toks(3), 5)).unwrap();
    s.add_request(req(2, toks(8), 5)).unwrap();
    let out = s.schedule();
    assert_eq!(out.seqs.len(), 2);
    assert!(out.seqs[0].sample && !out.seqs[1].sample);
    assert_eq!(
        s.update(&out, &[]).unwrap_err(),
        UpdateError::MissingSample { id: SeqId(1) }
    );
    assert_eq!(
        s.update(&out, &[(SeqId(1), 5), (SeqId(2), 5)]).unwrap_err(),
        UpdateError::UnexpectedSample { id: SeqId(2) }
    );
    assert_eq!(
        s.update(&out, &[(SeqId(1), 5), (SeqId(1), 6)]).unwrap_err(),
        UpdateError::DuplicateSample {
            id: SeqId(1),
            count: 2
        }
    );
    assert_eq!(
        s.update(&out, &[(SeqId(1), 5), (SeqId(9), 6)]).unwrap_err(),
        UpdateError::NotScheduled { id: SeqId(9) }
    );
    assert_eq!(s.num_computed_tokens(SeqId(1)), Some(0));
    s.update(&out, &[(SeqId(1), 5)]).unwrap();
    let e = s.update(&out, &[(SeqId(1), 5)]).unwrap_err();
    assert_eq!(
        e,
        UpdateError::StaleOutput {
            id: SeqId(1),
            scheduled: 0,
            current: 3
        }
    );
    assert_eq!(s.output_tokens(SeqId(1)), Some(&[5][..]));
    assert_eq!(s.num_computed_tokens(SeqId(2)), Some(1));
}

fn lora_req(id: u64, prompt: Vec<u32>, max_tokens: usize, lora_id: u32) -> SchedRequest {
    SchedRequest {
        lora_id: Some(LoraId(lora_id)),
        ..req(id, prompt, max_tokens)
    }
}

#[test]
fn lora_requests_are_refused_when_lora_is_disabled() {
    let mut s = Scheduler::new(cfg()).unwrap();
    let e = s.add_request(lora_req(1, toks(4), 2, 5)).unwrap_err();
    assert_eq!(
        e,
        AddRequestError::LoraDisabled {
            id: SeqId(1),
            lora_id: LoraId(5)
        }
    );
    assert!(e.to_string().contains("--max-loras"), "{e}");
}

/// Steps until everything finishes; checks every step against a fake slot table and
/// returns, per request, the step at which it was first scheduled.
fn run_with_slots(s: &mut Scheduler, max_loras: usize) -> (HashMap<u64, usize>, usize) {
    let mut slots: Vec<Option<LoraId>> = vec![None; max_loras];
    let mut first: HashMap<u64, usize> = HashMap::new();
    let mut loads = 0;
    let mut n = 0;
    while s.has_unfinished() {
        let out = step_checked(s, &mut slots, &mut loads);
        for q in &out.seqs {
            first.entry(q.id.0).or_insert(n);
        }
        n += 1;
        assert!(n < 1000, "did not finish");
    }
    assert_pool_full(s);
    assert_eq!(s.stats().num_lora_loads, loads as u64);
    (first, loads)
}

fn step_checked(
    s: &mut Scheduler,
    slots: &mut [Option<LoraId>],
    loads: &mut usize,
) -> SchedulerOutput {
    let out = step(s);
    for ld in &out.lora_loads {
        slots[ld.slot as usize] = Some(ld.lora_id);
        *loads += 1;
    }
    let mut distinct = std::collections::HashSet::new();
    for q in &out.seqs {
        if let Some(lora_id) = q.lora_id {
            distinct.insert(lora_id);
            let slot = q.lora_slot.expect("adapter request without a slot") as usize;
            assert_eq!(
                slots[slot],
                Some(lora_id),
                "request {} in slot {slot}",
                q.id
            );
        } else {
            assert_eq!(q.lora_slot, None);
        }
    }
    assert!(distinct.len() <= slots.len());
    out
}

#[test]
fn one_slot_three_adapters_interleaved_all_finish_in_arrival_order() {
    let mut s = Scheduler::new(SchedulerConfig {
        max_loras: 1,
        ..cfg()
    })
    .unwrap();
    // Adapters 1, 2, 3 interleaved: 1 2 3 1 2 3 1 2 3, plus base requests in between.
    let mut id = 0;
    for round in 0..3 {
        for lora in 1..=3u32 {
            s.add_request(lora_req(id, toks(6 + round), 3, lora))
                .unwrap();
            id += 1;
        }
        s.add_request(req(100 + round as u64, toks(5), 3)).unwrap();
    }
    let (first, loads) = run_with_slots(&mut s, 1);
    // Adapter requests start in arrival order: a later request for the resident adapter
    // never jumps ahead of an older request waiting for the slot.
    let mut order: Vec<u64> = (0..9).collect();
    order.sort_by_key(|i| (first[i], *i));
    assert_eq!(order, (0..9).collect::<Vec<_>>());
    // Base requests are not held back by the slot: all start in the first step.
    for b in 100..103 {
        assert_eq!(first[&b], 0, "base request {b}");
    }
    // FCFS on one slot swaps for every request here (1 2 3 1 2 3 ...), and only then.
    assert_eq!(loads, 9);
}

#[test]
fn a_stream_for_the_resident_adapter_does_not_starve_another_adapter() {
    let mut s = Scheduler::new(SchedulerConfig {
        max_loras: 1,
        ..cfg()
    })
    .unwrap();
    let mut slots = vec![None; 1];
    let mut loads = 0;
    s.add_request(lora_req(0, toks(4), 4, 1)).unwrap();
    step_checked(&mut s, &mut slots, &mut loads);
    // Adapter 2 arrives, then adapter 1 keeps getting new requests every step.
    s.add_request(lora_req(1, toks(4), 4, 2)).unwrap();
    let mut started = None;
    for n in 0..40u64 {
        s.add_request(lora_req(10 + n, toks(4), 4, 1)).unwrap_or(());
        let out = step_checked(&mut s, &mut slots, &mut loads);
        if out.seqs.iter().any(|q| q.id == SeqId(1)) {
            started = Some(n);
            break;
        }
    }
    // Request 0 needs 4 more steps at most; then the slot goes to adapter 2.
    let started = started.expect("adapter 2 never ran");
    assert!(started <= 5, "adapter 2 started after {started} steps");
    while s.has_unfinished() {
        step_checked(&mut s, &mut slots, &mut loads);
    }
    assert_pool_full(&s);
}

#[test]
fn resident_adapters_are_reused_without_loading_and_slots_are_lru() {
    let mut s = Scheduler::new(SchedulerConfig {
        max_loras: 2,
        ..cfg()
    })
    .unwrap();
    let mut slots = vec![None; 2];
    let mut loads = 0;
    s.add_request(lora_req(0, toks(4), 1, 1)).unwrap();
    s.add_request(lora_req(1, toks(4), 1, 2)).unwrap();
    let out = step_checked(&mut s, &mut slots, &mut loads);
    assert_eq!(out.lora_loads.len(), 2);
    assert_eq!(loads, 2);
    assert!(!s.has_unfinished());
    // Adapter 1 again: still resident, no load.
    s.add_request(lora_req(2, toks(4), 1, 1)).unwrap();
    let out = step_checked(&mut s, &mut slots, &mut loads);
    assert!(out.lora_loads.is_empty());
    // Adapter 3 replaces the least recently used one (2).
    s.add_request(lora_req(3, toks(4), 1, 3)).unwrap();
    let out = step_checked(&mut s, &mut slots, &mut loads);
    assert_eq!(out.lora_loads.len(), 1);
    let residency: Vec<u32> = s.lora_residency().iter().map(|r| r.1 .0).collect();
    assert!(
        residency.contains(&1) && residency.contains(&3),
        "{residency:?}"
    );
    // Unloading an idle adapter frees its slot for the next one.
    assert!(s.evict_lora(LoraId(3)));
    assert!(!s.evict_lora(LoraId(3)));
    assert_pool_full(&s);
}

#[test]
fn preempted_adapter_requests_give_their_slot_back() {
    // Two slots, a pool that fits only one long request at a time.
    let mut s = Scheduler::new(SchedulerConfig {
        max_loras: 2,
        num_blocks: 9,
        max_num_batched_tokens: 64,
        ..cfg()
    })
    .unwrap();
    s.add_request(lora_req(0, toks(12), 16, 1)).unwrap();
    s.add_request(lora_req(1, toks(12), 16, 2)).unwrap();
    s.add_request(lora_req(2, toks(12), 16, 3)).unwrap();
    let (first, _) = run_with_slots(&mut s, 2);
    assert_eq!(first.len(), 3);
    assert!(
        s.stats().num_preemptions > 0,
        "the test should force preemption"
    );
    assert!(s.lora_residency().iter().all(|r| r.2 == 0), "no users left");
}

#[test]
fn kv_events_follow_the_prefix_cache() {
    let mut s = Scheduler::new(SchedulerConfig {
        enable_kv_cache_events: true,
        ..cfg()
    })
    .unwrap();
    // 10 prompt tokens, block size 4: two full blocks once the prompt is computed.
    let mut a = req(1, toks(10), 1);
    a.cache_salt = Some("tenant".into());
    s.add_request(a).unwrap();
    step(&mut s);
    let ev = s.take_kv_events();
    let [KvCacheEvent::BlockStored {
        block_hashes,
        parent_block_hash: None,
        token_ids,
        block_size: 4,
        lora_id: None,
        cache_salt: Some(salt),
    }] = ev.as_slice()
    else {
        panic!("{ev:?}")
    };
    assert_eq!(salt, "tenant");
    assert_eq!(block_hashes.len(), 2);
    assert_eq!(token_ids, &toks(8));
    let chain = block_hashes.clone();
    assert!(s.take_kv_events().is_empty());
    // Same salt and prefix, longer prompt: the two blocks hit; only the third is stored,
    // chained to the second, without the salt (it is not a sequence's first block).
    let mut b = req(2, toks(14), 1);
    b.cache_salt = Some("tenant".into());
    s.add_request(b).unwrap();
    step(&mut s);
    let ev = s.take_kv_events();
    let [KvCacheEvent::BlockStored {
        block_hashes,
        parent_block_hash: Some(parent),
        token_ids,
        cache_salt: None,
        ..
    }] = ev.as_slice()
    else {
        panic!("{ev:?}")
    };
    assert_eq!(*parent, chain[1]);
    assert_eq!(block_hashes.len(), 1);
    assert_eq!(token_ids, &toks(12)[8..]);
    assert_pool_full(&s);
    // A reset now empties the cache; subscribers are told so.
    assert!(s.reset_prefix_cache());
    assert_eq!(s.take_kv_events(), vec![KvCacheEvent::AllBlocksCleared]);
    assert_eq!(s.kv_cache_manager().pool().num_cached_blocks(), 0);
}

#[test]
fn no_kv_events_unless_asked() {
    let mut s = Scheduler::new(cfg()).unwrap();
    s.add_request(req(1, toks(10), 1)).unwrap();
    step(&mut s);
    assert!(s.take_kv_events().is_empty());
    assert!(s.reset_prefix_cache());
    assert!(s.take_kv_events().is_empty());
}

/// Under a step token cap, a step with decodes holds at most the cap (or the decodes plus
/// the minimum prefill chunk), every decode keeps its token even behind an earlier-admitted
/// prefill, steps with only prefills use the whole budget, and lifting the cap restores it.
#[test]
fn step_token_cap_limits_prefill_while_requests_decode() {
    use lantern_scheduler::MIN_PREFILL_TOKENS_UNDER_CAP as MIN;
    let mut c = cfg();
    c.max_num_batched_tokens = 256;
    c.num_blocks = 513;
    c.max_model_len = 1024;
    c.long_prefill_token_threshold = 64;
    let mut s = Scheduler::new(c).unwrap();
    // Distinct prompts: no prefix-cache hits between the requests.
    let own =
        |id: u64, n: usize| -> Vec<u32> { (0..n as u32).map(|i| id as u32 * 10_000 + i).collect() };
    s.set_step_token_cap(Some(40));
    // A long prompt first (admitted first, so it comes first in the running loop) and three
    // short ones: only prefills run, so the cap does not apply.
    s.add_request(req(1, own(1, 600), 40)).unwrap();
    for id in 2..5 {
        s.add_request(req(id, own(id, 10 + id as usize), 30))
            .unwrap();
    }
    let out = step(&mut s);
    assert_eq!(
        out.num_batched_tokens,
        64 + 12 + 13 + 14,
        "prefill-only step: no cap"
    );
    // Request 1 keeps prefilling in 64-token chunks ahead of the three decodes in the
    // running order, and a second long prompt arrives.
    s.add_request(req(5, own(5, 300), 4)).unwrap();
    let mut saw_capped_mix = false;
    for _ in 0..40 {
        let decoding_before: Vec<SeqId> = s
            .running_ids()
            .iter()
            .copied()
            .filter(|id| s.output_tokens(*id).is_some_and(|o| !o.is_empty()))
            .collect();
        let out = step(&mut s);
        if out.is_empty() {
            break;
        }
        let decodes = out.seqs.iter().filter(|q| q.token_ids.len() == 1).count();
        if !decoding_before.is_empty() {
            // Every request that was decoding got its one token this step.
            for id in decoding_before
                .iter()
                .filter(|id| !out.preempted.contains(id))
            {
                assert!(
                    out.seqs
                        .iter()
                        .any(|q| q.id == *id && q.token_ids.len() == 1),
                    "{id:?} decoding but not scheduled"
                );
            }
            assert!(
                out.num_batched_tokens <= 40.max(decodes + MIN),
                "{} tokens with {decodes} decodes",
                out.num_batched_tokens
            );
            if out.seqs.iter().any(|q| q.token_ids.len() > 1) {
                saw_capped_mix = true;
            }
        }
    }
    assert!(
        saw_capped_mix,
        "a prefill chunk ran next to decodes under the cap"
    );
    // A tight cap still lets prefill move by the minimum chunk.
    s.add_request(req(9, own(9, 300), 4)).unwrap();
    s.set_step_token_cap(Some(1));
    let out = step(&mut s);
    let decodes = out.seqs.iter().filter(|q| q.token_ids.len() == 1).count();
    if decodes > 0 {
        assert!(out.num_batched_tokens <= decodes + MIN);
        assert!(out.num_batched_tokens > decodes, "prefill starved");
    }
    s.set_step_token_cap(None);
    let out = step(&mut s);
    assert!(
        out.num_batched_tokens > 40,
        "cap lifted: {}",
        out.num_batched_tokens
    );
}
