"""Starting and stopping `lantern serve` for the Python end-to-end scripts
(`openai_conformance.py`, `structured_outputs_check.py`)."""
import os
import signal
import socket
import subprocess
import time
import urllib.request

MODEL = "HuggingFaceTB/SmolLM2-135M-Instruct"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_healthy(base, proc, timeout=300):
    """Waits for `GET /health` to answer 200; fails early if `proc` (when given) exits."""
    t0 = time.time()
    while time.time() - t0 < timeout:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(base + "/health", timeout=2) as r:
                if r.status == 200:
                    return
        except Exception:  # noqa: BLE001 (not up yet)
            pass
        time.sleep(0.5)
    raise RuntimeError("server did not become healthy")


def start(binary, key, log, extra=()):
    """Starts `binary serve` (default model) on a free port with API key `key`, its stderr
    in `log`. Returns (process, base URL); call `wait_healthy` next."""
    port = free_port()
    proc = subprocess.Popen(
        [binary, "serve", "--host", "127.0.0.1", "--port", str(port), *extra],
        env=dict(os.environ, LANTERN_API_KEY=key),
        stdout=subprocess.DEVNULL,
        stderr=open(log, "w"),
    )
    return proc, f"http://127.0.0.1:{port}"


def stop(proc):
    """SIGTERM (graceful shutdown), then SIGKILL after 30 s."""
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
