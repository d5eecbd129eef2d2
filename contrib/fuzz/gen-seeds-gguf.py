#!/usr/bin/env python3
"""gen-seeds-gguf.py - writes the seed corpus of fuzz-gguf (contrib/fuzz/corpus/gguf).

    contrib/fuzz/gen-seeds-gguf.py        (from the source tree)

Small hand-made GGUF images: valid-* ones the reader must accept (every value
type, nested arrays, the tokenizer keys of a real model, each tensor type it
supports), bad-* ones it must refuse (one defect each).
"""
import os
import struct

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus", "gguf")
U8, I8, U16, I16, U32, I32, F32, BOOL, STR, ARR, U64, I64, F64 = range(13)
# ggml type: (id, elements per block, bytes per block)
TYPES = {"f32": (0, 1, 4), "f16": (1, 1, 2), "q4_0": (2, 32, 18), "q4_1": (3, 32, 20), "q5_0": (6, 32, 22),
         "q5_1": (7, 32, 24), "q8_0": (8, 32, 34), "q2_K": (10, 256, 84), "q3_K": (11, 256, 110),
         "q4_K": (12, 256, 144), "q5_K": (13, 256, 176), "q6_K": (14, 256, 210), "bf16": (30, 1, 2)}


def s(text):
    b = text.encode() if isinstance(text, str) else text
    return struct.pack("<Q", len(b)) + b


def val(t, v):
    if t == STR:
        return s(v)
    if t == ARR:
        et, items = v
        return struct.pack("<IQ", et, len(items)) + b"".join(val(et, x) for x in items)
    return struct.pack({U8: "<B", I8: "<b", U16: "<H", I16: "<h", U32: "<I", I32: "<i", F32: "<f",
                        BOOL: "<?", U64: "<Q", I64: "<q", F64: "<d"}[t], v)


def gguf(kvs, tensors, align=32, version=3, data_fill=0x11):
    """tensors: (name, ne, type name, offset or None); data sized to fit."""
    out = b"GGUF" + struct.pack("<IQQ", version, len(tensors), len(kvs))
    for k, t, v in kvs:
        out += s(k) + struct.pack("<I", t) + val(t, v)
    off, infos, end = 0, b"", 0
    for name, ne, tn, at in tensors:
        tid, be, bb = TYPES[tn] if isinstance(tn, str) else (tn, 1, 4)
        n = 1
        for d in ne:
            n *= d
        size = n // be * bb
        at = off if at is None else at
        infos += s(name) + struct.pack("<I", len(ne)) + b"".join(struct.pack("<Q", d) for d in ne)
        infos += struct.pack("<IQ", tid, at)
        off = (at + size + align - 1) // align * align
        end = max(end, at + size)
    out += infos
    out += b"\0" * (-len(out) % align)
    return out + bytes([data_fill]) * end


def write(name, data):
    with open(os.path.join(OUT, name), "wb") as f:
        f.write(data)


def main():
    os.makedirs(OUT, exist_ok=True)
    every = [("general.architecture", STR, "qwen3"), ("k.u8", U8, 7), ("k.i8", I8, -7), ("k.u16", U16, 700),
             ("k.i16", I16, -700), ("k.u32", U32, 70000), ("k.i32", I32, -70000), ("k.f32", F32, 0.5),
             ("k.bool", BOOL, True), ("k.u64", U64, 1 << 40), ("k.i64", I64, -(1 << 40)), ("k.f64", F64, 0.25),
             ("k.arr", ARR, (I32, [1, -2, 3])), ("k.nested", ARR, (ARR, [(STR, ["a", "b"]), (F32, [1.0])]))]
    write("valid-every-value-type.gguf", gguf(every, [("w", [64, 2], "f32", None)]))
    tok = [("general.architecture", STR, "qwen3"), ("general.alignment", U32, 64),
           ("qwen3.block_count", U32, 1), ("qwen3.embedding_length", U32, 64),
           ("tokenizer.ggml.model", STR, "gpt2"), ("tokenizer.ggml.pre", STR, "qwen2"),
           ("tokenizer.ggml.tokens", ARR, (STR, ["a", "b", "\u0120a", "<|im_end|>"])),
           ("tokenizer.ggml.token_type", ARR, (I32, [1, 1, 1, 3])),
           ("tokenizer.ggml.merges", ARR, (STR, ["\u0120 a"])), ("tokenizer.ggml.eos_token_id", U32, 3),
           ("tokenizer.chat_template", STR, "{% for m in messages %}{{ m.content }}{% endfor %}")]
    write("valid-tokenizer-align64.gguf", gguf(tok, [("token_embd.weight", [64, 4], "bf16", None),
                                                     ("output_norm.weight", [64], "f32", None)], align=64))
    write("valid-every-tensor-type.gguf",
          gguf([], [("t." + k, [256, 1], k, None) for k in sorted(TYPES)]))
    write("valid-v2-metadata-only.gguf", gguf([("general.name", STR, "x")], [], version=2))
    write("bad-magic.gguf", b"GGUX" + gguf([], [])[4:])
    write("bad-version-1.gguf", gguf([], [], version=1))
    write("bad-unknown-value-type.gguf", b"GGUF" + struct.pack("<IQQ", 3, 0, 1) + s("k") + struct.pack("<I", 13) + b"\0" * 8)
    write("bad-string-past-end.gguf", b"GGUF" + struct.pack("<IQQ", 3, 0, 1) + s("k") +
          struct.pack("<IQ", STR, 1 << 40) + b"abc")
    write("bad-iq2-xxs.gguf", gguf([], [("w", [256, 1], 16, None)]))
    write("bad-overlap.gguf", gguf([], [("a", [64], "f32", 0), ("b", [64], "f32", 64)]))
    write("bad-past-end.gguf", gguf([], [("a", [64], "f32", 0)])[:-4])
    write("bad-partial-block.gguf", gguf([], [("a", [16, 2], "q8_0", None)]))
    write("bad-duplicate-key.gguf", gguf([("k", U8, 1), ("k", U8, 2)], []))
    write("bad-alignment.gguf", gguf([("general.alignment", U32, 24)], []))


if __name__ == "__main__":
    main()
