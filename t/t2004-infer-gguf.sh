#!/bin/sh
test_description='git infer on GGUF files: the pocket model converted to GGUF runs as its safetensors twin; llama.cpp-quantized files give llama.cpp greedy continuations; choosing among GGUF files; a Hub -GGUF repository'
. "${GM_SRC_DIR:-$(cd "$(dirname "$0")/.." && pwd)}/t/test-lib.sh"
. "$GM_SRC_DIR/t/lib-hub.sh"

POCKET="$TEST_MODELS/pocket-qwen3"
GG="$TEST_FIXTURES/gguf"
MODELS="$HOME/.local/share/git-model/models"

# The BF16 GGUF is made again by the converter (the same bytes every time);
# the quantized ones were made by llama.cpp (t/fixtures/gguf/make-fixtures.sh).
test_expect_success PYTHON3 'setup: the pocket model as a BF16 GGUF' '
	python3 "$GM_SRC_DIR/contrib/bench/qwen3-gguf.py" "$POCKET" pocket-bf16.gguf >/dev/null &&
	test_path_is_file pocket-bf16.gguf
'

test_expect_success PYTHON3 '--check reads the config from the GGUF metadata' '
	git infer -m pocket-bf16.gguf --check >out &&
	echo "ok: pocket-bf16.gguf: qwen3, 6 layers, hidden 256, 5.8M parameters, bf16+f32, vocab 4096" >expect &&
	test_cmp expect out
'

test_expect_success PYTHON3 'the BF16 GGUF computes the same logits as the safetensors model' '
	git infer -m "$POCKET" --prompt-ids 1778,377,499,258,683,11,9,4093,300 -n 0 --logits-out st.out >/dev/null &&
	git infer -m pocket-bf16.gguf --prompt-ids 1778,377,499,258,683,11,9,4093,300 -n 0 \
		--logits-out gguf.out >/dev/null &&
	cmp st.out gguf.out
'

test_expect_success PYTHON3 'the same greedy continuations, text and chat' '
	for p in "Once upon a time" "The capital of France is" "def f(x):"; do
		git infer -m "$POCKET" -p "$p" -n 24 --temperature 0 --print-ids >expect &&
		git infer -m pocket-bf16.gguf -p "$p" -n 24 --temperature 0 --print-ids >actual &&
		test_cmp expect actual || return 1
	done &&
	git infer -m "$POCKET" --chat --system "Be brief." -p "Hello!" -n 16 --temperature 0 >expect &&
	git infer -m pocket-bf16.gguf --chat --system "Be brief." -p "Hello!" -n 16 --temperature 0 >actual &&
	test_cmp expect actual
'

test_expect_success PYTHON3 'the chat template comes from tokenizer.chat_template' '
	cat >msgs.json <<-\EOF &&
	[{"role": "system", "content": "s"}, {"role": "user", "content": "u"},
	 {"role": "assistant", "content": "a"}, {"role": "user", "content": "v"}]
	EOF
	git infer -m "$POCKET" --render-chat msgs.json >expect &&
	git infer -m pocket-bf16.gguf --render-chat msgs.json >actual &&
	test_cmp expect actual
'

# Every 10th text of the tokenizer golden (342 texts: specials, Unicode,
# digits, whitespace runs...), one git infer each.
test_expect_success PYTHON3 'the GGUF tokenizer gives the golden ids (transformers)' '
	python3 - "$TEST_FIXTURES/tokenizers/pocket-golden.jsonl" >check.out <<-\PY
	import json, subprocess, sys
	bad = 0
	for i, line in enumerate(open(sys.argv[1], encoding="utf-8")):
	    if i % 10:
	        continue
	    g = json.loads(line)
	    out = subprocess.run(["git", "infer", "-m", "pocket-bf16.gguf", "--tokenize"],
	                         input=g["text"].encode(), capture_output=True, check=True).stdout
	    if json.loads(out) != g["ids"]:
	        bad += 1
	        print("text %d %r: %s, expected %s" % (i, g["text"], out.strip(), g["ids"]))
	print("%d differ" % bad)
	PY
	echo "0 differ" >expect &&
	test_cmp expect check.out
'

