#!/usr/bin/env python3
"""Expected chat-template renderings for crates/server/tests/chat_template.rs.

An independent implementation (transformers' `apply_chat_template(..., tokenize=False)`, which
runs Jinja2) renders every case; the Rust test renders the same messages with
`lantern_server::chat_template::ChatTemplate` and compares the strings exactly.

    pip install transformers==5.23.0 jinja2==3.1.6 tokenizers   # no torch needed
    python3 scripts/gen_chat_template_fixtures.py                 # from the repository root

Inputs (read only):
  tests/data/tokenizers/{qwen3,llama3}/   real tokenizer_config.json + tokenizer.json
  tests/data/chat_templates/*.jinja       test templates written for this suite
Output:
  tests/data/chat_templates/cases.json

Each case: {name, template_source_file, bos_token, eos_token, messages, tools,
add_generation_prompt, kwargs, expected | expected_error [, date_placeholder]}.
`template_source_file` is relative to the repository root; a `.json` file means its
`chat_template` field, anything else is the template text itself. `messages` are in OpenAI shape
(what the server receives). transformers expects HF shape, so `to_hf` below applies the
conversion `ChatTemplate::render` documents (text parts joined with "\\n", `content: null` ->
"", tool-call `arguments` JSON strings parsed); dropping other null keys and the reasoning
aliases are left to transformers itself.

`date_placeholder` cases call `strftime_now`: the rendered current date is replaced by the
placeholder, and the Rust test substitutes its own current date (same format) back in.
"""

import copy
import json
import sys
from datetime import datetime
from pathlib import Path

import jinja2
import transformers
from transformers import AutoTokenizer

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "tests/data/chat_templates/cases.json"
TOKENIZERS = {
    "qwen3": "tests/data/tokenizers/qwen3",
    "llama3": "tests/data/tokenizers/llama3",
}
FEATURES = "tests/data/chat_templates/features.jinja"
LLAMA32_STYLE = "tests/data/chat_templates/llama32_style.jinja"
DATE_FORMAT = "%d %b %Y"
DATE_PLACEHOLDER = "<<strftime_now:%d %b %Y>>"


def to_hf(messages):
    """OpenAI-shaped messages -> the shape HF templates expect (mirrors ChatTemplate::render)."""
    out = []
    for message in copy.deepcopy(messages):
        content = message.get("content")
        if isinstance(content, list):
            message["content"] = "\n".join(part["text"] for part in content)
        elif "content" in message and content is None:
            message["content"] = ""
        for call in message.get("tool_calls") or []:
            function = call.get("function") or {}
            arguments = function.get("arguments")
            if isinstance(arguments, str):
                try:
                    parsed = json.loads(arguments)
                except json.JSONDecodeError:
                    parsed = None
                if isinstance(parsed, dict):
                    function["arguments"] = parsed
        out.append(message)
    return out


WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Température actuelle <°C> & 'humidité' for a city — 東京 too",
        "parameters": {
            "type": "object",
            "properties": {
                "location": {"type": "string", "description": "City name, e.g. \"Paris\""},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
                "days": {"type": "integer", "minimum": 1, "maximum": 7.5},
            },
            "required": ["location"],
        },
    },
}

SYSTEM_USER = [
    {"role": "system", "content": "You are a helpful assistant."},
    {"role": "user", "content": "What is the capital of France?"},
]

MULTI_TURN = [
    {"role": "system", "content": "  You are terse.  \n"},
    {"role": "user", "content": "Hi there!"},
    {"role": "assistant", "content": "Hello. What do you need?"},
    {"role": "user", "content": "A haiku about lanterns, s'il vous plaît."},
]

THINKING_HISTORY = [
    {"role": "user", "content": "What is 2+2?"},
    {"role": "assistant", "content": "<think>\nSimple arithmetic.\n</think>\n\n2+2 = 4."},
    {"role": "user", "content": "And 3+3?"},
]

