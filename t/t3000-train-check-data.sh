#!/bin/sh
test_description='git train --check-data: validate JSONL training data'
. "${GM_SRC_DIR:-$(cd "$(dirname "$0")/.." && pwd)}/t/test-lib.sh"

SQ="'"

test_expect_success 'setup: one example of each form' '
	cat >good.jsonl <<-\EOF
	{"text": "The capital of France is Paris."}
	{"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello."}]}

	{"prompt": "2 + 2 =", "completion": " 4"}
	{"input_ids": [151644, 872, 198], "loss_mask": [0, 1, 1]}
	{"input_ids": [1, 2, 3]}
	{"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}, {"role": "tool", "content": "{}"}]}
	EOF
'

test_expect_success 'a valid file: a one-line summary, exit 0' '
	git train --check-data good.jsonl >out 2>err &&
	test_must_be_empty err &&
	echo "good.jsonl: 6 examples (text: 1, messages: 2, prompt/completion: 1, token ids: 2)" >expect &&
	test_cmp expect out
'

test_expect_success 'standard input is read with -' '
	git train --check-data - <good.jsonl >out &&
	echo "<stdin>: 6 examples (text: 1, messages: 2, prompt/completion: 1, token ids: 2)" >expect &&
	test_cmp expect out
'

test_expect_success 'CRLF line ends, a byte order mark, blank lines, no final newline' '
	printf "\357\273\277{\"text\": \"a\"}\r\n\r\n   \t\n{\"text\": \"b\"}" >crlf.jsonl &&
	git train --check-data crlf.jsonl >out &&
	echo "crlf.jsonl: 2 examples (text: 2, messages: 0, prompt/completion: 0, token ids: 0)" >expect &&
	test_cmp expect out
'

test_expect_success '--json on a valid file' '
	git train --check-data good.jsonl --json >out 2>err &&
	test_must_be_empty err &&
	cat >expect <<-\EOF &&
	{
	  "file": "good.jsonl",
	  "valid": true,
	  "lines": 7,
	  "examples": 6,
	  "counts": {
	    "text": 1,
	    "messages": 2,
	    "prompt_completion": 1,
	    "token_ids": 2
	  },
	  "errors": 0,
	  "error_messages": [
	  ]
	}
	EOF
	test_cmp expect out
'

test_expect_success '-q prints nothing for a valid file' '
	git train -q --check-data good.jsonl >out 2>err &&
	test_must_be_empty out &&
	test_must_be_empty err
'

test_expect_success 'every bad line is reported as FILE:LINE: reason' '
	cat >bad.jsonl <<-\EOF &&
	{"text": "fine"}
	not json
	{"text": ""}
	[1, 2]
	{"foo": 1}
	{"text": "a", "prompt": "b"}
	{"prompt": "x"}
	{"completion": "x"}
	{"prompt": "x", "completion": ""}
	{"prompt": 1, "completion": "x"}
	{"messages": []}
	{"messages": "hi"}
	{"messages": [{"role": "user", "content": "x"}]}
	{"messages": [{"role": "bot", "content": "x"}]}
	{"messages": [{"role": "assistant"}]}
	{"messages": [{"role": "assistant", "content": "x", "name": "y"}]}
	{"messages": [42]}
	{"input_ids": []}
	{"input_ids": [1, -2]}
	{"input_ids": [1.5]}
	{"input_ids": [1, 2], "loss_mask": [1]}
	{"input_ids": [1], "loss_mask": [0]}
	{"input_ids": [1], "loss_mask": [2]}
	{"loss_mask": [1]}
	{}
	{"text": null}
	{"text": "a"} {"text": "b"}
	{"text": "unterminated
	123
	null
	EOF
	test_expect_code 1 git train --check-data bad.jsonl >out 2>err &&
	test_must_be_empty out &&
	cat >expect <<-EOF &&
	bad.jsonl:2: invalid JSON at byte 2: null expected
	bad.jsonl:3: ${SQ}text${SQ} is empty
	bad.jsonl:4: expected a JSON object, not array
	bad.jsonl:5: unexpected key ${SQ}foo${SQ} (an example has ${SQ}text${SQ}, ${SQ}messages${SQ}, ${SQ}prompt${SQ} and ${SQ}completion${SQ}, or ${SQ}input_ids${SQ} and ${SQ}loss_mask${SQ})
	bad.jsonl:6: mixes two forms: ${SQ}text${SQ} (text) and ${SQ}prompt${SQ} (prompt/completion) cannot be in one example
	bad.jsonl:7: ${SQ}prompt${SQ} without ${SQ}completion${SQ}
	bad.jsonl:8: ${SQ}completion${SQ} without ${SQ}prompt${SQ}
	bad.jsonl:9: ${SQ}completion${SQ} is empty (nothing to learn)
	bad.jsonl:10: ${SQ}prompt${SQ} must be a string, not int
	bad.jsonl:11: ${SQ}messages${SQ} is empty
	bad.jsonl:12: ${SQ}messages${SQ} must be a list, not string
	bad.jsonl:13: ${SQ}messages${SQ} has no assistant turn (nothing to learn)
	bad.jsonl:14: messages[0]: role ${SQ}bot${SQ} is not one of system, user, assistant, tool
	bad.jsonl:15: messages[0]: ${SQ}content${SQ} is missing
	bad.jsonl:16: messages[0]: unexpected key ${SQ}name${SQ} (a message has ${SQ}role${SQ} and ${SQ}content${SQ})
	bad.jsonl:17: messages[0] must be an object, not int
	bad.jsonl:18: ${SQ}input_ids${SQ} is empty
	bad.jsonl:19: input_ids[1] must be an integer in [0, 2147483647], not -2
	bad.jsonl:20: input_ids[0] must be an integer in [0, 2147483647], not 1.5
	bad.jsonl:21: ${SQ}loss_mask${SQ} has 1 entry but ${SQ}input_ids${SQ} has 2
	bad.jsonl:22: ${SQ}loss_mask${SQ} is all 0 (nothing to learn)
	bad.jsonl:23: loss_mask[0] must be 0 or 1, not 2
	bad.jsonl:24: ${SQ}loss_mask${SQ} without ${SQ}input_ids${SQ}
	bad.jsonl:25: empty object: expected ${SQ}text${SQ}, ${SQ}messages${SQ}, ${SQ}prompt${SQ} and ${SQ}completion${SQ}, or ${SQ}input_ids${SQ}
	bad.jsonl:26: ${SQ}text${SQ} must be a string, not null
	bad.jsonl:27: invalid JSON: unexpected data after the value at byte 15
	bad.jsonl:28: invalid JSON: unexpected end of line
	bad.jsonl:29: expected a JSON object, not int
	bad.jsonl:30: expected a JSON object, not null
	error: bad.jsonl: 29 invalid lines (1 valid example)
	EOF
	test_cmp expect err
'

test_expect_success 'bytes that are not text: invalid UTF-8, NUL' '
	printf "{\"text\": \"ok\"}\n{\"text\": \"caf\351\"}\n{\"text\": \"a\000b\"}\n" >bytes.jsonl &&
	printf "\357\273\277\377\n" >bom.jsonl &&
	test_expect_code 1 git train --check-data bytes.jsonl 2>err &&
	test_expect_code 1 git train --check-data bom.jsonl 2>>err &&
	cat >expect <<-\EOF &&
	bytes.jsonl:2: invalid UTF-8 at byte 14
	bytes.jsonl:3: contains a NUL byte
	error: bytes.jsonl: 2 invalid lines (1 valid example)
	bom.jsonl:1: invalid UTF-8 at byte 4
	error: bom.jsonl: 1 invalid line (0 valid examples)
	EOF
	test_cmp expect err
'

test_expect_success 'line numbers count blank lines and CRLF lines' '
	printf "{\"text\": \"a\"}\r\n\r\n\n{\"text\": 1}\r\n" >lines.jsonl &&
	test_expect_code 1 git train --check-data lines.jsonl 2>err &&
	cat >expect <<-EOF &&
	lines.jsonl:4: ${SQ}text${SQ} must be a string, not int
	error: lines.jsonl: 1 invalid line (1 valid example)
	EOF
	test_cmp expect err
'

test_expect_success '--json on a file with bad lines' '
	printf "{\"text\": \"a\"}\n{\"text\": \"\"}\n[]\n" >mix.jsonl &&
	test_expect_code 1 git train --check-data mix.jsonl --json >out 2>err &&
	cat >expect <<-EOF &&
	{
	  "file": "mix.jsonl",
	  "valid": false,
	  "lines": 3,
	  "examples": 1,
	  "counts": {
	    "text": 1,
	    "messages": 0,
	    "prompt_completion": 0,
	    "token_ids": 0
	  },
	  "errors": 2,
	  "error_messages": [
	    "mix.jsonl:2: ${SQ}text${SQ} is empty",
	    "mix.jsonl:3: expected a JSON object, not array"
	  ]
	}
	EOF
	test_cmp expect out &&
	cat >expect <<-EOF &&
	mix.jsonl:2: ${SQ}text${SQ} is empty
	mix.jsonl:3: expected a JSON object, not array
	error: mix.jsonl: 2 invalid lines (1 valid example)
	EOF
	test_cmp expect err
'

test_expect_success 'only the first 100 bad lines are listed' '
	i=0 &&
	while [ $i -lt 105 ]; do
		echo "{\"text\": $i}" || return 1
		i=$((i + 1))
	done >many.jsonl &&
	test_expect_code 1 git train --check-data many.jsonl 2>err &&
	test_line_count = 102 err &&
	test_grep "^many.jsonl:100: " err &&
	test_grep ! "^many.jsonl:101: " err &&
	tail -n 2 err >actual &&
	cat >expect <<-\EOF &&
	many.jsonl: 5 more invalid lines not shown
	error: many.jsonl: 105 invalid lines (0 valid examples)
	EOF
	test_cmp expect actual &&
	test_expect_code 1 git train --check-data many.jsonl --json >out 2>/dev/null &&
	test_grep "^  \"errors\": 105,$" out &&
	test_grep "\"many.jsonl:100: " out &&
	test_grep ! "\"many.jsonl:101: " out
'

test_expect_success 'an empty file, or one of blank lines only, has no examples' '
	: >empty.jsonl &&
	test_expect_code 1 git train --check-data empty.jsonl >out 2>err &&
	test_must_be_empty out &&
	echo "error: empty.jsonl: no examples (the file is empty)" >expect &&
	test_cmp expect err &&
	printf "\n  \n\r\n" >blank.jsonl &&
	test_expect_code 1 git train --check-data blank.jsonl 2>err &&
	echo "error: blank.jsonl: no examples (the file has only blank lines)" >expect &&
	test_cmp expect err &&
	test_expect_code 1 git train --check-data empty.jsonl --json >out &&
	test_grep "^  \"valid\": false,$" out &&
	test_grep "^  \"examples\": 0,$" out
'

test_expect_success 'a file that cannot be read' '
	test_expect_code 1 git train --check-data nosuch.jsonl >out 2>err &&
	test_must_be_empty out &&
	echo "error: nosuch.jsonl: cannot open: No such file or directory" >expect &&
	test_cmp expect err &&
	mkdir dir &&
	test_expect_code 1 git train --check-data dir 2>err &&
	echo "error: dir: is a directory, not a data file" >expect &&
	test_cmp expect err
'

test_expect_success '-h prints the usage and exits 129' '
	test_expect_code 129 git train -h >out &&
	test_grep "^   or: git train --check-data <file> \[--json\]$" out &&
	test_grep "^    --check-data <file>       validate a JSONL training data file (${SQ}-${SQ} for standard input)$" out &&
	test_grep "^    --json                    print the --check-data result as JSON$" out
'

test_expect_success 'usage errors exit 129 with one line' '
	test_expect_code 129 git train 2>err &&
	echo "error: training needs -m <model>, --adapter <name> and --data <file> (see ${SQ}git train -h${SQ})" >expect &&
	test_cmp expect err &&
	test_expect_code 129 git train --check-data good.jsonl extra 2>err &&
	echo "error: unexpected argument ${SQ}extra${SQ} (see ${SQ}git train -h${SQ})" >expect &&
	test_cmp expect err &&
	test_expect_code 129 git train --check-data 2>err &&
	echo "error: option ${SQ}--check-data${SQ} requires a value (file) (see ${SQ}git train -h${SQ})" >expect &&
	test_cmp expect err &&
	test_expect_code 129 git train --bogus 2>err &&
	echo "error: unknown option ${SQ}--bogus${SQ} (see ${SQ}git train -h${SQ})" >expect &&
	test_cmp expect err
'

test_done
