//! The per-choice accumulator shared by collected (one JSON body) and streamed (SSE)
//! responses: the bookkeeping of engine events that both paths need.

use crate::metrics::Metrics;
use crate::protocol::StopReasonValue;
use lantern_engine::{FinishReason, RequestEvent, RequestTiming, StopReason, TokenLogprob, Usage};
use std::collections::{BTreeMap, HashMap};
use std::time::Instant;

fn stop_reason_value(s: Option<StopReason>) -> Option<StopReasonValue> {
    match s {
        Some(StopReason::StopString(s)) => Some(StopReasonValue::Text(s)),
        Some(StopReason::StopToken(t)) => Some(StopReasonValue::Token(t)),
        Some(StopReason::Eos(_)) | None => None,
    }
}

/// One choice's output so far.
#[derive(Debug, Default, Clone)]
pub(super) struct ChoiceAcc {
    pub(super) text: String,
    /// Collected responses only: every token's logprobs, for the final body.
    pub(super) logprobs: Vec<TokenLogprob>,
    /// Streamed completions with logprobs only: characters of the token strings sent so
    /// far, so `text_offset` counts exactly as in the non-streaming response.
    pub(super) token_chars: usize,
    pub(super) finish: Option<FinishReason>,
    pub(super) stop_reason: Option<StopReasonValue>,
    last_time: Option<Instant>,
}

/// What one engine event added to a response. `choice` is the response's choice index
/// (`prompt * n + index`).
#[derive(Debug)]
pub(super) enum Added {
    Text {
        choice: usize,
        text: String,
        /// Empty in a collecting accumulator (it keeps them).
        logprobs: Vec<TokenLogprob>,
    },
    /// The choice finished; `text` is what the engine released at the end (may be empty).
    Finished {
        choice: usize,
        text: String,
        reason: FinishReason,
        stop_reason: Option<StopReasonValue>,
    },
    /// Prompt logprobs of prompt `prompt` (empty in a collecting accumulator).
    PromptLogprobs {
        prompt: usize,
        logprobs: Vec<Option<TokenLogprob>>,
    },
    /// The engine failed the request.
    Failed,
}

/// The per-choice accumulator of one request, shared by collected and streamed responses:
/// maps engine events to choices, accumulates text, finish and stop reasons, sums usage,
/// records latency metrics (and what vLLM records per finished request) and logs each
/// finished sequence. A collecting accumulator also
/// keeps the logprobs for the final body; a streaming one hands them on.
#[derive(Debug)]
pub(super) struct Accumulator {
    n: usize,
    /// Keep logprobs for one final body (collected responses).
    keep: bool,
    /// By choice index, in order.
    pub(super) choices: BTreeMap<usize, ChoiceAcc>,
    /// By prompt (collected responses with `echo` and `logprobs`).
    pub(super) prompt_logprobs: HashMap<usize, Vec<Option<TokenLogprob>>>,
    /// Summed over choices; prompt tokens once per prompt.
    pub(super) usage: Usage,
    /// Of the first choice that finished.
    pub(super) timing: Option<RequestTiming>,
    /// The engine failed the request.
    pub(super) error: bool,
    /// By prompt: its choices that ended so far, and the most tokens one of them generated.
    ended: HashMap<usize, (usize, usize)>,
}

impl Accumulator {
    pub(super) fn new(n: usize, keep: bool) -> Self {
        Self {
            n,
            keep,
            choices: BTreeMap::new(),
            prompt_logprobs: HashMap::new(),
            usage: Usage::default(),
            timing: None,
            error: false,
            ended: HashMap::new(),
        }
    }

    /// One more choice of prompt `p` ended (`generated` tokens); once all `n` did, the
    /// request is recorded as vLLM records a finished parent request.
    fn choice_ended(&mut self, p: usize, generated: usize, metrics: &Metrics) {
        let e = self.ended.entry(p).or_default();
        e.0 += 1;
        e.1 = e.1.max(generated);
        if e.0 == self.n {
            metrics.vllm.request_finished(self.n, e.1);
        }
    }

