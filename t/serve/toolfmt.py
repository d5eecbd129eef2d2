#!/usr/bin/env python3
"""toolfmt.py - models and checks for t6008 (tool_choice in every tool-call format).

  toolfmt.py model POCKET TEMPLATE DIR [EXTRA_EOS_TOKEN]
      DIR: the pocket model with the chat template TEMPLATE and a tokenizer that
      has the special tokens of every tool-call format (ids 4091 - N .. 4090 of the
      pocket's byte-level BPE vocabulary, its last merges, made added tokens;
      the weights are the pocket's, linked; 8192 positions).  EXTRA_EOS_TOKEN: one of them that
      also ends generation (gpt-oss's <|call|>).
  toolfmt.py check FILE NAME|- PARALLEL [stream]
      FILE: a chat completion (or with "stream" its SSE body); the calls, put
      together from the deltas when streamed, must be well formed: finish_reason
      tool_calls, at least one call, each of NAME when given, ids, arguments a JSON
      object with "city" one of Paris or London (get_time: "zone", UTC or CET) and
      nothing else.  PARALLEL true: the random model may call until max_tokens,
      finish_reason length, the last call cut short (it is not checked), or a
      marker of one more call begun (then content).
"""
import json
import os
import sys

# special (as the models' tokenizers mark their control tokens); then non-special added tokens
SPECIAL = [
    "<|python_tag|>", "<|eom_id|>", "<|eot_id|>", "<|start_header_id|>", "<|end_header_id|>",
    "<|begin_of_text|>",
    "[TOOL_CALLS]", "[ARGS]", "[CALL_ID]", "[AVAILABLE_TOOLS]", "[/AVAILABLE_TOOLS]", "[TOOL_RESULTS]",
    "[/TOOL_RESULTS]", "[INST]", "[/INST]", "[SYSTEM_PROMPT]", "[/SYSTEM_PROMPT]", "<s>", "</s>",
    "<|start|>", "<|end|>", "<|message|>", "<|channel|>", "<|constrain|>", "<|call|>", "<|return|>",
    "<｜tool▁calls▁begin｜>", "<｜tool▁calls▁end｜>", "<｜tool▁call▁begin｜>", "<｜tool▁call▁end｜>",
    "<｜tool▁sep｜>", "<｜User｜>", "<｜Assistant｜>", "<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>",
    "<|tool_calls_section_begin|>", "<|tool_calls_section_end|>", "<|tool_call_begin|>",
    "<|tool_call_argument_begin|>", "<|tool_call_end|>", "<|im_system|>", "<|im_user|>", "<|im_assistant|>",
    "<|im_middle|>",
    "<arg_key>", "</arg_key>", "<arg_value>", "</arg_value>", "<minimax:tool_call>", "</minimax:tool_call>",
    "<seed:tool_call>", "</seed:tool_call>", "<|START_ACTION|>", "<|END_ACTION|>", "<|START_OF_TURN_TOKEN|>",
    "<|END_OF_TURN_TOKEN|>", "<|CHATBOT_TOKEN|>", "<|USER_TOKEN|>", "<|SYSTEM_TOKEN|>", "<|START_THINKING|>",
    "<|END_THINKING|>", "<|START_RESPONSE|>", "<|END_RESPONSE|>",
]
PLAIN = ["<tool_call>", "</tool_call>"]