# llama.cpp rounds differently (it quantizes activations in its own order);
# the pocket model has near ties: where the greedy choices differ, both
# implementations must see a tie within 0.1 (see t/lib/gguf-greedy.py).
# (Q4_0 needs the activations' per-block scale rounded to f16 as ggml's
# Q8_0 does: with an f32 scale one near tie of run 1 went the other way.)
for t in bf16 Q8_0 Q4_0 Q4_K_M Q6_K; do
	test_expect_success PYTHON3 "$t: llama.cpp's greedy continuations" '
		f="$GG/pocket-'$t'.gguf" &&
		if [ '$t' = bf16 ]; then f=pocket-bf16.gguf; fi &&
		python3 "$GM_SRC_DIR/t/lib/gguf-greedy.py" "$GG/llama-greedy.json" '$t' "$f" 0.1 >out &&
		cat out &&
		test_line_count = 3 out
	'
done

# llama-perplexity's numbers on the same files and text (make-fixtures.sh):
# ours within 1%, and the safetensors model's equal to its BF16 GGUF's.
test_expect_success PYTHON3 '--perplexity: within 1% of llama-perplexity on every file' '
	git infer -m "$POCKET" --perplexity "$GG/perplexity.txt" --ctx 128 >st.out 2>st.err &&
	test_grep "^perplexity: .* tokens, 18 chunks of 128, batch 128\$" st.err &&
	git infer -m pocket-bf16.gguf --perplexity "$GG/perplexity.txt" --ctx 128 --batch 50 >bf16.out &&
	test_cmp st.out bf16.out &&
	while read t want; do
		f="$GG/pocket-$t.gguf" &&
		if [ $t = bf16 ]; then f=pocket-bf16.gguf; fi &&
		git infer -m "$f" --perplexity "$GG/perplexity.txt" --ctx 128 >out 2>/dev/null &&
		got=$(sed -n "s/^Final estimate: PPL = \([0-9.]*\) +\/- [0-9.]*\$/\1/p" out) &&
		echo "$t: $got (llama-perplexity $want)" &&
		python3 -c "import sys; g, w = float(sys.argv[1]), float(sys.argv[2]); sys.exit(abs(g - w) > 0.01 * w)" \
			"$got" "$want" || return 1
	done <"$GG/llama-perplexity.txt" &&
	test_expect_code 1 git infer -m pocket-bf16.gguf --perplexity "$GG/perplexity.txt" --ctx 4096 2>err &&
	test_grep "tokens; --perplexity with --ctx 4096 needs at least 8192" err &&
	test_expect_code 129 git infer -m pocket-bf16.gguf --batch 8 -p x 2>err &&
	test_grep "batch goes with --perplexity" err
'

test_expect_success 'a directory of GGUF files: --quant chooses, otherwise the choice is asked for' '
	mkdir -p many &&
	cp "$GG/pocket-Q8_0.gguf" "$GG/pocket-Q4_K_M.gguf" "$GG/pocket-Q4_0.gguf" many/ &&
	printf "version https://git-lfs.github.com/spec/v1\noid sha256:%064d\nsize 1\n" 0 >many/pocket-Q6_K.gguf &&
	test_expect_code 1 git infer -m many -p x -n 1 2>err &&
	test_grep "several GGUF files: pocket-Q4_0.gguf, pocket-Q4_K_M.gguf, pocket-Q8_0.gguf; choose one with --quant" err &&
	git infer -m many --quant Q8_0 --prompt-ids 1778,377 -n 4 --temperature 0 --print-ids >actual &&
	git infer -m "$GG/pocket-Q8_0.gguf" --prompt-ids 1778,377 -n 4 --temperature 0 --print-ids >expect &&
	test_cmp expect actual &&
	git infer -m many --quant q4_k_m --check >out &&
	test_grep "^ok: many/pocket-Q4_K_M.gguf: qwen3" out &&
	git infer -m many --quant pocket-Q4_0.gguf --check >out &&
	test_grep "^ok: many/pocket-Q4_0.gguf" out &&
	test_expect_code 1 git infer -m many --quant Q4_K --check 2>err &&
	test_grep "no GGUF file matches --quant Q4_K (there are: pocket-Q4_0.gguf, pocket-Q4_K_M.gguf, pocket-Q8_0.gguf)" err &&
	test_expect_code 1 git infer -m many --quant Q6_K --check 2>err &&
	test_grep "many: pocket-Q6_K.gguf is not downloaded (an LFS pointer)" err &&
	rm many/pocket-Q8_0.gguf many/pocket-Q4_0.gguf &&
	git infer -m many --check >out &&
	test_grep "^ok: many/pocket-Q4_K_M.gguf" out &&
	test_expect_code 1 git infer -m "$GG/pocket-Q8_0.gguf" --quant Q8_0 --check 2>err &&
	test_grep "is a file already" err
