//! LoRA adapters on the engine side: the name table the server reads, and the engine
//! thread's host-memory cache of adapter weights.
//!
//! Three tiers, each a subset of the one before:
//! 1. registered adapters (name -> id), read by the server on every request
//!    ([`LoraRegistry`], the one structure shared between threads: written only by load and
//!    unload, read-mostly);
//! 2. adapters whose weights sit in host memory, at most `max_cpu_loras` of them, LRU
//!    among those no request uses ([`HostLoras`], owned by the engine thread); an adapter
//!    that fell out is read from disk again by a background thread when a request needs it,
//!    while other requests keep running;
//! 3. adapters in the `max_loras` device slots, decided by the scheduler (`LoraSlots`) and
//!    copied from host memory by the runner right before the step that needs them.
//!
//! Ids are never reused, so KV cached for an unloaded adapter can never be hit by a new
//! adapter that happens to get the same name.

use crate::params::RequestId;
use lantern_models::LoraAdapter;
use lantern_scheduler::LoraId;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::SystemTime;

/// The LoRA limits of an engine (`--max-loras`, `--max-lora-rank`, `--max-cpu-loras`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoraConfig {
    /// Adapter slots on the device: distinct adapters in one batch.
    pub max_loras: usize,
    /// Highest adapter rank accepted (slots are padded to it).
    pub max_lora_rank: usize,
    /// Adapters kept in host memory (at least `max_loras`).
    pub max_cpu_loras: usize,
}

impl Default for LoraConfig {
    fn default() -> Self {
        Self {
            max_loras: 1,
            max_lora_rank: 16,
            max_cpu_loras: 1,
        }
    }
}

impl LoraConfig {
    pub fn validate(&self) -> Result<(), LoraConfigError> {
        if self.max_loras == 0 {
            return Err(LoraConfigError::NoSlots);
        }
        if self.max_lora_rank == 0 {
            return Err(LoraConfigError::ZeroRank);
        }
        if self.max_cpu_loras < self.max_loras {
            return Err(LoraConfigError::HostBelowSlots {
                max_cpu_loras: self.max_cpu_loras,
                max_loras: self.max_loras,
            });
        }
        Ok(())
    }
}

/// LoRA limits that cannot work together.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum LoraConfigError {
    #[error("--max-loras must be at least 1")]
    NoSlots,
    #[error("--max-lora-rank must be at least 1")]
    ZeroRank,
    #[error("--max-cpu-loras ({max_cpu_loras}) must be at least --max-loras ({max_loras})")]
    HostBelowSlots {
        max_cpu_loras: usize,
        max_loras: usize,
    },
}

/// A registered adapter, as `/v1/models` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoraInfo {
    pub id: LoraId,
    pub name: String,
    /// What the user gave: a directory or a hub id.
    pub source: String,
    /// Where its files are on disk.
    pub path: PathBuf,
    pub rank: usize,
    /// Unix seconds of the load.
    pub created: u64,
}

/// Why loading or unloading an adapter failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LoraError {
    #[error(
        "LoRA is not enabled on this server; start it with --enable-lora (or --lora NAME=PATH)"
    )]
    Disabled,
    #[error("The lora adapter '{0}' has already been loaded.")]
    AlreadyLoaded(String),
    #[error("The lora adapter '{0}' cannot be found.")]
    NotFound(String),
    #[error("{0}")]
    InvalidName(String),
    /// The adapter files are missing, malformed or do not fit the base model.
    #[error("cannot load LoRA adapter '{name}': {message}")]
    Invalid { name: String, message: String },
    #[error("the engine is not running")]
    EngineStopped,
}

#[derive(Debug, Clone)]
enum RegState {
    /// Reserved while its files load; not selectable yet.
    Loading,
    Ready(LoraInfo),
}

/// Name -> adapter table shared by the engine handle's clones.
#[derive(Debug, Default)]
pub(crate) struct LoraRegistry {
    by_name: BTreeMap<String, RegState>,
    next_id: u32,
}

impl LoraRegistry {
    /// Reserves `name` and a fresh id for a load in progress.
    pub(crate) fn reserve(&mut self, name: &str) -> Result<LoraId, LoraError> {
        if self.by_name.contains_key(name) {
            return Err(LoraError::AlreadyLoaded(name.to_string()));
        }
        self.next_id += 1;
        self.by_name.insert(name.to_string(), RegState::Loading);
        Ok(LoraId(self.next_id))
    }

    pub(crate) fn cancel(&mut self, name: &str) {
        if matches!(self.by_name.get(name), Some(RegState::Loading)) {
            self.by_name.remove(name);
        }
    }

    pub(crate) fn publish(&mut self, info: LoraInfo) {
        self.by_name
            .insert(info.name.clone(), RegState::Ready(info));
    }

    /// Removes a ready adapter; returns its id.
    pub(crate) fn remove(&mut self, name: &str) -> Option<LoraId> {
        match self.by_name.get(name) {
            Some(RegState::Ready(info)) => {
                let id = info.id;
                self.by_name.remove(name);
                Some(id)
            }
            _ => None,
        }
    }

