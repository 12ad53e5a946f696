//! Per-request block tables on top of the [`BlockPool`], with prefix-cache lookup.

use std::collections::HashMap;

use crate::block_pool::{BlockPool, FullBlocks, KvCacheEvent};
use crate::error::ConfigError;
use crate::hash::{extend_block_hashes, BlockHash, CacheKeyExtra};
use crate::ids::{BlockId, LoraId, SeqId};

/// What the [`KvCacheManager`] needs to know about a sequence: its id, every token known so
/// far (prompt followed by outputs) and the keys that separate its KV from other sequences'.
#[derive(Debug, Clone, Copy)]
pub struct KvSeq<'a> {
    pub id: SeqId,
    pub token_ids: &'a [u32],
    /// `None` for the base model.
    pub lora_id: Option<LoraId>,
    pub cache_salt: Option<&'a str>,
}

impl KvSeq<'_> {
    fn extra(&self) -> CacheKeyExtra<'_> {
        CacheKeyExtra {
            lora_id: self.lora_id,
            cache_salt: self.cache_salt,
        }
    }
}

/// The result of a prefix-cache lookup: cached blocks for the longest known prefix and the
/// number of tokens they hold (`blocks.len() * block_size`, always `<` the sequence length).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ComputedBlocks {
    pub blocks: Vec<BlockId>,
    pub num_cached_tokens: usize,
}

/// Prefix-cache counters, in tokens: `queries` counts the tokens of every admitted sequence
/// (a resumed, preempted one counts again), `hits` the tokens served from the cache.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PrefixCacheStats {
    pub queries: u64,
    pub hits: u64,
}

#[derive(Debug, Clone, Default)]
struct SeqBlocks {
    /// The block table: block `i` holds tokens `i*block_size .. (i+1)*block_size`.
    blocks: Vec<BlockId>,
    /// Blocks `0..num_cached_blocks` have been hashed and offered to the prefix cache.
    num_cached_blocks: usize,
    /// Chained hashes of the sequence's full blocks computed so far (a cache).
    hashes: Vec<BlockHash>,
}

/// Owns the [`BlockPool`] and every sequence's block table.
///
/// Per step, for a sequence being admitted: [`get_computed_blocks`](Self::get_computed_blocks)
/// then [`allocate_slots`](Self::allocate_slots) with the hit; for a running one just
/// `allocate_slots`. After the model ran, [`cache_full_blocks`](Self::cache_full_blocks)
/// registers blocks that became full. [`free`](Self::free) returns a sequence's blocks.
#[derive(Debug, Clone)]
pub struct KvCacheManager {
    pool: BlockPool,
    block_size: usize,
    enable_prefix_caching: bool,
    seqs: HashMap<SeqId, SeqBlocks>,
    stats: PrefixCacheStats,
}

impl KvCacheManager {
    pub fn new(
        num_blocks: usize,
        block_size: usize,
        enable_prefix_caching: bool,
    ) -> Result<Self, ConfigError> {
        if block_size == 0 {
            return Err(ConfigError::ZeroBlockSize);
        }
        Ok(Self {
            pool: BlockPool::new(num_blocks)?,
            block_size,
            enable_prefix_caching,
            seqs: HashMap::new(),
            stats: PrefixCacheStats::default(),
        })
    }

    pub fn block_size(&self) -> usize {
        self.block_size
    }

    pub fn prefix_caching_enabled(&self) -> bool {
        self.enable_prefix_caching
    }

    /// Read-only view of the pool (ref counts, free list), for metrics and tests.
    pub fn pool(&self) -> &BlockPool {
        &self.pool
    }

    pub fn num_free_blocks(&self) -> usize {
        self.pool.num_free_blocks()
    }

    /// Blocks that can ever be handed out (the null block excluded).
    pub fn num_usable_blocks(&self) -> usize {
        self.pool.num_usable_blocks()
    }

    /// Fraction of usable blocks in use, in `[0, 1]`.
    pub fn usage(&self) -> f64 {
        self.pool.usage()
    }

    pub fn prefix_cache_stats(&self) -> PrefixCacheStats {
        self.stats
    }

    /// Blocks needed to hold `num_tokens` tokens.
    pub fn blocks_for_tokens(&self, num_tokens: usize) -> usize {
        num_tokens.div_ceil(self.block_size)
    }

    /// The block table of sequence `id`, or `None` when the manager does not track it.
    pub fn block_table(&self, id: SeqId) -> Option<&[BlockId]> {
        self.seqs.get(&id).map(|s| s.blocks.as_slice())
    }

    /// Number of sequences the manager tracks (holding blocks or a cached hash chain).
    pub fn num_tracked_seqs(&self) -> usize {
        self.seqs.len()
    }

