#!/usr/bin/env bash
# Multi-LoRA CPU benchmarks (issue 6) for the default model (SmolLM2-135M-Instruct, GGUF Q4_1
# dequantized to f32) with random rank-16 adapters on all seven projections:
#   cargo build --release && benches/run_lora_results.sh
# Writes benches/results/cpu-smollm2-lora-*.{txt,json} and cpu-smollm2-lora-load-latency.txt.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-target/release/lantern}
OUT=benches/results
ADAPTERS=${ADAPTERS:-/tmp/lantern-bench-adapters}
MODEL=${MODEL:-$HOME/.cache/lantern/SmolLM2-135M-Instruct.Q4_1.gguf}
mkdir -p "$OUT"
[ -f "$MODEL" ] || MODEL=$(scripts/fetch-default-model.sh | tail -n 1)
[ -d "$ADAPTERS/adapter-31" ] || python3 benches/make_random_adapters.py --out "$ADAPTERS" --count 32 --rank 16 >/dev/null
machine="$(lscpu | sed -n 's/^Model name:\s*//p' | head -1), $(nproc) cores, $(free -g | awk '/Mem:/{print $2}') GiB RAM, $(uname -sr)"

# The same load for every run: 32 random 128-token prompts, 32 output tokens, 8 at a time.
load=(--embedded --model "$MODEL" --endpoint completions --ignore-eos --seed 0 --disable-progress
      --input-len 128 --output-len 32 --num-prompts 32 --max-concurrency 8 --request-rate inf --warmup 2)

lora_flags() { # lora_flags N -> "--lora adapter-0=DIR ... --lora adapter-(N-1)=DIR"
    local n=$1 s=""
    for ((k = 0; k < n; k++)); do s+=" --lora adapter-$k=$ADAPTERS/adapter-$k"; done
    echo "$s"
}
names() { # names N -> adapter-0,adapter-1,...
    local n=$1 s=""
    for ((k = 0; k < n; k++)); do s+="${s:+,}adapter-$k"; done
    echo "$s"
}

run() {
    local name=$1; shift
    local cmd=("$BIN" bench "${load[@]}" "$@" --result-json "$OUT/$name.json")
    {
        echo "machine: $machine"
        echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
        echo "load average before the run (other work on the machine): $(cut -d' ' -f1-3 /proc/loadavg)"
        echo "command: ${cmd[*]}"
        echo
        "${cmd[@]}" 2>&1
    } | tee "$OUT/$name.txt"
}

# Base model only: LoRA off, then LoRA on (8 slots) but no request uses an adapter.
run cpu-smollm2-lora-off-base --dataset random
run cpu-smollm2-lora-on-unused --dataset random --serve-args "--enable-lora --max-loras 8 --max-lora-rank 16"
# 1, 8 and 32 adapters, uniformly mixed; 8 device slots (32 adapters: slots are swapped).
run cpu-smollm2-lora-1-adapter --dataset lora --lora-models "$(names 1)" \
    --serve-args "$(lora_flags 1) --max-loras 8 --max-lora-rank 16"
run cpu-smollm2-lora-8-adapters --dataset lora --lora-models "$(names 8)" \
    --serve-args "$(lora_flags 8) --max-loras 8 --max-lora-rank 16"
run cpu-smollm2-lora-32-adapters --dataset lora --lora-models "$(names 32)" \
    --serve-args "$(lora_flags 32) --max-loras 8 --max-cpu-loras 32 --max-lora-rank 16"

# Load and swap latency: load 8 adapters over HTTP (disk -> host, validated), then alternate
# requests over them with one device slot so that every request swaps the slot (host ->
# device), and read the engine's own counters from /metrics.
port=18123
"$BIN" serve --model "$MODEL" --port $port --host 127.0.0.1 --enable-lora --max-loras 1 \
    --max-cpu-loras 8 --max-lora-rank 16 >/tmp/lantern-lora-latency.log 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null || true' EXIT
for _ in $(seq 1 600); do curl -fs "localhost:$port/health" >/dev/null 2>&1 && break; sleep 0.2; done
{
    echo "machine: $machine"
    echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "server: $BIN serve --model $MODEL --enable-lora --max-loras 1 --max-cpu-loras 8 --max-lora-rank 16"
    echo "adapters: rank 16, all 7 projections, 30 layers ($(du -sh "$ADAPTERS/adapter-0" | cut -f1) of f32 safetensors each)"
    echo
    echo "POST /v1/load_lora_adapter (read from disk, validate, keep in host memory), seconds:"
    for k in 0 1 2 3 4 5 6 7; do
        curl -s -o /dev/null -w "  adapter-$k: %{time_total}\n" "localhost:$port/v1/load_lora_adapter" \
            -H 'Content-Type: application/json' \
            -d "{\"lora_name\": \"adapter-$k\", \"lora_path\": \"$ADAPTERS/adapter-$k\"}"
    done
    echo
    echo "16 sequential 1-token completions alternating over the 8 adapters (1 device slot):"
    for r in $(seq 0 15); do
        curl -s -o /dev/null -w "  request $r (adapter-$((r % 8))): %{time_total} s\n" "localhost:$port/v1/completions" \
            -H 'Content-Type: application/json' \
            -d "{\"model\": \"adapter-$((r % 8))\", \"prompt\": \"Hello\", \"max_tokens\": 1}"
    done
    echo
    echo "engine counters (/metrics):"
    curl -s "localhost:$port/metrics" | grep -E '^lantern_lora_' | sed 's/^/  /'
    curl -s "localhost:$port/metrics" | awk '
        /^lantern_lora_slot_loads_total/ {n=$2} /^lantern_lora_slot_load_seconds_total/ {s=$2}
        /^lantern_lora_disk_loads_total/ {dn=$2} /^lantern_lora_disk_load_seconds_total/ {ds=$2}
        END { if (n > 0) printf "  mean host -> device slot load (swap): %.2f ms over %d loads\n", 1000*s/n, n;
              if (dn > 0) printf "  mean disk -> host load: %.1f ms over %d loads\n", 1000*ds/dn, dn }'
} | tee "$OUT/cpu-smollm2-lora-load-latency.txt"
