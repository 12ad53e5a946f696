#!/usr/bin/env bash
# Lantern-only variants at C=32 (--target-itl-ms 0, --kv-cache-dtype float16) around a fresh
# llama-server run, same client and prompts as run_llamacpp_side_by_side.sh:
#   PEER=/work/peer LANTERN=target/release/lantern benches/run_lantern_variants_c32.sh OUTDIR
PEER=${PEER:?copy of ../shared/bench-peers/llamacpp with build/bin/llama-server}; LANTERN=${LANTERN:-target/release/lantern}
OUT=${1:?usage: run_lantern_variants_c32.sh OUTDIR}; mkdir -p $OUT/logs
GGUF=$PEER/SmolLM2-135M-Instruct.f32.gguf; PROMPTS=$PEER/prompts_s1234_p256.json
run_lantern() { # $1 label-ish flags...
  "$LANTERN" serve --model "$GGUF" --served-model-name smol --host 127.0.0.1 --port 18090 "$@" > $OUT/logs/lantern.log 2>&1 &
  pid=$!
  for _ in $(seq 120); do curl -sf localhost:18090/health > /dev/null && break; sleep 1; done
  echo "# lantern serve $*"
  OUTDIR=$OUT PROMPTS=$PROMPTS $PEER/run_anchor.sh --external http://127.0.0.1:18090 smol 32 2>&1 | grep RUN
  kill $pid; wait $pid 2>/dev/null
}
run_lantern --target-itl-ms 0
echo "# llama-server"
OUTDIR=$OUT PROMPTS=$PROMPTS SERVER_BIN=$PEER/build/bin/llama-server $PEER/run_anchor.sh "$GGUF" 32 2>&1 | grep RUN
run_lantern --kv-cache-dtype float16
echo DONE
