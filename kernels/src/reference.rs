//! Slow, obviously-correct reference implementations, used as test oracles.
//!
//! Everything here copies its inputs to host `Vec<f32>`s, gathers each sequence's keys and
//! values into dense matrices, and applies plain textbook math (explicit causal mask, full
//! softmax). Inputs may live on any device; results come back on the device and in the
//! dtype of the corresponding input. Nothing here is meant to be fast.

use candle_core::{bail, DType, Device, Result, Tensor};

use crate::metadata::PagedAttnMetadata;

fn host_f32(t: &Tensor) -> Result<Vec<f32>> {
    t.to_device(&Device::Cpu)?
        .to_dtype(DType::F32)?
        .flatten_all()?
        .to_vec1::<f32>()
}

fn host_u32(t: &Tensor) -> Result<Vec<u32>> {
    t.to_device(&Device::Cpu)?.flatten_all()?.to_vec1::<u32>()
}

/// Reference paged attention with the semantics of [`crate::paged_attention`].
///
/// For every sequence `s` the first `context_lens[s]` cache positions are gathered through
/// the block table into dense `K`, `V` of shape `(context_len, num_kv_heads, head_dim)`;
/// then for each query head `h` the full score matrix `S[j][t] = scale * q_j . K[t]` is
/// built with `S[j][t] = -inf` for `t > p_j = context_len - query_len + j`, softmaxed row by
/// row (max-subtracted, f32), and multiplied by `V`. Batch rows owned by no sequence are 0.
pub fn paged_attention_naive(
    q: &Tensor,
    k_cache: &Tensor,
    v_cache: &Tensor,
    meta: &PagedAttnMetadata,
    softmax_scale: f32,
) -> Result<Tensor> {
    let &[num_tokens, num_heads, head_dim] = q.dims() else {
        bail!("paged_attention_naive: q must be 3-D, got {:?}", q.shape());
    };
    let &[num_blocks, block_size, num_kv_heads, cache_head_dim] = k_cache.dims() else {
        bail!(
            "paged_attention_naive: k_cache must be 4-D, got {:?}",
            k_cache.shape()
        );
    };
    if v_cache.dims() != k_cache.dims()
        || cache_head_dim != head_dim
        || num_kv_heads == 0
        || num_heads % num_kv_heads != 0
        || block_size != meta.block_size
    {
        bail!(
            "paged_attention_naive: inconsistent shapes q {:?}, k_cache {:?}, v_cache {:?}, block_size {}",
            q.shape(),
            k_cache.shape(),
            v_cache.shape(),
            meta.block_size
        );
    }
    let group = num_heads / num_kv_heads;
    let q_h = host_f32(q)?;
    let k_h = host_f32(k_cache)?;
    let v_h = host_f32(v_cache)?;
    let tables = meta
        .block_tables
        .to_device(&Device::Cpu)?
        .to_vec2::<u32>()?;
    let cu = host_u32(&meta.cu_seqlens_q)?;
    let ctx_lens = host_u32(&meta.context_lens)?;
    if cu.len() != ctx_lens.len() + 1 || tables.len() != ctx_lens.len() {
        bail!("paged_attention_naive: metadata lengths disagree");
    }

    let row = num_kv_heads * head_dim; // elements per cache slot
    let mut out = vec![0f32; num_tokens * num_heads * head_dim];
    for (s, table) in tables.iter().enumerate() {
        let (lo, hi) = (cu[s] as usize, cu[s + 1] as usize);
        let ctx = ctx_lens[s] as usize;
        if hi < lo || hi > num_tokens || hi - lo > ctx {
            bail!("paged_attention_naive: bad cu_seqlens_q/context_lens for seq {s}");
        }
        let qlen = hi - lo;

        // Dense K, V: (ctx, num_kv_heads, head_dim).
        let mut k_dense = Vec::with_capacity(ctx * row);
        let mut v_dense = Vec::with_capacity(ctx * row);
        for t in 0..ctx {
            let Some(&block) = table.get(t / block_size) else {
                bail!("paged_attention_naive: seq {s} position {t} is past its block table");
            };
            if block as usize >= num_blocks {
                bail!("paged_attention_naive: block id {block} out of range");
            }
            let slot = block as usize * block_size + t % block_size;
            k_dense.extend_from_slice(&k_h[slot * row..(slot + 1) * row]);
            v_dense.extend_from_slice(&v_h[slot * row..(slot + 1) * row]);
        }

        for h in 0..num_heads {
            let kvh = h / group;
            for j in 0..qlen {
                let p = ctx - qlen + j;
                let q_off = ((lo + j) * num_heads + h) * head_dim;
                let q_vec = &q_h[q_off..q_off + head_dim];
                // Masked scores over all ctx positions.
                let scores: Vec<f32> = (0..ctx)
                    .map(|t| {
                        if t > p {
                            f32::NEG_INFINITY
                        } else {
                            let k_off = t * row + kvh * head_dim;
                            let k_vec = &k_dense[k_off..k_off + head_dim];
                            softmax_scale * q_vec.iter().zip(k_vec).map(|(a, b)| a * b).sum::<f32>()
                        }
                    })
                    .collect();
                let max = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                let exps: Vec<f32> = scores.iter().map(|s| (s - max).exp()).collect();
                let sum: f32 = exps.iter().sum();
                let out_row = &mut out[q_off..q_off + head_dim];
                for (t, e) in exps.iter().enumerate() {
                    let w = e / sum;
                    let v_off = t * row + kvh * head_dim;
                    for (o, x) in out_row.iter_mut().zip(&v_dense[v_off..v_off + head_dim]) {
                        *o += w * x;
                    }
                }
            }
        }
    }
    Tensor::from_vec(out, (num_tokens, num_heads, head_dim), &Device::Cpu)?
        .to_dtype(q.dtype())?
        .to_device(q.device())
}

