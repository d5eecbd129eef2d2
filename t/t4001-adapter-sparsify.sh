#!/bin/sh
test_description='git adapter sparsify: LoRA adapters to sparse CSR deltas, show and infer with them'
. "${GM_SRC_DIR:-$(cd "$(dirname "$0")/.." && pwd)}/t/test-lib.sh"

F32="$TEST_FIXTURES/models/tiny-qwen3-f32"
A1="$TEST_FIXTURES/lora/tiny-qwen3-f32-a1-r8-all"

test_expect_success 'sparsify at density 0.01' '
	git adapter sparsify --density 0.01 -o s01 "$A1" >out &&
	test_path_is_file s01/sparse_config.json &&
	test_path_is_file s01/adapter_model.safetensors &&
	test_path_is_missing s01/adapter_config.json &&
	test_grep "^wrote: *s01$" out &&
	test_grep "^modules: *21$" out &&
	test_grep "^density: *0.01$" out &&
	test_grep "^nnz: .*(1395)$" out &&
	test_grep "^norm kept: *0.33" out &&
	test_grep "^size: .*(33368 bytes; 6.034% of the dense delta, 28.43% of the LoRA)$" out &&
	test_grep "^dense delta: .*(552960 bytes, f32)$" out &&
	test_grep "^lora: " out
'

test_expect_success PYTHON3 'the config and the tensors' '
	python3 - s01 "$A1" <<-\PY
	import json, struct, sys
	d, src = sys.argv[1:3]
	c = json.load(open(d + "/sparse_config.json"))
	assert c["peft_type"] == "SPARSE_DELTA" and c["format"] == "csr", c
	assert c["density"] == 0.01 and c["nnz"] == 1395, c
	assert c["source"]["path"] == src and c["source"]["r"] == 8, c["source"]
	assert c["source"]["lora_alpha"] == 16 and c["source"]["scale"] == 2, c["source"]
	assert c["base_model_name_or_path"] == "tiny-qwen3-f32"
	assert 0.32 < c["norm_kept"] < 0.34, c["norm_kept"]
	m = c["modules"]
	assert len(m) == 21, len(m)
	q = m["model.layers.0.self_attn.q_proj"]
	assert q["shape"] == [96, 64] and q["nnz"] == 62, q
	f = open(d + "/adapter_model.safetensors", "rb")
	n = struct.unpack("<Q", f.read(8))[0]
	h = json.loads(f.read(n))
	p = "base_model.model.model.layers.0.self_attn.q_proj.delta."
	assert h[p + "row_offsets"]["dtype"] == "I64" and h[p + "row_offsets"]["shape"] == [97]
	assert h[p + "col_indices"]["dtype"] == "I32" and h[p + "col_indices"]["shape"] == [62]
	assert h[p + "values"]["dtype"] == "F32" and h[p + "values"]["shape"] == [62]
	assert len([k for k in h if k != "__metadata__"]) == 63
	PY
'

test_expect_success 'show describes a sparse adapter' '
	git adapter show s01 >out &&
	test_grep "^type: *sparse delta (SPARSE_DELTA, csr)$" out &&
	test_grep "^source: *.*tiny-qwen3-f32-a1-r8-all (rank 8, alpha 16, scaling 2)$" out &&
	test_grep "^density: *0.01$" out &&
	test_grep "^modules: *21$" out &&
	test_grep "^ *q_proj .*64 -> 96 *nnz 186 " out &&
	test_grep "^nnz: .*(1395)$" out &&
	test_grep "^norm kept: *0.33" out &&
	git adapter show --json s01 >out.json &&
	test_grep "\"nnz\": 1395" out.json &&
	test_grep "\"peft_type\": \"SPARSE_DELTA\"" out.json
'

test_expect_success 'infer applies a sparse adapter' '
	git infer -m "$F32" --check --adapter s01 >out &&
	test_grep "^ok: adapter .*s01 (scale 1): sparse delta, density 0.01, 21 modules" out &&
	git infer -m "$F32" --prompt-ids 1,17,400,3 -n 4 --adapter s01:0.5 >out &&
	test -s out
'

