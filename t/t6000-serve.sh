#!/bin/sh
test_description='git infer --serve: the OpenAI-compatible server, driven by the openai npm package and curl'
. "${GM_SRC_DIR:-$(cd "$(dirname "$0")/.." && pwd)}/t/test-lib.sh"

POCKET="$TEST_MODELS/pocket-qwen3"
KEY=sk-test-0123456789
MODEL=pocket-qwen3
# The openai package is installed once into the build tree and reused.
NODE_DIR="$GM_BUILD_DIR/t/serve-node"

. "$GM_SRC_DIR/t/lib-serve.sh"

# call METHOD PATH [CURL ARGS...]: the body to out.json, the status on stdout.
call () {
	gm_m=$1 gm_path=$2
	shift 2
	curl -s -o out.json -w '%{http_code}' -X "$gm_m" -H "Authorization: Bearer $KEY" \
		-H 'Content-Type: application/json' "$@" "$(cat main.url)$gm_path"
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

# node_json EXPR < FILE: evaluates EXPR on the JSON document j.
node_json () {
	node -e 'const j = JSON.parse(require("fs").readFileSync(0, "utf8")); console.log(eval(process.argv[1]))' "$1"
}

# run_client SCRIPT [ARGS...]: one of t/serve/*.mjs against the main server.
run_client () {
	gm_script=$1
	shift
	GM_SERVE_URL=$(cat main.url) GM_SERVE_KEY=$KEY GM_MODEL=$MODEL node "$gm_script" "$@"
}

test_expect_success 'setup: the openai npm package (installed once in the build tree)' '
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
	if command -v node >/dev/null
	then
		test_set_prereq NODE
	fi &&
	if command -v node >/dev/null && test -f "$NODE_DIR/node_modules/openai/package.json"
	then
		ln -s "$NODE_DIR/node_modules" node_modules &&
		cp "$GM_SRC_DIR"/t/serve/*.mjs . &&
		test_set_prereq OPENAI
	else
		echo "# the openai client cases are skipped: npm could not install the openai package" \
			"(no npm, or the registry cannot be reached)" >&5
	fi
'

test_expect_success PYTHON3 'setup: a LoRA and a sparse adapter for the pocket model' '
	mkdir -p model/$MODEL/adapters &&
	for f in "$POCKET"/*
	do
		ln -s "$f" model/$MODEL/ || return 1
	done &&
	pocket_lora model/$MODEL/adapters/01_kjv 1 &&
	pocket_lora extra-lora 2 &&
	git adapter sparsify --density 0.05 -o sparse extra-lora &&
	test_set_prereq ADAPTERS
'

test_expect_success ADAPTERS 'the adapters change what the model says' '
	git infer -m model/$MODEL -p "And it came to pass" -n 24 --temperature 0 >base.txt &&
	git infer -m model/$MODEL -p "And it came to pass" -n 24 --temperature 0 --adapter kjv >kjv.txt &&
	git infer -m model/$MODEL -p "And it came to pass" -n 24 --temperature 0 --adapter sparse >sparse.txt &&
	! test_cmp base.txt kjv.txt &&
	! test_cmp base.txt sparse.txt
'

test_expect_success ADAPTERS 'start: the server answers /health, with the model adapters and --adapter NAME=DIR' '
	GM_API_KEY=$KEY start_server main -m model/$MODEL --adapter fortunes=sparse --parallel 2 --queue 4 &&
	test "$(curl -s -o health.json -w "%{http_code}" "$(cat main.url)/health")" = 200 &&
	printf "{\"status\":\"ok\"}" >expect &&
	test_cmp expect health.json &&
	grep "serving .pocket-qwen3. on http://127.0.0.1:[0-9]*/v1 with adapters .pocket-qwen3:kjv., .pocket-qwen3:fortunes. (API key required)" main.log
'

# ------------------------------------------------------------ the openai client

test_expect_success OPENAI,ADAPTERS 'client: the model list has the model and each adapter' '
	run_client models.mjs >ids &&
	printf "%s\n" $MODEL $MODEL:kjv $MODEL:fortunes >expect &&
	test_cmp expect ids
'

# The reference texts come from git infer itself, greedy; t2001 checks it against the golden continuations.
test_expect_success OPENAI,ADAPTERS 'client: a completion is the greedy continuation git infer prints, with exact usage' '
	git infer -m model/$MODEL -p "And it came to pass" -n 40 --temperature 0 >expect &&
	printf "%s" "$(cat expect)" >expect.txt &&
	run_client complete.mjs "{\"model\":\"$MODEL\",\"prompt\":\"And it came to pass\",\"max_tokens\":40,\"temperature\":0}" >got &&
	printf "%s" "$(cat got)" >got.txt &&
	test_cmp expect.txt got.txt &&
	printf "And it came to pass" | git infer -m model/$MODEL --tokenize >ids &&
	echo "{\"prompt_tokens\":$(node_json j.length <ids),\"completion_tokens\":40,\"total_tokens\":$(($(node_json j.length <ids) + 40))}" >expect &&
	node_json "JSON.stringify(j.usage)" <meta.json >usage &&
	test_cmp expect usage &&
	node_json "j.finish[0]" <meta.json >finish &&
	echo length >expect && test_cmp expect finish
'

test_expect_success OPENAI,ADAPTERS 'client: a completion from token ids matches --prompt-ids' '
	git infer -m model/$MODEL --prompt-ids 1,2,3 -n 12 --temperature 0 >expect &&
	run_client complete.mjs "{\"model\":\"$MODEL\",\"prompt\":[1,2,3],\"max_tokens\":12,\"temperature\":0}" >got &&
	test "$(cat expect)" = "$(cat got)"
'

test_expect_success OPENAI,ADAPTERS 'client: chat is the chat-template reply of git infer --chat, usage exact' '
	git infer -m model/$MODEL --chat -p "Who was Moses?" -n 30 --temperature 0 >expect &&
	git infer -m model/$MODEL --chat -p "Who was Moses?" -n 30 --temperature 0 --print-ids >ids.out &&
	run_client chat.mjs "{\"model\":\"$MODEL\",\"messages\":[{\"role\":\"user\",\"content\":\"Who was Moses?\"}],\"max_tokens\":30,\"temperature\":0}" >got &&
	test "$(cat expect)" = "$(cat got)" &&
	echo "[{\"role\":\"user\",\"content\":\"Who was Moses?\"}]" >msgs.json &&
	git infer -m model/$MODEL --render-chat msgs.json | git infer -m model/$MODEL --tokenize >prompt.ids &&
	n_prompt=$(node_json j.length <prompt.ids) &&
	n_out=$(tr , "\n" <ids.out | grep -c .) &&
	echo "{\"prompt_tokens\":$n_prompt,\"completion_tokens\":$n_out,\"total_tokens\":$((n_prompt + n_out))}" >expect &&
	node_json "JSON.stringify(j.usage)" <meta.json >usage &&
	test_cmp expect usage
'

test_expect_success OPENAI,ADAPTERS 'client: a streamed chat puts together the same reply, role first, usage last' '
	run_client stream.mjs "{\"model\":\"$MODEL\",\"messages\":[{\"role\":\"user\",\"content\":\"Who was Moses?\"}],\"max_tokens\":30,\"temperature\":0}" >got &&
	git infer -m model/$MODEL --chat -p "Who was Moses?" -n 30 --temperature 0 >expect &&
	test "$(cat expect)" = "$(cat got)" &&
	test "$(node_json "j.deltas > 5" <meta.json)" = true &&
	test "$(node_json "j.usage.completion_tokens" <meta.json)" = 30 &&
	test "$(node_json "j.finish[0]" <meta.json)" = length
'

test_expect_success OPENAI,ADAPTERS 'client: seeded sampling is reproducible and is what git infer --seed draws' '
	req="{\"model\":\"$MODEL\",\"prompt\":\"The LORD\",\"max_tokens\":30,\"temperature\":0.8,\"seed\":7}" &&
	run_client complete.mjs "$req" >one &&
	run_client complete.mjs "$req" >two &&
	test_cmp one two &&
	git infer -m model/$MODEL -p "The LORD" -n 30 --temperature 0.8 --seed 7 >expect &&
	test "$(cat expect)" = "$(cat one)" &&
	git infer -m model/$MODEL -p "The LORD" -n 30 --temperature 0.8 --seed 8 >expect8 &&
	! test_cmp expect expect8 &&
	run_client complete.mjs "{\"model\":\"$MODEL\",\"prompt\":\"The LORD\",\"max_tokens\":30,\"temperature\":0.8,\"seed\":7,\"n\":2}" >both &&
	{ cat expect && printf "\n--- 1\n" && cat expect8; } >expect.both &&
	test "$(cat expect.both)" = "$(cat both)" &&
	test "$(node_json "j.usage.completion_tokens" <meta.json)" = 60
'

test_expect_success OPENAI,ADAPTERS 'client: stop sequences end the text before them, finish_reason stop' '
	git infer -m model/$MODEL -p "And it came to pass" -n 40 --temperature 0 --stop "city" --stop "LORD" >expect &&
	run_client complete.mjs "{\"model\":\"$MODEL\",\"prompt\":\"And it came to pass\",\"max_tokens\":40,\"temperature\":0,\"stop\":[\"city\",\"LORD\"]}" >got &&
	test "$(cat expect)" = "$(cat got)" &&
	test "$(node_json "j.finish[0]" <meta.json)" = stop &&
	! grep city got &&
	run_client chat.mjs "{\"model\":\"$MODEL\",\"messages\":[{\"role\":\"user\",\"content\":\"Who was Moses?\"}],\"max_tokens\":30,\"temperature\":0,\"stop\":\"the\"}" >got &&
	git infer -m model/$MODEL --chat -p "Who was Moses?" -n 30 --temperature 0 --stop the >expect &&
	test "$(cat expect)" = "$(cat got)"
'

test_expect_success OPENAI,ADAPTERS 'client: adapters are chosen per request, by model name or list with scales' '
	p="And it came to pass" &&
	run_client complete.mjs "{\"model\":\"$MODEL:kjv\",\"prompt\":\"$p\",\"max_tokens\":24,\"temperature\":0}" >got.kjv &&
	test "$(cat kjv.txt)" = "$(cat got.kjv)" &&
	test "$(node_json j.usage.completion_tokens <meta.json)" = 24 &&
	run_client complete.mjs "{\"model\":\"$MODEL\",\"prompt\":\"$p\",\"max_tokens\":24,\"temperature\":0}" >got.base &&
	test "$(cat base.txt)" = "$(cat got.base)" &&
	run_client complete.mjs "{\"model\":\"$MODEL:fortunes\",\"prompt\":\"$p\",\"max_tokens\":24,\"temperature\":0}" >got.sparse &&
	test "$(cat sparse.txt)" = "$(cat got.sparse)" &&
	git infer -m model/$MODEL -p "$p" -n 24 --temperature 0 --adapter kjv:0.5 --adapter sparse:2 >expect &&
	run_client complete.mjs "{\"model\":\"$MODEL\",\"prompt\":\"$p\",\"max_tokens\":24,\"temperature\":0,\"adapters\":[{\"name\":\"kjv\",\"scale\":0.5},{\"name\":\"fortunes\",\"scale\":2}]}" >got &&
	test "$(cat expect)" = "$(cat got)"
'

test_expect_success OPENAI,ADAPTERS 'client: logprobs list the reply token by token, greedy picks the top one' '
	run_client chat.mjs "{\"model\":\"$MODEL\",\"messages\":[{\"role\":\"user\",\"content\":\"Who was Moses?\"}],\"max_tokens\":12,\"temperature\":0,\"logprobs\":true,\"top_logprobs\":3}" >got &&
	git infer -m model/$MODEL --chat -p "Who was Moses?" -n 12 --temperature 0 >expect &&
	test "$(cat expect)" = "$(cat got)"
'

test_expect_success OPENAI,ADAPTERS 'client: errors arrive as the client'"'"'s own error classes (404, 400, 401)' '
	run_client errors.mjs >out &&
	echo ok >expect &&
	test_cmp expect out
'

test_expect_success ADAPTERS,NODE 'logit_bias: banning the greedy first token gives the second most likely one' '
	first=$(git infer -m model/$MODEL -p "And it came to pass" -n 1 --temperature 0 --print-ids) &&
	req="\"model\":\"$MODEL\",\"prompt\":\"And it came to pass\",\"max_tokens\":1,\"temperature\":0,\"logprobs\":2" &&
	test "$(call POST /v1/completions -d "{$req}")" = 200 &&
	node_json "Object.keys(j.choices[0].logprobs.top_logprobs[0]).join(\"|\")" <out.json >top2 &&
	node_json "j.choices[0].logprobs.tokens[0]" <out.json >tok0 &&
	node_json "j.choices[0].logprobs.token_logprobs[0] === Object.values(j.choices[0].logprobs.top_logprobs[0])[0]" <out.json >same &&
	echo true >expect && test_cmp expect same &&
	test "$(cut -d"|" -f1 top2)" = "$(cat tok0)" &&
	test "$(call POST /v1/completions -d "{$req,\"logit_bias\":{\"$first\":-100}}")" = 200 &&
	node_json "j.choices[0].logprobs.tokens[0]" <out.json >biased &&
	test "$(cut -d"|" -f2 top2)" = "$(cat biased)"
'

test_expect_success ADAPTERS,NODE 'presence and frequency penalties change a repetitive greedy text, reproducibly' '
	req="\"model\":\"$MODEL\",\"prompt\":\"And it came to pass\",\"max_tokens\":40,\"temperature\":0" &&
	test "$(call POST /v1/completions -d "{$req}")" = 200 &&
	node_json "j.choices[0].text" <out.json >plain &&
	test "$(call POST /v1/completions -d "{$req,\"frequency_penalty\":1.5,\"presence_penalty\":0.5}")" = 200 &&
	node_json "j.choices[0].text" <out.json >penalized &&
	test "$(call POST /v1/completions -d "{$req,\"frequency_penalty\":1.5,\"presence_penalty\":0.5}")" = 200 &&
	node_json "j.choices[0].text" <out.json >again &&
	! test_cmp plain penalized &&
	test_cmp penalized again &&
	test "$(grep -o "the city" plain | wc -l)" -gt "$(grep -o "the city" penalized | wc -l)"
'

# ------------------------------------------------------------ curl: every error code

test_expect_success ADAPTERS 'curl: 401 without the key or with a wrong one; /health and /metrics need none' '
	test "$(curl -s -o out.json -w "%{http_code}" "$(cat main.url)/v1/models")" = 401 &&
	grep "\"code\":\"invalid_api_key\"" out.json &&
	test "$(curl -s -o out.json -w "%{http_code}" -H "Authorization: Bearer nope" "$(cat main.url)/v1/models")" = 401 &&
	test "$(curl -s -o /dev/null -w "%{http_code}" "$(cat main.url)/metrics")" = 200 &&
	test "$(call GET /v1/models)" = 200
'

test_expect_success ADAPTERS 'curl: 404 for an unknown model, adapter or endpoint; 405 for a wrong method' '
	expect_error 404 model_not_found POST /v1/completions -d "{\"model\":\"gpt-4\",\"prompt\":\"x\"}" &&
	expect_error 404 model_not_found POST /v1/completions -d "{\"model\":\"$MODEL:nope\",\"prompt\":\"x\"}" &&
	expect_error 404 adapter_not_found POST /v1/completions -d "{\"model\":\"$MODEL\",\"prompt\":\"x\",\"adapters\":[{\"name\":\"nope\"}]}" &&
	expect_error 404 model_not_found GET /v1/models/nope &&
	expect_error 404 not_found GET /v2/anything &&
	expect_error 405 method_not_allowed GET /v1/chat/completions
'

test_expect_success ADAPTERS 'curl: 400 for bad requests, naming the parameter' '
	M="\"model\":\"$MODEL\"" &&
	expect_error 400 invalid_json POST /v1/completions -d "{$M,\"prompt\":\"abc" &&
	expect_error 400 invalid_json POST /v1/completions -d "{$M,\"prompt\":\"abc\"} trailing" &&
	expect_error 400 invalid_json POST /v1/completions -d "[1,2]" &&
	expect_error 400 invalid_json POST /v1/completions &&
	expect_error 400 invalid_type POST /v1/completions -d "{$M,\"prompt\":\"a\",\"max_tokens\":NaN}" &&
	printf "{$M,\"prompt\":\"\\377\\376 invalid UTF-8\"}" >bad-utf8.json &&
	expect_error 400 invalid_json POST /v1/completions --data-binary @bad-utf8.json &&
	expect_error 400 invalid_value POST /v1/completions -d "{$M,\"prompt\":\"a\",\"max_tokens\":1e999}" &&
	expect_error 400 invalid_value POST /v1/completions -d "{$M,\"prompt\":\"a\",\"max_tokens\":123456789012345678901234567890}" &&
	expect_error 400 invalid_value POST /v1/completions -d "{$M,\"prompt\":\"a\",\"temperature\":1e308}" &&
	expect_error 400 invalid_type POST /v1/completions -d "{$M,\"prompt\":\"a\",\"seed\":1.5}" &&
	expect_error 400 invalid_type POST /v1/completions -d "{$M,\"prompt\":\"a\",\"max_tokens\":\"5\"}" &&
	grep "\"param\":\"max_tokens\"" out.json &&
	expect_error 400 invalid_type POST /v1/completions -d "{$M,\"prompt\":\"a\",\"stream\":\"yes\"}" &&
	expect_error 400 invalid_type POST /v1/completions -d "{$M,\"prompt\":\"a\",\"stop\":5}" &&
	expect_error 400 invalid_value POST /v1/completions -d "{$M,\"prompt\":\"a\",\"n\":0}" &&
	expect_error 400 invalid_type POST /v1/completions -d "{$M,\"prompt\":{}}" &&
	expect_error 400 invalid_value POST /v1/completions -d "{$M,\"prompt\":[99999999]}" &&
	expect_error 400 invalid_value POST /v1/completions -d "{$M,\"prompt\":\"\"}" &&
	expect_error 400 invalid_type POST /v1/completions -d "{\"model\":5,\"prompt\":\"a\"}" &&
	expect_error 400 missing_required_parameter POST /v1/completions -d "{\"prompt\":\"a\"}" &&
	expect_error 400 invalid_type POST /v1/chat/completions -d "{$M,\"messages\":\"hi\"}" &&
	expect_error 400 invalid_value POST /v1/chat/completions -d "{$M,\"messages\":[]}" &&
	grep "\"param\":\"messages\"" out.json &&
	expect_error 400 invalid_type POST /v1/chat/completions -d "{$M,\"messages\":[{\"role\":\"user\",\"content\":5}]}" &&
	expect_error 400 invalid_value POST /v1/chat/completions -d "{$M,\"messages\":[{\"role\":\"wizard\",\"content\":\"x\"}]}" &&
	expect_error 400 unsupported_parameter POST /v1/chat/completions -d "{$M,\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"image_url\"}]}]}" &&
	expect_error 400 invalid_value POST /v1/chat/completions -d "{$M,\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"tools\":[{\"type\":\"function\"}]}" &&
	grep "\"param\":\"tools\"" out.json &&
	expect_error 400 unsupported_parameter POST /v1/completions -d "{$M,\"prompt\":\"x\",\"tools\":[{\"type\":\"function\"}]}" &&
	expect_error 400 context_length_exceeded POST /v1/chat/completions -d "{$M,\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"max_tokens\":2048}" &&
	expect_error 400 invalid_value POST /v1/completions -d "{$M,\"prompt\":\"a\",\"logit_bias\":{\"99999\":1}}"
'

test_expect_success ADAPTERS 'curl: 413 for a 10 MB body, with or without Content-Length; the server is fine after' '
	head -c 10485760 /dev/zero | tr "\0" a >big &&
	expect_error 413 request_too_large POST /v1/completions --data-binary @big &&
	expect_error 413 request_too_large POST /v1/completions -H "Transfer-Encoding: chunked" --data-binary @big &&
	test "$(call POST /v1/completions -d "{\"model\":\"$MODEL\",\"prompt\":\"a\",\"max_tokens\":2}")" = 200
'

test_expect_success ADAPTERS 'curl: a client that disconnects mid-stream stops its generation' '
	curl -s "$(cat main.url)/metrics" >m0 &&
	n0=$(sed -n "s/^gitmodel_completion_tokens_total //p" m0) &&
	c0=$(sed -n "s/^gitmodel_requests_cancelled_total //p" m0) &&
	# the end-of-sequence tokens are banned: only the client can end this early
	test_expect_code 28 curl -sN -m 0.3 -o part -H "Authorization: Bearer $KEY" -d "{\"model\":\"$MODEL\",\"prompt\":\"And\",\"max_tokens\":2000,\"stream\":true,\"logit_bias\":{\"4091\":-100,\"4093\":-100}}" "$(cat main.url)/v1/completions" &&
	grep "^data: {" part &&
	! grep DONE part &&
	i=0 &&
	until curl -s "$(cat main.url)/metrics" >m1 && test "$(sed -n "s/^gitmodel_requests_cancelled_total //p" m1)" = $((c0 + 1))
	do
		i=$((i + 1)) && test $i -lt 50 && sleep 0.1 || return 1
	done &&
	n1=$(sed -n "s/^gitmodel_completion_tokens_total //p" m1) &&
	sleep 0.5 &&
	curl -s "$(cat main.url)/metrics" >m2 &&
	n2=$(sed -n "s/^gitmodel_completion_tokens_total //p" m2) &&
	echo "tokens generated for the abandoned stream: $((n1 - n0)) of 2000, then $((n2 - n1))" &&
	test $((n1 - n0)) -lt 2000 &&
	test $n2 = $n1 &&
	grep "gitmodel_requests_running 0" m2 &&
	test "$(call POST /v1/completions -d "{\"model\":\"$MODEL\",\"prompt\":\"a\",\"max_tokens\":2}")" = 200
'

test_expect_success ADAPTERS 'curl: a client that gives up waiting for a whole answer stops its generation too' '
	curl -s "$(cat main.url)/metrics" >m0 &&
	c0=$(sed -n "s/^gitmodel_requests_cancelled_total //p" m0) &&
	test_expect_code 28 curl -s -m 0.3 -o /dev/null -H "Authorization: Bearer $KEY" -d "{\"model\":\"$MODEL\",\"messages\":[{\"role\":\"user\",\"content\":\"Speak\"}],\"max_tokens\":2000,\"logit_bias\":{\"4091\":-100,\"4093\":-100}}" "$(cat main.url)/v1/chat/completions" &&
	i=0 &&
	until curl -s "$(cat main.url)/metrics" >m1 && test "$(sed -n "s/^gitmodel_requests_cancelled_total //p" m1)" = $((c0 + 1))
	do
		i=$((i + 1)) && test $i -lt 50 && sleep 0.1 || return 1
	done &&
	n1=$(sed -n "s/^gitmodel_completion_tokens_total //p" m1) &&
	sleep 0.3 &&
	curl -s "$(cat main.url)/metrics" >m2 &&
	test "$(sed -n "s/^gitmodel_completion_tokens_total //p" m2)" = $n1 &&
	grep "gitmodel_requests_running 0" m2
'

test_expect_success ADAPTERS '/metrics: Prometheus text with requests, tokens, latency histograms and the queue' '
	curl -s -D headers "$(cat main.url)/metrics" >metrics &&
	grep -i "^content-type: text/plain; version=0.0.4" headers &&
	grep "^# TYPE gitmodel_requests_total counter" metrics &&
	grep "^gitmodel_requests_total{endpoint=\"/v1/completions\",code=\"200\"} [1-9]" metrics &&
	grep "^gitmodel_requests_total{endpoint=\"/v1/completions\",code=\"400\"} [1-9]" metrics &&
	grep "^gitmodel_requests_total{endpoint=\"/v1/models\",code=\"401\"} [1-9]" metrics &&
	grep "^gitmodel_prompt_tokens_total [1-9]" metrics &&
	grep "^gitmodel_completion_tokens_total [1-9]" metrics &&
	grep "^# TYPE gitmodel_time_to_first_token_seconds histogram" metrics &&
	grep "^gitmodel_time_to_first_token_seconds_bucket{le=\"+Inf\"} [1-9]" metrics &&
	grep "^gitmodel_time_per_output_token_seconds_count [1-9]" metrics &&
	grep "^gitmodel_queue_depth 0" metrics
'

test_expect_success ADAPTERS,NODE 'load: 200 requests from 8 clients get the right answer or 429; memory stays flat' '
	git infer -m model/$MODEL -p "In the beginning" -n 32 --temperature 0 >expect &&
	printf "%s" "$(cat expect)" >expect.txt &&
	pid=$(cat main.pid) &&
	cat >client.sh <<-\EOF &&
	# client.sh ID: 25 requests one after another, each answer in r.ID.N and its status in codes.ID
	i=0
	while [ $i -lt 25 ]
	do
		curl -s -o "r.$1.$i" -w "%{http_code}\n" -H "Authorization: Bearer $KEY" \
			-d "{\"model\":\"$MODEL\",\"prompt\":\"In the beginning\",\"max_tokens\":32,\"temperature\":0}" \
			"$URL/v1/completions" >>"codes.$1"
		i=$((i + 1))
	done
	EOF
	cat >check.mjs <<-\EOF &&
	// check.mjs FILES...: each the right completion (text, usage) or a 429 queue_full error
	import { readFileSync } from "node:fs";
	const want = readFileSync("expect.txt", "utf8");
	let ok = 0, busy = 0;
	for (const f of process.argv.slice(2)) {
		const r = JSON.parse(readFileSync(f, "utf8"));
		if (r.error && r.error.code === "queue_full")
			busy++;
		else if (r.choices[0].text === want && r.usage.completion_tokens === 32 && r.choices[0].finish_reason === "length")
			ok++;
		else
			throw new Error(f + ": a wrong answer: " + JSON.stringify(r));
	}
	console.log(ok + " " + busy);
	EOF
	export KEY MODEL && URL=$(cat main.url) && export URL &&
	sh client.sh w &&
	rss0=$(sed -n "s/^VmRSS:[[:space:]]*\([0-9]*\) kB/\1/p" /proc/$pid/status) &&
	start=$(date +%s.%N) &&
	pids= &&
	for c in 1 2 3 4 5 6 7 8
	do
		sh client.sh $c 5>&- &
		pids="$pids $!"
	done &&
	wait $pids &&
	end=$(date +%s.%N) &&
	rss1=$(sed -n "s/^VmRSS:[[:space:]]*\([0-9]*\) kB/\1/p" /proc/$pid/status) &&
	cat codes.[1-8] >codes &&
	test_line_count = 200 codes &&
	n_ok=$(grep -c "^200$" codes || :) &&
	n_429=$(grep -c "^429$" codes || :) &&
	test $((n_ok + n_429)) = 200 &&
	node check.mjs r.[1-8].* >counts &&
	echo "$n_ok $n_429" >expect.counts &&
	test_cmp expect.counts counts &&
	echo "load: $n_ok answered, $n_429 turned away (429) in $(awk "BEGIN { print $end - $start }") s; RSS $rss0 kB -> $rss1 kB" &&
	test $n_ok -gt 0 &&
	test "$(curl -s -o /dev/null -w "%{http_code}" "$(cat main.url)/health")" = 200 &&
	test -n "$rss0" && test -n "$rss1" &&
	test $((rss1 - rss0)) -lt 8192 &&
	curl -s "$(cat main.url)/metrics" >metrics &&
	{ test $n_429 = 0 || grep "^gitmodel_requests_total{endpoint=\"/v1/completions\",code=\"429\"} $n_429\$" metrics; }
'

test_expect_success ADAPTERS 'stop: SIGTERM shuts the server down cleanly (exit 0, port closed)' '
	url=$(cat main.url) &&
	stop_server main &&
	grep "SIGTERM: shutting down" main.log &&
	grep "git infer: stopped" main.log &&
	test_must_fail curl -s -o /dev/null "$url/health"
'

test_expect_success ADAPTERS '429: a full queue turns requests away at once, with Retry-After' '
	GM_API_KEY=$KEY start_server busy -m model/$MODEL --parallel 1 --queue 0 --shutdown-timeout 0.3 &&
	cp busy.url main.url || return 1
	curl -sN -m 20 -o long.out -H "Authorization: Bearer $KEY" -d "{\"model\":\"$MODEL\",\"prompt\":\"And\",\"max_tokens\":2000,\"stream\":true,\"logit_bias\":{\"4091\":-100,\"4093\":-100}}" "$(cat main.url)/v1/completions" >/dev/null 2>&1 5>&- &
	echo $! >curl.pid &&
	i=0 &&
	until grep -q "^data:" long.out 2>/dev/null
	do
		i=$((i + 1)) && test $i -lt 100 && sleep 0.05 || return 1
	done &&
	expect_error 429 queue_full POST /v1/chat/completions -D headers -d "{\"model\":\"$MODEL\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}" &&
	grep -i "^retry-after: 1" headers
'

test_expect_success ADAPTERS 'stop: SIGTERM cancels what runs past --shutdown-timeout; the stream ends with an error event' '
	stop_server busy &&
	wait $(cat curl.pid) ;
	tail -n 4 long.out >tail &&
	grep "^data: {\"error\":{\"message\":\"the server is shutting down" tail &&
	grep "^data: \[DONE\]" tail &&
	grep "1 request cancelled" busy.log
'

test_expect_success 'stop: SIGINT too; the server did not need the key to start, and stops at once when idle' '
	start_server idle -m "$POCKET" &&
	test "$(curl -s -o /dev/null -w "%{http_code}" "$(cat idle.url)/v1/models")" = 200 &&
	kill -INT "$(cat idle.pid)" &&
	wait "$(cat idle.pid)" &&
	rm idle.pid &&
	grep "SIGINT: shutting down" idle.log &&
	! grep cancelled idle.log
'

test_expect_success 'usage: --serve options are checked before anything is loaded' '
	test_expect_code 129 git infer -m "$POCKET" --serve 99999 2>err &&
	grep "expects \[<addr>:\]<port>" err &&
	test_expect_code 129 git infer -m "$POCKET" --serve 8080 -p hello 2>err &&
	grep "\-p does not go with --serve" err &&
	test_expect_code 129 git infer -m "$POCKET" --parallel 2 -p hello 2>err &&
	grep "go with --serve" err &&
	test_expect_code 129 git infer -m "$POCKET" --serve 8080 --adapter nope:0.5 2>err &&
	grep "with --serve, --adapter takes" err &&
	test_must_fail git infer -m "$POCKET" --serve 1.2.3.4.5:80 2>err &&
	grep "cannot listen" err
'

stop_leftovers
test_done
