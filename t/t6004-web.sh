#!/bin/sh
test_description='git infer --serve: the web page (chat and dashboard) in headless Chromium, /v1/stats and its stream'
. "${GM_SRC_DIR:-$(cd "$(dirname "$0")/.." && pwd)}/t/test-lib.sh"

POCKET="$TEST_MODELS/pocket-qwen3"
KEY=sk-web-0123456789
MODEL=pocket-qwen3
# puppeteer-core is installed once into the build tree and reused; the
# browser is Debian's chromium (contrib/install-deps.sh).
NODE_DIR="$GM_BUILD_DIR/t/web-node"
# The screenshots the browser tests take stay here (docs/ has a copy of each).
SHOTS="$GM_BUILD_DIR/t/web-screenshots"
CHROMIUM=$(command -v chromium || command -v chromium-browser || echo /usr/bin/chromium)

. "$GM_SRC_DIR/t/lib-serve.sh"

# call METHOD PATH [CURL ARGS...]: the body to out.json, the status on stdout.
call () {
	gm_m=$1 gm_path=$2
	shift 2
	curl -s -o out.json -w '%{http_code}' -X "$gm_m" "$@" "$(cat main.url)$gm_path"
}

# node_json EXPR < FILE: evaluates EXPR on the JSON document j.
node_json () {
	node -e 'const j = JSON.parse(require("fs").readFileSync(0, "utf8")); console.log(eval(process.argv[1]))' "$1"
}

# metric NAME: its value on /metrics.
metric () {
	curl -s "$(cat main.url)/metrics" | sed -n "s/^$1 //p"
}

# browse SCRIPT [ARGS...]: one of t/web/*.mjs against the main server.
browse () {
	gm_script=$1
	shift
	GM_SERVE_URL=$(cat main.url) GM_SERVE_KEY=$KEY GM_MODEL=$MODEL GM_SHOTS="$SHOTS" GM_CHROMIUM="$CHROMIUM" \
		timeout 60 node "$gm_script" "$@"
}

test_expect_success 'setup: chromium and puppeteer-core (installed once in the build tree)' '
	if ! test -x "$CHROMIUM" && command -v apt-get >/dev/null && test "$(id -u)" = 0
	then
		# as contrib/install-deps.sh would; quietly gives up without the network
		DEBIAN_FRONTEND=noninteractive timeout 600 apt-get install -y -qq --no-install-recommends chromium \
			>apt.log 2>&1 || cat apt.log
		CHROMIUM=$(command -v chromium || echo /usr/bin/chromium)
	fi &&
	if ! test -f "$NODE_DIR/node_modules/puppeteer-core/package.json" && command -v npm >/dev/null
	then
		rm -rf "$NODE_DIR.tmp" &&
		mkdir -p "$NODE_DIR.tmp" &&
		echo "{\"private\": true}" >"$NODE_DIR.tmp/package.json" &&
		if (cd "$NODE_DIR.tmp" && PUPPETEER_SKIP_DOWNLOAD=1 timeout 180 npm install --no-audit --no-fund \
			--loglevel=error puppeteer-core@24) >npm.log 2>&1
		then
			rm -rf "$NODE_DIR" && mv "$NODE_DIR.tmp" "$NODE_DIR"
		else
			cat npm.log
		fi
	fi &&
	if ! test -x "$CHROMIUM"
	then
		echo "# the browser cases are skipped: chromium is not installed and could not be" \
			"(contrib/install-deps.sh installs it)" >&5
	elif ! command -v node >/dev/null || ! test -f "$NODE_DIR/node_modules/puppeteer-core/package.json"
	then
		echo "# the browser cases are skipped: npm could not install puppeteer-core" \
			"(no node or npm, or the registry cannot be reached)" >&5
	else
		ln -s "$NODE_DIR/node_modules" node_modules &&
		cp "$GM_SRC_DIR"/t/web/*.mjs . &&
		mkdir -p "$SHOTS" &&
		test_set_prereq BROWSER
	fi
'

test_expect_success PYTHON3 'setup: an adapter for the pocket model' '
	pocket_lora kjv 1 &&
	test_set_prereq ADAPTER
'

test_expect_success 'start: a server with an API key, two sequence slots and the adapter' '
	if test_have_prereq ADAPTER
	then
		GM_API_KEY=$KEY start_server main -m "$POCKET" --parallel 2 --queue 8 --adapter kjv=kjv
	else
		GM_API_KEY=$KEY start_server main -m "$POCKET" --parallel 2 --queue 8
	fi &&
	grep "^git infer: chat and dashboard for a browser at http://127.0.0.1:[0-9]*/\$" main.log
'

