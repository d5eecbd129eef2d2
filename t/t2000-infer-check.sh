#!/bin/sh
test_description='git infer --check: load and validate a model, print a summary'
. "${GM_SRC_DIR:-$(cd "$(dirname "$0")/.." && pwd)}/t/test-lib.sh"

# check_json FILE DIR: FILE holds the --json summary of model DIR; every field
# is checked against config.json and the safetensors header, read here.
check_json () {
	python3 - "$1" "$2" <<-\PY
	import json, struct, sys
	out, d = sys.argv[1], sys.argv[2]
	lines = open(out).read().splitlines()
	assert len(lines) == 1, lines
	o = json.loads(lines[0])
	c = json.load(open(d + "/config.json"))
	with open(d + "/model.safetensors", "rb") as f:
	    h = json.loads(f.read(struct.unpack("<Q", f.read(8))[0]))
	h.pop("__metadata__", None)
	numel = {}
	for t in h.values():
	    n = 1
	    for s in t["shape"]:
	        n *= s
	    numel[t["dtype"]] = numel.get(t["dtype"], 0) + n
	params = sum(numel.values())
	if c["tie_word_embeddings"] and "lm_head.weight" in h:
	    params -= c["vocab_size"] * c["hidden_size"]
	want = {
	    "ok": True, "path": d, "architecture": c["architectures"][0],
	    "model_type": c["model_type"], "layers": c["num_hidden_layers"],
	    "hidden_size": c["hidden_size"], "parameters": params,
	    "dtype": max(numel, key=numel.get).lower(), "vocab_size": c["vocab_size"],
	    "tensors": len(h),
	}
	assert list(o) == list(want), list(o)
	bad = {k: (o[k], v) for k, v in want.items() if o[k] != v}
	assert not bad, bad
	PY
}

test_expect_success 'setup: a copy of the f32 fixture' '
	cp -R "$TEST_FIXTURES/models/tiny-qwen3-f32" f32 &&
	test_path_is_file f32/model.safetensors
'

test_expect_success 'check the f32 fixture' '
	git infer -m "$TEST_FIXTURES/models/tiny-qwen3-f32" --check >out 2>err &&
	echo "ok: $TEST_FIXTURES/models/tiny-qwen3-f32: qwen3, 3 layers, hidden 64, 663.1K parameters, f32, vocab 4096" >expect &&
	test_cmp expect out &&
	test_must_be_empty err
'

test_expect_success 'check the tied bf16 fixture' '
	git infer --model="$TEST_FIXTURES/models/tiny-qwen3-vocab151k" --check >out &&
	echo "ok: $TEST_FIXTURES/models/tiny-qwen3-vocab151k: qwen3, 2 layers, hidden 32, 4.9M parameters, bf16, vocab 151936" >expect &&
	test_cmp expect out
'

test_expect_success 'check the pocket model' '
	git infer --check -m "$TEST_MODELS/pocket-qwen3" >out &&
	echo "ok: $TEST_MODELS/pocket-qwen3: qwen3, 6 layers, hidden 256, 5.8M parameters, bf16, vocab 4096" >expect &&
	test_cmp expect out
'

test_expect_success 'the directory is printed as given' '
	git infer -m f32 --check >out &&
	echo "ok: f32: qwen3, 3 layers, hidden 64, 663.1K parameters, f32, vocab 4096" >expect &&
	test_cmp expect out
'

test_expect_success '--json prints one line' '
	git infer -m f32 --check --json >out 2>err &&
	cat >expect <<-\EOF &&
	{ "ok": true, "path": "f32", "architecture": "Qwen3ForCausalLM", "model_type": "qwen3", "layers": 3, "hidden_size": 64, "parameters": 663120, "dtype": "f32", "vocab_size": 4096, "tensors": 36 }
	EOF
	test_cmp expect out &&
	test_must_be_empty err
'

