//! `Scheduler::stats` as the metrics read it: what "used" KV blocks are, and the prefix-cache
//! counters with and without resumed (preempted) requests.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use lantern_scheduler::{
    FinishReason, SchedRequest, Scheduler, SchedulerConfig, SchedulerOutput, SchedulingPolicy,
    SeqId,
};

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
        enable_kv_cache_events: false,
        max_loras: 0,
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

/// vLLM's `BlockPool.get_usage()`: blocks whose ref count is 0 are free, cached or not. Once
/// every request finished, nothing is used, yet the cached blocks are still hit.
#[test]
fn cached_blocks_of_finished_requests_count_as_free() {
    let mut s = Scheduler::new(cfg()).unwrap();
    s.add_request(req(1, toks(17), 2)).unwrap();
    let out = step(&mut s);
    let st = s.stats();
    assert_eq!(
        st.num_blocks_used, 5,
        "17 prompt tokens + 1 slot in blocks of 4"
    );
    assert!((s.kv_cache_manager().usage() - 5.0 / 64.0).abs() < 1e-12);
    while s.has_unfinished() {
        step(&mut s);
    }
    let st = s.stats();
    assert_eq!(st.num_blocks_used, 0);
    assert_eq!(st.num_blocks_free, st.num_blocks_total);
    assert_eq!(s.kv_cache_manager().usage(), 0.0);
    assert_eq!(s.kv_cache_manager().pool().num_cached_blocks(), 4);
    // The same prompt again: its first four blocks come from the cache.
    s.add_request(req(2, toks(17), 1)).unwrap();
    let again = s.schedule();
    assert_eq!(again.seqs[0].num_cached_tokens, 16);
    assert_eq!(again.seqs[0].block_table[..4], out.seqs[0].block_table[..4]);
    let st = s.stats();
    assert_eq!((st.prefix_cache_queries, st.prefix_cache_hits), (34, 16));
    assert_eq!(
        (
            st.resumed_prefix_cache_queries,
            st.resumed_prefix_cache_hits
        ),
        (0, 0)
    );
}

/// A preempted request looks the cache up again when it resumes: counted in the totals and,
/// separately, in the resumed counters (vLLM's counters leave it out).
#[test]
fn resumed_lookups_are_counted_apart() {
    // 4 usable blocks of 2 tokens; two 3-token prompts fill them after one decode each.
    let mut s = Scheduler::new(SchedulerConfig {
        max_num_seqs: 2,
        block_size: 2,
        num_blocks: 5,
        ..cfg()
    })
    .unwrap();
    s.add_request(req(1, vec![1, 2, 3], 5)).unwrap();
    s.add_request(req(2, vec![4, 5, 6], 3)).unwrap();
    step(&mut s);
    step(&mut s);
    let before = s.stats();
    assert_eq!(
        (before.prefix_cache_queries, before.prefix_cache_hits),
        (6, 0)
    );
    let out = step(&mut s);
    assert_eq!(out.preempted, vec![SeqId(2)]);
    while s.has_unfinished() {
        step(&mut s);
    }
    let st = s.stats();
    assert_eq!(st.num_preemptions, 1);
    // Request 2 resumed with its prompt and two outputs: 5 tokens looked up.
    assert_eq!(st.resumed_prefix_cache_queries, 5);
    assert_eq!(st.prefix_cache_queries, 6 + 5);
    assert!(st.resumed_prefix_cache_hits <= st.prefix_cache_hits);
    assert_eq!(st.num_blocks_used, 0);
}
