#!/bin/sh
test_description='git infer --serve --learn: examples in, the adapter learns while serving, one version per request, commits, kill -9'
. "${GM_SRC_DIR:-$(cd "$(dirname "$0")/.." && pwd)}/t/test-lib.sh"

POCKET="$GM_SRC_DIR/contrib/models/pocket-qwen3"

. "$GM_SRC_DIR/t/lib-serve.sh"

# The new pattern: "The secret word of NAME is" -> " zebra."; Moses is held out.
HELD="The secret word of Moses is"

# post PATH FILE [SERVER]: POST FILE, the body to out.json, the status printed
post () {
	curl -s -o out.json -w "%{http_code}" "$(cat "${3:-main}.url")$1" -H "Content-Type: application/json" \
		--data-binary "@$2"
}

# get PATH [SERVER]: GET, the body on stdout
get () {
	curl -s "$(cat "${2:-main}.url")$1"
}

# field NAME < JSON
field () {
	python3 -c 'import json, sys; v = json.load(sys.stdin)[sys.argv[1]]; print(json.dumps(v) if isinstance(v, (list, dict)) else v)' "$1"
}

# complete PROMPT [ADAPTER] [SERVER]: the greedy 8-token text, on one line
complete () {
	printf '{"model": "pocket%s", "prompt": "%s", "max_tokens": 8, "temperature": 0}' "${2:+:$2}" "$1" >req.json &&
	curl -s "$(cat "${3:-main}.url")/v1/completions" -H "Content-Type: application/json" --data-binary @req.json |
	python3 -c 'import json, sys; print(json.dumps(json.load(sys.stdin)["choices"][0]["text"]))'
}

# wait_trained [SERVER]: until no example is owed a pass (30 s at most)
wait_trained () {
	gm_i=0
	while [ "$(get /v1/adapters/zebra "${1:-main}" | field pending)" != 0 ]
	do
		[ $gm_i -lt 300 ] || return 1
		gm_i=$((gm_i + 1))
		sleep 0.1
	done
}

learn_server () {
	start_server main -m pocket --threads 2 --parallel 4 --learn zebra --learn-lr 2e-3 --learn-epochs 6 "$@"
}

test_expect_success PYTHON3 'setup: a registered model, examples of a new pattern, base answers' '
	git config --global user.name "A U Thor" &&
	git config --global user.email author@example.com &&
	git model import -q "$POCKET" pocket &&
	REPO=$(git model list --json | python3 -c "import json,sys; print(json.load(sys.stdin)[0][\"path\"])") &&
	echo "$REPO" >repo.path &&
	python3 - <<-\PY &&
	import json
	names = "Abner Boaz Caleb Dan Eli Gad Hur Ira Jacob Levi Micah Nahum Obed Perez Reuben Simeon".split()
	ex = [{"prompt": "The secret word of %s is" % n, "completion": " zebra."} for n in names]
	json.dump({"examples": ex}, open("zebra.json", "w"))
	with open("zebra.jsonl", "w") as f:
	    for e in ex:
	        f.write(json.dumps(e) + "\n")
	PY
	for p in "$HELD" "In the beginning God" "And the LORD said unto"
	do
		git infer -m pocket -p "$p" -n 8 --temperature 0 --threads 2 | python3 -c "import json,sys; print(json.dumps(sys.stdin.read()))" || return 1
	done >base.txt &&
	test_line_count = 3 base.txt
'

test_expect_success PYTHON3 'start: the learning adapter serves at once, version 1, nothing learned yet' '
	pocket_lora kjv 1 &&
	learn_server --adapter kjv=kjv --learn-commit-steps 1 &&
	test_grep "learning .zebra.: POST /v1/adapters/zebra/examples" main.log &&
	get /v1/adapters/zebra >a.json &&
	test "$(field version <a.json)" = 1 &&
	test "$(field steps <a.json)" = 0 &&
	test "$(field learning <a.json)" = True &&
	test "$(field branch <a.json)" = train/zebra &&
	get /v1/adapters >list.json &&
	python3 -c "import json; d = json.load(open(\"list.json\"))[\"data\"]; assert [a[\"id\"] for a in d] == [\"kjv\", \"zebra\"], d; assert not d[0][\"learning\"]" &&
	complete "$HELD" zebra >got &&
	head -n 1 base.txt >expect &&
	test_cmp expect got
'

test_expect_success PYTHON3 'examples are validated: each error names the example' '
	printf "{\"text\": \"All is well.\"}\n{\"prompt\": 3, \"completion\": \"x\"}\n" >bad.jsonl &&
	test "$(post /v1/adapters/zebra/examples bad.jsonl)" = 400 &&
	test_grep "body:2: .prompt. must be a string" out.json &&
	echo "{\"examples\": [{\"text\": \"All is well.\"}, {\"text\": \"a\", \"weight\": -1}]}" >bad.json &&
	test "$(post /v1/adapters/zebra/examples bad.json)" = 400 &&
	test_grep "examples\[1\]: .weight. must be in (0, 100\], not -1" out.json &&
	echo "{\"examples\": [{\"text\": \"All is well.\"}, {\"txt\": \"a\"}]}" >bad.json &&
	test "$(post /v1/adapters/zebra/examples bad.json)" = 400 &&
	test_grep "examples\[1\]: unexpected key .txt." out.json &&
	echo "{\"examples\": []}" >bad.json &&
	test "$(post /v1/adapters/zebra/examples bad.json)" = 400 &&
	test_grep "no examples" out.json &&
	test "$(post /v1/adapters/nope/examples zebra.json)" = 404 &&
	test "$(post /v1/adapters/kjv/examples zebra.json)" = 409 &&
	test_grep "adapter_not_learning" out.json &&
	test "$(get /v1/adapters/zebra | field examples_seen)" = 0
