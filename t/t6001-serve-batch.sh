#!/bin/sh
test_description='git infer --serve: continuous batching, chunked prefill, the prefix cache, KV memory limits'
. "${GM_SRC_DIR:-$(cd "$(dirname "$0")/.." && pwd)}/t/test-lib.sh"

POCKET="$TEST_MODELS/pocket-qwen3"
MODEL=pocket-qwen3

. "$GM_SRC_DIR/t/lib-serve.sh"

# metric NAME [SERVER]: the value of a metric without labels
metric () {
	curl -s "$(cat "${2:-main}.url")/metrics" | sed -n "s/^$1 //p"
}

# batch REQUESTS.json [SERVER]: t/serve/batch.mjs against a server
batch () {
	GM_SERVE_URL=$(cat "${2:-main}.url") node "$GM_SRC_DIR/t/serve/batch.mjs" "$1"
}

# node_json EXPR < FILE
node_json () {
	node -e 'const j = JSON.parse(require("fs").readFileSync(0, "utf8")); console.log(eval(process.argv[1]))' "$1"
}

# same_text EXPECT GOT: equal but for trailing newlines (git infer ends with one)
same_text () {
	test "$(cat "$1")" = "$(cat "$2")" || {
		echo "want: $(cat "$1")"
		echo "got:  $(cat "$2")"
		return 1
	}
}

