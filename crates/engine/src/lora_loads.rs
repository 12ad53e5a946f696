//! The engine thread's side of the LoRA tiers (see [`crate::lora`]): background disk reads
//! of adapters that fell out of host memory, the requests waiting for them, pins while a
//! sequence uses an adapter, and the copies into device slots before a step.

use crate::core::EngineCore;
use crate::error::EngineError;
use crate::handle::{AdapterLoadError, Command};
use crate::requests::seq_id;
use lantern_models::LoraAdapter;
use lantern_scheduler::LoraId;
use lantern_scheduler::SchedulerOutput;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

impl EngineCore {
    /// Starts background disk reads for adapters whose load waited for host room.
    pub(crate) fn start_lora_loads(&mut self) {
        for (id, dir) in self.host_loras.pump() {
            self.spawn_lora_load(id, dir);
        }
    }

    pub(crate) fn spawn_lora_load(&mut self, id: LoraId, dir: PathBuf) {
        let tx = self.cmd_tx.clone();
        let cfg = self.model_config.clone();
        let max_rank = self.lora_cfg.map_or(0, |l| l.max_lora_rank);
        let spawned = std::thread::Builder::new()
            .name("lantern-lora-load".into())
            .spawn(move || {
                let t0 = Instant::now();
                let result = LoraAdapter::load(&dir, &cfg, max_rank)
                    .map(Arc::new)
                    .map_err(AdapterLoadError::Read);
                let _ = tx.send(Command::LoraLoaded {
                    id,
                    result,
                    seconds: t0.elapsed().as_secs_f64(),
                });
            });
        if let Err(e) = spawned {
            tracing::error!(error = %e, "cannot spawn an adapter loader thread");
            self.on_lora_loaded(id, Err(AdapterLoadError::Spawn(e)), 0.0);
        }
    }

    /// Puts the groups that waited for adapter `id` into the scheduler (or fails them).
    pub(crate) fn on_lora_loaded(
        &mut self,
        id: LoraId,
        result: Result<Arc<LoraAdapter>, AdapterLoadError>,
        seconds: f64,
    ) {
        let ok = result.is_ok();
        let pending = match self.host_loras.get_mut(id) {
            Some(e) => std::mem::take(&mut e.pending),
            None => Vec::new(),
        };
        match result {
            Ok(a) => {
                self.snapshot.lora_disk_loads += 1;
                self.snapshot.lora_disk_load_seconds += seconds;
                self.host_loras.loaded(id, Some(a));
            }
            Err(e) => {
                tracing::error!(adapter = id.0, error = %e, "reading a LoRA adapter from disk failed");
                self.host_loras.loaded(id, None);
            }
        }
        for group in pending {
            if !self.reqs.take_pending(group) {
                continue; // aborted meanwhile
            }
            if !ok {
                self.fail_group(group, EngineError::AdapterLoad);
                continue;
            }
            if let Err(e) = self.schedule_seq(seq_id(group, 0)) {
                tracing::warn!(error = %e, "cannot schedule a request after its adapter loaded");
                self.fail_group(group, EngineError::Execution);
            }
        }
        self.start_lora_loads();
    }

    /// A sequence's state is gone: release its hold on its adapter.
    pub(crate) fn release_lora(&mut self, lora_id: Option<LoraId>) {
        if let Some(lora_id) = lora_id {
            if self.host_loras.unpin(lora_id) {
                self.sched.evict_lora(lora_id);
            }
            self.start_lora_loads();
        }
    }

    /// Copies the adapters this step needs into their device slots. On failure the
    /// sequences using the failed slots are failed (and the step skipped: returns false).
    pub(crate) fn load_lora_slots(&mut self, out: &SchedulerOutput) -> bool {
        let mut failed: Vec<u32> = Vec::new();
        for ld in &out.lora_loads {
            let t0 = Instant::now();
            let r = match self.host_loras.get(ld.lora_id).and_then(|e| e.host.clone()) {
                Some(a) => self
                    .runner
                    .load_lora(ld.slot, &a)
                    .map_err(|e| e.to_string()),
                None => Err("its weights are not in host memory".to_string()),
            };
            match r {
                Ok(()) => {
                    self.snapshot.lora_slot_loads += 1;
                    self.snapshot.lora_slot_load_seconds += t0.elapsed().as_secs_f64();
                }
                Err(e) => {
                    tracing::error!(adapter = ld.lora_id.0, slot = ld.slot, error = %e, "cannot load a LoRA adapter into its device slot");
                    let _ = self.runner.clear_lora(ld.slot);
                    self.sched.evict_lora(ld.lora_id);
                    failed.push(ld.slot);
                }
            }
        }
        if failed.is_empty() {
            return true;
        }
        for q in &out.seqs {
            if q.lora_slot.is_some_and(|s| failed.contains(&s)) {
                self.fail_seq(q.id, EngineError::AdapterLoad);
            }
        }
        // The others were scheduled too: they run again next step from the same state
        // (nothing was computed), so undo nothing but skip this step.
        false
    }
}
