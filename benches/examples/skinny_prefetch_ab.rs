//! A/B of three loop schedules for the skinny f32 kernel at decode-sized steps, in one
//! process on cold weights (SmolLM2-135M's 120 projections plus the 49152 x 576 lm_head, all
//! distinct buffers, ~540 MB), the variants taking turns within each of 9 repetitions:
//! 4 W rows x 3 x rows register blocks with the next W block prefetched on the first pass
//! only ("first-pass"), the prefetch shared out over all passes ("spread", what
//! `lantern_kernels::skinny_matmul` does), and W rows streamed one at a time against up to
//! 8 x rows ("stream"). All three sum in the same order, so the check values agree.
//!   cargo run --release -p lantern-bench --example skinny_prefetch_ab -- [T,T,..]
//! x86_64 with AVX2 + FMA only. Results: benches/results/cpu-smollm2-f32-matmul.txt.
#![allow(
    clippy::needless_range_loop,
    clippy::missing_safety_doc,
    clippy::too_many_arguments
)]

#[cfg(target_arch = "x86_64")]
mod ab {
    use rayon::prelude::*;
    use std::arch::x86_64::*;
    use std::time::Instant;

    #[inline(always)]
    unsafe fn hsum256(v: __m256) -> f32 {
        let q = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
        let h = _mm_add_ps(q, _mm_movehl_ps(q, q));
        let s = _mm_add_ss(h, _mm_shuffle_ps::<0b01>(h, h));
        _mm_cvtss_f32(s)
    }

    const R: usize = 4;

    #[inline(always)]
    unsafe fn blk<const NC: usize>(
        wp: *const f32,
        xp: *const f32,
        k: usize,
        pass: usize,
        passes: usize,
        out: &mut [[f32; 12]; R],
        c0: usize,
    ) {
        let mut acc = [[_mm256_setzero_ps(); NC]; R];
        let next = wp.cast::<u8>().wrapping_add(R * k * 4);
        let per_step = R * 8 * 4;
        let mut countdown = pass;
        let mut i = 0;
        while i < k {
            if countdown == 0 {
                let ahead = next.wrapping_add(i / 8 * per_step);
                _mm_prefetch::<_MM_HINT_T0>(ahead.cast::<i8>());
                _mm_prefetch::<_MM_HINT_T0>(ahead.wrapping_add(64).cast::<i8>());
                countdown = passes;
            }
            countdown = countdown.wrapping_sub(1);
            let mut xv = [_mm256_setzero_ps(); NC];
            for c in 0..NC {
                xv[c] = _mm256_loadu_ps(xp.add(c * k + i));
            }
            for r in 0..R {
                let wv = _mm256_loadu_ps(wp.add(r * k + i));
                for c in 0..NC {
                    acc[r][c] = _mm256_fmadd_ps(wv, xv[c], acc[r][c]);
                }
            }
            i += 8;
        }
        for r in 0..R {
            for c in 0..NC {
                out[r][c0 + c] = hsum256(acc[r][c]);
            }
        }
    }

    #[inline(always)]
    unsafe fn stream<const NC: usize>(
        wp: *const f32,
        xp: *const f32,
        k: usize,
        out: &mut [[f32; 12]; R],
        c0: usize,
    ) {
        for r in 0..R {
            let mut acc = [_mm256_setzero_ps(); NC];
            let mut i = 0;
            while i < k {
                let wv = _mm256_loadu_ps(wp.add(r * k + i));
                for c in 0..NC {
                    acc[c] = _mm256_fmadd_ps(wv, _mm256_loadu_ps(xp.add(c * k + i)), acc[c]);
                }
                i += 8;
            }
            for c in 0..NC {
                out[r][c0 + c] = hsum256(acc[c]);
            }
        }
    }

