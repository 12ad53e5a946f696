#!/usr/bin/env python3
"""Reference token ids for the SmolLM2 GGUF, from an independent implementation.

Writes tests/data/tokenizers/smollm2-gguf-reference.json: for a list of varied strings,
the ids Hugging Face transformers produces for the tokenizer it builds from the GGUF's
metadata, plus what it decodes them back to. `models/tests/gguf_tokenizer.rs` checks that
Lantern's `tokenizer_from_gguf` (a separate implementation of the same conversion, in Rust)
gives exactly the same ids.

    pip install transformers gguf          # torch is optional, see below
    scripts/fetch-default-model.sh         # prints the GGUF path
    python3 scripts/gen_tokenizer_fixtures.py [path/to/SmolLM2-135M-Instruct.Q4_1.gguf]

The GGUF path defaults to $LANTERN_SMOLLM2_GGUF, then the cache used by
fetch-default-model.sh. `AutoTokenizer.from_pretrained(dir, gguf_file=NAME)` is used when it
works; transformers' GGUF loader imports torch, so without torch the script reads the
metadata with the `gguf` package and calls the same transformers converter
(`convert_gguf_tokenizer`) that `from_pretrained` calls. Both paths are the same code in
transformers, and the JSON records which one ran.

One correction is applied on top of transformers: it ignores `tokenizer.ggml.pre`, so for
"smollm" (and "starcoder", "refact") it misses the step that splits every numeric character
on its own. llama.cpp applies it (`\\p{N}` before the GPT-2 regex) and so does SmolLM2's own
tokenizer.json (`Digits(individual_digits=true)` before `ByteLevel`). The vocabulary has no
multi-digit tokens, so ASCII numbers come out the same either way, but numerals such as
"½ ² ①" do not. The script adds that step and keeps transformers' unpatched ids in
`ids_transformers_as_is` for every case where they differ.
"""

import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "tests" / "data" / "tokenizers" / "smollm2-gguf-reference.json"
NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"

TEXTS = [
    "",
    "Hello world",
    "Hello, world! How are you doing today?",
    " leading space",
    "trailing space ",
    "  two leading spaces and   three inside",
    "The quick brown fox jumps over the lazy dog.",
    "I'm sure you'll see they've done it, haven't they? We'd go.",
    "12345",
    "3.14159",
    "1,000,000 and 0.001 and -42 and 1e-9 and 0x1F",
    "Version v2.0.1 released on 2024-11-22 at 10:30:00.",
    "def fib(n):\n    if n < 2:\n        return n\n    return fib(n - 1) + fib(n - 2)\n",
    "fn main() {\n\tlet x: Vec<u32> = vec![1, 2, 3];\n\tprintln!(\"{x:?}\");\n}\n",
    "for (int i = 0; i < 10; ++i) { sum += a[i] * b[i]; }",
    '{"key": "value", "list": [1, 2, 3], "nested": {"a": null}}',
    "SELECT name, COUNT(*) FROM users WHERE age >= 18 GROUP BY name;",
    "https://example.com/path?query=1&other=two#fragment",
    "line one\nline two\n\nline four\r\nwindows line\rcarriage",
    "\n\n\n",
    "tabs\tand\t\tdouble tabs\t",
    "     ",
    "a\u00a0non-breaking\u2009thin\u3000ideographic space",
    "Emoji: 😀 😂 🤖 🎉 ❤️ 👍🏽",
    "Family ZWJ: 👨‍👩‍👧‍👦 and 🏳️‍🌈 and 👩🏽‍💻",
    "Flags: 🇺🇸 🇯🇵 🇫🇷 🇧🇷",
    "日本語のテキストです。東京は大きい都市です。",
    "中文测试：你好，世界！我们今天学习分词。",
    "한국어 문장도 테스트합니다.",
    "Ελληνικά και Русский текст и العربية و हिन्दी",
    "Café, naïve, résumé, jalapeño, Ångström, Zürich, façade, cœur",
    "Combining: e\u0301 a\u0308 n\u0303 o\u0302\u0323 (decomposed) vs é ä ñ ộ",
    "Zalgo: Z\u0351\u036b\u0343a\u0352l\u0350g\u0344o\u0308",
    "Math: ∑_{i=1}^{n} x_i² ≤ ∞, α + β = γ, √2 ≈ 1.414",
    "Mixed: 価格は¥1,200です (about $8.50) 🙂",
    "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n",
    "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n",
    "<|im_start|>assistant\nThe capital of France is Paris.<|im_end|>\n<|endoftext|>",
    "text<|im_end|>text<|im_start|>more",
    "not special: <|im_sta and <|im_end and |im_end|>",
    "<repo_name>lantern<file_sep>src/main.rs<filename>",
    "Ⓐ ① ½ ² Ⅻ",
    "invalid-ish: \ufffd replacement char and \u200b zero width",
    "A" * 50 + " " + "ab" * 30,
]