    /// Iterates over `(sequence id, block table)` for every tracked sequence.
    pub fn block_tables(&self) -> impl Iterator<Item = (SeqId, &[BlockId])> + '_ {
        self.seqs.iter().map(|(&id, s)| (id, s.blocks.as_slice()))
    }

    /// Longest run of cached blocks matching the start of `seq.token_ids`. At least the last
    /// token is always left to compute (the model must produce logits for it), so when the
    /// whole sequence is cached the lookup backs off: `num_cached_tokens < token_ids.len()`.
    /// Empty when prefix caching is disabled or the sequence already holds blocks. Takes no
    /// references: pass the result straight to [`allocate_slots`](Self::allocate_slots).
    pub fn get_computed_blocks(&mut self, seq: KvSeq<'_>) -> ComputedBlocks {
        if !self.enable_prefix_caching || seq.token_ids.is_empty() {
            return ComputedBlocks::default();
        }
        let bs = self.block_size;
        let entry = self.seqs.entry(seq.id).or_default();
        if !entry.blocks.is_empty() {
            return ComputedBlocks::default();
        }
        let extra = seq.extra();
        extend_block_hashes(
            &mut entry.hashes,
            seq.token_ids,
            bs,
            seq.token_ids.len() / bs,
            &extra,
        );
        let max_blocks = (seq.token_ids.len() - 1) / bs;
        let blocks: Vec<BlockId> = entry
            .hashes
            .iter()
            .take(max_blocks)
            .map_while(|&h| self.pool.get_cached_block(h))
            .collect();
        ComputedBlocks {
            num_cached_tokens: blocks.len() * bs,
            blocks,
        }
    }

    /// Makes sequence `seq.id` able to hold `num_computed_tokens + num_new_tokens` tokens,
    /// where `num_computed_tokens` already includes `computed.num_cached_tokens`.
    ///
    /// `computed` (from [`get_computed_blocks`](Self::get_computed_blocks), or empty) is only
    /// used when the sequence holds no blocks yet: its blocks are referenced and become the
    /// start of the table. Returns the newly allocated block ids, or `None` — changing
    /// nothing — when the pool cannot supply every block needed (the caller then preempts or
    /// waits).
    pub fn allocate_slots(
        &mut self,
        seq: KvSeq<'_>,
        num_computed_tokens: usize,
        num_new_tokens: usize,
        computed: &ComputedBlocks,
    ) -> Option<Vec<BlockId>> {
        let required = self.blocks_for_tokens(num_computed_tokens + num_new_tokens);
        let enable_prefix_caching = self.enable_prefix_caching;
        let entry = self.seqs.entry(seq.id).or_default();
        let fresh = entry.blocks.is_empty();
        let hits: &[BlockId] = if fresh && enable_prefix_caching {
            &computed.blocks
        } else {
            &[]
        };
        // A hit must still be what get_computed_blocks saw; anything else is a caller bug
        // that would feed the model the wrong KV, so refuse it.
        let hits_valid = hits.len() <= entry.hashes.len()
            && hits
                .iter()
                .zip(&entry.hashes)
                .all(|(&b, &h)| self.pool.block_hash(b) == Some(h));
        debug_assert!(hits_valid, "stale ComputedBlocks passed to allocate_slots");
        if !hits_valid {
            return None;
        }
        let have = entry.blocks.len() + hits.len();
        let num_new_blocks = required.saturating_sub(have);
        // Hit blocks with ref count 0 sit on the free list: touching them shrinks it.
        let evictable_hits = hits
            .iter()
            .filter(|&&b| self.pool.ref_count(b) == 0)
            .count();
        if num_new_blocks + evictable_hits > self.pool.num_free_blocks() {
            return None;
        }
        if !hits.is_empty() {
            if self.pool.touch(hits).is_err() {
                return None;
            }
            entry.blocks.extend_from_slice(hits);
            entry.num_cached_blocks = hits.len();
        }
        if fresh && enable_prefix_caching {
            self.stats.queries += seq.token_ids.len() as u64;
            self.stats.hits += (hits.len() * self.block_size) as u64;
        }
        // Cannot fail: checked against num_free_blocks above.
        let new_blocks = self.pool.allocate(num_new_blocks)?;
        entry.blocks.extend_from_slice(&new_blocks);
        Some(new_blocks)
    }

    /// Registers in the prefix cache every block of `seq` that is now full of computed tokens
    /// (`num_computed_tokens` = tokens whose KV has been written). No-op when prefix caching
    /// is disabled or the sequence holds no blocks.
    pub fn cache_full_blocks(&mut self, seq: KvSeq<'_>, num_computed_tokens: usize) {
        if !self.enable_prefix_caching {
            return;
        }
        let bs = self.block_size;
        let Some(entry) = self.seqs.get_mut(&seq.id) else {
            return;
        };
        let num_full = (num_computed_tokens.min(seq.token_ids.len()) / bs).min(entry.blocks.len());
        if num_full <= entry.num_cached_blocks {
            return;
        }
        let extra = seq.extra();
        extend_block_hashes(&mut entry.hashes, seq.token_ids, bs, num_full, &extra);
        let first = entry.num_cached_blocks;
        // A block already cached elsewhere just stays private (and is not reported).
        let res = self.pool.cache_full_blocks(FullBlocks {
            blocks: &entry.blocks[first..num_full],
            hashes: &entry.hashes[first..num_full],
            parent: first.checked_sub(1).map(|p| entry.hashes[p]),
            token_ids: &seq.token_ids[first * bs..num_full * bs],
            block_size: bs,
            first_index: first,
            lora_id: seq.lora_id,
            cache_salt: seq.cache_salt,
        });
        debug_assert!(res.is_ok(), "caching blocks of {}: {res:?}", seq.id);
        entry.num_cached_blocks = num_full;
    }

    /// Records every change to the prefix cache as a [`KvCacheEvent`] from now on.
    pub fn enable_events(&mut self) {
        self.pool.enable_events();
    }

    /// The prefix-cache events recorded since the last call, oldest first.
    pub fn take_events(&mut self) -> Vec<KvCacheEvent> {
        self.pool.take_events()
    }

    /// Drops every cached hash when no block is in use (see
    /// [`BlockPool::reset_prefix_cache`]); `false` when some sequence still holds blocks.
    pub fn reset_prefix_cache(&mut self) -> bool {
        self.pool.reset_prefix_cache()
    }

    /// Returns every block of sequence `id` to the pool, tail first (so the tail is evicted
    /// before the more shareable head), and forgets the sequence. Returns `false` when the
    /// manager did not track it.
    pub fn free(&mut self, id: SeqId) -> bool {
        let Some(mut entry) = self.seqs.remove(&id) else {
            return false;
        };
        entry.blocks.reverse();
        let res = self.pool.free(&entry.blocks);
        debug_assert!(res.is_ok(), "freeing sequence {id}: {res:?}");
        true
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::block_pool::NULL_BLOCK;

    fn seq(id: u64, toks: &[u32]) -> KvSeq<'_> {
        KvSeq {
            id: SeqId(id),
            token_ids: toks,
            lora_id: None,
            cache_salt: None,
        }
    }

    /// Allocates and "computes" all of `toks` for `id`, then caches its full blocks.
    fn run_prefill(m: &mut KvCacheManager, id: u64, toks: &[u32]) -> ComputedBlocks {
        let c = m.get_computed_blocks(seq(id, toks));
        let n = c.num_cached_tokens;
        m.allocate_slots(seq(id, toks), n, toks.len() - n, &c)
            .unwrap();
        m.cache_full_blocks(seq(id, toks), toks.len());
        c
    }

    #[test]
    fn second_request_hits_shared_prefix() {
        let mut m = KvCacheManager::new(16, 4, true).unwrap();
        let a: Vec<u32> = (0..10).collect();
        assert_eq!(run_prefill(&mut m, 1, &a).num_cached_tokens, 0);
        let mut b: Vec<u32> = (0..8).collect();
        b.extend([100, 101, 102]);
        let c = run_prefill(&mut m, 2, &b);
        assert_eq!(c.num_cached_tokens, 8);
        let ta = m.block_table(SeqId(1)).unwrap().to_vec();
        let tb = m.block_table(SeqId(2)).unwrap().to_vec();
        assert_eq!(&ta[..2], &tb[..2]);
        assert_ne!(ta[2], tb[2]);
        assert_eq!(m.pool().ref_count(ta[0]), 2);
        assert_eq!(
            m.prefix_cache_stats(),
            PrefixCacheStats {
                queries: 21,
                hits: 8
            }
        );
    }

    #[test]
    fn full_prompt_hit_backs_off_one_token() {
        let mut m = KvCacheManager::new(16, 4, true).unwrap();
        let a: Vec<u32> = (0..8).collect(); // exactly two full blocks
        run_prefill(&mut m, 1, &a);
        m.free(SeqId(1));
        let c = m.get_computed_blocks(seq(2, &a));
        // Only the first block may hit: the last token must be recomputed.
        assert_eq!(c.num_cached_tokens, 4);
        assert_eq!(c.blocks.len(), 1);
        let a9: Vec<u32> = (0..9).collect();
        let c = m.get_computed_blocks(seq(3, &a9));
        assert_eq!(c.num_cached_tokens, 8);
        assert!(c.num_cached_tokens < a9.len());
    }

    #[test]
    fn lora_and_salt_isolate_the_cache() {
        let mut m = KvCacheManager::new(16, 4, true).unwrap();
        let a: Vec<u32> = (0..9).collect();
        run_prefill(&mut m, 1, &a);
        let other_lora = KvSeq {
            id: SeqId(2),
            token_ids: &a,
            lora_id: Some(LoraId(5)),
            cache_salt: None,
        };
        assert_eq!(m.get_computed_blocks(other_lora).num_cached_tokens, 0);
        let salted = KvSeq {
            id: SeqId(3),
            token_ids: &a,
            lora_id: None,
            cache_salt: Some("s"),
        };
        assert_eq!(m.get_computed_blocks(salted).num_cached_tokens, 0);
        assert_eq!(m.get_computed_blocks(seq(4, &a)).num_cached_tokens, 8);
    }

    #[test]
    fn disabled_prefix_caching_never_hits_or_hashes() {
        let mut m = KvCacheManager::new(16, 4, false).unwrap();
        let a: Vec<u32> = (0..9).collect();
        run_prefill(&mut m, 1, &a);
        assert_eq!(m.pool().num_cached_blocks(), 0);
        assert_eq!(run_prefill(&mut m, 2, &a).num_cached_tokens, 0);
        assert_eq!(m.prefix_cache_stats(), PrefixCacheStats::default());
    }

    #[test]
    fn allocate_never_partially_allocates() {
        let mut m = KvCacheManager::new(5, 4, true).unwrap(); // 4 usable blocks
        let a: Vec<u32> = (0..20).collect();
        let none = ComputedBlocks::default();
        assert!(m.allocate_slots(seq(1, &a), 0, 17, &none).is_none());
        assert_eq!(m.num_free_blocks(), 4);
        assert_eq!(m.block_table(SeqId(1)), Some(&[][..]));
        let got = m.allocate_slots(seq(1, &a), 0, 16, &none).unwrap();
        assert_eq!(got.len(), 4);
        assert!(!got.contains(&NULL_BLOCK));
        // Growing by a token within the last block needs nothing new.
        assert_eq!(m.allocate_slots(seq(1, &a), 15, 1, &none).unwrap(), vec![]);
        assert!(m.allocate_slots(seq(1, &a), 16, 1, &none).is_none());
        assert_eq!(m.usage(), 1.0);
        assert!(m.free(SeqId(1)));
        assert!(!m.free(SeqId(1)));
        assert_eq!(m.num_free_blocks(), 4);
    }

    #[test]
    fn evictable_hits_count_against_free_blocks() {
        // 4 usable blocks. Seq 1 caches 2 full blocks then is freed (they stay cached).
        let mut m = KvCacheManager::new(5, 2, true).unwrap();
        let a = [1, 2, 3, 4, 5];
        run_prefill(&mut m, 1, &a);
        m.free(SeqId(1));
        assert_eq!(m.num_free_blocks(), 4);
        let c = m.get_computed_blocks(seq(2, &a));
        assert_eq!(c.blocks.len(), 2);
        // 2 hits (both on the free list) + 3 new blocks for 6 more tokens > 4 free.
        let mut long = a.to_vec();
        long.extend([6, 7, 8, 9, 10, 11]);
        let c = m.get_computed_blocks(seq(2, &long));
        assert_eq!(c.blocks.len(), 2);
        assert!(m.allocate_slots(seq(2, &long), 4, 7, &c).is_none());
        assert_eq!(m.num_free_blocks(), 4);
        assert!(m.allocate_slots(seq(2, &long), 4, 4, &c).is_some());
        assert_eq!(m.num_free_blocks(), 0);
        m.pool().check_consistency().unwrap();
    }

    #[test]
    fn free_evicts_tail_before_head() {
        let mut m = KvCacheManager::new(8, 2, true).unwrap();
        let a = [1, 2, 3, 4, 5, 6, 7];
        run_prefill(&mut m, 1, &a);
        let table = m.block_table(SeqId(1)).unwrap().to_vec();
        m.free(SeqId(1));
        let list = m.pool().free_list();
        // The sequence's blocks are at the tail of the free list, last block first.
        let mut rev = table.clone();
        rev.reverse();
        assert_eq!(&list[list.len() - table.len()..], &rev[..]);
        // Allocating evicts the unused blocks, then the sequence's tail; the head survives.
        let b = [9u32; 11];
        let none = ComputedBlocks::default();
        m.allocate_slots(seq(2, &b), 0, 8, &none).unwrap(); // 4 blocks: 3 unused + the tail
        let c = m.get_computed_blocks(seq(3, &a));
        assert_eq!(c.num_cached_tokens, 6, "head blocks still cached");
        m.allocate_slots(seq(2, &b), 8, 2, &none).unwrap(); // evicts block 3 (tokens 5,6)
        let c = m.get_computed_blocks(seq(4, &a));
        assert_eq!(c.num_cached_tokens, 4);
    }
}
