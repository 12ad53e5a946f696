#!/usr/bin/env python3
"""Side-by-side peer for Lantern's GPU numbers: the same checkpoint through Hugging Face
transformers `generate` on the same GPU.

    python3 scripts/gpu/hf_peer_bench.py --model /dev/shm/llama-3.1-8b-random \\
        --batch-sizes 1,16,64 --input-len 1024 --output-len 128 --json hf.json

For each batch size B: B random prompts of exactly --input-len token ids (no padding), greedy
decoding of exactly --output-len new tokens (min_new_tokens = max_new_tokens, so EOS never ends
a row early), default dynamic KV cache, SDPA attention, bf16 weights. One warm-up generate per
batch size, then --repeats timed ones (median reported). Reported per batch size:

* prefill_ms: a generate of 1 new token (the prompt forward + one sample), i.e. time to first token;
* e2e_s: the whole generate;
* decode_ms_per_step: (e2e - prefill) / (output_len - 1), the per-token latency each row sees;
* output_tok_s: B * output_len / e2e.

This is plain `generate` (no torch.compile, no static cache): what a user of transformers gets
out of the box, not the fastest a tuned PyTorch stack can do.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import torch
from transformers import AutoModelForCausalLM


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def timed_generate(model, ids, new_tokens: int, device: str) -> float:
    sync(device)
    t0 = time.perf_counter()
    with torch.inference_mode():
        out = model.generate(
            input_ids=ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=new_tokens,
            min_new_tokens=new_tokens,
            do_sample=False,
            pad_token_id=0,
        )
    sync(device)
    dt = time.perf_counter() - t0
    if out.shape[1] != ids.shape[1] + new_tokens:
        raise RuntimeError(f"generated {out.shape[1] - ids.shape[1]} tokens, wanted {new_tokens}")
    return dt


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--batch-sizes", default="1,16,64")
    ap.add_argument("--input-len", type=int, default=1024)
    ap.add_argument("--output-len", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"])
    ap.add_argument("--attn", default="sdpa", help="attn_implementation (sdpa, eager, ...)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args()
    if args.output_len < 2:
        ap.error("--output-len must be at least 2")

    t0 = time.perf_counter()
    model = AutoModelForCausalLM.from_pretrained(
        args.model, dtype=getattr(torch, args.dtype), attn_implementation=args.attn
    ).to(args.device)
    model.eval()
    sync(args.device)
    load_s = time.perf_counter() - t0
    vocab = model.config.vocab_size
    # Ordinary (non-special) ids: Llama 3's specials start at 128000.
    hi = min(vocab, 128000)
    print(
        f"transformers {__import__('transformers').__version__}, torch {torch.__version__}, "
        f"{args.device} ({torch.cuda.get_device_name() if args.device.startswith('cuda') else 'cpu'}), "
        f"{args.dtype}, attn {args.attn}; loaded {args.model} in {load_s:.1f}s",
        flush=True,
    )
    g = torch.Generator().manual_seed(args.seed)
    results = []
    for b in [int(x) for x in args.batch_sizes.split(",") if x]:
        ids = torch.randint(16, hi, (b, args.input_len), generator=g).to(args.device)
        try:
            timed_generate(model, ids, 2, args.device)  # warm-up
            prefill = statistics.median(
                timed_generate(model, ids, 1, args.device) for _ in range(args.repeats)
            )
            e2e = statistics.median(
                timed_generate(model, ids, args.output_len, args.device) for _ in range(args.repeats)
            )
        except torch.OutOfMemoryError as e:
            print(f"batch {b}: out of memory ({e})", flush=True)
            results.append({"batch_size": b, "error": "out of memory"})
            torch.cuda.empty_cache()
            continue
        r = {
            "batch_size": b,
            "input_len": args.input_len,
            "output_len": args.output_len,
            "prefill_ms": prefill * 1e3,
            "e2e_s": e2e,
            "decode_ms_per_step": (e2e - prefill) / (args.output_len - 1) * 1e3,
            "output_tok_s": b * args.output_len / e2e,
        }
        if args.device.startswith("cuda"):
            r["max_memory_gib"] = torch.cuda.max_memory_allocated() / 2**30
        results.append(r)
        print(
            f"batch {b:4d}: prefill {r['prefill_ms']:9.1f} ms, decode {r['decode_ms_per_step']:7.2f} ms/step, "
            f"e2e {e2e:7.2f} s, output {r['output_tok_s']:9.1f} tok/s",
            flush=True,
        )
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"tool": "hf-transformers-generate", "model": args.model, "load_s": load_s,
                       "dtype": args.dtype, "attn": args.attn, "results": results}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
