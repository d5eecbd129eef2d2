#!/bin/sh
test_description='git adapter show: validate and describe PEFT LoRA adapters'
. "${GM_SRC_DIR:-$(cd "$(dirname "$0")/.." && pwd)}/t/test-lib.sh"

LORA="$TEST_FIXTURES/lora"

# st_edit SRC DST CODE: rewrites the safetensors file SRC as DST after
# running the Python CODE on t, a dict of name -> [dtype, shape, bytes].
# The file is laid out afresh, so removing or resizing a tensor leaves a
# well-formed file and only the adapter checks can object.
st_edit () {
	python3 - "$@" <<-\PY
	import json, struct, sys
	src, dst, code = sys.argv[1:4]
	with open(src, "rb") as f:
	    n = struct.unpack("<Q", f.read(8))[0]
	    h = json.loads(f.read(n))
	    data = f.read()
	meta = h.pop("__metadata__", None)
	t = {k: [v["dtype"], v["shape"], data[v["data_offsets"][0]:v["data_offsets"][1]]]
	     for k, v in h.items()}
	exec(code)
	h, off, blob = {}, 0, b""
	if meta is not None:
	    h["__metadata__"] = meta
	for k in sorted(t):
	    dtype, shape, raw = t[k]
	    h[k] = {"dtype": dtype, "shape": shape, "data_offsets": [off, off + len(raw)]}
	    off += len(raw)
	    blob += raw
	hb = json.dumps(h).encode()
	hb += b" " * (-len(hb) % 8)
	with open(dst, "wb") as f:
	    f.write(struct.pack("<Q", len(hb)) + hb + blob)
	PY
}

# cfg_edit FILE CODE: runs the Python CODE on c, the parsed adapter_config.json.
cfg_edit () {
	python3 - "$@" <<-\PY
	import json, sys
	path, code = sys.argv[1:3]
	c = json.load(open(path))
	exec(code)
	json.dump(c, open(path, "w"), indent=2)
	PY
}

# json_lines FILE: git adapter show --json output as sorted "key value" lines,
# one module per line, so that it compares exactly and readably.
json_lines () {
	python3 - "$1" <<-\PY
	import json, sys
	o = json.load(open(sys.argv[1]))
	for m in o.pop("modules"):
	    print("module", json.dumps(m))
	for k in sorted(o):
	    print(k, json.dumps(o[k]))
	PY
}

B=base_model.model.model.layers
SQ="'"

test_expect_success 'setup: copies of the fixtures' '
	cp -R "$LORA/tiny-qwen3-f32-a1-r8-all" r8 &&
	cp -R "$LORA/tiny-qwen3-f32-a2-r4-qv" r4 &&
	cp -R "$LORA/tiny-qwen3-f32-a3-r6-rslora-mlp" r6
'

test_expect_success 'r8 alpha 16 on all seven projections' '
	git adapter show r8 >out 2>err &&
	test_must_be_empty err &&
	cat >expect <<-\EOF &&
	path:             r8
	base model:       tiny-qwen3-f32
	task type:        CAUSAL_LM
	rank:             8
	alpha:            16
	scaling:          2 (alpha / rank)
	dropout:          0
	target modules:   q_proj, down_proj, o_proj, v_proj, gate_proj, k_proj, up_proj
	layers:           0-2 (3 layers)
	modules:          21
	    q_proj     layers 0-2  64 -> 96   rank 8  scale 2  |sBA| 38.2-39.36
	    k_proj     layers 0-2  64 -> 24   rank 8  scale 2  |sBA| 18.77-21.53
	    v_proj     layers 0-2  64 -> 24   rank 8  scale 2  |sBA| 19.81-23.15
	    o_proj     layers 0-2  96 -> 64   rank 8  scale 2  |sBA| 39.05-41.67
	    gate_proj  layers 0-2  64 -> 160  rank 8  scale 2  |sBA| 47.21-53.74
	    up_proj    layers 0-2  64 -> 160  rank 8  scale 2  |sBA| 51.42-55.76
	    down_proj  layers 0-2  160 -> 64  rank 8  scale 2  |sBA| 51.99-52.91
	tensors:          42 (f32)
	parameters:       28.0K (28032)
	size:             110 KiB (112128 bytes)
	EOF
	test_cmp expect out
'

