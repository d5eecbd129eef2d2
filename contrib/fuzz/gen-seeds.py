#!/usr/bin/env python3
"""Writes the seed corpora of contrib/fuzz/corpus/TARGET/ (all but safetensors,
whose generator is in README.md) from the project's own fixtures.

    python3 contrib/fuzz/gen-seeds.py [BUILD_DIR]

run from the source tree.  With BUILD_DIR (where git-adapter was built), the
sparse seeds are made with `git adapter sparsify` from a LoRA fixture; without
it the sparse corpus is left as it is.  The bundle seeds need git.
Standard library only.  Files are at most 64 KiB (the fuzzers' -max_len).
"""
import hashlib
import io
import json
import os
import shutil
import struct
import subprocess
import sys
import tarfile
import tempfile

SRC = os.getcwd()
OUT = os.path.join(SRC, "contrib", "fuzz", "corpus")
SPLIT = b"\n--8<--\n"  # fuzz-common.h FUZZ_SPLIT
MAX = 65536


def fixture(*p):
    return os.path.join(SRC, "t", "fixtures", *p)


def read(path):
    with open(path, "rb") as f:
        return f.read()


def put(target, name, data):
    if isinstance(data, str):
        data = data.encode()
    assert len(data) <= MAX, (target, name, len(data))
    d = os.path.join(OUT, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def clear(target):
    shutil.rmtree(os.path.join(OUT, target), ignore_errors=True)


def js(o):
    return json.dumps(o, separators=(",", ":"), ensure_ascii=False)


# ------------------------------------------------------------ config
def config_seeds():
    clear("config")
    base = json.loads(read(fixture("models", "tiny-qwen3-f32", "config.json")))
    put("config", "valid-tiny-qwen3.json", read(fixture("models", "tiny-qwen3-f32", "config.json")))
    put("config", "valid-tiny-qwen3-generation.json",
        read(fixture("models", "tiny-qwen3-f32", "generation_config.json")))
    pocket = os.path.join(SRC, "contrib", "models", "pocket-qwen3")
    put("config", "valid-pocket-qwen3.json", read(os.path.join(pocket, "config.json")))
    put("config", "valid-pocket-qwen3-generation.json", read(os.path.join(pocket, "generation_config.json")))
    llama = dict(base, architectures=["LlamaForCausalLM"], model_type="llama", mlp_bias=False,
                 rope_scaling={"factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                               "original_max_position_embeddings": 8192, "rope_type": "llama3"},
                 bos_token_id=1, eos_token_id=[2, 3])
    put("config", "valid-llama3-rope.json", js(llama))
    # json-c reads 1e999 as inf (a finding of fuzz-config's invariants, now refused)
    put("config", "bad-inf-rope-factor.json", js(llama).replace('"factor":8.0', '"factor":1e999'))
    qwen2 = dict(base, architectures=["Qwen2ForCausalLM"], model_type="qwen2", attention_bias=True)
    qwen2.pop("head_dim", None)
    put("config", "valid-qwen2-no-head-dim.json", js(qwen2))
    v5 = dict(base, dtype="float16", rope_parameters={"rope_theta": 500000.0, "rope_type": "default"})
    v5.pop("rope_theta", None)
    v5.pop("torch_dtype", None)
    put("config", "valid-transformers5.json", js(v5))
    put("config", "valid-generation-sampling.json",
        js({"do_sample": True, "temperature": 0.7, "top_p": 0.8, "top_k": None, "min_p": 0.05,
            "repetition_penalty": 1.05, "max_new_tokens": 512, "eos_token_id": [151645, 151643],
            "pad_token_id": 151643, "bos_token_id": None}))
    put("config", "bad-arch.json", js(dict(base, architectures=["MistralForCausalLM"])))
    put("config", "bad-heads.json", js(dict(base, num_key_value_heads=3)))
    put("config", "bad-size.json", js(dict(base, hidden_size=-64)))
    put("config", "bad-eos.json", js(dict(base, eos_token_id=list(range(9)))))
    put("config", "bad-top-p.json", js({"top_p": 1.5, "temperature": -1}))
    put("config", "bad-not-object.json", "[1,2,3]")


# ------------------------------------------------------------ tokenizer
def tokenizer_seeds():
    clear("tokenizer-json")
    tok = json.loads(read(fixture("models", "tiny-qwen3-f32", "tokenizer.json")))
    vocab = tok["model"]["vocab"]
    # The 256 byte tokens and the merges among the first ids.
    keep = {k: v for k, v in vocab.items() if v < 400}
    merges = []
    for m in tok["model"]["merges"]:
        a, b = m if isinstance(m, list) else m.split(" ", 1)
        if a in keep and b in keep and a + b in keep:
            merges.append(m)
    ids = sorted(keep.values())
    remap = {old: new for new, old in enumerate(ids)}
    small = dict(tok)
    small["model"] = dict(tok["model"], vocab={k: remap[v] for k, v in keep.items()}, merges=merges)
    added = []
    for i, t in enumerate(tok["added_tokens"]):
        added.append(dict(t, id=len(ids) + i))
    small["added_tokens"] = added
    put("tokenizer-json", "valid-small-bpe.json", js(small))
    legacy = dict(small)
    legacy["model"] = dict(small["model"], merges=[" ".join(m) if isinstance(m, list) else m for m in merges])
    put("tokenizer-json", "valid-small-bpe-string-merges.json", js(legacy))
    nonorm = dict(small, normalizer=None, added_tokens=added[:1])
    put("tokenizer-json", "valid-no-normalizer.json", js(nonorm))
    put("tokenizer-json", "bad-wordpiece.json", js(dict(small, model={"type": "WordPiece", "vocab": {}})))
    put("tokenizer-json", "bad-regex.json",
        js(dict(small, pre_tokenizer={"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": "(unclosed"}, "behavior": "Isolated", "invert": False},
            {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False, "use_regex": False}]})))
    put("tokenizer-json", "bad-merge.json",
        js(dict(small, model=dict(small["model"], merges=[["zz", "qq"]]))))
    # Llama 3's post-processor: BOS before a text (gm_tokenizer_encode_special)
    eot = added[0]
    put("tokenizer-json", "valid-template-bos.json",
        js(dict(small, post_processor={"type": "Sequence", "processors": [
            {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False, "use_regex": False},
            {"type": "TemplateProcessing",
             "single": [{"SpecialToken": {"id": eot["content"], "type_id": 0}},
                        {"Sequence": {"id": "A", "type_id": 0}}],
             "special_tokens": {eot["content"]: {"id": eot["content"], "ids": [eot["id"]],
                                                 "tokens": [eot["content"]]}}}]})))

    clear("tokenizer-text")
    texts = []
    for line in read(fixture("tokenizers", "qwen3-golden.jsonl")).decode().splitlines():
        t = json.loads(line)["text"]
        if t and t not in texts:
            texts.append(t)
    # Every third text, and the ten longest (the fixtures' hardest cases).
    chosen = texts[::3] + sorted(texts, key=len)[-10:]
    for i, t in enumerate(dict.fromkeys(chosen)):
        put("tokenizer-text", "golden-%03d.txt" % i, t.encode()[:4096])
    put("tokenizer-text", "chat.txt", "<|im_start|>system\nYou are helpful.<|im_end|>\n"
        "<|im_start|>user\nCaf\u00e9? \u4f60\u597d \U0001F600<|im_end|>\n<|im_start|>assistant\n<think>\n"
        "</think>\n\nOui.<|im_end|>")
    put("tokenizer-text", "not-nfc.txt", "e\u0301 A\u030a \u1100\u1161 \ufb01")
    put("tokenizer-text", "bad-utf8.txt", b"ok \xff\xfe \xc3( \xed\xa0\x80")


