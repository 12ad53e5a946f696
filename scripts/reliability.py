#!/usr/bin/env python3
"""Reliability check of `lantern serve` under hostile load, on loopback only, bounded in
time and count (issue 14). Starts the real binary on the tiny fixture model and runs:

1. storm: streams opened at once and dropped after their first chunk; afterwards nothing
   may stay running or waiting and no KV block may stay held (vllm:kv_cache_usage_perc 0);
2. overload: far more concurrent requests (with n > 1) than --max-num-seqs plus
   --max-waiting-requests; every answer must be 200 or 429 (never a 5xx or a dropped
   connection);
3. slow clients: connections that send half a request and stall; /health must keep
   answering quickly while they are open, and the server must close them after
   --header-read-timeout;
4. shutdown: SIGTERM with slow clients still connected ends the process by the deadline.

Prints one line per check (PASS/FAIL with numbers), the server's RSS before and after, and
exits 1 on any failure.

    python3 scripts/reliability.py --bin target/debug/lantern            # full
    python3 scripts/reliability.py --bin target/debug/lantern --short    # CI
"""
import argparse
import json
import os
import re
import resource
import signal
import socket
import statistics
import sys
import threading
import time
import urllib.error
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from lantern_server import free_port, wait_healthy  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODEL_DIR = os.path.join(ROOT, "tests", "fixtures", "tiny-llama")
NAME = "tiny"

FULL = {"storm": 300, "overload": 1500, "slow": 5000}
SHORT = {"storm": 60, "overload": 200, "slow": 300}

failures = []


def check(name, ok, detail):
    print(f"{'PASS' if ok else 'FAIL'} {name}: {detail}", flush=True)
    if not ok:
        failures.append(name)


def rss_mib(pid):
    """(current, peak) resident set of `pid` in MiB."""
    cur = peak = 0.0
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                cur = int(line.split()[1]) / 1024
            elif line.startswith("VmHWM:"):
                peak = int(line.split()[1]) / 1024
    return cur, peak


def http(base, method, path, body=None, timeout=60):
    """(status, body text); status 0 on a connection error."""
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(base + path, data=data, method=method)
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()
    except Exception as e:  # noqa: BLE001 (counted as a dropped connection)
        return 0, str(e)


def metric(base, name):
    _, text = http(base, "GET", "/metrics")
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            return float(line.rsplit(" ", 1)[1])
    return None


def run_threads(n, fn):
    out = [None] * n
    barrier = threading.Barrier(n)

    def worker(i):
        try:
            barrier.wait(timeout=60)
        except threading.BrokenBarrierError:
            pass
        out[i] = fn(i)

    ts = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(n)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(timeout=300)
    return out


