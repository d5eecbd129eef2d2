#!/bin/sh
test_description='git infer: generation against the golden fixtures, sampling, stop conditions, debugging options'
. "${GM_SRC_DIR:-$(cd "$(dirname "$0")/.." && pwd)}/t/test-lib.sh"

F32="$TEST_FIXTURES/models/tiny-qwen3-f32"
V151K="$TEST_FIXTURES/models/tiny-qwen3-vocab151k"
POCKET="$TEST_MODELS/pocket-qwen3"
GOLDEN="$TEST_FIXTURES/golden"

# The golden data is read with python3 (no numpy needed).
test_expect_success PYTHON3 'setup: the golden reader' '
	cat >golden.py <<-\PY
	import array, json, re, struct, sys

	def header(path):
	    f = open(path, "rb")
	    n = struct.unpack("<Q", f.read(8))[0]
	    return f, json.loads(f.read(n)), 8 + n

	def tensor(path, name):
	    f, h, base = header(path)
	    t = h[name]
	    b, e = t["data_offsets"]
	    f.seek(base + b)
	    a = array.array({"F32": "f", "I32": "i", "I64": "q"}[t["dtype"]])
	    a.frombytes(f.read(e - b))
	    return t, a

	def byte_decoder():
	    # GPT-2 byte-level alphabet: printable bytes map to themselves,
	    # the others to 256 + their rank.
	    keep = [b for b in range(256)
	            if 0x21 <= b <= 0x7e or 0xa1 <= b <= 0xac or 0xae <= b <= 0xff]
	    table, extra = {}, 0
	    for b in range(256):
	        if b in keep:
	            table[chr(b)] = b
	        else:
	            table[chr(256 + extra)] = b
	            extra += 1
	    return table

	def token_bytes(model):
	    tok = json.load(open(model + "/tokenizer.json", encoding="utf-8"))
	    dec = byte_decoder()
	    out = {i: bytes(dec[c] for c in s) for s, i in tok["model"]["vocab"].items()}
	    special = set()
	    for a in tok["added_tokens"]:
	        out[a["id"]] = a["content"].encode()
	        if a["special"]:
	            special.add(a["id"])
	    return out, special

	def ids_arg(s):
	    return [int(x) for x in s.split(",") if x.strip()]

	cmd, args = sys.argv[1], sys.argv[2:]
	if cmd == "prompts":
	    f, h, base = header(args[0])
	    print(" ".join(sorted({re.match(r"p(\d+)\.", k).group(1) for k in h if re.match(r"p\d+\.ids$", k)})))
	elif cmd == "ids":
	    print(",".join(map(str, tensor(args[0], "p%s.ids" % args[1])[1])))
	elif cmd == "greedy":
	    print(",".join(map(str, tensor(args[0], "p%s.greedy" % args[1])[1][:int(args[2])])))
	elif cmd == "logits":
	    golden, i, out = args
	    f, h, base = header(out)
	    h.pop("__metadata__", None)
	    assert list(h) == ["logits"], list(h)
	    t, got = tensor(out, "logits")
	    assert t["dtype"] == "F32", t["dtype"]
	    T, V = t["shape"]
	    ids = tensor(golden, "p%s.ids" % i)[1]
	    assert T == len(ids), (T, len(ids))
	    pairs = []
	    f, g, base = header(golden)
	    if "p%s.logits" % i in g:
	        ref = tensor(golden, "p%s.logits" % i)[1]
	        assert len(ref) == T * V, (len(ref), T, V)
	        pairs.append((got, ref))
	    else:
	        # 151k-token models: the last row in full, every row on a subset
	        last = tensor(golden, "p%s.logits_last" % i)[1]
	        assert len(last) == V
	        pairs.append((got[(T - 1) * V:], last))
	        cols = tensor(golden, "vocab_subset")[1]
	        sub = tensor(golden, "p%s.logits_subset" % i)[1]
	        pairs.append(([got[r * V + c] for r in range(T) for c in cols], sub))
	    for a, b in pairs:
	        diff = max(abs(x - y) for x, y in zip(a, b))
	        rel = diff / max(abs(y) for y in b)
	        print("max |d| / max |ref| = %.3g" % rel)
	        assert rel <= 1e-4, rel
	elif cmd == "close":
	    # close A B TOL: two logits files, max |a - b| / max |b| within TOL
	    a, b = tensor(args[0], "logits")[1], tensor(args[1], "logits")[1]
	    assert len(a) == len(b), (len(a), len(b))
	    rel = max(abs(x - y) for x, y in zip(a, b)) / max(abs(y) for y in b)
	    print("max |d| / max |ref| = %.3g" % rel)
	    assert rel <= float(args[2]), rel
	elif cmd == "decode":
	    # the text of ids as tokenizers decodes it (special tokens skipped)
	    table, special = token_bytes(args[0])
	    raw = b"".join(table.get(i, b"") for i in ids_arg(args[1]) if i not in special)
	    sys.stdout.buffer.write(raw.decode("utf-8", "replace").encode())
	elif cmd == "stop-across":
	    # a stop string made of the end of token k and the start of token k+1
	    table, special = token_bytes(args[0])
	    ids = ids_arg(args[1])
	    for k in range(int(args[2]), len(ids) - 1):
	        a, b = table[ids[k]], table[ids[k + 1]]
	        if len(a.strip()) >= 2 and len(b.strip()) >= 2 and a.isascii() and b.isascii():
	            print((a[-2:] + b[:2]).decode())
	            break
	elif cmd == "tokenize-cases":
	    # tokenize-cases JSONL N: text.K and expect.K for every N-th line
	    for k, line in enumerate(open(args[0], encoding="utf-8")):
	        if k % int(args[1]):
	            continue
	        o = json.loads(line)
	        open("text.%d" % k, "wb").write(o["text"].encode())
	        open("expect.%d" % k, "w").write(json.dumps(o["ids"]) + "\n")
	elif cmd == "chat-cases":
	    for k, line in enumerate(open(args[0], encoding="utf-8")):
	        o = json.loads(line)
	        json.dump(o["messages"], open("msgs.%d.json" % k, "w"))
	        open("chat-expect.%d" % k, "wb").write(o["text"].encode())
	        flags = [] if o["add_generation_prompt"] else ["--no-generation-prompt"]
	        if o["enable_thinking"] is not None:
	            flags.append("--think" if o["enable_thinking"] else "--no-think")
	        open("chat-flags.%d" % k, "w").write(" ".join(flags) + "\n")
	elif cmd == "utf8":
	    open(args[0], "rb").read().decode("utf-8")
	PY
	python3 golden.py prompts "$GOLDEN/pocket-qwen3.safetensors" >prompts &&
	echo "0 1 2 3" >expect &&
	test_cmp expect prompts