'

test_expect_success 'git model info on a directory of GGUF files lists the variants' '
	mkdir -p variants &&
	cp "$GG/pocket-Q8_0.gguf" "$GG/pocket-Q4_K_M.gguf" variants/ &&
	printf "version https://git-lfs.github.com/spec/v1\noid sha256:%064d\nsize 4880896\n" 0 >variants/pocket-Q6_K.gguf &&
	git model info variants >out &&
	test_grep "^path: *variants/pocket-Q4_K_M.gguf\$" out &&
	test_grep "^dtype: *q4_k+q6_k+f32\$" out &&
	sed -n "/^variants:/,/^adapters:/p" out >actual &&
	cat >expect <<-\EOF &&
	variants:
	    pocket-Q4_K_M.gguf  Q4_K_M        3782656 bytes
	    pocket-Q6_K.gguf    -             4880896 bytes  (not fetched)
	    pocket-Q8_0.gguf    Q8_0          6277632 bytes
	adapters: none
	EOF
	test_cmp expect actual &&
	git model info --json variants >out.json &&
	test_grep "\"type\": \"Q8_0\"" out.json &&
	git model info "$GG/pocket-Q8_0.gguf" >out &&
	test_grep "^dtype: *q8_0+f32\$" out
'

test_expect_success 'hostile or unsupported GGUF files are refused with the reason' '
	head -c 100000 "$GG/pocket-Q8_0.gguf" >cut.gguf &&
	test_expect_code 1 git infer -m cut.gguf --check 2>err &&
	test_grep "cut.gguf: key .tokenizer.ggml.merges.: array of 3835 string elements does not fit" err &&
	head -c 3000000 "$GG/pocket-Q8_0.gguf" >cut.gguf &&
	test_expect_code 1 git infer -m cut.gguf --check 2>err &&
	test_grep "cut.gguf: tensor .* run past the end of the file" err &&
	printf "GGUF\003\0\0\0" >short.gguf &&
	test_expect_code 1 git infer -m short.gguf --check 2>err &&
	test_grep "short.gguf: truncated at byte 8" err
'

# Our writer and quantizers against llama.cpp's: the fixtures were made by
# the converter then llama-quantize; git model quantize makes the same bytes.
test_expect_success 'git model quantize -o: the bytes llama-quantize writes' '
	for t in Q8_0 Q4_0 Q4_K_M Q6_K; do
		git model quantize -q --type $t -o ours-$t.gguf "$POCKET" &&
		cmp ours-$t.gguf "$GG/pocket-$t.gguf" || return 1
	done &&
	git model quantize --type q4_k_m -o lower.gguf "$POCKET" >out &&
	echo "wrote lower.gguf (q4_k_m, 3782656 bytes)" >expect &&
	test_cmp expect out &&
	cmp lower.gguf "$GG/pocket-Q4_K_M.gguf"
'

test_expect_success PYTHON3 'git model quantize -o BF16: the converter'"'"'s file' '
	git model quantize -q --type BF16 -o ours-bf16.gguf "$POCKET" &&
	cmp ours-bf16.gguf pocket-bf16.gguf
'

