#!/bin/sh
test_description='constrained decoding: git infer --grammar/--json-schema, response_format and "grammar" in the server'
. "${GM_SRC_DIR:-$(cd "$(dirname "$0")/.." && pwd)}/t/test-lib.sh"

POCKET="$TEST_MODELS/pocket-qwen3"
KEY=sk-test-grammar
MODEL=pocket-qwen3
# shared with t6000: the openai package installed once in the build tree
# its own directory: t6000 may be installing into t/serve-node at the same time
NODE_DIR="$GM_BUILD_DIR/t/grammar-node"
# seeds per schema for the fidelity check; 50 x 4 schemas = 200 seeds by default
# (GM_TEST_GRAMMAR_SEEDS=200 for 200 under each schema: about four times longer)
SEEDS=${GM_TEST_GRAMMAR_SEEDS:-50}

. "$GM_SRC_DIR/t/lib-serve.sh"

# validate SCHEMA_FILE [FILE...]: each FILE is one JSON text valid under the schema (python3-jsonschema,
# formats checked)
validate () {
	python3 - "$@" <<-\PY
	import json, sys
	import jsonschema
	schema = json.load(open(sys.argv[1]))
	v = jsonschema.Draft202012Validator(schema, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER)
	for f in sys.argv[2:]:
	    v.validate(json.loads(open(f, encoding="utf-8").read()))
	PY
}

