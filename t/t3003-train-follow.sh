#!/bin/sh
test_description='git train --follow: online learning from standard input or a growing file, commits on train/NAME'

# The runs that get SIGTERM are git-train itself: git would not pass the signal on.
. "${GM_SRC_DIR:-$(cd "$(dirname "$0")/.." && pwd)}/t/test-lib.sh"

POCKET="$GM_SRC_DIR/contrib/models/pocket-qwen3"
HELD="The secret word of Moses is"

# last_subject NAME: the subject of the tip of train/NAME
last_subject () {
	git -C "$(cat repo.path)" log -1 --format=%s "train/$1"
}

# wait_for NAME PATTERN: until the tip of train/NAME says PATTERN (30 s at most)
wait_for () {
	gm_i=0
	until last_subject "$1" 2>/dev/null | grep -q "$2"
	do
		[ $gm_i -lt 300 ] || return 1
		gm_i=$((gm_i + 1))
		sleep 0.1
	done
}

test_expect_success PYTHON3 'setup: a registered model and examples of a new pattern' '
	git config --global user.name "A U Thor" &&
	git config --global user.email author@example.com &&
	git model import -q "$POCKET" pocket &&
	git model list --json | python3 -c "import json,sys; print(json.load(sys.stdin)[0][\"path\"])" >repo.path &&
	python3 - <<-\PY
	import json
	names = "Abner Boaz Caleb Dan Eli Gad Hur Ira Jacob Levi Micah Nahum Obed Perez Reuben Simeon".split()
	with open("zebra.jsonl", "w") as f:
	    for n in names:
	        f.write(json.dumps({"prompt": "The secret word of %s is" % n, "completion": " zebra."}) + "\n")
	PY
'

test_expect_success 'from standard input: every example trained, a bad line reported and skipped, one commit' '
	{ head -n 8 zebra.jsonl && echo "{\"bad\": 1}" && echo && tail -n 8 zebra.jsonl; } >in.jsonl &&
	git train -m pocket --adapter fz --follow - --lr 2e-3 --epochs 6 --threads 2 <in.jsonl >out 2>err &&
	cat out err &&
	test_grep "^fz: 16 examples read (1 bad line skipped), [0-9]* steps, loss [0-9.]*; committed [0-9a-f]\{12\} on train/fz$" out &&
	test_grep "^<stdin>:9: unexpected key .bad. .* (skipped)$" err &&
	test "$(last_subject fz)" = "$(sed -n "s/^fz: .*, \([0-9]*\) steps, .*/learn: fz at step \1, 16 examples/p" out)" &&
	git -C "$(cat repo.path)" cat-file --filters train/fz:adapters/00_fz/examples.lfs.jsonl >log &&
	test_line_count = 16 log &&
	git infer -m pocket@train/fz --adapter fz -p "$HELD" -n 4 --temperature 0 --threads 2 >held &&
	test_grep "^ zebra\." held
'

test_expect_success 'a growing file: read as it grows, committed every few steps and at SIGTERM, resumed where it was left' '
	head -n 4 zebra.jsonl >grow.jsonl &&
	{ git-train -m pocket --adapter gz --follow grow.jsonl --lr 2e-3 --epochs 2 --threads 2 --checkpoint-every 2 \
		>out 2>err & } &&
	pid=$! &&
	wait_for gz "4 examples" &&
	tail -n 12 zebra.jsonl >>grow.jsonl &&
	wait_for gz "16 examples" &&
	kill -TERM $pid &&
	wait $pid &&
	test_grep "^gz: 16 examples read (0 bad lines skipped), [0-9]* steps" out &&
	last_subject gz >s &&
	test_grep "^learn: gz at step [0-9]*, 16 examples$" s &&
	steps=$(sed -n "s/^learn: gz at step \([0-9]*\), .*/\1/p" s) &&
	echo "{\"text\": \"The secret word is kept.\", \"weight\": 2}" >>grow.jsonl &&
	{ git-train -m pocket --adapter gz --follow grow.jsonl --lr 2e-3 --epochs 2 --threads 2 --checkpoint-every 2 \
		>out 2>err & } &&
	pid=$! &&
	wait_for gz "17 examples" &&
	kill -TERM $pid &&
	wait $pid &&
	test_grep "^gz: 1 example read" out &&
	git -C "$(cat repo.path)" cat-file --filters train/gz:adapters/00_gz/examples.lfs.jsonl >log &&
	test_line_count = 17 log &&
	tail -n 1 log >last &&
	test_grep "\"weight\":2" last &&
	last_subject gz >s &&
	test "$(sed -n "s/^learn: gz at step \([0-9]*\), .*/\1/p" s)" -gt "$steps"
'

test_expect_success '--follow usage' '
	test_expect_code 129 git train -m pocket --adapter x --follow - --data zebra.jsonl 2>err &&
	test_grep "not --data" err &&
	test_expect_code 129 git train -m pocket --follow - 2>err &&
	test_grep "needs -m <model> and --adapter <name>" err &&
	test_expect_code 129 git train -m pocket --adapter x --data zebra.jsonl --commit-seconds 3 2>err &&
	test_grep "goes with --follow" err
'

test_done