'

# greedy_test MODEL GOLDEN: each prompt's first 24 greedy tokens, as transformers made them.
greedy_test () {
	for i in $(python3 golden.py prompts "$2")
	do
		python3 golden.py greedy "$2" $i 24 >expect &&
		git infer -m "$1" --prompt-ids "$(python3 golden.py ids "$2" $i)" \
			--print-ids --temperature 0 -n 24 >actual &&
		test_cmp expect actual || return 1
	done
}

# logits_test MODEL GOLDEN: every prompt position's logits within 1e-4 relative.
logits_test () {
	for i in $(python3 golden.py prompts "$2")
	do
		git infer -m "$1" --prompt-ids "$(python3 golden.py ids "$2" $i)" -n 0 \
			--logits-out logits.safetensors >out &&
		test_must_be_empty out &&
		python3 golden.py logits "$2" $i logits.safetensors || return 1
	done
}

test_expect_success PYTHON3 'greedy continuations: tiny-qwen3-f32 (f32, untied)' '
	greedy_test "$F32" "$GOLDEN/tiny-qwen3-f32.safetensors"
'

test_expect_success PYTHON3 'greedy continuations: pocket-qwen3 (bf16, tied)' '
	greedy_test "$POCKET" "$GOLDEN/pocket-qwen3.safetensors"
'

test_expect_success PYTHON3 'greedy continuations: tiny-qwen3-vocab151k (bf16, 151936 rows)' '
	greedy_test "$V151K" "$GOLDEN/tiny-qwen3-vocab151k.safetensors"
'

test_expect_success PYTHON3 '--logits-out: tiny-qwen3-f32' '
	logits_test "$F32" "$GOLDEN/tiny-qwen3-f32.safetensors"
