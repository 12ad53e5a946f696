#!/usr/bin/env bash
# "LoRA enabled but unused" overhead and adapter-count scaling at the engine level (no HTTP):
# `lantern throughput` runs alternated A/B/C... for several rounds so machine drift hits every
# configuration alike. Writes benches/results/cpu-smollm2-lora-engine-overhead.txt.
#   cargo build --release && benches/run_lora_overhead.sh
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-target/release/lantern}
ADAPTERS=${ADAPTERS:-/tmp/lantern-bench-adapters}
ROUNDS=${ROUNDS:-3}
[ -d "$ADAPTERS/adapter-31" ] || python3 benches/make_random_adapters.py --out "$ADAPTERS" --count 32 --rank 16 >/dev/null
base=("$BIN" throughput --input-len 128 --output-len 32 --num-prompts 16 --concurrency 8 --json)
lora_flags() { local n=$1; for ((k = 0; k < n; k++)); do echo -n " --lora a$k=$ADAPTERS/adapter-$k"; done; }
declare -A cfgs=(
    [1-lora-off]=""
    [2-lora-on-unused]="--enable-lora --max-loras 8 --max-lora-rank 16"
    [3-1-adapter]="$(lora_flags 1) --max-loras 8 --max-lora-rank 16"
    [4-8-adapters]="$(lora_flags 8) --max-loras 8 --max-lora-rank 16"
)
{
    echo "machine: $(lscpu | sed -n 's/^Model name:\s*//p' | head -1), $(nproc) cores"
    echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "command: ${base[*]} [flags below], $ROUNDS rounds, configurations alternated"
    echo
    for r in $(seq 1 "$ROUNDS"); do
        for k in $(printf '%s\n' "${!cfgs[@]}" | sort); do
            # shellcheck disable=SC2086
            out=$("${base[@]}" ${cfgs[$k]} 2>/dev/null)
            echo "round $r $k load=$(cut -d' ' -f1 /proc/loadavg) $out"
        done
    done
} | tee /tmp/lora-overhead-raw.txt > benches/results/cpu-smollm2-lora-engine-overhead.txt
python3 - /tmp/lora-overhead-raw.txt <<'PY' | tee -a benches/results/cpu-smollm2-lora-engine-overhead.txt
import json, sys, statistics, collections
rows = collections.defaultdict(list)
for line in open(sys.argv[1]):
    if not line.startswith("round"):
        continue
    parts = line.split(" ", 4)
    rows[parts[2]].append(json.loads(parts[4]))
print("\nmedians over rounds:")
print(f"{'config':<18} {'out tok/s':>10} {'step ms':>8} {'decode tok/s/req':>17} {'prefill tok/s/req':>18}")
for k in sorted(rows):
    v = rows[k]
    med = lambda f: statistics.median(x[f] for x in v)
    print(f"{k:<18} {med('output_tokens_per_s'):>10.2f} {med('mean_step_ms'):>8.2f} {med('decode_tokens_per_s_per_request'):>17.2f} {med('prefill_tokens_per_s_per_request'):>18.1f}")
PY
