#!/bin/sh
test_description='git infer --serve: tool calling (tools, tool_choice) with the openai npm client and curl'
. "${GM_SRC_DIR:-$(cd "$(dirname "$0")/.." && pwd)}/t/test-lib.sh"

POCKET="$TEST_MODELS/pocket-qwen3"
MODEL=pocket-qwen3
# openai and ajv (an independent JSON Schema validator), installed once into the build tree
NODE_DIR="$GM_BUILD_DIR/t/tools-node"

. "$GM_SRC_DIR/t/lib-serve.sh"

# post BODY: POST /v1/chat/completions, the body to out.json, the status on stdout
post () {
	curl -s -o out.json -w '%{http_code}' -H 'Content-Type: application/json' -d "$1" \
		"$(cat main.url)/v1/chat/completions"
}

node_json () {
	node -e 'const j = JSON.parse(require("fs").readFileSync(0, "utf8")); console.log(eval(process.argv[1]))' "$1"
}

run_client () {
	GM_SERVE_URL=$(cat main.url) GM_MODEL=$MODEL node tools.mjs "$@"
}

TOOLS='[{"type":"function","function":{"name":"get_weather","parameters":{"type":"object","properties":{"city":{"type":"string","enum":["Paris","London"]}},"required":["city"],"additionalProperties":false}}}]'
ASK='"messages":[{"role":"user","content":"Weather in Paris?"}]'

test_expect_success 'setup: the openai and ajv npm packages (installed once in the build tree)' '
	if ! test -f "$NODE_DIR/node_modules/ajv/package.json" && command -v npm >/dev/null
	then
		rm -rf "$NODE_DIR.tmp" &&
		mkdir -p "$NODE_DIR.tmp" &&
		echo "{\"private\": true}" >"$NODE_DIR.tmp/package.json" &&
		if (cd "$NODE_DIR.tmp" && timeout 120 npm install --no-audit --no-fund --loglevel=error openai@6 ajv@8) \
			>npm.log 2>&1
		then
			rm -rf "$NODE_DIR" && mv "$NODE_DIR.tmp" "$NODE_DIR"
		else
			cat npm.log
		fi
	fi &&
	if command -v node >/dev/null && test -f "$NODE_DIR/node_modules/ajv/package.json"
	then
		ln -s "$NODE_DIR/node_modules" node_modules &&
		cp "$GM_SRC_DIR"/t/serve/lib.mjs "$GM_SRC_DIR"/t/serve/tools.mjs . &&
		test_set_prereq OPENAI
	else
		echo "# the openai client cases are skipped: npm could not install openai and ajv" \
			"(no npm, or the registry cannot be reached)" >&5
	fi &&
	echo "$TOOLS" >tools.json
'

test_expect_success 'start: the pocket model (Qwen3 template: hermes tool calls)' '
	start_server main -m "$POCKET"
'

test_expect_success 'curl: tool_choice required gives a call in message.tool_calls, finish_reason tool_calls' '
	test "$(post "{\"model\":\"$MODEL\",$ASK,\"tools\":$TOOLS,\"tool_choice\":\"required\",\"parallel_tool_calls\":false,\"max_tokens\":100,\"temperature\":0}")" = 200 &&
	cat out.json &&
	test "$(node_json "j.choices[0].finish_reason" <out.json)" = tool_calls &&
	test "$(node_json "j.choices[0].message.content" <out.json)" = null &&
	test "$(node_json "j.choices[0].message.tool_calls.length" <out.json)" = 1 &&
	test "$(node_json "j.choices[0].message.tool_calls[0].type" <out.json)" = function &&
	node_json "j.choices[0].message.tool_calls[0].id" <out.json | grep "^call_[A-Za-z0-9]\{24\}$" &&
	node_json "JSON.stringify(JSON.parse(j.choices[0].message.tool_calls[0].function.arguments))" <out.json >args &&
	grep "^{\"city\":\"\(Paris\|London\)\"}$" args
'

test_expect_success 'curl: without tools, or with tool_choice none, the same model answers in text' '
	test "$(post "{\"model\":\"$MODEL\",$ASK,\"max_tokens\":8,\"temperature\":0}")" = 200 &&
	node_json "j.choices[0].message.content" <out.json >plain &&
	test "$(node_json "j.choices[0].message.tool_calls" <out.json)" = undefined &&
	test "$(post "{\"model\":\"$MODEL\",$ASK,\"tools\":$TOOLS,\"tool_choice\":\"none\",\"max_tokens\":8,\"temperature\":0}")" = 200 &&
	test "$(node_json "j.choices[0].message.tool_calls" <out.json)" = undefined &&
	test "$(node_json "j.usage.prompt_tokens > 100" <out.json)" = true