test_expect_success 'git model quantize NAME: one commit of LFS objects, then --quant runs them' '
	cp -R "$POCKET" pk-src &&
	git model import -q pk-src pk &&
	git model quantize --type Q8_0 --type Q4_K_M pk >out &&
	test_grep "^wrote pk-Q8_0.gguf (Q8_0, 5.99 MiB)\$" out &&
	test_grep "^wrote pk-Q4_K_M.gguf (Q4_K_M, 3.61 MiB)\$" out &&
	test_grep "^committed [0-9a-f]* in pk\$" out &&
	git -C "$MODELS/pk" log -1 --format=%s >subject &&
	test_grep "^quantize [0-9a-f]\{12\} to Q8_0 (5.99 MiB), Q4_K_M (3.61 MiB)\$" subject &&
	git -C "$MODELS/pk" rev-list --count HEAD >count &&
	echo 2 >expect &&
	test_cmp expect count &&
	git -C "$MODELS/pk" cat-file blob HEAD:pk-Q8_0.gguf >pointer &&
	test_grep "^oid sha256:$(sha256sum <"$MODELS/pk/pk-Q8_0.gguf" | cut -d" " -f1)\$" pointer &&
	git -C "$MODELS/pk" status --porcelain >st &&
	test_must_be_empty st &&
	git infer -m pk --quant Q8_0 --prompt-ids 1778,377 -n 4 --temperature 0 --print-ids >actual &&
	git infer -m "$GG/pocket-Q8_0.gguf" --prompt-ids 1778,377 -n 4 --temperature 0 --print-ids >expect &&
	test_cmp expect actual &&
	git model info pk >info &&
	test_grep "^    pk-Q4_K_M.gguf  Q4_K_M        3782624 bytes\$" info &&
	test_grep "^dtype: *bf16\$" info
'

test_expect_success 'git model quantize refuses what it cannot do' '
	test_expect_code 129 git model quantize "$POCKET" 2>err &&
	test_grep "missing --type" err &&
	test_expect_code 129 git model quantize --type Q3_K_M -o x.gguf "$POCKET" 2>err &&
	test_grep "unknown --type .Q3_K_M. (known: F32 F16 BF16 Q8_0" err &&
	test_expect_code 129 git model quantize --type Q8_0 --type Q4_0 -o x.gguf "$POCKET" 2>err &&
	test_grep "one --type" err &&
	test_expect_code 129 git model quantize --type Q8_0 "$POCKET" 2>err &&
	test_grep "not a registered model.s work tree: give -o FILE" err &&
	test_expect_code 1 git model quantize --type Q8_0 -o x.gguf "$GG/pocket-Q8_0.gguf" 2>err &&
	test_grep "already a GGUF file" err &&
	test_path_is_missing x.gguf
'

# A Hub repository with one GGUF file per quantization, as ORG/NAME-GGUF
# repositories are: LFS pointers committed, the objects on the server.
publish_gguf () {
	hub_repo org/pocket-GGUF &&
	rm -rf src && git init -q -b main src &&
	echo "*.gguf filter=lfs diff=lfs merge=lfs -text" >src/.gitattributes &&
	for f in "$GG"/pocket-Q8_0.gguf "$GG"/pocket-Q4_K_M.gguf; do
		oid=$(sha256sum <"$f" | cut -d" " -f1) &&
		printf "version https://git-lfs.github.com/spec/v1\noid sha256:%s\nsize %s\n" \
			$oid $(wc -c <"$f") >src/$(basename "$f") &&
		obj=$(hub_object org/pocket-GGUF $oid) &&
		mkdir -p "$(dirname "$obj")" &&
		cp "$f" "$obj" || return 1
	done &&
	git -C src add . &&
	git -C src commit -q -m "pocket GGUF files" &&
	git -C src push -q "$HUB_ROOT/org/pocket-GGUF.git" main
}

test_expect_success PYTHON3 'clone hf:ORG/NAME-GGUF --include one quantization, then run it by name' '
	start_hub_server &&
	publish_gguf &&
	git model clone -q --include "*Q4_K_M*" hf:org/pocket-GGUF &&
	cmp "$GG/pocket-Q4_K_M.gguf" "$MODELS/pocket-GGUF/pocket-Q4_K_M.gguf" &&
	test_grep "^oid sha256:" "$MODELS/pocket-GGUF/pocket-Q8_0.gguf" &&
	test_expect_code 1 git infer -m pocket-GGUF --quant Q8_0 --check 2>err &&
	test_grep "pocket-Q8_0.gguf is not downloaded (an LFS pointer)" err &&
	git infer -m pocket-GGUF -p "Once upon a time" -n 12 --temperature 0 >actual &&
	git infer -m "$GG/pocket-Q4_K_M.gguf" -p "Once upon a time" -n 12 --temperature 0 >expect &&
	test_cmp expect actual
'

test_done
