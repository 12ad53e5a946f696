#!/usr/bin/env bash
# llama-server vs lantern serve on one machine, in one run, alternating per concurrency, with
# the peer's own client and prompts (../shared/bench-peers/llamacpp: copy it to PEER, build
# llama-server there with its build.sh and put SmolLM2-135M-Instruct.f32.gguf beside it, see
# its README).
#   PEER=/work/peer LANTERN=target/release/lantern benches/run_llamacpp_side_by_side.sh OUTDIR 1 8 32
# LANTERN_EXTRA="--target-itl-ms 0" passes flags to lantern serve; GGUF=<file> serves another
# GGUF (default: the F32 one; both servers get the same file); REPEAT=N runs each concurrency N
# times, the two servers alternating, every second pair Lantern first (these VMs change speed by
# 20-40% over minutes: compare the pairs, and the spread). Prints one RUN line per run.
set -u
PEER=${PEER:?copy of ../shared/bench-peers/llamacpp with build/bin/llama-server}
LANTERN=${LANTERN:-target/release/lantern}
OUT=${1:?usage: run_llamacpp_side_by_side.sh OUTDIR C [C ...]}; shift
GGUF=${GGUF:-$PEER/SmolLM2-135M-Instruct.f32.gguf}
PROMPTS=$PEER/prompts_s1234_p256.json
mkdir -p "$OUT/logs"
CONCURRENCIES=()
for C in "$@"; do
  for _ in $(seq "${REPEAT:-1}"); do CONCURRENCIES+=("$C"); done
done
run_llama() {
  OUTDIR=$OUT PROMPTS=$PROMPTS SERVER_BIN=$PEER/build/bin/llama-server \
    "$PEER/run_anchor.sh" "$GGUF" "$1" 2>&1 | grep RUN
}
run_lantern() {
  # shellcheck disable=SC2086 # LANTERN_EXTRA is a list of words
  "$LANTERN" serve --model "$GGUF" --served-model-name smol --host 127.0.0.1 --port 18090 ${LANTERN_EXTRA:-} \
    > "$OUT/logs/lantern-C$1.log" 2>&1 &
  pid=$!
  for _ in $(seq 120); do curl -sf localhost:18090/health > /dev/null && break; sleep 1; done
  OUTDIR=$OUT PROMPTS=$PROMPTS "$PEER/run_anchor.sh" --external http://127.0.0.1:18090 smol "$1" 2>&1 | grep RUN
  kill $pid; wait $pid 2>/dev/null
}
# Pairs alternate which server goes first (ABBA), so a drift in the machine's speed over a run
# weighs on both alike.
i=0
for C in "${CONCURRENCIES[@]}"; do
  if [ $((i % 2)) -eq 0 ]; then run_llama "$C"; run_lantern "$C"; else run_lantern "$C"; run_llama "$C"; fi
  i=$((i + 1))
done
