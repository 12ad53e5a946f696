use super::{dot, dot4, lora_add_cpu_isa, Isa};
use crate::lora::{LoraDims, LoraPlan};
use crate::{LoraBatch, LoraWeights};
use candle_core::{CpuStorage, DType, Device, Storage, Tensor};

/// The baseline build (what non-x86_64 targets and older CPUs run) agrees with the
/// runtime-selected one, through both paths and all three dtypes.
#[test]
fn baseline_isa_matches_detected_isa() {
    let dev = Device::Cpu;
    let (in_dim, out_dim, slots, max_rank) = (37, 45, 3, 12);
    let seqs = [
        (Some(0), 1),
        (None, 2),
        (Some(2), 20),
        (Some(1), 3),
        (Some(0), 9),
    ];
    let t: usize = seqs.iter().map(|s| s.1).sum();
    let batch = LoraBatch::from_host(&seqs.map(|s| s.0), &seqs.map(|s| s.1), &dev).unwrap();
    for dtype in [DType::F32, DType::BF16, DType::F16] {
        // Deterministic pseudo-random values in [-amp, amp].
        let rand = |shape: &[usize], amp: f32| {
            let n: usize = shape.iter().product();
            let v: Vec<f32> = (0..n)
                .map(|i| amp * ((i as f32 * 0.618 + amp) * 12.9898).sin())
                .collect();
            Tensor::from_vec(v, shape, &dev)
                .unwrap()
                .to_dtype(dtype)
                .unwrap()
        };
        let w = LoraWeights::new(
            rand(&[slots, max_rank, in_dim], 0.2),
            rand(&[slots, out_dim, max_rank], 0.3),
            Tensor::new(&[0.5f32, 2.0, 1.0], &dev).unwrap(),
        )
        .unwrap()
        .with_ranks(vec![12, 3, 8])
        .unwrap();
        let (x, y) = (rand(&[t, in_dim], 1.0), rand(&[t, out_dim], 1.0));
        let dims = LoraDims {
            num_tokens: t,
            w: w.check("test").unwrap(),
        };
        let plan = LoraPlan::read_and_validate(&w, &batch, dims).unwrap();
        let run = |isa: Isa| {
            let (xs, xl) = x.storage_and_layout();
            let (a_s, al) = w.a.storage_and_layout();
            let (bs, bl) = w.b.storage_and_layout();
            let (Storage::Cpu(xs), Storage::Cpu(a_s), Storage::Cpu(bs)) = (&*xs, &*a_s, &*bs)
            else {
                panic!("cpu tensors expected");
            };
            let (out, _) =
                lora_add_cpu_isa((xs, xl), (a_s, al), (bs, bl), &y, &plan, dims, isa).unwrap();
            match out {
                CpuStorage::F32(v) => v,
                CpuStorage::BF16(v) => v.iter().map(|e| e.to_f32()).collect(),
                CpuStorage::F16(v) => v.iter().map(|e| e.to_f32()).collect(),
                _ => panic!("unexpected output dtype"),
            }
        };
        let (base, fast) = (run(Isa::Baseline), run(Isa::detect()));
        assert_eq!(base.len(), t * out_dim);
        let diff = base
            .iter()
            .zip(&fast)
            .map(|(p, q)| (p - q).abs() / (1.0 + q.abs()))
            .fold(0.0f32, f32::max);
        // Rounding to a half type can flip one ulp (2^-8 relative for bf16).
        let tol = if dtype == DType::F32 { 1e-5 } else { 1e-2 };
        assert!(diff <= tol, "{dtype:?}: {diff}");
    }
}

fn vecs(n: usize) -> [Vec<f32>; 5] {
    std::array::from_fn(|s| {
        (0..n)
            .map(|i| ((i as f32 + s as f32) * 0.37).sin())
            .collect()
    })
}

#[test]
fn dot4_is_bit_identical_to_dot() {
    for n in [0usize, 1, 7, 8, 9, 31, 576, 577] {
        let [s, x0, x1, x2, x3] = vecs(n);
        let one = |fma: bool| {
            [&x0, &x1, &x2, &x3].map(|x| {
                if fma {
                    dot::<true>(x, &s)
                } else {
                    dot::<false>(x, &s)
                }
                .to_bits()
            })
        };
        // SAFETY: `FMA = false` needs no CPU feature.
        let four = unsafe { dot4::<false>(&s, [&x0, &x1, &x2, &x3]) };
        assert_eq!(four.map(f32::to_bits), one(false), "n = {n}");
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            // SAFETY: AVX2 and FMA were just detected.
            let four = unsafe { dot4::<true>(&s, [&x0, &x1, &x2, &x3]) };
            assert_eq!(four.map(f32::to_bits), one(true), "n = {n} (fma)");
        }
        // Symmetric in its operands.
        assert_eq!(
            dot::<false>(&x0, &s).to_bits(),
            dot::<false>(&s, &x0).to_bits()
        );
    }
}
