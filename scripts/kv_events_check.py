#!/usr/bin/env python3
"""KV-cache events check for `lantern serve`, with an independent subscriber.

Starts the real server on the tiny fixture model (tests/fixtures/tiny-llama, with LoRA
adapter lora-a as `sql`) with a KV cache small enough that the workload evicts, KV-cache
events on (`--kv-events-config`, a ZeroMQ PUB socket on a free port) and the debug endpoints
on, then subscribes with pyzmq and decodes every message with vLLM's own msgspec classes
(`KVEventBatch`, `BlockStored`, `BlockRemoved`, `AllBlocksCleared` from
vllm/distributed/kv_events.py of the vLLM wheel; see scripts/vllm_kv_events.py), never
with a copy of Lantern's encoder. From the events alone it rebuilds the set of cached block
hashes, and after every phase of the workload compares it with the engine's own block pool
(`GET /debug/kv_cache_blocks`, after waiting for the batch it names):

  1. distinct prompts;
  2. prompts sharing long prefixes (prefix hits: nothing is stored twice);
  3. enough long prompts to evict (BlockRemoved must appear);
  4. the LoRA adapter and a cache salt (lora_id / lora_name / extra_keys as vLLM sends them);
  5. POST /reset_prefix_cache (AllBlocksCleared: the set must end empty).

It also checks the three frames (topic, 8-byte big-endian sequence numbers without gaps,
payload), the fields of every event, that root blocks carry the tokens of a sent prompt, and
that nothing was dropped (`lantern_kv_events_dropped_total` is 0). With `--layout array` the
server runs with `--kv-events-layout array` and the payloads are decoded with the array-like
variants of vLLM's classes (the pre-#42892 layout); `--layout both` (the default) runs both.

    python3 -m pip install pyzmq msgspec      # once
    python3 scripts/kv_events_check.py [--bin target/debug/lantern] [--layout map|array|both]
        [--dump-payloads FILE]   # every payload received, one "LAYOUT HEX" line each, to feed
                                 # other decoders

The first run downloads the vLLM wheel (no dependencies) once to take kv_events.py from it
(~/.cache/lantern/vllm-kv-events/). Prints one line per check and a closing
"N passed, N failed" line; exits 1 on failure.
"""
import argparse
import concurrent.futures
import json
import os
import random
import sys
import threading
import time
import urllib.error
import urllib.request

import msgspec
import zmq

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import vllm_kv_events  # noqa: E402
from lantern_server import free_port, start, stop, wait_healthy  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODEL = os.path.join(ROOT, "tests", "fixtures", "tiny-llama")
LORA = os.path.join(MODEL, "lora-a")
TOPIC = "kv@lantern-check@tiny-llama"
BLOCK_SIZE = 16
# 2 layers x (K, V) x 2 KV heads x head_dim 16 x 16 tokens x 4 bytes (f32) = 8 KiB a block;
# 40 blocks (39 usable) make the eviction phase evict.
KV_CACHE_BYTES = 40 * 8192

results = []


def check(name, ok, detail=""):
    results.append(bool(ok))
    print(f"{'PASS' if ok else 'FAIL'} {name}{': ' + detail if detail and not ok else ''}", flush=True)
    return ok


def http(base, method, path, body=None, timeout=60):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(base + path, data=data, method=method,
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            raw = r.read()
            return r.status, (json.loads(raw) if raw and path != "/metrics" else raw)
    except urllib.error.HTTPError as e:
        return e.code, e.read()


class Subscriber:
    """A pyzmq SUB socket on a thread, decoding every message with vLLM's classes."""

    def __init__(self, endpoint, decoder):
        self.ctx = zmq.Context()
        self.sock = self.ctx.socket(zmq.SUB)
        self.sock.setsockopt(zmq.SUBSCRIBE, TOPIC.encode())
        self.sock.setsockopt(zmq.RCVTIMEO, 100)
        self.sock.connect(endpoint)
        self.decoder = decoder
        self.lock = threading.Lock()
        self.batches = []  # (seq, KVEventBatch)
        self.payloads = []  # raw third frames
        self.errors = []
        self.running = True
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self):
        while self.running:
            try:
                frames = self.sock.recv_multipart()
            except zmq.Again:
                continue
            try:
                if len(frames) != 3:
                    raise ValueError(f"{len(frames)} frames")
                topic, seq, payload = frames
                if topic != TOPIC.encode():
                    raise ValueError(f"topic {topic!r}")
                if len(seq) != 8:
                    raise ValueError(f"sequence frame of {len(seq)} bytes")
                batch = self.decoder.decode(payload)
                with self.lock:
                    self.batches.append((int.from_bytes(seq, "big"), batch))
                    self.payloads.append(payload)
            except Exception as e:  # noqa: BLE001 (recorded, reported by the checks)
                with self.lock:
                    self.errors.append(repr(e))

    def taken(self, start):
        with self.lock:
            return list(self.batches[start:])

    def wait_for_seq(self, seq, timeout=20):
        t0 = time.time()
        while time.time() - t0 < timeout:
            with self.lock:
                if self.batches and self.batches[-1][0] >= seq:
                    return True
            time.sleep(0.02)
        return False

    def close(self):
        self.running = False
        self.thread.join()
        self.sock.close(linger=0)
        self.ctx.term()


