#!/bin/sh
test_description='git model synth: synthetic models with the real Qwen3 tokenizer'
. "${GM_SRC_DIR:-$(cd "$(dirname "$0")/.." && pwd)}/t/test-lib.sh"

# st_header FILE: the safetensors header as "name dtype shape" lines, sorted.
st_header () {
	python3 - "$1" <<-\PY
	import json, struct, sys
	with open(sys.argv[1], "rb") as f:
	    n = struct.unpack("<Q", f.read(8))[0]
	    h = json.loads(f.read(n))
	meta = h.pop("__metadata__", {})
	print("metadata", json.dumps(meta, sort_keys=True))
	for k in sorted(h):
	    print(k, h[k]["dtype"], "x".join(map(str, h[k]["shape"])))
	PY
}

# st_stats FILE TENSOR: mean and std of a bf16/f16/f32 tensor.
st_stats () {
	python3 - "$1" "$2" <<-\PY
	import json, struct, sys, math
	with open(sys.argv[1], "rb") as f:
	    n = struct.unpack("<Q", f.read(8))[0]
	    h = json.loads(f.read(n))
	    t = h[sys.argv[2]]
	    b, e = t["data_offsets"]
	    f.seek(8 + n + b)
	    raw = f.read(e - b)
	if t["dtype"] == "BF16":
	    vals = [struct.unpack("<f", struct.pack("<I", x << 16))[0]
	            for x in struct.unpack("<%dH" % (len(raw) // 2), raw)]
	elif t["dtype"] == "F16":
	    vals = list(struct.unpack("<%de" % (len(raw) // 2), raw))
	else:
	    vals = list(struct.unpack("<%df" % (len(raw) // 4), raw))
	m = sum(vals) / len(vals)
	s = math.sqrt(sum((v - m) ** 2 for v in vals) / len(vals))
	print("%.4f %.4f" % (m, s))
	PY
}

test_expect_success 'synth tiny writes a complete Hugging Face directory' '
	git model synth tiny m >out &&
	echo "wrote m: tiny, 2 layers, hidden 64, 9.8M parameters, bf16, seed 0" >expect &&
	test_cmp expect out &&
	(cd m && ls) >files &&
	cat >expect <<-\EOF &&
	LICENSE
	config.json
	generation_config.json
	model.safetensors
	tokenizer.json
	tokenizer_config.json
	EOF
	test_cmp expect files
'

test_expect_success 'the tokenizer is the real Qwen3 one, byte for byte' '
	test_cmp "$TEST_FIXTURES/models/tiny-qwen3-vocab151k/tokenizer.json" m/tokenizer.json &&
	test_cmp "$TEST_FIXTURES/models/tiny-qwen3-vocab151k/tokenizer_config.json" m/tokenizer_config.json &&
	test_cmp "$TEST_FIXTURES/models/tiny-qwen3-vocab151k/LICENSE" m/LICENSE
'

test_expect_success PYTHON3 'config.json is spelled as released Qwen3 checkpoints spell it' '
	python3 -c "
import json
c = json.load(open(\"m/config.json\"))
want = dict(architectures=[\"Qwen3ForCausalLM\"], model_type=\"qwen3\", hidden_size=64,
            intermediate_size=192, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, head_dim=16, vocab_size=151936, max_position_embeddings=4096,
            rms_norm_eps=1e-06, rope_theta=1000000.0, tie_word_embeddings=True,
            torch_dtype=\"bfloat16\", bos_token_id=151643, eos_token_id=151645)
bad = {k: (c.get(k), v) for k, v in want.items() if c.get(k) != v}
assert not bad, bad
g = json.load(open(\"m/generation_config.json\"))
assert g[\"eos_token_id\"] == [151645, 151643] and g[\"temperature\"] == 0.6, g
assert g[\"top_k\"] == 20 and g[\"top_p\"] == 0.95, g
"
'

test_expect_success PYTHON3 'the tensors are the Qwen3 set with the right shapes' '
	st_header m/model.safetensors >header &&
	cat >expect <<-\EOF &&
	metadata {"format": "pt"}
	model.embed_tokens.weight BF16 151936x64
	model.layers.0.input_layernorm.weight BF16 64
	model.layers.0.mlp.down_proj.weight BF16 64x192
	model.layers.0.mlp.gate_proj.weight BF16 192x64
	model.layers.0.mlp.up_proj.weight BF16 192x64
	model.layers.0.post_attention_layernorm.weight BF16 64
	model.layers.0.self_attn.k_norm.weight BF16 16
	model.layers.0.self_attn.k_proj.weight BF16 32x64
	model.layers.0.self_attn.o_proj.weight BF16 64x64
	model.layers.0.self_attn.q_norm.weight BF16 16
	model.layers.0.self_attn.q_proj.weight BF16 64x64
	model.layers.0.self_attn.v_proj.weight BF16 32x64
	model.layers.1.input_layernorm.weight BF16 64
	model.layers.1.mlp.down_proj.weight BF16 64x192
	model.layers.1.mlp.gate_proj.weight BF16 192x64
	model.layers.1.mlp.up_proj.weight BF16 192x64
	model.layers.1.post_attention_layernorm.weight BF16 64
	model.layers.1.self_attn.k_norm.weight BF16 16
	model.layers.1.self_attn.k_proj.weight BF16 32x64
	model.layers.1.self_attn.o_proj.weight BF16 64x64
	model.layers.1.self_attn.q_norm.weight BF16 16
	model.layers.1.self_attn.q_proj.weight BF16 64x64
	model.layers.1.self_attn.v_proj.weight BF16 32x64
	model.norm.weight BF16 64
	EOF
	test_cmp expect header
'

test_expect_success PYTHON3 'weights are N(0, 0.02), norm weights around 1' '
	st_stats m/model.safetensors model.layers.0.mlp.up_proj.weight >stats &&
	read mean std <stats &&
	python3 -c "assert abs($mean) < 0.002 and abs($std - 0.02) < 0.001, ($mean, $std)" &&
	st_stats m/model.safetensors model.norm.weight >stats &&
	read mean std <stats &&
	python3 -c "assert abs($mean - 1) < 0.02 and 0.03 < $std < 0.07, ($mean, $std)"
'

test_expect_success 'the synthetic model validates' '
	git infer -m m --check >out &&
	test_grep "^ok: m: qwen3, 2 layers, hidden 64" out
'

test_expect_success 'same seed, same bytes, whatever the thread count' '
	git model synth tiny m2 --threads 1 -q &&
	cmp m/model.safetensors m2/model.safetensors &&
	git model synth tiny m3 --threads 3 -q &&
	cmp m/model.safetensors m3/model.safetensors
'

test_expect_success 'another seed, other weights of the same layout' '
	git model synth tiny m4 --seed 1 -q &&
	! cmp -s m/model.safetensors m4/model.safetensors &&
	test $(wc -c <m/model.safetensors) = $(wc -c <m4/model.safetensors)
'

test_expect_success PYTHON3 'dtype and shape overrides' '
	git model synth tiny f32 --dtype f32 --layers 3 --hidden 32 --heads 2 --kv-heads 1 \
		--head-dim 8 --intermediate 48 --no-tie -q &&
	st_header f32/model.safetensors >header &&
	test_grep "^lm_head.weight F32 151936x32$" header &&
	test_grep "^model.layers.2.self_attn.q_proj.weight F32 16x32$" header &&
	test_grep "^model.layers.2.self_attn.k_proj.weight F32 8x32$" header &&
	! test_grep "model.layers.3\." header &&
	python3 -c "
import json
c = json.load(open(\"f32/config.json\"))
assert c[\"torch_dtype\"] == \"float32\" and c[\"tie_word_embeddings\"] is False, c
assert c[\"num_hidden_layers\"] == 3 and c[\"head_dim\"] == 8, c
" &&
	git model synth tiny f16 --dtype float16 -q &&
	st_header f16/model.safetensors >header &&
	test_grep "^model.norm.weight F16 64$" header
'

test_expect_success 'the data is exactly dtype x shape (file size check)' '
	python3 -c "
import json, os, struct
p = \"f32/model.safetensors\"
with open(p, \"rb\") as f:
    n = struct.unpack(\"<Q\", f.read(8))[0]
    h = json.loads(f.read(n))
h.pop(\"__metadata__\")
end = max(t[\"data_offsets\"][1] for t in h.values())
assert n % 8 == 0, n
assert os.path.getsize(p) == 8 + n + end, (os.path.getsize(p), n, end)
"
'

test_expect_success 'an existing directory is never overwritten' '
	mkdir keep &&
	echo precious >keep/file &&
	test_expect_code 1 git model synth tiny keep 2>err &&
	test_grep "already exists and is not an empty directory" err &&
	echo precious >expect &&
	test_cmp expect keep/file &&
	mkdir empty &&
	git model synth tiny empty -q &&
	test_path_is_file empty/model.safetensors
'

test_expect_success 'bad arguments are usage errors' '
	test_expect_code 129 git model synth nosuch x 2>err &&
	test_grep "unknown shape .nosuch." err &&
	test_expect_code 129 git model synth tiny x --dtype i8 2>err &&
	test_line_count = 1 err &&
	test_expect_code 129 git model synth tiny x --heads 4 --kv-heads 3 2>err &&
	test_grep "must be a multiple of kv heads" err &&
	test_expect_code 129 git model synth tiny x --vocab 1000 2>err &&
	test_grep "at least 151669" err &&
	test_expect_code 129 git model synth tiny x --head-dim 15 2>err &&
	test_grep "must be even" err &&
	test_expect_code 129 git model synth tiny 2>err &&
	test_grep "missing <dir>" err &&
	test_expect_code 129 git model synth tiny a b 2>err &&
	test_grep "too many arguments" err &&
	test_path_is_missing x
'

test_expect_success 'a missing parent directory is an error' '
	test_expect_code 1 git model synth tiny no/such/dir 2>err &&
	test_grep "parent directory of .no/such/dir. does not exist" err
'

test_expect_success 'a killed run leaves nothing under the final name' '
	git model synth qwen3-0.6b big -q --threads 1 &
	pid=$! &&
	sleep 1 &&
	kill -9 $pid &&
	{ wait $pid; test $? = 137; } &&
	test_path_is_missing big &&
	rm -rf .synth-tmp-*
'

test_done
