#!/bin/sh
test_description='git infer --adapter: PEFT LoRA adapters at run time, against the peft golden logits'
. "${GM_SRC_DIR:-$(cd "$(dirname "$0")/.." && pwd)}/t/test-lib.sh"

F32="$TEST_FIXTURES/models/tiny-qwen3-f32"
GOLDEN="$TEST_FIXTURES/golden/lora-tiny-qwen3-f32-infer.safetensors"
A1="$TEST_FIXTURES/lora/tiny-qwen3-f32-a1-r8-all"
A2="$TEST_FIXTURES/lora/tiny-qwen3-f32-a2-r4-qv"
A3="$TEST_FIXTURES/lora/tiny-qwen3-f32-a3-r6-rslora-mlp"
LORA_PY="$GM_SRC_DIR/t/lib-lora.py"

# The golden logits are read with python3 (t/lib-lora.py; no numpy needed).
test_expect_success PYTHON3 'setup: the golden reader' '
	for i in 0 1 2
	do
		python3 "$LORA_PY" ids "$GOLDEN" $i >ids.$i || return 1
	done &&
	test_line_count = 1 ids.2
'

# logits_test TAG ARGS...: every prompt's logits with ARGS against TAG in the golden file.
logits_test () {
	tag=$1 &&
	shift &&
	for i in 0 1 2
	do
		git infer -m "$F32" --prompt-ids "$(cat ids.$i)" -n 0 --logits-out logits.safetensors "$@" >out &&
		test_must_be_empty out &&
		python3 "$LORA_PY" logits "$GOLDEN" "$tag" $i logits.safetensors || return 1
	done
}

test_expect_success PYTHON3 'no adapter: the golden "none" logits' '
	logits_test none
'

test_expect_success PYTHON3 '--adapter DIR: a1 (all projections), a2 (q, v), a3 (rsLoRA, MLP)' '
	logits_test a1 --adapter "$A1" &&
	logits_test a2 --adapter "$A2" &&
	logits_test a3 --adapter "$A3"
'

test_expect_success PYTHON3 'two adapters stack: a1+a2' '
	logits_test a1+a2 --adapter "$A1" --adapter "$A2" &&
	logits_test a1+a2 --adapter "$A2" --adapter "$A1"
'

test_expect_success PYTHON3 'greedy ids with an adapter differ from the base model' '
	git infer -m "$F32" --prompt-ids "$(cat ids.1)" -n 16 --temperature 0 --print-ids >base &&
	git infer -m "$F32" --prompt-ids "$(cat ids.1)" -n 16 --temperature 0 --print-ids --adapter "$A1" >a1 &&
	tr , "\n" <a1 >lines &&
	test_line_count = 16 lines &&
	! test_cmp base a1 >/dev/null
'

test_expect_success PYTHON3 'adapters by name from <model>/adapters/NN_NAME' '
	cp -R "$F32" model &&
	mkdir model/adapters &&
	cp -R "$A1" model/adapters/01_alpha &&
	cp -R "$A2" model/adapters/02_qv &&
	git infer -m model --prompt-ids "$(cat ids.1)" -n 16 --temperature 0 --print-ids --adapter alpha >actual &&
	test_cmp a1 actual &&
	git infer -m model --prompt-ids "$(cat ids.1)" -n 16 --temperature 0 --print-ids --adapter 01_alpha >actual &&
	test_cmp a1 actual &&
	for i in 0 1 2
	do
		git infer -m model --prompt-ids "$(cat ids.$i)" -n 0 --logits-out logits.safetensors \
			--adapter alpha --adapter 02_qv &&
		python3 "$LORA_PY" logits "$GOLDEN" a1+a2 $i logits.safetensors || return 1
	done
'

test_expect_success PYTHON3 ':SCALE: 0 is the base model, 2 is the adapter twice, 1 the default' '
	git infer -m model --prompt-ids "$(cat ids.1)" -n 16 --temperature 0 --print-ids --adapter alpha:0 >actual &&
	test_cmp base actual &&
	git infer -m model --prompt-ids "$(cat ids.1)" -n 16 --temperature 0 --print-ids --adapter alpha:1.0 >actual &&
	test_cmp a1 actual &&
	git infer -m "$F32" --prompt-ids "$(cat ids.2)" -n 0 --logits-out twice.safetensors \
		--adapter "$A1" --adapter "$A1" &&
	git infer -m "$F32" --prompt-ids "$(cat ids.2)" -n 0 --logits-out scaled.safetensors --adapter "$A1:2" &&
	python3 "$LORA_PY" same scaled.safetensors twice.safetensors 1e-5 &&
	! python3 "$LORA_PY" same scaled.safetensors logits.safetensors 1e-2 >/dev/null