class Mirror:
    """The prefix cache as a subscriber knows it, rebuilt from events, with checks."""

    def __init__(self, kv, classes, prompts):
        self.kv = kv
        self.stored_cls = classes["BlockStored"]
        self.removed_cls = classes["BlockRemoved"]
        self.cleared_cls = classes["AllBlocksCleared"]
        self.hashes = set()
        self.prompts = prompts  # every prompt sent, for the token check
        self.problems = []
        self.counts = {"stored": 0, "removed": 0, "cleared": 0, "lora": 0, "salted": 0}
        self.next_seq = None
        self.gaps = []

    def apply(self, seq, batch):
        if self.next_seq is not None and seq != self.next_seq:
            self.gaps.append((self.next_seq, seq))
        self.next_seq = seq + 1
        if batch.data_parallel_rank != 0 or not isinstance(batch.ts, float):
            self.problems.append(f"batch {seq}: ts {batch.ts!r}, rank {batch.data_parallel_rank!r}")
        if not batch.events:
            self.problems.append(f"batch {seq} is empty")
        for ev in batch.events:
            if isinstance(ev, self.stored_cls):
                self.stored(seq, ev)
            elif isinstance(ev, self.removed_cls):
                self.counts["removed"] += 1
                if ev.medium != "GPU" or ev.group_idx != 0:
                    self.problems.append(f"BlockRemoved fields {ev}")
                for h in ev.block_hashes:
                    if h not in self.hashes:
                        self.problems.append(f"batch {seq}: removed {h}, never stored")
                    self.hashes.discard(h)
            elif isinstance(ev, self.cleared_cls):
                self.counts["cleared"] += 1
                self.hashes.clear()
            else:
                self.problems.append(f"unexpected event {ev!r}")

    def stored(self, seq, ev):
        self.counts["stored"] += 1
        n = len(ev.block_hashes)
        bad = []
        if not all(isinstance(h, int) and 0 <= h < 2**64 for h in ev.block_hashes):
            bad.append("hashes are not 64-bit ints")
        if ev.block_size != BLOCK_SIZE or len(ev.token_ids) != n * BLOCK_SIZE:
            bad.append(f"{len(ev.token_ids)} tokens for {n} blocks of {ev.block_size}")
        if ev.medium != "GPU" or ev.group_idx != 0 or ev.kv_cache_spec_kind != "full_attention":
            bad.append(f"medium {ev.medium!r}, group {ev.group_idx!r}, kind {ev.kv_cache_spec_kind!r}")
        if ev.extra_keys is None or len(ev.extra_keys) != n:
            bad.append(f"extra_keys {ev.extra_keys!r}")
        elif ev.lora_name is not None:
            self.counts["lora"] += 1
            if ev.lora_id is None or any(k is None or k[0] != ev.lora_name for k in ev.extra_keys):
                bad.append(f"LoRA keys {ev.lora_id!r} {ev.extra_keys!r}")
        elif ev.lora_id is not None:
            bad.append("lora_id without lora_name")
        if ev.extra_keys and ev.extra_keys[0] and ev.parent_block_hash is None:
            salt = [k for k in ev.extra_keys[0] if k != ev.lora_name]
            if salt:
                self.counts["salted"] += 1
        if ev.parent_block_hash is not None and ev.extra_keys:
            if any(k != ev.lora_name for k in (ev.extra_keys[0] or [])):
                bad.append("a cache salt outside a sequence's first block")
        if ev.parent_block_hash is None:
            first = list(ev.token_ids[:BLOCK_SIZE])
            if not any(p[:BLOCK_SIZE] == first for p in self.prompts):
                bad.append("a root block whose tokens start no prompt sent")
        for h in ev.block_hashes:
            if h in self.hashes:
                bad.append(f"hash {h} stored twice")
            self.hashes.add(h)
        if bad:
            self.problems.append(f"batch {seq} BlockStored: " + "; ".join(bad))


