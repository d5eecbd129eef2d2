#!/bin/sh
test_description='git train: LoRA fine-tuning of the pocket model, checkpoints, --resume, data errors, usage'
. "${GM_SRC_DIR:-$(cd "$(dirname "$0")/.." && pwd)}/t/test-lib.sh"

POCKET="$GM_SRC_DIR/contrib/models/pocket-qwen3"

# Lines of one pattern (a king, a city, a sum of gold): the training set has
# 300, the held-out set 24 others; a LoRA learns the pattern in a few dozen steps.
gen () {
	awk -v n="$1" -v k="$2" 'BEGIN {
		split("Jerusalem Babylon Nineveh Tyre Sidon Gaza Hebron Jericho", c, " ");
		split("Abner Boaz Caleb Dan Eli Gad Hur Ira", p, " ");
		for (i = 0; i < n; i++) {
			j = i * k;
			printf "{\"text\": \"In the %d year the king of %s gave %s %d talents of gold, and %s was glad.\"}\n",
				j % 40 + 1, c[j % 8 + 1], p[int(j / 8) % 8 + 1], (j * 7) % 90 + 10, p[int(j / 8) % 8 + 1]
		}
	}'
}

train () {
	git train -m "$POCKET" --adapter kings --rank 8 --alpha 16 --lr 1e-3 --threads 2 "$@"
}

test_expect_success 'setup: training and held-out data' '
	gen 300 1 >train.jsonl &&
	gen 24 13 >eval.jsonl &&
	test_line_count = 300 train.jsonl
'

test_expect_success 'train 24 steps with checkpoints: the held-out loss falls' '
	train --data train.jsonl --eval-data eval.jsonl --output out --steps 24 --checkpoint-every 8 \
		--trace trace.jsonl >stdout 2>stderr &&
	test_grep "^kings: 24 steps, loss [0-9.]*, eval loss [0-9.]*; adapter written to out$" stdout &&
	test_grep "^step 0: eval loss" stderr &&
	test_grep "^step 8: checkpoint out/checkpoint-8$" stderr &&
	test_path_is_file out/adapter_config.json &&
	test_path_is_file out/adapter_model.safetensors &&
	for s in 8 16 24; do
		test_path_is_file out/checkpoint-$s/adapter_model.safetensors &&
		test_path_is_file out/checkpoint-$s/optimizer.safetensors &&
		test_path_is_file out/checkpoint-$s/trainer_state.json || return 1
	done &&
	first=$(sed -n "s/^step 0: eval loss //p" stderr) &&
	last=$(sed -n "s/^step 24: eval loss //p" stderr) &&
	echo "eval loss $first -> $last" &&
	awk -v a="$first" -v b="$last" "BEGIN { exit !(b < 0.5 * a) }" &&
	test_line_count = 24 trace.jsonl &&
	test_grep "^{\"step\": 0, \"loss\": [0-9.]*, \"grad_norm\": [0-9.]*, \"lr\": 0.001, \"tokens\": [0-9]*, \"tokens_per_s\": " trace.jsonl
'

test_expect_success 'the adapter is PEFT-shaped and loads in git infer' '
	test_grep "\"peft_type\": \"LORA\"" out/adapter_config.json &&
	test_grep "\"r\": 8" out/adapter_config.json &&
	test_grep "\"lora_alpha\": 16" out/adapter_config.json &&
	test_grep "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight" out/adapter_model.safetensors &&
	git infer -m "$POCKET" --check --adapter out >check &&
	test_grep "r 8, alpha 16, 42 modules" check
'

test_expect_success 'the adapter changes the greedy continuation' '
	git infer -m "$POCKET" -p "In the 5 year the king of" -n 12 --temperature 0 --threads 2 >base &&
	git infer -m "$POCKET" -p "In the 5 year the king of" -n 12 --temperature 0 --threads 2 --adapter out >tuned &&
	! test_cmp base tuned
'

test_expect_success '--resume from a checkpoint ends bit for bit where the uninterrupted run ended' '
	train --data train.jsonl --output resumed --resume out/checkpoint-8 --threads 1 -q &&
	cmp out/adapter_model.safetensors resumed/adapter_model.safetensors &&
	train --data train.jsonl --output resumed2 --resume out -q 2>err &&
	test_must_be_empty err &&
	cmp out/adapter_model.safetensors resumed2/adapter_model.safetensors
'

test_expect_success '--resume refuses other settings and other data' '
	test_expect_code 1 train --data train.jsonl --output r3 --resume out/checkpoint-8 --lr 0.01 2>err &&
	test_grep "^error: --lr 0.01 differs from the checkpoint.s 0.001 in out/checkpoint-8" err &&
	head -n 200 train.jsonl >less.jsonl &&
	test_expect_code 1 train --data less.jsonl --output r3 --resume out/checkpoint-8 2>err &&
	test_grep "^error: less.jsonl is not the data out/checkpoint-8 was trained on" err
'

