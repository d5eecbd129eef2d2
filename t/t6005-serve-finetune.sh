#!/bin/sh
test_description='git infer --serve: the files and fine-tuning APIs (curl and the openai npm package), the result served without a restart, jobs that survive kill -9; loss plots and model cards'
. "${GM_SRC_DIR:-$(cd "$(dirname "$0")/.." && pwd)}/t/test-lib.sh"

POCKET="$GM_SRC_DIR/contrib/models/pocket-qwen3"
KEY=sk-test-ft-0123456789
MODEL=pocket
SQ="'"
# The openai package in a directory of this test's own (t6000 may be installing into its own at the same time).
NODE_DIR="$GM_BUILD_DIR/t/finetune-node"

. "$GM_SRC_DIR/t/lib-serve.sh"

# call METHOD PATH [CURL ARGS...]: the body to out.json, the status on stdout.
call () {
	gm_m=$1 gm_path=$2
	shift 2
	curl -s -o out.json -w '%{http_code}' -X "$gm_m" -H "Authorization: Bearer $KEY" "$@" "$(cat main.url)$gm_path"
}

# expect_error STATUS CODE METHOD PATH [CURL ARGS...]: an error in OpenAI's shape.
expect_error () {
	gm_want=$1 gm_code=$2
	shift 2
	gm_got=$(call "$@") || return 1
	echo "HTTP $gm_got: $(cat out.json)"
	test "$gm_got" = "$gm_want" &&
	grep -q '^{"error":{"message":"[^"][^"]*","type":"[a-z_]*","param":' out.json &&
	grep -q "\"code\":\"$gm_code\"}}\$" out.json
}

# js EXPR < FILE: EXPR of the JSON document j, with python3 (j is a dict).
js () {
	python3 -c 'import json, sys; j = json.load(sys.stdin); print(eval(sys.argv[1]))' "$1"
}

# upload FILE: POST /v1/files; the file object in out.json, its id on stdout.
upload () {
	test "$(call POST /v1/files -F purpose=fine-tune -F "file=@$1")" = 200 &&
	js 'j["id"]' <out.json
}

# wait_job ID STATUS [SECONDS]: polls the job until it has STATUS (fails on another final status).
wait_job () {
	gm_i=0
	while :
	do
		call GET "/v1/fine_tuning/jobs/$1" >/dev/null &&
		gm_st=$(js 'j["status"]' <out.json) || return 1
		test "$gm_st" = "$2" && return 0
		case "$gm_st" in
		succeeded|failed|cancelled)
			cat out.json
			return 1
		esac
		gm_i=$((gm_i + 1))
		if [ $gm_i -ge $((${3:-300} * 5)) ]
		then
			echo "timed out waiting for $2: $(cat out.json)"
			return 1
		fi
		sleep 0.2
	done
}

# wait_steps ID N: polls until the running job has taken N steps and committed a checkpoint.
wait_steps () {
	gm_i=0
	until call GET "/v1/fine_tuning/jobs/$1" >/dev/null &&
		test "$(js 'j["git_model"].get("steps", 0) >= '"$2"' and len(j["git_model"]["checkpoints"]) > 0' <out.json)" = True
	do
		gm_i=$((gm_i + 1))
		test "$(js 'j["status"]' <out.json)" = running || test $gm_i -lt 50 || { cat out.json; return 1; }
		[ $gm_i -lt 1500 ] || return 1
		sleep 0.2
	done
}

