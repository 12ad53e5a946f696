#!/usr/bin/env python3
"""Structured-outputs check for `lantern serve`, end to end with the official `openai` SDK.

Starts the real server on 127.0.0.1 with the default model (SmolLM2-135M-Instruct) and an
API key (or uses one already running, with --base-url), then:

  a. sends every JSON schema of tests/fixtures/schemas/ as
     `response_format: {"type": "json_schema", ...}` (8 requests at a time, so the server
     batches them) and validates each answer that finished ("stop") with `jsonschema`
     (Draft 2020-12 unless the schema names its draft, formats checked). A 400 naming
     `response_format` means the schema uses a feature the server does not implement: it
     counts as rejected. An answer cut off by max_tokens ("length") counts as cut off.
     The run fails if more than 10% are rejected or more than 20% cut off;
  b. `chat.completions.parse` (`beta.chat.completions.parse` in older SDKs) with a pydantic
     model (nested model, enum, list, Optional) gives `message.parsed` of that model;
  c. a streamed json_schema answer: the deltas put together parse and validate;
  d. `structured_outputs: {"choice": [...]}` and `{"regex": ...}` (vLLM's extension, sent
     with `extra_body`) give one of the choices / a full match of the regex, and
     `response_format: {"type": "json_object"}` gives a JSON object.

    python3 -m pip install -r scripts/requirements-structured.txt   # once (openai, jsonschema)
    python3 scripts/structured_outputs_check.py [--bin target/debug/lantern]
    python3 scripts/structured_outputs_check.py --base-url http://127.0.0.1:8000 --api-key KEY

The script installs nothing. Without the `format-nongpl` extras of jsonschema, formats such as
date-time, uri, hostname or duration go unchecked (a note says which).

Prints one line per check and a closing "N passed, N failed" line; exits 1 on failure.
"""
import argparse
import concurrent.futures
import enum
import glob
import json
import os
import re
import sys
import time
from typing import List, Optional

import jsonschema
import openai
from openai import OpenAI
from pydantic import BaseModel, Field

from lantern_server import MODEL, start, stop, wait_healthy

KEY = "structured-key"
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LOG = "/tmp/lantern-structured.log"


def validator(schema):
    """The validator class the schema asks for (`$schema`), else Draft 2020-12, with that
    draft's format checker (the catch-all `jsonschema.FormatChecker()` checks `time` the
    draft 3 way, HH:MM:SS without fraction or offset, and rejects valid RFC 3339 times)."""
    cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
    return cls(schema, format_checker=cls.FORMAT_CHECKER)


def formats_in(node, out):
    if isinstance(node, dict):
        if isinstance(node.get("format"), str):
            out.add(node["format"])
        for v in node.values():
            formats_in(v, out)
    elif isinstance(node, list):
        for v in node:
            formats_in(v, out)
    return out


def load_fixtures(directory):
    fixtures = []
    for path in sorted(glob.glob(os.path.join(directory, "*.json"))):
        with open(path) as f:
            d = json.load(f)
        for k in ("name", "description", "schema", "prompt"):
            assert k in d, f"{path}: `{k}` is missing"
        # The fixture itself must be a valid schema, or its verdicts mean nothing.
        jsonschema.validators.validator_for(d["schema"], default=jsonschema.Draft202012Validator).check_schema(
            d["schema"]
        )
        d["id"] = os.path.splitext(os.path.basename(path))[0]
        fixtures.append(d)
    return fixtures


class Outcome:
    VALID, REJECTED, CUT_OFF, FAILED = "valid", "rejected", "cut off", "failed"

    def __init__(self, kind, detail, seconds, tokens=None, content=None):
        self.kind, self.detail, self.seconds, self.tokens, self.content = kind, detail, seconds, tokens, content