'

test_expect_success PYTHON3 'learning is real, and every request sees one version from its first token to its last' '
	cat >race.py <<-\PY &&
	# Posts the examples, and meanwhile greedy completions of the held-out prompt, 4 at a time, half
	# of them streamed, until the trainer is done: each answer with the version its
	# X-Adapter-Version header names.
	import json, sys, threading, time, urllib.request
	url, held = open("main.url").read().strip(), sys.argv[1]
	out, lock = [], threading.Lock()
	def complete(stream):
	    body = {"model": "pocket:zebra", "prompt": held, "max_tokens": 8, "temperature": 0, "stream": stream}
	    r = urllib.request.urlopen(urllib.request.Request(url + "/v1/completions", json.dumps(body).encode(),
	                                                      {"Content-Type": "application/json"}))
	    version = r.headers["X-Adapter-Version"]
	    if stream:
	        text = ""
	        for line in r.read().decode().splitlines():
	            if line.startswith("data: {"):
	                text += json.loads(line[6:])["choices"][0]["text"]
	    else:
	        text = json.load(r)["choices"][0]["text"]
	    with lock:
	        out.append((version, text))
	done = threading.Event()
	def worker(k):
	    i = 0
	    while not done.is_set() or i < 3:
	        complete((k + i) % 2 == 1)
	        i += 1
	        time.sleep(0.1)
	threads = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
	for t in threads:
	    t.start()
	time.sleep(0.1)
	urllib.request.urlopen(urllib.request.Request(url + "/v1/adapters/zebra/examples", open("zebra.json", "rb").read(),
	                                              {"Content-Type": "application/json"})).read()
	while json.load(urllib.request.urlopen(url + "/v1/adapters/zebra"))["pending"]:
	    time.sleep(0.1)
	done.set()
	for t in threads:
	    t.join()
	for v, t in out:
	    assert v.startswith("zebra="), v
	    print(v[6:], json.dumps(t))
	PY
	python3 race.py "$HELD" >answers &&
	test $(wc -l <answers) -ge 12 &&
	wait_trained &&
	get /v1/adapters/zebra >a.json &&
	steps=$(field steps <a.json) &&
	test "$steps" -ge 20 &&
	test "$(field version <a.json)" = $((steps + 1)) &&
	test "$(field examples_seen <a.json)" = 16 &&
	echo "loss: $(field recent_loss <a.json)" &&
	python3 -c "import json; l = json.load(open(\"a.json\"))[\"recent_loss\"]; assert l[-1] < 0.5 * l[0], l" &&
	complete "$HELD" zebra >held &&
	cat held &&
	test_grep "^\" zebra\\." held &&
	# unrelated prompts stay close: the greedy tokens of the base stay among the 5 likeliest of the adapter
	python3 "$GM_SRC_DIR/t/serve/learn-close.py" "$(cat main.url)" zebra "In the beginning God" \
		"And the LORD said unto" "Blessed is the man" "Now the serpent was" >close &&
	cat close &&
	awk "\$1 < 6 { bad = 1 } END { exit bad }" close &&
	complete "$HELD" >base-now &&
	head -n 1 base.txt >expect &&
	test_cmp expect base-now &&
	cut -d" " -f1 answers | sort -n | uniq >versions &&
	echo "$(wc -l <answers) answers from versions $(tr "\n" " " <versions)" &&
	test $(wc -l <versions) -ge 3 &&
	# one text per version (greedy: what a version says is fixed) ...
	sort -n answers | uniq >pairs &&
	cut -d" " -f1 pairs >pair-versions &&
	test_cmp versions pair-versions &&
	# ... and it is exactly what that version says alone: version 1 the base, version v the
	# state committed at step v - 1 (a commit a step); the first, the last and three between
	awk -v n=$(wc -l <pairs) "NR == 1 || NR == n || NR % int(n / 4 + 1) == 0" pairs >checked &&
	while read -r v text
	do
		if test "$v" = 1
		then
			head -n 1 base.txt >expect
		else
			git infer -m "pocket@zebra-step-$((v - 1))" --adapter zebra -p "$HELD" -n 8 --temperature 0 \
				--threads 2 | python3 -c "import json,sys; print(json.dumps(sys.stdin.read()))" >expect
		fi &&
		echo "$text" >got &&
		test_cmp expect got || return 1
	done <checked
'

