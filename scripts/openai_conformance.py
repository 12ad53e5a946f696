#!/usr/bin/env python3
"""OpenAI SDK conformance check for `lantern serve`.

Starts the real server on 127.0.0.1 with the default model (SmolLM2-135M-Instruct) and an
API key, then talks to it with the official `openai` Python package:

    python3 -m pip install openai        # once
    python3 scripts/openai_conformance.py [--bin target/debug/lantern]

Prints one line per check and a closing "N passed, N failed" line; exits 1 on failure.
"""
import argparse
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import openai
from openai import OpenAI

MODEL = "HuggingFaceTB/SmolLM2-135M-Instruct"
KEY = "conformance-key"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_healthy(base, proc, timeout=300):
    t0 = time.time()
    while time.time() - t0 < timeout:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(base + "/health", timeout=2) as r:
                if r.status == 200:
                    return
        except Exception:
            pass
        time.sleep(0.5)
    raise RuntimeError("server did not become healthy")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default="target/debug/lantern")
    args = ap.parse_args()
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = dict(os.environ, LANTERN_API_KEY=KEY)
    proc = subprocess.Popen(
        [args.bin, "serve", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=open("/tmp/lantern-conformance.log", "w"),
    )
    results = []

    def check(name, fn):
        try:
            fn()
            results.append(True)
            print(f"ok   {name}", flush=True)
        except Exception as e:  # noqa: BLE001
            results.append(False)
            print(f"FAIL {name}: {type(e).__name__}: {e}", flush=True)

    try:
        wait_healthy(base, proc)
        client = OpenAI(base_url=base + "/v1", api_key=KEY, max_retries=0, timeout=120)

        def models():
            ids = [m.id for m in client.models.list().data]
            assert MODEL in ids, ids

        def paris():
            r = client.chat.completions.create(
                model=MODEL,
                messages=[{"role": "user", "content": "What is the capital of France?"}],
                temperature=0,
                max_tokens=30,
            )
            text = r.choices[0].message.content
            assert "Paris" in text, text
            assert r.choices[0].finish_reason in ("stop", "length")
            assert r.usage.prompt_tokens > 0 and r.usage.completion_tokens > 0

        def chat_stream():
            stream = client.chat.completions.create(
                model=MODEL,
                messages=[{"role": "user", "content": "What is the capital of France?"}],
                temperature=0,
                max_tokens=30,
                stream=True,
                stream_options={"include_usage": True},
            )
            role, text, finish, usage = None, "", None, None
            for chunk in stream:
                if chunk.usage is not None:
                    usage = chunk.usage
                for c in chunk.choices:
                    if c.delta.role:
                        role = c.delta.role
                    if c.delta.content:
                        text += c.delta.content
                    if c.finish_reason:
                        finish = c.finish_reason
            assert role == "assistant", role
            assert "Paris" in text, text
            assert finish in ("stop", "length"), finish
            assert usage is not None and usage.completion_tokens > 0
            assert usage.prompt_tokens_details.cached_tokens >= 0

        def completions_ids_logprobs():
            ids = client.post(
                "/../tokenize", cast_to=object, body={"model": MODEL, "prompt": "The capital of France is"}
            )["tokens"]
            r = client.completions.create(model=MODEL, prompt=ids, max_tokens=5, temperature=0, logprobs=2)
            lp = r.choices[0].logprobs
            assert len(lp.tokens) == 5 and len(lp.token_logprobs) == 5, lp
            assert all(len(t) <= 2 for t in lp.top_logprobs)
            assert all(x <= 0 for x in lp.token_logprobs)
            r2 = client.completions.create(model=MODEL, prompt="The capital of France is", max_tokens=5, temperature=0)
            assert r2.choices[0].text == r.choices[0].text, (r2.choices[0].text, r.choices[0].text)

        def not_found():
            try:
                client.chat.completions.create(model="nope", messages=[{"role": "user", "content": "hi"}])
            except openai.NotFoundError as e:
                assert e.status_code == 404
                return
            raise AssertionError("no NotFoundError")

        def bad_request():
            try:
                client.chat.completions.create(
                    model=MODEL, messages=[{"role": "user", "content": "hi"}], top_p=5
                )
            except openai.BadRequestError as e:
                assert "top_p" in str(e), str(e)
                return
            raise AssertionError("no BadRequestError")

        def auth():
            bad = OpenAI(base_url=base + "/v1", api_key="wrong", max_retries=0)
            try:
                bad.models.list()
            except openai.AuthenticationError as e:
                assert e.status_code == 401
                return
            raise AssertionError("no AuthenticationError")

        check("models.list", models)
        check("chat: Paris", paris)
        check("chat: streaming with include_usage", chat_stream)
        check("completions: token ids + logprobs", completions_ids_logprobs)
        check("errors: NotFoundError", not_found)
        check("errors: BadRequestError names the field", bad_request)
        check("errors: AuthenticationError", auth)
    except Exception as e:  # noqa: BLE001
        results.append(False)
        print(f"FAIL setup: {e}", flush=True)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
    passed = sum(results)
    failed = len(results) - passed
    print(f"conformance: {passed} passed, {failed} failed")
    if failed:
        print("server log: /tmp/lantern-conformance.log")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