test_expect_success 'r4 alpha 4 on q_proj and v_proj' '
	git adapter show r4 >out &&
	cat >expect <<-\EOF &&
	path:             r4
	base model:       tiny-qwen3-f32
	task type:        CAUSAL_LM
	rank:             4
	alpha:            4
	scaling:          1 (alpha / rank)
	dropout:          0
	target modules:   q_proj, v_proj
	layers:           0-2 (3 layers)
	modules:          6
	    q_proj  layers 0-2  64 -> 96  rank 4  scale 1  |sBA| 14.92-15.29
	    v_proj  layers 0-2  64 -> 24  rank 4  scale 1  |sBA| 6.816-8.374
	tensors:          12 (f32)
	parameters:       3.0K (2976)
	size:             11.6 KiB (11904 bytes)
	EOF
	test_cmp expect out
'

test_expect_success 'r6 alpha 12 rslora on the MLP scales by alpha / sqrt(r)' '
	git adapter show r6 >out &&
	cat >expect <<-\EOF &&
	path:             r6
	base model:       tiny-qwen3-f32
	task type:        CAUSAL_LM
	rank:             6
	alpha:            12
	scaling:          4.89898 (rslora: alpha / sqrt(rank))
	dropout:          0
	target modules:   up_proj, gate_proj, down_proj
	layers:           0-2 (3 layers)
	modules:          9
	    gate_proj  layers 0-2  64 -> 160  rank 6  scale 4.89898  |sBA| 108.8-116.8
	    up_proj    layers 0-2  64 -> 160  rank 6  scale 4.89898  |sBA| 99.94-118.2
	    down_proj  layers 0-2  160 -> 64  rank 6  scale 4.89898  |sBA| 107.2-124.3
	tensors:          18 (f32)
	parameters:       12.1K (12096)
	size:             47.2 KiB (48384 bytes)
	EOF
	test_cmp expect out
'

test_expect_success 'the executable runs directly too' '
	git-adapter show r4 >direct &&
	git adapter show r4 >out &&
	test_cmp out direct
'

test_expect_success PYTHON3 '--json: r4 q/v, every field and module' '
	git adapter show --json r4 >out.json &&
	json_lines out.json >actual &&
	cat >expect <<-\EOF &&
	module {"name": "model.layers.0.self_attn.q_proj", "layer": 0, "projection": "q_proj", "in_features": 64, "out_features": 96, "rank": 4, "alpha": 4.0, "scaling": 1.0, "delta_norm": 15.291847879228891}
	module {"name": "model.layers.0.self_attn.v_proj", "layer": 0, "projection": "v_proj", "in_features": 64, "out_features": 24, "rank": 4, "alpha": 4.0, "scaling": 1.0, "delta_norm": 8.374216986118487}
	module {"name": "model.layers.1.self_attn.q_proj", "layer": 1, "projection": "q_proj", "in_features": 64, "out_features": 96, "rank": 4, "alpha": 4.0, "scaling": 1.0, "delta_norm": 15.024105604619193}
	module {"name": "model.layers.1.self_attn.v_proj", "layer": 1, "projection": "v_proj", "in_features": 64, "out_features": 24, "rank": 4, "alpha": 4.0, "scaling": 1.0, "delta_norm": 6.81574908322776}
	module {"name": "model.layers.2.self_attn.q_proj", "layer": 2, "projection": "q_proj", "in_features": 64, "out_features": 96, "rank": 4, "alpha": 4.0, "scaling": 1.0, "delta_norm": 14.921039681417183}
	module {"name": "model.layers.2.self_attn.v_proj", "layer": 2, "projection": "v_proj", "in_features": 64, "out_features": 24, "rank": 4, "alpha": 4.0, "scaling": 1.0, "delta_norm": 7.488428999895387}
	alpha 4.0
	alpha_pattern {}
	base_model "tiny-qwen3-f32"
	dropout 0.0
	dtype "f32"
	layers [0, 1, 2]
	parameters 2976
	path "r4"
	rank 4
	rank_pattern {}
	scaling 1.0
	size 11904
	target_modules ["q_proj", "v_proj"]
	task_type "CAUSAL_LM"
	tensors 12
	use_rslora false
	EOF
	test_cmp expect actual
'

test_expect_success '--json: rslora scaling keeps all its digits' '
	git adapter show --json r6 >out.json &&
	test_grep "^  \"use_rslora\": true,$" out.json &&
	test_grep "^  \"scaling\": 4.898979485566357,$" out.json &&
	test_grep "^      \"scaling\": 4.898979485566357,$" out.json
'