test_expect_success 'the page is served without a key, from the binary, under a strict CSP' '
	curl -s -D headers -o index.html "$(cat main.url)/" &&
	grep -q "^HTTP/1.1 200" headers &&
	grep -qi "^content-type: text/html; charset=utf-8" headers &&
	grep -i "^content-security-policy: default-src .none.; script-src .self.; style-src .self.; connect-src .self.;" headers &&
	grep -qi "^x-content-type-options: nosniff" headers &&
	test_cmp "$GM_SRC_DIR/libcore/serve/web/index.html" index.html &&
	curl -s -D headers -o app.js "$(cat main.url)/app.js" &&
	grep -qi "^content-type: text/javascript" headers &&
	test_cmp "$GM_SRC_DIR/libcore/serve/web/app.js" app.js &&
	test "$(call GET /app.css)" = 200 &&
	test "$(call POST /)" = 405 &&
	test "$(call GET /nothing.js)" = 404 &&
	! grep -n "https\?://" index.html app.js
'

test_expect_success 'GET /v1/stats: the key is needed, and the numbers are JSON' '
	test "$(call GET /v1/stats)" = 401 &&
	test "$(call GET /v1/stats/stream)" = 401 &&
	test "$(call GET /v1/stats -H "Authorization: Bearer $KEY")" = 200 &&
	test "$(node_json "[j.object, j.model, j.requests.parallel, j.requests.queue_size, j.kv.block_tokens, j.kv.blocks_total > 0,
		j.latency.window_s, Array.isArray(j.history.t), j.history.t.length === j.history.running.length,
		Array.isArray(j.adapters)].join()" <out.json)" = "server.stats,pocket-qwen3,2,8,16,true,60,true,true,true"
'

test_expect_success 'the stats stream: an event a second, the first with the history; no generation slot taken' '
	start=$(date +%s) &&
	for i in 1 2 3 4 5 6 7 8 9 10 11 12
	do
		curl -sN -H "Authorization: Bearer $KEY" "$(cat main.url)/v1/stats/stream" >stream.$i &
		echo $! >curl-$i.pid || return 1
	done &&
	sleep 2.5 &&
	# twelve streams open: more than --parallel plus --queue; a request still runs at once
	test "$(call POST /v1/chat/completions -H "Authorization: Bearer $KEY" -H "Content-Type: application/json" \
		-d "{\"model\":\"$MODEL\",\"messages\":[{\"role\":\"user\",\"content\":\"Hi\"}],\"max_tokens\":4}")" = 200 &&
	test "$(call GET /v1/stats -H "Authorization: Bearer $KEY")" = 200 &&
	test "$(node_json j.requests.stats_streams <out.json)" = 12 &&
	for i in 1 2 3 4 5 6 7 8 9 10 11 12
	do
		kill "$(cat curl-$i.pid)" && rm curl-$i.pid || return 1
	done &&
	# one at once, then one a second (the machine may be slow: counted against the time it took)
	grep -c "^event: stats$" stream.1 >n &&
	test "$(cat n)" -ge 2 && test "$(cat n)" -le $(($(date +%s) - start + 2)) &&
	sed -n "s/^data: //p" stream.1 >events &&
	head -n 1 events | node_json "[j.object, typeof j.history].join()" >first &&
	echo "server.stats,object" >expect && test_cmp expect first &&
	sed -n 2p events | node_json "[j.object, typeof j.history, j.seq > 0].join()" >second &&
	echo "server.stats,undefined,true" >expect && test_cmp expect second
'

test_expect_success BROWSER 'chat: the streamed greedy reply is what git infer --chat prints; reload keeps it' '
	git infer -m "$POCKET" --chat -p "Who was Moses?" -n 30 --temperature 0 >expect &&
	browse chat.mjs "Who was Moses?" 30 >got &&
	test "$(cat expect)" = "$(cat got)" &&
	node_json "[j.finish, j.tokens].join()" <chat.json >meta &&
	echo "length,30" >expect.meta && test_cmp expect.meta meta &&
	# what the page shows, before the reload and after it, and what Retry gets
	node_json "j.before[1].answer" <chat.json >shown &&
	test "$(cat expect)" = "$(cat shown)" &&
	node_json "JSON.stringify(j.after) === JSON.stringify(j.before)" <chat.json >same &&
	echo true >expect.same && test_cmp expect.same same &&
	node_json "j.retry" <chat.json >retry &&
	test "$(cat expect)" = "$(cat retry)" &&
	test "$(node_json j.retry_count <chat.json)" = 2 &&
	# a thinking block: folded, apart from the answer
	node_json "JSON.stringify(j.thinking)" <chat.json >thinking &&
	echo "{\"role\":\"assistant\",\"answer\":\"The answer.\",\"think\":[{\"open\":false,\"text\":\"Thoughtweighing it up\"}]}" >expect.think &&
	test_cmp expect.think thinking &&
	test -s "$SHOTS/chat.png"
'