test_expect_success PYTHON3 '--json agrees with config.json and the header (f32 fixture)' '
	git infer -m "$TEST_FIXTURES/models/tiny-qwen3-f32" --check --json >out &&
	check_json out "$TEST_FIXTURES/models/tiny-qwen3-f32"
'

test_expect_success PYTHON3 '--json agrees with config.json and the header (bf16 fixture)' '
	git infer -m "$TEST_FIXTURES/models/tiny-qwen3-vocab151k" --check --json >out &&
	check_json out "$TEST_FIXTURES/models/tiny-qwen3-vocab151k"
'

test_expect_success PYTHON3 '--json agrees with config.json and the header (pocket model)' '
	git infer -m "$TEST_MODELS/pocket-qwen3" --check --json >out &&
	check_json out "$TEST_MODELS/pocket-qwen3"
'

test_expect_success 'check a synthetic model' '
	git model synth tiny synth -q &&
	git infer -m synth --check >out &&
	echo "ok: synth: qwen3, 2 layers, hidden 64, 9.8M parameters, bf16, vocab 151936" >expect &&
	test_cmp expect out &&
	git model synth tiny synth16 -q --dtype f16 --layers 3 --no-tie &&
	git infer -m synth16 --check >out &&
	echo "ok: synth16: qwen3, 3 layers, hidden 64, 19.6M parameters, f16, vocab 151936" >expect &&
	test_cmp expect out
'

test_expect_success PYTHON3 '--json of a synthetic model' '
	git infer -m synth16 --check --json >out &&
	check_json out synth16
'

test_expect_success 'tied with a stored lm_head.weight: checked, ignored, not counted' '
	cp -R f32 tied &&
	sed "s/\"tie_word_embeddings\": false/\"tie_word_embeddings\": true/" f32/config.json >tied/config.json &&
	git infer -m tied --check -v >out 2>err &&
	echo "ok: tied: qwen3, 3 layers, hidden 64, 401.0K parameters, f32, vocab 4096" >expect &&
	test_cmp expect out &&
	test_grep "^tied: tie_word_embeddings is set: ignoring the stored lm_head.weight$" err
'

test_expect_success '-q prints nothing; the exit status tells' '
	git infer -q -m f32 --check >out 2>err &&
	test_must_be_empty out &&
	test_must_be_empty err &&
	git infer --quiet -m f32 --check --json >out &&
	test_grep "^{ \"ok\": true, \"path\": \"f32\"," out
'

test_expect_success '-v reports what was read on stderr' '
	git infer -v -m f32 --check >out 2>err &&
	echo "ok: f32: qwen3, 3 layers, hidden 64, 663.1K parameters, f32, vocab 4096" >expect &&
	test_cmp expect out &&
	echo "f32: Qwen3ForCausalLM, 36 tensors in 1 file(s), 663120 parameters" >expect &&
	test_cmp expect err
'

test_expect_success 'without -m: usage error 129' '
	test_expect_code 129 git infer --check >out 2>err &&
	test_must_be_empty out &&
	echo "error: missing -m <model>: a model directory or a registered name (see '\''git infer -h'\'')" >expect &&
	test_cmp expect err &&
	test_expect_code 129 git infer 2>err &&
	test_cmp expect err
'

test_expect_success 'without --check or a prompt, and not on a terminal: 129' '
	test_expect_code 129 git infer -m f32 </dev/null >out 2>err &&
	test_must_be_empty out &&
	echo "error: missing -p <prompt> (an interactive chat needs a terminal) (see '\''git infer -h'\'')" >expect &&
	test_cmp expect err
'

test_expect_success 'other usage errors: 129' '
	test_expect_code 129 git infer -m f32 --check extra 2>err &&
	test_grep "^error: unexpected argument .extra." err &&
	test_expect_code 129 git infer -m f32 --check --bogus 2>err &&
	test_grep "unknown option .--bogus." err &&
	test_expect_code 129 git infer --check -m 2>err &&
	test_grep "requires a value" err
