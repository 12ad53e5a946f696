#!/usr/bin/env bash
# Lantern's GPU checks and benchmarks in ONE device call (at most ~9.5 min wall).
#
# Here (build box):   scripts/gpu/build.sh            # fills .gpu/ (binaries, xz'd)
# Device tool:        run(carry=[".gpu"], timeout_s=600, command="bash scripts/gpu/run-all.sh")
#
# Steps (each under its own timeout; a failing step is recorded and the rest still run):
#  1. unpack .gpu/, GPU/driver/host facts, library path from the torch venv (the recipe's gpu-run)
#  2. a random-weight Llama-3.1-8B is written in the background (make_random_llama.py, /dev/shm)
#  3. kernel test binaries and the HF parity tests on CUDA (f32, then bf16), LANTERN_TEST_DEVICE=cuda
#  4. `lantern generate` on a tiny fixture: CPU vs CUDA f32 tokens, CUDA bf16 (device + KV log lines)
#  5. HBM copy bandwidth (torch), then `lantern serve` of the 8B model on CUDA
#  6. 64 concurrent requests (no failures expected); decode step time at batch 1/8/64/256;
#     `lantern bench` random 1024 in / 128 out at concurrency 1/16/64/256
#  6b. compute-sanitizer memcheck + racecheck over the attention and LoRA kernel tests (60 s each)
#  7. HF transformers generate on the same model (scripts/gpu/hf_peer_bench.py), batch 1/16/64
#  8. summary table (scripts/gpu/summarize.py)
#
# Files under $OUT (7): summary.txt run.log tests.log serve.log bench.log hf_peer.log results.json
# Knobs (env): BUDGET (seconds, default 560), LAYERS (decoder layers of the random model, default 32),
# HF_RESERVE (seconds kept for the HF peer, default 120), SKIP_TESTS=1, SKIP_HF=1; for a dry run of
# this script's logic on a CPU box: DEVICE=cpu MODEL_ARGS="--tiny --device cpu".
set -uo pipefail
cd "$(dirname "$0")/../.."
REPO=$PWD
OUT=${OUT:-$REPO/gpu-out}
mkdir -p "$OUT"
BUDGET=${BUDGET:-560}
DEVICE=${DEVICE:-cuda}
HF_RESERVE=${HF_RESERVE:-120}
[ "${SKIP_HF:-0}" = 1 ] && HF_RESERVE=0
T0=$(date +%s)
export PYTHONUNBUFFERED=1
exec > >(tee -a "$OUT/run.log") 2>&1

WORK=/tmp/lantern-gpu
rm -rf "$WORK"
mkdir -p "$WORK/tests"
SUMMARY=$OUT/summary.txt
: > "$SUMMARY"
note() { echo "$*" >> "$SUMMARY"; echo "## $*"; }
left() { echo $(( BUDGET - ($(date +%s) - T0) )); }

# run_step NAME MAX_SECONDS LOG RESERVE cmd...: runs cmd (stdout+stderr appended to LOG) under
# min(MAX, time left - RESERVE - 5) seconds; records ok / FAIL / TIME / SKIP in the summary.
run_step() {
    local name=$1 max=$2 log=$3 reserve=$4
    shift 4
    local l=$(( $(left) - reserve - 5 ))
    if (( l < 10 )); then note "SKIP  $name (out of time)"; return 99; fi
    (( max > l )) && max=$l
    if [ "$log" = "$OUT/run.log" ]; then
        echo "=== $name (timeout ${max}s, $(date -u +%T))"
    else
        echo "=== $name (timeout ${max}s, $(date -u +%T))" | tee -a "$log"
    fi
    local s rc d
    s=$(date +%s)
    timeout -k 5 "$max" "$@" >> "$log" 2>&1
    rc=$?
    d=$(( $(date +%s) - s ))
    if (( rc == 0 )); then
        note "ok    $name (${d}s)"
    elif (( rc == 124 || rc == 137 )); then
        note "TIME  $name (killed after ${max}s)"
    else
        note "FAIL  $name (exit $rc, ${d}s; see $(basename "$log"))"
        tail -n 15 "$log"
    fi
    return $rc
}