/// Reference KV cache write with the semantics of [`crate::write_kv_cache`], but functional:
/// returns updated copies `(k_cache, v_cache)` and leaves the inputs untouched.
/// Negative slots are skipped; an out-of-range slot is an error.
pub fn write_kv_cache_naive(
    k: &Tensor,
    v: &Tensor,
    k_cache: &Tensor,
    v_cache: &Tensor,
    slot_mapping: &Tensor,
) -> Result<(Tensor, Tensor)> {
    let &[num_tokens, num_kv_heads, head_dim] = k.dims() else {
        bail!("write_kv_cache_naive: k must be 3-D, got {:?}", k.shape());
    };
    let &[num_blocks, block_size, cache_heads, cache_dim] = k_cache.dims() else {
        bail!(
            "write_kv_cache_naive: k_cache must be 4-D, got {:?}",
            k_cache.shape()
        );
    };
    if v.dims() != k.dims()
        || v_cache.dims() != k_cache.dims()
        || (cache_heads, cache_dim) != (num_kv_heads, head_dim)
        || slot_mapping.dims() != [num_tokens]
    {
        bail!("write_kv_cache_naive: inconsistent shapes");
    }
    let slots = slot_mapping.to_device(&Device::Cpu)?.to_vec1::<i64>()?;
    let row = num_kv_heads * head_dim;
    let (k_h, v_h) = (host_f32(k)?, host_f32(v)?);
    let (mut kc, mut vc) = (host_f32(k_cache)?, host_f32(v_cache)?);
    for (i, &slot) in slots.iter().enumerate() {
        if slot < 0 {
            continue;
        }
        let slot = slot as usize;
        if slot >= num_blocks * block_size {
            bail!("write_kv_cache_naive: slot_mapping[{i}] = {slot} out of range");
        }
        kc[slot * row..(slot + 1) * row].copy_from_slice(&k_h[i * row..(i + 1) * row]);
        vc[slot * row..(slot + 1) * row].copy_from_slice(&v_h[i * row..(i + 1) * row]);
    }
    let shape = k_cache.shape().clone();
    let kc = Tensor::from_vec(kc, shape.clone(), &Device::Cpu)?
        .to_dtype(k_cache.dtype())?
        .to_device(k_cache.device())?;
    let vc = Tensor::from_vec(vc, shape, &Device::Cpu)?
        .to_dtype(v_cache.dtype())?
        .to_device(v_cache.device())?;
    Ok((kc, vc))
}