def run_fixture(client, model, fx, max_tokens):
    request = dict(
        model=model,
        messages=[{"role": "user", "content": fx["prompt"]}],
        response_format={
            "type": "json_schema",
            "json_schema": {"name": fx["name"], "schema": fx["schema"], "strict": True},
        },
        max_tokens=max_tokens,
        temperature=0,
    )
    t0 = time.time()
    try:
        r = client.chat.completions.create(**request)
    except openai.BadRequestError as e:
        dt = time.time() - t0
        msg = str(e)
        if "response_format" not in msg:
            return Outcome(Outcome.FAILED, f"400 that does not name `response_format`: {msg}", dt)
        reason = e.body.get("message", msg) if isinstance(e.body, dict) else msg
        return Outcome(Outcome.REJECTED, reason, dt)
    except Exception as e:  # noqa: BLE001 (a 500, a timeout, a dropped connection: all server bugs)
        return Outcome(Outcome.FAILED, f"{type(e).__name__}: {e}", time.time() - t0)
    dt = time.time() - t0
    choice = r.choices[0]
    content = choice.message.content
    tokens = r.usage.completion_tokens if r.usage else None
    if choice.finish_reason == "length":
        return Outcome(Outcome.CUT_OFF, f"cut off at {tokens} tokens", dt, tokens, content)
    if choice.finish_reason != "stop":
        return Outcome(Outcome.FAILED, f"finish_reason {choice.finish_reason!r}", dt, tokens, content)
    try:
        obj = json.loads(content)
    except (TypeError, json.JSONDecodeError) as e:
        return Outcome(Outcome.FAILED, f"not JSON ({e}): {content!r}", dt, tokens, content)
    errors = sorted(validator(fx["schema"]).iter_errors(obj), key=lambda e: list(e.path))
    if errors:
        why = "; ".join(f"at /{'/'.join(map(str, e.path))}: {e.message}" for e in errors[:3])
        return Outcome(Outcome.FAILED, f"does not validate: {why}; output: {content}", dt, tokens, content)
    return Outcome(Outcome.VALID, f"{tokens} tokens", dt, tokens, content)


# b. A pydantic model for `parse`: nested model, enum, list, Optional.
class Priority(str, enum.Enum):
    low = "low"
    medium = "medium"
    high = "high"


class Assignee(BaseModel):
    name: str = Field(max_length=20)
    email: Optional[str] = Field(max_length=30)


