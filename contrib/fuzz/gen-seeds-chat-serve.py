#!/usr/bin/env python3
"""Writes the seed corpora of contrib/fuzz/corpus/chat-template/ and
contrib/fuzz/corpus/serve-request/ from the project's own fixtures
(t/fixtures/chat-templates: the templates, conversations and snippets) and
the request bodies of the server tests (t/serve/*.mjs, t/t600*.sh).

    python3 contrib/fuzz/gen-seeds-chat-serve.py

run from the source tree.  Standard library only; files are at most 64 KiB.
"""
import json
import os
import shutil

SRC = os.getcwd()
OUT = os.path.join(SRC, "contrib", "fuzz", "corpus")
SPLIT = b"\n--8<--\n"  # fuzz-common.h FUZZ_SPLIT
MAX = 65536
CT = os.path.join(SRC, "t", "fixtures", "chat-templates")


def js(o):
    return json.dumps(o, ensure_ascii=False, separators=(",", ":")).encode()


def clear(target):
    d = os.path.join(OUT, target)
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(d)
    return d


def put(d, name, data):
    if isinstance(data, str):
        data = data.encode()
    assert len(data) <= MAX, (name, len(data))
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def chat_template_seeds():
    d = clear("chat-template")
    conv = json.load(open(os.path.join(CT, "conversations.json")))
    snip = json.load(open(os.path.join(CT, "snippets.json")))
    convs = conv["conversations"]
    names = sorted(n for n in os.listdir(CT) if n.endswith(".jinja"))
    # Every other model's template (half the fixtures keep the corpus small;
    # the fuzzer's mutations reach the rest's constructs), and Qwen3's.
    names = sorted(set(names[::2]) | {"Qwen-Qwen3-0.6B.jinja"})
    # Each with one of the conversations, in turn.
    for i, n in enumerate(names):
        c = convs[i % len(convs)]
        ctx = dict(conv["variables"])
        ctx["messages"] = c["messages"]
        if "tools" in c:
            ctx["tools"] = conv["tools"]
        if "enable_thinking" in c:
            ctx["enable_thinking"] = c["enable_thinking"]
        src = open(os.path.join(CT, n), "rb").read()
        put(d, "tmpl-" + n[:-len(".jinja")], src + SPLIT + js(ctx))
    # The Jinja snippets of the unit tests, with their contexts.
    for s in snip["snippets"]:
        ctx = snip["contexts"].get(s.get("context"), {}) if s.get("context") else {}
        put(d, "snip-" + s["name"], s["template"].encode() + (SPLIT + js(ctx) if ctx else b""))
    # The second part as a message array, as raw text, and absent.
    qwen = open(os.path.join(CT, "Qwen-Qwen3-0.6B.jinja"), "rb").read()
    put(d, "array-messages", qwen + SPLIT + js(convs[1]["messages"]))
    put(d, "raw-text", qwen + SPLIT + "caf\u00e9 <|im_end|> {{ x }} \\u0000\n\ttab".encode())
    put(d, "no-context", b"{% for m in messages %}{{ m.role }}: {{ m.content }}\n{% endfor %}")
    # Limits: each of these must be refused naming the limit, quickly (issue 16).
    put(d, "limit-doubling", '{% set ns = namespace(s="x") %}{% for i in range(40) %}{% set ns.s = ns.s ~ ns.s %}'
        '{% endfor %}{{ ns.s|length }}')
    put(d, "limit-range", "{% for i in range(100000000) %}{% endfor %}")
    put(d, "limit-recursion", "{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}")
    put(d, "limit-list", "{{ (range(3000)|list + range(3000)|list)|length }}")
    put(d, "limit-output", "{% for i in range(70000) %}x{% endfor %}")
    put(d, "strftime", "{{ strftime_now('%Y-%m-%d %H:%M') }}{{ raise_exception('no') if false }}")
    put(d, "raise", "{{ raise_exception('Conversation roles must alternate') }}")
    put(d, "bad-syntax", "{% for %}{{ }}")
    put(d, "bad-unsupported", "{% include 'x.html' %}")
    # Findings (contrib/fuzz/README.md): a failed operand freed as an uninitialized pointer.
    put(d, "bad-unary-operand", "{{ f(-<1) }}")
    put(d, "bad-not-operand", "{{ 1 if not -) }}")


