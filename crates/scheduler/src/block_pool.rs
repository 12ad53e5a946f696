//! The pool of KV cache blocks: ref counts, an LRU free list and the prefix-cache map.

use std::collections::HashMap;

use crate::error::BlockPoolError;
use crate::hash::BlockHash;
use crate::ids::{BlockId, LoraId};

/// Block 0 is reserved as the null block (a placeholder the runner may point padding at). It
/// is never handed out, never freed and never cached.
pub const NULL_BLOCK: BlockId = BlockId(0);

/// `num_blocks` fixed-size KV cache blocks, identified by [`BlockId`]s (`0..num_blocks`).
///
/// * every block has a ref count (how many block tables hold it);
/// * blocks with ref count 0 (except the null block) sit on a free list in LRU order: the head
///   is evicted first, freed blocks join the tail. The list is intrusive (two `Vec`s of
///   neighbour ids), so taking a block out of the middle on a cache hit is O(1);
/// * a full block whose contents are known can be registered under its [`BlockHash`]. It keeps
///   that hash while it sits on the free list (it can still be hit) and loses it only when it
///   is handed out again (evicted);
/// * with event recording on ([`BlockPool::enable_events`]), every change to the set of
///   cached hashes is recorded as a [`KvCacheEvent`] (vLLM's KV-cache events), in order,
///   until [`BlockPool::take_events`] collects them.
#[derive(Debug, Clone)]
pub struct BlockPool {
    ref_cnt: Vec<u32>,
    hash: Vec<Option<BlockHash>>,
    /// `prev`/`next` have `num_blocks + 1` entries; index `num_blocks` is the list sentinel.
    prev: Vec<u32>,
    next: Vec<u32>,
    num_free: usize,
    cached: HashMap<BlockHash, BlockId>,
    /// Recorded changes to the prefix cache; `None` when event recording is off.
    events: Option<Vec<KvCacheEvent>>,
}

/// A change to the set of blocks in the prefix cache, as vLLM's KV-cache events describe it
/// (`BlockStored`, `BlockRemoved`, `AllBlocksCleared`). Recorded by the [`BlockPool`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KvCacheEvent {
    /// Full blocks were registered in the prefix cache. They form a chain: `block_hashes[0]`
    /// continues `parent_block_hash` (`None` for the first block of a sequence) and block
    /// `i` holds `token_ids[i * block_size..(i + 1) * block_size]`.
    BlockStored {
        block_hashes: Vec<BlockHash>,
        parent_block_hash: Option<BlockHash>,
        token_ids: Vec<u32>,
        block_size: usize,
        /// The adapter of the sequence that computed the blocks (`None`: the base model).
        lora_id: Option<LoraId>,
        /// The sequence's cache salt, only when the first stored block is the sequence's
        /// first block (the salt enters the hash chain there, as in vLLM).
        cache_salt: Option<String>,
    },
    /// A cached block was evicted: its hash no longer hits.
    BlockRemoved { block_hashes: Vec<BlockHash> },
    /// Every hash was dropped ([`BlockPool::reset_prefix_cache`]).
    AllBlocksCleared,
}

/// What [`BlockPool::cache_full_blocks`] registers: consecutive full blocks of one sequence.
#[derive(Debug, Clone, Copy)]
pub struct FullBlocks<'a> {
    /// The blocks, in sequence order.
    pub blocks: &'a [BlockId],
    /// Their chained hashes (same length as `blocks`).
    pub hashes: &'a [BlockHash],
    /// The hash of the block before `blocks[0]` (`None` when `blocks[0]` is the first).
    pub parent: Option<BlockHash>,
    /// The tokens `blocks` hold (`blocks.len() * block_size` of them).
    pub token_ids: &'a [u32],
    pub block_size: usize,
    /// Index of `blocks[0]` in the sequence's block table.
    pub first_index: usize,
    pub lora_id: Option<LoraId>,
    pub cache_salt: Option<&'a str>,
}

