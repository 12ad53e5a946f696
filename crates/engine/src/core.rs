//! The engine thread: [`EngineCore::run`] drains commands between steps and
//! [`EngineCore::step`] runs one `schedule -> execute -> update`.
//!
//! Per-sequence output processing lives in `output`, `n > 1` siblings in `siblings`, the
//! host-side LoRA cache's background loads in `lora_loads`; every live request is in
//! [`Requests`].

use crate::config::ModelInfo;
use crate::detok::IncrementalDetokenizer;
use crate::error::{EngineError, SubmitError};
use crate::handle::Command;
use crate::kv_events::{external_hash, KvCacheBlocks, KvEvents};
use crate::lora::{HostLoras, LoraConfig};
use crate::params::RequestId;
use crate::params::{FinishReason, RequestEvent};
use crate::requests::{seq_id, Requests, SeqState};
use crate::stats::{EngineSnapshot, LoraRequests, StepStats};
use crate::stats::{ITERATION_TOKENS_BUCKETS, MASK_SECONDS_BUCKETS};
use crate::step_cost::StepCostModel;
use crate::stop::StopMatcher;
use crate::structured::{Constraint, Grammar};
use crate::validation::ValidParams;
use lantern_models::ModelConfig;
use lantern_runtime::{ModelRunner, SampleRow, SeqChunk};
use lantern_scheduler::{AddRequestError, SchedRequest, Scheduler, SchedulerOutput};
use lantern_scheduler::{BlockId, LoraId, RequestStatus, SeqId};
use std::collections::BTreeMap;
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokenizers::Tokenizer;
use tokio::sync::{mpsc as tmpsc, watch};

pub(crate) struct EngineCore {
    pub runner: ModelRunner,
    pub sched: Scheduler,
    pub cmd_rx: mpsc::Receiver<Command>,
    /// For background adapter loads to report back on.
    pub cmd_tx: mpsc::Sender<Command>,
    pub host_loras: HostLoras,
    pub lora_cfg: Option<LoraConfig>,
    pub model_config: ModelConfig,
    pub snap_tx: watch::Sender<EngineSnapshot>,
    pub snapshot: EngineSnapshot,
    pub reqs: Requests,
    pub tokenizer: Arc<Tokenizer>,
    pub info: Arc<ModelInfo>,
    pub base_seed: u64,
    pub shutting_down: bool,
    /// KV-cache event publishing (`None` when off).
    pub kv_events: Option<KvEvents>,
    /// `--target-itl-ms`: steps with decodes are sized to finish within it (`None` = the
    /// fixed `max_num_batched_tokens` budget only).
    pub target_itl: Option<Duration>,
    /// Measured step cost, for `target_itl`.
    pub step_cost: StepCostModel,
    /// `--idle-batch-window-ms`: coming out of idle, commands arriving within this long of
    /// each other are taken before the first step (see [`EngineCore::gather_burst`]).
    pub idle_batch_window: Duration,
}

impl EngineCore {
    pub fn run(mut self) {
        // Steps ran since the heap was last trimmed: going idle then hands the freed
        // activation buffers back to the OS (see `lantern_runtime::heap`).
        let mut stepped = false;
        loop {
            // Deferred siblings of a group still waiting for its adapter cannot move either.
            let idle = !self.sched.has_unfinished() && self.reqs.deferred_all_pending();
            if idle {
                if self.shutting_down {
                    break;
                }
                if std::mem::take(&mut stepped) {
                    lantern_runtime::heap::release_free_heap();
                }
                match self.cmd_rx.recv() {
                    Ok(c) => {
                        let adds = matches!(c, Command::Add { .. });
                        self.handle_command(c);
                        if adds {
                            self.gather_burst();
                        }
                    }
                    Err(_) => break,
                }
            }
            loop {
                match self.cmd_rx.try_recv() {
                    Ok(c) => self.handle_command(c),
                    Err(mpsc::TryRecvError::Empty) => break,
                    Err(mpsc::TryRecvError::Disconnected) => {
                        self.shutting_down = true;
                        break;
                    }
                }
            }
            // Commands may have changed the prefix cache (a reset): publish that now.
            self.flush_kv_events();
            if self.shutting_down {
                self.abort_all();
                break;
            }
            self.reap_cancelled();
            if !self.sched.has_unfinished() {
                // Idle: publish what the commands changed (aborts free blocks too).
                self.refresh_snapshot();
                let _ = self.snap_tx.send(self.snapshot.clone());
                continue;
            }
            stepped = true;
            if !self.step() {
                // Nothing could be scheduled; wait briefly for commands instead of spinning.
                if let Ok(c) = self.cmd_rx.recv_timeout(Duration::from_millis(5)) {
                    self.handle_command(c);
                }
            }
        }
        tracing::info!("engine thread stopped");
    }

