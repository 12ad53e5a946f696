//! A running estimate of what a step costs, for sizing steps from a latency target
//! (`--target-itl-ms`): while some request decodes, each step's tokens are capped so the
//! step should finish within the target, and decoding streams do not stall behind prefill.
//!
//! The model is `seconds = fixed + per_token * tokens`. Steps of at least
//! [`LARGE_STEP_TOKENS`] tokens update `per_token` (their cost is dominated by the tokens);
//! smaller steps (decodes) update `fixed` (weight streaming, launch overheads, sampling).
//! Both are exponential moving averages, so the estimate follows the machine, the model and
//! the context lengths as they change.

use std::time::Duration;

/// Steps with at least this many tokens measure the per-token cost.
pub(crate) const LARGE_STEP_TOKENS: usize = 64;
/// Weight of a new observation in the moving averages.
const ALPHA: f64 = 0.25;

#[derive(Debug, Clone, Default)]
pub(crate) struct StepCostModel {
    per_token: Option<f64>,
    fixed: Option<f64>,
}

fn ema(old: Option<f64>, new: f64) -> f64 {
    match old {
        Some(o) => o + ALPHA * (new - o),
        None => new,
    }
}

impl StepCostModel {
    /// Records a step of `tokens` tokens that took `elapsed`.
    pub(crate) fn observe(&mut self, tokens: usize, elapsed: Duration) {
        if tokens == 0 {
            return;
        }
        let secs = elapsed.as_secs_f64();
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
        let room = target.as_secs_f64() - self.fixed.unwrap_or(0.0);
        if room <= 0.0 {
            return Some(0);
        }
        let n = room / per;
        Some(if n >= max as f64 { max } else { n as usize })
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
            m.observe(256, cost(256));
            m.observe(1 + round % 8, cost(1 + round % 8));
            m.observe(100, cost(100));
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

    /// The estimate follows a machine that slows down (e.g. longer contexts).
    #[test]
    fn follows_a_change_in_cost() {
        let mut m = StepCostModel::default();
        for _ in 0..30 {
            m.observe(200, ms(30.0 + 200.0));
            m.observe(4, ms(30.0 + 4.0));
        }
        let before = m.token_cap(ms(250.0), 2048).unwrap();
        for _ in 0..30 {
            m.observe(200, ms(30.0 + 600.0));
            m.observe(4, ms(30.0 + 12.0));
        }
        let after = m.token_cap(ms(250.0), 2048).unwrap();
        assert!(before > 200 && after < 90, "{before} -> {after}");
    }
}