'

test_expect_success PYTHON3 'a path with a colon: the existing path first, then :SCALE' '
	cp -R "$A1" "my:lora" &&
	git infer -m "$F32" --prompt-ids "$(cat ids.1)" -n 16 --temperature 0 --print-ids --adapter "my:lora" >actual &&
	test_cmp a1 actual &&
	git infer -m "$F32" --prompt-ids "$(cat ids.1)" -n 16 --temperature 0 --print-ids --adapter "my:lora:0" \
		>actual &&
	test_cmp base actual
'

test_expect_success '-v describes the adapters' '
	git infer -v -m model --prompt-ids 1,2,3 -n 1 --adapter alpha:0.5 --adapter "$A3" >/dev/null 2>err &&
	test_grep "^adapter: model/adapters/01_alpha (scale 0.5): r 8, alpha 16, 21 modules, " err &&
	test_grep "^adapter: .*/tiny-qwen3-f32-a3-r6-rslora-mlp (scale 1): r 6, alpha 12, rslora, 9 modules, " err
'

test_expect_success '--check validates the adapters against the model' '
	git infer -m model --check --adapter alpha --adapter qv:-1.5 >out &&
	test_line_count = 3 out &&
	test_grep "^ok: adapter model/adapters/01_alpha (scale 1): r 8, alpha 16, 21 modules, 28.0K parameters$" out &&
	test_grep "^ok: adapter model/adapters/02_qv (scale -1.5): r 4, alpha 4, 6 modules, " out &&
	git infer -m model --check --json --adapter alpha >out &&
	test_grep "\"adapters\": \[ { \"path\": \"model/adapters/01_alpha\", \"scale\": 1.0, \"r\": 8," out
'

test_expect_success 'an unknown adapter: 1' '
	test_expect_code 1 git infer -m model --prompt-ids 1,2 --adapter nosuch >out 2>err &&
	test_must_be_empty out &&
	echo "error: unknown adapter '\''nosuch'\'': not a directory, nor an adapter in model/adapters (there: alpha, qv)" >expect &&
	test_cmp expect err &&
	test_expect_code 1 git infer -m model --check --adapter nosuch/dir:2 2>err &&
	test_grep "^error: unknown adapter '\''nosuch/dir'\''" err
'

test_expect_success 'an ambiguous name: 1' '
	cp -R "$A2" model/adapters/03_alpha &&
	test_when_finished "rm -rf model/adapters/03_alpha" &&
	test_expect_code 1 git infer -m model --prompt-ids 1,2 --adapter alpha 2>err &&
	test_grep "^error: adapter '\''alpha'\'' is ambiguous: model/adapters/0[13]_alpha and model/adapters/0[13]_alpha$" err
'

test_expect_success 'a bad scale: 129' '
	for spec in alpha:x alpha: alpha:nan alpha:inf alpha:1e99 "alpha: 1" :2
	do
		test_expect_code 129 git infer -m model --prompt-ids 1,2 --adapter "$spec" >out 2>err &&
		test_must_be_empty out &&
		test_line_count = 1 err &&
		test_grep "^error: option '\''--adapter'\'' expects " err || return 1
	done &&
	test_expect_code 129 git infer -m model --tokenize --adapter alpha </dev/null 2>err &&
	test_grep "^error: --adapter does not go with --tokenize" err
'

test_expect_success PYTHON3 'an adapter for another model: 1, naming it and the module' '
	python3 "$LORA_PY" wide wide &&
	test_expect_code 1 git infer -m "$F32" --prompt-ids 1,2 --adapter "$A1" --adapter wide >out 2>err &&
	test_must_be_empty out &&
	echo "error: adapter wide: model.layers.0.self_attn.q_proj: lora_A [4, 72] and lora_B [96, 4] do not fit the model'\''s weight [96, 64] (an adapter for another model?)" >expect &&
	test_cmp expect err &&
	test_expect_code 1 git infer -m "$F32" --check --adapter wide 2>err &&
	test_cmp expect err &&
	test_expect_code 1 git infer -m "$F32" --prompt-ids 1,2 --adapter "$F32" 2>err &&
	test_grep "^error: .*adapter_config.json is missing" err
'

test_done
