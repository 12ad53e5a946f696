//! `write_kv_cache`: in-place scatter, padding, strided inputs, bounds and shape checks.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use candle_core::{DType, Device, IndexOp, Tensor};
use common::{max_abs_diff, rand_tensor, rng, scenario, MIXED};
use lantern_kernels::reference::write_kv_cache_naive;
use lantern_kernels::write_kv_cache;

fn slot_tensor(slots: &[i64]) -> Tensor {
    Tensor::from_slice(slots, slots.len(), &Device::Cpu).unwrap()
}

/// Cache row (num_kv_heads, head_dim) at `slot`.
fn cache_row(cache: &Tensor, slot: usize) -> Tensor {
    let bs = cache.dim(1).unwrap();
    cache.i((slot / bs, slot % bs)).unwrap()
}

#[test]
fn writes_rows_in_place_at_their_slots() {
    for dtype in [DType::F32, DType::F16, DType::BF16] {
        let mut r = rng(1);
        let k_cache = rand_tensor(&mut r, &[6, 4, 2, 8], dtype);
        let v_cache = rand_tensor(&mut r, &[6, 4, 2, 8], dtype);
        let before_k = k_cache.copy().unwrap();
        let before_v = v_cache.copy().unwrap();
        let k = rand_tensor(&mut r, &[3, 2, 8], dtype);
        let v = rand_tensor(&mut r, &[3, 2, 8], dtype);
        let slots = [23i64, 0, 9];
        let sm = slot_tensor(&slots);
        let (want_k, want_v) = write_kv_cache_naive(&k, &v, &k_cache, &v_cache, &sm).unwrap();
        write_kv_cache(&k, &v, &k_cache, &v_cache, &sm).unwrap();
        // The same tensors changed (in place) and match the reference exactly.
        assert_eq!(max_abs_diff(&k_cache, &want_k), 0.0);
        assert_eq!(max_abs_diff(&v_cache, &want_v), 0.0);
        assert!(max_abs_diff(&k_cache, &before_k) > 0.0);
        for (i, &s) in slots.iter().enumerate() {
            assert_eq!(
                max_abs_diff(&cache_row(&k_cache, s as usize), &k.i(i).unwrap()),
                0.0
            );
            assert_eq!(
                max_abs_diff(&cache_row(&v_cache, s as usize), &v.i(i).unwrap()),
                0.0
            );
        }
        // Untouched slot stays as before.
        assert_eq!(
            max_abs_diff(&cache_row(&k_cache, 5), &cache_row(&before_k, 5)),
            0.0
        );
        assert_eq!(
            max_abs_diff(&cache_row(&v_cache, 5), &cache_row(&before_v, 5)),
            0.0
        );
    }
}

/// `--kv-cache-dtype`: f32 rows into f16 / bf16 caches (and back) are rounded to the
/// cache's type as `to_dtype` rounds them.
#[test]
fn rows_are_converted_to_a_cache_of_another_dtype() {
    for (rows_dtype, cache_dtype) in [
        (DType::F32, DType::F16),
        (DType::F32, DType::BF16),
        (DType::BF16, DType::F32),
        (DType::F16, DType::BF16),
    ] {
        let mut r = rng(7);
        let k_cache = rand_tensor(&mut r, &[6, 4, 2, 8], cache_dtype);
        let v_cache = rand_tensor(&mut r, &[6, 4, 2, 8], cache_dtype);
        // Strided rows, as the fused qkv projection's views are.
        let kv = rand_tensor(&mut r, &[3, 4, 8], rows_dtype);
        let k = kv.narrow(1, 0, 2).unwrap();
        let v = kv.narrow(1, 2, 2).unwrap();
        let slots = [23i64, 0, 9];
        write_kv_cache(&k, &v, &k_cache, &v_cache, &slot_tensor(&slots)).unwrap();
        assert_eq!(k_cache.dtype(), cache_dtype);
        for (i, &s) in slots.iter().enumerate() {
            for (cache, rows) in [(&k_cache, &k), (&v_cache, &v)] {
                let want = rows.i(i).unwrap().to_dtype(cache_dtype).unwrap();
                let got = cache_row(cache, s as usize);
                assert_eq!(
                    max_abs_diff(&got, &want),
                    0.0,
                    "{rows_dtype:?} rows into a {cache_dtype:?} cache"
                );
            }
        }
    }
}

