#!/usr/bin/env bash
# Build everything the GPU device machine needs, here (no GPU, no Rust there), into .gpu/:
#
#   scripts/gpu/build.sh                # CUDA_COMPUTE_CAP=90 (H100/H200) release build
#
#   .gpu/bins.tar.xz                    lantern (--features cuda) and tests/<target>: the test
#                                       executables (--features cuda, release) of every
#                                       lantern-kernels test target and the HF parity tests;
#                                       stripped, one solid xz
#   .gpu/build-root                     the repository path the binaries were built in
#   .gpu/manifest.txt                   git describe, sizes, sha256 of the unpacked files
#   .gpu/sanitizer.whl                  compute-sanitizer (PyPI nvidia-cuda-sanitizer-api 13.0)
#
# Then, on the device machine, in one call (see scripts/gpu/run-all.sh):
#   run(carry=[".gpu"], timeout_s=600, command="bash scripts/gpu/run-all.sh")
#
# CUDA comes from the recipe (../shared/cuda/recipe.sh: CUDA 13.0 from PyPI wheels, a stub
# libcuda for linking); override with RECIPE=... . The target dir is $CARGO_TARGET_DIR
# (default: target-cuda beside the repository, so CPU and CUDA builds do not evict each other).
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT_DIR=$PWD
RECIPE=${RECIPE:-$ROOT_DIR/../shared/cuda/recipe.sh}
[ -f "$RECIPE" ] || { echo "build.sh: no CUDA recipe at $RECIPE (set RECIPE=...)" >&2; exit 1; }
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT_DIR/../target-cuda}
GPU_DIR=$ROOT_DIR/.gpu
t0=$(date +%s)

# 1. The lantern binary, through the recipe (installs CUDA 13.0 on first use, then runs
#    `cargo build --release --features cuda`).
PROJECT=$ROOT_DIR FEATURES="--features cuda" bash "$RECIPE" build

# 2. Test executables, with the recipe's environment (its functions, without its `case`).
#    One invocation that includes the root package: it resolves features like step 1, so
#    candle-kernels' build script (~10 min of nvcc on 2 cores) is shared, not run again.
eval "$(sed -n '/^ROOT=/,/^case /{/^case /!p}' "$RECIPE")"
build_env
json=$(mktemp)
cargo test --release --features lantern/cuda -p lantern -p lantern-kernels -p lantern-runtime \
    --no-run --message-format=json-render-diagnostics > "$json"
pick_tests='
import json, sys
for line in open(sys.argv[1]):
    try:
        m = json.loads(line)
    except ValueError:
        continue
    if m.get("reason") != "compiler-artifact" or not m.get("executable") or not m["profile"]["test"]:
        continue
    t = m["target"]
    src = t["src_path"]
    if "/kernels/" in src:  # lantern-kernels: unit tests and every integration test
        print((t["name"] + "-unit" if "lib" in t["kind"] else t["name"]) + "\t" + m["executable"])
    elif src.endswith("crates/runtime/tests/parity.rs"):
        print("parity\t" + m["executable"])
'
mapfile -t tests < <(python3 -c "$pick_tests" "$json")
rm -f "$json"

# 3. Strip, then one solid tar.xz: the binaries share most of their bytes (candle's kernels,
#    the runtime), and one xz stream with a 64 MiB window stores that once (~15 MiB in all
#    instead of ~60 MiB as separate files; the device call carries at most 64 MiB).
rm -rf "$GPU_DIR"
stage=$(mktemp -d)
mkdir -p "$GPU_DIR" "$stage/tests"
echo "$ROOT_DIR" > "$GPU_DIR/build-root"
{
    echo "built $(date -u +%FT%TZ) from $(git describe --always --dirty 2>/dev/null || echo unknown)"
    echo "--features cuda; CUDA_COMPUTE_CAP=${CUDA_COMPUTE_CAP:-unset}"
} > "$GPU_DIR/manifest.txt"
add() { # src name-in-archive
    cp "$1" "$stage/$2"
    strip "$stage/$2"
    echo "$(sha256sum < "$stage/$2" | cut -c1-16)  $(stat -c %s "$stage/$2") bytes  $2" >> "$GPU_DIR/manifest.txt"
}
add "$CARGO_TARGET_DIR/release/lantern" lantern
for t in "${tests[@]}"; do
    add "${t#*$'\t'}" "tests/${t%%$'\t'*}"
done
tar -C "$stage" -cf - lantern tests | xz -T1 -9 -c > "$GPU_DIR/bins.tar.xz"
rm -rf "$stage"
# compute-sanitizer for run-all.sh's memcheck/racecheck step (CUDA 13.0, matching the driver
# branch of the device machines; ~14 MiB). Optional: skipped when PyPI is unreachable.
san=$(mktemp -d)
if pip download --quiet --no-deps -d "$san" "nvidia-cuda-sanitizer-api==13.0.*" > /dev/null 2>&1; then
    cp "$san"/*.whl "$GPU_DIR/sanitizer.whl"
    echo "$(sha256sum < "$GPU_DIR/sanitizer.whl" | cut -c1-16)  $(stat -c %s "$GPU_DIR/sanitizer.whl") bytes  sanitizer.whl ($(basename "$san"/*.whl))" >> "$GPU_DIR/manifest.txt"
else
    echo "note: could not download nvidia-cuda-sanitizer-api; run-all.sh will skip compute-sanitizer" >&2
fi
rm -rf "$san"
cat "$GPU_DIR/manifest.txt"
echo "total: $(du -sb "$GPU_DIR" | awk '{printf "%.1f MiB", $1/1048576}') in .gpu (a device call carries at most 64 MiB, working tree included); $(( $(date +%s) - t0 ))s"