/// Reference multi-LoRA add with the semantics of [`crate::lora_add`]: for every token `t`
/// with slot `s = token_slots[t] >= 0` and rank `r = ranks[s]` (or `max_rank`),
/// `y'[t][o] = y[t][o] + scale[s] * sum_{k < r} B[s][o][k] * (sum_i A[s][k][i] * x[t][i])`,
/// in f32 with plain loops; other rows are copied from `y`. Reads only `token_slots`
/// (not the segments). A slot outside `-1..num_slots` is an error.
pub fn lora_add_naive(
    y: &Tensor,
    x: &Tensor,
    w: &crate::lora::LoraWeights,
    batch: &crate::lora::LoraBatch,
) -> Result<Tensor> {
    let &[num_tokens, out_dim] = y.dims() else {
        bail!("lora_add_naive: y must be 2-D, got {:?}", y.shape());
    };
    let &[num_slots, max_rank, in_dim] = w.a.dims() else {
        bail!("lora_add_naive: lora a must be 3-D, got {:?}", w.a.shape());
    };
    if x.dims() != [num_tokens, in_dim]
        || w.b.dims() != [num_slots, out_dim, max_rank]
        || w.scales.dims() != [num_slots]
        || batch.token_slots.dims() != [num_tokens]
    {
        bail!(
            "lora_add_naive: inconsistent shapes y {:?}, x {:?}, a {:?}, b {:?}, scales {:?}, token_slots {:?}",
            y.shape(),
            x.shape(),
            w.a.shape(),
            w.b.shape(),
            w.scales.shape(),
            batch.token_slots.shape()
        );
    }
    let ranks = match &w.ranks {
        Some(r) if r.len() == num_slots && r.iter().all(|&r| r <= max_rank) => r.clone(),
        Some(r) => {
            bail!("lora_add_naive: bad ranks {r:?} for {num_slots} slots of max_rank {max_rank}")
        }
        None => vec![max_rank; num_slots],
    };
    let slots = batch
        .token_slots
        .to_device(&Device::Cpu)?
        .to_vec1::<i32>()?;
    let (x_h, a_h, b_h) = (host_f32(x)?, host_f32(&w.a)?, host_f32(&w.b)?);
    let scales = host_f32(&w.scales)?;
    let mut out = host_f32(y)?;
    for (t, &slot) in slots.iter().enumerate() {
        if slot < 0 {
            if slot != -1 {
                bail!("lora_add_naive: token_slots[{t}] = {slot} is invalid");
            }
            continue;
        }
        let s = slot as usize;
        if s >= num_slots {
            bail!("lora_add_naive: token_slots[{t}] = {slot} out of range for {num_slots} slots");
        }
        let r = ranks[s];
        let x_row = &x_h[t * in_dim..(t + 1) * in_dim];
        // h = A[s][..r] x
        let mut h = vec![0f32; r];
        for (k, hk) in h.iter_mut().enumerate() {
            let a_row = &a_h[(s * max_rank + k) * in_dim..(s * max_rank + k + 1) * in_dim];
            for i in 0..in_dim {
                *hk += a_row[i] * x_row[i];
            }
        }
        // y += scale * B[s][:, ..r] h
        for o in 0..out_dim {
            let b_row = &b_h[(s * out_dim + o) * max_rank..(s * out_dim + o + 1) * max_rank];
            let mut sum = 0f32;
            for k in 0..r {
                sum += b_row[k] * h[k];
            }
            out[t * out_dim + o] += scales[s] * sum;
        }
    }
    Tensor::from_vec(out, (num_tokens, out_dim), &Device::Cpu)?
        .to_dtype(y.dtype())?
        .to_device(y.device())
}

/// Reference RMSNorm with the semantics of [`crate::rms_norm`]: per row of the last dim,
/// `x * (1 / sqrt(mean(x^2) + eps)) * w` in f32.
pub fn rms_norm_naive(x: &Tensor, weight: &Tensor, eps: f32) -> Result<Tensor> {
    let Some(&hidden) = x.dims().last() else {
        bail!("rms_norm_naive: x must have a last dim");
    };
    let (xh, wh) = (host_f32(x)?, host_f32(weight)?);
    if wh.len() != hidden {
        bail!("rms_norm_naive: weight must have {hidden} elements");
    }
    let mut out = vec![0f32; xh.len()];
    if hidden > 0 {
        for (row, o) in xh.chunks(hidden).zip(out.chunks_mut(hidden)) {
            let mean = row.iter().map(|v| v * v).sum::<f32>() / hidden as f32;
            let inv = 1.0 / (mean + eps).sqrt();
            for i in 0..hidden {
                o[i] = row[i] * inv * wh[i];
            }
        }
    }
    Tensor::from_vec(out, x.shape(), &Device::Cpu)?
        .to_dtype(x.dtype())?
        .to_device(x.device())
}