    pub(crate) fn id_of(&self, name: &str) -> Option<LoraId> {
        match self.by_name.get(name) {
            Some(RegState::Ready(info)) => Some(info.id),
            _ => None,
        }
    }

    pub(crate) fn list(&self) -> Vec<LoraInfo> {
        self.by_name
            .values()
            .filter_map(|s| match s {
                RegState::Ready(i) => Some(i.clone()),
                RegState::Loading => None,
            })
            .collect()
    }
}

pub(crate) fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Checks an adapter name: what `model` will be set to in requests.
pub(crate) fn check_name(name: &str) -> Result<(), LoraError> {
    if name.is_empty() {
        return Err(LoraError::InvalidName(
            "'lora_name' must not be empty".into(),
        ));
    }
    if name.len() > 256 || name.chars().any(|c| c.is_control()) {
        return Err(LoraError::InvalidName(
            "'lora_name' must be at most 256 characters without control characters".into(),
        ));
    }
    Ok(())
}

#[derive(Debug)]
pub(crate) struct HostEntry {
    /// The name it was loaded under (it stays here after an unload, while requests finish).
    pub(crate) name: String,
    pub(crate) dir: PathBuf,
    pub(crate) host: Option<Arc<LoraAdapter>>,
    /// Sequences (waiting for the load, in the scheduler, or deferred) using it.
    pub(crate) pins: usize,
    /// Unloaded by the user: dropped once `pins` is 0.
    pub(crate) removed: bool,
    pub(crate) loading: bool,
    last_used: u64,
    /// Request groups waiting for this adapter's weights.
    pub(crate) pending: Vec<RequestId>,
}

/// The engine thread's host-memory adapter cache.
#[derive(Debug, Default)]
pub(crate) struct HostLoras {
    entries: HashMap<LoraId, HostEntry>,
    capacity: usize,
    clock: u64,
    /// Adapters whose load waits for host room, oldest first.
    queue: VecDeque<LoraId>,
}

