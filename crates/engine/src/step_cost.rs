//! A running estimate of what a step costs, for sizing steps from a latency target
//! (`--target-itl-ms`): while some request decodes, each step's tokens are capped so the
//! step should finish within the target, and decoding streams do not stall behind prefill.
//!
//! The model is `seconds = fixed + per_token * tokens`. Steps of at least
//! [`LARGE_STEP_TOKENS`] tokens update `per_token` (their cost is dominated by the tokens);
//! smaller steps (decodes) update `fixed` (weight streaming, launch overheads, sampling).
//! Both are exponential moving averages, so the estimate follows the machine, the model and
//! the context lengths as they change.
//!
//! Steps of the same size do not all cost the same (other threads, the tokenizer and the HTTP
//! layer share the cores; a burst of new sequences; a noisy neighbour on a VM). The caps are
//! therefore sized for a high quantile of the cost, not its mean: the `actual / predicted`
//! ratio of each step the cap sizes (one holding prompt tokens) is kept over a window, and the cap leaves room for its
//! [`COST_QUANTILE`] quantile, so about that share of capped steps finish within the target
//! whatever the machine's noise (a quiet machine keeps ratios near 1 and loses nothing). Slow
//! steps come in runs (a busy neighbour, a burst of work on the other threads): the headroom is
//! also at least the last sized step's ratio, so the step after an overrun is sized for it.

use std::collections::VecDeque;
use std::time::Duration;

/// Steps with at least this many tokens measure the per-token cost.
pub(crate) const LARGE_STEP_TOKENS: usize = 64;
/// Weight of a new observation in the moving averages.
const ALPHA: f64 = 0.25;
/// Share of capped steps meant to finish within the target. 0.95 rather than 0.9: on a
/// noisy 2-core VM (recent ratios with a standard deviation of ~0.11, their 99th percentile
/// ~1.35x the median) sizing for the 90th percentile put the 99th percentile of steps, and so
/// of inter-token latency, at 1.15-1.25x the target (288-309 ms at 250, 32 streams); the
/// 95th keeps it nearer 1.1x for steps ~5% smaller.
pub(crate) const COST_QUANTILE: f64 = 0.95;
/// Sized steps whose cost ratios are kept.
const RATIO_WINDOW: usize = 64;
/// Ratios needed before the quantile is used.
const MIN_RATIOS: usize = 10;
/// The headroom never exceeds this factor (a machine that stalls now and then should not
/// shrink every step to nothing).
const MAX_HEADROOM: f64 = 1.5;

#[derive(Debug, Clone, Default)]
pub(crate) struct StepCostModel {
    per_token: Option<f64>,
    fixed: Option<f64>,
    /// `actual / predicted` seconds of recent large steps, oldest first.
    ratios: VecDeque<f64>,
}

fn ema(old: Option<f64>, new: f64) -> f64 {
    match old {
        Some(o) => o + ALPHA * (new - o),
        None => new,
    }
}

impl StepCostModel {
    /// Records a step of `tokens` tokens that took `elapsed`; `sized`: the step held prompt
    /// tokens, so its size was set by the token cap (its cost ratio feeds the headroom).
    pub(crate) fn observe(&mut self, tokens: usize, elapsed: Duration, sized: bool) {
        if tokens == 0 {
            return;
        }
        let secs = elapsed.as_secs_f64();
        if let (true, Some(per)) = (sized, self.per_token) {
            let predicted = self.fixed.unwrap_or(0.0) + per * tokens as f64;
            if predicted > 0.0 {
                if self.ratios.len() == RATIO_WINDOW {
                    self.ratios.pop_front();
                }
                self.ratios.push_back(secs / predicted);
            }
        }
        if tokens >= LARGE_STEP_TOKENS {
            let fixed = self.fixed.unwrap_or(0.0).min(secs);
            let per = ((secs - fixed) / tokens as f64).max(1e-9);
            self.per_token = Some(ema(self.per_token, per));
        } else {
            let per = self.per_token.unwrap_or(0.0);
            let fixed = (secs - per * tokens as f64).max(0.0);
            self.fixed = Some(ema(self.fixed, fixed));
        }
    }

    /// Most tokens a step should hold to finish within `target`, at most `max`; `None` until a
    /// large step has been measured (no cap yet).
    pub(crate) fn token_cap(&self, target: Duration, max: usize) -> Option<usize> {
        let per = self.per_token?;
        let room = target.as_secs_f64() / self.headroom() - self.fixed.unwrap_or(0.0);
        if room <= 0.0 {
            return Some(0);
        }
        let n = room / per;
        Some(if n >= max as f64 { max } else { n as usize })
    }

    /// The factor the predicted cost is scaled by when sizing a step: the [`COST_QUANTILE`]
    /// quantile of recent `actual / predicted` ratios (once enough sized steps were seen) or
    /// the last one, whichever is larger, between 1 and [`MAX_HEADROOM`].
    pub(crate) fn headroom(&self) -> f64 {
        let last = self.ratios.back().copied().unwrap_or(1.0);
        let quantile = if self.ratios.len() < MIN_RATIOS {
            1.0
        } else {
            let mut r: Vec<f64> = self.ratios.iter().copied().collect();
            r.sort_by(f64::total_cmp);
            r[((r.len() as f64 * COST_QUANTILE).ceil() as usize).clamp(1, r.len()) - 1]
        };
        quantile.max(last).clamp(1.0, MAX_HEADROOM)
    }