impl BlockPool {
    /// A pool of `num_blocks` blocks (including the null block), all free, none cached.
    pub fn new(num_blocks: usize) -> Result<Self, BlockPoolError> {
        if num_blocks < 2 {
            return Err(BlockPoolError::TooFewBlocks { num_blocks });
        }
        // The sentinel id must fit in a u32 as well.
        if num_blocks >= u32::MAX as usize {
            return Err(BlockPoolError::TooManyBlocks { num_blocks });
        }
        let n = num_blocks as u32;
        let sentinel = n;
        let mut prev = vec![sentinel; num_blocks + 1];
        let mut next = vec![sentinel; num_blocks + 1];
        // Free list: 1, 2, ..., n-1 (block 0 is the null block and never listed).
        for b in 1..n {
            prev[b as usize] = if b == 1 { sentinel } else { b - 1 };
            next[b as usize] = if b == n - 1 { sentinel } else { b + 1 };
        }
        next[sentinel as usize] = 1;
        prev[sentinel as usize] = n - 1;
        Ok(Self {
            ref_cnt: vec![0; num_blocks],
            hash: vec![None; num_blocks],
            prev,
            next,
            num_free: num_blocks - 1,
            cached: HashMap::new(),
            events: None,
        })
    }

    /// Starts recording [`KvCacheEvent`]s (off by default: no cost when nobody listens).
    pub fn enable_events(&mut self) {
        self.events.get_or_insert_with(Vec::new);
    }

    /// Whether events are recorded.
    pub fn events_enabled(&self) -> bool {
        self.events.is_some()
    }

    /// The events recorded since the last call, oldest first (empty when recording is off).
    pub fn take_events(&mut self) -> Vec<KvCacheEvent> {
        self.events.as_mut().map(std::mem::take).unwrap_or_default()
    }

