//! `rms_norm`, `fused_add_rms_norm`, `rotary_embedding_inplace` and `silu_mul` on CPU
//! against the naive references, plus strided inputs and bad arguments.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use candle_core::{DType, Device, IndexOp, Tensor};
use common::{max_abs_diff, rand_tensor, rng};
use lantern_kernels::reference::{
    fused_add_rms_norm_naive, rms_norm_naive, rotary_embedding_naive, silu_mul_naive,
};
use lantern_kernels::{
    fused_add_rms_norm, rms_norm, rotary_embedding_inplace, silu_and_mul, silu_mul,
};

const DTYPES: [DType; 3] = [DType::F32, DType::F16, DType::BF16];

/// Tolerance for results of O(1) magnitude: f32 math, one final rounding.
fn tol(dtype: DType) -> f32 {
    match dtype {
        DType::F32 => 1e-5,
        DType::F16 => 4e-3,
        _ => 3e-2,
    }
}

#[test]
fn rms_norm_matches_reference() {
    let mut r = rng(1);
    for dtype in DTYPES {
        for shape in [
            vec![1, 8],
            vec![5, 64],
            vec![3, 4, 96],
            vec![200, 1000],
            vec![7, 13],
        ] {
            let hidden = *shape.last().unwrap();
            let x = rand_tensor(&mut r, &shape, dtype);
            let w = rand_tensor(&mut r, &[hidden], dtype);
            let got = rms_norm(&x, &w, 1e-6).unwrap();
            let want = rms_norm_naive(&x, &w, 1e-6).unwrap();
            assert_eq!(got.dims(), x.dims());
            assert_eq!(got.dtype(), dtype);
            let d = max_abs_diff(&got, &want);
            assert!(d <= tol(dtype) * 4.0, "{dtype:?} {shape:?}: {d}");
        }
    }
}

#[test]
fn fused_add_rms_norm_matches_reference() {
    let mut r = rng(2);
    for dtype in DTYPES {
        for shape in [vec![1, 16], vec![9, 128], vec![300, 512], vec![4, 2, 40]] {
            let hidden = *shape.last().unwrap();
            let x = rand_tensor(&mut r, &shape, dtype);
            let res = rand_tensor(&mut r, &shape, dtype);
            let w = rand_tensor(&mut r, &[hidden], dtype);
            let (out, h) = fused_add_rms_norm(&x, &res, &w, 1e-5).unwrap();
            let (want_out, want_h) = fused_add_rms_norm_naive(&x, &res, &w, 1e-5).unwrap();
            assert_eq!(out.dims(), x.dims());
            assert_eq!(h.dims(), x.dims());
            // The new residual is the exactly rounded sum.
            assert_eq!(max_abs_diff(&h, &want_h), 0.0, "{dtype:?} {shape:?}");
            let d = max_abs_diff(&out, &want_out);
            assert!(d <= tol(dtype) * 4.0, "{dtype:?} {shape:?}: {d}");
            // Same as the unfused ops.
            let unfused = rms_norm(&(&x + &res).unwrap(), &w, 1e-5).unwrap();
            let d = max_abs_diff(&out, &unfused);
            assert!(d <= tol(dtype) * 4.0, "{dtype:?} {shape:?} unfused: {d}");
        }
    }
}

fn rope_table(max_pos: usize, half: usize, dtype: DType) -> (Tensor, Tensor) {
    let mut c = Vec::new();
    let mut s = Vec::new();
    for p in 0..max_pos {
        for i in 0..half {
            let inv = 1.0 / 10000f32.powf(2.0 * i as f32 / (2 * half) as f32);
            c.push((p as f32 * inv).cos());
            s.push((p as f32 * inv).sin());
        }
    }
    (
        Tensor::from_vec(c, (max_pos, half), &Device::Cpu)
            .unwrap()
            .to_dtype(dtype)
            .unwrap(),
        Tensor::from_vec(s, (max_pos, half), &Device::Cpu)
            .unwrap()
            .to_dtype(dtype)
            .unwrap(),
    )
}

#[test]
fn rope_matches_reference_and_candle() {
    let mut r = rng(3);
    for dtype in DTYPES {
        for (tokens, heads, d) in [(1, 1, 2), (5, 4, 64), (300, 8, 128), (17, 3, 10)] {
            let (cos, sin) = rope_table(4096, d / 2, dtype);
            let pos: Vec<u32> = (0..tokens as u32).map(|t| (t * 37 + 5) % 4096).collect();
            let positions = Tensor::new(pos.as_slice(), &Device::Cpu).unwrap();
            let x = rand_tensor(&mut r, &[tokens, heads, d], dtype);
            let want = rotary_embedding_naive(&x, &cos, &sin, &positions).unwrap();
            let y = x.copy().unwrap();
            rotary_embedding_inplace(&y, &cos, &sin, &positions).unwrap();
            let dd = max_abs_diff(&y, &want);
            assert!(
                dd <= tol(dtype) * 2.0,
                "{dtype:?} {tokens}x{heads}x{d}: {dd}"
            );
            // candle's rope_thd (what models::rope uses today) agrees.
            let c = cos.index_select(&positions, 0).unwrap();
            let s = sin.index_select(&positions, 0).unwrap();
            let thd = candle_nn_rope(&x, &c, &s);
            let dd = max_abs_diff(&y, &thd);
            assert!(dd <= tol(dtype) * 4.0, "{dtype:?} vs rope_thd: {dd}");
        }
    }
}

