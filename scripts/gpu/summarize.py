#!/usr/bin/env python3
"""Summarise one scripts/gpu/run-all.sh run: reads the JSON files it left in --work and writes
--results (one combined JSON, per-request records dropped) and prints a short table.

    python3 scripts/gpu/summarize.py --work /tmp/lantern-gpu --model DIR --results results.json

Inputs (each optional; a missing one is reported as missing):
  bw.json                 {"copy_bytes_per_s": ...} from the torch device-to-device copy
  bench-<label>.json      `lantern bench --result-json` outputs (labels: check64, step-cN, rand-cN)
  hf.json                 scripts/gpu/hf_peer_bench.py --json
Decode step time of a `step-cN` run = median over requests of the server's decode time
(`lantern_timing.decode_s`) / (output tokens - 1): every request of the run decodes in the same
steps once the short prefills are done, so this is the engine's step time at batch N.
Floor = weight bytes (sum of the checkpoint's safetensors files) / measured copy bandwidth
(bytes read + written per second): the time to read every weight once.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import statistics
import sys


def load(path: str):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def median_or_none(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def fmt(x, spec="{:.1f}"):
    return "-" if x is None else spec.format(x)


def bench_summary(d: dict) -> dict:
    m = d.get("metrics", {})
    cfg = d.get("config", {})
    reqs = d.get("requests", [])
    steps = []
    for r in reqs:
        st = r.get("server_timing") or {}
        n = r.get("output_tokens") or 0
        if r.get("success") and st.get("decode_s") is not None and n > 1:
            steps.append(st["decode_s"] / (n - 1) * 1e3)

    def med(k):
        v = m.get(k) or {}
        return v.get("median")

    def pct(k, p):
        for q, v in (m.get(k) or {}).get("percentiles", []):
            if abs(q - p) < 1e-9:
                return v
        return None

    return {
        "label": d.get("label"),
        "concurrency": cfg.get("max_concurrency"),
        "num_prompts": cfg.get("num_prompts"),
        "input_len": cfg.get("input_len"),
        "output_len": cfg.get("output_len"),
        "completed": m.get("completed"),
        "failed": m.get("failed"),
        "failure_reasons": m.get("failure_reasons"),
        "duration_s": m.get("duration_s"),
        "output_tok_s": m.get("output_throughput"),
        "total_tok_s": m.get("total_token_throughput"),
        "ttft_ms_p50": med("ttft_ms"),
        "ttft_ms_p99": pct("ttft_ms", 99.0),
        "tpot_ms_p50": med("tpot_ms"),
        "tpot_ms_p99": pct("tpot_ms", 99.0),
        "itl_ms_p50": med("itl_ms"),
        "itl_ms_p99": pct("itl_ms", 99.0),
        "server_decode_step_ms_p50": median_or_none(steps),
    }


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--work", required=True)
    ap.add_argument("--model", default=None, help="checkpoint dir (for weight bytes)")
    ap.add_argument("--results", required=True)
    args = ap.parse_args()

    out: dict = {}
    weight_bytes = None
    if args.model and os.path.isdir(args.model):
        files = glob.glob(os.path.join(args.model, "*.safetensors"))
        if files:
            weight_bytes = sum(os.path.getsize(f) for f in files)
        cfg = load(os.path.join(args.model, "config.json"))
        if cfg:
            out["model_layers"] = cfg.get("num_hidden_layers")
    out["weight_bytes"] = weight_bytes
    bw = load(os.path.join(args.work, "bw.json")) or {}
    out["bandwidth"] = bw
    copy_bw = bw.get("copy_bytes_per_s")
    floor_ms = weight_bytes / copy_bw * 1e3 if weight_bytes and copy_bw else None
    out["decode_floor_ms"] = floor_ms

    benches = {}
    for f in sorted(glob.glob(os.path.join(args.work, "bench-*.json"))):
        d = load(f)
        if d is None:
            continue
        label = os.path.basename(f)[len("bench-"):-len(".json")]
        benches[label] = bench_summary(d)
    out["lantern_bench"] = benches
    hf = load(os.path.join(args.work, "hf.json"))
    out["hf_peer"] = hf
    with open(args.results, "w") as f:
        json.dump(out, f, indent=2)

    print(f"weights: {fmt(weight_bytes and weight_bytes / 1e9, '{:.2f}')} GB; "
          f"copy bandwidth: {fmt(copy_bw and copy_bw / 1e12, '{:.2f}')} TB/s; "
          f"decode floor (weights / bandwidth): {fmt(floor_ms, '{:.2f}')} ms")
    def split(label):
        # "<variant>.<kind>-c<N>" (run-all.sh since run 2) or "<kind>-c<N>" (run 1)
        return label.split(".", 1) if "." in label else ("default", label)

    variants = []
    for k in benches:
        v = split(k)[0]
        if v not in variants:
            variants.append(v)
    for v in variants:
        mine = {split(k)[1]: b for k, b in benches.items() if split(k)[0] == v}
        print(f"\n=== variant {v}")
        if "check64" in mine:
            b = mine["check64"]
            print(f"64 concurrent requests: {b['completed']} completed, {b['failed']} failed "
                  f"{b['failure_reasons'] or ''}")
        steps = sorted(((b["concurrency"] or 0, b) for k, b in mine.items() if k.startswith("step-")),
                       key=lambda cb: cb[0])
        if steps:
            print("decode step time, temperature 0 (server decode time / tokens, median over requests)")
            print(f"{'batch':>6} {'step ms':>9} {'x floor':>8} {'TPOT p50':>9} {'out tok/s':>10} {'failed':>6}")
            for c, b in steps:
                st = b["server_decode_step_ms_p50"]
                ratio = st / floor_ms if st and floor_ms else None
                print(f"{c:>6} {fmt(st, '{:.2f}'):>9} {fmt(ratio, '{:.2f}'):>8} {fmt(b['tpot_ms_p50'], '{:.2f}'):>9} "
                      f"{fmt(b['output_tok_s']):>10} {fmt(b['failed'], '{}'):>6}")
        for kind, title in (("rand-", "temperature 0"), ("sampled-c", "temperature 1 (sampled)"),
                            ("sampled-topp-", "temperature 1, top_p 0.9, top_k 50")):
            rand = sorted(((b["concurrency"] or 0, b) for k, b in mine.items() if k.startswith(kind)),
                          key=lambda cb: cb[0])
            if not rand:
                continue
            b0 = rand[0][1]
            print(f"lantern bench random {b0['input_len']} in / {b0['output_len']} out, {title}")
            print(f"{'conc':>5} {'reqs':>5} {'failed':>6} {'out tok/s':>10} {'TTFT p50':>9} {'TTFT p99':>9} "
                  f"{'TPOT p50':>9} {'TPOT p99':>9} {'ITL p50':>8} {'ITL p99':>8}")
            for c, b in rand:
                print(f"{c:>5} {fmt(b['completed'], '{}'):>5} {fmt(b['failed'], '{}'):>6} {fmt(b['output_tok_s']):>10} "
                      f"{fmt(b['ttft_ms_p50']):>9} {fmt(b['ttft_ms_p99']):>9} {fmt(b['tpot_ms_p50'], '{:.2f}'):>9} "
                      f"{fmt(b['tpot_ms_p99'], '{:.2f}'):>9} {fmt(b['itl_ms_p50']):>8} {fmt(b['itl_ms_p99']):>8}")
    if hf and hf.get("results"):
        print("\nHF transformers generate (same model, same GPU)")
        print(f"{'batch':>6} {'prefill ms':>11} {'decode ms/step':>15} {'out tok/s':>10}")
        for r in hf["results"]:
            if "error" in r:
                print(f"{r['batch_size']:>6} {r['error']}")
                continue
            print(f"{r['batch_size']:>6} {r['prefill_ms']:>11.1f} {r['decode_ms_per_step']:>15.2f} "
                  f"{r['output_tok_s']:>10.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