    /// `(fixed seconds, seconds per token)` as estimated so far.
    #[cfg(test)]
    pub(crate) fn estimate(&self) -> (Option<f64>, Option<f64>) {
        (self.fixed, self.per_token)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn ms(x: f64) -> Duration {
        Duration::from_secs_f64(x / 1000.0)
    }

    /// On a machine where a step costs 30 ms + 2 ms per token, the cap for a 250 ms target
    /// converges to 110 tokens; before any large step there is no cap.
    #[test]
    fn converges_to_the_step_cost_line() {
        let mut m = StepCostModel::default();
        assert_eq!(m.token_cap(ms(250.0), 2048), None);
        let cost = |t: usize| ms(30.0 + 2.0 * t as f64);
        for round in 0..40 {
            m.observe(256, cost(256), true);
            m.observe(1 + round % 8, cost(1 + round % 8), false);
            m.observe(100, cost(100), true);
        }
        let (fixed, per) = m.estimate();
        assert!((fixed.unwrap() - 0.030).abs() < 0.002, "{fixed:?}");
        assert!((per.unwrap() - 0.002).abs() < 0.0002, "{per:?}");
        let cap = m.token_cap(ms(250.0), 2048).unwrap();
        assert!((105..=115).contains(&cap), "{cap}");
        // The budget bounds the cap; a target below the fixed cost gives 0 (the scheduler
        // then runs the decodes plus its minimum prefill chunk).
        assert_eq!(m.token_cap(ms(100_000.0), 2048), Some(2048));
        assert_eq!(m.token_cap(ms(10.0), 2048), Some(0));
    }

    /// One step in five costs 30% more than the line (noise): the caps leave room for it, so
    /// at least 90% of the steps at the cap finish within the target, not half of them; the
    /// headroom is bounded.
    #[test]
    fn caps_leave_room_for_noisy_steps() {
        let mut m = StepCostModel::default();
        let base = |t: usize| 30.0 + 2.0 * t as f64;
        let noisy = |t: usize, i: usize| ms(base(t) * if i % 5 == 4 { 1.3 } else { 1.0 });
        // 201 rounds: the last step is an ordinary one.
        for i in 0..201 {
            let cap = m.token_cap(ms(250.0), 2048).unwrap_or(256).max(64);
            m.observe(cap, noisy(cap, i), true);
            m.observe(8, noisy(8, i), false);
        }
        let cap = m.token_cap(ms(250.0), 2048).unwrap();
        let within = (0..100).filter(|&i| noisy(cap, i) <= ms(250.0)).count();
        assert!(within >= 90, "cap {cap}: {within}/100 within the target");
        // Not needlessly small either: the 1.3x steps are the ones that set it.
        assert!(base(cap + 8) * 1.3 > 250.0 * 0.9, "cap {cap}");
        assert!(m.headroom() <= MAX_HEADROOM);
        let mut slow = StepCostModel::default();
        for i in 0..100 {
            slow.observe(100, ms(if i % 2 == 0 { 100.0 } else { 1000.0 }), true);
        }
        assert_eq!(slow.headroom(), MAX_HEADROOM);
    }

    /// A run of slow steps: the step after the first overrun is already sized for it (the
    /// moving averages alone would take several steps), and the caps come back afterwards.
    #[test]
    fn the_step_after_an_overrun_is_smaller() {
        let mut m = StepCostModel::default();
        let cost = |t: usize, slow: f64| ms((30.0 + 2.0 * t as f64) * slow);
        for _ in 0..40 {
            let cap = m.token_cap(ms(250.0), 2048).unwrap_or(256);
            m.observe(cap, cost(cap, 1.0), true);
        }
        let before = m.token_cap(ms(250.0), 2048).unwrap();
        m.observe(before, cost(before, 1.5), true);
        let after = m.token_cap(ms(250.0), 2048).unwrap();
        // The next step at 1.5x costs at most ~5% over the target.
        assert!(cost(after, 1.5) <= ms(262.5), "{before} -> {after}");
        for _ in 0..80 {
            let cap = m.token_cap(ms(250.0), 2048).unwrap();
            m.observe(cap, cost(cap, 1.0), true);
        }
        assert!(m.token_cap(ms(250.0), 2048).unwrap() + 2 >= before);
    }

    /// The estimate follows a machine that slows down (e.g. longer contexts).
    #[test]
    fn follows_a_change_in_cost() {
        let mut m = StepCostModel::default();
        for _ in 0..30 {
            m.observe(200, ms(30.0 + 200.0), true);
            m.observe(4, ms(30.0 + 4.0), false);
        }
        let before = m.token_cap(ms(250.0), 2048).unwrap();
        for _ in 0..30 {
            m.observe(200, ms(30.0 + 600.0), true);
            m.observe(4, ms(30.0 + 12.0), false);
        }
        let after = m.token_cap(ms(250.0), 2048).unwrap();
        assert!(before > 200 && after < 90, "{before} -> {after}");
    }
}