def complete(base, prompt, model, max_tokens=4, salt=None):
    body = {"model": model, "prompt": prompt, "max_tokens": max_tokens, "temperature": 0}
    if salt is not None:
        body["cache_salt"] = salt
    status, out = http(base, "POST", "/v1/completions", body)
    if status != 200:
        raise RuntimeError(f"completion failed: {status} {out!r}")
    return out


def run_phase(base, requests, prompts, workers=4):
    for r in requests:
        prompts.append(r["prompt"])
    with concurrent.futures.ThreadPoolExecutor(workers) as ex:
        list(ex.map(lambda r: complete(base, **r), requests))


def compare(name, base, sub, mirror, consumed):
    status, blocks = http(base, "GET", "/debug/kv_cache_blocks")
    if not check(f"{name}: GET /debug/kv_cache_blocks", status == 200, repr(blocks)):
        return consumed
    last = blocks["last_event_seq"]
    if last is not None:
        check(f"{name}: batch {last} arrives", sub.wait_for_seq(last))
    for seq, batch in sub.taken(consumed):
        mirror.apply(seq, batch)
        consumed += 1
    engine = set(blocks["block_hashes"])
    check(f"{name}: no subscriber errors", not sub.errors, "; ".join(sub.errors[:3]))
    check(f"{name}: events are well-formed", not mirror.problems, "; ".join(mirror.problems[:3]))
    check(f"{name}: sequence numbers have no gaps", not mirror.gaps, repr(mirror.gaps[:3]))
    check(
        f"{name}: cached blocks from events == engine's block pool ({len(engine)} blocks)",
        mirror.hashes == engine,
        f"only in events {len(mirror.hashes - engine)}, only in engine {len(engine - mirror.hashes)}",
    )
    mirror.problems.clear()
    return consumed