'

test_expect_success PYTHON3 '--logits-out: pocket-qwen3' '
	logits_test "$POCKET" "$GOLDEN/pocket-qwen3.safetensors"
'

test_expect_success PYTHON3 '--logits-out: tiny-qwen3-vocab151k' '
	logits_test "$V151K" "$GOLDEN/tiny-qwen3-vocab151k.safetensors"
'

# --matmul: a 48-token prompt of the bf16 pocket model; fast moves the
# logits by about 1e-2 of the largest (bf16 activations).  Without --matmul
# and GM_MATMUL (which the tests set to precise), a CPU with AVX512_BF16
# runs fast, another precise.
test_expect_success PYTHON3 '--matmul: fast by default with AVX512_BF16, within 5e-2 of precise; bad modes refused' '
	ids=$(seq 100 37 1839 | paste -s -d, -) &&
	(unset GM_MATMUL && git infer -m "$POCKET" --prompt-ids "$ids" -n 0 --logits-out default.st) &&
	git infer -m "$POCKET" --prompt-ids "$ids" -n 0 --logits-out env.st &&
	git infer -m "$POCKET" --prompt-ids "$ids" -n 0 --matmul precise --logits-out precise.st &&
	cmp env.st precise.st &&
	GM_MATMUL=fast git infer -m "$POCKET" --prompt-ids "$ids" -n 0 --logits-out envfast.st 2>err &&
	git infer -m "$POCKET" --prompt-ids "$ids" -n 0 --matmul fast --logits-out fast.st 2>err &&
	cmp envfast.st fast.st &&
	python3 golden.py close fast.st precise.st 5e-2 &&
	if grep -qw avx512_bf16 /proc/cpuinfo && test -z "$GM_KERNELS"
	then
		cmp default.st fast.st &&
		! cmp -s fast.st precise.st
	else
		cmp default.st precise.st
	fi &&
	test_must_fail git infer -m "$POCKET" --prompt-ids "$ids" -n 0 --matmul quick 2>err &&
	test_grep "unknown --matmul mode .quick. (precise or fast)" err &&
	test_must_fail env GM_MATMUL=quick git infer -m "$POCKET" --prompt-ids "$ids" -n 0 2>err &&
	test_grep "unknown GM_MATMUL mode .quick. (precise or fast)" err
'