    /// The `(prompt, index)` of every choice of `prompts` prompts that has not finished:
    /// after the engine's events ended, those were cut off (the engine stopped without
    /// finishing them). Nothing when the engine reported an error.
    pub(super) fn unfinished(&self, prompts: usize) -> Vec<(usize, usize)> {
        if self.error {
            return Vec::new();
        }
        (0..prompts * self.n)
            .filter(|c| self.choices.get(c).is_none_or(|c| c.finish.is_none()))
            .map(|c| (c / self.n, c % self.n))
            .collect()
    }

    /// Records event `ev` of prompt `p`; returns what it added.
    pub(super) fn record(
        &mut self,
        p: usize,
        ev: RequestEvent,
        metrics: &Metrics,
        id: &str,
    ) -> Added {
        let n = self.n;
        match ev {
            RequestEvent::Delta(d) => {
                let choice = p * n + d.index;
                let c = self.choices.entry(choice).or_default();
                if let Some(prev) = c.last_time {
                    metrics
                        .itl
                        .observe(d.time.duration_since(prev).as_secs_f64());
                }
                c.last_time = Some(d.time);
                c.text.push_str(&d.text);
                let logprobs = if self.keep {
                    c.logprobs.extend(d.logprobs);
                    Vec::new()
                } else {
                    d.logprobs
                };
                Added::Text {
                    choice,
                    text: d.text,
                    logprobs,
                }
            }
            RequestEvent::Finished {
                index,
                reason,
                stop_reason,
                text,
                usage,
                timing,
            } => {
                let choice = p * n + index;
                let stop_reason = stop_reason_value(stop_reason);
                let c = self.choices.entry(choice).or_default();
                c.text.push_str(&text);
                c.finish = Some(reason);
                c.stop_reason = stop_reason.clone();
                // Prompt tokens and cache hits count once per prompt (the first choice of each).
                if index.is_multiple_of(n) {
                    self.usage.prompt_tokens += usage.prompt_tokens;
                    self.usage.cached_tokens += usage.cached_tokens;
                }
                self.usage.completion_tokens += usage.completion_tokens;
                observe_finish(metrics, &timing);
                metrics.vllm.finished(reason, &usage, &timing);
                log_finish(id, choice, &usage, &timing, reason);
                self.timing.get_or_insert(timing);
                self.choice_ended(p, usage.completion_tokens, metrics);
                Added::Finished {
                    choice,
                    text,
                    reason,
                    stop_reason,
                }
            }
            RequestEvent::PromptLogprobs(lps) => {
                let logprobs = if self.keep {
                    self.prompt_logprobs.insert(p, lps);
                    Vec::new()
                } else {
                    lps
                };
                Added::PromptLogprobs {
                    prompt: p,
                    logprobs,
                }
            }
            RequestEvent::Error(e) => {
                tracing::error!(error = %e, "request failed in the engine");
                metrics.vllm.failed();
                self.choice_ended(p, 0, metrics);
                self.error = true;
                Added::Failed
            }
        }
    }
}

fn observe_finish(m: &Metrics, t: &RequestTiming) {
    if let Some(ft) = t.first_token {
        m.ttft.observe(ft.duration_since(t.arrival).as_secs_f64());
    }
    m.e2e
        .observe(t.finished.duration_since(t.arrival).as_secs_f64());
    m.queue.observe(t.queue_s());
}

/// One structured log line per finished sequence, with its timings.
fn log_finish(id: &str, index: usize, usage: &Usage, timing: &RequestTiming, reason: FinishReason) {
    tracing::info!(
        id = %id,
        index,
        prompt_tokens = usage.prompt_tokens,
        completion_tokens = usage.completion_tokens,
        cached_tokens = usage.cached_tokens,
        queue_s = timing.queue_s(),
        prefill_s = timing.prefill_s(),
        decode_s = timing.decode_s(),
        finish_reason = reason.as_str(),
        "request finished"
    );
}

/// The event that ends choice `index` whose events stopped without an end: `abort`, as
/// the engine reports a request it cut off.
pub(super) fn cut_off(index: usize) -> RequestEvent {
    let now = std::time::Instant::now();
    RequestEvent::Finished {
        index,
        reason: FinishReason::Abort,
        stop_reason: None,
        text: String::new(),
        usage: Usage::default(),
        timing: RequestTiming {
            arrival: now,
            first_scheduled: None,
            first_token: None,
            last_token: None,
            finished: now,
            num_preemptions: 0,
        },
    }
}