'

test_expect_success '-h prints the usage on stdout and exits 129' '
	test_expect_code 129 git infer -h >out 2>err &&
	cat >expect <<-\EOF &&
	usage: git infer -m <model> -p <prompt> [<options>]
	   or: git infer -m <model> --chat [-p <prompt>] [--system <text>] [<options>]
	   or: git infer -m <model> --check [--adapter <spec>...] [--json] [-v | -q]
	   or: git infer -m <model> --tokenize < <text>
	   or: git infer -m <model> --render-chat <messages.json> [--tools <tools.json>]
	   or: git infer -m <model> --serve [<addr>:]<port> [--parallel <n>] [--queue <n>] [--kv-tokens <n>] [--adapter [<name>=]<dir>...] [--learn <name> [--learn-sparse <density>]]

	    -m, --model <model>       the model: a directory, or NAME[@REV] of a registered model
	    --quant <type>            the GGUF file to run when the model has several: Q4_K_M, Q8_0... or a file name
	    -p, --prompt <text>       the prompt (- reads standard input)
	    --chat                    apply the chat template of the model
	    --system <text>           with --chat: a system message first
	    --think                   with --chat: enable_thinking (--no-think: off)
	    --tools <file>            with --chat or --render-chat: an OpenAI tools array (JSON); calls print as JSON lines
	    --tool-choice <choice>    with --tools: auto (default), none, required or a function name
	    -n, --max-tokens <n>      at most n new tokens (0: the prompt only; -1: no limit)
	    --stop <text>             stop before this text (repeatable)
	    --grammar <file>          constrain the output to a GBNF grammar
	    --json-schema <file>      constrain the output to JSON valid under a JSON Schema
	    --adapter <spec>          apply a LoRA or sparse adapter: dir or name[:scale], with --serve [name=]dir (repeatable)

	sampling (defaults from generation_config.json)
	    --temperature <t>         0: greedy
	    --top-k <k>               keep the k most likely tokens (0: off)
	    --top-p <p>               keep the most likely tokens up to mass p (1: off)
	    --min-p <p>               drop tokens under p times the top one (0: off)
	    --repeat-penalty <x>      penalize tokens already seen (1: off)
	    --seed <n>                random seed (default: random): same seed, same text

	resources
	    --threads <n>             threads (default: all CPUs)
	    --ctx <n>                 context length in tokens (default: from the model, at most 4096)
	    --kv-type <type>          KV cache in f32 (default), auto (the dtype of the model), bf16 or f16
	    --matmul <mode>           products of bf16 weights: fast (bf16 activations; the default with AVX512_BF16) or precise (f32)

	serving (OpenAI-compatible HTTP API)
	    --serve <addr:port>       serve the model over HTTP (addr: 127.0.0.1 if left out; port 0: any)
	    --parallel <n>            requests generated at once, in one batch (default 1)
	    --queue <n>               requests that may wait; more get 429 (default 16)
	    --kv-tokens <n>           KV memory for n tokens, shared by all requests (default: parallel * ctx)
	    --prefill-chunk <n>       prompt tokens read per batched step (default 256)
	    --prefix-cache            reuse the KV of shared prompt prefixes (default; --no-prefix-cache: off)
	    --api-key <key>           clients must send this bearer token (default: $GM_API_KEY)
	    --max-body <bytes>        largest request body; more gets 413 (default 4 MiB)
	    --shutdown-timeout <s>    on SIGTERM: seconds requests may take to finish (default 10)
	    --header-timeout <s>      a request'"'"'s headers must arrive within s seconds (default 30)
	    --body-timeout <s>        and its body within s seconds after them (default 60)
	    --max-connections <n>     open connections in all (default 256)
	    --max-client-connections <n>
	                              open connections per client address (default 32)
	    --max-queued-tokens <n>   prompt tokens that may wait in all; more get 429 (default: twice the KV pool)

	fine-tuning through the API (/v1/files, /v1/fine_tuning/jobs)
	    --fine-tuning             offer the files and fine-tuning API (default; --no-fine-tuning: off)
	    --max-file-size <bytes>   largest file uploaded to /v1/files; more gets 413 (default 512 MiB)
	    --ft-threads <n>          threads of a fine-tuning job (default: half of --threads)
	    --ft-nice <n>             a job runs at this much lower priority, 0-19 (default 10)
	    --ft-checkpoint-every <n> a job checkpoints every n steps, where it resumes after a crash (default 25)
	    --ft-dir <dir>            keep files and jobs here (default: in the registry data directory)

	learning while serving
	    --learn <name>            train adapter name from POST /v1/adapters/name/examples, publish each step, commit on train/name
	    --learn-sparse <density>  serve a sparse delta keeping this fraction of entries (0.01: 99% sparse) instead of the LoRA
	    --learn-lr <x>            learning rate, constant (default 1e-3)
	    --learn-rank <r>          rank of a new adapter, alpha 2r (default 8)
	    --learn-batch <n>         examples per step (default 4)
	    --learn-epochs <n>        passes per example of weight 1 (default 4)
	    --learn-threads <n>       compute threads of the trainer (default 1)
	    --learn-share <f>         fraction of the time the trainer may compute, in (0, 1] (default 1)
	    --learn-commit-steps <n>  commit every n steps (default 100; 0: by time only)
	    --learn-commit-seconds <s>
	                              or s seconds after the first step not committed (default 60; 0: by count only)
	    --learn-max-pending <n>   examples waiting to be trained at most; more get 429 (default 4096)

	checking and debugging
	    --check                   load and validate the model, print a summary
	    --perplexity <file>       perplexity of a text file as llama-perplexity computes it (chunks of --ctx tokens, default 512)
	    --batch <n>               with --perplexity: tokens evaluated at once (default: --ctx)
	    --json                    print the summary as one JSON object
	    --prompt-ids <ids>        the prompt as token ids: 1,2,3
	    --print-ids               print the generated token ids instead of text
	    --logits-out <file>       write the logits of the prompt (safetensors)
	    --tokenize                print the token ids of standard input as JSON
	    --render-chat <file>      print the chat prompt of a JSON message list
	    --generation-prompt       with --render-chat: end with an assistant turn (default)
	    -v, --verbose             be more verbose (repeatable)
	    -q, --quiet               print only errors
	EOF
	test_cmp expect out &&
	test_must_be_empty err