test_expect_success BROWSER 'stop: the Stop button cancels the generation on the server (metrics, stats)' '
	# a browser slowed down by a busy machine may click after the server has generated every token
	# (it still shows them arriving): then the server had nothing to cancel, and it is tried again
	for try in 1 2 3
	do
		before=$(metric gitmodel_requests_cancelled_total) &&
		browse stop.mjs &&
		cat stop.json &&
		test "$(node_json j.finish <stop.json)" = stopped &&
		i=0 &&
		while test "$(metric gitmodel_requests_cancelled_total)" -le "$before" && test $i -lt 30
		do
			i=$((i + 1)) && sleep 0.1
		done || return 1
		test "$(metric gitmodel_requests_cancelled_total)" -le "$before" || break
	done &&
	test "$(metric gitmodel_requests_cancelled_total)" = $((before + 1)) &&
	test "$(metric gitmodel_requests_running)" = 0 &&
	sleep 1.1 &&
	test "$(call GET /v1/stats -H "Authorization: Bearer $KEY")" = 200 &&
	test "$(node_json j.requests.cancelled_total <out.json)" = $((before + 1))
'

test_expect_success BROWSER 'chat: tools (tool choice required) and response_format go to the server as given' '
	tools="[{\"type\":\"function\",\"function\":{\"name\":\"get_weather\",\"parameters\":{\"type\":\"object\",\"properties\":{\"city\":{\"type\":\"string\",\"enum\":[\"Paris\",\"London\"]}},\"required\":[\"city\"],\"additionalProperties\":false}}}]" &&
	format="{\"type\":\"json_schema\",\"json_schema\":{\"name\":\"a\",\"schema\":{\"type\":\"object\",\"properties\":{\"answer\":{\"enum\":[\"yes\",\"no\"]}},\"required\":[\"answer\"],\"additionalProperties\":false}}}" &&
	browse tools.mjs "$tools" "$format" &&
	cat tools.json &&
	# (parallel calls are allowed: the pocket model may go on to a second one until max_tokens)
	test "$(node_json "[/^(tool_calls|length)$/.test(j.call.finish), j.call.tool_calls[0].name, /^call_/.test(j.call.tool_calls[0].id)].join()" <tools.json)" = "true,get_weather,true" &&
	node_json "JSON.stringify(JSON.parse(j.call.tool_calls[0].arguments))" <tools.json | grep "^{\"city\":\"\(Paris\|London\)\"}$" &&
	node_json "j.shown.join()" <tools.json | grep "^tool call: get_weather({" &&
	node_json "JSON.stringify(Object.keys(JSON.parse(j.structured.content)))" <tools.json >keys &&
	echo "[\"answer\"]" >expect.keys && test_cmp expect.keys keys &&
	node_json "JSON.parse(j.structured.content).answer" <tools.json | grep "^\(yes\|no\)$"
'

test_expect_success BROWSER 'dashboard: its numbers move while a load script runs' '
	browse dashboard.mjs &&
	cat dashboard.json &&
	test "$(node_json "j.load.failed" <dashboard.json)" = 0 &&
	test "$(node_json "j.load.done > 3" <dashboard.json)" = true &&
	test "$(node_json "j.max_running >= 1" <dashboard.json)" = true &&
	test "$(node_json "j.max_rate > 0 && j.max_prompt_rate > 0" <dashboard.json)" = true &&
	test "$(node_json "j.totals >= 2" <dashboard.json)" = true &&
	test "$(node_json "j.after.finished - j.before.finished === j.load.done" <dashboard.json)" = true &&
	test "$(node_json "j.after.total > j.before.total && j.after.ttft > 0 && j.after.tpot > 0" <dashboard.json)" = true &&
	test "$(node_json "j.after.running === 0 && j.after.ink > 1000" <dashboard.json)" = true &&
	test "$(node_json "j.learning.cells.join() + (j.learning.curve ? \" curve\" : \"\")" <dashboard.json)" = "m:live,lora,4,9,3,120 curve" &&
	test -s "$SHOTS/dashboard.png"
'

test_expect_success BROWSER,ADAPTER 'dashboard: the adapter, and the requests that used it' '
	test "$(node_json "j.adapters.join()" <dashboard.json)" = "pocket-qwen3:kjv" &&
	test "$(call GET /v1/stats -H "Authorization: Bearer $KEY")" = 200 &&
	node_json "j.adapters.map((a) => [a.id, a.kind, a.requests_total > 0, a.learning].join()).join()" <out.json >got &&
	echo "pocket-qwen3:kjv,lora,true," >expect &&
	test_cmp expect got
'

test_expect_success 'stop: an open stats stream does not hold the shutdown' '
	curl -sN -H "Authorization: Bearer $KEY" "$(cat main.url)/v1/stats/stream" >last-stream &
	echo $! >curl-last.pid &&
	sleep 1.2 &&
	start=$(date +%s) &&
	stop_server main &&
	test $(($(date +%s) - start)) -le 3 &&
	wait "$(cat curl-last.pid)"; rm -f curl-last.pid &&
	grep -q "^event: stats" last-stream
'

test_done