def storm(base, port, n, wave):
    """`n` streams in waves of `wave` at once (what the queue admits)."""
    body = json.dumps({
        "model": NAME, "prompt": "Tell me a story about a lantern.", "max_tokens": 300,
        "ignore_eos": True, "stream": True,
    }).encode()
    request = (
        f"POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body

    def one(_):
        try:
            s = socket.create_connection(("127.0.0.1", port), timeout=60)
            s.sendall(request)
            got = b""
            while b"data: " not in got:
                chunk = s.recv(4096)
                if not chunk:
                    return got.split(b" ", 2)[1].decode() if b" " in got else "closed"
                got += chunk
                if got.startswith(b"HTTP/1.1 ") and not got.startswith(b"HTTP/1.1 200"):
                    return got.split(b" ", 2)[1].decode()
            status = got.split(b" ", 2)[1].decode()
            # Drop the connection abruptly (RST), as a crashed client would.
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
            s.close()
            return status
        except Exception as e:  # noqa: BLE001
            return f"error: {e}"

    def settled(limit):
        # The server notices a dropped stream at its next write, so the last streams of a
        # wave can still hold queue places for a moment after their clients are gone.
        t = time.time()
        while time.time() - t < limit:
            if (metric(base, "vllm:num_requests_running") == 0
                    and metric(base, "vllm:num_requests_waiting") == 0):
                return True
            time.sleep(0.05)
        return False

    t0 = time.time()
    results = []
    while len(results) < n:
        if results:
            settled(10)
        results += run_threads(min(wave, n - len(results)), one)
    first = sum(1 for r in results if r == "200")
    others = {r for r in results if r != "200"}
    # Everything the storm started must end and give its blocks back.
    drained = None
    t1 = time.time()
    while time.time() - t1 < 60:
        running = metric(base, "vllm:num_requests_running")
        waiting = metric(base, "vllm:num_requests_waiting")
        usage = metric(base, "vllm:kv_cache_usage_perc")
        if running == 0 and waiting == 0 and usage == 0:
            drained = time.time() - t1
            break
        time.sleep(0.2)
    # Each wave starts once the last one's aborts left the queue (a wave fills the queue
    # exactly); a stray 429 is still a right answer, anything else (5xx, a dropped
    # connection) is not.
    refused = sum(1 for r in results if r == "429")
    check(
        "storm",
        first + refused == n and first >= 0.9 * n and drained is not None,
        f"{n} streams ({wave} at a time) dropped after their first chunk ({first} got one; others: "
        f"{sorted(others) or 'none'}) in {t1 - t0:.1f} s; "
        + (f"all aborted and every KV block free {drained:.2f} s later" if drained is not None
           else f"not drained after 60 s: running {running}, waiting {waiting}, "
                f"kv usage {usage}"),
    )


def overload(base, n, max_num_seqs, max_waiting):
    def one(i):
        body = {
            "model": NAME, "prompt": f"Request {i}: say something.", "max_tokens": 16,
            "ignore_eos": True, "n": 1 + i % 4,
        }
        t = time.time()
        status, text = http(base, "POST", "/v1/completions", body, timeout=300)
        return status, time.time() - t, text

    t0 = time.time()
    results = run_threads(n, one)
    wall = time.time() - t0
    counts = {}
    for status, _, _ in results:
        counts[status] = counts.get(status, 0) + 1
    ok_lat = sorted(t for s, t, _ in results if s == 200)
    bad = [text[:200] for s, _, text in results if s not in (200, 429)]
    p = (lambda q: ok_lat[min(len(ok_lat) - 1, int(q * len(ok_lat)))] if ok_lat else 0)
    check(
        "overload",
        not bad and counts.get(200, 0) > 0,
        f"{n} concurrent requests (n 1-4) against --max-num-seqs {max_num_seqs} "
        f"--max-waiting-requests {max_waiting}: statuses {dict(sorted(counts.items()))} "
        f"in {wall:.1f} s; 200 latency p50 {p(0.5):.2f} s p99 {p(0.99):.2f} s"
        + (f"; unexpected: {bad[:3]}" if bad else ""),
    )
    healthy, _ = http(base, "GET", "/health")
    check("overload: healthy afterwards", healthy == 200, f"/health {healthy}")


def slow_clients(base, port, n, header_timeout):
    socks = []
    refused = 0
    for i in range(n):
        try:
            s = socket.create_connection(("127.0.0.1", port), timeout=5)
            s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\n")
            socks.append(s)
        except OSError:
            refused += 1
    # The server keeps answering while they stall.
    lat = []
    for _ in range(20):
        t = time.time()
        status, _ = http(base, "GET", "/health", timeout=10)
        lat.append((status, time.time() - t))
        time.sleep(0.05)
    worst = max(t for _, t in lat)
    all_ok = all(s == 200 for s, _ in lat)
    check(
        "slow clients: server answers",
        all_ok and worst < 1.0,
        f"{len(socks)} stalled connections open ({refused} refused); /health 20 times: "
        f"median {statistics.median(t for _, t in lat) * 1000:.1f} ms, "
        f"worst {worst * 1000:.1f} ms, all 200: {all_ok}",
    )
    # And closes them after the header timeout.
    time.sleep(header_timeout + 2)
    closed = 0
    for s in socks:
        s.settimeout(0.5)
        try:
            # Closed: end of stream, maybe after an error response.
            data = s.recv(4096)
            while data:
                data = s.recv(4096)
            closed += 1
        except (socket.timeout, TimeoutError):
            pass
        except OSError:
            closed += 1
        finally:
            s.close()
    check(
        "slow clients: closed",
        closed == len(socks),
        f"{closed} of {len(socks)} closed by the server within "
        f"--header-read-timeout {header_timeout} s + 2 s",
    )


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bin", default=os.path.join(ROOT, "target", "debug", "lantern"))
    ap.add_argument("--short", action="store_true", help="the CI version (smaller counts)")
    ap.add_argument("--log", default="/tmp/lantern-reliability.log")
    args = ap.parse_args()
    counts = SHORT if args.short else FULL
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(hard, counts["slow"] * 2 + 1024)
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    counts["slow"] = min(counts["slow"], want - 1024)

    max_num_seqs, max_waiting, header_timeout, shutdown_timeout = 8, 32, 3, 5
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log = open(args.log, "w")
    import subprocess

    proc = subprocess.Popen(
        [args.bin, "serve", "--model", MODEL_DIR, "--served-model-name", NAME,
         "--host", "127.0.0.1", "--port", str(port), "--kv-cache-memory", "64MiB",
         "--max-num-seqs", str(max_num_seqs), "--max-waiting-requests", str(max_waiting),
         "--header-read-timeout", str(header_timeout), "--body-read-timeout", "5",
         "--shutdown-timeout", str(shutdown_timeout), "--max-connections", "20000"],
        env=dict(os.environ, RUST_LOG="warn", HF_HUB_OFFLINE="1"),
        stdout=subprocess.DEVNULL, stderr=log,
    )
    t_start = time.time()
    try:
        wait_healthy(base, proc, timeout=120)
        rss0 = rss_mib(proc.pid)
        print(f"server up (pid {proc.pid}); RSS {rss0[0]:.0f} MiB; counts {counts}", flush=True)
        storm(base, port, counts["storm"], max_num_seqs + max_waiting)
        overload(base, counts["overload"], max_num_seqs, max_waiting)
        slow_clients(base, port, counts["slow"], header_timeout)
        rss1 = rss_mib(proc.pid)
        check("alive", proc.poll() is None, f"server still running after {time.time() - t_start:.0f} s")
        print(f"RSS: {rss0[0]:.0f} MiB at start, {rss1[0]:.0f} MiB after the load, peak {rss1[1]:.0f} MiB",
              flush=True)
        # Shutdown with stalled clients connected ends by the deadline.
        stalled = [socket.create_connection(("127.0.0.1", port)) for _ in range(50)]
        for s in stalled:
            s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{")
        t = time.time()
        proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(timeout=shutdown_timeout + 10)
        except subprocess.TimeoutExpired:
            code = None
        took = time.time() - t
        check(
            "shutdown",
            code == 0,
            f"SIGTERM with 50 stalled clients: exit {code} after {took:.1f} s "
            f"(--shutdown-timeout {shutdown_timeout})",
        )
        for s in stalled:
            s.close()
    finally:
        if proc.poll() is None:
            proc.kill()
        log.close()
    panics = [line for line in open(args.log) if re.search(r"panicked|ERROR", line)]
    check("log", not panics, f"{len(panics)} panics or errors in {args.log}" +
          (f": {panics[:2]}" if panics else ""))
    print(f"{'FAILED: ' + ', '.join(failures) if failures else 'all checks passed'}")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