test_expect_success PYTHON3 'rank_pattern and alpha_pattern set per-module rank and scale' '
	cp -R r4 pat &&
	cfg_edit pat/adapter_config.json "c[\"r\"] = 8; c[\"rank_pattern\"] = {\"q_proj\": 4, \"v_proj\": 4}; c[\"alpha_pattern\"] = {\"layers.1.self_attn.q_proj\": 8}" &&
	git adapter show pat >out &&
	sed -n "/^rank:/,/^    v_proj/p" out >actual &&
	cat >expect <<-\EOF &&
	rank:             8
	alpha:            4
	scaling:          0.5 (alpha / rank)
	dropout:          0
	target modules:   q_proj, v_proj
	rank pattern:     q_proj=4, v_proj=4
	alpha pattern:    layers.1.self_attn.q_proj=8
	layers:           0-2 (3 layers)
	modules:          6
	    q_proj  layers 0-2  64 -> 96  rank 4  scale 1-2  |sBA| 14.92-30.05
	    v_proj  layers 0-2  64 -> 24  rank 4  scale 1    |sBA| 6.816-8.374
	EOF
	test_cmp expect actual &&
	git adapter show --json pat >out.json &&
	json_lines out.json >lines &&
	test_grep "^rank_pattern {\"q_proj\": 4, \"v_proj\": 4}$" lines &&
	test_grep "^alpha_pattern {\"layers.1.self_attn.q_proj\": 8.0}$" lines &&
	test_grep "layers.1.self_attn.q_proj\".*\"alpha\": 8.0, \"scaling\": 2.0, \"delta_norm\": 30.04821" lines
'

test_expect_success PYTHON3 'target_modules as a regular expression and as all-linear' '
	cp -R r4 re &&
	cfg_edit re/adapter_config.json "c[\"target_modules\"] = r\".*\\.(q|v)_proj\"" &&
	git adapter show re >out &&
	grep "^target modules:" out >actual &&
	printf "%s\n" "target modules:   regex ${SQ}.*\\.(q|v)_proj${SQ}" >expect &&
	test_cmp expect actual &&
	cp -R r8 all &&
	cfg_edit all/adapter_config.json "c[\"target_modules\"] = \"all-linear\"" &&
	git adapter show all >out &&
	test_grep "^target modules:   all-linear$" out &&
	test_grep "^modules:          21$" out
'

test_expect_success PYTHON3 'an adapter on some layers lists them' '
	mkdir sparse &&
	cp r4/adapter_config.json sparse/ &&
	st_edit r4/adapter_model.safetensors sparse/adapter_model.safetensors \
		"t = {k: v for k, v in t.items() if \".layers.1.\" not in k}" &&
	git adapter show sparse >out &&
	test_grep "^layers:           0, 2 (2 layers)$" out &&
	test_grep "^    q_proj  layers 0, 2  64 -> 96  rank 4  scale 1  |sBA| 14.92-15.29$" out &&
	test_grep "^modules:          4$" out &&
	mkdir one &&
	cp r4/adapter_config.json one/ &&
	st_edit r4/adapter_model.safetensors one/adapter_model.safetensors \
		"t = {k: v for k, v in t.items() if \".layers.2.self_attn.q_proj.\" in k}" &&
	git adapter show one >out &&
	test_grep "^layers:           2 (1 layer)$" out &&
	test_grep "^    q_proj  layer 2  64 -> 96  rank 4  scale 1  |sBA| 14.92$" out
'

test_expect_success 'a config without base model or task type' '
	cp -R r4 anon &&
	sed -e "/base_model_name_or_path/d" -e "/task_type/d" r4/adapter_config.json \
		>anon/adapter_config.json &&
	git adapter show anon >out &&
	test_grep "^base model:       (not recorded)$" out &&
	test_grep ! "^task type:" out &&
	git adapter show --json anon >out.json &&
	test_grep "^  \"base_model\": null,$" out.json &&
	test_grep "^  \"task_type\": null,$" out.json
'

# expect_error DIR 'MESSAGE': git adapter show DIR fails with exactly
# "error: MESSAGE" on stderr, status 1, nothing on stdout.
expect_error () {
	test_expect_code 1 git adapter show "$1" >out 2>err &&
	test_must_be_empty out &&
	printf "%s\n" "error: $2" >expect &&
	test_cmp expect err
}

test_expect_success 'a missing directory' '
	expect_error nosuch "nosuch: no such directory" &&
	echo x >file &&
	expect_error file "file: not a directory (expected a PEFT adapter directory)"
'

test_expect_success 'a missing adapter_config.json' '
	mkdir nocfg &&
	cp r4/adapter_model.safetensors nocfg/ &&
	expect_error nocfg "nocfg: not a PEFT adapter directory: adapter_config.json is missing"
'

test_expect_success 'a missing adapter_model.safetensors' '
	mkdir noweights &&
	cp r4/adapter_config.json noweights/ &&
	expect_error noweights \
		"noweights: not a PEFT adapter directory: adapter_model.safetensors is missing" &&
	echo pickle >noweights/adapter_model.bin &&
	expect_error noweights \
		"noweights: adapter_model.bin (a pickle) is not supported; save the adapter as safetensors (save_pretrained(..., safe_serialization=True))"