CHAT = "c"  # the first byte: odd for /v1/chat/completions
COMP = "p"  # even for /v1/completions


def serve_request_seeds():
    d = clear("serve-request")
    M = "pocket-qwen3"
    user = [{"role": "user", "content": "Who was Moses?"}]
    tools = [
        {"type": "function", "function": {
            "name": "get_weather", "description": "The weather of a city for the next days",
            "parameters": {"type": "object",
                           "properties": {"city": {"type": "string", "enum": ["Paris", "London", "Tokyo"]},
                                          "days": {"type": "integer", "minimum": 1, "maximum": 7}},
                           "required": ["city", "days"], "additionalProperties": False}}},
        {"type": "function", "function": {
            "name": "get_time", "description": "The time in a time zone",
            "parameters": {"type": "object", "properties": {"zone": {"type": "string", "enum": ["UTC", "CET", "JST"]}},
                           "required": ["zone"], "additionalProperties": False}}},
    ]
    schema = {"type": "object", "properties": {"name": {"type": "string", "maxLength": 20},
                                                "age": {"type": "integer", "minimum": 0},
                                                "tags": {"type": "array", "items": {"type": "string"}, "maxItems": 3}},
              "required": ["name", "age"], "additionalProperties": False}
    bodies = {
        # t/t6000-serve.sh
        "comp-text": (COMP, {"model": M, "prompt": "And it came to pass", "max_tokens": 40, "temperature": 0}),
        "comp-ids": (COMP, {"model": M, "prompt": [1, 2, 3], "max_tokens": 12, "temperature": 0}),
        "comp-seed-n": (COMP, {"model": M, "prompt": "The LORD", "max_tokens": 30, "temperature": 0.8,
                               "seed": 7, "n": 2}),
        "comp-sampling": (COMP, {"model": M, "prompt": ["In the beginning"], "max_tokens": 8, "top_p": 0.9,
                                 "top_k": 40, "min_p": 0.05, "repetition_penalty": 1.1, "presence_penalty": 0.5,
                                 "frequency_penalty": -0.5, "stop": ["\n", "LORD"], "logprobs": 3,
                                 "logit_bias": {"0": -100, "42": 5.5}, "best_of": 1, "suffix": "",
                                 "echo": False, "stream": True, "stream_options": {"include_usage": True}}),
        "chat": (CHAT, {"model": M, "messages": user, "max_tokens": 30, "temperature": 0}),
        "chat-stream": (CHAT, {"model": M, "messages": user, "max_tokens": 30, "temperature": 0, "stream": True,
                               "stream_options": {"include_usage": True}}),
        "chat-multi": (CHAT, {"model": M, "messages": [
            {"role": "system", "content": "You are terse."}, {"role": "developer", "content": "No lists."},
            {"role": "user", "content": [{"type": "text", "text": "Hi"}, {"type": "text", "text": " there"}]},
            {"role": "assistant", "content": "Hello."}, {"role": "user", "content": "Again?"}],
            "max_completion_tokens": 5, "logprobs": True, "top_logprobs": 2, "stop": "\n"}),
        # t/serve/tools.mjs
        "chat-tools": (CHAT, {"model": M, "messages": [{"role": "user", "content": "Weather in Paris?"}],
                              "tools": tools, "tool_choice": "required", "max_tokens": 300, "seed": 5,
                              "temperature": 0.8}),
        "chat-tool-named": (CHAT, {"model": M, "messages": user, "tools": tools, "parallel_tool_calls": False,
                                   "tool_choice": {"type": "function", "function": {"name": "get_time"}}}),
        "chat-tool-result": (CHAT, {"model": M, "tools": tools, "messages": [
            {"role": "user", "content": "Weather in Paris?"},
            {"role": "assistant", "content": None, "tool_calls": [
                {"id": "call_1", "type": "function",
                 "function": {"name": "get_weather", "arguments": "{\"city\": \"Paris\", \"days\": 1}"}}]},
            {"role": "tool", "tool_call_id": "call_1", "content": "{\"forecast\": \"sunny, 21 C\"}"}]}),
        # t/serve/structured.mjs, t/t6002-serve-grammar.sh
        "chat-json-object": (CHAT, {"model": M, "messages": user, "response_format": {"type": "json_object"}}),
        "chat-json-schema": (CHAT, {"model": M, "messages": user, "temperature": 1, "response_format": {
            "type": "json_schema", "json_schema": {"name": "person", "schema": schema, "strict": True}}}),
        "comp-grammar": (COMP, {"model": M, "prompt": "Answer:", "grammar": "root ::= (\"yes\" | \"no\") [.!]?"}),
        # t/serve/errors.mjs and refusals, one per kind
        "bad-model": (CHAT, {"model": "nope", "messages": [{"role": "user", "content": "hi"}]}),
        "bad-adapter": (CHAT, {"model": M + ":nope", "messages": user,
                               "adapters": [{"name": "kjv", "scale": 0.5}]}),
        "bad-empty-messages": (CHAT, {"model": M, "messages": []}),
        "bad-context": (CHAT, {"model": M, "messages": user, "max_tokens": 1000000}),
        "bad-role": (CHAT, {"model": M, "messages": [{"role": "robot", "content": "hi"}]}),
        "bad-image": (CHAT, {"model": M, "messages": [{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": "x"}}]}]}),
        "bad-temperature": (COMP, {"model": M, "prompt": "x", "temperature": 2.5}),
        "bad-top-p": (COMP, {"model": M, "prompt": "x", "top_p": 0}),
        "bad-n": (COMP, {"model": M, "prompt": "x", "n": 17, "best_of": 3}),
        "bad-int": (COMP, {"model": M, "prompt": "x", "max_tokens": 1.5, "seed": 1e999}),
        "bad-token-id": (COMP, {"model": M, "prompt": [0, -1, 99999999]}),
        "bad-prompts": (COMP, {"model": M, "prompt": ["a", "b"]}),
        "bad-logit-bias": (COMP, {"model": M, "prompt": "x", "logit_bias": {"abc": 1, "7": 101}}),
        "bad-top-logprobs": (CHAT, {"model": M, "messages": user, "top_logprobs": 3}),
        "bad-functions": (CHAT, {"model": M, "messages": user, "functions": [{"name": "f"}]}),
        "bad-grammar": (COMP, {"model": M, "prompt": "x", "grammar": "root ::= (", "response_format":
                               {"type": "text"}}),
        "bad-format": (CHAT, {"model": M, "messages": user, "response_format": {"type": "yaml"}}),
        "bad-tools-completion": (COMP, {"model": M, "prompt": "x", "tools": tools}),
        "bad-missing-prompt": (COMP, {"model": M}),
    }
    for name, (ep, body) in bodies.items():
        put(d, name, ep.encode() + js(body))
    raw = {
        "bad-json-trailing": CHAT + '{"model":"pocket-qwen3","messages":[]} x',
        "bad-json-cut": COMP + '{"model":"pocket-qwen3","prompt":"x"',
        "bad-json-array": COMP + "[1,2,3]",
        "bad-json-utf8": COMP + '{"model":"pocket-qwen3","prompt":"\xff"}',
        "bad-json-empty": CHAT,
        "bad-json-nonstrict": COMP + "{'model': 'pocket-qwen3', prompt: 1,}",
        # Finding: an empty character set first in a grammar (UBSan in grammar.c).
        "grammar-empty-set": COMP + '{"model":"pocket-qwen3","prompt":"x","grammar":"root ::= [] | \\"a\\""}',
        "grammar-empty-negated-set": COMP + '{"model":"pocket-qwen3","prompt":"x","grammar":"root ::= [^]"}',
        "unicode-escapes": COMP + '{"model":"pocket-qwen3","prompt":"\\u00e9\\ud83d\\ude00\\u0000 end",'
                                  '"stop":["\\u0000"]}',
    }
    for name, body in raw.items():
        put(d, name, body.encode("latin-1") if "\xff" in body else body.encode())


if __name__ == "__main__":
    chat_template_seeds()
    serve_request_seeds()
