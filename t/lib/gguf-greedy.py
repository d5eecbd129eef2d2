#!/usr/bin/env python3
"""gguf-greedy.py - checks git infer against llama.cpp's greedy continuations (t2004).

    gguf-greedy.py GOLDEN.json TYPE MODEL.gguf TOL

For each run of TYPE in GOLDEN.json (t/fixtures/gguf/llama-greedy.json: prompt ids,
llama.cpp's greedy ids, its top-2 log-prob gaps), git infer computes the logits of the prompt
followed by llama.cpp's tokens (--prompt-ids, --logits-out), and at each generated position
the gap between our largest logit and the logit of llama.cpp's token must be at most TOL:
llama.cpp's token is our greedy choice, or ties with it within TOL (two implementations
round differently; the pocket model has near ties), and where the choices differ,
llama.cpp's own top two log-probabilities must be within TOL too.  Prints one line per run: how many of
the tokens are our argmax exactly, and the largest gap.
"""
import json
import struct
import subprocess
import sys


def logits(model, ids):
    subprocess.run(["git", "infer", "-m", model, "--prompt-ids", ",".join(map(str, ids)), "-n", "0",
                    "--logits-out", "logits.st"], check=True, stdout=subprocess.DEVNULL)
    b = open("logits.st", "rb").read()
    n = struct.unpack("<Q", b[:8])[0]
    hdr = json.loads(b[8:8 + n])
    name = [k for k in hdr if k != "__metadata__"][0]
    t = hdr[name]
    assert t["dtype"] == "F32", t
    rows, vocab = t["shape"][-2], t["shape"][-1]
    base = 8 + n + t["data_offsets"][0]
    return [struct.unpack_from("<%df" % vocab, b, base + 4 * vocab * r) for r in range(rows)]


def main():
    golden, typ, model, tol = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
    runs = [r for r in json.load(open(golden))["runs"] if r["type"] == typ]
    if not runs:
        sys.exit("no runs of type %s" % typ)
    bad = 0
    for k, r in enumerate(runs):
        p, ids = r["prompt_ids"], r["ids"]
        rows = logits(model, p + ids[:-1])
        same, worst, theirs = 0, 0.0, 0.0
        for i, tok in enumerate(ids):
            row = rows[len(p) - 1 + i]
            top = max(row)
            gap = top - row[tok]
            same += gap == 0
            worst = max(worst, gap)
            if gap > 0:
                # where we differ, llama.cpp's own top two must be as close
                theirs = max(theirs, r["top2_gaps"][i])
        print("%s run %d: %d/%d tokens our argmax, largest gap %.4f (llama.cpp's top-2 gap there %.4f)" %
              (typ, k + 1, same, len(ids), worst, theirs))
        bad += worst > tol or theirs > tol
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