test_expect_success 'SIGTERM: the step ends, a checkpoint is written, exit 130; --resume finishes it bit for bit' '
	gen 40 1 >small.jsonl &&
	{
		git-train -m "$POCKET" --adapter int --data small.jsonl --output int --steps 600 --max-len 8 \
			--batch-size 1 --rank 2 --threads 1 -v 2>int.err &
	} &&
	pid=$! &&
	i=0 &&
	while ! grep -q "^step 3/600" int.err && test $i -lt 600; do sleep 0.1; i=$((i + 1)); done &&
	kill -TERM $pid &&
	{ wait $pid; echo $? >rc; } &&
	echo 130 >expect &&
	test_cmp expect rc &&
	test_grep "^interrupted after step [0-9]* of 600: continue with --resume int/checkpoint-[0-9]*$" int.err &&
	ls int >dirs &&
	test_line_count = 1 dirs &&
	test_grep "^checkpoint-[0-9]*$" dirs &&
	git-train -m "$POCKET" --adapter int --data small.jsonl --output int --resume int --threads 1 -q &&
	git-train -m "$POCKET" --adapter int --data small.jsonl --output straight --steps 600 --max-len 8 \
		--batch-size 1 --rank 2 --threads 1 -q &&
	cmp int/adapter_model.safetensors straight/adapter_model.safetensors
'

test_expect_success 'the same seed gives the same adapter; --init-adapter continues from one' '
	train --data train.jsonl --output again --steps 24 -q &&
	cmp out/adapter_model.safetensors again/adapter_model.safetensors &&
	git train -m "$POCKET" --adapter more --init-adapter out --data train.jsonl --output more --steps 2 \
		--lr 1e-4 --threads 2 -q &&
	test_grep "\"r\": 8" more/adapter_config.json &&
	! cmp out/adapter_model.safetensors more/adapter_model.safetensors &&
	test_expect_code 1 git train -m "$POCKET" --adapter more --init-adapter out --rank 4 --data train.jsonl \
		--output more2 2>err &&
	test_grep "come from the adapter given to --init-adapter" err
'

test_expect_success 'training that cannot fit in memory is refused before it starts, with the numbers' '
	test_expect_code 1 env GM_MEM_AVAILABLE=1000000 git train -m "$POCKET" --adapter big --data train.jsonl \
		--output big --steps 1 --threads 1 2>err &&
	test_grep "error: training sequences of up to [0-9]* tokens needs .* MiB of memory .* and 977 KiB is available" err &&
	test_path_is_missing big
'

test_expect_success 'every data form: messages, prompt/completion, token ids; --no-shuffle, accumulation' '
	cat >mixed.jsonl <<-\EOF &&
	{"messages": [{"role": "user", "content": "Who gave gold?"}, {"role": "assistant", "content": "The king of Tyre."}]}
	{"prompt": "The king of Gaza gave", "completion": " Boaz 12 talents."}
	{"input_ids": [40, 542, 258, 2233, 386], "loss_mask": [0, 0, 1, 1, 1]}
	{"text": "And Hur was glad."}
	EOF
	git train -m "$POCKET" --adapter mixed --data mixed.jsonl --output mixed --steps 3 --batch-size 2 \
		--grad-accum 2 --no-shuffle --targets q_proj,v_proj --rslora --schedule linear --warmup 1 \
		--weight-decay 0.01 --grad-clip 0.5 --max-len 64 --seed 3 --threads 1 -q &&
	test_grep "\"use_rslora\": true" mixed/adapter_config.json &&
	test_grep "\"q_proj\"" mixed/adapter_config.json &&
	! test_grep "down_proj" mixed/adapter_config.json
'

test_expect_success '--max-len truncates with a warning' '
	git train -m "$POCKET" --adapter short --data train.jsonl --output short --steps 1 --max-len 8 \
		--threads 2 2>err >stdout &&
	test_grep "^warning: 300 examples longer than --max-len 8 truncated$" err
'

test_expect_success 'a bad line stops the run before training, with file:line' '
	gen 5 1 >bad.jsonl &&
	echo "{\"text\": 42}" >>bad.jsonl &&
	test_expect_code 1 git train -m "$POCKET" --adapter bad --data bad.jsonl --output badout 2>err &&
	test_grep "^error: bad.jsonl:6: " err &&
	test_path_is_missing badout &&
	echo "{\"input_ids\": [1, 99999]}" >ids.jsonl &&
	test_expect_code 1 git train -m "$POCKET" --adapter bad --data ids.jsonl --output badout 2>err &&
	test_grep "^error: ids.jsonl:1: input_ids\[1\] = 99999 is outside the model.s vocabulary (4096 tokens)$" err &&
	echo "{\"input_ids\": [1, 2], \"loss_mask\": [1, 0]}" >nothing.jsonl &&
	test_expect_code 1 git train -m "$POCKET" --adapter bad --data nothing.jsonl --output badout 2>err &&
	test_grep "^error: nothing.jsonl:1: nothing to predict" err
'

test_expect_success 'bad flags are refused with exit 129' '
	test_expect_code 129 git train -m "$POCKET" --adapter x 2>err &&
	test_grep "^error: training needs -m <model>, --adapter <name> and --data <file>" err &&
	test_expect_code 1 git train -m "$POCKET" --adapter x --data train.jsonl 2>err &&
	test_grep "give --output <dir>" err &&
	test_expect_code 129 train --data train.jsonl --output o --schedule step 2>err &&
	test_grep "unknown schedule .step." err &&
	test_expect_code 129 train --data train.jsonl --output o --targets q_proj,lm_head 2>err &&
	test_grep "unknown LoRA target .lm_head." err &&
	test_expect_code 129 train --data train.jsonl --output o --steps 3 --epochs 1 2>err &&
	test_grep "exclusive" err &&
	test_expect_code 129 train --data train.jsonl --output o --rank 0 2>err &&
	test_expect_code 129 git train -m "$POCKET" --adapter "../x" --data train.jsonl --output o 2>err &&
	test_grep "adapter name .\.\./x. must not start with" err &&
	test_expect_code 129 train --data train.jsonl --output o --lr abc 2>err &&
	test_path_is_missing o
'

test_done
