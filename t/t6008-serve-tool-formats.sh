#!/bin/sh
test_description='git infer --serve: tool_choice required and named in every tool-call format (constrained decoding)'
. "${GM_SRC_DIR:-$(cd "$(dirname "$0")/.." && pwd)}/t/test-lib.sh"

# Each format gets the pocket model with a template of that family and a tokenizer
# that has the format's special tokens (t/serve/toolfmt.py): the random weights
# then write, under the grammar, exactly what the parser reads, the markers as
# the special tokens where the model prefers them.
POCKET="$TEST_MODELS/pocket-qwen3"
TEMPLATES="$GM_SRC_DIR/t/fixtures/chat-templates"
. "$GM_SRC_DIR/t/lib-serve.sh"

TOOLS='[{"type":"function","function":{"name":"get_weather","description":"The weather in a city","parameters":{"type":"object","properties":{"city":{"type":"string","description":"The city","enum":["Paris","London"]}},"required":["city"],"additionalProperties":false}}},{"type":"function","function":{"name":"get_time","description":"The time in a zone","parameters":{"type":"object","properties":{"zone":{"type":"string","description":"A time zone","enum":["UTC","CET"]}},"required":["zone"],"additionalProperties":false}}}]'
ASK='"messages":[{"role":"user","content":"Weather in Paris?"}]'
NAMED='{"type":"function","function":{"name":"get_time"}}'

# format  template  (an end-of-sequence token beside the pocket's)
FORMATS='hermes NousResearch-Hermes-3-Llama-3.1-8B-tool_use
qwen3-coder Qwen3-Coder
llama3 meta-llama-Llama-3.1-8B-Instruct
mistral mistralai-Mistral-Nemo-Instruct-2407
mistral-args Mistral-Small-3.2-24B-Instruct-2506
gpt-oss openai-gpt-oss-120b <|call|>
deepseek-r1 deepseek-ai-DeepSeek-R1-Distill-Qwen-32B
deepseek-v3.1 deepseek-ai-DeepSeek-V3.1
kimi-k2 moonshotai-Kimi-K2
functionary-v3.1 meetkai-functionary-medium-v3.1
functionary-v3.2 meetkai-functionary-medium-v3.2
glm GLM-4.6
minimax-m2 MiniMax-M2
seed-oss ByteDance-Seed-OSS
deepseek-v3.2 deepseek-ai-DeepSeek-V3.2
apriel unsloth-Apriel-1.5
command-r7b CohereForAI-c4ai-command-r7b-12-2024-tool_use
command-r CohereForAI-c4ai-command-r-plus-tool_use'

post () {
	curl -s -o "$1" -w '%{http_code}' -H 'Content-Type: application/json' -d "$2" \
		"$(cat "fmt-$fmt.url")/v1/chat/completions"
}

test_expect_success PYTHON3 'setup: a model per format' '
	echo "$FORMATS" | while read fmt tpl eos
	do
		python3 "$GM_SRC_DIR/t/serve/toolfmt.py" model "$POCKET" "$TEMPLATES/$tpl.jinja" "m-$fmt" $eos || return 1
	done &&
	test_set_prereq MODELS
'

# (a here-document on descriptor 3, not a pipe: the loop must run in this shell, which counts the
# tests, and the tests must not read the list)
while read fmt tpl eos <&3
do
	test_expect_success MODELS "$fmt ($tpl): required and named, streamed and not" '
		start_server "fmt-$fmt" -m "m-$fmt" &&
		for req in \
			"required|false|0|0|\"required\"|-" \
			"required|true|1|1|\"required\"|-" \
			"named|false|1|2|$NAMED|get_time"
		do
			# choice, parallel_tool_calls, stream, seed (0: greedy), tool_choice, the name wanted
			IFS="|" read choice parallel stream seed tc name <<-EOF2 &&
			$req
			EOF2
			temp=1 &&
			if test $seed = 0
			then
				temp=0
			fi &&
			s=false &&
			max=400 &&
			if test $parallel = true
			then
				max=250
			fi &&
			if test $stream = 1
			then
				s=true
			fi &&
			code=$(post out.json "{\"model\":\"m-$fmt\",$ASK,\"tools\":$TOOLS,\"tool_choice\":$tc,\"parallel_tool_calls\":$parallel,\"max_tokens\":$max,\"temperature\":$temp,\"seed\":$seed,\"stream\":$s}") &&
			if test "$code" != 200
			then
				cat out.json
				return 1
			fi &&
			if test $stream = 1
			then
				python3 "$GM_SRC_DIR/t/serve/toolfmt.py" check out.json $name $parallel stream
			else
				python3 "$GM_SRC_DIR/t/serve/toolfmt.py" check out.json $name $parallel
			fi || { cat out.json; return 1; }
		done &&
		stop_server "fmt-$fmt"
	'
done 3<<FORMATS_END
$FORMATS
FORMATS_END

test_done