# ------------------------------------------------------------ adapters
def peft_seeds():
    clear("peft")
    for name in ("tiny-qwen3-f32-a2-r4-qv", "tiny-qwen3-f32-train-brand-init"):
        d = fixture("lora", name)
        cfg, st = read(os.path.join(d, "adapter_config.json")), read(os.path.join(d, "adapter_model.safetensors"))
        put("peft", "valid-%s" % name, cfg + SPLIT + st)
    d = fixture("lora", "tiny-qwen3-f32-a2-r4-qv")
    cfg = json.loads(read(os.path.join(d, "adapter_config.json")))
    st = read(os.path.join(d, "adapter_model.safetensors"))
    put("peft", "valid-regex-patterns",
        js(dict(cfg, target_modules=r".*\.(q|v)_proj", rank_pattern={"layers.1.self_attn.q_proj": 4},
                alpha_pattern={r"layers\.[0-9]+\.self_attn\.v_proj": 3.5}, use_rslora=True)).encode()
        + SPLIT + st)
    put("peft", "bad-dora", js(dict(cfg, use_dora=True)).encode() + SPLIT + st)
    put("peft", "bad-rank", js(dict(cfg, r=8)).encode() + SPLIT + st)
    put("peft", "bad-no-weights", js(cfg))
    put("peft", "config-only-all-linear", js(dict(cfg, target_modules="all-linear")))


