#!/bin/sh
test_description='git infer --render-chat: released chat templates with --tools, template errors, resource limits'
. "${GM_SRC_DIR:-$(cd "$(dirname "$0")/.." && pwd)}/t/test-lib.sh"

TEMPLATES="$TEST_FIXTURES/chat-templates"

# A "model" holding only a chat template: tokenizer_config.json without
# "chat_template" and chat_template.jinja beside it, as newer checkpoints are.
make_model () {
	mkdir -p "$1" &&
	echo "{\"bos_token\": \"<|bos|>\", \"eos_token\": \"<|eos|>\"}" >"$1/tokenizer_config.json" &&
	cp "$2" "$1/chat_template.jinja"
}

test_expect_success 'setup' '
	cat >tools.json <<-\EOF &&
	[{"type": "function", "function": {"name": "get_weather", "description": "Weather in a city.", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]
	EOF
	cat >msgs.json <<-\EOF &&
	[{"role": "user", "content": "Weather in Zürich?"},
	 {"role": "assistant", "content": "", "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": {"city": "Zürich"}}}]},
	 {"role": "tool", "tool_call_id": "call_1", "content": "18 C"}]
	EOF
	make_model coder "$TEMPLATES/Qwen3-Coder.jinja" &&
	make_model gptoss "$TEMPLATES/openai-gpt-oss-120b.jinja" &&
	make_model mistral "$TEMPLATES/Mistral-Small-3.2-24B-Instruct-2506.jinja"
'

# The expected prompts are what jinja2 renders (t/chat-templates/render-jinja2.py's environment).
test_expect_success '--tools: Qwen3-Coder lists the tools and renders the call and its result' '
	cat >expect <<-\EOF &&
	<|im_start|>system
	You are Qwen, a helpful AI assistant that can interact with a computer to solve tasks.

	# Tools

	You have access to the following tools:

	<tools>
	<function>
	<name>get_weather</name>
	<description>Weather in a city.</description>
	<parameters>
	<parameter>
	<name>city</name>
	<type>string</type>
	</parameter>
	<required>["city"]</required>
	</parameters>
	</function>
	</tools>

	If you choose to call a tool ONLY reply in the following format with NO suffix:

	<tool_call>
	<function=example_function_name>
	<parameter=example_parameter_1>
	value_1
	</parameter>
	<parameter=example_parameter_2>
	value_2
	</parameter>
	</function>
	</tool_call>

	<IMPORTANT>
	Reminder:
	- Function calls MUST follow the specified format: the tool calling block MUST begin with an opening <tool_call> tag and end with a closing </tool_call> tag.
	- Required parameters MUST be specified
	- You may provide optional reasoning for your function call in natural language BEFORE the function call, but NOT after
	- If there is no function call available, answer the question like normal with your current knowledge and do not tell the user about function calls
	</IMPORTANT><|im_end|>
	<|im_start|>user
	Weather in Zürich?<|im_end|>
	<|im_start|>assistant
	<tool_call>
	<function=get_weather>
	<parameter=city>
	Zürich
	</parameter>
	</function>
	</tool_call><|im_end|>
	<|im_start|>user
	<tool_response>
	18 C
	</tool_response>
	<|im_end|>
	<|im_start|>assistant
	EOF
	git infer -m coder --render-chat msgs.json --tools tools.json >actual &&
	test_cmp expect actual
'

test_expect_success '--tools: gpt-oss (macros, strftime_now at GM_JINJA_NOW)' '
	cat >expect <<-\EOF &&
	<|start|>system<|message|>You are ChatGPT, a large language model trained by OpenAI.
	Knowledge cutoff: 2024-06
	Current date: 2026-07-26

	Reasoning: medium

	# Valid channels: analysis, commentary, final. Channel must be included for every message.
	Calls to these tools must go to the commentary channel: '\''functions'\''.<|end|><|start|>developer<|message|># Tools

	## functions

	namespace functions {

	// Weather in a city.
	type get_weather = (_: {
	city: string,
	}) => any;

	} // namespace functions<|end|><|start|>user<|message|>Weather in Zürich?<|end|><|start|>assistant to=functions.get_weather<|channel|>commentary json<|message|>{"city": "Zürich"}<|call|><|start|>functions.get_weather to=assistant<|channel|>commentary<|message|>"18 C"<|end|><|start|>assistant
	EOF
	GM_JINJA_NOW=1785067200 git infer -m gptoss --render-chat msgs.json --tools tools.json >actual &&
	echo >>actual &&
	test_cmp expect actual
'

test_expect_success 'without --tools the template sees tools as none' '
	git infer -m coder --render-chat msgs.json >actual &&
	! grep "# Tools" actual &&
	grep "<function=get_weather>" actual
'

test_expect_success 'a template that refuses the conversation fails with its message' '
	test_expect_code 1 git infer -m mistral --render-chat msgs.json --tools tools.json >out 2>err &&
	test_must_be_empty out &&
	test_grep "the template raised an error: Tool call IDs should be alphanumeric strings with length 9!" err
'

test_expect_success '--tools errors' '
	echo "{\"type\": \"function\"}" >notalist.json &&
	test_expect_code 1 git infer -m coder --render-chat msgs.json --tools notalist.json 2>err &&
	test_grep "^error: notalist.json: expected a JSON array of tools" err &&
	echo "[{\"type\": \"function\"}]" >noname.json &&
	test_expect_code 1 git infer -m coder --render-chat msgs.json --tools noname.json 2>err &&
	test_grep "^error: noname.json: expected a JSON array of tools" err &&
	test_expect_code 1 git infer -m coder --render-chat msgs.json --tools nosuch.json 2>err &&
	test_grep "^error: .*nosuch.json" err &&
	test_expect_code 129 git infer -m coder -p hi --tools tools.json 2>err &&
	test_grep "^error: --tools goes with --render-chat" err
'

# issue 16: this template once ran 19 s, grew to 3.1 GB and printed 2048.
test_expect_success 'a template doubling a string fails fast on the string limit' '
	mkdir -p doubling &&
	echo "{}" >doubling/tokenizer_config.json &&
	cat >doubling/chat_template.jinja <<-\EOF &&
	{% set ns = namespace(s="x") %}{% for i in range(40) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}{{ ns.s|length }}
	EOF
	echo "[{\"role\": \"user\", \"content\": \"hi\"}]" >hi.json &&
	start=$(date +%s%N) &&
	(ulimit -v 1048576 && test_expect_code 1 git infer -m doubling --render-chat hi.json >out 2>err) &&
	end=$(date +%s%N) &&
	test_must_be_empty out &&
	test_grep "chat_template: line 1: string longer than the 8 MiB limit" err &&
	test $(( (end - start) / 1000000 )) -lt 5000
'

test_expect_success 'a template recursing without end fails on the call-depth limit' '
	mkdir -p recurse &&
	echo "{}" >recurse/tokenizer_config.json &&
	echo "{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}" >recurse/chat_template.jinja &&
	test_expect_code 1 git infer -m recurse --render-chat hi.json 2>err &&
	test_grep "macro calls nested deeper than the 100-call limit" err
'

test_done