test_expect_success 'setup: a registered model, data with a pattern, the openai npm package' '
	git config --global user.name "A U Thor" &&
	git config --global user.email author@example.com &&
	git model import -q "$POCKET" $MODEL &&
	git model list --json | js "j[0][\"path\"]" >repo.path &&
	for i in $(seq 1 24)
	do
		echo "{\"prompt\": \"In the $i year the king\", \"completion\": \" of Ur gave $i talents of gold.\"}" || return 1
	done >kings.jsonl &&
	for i in 30 31 32 33
	do
		echo "{\"text\": \"In the $i year the king of Ur gave $i talents of gold.\"}" || return 1
	done >eval.jsonl &&
	if ! test -f "$NODE_DIR/node_modules/openai/package.json" && command -v npm >/dev/null
	then
		rm -rf "$NODE_DIR.tmp" &&
		mkdir -p "$NODE_DIR.tmp" &&
		echo "{\"private\": true}" >"$NODE_DIR.tmp/package.json" &&
		if (cd "$NODE_DIR.tmp" && timeout 120 npm install --no-audit --no-fund --loglevel=error openai@6) \
			>npm.log 2>&1
		then
			rm -rf "$NODE_DIR" && mv "$NODE_DIR.tmp" "$NODE_DIR"
		else
			cat npm.log
		fi
	fi &&
	if command -v node >/dev/null && test -f "$NODE_DIR/node_modules/openai/package.json"
	then
		ln -s "$NODE_DIR/node_modules" node_modules &&
		cp "$GM_SRC_DIR"/t/serve/lib.mjs "$GM_SRC_DIR"/t/serve/finetune.mjs . &&
		test_set_prereq OPENAI
	else
		echo "# the openai client case is skipped: npm could not install the openai package" >&5
	fi
'

test_expect_success 'start: the server, its jobs at full priority (the test machine is busy enough)' '
	GM_API_KEY=$KEY start_server main -m $MODEL --max-file-size 4096 --ft-nice 0 --ft-checkpoint-every 2 &&
	test "$(call GET /v1/files)" = 200 &&
	test "$(cat out.json)" = "{\"object\":\"list\",\"data\":[],\"has_more\":false}"
'

# ------------------------------------------------------------ files

test_expect_success 'POST /v1/files stores a checked file: its object, the list, the content as sent' '
	upload kings.jsonl >train.id &&
	js "(j[\"object\"], j[\"purpose\"], j[\"filename\"], j[\"bytes\"], j[\"status\"], j[\"git_model\"][\"examples\"])" <out.json >got &&
	echo "(${SQ}file${SQ}, ${SQ}fine-tune${SQ}, ${SQ}kings.jsonl${SQ}, $(wc -c <kings.jsonl), ${SQ}processed${SQ}, 24)" >expect &&
	test_cmp expect got &&
	upload eval.jsonl >eval.id &&
	test "$(call GET /v1/files)" = 200 &&
	js "[f[\"id\"] for f in j[\"data\"]]" <out.json >got &&
	echo "[${SQ}$(cat eval.id)${SQ}, ${SQ}$(cat train.id)${SQ}]" >expect &&
	test_cmp expect got &&
	test "$(call GET /v1/files/$(cat train.id))" = 200 &&
	test "$(js "j[\"filename\"]" <out.json)" = kings.jsonl &&
	test "$(call GET /v1/files/$(cat train.id)/content)" = 200 &&
	test_cmp kings.jsonl out.json &&
	ls "$HOME"/.local/share/git-model/ft/$MODEL-*/files/$(cat train.id).jsonl
'