    /// Hashes of every block in the prefix-cache map (in no particular order).
    pub fn cached_hashes(&self) -> impl Iterator<Item = BlockHash> + '_ {
        self.cached.keys().copied()
    }

    /// Drops every hash (vLLM's `reset_prefix_cache`): nothing hits afterwards. Only done
    /// when no block is in use, since a running sequence's blocks must stay registered;
    /// returns `false`, changing nothing, otherwise. Records `AllBlocksCleared`.
    pub fn reset_prefix_cache(&mut self) -> bool {
        if self.num_free != self.num_usable_blocks() {
            return false;
        }
        self.hash.iter_mut().for_each(|h| *h = None);
        self.cached.clear();
        if let Some(ev) = &mut self.events {
            ev.push(KvCacheEvent::AllBlocksCleared);
        }
        true
    }

    /// Total number of blocks, the null block included.
    pub fn num_blocks(&self) -> usize {
        self.ref_cnt.len()
    }

    /// Blocks that can ever be handed out (`num_blocks - 1`).
    pub fn num_usable_blocks(&self) -> usize {
        self.ref_cnt.len() - 1
    }

    /// Blocks with ref count 0 (cached ones included: they are evictable).
    pub fn num_free_blocks(&self) -> usize {
        self.num_free
    }

    /// Fraction of usable blocks held by at least one request, in `[0, 1]`.
    pub fn usage(&self) -> f64 {
        1.0 - self.num_free as f64 / self.num_usable_blocks() as f64
    }

    /// Number of blocks registered in the prefix-cache map.
    pub fn num_cached_blocks(&self) -> usize {
        self.cached.len()
    }

    /// Ref count of `block` (0 for an unknown id).
    pub fn ref_count(&self, block: BlockId) -> u32 {
        self.ref_cnt.get(block.index()).copied().unwrap_or(0)
    }

    /// The hash `block` is registered under, if any.
    pub fn block_hash(&self, block: BlockId) -> Option<BlockHash> {
        self.hash.get(block.index()).copied().flatten()
    }

    /// The cached block holding the contents with this hash, if any.
    pub fn get_cached_block(&self, hash: BlockHash) -> Option<BlockId> {
        self.cached.get(&hash).copied()
    }

    /// Hands out `n` blocks from the head of the free list (least recently freed first), each
    /// with ref count 1. A block that was cached loses its hash (it is evicted). Returns `None`,
    /// changing nothing, when fewer than `n` blocks are free.
    pub fn allocate(&mut self, n: usize) -> Option<Vec<BlockId>> {
        if n > self.num_free {
            return None;
        }
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            let b = self.pop_front()?;
            self.evict_hash(b);
            self.ref_cnt[b as usize] = 1;
            out.push(BlockId(b));
        }
        Some(out)
    }

    /// Takes a reference on each block (cache hits): a block with ref count 0 leaves the free
    /// list. Validates every id first and changes nothing on error.
    pub fn touch(&mut self, blocks: &[BlockId]) -> Result<(), BlockPoolError> {
        for &b in blocks {
            self.check_id(b)?;
        }
        for &BlockId(b) in blocks {
            if self.ref_cnt[b as usize] == 0 {
                self.unlink(b);
            }
            self.ref_cnt[b as usize] += 1;
        }
        Ok(())
    }

    /// Drops one reference on each block, in the given order; a block reaching 0 joins the
    /// tail of the free list (keeping its hash), so the first block in `blocks` that becomes
    /// free is evicted first. Callers freeing a sequence pass its table reversed, so that the
    /// tail of a sequence is evicted before its (more shareable) head.
    ///
    /// Invalid ids are rejected before anything changes; a block listed more often than it is
    /// referenced is left at 0 (never pushed twice) and reported after the others are freed.
    pub fn free(&mut self, blocks: &[BlockId]) -> Result<(), BlockPoolError> {
        for &b in blocks {
            self.check_id(b)?;
        }
        let mut over_freed = None;
        for &BlockId(b) in blocks {
            let rc = &mut self.ref_cnt[b as usize];
            if *rc == 0 {
                over_freed.get_or_insert(BlockId(b));
                continue;
            }
            *rc -= 1;
            if *rc == 0 {
                self.push_back(b);
            }
        }
        match over_freed {
            Some(block) => Err(BlockPoolError::DoubleFree { block }),
            None => Ok(()),
        }
    }

    /// Registers a full, computed block under `hash`. Returns `false` (and changes nothing)
    /// when the block already has a hash or another block is already cached under `hash`
    /// (two requests computed the same contents: the second copy simply stays private).
    pub fn cache_block(&mut self, block: BlockId, hash: BlockHash) -> Result<bool, BlockPoolError> {
        self.check_id(block)?;
        if self.hash[block.index()].is_some() || self.cached.contains_key(&hash) {
            return Ok(false);
        }
        self.hash[block.index()] = Some(hash);
        self.cached.insert(hash, block);
        Ok(true)
    }

    /// Registers consecutive full blocks of one sequence ([`BlockPool::cache_block`] each)
    /// and records one `BlockStored` per run of blocks that got registered, so that every
    /// event's chain starts from its true parent. Returns how many were registered.
    pub fn cache_full_blocks(&mut self, full: FullBlocks<'_>) -> Result<usize, BlockPoolError> {
        let n = full.blocks.len().min(full.hashes.len());
        let mut registered = 0;
        // Start (index into `full.blocks`) of the current run of registered blocks.
        let mut run_start: Option<usize> = None;
        for i in 0..n {
            if self.cache_block(full.blocks[i], full.hashes[i])? {
                registered += 1;
                run_start.get_or_insert(i);
            } else if let Some(start) = run_start.take() {
                self.record_stored(&full, start, i);
            }
        }
        if let Some(start) = run_start {
            self.record_stored(&full, start, n);
        }
        Ok(registered)
    }

    fn record_stored(&mut self, full: &FullBlocks<'_>, start: usize, end: usize) {
        let Some(events) = &mut self.events else {
            return;
        };
        let bs = full.block_size;
        let parent = if start == 0 {
            full.parent
        } else {
            Some(full.hashes[start - 1])
        };
        let tokens = full
            .token_ids
            .get(start * bs..end * bs)
            .unwrap_or_default()
            .to_vec();
        events.push(KvCacheEvent::BlockStored {
            block_hashes: full.hashes[start..end].to_vec(),
            parent_block_hash: parent,
            token_ids: tokens,
            block_size: bs,
            lora_id: full.lora_id,
            cache_salt: if full.first_index + start == 0 {
                full.cache_salt.map(str::to_string)
            } else {
                None
            },
        });
    }

    /// Free-list contents from head (next to be evicted) to tail.
    pub fn free_list(&self) -> Vec<BlockId> {
        let sentinel = self.sentinel();
        let mut out = Vec::with_capacity(self.num_free);
        let mut b = self.next[sentinel as usize];
        while b != sentinel && out.len() <= self.num_free {
            out.push(BlockId(b));
            b = self.next[b as usize];
        }
        out
    }

    /// Checks the pool's internal invariants (used by tests): the free list is a well-formed
    /// doubly linked list holding exactly the non-null blocks with ref count 0, the null block
    /// is unreferenced, and the hash map and per-block hashes agree.
    pub fn check_consistency(&self) -> Result<(), String> {
        let list = self.free_list();
        if list.len() != self.num_free {
            return Err(format!(
                "free list has {} entries but num_free is {}",
                list.len(),
                self.num_free
            ));
        }
        let mut on_list = vec![false; self.num_blocks()];
        let mut prev = self.sentinel();
        for &BlockId(b) in &list {
            if b == NULL_BLOCK.0 || b as usize >= self.num_blocks() {
                return Err(format!("free list holds invalid block {b}"));
            }
            if on_list[b as usize] {
                return Err(format!("block {b} is on the free list twice"));
            }
            if self.prev[b as usize] != prev {
                return Err(format!("block {b} has a wrong prev link"));
            }
            on_list[b as usize] = true;
            prev = b;
        }
        if self.prev[self.sentinel() as usize] != prev {
            return Err("sentinel prev link does not point to the tail".to_string());
        }
        if self.ref_cnt[NULL_BLOCK.index()] != 0 || self.hash[NULL_BLOCK.index()].is_some() {
            return Err("the null block was referenced or cached".to_string());
        }
        for (b, (&rc, &listed)) in self.ref_cnt.iter().zip(&on_list).enumerate().skip(1) {
            if (rc == 0) != listed {
                return Err(format!(
                    "block {b} has ref count {rc} but on_free_list={listed}"
                ));
            }
            if let Some(h) = self.hash[b] {
                if self.cached.get(&h) != Some(&BlockId(b as u32)) {
                    return Err(format!(
                        "block {b} has a hash the map does not point back to"
                    ));
                }
            }
        }
        for (h, &b) in &self.cached {
            if self.hash.get(b.index()).copied().flatten() != Some(*h) {
                return Err(format!("map entry for block {b} does not match its hash"));
            }
        }
        Ok(())
    }

    fn sentinel(&self) -> u32 {
        self.ref_cnt.len() as u32
    }

    fn check_id(&self, block: BlockId) -> Result<(), BlockPoolError> {
        if block == NULL_BLOCK {
            return Err(BlockPoolError::NullBlock);
        }
        if block.index() >= self.num_blocks() {
            return Err(BlockPoolError::OutOfRange {
                block,
                num_blocks: self.num_blocks(),
            });
        }
        Ok(())
    }

    fn evict_hash(&mut self, b: u32) {
        if let Some(h) = self.hash[b as usize].take() {
            if self.cached.get(&h) == Some(&BlockId(b)) {
                self.cached.remove(&h);
                if let Some(ev) = &mut self.events {
                    ev.push(KvCacheEvent::BlockRemoved {
                        block_hashes: vec![h],
                    });
                }
            }
        }
    }

    fn pop_front(&mut self) -> Option<u32> {
        let s = self.sentinel();
        let b = self.next[s as usize];
        if b == s {
            return None;
        }
        self.unlink(b);
        Some(b)
    }

    fn push_back(&mut self, b: u32) {
        let s = self.sentinel();
        let tail = self.prev[s as usize];
        self.next[tail as usize] = b;
        self.prev[b as usize] = tail;
        self.next[b as usize] = s;
        self.prev[s as usize] = b;
        self.num_free += 1;
    }

    fn unlink(&mut self, b: u32) {
        let (p, n) = (self.prev[b as usize], self.next[b as usize]);
        self.next[p as usize] = n;
        self.prev[n as usize] = p;
        let s = self.sentinel();
        self.prev[b as usize] = s;
        self.next[b as usize] = s;
        self.num_free -= 1;
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::hash::{hash_block, CacheKeyExtra};

    fn ids<const N: usize>(v: [u32; N]) -> Vec<BlockId> {
        v.map(BlockId).to_vec()
    }

    fn h(i: u32) -> BlockHash {
        hash_block(None, &[i], &CacheKeyExtra::default())
    }

    #[test]
    fn new_pool_lists_all_but_null_block() {
        let p = BlockPool::new(5).unwrap();
        assert_eq!(p.free_list(), ids([1, 2, 3, 4]));
        assert_eq!(p.num_free_blocks(), 4);
        assert_eq!(p.num_usable_blocks(), 4);
        assert_eq!(p.usage(), 0.0);
        p.check_consistency().unwrap();
    }

    #[test]
    fn too_few_blocks_rejected() {
        let e = BlockPool::new(1).unwrap_err();
        assert!(e.to_string().contains("num_blocks is 1"), "{e}");
    }

    #[test]
    fn allocate_is_lru_and_all_or_nothing() {
        let mut p = BlockPool::new(5).unwrap();
        assert_eq!(p.allocate(2).unwrap(), ids([1, 2]));
        assert!(p.allocate(3).is_none());
        assert_eq!(p.num_free_blocks(), 2);
        assert_eq!(p.allocate(2).unwrap(), ids([3, 4]));
        assert!(p.allocate(1).is_none());
        assert_eq!(p.usage(), 1.0);
        // Free 3 then 1: the LRU order is 3, 1.
        p.free(&ids([3, 1])).unwrap();
        assert_eq!(p.free_list(), ids([3, 1]));
        assert_eq!(p.allocate(1).unwrap(), ids([3]));
        p.check_consistency().unwrap();
    }

    #[test]
    fn never_hands_out_null_block() {
        let mut p = BlockPool::new(3).unwrap();
        let all = p.allocate(2).unwrap();
        assert!(!all.contains(&NULL_BLOCK));
        assert!(p.free(&[NULL_BLOCK]).is_err());
        assert!(p.touch(&[NULL_BLOCK]).is_err());
        p.check_consistency().unwrap();
    }

    #[test]
    fn freed_block_keeps_hash_until_reallocated() {
        let mut p = BlockPool::new(4).unwrap();
        let b = p.allocate(3).unwrap();
        assert!(p.cache_block(b[0], h(7)).unwrap());
        p.free(&[b[0]]).unwrap();
        assert_eq!(p.get_cached_block(h(7)), Some(b[0]));
        assert_eq!(p.block_hash(b[0]), Some(h(7)));
        // Reallocating evicts.
        assert_eq!(p.allocate(1).unwrap(), vec![b[0]]);
        assert_eq!(p.get_cached_block(h(7)), None);
        assert_eq!(p.block_hash(b[0]), None);
        p.check_consistency().unwrap();
    }

    #[test]
    fn touch_removes_from_middle_of_free_list() {
        let mut p = BlockPool::new(6).unwrap();
        let b = p.allocate(5).unwrap();
        p.free(&b).unwrap();
        assert_eq!(p.free_list(), ids([1, 2, 3, 4, 5]));
        p.touch(&ids([3])).unwrap();
        assert_eq!(p.free_list(), ids([1, 2, 4, 5]));
        assert_eq!(p.ref_count(BlockId(3)), 1);
        p.touch(&ids([3])).unwrap();
        assert_eq!(p.ref_count(BlockId(3)), 2);
        p.free(&ids([3])).unwrap();
        assert_eq!(p.free_list(), ids([1, 2, 4, 5]));
        p.free(&ids([3])).unwrap();
        assert_eq!(p.free_list(), ids([1, 2, 4, 5, 3]));
        // Head and tail removal.
        p.touch(&ids([1, 3])).unwrap();
        assert_eq!(p.free_list(), ids([2, 4, 5]));
        p.check_consistency().unwrap();
    }

    #[test]
    fn double_free_is_reported_and_harmless() {
        let mut p = BlockPool::new(3).unwrap();
        let b = p.allocate(1).unwrap();
        let e = p.free(&[b[0], b[0]]).unwrap_err();
        assert!(e.to_string().contains("block 1"), "{e}");
        assert_eq!(p.free_list(), ids([2, 1]));
        p.check_consistency().unwrap();
        assert!(p.free(&ids([7])).is_err());
    }

    #[test]
    fn duplicate_hash_is_not_registered_twice() {
        let mut p = BlockPool::new(4).unwrap();
        let b = p.allocate(2).unwrap();
        assert!(p.cache_block(b[0], h(1)).unwrap());
        assert!(!p.cache_block(b[1], h(1)).unwrap());
        assert!(!p.cache_block(b[0], h(2)).unwrap());
        assert_eq!(p.get_cached_block(h(1)), Some(b[0]));
        assert_eq!(p.num_cached_blocks(), 1);
        p.check_consistency().unwrap();
    }

    fn full<'a>(
        blocks: &'a [BlockId],
        hashes: &'a [BlockHash],
        tokens: &'a [u32],
    ) -> FullBlocks<'a> {
        FullBlocks {
            blocks,
            hashes,
            parent: None,
            token_ids: tokens,
            block_size: 1,
            first_index: 0,
            lora_id: None,
            cache_salt: Some("s"),
        }
    }

    #[test]
    fn events_are_off_by_default() {
        let mut p = BlockPool::new(4).unwrap();
        let b = p.allocate(2).unwrap();
        let hs = [h(1), h(2)];
        assert_eq!(p.cache_full_blocks(full(&b, &hs, &[1, 2])).unwrap(), 2);
        p.free(&b).unwrap();
        p.allocate(3).unwrap();
        assert!(!p.events_enabled());
        assert!(p.take_events().is_empty());
    }

    #[test]
    fn stored_runs_keep_their_parents_and_evictions_are_reported() {
        let mut p = BlockPool::new(8).unwrap();
        p.enable_events();
        let b = p.allocate(4).unwrap();
        // Another block already holds h(2): b[1] stays private, so two runs are reported.
        let other = p.allocate(1).unwrap();
        assert!(p.cache_block(other[0], h(2)).unwrap());
        let hs = [h(1), h(2), h(3), h(4)];
        assert_eq!(
            p.cache_full_blocks(full(&b, &hs, &[10, 20, 30, 40]))
                .unwrap(),
            3
        );
        let ev = p.take_events();
        assert_eq!(
            ev,
            vec![
                KvCacheEvent::BlockStored {
                    block_hashes: vec![h(1)],
                    parent_block_hash: None,
                    token_ids: vec![10],
                    block_size: 1,
                    lora_id: None,
                    cache_salt: Some("s".into()),
                },
                KvCacheEvent::BlockStored {
                    block_hashes: vec![h(3), h(4)],
                    parent_block_hash: Some(h(2)),
                    token_ids: vec![30, 40],
                    block_size: 1,
                    lora_id: None,
                    cache_salt: None,
                },
            ]
        );
        assert!(p.take_events().is_empty(), "taking empties the queue");
        // Freed blocks keep their hashes; handing them out again evicts, in LRU order.
        p.free(&[b[2], b[0]]).unwrap();
        assert_eq!(p.allocate(2).unwrap(), ids([6, 7]));
        assert!(
            p.take_events().is_empty(),
            "blocks 6 and 7 were never cached"
        );
        assert_eq!(p.allocate(1).unwrap(), ids([3]));
        assert_eq!(
            p.take_events(),
            vec![KvCacheEvent::BlockRemoved {
                block_hashes: vec![h(3)]
            }]
        );
        p.check_consistency().unwrap();
    }

    #[test]
    fn reset_needs_every_block_free() {
        let mut p = BlockPool::new(4).unwrap();
        p.enable_events();
        let b = p.allocate(2).unwrap();
        p.cache_block(b[0], h(1)).unwrap();
        assert!(!p.reset_prefix_cache());
        assert_eq!(p.get_cached_block(h(1)), Some(b[0]));
        p.free(&b).unwrap();
        assert!(p.reset_prefix_cache());
        assert_eq!(p.num_cached_blocks(), 0);
        assert_eq!(p.block_hash(b[0]), None);
        assert_eq!(p.cached_hashes().count(), 0);
        assert_eq!(p.take_events(), vec![KvCacheEvent::AllBlocksCleared]);
        p.check_consistency().unwrap();
    }
}