# ---- 1. binaries, libraries, facts -----------------------------------------------------------
VENV=${VENV:-/opt/torch/.venv}
PY=python3
[ -x "$VENV/bin/python3" ] && PY=$VENV/bin/python3
NV=$(ls -d "$VENV"/lib/python3*/site-packages/nvidia/cu13/lib 2>/dev/null | head -1)
if [ -z "$NV" ]; then note "FAIL  no nvidia/cu13/lib under $VENV (the lantern binary needs cuBLAS 13)"; fi
# What recipe.sh gpu-run does: libcuda.so.1 from the driver, cuBLAS/cudart/curand/nvrtc from the venv.
export LD_LIBRARY_PATH="$NV${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export NVRTC_INCLUDE="${NV%/lib}/include"

if [ ! -f .gpu/bins.tar.xz ]; then
    note "FAIL  no .gpu/bins.tar.xz: run scripts/gpu/build.sh on the build box and carry .gpu"
    exit 1
fi
if command -v xz > /dev/null; then
    xz -dc .gpu/bins.tar.xz | tar -C "$WORK" -xf -
else
    "$PY" -c 'import sys, tarfile; tarfile.open(sys.argv[1], "r:xz").extractall(sys.argv[2])' .gpu/bins.tar.xz "$WORK"