impl HostLoras {
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            capacity,
            ..Default::default()
        }
    }

    pub(crate) fn get(&self, id: LoraId) -> Option<&HostEntry> {
        self.entries.get(&id)
    }

    pub(crate) fn get_mut(&mut self, id: LoraId) -> Option<&mut HostEntry> {
        self.entries.get_mut(&id)
    }

    /// Adapters with weights in host memory (or on their way there).
    pub(crate) fn num_resident(&self) -> usize {
        self.entries
            .values()
            .filter(|e| e.host.is_some() || e.loading)
            .count()
    }

    /// Frees host room for one more adapter if needed, evicting the least recently used
    /// adapter no sequence uses. False when every resident adapter is in use.
    fn make_room(&mut self) -> bool {
        if self.num_resident() < self.capacity {
            return true;
        }
        let victim = self
            .entries
            .iter()
            .filter(|(_, e)| e.host.is_some() && e.pins == 0 && !e.loading)
            .min_by_key(|(_, e)| e.last_used)
            .map(|(&id, _)| id);
        match victim.and_then(|id| self.entries.get_mut(&id)) {
            Some(e) => {
                e.host = None;
                true
            }
            None => false,
        }
    }

    /// A freshly loaded (and validated) adapter; its weights stay in host memory if there
    /// is room.
    pub(crate) fn insert(
        &mut self,
        id: LoraId,
        name: String,
        dir: PathBuf,
        adapter: Arc<LoraAdapter>,
    ) {
        let host = if self.make_room() {
            Some(adapter)
        } else {
            None
        };
        self.clock += 1;
        self.entries.insert(
            id,
            HostEntry {
                name,
                dir,
                host,
                pins: 0,
                removed: false,
                loading: false,
                last_used: self.clock,
                pending: Vec::new(),
            },
        );
    }

    /// Is `id` registered and not unloaded?
    pub(crate) fn is_live(&self, id: LoraId) -> bool {
        self.entries.get(&id).is_some_and(|e| !e.removed)
    }

    pub(crate) fn pin(&mut self, id: LoraId, n: usize) {
        self.clock += 1;
        let clock = self.clock;
        if let Some(e) = self.entries.get_mut(&id) {
            e.pins += n;
            e.last_used = clock;
        }
    }

    /// One sequence stopped using `id`. Returns true when the entry was dropped (it had been
    /// unloaded and this was its last user).
    pub(crate) fn unpin(&mut self, id: LoraId) -> bool {
        let drop_it = match self.entries.get_mut(&id) {
            Some(e) => {
                e.pins = e.pins.saturating_sub(1);
                e.pins == 0 && e.removed
            }
            None => false,
        };
        if drop_it {
            self.entries.remove(&id);
        }
        drop_it
    }

    /// The user unloaded `id`. Returns true when it was dropped at once (nobody used it).
    pub(crate) fn remove(&mut self, id: LoraId) -> bool {
        match self.entries.get_mut(&id) {
            Some(e) if e.pins == 0 && !e.loading => {
                self.entries.remove(&id);
                true
            }
            Some(e) => {
                e.removed = true;
                false
            }
            None => false,
        }
    }

    /// Asks for `id`'s weights in host memory. Returns the directory to read when a disk
    /// load should start now (the entry is marked loading); `None` when the weights are
    /// there, a load is under way, or the load must wait for room (queued).
    pub(crate) fn request_load(&mut self, id: LoraId) -> Option<PathBuf> {
        let e = self.entries.get(&id)?;
        if e.host.is_some() || e.loading || self.queue.contains(&id) {
            return None;
        }
        if !self.queue.is_empty() || !self.make_room() {
            self.queue.push_back(id);
            return None;
        }
        let e = self.entries.get_mut(&id)?;
        e.loading = true;
        Some(e.dir.clone())
    }

    /// Starts queued loads that now have room: returns `(id, dir)` to read from disk.
    pub(crate) fn pump(&mut self) -> Vec<(LoraId, PathBuf)> {
        let mut started = Vec::new();
        while let Some(&id) = self.queue.front() {
            if !self.entries.contains_key(&id) {
                self.queue.pop_front();
                continue;
            }
            if !self.make_room() {
                break;
            }
            self.queue.pop_front();
            if let Some(e) = self.entries.get_mut(&id) {
                e.loading = true;
                started.push((id, e.dir.clone()));
            }
        }
        started
    }

    /// A background load finished.
    pub(crate) fn loaded(&mut self, id: LoraId, adapter: Option<Arc<LoraAdapter>>) {
        if let Some(e) = self.entries.get_mut(&id) {
            e.loading = false;
            e.host = adapter;
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn adapter() -> Arc<LoraAdapter> {
        Arc::new(LoraAdapter {
            path: PathBuf::from("x"),
            rank: 1,
            alpha: 1.0,
            scaling: 1.0,
            weights: HashMap::new(),
        })
    }

    #[test]
    fn registry_reserves_names_and_never_reuses_ids() {
        let mut r = LoraRegistry::default();
        let a = r.reserve("a").unwrap();
        assert_eq!(r.reserve("a"), Err(LoraError::AlreadyLoaded("a".into())));
        assert_eq!(r.id_of("a"), None, "not selectable while loading");
        r.cancel("a");
        let a2 = r.reserve("a").unwrap();
        assert_ne!(a, a2);
        r.publish(LoraInfo {
            id: a2,
            name: "a".into(),
            source: "s".into(),
            path: PathBuf::from("s"),
            rank: 4,
            created: 0,
        });
        assert_eq!(r.id_of("a"), Some(a2));
        assert_eq!(r.list().len(), 1);
        assert_eq!(r.remove("a"), Some(a2));
        assert_eq!(r.remove("a"), None);
        assert!(r.reserve("a").unwrap() > a2);
    }

    #[test]
    fn host_cache_keeps_pinned_adapters_and_evicts_lru_unused_ones() {
        let mut h = HostLoras::new(2);
        h.insert(LoraId(1), "a1".into(), PathBuf::from("1"), adapter());
        h.insert(LoraId(2), "a2".into(), PathBuf::from("2"), adapter());
        h.pin(LoraId(1), 1);
        // Third adapter: 2 is unused, so it loses its host copy.
        h.insert(LoraId(3), "a3".into(), PathBuf::from("3"), adapter());
        assert!(h.get(LoraId(1)).unwrap().host.is_some());
        assert!(h.get(LoraId(2)).unwrap().host.is_none());
        assert!(h.get(LoraId(3)).unwrap().host.is_some());
        // 2 is requested again while 1 and 3 are both pinned: the load waits in the queue.
        h.pin(LoraId(3), 1);
        assert_eq!(h.request_load(LoraId(2)), None);
        assert!(h.pump().is_empty());
        // 3 finishes: the queued load of 2 starts, evicting 3.
        assert!(!h.unpin(LoraId(3)));
        assert_eq!(h.pump(), vec![(LoraId(2), PathBuf::from("2"))]);
        assert!(h.get(LoraId(2)).unwrap().loading);
        h.loaded(LoraId(2), Some(adapter()));
        assert!(h.get(LoraId(3)).unwrap().host.is_none());
        assert_eq!(h.num_resident(), 2);
    }

    #[test]
    fn unloaded_adapters_live_until_their_last_user_finishes() {
        let mut h = HostLoras::new(1);
        h.insert(LoraId(1), "a1".into(), PathBuf::from("1"), adapter());
        h.pin(LoraId(1), 2);
        assert!(!h.remove(LoraId(1)));
        assert!(!h.is_live(LoraId(1)));
        assert!(!h.unpin(LoraId(1)));
        assert!(h.unpin(LoraId(1)));
        assert!(h.get(LoraId(1)).is_none());
        h.insert(LoraId(2), "a2".into(), PathBuf::from("2"), adapter());
        assert!(h.remove(LoraId(2)), "unused: dropped at once");
    }

    #[test]
    fn config_needs_host_room_for_every_slot() {
        let c = LoraConfig {
            max_loras: 4,
            max_lora_rank: 16,
            max_cpu_loras: 2,
        };
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .contains("--max-cpu-loras"));
    }
}
