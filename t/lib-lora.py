# lib-lora.py - safetensors logits for the tests, read with python3 alone (no numpy).
#
#   ids GOLDEN I                 the token ids of prompt I of a golden file
#   logits GOLDEN TAG I OUT      OUT's logits within 1e-4 of TAG.pI.logits
#   same A B TOL                 two logits files agree within TOL (max |d| / max |ref|)
#   wide DIR                     a PEFT adapter for a model with hidden 72, not 64
import array, json, struct, sys

def tensor(path, name):
    f = open(path, "rb")
    n = struct.unpack("<Q", f.read(8))[0]
    h = json.loads(f.read(n))
    t = h[name]
    b, e = t["data_offsets"]
    f.seek(8 + n + b)
    a = array.array({"F32": "f", "I32": "i"}[t["dtype"]])
    a.frombytes(f.read(e - b))
    return t, a

def rel(got, ref):
    return max(abs(x - y) for x, y in zip(got, ref)) / max(abs(y) for y in ref)

cmd, args = sys.argv[1], sys.argv[2:]
if cmd == "ids":
    print(",".join(map(str, tensor(args[0], "p%s.ids" % args[1])[1])))
elif cmd == "logits":
    # logits GOLDEN TAG I OUT: within 1e-4 of TAG.pI.logits
    golden, tag, i, out = args
    t, got = tensor(out, "logits")
    r, ref = tensor(golden, "%s.p%s.logits" % (tag, i))
    assert t["shape"] == r["shape"], (t["shape"], r["shape"])
    e = rel(got, ref)
    print("%s p%s: max |d| / max |ref| = %.3g" % (tag, i, e))
    assert e <= 1e-4, e
elif cmd == "same":
    # same A B TOL: two logits files agree within TOL
    e = rel(tensor(args[0], "logits")[1], tensor(args[1], "logits")[1])
    print("max |d| / max |ref| = %.3g" % e)
    assert e <= float(args[2]), e
elif cmd == "wide":
    # wide DIR: a PEFT adapter for a model with hidden 72, not 64
    import os
    d = args[0]
    os.makedirs(d)
    json.dump({"peft_type": "LORA", "r": 4, "lora_alpha": 8, "target_modules": ["q_proj"]},
              open(d + "/adapter_config.json", "w"))
    pre = "base_model.model.model.layers.0.self_attn.q_proj."
    ts = [(pre + "lora_A.weight", [4, 72]), (pre + "lora_B.weight", [96, 4])]
    h, off = {}, 0
    for name, shape in ts:
        n = shape[0] * shape[1] * 4
        h[name] = {"dtype": "F32", "shape": shape, "data_offsets": [off, off + n]}
        off += n
    hb = json.dumps(h).encode()
    hb += b" " * (-len(hb) % 8)
    open(d + "/adapter_model.safetensors", "wb").write(struct.pack("<Q", len(hb)) + hb + bytes(off))