'

test_expect_success '--version' '
	git infer --version >out &&
	test_grep "^git-infer version [0-9][0-9.]*$" out &&
	test_line_count = 1 out
'

test_expect_success 'a missing directory: 1' '
	test_expect_code 1 git infer -m nosuch --check >out 2>err &&
	test_must_be_empty out &&
	echo "error: '\''nosuch'\'' is neither a model directory nor a registered model (see '\''git model list'\'')" >expect &&
	test_cmp expect err &&
	test_path_is_missing "$HOME/.local/share/git-model"
'

test_expect_success 'a file instead of a directory: 1' '
	test_expect_code 1 git infer -m f32/config.json --check >out 2>err &&
	test_must_be_empty out &&
	echo "error: f32/config.json: not a model directory (a file; give the directory that holds config.json)" >expect &&
	test_cmp expect err
'

test_expect_success 'a corrupt model: 1, the message names the file' '
	cp -R f32 corrupt &&
	head -c 1000000 f32/model.safetensors >corrupt/model.safetensors &&
	test_expect_code 1 git infer -m corrupt --check >out 2>err &&
	test_must_be_empty out &&
	test_grep "^error: corrupt/model.safetensors: .*the file is truncated" err &&
	test_line_count = 1 err &&
	test_expect_code 1 git infer -m corrupt --check --json >out 2>err &&
	test_must_be_empty out &&
	test_grep "^error: corrupt/model.safetensors: " err &&
	test_expect_code 1 git infer -q -m corrupt --check >out 2>err &&
	test_grep "^error: corrupt/model.safetensors: " err