/// Reference of [`crate::fused_add_rms_norm`]: `h = x + residual` rounded to the dtype, then
/// `(rms_norm_naive(h), h)`.
pub fn fused_add_rms_norm_naive(
    x: &Tensor,
    residual: &Tensor,
    weight: &Tensor,
    eps: f32,
) -> Result<(Tensor, Tensor)> {
    let h = (x.to_dtype(DType::F32)? + residual.to_dtype(DType::F32)?)?.to_dtype(x.dtype())?;
    Ok((rms_norm_naive(&h, weight, eps)?, h))
}

/// Reference of [`crate::rotary_embedding_inplace`], functional: returns the rotated copy of
/// `x` `(tokens, heads, head_dim)` using `cos`/`sin` rows `positions[t]`.
pub fn rotary_embedding_naive(
    x: &Tensor,
    cos: &Tensor,
    sin: &Tensor,
    positions: &Tensor,
) -> Result<Tensor> {
    let &[tokens, heads, d] = x.dims() else {
        bail!("rotary_embedding_naive: x must be 3-D");
    };
    let half = d / 2;
    let pos = positions.to_device(&Device::Cpu)?.to_vec1::<u32>()?;
    let (xh, c, s) = (host_f32(x)?, host_f32(cos)?, host_f32(sin)?);
    let mut out = xh.clone();
    if pos.len() != tokens {
        bail!(
            "rotary_embedding_naive: {} positions for {tokens} tokens",
            pos.len()
        );
    }
    for (t, &p) in pos.iter().enumerate() {
        let p = p as usize;
        if (p + 1) * half > c.len() {
            bail!("rotary_embedding_naive: position {p} out of range");
        }
        for h in 0..heads {
            let base = (t * heads + h) * d;
            for i in 0..half {
                let (a, b) = (xh[base + i], xh[base + i + half]);
                let (cv, sv) = (c[p * half + i], s[p * half + i]);
                out[base + i] = a * cv - b * sv;
                out[base + i + half] = b * cv + a * sv;
            }
        }
    }
    Tensor::from_vec(out, x.shape(), &Device::Cpu)?
        .to_dtype(x.dtype())?
        .to_device(x.device())
}

/// Reference of [`crate::silu_mul`]: `g / (1 + exp(-g)) * u` elementwise in f32.
pub fn silu_mul_naive(gate: &Tensor, up: &Tensor) -> Result<Tensor> {
    let (g, u) = (host_f32(gate)?, host_f32(up)?);
    if g.len() != u.len() {
        bail!("silu_mul_naive: gate and up differ in size");
    }
    let out: Vec<f32> = g
        .iter()
        .zip(&u)
        .map(|(&g, &u)| g / (1.0 + (-g).exp()) * u)
        .collect();
    Tensor::from_vec(out, gate.shape(), &Device::Cpu)?
        .to_dtype(gate.dtype())?
        .to_device(gate.device())
}

