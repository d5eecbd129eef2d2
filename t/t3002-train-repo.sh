#!/bin/sh
test_description='git train in a model repository: train/NAME, checkpoint commits and tags, the adapter committed'
. "${GM_SRC_DIR:-$(cd "$(dirname "$0")/.." && pwd)}/t/test-lib.sh"

POCKET="$GM_SRC_DIR/contrib/models/pocket-qwen3"
LORA_PY="$GM_SRC_DIR/t/lib-lora.py"

# train NAME ARGS...: a short deterministic run on the registered pocket model
train () {
	name=$1 &&
	shift &&
	git train -m pocket --adapter "$name" --data kings.jsonl --steps 6 --checkpoint-every 2 \
		--rank 4 --alpha 8 --lr 2e-3 --batch-size 2 --threads 2 "$@"
}

test_expect_success 'setup: a registered model and some data' '
	git config --global user.name "A U Thor" &&
	git config --global user.email author@example.com &&
	git model import -q "$POCKET" pocket &&
	REPO=$(git model list --json | python3 -c "import json,sys; print(json.load(sys.stdin)[0][\"path\"])") &&
	echo "$REPO" >repo.path &&
	git -C "$REPO" rev-parse HEAD >base.head &&
	for i in $(seq 1 24)
	do
		echo "{\"text\": \"In the $i year the king of Ur gave $i talents of gold.\"}" || return 1
	done >kings.jsonl
'

test_expect_success 'a run commits checkpoints on train/NAME, tags them, and commits the adapter' '
	REPO=$(cat repo.path) &&
	train kings >out 2>err &&
	test_grep "^step 2: checkpoint [0-9a-f]* on train/kings, tag kings-step-2$" err &&
	test_grep "^kings: 6 steps, loss [0-9.]*; committed [0-9a-f]\{12\} (adapters/00_kings), history on train/kings$" out &&
	git -C "$REPO" log --format=%s train/kings >log &&
	cat >expect <<-\EOF &&
	train: kings trained
	train: kings checkpoint at step 6
	train: kings checkpoint at step 4
	train: kings checkpoint at step 2
	Import pocket
	EOF
	test_cmp expect log &&
	git -C "$REPO" tag -l "kings-step-*" >tags &&
	printf "kings-step-2\nkings-step-4\nkings-step-6\n" >expect &&
	test_cmp expect tags &&
	git -C "$REPO" ls-tree -r --name-only kings-step-4 adapters >tree &&
	cat >expect <<-\EOF &&
	adapters/00_kings/adapter_config.json
	adapters/00_kings/adapter_model.safetensors
	adapters/00_kings/optimizer.safetensors
	adapters/00_kings/trainer_state.json
	adapters/00_kings/training_loss.jsonl
	EOF
	test_cmp expect tree &&
	git -C "$REPO" ls-tree -r --name-only train/kings adapters >tree &&
	cat >expect <<-\EOF &&
	adapters/00_kings/README.md
	adapters/00_kings/adapter_config.json
	adapters/00_kings/adapter_model.safetensors
	adapters/00_kings/git-model.json
	adapters/00_kings/training_loss.jsonl
	adapters/00_kings/training_loss.svg
	EOF
	test_cmp expect tree &&
	git -C "$REPO" rev-parse train/kings~4 >fork &&
	test_cmp base.head fork
'

test_expect_success 'the current branch gets the adapter, with the run in its message' '
	REPO=$(cat repo.path) &&
	git -C "$REPO" log -1 --format=%B >msg &&
	test_grep "^train: kings trained$" msg &&
	test_grep "^Step 6 of 6, loss [0-9.]*\.$" msg &&
	test_grep "^Base-revision: $(cat base.head)$" msg &&
	test_grep "^Data: kings.jsonl sha256:$(sha256sum kings.jsonl | cut -c1-64)$" msg &&
	test_grep "^Hyper-parameters: {\"adapter\":\"kings\",\"rank\":4,\"alpha\":8.0," msg &&
	git -C "$REPO" rev-parse HEAD^ >parent &&
	test_cmp base.head parent &&
	git -C "$REPO" status --porcelain >status &&
	test_must_be_empty status &&
	git -C "$REPO" show HEAD:adapters/00_kings/adapter_model.safetensors >ptr &&
	test_grep "^version https://git-lfs.github.com/spec/v1$" ptr &&
	git -C "$REPO" diff --quiet train/kings HEAD -- adapters &&
	git adapter list pocket >list &&
	test_grep "^00  *kings  *lora  *4  *8 .* $(cut -c1-12 base.head)  *trained$" list
'

test_expect_success PYTHON3 'the committed adapter is the one an --output run writes, and it changes the model' '
	REPO=$(cat repo.path) &&
	git train -m "$POCKET" --adapter kings --data kings.jsonl --steps 6 --checkpoint-every 2 \
		--rank 4 --alpha 8 --lr 2e-3 --batch-size 2 --threads 2 --output plain -q &&
	cmp plain/adapter_model.safetensors "$REPO/adapters/00_kings/adapter_model.safetensors" &&
	git infer -m pocket --prompt-ids 9,8,7,6 -n 0 --logits-out with.st --adapter kings >out &&
	git infer -m pocket --prompt-ids 9,8,7,6 -n 0 --logits-out without.st >out &&
	! python3 "$LORA_PY" same with.st without.st 1e-3
'

test_expect_success 'an interrupted run resumes from train/NAME and ends bit for bit the same' '
	REPO=$(cat repo.path) &&
	train again >out 2>err &&
	cp "$REPO/adapters/01_again/adapter_model.safetensors" whole.safetensors &&
	# what a run stopped after step 4 leaves: the branch at its checkpoint, no adapter here
	git -C "$REPO" reset -q --hard HEAD^ &&
	git -C "$REPO" branch -f train/again again-step-4 &&
	git -C "$REPO" tag -d again-step-6 >/dev/null &&
	train again --resume train/again >out 2>err &&
	test_grep "(resumed)" err &&
	test_grep "^step 6: checkpoint .* tag again-step-6$" err &&
	cmp whole.safetensors "$REPO/adapters/01_again/adapter_model.safetensors" &&
	git -C "$REPO" log --format=%s -3 train/again >log &&
	printf "train: again trained\ntrain: again checkpoint at step 6\ntrain: again checkpoint at step 4\n" >expect &&
	test_cmp expect log
'

test_expect_success 'refusals: a finished or missing run, a taken name, a past revision, no repository' '
	test_expect_code 1 train again --resume train/again 2>err &&
	test_grep "is not a checkpoint: that run is finished" err &&
	test_expect_code 1 train nosuch --resume train/nosuch 2>err &&
	test_grep "there is no branch train/nosuch to resume" err &&
	test_expect_code 1 train kings 2>err &&
	test_grep "branch train/kings exists already" err &&
	test_expect_code 1 train other --resume somewhere 2>err &&
	test_grep "takes the run.s branch, train/other" err &&
	test_expect_code 1 train x -m pocket@HEAD 2>err &&
	test_grep "is a past revision" err &&
	cp -R "$POCKET" loose &&
	test_expect_code 1 git train -m loose --adapter x --data kings.jsonl --steps 1 2>err &&
	test_grep "give --output <dir>" err &&
	test_expect_code 129 git train -m loose --adapter x --data kings.jsonl --no-commit 2>err &&
	test_grep "no-commit needs --output" err &&
	REPO=$(cat repo.path) &&
	git -C "$REPO" branch -D train/kings >/dev/null &&
	test_expect_code 1 train kings 2>err &&
	test_grep "has an adapter named .kings. already" err
'

test_done