class Ticket(BaseModel):
    title: str = Field(max_length=40)
    priority: Priority
    tags: List[str] = Field(max_length=3)
    assignee: Assignee
    due_date: Optional[str] = Field(max_length=10)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bin", default="target/debug/lantern", help="the lantern binary to start")
    ap.add_argument("--base-url", help="use this running server (http://host:port) instead of starting one")
    ap.add_argument("--api-key", default=None, help="with --base-url (default: $LANTERN_API_KEY, else none)")
    ap.add_argument("--model", default=MODEL)
    ap.add_argument("--schemas", default=os.path.join(ROOT, "tests", "fixtures", "schemas"))
    ap.add_argument("--only", help="run only the fixtures whose file name contains this")
    ap.add_argument("--max-tokens", type=int, default=400)
    ap.add_argument("--workers", type=int, default=8, help="requests in flight at once")
    ap.add_argument("--max-rejected", type=float, default=0.10, help="largest share of schemas the server may reject")
    ap.add_argument("--max-cut-off", type=float, default=0.20, help="largest share of accepted schemas cut off by max_tokens")
    ap.add_argument("--report", help="write every request's outcome (and output) to this JSON file")
    args = ap.parse_args()

    fixtures = load_fixtures(args.schemas)
    if args.only:
        fixtures = [f for f in fixtures if args.only in f["id"]]

    proc = None
    if args.base_url:
        base = args.base_url.rstrip("/")
        base = base[: -len("/v1")] if base.endswith("/v1") else base
        key = args.api_key or os.environ.get("LANTERN_API_KEY") or "none"
    else:
        key = KEY
        proc, base = start(args.bin, KEY, LOG)
    results = []

    def check(name, fn):
        try:
            note = fn()
            results.append(True)
            print(f"ok   {name}" + (f": {note}" if note else ""), flush=True)
        except Exception as e:  # noqa: BLE001
            results.append(False)
            print(f"FAIL {name}: {type(e).__name__}: {e}", flush=True)

    t_start = time.time()
    try:
        wait_healthy(base, proc)
        client = OpenAI(base_url=base + "/v1", api_key=key, max_retries=0, timeout=600)

        unchecked = sorted(
            set().union(*(formats_in(f["schema"], set()) for f in fixtures))
            - set(jsonschema.Draft202012Validator.FORMAT_CHECKER.checkers)
        )
        if unchecked:
            print(f"note: formats not checked (pip install 'jsonschema[format-nongpl]'): {', '.join(unchecked)}")

        # a. Every fixture schema, concurrently.
        print(f"{len(fixtures)} schemas, {args.workers} at a time, max_tokens {args.max_tokens}", flush=True)
        t0 = time.time()
        outcomes = {}
        with concurrent.futures.ThreadPoolExecutor(args.workers) as pool:
            futures = [(fx, pool.submit(run_fixture, client, args.model, fx, args.max_tokens)) for fx in fixtures]
            for fx, fut in futures:
                o = fut.result()
                outcomes[fx["id"]] = o
                name = f"schema {fx['id']}"
                timing = f" ({o.seconds:.1f}s)"
                if o.kind == Outcome.FAILED:
                    results.append(False)
                    print(f"FAIL {name}: {o.detail}{timing}", flush=True)
                else:
                    results.append(True)
                    print(f"ok   {name}: {o.kind}: {o.detail}{timing}", flush=True)
        wall = time.time() - t0
        n = len(outcomes)
        count = {k: sum(o.kind == k for o in outcomes.values()) for k in
                 (Outcome.VALID, Outcome.REJECTED, Outcome.CUT_OFF, Outcome.FAILED)}
        accepted = n - count[Outcome.REJECTED]
        print(
            f"schemas: {n} sent, {accepted} accepted ({count[Outcome.VALID]} valid, {count[Outcome.CUT_OFF]} cut off, "
            f"{count[Outcome.FAILED]} failed), {count[Outcome.REJECTED]} rejected; wall time {wall:.1f}s",
            flush=True,
        )

        def rejected_share():
            share = count[Outcome.REJECTED] / max(n, 1)
            assert share <= args.max_rejected, f"{share:.0%} rejected, more than {args.max_rejected:.0%}"
            return f"{count[Outcome.REJECTED]} of {n} rejected ({share:.0%}, at most {args.max_rejected:.0%})"

        def cut_off_share():
            share = count[Outcome.CUT_OFF] / max(accepted, 1)
            assert share <= args.max_cut_off, f"{share:.0%} cut off, more than {args.max_cut_off:.0%}"
            return f"{count[Outcome.CUT_OFF]} of {accepted} accepted cut off ({share:.0%}, at most {args.max_cut_off:.0%})"

        if args.only:
            print("note: --only given, the rejected and cut-off shares are not checked")
        else:
            check("schemas: rejected share", rejected_share)
            check("schemas: cut-off share", cut_off_share)
        if args.report:
            with open(args.report, "w") as f:
                json.dump({k: vars(o) for k, o in outcomes.items()}, f, indent=2)

        # b. parse() with a pydantic model.
        def parse_pydantic():
            parse = getattr(client.chat.completions, "parse", None) or client.beta.chat.completions.parse
            r = parse(
                model=args.model,
                messages=[{"role": "user", "content": "Create a ticket: the login page is broken, assign it to Bob."}],
                response_format=Ticket,
                max_tokens=300,
                temperature=0,
            )
            msg = r.choices[0].message
            assert r.choices[0].finish_reason == "stop", r.choices[0].finish_reason
            assert isinstance(msg.parsed, Ticket), (type(msg.parsed), msg.content)
            assert isinstance(msg.parsed.priority, Priority) and isinstance(msg.parsed.assignee, Assignee)
            return msg.content

        # c. Streaming: the deltas together are the JSON document. The schema is weather-report,
        #    else the next fixture that came back complete and valid in (a). In (a) each request
        #    shared its steps with others, and greedy decoding need not give the same tokens alone
        #    as in a batch (a CPU step's matmul path depends on its size; a quantized model may
        #    then loop, which is the model's business, not the protocol's): the fixture's answer is
        #    first taken alone without streaming, and the stream, also alone, must rebuild it.
        all_fx = load_fixtures(args.schemas)
        complete = [f for f in all_fx if outcomes.get(f["id"]) is not None and outcomes[f["id"]].kind == Outcome.VALID]
        complete.sort(key=lambda f: f["name"] != "weather-report")

        def schema_request(fx, stream):
            return client.chat.completions.create(
                model=args.model,
                messages=[{"role": "user", "content": fx["prompt"]}],
                response_format={
                    "type": "json_schema",
                    "json_schema": {"name": fx["name"], "schema": fx["schema"], "strict": True},
                },
                max_tokens=args.max_tokens,
                temperature=0,
                stream=stream,
            )

        def stream_schema():
            assert complete, "no fixture came back complete and valid in (a)"
            tried = []
            for fx in complete[:5]:
                alone = schema_request(fx, stream=False).choices[0]
                if alone.finish_reason != "stop":
                    tried.append(f"{fx['name']}: {alone.finish_reason}")
                    continue
                text, finish, chunks = "", None, 0
                for chunk in schema_request(fx, stream=True):
                    for c in chunk.choices:
                        if c.delta.content:
                            text += c.delta.content
                            chunks += 1
                        if c.finish_reason:
                            finish = c.finish_reason
                assert finish == "stop", (fx["name"], finish, text)
                assert chunks > 1, f"one delta only: {text!r}"
                assert text == alone.message.content, (fx["name"], text, alone.message.content)
                validator(fx["schema"]).validate(json.loads(text))
                return f"{fx['name']}: {chunks} deltas" + (f" (alone, cut off: {'; '.join(tried)})" if tried else "")
            raise AssertionError(f"every candidate ran into max_tokens alone: {tried}")

        # d. vLLM's structured_outputs (choice, regex) and json_object.
        def choice():
            options = ["positive", "negative", "neutral"]
            r = client.chat.completions.create(
                model=args.model,
                messages=[{"role": "user", "content": "Sentiment of 'I love this phone!'?"}],
                extra_body={"structured_outputs": {"choice": options}},
                max_tokens=20,
                temperature=0,
            )
            text = r.choices[0].message.content
            assert text in options, text
            assert r.choices[0].finish_reason == "stop", r.choices[0].finish_reason
            return repr(text)

        def regex():
            rx = r"[A-Z]{3}-[0-9]{4}"
            r = client.chat.completions.create(
                model=args.model,
                messages=[{"role": "user", "content": "Give me a product code like ABC-1234."}],
                extra_body={"structured_outputs": {"regex": rx}},
                max_tokens=20,
                temperature=0,
            )
            text = r.choices[0].message.content
            assert re.fullmatch(rx, text), text
            assert r.choices[0].finish_reason == "stop", r.choices[0].finish_reason
            return repr(text)

        def json_object():
            r = client.chat.completions.create(
                model=args.model,
                messages=[{"role": "user", "content": "Give a JSON object with a name and an age of a person."}],
                response_format={"type": "json_object"},
                max_tokens=args.max_tokens,
                temperature=0,
            )
            text = r.choices[0].message.content
            assert r.choices[0].finish_reason == "stop", (r.choices[0].finish_reason, text)
            assert isinstance(json.loads(text), dict), text
            return text

        check("parse: pydantic model -> message.parsed", parse_pydantic)
        check("stream: json_schema deltas parse and validate", stream_schema)
        check("structured_outputs: choice", choice)
        check("structured_outputs: regex full match", regex)
        check("response_format: json_object", json_object)
    except Exception as e:  # noqa: BLE001
        results.append(False)
        print(f"FAIL setup: {type(e).__name__}: {e}", flush=True)
    finally:
        if proc is not None:
            stop(proc)
    passed = sum(results)
    failed = len(results) - passed
    print(f"structured outputs: {passed} passed, {failed} failed ({time.time() - t_start:.0f}s)")
    if failed and proc is not None:
        print(f"server log: {LOG}")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
