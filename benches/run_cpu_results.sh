#!/usr/bin/env bash
# Reproduces the committed CPU results in benches/results/ for the default model
# (SmolLM2-135M-Instruct, GGUF Q4_1 dequantized to f32):
#   cargo build --release && benches/run_cpu_results.sh
# Each run starts its own server with `lantern bench --embedded` so results are independent.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=target/release/lantern
OUT=benches/results
mkdir -p "$OUT"
machine="$(lscpu | sed -n 's/^Model name:\s*//p' | head -1), $(nproc) cores, $(free -g | awk '/Mem:/{print $2}') GiB RAM, $(uname -sr)"
common=(--embedded --endpoint completions --ignore-eos --seed 0 --disable-progress)

run() {
    local name=$1; shift
    local cmd=("$BIN" bench "${common[@]}" "$@" --result-json "$OUT/$name.json")
    {
        echo "machine: $machine"
        echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
        echo "command: ${cmd[*]}"
        echo
        "${cmd[@]}" 2>&1
    } | tee "$OUT/$name.txt"
}

for c in 1 8 32; do
    n=$(( c == 1 ? 8 : c * 2 ))
    run "cpu-smollm2-random-256-64-c$c" --dataset random --input-len 256 --output-len 64 \
        --num-prompts "$n" --max-concurrency "$c" --request-rate inf --warmup 2
done

# Prefix caching: 4 shared 384-token system prompts + 32-token suffixes, caching on vs off.
for mode in on off; do
    extra=()
    [ "$mode" = off ] && extra=(--serve-args "--no-enable-prefix-caching")
    run "cpu-smollm2-prefix-repetition-cache-$mode" --dataset prefix-repetition --num-prefixes 4 \
        --prefix-len 384 --suffix-len 32 --output-len 16 --num-prompts 32 --max-concurrency 4 \
        --request-rate inf --warmup 4 "${extra[@]}"
done