'

test_expect_success 'a broken config.json: 1, the message names the file' '
	cp -R f32 badcfg &&
	echo "{" >badcfg/config.json &&
	test_expect_code 1 git infer -m badcfg --check 2>err &&
	test_grep "^error: badcfg/config.json: invalid JSON" err &&
	sed "s/Qwen3ForCausalLM/GPT2LMHeadModel/" f32/config.json >badcfg/config.json &&
	test_expect_code 1 git infer -m badcfg --check 2>err &&
	echo "error: badcfg/config.json: architecture '\''GPT2LMHeadModel'\'' is not supported (supported: Qwen3ForCausalLM, Qwen2ForCausalLM, LlamaForCausalLM)" >expect &&
	test_cmp expect err
'

test_expect_success 'a broken generation_config.json: 1, the message names the file' '
	cp -R f32 badgen &&
	echo "{\"top_p\": 2}" >badgen/generation_config.json &&
	test_expect_code 1 git infer -m badgen --check 2>err &&
	echo "error: badgen/generation_config.json: '\''top_p'\'' must be between 0 and 1, not 2" >expect &&
	test_cmp expect err
'

test_expect_success 'a tensor of the wrong shape: 1, the message names it' '
	cp -R f32 shape &&
	sed "s/\"head_dim\": 24/\"head_dim\": 16/" f32/config.json >shape/config.json &&
	test_expect_code 1 git infer -m shape --check 2>err &&
	echo "error: shape: tensor '\''model.layers.0.self_attn.q_proj.weight'\'' has shape [96, 64], expected [64, 64] for this config.json" >expect &&
	test_cmp expect err
'

test_expect_success PYTHON3 'an integer tensor and a missing one: 1, the message names them' '
	cp -R f32 ints &&
	python3 - <<-\PY &&
	import json, struct
	p = "ints/model.safetensors"
	with open(p, "rb") as f:
	    n = struct.unpack("<Q", f.read(8))[0]
	    h = json.loads(f.read(n))
	    data = f.read()
	h["model.layers.1.mlp.up_proj.weight"]["dtype"] = "I32"
	raw = json.dumps(h).encode()
	raw += b" " * (-len(raw) % 8)
	with open(p, "wb") as f:
	    f.write(struct.pack("<Q", len(raw)) + raw + data)
	# the same file without one tensor (its bytes become a hole, so move the rest)
	del h["model.layers.1.mlp.up_proj.weight"]
	h.pop("__metadata__", None)
	blob, out = b"", {}
	for k in sorted(h, key=lambda k: h[k]["data_offsets"][0]):
	    b, e = h[k]["data_offsets"]
	    out[k] = dict(h[k], data_offsets=[len(blob), len(blob) + e - b])
	    blob += data[b:e]
	raw = json.dumps(out).encode()
	raw += b" " * (-len(raw) % 8)
	with open("missing.safetensors", "wb") as f:
	    f.write(struct.pack("<Q", len(raw)) + raw + blob)
	PY
	test_expect_code 1 git infer -m ints --check 2>err &&
	echo "error: ints: tensor '\''model.layers.1.mlp.up_proj.weight'\'' has dtype I32; expected a float type (F32, F16 or BF16)" >expect &&
	test_cmp expect err &&
	cp -R f32 missing &&
	mv missing.safetensors missing/model.safetensors &&
	test_expect_code 1 git infer -m missing --check 2>err &&
	echo "error: missing: missing tensor '\''model.layers.1.mlp.up_proj.weight'\'' ([160, 64]), needed by Qwen3ForCausalLM" >expect &&
	test_cmp expect err
'

test_done