'

test_expect_success 'an adapter_config.json that is not JSON' '
	cp -R r4 badjson &&
	printf "{\"peft_type\": \"LORA\", \"r\": 4,\n" >badjson/adapter_config.json &&
	expect_error badjson "badjson/adapter_config.json: invalid JSON: unexpected end of input" &&
	echo "[1, 2]" >badjson/adapter_config.json &&
	expect_error badjson "badjson/adapter_config.json: expected a JSON object"
'

test_expect_success 'configs that are not plain LoRA are refused' '
	cp -R r4 cfg &&
	sed "s/\"use_dora\": false/\"use_dora\": true/" r4/adapter_config.json >cfg/adapter_config.json &&
	expect_error cfg \
		"cfg/adapter_config.json: DoRA adapters (use_dora: true) are not supported; only plain LoRA is" &&
	sed "s/\"peft_type\": \"LORA\"/\"peft_type\": \"IA3\"/" r4/adapter_config.json >cfg/adapter_config.json &&
	expect_error cfg \
		"cfg/adapter_config.json: peft_type \"IA3\" is not supported; only LORA adapters are" &&
	sed "s/\"r\": 4/\"r\": 0/" r4/adapter_config.json >cfg/adapter_config.json &&
	expect_error cfg "cfg/adapter_config.json: ${SQ}r${SQ} must be a positive integer, not 0"
'

test_expect_success PYTHON3 'lora_A and lora_B that disagree on the rank' '
	mkdir mismatch &&
	cp r4/adapter_config.json mismatch/ &&
	st_edit r4/adapter_model.safetensors mismatch/adapter_model.safetensors \
		"k = \"$B.1.self_attn.v_proj.lora_B.weight\"; t[k] = [\"F32\", [24, 3], t[k][2][:24 * 3 * 4]]" &&
	expect_error mismatch \
		"mismatch/adapter_model.safetensors: module ${SQ}model.layers.1.self_attn.v_proj${SQ}: rank mismatch: lora_A is [4, 64] (rank 4) but lora_B is [24, 3] (rank 3)"
'

test_expect_success PYTHON3 'a shape that keeps the byte count but not the rank' '
	mkdir reshaped &&
	cp r4/adapter_config.json reshaped/ &&
	st_edit r4/adapter_model.safetensors reshaped/adapter_model.safetensors \
		"t[\"$B.0.self_attn.q_proj.lora_B.weight\"][1] = [48, 8]" &&
	expect_error reshaped \
		"reshaped/adapter_model.safetensors: module ${SQ}model.layers.0.self_attn.q_proj${SQ}: rank mismatch: lora_A is [4, 64] (rank 4) but lora_B is [48, 8] (rank 8)"
'

test_expect_success 'a rank that disagrees with the config' '
	cp -R r4 rank &&
	sed "s/\"r\": 4/\"r\": 8/" r4/adapter_config.json >rank/adapter_config.json &&
	expect_error rank \
		"rank/adapter_model.safetensors: module ${SQ}model.layers.0.self_attn.q_proj${SQ} has rank 4 but rank/adapter_config.json says r = 8"
'

test_expect_success PYTHON3 'a lora_A without its lora_B' '
	mkdir half &&
	cp r4/adapter_config.json half/ &&
	st_edit r4/adapter_model.safetensors half/adapter_model.safetensors \
		"del t[\"$B.2.self_attn.v_proj.lora_B.weight\"]" &&
	expect_error half \
		"half/adapter_model.safetensors: module ${SQ}model.layers.2.self_attn.v_proj${SQ} has lora_A but no lora_B (missing tensor ${SQ}$B.2.self_attn.v_proj.lora_B.weight${SQ})"
'

test_expect_success PYTHON3 'a tensor that is not 2-D, or not a float type' '
	mkdir bad3d &&
	cp r4/adapter_config.json bad3d/ &&
	st_edit r4/adapter_model.safetensors bad3d/adapter_model.safetensors \
		"t[\"$B.0.self_attn.q_proj.lora_A.weight\"][1] = [4, 8, 8]" &&
	expect_error bad3d \
		"bad3d/adapter_model.safetensors: tensor ${SQ}$B.0.self_attn.q_proj.lora_A.weight${SQ} has 3 dimensions, expected 2" &&
	mkdir badtype &&
	cp r4/adapter_config.json badtype/ &&
	st_edit r4/adapter_model.safetensors badtype/adapter_model.safetensors \
		"t[\"$B.0.self_attn.q_proj.lora_A.weight\"][0] = \"I32\"" &&
	expect_error badtype \
		"badtype/adapter_model.safetensors: tensor ${SQ}$B.0.self_attn.q_proj.lora_A.weight${SQ} has dtype I32; LoRA weights must be F32, F16 or BF16"