    /// The first request after idle: take the commands that arrive within
    /// `idle_batch_window` of the previous one (at most eight windows in all) before the
    /// first step. A burst of requests (clients that finished together and send again) then
    /// starts in one prefill step, with no stream decoding yet, instead of the first prompt
    /// alone and the others chunked next to its decodes under `--target-itl-ms`.
    fn gather_burst(&mut self) {
        let window = self.idle_batch_window;
        if window.is_zero() {
            return;
        }
        let start = Instant::now();
        let deadline = start + window * 8;
        let mut quiet_at = start + window;
        loop {
            let now = Instant::now();
            let until = quiet_at.min(deadline);
            if now >= until {
                break;
            }
            match self.cmd_rx.recv_timeout(until - now) {
                Ok(c) => {
                    self.handle_command(c);
                    quiet_at = Instant::now() + window;
                }
                Err(mpsc::RecvTimeoutError::Timeout) => break,
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    self.shutting_down = true;
                    break;
                }
            }
        }
        tracing::debug!(
            waited_ms = start.elapsed().as_secs_f64() * 1e3,
            waiting = self.sched.num_waiting(),
            "gathered a burst of requests"
        );
    }

    fn handle_command(&mut self, c: Command) {
        match c {
            Command::Add {
                group,
                prompt,
                params,
                grammar,
                events,
                reply,
                arrival,
            } => {
                let r = self.add(group, prompt, *params, grammar, events, arrival);
                let _ = reply.send(r);
            }
            Command::Abort(group) => self.abort_group(group),
            Command::Snapshot(reply) => {
                self.refresh_snapshot();
                let _ = reply.send(self.snapshot.clone());
            }
            Command::KvCacheBlocks(reply) => {
                self.flush_kv_events();
                let _ = reply.send(self.kv_cache_blocks());
            }
            Command::ResetPrefixCache(reply) => {
                let done = self.sched.reset_prefix_cache();
                if done {
                    tracing::info!("prefix cache reset");
                } else {
                    tracing::warn!("prefix cache not reset: some requests still hold blocks");
                }
                self.flush_kv_events();
                let _ = reply.send(done);
            }
            Command::Shutdown => self.shutting_down = true,
            Command::AddLora {
                id,
                name,
                dir,
                adapter,
                seconds,
                reply,
            } => {
                if let Some(k) = &mut self.kv_events {
                    k.add_lora_name(id, name.clone());
                }
                self.host_loras.insert(id, name, dir, adapter);
                self.snapshot.lora_disk_loads += 1;
                self.snapshot.lora_disk_load_seconds += seconds;
                let _ = reply.send(());
            }
            Command::RemoveLora(id) => {
                if self.host_loras.remove(id) {
                    self.sched.evict_lora(id);
                }
                self.start_lora_loads();
            }
            Command::LoraLoaded {
                id,
                result,
                seconds,
            } => self.on_lora_loaded(id, result, seconds),
        }
    }

    /// Puts a scheduler request into the scheduler, mapping its refusal to a submit error.
    pub fn schedule_request(&mut self, req: SchedRequest) -> Result<(), SubmitError> {
        // Clients get the reason without the engine's internal request id.
        self.sched.add_request(req).map_err(|e| match e {
            AddRequestError::QueueFull { .. } => SubmitError::Overloaded(e.reason()),
            AddRequestError::TooLong { .. } | AddRequestError::ExceedsKvCache { .. } => {
                SubmitError::TooLong(e.reason())
            }
            other => SubmitError::InvalidParam {
                field: "prompt".into(),
                message: other.reason(),
            },
        })
    }

    /// Puts a known sequence into the scheduler.
    pub fn schedule_seq(&mut self, id: SeqId) -> Result<(), SubmitError> {
        let req = self
            .reqs
            .get(id)
            .map(|s| s.sched_request(id))
            .ok_or(SubmitError::EngineStopped)?;
        self.schedule_request(req)
    }

    fn add(
        &mut self,
        group: RequestId,
        prompt: Vec<u32>,
        params: ValidParams,
        grammar: Option<Box<Grammar>>,
        events: tmpsc::UnboundedSender<RequestEvent>,
        arrival: Instant,
    ) -> Result<(), SubmitError> {
        let params = params.into_inner();
        if self.shutting_down {
            return Err(SubmitError::EngineStopped);
        }
        let n = params.n;
        // Every sequence of the request must fit: held-back siblings of earlier requests
        // count as waiting (they enter the scheduler later, never to be refused then).
        // Requests the next step can start in a free running slot do not count.
        let waiting = self.sched.num_queued() + self.reqs.num_held();
        let max_waiting = self.sched.config().max_waiting_requests;
        if waiting.saturating_add(n) > max_waiting {
            return Err(SubmitError::Overloaded(format!(
                "{waiting} requests are waiting (limit {max_waiting}); retry later"
            )));
        }
        let lora_id = params.lora_id;
        if lora_id.is_some_and(|l| !self.host_loras.is_live(l)) {
            return Err(SubmitError::UnknownAdapter);
        }
        let max_tokens = params
            .max_tokens
            .unwrap_or_else(|| self.info.max_model_len.saturating_sub(prompt.len()));
        let prompt = Arc::new(prompt);
        let params = Arc::new(params);
        let group_seed = params
            .seed
            .unwrap_or_else(|| self.base_seed ^ group.0.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let mut seqs = Vec::with_capacity(n);
        for index in 0..n {
            let detok = IncrementalDetokenizer::new(
                self.tokenizer.clone(),
                &prompt,
                params.skip_special_tokens,
            )
            .map_err(|e| {
                tracing::error!(error = %e, "cannot start detokenizer");
                SubmitError::InvalidParam {
                    field: "prompt".into(),
                    message: "the prompt cannot be decoded by the tokenizer".into(),
                }
            })?;
            let state = SeqState {
                group,
                index,
                lora_id,
                prompt: prompt.clone(),
                params: params.clone(),
                seed: group_seed.wrapping_add(index as u64),
                max_tokens,
                detok,
                stop: StopMatcher::new(&params.stop, params.include_stop_str_in_output),
                events: events.clone(),
                arrival,
                first_scheduled: None,
                first_token: None,
                last_token: None,
                num_preemptions: 0,
                num_output: 0,
                num_cached: 0,
                prompt_lps: (index == 0 && params.prompt_logprobs.is_some()).then(|| vec![None]),
                prompt_lps_sent: false,
                constraint: grammar.as_deref().map(|g| {
                    g.constraint(params.structured.as_ref().and_then(|r| r.after.as_deref()))
                }),
            };
            seqs.push((seq_id(group, index), state));
        }
        // The adapter's weights must be in host memory before the scheduler may pick the
        // request (it copies them into a device slot right before the step).
        let adapter_ready =
            lora_id.is_none_or(|l| self.host_loras.get(l).is_some_and(|e| e.host.is_some()));
        if adapter_ready {
            if let Some((leader, state)) = seqs.first() {
                self.schedule_request(state.sched_request(*leader))?;
            }
        }
        self.reqs.insert_group(group, seqs, !adapter_ready);
        if let Some(lora_id) = lora_id {
            self.host_loras.pin(lora_id, n);
            if !adapter_ready {
                if let Some(e) = self.host_loras.get_mut(lora_id) {
                    e.pending.push(group);
                }
                if let Some(dir) = self.host_loras.request_load(lora_id) {
                    self.spawn_lora_load(lora_id, dir);
                }
            }
        }
        Ok(())
    }

    fn reap_cancelled(&mut self) {
        for g in self.reqs.closed_groups() {
            self.abort_group(g);
        }
    }

    pub fn abort_group(&mut self, group: RequestId) {
        self.reqs.drop_deferred(group);
        for id in self.reqs.group_seqs(group) {
            self.finish(id, FinishReason::Abort, None);
        }
    }

    fn abort_all(&mut self) {
        for g in self.reqs.group_ids() {
            self.abort_group(g);
        }
    }

    /// Ends a sequence with an error event (its blocks are freed).
    pub fn fail_seq(&mut self, id: SeqId, err: EngineError) {
        self.sched.finish_request(id, FinishReason::Abort);
        if let Some(s) = self.reqs.remove_seq(id) {
            let _ = s.events.send(RequestEvent::Error(err));
            self.snapshot.finished_error += 1;
            self.release_lora(s.lora_id);
        }
    }

    pub fn fail_group(&mut self, group: RequestId, err: EngineError) {
        self.reqs.drop_deferred(group);
        for id in self.reqs.group_seqs(group) {
            self.fail_seq(id, err.clone());
        }
    }

    /// A step failed after scheduling: every sequence of the batch ends with an error; the
    /// cause is logged, not sent to clients. Returns true (a step was attempted).
    fn fail_batch(
        &mut self,
        out: &SchedulerOutput,
        what: &str,
        cause: &dyn std::fmt::Display,
    ) -> bool {
        tracing::error!(error = %cause, "{what} failed; failing the batch");
        for seq in &out.seqs {
            self.fail_seq(seq.id, EngineError::Execution);
        }
        true
    }

    /// One `schedule -> execute -> update` step. Returns false when nothing was scheduled.
    fn step(&mut self) -> bool {
        let t0 = Instant::now();
        let mut token_cap = None;
        if let Some(target) = self.target_itl {
            let max = self.sched.config().max_num_batched_tokens;
            token_cap = self.step_cost.token_cap(target, max);
            self.sched.set_step_token_cap(token_cap);
        }
        let out = self.sched.schedule();
        if out.is_empty() {
            return false;
        }
        if !self.load_lora_slots(&out) {
            return true;
        }
        let t_sched = Instant::now();
        for id in &out.preempted {
            if let Some(s) = self.reqs.get_mut(*id) {
                s.num_preemptions += 1;
            }
        }
        let mut prefill_tokens = 0;
        let mut decode_tokens = 0;
        for seq in &out.seqs {
            let Some(s) = self.reqs.get_mut(seq.id) else {
                decode_tokens += seq.token_ids.len();
                continue;
            };
            if s.first_scheduled.is_none() {
                s.first_scheduled = Some(t_sched);
                s.num_cached = seq.num_cached_tokens;
                self.snapshot.prompt_tokens_total += s.prompt.len() as u64;
            }
            if seq.num_computed_tokens >= s.prompt.len() {
                decode_tokens += seq.token_ids.len();
            } else {
                prefill_tokens += seq.token_ids.len();
            }
        }
        let chunks: Vec<SeqChunk> = out
            .seqs
            .iter()
            .map(|s| SeqChunk {
                token_ids: &s.token_ids,
                num_computed_tokens: s.num_computed_tokens,
                block_table: BlockId::raw_table(&s.block_table),
                sample: s.sample,
                all_logits: self.reqs.get(s.id).is_some_and(SeqState::wants_all_logits),
                lora_slot: s.lora_slot,
            })
            .collect();
        let sampled_seqs: Vec<SeqId> = out.seqs.iter().filter(|s| s.sample).map(|s| s.id).collect();
        let banned_lists: Vec<Vec<u32>> = sampled_seqs
            .iter()
            .map(|&id| self.banned_tokens(id))
            .collect();
        // Structured outputs: the allowed tokens of every constrained row are computed on a
        // helper thread while the model runs (the matchers are lent to it and put back).
        let mut lent: Vec<(usize, Constraint)> = sampled_seqs
            .iter()
            .enumerate()
            .filter_map(|(i, &id)| Some((i, self.reqs.get_mut(id)?.constraint.take()?)))
            .collect();
        let runner = &self.runner;
        let (fwd, computed) = if lent.is_empty() {
            (runner.forward_step(&chunks), Vec::new())
        } else {
            std::thread::scope(|scope| {
                let masks = scope.spawn(|| {
                    lent.iter_mut()
                        .map(|(i, c)| {
                            let t = Instant::now();
                            let r = c.allowed();
                            (*i, r, t.elapsed().as_secs_f64())
                        })
                        .collect::<Vec<_>>()
                });
                let fwd = runner.forward_step(&chunks);
                (fwd, masks.join().unwrap_or_default())
            })
        };
        let mut masks: Vec<Option<Vec<u32>>> = vec![None; sampled_seqs.len()];
        let mut mask_failed: Vec<SeqId> = Vec::new();
        // In `lent` order; empty if the helper thread panicked (then every row fails).
        let mut results = computed.into_iter();
        for (i, c) in lent {
            let id = sampled_seqs[i];
            match results.next().filter(|(j, _, _)| *j == i) {
                Some((_, Ok(words), secs)) => {
                    if words.is_some() {
                        self.snapshot
                            .structured_mask_seconds
                            .observe(&MASK_SECONDS_BUCKETS, secs);
                    }
                    masks[i] = words;
                }
                Some((_, Err(e), _)) => {
                    tracing::warn!(seq = id.0, error = %e, "structured-output mask failed");
                    mask_failed.push(id);
                }
                None => mask_failed.push(id),
            }
            if let Some(s) = self.reqs.get_mut(id) {
                s.constraint = Some(c);
            }
        }
        let fwd = match fwd {
            Ok(f) => f,
            Err(e) => return self.fail_batch(&out, "the forward pass", &e),
        };
        let empty: Vec<u32> = Vec::new();
        let default_params = lantern_runtime::SamplingParams::greedy();
        let rows: Vec<SampleRow> = sampled_seqs
            .iter()
            .zip(&banned_lists)
            .zip(&masks)
            .map(|((&id, banned), mask)| {
                let s = self.reqs.get(id);
                SampleRow {
                    params: s.map(|s| &s.params.sampling).unwrap_or(&default_params),
                    logit_bias: s.map(|s| s.params.logit_bias.as_slice()).unwrap_or(&[]),
                    logprobs: s.and_then(|s| s.params.logprobs),
                    allowed: mask.as_deref(),
                    seed: s.map(|s| s.seed).unwrap_or(0),
                    prompt_tokens: s.map(|s| s.prompt.as_slice()).unwrap_or(&empty),
                    output_tokens: self.sched.output_tokens(id).unwrap_or(&empty),
                    banned,
                }
            })
            .collect();
        let ran = match self.runner.sample_step(fwd, &rows) {
            Ok(r) => r,
            Err(e) => return self.fail_batch(&out, "sampling", &e),
        };
        let t_exec = t_sched + Duration::from_secs_f64(ran.forward_seconds);
        for (i, rows) in &ran.all_logits {
            if let Some(q) = out.seqs.get(*i) {
                self.record_prompt_logprobs(q.id, q.num_computed_tokens, rows);
            }
        }
        let t_sample = Instant::now();
        let pairs: Vec<(SeqId, u32)> = sampled_seqs
            .iter()
            .zip(&ran.sampled)
            .map(|(&id, t)| (id, t.token))
            .collect();
        let reached_max = match self.sched.update(&out, &pairs) {
            Ok(v) => v,
            Err(e) => return self.fail_batch(&out, "the scheduler update", &e),
        };
        let now = Instant::now();
        // vLLM's tokens of an iteration: the sampled ones, plus the computed prompt tokens
        // of the sequences whose prefill ended with this step.
        let mut iteration_tokens = 0;
        for (id, tok) in sampled_seqs.iter().zip(ran.sampled) {
            if mask_failed.contains(id) {
                self.fail_seq(*id, EngineError::Constraint);
                continue;
            }
            iteration_tokens += 1;
            if let Some(s) = self.reqs.get(*id).filter(|s| s.first_token.is_none()) {
                iteration_tokens += s.prompt.len().saturating_sub(s.num_cached);
            }
            let at_max = reached_max.contains(id);
            self.on_token(*id, tok, at_max, now);
        }
        if iteration_tokens > 0 {
            self.snapshot
                .iteration_tokens
                .observe(&ITERATION_TOKENS_BUCKETS, iteration_tokens as f64);
        }
        for id in reached_max {
            if self.reqs.contains(id) {
                self.finish(id, FinishReason::Length, None);
            }
        }
        self.release_deferred();
        self.flush_kv_events();
        let t_end = Instant::now();
        let secs = |a: Instant, b: Instant| b.saturating_duration_since(a).as_secs_f64();
        let duration_s = secs(t0, t_end);
        self.step_cost.observe(
            out.num_batched_tokens,
            t_end.saturating_duration_since(t0),
            prefill_tokens > 0,
        );
        tracing::debug!(
            tokens = out.num_batched_tokens,
            prefill_tokens,
            decode_tokens,
            token_cap,
            headroom = self.step_cost.headroom(),
            ms = duration_s * 1e3,
            "step"
        );
        self.snapshot.steps += 1;
        self.snapshot.step_seconds_total += duration_s;
        let ph = &mut self.snapshot.step_phases;
        ph.schedule += secs(t0, t_sched);
        ph.execute += secs(t_sched, t_exec);
        ph.sample += secs(t_exec, t_sample);
        ph.update += secs(t_sample, t_end);
        if let Some(d) = self.runner.simulated_device_seconds() {
            self.snapshot.simulated_device_seconds_total = d;
        }
        self.snapshot.last_step = StepStats {
            num_batched_tokens: out.num_batched_tokens,
            num_prefill_tokens: prefill_tokens,
            num_decode_tokens: decode_tokens,
            duration_s,
            ..StepStats::default()
        };
        self.refresh_snapshot();
        let _ = self.snap_tx.send(self.snapshot.clone());
        true
    }

    /// Tokens a sequence must not sample now: EOS (unless ignored) and its stop token ids
    /// while it is below `min_tokens`.
    fn banned_tokens(&self, id: SeqId) -> Vec<u32> {
        let mut banned = Vec::new();
        if let Some(s) = self.reqs.get(id) {
            if s.num_output < s.params.min_tokens {
                if !s.params.ignore_eos {
                    banned.extend_from_slice(&self.info.eos_token_ids);
                }
                banned.extend_from_slice(&s.params.stop_token_ids);
            }
        }
        banned
    }

    /// Hands the prefix-cache events recorded since the last call to the publisher, as one
    /// batch (a no-op without `--kv-events-config`).
    fn flush_kv_events(&mut self) {
        if let Some(k) = &mut self.kv_events {
            k.publish(self.sched.take_kv_events());
        }
    }

    fn kv_cache_blocks(&self) -> KvCacheBlocks {
        let mut block_hashes: Vec<u64> = self
            .sched
            .kv_cache_manager()
            .pool()
            .cached_hashes()
            .map(external_hash)
            .collect();
        block_hashes.sort_unstable();
        KvCacheBlocks {
            block_hashes,
            block_size: self.info.block_size,
            events_enabled: self.kv_events.is_some(),
            last_event_seq: self.kv_events.as_ref().and_then(KvEvents::last_seq),
            events_dropped: self.kv_events.as_ref().map_or(0, KvEvents::dropped),
        }
    }

    /// Copies the scheduler's current counters into the snapshot.
    pub fn refresh_snapshot(&mut self) {
        let st = self.sched.stats();
        self.snapshot.prefix_cache_queries_tokens = st.prefix_cache_queries;
        self.snapshot.prefix_cache_hits_tokens = st.prefix_cache_hits;
        self.snapshot.prefix_cache_resumed_queries_tokens = st.resumed_prefix_cache_queries;
        self.snapshot.prefix_cache_resumed_hits_tokens = st.resumed_prefix_cache_hits;
        self.snapshot.num_preemptions = st.num_preemptions;
        self.snapshot.last_step.num_running = st.num_running;
        self.snapshot.last_step.num_waiting = st.num_waiting;
        self.snapshot.last_step.num_held = self.reqs.num_held();
        self.snapshot.last_step.kv_blocks_used = st.num_blocks_used;
        self.snapshot.last_step.kv_blocks_free = st.num_blocks_free;
        self.snapshot.loras_in_host_memory = self.host_loras.num_resident();
        self.snapshot.kv_events_dropped = self.kv_events.as_ref().map_or(0, KvEvents::dropped);
        if self.lora_cfg.is_some() {
            self.snapshot.lora_requests = self.lora_requests();
            self.snapshot.lora_requests_unix = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64());
        }
    }

    /// Per adapter with a live sequence: its waiting and running sequences, by name.
    fn lora_requests(&self) -> Vec<LoraRequests> {
        let mut by_id: BTreeMap<LoraId, (usize, usize)> = BTreeMap::new();
        for (id, s) in self.reqs.iter() {
            let Some(lora_id) = s.lora_id else { continue };
            let e = by_id.entry(lora_id).or_default();
            if self.sched.request_status(id) == Some(RequestStatus::Running) {
                e.1 += 1;
            } else {
                e.0 += 1;
            }
        }
        let mut out: Vec<LoraRequests> = by_id
            .into_iter()
            .map(|(id, (waiting, running))| LoraRequests {
                name: self
                    .host_loras
                    .get(id)
                    .map_or_else(|| format!("lora-{}", id.0), |e| e.name.clone()),
                waiting,
                running,
            })
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }
}