def default_gguf_path() -> Path:
    if len(sys.argv) > 1:
        return Path(sys.argv[1])
    env = os.environ.get("LANTERN_SMOLLM2_GGUF")
    if env:
        return Path(env)
    cache = Path(os.environ.get("LANTERN_CACHE", Path.home() / ".cache" / "lantern"))
    return cache / NAME


def metadata(path: Path) -> dict:
    from gguf import GGUFReader

    reader = GGUFReader(str(path))
    return {key: field.contents() for key, field in reader.fields.items() if key.startswith(("tokenizer.", "general.architecture"))}


def reference_tokenizer(path: Path):
    """(how, backend tokenizers.Tokenizer) built by transformers from the GGUF."""
    try:
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
        return "transformers AutoTokenizer.from_pretrained(gguf_file=...)", tok.backend_tokenizer
    except Exception as err:  # transformers' GGUF reader needs torch
        print(f"AutoTokenizer GGUF path unavailable ({type(err).__name__}: {err}); "
              "using transformers' convert_gguf_tokenizer on metadata read by gguf", file=sys.stderr)

    try:  # transformers >= 5
        from transformers.integrations.gguf.gguf_tokenizer_mapping import (
            GGUF_TOKENIZER_MAPPING,
            convert_gguf_tokenizer,
        )
    except ImportError:  # transformers 4.x
        from transformers.integrations.ggml import GGUF_TOKENIZER_MAPPING, convert_gguf_tokenizer

    md = metadata(path)
    tokenizer_dict = {
        name: md[f"tokenizer.{key}"]
        for key, name in GGUF_TOKENIZER_MAPPING["tokenizer"].items()
        if f"tokenizer.{key}" in md
    }
    backend, _ = convert_gguf_tokenizer(md["general.architecture"], tokenizer_dict)
    return "transformers convert_gguf_tokenizer (metadata via gguf.GGUFReader)", backend


DIGIT_SPLIT_PRE = ("smollm", "starcoder", "refact")


def with_digit_split(tok):
    """A copy of `tok` that splits every numeric character first (see module docs)."""
    from tokenizers import Tokenizer, pre_tokenizers

    patched = Tokenizer.from_str(tok.to_str())
    patched.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), tok.pre_tokenizer]
    )
    return patched


def main() -> None:
    import transformers

    path = default_gguf_path()
    if not path.is_file():
        sys.exit(f"GGUF not found at {path}; run scripts/fetch-default-model.sh or pass the path")
    how, as_is = reference_tokenizer(path)
    md = metadata(path)
    tok = as_is
    if md.get("tokenizer.ggml.pre") in DIGIT_SPLIT_PRE:
        tok = with_digit_split(as_is)
        how += " + Digits(individual_digits=True) first, for tokenizer.ggml.pre=" + md["tokenizer.ggml.pre"]

    cases = []
    for text in TEXTS:
        ids = tok.encode(text, add_special_tokens=False).ids
        case = {
            "text": text,
            "ids": ids,
            "ids_with_special": tok.encode(text, add_special_tokens=True).ids,
            "decoded": tok.decode(ids, skip_special_tokens=False),
            "decoded_skip_special": tok.decode(ids, skip_special_tokens=True),
        }
        unpatched = as_is.encode(text, add_special_tokens=False).ids
        if unpatched != ids:
            case["ids_transformers_as_is"] = unpatched
        cases.append(case)

    def opt(key):
        return md.get(key)

    out = {
        "about": "Reference encodings of SmolLM2-135M-Instruct.Q4_1.gguf's tokenizer; "
        "regenerate with scripts/gen_tokenizer_fixtures.py",
        "gguf": NAME,
        "reference": how,
        "transformers_version": transformers.__version__,
        "metadata": {
            "tokenizer.ggml.model": opt("tokenizer.ggml.model"),
            "tokenizer.ggml.pre": opt("tokenizer.ggml.pre"),
            "tokenizer.ggml.bos_token_id": opt("tokenizer.ggml.bos_token_id"),
            "tokenizer.ggml.eos_token_id": opt("tokenizer.ggml.eos_token_id"),
            "tokenizer.ggml.padding_token_id": opt("tokenizer.ggml.padding_token_id"),
            "tokenizer.ggml.unknown_token_id": opt("tokenizer.ggml.unknown_token_id"),
            "tokenizer.ggml.add_bos_token": opt("tokenizer.ggml.add_bos_token"),
            "tokenizer.ggml.add_space_prefix": opt("tokenizer.ggml.add_space_prefix"),
            "tokenizer.chat_template": opt("tokenizer.chat_template"),
            "n_tokens": len(md["tokenizer.ggml.tokens"]),
        },
        "cases": cases,
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    with open(OUT, "w", encoding="utf-8") as f:
        json.dump(out, f, ensure_ascii=False, indent=1)
        f.write("\n")
    print(f"wrote {len(cases)} cases to {OUT}", file=sys.stderr)


if __name__ == "__main__":
    main()