test_expect_success 'setup: schemas, the validator, the openai client' '
	cat >person.json <<-\EOF &&
	{"type": "object", "properties": {
	   "name": {"type": "string", "maxLength": 10},
	   "age": {"type": "integer", "minimum": 0, "maximum": 120},
	   "color": {"enum": ["red", "green", "blue"]},
	   "tags": {"type": "array", "items": {"type": "string", "maxLength": 4}, "minItems": 1, "maxItems": 3}},
	 "required": ["name", "age", "color", "tags"], "additionalProperties": false}
	EOF
	if python3 -c "import jsonschema" 2>/dev/null
	then
		test_set_prereq JSONSCHEMA
	else
		echo "# validation skipped: no python3-jsonschema (contrib/install-deps.sh installs it)" >&5
	fi &&
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
		cp "$GM_SRC_DIR"/t/serve/*.mjs . &&
		test_set_prereq OPENAI
	else
		echo "# the openai client case is skipped: npm could not install the openai package" >&5
	fi
'

test_expect_success '--grammar: the output is one of the words the grammar allows' '
	echo "root ::= (\"yes\" | \"no\") \"!\"" >yesno.gbnf &&
	for seed in 1 2 3 4 5 6
	do
		git infer -m "$POCKET" -p "Is it so?" --grammar yesno.gbnf --temperature 1 --seed $seed >out &&
		grep -x "yes!\\|no!" out || return 1
	done
'

test_expect_success JSONSCHEMA '--json-schema: sampled outputs are valid' '
	for seed in 1 2 3 4 5 6 7 8
	do
		git infer -m "$POCKET" -p "A person:" --json-schema person.json --temperature 1 --seed $seed \
			-n 600 >out.$seed || return 1
	done &&
	validate person.json out.1 out.2 out.3 out.4 out.5 out.6 out.7 out.8
'

test_expect_success 'greedy: a grammar that allows everything changes nothing' '
	printf "root ::= [^\\\\x00]*\\n" >any.gbnf &&
	git infer -m "$POCKET" -p "And it came to pass" -n 40 --temperature 0 >plain &&
	git infer -m "$POCKET" -p "And it came to pass" -n 40 --temperature 0 --grammar any.gbnf >constrained &&
	test_cmp plain constrained
'

test_expect_success 'max tokens: a constrained text cut short is a prefix' '
	git infer -m "$POCKET" -p "A person:" --json-schema person.json --seed 3 -n 5 --print-ids >ids &&
	test "$(tr , "\\n" <ids | wc -l)" = 5
'

test_expect_success 'errors: an unsupported keyword or a bad grammar is named' '
	echo "{\"type\": \"object\", \"properties\": {\"a\": {\"type\": \"string\", \"not\": {}}}}" >bad.json &&
	test_must_fail git infer -m "$POCKET" -p x --json-schema bad.json 2>err &&
	test_grep "bad.json: JSON Schema at properties.a: keyword .not. is not supported" err &&
	echo "root ::= \"a\" missing" >bad.gbnf &&
	test_must_fail git infer -m "$POCKET" -p x --grammar bad.gbnf 2>err &&
	test_grep "bad.gbnf: grammar line 1: rule .missing. is used but not defined" err &&
	test_expect_code 129 git infer -m "$POCKET" -p x --grammar yesno.gbnf --json-schema person.json 2>err &&
	test_grep "cannot be combined" err
'

test_expect_success 'start the server' '
	GM_API_KEY=$KEY start_server main -m "$POCKET" --parallel 8 --queue 64
'

# post PATH BODY: the reply to out.json, the status on stdout
post () {
	curl -s -o out.json -w "%{http_code}" -H "Authorization: Bearer $KEY" -H "Content-Type: application/json" \
		-d "$2" "$(cat main.url)$1"
}

test_expect_success 'server: "grammar" in a completion request, and 400s that name what is wrong' '
	test "$(post /v1/completions "{\"model\":\"$MODEL\",\"prompt\":\"Is it so?\",\"max_tokens\":8,\
\"grammar\":\"root ::= \\\"yes\\\" | \\\"no\\\"\",\"temperature\":1,\"seed\":4}")" = 200 &&
	grep "\"text\":\"\\(yes\\|no\\)\",.*\"finish_reason\":\"stop\"" out.json &&
	test "$(post /v1/completions "{\"model\":\"$MODEL\",\"prompt\":\"x\",\"grammar\":\"root ::= (\"}")" = 400 &&
	grep "\"message\":\"grammar line 1: .*\",\"type\":\"invalid_request_error\",\"param\":\"grammar\"" out.json &&
	test "$(post /v1/chat/completions "{\"model\":\"$MODEL\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\
\"response_format\":{\"type\":\"json_schema\",\"json_schema\":{\"name\":\"n\",\"schema\":{\"allOf\":[]}}}}")" = 400 &&
	grep "keyword .allOf. is not supported\",\"type\":\"invalid_request_error\",\"param\":\"response_format\"" out.json &&
	test "$(post /v1/chat/completions "{\"model\":\"$MODEL\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\
\"response_format\":{\"type\":\"yaml\"}}")" = 400 &&
	test "$(post /v1/chat/completions "{\"model\":\"$MODEL\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\
\"response_format\":{\"type\":\"json_object\"},\"grammar\":\"root ::= \\\"a\\\"\"}")" = 400 &&
	grep "cannot be combined" out.json
'

test_expect_success JSONSCHEMA "server: $SEEDS seeds under each of 4 schemas, random sampling, batched: all valid" '
	python3 "$GM_SRC_DIR/t/serve/grammar-fidelity.py" "$(cat main.url)" $KEY $MODEL $SEEDS >fidelity.out &&
	cat fidelity.out &&
	test "$(grep -c " valid\$" fidelity.out)" = 4 &&
	! grep INVALID fidelity.out
'

test_expect_success OPENAI,JSONSCHEMA 'the openai client: json_schema (nested, arrays, enums, $ref), streamed too, json_object' '
	cat >schemas.json <<-\EOF &&
	{"order": {"type": "object", "properties": {
	    "id": {"type": "string", "format": "uuid"},
	    "status": {"enum": ["new", "paid", "shipped"]},
	    "customer": {"$ref": "#/$defs/customer"},
	    "items": {"type": "array", "minItems": 1, "maxItems": 3, "items": {"$ref": "#/$defs/item"}}},
	  "required": ["id", "status", "customer", "items"], "additionalProperties": false,
	  "$defs": {
	    "customer": {"type": "object", "properties": {"name": {"type": "string", "maxLength": 8},
	      "vip": {"type": "boolean"}}, "required": ["name", "vip"], "additionalProperties": false},
	    "item": {"type": "object", "properties": {"sku": {"type": "string", "pattern": "^[A-Z]{2}[0-9]{3}$"},
	      "qty": {"type": "integer", "minimum": 1, "maximum": 9}}, "required": ["sku", "qty"],
	      "additionalProperties": false}}},
	 "tree": {"$ref": "#/$defs/node", "$defs": {"node": {"type": "object", "properties": {
	    "name": {"type": "string", "maxLength": 3},
	    "children": {"type": "array", "maxItems": 2, "items": {"$ref": "#/$defs/node"}}},
	  "required": ["name"], "additionalProperties": false}}}}
	EOF
	GM_SERVE_URL=$(cat main.url) GM_SERVE_KEY=$KEY GM_MODEL=$MODEL node structured.mjs schemas.json &&
	python3 - <<-\PY
	import json
	import jsonschema
	schemas = json.load(open("schemas.json"))
	n = 0
	for line in open("outputs.jsonl", encoding="utf-8"):
	    o = json.loads(line)
	    assert o["finish"] == "stop", o
	    value = json.loads(o["text"])
	    if o["schema"] == "json_object":
	        assert isinstance(value, dict), o
	    else:
	        s = schemas[o["schema"]]
	        jsonschema.Draft202012Validator(
	            s, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER).validate(value)
	    n += 1
	assert n == 2 * (3 * 2 + 1) + 3, n
	print("%d outputs valid" % n)
	PY
'

test_expect_success 'stop the server' '
	stop_server main
'

test_done