#[test]
fn negative_slots_are_skipped() {
    let mut r = rng(2);
    let k_cache = rand_tensor(&mut r, &[2, 4, 1, 8], DType::F32);
    let v_cache = rand_tensor(&mut r, &[2, 4, 1, 8], DType::F32);
    let before_k = k_cache.copy().unwrap();
    let before_v = v_cache.copy().unwrap();
    let k = rand_tensor(&mut r, &[4, 1, 8], DType::F32);
    let v = rand_tensor(&mut r, &[4, 1, 8], DType::F32);
    let sm = slot_tensor(&[-1, 3, -1, -7]);
    write_kv_cache(&k, &v, &k_cache, &v_cache, &sm).unwrap();
    let changed = |a: &Tensor, b: &Tensor| {
        (0..8)
            .filter(|&s| max_abs_diff(&cache_row(a, s), &cache_row(b, s)) > 0.0)
            .collect::<Vec<_>>()
    };
    assert_eq!(changed(&k_cache, &before_k), vec![3]);
    assert_eq!(changed(&v_cache, &before_v), vec![3]);
    assert_eq!(max_abs_diff(&cache_row(&k_cache, 3), &k.i(1).unwrap()), 0.0);

    // All padding: nothing changes.
    let sm = slot_tensor(&[-1, -1, -1, -1]);
    let snapshot = k_cache.copy().unwrap();
    write_kv_cache(&k, &v, &k_cache, &v_cache, &sm).unwrap();
    assert_eq!(max_abs_diff(&k_cache, &snapshot), 0.0);
}

#[test]
fn out_of_range_slot_errors_and_writes_nothing() {
    let mut r = rng(3);
    let k_cache = rand_tensor(&mut r, &[2, 4, 1, 8], DType::F32);
    let v_cache = rand_tensor(&mut r, &[2, 4, 1, 8], DType::F32);
    let before_k = k_cache.copy().unwrap();
    let before_v = v_cache.copy().unwrap();
    let k = rand_tensor(&mut r, &[3, 1, 8], DType::F32);
    let v = rand_tensor(&mut r, &[3, 1, 8], DType::F32);
    // Valid slot first, then one past the end (2 blocks x 4 = 8 slots).
    let err = write_kv_cache(&k, &v, &k_cache, &v_cache, &slot_tensor(&[1, 8, 2])).unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("slot_mapping[1] = 8"), "{msg}");
    assert!(msg.contains("8 slots"), "{msg}");
    assert_eq!(max_abs_diff(&k_cache, &before_k), 0.0);
    assert_eq!(max_abs_diff(&v_cache, &before_v), 0.0);
}

#[test]
fn strided_k_v_from_fused_qkv() {
    let mut r = rng(4);
    let (n, h, kvh, d) = (5, 4, 2, 16);
    let qkv = rand_tensor(&mut r, &[n, (h + 2 * kvh) * d], DType::F32);
    let qkv3 = qkv.reshape((n, h + 2 * kvh, d)).unwrap();
    let k = qkv3.narrow(1, h, kvh).unwrap(); // non-contiguous view
    let v = qkv3.narrow(1, h + kvh, kvh).unwrap();
    assert!(!k.is_contiguous());
    let k_cache = Tensor::zeros((3, 4, kvh, d), DType::F32, &Device::Cpu).unwrap();
    let v_cache = k_cache.zeros_like().unwrap();
    let sm = slot_tensor(&[11, 0, 4, 5, 10]);
    let (want_k, want_v) = write_kv_cache_naive(&k, &v, &k_cache, &v_cache, &sm).unwrap();
    write_kv_cache(&k, &v, &k_cache, &v_cache, &sm).unwrap();
    assert_eq!(max_abs_diff(&k_cache, &want_k), 0.0);
    assert_eq!(max_abs_diff(&v_cache, &want_v), 0.0);

    // Transposed head_dim (non-unit last stride) also works via a copy.
    let k_t = rand_tensor(&mut r, &[n, d, kvh], DType::F32)
        .transpose(1, 2)
        .unwrap();
    let k_cache2 = k_cache.zeros_like().unwrap();
    let v_cache2 = k_cache.zeros_like().unwrap();
    write_kv_cache(&k_t, &k_t, &k_cache2, &v_cache2, &sm).unwrap();
    assert_eq!(
        max_abs_diff(&cache_row(&k_cache2, 11), &k_t.i(0).unwrap()),
        0.0
    );
}