test_expect_success PYTHON3 '--tokenize: Qwen3 golden ids' '
	python3 golden.py tokenize-cases "$TEST_FIXTURES/tokenizers/qwen3-golden.jsonl" 17 &&
	for f in text.*
	do
		k=${f#text.} &&
		git infer -m "$V151K" --tokenize <"$f" >actual &&
		test_cmp "expect.$k" actual || return 1
	done &&
	rm -f text.* expect.*
'

test_expect_success PYTHON3 '--tokenize: pocket golden ids' '
	python3 golden.py tokenize-cases "$TEST_FIXTURES/tokenizers/pocket-golden.jsonl" 23 &&
	for f in text.*
	do
		k=${f#text.} &&
		git infer -m "$POCKET" --tokenize <"$f" >actual &&
		test_cmp "expect.$k" actual || return 1
	done &&
	rm -f text.* expect.*
'

test_expect_success PYTHON3 '--render-chat: the Qwen3 chat-template golden cases' '
	python3 golden.py chat-cases "$TEST_FIXTURES/tokenizers/qwen3-chat-template-golden.jsonl" &&
	for k in 0 2 3 7 8 12 14 19 20 24 26 30 31 32 36 39
	do
		git infer -m "$V151K" --render-chat msgs.$k.json $(cat chat-flags.$k) >actual &&
		test_cmp chat-expect.$k actual || return 1
	done
'

test_expect_success 'the demo: pocket greedy text is deterministic' '
	git infer -m "$POCKET" -p "And it came to pass" -n 48 --temperature 0 >text1 &&
	git infer -m "$POCKET" -p "And it came to pass" -n 48 --temperature 0 >text2 &&
	test_cmp text1 text2 &&
	test_file_not_empty text1
'

test_expect_success PYTHON3 'the demo text is readable: the decoded ids, valid UTF-8, English words' '
	git infer -m "$POCKET" -p "And it came to pass" -n 48 --temperature 0 --print-ids >demo-ids &&
	tr , "\n" <demo-ids >lines &&
	test_line_count = 48 lines &&
	python3 golden.py decode "$POCKET" "$(cat demo-ids)" >expect &&
	test_cmp expect text1 &&
	python3 golden.py utf8 text1 &&
	test $(tr -cs "A-Za-z" "\n" <text1 | grep -c "^[a-z][a-z]*$") -ge 10
'

test_expect_success PYTHON3 'streamed text of random tokens (151k vocabulary) equals the decoded ids' '
	git infer -m "$V151K" --prompt-ids 9707,11,1879,0 --temperature 0 -n 40 --print-ids >ids &&
	git infer -m "$V151K" --prompt-ids 9707,11,1879,0 --temperature 0 -n 40 >text &&
	python3 golden.py decode "$V151K" "$(cat ids)" >expect &&
	test_cmp expect text &&
	python3 golden.py utf8 text
'

test_expect_success '-p - reads the prompt from standard input' '
	printf "And it came to pass" | git infer -m "$POCKET" -p - -n 48 --temperature 0 >actual &&
	test_cmp text1 actual
'

test_expect_success 'the prompt as ids gives the same text' '
	printf "And it came to pass" | git infer -m "$POCKET" --tokenize >ids.json &&
	ids=$(sed -e "s/[][ ]//g" ids.json) &&
	git infer -m "$POCKET" --prompt-ids "$ids" -n 48 --temperature 0 >actual &&
	test_cmp text1 actual
'

test_expect_success 'seeded sampling is reproducible' '
	git infer -m "$POCKET" -p "And it came to pass" -n 32 --seed 42 --print-ids >s1 &&
	git infer -m "$POCKET" -p "And it came to pass" -n 32 --seed 42 --print-ids >s2 &&
	test_cmp s1 s2 &&
	git infer -m "$POCKET" -p "And it came to pass" -n 32 --seed 43 --print-ids >s3 &&
	! test_cmp s1 s3 >/dev/null &&
	git infer -m "$POCKET" -p "And it came to pass" -n 32 --seed 42 --temperature 1.3 --top-k 0 --top-p 0.95 \
		--min-p 0.02 --repeat-penalty 1.1 >t1 &&
	git infer -m "$POCKET" -p "And it came to pass" -n 32 --seed 42 --temperature 1.3 --top-k 0 --top-p 0.95 \
		--min-p 0.02 --repeat-penalty 1.1 >t2 &&
	test_cmp t1 t2
'

test_expect_success 'the sampling defaults come from generation_config.json' '
	git infer -v -m "$POCKET" -p "And" -n 1 --seed 5 2>err >/dev/null &&
	test_grep "^sampling: temperature 0.8, top-k 40, top-p 0.9, min-p 0, repetition penalty 1, seed 5$" err &&
	git infer -v -m "$POCKET" -p "And" -n 1 --temperature 0 2>err >/dev/null &&
	test_grep "^sampling: greedy$" err &&
	cp -R "$POCKET" nosample &&
	echo "{\"do_sample\": false, \"eos_token_id\": [4093, 4091]}" >nosample/generation_config.json &&
	git infer -v -m nosample -p "And it came to pass" -n 48 2>err >actual &&
	test_grep "^sampling: greedy$" err &&
	test_cmp text1 actual
'

test_expect_success 'a repetition penalty changes the greedy text' '
	git infer -m "$POCKET" -p "And it came to pass" -n 48 --temperature 0 --repeat-penalty 1.5 >actual &&
	! test_cmp text1 actual >/dev/null
'

test_expect_success PYTHON3 '--stop across token boundaries: the text before it, not the stop string' '
	stop=$(python3 golden.py stop-across "$POCKET" "$(cat demo-ids)" 10) &&
	test -n "$stop" &&
	git infer -m "$POCKET" -p "And it came to pass" -n 48 --temperature 0 --stop "$stop" >actual &&
	python3 - "$stop" <<-\PY &&
	import sys
	text = open("text1", encoding="utf-8").read()
	stop = sys.argv[1]
	open("expect", "w", encoding="utf-8").write(text[:text.index(stop)])
	PY
	test_cmp expect actual &&
	git infer -m "$POCKET" -p "And it came to pass" -n 48 --temperature 0 --stop "no such text" \
		--stop "$stop" --print-ids >stop-ids &&
	tr , "\n" <stop-ids >lines &&
	test_line_count -lt 48 lines
'

test_expect_success 'a stop string that never appears: all the text' '
	git infer -m "$POCKET" -p "And it came to pass" -n 48 --temperature 0 --stop "@@@" >actual &&
	test_cmp text1 actual
'

test_expect_success 'an end-of-sequence token stops generation and is not printed' '
	first=$(cut -d, -f1 demo-ids) &&
	cp -R "$POCKET" eos &&
	echo "{\"eos_token_id\": [$first]}" >eos/generation_config.json &&
	git infer -m eos -p "And it came to pass" -n 48 --temperature 0 --print-ids >actual &&
	echo "$first" >expect &&
	test_cmp expect actual &&
	git infer -m eos -p "And it came to pass" -n 48 --temperature 0 >actual &&
	test_must_be_empty actual
'

test_expect_success '-n 0 evaluates the prompt only' '
	git infer -m "$POCKET" -p "And it came to pass" -n 0 >out 2>err &&
	test_must_be_empty out &&
	test_must_be_empty err
'

test_expect_success '-v prints the timing on stderr' '
	git infer -v -m "$POCKET" --prompt-ids 887,259,2389,11,269 -n 8 --temperature 0 >out 2>err &&
	test_grep -E "^prompt: 5 tokens in [0-9]+\.[0-9]{3} s \([0-9]+\.[0-9] tok/s\); decode: 7 tokens in [0-9]+\.[0-9]{3} s \([0-9]+\.[0-9] tok/s\)$" err
'

test_expect_success PYTHON3 '--chat: the rendered template, then generation' '
	git infer -m "$POCKET" --chat --system "Be brief." -p "Who begat Enos?" --no-think -n 12 \
		--temperature 0 --print-ids >chat-ids &&
	cat >msgs.json <<-\EOF &&
	[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Who begat Enos?"}]
	EOF
	git infer -m "$POCKET" --render-chat msgs.json --no-think >prompt.txt &&
	test_grep "^<|im_start|>system$" prompt.txt &&
	git infer -m "$POCKET" --tokenize <prompt.txt >ids.json &&
	git infer -m "$POCKET" --prompt-ids "$(sed -e "s/[][ ]//g" ids.json)" -n 12 --temperature 0 \
		--print-ids >expect &&
	test_cmp expect chat-ids
'

# script(1) runs a command on a pseudo-terminal: the interactive chat.
command -v script >/dev/null 2>&1 && script -qec true /dev/null >/dev/null 2>&1 &&
test_set_prereq SCRIPT

test_expect_success SCRIPT 'without -p on a terminal: an interactive chat with history' '
	git infer -m "$POCKET" --chat --no-think -p "Who was Moses?" -n 8 --temperature 0 >once &&
	test_file_not_empty once &&
	printf "Who was Moses?\\n\\nAnd Aaron?\\n" >typed &&
	script -qec "git infer -m \"$POCKET\" --no-think -n 8 --temperature 0 -v" /dev/null <typed >raw &&
	tr -d "\\r" <raw >out &&
	test_grep -F "> $(cat once)" out &&
	grep "^prompt: " out >timing &&
	test_line_count = 2 timing &&
	test_grep "^Chatting with .*; end with Ctrl-D\\.$" out
'

test_expect_success 'the context fills up: a warning, the tokens that fit' '
	git infer -m "$POCKET" --prompt-ids 887,259,2389,11,269 --ctx 8 -n 20 --temperature 0 --print-ids \
		>out 2>err &&
	tr , "\n" <out >lines &&
	test_line_count = 4 lines &&
	echo "warning: the context is full (8 tokens): generation stopped; see --ctx" >expect &&
	test_cmp expect err
'

test_expect_success 'a prompt longer than the context: 1' '
	test_expect_code 1 git infer -m "$POCKET" --prompt-ids 1,2,3,4,5 --ctx 4 >out 2>err &&
	test_must_be_empty out &&
	echo "error: the prompt is 5 tokens, longer than the context (4 tokens; see --ctx)" >expect &&
	test_cmp expect err
'

test_expect_success 'a context whose KV cache cannot fit in memory is refused up front, with the numbers' '
	test_expect_code 1 env GM_MEM_AVAILABLE=1000000 git infer -m "$POCKET" --ctx 2048 -p hello >out 2>err &&
	test_must_be_empty out &&
	test_grep "error: a KV cache of 2048 tokens needs .* (.* bytes per token in f32) and 977 KiB of memory is available: use a shorter context" err &&
	GM_MEM_AVAILABLE=1000000 git infer -m "$POCKET" --ctx 16 --prompt-ids 1,2 -n 2 --print-ids >out &&
	test -s out
'

test_expect_success 'a missing model: 1' '
	test_expect_code 1 git infer -m nosuch -p hello >out 2>err &&
	test_must_be_empty out &&
	echo "error: '\''nosuch'\'' is neither a model directory nor a registered model (see '\''git model list'\'')" >expect &&
	test_cmp expect err
'

test_expect_success 'a token id past the vocabulary: 1' '
	test_expect_code 1 git infer -m "$POCKET" --prompt-ids 1,4096 -n 1 2>err &&
	test_grep "^error: .*4096" err &&
	test_line_count = 1 err
'

test_expect_success 'an empty prompt: 1' '
	test_expect_code 1 git infer -m "$POCKET" -p "" -n 1 2>err &&
	echo "error: the prompt is empty: there is nothing to continue" >expect &&
	test_cmp expect err
'

test_expect_success 'bad options: one line, 129' '
	for args in "--temperature -1" "--top-p 2" "--top-p 0" "--min-p 1.5" "--repeat-penalty 0" \
		"--top-k -1" "-n -2" "--seed x" "--seed -1" "--threads -1" "--temperature abc" \
		"--prompt-ids 1,x" "--prompt-ids 1,,2" "--bogus"
	do
		test_expect_code 129 git infer -m "$POCKET" -p "And" $args >out 2>err &&
		test_must_be_empty out &&
		test_line_count = 1 err &&
		test_grep "^error: " err || return 1
	done
'

test_expect_success 'conflicting options: 129' '
	test_expect_code 129 git infer -m "$POCKET" -p And --prompt-ids 1,2 2>err &&
	echo "error: -p and --prompt-ids cannot be combined (see '\''git infer -h'\'')" >expect &&
	test_cmp expect err &&
	test_expect_code 129 git infer -m "$POCKET" --chat --prompt-ids 1,2 2>err &&
	test_grep "^error: --chat takes a text prompt" err &&
	for ids in 1,x,3 "" 1,,2 -1 1,2,
	do
		test_expect_code 129 git infer -m "$POCKET" --prompt-ids "$ids" 2>err &&
		test_grep "^error: option .--prompt-ids. expects token ids" err || return 1
	done &&
	test_expect_code 129 git infer -m "$POCKET" -p And --system hi 2>err &&
	test_grep "^error: --system, --think and --no-think go with --chat" err &&
	test_expect_code 129 git infer -m "$POCKET" --tokenize --check 2>err &&
	test_grep "cannot be combined" err &&
	test_expect_code 129 git infer -m "$POCKET" --tokenize -p And 2>err &&
	test_grep "^error: --tokenize does not take a prompt" err &&
	test_expect_code 129 git infer -m "$POCKET" -p And --json 2>err &&
	test_grep "^error: --json goes with --check" err
'

test_expect_success 'no prompt and no terminal: 129' '
	test_expect_code 129 git infer -m "$POCKET" </dev/null >out 2>err &&
	test_must_be_empty out &&
	echo "error: missing -p <prompt> (an interactive chat needs a terminal) (see '\''git infer -h'\'')" >expect &&
	test_cmp expect err
'

test_expect_success 'errors of --tokenize and --render-chat name the file' '
	test_expect_code 1 git infer -m nosuch --tokenize </dev/null 2>err &&
	test_grep "^error: .*nosuch" err &&
	echo "{\"role\": \"user\"}" >notalist.json &&
	test_expect_code 1 git infer -m "$POCKET" --render-chat notalist.json 2>err &&
	echo "error: notalist.json: expected a JSON list of messages" >expect &&
	test_cmp expect err &&
	test_expect_code 1 git infer -m "$POCKET" --render-chat nosuch.json 2>err &&
	test_grep "^error: .*nosuch.json" err
'

test_done
