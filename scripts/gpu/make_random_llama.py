#!/usr/bin/env python3
"""Write a random-weight Llama-3.1-8B checkpoint (Hugging Face layout) for GPU benchmarks.

    python3 scripts/gpu/make_random_llama.py --out /dev/shm/llama-3.1-8b-random
    python3 scripts/gpu/make_random_llama.py --out /tmp/l1 --layers 1          # quick smoke run
    python3 scripts/gpu/make_random_llama.py --out /tmp/tiny --tiny --device cpu  # tiny dims, CPU

The config is Llama-3.1-8B's own (hidden 4096, 32 layers, 32 heads, 8 KV heads, intermediate
14336, vocab 128256, llama3 rope scaling factor 8, theta 500000, 131072 positions, bf16), so
weight bytes, KV bytes per token and every matrix shape are the real model's; only the values
are random: N(0, std^2) matrices (default std 0.02, HF's initializer_range) and unit norm
weights, which keep the logits finite through all 32 layers. The tokenizer is the real Llama 3
tokenizer from tests/data/tokenizers/llama3 (128000 BPE tokens + 256 specials = 128256).

Weights are drawn on the GPU with torch (a few seconds) and written as bf16 safetensors shards
of about --shard-gb GB with model.safetensors.index.json; writing 16 GB is the slow part, so put
--out on tmpfs (/dev/shm) when it has room. Needs torch and safetensors (both on the GPU box).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import torch
from safetensors.torch import save_file

REPO = Path(__file__).resolve().parents[2]
TOKENIZER_DIR = REPO / "tests" / "data" / "tokenizers" / "llama3"

# meta-llama/Llama-3.1-8B config.json (values that matter to the model).
LLAMA_31_8B = {
    "architectures": ["LlamaForCausalLM"],
    "attention_bias": False,
    "attention_dropout": 0.0,
    "bos_token_id": 128000,
    "eos_token_id": 128001,
    "head_dim": 128,
    "hidden_act": "silu",
    "hidden_size": 4096,
    "initializer_range": 0.02,
    "intermediate_size": 14336,
    "max_position_embeddings": 131072,
    "mlp_bias": False,
    "model_type": "llama",
    "num_attention_heads": 32,
    "num_hidden_layers": 32,
    "num_key_value_heads": 8,
    "pretraining_tp": 1,
    "rms_norm_eps": 1e-05,
    "rope_scaling": {
        "factor": 8.0,
        "high_freq_factor": 4.0,
        "low_freq_factor": 1.0,
        "original_max_position_embeddings": 8192,
        "rope_type": "llama3",
    },
    "rope_theta": 500000.0,
    "tie_word_embeddings": False,
    "torch_dtype": "bfloat16",
    "use_cache": True,
    "vocab_size": 128256,
}

TINY = {  # same vocab (the real tokenizer), toy dims: for CPU smoke tests of this script
    "hidden_size": 64,
    "head_dim": 16,
    "intermediate_size": 128,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "num_hidden_layers": 2,
}


def tensor_shapes(cfg: dict) -> list[tuple[str, tuple[int, ...], bool]]:
    """(name, shape, is_norm) in checkpoint order."""
    h, i, v = cfg["hidden_size"], cfg["intermediate_size"], cfg["vocab_size"]
    d = cfg["head_dim"]
    q, kv = cfg["num_attention_heads"] * d, cfg["num_key_value_heads"] * d
    out = [("model.embed_tokens.weight", (v, h), False)]
    for layer in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{layer}."
        out += [
            (p + "input_layernorm.weight", (h,), True),
            (p + "self_attn.q_proj.weight", (q, h), False),
            (p + "self_attn.k_proj.weight", (kv, h), False),
            (p + "self_attn.v_proj.weight", (kv, h), False),
            (p + "self_attn.o_proj.weight", (h, q), False),
            (p + "post_attention_layernorm.weight", (h,), True),
            (p + "mlp.gate_proj.weight", (i, h), False),
            (p + "mlp.up_proj.weight", (i, h), False),
            (p + "mlp.down_proj.weight", (h, i), False),
        ]
    out += [("model.norm.weight", (h,), True), ("lm_head.weight", (v, h), False)]
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, type=Path, help="output directory (created)")
    ap.add_argument("--layers", type=int, default=None, help="number of decoder layers (default 32)")
    ap.add_argument("--tiny", action="store_true", help="toy dimensions (hidden 64) with the real vocab")
    ap.add_argument("--std", type=float, default=0.02, help="std of the random matrices")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--shard-gb", type=float, default=5.0, help="approximate shard size in GB")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                    help="where to draw the weights (default: cuda when available)")
    ap.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"])
    args = ap.parse_args()

    cfg = dict(LLAMA_31_8B)
    if args.tiny:
        cfg.update(TINY)
    if args.layers is not None:
        if args.layers < 1:
            ap.error("--layers must be at least 1")
        cfg["num_hidden_layers"] = args.layers
    cfg["torch_dtype"] = args.dtype
    dtype = getattr(torch, args.dtype)

    if not (TOKENIZER_DIR / "tokenizer.json").is_file():
        print(f"missing {TOKENIZER_DIR}/tokenizer.json", file=sys.stderr)
        return 1
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("model*.safetensors*"):
        old.unlink()

    t0 = time.time()
    gen = torch.Generator(device=args.device)
    gen.manual_seed(args.seed)
    elem = torch.finfo(dtype).bits // 8
    # Plan the shards first (sizes are known from the shapes), then draw and write one
    # shard at a time so host memory holds at most one shard.
    limit = int(args.shard_gb * 1e9)
    plan: list[list[tuple[str, tuple[int, ...], bool]]] = [[]]
    size = 0
    total_bytes = 0
    for name, shape, is_norm in tensor_shapes(cfg):
        nbytes = elem
        for s in shape:
            nbytes *= s
        if size > 0 and size + nbytes > limit:
            plan.append([])
            size = 0
        plan[-1].append((name, shape, is_norm))
        size += nbytes
        total_bytes += nbytes
    weight_map = {}
    t_draw = 0.0
    for k, entries in enumerate(plan):
        fname = (
            "model.safetensors"
            if len(plan) == 1
            else f"model-{k + 1:05d}-of-{len(plan):05d}.safetensors"
        )
        t1 = time.time()
        shard = {}
        for name, shape, is_norm in entries:
            if is_norm:
                t = torch.ones(shape, dtype=dtype)
            else:
                t = torch.randn(shape, generator=gen, device=args.device, dtype=torch.float32)
                t = t.mul_(args.std).to(dtype).cpu()
            shard[name] = t
            weight_map[name] = fname
        t_draw += time.time() - t1
        save_file(shard, str(out / fname), metadata={"format": "pt"})
        del shard
        print(f"  {fname} written ({time.time() - t0:.1f}s)", flush=True)
    if len(plan) > 1:
        index = {"metadata": {"total_size": total_bytes}, "weight_map": weight_map}
        (out / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n")
    (out / "config.json").write_text(json.dumps(cfg, indent=2) + "\n")
    gen_cfg = {
        "bos_token_id": cfg["bos_token_id"],
        "eos_token_id": cfg["eos_token_id"],
        "do_sample": False,
    }
    (out / "generation_config.json").write_text(json.dumps(gen_cfg, indent=2) + "\n")
    for f in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copyfile(TOKENIZER_DIR / f, out / f)
    params = total_bytes // elem
    print(
        f"wrote {out}: {cfg['num_hidden_layers']} layers, {params / 1e9:.3f}B params, "
        f"{total_bytes / 1e9:.2f} GB in {len(plan)} shard(s); "
        f"drawn on {args.device} in {t_draw:.1f}s, total {time.time() - t0:.1f}s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