fi
chmod +x "$WORK/lantern" "$WORK"/tests/* 2> /dev/null
LANTERN=$WORK/lantern
# Test binaries look for fixtures under the repository they were built in.
BUILD_ROOT=$(cat .gpu/build-root 2>/dev/null || true)
if [ -n "$BUILD_ROOT" ] && [ ! -e "$BUILD_ROOT" ]; then
    mkdir -p "$(dirname "$BUILD_ROOT")" && ln -s "$REPO" "$BUILD_ROOT"
fi
export LANTERN_FIXTURES=$REPO/tests/fixtures

{
    echo "run-all $(date -u +%FT%TZ), budget ${BUDGET}s"
    head -n 2 .gpu/manifest.txt 2> /dev/null
    if command -v nvidia-smi > /dev/null; then
        nvidia-smi -L
        nvidia-smi --query-gpu=name,memory.total,memory.used,driver_version,clocks.max.sm,clocks.max.mem --format=csv,noheader
    else
        echo "no nvidia-smi"
    fi
    echo "host: $(nproc) cores, $(free -g | awk '/Mem:/{print $2}') GiB RAM; python $PY; libs $NV"
} | tee -a "$SUMMARY"
if ldd "$LANTERN" | grep -q 'not found'; then
    ldd "$LANTERN" | grep 'not found' | tee -a "$SUMMARY"
fi
"$LANTERN" --version | tee -a "$SUMMARY"

# ---- 2. the random 8B model, in the background -------------------------------------------------
SHM_FREE=$(df --output=avail -B1G /dev/shm 2>/dev/null | tail -1 | tr -d ' ')
if [ "${SHM_FREE:-0}" -ge 24 ]; then MODEL=/dev/shm/llama-3.1-8b-random; else MODEL=/tmp/llama-3.1-8b-random; fi
(
    timeout 300 "$PY" scripts/gpu/make_random_llama.py --out "$MODEL" ${LAYERS:+--layers "$LAYERS"} ${MODEL_ARGS:-} \
        > "$WORK/model.log" 2>&1
    echo $? > "$WORK/model.rc"
) &
GEN_PID=$!
SERVE_PID=
cleanup() {
    [ -n "$SERVE_PID" ] && kill -9 "$SERVE_PID" 2> /dev/null
    kill "$GEN_PID" 2> /dev/null
}
trap cleanup EXIT

# ---- 3. kernel tests and parity on CUDA -------------------------------------------------------
TESTS=$OUT/tests.log
if [ "${SKIP_TESTS:-0}" != 1 ]; then
    for t in "$WORK"/tests/*; do
        [ -x "$t" ] || continue
        name=$(basename "$t")
        [ "$name" = parity ] && continue
        # The other kernel test binaries test CPU code only (CI runs them); on the device
        # only `gpu` (CUDA vs CPU) is worth the time unless CPU_TESTS=1.
        [ "$name" != gpu ] && [ "${CPU_TESTS:-0}" != 1 ] && [ "$DEVICE" != cpu ] && continue
        run_step "test $name ($DEVICE)" 120 "$TESTS" $(( HF_RESERVE + 240 )) \
            env RUST_BACKTRACE=1 LANTERN_TEST_DEVICE=$DEVICE "$t" --test-threads=4
    done
    if [ -x "$WORK/tests/gpu" ] && [ "$DEVICE" != cpu ]; then
        if grep -q "FAIL  test gpu" "$SUMMARY"; then  # again, one test at a time: a race or not?
            run_step "test gpu, one thread" 60 "$TESTS" $(( HF_RESERVE + 240 )) \
                env RUST_BACKTRACE=1 "$WORK/tests/gpu" --test-threads=1
        fi
        # The kernels' timing tests; decode attention at several split-K targets.
        for w in ${SPLIT_SWEEP:-12 24 48 96}; do
            run_step "kernel timings: attention, LANTERN_ATTN_SPLIT_WARPS=$w" 30 "$TESTS" $(( HF_RESERVE + 240 )) \
                env LANTERN_ATTN_SPLIT_WARPS=$w "$WORK/tests/gpu" --ignored --nocapture --test-threads=1 perf_attention
        done
        run_step "kernel timings: lora, sampling" 40 "$TESTS" $(( HF_RESERVE + 240 )) \
            "$WORK/tests/gpu" --ignored --nocapture --test-threads=1 perf_lora perf_sampling
    fi
    if [ -x "$WORK/tests/parity" ]; then
        # name:env pairs; fused ops are the default, LANTERN_FUSED_OPS=0 is the unfused path,
        # LANTERN_CUDA_GRAPHS=1 runs decode steps through CUDA graphs.
        for pv in ${PARITY:-"f32:" "bf16:" "f32-unfused:LANTERN_FUSED_OPS=0" "f32-graphs:LANTERN_CUDA_GRAPHS=1" "bf16-graphs:LANTERN_CUDA_GRAPHS=1"}; do
            name=${pv%%:*}
            extra=${pv#*:}
            dt=${name%%-*}
            plog=$WORK/parity-$name.log
            # A capture records everything issued to the device's one stream, from any thread:
            # graph variants run one test at a time (the decode-heavy ones).
            targs=
            case $extra in
            *LANTERN_CUDA_GRAPHS=1*) targs="--test-threads=1 single_sequence_all_models_block16 four_sequences_in_one_flattened_batch" ;;
            esac
            # shellcheck disable=SC2086
            run_step "parity $DEVICE $name" 150 "$plog" $(( HF_RESERVE + 200 )) \
                env LANTERN_TEST_DEVICE=$DEVICE LANTERN_TEST_DTYPE=$dt $extra "$WORK/tests/parity" --nocapture $targs
            cat "$plog" >> "$TESTS"
            [ "$dt" = bf16 ] &&
                echo "  parity $name: $(grep -c 'teacher-forced' "$plog") greedy tokens differ from the f32 reference (teacher-forced)" | tee -a "$SUMMARY"
        done
    else
        note "SKIP  parity (no parity binary in .gpu/tests)"
    fi
fi

# ---- 4. lantern generate on a tiny fixture ----------------------------------------------------
GEN_ARGS="generate --model tests/fixtures/tiny-llama --prompt-ids 1,5,9,23,42 --max-tokens 24 --json --kv-cache-memory 256MiB"
GEN_VARIANTS=${GEN_VARIANTS:-"cpu:--device cpu;$DEVICE-f32:--device $DEVICE --dtype float32 --enforce-eager;$DEVICE-bf16:--device $DEVICE --dtype bfloat16 --enforce-eager;$DEVICE-f32-unfused:--device $DEVICE --dtype float32 --no-fused-ops --enforce-eager;$DEVICE-f32-graphs:--device $DEVICE --dtype float32 --cuda-graphs;$DEVICE-bf16-graphs:--device $DEVICE --dtype bfloat16 --cuda-graphs"}
IFS=';' read -r -a glist <<< "$GEN_VARIANTS"
for v in "${glist[@]}"; do
    run_step "generate tiny-llama ${v%%:*}" 60 "$OUT/run.log" $(( HF_RESERVE + 200 )) \
        bash -c "RUST_LOG=info '$LANTERN' $GEN_ARGS ${v#*:} > '$WORK/gen-${v%%:*}.json'"
done
for v in "${glist[@]}"; do
    n=${v%%:*}
    [ "$n" = cpu ] && continue
    case $n in
    *bf16*) echo "tiny-llama $n: $(cat "$WORK/gen-$n.json" 2>/dev/null)" >> "$SUMMARY" ;;
    *)
        if [ -s "$WORK/gen-cpu.json" ] && cmp -s "$WORK/gen-cpu.json" "$WORK/gen-$n.json"; then
            note "ok    tiny-llama greedy tokens: $n == cpu f32"
        else
            note "DIFF  tiny-llama greedy tokens: cpu $(cat "$WORK/gen-cpu.json" 2>/dev/null) vs $n $(cat "$WORK/gen-$n.json" 2>/dev/null)"
        fi
        ;;
    esac
done
if cmp -s "$WORK/gen-$DEVICE-bf16.json" "$WORK/gen-$DEVICE-bf16-graphs.json"; then
    note "ok    tiny-llama bf16 greedy tokens: graphs == eager"
else
    # Allowed: a graph sizes the attention's split-K partition for its key, so bf16 sums
    # round differently (crates/runtime/src/graphs.rs); f32 must match the CPU above.
    note "info  tiny-llama bf16 greedy tokens: graphs and eager differ (bf16 rounding)"
fi

# ---- 5. model, bandwidth, server --------------------------------------------------------------
wait "$GEN_PID"
cat "$WORK/model.log"
if [ "$(cat "$WORK/model.rc" 2>/dev/null)" != 0 ]; then
    note "FAIL  make_random_llama.py (see run.log); no 8B benchmarks"
    MODEL=
else
    note "ok    random Llama-3.1-8B at $MODEL ($(tail -n 1 "$WORK/model.log"))"
fi

cat > "$WORK/bw.py" <<'EOF'
import json, sys, torch
n = 4 << 30
a = torch.empty(n, dtype=torch.uint8, device="cuda").random_(0, 255)
b = torch.empty_like(a)
for _ in range(3):
    b.copy_(a)
s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
times = []
for _ in range(10):
    s.record(); b.copy_(a); e.record(); e.synchronize()
    times.append(s.elapsed_time(e) / 1e3)
times.sort()
t = times[len(times) // 2]
r = {"copy_bytes": n, "median_s": t, "copy_bytes_per_s": 2 * n / t, "device": torch.cuda.get_device_name()}
json.dump(r, open(sys.argv[1], "w"))
print(f"device-to-device copy of {n >> 30} GiB: {t * 1e3:.2f} ms, {2 * n / t / 1e12:.2f} TB/s (read + write)")
EOF
run_step "HBM bandwidth (torch copy)" 60 "$OUT/run.log" $(( HF_RESERVE + 150 )) "$PY" "$WORK/bw.py" "$WORK/bw.json"
grep -h "device-to-device" "$OUT/run.log" | tail -n 1 >> "$SUMMARY"

PORT=8311
BASE=http://127.0.0.1:$PORT
healthy() { "$PY" -c "import urllib.request,sys; urllib.request.urlopen(sys.argv[1], timeout=2)" "$BASE/health" 2> /dev/null; }

# One `lantern serve` per variant (VARIANTS="name:flags;name:flags"), each with a bench plan:
# full  = 64-request check, decode step at batch 1/8/64/256, random 1024/128 at c1/16/64/256
#         (temperature 0), and random 1024/128 at c64 sampled at temperature 1 (device sampler),
#         plain and with top_p 0.9 / top_k 50;
# steps = decode step at batch 1/8/64/256 and random 1024/128 at c1/16/64 (temperature 0);
# quick = decode step at batch 1/8/64;
# sampled = only the two temperature-1 runs of full (for the host-sampling A/B).
# Every bench draws its prompts with its own --seed, so no run reuses an earlier run's prompts
# through the prefix cache (the server keeps its cache between runs).
# CUDA graphs are on by default on a GPU since run 4; "eager" is the A/B without them.
# LANTERN_HOST_SAMPLING=1 samples on the host (logits copied down), the A/B for device sampling.
VARIANTS=${VARIANTS:-"default:;eager:--enforce-eager;unfused:--no-fused-ops --enforce-eager;hostsample:LANTERN_HOST_SAMPLING=1"}
PLANS=${PLANS:-"default:full;eager:full;unfused:steps;hostsample:sampled"}
plan_of() { echo "$PLANS" | tr ';' '\n' | awk -F: -v v="$1" '$1 == v {print $2}'; }

start_server() { # variant flags...
    local variant=$1
    shift
    local s
    s=$(date +%s)
    echo "==== lantern serve ($variant: $*) $(date -u +%T)" >> "$OUT/serve.log"
    # Leading NAME=VALUE words of a variant are environment variables, the rest serve flags.
    local envs=() args=() a
    for a in "$@"; do
        if [ ${#args[@]} -eq 0 ] && [[ $a =~ ^[A-Z_][A-Z0-9_]*= ]]; then envs+=("$a"); else args+=("$a"); fi
    done
    env RUST_LOG=info ${envs[@]+"${envs[@]}"} "$LANTERN" serve --model "$MODEL" --device "$DEVICE" --host 127.0.0.1 --port $PORT \
        --served-model-name llama-3.1-8b-random --max-num-seqs 256 ${args[@]+"${args[@]}"} >> "$OUT/serve.log" 2>&1 &
    SERVE_PID=$!
    local up=0
    while (( $(date +%s) - s < 240 && $(left) > HF_RESERVE + 30 )) && kill -0 "$SERVE_PID" 2> /dev/null; do
        if healthy; then up=1; break; fi
        sleep 0.5
    done
    if (( up )); then
        note "ok    lantern serve [$variant] up in $(( $(date +%s) - s ))s ($*)"
        sed 's/\x1b\[[0-9;]*m//g' "$OUT/serve.log" | awk '/^==== lantern serve/{buf=""} {buf=buf $0 "\n"} END{printf "%s", buf}' |
            grep -E "device: |KV cache sizing|KV cache allocated|ready in" | tee -a "$SUMMARY"
    else
        note "FAIL  lantern serve [$variant] did not become healthy (see serve.log)"
        tail -n 20 "$OUT/serve.log"
        kill -9 "$SERVE_PID" 2> /dev/null
        SERVE_PID=
    fi
}

stop_server() {
    [ -n "$SERVE_PID" ] || return 0
    kill -INT "$SERVE_PID" 2> /dev/null
    for _ in $(seq 20); do kill -0 "$SERVE_PID" 2> /dev/null || break; sleep 0.5; done
    kill -9 "$SERVE_PID" 2> /dev/null
    SERVE_PID=
    sed 's/\x1b\[[0-9;]*m//g' "$OUT/serve.log" | grep -E "CUDA graph|WARN|ERROR" | tail -n 12 >> "$SUMMARY"
}

# ---- 6. load: correctness under concurrency, step times, serving benchmark ---------------------
bench() { # label max_seconds args...
    local label=$1 max=$2
    shift 2
    run_step "bench $label" "$max" "$OUT/bench.log" "$HF_RESERVE" \
        "$LANTERN" bench --base-url "$BASE" --endpoint completions --ignore-eos --disable-progress \
        --request-timeout 300 --label "$label" --result-json "$WORK/bench-$label.json" "$@"
}
sampled_runs() { # variant: random 1024/128 at c64, temperature 1, plain and with top_p/top_k
    bench "$1.sampled-c64" 90 --dataset random --input-len 1024 --output-len 128 --num-prompts 128 --max-concurrency 64 --temperature 1 --seed 3064
    bench "$1.sampled-topp-c64" 90 --dataset random --input-len 1024 --output-len 128 --num-prompts 128 --max-concurrency 64 --temperature 1 --seed 4064 --extra-body '{"top_p":0.9,"top_k":50}'
}
bench_plan() { # variant plan
    local v=$1 plan=$2 c n
    if [ "$plan" = sampled ]; then
        sampled_runs "$v"
        return 0
    fi
    if [ "$plan" = full ]; then
        bench "$v.check64" 90 --dataset random --input-len 128 --output-len 32 --num-prompts 64 --max-concurrency 64 --temperature 0 --seed 64064
    fi
    for c in 1 8 64 256; do
        [ "$plan" = quick ] && [ $c = 256 ] && continue
        n=$c
        (( n < 4 )) && n=4
        bench "$v.step-c$c" 60 --dataset random --input-len 32 --output-len 64 --num-prompts $n --max-concurrency $c --temperature 0 --seed $(( 1000 + c ))
    done
    [ "$plan" = quick ] && return 0
    for c in 1 16 64 256; do
        [ "$plan" = steps ] && [ $c = 256 ] && continue
        case $c in 1) n=4 ;; 16) n=32 ;; 64) n=128 ;; *) n=256 ;; esac
        bench "$v.rand-c$c" 120 --dataset random --input-len 1024 --output-len 128 --num-prompts $n --max-concurrency $c --temperature 0 --seed $(( 2000 + c ))
    done
    if [ "$plan" = full ]; then
        sampled_runs "$v"
    fi
}
if [ -n "$MODEL" ]; then
    IFS=';' read -r -a vlist <<< "$VARIANTS"
    for entry in "${vlist[@]}"; do
        v=${entry%%:*}
        flags=${entry#*:}
        (( $(left) > HF_RESERVE + 60 )) || { note "SKIP  serve [$v] (out of time)"; continue; }
        # shellcheck disable=SC2086
        start_server "$v" $flags
        [ -n "$SERVE_PID" ] && bench_plan "$v" "$(plan_of "$v")"
        stop_server
    done
    command -v nvidia-smi > /dev/null &&
        nvidia-smi --query-gpu=memory.used --format=csv,noheader | sed 's/^/GPU memory used after the servers exited: /'
fi

# ---- 6b. compute-sanitizer over the attention and LoRA kernel tests -----------------------------
# .gpu/sanitizer.whl (nvidia-cuda-sanitizer-api 13.0, fetched by build.sh) holds compute-sanitizer.
# On the device machines lent so far it instruments nothing, not even torch (see
# benches/results/gpu-h200-2026-12-04-run4/README.md); the step costs ~2 s and is kept for
# machines where it works (SKIP_SANITIZER=1 skips it).
if [ -f .gpu/sanitizer.whl ] && [ -x "$WORK/tests/gpu" ] && [ "$DEVICE" != cpu ] && [ "${SKIP_SANITIZER:-0}" != 1 ]; then
    "$PY" -c 'import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extractall(sys.argv[2])' .gpu/sanitizer.whl "$WORK/san"
    SAN=$(find "$WORK/san" -name compute-sanitizer -type f | head -1)
    if [ -n "$SAN" ]; then
        # The toolkit ships compute-sanitizer with its injection libraries in one directory;
        # the wheel splits them into bin/ and lib/: put them back together.
        for so in "$(dirname "$SAN")"/../lib/*.so; do [ -e "$(dirname "$SAN")/${so##*/}" ] || cp "$so" "$(dirname "$SAN")/"; done
        chmod +x "$SAN"
        ls -la "$(dirname "$SAN")" >> "$TESTS"
        run_step "compute-sanitizer memcheck (attention, LoRA tests)" 60 "$TESTS" "$HF_RESERVE" \
            "$SAN" --tool memcheck --error-exitcode 3 "$WORK/tests/gpu" --test-threads=1 \
            attention_mixed_batches_gqa_shapes attention_padding_rows_are_zero \
            attention_prefill_over_cached_prefix_and_short_chunks lora_bgmv_sgmv_match_cpu
        run_step "compute-sanitizer racecheck (attention, LoRA tests)" 60 "$TESTS" "$HF_RESERVE" \
            "$SAN" --tool racecheck --error-exitcode 3 "$WORK/tests/gpu" --test-threads=1 \
            attention_mixed_batches_gqa_shapes lora_bgmv_sgmv_match_cpu
    else
        note "SKIP  compute-sanitizer (not found in .gpu/sanitizer.whl)"
    fi
fi

# ---- 7. HF transformers peer ------------------------------------------------------------------
if [ -n "$MODEL" ] && [ "${SKIP_HF:-0}" != 1 ]; then
    run_step "HF transformers peer (batch 1/16/64)" 600 "$OUT/hf_peer.log" 0 \
        "$PY" scripts/gpu/hf_peer_bench.py --model "$MODEL" --device "$DEVICE" --batch-sizes 1,16,64 \
        --input-len 1024 --output-len 128 --json "$WORK/hf.json"
fi

# ---- 8. summary -------------------------------------------------------------------------------
{
    echo
    "$PY" scripts/gpu/summarize.py --work "$WORK" ${MODEL:+--model "$MODEL"} --results "$OUT/results.json"
    echo
    echo "total $(( $(date +%s) - T0 ))s"
} >> "$SUMMARY" 2>&1
echo
echo "==================== summary ===================="
cat "$SUMMARY"
