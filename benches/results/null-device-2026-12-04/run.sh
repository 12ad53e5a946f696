#!/usr/bin/env bash
# Null-device benchmark of the host path: `lantern serve --null-device llama-3.1-8b:h200`
# (simulated Llama-3.1-8B bf16 steps on an H200 roofline) driven by `lantern bench` over
# HTTP/SSE, on this machine's CPUs. Reproduce with:
#   cargo build --release && benches/results/null-device-2026-12-04/run.sh
# Each run starts a fresh server; /metrics is scraped before and after the benchmark and
# the per-step host time (wall - simulated device time) is computed from the deltas.
set -euo pipefail
cd "$(dirname "$0")/../../.."
BIN=${BIN:-${CARGO_TARGET_DIR:-target}/release/lantern}
OUT=benches/results/null-device-2026-12-04
PORT=${PORT:-8011}
mkdir -p "$OUT"
{ echo "nproc: $(nproc)"; lscpu | head -20; free -g | head -2; uname -sr; } > "$OUT/machine.txt"

metrics() { curl -s "http://127.0.0.1:$PORT/metrics" | grep -E '^lantern_(engine_|generation_tokens_total)' ; }

# run NAME CONCURRENCY NUM_PROMPTS TEMPERATURE [extra bench args...]
run() {
    local name=$1 c=$2 n=$3 temp=$4; shift 4
    local serve=("$BIN" serve --null-device llama-3.1-8b:h200 --port "$PORT" --host 127.0.0.1
        --max-num-seqs 1024 --seed 0)
    "${serve[@]}" > "$OUT/$name.serve.log" 2>&1 &
    local pid=$!
    for _ in $(seq 100); do curl -sf "http://127.0.0.1:$PORT/health" >/dev/null && break; sleep 0.1; done
    local bench=("$BIN" bench --base-url "http://127.0.0.1:$PORT" --endpoint completions
        --dataset random --tokenizer tests/fixtures/tiny-llama --input-len 128 --output-len 192
        --range-ratio 0.33 --ignore-eos --temperature "$temp" --num-prompts "$n"
        --max-concurrency "$c" --request-rate inf --warmup "$c" --seed 0 --disable-progress
        --result-json "$OUT/$name.json" "$@")
    metrics > "$OUT/$name.metrics-before.txt"
    {
        echo "serve: ${serve[*]}"
        echo "bench: ${bench[*]}"
        echo "loadavg before: $(cat /proc/loadavg)"
        echo
        /usr/bin/time -f "bench client CPU: %U s user + %S s system over %e s" "${bench[@]}" 2>&1
    } > "$OUT/$name.txt"
    metrics > "$OUT/$name.metrics-after.txt"
    echo "loadavg after: $(cat /proc/loadavg)" >> "$OUT/$name.txt"
    read -r -a st < "/proc/$pid/stat"
    local tck; tck=$(getconf CLK_TCK)
    echo "server CPU (whole run incl. warm-up): ${st[13]}/$tck s user + ${st[14]}/$tck s system" >> "$OUT/$name.txt"
    kill -INT "$pid"; wait "$pid" || true
    python3 - "$OUT/$name" <<'PY' | tee -a "$OUT/$name.txt"
import sys, re, json
base = sys.argv[1]
def load(p):
    d = {}
    for line in open(p):
        m = re.match(r'(\w+)(\{[^}]*\})? (\S+)', line)
        if not m: continue
        key = m.group(1)
        ph = re.search(r'phase="(\w+)"', m.group(2) or '')
        if ph: key += ':' + ph.group(1)
        d[key] = float(m.group(3))
    return d
a, b = load(base + '.metrics-before.txt'), load(base + '.metrics-after.txt')
dl = {k: b[k] - a.get(k, 0.0) for k in b}
steps = dl['lantern_engine_steps_total']
wall = dl['lantern_engine_step_seconds_total']
sim = dl['lantern_engine_simulated_device_seconds_total']
toks = dl['lantern_generation_tokens_total']
per = lambda x: 1000 * x / steps
out = {
    "steps": int(steps),
    "generated_tokens": int(toks),
    "tokens_per_step": toks / steps,
    "mean_step_wall_ms": per(wall),
    "mean_simulated_device_ms": per(sim),
    "mean_host_ms": per(wall - sim),
    "host_fraction_of_simulated_step": (wall - sim) / sim,
    "phase_ms": {p: per(dl['lantern_engine_step_phase_seconds_total:' + p]) for p in ("schedule", "execute", "sample", "update")},
}
out["phase_ms"]["execute_minus_simulated"] = out["phase_ms"]["execute"] - out["mean_simulated_device_ms"]
print("engine step stats (from /metrics deltas):", json.dumps(out, indent=1))
json.dump(out, open(base + '.steps.json', 'w'), indent=1)
# The per-request records (ITL of every token) are megabytes: keep the summary only.
r = json.load(open(base + '.json'))
r['requests_dropped'] = len(r.pop('requests', []))
json.dump(r, open(base + '.json', 'w'), indent=1)
PY
}

# The same engine without HTTP: `lantern throughput` (fixed 128 in / 192 out).
for c in 64 256 1024; do
    cmd=("$BIN" throughput --null-device llama-3.1-8b:h200 --input-len 128 --output-len 192
        --num-prompts $((c * 4)) --concurrency "$c" --max-num-seqs 1024 --json)
    { echo "command: ${cmd[*]}"; echo "loadavg before: $(cat /proc/loadavg)";
      /usr/bin/time -f "CPU: %U s user + %S s system over %e s" "${cmd[@]}" 2>&1; } > "$OUT/throughput-c$c.txt"
done

run c64-t0 64 512 0
run c256-t0 256 1536 0
run c1024-t0 1024 4096 0
run c256-t1 256 1536 1