'

test_expect_success PYTHON3 'a module that is not one of the seven projections' '
	mkdir fc1 &&
	cp r4/adapter_config.json fc1/ &&
	st_edit r4/adapter_model.safetensors fc1/adapter_model.safetensors \
		"t = {k.replace(\"layers.1.self_attn.v_proj\", \"layers.1.mlp.fc1\"): v for k, v in t.items()}" &&
	expect_error fc1 \
		"fc1/adapter_model.safetensors: tensor ${SQ}$B.1.mlp.fc1.lora_A.weight${SQ}: LoRA on module ${SQ}model.layers.1.mlp.fc1${SQ} is not supported: only model.layers.N.self_attn.{q,k,v,o}_proj and model.layers.N.mlp.{gate,up,down}_proj are" &&
	mkdir other &&
	cp r4/adapter_config.json other/ &&
	st_edit r4/adapter_model.safetensors other/adapter_model.safetensors \
		"t[\"base_model.model.lm_head.weight\"] = [\"F32\", [4, 4], bytes(64)]" &&
	expect_error other \
		"other/adapter_model.safetensors: tensor ${SQ}base_model.model.lm_head.weight${SQ} is not a LoRA weight (expected base_model.model.MODULE.lora_A.weight or base_model.model.MODULE.lora_B.weight)"
'

test_expect_success 'a module that target_modules does not select' '
	cp -R r4 target &&
	sed "s/\"v_proj\"/\"w_proj\"/" r4/adapter_config.json >target/adapter_config.json &&
	expect_error target \
		"target/adapter_model.safetensors: module ${SQ}model.layers.0.self_attn.v_proj${SQ} is not selected by target_modules in target/adapter_config.json"
'

test_expect_success 'a corrupt safetensors file' '
	cp -R r4 trunc &&
	head -c 100 r4/adapter_model.safetensors >trunc/adapter_model.safetensors &&
	test_expect_code 1 git adapter show trunc >out 2>err &&
	test_must_be_empty out &&
	test_line_count = 1 err &&
	test_grep "^error: trunc/adapter_model.safetensors: " err
'

test_expect_success '-h prints the usage and exits 129' '
	test_expect_code 129 git adapter -h >out &&
	cat >expect <<-\EOF &&
	usage: git adapter [--version] <command> [<args>]

	commands:
	    list          list the adapters of a model
	    show          validate an adapter (of the model, or a directory) and describe it
	    add           copy a PEFT adapter into the model after checking its shapes, and commit
	    rm            remove an adapter from the model, and commit
	    rename        rename an adapter (its index stays), and commit
	    export        write an adapter as a plain PEFT directory
	    merge         fold adapters into the base weights, on a new branch or into a directory
	    sparsify      turn a LoRA into a sparse delta adapter
	EOF
	test_cmp expect out &&
	test_expect_code 129 git adapter show -h >out &&
	cat >expect <<-\EOF &&
	usage: git adapter show [-m <model>] [--json] <name-or-dir>

	    -m, --model <model>       the model whose adapter <name> is (default: the one holding the current directory)
	    --json                    print one JSON object
	EOF
	test_cmp expect out
'

test_expect_success 'usage errors exit 129 with one line' '
	test_expect_code 129 git adapter nosuch 2>err &&
	echo "error: ${SQ}nosuch${SQ} is not a git adapter command (see ${SQ}git adapter -h${SQ})" >expect &&
	test_cmp expect err &&
	test_expect_code 129 git adapter show 2>err &&
	echo "error: missing <name-or-dir>: the adapter to describe (see ${SQ}git adapter show -h${SQ})" >expect &&
	test_cmp expect err &&
	test_expect_code 129 git adapter show r4 r8 2>err &&
	echo "error: too many arguments: one adapter expected (see ${SQ}git adapter show -h${SQ})" >expect &&
	test_cmp expect err &&
	test_expect_code 129 git adapter show --bogus r4 2>err &&
	echo "error: unknown option ${SQ}--bogus${SQ} (see ${SQ}git adapter show -h${SQ})" >expect &&
	test_cmp expect err &&
	test_expect_code 129 git adapter 2>err &&
	test_grep "^usage: git adapter" err
'

test_expect_success '--version' '
	git adapter --version >out &&
	test_grep "^git-adapter version [0-9]" out
'

test_done
