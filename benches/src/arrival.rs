//! Request arrival times.
//!
//! Inter-arrival gaps are gamma distributed with shape `B` (`--burstiness`) and scale
//! `1/(R*B)`, so the mean gap is `1/R` for every `B`; `B = 1` is the exponential gap of
//! a Poisson process. As vLLM does, the cumulative offsets are then rescaled so the last
//! request goes out at exactly `N/R`: different seeds give the same offered load, which
//! keeps throughput numbers comparable. `inf` sends everything at time zero.

use anyhow::{bail, Result};
use rand::rngs::StdRng;
use rand_distr::{Distribution, Gamma};

use crate::args::RequestRate;

/// `n` raw inter-arrival gaps in seconds (not rescaled).
pub fn intervals(
    n: usize,
    rate: RequestRate,
    burstiness: f64,
    rng: &mut StdRng,
) -> Result<Vec<f64>> {
    let r = match rate {
        RequestRate::Infinite => return Ok(vec![0.0; n]),
        RequestRate::PerSecond(r) => r,
    };
    if !(burstiness.is_finite() && burstiness > 0.0) {
        bail!("--burstiness must be a positive number, got {burstiness}");
    }
    let gamma = Gamma::new(burstiness, 1.0 / (r * burstiness)).map_err(|e| {
        anyhow::anyhow!("invalid arrival distribution (rate {r}, burstiness {burstiness}): {e}")
    })?;
    Ok((0..n).map(|_| gamma.sample(rng)).collect())
}

/// Send time of each request, in seconds from the start of the run.
pub fn offsets(n: usize, rate: RequestRate, burstiness: f64, rng: &mut StdRng) -> Result<Vec<f64>> {
    let gaps = intervals(n, rate, burstiness, rng)?;
    let mut acc = 0.0;
    let mut out: Vec<f64> = gaps
        .iter()
        .map(|g| {
            acc += g;
            acc
        })
        .collect();
    if let (RequestRate::PerSecond(r), Some(&last)) = (rate, out.last()) {
        if last > 0.0 {
            let k = (n as f64 / r) / last;
            for t in &mut out {
                *t *= k;
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn mean_var(x: &[f64]) -> (f64, f64) {
        let n = x.len() as f64;
        let m = x.iter().sum::<f64>() / n;
        let v = x.iter().map(|v| (v - m) * (v - m)).sum::<f64>() / n;
        (m, v)
    }

    #[test]
    fn infinite_rate_means_no_delay() {
        let mut rng = StdRng::seed_from_u64(0);
        assert_eq!(
            offsets(5, RequestRate::Infinite, 1.0, &mut rng).unwrap(),
            vec![0.0; 5]
        );
    }

    #[test]
    fn poisson_mean_gap_is_one_over_rate() {
        let mut rng = StdRng::seed_from_u64(1);
        let gaps = intervals(200_000, RequestRate::PerSecond(4.0), 1.0, &mut rng).unwrap();
        let (m, v) = mean_var(&gaps);
        assert!((m - 0.25).abs() < 0.005, "mean {m}");
        // Exponential: variance = mean^2 (coefficient of variation 1).
        assert!((v / (m * m) - 1.0).abs() < 0.03, "cv^2 {}", v / (m * m));
    }

    #[test]
    fn gamma_shape_sets_the_spread() {
        for b in [0.25, 0.5, 2.0, 8.0] {
            let mut rng = StdRng::seed_from_u64(2);
            let gaps = intervals(200_000, RequestRate::PerSecond(10.0), b, &mut rng).unwrap();
            let (m, v) = mean_var(&gaps);
            assert!((m - 0.1).abs() < 0.003, "b={b} mean {m}");
            // Gamma(k, theta): cv^2 = 1/k.
            let cv2 = v / (m * m);
            assert!((cv2 * b - 1.0).abs() < 0.05, "b={b} cv^2 {cv2}");
        }
    }

    #[test]
    fn offsets_are_seeded_increasing_and_end_at_n_over_r() {
        let mut a = StdRng::seed_from_u64(9);
        let mut b = StdRng::seed_from_u64(9);
        let x = offsets(100, RequestRate::PerSecond(5.0), 1.0, &mut a).unwrap();
        let y = offsets(100, RequestRate::PerSecond(5.0), 1.0, &mut b).unwrap();
        assert_eq!(x, y);
        assert!(x.windows(2).all(|w| w[1] >= w[0]));
        assert!((x[99] - 20.0).abs() < 1e-9);
        assert!(x[0] > 0.0);
    }

    #[test]
    fn rejects_bad_burstiness() {
        let mut rng = StdRng::seed_from_u64(0);
        assert!(intervals(3, RequestRate::PerSecond(1.0), 0.0, &mut rng).is_err());
    }
}
