#!/usr/bin/env bash
# compute-sanitizer (memcheck, racecheck) over the attention and LoRA kernel tests, on the GPU
# machine, from the binaries scripts/gpu/build.sh packed into .gpu/ (one device call):
#   run(carry=[".gpu"], timeout_s=200, command="bash scripts/gpu/sanitize.sh")
# Writes $OUT/sanitize.log. Tries a torch one-liner first so a sanitizer that cannot run at
# all on this machine is told apart from a problem with our binaries.
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-$PWD/gpu-out}
mkdir -p "$OUT"
exec > >(tee -a "$OUT/sanitize.log") 2>&1
WORK=/tmp/lantern-san
rm -rf "$WORK" && mkdir -p "$WORK"
VENV=${VENV:-/opt/torch/.venv}
PY=python3
[ -x "$VENV/bin/python3" ] && PY=$VENV/bin/python3
NV=$(ls -d "$VENV"/lib/python3*/site-packages/nvidia/cu13/lib 2>/dev/null | head -1)
export LD_LIBRARY_PATH="$NV${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
xz -dc .gpu/bins.tar.xz | tar -C "$WORK" -xf - tests/gpu
"$PY" -c 'import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extractall(sys.argv[2])' .gpu/sanitizer.whl "$WORK/san"
SAN=$(find "$WORK/san" -name compute-sanitizer -type f | head -1)
for so in "$(dirname "$SAN")"/../lib/*.so; do [ -e "$(dirname "$SAN")/${so##*/}" ] || cp "$so" "$(dirname "$SAN")/"; done
chmod +x "$SAN" "$WORK/tests/gpu"
nvidia-smi -L
"$SAN" --version
step() { echo "=== $*"; timeout -k 3 "${T:-30}" "$@"; echo "=== exit $?"; }
step "$SAN" --tool memcheck "$PY" -c 'import torch; x = torch.ones(1024, device="cuda"); print("torch sum", (x * 2).sum().item())'
for extra in "" "--target-processes all"; do
    # shellcheck disable=SC2086
    step "$SAN" $extra --tool memcheck --error-exitcode 3 "$WORK/tests/gpu" --test-threads=1 \
        attention_padding_rows_are_zero
done
T=60 step "$SAN" --tool memcheck --error-exitcode 3 "$WORK/tests/gpu" --test-threads=1 \
    attention_mixed_batches_gqa_shapes attention_prefill_over_cached_prefix_and_short_chunks lora_bgmv_sgmv_match_cpu
T=45 step "$SAN" --tool racecheck --error-exitcode 3 "$WORK/tests/gpu" --test-threads=1 \
    attention_mixed_batches_gqa_shapes lora_bgmv_sgmv_match_cpu
