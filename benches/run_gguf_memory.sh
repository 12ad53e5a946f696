#!/usr/bin/env bash
# Resident memory of llama-server and `lantern serve` on the same GGUF files: each server is
# started alone, gets 8 concurrent requests (256-token prompts, 64 tokens out, the
# side-by-side client and prompts), and its VmRSS / VmHWM are read from /proc afterwards.
#   PEER=/work/peer LANTERN=target/release/lantern benches/run_gguf_memory.sh FILE.gguf [FILE.gguf ...]
# llama-server runs as in run_anchor.sh at C=8 (-np 8, -c 8 * 336); lantern serve with its
# defaults (1 GiB CPU KV cache reserved, pages touched as used). Prints one MEM line per server.
set -u
PEER=${PEER:?copy of ../shared/bench-peers/llamacpp with build/bin/llama-server}
LANTERN=${LANTERN:-target/release/lantern}
PROMPTS=$PEER/prompts_s1234_p256.json
mem() {  # $1=pid -> "rss_mib hwm_mib"
  awk '/^VmRSS/ {r=$2} /^VmHWM/ {h=$2} END {printf "rss %d MiB, peak %d MiB", r/1024, h/1024}' "/proc/$1/status"
}
load() {  # $1=base url $2=model name
  python3 "$PEER/loadgen.py" --base-url "$1" --model "$2" -c 8 -n 8 --prompt-tokens 256 --max-tokens 64 \
    --seed 1234 --prompts-file "$PROMPTS" --label mem --out /tmp/mem-load.json > /dev/null 2>&1
}
for GGUF in "$@"; do
  size=$(( $(stat -c %s "$GGUF") >> 20 ))
  "$PEER/build/bin/llama-server" -m "$GGUF" --host 127.0.0.1 --port 18081 -np 8 -c 2688 -t 2 --cont-batching \
    > /tmp/mem-llama.log 2>&1 &
  pid=$!
  for _ in $(seq 120); do curl -sf localhost:18081/health > /dev/null && break; sleep 1; done
  idle=$(mem $pid); load http://127.0.0.1:18081 smol
  echo "MEM $(basename "$GGUF") (${size} MiB file) llama-server: loaded $idle; after load $(mem $pid)"
  kill $pid; wait $pid 2>/dev/null
  "$LANTERN" serve --model "$GGUF" --served-model-name smol --host 127.0.0.1 --port 18091 ${LANTERN_EXTRA:-} \
    > /tmp/mem-lantern.log 2>&1 &
  pid=$!
  for _ in $(seq 120); do curl -sf localhost:18091/health > /dev/null && break; sleep 1; done
  idle=$(mem $pid); load http://127.0.0.1:18091 smol
  echo "MEM $(basename "$GGUF") (${size} MiB file) lantern ${LANTERN_EXTRA:-}: loaded $idle; after load $(mem $pid)"
  kill $pid; wait $pid 2>/dev/null
done