def make_model(pocket, template, out, extra_eos=None):
    os.makedirs(out)
    tok = json.load(open(os.path.join(pocket, "tokenizer.json"), encoding="utf-8"))
    cfg = json.load(open(os.path.join(pocket, "tokenizer_config.json"), encoding="utf-8"))
    gen = json.load(open(os.path.join(pocket, "generation_config.json"), encoding="utf-8"))
    vocab = tok["model"]["vocab"]
    first = min(a["id"] for a in tok["added_tokens"])
    news = [(c, True) for c in SPECIAL] + [(c, False) for c in PLAIN]
    ids = list(range(first - len(news), first))
    by_id = {i: s for s, i in vocab.items()}
    gone = set(by_id[i] for i in ids)
    for s in gone:
        del vocab[s]
    merges = tok["model"]["merges"]
    tok["model"]["merges"] = [m for m in merges
                              if "".join(m if isinstance(m, list) else m.split(" ")) not in gone]
    for (content, special), i in zip(news, ids):
        entry = {"id": i, "content": content, "single_word": False, "lstrip": False, "rstrip": False,
                 "normalized": False, "special": special}
        tok["added_tokens"].append(entry)
        cfg["added_tokens_decoder"][str(i)] = {k: v for k, v in entry.items() if k != "id"}
    tok["added_tokens"].sort(key=lambda a: a["id"])
    cfg["chat_template"] = open(template, encoding="utf-8").read()
    cfg["bos_token"] = "<|endoftext|>"
    if extra_eos:
        gen["eos_token_id"].append(ids[[c for c, _ in news].index(extra_eos)])
    json.dump(tok, open(os.path.join(out, "tokenizer.json"), "w", encoding="utf-8"), ensure_ascii=False)
    json.dump(cfg, open(os.path.join(out, "tokenizer_config.json"), "w", encoding="utf-8"), ensure_ascii=False)
    json.dump(gen, open(os.path.join(out, "generation_config.json"), "w"))
    # the long tool preambles of some templates (Command R7B's) fill the pocket's 2048 positions
    conf = json.load(open(os.path.join(pocket, "config.json")))
    conf["max_position_embeddings"] = 8192
    json.dump(conf, open(os.path.join(out, "config.json"), "w"))
    os.symlink(os.path.abspath(os.path.join(pocket, "model.safetensors")), os.path.join(out, "model.safetensors"))


def fail(msg):
    sys.stderr.write("toolfmt check: %s\n" % msg)
    sys.exit(1)


def check(path, name, parallel, stream):
    text = open(path, encoding="utf-8").read()
    if stream:
        calls, finish, content = {}, None, ""
        for line in text.splitlines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            for ch in chunk.get("choices", []):
                finish = ch.get("finish_reason") or finish
                if ch["delta"].get("content"):
                    content += ch["delta"]["content"]
                for d in ch["delta"].get("tool_calls") or []:
                    c = calls.setdefault(d["index"], {"id": None, "name": None, "arguments": ""})
                    if "id" in d:
                        if c["id"] is not None:
                            fail("call %d announced twice" % d["index"])
                        c["id"], c["name"] = d["id"], d["function"]["name"]
                    c["arguments"] += d["function"].get("arguments", "")
        if sorted(calls) != list(range(len(calls))):
            fail("call indexes %r" % sorted(calls))
        calls = [calls[i] for i in sorted(calls)]
    else:
        j = json.loads(text)
        m = j["choices"][0]["message"]
        finish = j["choices"][0]["finish_reason"]
        content = m.get("content") or ""
        calls = [{"id": c["id"], "name": c["function"]["name"], "arguments": c["function"]["arguments"]}
                 for c in m.get("tool_calls") or []]
    if not calls:
        fail("no calls")
    if parallel and finish == "length":
        # cut short: the last call, or a marker begun after the last (content then), is not checked
        calls = calls[:-1] if not content else calls
        if not calls:
            fail("no complete call before max_tokens")
    elif finish != "tool_calls":
        fail("finish_reason %r" % finish)
    elif content:
        fail("content: %r" % content)
    if not parallel and len(calls) != 1:
        fail("%d calls, parallel_tool_calls false" % len(calls))
    for c in calls:
        if not c["id"]:
            fail("a call without an id: %r" % c)
        if name != "-" and c["name"] != name:
            fail("the call is of %r, not %r" % (c["name"], name))
        if c["name"] not in ("get_weather", "get_time"):
            fail("a call of %r, not a tool" % c["name"])
        a = json.loads(c["arguments"])
        want = {"get_weather": ("Paris", "London"), "get_time": ("UTC", "CET")}[c["name"]]
        key = "city" if c["name"] == "get_weather" else "zone"
        if not isinstance(a, dict) or list(a) != [key] or a[key] not in want:
            fail("arguments %r" % c["arguments"])
    print("%d call(s): %s" % (len(calls), "; ".join("%s %s" % (c["name"], c["arguments"]) for c in calls)))


if __name__ == "__main__":
    if sys.argv[1] == "model":
        make_model(sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5] if len(sys.argv) > 5 else None)
    else:
        check(sys.argv[2], sys.argv[3], sys.argv[4] == "true", len(sys.argv) > 5 and sys.argv[5] == "stream")