test_expect_success PYTHON3 'density 1 gives the LoRA logits' '
	git adapter sparsify --density 1 -o s1 "$A1" >out &&
	test_grep "^nnz: .*(138240)$" out &&
	test_grep "^norm kept: *1.000000" out &&
	git infer -m "$F32" --prompt-ids 1,17,400,3,999,42 -n 0 --logits-out lora.st --adapter "$A1" &&
	git infer -m "$F32" --prompt-ids 1,17,400,3,999,42 -n 0 --logits-out sparse.st --adapter s1 &&
	git infer -m "$F32" --prompt-ids 1,17,400,3,999,42 -n 0 --logits-out s01.st --adapter s01 &&
	python3 - lora.st sparse.st s01.st <<-\PY
	import array, json, struct, sys
	def logits(p):
	    f = open(p, "rb")
	    n = struct.unpack("<Q", f.read(8))[0]
	    t = json.loads(f.read(n))["logits"]
	    b, e = t["data_offsets"]
	    f.seek(8 + n + b)
	    a = array.array("f")
	    a.frombytes(f.read(e - b))
	    return a
	ref, got, lo = [logits(p) for p in sys.argv[1:4]]
	m = max(abs(x) for x in ref)
	e = max(abs(x - y) for x, y in zip(got, ref)) / m
	print("density 1: max |d| / max |ref| = %.3g" % e)
	assert e < 1e-5, e
	e = max(abs(x - y) for x, y in zip(lo, ref)) / m
	print("density 0.01: max |d| / max |ref| = %.3g" % e)
	assert e > 1e-3, e
	PY
'

test_expect_success 'stacks with a LoRA' '
	git infer -m "$F32" --prompt-ids 1,17,400 -n 2 --adapter s01 --adapter "$TEST_FIXTURES/lora/tiny-qwen3-f32-a2-r4-qv" >out &&
	test -s out
'

test_expect_success 'refusals' '
	test_expect_code 129 git adapter sparsify --density 0 -o x "$A1" 2>err &&
	test_grep "density 0 not in (0, 1]" err &&
	test_expect_code 129 git adapter sparsify --density 1.5 -o x "$A1" 2>err &&
	test_grep "density 1.5 not in (0, 1]" err &&
	test_expect_code 129 git adapter sparsify -o x "$A1" 2>err &&
	test_grep "missing --density" err &&
	test_expect_code 1 git adapter sparsify --density 0.1 "$A1" 2>err &&
	test_grep "not inside a model directory" err &&
	test_expect_code 129 git adapter sparsify --density 0.1 -o x 2>err &&
	test_grep "missing <name-or-dir>" err &&
	test_expect_code 129 git adapter sparsify --density 0.1 -o x --name y "$A1" 2>err &&
	test_grep "for adding the result to the model" err &&
	test_path_is_missing x &&
	test_must_fail git adapter sparsify --density 0.1 -o s01 "$A1" 2>err &&
	test_grep "s01 already exists" err &&
	test_must_fail git adapter sparsify --density 0.1 -o x nosuch 2>err &&
	test_grep "nosuch" err &&
	test_path_is_missing x &&
	test_must_fail git adapter sparsify --density 0.1 -o x s01 2>err &&
	test_path_is_missing x
'

test_expect_success PYTHON3 'a broken sparse adapter is refused by show and infer' '
	mkdir broken &&
	cp s01/sparse_config.json broken/ &&
	python3 - s01/adapter_model.safetensors broken/adapter_model.safetensors <<-\PY
	import json, struct, sys
	src, dst = sys.argv[1:3]
	f = open(src, "rb")
	n = struct.unpack("<Q", f.read(8))[0]
	hb = f.read(n)
	h = json.loads(hb)
	data = bytearray(f.read())
	t = h["base_model.model.model.layers.0.self_attn.q_proj.delta.col_indices"]
	b = t["data_offsets"][0]
	data[b:b + 4] = struct.pack("<i", 1000)
	open(dst, "wb").write(struct.pack("<Q", n) + hb + bytes(data))
	PY
	test_must_fail git adapter show broken 2>err &&
	test_grep "q_proj: column index 1000 of row .* out of range \[0, 64)" err &&
	test_must_fail git infer -m "$F32" --check --adapter broken 2>err &&
	test_grep "out of range" err
'

test_done
