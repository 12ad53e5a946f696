#!/usr/bin/env bash
# Resident memory of `lantern serve` (default model, CPU) once loaded and after load spikes.
#   BIN=target/release/lantern [SERVE_ARGS="--kv-cache-memory 256MiB"] benches/run_mem_check.sh LABEL [ENV=VALUE ...]
# Starts the server on a free loopback port with the given environment, waits for /health,
# then sends two spikes of 64 concurrent 1024-token prompts (8 output tokens each) with
# `lantern bench` and prints VmRSS / VmHWM from /proc after each phase.
set -u
BIN=${BIN:-target/release/lantern}
label=${1:?usage: run_mem_check.sh LABEL [ENV=VALUE ...]}; shift
port=18$((RANDOM % 900 + 100))
log=$(mktemp -t mem-"$label".XXXX.log)
# shellcheck disable=SC2086 # SERVE_ARGS is a list of words
env "$@" "$BIN" serve --host 127.0.0.1 --port "$port" ${SERVE_ARGS:-} > "$log" 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null' EXIT
for _ in $(seq 300); do curl -sf "localhost:$port/health" > /dev/null && break; sleep 1; done
rss() { awk '/VmRSS|VmHWM/ {printf "%s %d MiB  ", $1, $2/1024}' /proc/$pid/status; echo; }
spike() {
  "$BIN" bench --base-url "http://127.0.0.1:$port" --dataset random --input-len 1024 --output-len 8 \
    --num-prompts 64 --max-concurrency 64 --ignore-eos > /dev/null 2>&1
  sleep 1
}
echo "$label loaded: $(rss)"
spike; echo "$label after 64 x 1024-token prompts at once: $(rss)"
spike; echo "$label after a second spike: $(rss)"
grep -h "resident memory" "$log" | sed 's/^/  server log: /'