def run(binary, layout, log, dump=None):
    kv = vllm_kv_events.load()
    if layout == "map":
        decoder = msgspec.msgpack.Decoder(kv.KVEventBatch)
        classes = {"BlockStored": kv.BlockStored, "BlockRemoved": kv.BlockRemoved,
                   "AllBlocksCleared": kv.AllBlocksCleared}
    else:
        batch_cls, classes = vllm_kv_events.array_layout(kv)
        decoder = msgspec.msgpack.Decoder(batch_cls)
    zport = free_port()
    cfg = {"enable_kv_cache_events": True, "publisher": "zmq",
           "endpoint": f"tcp://*:{zport}", "topic": TOPIC}
    proc, base = start(binary, "", log, [
        "--model", MODEL, "--device", "cpu", "--block-size", str(BLOCK_SIZE),
        "--kv-cache-memory", str(KV_CACHE_BYTES), "--max-num-seqs", "8",
        "--lora", f"sql={LORA}", "--enable-debug-endpoints",
        "--kv-events-config", json.dumps(cfg), "--kv-events-layout", layout,
    ])
    sub = None
    try:
        wait_healthy(base, proc, timeout=120)
        print(f"-- layout {layout}: server {base}, events on tcp://127.0.0.1:{zport}", flush=True)
        sub = Subscriber(f"tcp://127.0.0.1:{zport}", decoder)
        # PUB/SUB joins late: reset the (empty) prefix cache until its AllBlocksCleared
        # arrives, so that the subscriber sees every later event.
        joined = False
        for _ in range(100):
            status, _ = http(base, "POST", "/reset_prefix_cache")
            if status != 200:
                break
            time.sleep(0.1)
            if sub.taken(0):
                joined = True
                break
        check(f"[{layout}] subscriber joined (AllBlocksCleared received)", joined,
              "; ".join(sub.errors[:3]) or "no message")
        if not joined:
            return
        # Start from the first batch after the join.
        consumed = len(sub.taken(0))
        mirror = Mirror(kv, classes, [])
        mirror.next_seq = sub.taken(0)[-1][0] + 1
        rng = random.Random(42)
        name = MODEL

        def prompt(n):
            return [rng.randrange(3, 512) for _ in range(n)]

        # 1. distinct prompts (1-3 full blocks each, plus a partial one).
        run_phase(base, [{"prompt": prompt(rng.randrange(20, 60)), "model": name}
                         for _ in range(8)], mirror.prompts)
        consumed = compare(f"[{layout}] 1 distinct prompts", base, sub, mirror, consumed)
        check(f"[{layout}] 1: blocks were stored", mirror.counts["stored"] > 0)

        # 2. shared prefixes: 4 blocks in common, distinct tails; sent one by one first (so
        # later ones hit), then concurrently.
        shared = prompt(4 * BLOCK_SIZE)
        reqs = [{"prompt": shared + prompt(rng.randrange(5, 40)), "model": name} for _ in range(8)]
        run_phase(base, reqs[:2], mirror.prompts, workers=1)
        run_phase(base, reqs[2:], mirror.prompts)
        consumed = compare(f"[{layout}] 2 shared prefixes", base, sub, mirror, consumed)
        status, m = http(base, "GET", "/metrics")
        hits = [l for l in m.decode().splitlines() if l.startswith("lantern_prefix_cache_hits_total")]
        check(f"[{layout}] 2: the shared prefix hit", hits and float(hits[0].split()[-1]) > 0, repr(hits))

        # 3. eviction: far more distinct blocks than the cache holds (39 usable blocks).
        run_phase(base, [{"prompt": prompt(rng.randrange(80, 120)), "model": name, "max_tokens": 8}
                         for _ in range(16)], mirror.prompts)
        consumed = compare(f"[{layout}] 3 eviction", base, sub, mirror, consumed)
        check(f"[{layout}] 3: blocks were evicted (BlockRemoved)", mirror.counts["removed"] > 0)

        # 4. the LoRA adapter, and cache salts (with and without the adapter).
        lora_prompt = prompt(3 * BLOCK_SIZE + 5)
        run_phase(base, [
            {"prompt": lora_prompt, "model": "sql"},
            {"prompt": lora_prompt, "model": name, "salt": "tenant-a"},
            {"prompt": lora_prompt, "model": "sql", "salt": "tenant-b"},
            {"prompt": prompt(40), "model": "sql"},
        ], mirror.prompts, workers=1)
        consumed = compare(f"[{layout}] 4 LoRA and cache salt", base, sub, mirror, consumed)
        check(f"[{layout}] 4: LoRA blocks carry lora_id and lora_name", mirror.counts["lora"] >= 2)
        check(f"[{layout}] 4: salted first blocks carry the salt in extra_keys", mirror.counts["salted"] >= 2)

        # 5. reset: AllBlocksCleared empties the subscriber's view, as the engine's.
        status, body = http(base, "POST", "/reset_prefix_cache")
        check(f"[{layout}] 5: POST /reset_prefix_cache", status == 200, repr(body))
        cleared = mirror.counts["cleared"]
        consumed = compare(f"[{layout}] 5 reset", base, sub, mirror, consumed)
        check(f"[{layout}] 5: AllBlocksCleared received, nothing cached",
              mirror.counts["cleared"] == cleared + 1 and not mirror.hashes)

        status, m = http(base, "GET", "/metrics")
        dropped = [l for l in m.decode().splitlines() if l.startswith("lantern_kv_events_dropped_total")]
        check(f"[{layout}] no events dropped", dropped and float(dropped[0].split()[-1]) == 0, repr(dropped))
        print(f"   events: {mirror.counts}", flush=True)
    finally:
        if sub is not None:
            sub.close()
            if dump is not None:
                with open(dump, "a") as f:
                    for p in sub.payloads:
                        f.write(f"{layout} {p.hex()}\n")
        stop(proc)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bin", default=os.path.join(ROOT, "target", "debug", "lantern"))
    ap.add_argument("--layout", choices=["map", "array", "both"], default="both")
    ap.add_argument("--dump-payloads", metavar="FILE", help="append every payload received to FILE")
    args = ap.parse_args()
    if args.dump_payloads:
        open(args.dump_payloads, "w").close()
    layouts = ["map", "array"] if args.layout == "both" else [args.layout]
    for layout in layouts:
        try:
            run(args.bin, layout, f"/tmp/lantern-kv-events-{layout}.log", args.dump_payloads)
        except Exception as e:  # noqa: BLE001
            check(f"[{layout}] run", False, repr(e))
    failed = results.count(False)
    print(f"{len(results) - failed} passed, {failed} failed")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
