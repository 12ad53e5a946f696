#!/usr/bin/env python3
"""Writes crates/kv-events/tests/golden.json: KV-event batches encoded by vLLM's own msgspec
classes (vllm/distributed/kv_events.py of the vLLM wheel, see scripts/vllm_kv_events.py),
which the Rust test crates/kv-events/tests/golden.rs must reproduce byte for byte.

    python3 -m pip install msgspec pyzmq
    python3 scripts/kv_events_golden.py

Each case is built here from vLLM's classes; golden.rs builds the same events with Lantern's
types (keep the two lists in step). "map" cases use vLLM 0.34's classes as they are; "array"
cases the pre-#42892 array-like variants derived from them (`vllm_kv_events.array_layout`).
"""

import json
import sys
from pathlib import Path

import msgspec

sys.path.insert(0, str(Path(__file__).resolve().parent))
import vllm_kv_events  # noqa: E402

OUT = Path(__file__).resolve().parent.parent / "crates" / "kv-events" / "tests" / "golden.json"


def cases(kv):
    gpu = kv.MEDIUM_GPU
    # Base model, first blocks of a sequence: ints of every width (fixint, uint8, uint16,
    # uint32, uint64 >= 2^63), 32 tokens (array16), no LoRA, no salt.
    tokens = [1, 127, 128, 255, 256, 65535, 65536, 151643] + list(range(1000, 1024))
    stored_base = kv.BlockStored(
        block_hashes=[0x0123456789ABCDEF, 0xFEDCBA9876543210],
        parent_block_hash=None,
        token_ids=tokens,
        block_size=16,
        lora_id=None,
        medium=gpu,
        lora_name=None,
        extra_keys=[None, None],
        group_idx=0,
        kv_cache_spec_kind="full_attention",
    )
    # A LoRA adapter and a cache salt: the salt only in the first block's extra keys, the
    # adapter name in every block's; a parent hash.
    stored_lora = kv.BlockStored(
        block_hashes=[7, 2**64 - 1],
        parent_block_hash=2**63,
        token_ids=[5, 6, 7, 8],
        block_size=2,
        lora_id=3,
        medium=gpu,
        lora_name="sql-adapter-with-a-name-longer-than-31-bytes",
        extra_keys=[["sql-adapter-with-a-name-longer-than-31-bytes", "tenant-a"],
                    ["sql-adapter-with-a-name-longer-than-31-bytes"]],
        group_idx=0,
        kv_cache_spec_kind="full_attention",
    )
    removed = kv.BlockRemoved(block_hashes=[0xFEDCBA9876543210], medium=gpu, group_idx=0)
    cleared = kv.AllBlocksCleared()
    return [
        ("stored_removed_cleared", 1765000000.25, [stored_base, removed, cleared]),
        ("lora_and_salt", 1765000001.5, [stored_lora]),
        ("removed_only", 0.0, [removed, removed]),
    ]


def main():
    kv = vllm_kv_events.load()
    batch_cls_array, classes = vllm_kv_events.array_layout(kv)
    enc = msgspec.msgpack.Encoder()
    out = []
    for name, ts, events in cases(kv):
        # vLLM's publisher always sets data_parallel_rank (0 without DP).
        b = kv.KVEventBatch(ts=ts, events=events, data_parallel_rank=0)
        out.append({"name": name, "layout": "map", "hex": enc.encode(b).hex()})
        arr = [vllm_kv_events.to_array_event(classes, e) for e in events]
        b = batch_cls_array(ts=ts, events=arr, data_parallel_rank=0)
        out.append({"name": name, "layout": "array", "hex": enc.encode(b).hex()})
    doc = {
        "generated_by": "scripts/kv_events_golden.py",
        "vllm": vllm_kv_events.VLLM_VERSION,
        "msgspec": msgspec.__version__,
        "cases": out,
    }
    OUT.write_text(json.dumps(doc, indent=1) + "\n")
    print(f"wrote {len(out)} cases to {OUT}")


if __name__ == "__main__":
    main()