'

test_expect_success 'curl: bad tools and tool_choice are 400 naming the field' '
	test "$(post "{\"model\":\"$MODEL\",$ASK,\"tools\":{}}")" = 400 &&
	grep "\"param\":\"tools\"" out.json &&
	test "$(post "{\"model\":\"$MODEL\",$ASK,\"tool_choice\":\"required\"}")" = 400 &&
	grep "\"param\":\"tool_choice\"" out.json &&
	test "$(post "{\"model\":\"$MODEL\",$ASK,\"tools\":$TOOLS,\"tool_choice\":{\"type\":\"function\",\"function\":{\"name\":\"nope\"}}}")" = 400 &&
	grep "not in .tools." out.json &&
	test "$(post "{\"model\":\"$MODEL\",$ASK,\"tools\":$TOOLS,\"tool_choice\":\"required\",\"response_format\":{\"type\":\"json_object\"}}")" = 400 &&
	grep "\"param\":\"tool_choice\"" out.json &&
	test "$(post "{\"model\":\"$MODEL\",\"messages\":[{\"role\":\"assistant\",\"tool_calls\":[{\"id\":\"a\",\"type\":\"function\",\"function\":{\"name\":\"f\",\"arguments\":\"{x\"}}]}]}")" = 400 &&
	grep "tool_calls\[0\].function.arguments" out.json
'

test_expect_success OPENAI 'client: a round trip: required call, the tool result, an answer' '
	run_client roundtrip
'

test_expect_success OPENAI 'client: streamed delta.tool_calls add up to the calls of the same request' '
	run_client stream
'

test_expect_success OPENAI 'client: a named function is the only one called' '
	run_client named
'

test_expect_success OPENAI 'client: required with 12 seeds at temperature 1: every call matches its schema' '
	run_client seeds 12
'

test_expect_success 'stop: the server exits cleanly' '
	stop_server main
'

test_expect_success 'git infer --chat --tools: calls as JSON lines; --tool-choice names one' '
	echo "[{\"role\":\"user\",\"content\":\"hi\"}]" >msgs.json &&
	git infer -m "$POCKET" --chat -p "Weather in Paris?" --tools tools.json --tool-choice get_weather \
		-n 100 --temperature 0 >out &&
	cat out &&
	# parallel calls (the default): the random model calls until -n, the last call cut short
	test_line_count -ge 1 out &&
	! grep -v "^{\"id\":\"call_[A-Za-z0-9]*\",\"type\":\"function\",\"function\":{\"name\":\"get_weather\",\"arguments\":\"{.*\"}}$" out &&
	head -n 1 out | grep "\"arguments\":\"{.*}\"}}$" &&
	git infer -m "$POCKET" --chat -p "Weather in Paris?" --tools tools.json -n 8 --temperature 0 >text &&
	git infer -m "$POCKET" --chat -p "Weather in Paris?" --tools tools.json --tool-choice none -n 8 \
		--temperature 0 >text2 &&
	test_cmp text text2 &&
	test_expect_code 129 git infer -m "$POCKET" -p "x" --tools tools.json 2>err &&
	grep "^error: --tools goes with --render-chat or --chat -p" err &&
	echo "{}" >notalist.json &&
	test_expect_code 1 git infer -m "$POCKET" --chat -p "x" --tools notalist.json 2>err &&
	grep "^error: notalist.json: expected a JSON array of tools" err &&
	echo "[{\"type\":\"function\",\"function\":{}}]" >noname.json &&
	test_expect_code 1 git infer -m "$POCKET" --render-chat msgs.json --tools noname.json 2>err &&
	grep "^error: noname.json: expected a JSON array of tools: .* (tools\[0\].function.name must be" err &&
	test_expect_code 1 git infer -m "$POCKET" --chat -p "x" --tools tools.json --tool-choice nope 2>err &&
	grep "^error: --tool-choice: tool_choice names the function .nope., which is not in .tools." err
'

test_expect_success 'git infer --render-chat --tools: the template shows the tools' '
	echo "[{\"role\":\"user\",\"content\":\"hi\"}]" >msgs.json &&
	git infer -m "$POCKET" --render-chat msgs.json --tools tools.json >prompt &&
	grep "^{\"type\": \"function\", \"function\": {\"name\": \"get_weather\"" prompt &&
	grep "<tool_call>" prompt
'

test_done