TEXT_PARTS = [
    {"role": "system", "content": [{"type": "text", "text": "Be brief."}]},
    {
        "role": "user",
        "content": [
            {"type": "text", "text": "First part."},
            {"type": "text", "text": "Second part, ünïcödé."},
        ],
    },
]

TOOL_ROUND_TRIP = [
    {"role": "system", "content": "You can look up the weather."},
    {"role": "user", "content": "Weather in Paris and Tokyo?"},
    {
        "role": "assistant",
        "content": None,
        "reasoning_content": "I should call the tool for both cities.",
        "tool_calls": [
            {
                "id": "call_1",
                "type": "function",
                "function": {"name": "get_weather", "arguments": "{\"location\": \"Paris\", \"unit\": \"celsius\"}"},
            },
            {
                "id": "call_2",
                "type": "function",
                "function": {"name": "get_weather", "arguments": "{\"location\":\"東京\",\"days\":2}"},
            },
        ],
    },
    {"role": "tool", "tool_call_id": "call_1", "content": "{\"temp\": 18}"},
    {"role": "tool", "tool_call_id": "call_2", "content": "{\"temp\": 22}"},
]

SINGLE_TOOL_CALL = [
    {"role": "system", "content": "You can look up the weather."},
    {"role": "user", "content": "Weather in Paris?"},
    {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": "call_1",
                "type": "function",
                "function": {"name": "get_weather", "arguments": "{\"location\": \"Paris\", \"days\": 1}"},
            }
        ],
    },
    {"role": "tool", "tool_call_id": "call_1", "content": "{\"temp\": 18, \"sky\": \"clear\"}"},
]

FEATURES_CHAT = [
    {"role": "system", "content": "  be  nice \n"},
    {"role": "user", "content": "hello   there", "name": "alice", "tool_calls": None},
    {
        "role": "assistant",
        "content": "Sure",
        "thinking": "planning…",
        "tool_calls": [
            {
                "id": "c1",
                "type": "function",
                "function": {
                    "name": "get_weather",
                    "arguments": "{\"location\": \"Paris\", \"days\": 2, \"ratio\": 1.0, \"exact\": true, \"nested\": {\"z\": null, \"a\": [1, 2.5e-7]}}",
                },
            },
            {"id": "c2", "type": "function", "function": {"name": "raw", "arguments": "not json"}},
        ],
    },
    {"role": "tool", "tool_call_id": "c1", "content": "sunny"},
    {"role": "user", "content": [{"type": "text", "text": "last one"}, {"type": "text", "text": "two  words"}]},
    {"role": "stop", "content": "never rendered"},
]