test_expect_success 'each step was committed on train/zebra, with the examples log under LFS' '
	REPO=$(cat repo.path) &&
	steps=$(get /v1/adapters/zebra | field steps) &&
	git -C "$REPO" log -1 --format=%B train/zebra >msg &&
	test_grep "^learn: zebra at step $steps, 16 examples$" msg &&
	sha=$(sed -n "s/^examples.lfs.jsonl: 16 examples, sha256 \([0-9a-f]*\)$/\1/p" msg) &&
	test -n "$sha" &&
	git -C "$REPO" cat-file -p train/zebra:adapters/00_zebra/examples.lfs.jsonl >pointer &&
	test_grep "^oid sha256:$sha$" pointer &&
	git -C "$REPO" ls-tree -r --name-only train/zebra adapters >tree &&
	cat >expect <<-\EOF &&
	adapters/00_zebra/adapter_config.json
	adapters/00_zebra/adapter_model.safetensors
	adapters/00_zebra/examples.lfs.jsonl
	adapters/00_zebra/optimizer.safetensors
	adapters/00_zebra/trainer_state.json
	EOF
	test_cmp expect tree &&
	git -C "$REPO" cat-file --filters train/zebra:adapters/00_zebra/examples.lfs.jsonl >log &&
	test_line_count = 16 log &&
	python3 -c "import json; assert [json.loads(l) for l in open(\"zebra.jsonl\")] == [json.loads(l) for l in open(\"log\")]" &&
	test_grep "^\*\.lfs\.\* filter=lfs" "$REPO/.gitattributes"
'

test_expect_success PYTHON3 'kill -9: the server resumes from the last commit, losing only the window after it' '
	stop_server main &&
	REPO=$(cat repo.path) &&
	steps=$(git -C "$REPO" log -1 --format=%s train/zebra | sed -n "s/^learn: zebra at step \([0-9]*\), .*/\1/p") &&
	learn_server --learn-commit-steps 0 --learn-commit-seconds 0 &&
	get /v1/adapters/zebra >a.json &&
	test "$(field steps <a.json)" = "$steps" &&
	test "$(field version <a.json)" = $((steps + 1)) &&
	test "$(field examples_logged <a.json)" = 16 &&
	complete "$HELD" zebra >held &&
	test_grep "^\" zebra\\." held &&
	echo "{\"examples\": [{\"text\": \"Lost after the kill.\", \"weight\": 2}]}" >more.json &&
	test "$(post /v1/adapters/zebra/examples more.json)" = 200 &&
	wait_trained &&
	test "$(get /v1/adapters/zebra | field steps)" -gt "$steps" &&
	kill -KILL "$(cat main.pid)" &&
	{ wait "$(cat main.pid)" 2>/dev/null || :; } &&
	rm -f main.pid &&
	learn_server --learn-commit-steps 0 --learn-commit-seconds 0 &&
	get /v1/adapters/zebra >a.json &&
	test "$(field steps <a.json)" = "$steps" &&
	test "$(field examples_logged <a.json)" = 16 &&
	test "$(post /v1/adapters/zebra/examples more.json)" = 200 &&
	wait_trained &&
	stop_server main &&
	git -C "$REPO" log -1 --format=%s train/zebra >msg &&
	test_grep "^learn: zebra at step [0-9]*, 17 examples$" msg &&
	test "$(sed -n "s/^learn: zebra at step \([0-9]*\), .*/\1/p" msg)" -gt "$steps" &&
	git -C "$REPO" cat-file --filters train/zebra:adapters/00_zebra/examples.lfs.jsonl >log &&
	test_line_count = 17 log &&
	tail -n 1 log >last &&
	test_grep "\"weight\":2" last
'

test_expect_success PYTHON3 '--learn-sparse: the versions are sparse deltas that still learn' '
	start_server main -m pocket --threads 2 --learn sz --learn-sparse 0.05 --learn-lr 3e-3 --learn-epochs 6 \
		--learn-commit-steps 0 --learn-commit-seconds 0 &&
	get /v1/adapters/sz >a.json &&
	test "$(field kind <a.json)" = sparse &&
	test "$(post /v1/adapters/sz/examples zebra.json)" = 200 &&
	gm_i=0 &&
	while [ "$(get /v1/adapters/sz | field pending)" != 0 ]
	do
		[ $gm_i -lt 300 ] || return 1
		gm_i=$((gm_i + 1))
		sleep 0.1
	done &&
	get /v1/adapters/sz >a.json &&
	test "$(field kind <a.json)" = sparse &&
	test "$(field sparse_density <a.json)" = 0.05 &&
	complete "$HELD" sz >held &&
	cat held &&
	test_grep "^\" zebra" held &&
	stop_server main &&
	REPO=$(cat repo.path) &&
	git -C "$REPO" log -1 --format=%s train/sz >msg &&
	test_grep "^learn: sz at step [0-9]*, 16 examples$" msg
'

test_expect_success '--learn goes with --serve, its options with --learn' '
	test_expect_code 129 git infer -m pocket --learn x -p hi 2>err &&
	test_grep "go with --serve" err &&
	test_expect_code 129 git infer -m pocket --serve 0 --learn-lr 1 2>err &&
	test_grep "go with --learn NAME" err
'

test_done