/// HF `rotate_half` rope written with tensor ops (what candle's `rope_thd` computes).
fn candle_nn_rope(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Tensor {
    let d = x.dim(2).unwrap();
    let xf = x.to_dtype(DType::F32).unwrap();
    let c = cos.to_dtype(DType::F32).unwrap();
    let s = sin.to_dtype(DType::F32).unwrap();
    let c = Tensor::cat(&[&c, &c], 1).unwrap().unsqueeze(1).unwrap();
    let s = Tensor::cat(&[&s, &s], 1).unwrap().unsqueeze(1).unwrap();
    let x1 = xf.narrow(2, 0, d / 2).unwrap();
    let x2 = xf.narrow(2, d / 2, d / 2).unwrap();
    let rot = Tensor::cat(&[&x2.neg().unwrap(), &x1], 2).unwrap();
    (xf.broadcast_mul(&c).unwrap() + rot.broadcast_mul(&s).unwrap())
        .unwrap()
        .to_dtype(x.dtype())
        .unwrap()
}

#[test]
fn rope_on_a_strided_view_touches_only_its_heads() {
    let mut r = rng(4);
    let (tokens, heads, d) = (6, 4, 16);
    let (cos, sin) = rope_table(64, d / 2, DType::F32);
    let positions = Tensor::new(&[0u32, 1, 2, 10, 20, 63], &Device::Cpu).unwrap();
    // A fused (tokens, 3 * heads, d) qkv buffer; rotate only the k part in place.
    let qkv = rand_tensor(&mut r, &[tokens, 3 * heads, d], DType::F32);
    let before = qkv.copy().unwrap();
    let k = qkv.narrow(1, heads, heads).unwrap();
    let want = rotary_embedding_naive(&k.contiguous().unwrap(), &cos, &sin, &positions).unwrap();
    rotary_embedding_inplace(&k, &cos, &sin, &positions).unwrap();
    assert!(max_abs_diff(&qkv.narrow(1, heads, heads).unwrap(), &want) < 1e-6);
    for part in [0, 2] {
        let a = qkv.narrow(1, part * heads, heads).unwrap();
        let b = before.narrow(1, part * heads, heads).unwrap();
        assert_eq!(max_abs_diff(&a, &b), 0.0);
    }
}

#[test]
fn rope_rejects_out_of_range_positions_without_writing() {
    let mut r = rng(5);
    let (cos, sin) = rope_table(8, 4, DType::F32);
    let x = rand_tensor(&mut r, &[2, 1, 8], DType::F32);
    let before = x.copy().unwrap();
    let positions = Tensor::new(&[1u32, 8], &Device::Cpu).unwrap();
    let err = rotary_embedding_inplace(&x, &cos, &sin, &positions).unwrap_err();
    assert!(err.to_string().contains("positions[1] = 8"), "{err}");
    assert_eq!(max_abs_diff(&x, &before), 0.0);
    // Odd head_dim and wrong table width are shape errors.
    let odd = rand_tensor(&mut r, &[2, 1, 7], DType::F32);
    assert!(rotary_embedding_inplace(&odd, &cos, &sin, &positions).is_err());
}

#[test]
fn silu_mul_matches_reference() {
    let mut r = rng(6);
    for dtype in DTYPES {
        for (t, i) in [(1, 1), (3, 8), (64, 1000), (129, 2048), (5, 13)] {
            let g = rand_tensor(&mut r, &[t, i], dtype);
            let u = rand_tensor(&mut r, &[t, i], dtype);
            let got = silu_mul(&g, &u).unwrap();
            let want = silu_mul_naive(&g, &u).unwrap();
            let d = max_abs_diff(&got, &want);
            assert!(d <= tol(dtype), "{dtype:?} {t}x{i}: {d}");
            // Fused (t, 2i) input: gate first, then up.
            let gu = Tensor::cat(&[&g, &u], 1).unwrap();
            let fused = silu_and_mul(&gu).unwrap();
            assert_eq!(max_abs_diff(&fused, &got), 0.0);
        }
    }
}

#[test]
fn shape_and_dtype_errors_name_the_argument() {
    let x = Tensor::zeros((2, 8), DType::F32, &Device::Cpu).unwrap();
    let w = Tensor::zeros(7, DType::F32, &Device::Cpu).unwrap();
    let e = rms_norm(&x, &w, 1e-6).unwrap_err().to_string();
    assert!(e.contains("weight"), "{e}");
    let w16 = Tensor::zeros(8, DType::F16, &Device::Cpu).unwrap();
    let e = rms_norm(&x, &w16, 1e-6).unwrap_err().to_string();
    assert!(e.contains("dtype"), "{e}");
    let r = Tensor::zeros((2, 9), DType::F32, &Device::Cpu).unwrap();
    let w8 = Tensor::zeros(8, DType::F32, &Device::Cpu).unwrap();
    let e = fused_add_rms_norm(&x, &r, &w8, 1e-6)
        .unwrap_err()
        .to_string();
    assert!(e.contains("residual"), "{e}");
    let e = silu_mul(&x, &r).unwrap_err().to_string();
    assert!(e.contains("up"), "{e}");
    let e = silu_and_mul(&x.i((.., ..7)).unwrap())
        .unwrap_err()
        .to_string();
    assert!(e.contains("even"), "{e}");
}
