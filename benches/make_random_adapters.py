"""Write N random-weight PEFT LoRA adapters for a base model's shapes (for benchmarks).

    python3 benches/make_random_adapters.py --out /tmp/adapters --count 32            # SmolLM2-135M
    python3 benches/make_random_adapters.py --out /tmp/adapters --count 8 --config config.json

Each adapter is a PEFT directory (adapter_config.json + adapter_model.safetensors, tensor
names as PEFT's save_pretrained writes them) targeting all seven projections with rank
--rank. Weights are N(0, std^2) with std chosen so that scaling * B @ A perturbs outputs
noticeably without drowning the base model. Needs numpy and safetensors only (no torch).
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np
from safetensors.numpy import save_file

# SmolLM2-135M-Instruct (the default model of `lantern serve`).
SMOLLM2 = dict(
    hidden_size=576,
    intermediate_size=1536,
    num_attention_heads=9,
    num_key_value_heads=3,
    num_hidden_layers=30,
)

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def shapes(cfg: dict) -> dict[str, tuple[int, int]]:
    """(in, out) of each target projection."""
    h = cfg["hidden_size"]
    i = cfg["intermediate_size"]
    heads = cfg["num_attention_heads"]
    kv = cfg.get("num_key_value_heads", heads)
    hd = cfg.get("head_dim") or h // heads
    return {
        "q_proj": (h, heads * hd),
        "k_proj": (h, kv * hd),
        "v_proj": (h, kv * hd),
        "o_proj": (heads * hd, h),
        "gate_proj": (h, i),
        "up_proj": (h, i),
        "down_proj": (i, h),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, type=Path, help="directory to create adapter-<k>/ in")
    ap.add_argument("--count", type=int, default=8)
    ap.add_argument("--rank", type=int, default=16)
    ap.add_argument("--alpha", type=float, default=32.0)
    ap.add_argument("--config", type=Path, help="base model config.json (default: SmolLM2-135M shapes)")
    ap.add_argument("--base-name", default="HuggingFaceTB/SmolLM2-135M-Instruct")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    cfg = json.loads(args.config.read_text()) if args.config else SMOLLM2
    dims = shapes(cfg)
    layers = cfg["num_hidden_layers"]
    scaling = args.alpha / args.rank
    for k in range(args.count):
        rng = np.random.default_rng(args.seed * 100_003 + k)
        d = args.out / f"adapter-{k}"
        d.mkdir(parents=True, exist_ok=True)
        tensors = {}
        for layer in range(layers):
            for t in TARGETS:
                fan_in, fan_out = dims[t]
                # delta = scaling * B @ A has entries of std ~ 0.3 / sqrt(fan_in):
                # small against the base weights, large enough to change greedy outputs.
                std = math.sqrt(0.3 / (scaling * math.sqrt(args.rank) * math.sqrt(fan_in)))
                mod = "self_attn" if t in ("q_proj", "k_proj", "v_proj", "o_proj") else "mlp"
                base = f"base_model.model.model.layers.{layer}.{mod}.{t}"
                tensors[f"{base}.lora_A.weight"] = rng.normal(0, std, (args.rank, fan_in)).astype(np.float32)
                tensors[f"{base}.lora_B.weight"] = rng.normal(0, std, (fan_out, args.rank)).astype(np.float32)
        save_file(tensors, str(d / "adapter_model.safetensors"))
        (d / "adapter_config.json").write_text(
            json.dumps(
                {
                    "peft_type": "LORA",
                    "task_type": "CAUSAL_LM",
                    "base_model_name_or_path": args.base_name,
                    "r": args.rank,
                    "lora_alpha": args.alpha,
                    "target_modules": TARGETS,
                    "use_rslora": False,
                    "use_dora": False,
                    "fan_in_fan_out": False,
                    "bias": "none",
                    "lora_dropout": 0.0,
                    "modules_to_save": None,
                },
                indent=2,
            )
        )
        print(d)


if __name__ == "__main__":
    main()