test_expect_success PYTHON3 'setup: a LoRA for the pocket model, requests and their git infer references' '
	mkdir -p model/$MODEL/adapters &&
	for f in "$POCKET"/*
	do
		ln -s "$f" model/$MODEL/ || return 1
	done &&
	pocket_lora model/$MODEL/adapters/01_kjv 1 &&
	cat >mkreq.py <<-\PY &&
	import json, shlex, sys
	# mkreq.py NAME SPEC...: NAME.json (the requests for batch.mjs) and NAME.sh (git infer writing
	# expect.I for each); a SPEC is JSON: {"prompt" or "chat" or "ids", "n", "stream", "adapter",
	# "scale", "stop", "seed", "temperature", "delay_ms"}
	model = "model/pocket-qwen3"
	name, specs = sys.argv[1], [json.loads(a) for a in sys.argv[2:]]
	reqs, cmds = [], []
	for i, s in enumerate(specs):
	    body = {"model": "pocket-qwen3", "max_tokens": s["n"], "temperature": s.get("temperature", 0)}
	    cmd = ["git", "infer", "-m", model, "-n", str(s["n"]), "--temperature", str(s.get("temperature", 0))]
	    if "chat" in s:
	        path = "/v1/chat/completions"
	        body["messages"] = [{"role": "user", "content": s["chat"]}]
	        cmd += ["--chat", "-p", s["chat"]]
	    elif "ids" in s:
	        path = "/v1/completions"
	        body["prompt"] = s["ids"]
	        cmd += ["--prompt-ids", ",".join(map(str, s["ids"]))]
	    else:
	        path = "/v1/completions"
	        body["prompt"] = s["prompt"]
	        cmd += ["-p", s["prompt"]]
	    if "adapter" in s:
	        body["adapters"] = [{"name": s["adapter"], "scale": s.get("scale", 1)}]
	        cmd += ["--adapter", "%s:%g" % (s["adapter"], s.get("scale", 1))]
	    if "stop" in s:
	        body["stop"] = s["stop"]
	        cmd += ["--stop", s["stop"]]
	    if "seed" in s:
	        body["seed"] = s["seed"]
	        cmd += ["--seed", str(s["seed"])]
	    if s.get("stream"):
	        body["stream"] = True
	        body["stream_options"] = {"include_usage": True}
	    reqs.append({"path": path, "body": body, "delay_ms": s.get("delay_ms", 0)})
	    cmds.append(" ".join(map(shlex.quote, cmd)) + " >expect.%d || exit 1" % i)
	json.dump(reqs, open(name + ".json", "w"))
	open(name + ".sh", "w").write("\n".join(cmds) + "\n")
	PY
	long=$(i=0; while [ $i -lt 36 ]; do printf "And it came to pass, when the king heard the words of the law, that he rent his clothes. "; i=$((i + 1)); done) &&
	printf "%s" "$long" | git infer -m model/$MODEL --tokenize >long.ids &&
	echo "long prompt: $(node_json j.length <long.ids) tokens" &&
	test "$(node_json "j.length > 400" <long.ids)" = true &&
	python3 mkreq.py mixed \
		"{\"prompt\":\"And it came to pass\",\"n\":40}" \
		"{\"prompt\":\"In the beginning\",\"n\":24,\"stream\":true}" \
		"{\"prompt\":\"The LORD\",\"n\":16,\"adapter\":\"kjv\"}" \
		"{\"prompt\":\"And God said\",\"n\":32,\"stream\":true,\"adapter\":\"kjv\",\"scale\":0.5}" \
		"{\"prompt\":\"$long\",\"n\":8,\"delay_ms\":300}" \
		"{\"chat\":\"Who was Moses?\",\"n\":20,\"stream\":true}" \
		"{\"ids\":[1,2,3],\"n\":12}" \
		"{\"prompt\":\"Blessed are\",\"n\":30,\"stop\":\"the\"}" \
		"{\"prompt\":\"The LORD\",\"n\":30,\"temperature\":0.8,\"seed\":7,\"stream\":true}" \
		"{\"prompt\":\"And the earth was\",\"n\":64,\"stream\":true}" &&
	sh mixed.sh &&
	test_set_prereq READY &&
	if command -v node >/dev/null
	then
		test_set_prereq NODE
	fi
'

test_expect_success READY,NODE 'start: 8 sequences batched, prompts read 32 tokens a step' '
	start_server main -m model/$MODEL --parallel 8 --queue 40 --prefill-chunk 32 &&
	test "$(metric gitmodel_parallel_sequences)" = 8 &&
	test "$(metric gitmodel_kv_blocks_total)" -ge $((8 * 2048 / 16)) &&
	test "$(metric gitmodel_kv_blocks_used)" = 0
'

test_expect_success READY,NODE '10 mixed concurrent requests each get what git infer gives alone' '
	s0=$(metric gitmodel_batch_steps_total) &&
	t0=$(metric gitmodel_batch_tokens_total) &&
	batch mixed.json &&
	for i in 0 1 2 3 4 5 6 7 8 9
	do
		test "$(cat status.$i)" = 200 &&
		same_text expect.$i out.$i || return 1
	done &&
	s1=$(metric gitmodel_batch_steps_total) &&
	t1=$(metric gitmodel_batch_tokens_total) &&
	echo "$((s1 - s0)) batched steps evaluated $((t1 - t0)) tokens" &&
	# batched: far fewer steps than sequences times tokens
	test $((s1 - s0)) -lt $(((t1 - t0) / 2)) &&
	test "$(node_json j.finish <meta.7.json)" = stop &&
	test "$(node_json j.finish <meta.9.json)" = length &&
	test "$(node_json j.usage.completion_tokens <meta.9.json)" = 64 &&
	test "$(node_json j.usage.prompt_tokens <meta.4.json)" = "$(node_json j.length <long.ids)"
'

test_expect_success READY,NODE 'the streams go on while the long prompt is read in chunks' '
	# request 9 streams 64 tokens from the start; the 400-token prompt
	# arrives 0.3 s later and is read 32 tokens a step beside it
	gap=$(node_json j.gap <meta.9.json) &&
	echo "longest pause in stream 9: $gap s" &&
	test "$(node_json "j.events >= 64" <meta.9.json)" = true &&
	test "$(metric gitmodel_requests_running)" = 0 &&
	test "$(metric gitmodel_queue_depth)" = 0
'

test_expect_success READY,NODE 'a shared prompt prefix is read once: counted in /metrics, same output' '
	sys=$(i=0; while [ $i -lt 8 ]; do printf "You are a scribe of the kingdom, and you answer in the words of the prophets. "; i=$((i + 1)); done) &&
	python3 mkreq.py first "{\"prompt\":\"${sys}Tell of the flood.\",\"n\":16}" &&
	python3 mkreq.py second "{\"prompt\":\"${sys}Tell of the king.\",\"n\":16}" "{\"prompt\":\"${sys}Tell of the king.\",\"n\":16,\"delay_ms\":100}" &&
	sh first.sh && mv expect.0 expect.first &&
	sh second.sh &&
	c0=$(metric gitmodel_prompt_tokens_cached_total) &&
	batch first.json &&
	same_text expect.first out.0 &&
	c1=$(metric gitmodel_prompt_tokens_cached_total) &&
	test "$(metric gitmodel_prefix_cache_entries)" -ge 1 &&
	batch second.json &&
	same_text expect.0 out.0 &&
	same_text expect.1 out.1 &&
	c2=$(metric gitmodel_prompt_tokens_cached_total) &&
	echo "prompt tokens from the cache: $((c1 - c0)), then $((c2 - c1))" &&
	printf "%s" "${sys}Tell of the king." | git infer -m model/$MODEL --tokenize >second.ids &&
	n=$(node_json j.length <second.ids) &&
	# both forked the first request'"'"'s blocks of the shared part; the
	# second request may have forked the first one'"'"'s whole prompt
	test $((c2 - c1)) -ge $((2 * (n - 16) / 16 * 16 - 64)) &&
	test "$(metric gitmodel_kv_blocks_used)" -gt 0
'

test_expect_success READY,NODE 'an adapter request does not reuse the base model'"'"'s prefix' '
	python3 mkreq.py adapted "{\"prompt\":\"${sys}Tell of the king.\",\"n\":16,\"adapter\":\"kjv\"}" &&
	sh adapted.sh &&
	c0=$(metric gitmodel_prompt_tokens_cached_total) &&
	batch adapted.json &&
	same_text expect.0 out.0 &&
	test "$(metric gitmodel_prompt_tokens_cached_total)" = "$c0"
'

test_expect_success READY,NODE 'cancelling one stream leaves the others as they would be alone' '
	python3 mkreq.py others \
		"{\"prompt\":\"And it came to pass\",\"n\":60,\"stream\":true}" \
		"{\"prompt\":\"In the beginning\",\"n\":60}" \
		"{\"prompt\":\"And God said\",\"n\":60,\"stream\":true,\"adapter\":\"kjv\"}" &&
	sh others.sh &&
	c0=$(metric gitmodel_requests_cancelled_total) || return 1
	# the end-of-sequence tokens are banned: only the client ends this one, 0.5 s in
	(curl -sN -m 0.5 -o part -d "{\"model\":\"$MODEL\",\"prompt\":\"And\",\"max_tokens\":2000,\"stream\":true,\"logit_bias\":{\"4091\":-100,\"4093\":-100}}" "$(cat main.url)/v1/completions"; echo $? >curl.rc) 5>&- &
	batch others.json &&
	wait $! &&
	test "$(cat curl.rc)" = 28 &&
	grep "^data: {" part &&
	for i in 0 1 2
	do
		same_text expect.$i out.$i || return 1
	done &&
	i=0 &&
	until test "$(metric gitmodel_requests_cancelled_total)" = $((c0 + 1))
	do
		i=$((i + 1)) && test $i -lt 50 && sleep 0.1 || return 1
	done &&
	test "$(metric gitmodel_requests_running)" = 0
'

# A batched step computes three rows or more with gm_matmul, a sequence
# alone with gm_matvec: the same sums in another order, equal to the last
# bits of f32 or nearly.  Greedy choices are the same unless two tokens are
# within that of each other: with --kv-type bf16, token 19 of "In the
# beginning God created 28" (its two best log-probabilities 5e-4 apart) was
# seen to differ in a batch, so the lengths here stop at 18 tokens.
test_expect_success READY,NODE '32 concurrent requests: each answered right or turned away (429); memory bounded' '
	start_server many -m model/$MODEL --parallel 4 --queue 12 &&
	pid=$(cat many.pid) &&
	python3 -c "import json; json.dump([{\"path\": \"/v1/completions\", \"body\": {\"model\": \"pocket-qwen3\", \"prompt\": \"In the beginning God created %d\" % i, \"max_tokens\": 16 + i % 3, \"temperature\": 0, \"stream\": i % 3 == 0}} for i in range(32)], open(\"many.json\", \"w\"))" &&
	i=0 &&
	while [ $i -lt 32 ]
	do
		git infer -m model/$MODEL -p "In the beginning God created $i" -n $((16 + i % 3)) --temperature 0 >expect.$i || return 1
		i=$((i + 1))
	done &&
	rm -f status.* out.* &&
	batch many.json many &&
	rss0=$(sed -n "s/^VmRSS:[[:space:]]*\([0-9]*\) kB/\1/p" /proc/$pid/status) &&
	batch many.json many &&
	batch many.json many &&
	rss1=$(sed -n "s/^VmRSS:[[:space:]]*\([0-9]*\) kB/\1/p" /proc/$pid/status) &&
	ok=0 busy=0 i=0 &&
	while [ $i -lt 32 ]
	do
		case $(cat status.$i) in
		200) same_text expect.$i out.$i && ok=$((ok + 1)) || return 1 ;;
		429) grep "\"code\":\"queue_full\"" out.$i && busy=$((busy + 1)) || return 1 ;;
		*) cat out.$i; return 1 ;;
		esac
		i=$((i + 1))
	done &&
	echo "32 at once: $ok answered, $busy turned away; RSS $rss0 kB -> $rss1 kB" &&
	# 4 run, 12 wait: the other 16 are turned away at once
	test $ok -ge 16 &&
	test $busy -ge 1 &&
	test $((rss1 - rss0)) -lt 16384 &&
	test "$(metric gitmodel_kv_blocks_used many)" -le "$(metric gitmodel_kv_blocks_total many)" &&
	test "$(curl -s -o /dev/null -w "%{http_code}" "$(cat many.url)/health")" = 200 &&
	stop_server many
'

test_expect_success READY,NODE 'stop: SIGTERM ends the batched server cleanly' '
	stop_server main &&
	grep "git infer: stopped" main.log
'

test_expect_success READY,NODE 'a small KV pool: a prompt that cannot fit is a 400, a long generation ends with "length"' '
	start_server small -m model/$MODEL --parallel 2 --kv-tokens 64 &&
	test "$(metric gitmodel_kv_blocks_total small)" = 4 &&
	status=$(curl -s -o out.json -w "%{http_code}" -d "{\"model\":\"$MODEL\",\"prompt\":$(cat long.ids),\"max_tokens\":4}" "$(cat small.url)/v1/completions") &&
	test "$status" = 400 &&
	grep "\"code\":\"context_length_exceeded\"" out.json &&
	grep "KV memory" out.json &&
	status=$(curl -s -o out.json -w "%{http_code}" -d "{\"model\":\"$MODEL\",\"prompt\":\"And it came to pass\",\"max_tokens\":500,\"temperature\":0,\"logit_bias\":{\"4091\":-100,\"4093\":-100}}" "$(cat small.url)/v1/completions") &&
	test "$status" = 200 &&
	test "$(node_json "j.choices[0].finish_reason" <out.json)" = length &&
	n=$(node_json j.usage.completion_tokens <out.json) &&
	echo "generated $n tokens in a pool of 64" &&
	test $n -lt 64 && test $n -gt 32 &&
	test "$(metric gitmodel_kv_blocks_used small)" -le 4 &&
	status=$(curl -s -o out2.json -w "%{http_code}" -d "{\"model\":\"$MODEL\",\"prompt\":\"In the beginning\",\"max_tokens\":8,\"temperature\":0}" "$(cat small.url)/v1/completions") &&
	test "$status" = 200 &&
	git infer -m model/$MODEL -p "In the beginning" -n 8 --temperature 0 >expect &&
	node_json "j.choices[0].text" <out2.json >got &&
	same_text expect got &&
	stop_server small
'

# A server defaults to fast products with AVX512_BF16, as git infer does
# (the rows of a step keep their kernels, so a request gets its own bits
# in either mode); --matmul precise asks for f32.  GM_MATMUL (the tests'
# precise) is unset while the servers start.
test_expect_success READY 'the server runs fast products where the CPU has them, precise when asked' '
	unset GM_MATMUL &&
	start_server modes -m model/$MODEL -v
	ret=$?
	GM_MATMUL=precise && export GM_MATMUL &&
	test $ret = 0 &&
	if grep -qw avx512_bf16 /proc/cpuinfo && test -z "$GM_KERNELS"
	then
		grep "^serving with .*, fast matmul" modes.log
	else
		grep "^serving with .*, precise matmul" modes.log
	fi &&
	stop_server modes &&
	unset GM_MATMUL &&
	start_server modes -m model/$MODEL -v --matmul precise
	ret=$?
	GM_MATMUL=precise && export GM_MATMUL &&
	test $ret = 0 &&
	grep "^serving with .*, precise matmul" modes.log &&
	stop_server modes
'

# Fast products round the activations to bf16, which magnifies a last-bit
# difference to ~1e-3 of the logits: the mixed requests (prompts read in
# chunks beside decoding streams, adapters) must still get exactly what
# git infer gives alone in the same mode.
test_expect_success READY,NODE 'fast products: 10 mixed concurrent requests each get what git infer --matmul fast gives' '
	GM_MATMUL=fast sh mixed.sh 2>/dev/null &&
	start_server fast -m model/$MODEL --parallel 8 --prefill-chunk 32 --matmul fast &&
	batch mixed.json fast &&
	for i in 0 1 2 3 4 5 6 7 8 9
	do
		test "$(cat status.$i)" = 200 &&
		same_text expect.$i out.$i || return 1
	done &&
	stop_server fast
'

test_expect_success 'usage: the batching options go with --serve' '
	test_expect_code 129 git infer -m "$POCKET" --kv-tokens 64 -p hello 2>err &&
	grep "go with --serve" err &&
	test_expect_code 129 git infer -m "$POCKET" --no-prefix-cache -p hello 2>err &&
	grep "go with --serve" err
'

stop_leftovers
test_done