    #[target_feature(enable = "avx2,fma")]
    unsafe fn task(
        variant: usize,
        x: &[f32],
        w: &[f32],
        t: usize,
        n: usize,
        k: usize,
        col0: usize,
        y: *mut f32,
    ) {
        let rows = w.len() / k;
        let mut out = [[0f32; 12]; R];
        let passes = if variant == 1 {
            (t / 3 + usize::from(t % 3 == 2)).max(1)
        } else {
            usize::MAX
        };
        let mut o = 0;
        while o < rows {
            let wp = w.as_ptr().add(o * k);
            if variant == 2 {
                let mut c = 0;
                while c < t {
                    let nc = (t - c).min(8);
                    let xp = x.as_ptr().add(c * k);
                    match nc {
                        8 => stream::<8>(wp, xp, k, &mut out, c),
                        7 => stream::<7>(wp, xp, k, &mut out, c),
                        6 => stream::<6>(wp, xp, k, &mut out, c),
                        5 => stream::<5>(wp, xp, k, &mut out, c),
                        4 => stream::<4>(wp, xp, k, &mut out, c),
                        3 => stream::<3>(wp, xp, k, &mut out, c),
                        2 => stream::<2>(wp, xp, k, &mut out, c),
                        _ => stream::<1>(wp, xp, k, &mut out, c),
                    }
                    c += nc;
                }
            } else {
                let mut c = 0;
                while c < t {
                    let nc = (t - c).min(3);
                    let pass = c / 3;
                    let (p, ps) = if variant == 1 {
                        (pass, passes)
                    } else if pass == 0 {
                        (0, 1)
                    } else {
                        (usize::MAX, usize::MAX)
                    };
                    let xp = x.as_ptr().add(c * k);
                    match nc {
                        3 => blk::<3>(wp, xp, k, p, ps, &mut out, c),
                        2 => blk::<2>(wp, xp, k, p, ps, &mut out, c),
                        _ => blk::<1>(wp, xp, k, p, ps, &mut out, c),
                    }
                    c += nc;
                }
            }
            for r in 0..R {
                for c in 0..t {
                    *y.add(c * n + col0 + o + r) = out[r][c];
                }
            }
            o += R;
        }
    }

    #[derive(Clone, Copy)]
    struct P(*mut f32);
    unsafe impl Send for P {}
    unsafe impl Sync for P {}
    impl P {
        fn get(self) -> *mut f32 {
            self.0
        }
    }

    fn matmul(variant: usize, x: &[f32], w: &[f32], t: usize, n: usize, k: usize) -> Vec<f32> {
        let mut y = vec![0f32; t * n];
        let per = (n.div_ceil(rayon::current_num_threads() * 4)).div_ceil(R) * R;
        let yp = P(y.as_mut_ptr());
        (0..n.div_ceil(per)).into_par_iter().for_each(|i| {
            let r0 = i * per;
            let rows = per.min(n - r0);
            unsafe {
                task(
                    variant,
                    x,
                    &w[r0 * k..(r0 + rows) * k],
                    t,
                    n,
                    k,
                    r0,
                    yp.get(),
                )
            };
        });
        y
    }

    pub fn main() {
        let ts: Vec<usize> = std::env::args()
            .nth(1)
            .map(|s| s.split(',').map(|v| v.parse().unwrap_or(8)).collect())
            .unwrap_or(vec![2, 4, 8, 12]);
        assert!(ts.iter().all(|&t| t <= 12), "T is at most 12");
        assert!(
            std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma"),
            "needs AVX2 + FMA"
        );
        let shapes = [(960usize, 576usize), (576, 576), (3072, 576), (576, 1536)];
        let mut ws: Vec<(Vec<f32>, usize, usize)> = (0..30)
            .flat_map(|l| {
                shapes.iter().map(move |&(n, k)| {
                    (
                        (0..n * k)
                            .map(|i| ((i * 7 + l) % 11) as f32 * 0.01 - 0.05)
                            .collect(),
                        n,
                        k,
                    )
                })
            })
            .collect();
        ws.push((
            (0..49152 * 576).map(|i| (i % 11) as f32 * 0.01).collect(),
            49152,
            576,
        ));
        for &t in &ts {
            let xs: Vec<Vec<f32>> = [576usize, 1536]
                .iter()
                .map(|&k| (0..t * k).map(|i| (i % 13) as f32 * 0.01).collect())
                .collect();
            let mut times = vec![Vec::new(); 3];
            let mut check = vec![0f32; 3];
            for _ in 0..9 {
                for v in 0..3 {
                    let s = Instant::now();
                    let mut sum = 0f32;
                    for (w, n, k) in &ws {
                        let x = if *k == 576 { &xs[0] } else { &xs[1] };
                        let y = matmul(v, x, w, t, *n, *k);
                        sum += y[y.len() / 2];
                    }
                    times[v].push(s.elapsed().as_secs_f64() * 1e3);
                    check[v] = sum;
                }
            }
            let med: Vec<f64> = times
                .into_iter()
                .map(|mut t| {
                    t.sort_by(f64::total_cmp);
                    t[t.len() / 2]
                })
                .collect();
            println!(
                "t={t:>3}: first-pass {:.1} ms, spread {:.1} ms, stream {:.1} ms (check {:?})",
                med[0], med[1], med[2], check
            );
        }
    }
}

fn main() {
    #[cfg(target_arch = "x86_64")]
    ab::main();
    #[cfg(not(target_arch = "x86_64"))]
    eprintln!("x86_64 only");
}
