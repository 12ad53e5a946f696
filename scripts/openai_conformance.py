#!/usr/bin/env python3
"""OpenAI SDK conformance check for `lantern serve`.

Starts the real server on 127.0.0.1 with the default model (SmolLM2-135M-Instruct) and an
API key, then talks to it with the official `openai` Python package:

    python3 -m pip install openai        # once
    python3 scripts/openai_conformance.py [--bin target/debug/lantern]

Prints one line per check and a closing "N passed, N failed" line; exits 1 on failure.
"""
import argparse
import json
import sys

import openai
from openai import OpenAI

from lantern_server import MODEL, start, stop, wait_healthy

KEY = "conformance-key"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default="target/debug/lantern")
    args = ap.parse_args()
    proc, base = start(args.bin, KEY, "/tmp/lantern-conformance.log")
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

        # The default model serves quantized (Q4_1 weights, 8-bit activations for short steps):
        # its answer to some phrasings of this question turns on rounding (e.g. whether the
        # prompt's tail runs as a short cached-prefix step or inside a longer prefill). This
        # phrasing answers Paris both ways, cold and with its prefix cached.
        def paris():
            r = client.chat.completions.create(
                model=MODEL,
                messages=[{"role": "user", "content": "Name the capital of France."}],
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
                messages=[{"role": "user", "content": "Name the capital of France."}],
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

        weather = [{
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "Current weather in a city",
                "parameters": {
                    "type": "object",
                    "properties": {
                        "city": {"type": "string", "maxLength": 20},
                        "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
                    },
                    "required": ["city", "unit"],
                    "additionalProperties": False,
                },
            },
        }, {
            "type": "function",
            "function": {"name": "get_time", "parameters": {"type": "object", "properties": {}}},
        }]
        ask = [{"role": "user", "content": "What is the weather in Paris?"}]

        def check_weather_args(args):
            a = json.loads(args)
            assert set(a) == {"city", "unit"}, a
            assert isinstance(a["city"], str) and len(a["city"]) <= 20, a
            assert a["unit"] in ("celsius", "fahrenheit"), a

        def forced_named_tool():
            r = client.chat.completions.create(
                model=MODEL, messages=ask, tools=weather, temperature=0, max_tokens=60,
                tool_choice={"type": "function", "function": {"name": "get_weather"}},
            )
            c = r.choices[0]
            assert c.finish_reason == "stop", c
            calls = c.message.tool_calls
            assert calls and len(calls) == 1, c.message
            assert calls[0].type == "function" and calls[0].id
            assert calls[0].function.name == "get_weather"
            check_weather_args(calls[0].function.arguments)

        def forced_named_tool_stream():
            stream = client.chat.completions.create(
                model=MODEL, messages=ask, tools=weather, temperature=0, max_tokens=60, stream=True,
                tool_choice={"type": "function", "function": {"name": "get_weather"}},
            )
            name, args, content, finish = None, "", "", None
            for chunk in stream:
                for c in chunk.choices:
                    for tc in c.delta.tool_calls or []:
                        assert tc.index == 0, tc
                        if tc.function.name:
                            assert name is None and tc.id, tc
                            name = tc.function.name
                        args += tc.function.arguments or ""
                    content += c.delta.content or ""
                    finish = c.finish_reason or finish
            assert name == "get_weather", name
            assert content == "", content
            assert finish == "stop", finish
            check_weather_args(args)

        def required_tools():
            for stream in (False, True):
                kw = dict(model=MODEL, messages=ask, tools=weather, temperature=0, max_tokens=120,
                          tool_choice="required", parallel_tool_calls=False)
                if not stream:
                    c = client.chat.completions.create(**kw).choices[0]
                    assert c.finish_reason == "tool_calls", c
                    calls = [(t.function.name, t.function.arguments) for t in c.message.tool_calls]
                else:
                    calls, finish = {}, None
                    for chunk in client.chat.completions.create(stream=True, **kw):
                        for c in chunk.choices:
                            for tc in c.delta.tool_calls or []:
                                calls.setdefault(tc.index, ["", ""])
                                calls[tc.index][0] += tc.function.name or ""
                                calls[tc.index][1] += tc.function.arguments or ""
                            finish = c.finish_reason or finish
                    assert finish == "tool_calls", finish
                    calls = [tuple(v) for _, v in sorted(calls.items())]
                assert len(calls) == 1, calls
                name, args = calls[0]
                assert name in ("get_weather", "get_time"), calls
                if name == "get_weather":
                    check_weather_args(args)
                else:
                    assert json.loads(args) == {}, args

        def auto_without_parser():
            try:
                client.chat.completions.create(model=MODEL, messages=ask, tools=weather)
            except openai.BadRequestError as e:
                assert "--enable-auto-tool-choice" in str(e), str(e)
                return
            raise AssertionError("no BadRequestError")

        check("models.list", models)
        check("chat: Paris", paris)
        check("chat: streaming with include_usage", chat_stream)
        check("completions: token ids + logprobs", completions_ids_logprobs)
        check("errors: NotFoundError", not_found)
        check("errors: BadRequestError names the field", bad_request)
        check("errors: AuthenticationError", auth)
        check("tools: forced named function", forced_named_tool)
        check("tools: forced named function, streamed", forced_named_tool_stream)
        check("tools: required, one call, stream and not", required_tools)
        check("tools: auto without --tool-call-parser is a 400", auto_without_parser)
    except Exception as e:  # noqa: BLE001
        results.append(False)
        print(f"FAIL setup: {e}", flush=True)
    finally:
        stop(proc)
    passed = sum(results)
    failed = len(results) - passed
    print(f"conformance: {passed} passed, {failed} failed")
    if failed:
        print("server log: /tmp/lantern-conformance.log")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