def sparse_seeds(build):
    if not build:
        return
    clear("sparse")
    adapter = os.path.join(build, "git-adapter", "git-adapter")
    lora = fixture("lora", "tiny-qwen3-f32-a2-r4-qv")
    with tempfile.TemporaryDirectory() as tmp:
        for density in ("0.05", "0.3"):
            out = os.path.join(tmp, "s" + density)
            subprocess.run([adapter, "sparsify", "--density", density, "-o", out, lora], check=True,
                           stdout=subprocess.DEVNULL)
            cfg, st = read(os.path.join(out, "sparse_config.json")), read(os.path.join(out, "adapter_model.safetensors"))
            if len(cfg) + len(SPLIT) + len(st) <= MAX:
                put("sparse", "valid-density-%s" % density, cfg + SPLIT + st)
            if density == "0.05":
                c = json.loads(cfg)
                put("sparse", "bad-format", js(dict(c, format="coo")).encode() + SPLIT + st)
                put("sparse", "bad-no-weights", cfg)
                # out = INT64_MAX overflowed out + 1 (a finding of fuzz-sparse under UBSan, now refused)
                m = sorted(c["modules"])[0]
                big = json.loads(cfg)
                big["modules"][m]["shape"] = [9223372036854775807, big["modules"][m]["shape"][1]]
                put("sparse", "bad-shape-overflow", js(big).encode() + SPLIT + st)


# ------------------------------------------------------------ training data
def traindata_seeds():
    clear("traindata")
    put("traindata", "valid-all-forms.jsonl",
        '{"text": "The capital of France is Paris."}\n'
        '{"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},'
        ' {"role": "assistant", "content": "Hello!"}]}\n'
        '{"prompt": "2 + 2 =", "completion": " 4"}\n'
        '{"input_ids": [1, 2, 3, 4], "loss_mask": [0, 0, 1, 1]}\n'
        '{"input_ids": [5, 6]}\n')
    put("traindata", "valid-bom-crlf-blank.jsonl",
        '\ufeff{"text": "caf\u00e9 \\u00e9 \\ud83d\\ude00"}\r\n\r\n   \n'
        '{"messages": [{"role": "user", "content": "q"}, {"role": "tool", "content": "{}"},'
        ' {"role": "assistant", "content": "a"}]}\r\n')
    put("traindata", "bad-lines.jsonl",
        '{"text": ""}\n'
        '{"text": "x", "extra": 1}\n'
        '{"messages": [{"role": "user", "content": "no answer"}]}\n'
        '{"prompt": "p", "completion": ""}\n'
        '{"input_ids": [1, -2]}\n'
        '{"input_ids": [1, 2], "loss_mask": [0, 0]}\n'
        '{"input_ids": [1, 2], "loss_mask": [1]}\n'
        '[1, 2]\n'
        'null\n'
        '{"text": "unterminated\n'
        '{"text": "ok"} trailing\n')
    put("traindata", "bad-utf8-nul.jsonl", b'{"text": "\xff"}\n{"text": "a\x00b"}\n{"messages": "x"}\n')
    put("traindata", "empty.jsonl", "\n\n")


# ------------------------------------------------------------ LFS
HELLO = hashlib.sha256(b"hello\n").hexdigest()


def pointer(oid, size, ext=()):
    s = "version https://git-lfs.github.com/spec/v1\n"
    for k, v in ext:
        s += "%s %s\n" % (k, v)
    return s + "oid sha256:%s\nsize %d\n" % (oid, size)


def pkt(s):
    if isinstance(s, str):
        s = s.encode()
    return b"%04x" % (len(s) + 4) + s


FLUSH = b"0000"


