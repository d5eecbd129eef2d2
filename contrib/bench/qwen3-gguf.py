#!/usr/bin/env python3
"""qwen3-gguf.py - writes a Hugging Face Qwen3 model directory (config.json,
model.safetensors with BF16 tensors, tokenizer.json, tokenizer_config.json) as
one GGUF file that llama.cpp loads, for the side-by-side benchmark
(contrib/bench/compare.sh).

    contrib/bench/qwen3-gguf.py MODEL_DIR OUT.gguf

Only the Python standard library: no numpy, no torch, no transformers, so it
runs on a bare Debian with python3.  It is not a general converter: it takes
exactly the layout `git model synth qwen3-0.6b` writes (and that
Qwen/Qwen3-*B checkpoints use, one safetensors file, tied or untied head) and
refuses anything else.

The weights are the same bytes: BF16 matrices are copied as they are (GGUF
stores BF16 little-endian like safetensors; a [out, in] row-major HF matrix
is a GGUF tensor with ne = [in, out]).  1-D norm weights are widened to F32,
exactly, as llama.cpp's own converter does.  No permutation of q/k: llama.cpp
runs Qwen3 with the NeoX (rotate-half) rope, the layout HF uses.

GGUF v3 layout (as documented in llama.cpp's docs/gguf.md / ggml's gguf.h):
  "GGUF" u32 version, u64 n_tensors, u64 n_kv,
  n_kv x (string key, u32 type, value),
  n_tensors x (string name, u32 n_dims, u64 ne[n_dims], u32 ggml_type, u64 offset),
  padding to general.alignment (32), then the tensor data, each tensor at its
  offset (a multiple of 32) from the start of the data.
Strings are u64 length + UTF-8 bytes; arrays are u32 element type, u64 count,
elements.

The file is written under a temporary name in the same directory and renamed
when complete, so an interrupted run leaves no half file under OUT.
"""
import json
import os
import struct
import sys

ALIGN = 32
# gguf value types
T_U32, T_I32, T_F32, T_BOOL, T_STR, T_ARR, T_U64 = 4, 5, 6, 7, 8, 9, 10
# ggml tensor types
GGML_F32, GGML_BF16 = 0, 30
FTYPE_MOSTLY_BF16 = 32
# llama.cpp token types
TOK_NORMAL, TOK_CONTROL, TOK_USER_DEFINED, TOK_UNUSED = 1, 3, 4, 5

LAYER_MAP = {
    "input_layernorm.weight": "attn_norm.weight",
    "self_attn.q_proj.weight": "attn_q.weight",
    "self_attn.k_proj.weight": "attn_k.weight",
    "self_attn.v_proj.weight": "attn_v.weight",
    "self_attn.o_proj.weight": "attn_output.weight",
    "self_attn.q_norm.weight": "attn_q_norm.weight",
    "self_attn.k_norm.weight": "attn_k_norm.weight",
    "post_attention_layernorm.weight": "ffn_norm.weight",
    "mlp.gate_proj.weight": "ffn_gate.weight",
    "mlp.up_proj.weight": "ffn_up.weight",
    "mlp.down_proj.weight": "ffn_down.weight",
}
TOP_MAP = {
    "model.embed_tokens.weight": "token_embd.weight",
    "model.norm.weight": "output_norm.weight",
    "lm_head.weight": "output.weight",
}


def die(msg):
    sys.stderr.write("qwen3-gguf: %s\n" % msg)
    sys.exit(1)


def gguf_name(hf):
    if hf in TOP_MAP:
        return TOP_MAP[hf]
    parts = hf.split(".", 3)
    if len(parts) == 4 and parts[0] == "model" and parts[1] == "layers" and parts[3] in LAYER_MAP:
        return "blk.%d.%s" % (int(parts[2]), LAYER_MAP[parts[3]])
    die("unexpected tensor %r" % hf)


class Out:
    def __init__(self, f):
        self.f = f

    def raw(self, b):
        self.f.write(b)

    def u32(self, v):
        self.raw(struct.pack("<I", v))

    def u64(self, v):
        self.raw(struct.pack("<Q", v))

    def s(self, text):
        b = text.encode("utf-8")
        self.u64(len(b))
        self.raw(b)

    def kv(self, key, typ, value, elem=None):
        self.s(key)
        self.u32(typ)
        if typ == T_ARR:
            self.u32(elem)
            self.u64(len(value))
            for v in value:
                self.value(elem, v)
        else:
            self.value(typ, value)

    def value(self, typ, v):
        if typ == T_U32:
            self.u32(v)
        elif typ == T_I32:
            self.raw(struct.pack("<i", v))
        elif typ == T_F32:
            self.raw(struct.pack("<f", v))
        elif typ == T_BOOL:
            self.raw(b"\x01" if v else b"\x00")
        elif typ == T_STR:
            self.s(v)
        elif typ == T_U64:
            self.u64(v)
        else:
            die("value type %d not written" % typ)