/// Reference of [`crate::sample_tokens`], from the unpacked rows: processes each row as
/// `crates/runtime`'s sampler does (bias, repetition, presence/frequency, banned), sorts the
/// whole vocabulary by (logit desc, index asc) and applies top-k, min-p (take-while on the
/// sorted candidates), top-p and the draw with the fixed-point weights of the op's docs.
pub fn sample_tokens_naive(
    logits: &Tensor,
    rows: &[crate::sampling::SamplingRow<'_>],
) -> Result<Vec<u32>> {
    use crate::cpu::sampling::{fixed_mass, fkey, sanitize};
    let &[n, vocab] = logits.dims() else {
        bail!("sample_tokens_naive: logits must be 2-D");
    };
    if rows.len() != n {
        bail!(
            "sample_tokens_naive: {} rows for {n} logits rows",
            rows.len()
        );
    }
    let all = host_f32(logits)?;
    let mut out = Vec::with_capacity(n);
    for (r, p) in rows.iter().enumerate() {
        let mut x: Vec<f32> = all[r * vocab..(r + 1) * vocab]
            .iter()
            .map(|&v| sanitize(v))
            .collect();
        for &(t, b) in p.logit_bias {
            if let Some(v) = x.get_mut(t as usize) {
                *v += b;
            }
        }
        if p.params.repetition_penalty != 1.0 {
            let mut seen = vec![false; vocab];
            for &t in p.prompt_tokens.iter().chain(p.output_tokens) {
                if let Some(s) = seen.get_mut(t as usize) {
                    *s = true;
                }
            }
            for (v, s) in x.iter_mut().zip(&seen) {
                if *s {
                    *v = if *v > 0.0 {
                        *v / p.params.repetition_penalty
                    } else {
                        *v * p.params.repetition_penalty
                    };
                }
            }
        }
        if p.params.presence_penalty != 0.0 || p.params.frequency_penalty != 0.0 {
            let mut counts = vec![0u32; vocab];
            for &t in p.output_tokens {
                if let Some(c) = counts.get_mut(t as usize) {
                    *c += 1;
                }
            }
            for (v, &c) in x.iter_mut().zip(&counts) {
                if c > 0 {
                    *v -= p.params.presence_penalty + p.params.frequency_penalty * c as f32;
                }
            }
        }
        for &t in p.banned {
            if let Some(v) = x.get_mut(t as usize) {
                *v = f32::NEG_INFINITY;
            }
        }
        for v in x.iter_mut() {
            *v = sanitize(*v);
        }
        // Greedy: first maximum.
        let mut amax = 0usize;
        for i in 0..vocab {
            if x[i] > x[amax] || (x[amax] == f32::NEG_INFINITY && x[i] > f32::NEG_INFINITY) {
                amax = i;
            }
        }
        let m = x[amax];
        if p.params.temperature == 0.0 || p.params.top_k == 1 || !m.is_finite() {
            out.push(amax as u32);
            continue;
        }
        let inv_t = 1.0 / p.params.temperature;
        let w: Vec<u64> = x.iter().map(|&v| fixed_mass(v, m, inv_t)).collect();
        let total_all: u64 = w.iter().sum();
        let u = f64::from(p.uniform);
        let filtered = p.params.top_k > 0 || p.params.top_p < 1.0 || p.params.min_p > 0.0;
        if !filtered {
            let target = ((u * total_all as f64).floor() as u64).min(total_all - 1);
            let mut cum = 0u64;
            let mut pick = amax;
            for (i, &wi) in w.iter().enumerate() {
                cum += wi;
                if cum > target {
                    pick = i;
                    break;
                }
            }
            out.push(pick as u32);
            continue;
        }
        let mut order: Vec<usize> = (0..vocab).collect();
        order.sort_by(|&a, &b| fkey(x[b]).cmp(&fkey(x[a])).then(a.cmp(&b)));
        let n_cand = if p.params.top_k > 0 {
            p.params.top_k.min(vocab)
        } else {
            vocab
        };
        let cand = &order[..n_cand];
        let total: u64 = if p.params.top_k > 0 {
            cand.iter().map(|&i| w[i]).sum()
        } else {
            total_all
        };
        let mut keep = n_cand;
        if p.params.min_p > 0.0 {
            keep = cand
                .iter()
                .take_while(|&&i| {
                    ((x[i] - m) * inv_t).exp() >= p.params.min_p && x[i] > f32::NEG_INFINITY
                })
                .count()
                .max(1);
        }
        if p.params.top_p < 1.0 {
            let target = ((f64::from(p.params.top_p) * total as f64).ceil() as u64).max(1);
            let mut cum = 0u64;
            let mut k = 0;
            for &i in cand.iter().take(keep) {
                cum += w[i];
                k += 1;
                if cum >= target {
                    break;
                }
            }
            keep = keep.min(k.max(1));
        }
        let kept = &cand[..keep];
        let mass: u64 = kept.iter().map(|&i| w[i]).sum();
        let target = ((u * mass as f64).floor() as u64).min(mass.saturating_sub(1));
        let mut cum = 0u64;
        let mut pick = amax;
        for &i in kept {
            cum += w[i];
            if cum > target {
                pick = i;
                break;
            }
        }
        out.push(pick as u32);
    }
    Ok(out)
}
