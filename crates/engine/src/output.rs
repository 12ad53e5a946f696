//! Per-sequence output processing on the engine thread: each sampled token is checked
//! against EOS, stop token ids and stop strings, detokenized (UTF-8 safe, stop strings never
//! leaked) and sent as a [`RequestEvent::Delta`]; prompt logprobs are collected from the
//! runner's all-logits rows; [`EngineCore::finish`] releases held-back text, frees the
//! sequence's blocks exactly once and sends `Finished` with usage and timings.

use crate::core::EngineCore;
use crate::error::EngineError;
use crate::params::{
    FinishReason, RequestEvent, RequestTiming, StopReason, TokenDelta, TokenLogprob, Usage,
};
use crate::stats::{ITL_SECONDS_BUCKETS, TTFT_SECONDS_BUCKETS};
use crate::structured::Progress;
use lantern_runtime::{sampler, SampledToken};
use lantern_scheduler::SeqId;
use std::time::Instant;

impl EngineCore {
    /// Records the prompt logprobs that a chunk's all-logits `rows` give (row `j` predicts
    /// the prompt token at `num_computed + j + 1`).
    pub(crate) fn record_prompt_logprobs(
        &mut self,
        id: SeqId,
        num_computed: usize,
        rows: &[Vec<f32>],
    ) {
        let Some(s) = self.reqs.get_mut(id) else {
            return;
        };
        let top = s.params.prompt_logprobs.unwrap_or(0);
        let Some(lps) = s.prompt_lps.as_mut() else {
            return;
        };
        for (j, r) in rows.iter().enumerate() {
            let target = num_computed + j + 1;
            if target < s.prompt.len() && target == lps.len() {
                let tok = s.prompt[target];
                let (lp, topv) = sampler::token_logprob(r, tok, top);
                lps.push(Some(TokenLogprob {
                    token_id: tok,
                    logprob: lp,
                    top: topv,
                }));
            }
        }
    }

    /// Handles one sampled token of sequence `id`.
    pub(crate) fn on_token(&mut self, id: SeqId, tok: SampledToken, at_max: bool, now: Instant) {
        let eos_ids = &self.info.eos_token_ids;
        let Some(s) = self.reqs.get_mut(id) else {
            return;
        };
        if !s.prompt_lps_sent {
            if let Some(lps) = s.prompt_lps.take() {
                let _ = s.events.send(RequestEvent::PromptLogprobs(lps));
            }
            s.prompt_lps_sent = true;
        }
        s.num_output += 1;
        self.snapshot.generation_tokens_total += 1;
        match s.last_token {
            None => {
                let ttft = now.saturating_duration_since(s.arrival).as_secs_f64();
                self.snapshot
                    .time_to_first_token
                    .observe(&TTFT_SECONDS_BUCKETS, ttft);
                self.snapshot.prefilled_prompt_tokens += s.prompt.len() as u64;
                self.snapshot.prefilled_cached_tokens += s.num_cached as u64;
            }
            Some(last) => {
                let itl = now.saturating_duration_since(last).as_secs_f64();
                self.snapshot
                    .inter_token_latency
                    .observe(&ITL_SECONDS_BUCKETS, itl);
            }
        }
        if s.first_token.is_none() {
            s.first_token = Some(now);
        }
        s.last_token = Some(now);
        let logprobs = if s.params.logprobs.is_some() {
            vec![TokenLogprob {
                token_id: tok.token,
                logprob: tok.logprob,
                top: tok.top_logprobs,
            }]
        } else {
            Vec::new()
        };
        // Structured outputs: advance the grammar; a complete grammar ends the sequence.
        let mut grammar_done = false;
        if let Some(c) = s.constraint.as_mut() {
            match c.consume(tok.token, eos_ids.contains(&tok.token)) {
                Ok(p) => grammar_done = p == Progress::Done,
                Err(e) => {
                    tracing::warn!(seq = id.0, error = %e, "structured-output matcher failed");
                    self.fail_seq(id, EngineError::Constraint);
                    return;
                }
            }
        }
        let past_min = s.num_output > s.params.min_tokens;
        let mut stop_reason = None;
        if past_min && !s.params.ignore_eos && eos_ids.contains(&tok.token) {
            stop_reason = Some(StopReason::Eos(tok.token));
        } else if past_min && s.params.stop_token_ids.contains(&tok.token) {
            stop_reason = Some(StopReason::StopToken(tok.token));
        }
        let mut text = String::new();
        if stop_reason.is_none() {
            match s.detok.push(tok.token) {
                Ok(delta) => {
                    let step = s.stop.push(&delta);
                    text = step.text;
                    if let Some(i) = step.stopped {
                        stop_reason = Some(StopReason::StopString(
                            s.params.stop.get(i).cloned().unwrap_or_default(),
                        ));
                    }
                }
                Err(e) => {
                    tracing::error!(error = %e, "detokenization failed");
                    self.fail_seq(id, EngineError::Execution);
                    return;
                }
            }
        }
        let _ = s.events.send(RequestEvent::Delta(TokenDelta {
            index: s.index,
            text,
            token_ids: vec![tok.token],
            logprobs,
            time: now,
        }));
        if let Some(r) = stop_reason {
            self.finish(id, FinishReason::Stop, Some(r));
        } else if grammar_done {
            self.finish(id, FinishReason::Stop, None);
        } else if at_max {
            self.finish(id, FinishReason::Length, None);
        }
    }

    /// Ends a sequence: frees its blocks, releases held-back text, sends `Finished`.
    pub(crate) fn finish(
        &mut self,
        id: SeqId,
        reason: FinishReason,
        stop_reason: Option<StopReason>,
    ) {
        self.sched.finish_request(id, reason);
        let Some(mut s) = self.reqs.remove_seq(id) else {
            return;
        };
        let mut text = String::new();
        if !matches!(stop_reason, Some(StopReason::StopString(_))) && reason != FinishReason::Abort
        {
            match s.detok.flush() {
                Ok(t) => {
                    let step = s.stop.push(&t);
                    text.push_str(&step.text);
                }
                Err(e) => tracing::warn!(error = %e, "detokenizer flush failed"),
            }
            text.push_str(&s.stop.finish());
        }
        match reason {
            FinishReason::Stop => self.snapshot.finished_stop += 1,
            FinishReason::Length => self.snapshot.finished_length += 1,
            FinishReason::Abort => self.snapshot.finished_abort += 1,
        }
        let timing = RequestTiming {
            arrival: s.arrival,
            first_scheduled: s.first_scheduled,
            first_token: s.first_token,
            last_token: s.last_token,
            finished: Instant::now(),
            num_preemptions: s.num_preemptions,
        };
        let _ = s.events.send(RequestEvent::Finished {
            index: s.index,
            reason,
            stop_reason,
            text,
            usage: Usage {
                prompt_tokens: s.prompt.len(),
                completion_tokens: s.num_output,
                cached_tokens: s.num_cached,
            },
            timing,
        });
        self.release_lora(s.lora_id);
    }
}