def lfs_seeds():
    clear("lfs-pointer")
    put("lfs-pointer", "valid-hello", pointer(HELLO, 6))
    put("lfs-pointer", "valid-ext", pointer(HELLO, 6, [("ext-0-foo", "sha256:" + "a" * 64),
                                                     ("ext-1-bar", "sha256:" + "b" * 64)]))
    put("lfs-pointer", "valid-big", pointer(HELLO, 9999999999999999999))
    put("lfs-pointer", "bad-order", "version https://git-lfs.github.com/spec/v1\nsize 6\noid sha256:%s\n" % HELLO)
    put("lfs-pointer", "bad-size", pointer(HELLO, 6).replace("size 6", "size 06"))
    put("lfs-pointer", "bad-oid", pointer(HELLO.upper(), 6))
    put("lfs-pointer", "bad-crlf", pointer(HELLO, 6).replace("\n", "\r\n"))

    clear("lfs-filter")
    hs = pkt("git-filter-client\n") + pkt("version=2\n") + FLUSH + \
        pkt("capability=clean\n") + pkt("capability=smudge\n") + FLUSH

    def req(cmd, path, content):
        r = pkt("command=%s\n" % cmd) + pkt("pathname=%s\n" % path) + FLUSH
        for i in range(0, len(content), 1000):
            r += pkt(content[i:i + 1000])
        return r + FLUSH
    put("lfs-filter", "clean-smudge",
        hs + req("clean", "a.bin", b"hello\n") + req("smudge", "a.bin", pointer(HELLO, 6).encode()) +
        req("clean", "empty.bin", b"") + req("smudge", "plain.txt", b"not a pointer\n"))
    put("lfs-filter", "clean-big", hs + req("clean", "big.bin", bytes(range(256)) * 20))
    put("lfs-filter", "clean-pointer", hs + req("clean", "p", pointer(HELLO, 6).encode()))
    put("lfs-filter", "smudge-missing", hs + req("smudge", "m.bin", pointer("0" * 64, 3).encode()))
    put("lfs-filter", "unknown-command", hs + req("frob", "x", b"data") + req("clean", "y", b"more\n"))
    put("lfs-filter", "bad-handshake", pkt("git-filter-client\n") + pkt("version=1\n") + FLUSH)
    put("lfs-filter", "bad-header", hs + b"zzzz")
    put("lfs-filter", "eof-in-content", hs + pkt("command=clean\n") + FLUSH + pkt("abc"))

    clear("lfs-batch")
    oids = ["87428fc522803d31065e7bce3cf03fe475096631e5e07bbd7a0fde60c4cf25c7",
            "0263829989b6fd954f72baaf2fc64bc2e2f01d692d4de72986ea808f6e99813f",
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"]
    dl = {"transfer": "basic", "hash_algo": "sha256", "objects": [
        {"oid": oids[0], "size": 2, "authenticated": True, "actions": {"download": {
            "href": "https://cdn.example/a", "header": {"Authorization": "Bearer x", "X-Id": "1"},
            "expires_in": 3600}}},
        {"oid": oids[1], "size": 2, "actions": {"download": {"href": "http://127.0.0.1:1/b",
                                                               "expires_at": "2030-01-02T03:04:05Z"}}},
        {"oid": oids[2], "size": 0, "actions": {"download": {"href": "https://cdn.example/c"}}}]}
    put("lfs-batch", "download", js(dl))
    up = {"transfer": "basic", "objects": [
        {"oid": oids[0], "size": 2, "actions": {"upload": {"href": "https://up.example/a", "header": {"k": "v"}},
                                                "verify": {"href": "https://up.example/verify"}}},
        {"oid": oids[1], "size": 2},
        {"oid": oids[2], "size": 0, "actions": {"upload": {"href": "https://up.example/c"}}}]}
    put("lfs-batch", "upload", js(up))
    put("lfs-batch", "errors", js({"objects": [
        {"oid": oids[0], "size": 2, "error": {"code": 404, "message": "Object does not exist"}},
        {"oid": oids[1], "size": 2, "error": {"code": 503, "message": "later"}},
        {"oid": oids[2], "size": 0, "actions": {"download": {"href": 5}}}]}))
    put("lfs-batch", "bad-file-href", js({"objects": [
        {"oid": o, "size": 0, "actions": {"download": {"href": "file:///etc/passwd"},
                                           "upload": {"href": "file:///tmp/x"}}} for o in oids]}))
    put("lfs-batch", "bad-null-oid", js({"objects": [{"oid": None}, {"oid": oids[0], "actions": {}}]}))
    # header names or values with CR/LF are dropped (action_headers), the answer is taken
    put("lfs-batch", "valid-header-injection-dropped", js({"objects": [
        {"oid": o, "actions": {"download": {"href": "https://x/", "header": {"A\r\nB": "c", "D": "e\nf",
                                                                                 "G": None}}}} for o in oids]}))
    put("lfs-batch", "bad-no-objects", js({"message": "nope"}))


# ------------------------------------------------------------ bundles
def bundle_seeds():
    clear("bundle")
    env = dict(os.environ, GIT_CONFIG_NOSYSTEM="1", HOME="/nonexistent", GIT_AUTHOR_NAME="A",
               GIT_AUTHOR_EMAIL="a@example.invalid", GIT_COMMITTER_NAME="A",
               GIT_COMMITTER_EMAIL="a@example.invalid", GIT_AUTHOR_DATE="2026-01-01T00:00:00Z",
               GIT_COMMITTER_DATE="2026-01-01T00:00:00Z")
    lfs_data = b"tiny weights\n"
    lfs_oid = hashlib.sha256(lfs_data).hexdigest()
    with tempfile.TemporaryDirectory() as tmp:
        def git(*args, **kw):
            return subprocess.run(["git", "-C", tmp] + list(args), check=True, env=env,
                                  stdout=subprocess.PIPE, **kw).stdout
        git("init", "-q", "-b", "main")
        with open(os.path.join(tmp, "config.json"), "wb") as f:
            f.write(read(fixture("models", "tiny-qwen3-f32", "config.json")))
        with open(os.path.join(tmp, "model.safetensors"), "w") as f:
            f.write(pointer(lfs_oid, len(lfs_data)))
        with open(os.path.join(tmp, ".gitattributes"), "w") as f:
            f.write("*.safetensors filter=lfs diff=lfs merge=lfs -text\n")
        git("add", ".")
        git("commit", "-q", "-m", "tiny model")
        git("tag", "v1")
        head = git("rev-parse", "HEAD").decode().strip()
        pack = subprocess.run(["git", "-C", tmp, "pack-objects", "--stdout", "--revs", "-q"], check=True, env=env,
                           input=b"refs/heads/main\n", stdout=subprocess.PIPE).stdout

    def manifest(**kw):
        m = {"format": "git-model-bundle", "version": 1, "head": "refs/heads/main",
             "refs": {"refs/heads/main": head, "refs/tags/v1": head},
             "pack": {"size": len(pack), "sha256": hashlib.sha256(pack).hexdigest()},
             "lfs": [{"oid": lfs_oid, "size": len(lfs_data)}]}
        m.update(kw)
        return js(m).encode()

    def tar(members):
        b = io.BytesIO()
        with tarfile.open(fileobj=b, mode="w", format=tarfile.PAX_FORMAT) as t:
            for name, data in members:
                ti = tarfile.TarInfo(name)
                ti.size = len(data)
                ti.mtime = 0
                t.addfile(ti, io.BytesIO(data))
        return b.getvalue()
    put("bundle", "valid-tiny.tar", tar([("git-model-bundle.json", manifest()), ("pack.pack", pack),
                                         ("lfs/" + lfs_oid, lfs_data)]))
    put("bundle", "valid-detached.tar", tar([("git-model-bundle.json", manifest(head=head, lfs=[])),
                                             ("pack.pack", pack)]))
    put("bundle", "bad-lfs-hash.tar", tar([("git-model-bundle.json", manifest()), ("pack.pack", pack),
                                           ("lfs/" + lfs_oid, b"other bytes\n")]))
    put("bundle", "bad-member.tar", tar([("git-model-bundle.json", manifest()), ("../evil", b"x")]))
    put("bundle", "bad-ref.tar", tar([("git-model-bundle.json", manifest(refs={"HEAD": head}, lfs=[])),
                                      ("pack.pack", pack)]))
    put("bundle", "bad-manifest-first.tar", tar([("pack.pack", pack)]))


if __name__ == "__main__":
    build = sys.argv[1] if len(sys.argv) > 1 else None
    config_seeds()
    tokenizer_seeds()
    peft_seeds()
    sparse_seeds(build)
    traindata_seeds()
    lfs_seeds()
    bundle_seeds()