def cases():
    q, l3 = "qwen3", "llama3"
    yield dict(name="qwen3_system_user_gen", tok=q, messages=SYSTEM_USER, add_generation_prompt=True)
    yield dict(name="qwen3_system_user_no_gen", tok=q, messages=SYSTEM_USER, add_generation_prompt=False)
    yield dict(
        name="qwen3_enable_thinking_false", tok=q, messages=SYSTEM_USER, add_generation_prompt=True,
        kwargs={"enable_thinking": False},
    )
    yield dict(
        name="qwen3_enable_thinking_true", tok=q, messages=SYSTEM_USER, add_generation_prompt=True,
        kwargs={"enable_thinking": True},
    )
    yield dict(name="qwen3_multi_turn_gen", tok=q, messages=MULTI_TURN, add_generation_prompt=True)
    yield dict(name="qwen3_multi_turn_no_gen", tok=q, messages=MULTI_TURN, add_generation_prompt=False)
    yield dict(name="qwen3_thinking_history", tok=q, messages=THINKING_HISTORY, add_generation_prompt=True)
    yield dict(name="qwen3_text_parts", tok=q, messages=TEXT_PARTS, add_generation_prompt=True)
    yield dict(
        name="qwen3_tools_user", tok=q, messages=SYSTEM_USER, tools=[WEATHER_TOOL], add_generation_prompt=True,
    )
    yield dict(
        name="qwen3_tool_calls_and_responses", tok=q, messages=TOOL_ROUND_TRIP, tools=[WEATHER_TOOL],
        add_generation_prompt=True, kwargs={"enable_thinking": False},
    )
    yield dict(name="llama3_system_user_gen", tok=l3, messages=SYSTEM_USER, add_generation_prompt=True)
    yield dict(name="llama3_multi_turn_no_gen", tok=l3, messages=MULTI_TURN, add_generation_prompt=False)
    yield dict(name="llama3_text_parts", tok=l3, messages=TEXT_PARTS, add_generation_prompt=True)
    yield dict(
        name="features_full", tok=l3, template=FEATURES, messages=FEATURES_CHAT, tools=[WEATHER_TOOL],
        add_generation_prompt=True, kwargs={"extra_flag": True},
    )
    yield dict(
        name="features_no_tools_no_gen", tok=q, template=FEATURES, messages=MULTI_TURN, add_generation_prompt=False,
    )
    yield dict(
        name="llama32_style_tools_date_string", tok=l3, template=LLAMA32_STYLE, messages=SINGLE_TOOL_CALL,
        tools=[WEATHER_TOOL], add_generation_prompt=True, kwargs={"date_string": "17 May 2024"},
    )
    yield dict(
        name="llama32_style_tools_in_system", tok=l3, template=LLAMA32_STYLE, messages=SINGLE_TOOL_CALL,
        tools=[WEATHER_TOOL], add_generation_prompt=False,
        kwargs={"date_string": "01 Jan 2025", "tools_in_user_message": False},
    )
    yield dict(
        name="llama32_style_strftime_now", tok=l3, template=LLAMA32_STYLE, messages=MULTI_TURN,
        add_generation_prompt=True, date=True,
    )
    yield dict(
        name="llama32_style_parallel_calls_rejected", tok=l3, template=LLAMA32_STYLE, messages=TOOL_ROUND_TRIP,
        tools=[WEATHER_TOOL], add_generation_prompt=True, kwargs={"date_string": "17 May 2024"},
    )


def main():
    tokenizers = {name: AutoTokenizer.from_pretrained(ROOT / path) for name, path in TOKENIZERS.items()}
    out = []
    for case in cases():
        tok = tokenizers[case["tok"]]
        if "template" in case:
            source_file = case["template"]
            template = (ROOT / source_file).read_text(encoding="utf-8")
        else:
            source_file = f"{TOKENIZERS[case['tok']]}/tokenizer_config.json"
            template = json.loads((ROOT / source_file).read_text(encoding="utf-8"))["chat_template"]
        kwargs = case.get("kwargs", {})
        tools = case.get("tools")
        record = {
            "name": case["name"],
            "template_source_file": source_file,
            "bos_token": tok.special_tokens_map.get("bos_token"),
            "eos_token": tok.special_tokens_map.get("eos_token"),
            "messages": case["messages"],
            "tools": tools,
            "add_generation_prompt": case["add_generation_prompt"],
            "kwargs": kwargs,
        }
        try:
            today = datetime.now().strftime(DATE_FORMAT)
            rendered = tok.apply_chat_template(
                to_hf(case["messages"]),
                tools=copy.deepcopy(tools),
                chat_template=template,
                add_generation_prompt=case["add_generation_prompt"],
                tokenize=False,
                **copy.deepcopy(kwargs),
            )
            if case.get("date"):
                if today not in rendered:
                    sys.exit(f"{case['name']}: expected today's date {today!r} in the rendering")
                rendered = rendered.replace(today, DATE_PLACEHOLDER)
                record["date_placeholder"] = {"placeholder": DATE_PLACEHOLDER, "format": DATE_FORMAT}
            record["expected"] = rendered
        except jinja2.exceptions.TemplateError as err:
            record["expected_error"] = str(err)
        out.append(record)
    document = {
        "generator": "scripts/gen_chat_template_fixtures.py",
        "transformers": transformers.__version__,
        "jinja2": jinja2.__version__,
        "cases": out,
    }
    OUT.write_text(json.dumps(document, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"wrote {len(out)} cases to {OUT.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
