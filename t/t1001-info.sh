#!/bin/sh
test_description='git model info: describe and validate a model directory'
. "${GM_SRC_DIR:-$(cd "$(dirname "$0")/.." && pwd)}/t/test-lib.sh"

# files_block DIR NAME...: the "files:" lines info prints, sizes from wc -c.
files_block () {
	gm_dir=$1
	shift
	gm_width=0
	for gm_f in "$@"; do
		[ ${#gm_f} -gt $gm_width ] && gm_width=${#gm_f}
	done
	echo "files:"
	for gm_f in "$@"; do
		printf '    %-*s  %12s bytes\n' $gm_width "$gm_f" "$(test_file_size "$gm_dir/$gm_f")"
	done
}

# total_size DIR NAME...: the sum of their sizes.
total_size () {
	gm_dir=$1
	shift
	gm_sum=0
	for gm_f in "$@"; do
		gm_sum=$((gm_sum + $(test_file_size "$gm_dir/$gm_f")))
	done
	echo $gm_sum
}

# st_params FILE...: the number of elements the safetensors headers declare.
st_params () {
	python3 - "$@" <<-\PY
	import json, struct, sys
	n = 0
	for p in sys.argv[1:]:
	    with open(p, "rb") as f:
	        h = json.loads(f.read(struct.unpack("<Q", f.read(8))[0]))
	    h.pop("__metadata__", None)
	    for t in h.values():
	        c = 1
	        for d in t["shape"]:
	            c *= d
	        n += c
	print(n)
	PY
}

F32_FILES="config.json generation_config.json model.safetensors tokenizer.json tokenizer_config.json"

test_expect_success 'setup: a copy of the f32 fixture' '
	cp -R "$TEST_FIXTURES/models/tiny-qwen3-f32" f32 &&
	test_path_is_file f32/model.safetensors
'

test_expect_success 'info describes the f32 fixture' '
	git model info f32 >actual &&
	cat >expect <<-\EOF &&
	path:             f32
	architecture:     Qwen3ForCausalLM
	model_type:       qwen3
	parameters:       663.1K (663120)
	dtype:            f32
	layers:           3
	hidden:           64
	intermediate:     160
	heads:            4 (kv heads 1)
	head_dim:         24
	vocab:            4096
	context:          2048
	rope theta:       1000000
	tied embeddings:  no
	eos ids:          4093, 4091
	generation:       do_sample true, temperature 0.7, top_p 0.8, top_k 20
	EOF
	files_block f32 $F32_FILES >>expect &&
	echo "size:             2.79 MiB ($(total_size f32 $F32_FILES) bytes)" >>expect &&
	printf "adapters: none\nworktrees: none\n" >>expect &&
	test_cmp expect actual
'

test_expect_success PYTHON3 'the parameter count is what the safetensors header declares' '
	echo "parameters:       663.1K ($(st_params f32/model.safetensors))" >expect &&
	git model info f32 >out &&
	grep "^parameters:" out >actual &&
	test_cmp expect actual
'

test_expect_success 'info of the tied bf16 fixture' '
	git model info "$TEST_FIXTURES/models/tiny-qwen3-vocab151k" >out &&
	test_grep "^path:             $TEST_FIXTURES/models/tiny-qwen3-vocab151k$" out &&
	test_grep "^parameters:       4.9M (4892896)$" out &&
	test_grep "^dtype:            bf16$" out &&
	test_grep "^vocab:            151936$" out &&
	test_grep "^tied embeddings:  yes$" out &&
	test_grep "^eos ids:          151645, 151643$" out &&
	test_grep ! "LICENSE" out
'

test_expect_success 'info of the pocket model' '
	git model info "$TEST_MODELS/pocket-qwen3" >out &&
	test_grep "^parameters:       5.8M (5770880)$" out &&
	test_grep "^layers:           6$" out &&
	test_grep "^heads:            8 (kv heads 4)$" out &&
	test_grep "^head_dim:         32$" out &&
	test_grep "^generation:       do_sample true, temperature 0.8, top_p 0.9, top_k 40$" out
'

test_expect_success PYTHON3 'info --json of the f32 fixture' '
	git model info --json f32 >out.json &&
	python3 - <<-\PY
	import json, os
	o = json.load(open("out.json"))
	files = ["config.json", "generation_config.json", "model.safetensors",
	         "tokenizer.json", "tokenizer_config.json"]
	want = {
	    "path": "f32", "architecture": "Qwen3ForCausalLM", "model_type": "qwen3",
	    "parameters": 663120, "dtype": "f32", "layers": 3, "hidden_size": 64,
	    "intermediate_size": 160, "heads": 4, "kv_heads": 1, "head_dim": 24,
	    "vocab_size": 4096, "context_length": 2048, "rope_theta": 1000000.0,
	    "rope_scaling": None, "tie_word_embeddings": False, "eos_token_ids": [4093, 4091],
	    "generation": {"do_sample": True, "temperature": 0.7, "top_p": 0.8, "top_k": 20,
	                   "min_p": 0.0, "repetition_penalty": 1.0, "max_new_tokens": None},
	    "files": [{"name": f, "size": os.path.getsize("f32/" + f)} for f in files],
	    "size": sum(os.path.getsize("f32/" + f) for f in files),
	    "name": None, "revision": None, "source": None, "adapters": [], "worktrees": [],
	}
	assert list(o) == list(want), list(o)
	bad = {k: (o[k], v) for k, v in want.items() if o[k] != v}
	assert not bad, bad
	PY
'

test_expect_success 'info --json is one JSON object on stdout, nothing on stderr' '
	git model info --json "$TEST_MODELS/pocket-qwen3" >out 2>err &&
	test_must_be_empty err &&
	head -n 1 out >first &&
	echo "{" >expect &&
	test_cmp expect first &&
	tail -n 1 out >last &&
	echo "}" >expect &&
	test_cmp expect last &&
	test_grep "^  \"parameters\": 5770880,$" out
'

test_expect_success 'info of a synthetic model' '
	git model synth tiny synth -q &&
	git model info synth >out &&
	test_grep "^architecture:     Qwen3ForCausalLM$" out &&
	test_grep "^parameters:       9.8M (9822592)$" out &&
	test_grep "^dtype:            bf16$" out &&
	test_grep "^heads:            4 (kv heads 2)$" out &&
	test_grep "^context:          4096$" out &&
	test_grep "^tied embeddings:  yes$" out &&
	test_grep "^eos ids:          151645, 151643$" out &&
	test_grep "^generation:       do_sample true, temperature 0.6, top_p 0.95, top_k 20$" out &&
	sed -n "/^files:/,/^size:/p" out >files &&
	files_block synth config.json generation_config.json model.safetensors \
		tokenizer.json tokenizer_config.json >expect &&
	echo "size:             29.6 MiB ($(total_size synth config.json generation_config.json \
		model.safetensors tokenizer.json tokenizer_config.json) bytes)" >>expect &&
	test_cmp expect files
'

test_expect_success PYTHON3 'synthetic model: the count matches the header' '
	echo "parameters:       9.8M ($(st_params synth/model.safetensors))" >expect &&
	grep "^parameters:" out >actual &&
	test_cmp expect actual
'

test_expect_success 'an untied f32 synthetic model' '
	git model synth tiny untied -q --no-tie --dtype f32 &&
	git model info untied >out &&
	test_grep "^tied embeddings:  no$" out &&
	test_grep "^dtype:            f32$" out &&
	# 9822592 + 151936 x 64 for the separate head
	test_grep "^parameters:       19.5M (19546496)$" out
'

test_expect_success 'llama3 rope scaling and the optional generation fields are shown' '
	cp -R f32 scaled &&
	sed "s/\"rope_scaling\": null/\"rope_scaling\": {\"rope_type\": \"llama3\", \"factor\": 8.0, \"low_freq_factor\": 1.0, \"high_freq_factor\": 4.0, \"original_max_position_embeddings\": 8192}/" \
		f32/config.json >scaled/config.json &&
	cat >scaled/generation_config.json <<-\EOF &&
	{
	  "do_sample": false,
	  "temperature": 0.6,
	  "top_p": 0.95,
	  "top_k": 20,
	  "min_p": 0.05,
	  "repetition_penalty": 1.1,
	  "max_new_tokens": 256,
	  "eos_token_id": 7
	}
	EOF
	git model info scaled >out &&
	cat >expect <<-\EOF &&
	rope theta:       1000000 (llama3 scaling: factor 8, low_freq_factor 1, high_freq_factor 4, original context 8192)
	tied embeddings:  no
	eos ids:          7
	generation:       do_sample false, temperature 0.6, top_p 0.95, top_k 20, min_p 0.05, repetition_penalty 1.1, max_new_tokens 256
	EOF
	sed -n "/^rope theta:/,/^generation:/p" out >actual &&
	test_cmp expect actual
'

test_expect_success PYTHON3 'the same with --json' '
	git model info --json scaled >out.json &&
	python3 - <<-\PY
	import json
	o = json.load(open("out.json"))
	assert o["rope_scaling"] == {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
	                             "high_freq_factor": 4.0,
	                             "original_max_position_embeddings": 8192}, o["rope_scaling"]
	assert o["eos_token_ids"] == [7], o["eos_token_ids"]
	assert o["generation"] == {"do_sample": False, "temperature": 0.6, "top_p": 0.95, "top_k": 20,
	                           "min_p": 0.05, "repetition_penalty": 1.1,
	                           "max_new_tokens": 256}, o["generation"]
	PY
'

test_expect_success 'without generation_config.json: defaults, eos ids of config.json' '
	cp -R f32 nogen &&
	rm nogen/generation_config.json &&
	git model info nogen >out &&
	test_grep "^eos ids:          4093$" out &&
	test_grep "^generation:       do_sample false, temperature 1, top_p 1, top_k 50$" out &&
	test_grep ! "generation_config.json" out
'

test_expect_success PYTHON3 'a sharded checkpoint lists its index and shards' '
	mkdir sharded &&
	cp f32/config.json f32/generation_config.json sharded/ &&
	python3 - <<-\PY &&
	import json, struct
	with open("f32/model.safetensors", "rb") as f:
	    n = struct.unpack("<Q", f.read(8))[0]
	    h = json.loads(f.read(n))
	    data = f.read()
	h.pop("__metadata__", None)
	names = sorted(h)
	shards = [names[: len(names) // 2], names[len(names) // 2 :]]
	wmap = {}
	for i, part in enumerate(shards):
	    fname = "model-%05d-of-%05d.safetensors" % (i + 1, len(shards))
	    hdr, blob = {"__metadata__": {"format": "pt"}}, b""
	    for k in part:
	        b, e = h[k]["data_offsets"]
	        hdr[k] = {"dtype": h[k]["dtype"], "shape": h[k]["shape"],
	                  "data_offsets": [len(blob), len(blob) + e - b]}
	        blob += data[b:e]
	        wmap[k] = fname
	    raw = json.dumps(hdr).encode()
	    raw += b" " * (-len(raw) % 8)
	    with open("sharded/" + fname, "wb") as f:
	        f.write(struct.pack("<Q", len(raw)) + raw + blob)
	with open("sharded/model.safetensors.index.json", "w") as f:
	    json.dump({"metadata": {"total_size": len(data)}, "weight_map": wmap}, f)
	PY
	git model info sharded >out &&
	test_grep "^parameters:       663.1K (663120)$" out &&
	sed -n "/^files:/,/^size:/p" out >files &&
	set -- config.json generation_config.json model.safetensors.index.json \
		model-00001-of-00002.safetensors model-00002-of-00002.safetensors &&
	files_block sharded "$@" >expect &&
	echo "size:             2.54 MiB ($(total_size sharded "$@") bytes)" >>expect &&
	test_cmp expect files
'

test_expect_success 'a missing directory' '
	test_expect_code 1 git model info nosuch >out 2>err &&
	test_must_be_empty out &&
	echo "error: '\''nosuch'\'' is neither a model directory nor a registered model (see '\''git model list'\'')" >expect &&
	test_cmp expect err
'

test_expect_success 'a directory without config.json' '
	mkdir empty &&
	test_expect_code 1 git model info empty >out 2>err &&
	test_must_be_empty out &&
	echo "error: empty: no config.json; is this a model directory?" >expect &&
	test_cmp expect err
'

test_expect_success 'a config.json that is not JSON' '
	cp -R f32 badjson &&
	echo "{\"vocab_size\": 4096," >badjson/config.json &&
	test_expect_code 1 git model info badjson >out 2>err &&
	test_must_be_empty out &&
	test_grep "^error: badjson/config.json: invalid JSON" err
'

test_expect_success 'a config.json without a required key, or with a mistyped one' '
	cp -R f32 nohidden &&
	grep -v "\"hidden_size\"" f32/config.json >nohidden/config.json &&
	test_expect_code 1 git model info nohidden 2>err &&
	echo "error: nohidden/config.json: missing '\''hidden_size'\''" >expect &&
	test_cmp expect err &&
	sed "s/\"num_hidden_layers\": 3/\"num_hidden_layers\": \"3\"/" f32/config.json >nohidden/config.json &&
	test_expect_code 1 git model info nohidden 2>err &&
	echo "error: nohidden/config.json: '\''num_hidden_layers'\'' must be an integer, not string" >expect &&
	test_cmp expect err
'

test_expect_success 'an unknown architecture is named' '
	cp -R f32 mistral &&
	sed "s/Qwen3ForCausalLM/MistralForCausalLM/" f32/config.json >mistral/config.json &&
	test_expect_code 1 git model info mistral >out 2>err &&
	test_must_be_empty out &&
	echo "error: mistral/config.json: architecture '\''MistralForCausalLM'\'' is not supported (supported: Qwen3ForCausalLM, Qwen2ForCausalLM, LlamaForCausalLM)" >expect &&
	test_cmp expect err
'

test_expect_success 'a truncated safetensors file' '
	cp -R f32 trunc &&
	head -c 1000000 f32/model.safetensors >trunc/model.safetensors &&
	test_expect_code 1 git model info trunc >out 2>err &&
	test_must_be_empty out &&
	test_grep "^error: trunc/model.safetensors: tensor .lm_head.weight.: data_offsets end [0-9]* is past the end of the data buffer .*: the file is truncated" err &&
	head -c 100 f32/model.safetensors >trunc/model.safetensors &&
	test_expect_code 1 git model info trunc 2>err &&
	test_grep "^error: trunc/model.safetensors: header length [0-9]* goes past the end of the file (100 bytes)" err &&
	: >trunc/model.safetensors &&
	test_expect_code 1 git model info --json trunc >out 2>err &&
	test_must_be_empty out &&
	test_grep "^error: trunc/model.safetensors: file too short (0 bytes)" err
'

test_expect_success 'no weights at all' '
	cp -R f32 noweights &&
	rm noweights/model.safetensors &&
	test_expect_code 1 git model info noweights 2>err &&
	echo "error: noweights: no model.safetensors or model.safetensors.index.json" >expect &&
	test_cmp expect err
'

test_expect_success 'tensors that do not match config.json are named' '
	cp -R f32 shapes &&
	sed "s/\"intermediate_size\": 160/\"intermediate_size\": 128/" f32/config.json >shapes/config.json &&
	test_expect_code 1 git model info shapes 2>err &&
	echo "error: shapes: tensor '\''model.layers.0.mlp.gate_proj.weight'\'' has shape [160, 64], expected [128, 64] for this config.json" >expect &&
	test_cmp expect err &&
	sed "s/\"num_hidden_layers\": 3/\"num_hidden_layers\": 4/" f32/config.json >shapes/config.json &&
	test_expect_code 1 git model info shapes 2>err &&
	echo "error: shapes: missing tensor '\''model.layers.3.input_layernorm.weight'\'' ([64]), needed by Qwen3ForCausalLM" >expect &&
	test_cmp expect err &&
	sed "s/\"num_hidden_layers\": 3/\"num_hidden_layers\": 2/" f32/config.json >shapes/config.json &&
	test_expect_code 1 git model info shapes 2>err &&
	test_grep "^error: shapes: unexpected tensor .model.layers.2.input_layernorm.weight. and 10 more" err
'

test_expect_success 'a huge layer count is an error, not a crash' '
	cp -R f32 huge &&
	sed "s/\"num_hidden_layers\": 3/\"num_hidden_layers\": 2000000000/" f32/config.json >huge/config.json &&
	test_expect_code 1 git model info huge 2>err &&
	test_grep "missing tensor .model.layers.3.input_layernorm.weight." err
'

test_expect_success 'usage errors exit 129' '
	test_expect_code 129 git model info >out 2>err &&
	test_must_be_empty out &&
	test_grep "missing <name> or <dir>" err &&
	test_expect_code 129 git model info f32 f32 2>err &&
	test_grep "too many arguments" err &&
	test_expect_code 129 git model info --bogus f32 2>err &&
	test_grep "unknown option .--bogus." err
'

test_expect_success 'info -h prints the usage and exits 129' '
	test_expect_code 129 git model info -h >out &&
	test_grep "^usage: git model info \[--json\] (<name>\[@<rev>\] | <dir>)$" out &&
	test_grep "^    --json  *print one JSON object$" out
'

test_done
