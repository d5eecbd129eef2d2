#!/usr/bin/env python3
"""pocket-llama.py - the bundled pocket model re-spelled as a Llama 3 model (t2005).

    pocket-llama.py POCKET_DIR OUT_DIR [--llama3-rope] [--sentencepiece]

Writes OUT_DIR with LlamaForCausalLM's config.json (the pocket's sizes; with
--llama3-rope, rope_scaling llama3 factor 8, low 1, high 4, original context
64, so that some dimensions are scaled, some blended, some kept), the
pocket's tensors without q_norm/k_norm (Llama has none: a different model
with trained weights, so its greedy choices are far from ties), and its
vocabulary as a Llama 3 tokenizer: the Llama 3 split regex, no normalizer,
ignore_merges, a TemplateProcessing post-processor that adds bos
(<|endoftext|> here).  --sentencepiece marks the BPE model byte_fallback,
as Llama 2's SentencePiece-style tokenizer.json is.  Standard library only.
"""
import json
import os
import struct
import sys

LLAMA3_RE = ("(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*"
             "|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+")


def main():
    src, out = sys.argv[1], sys.argv[2]
    flags = sys.argv[3:]
    os.makedirs(out, exist_ok=True)

    cfg = json.load(open(os.path.join(src, "config.json")))
    cfg["architectures"] = ["LlamaForCausalLM"]
    cfg["model_type"] = "llama"
    for k in ("max_window_layers", "sliding_window", "use_sliding_window"):
        cfg.pop(k, None)
    cfg["rope_scaling"] = None
    if "--llama3-rope" in flags:
        cfg["rope_scaling"] = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                               "high_freq_factor": 4.0, "original_max_position_embeddings": 64}
    json.dump(cfg, open(os.path.join(out, "config.json"), "w"), indent=2)

    raw = open(os.path.join(src, "model.safetensors"), "rb").read()
    n = struct.unpack("<Q", raw[:8])[0]
    hdr = json.loads(raw[8:8 + n])
    data = raw[8 + n:]
    new_hdr, chunks, off = {}, [], 0
    for name in sorted(k for k in hdr if k != "__metadata__"):
        if name.endswith(("q_norm.weight", "k_norm.weight")):
            continue
        t = hdr[name]
        b, e = t["data_offsets"]
        chunks.append(data[b:e])
        new_hdr[name] = {"dtype": t["dtype"], "shape": t["shape"], "data_offsets": [off, off + e - b]}
        off += e - b
    h = json.dumps(new_hdr, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    with open(os.path.join(out, "model.safetensors"), "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h)
        for c in chunks:
            f.write(c)

    tok = json.load(open(os.path.join(src, "tokenizer.json"), encoding="utf-8"))
    tok["normalizer"] = None
    tok["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"] = LLAMA3_RE
    tok["model"]["ignore_merges"] = True
    if "--sentencepiece" in flags:
        tok["model"]["byte_fallback"] = True
    tok["post_processor"] = {"type": "TemplateProcessing",
                             "single": [{"SpecialToken": {"id": "<|endoftext|>", "type_id": 0}},
                                        {"Sequence": {"id": "A", "type_id": 0}}],
                             "pair": [{"SpecialToken": {"id": "<|endoftext|>", "type_id": 0}},
                                      {"Sequence": {"id": "A", "type_id": 0}},
                                      {"SpecialToken": {"id": "<|endoftext|>", "type_id": 1}},
                                      {"Sequence": {"id": "B", "type_id": 1}}],
                             "special_tokens": {"<|endoftext|>": {"id": "<|endoftext|>", "ids": [4091],
                                                                  "tokens": ["<|endoftext|>"]}}}
    json.dump(tok, open(os.path.join(out, "tokenizer.json"), "w", encoding="utf-8"), ensure_ascii=False)

    tc = json.load(open(os.path.join(src, "tokenizer_config.json"), encoding="utf-8"))
    tc.pop("add_bos_token", None)
    tc["bos_token"] = "<|endoftext|>"
    tc["tokenizer_class"] = "PreTrainedTokenizerFast"
    json.dump(tc, open(os.path.join(out, "tokenizer_config.json"), "w", encoding="utf-8"), ensure_ascii=False,
              indent=2)


main()