#[test]
fn cache_views_with_start_offset_write_through() {
    let mut r = rng(5);
    let all = Tensor::zeros((2, 3, 4, 1, 8), DType::F32, &Device::Cpu).unwrap();
    let (k_cache, v_cache) = (all.get(0).unwrap(), all.get(1).unwrap());
    let k = rand_tensor(&mut r, &[2, 1, 8], DType::F32);
    let v = rand_tensor(&mut r, &[2, 1, 8], DType::F32);
    write_kv_cache(&k, &v, &k_cache, &v_cache, &slot_tensor(&[7, 0])).unwrap();
    // Visible through the parent allocation.
    assert_eq!(
        max_abs_diff(&all.i((1, 1, 3)).unwrap(), &v.i(0).unwrap()),
        0.0
    );
    assert_eq!(
        max_abs_diff(&all.i((0, 0, 0)).unwrap(), &k.i(1).unwrap()),
        0.0
    );
}

#[test]
fn scenario_write_places_every_token() {
    let mut r = rng(6);
    let sc = scenario(&mut r, MIXED, 16, 6, 2, 32, DType::F32);
    for (i, &s) in sc.slots.iter().enumerate() {
        let s = s as usize;
        assert_eq!(
            max_abs_diff(&cache_row(&sc.k_cache, s), &sc.new_k.i(i).unwrap()),
            0.0
        );
        assert_eq!(
            max_abs_diff(&cache_row(&sc.v_cache, s), &sc.new_v.i(i).unwrap()),
            0.0
        );
    }
    assert!(!sc.tables.is_empty());
}

#[test]
fn shape_and_dtype_errors() {
    let dev = Device::Cpu;
    let z = |shape: &[usize], dt: DType| Tensor::zeros(shape, dt, &dev).unwrap();
    let (kc, vc) = (z(&[2, 4, 2, 8], DType::F32), z(&[2, 4, 2, 8], DType::F32));
    let (k, v) = (z(&[3, 2, 8], DType::F32), z(&[3, 2, 8], DType::F32));
    let sm = slot_tensor(&[0, 1, 2]);
    let check = |res: candle_core::Result<()>, needle: &str| match res {
        Ok(()) => panic!("expected error mentioning {needle:?}"),
        Err(e) => assert!(e.to_string().contains(needle), "{e} lacks {needle:?}"),
    };
    check(
        write_kv_cache(&z(&[3, 16], DType::F32), &v, &kc, &vc, &sm),
        "k must have shape",
    );
    check(
        write_kv_cache(&k, &z(&[3, 1, 8], DType::F32), &kc, &vc, &sm),
        "v shape",
    );
    check(
        write_kv_cache(&k, &v, &z(&[2, 4, 2], DType::F32), &vc, &sm),
        "k_cache must have shape",
    );
    check(
        write_kv_cache(&k, &v, &kc, &z(&[3, 4, 2, 8], DType::F32), &sm),
        "v_cache shape",
    );
    check(
        write_kv_cache(
            &k,
            &v,
            &z(&[2, 4, 1, 8], DType::F32),
            &z(&[2, 4, 1, 8], DType::F32),
            &sm,
        ),
        "num_kv_heads, head_dim",
    );
    check(
        write_kv_cache(&k, &v, &kc, &vc, &slot_tensor(&[0, 1])),
        "slot_mapping must have shape (3,)",
    );
    check(
        write_kv_cache(&k, &v, &kc, &vc, &Tensor::new(&[0u32, 1, 2], &dev).unwrap()),
        "slot_mapping must be i64",
    );
    check(
        write_kv_cache(&k, &v, &z(&[2, 4, 2, 8], DType::BF16), &vc, &sm),
        "v_cache has dtype",
    );
    check(
        write_kv_cache(&k, &z(&[3, 2, 8], DType::F16), &kc, &vc, &sm),
        "v has dtype",
    );
    check(
        write_kv_cache(
            &z(&[3, 2, 8], DType::F64),
            &z(&[3, 2, 8], DType::F64),
            &z(&[2, 4, 2, 8], DType::F64),
            &z(&[2, 4, 2, 8], DType::F64),
            &sm,
        ),
        "f32, f16 or bf16",
    );
    let kc_nc = z(&[4, 2, 2, 8], DType::F32).transpose(0, 1).unwrap();
    check(
        write_kv_cache(&k, &v, &kc_nc, &vc, &sm),
        "must be contiguous",
    );
}