test_expect_success 'a bad file is refused with FILE:LINE for each bad line, as git train --check-data says' '
	printf "{\"text\": \"fine\"}\n{\"bad\": 1}\nnot json\n" >bad.jsonl &&
	expect_error 400 invalid_file POST /v1/files -F purpose=fine-tune -F file=@bad.jsonl &&
	test_grep "bad.jsonl: 2 invalid lines: bad.jsonl:2: .*; bad.jsonl:3: " out.json &&
	test_must_fail git train --check-data bad.jsonl 2>err &&
	test_grep "^bad.jsonl:2: " err &&
	: >empty.jsonl &&
	expect_error 400 invalid_request POST /v1/files -F purpose=fine-tune -F file=@empty.jsonl &&
	expect_error 400 invalid_request POST /v1/files -F purpose=assistants -F file=@kings.jsonl &&
	test_grep "purpose" out.json &&
	expect_error 400 invalid_request POST /v1/files -F purpose=fine-tune &&
	expect_error 400 invalid_request POST /v1/files -H "Content-Type: application/json" -d "{}" &&
	test "$(call GET /v1/files)" = 200 &&
	test "$(js "len(j[\"data\"])" <out.json)" = 2
'

test_expect_success 'uploads are bounded (--max-file-size), the API needs the key, unknown ids are 404s' '
	for i in $(seq 1 80); do echo "{\"text\": \"a line of sixty-odd bytes to make the file large $i\"}"; done >big.jsonl &&
	expect_error 413 file_too_large POST /v1/files -F purpose=fine-tune -F file=@big.jsonl &&
	test_grep "max-file-size" out.json &&
	ls -A "$HOME"/.local/share/git-model/ft/$MODEL-*/files/ >left &&
	test_line_count = 4 left &&
	test "$(curl -s -o /dev/null -w "%{http_code}" "$(cat main.url)/v1/files")" = 401 &&
	test "$(curl -s -o /dev/null -w "%{http_code}" "$(cat main.url)/v1/fine_tuning/jobs")" = 401 &&
	expect_error 404 not_found GET /v1/files/file-000000000000000000000000 &&
	expect_error 404 not_found GET /v1/files/../../etc --path-as-is &&
	expect_error 404 not_found GET /v1/fine_tuning/jobs/ftjob-nope &&
	expect_error 405 method_not_allowed PUT /v1/files &&
	expect_error 404 not_found GET /v1/fine_tuning/nothing
'

# ------------------------------------------------------------ a job through curl

test_expect_success 'bad jobs are 400s that name the field' '
	expect_error 400 invalid_request POST /v1/fine_tuning/jobs -d "{\"model\":\"gpt-4o\",\"training_file\":\"$(cat train.id)\"}" &&
	test_grep "\"param\":\"model\"" out.json &&
	expect_error 400 invalid_file POST /v1/fine_tuning/jobs -d "{\"model\":\"$MODEL\",\"training_file\":\"file-000000000000000000000000\"}" &&
	test_grep "\"param\":\"training_file\"" out.json &&
	expect_error 400 invalid_request POST /v1/fine_tuning/jobs -d "{\"model\":\"$MODEL\",\"training_file\":\"$(cat train.id)\",\"hyperparameters\":{\"n_epochs\":\"many\"}}" &&
	test_grep "\"param\":\"n_epochs\"" out.json &&
	expect_error 400 invalid_request POST /v1/fine_tuning/jobs -d "{\"model\":\"$MODEL\",\"training_file\":\"$(cat train.id)\",\"git_model\":{\"rnak\":4}}" &&
	expect_error 400 invalid_request POST /v1/fine_tuning/jobs -d "{\"model\":\"$MODEL\",\"training_file\":\"$(cat train.id)\",\"suffix\":\"a/b\"}" &&
	expect_error 400 invalid_json POST /v1/fine_tuning/jobs -d "{" &&
	test "$(call GET /v1/fine_tuning/jobs)" = 200 &&
	test "$(js "len(j[\"data\"])" <out.json)" = 0
'

test_expect_success 'a job trains ft-SUFFIX in the background and succeeds; its model answers at once, no restart' '
	test "$(call POST /v1/completions -H "Content-Type: application/json" -d "{\"model\":\"$MODEL\",\"prompt\":\"In the 40 year the king\",\"max_tokens\":10,\"temperature\":0}")" = 200 &&
	js "j[\"choices\"][0][\"text\"]" <out.json >base.txt &&
	test "$(call POST /v1/fine_tuning/jobs -H "Content-Type: application/json" -d "{\"model\":\"$MODEL\",\"training_file\":\"$(cat train.id)\",\"validation_file\":\"$(cat eval.id)\",\"suffix\":\"kings\",\"seed\":3,\"hyperparameters\":{\"n_epochs\":2,\"batch_size\":2,\"learning_rate_multiplier\":10},\"git_model\":{\"rank\":4,\"alpha\":8}}")" = 200 &&
	js "j[\"id\"]" <out.json >job.id &&
	js "(j[\"object\"], j[\"model\"], j[\"suffix\"], j[\"seed\"], j[\"fine_tuned_model\"], j[\"hyperparameters\"][\"batch_size\"])" <out.json >got &&
	echo "(${SQ}fine_tuning.job${SQ}, ${SQ}$MODEL${SQ}, ${SQ}kings${SQ}, 3, None, 2)" >expect &&
	test_cmp expect got &&
	wait_job "$(cat job.id)" succeeded &&
	js "(j[\"fine_tuned_model\"], j[\"git_model\"][\"adapter\"], j[\"git_model\"][\"branch\"], j[\"git_model\"][\"steps\"], j[\"error\"])" <out.json >got &&
	echo "(${SQ}$MODEL:ft-kings${SQ}, ${SQ}ft-kings${SQ}, ${SQ}train/ft-kings${SQ}, 24, None)" >expect &&
	test_cmp expect got &&
	test "$(js "j[\"trained_tokens\"] > 0" <out.json)" = True &&
	test "$(call POST /v1/completions -H "Content-Type: application/json" -d "{\"model\":\"$MODEL:ft-kings\",\"prompt\":\"In the 40 year the king\",\"max_tokens\":10,\"temperature\":0}")" = 200 &&
	js "j[\"choices\"][0][\"text\"]" <out.json >ft.txt &&
	cat base.txt ft.txt &&
	test_grep "Ur gave [0-9]* talents" ft.txt &&
	! test_cmp base.txt ft.txt &&
	test "$(call GET /v1/models)" = 200 &&
	test_grep "\"id\":\"$MODEL:ft-kings\"" out.json
'

test_expect_success 'its events carry the loss of every step and the eval loss; its checkpoints are tags' '
	test "$(call GET "/v1/fine_tuning/jobs/$(cat job.id)/events?limit=100")" = 200 &&
	js "len([e for e in j[\"data\"] if \"train_loss\" in e[\"data\"]])" <out.json >n &&
	echo 24 >expect && test_cmp expect n &&
	test "$(js "[e[\"data\"][\"valid_loss\"] > 0 for e in j[\"data\"] if \"valid_loss\" in e[\"data\"]][-1]" <out.json)" = True &&
	test "$(js "j[\"has_more\"]" <out.json)" = False &&
	test "$(call GET "/v1/fine_tuning/jobs/$(cat job.id)/events?limit=3")" = 200 &&
	test "$(js "(len(j[\"data\"]), j[\"has_more\"])" <out.json)" = "(3, True)" &&
	js "j[\"data\"][-1][\"id\"]" <out.json >last &&
	test "$(call GET "/v1/fine_tuning/jobs/$(cat job.id)/events?limit=3&after=$(cat last)")" = 200 &&
	test "$(js "len(j[\"data\"])" <out.json)" = 3 &&
	test "$(call GET "/v1/fine_tuning/jobs/$(cat job.id)/checkpoints?limit=100")" = 200 &&
	js "[c[\"step_number\"] for c in j[\"data\"]]" <out.json >got &&
	echo "[24, 22, 20, 18, 16, 14, 12, 10, 8, 6, 4, 2]" >expect &&
	test_cmp expect got &&
	git -C "$(cat repo.path)" tag -l "ft-kings-step-*" >tags &&
	test_line_count = 12 tags &&
	expect_error 400 invalid_request POST "/v1/fine_tuning/jobs/$(cat job.id)/cancel"
'

test_expect_success 'the adapter is committed as git train commits it, with its loss curve and model card' '
	REPO=$(cat repo.path) &&
	git -C "$REPO" log -1 --format=%s >subject &&
	echo "train: ft-kings trained" >expect &&
	test_cmp expect subject &&
	git -C "$REPO" ls-tree -r --name-only HEAD adapters/ >tree &&
	cat >expect <<-\EOF &&
	adapters/00_ft-kings/README.md
	adapters/00_ft-kings/adapter_config.json
	adapters/00_ft-kings/adapter_model.safetensors
	adapters/00_ft-kings/git-model.json
	adapters/00_ft-kings/training_loss.jsonl
	adapters/00_ft-kings/training_loss.svg
	EOF
	test_cmp expect tree &&
	git -C "$REPO" status --porcelain >status &&
	test_must_be_empty status &&
	python3 - "$REPO/adapters/00_ft-kings" <<-\PY
	import json, sys, xml.etree.ElementTree as ET
	d = sys.argv[1]
	svg = ET.parse(d + "/training_loss.svg").getroot()
	assert svg.tag == "{http://www.w3.org/2000/svg}svg", svg.tag
	lines = svg.findall(".//{http://www.w3.org/2000/svg}polyline")
	assert len(lines) == 2, "a training and an eval curve"
	trace = [json.loads(l) for l in open(d + "/training_loss.jsonl")]
	assert [t["step"] for t in trace if "loss" in t] == list(range(1, 25))
	assert [t["step"] for t in trace if "eval_loss" in t][0] == 0
	text = open(d + "/README.md").read()
	assert text.startswith("---\n")
	front = text.split("---\n")[1]
	try:
	    import yaml
	    meta = yaml.safe_load(front)
	except ImportError:
	    meta = None
	if meta is not None:
	    assert meta["base_model"] == "pocket", meta
	    assert meta["library_name"] == "peft"
	    g = meta["git_model"]
	    assert g["adapter"] == "ft-kings"
	    assert len(g["datasets"][0]["sha256"]) == 64 and g["datasets"][0]["examples"] == 24
	    assert g["hyperparameters"]["rank"] == 4
	    assert g["results"]["steps"] == 24 and g["results"]["train_loss"] < 3
	else:
	    assert "library_name: \"peft\"" in front
	assert "![training and eval loss](training_loss.svg)" in text
	PY
'

test_expect_success 'git adapter show draws the curve; export keeps the card and the plot' '
	git adapter show -m $MODEL ft-kings >show &&
	test_grep "^loss: *[0-9.]* .* [0-9.]* (24 steps)$" show &&
	test_grep "^eval loss: *[0-9.]* .* (13 evaluations)$" show &&
	git adapter export -m $MODEL ft-kings exported &&
	ls exported >files &&
	cat >expect <<-\EOF &&
	README.md
	adapter_config.json
	adapter_model.safetensors
	training_loss.jsonl
	training_loss.svg
	EOF
	test_cmp expect files
'

test_expect_success 'a queued or running job can be cancelled' '
	test "$(call POST /v1/fine_tuning/jobs -H "Content-Type: application/json" -d "{\"model\":\"$MODEL\",\"training_file\":\"$(cat train.id)\",\"suffix\":\"stop\",\"hyperparameters\":{\"n_epochs\":50,\"batch_size\":1},\"git_model\":{\"rank\":2}}")" = 200 &&
	js "j[\"id\"]" <out.json >cancel.id &&
	wait_steps "$(cat cancel.id)" 2 &&
	test "$(call POST "/v1/fine_tuning/jobs/$(cat cancel.id)/cancel")" = 200 &&
	wait_job "$(cat cancel.id)" cancelled 60 &&
	test "$(js "j[\"fine_tuned_model\"]" <out.json)" = None
'

# ------------------------------------------------------------ the openai client

test_expect_success OPENAI 'client: files and fineTuning through the openai package, the model answering' '
	GM_SERVE_URL=$(cat main.url) GM_SERVE_KEY=$KEY GM_MODEL=$MODEL \
		node finetune.mjs kings.jsonl eval.jsonl client "In the 41 year the king" >client.out &&
	cat client.out &&
	test_grep "^fine_tuned_model=$MODEL:ft-client$" client.out &&
	test_grep "^answer=.*Ur gave [0-9]* talents" client.out
'

# ------------------------------------------------------------ restarts

# The resumed job is paced (GM_TRAIN_STEP_DELAY_MS, 240 steps of 0.1 s) until
# the last start: a kill or a stop then lands while it runs, however slowly
# this script polls on a busy machine (at full speed the job can end first).
test_expect_success 'kill -9 mid-job: git train dies with the server' '
	stop_server main &&
	GM_TRAIN_STEP_DELAY_MS=100 GM_API_KEY=$KEY start_server main -m $MODEL --ft-nice 0 --ft-checkpoint-every 2 &&
	test "$(call POST /v1/fine_tuning/jobs -H "Content-Type: application/json" -d "{\"model\":\"$MODEL\",\"training_file\":\"$(cat train.id)\",\"suffix\":\"resume\",\"hyperparameters\":{\"n_epochs\":10,\"batch_size\":1,\"learning_rate_multiplier\":5},\"git_model\":{\"rank\":4,\"alpha\":8}}")" = 200 &&
	js "j[\"id\"]" <out.json >resume.id &&
	wait_steps "$(cat resume.id)" 6 &&
	kill -KILL "$(cat main.pid)" &&
	{ wait "$(cat main.pid)" 2>/dev/null || :; } &&
	rm -f main.pid &&
	gm_i=0 &&
	while ps -eo args | grep -q "^[^ ]*git-train .*--adapter ft-resume"
	do
		[ $gm_i -lt 100 ] || { ps -eo pid,args | grep ft-resume; false; } || return 1
		gm_i=$((gm_i + 1))
		sleep 0.1
	done
'

test_expect_success 'a restart resumes the job from its last checkpoint; a graceful stop leaves it to the next start' '
	GM_TRAIN_STEP_DELAY_MS=100 GM_API_KEY=$KEY start_server main -m $MODEL --ft-nice 0 --ft-checkpoint-every 2 &&
	grep "serving .$MODEL. .* with adapters .$MODEL:ft-kings., .$MODEL:ft-client." main.log &&
	wait_steps "$(cat resume.id)" 20 &&
	stop_server main &&
	js "j[\"status\"]" <"$(ls "$HOME"/.local/share/git-model/ft/$MODEL-*/jobs/$(cat resume.id).json)" >st &&
	echo running >expect &&
	test_cmp expect st
'

test_expect_success 'the job completes after the second start: one loss curve across the restarts, the model served' '
	GM_API_KEY=$KEY start_server main -m $MODEL --ft-nice 0 --ft-checkpoint-every 2 &&
	wait_job "$(cat resume.id)" succeeded &&
	test "$(js "j[\"fine_tuned_model\"]" <out.json)" = "$MODEL:ft-resume" &&
	grep -c "Fine-tuning job resumed from its last checkpoint" \
		"$HOME"/.local/share/git-model/ft/$MODEL-*/jobs/$(cat resume.id).events.jsonl >n &&
	echo 2 >expect &&
	test_cmp expect n &&
	python3 - "$(cat repo.path)"/adapters/*_ft-resume <<-\PY &&
	import json, sys
	trace = [json.loads(l) for l in open(sys.argv[1] + "/training_loss.jsonl")]
	assert [t["step"] for t in trace if "loss" in t] == list(range(1, 241)), "one curve across the restarts"
	PY
	test "$(call POST /v1/completions -H "Content-Type: application/json" -d "{\"model\":\"$MODEL:ft-resume\",\"prompt\":\"In the 42 year the king\",\"max_tokens\":10,\"temperature\":0}")" = 200 &&
	test_grep "Ur gave [0-9]* talents" out.json &&
	stop_server main
'

test_expect_success '--no-fine-tuning turns the API off; the options go with --serve' '
	GM_API_KEY=$KEY start_server main -m $MODEL --no-fine-tuning &&
	expect_error 404 not_found GET /v1/files &&
	test_grep "no-fine-tuning" out.json &&
	stop_server main &&
	test_must_fail git infer -m $MODEL -p hi --ft-threads 1 2>err &&
	test_grep "go with --serve" err
'

test_done