def looks_special(text):
    # The rule llama.cpp's converter applies to added tokens that the
    # tokenizer does not flag as special (Qwen's <|fim_prefix|> and kin).
    return text.startswith("<|") and text.endswith("|>")


def vocab(model_dir, n_vocab):
    with open(os.path.join(model_dir, "tokenizer.json"), encoding="utf-8") as f:
        tok = json.load(f)
    with open(os.path.join(model_dir, "tokenizer_config.json"), encoding="utf-8") as f:
        tcfg = json.load(f)
    m = tok.get("model", {})
    if m.get("type") != "BPE":
        die("tokenizer.json: not a BPE tokenizer")
    by_id = {}
    for text, i in m["vocab"].items():
        by_id[i] = (text, TOK_NORMAL)
    for a in tok.get("added_tokens", []):
        special = a.get("special") or looks_special(a["content"])
        by_id[a["id"]] = (a["content"], TOK_CONTROL if special else TOK_USER_DEFINED)
    if max(by_id) >= n_vocab:
        die("tokenizer has ids beyond the model's vocab_size %d" % n_vocab)
    tokens, types = [], []
    for i in range(n_vocab):
        # rows of the embedding without a token (Qwen pads 151669 to 151936)
        text, typ = by_id.get(i, ("[PAD%d]" % i, TOK_UNUSED))
        tokens.append(text)
        types.append(typ)
    merges = m.get("merges", [])
    if merges and isinstance(merges[0], list):
        # the pair form of newer tokenizers; GGUF keeps "a b", a space inside
        # a part written as U+0120 + 256 like llama.cpp's converter does
        merges = [" ".join("".join(chr(ord(c) + 256) if c == " " else c for c in p) for p in pair)
                  for pair in merges]
    ids = {t: i for i, (t, _) in by_id.items()}

    def special_id(name):
        v = tcfg.get(name)
        if isinstance(v, dict):
            v = v.get("content")
        return ids.get(v) if v else None

    return tokens, types, merges, special_id, tcfg


def main():
    if len(sys.argv) != 3:
        sys.stderr.write("usage: qwen3-gguf.py MODEL_DIR OUT.gguf\n")
        sys.exit(129)
    model_dir, out_path = sys.argv[1], sys.argv[2]
    with open(os.path.join(model_dir, "config.json"), encoding="utf-8") as f:
        cfg = json.load(f)
    if cfg.get("model_type") != "qwen3":
        die("config.json: model_type is %r, not qwen3" % cfg.get("model_type"))
    st_path = os.path.join(model_dir, "model.safetensors")
    st = open(st_path, "rb")
    n_hdr = struct.unpack("<Q", st.read(8))[0]
    hdr = json.loads(st.read(n_hdr))
    base = 8 + n_hdr
    hdr.pop("__metadata__", None)

    tensors = []  # (gguf name, ne, ggml type, nbytes, src offset, src nbytes, widen)
    def order(hf):
        # the global tensors first, then layer by layer
        name = gguf_name(hf)
        return (int(name.split(".")[1]), name) if name.startswith("blk.") else (-1, name)

    for hf in sorted(hdr, key=order):
        t = hdr[hf]
        if t["dtype"] != "BF16":
            die("%s: dtype %s, only BF16 is written" % (hf, t["dtype"]))
        shape = t["shape"]
        begin, end = t["data_offsets"]
        n = 1
        for d in shape:
            n *= d
        if end - begin != 2 * n:
            die("%s: %d bytes for %d elements" % (hf, end - begin, n))
        widen = len(shape) == 1
        tensors.append((gguf_name(hf), list(reversed(shape)), GGML_F32 if widen else GGML_BF16,
                        4 * n if widen else 2 * n, base + begin, end - begin, widen))
    names = {t[0] for t in tensors}
    n_layers = cfg["num_hidden_layers"]
    for need in ["token_embd.weight", "output_norm.weight"] + \
            ["blk.%d.%s" % (i, v) for i in range(n_layers) for v in LAYER_MAP.values()]:
        if need not in names:
            die("missing tensor %s" % need)
    if "output.weight" not in names and not cfg.get("tie_word_embeddings", False):
        die("no lm_head.weight and tie_word_embeddings is false")

    n_vocab = cfg["vocab_size"]
    tokens, types, merges, special_id, tcfg = vocab(model_dir, n_vocab)
    head_dim = cfg.get("head_dim") or cfg["hidden_size"] // cfg["num_attention_heads"]
    arch = "qwen3"
    kvs = [
        ("general.architecture", T_STR, arch),
        ("general.name", T_STR, os.path.basename(os.path.normpath(model_dir))),
        ("general.file_type", T_U32, FTYPE_MOSTLY_BF16),
        ("general.alignment", T_U32, ALIGN),
        (arch + ".block_count", T_U32, n_layers),
        (arch + ".context_length", T_U32, cfg["max_position_embeddings"]),
        (arch + ".embedding_length", T_U32, cfg["hidden_size"]),
        (arch + ".feed_forward_length", T_U32, cfg["intermediate_size"]),
        (arch + ".attention.head_count", T_U32, cfg["num_attention_heads"]),
        (arch + ".attention.head_count_kv", T_U32, cfg["num_key_value_heads"]),
        (arch + ".attention.key_length", T_U32, head_dim),
        (arch + ".attention.value_length", T_U32, head_dim),
        (arch + ".rope.freq_base", T_F32, float(cfg["rope_theta"])),
        (arch + ".attention.layer_norm_rms_epsilon", T_F32, float(cfg["rms_norm_eps"])),
        ("tokenizer.ggml.model", T_STR, "gpt2"),
        ("tokenizer.ggml.pre", T_STR, "qwen2"),
        ("tokenizer.ggml.tokens", T_ARR, tokens, T_STR),
        ("tokenizer.ggml.token_type", T_ARR, types, T_I32),
        ("tokenizer.ggml.merges", T_ARR, merges, T_STR),
    ]
    # bos: tokenizer_config's bos_token, else config.json's bos_token_id (Qwen3
    # has no bos token in its tokenizer and never adds one)
    bos = special_id("bos_token")
    if bos is None:
        bos = cfg.get("bos_token_id")
    eos = special_id("eos_token")
    if eos is None:
        eos = cfg.get("eos_token_id")
        if isinstance(eos, list):
            eos = eos[0]
    pad = special_id("pad_token")
    for key, v in (("bos_token_id", bos), ("eos_token_id", eos), ("padding_token_id", pad)):
        if v is not None:
            kvs.append(("tokenizer.ggml." + key, T_U32, v))
    kvs.append(("tokenizer.ggml.add_bos_token", T_BOOL, bool(tcfg.get("add_bos_token", False))))
    if isinstance(tcfg.get("chat_template"), str):
        kvs.append(("tokenizer.chat_template", T_STR, tcfg["chat_template"]))

    out_dir = os.path.dirname(os.path.abspath(out_path))
    tmp = os.path.join(out_dir, ".%s.tmp%d" % (os.path.basename(out_path), os.getpid()))
    try:
        with open(tmp, "wb") as f:
            o = Out(f)
            o.u32(0x46554747)  # "GGUF" read as a little-endian u32
            o.u32(3)
            o.u64(len(tensors))
            o.u64(len(kvs))
            for kv in kvs:
                o.kv(*kv)
            off = 0
            for name, ne, typ, nbytes, _, _, _ in tensors:
                o.s(name)
                o.u32(len(ne))
                for d in ne:
                    o.u64(d)
                o.u32(typ)
                o.u64(off)
                off += (nbytes + ALIGN - 1) // ALIGN * ALIGN
            o.raw(b"\0" * (-f.tell() % ALIGN))
            for name, ne, typ, nbytes, src, src_n, widen in tensors:
                st.seek(src)
                left = src_n
                while left:
                    chunk = st.read(min(left, 64 << 20))
                    if not chunk:
                        die("%s: safetensors file truncated" % st_path)
                    left -= len(chunk)
                    if widen:
                        # bf16 -> f32 is exact: the bf16 bits are the f32's high half
                        chunk = b"".join(b"\0\0" + chunk[i:i + 2] for i in range(0, len(chunk), 2))
                    f.write(chunk)
                f.write(b"\0" * (-nbytes % ALIGN))
            f.flush()
            os.fsync(f.fileno())
        os.rename(tmp, out_path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    print("wrote %s: %d tensors, %d tokens, %.2f GB" % (out_path, len(tensors), len(tokens),
                                                        os.path.getsize(out_path) / 1e9))


if __name__ == "__main__":
    main()
