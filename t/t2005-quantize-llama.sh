#!/bin/sh
test_description='git model quantize on a Llama 3 style model: llama.* metadata, permuted q/k rows, llama-bpe tokenizer, llama3 rope scaling as rope_freqs; our reader runs the files as the safetensors model'
. "${GM_SRC_DIR:-$(cd "$(dirname "$0")/.." && pwd)}/t/test-lib.sh"

POCKET="$TEST_MODELS/pocket-qwen3"
MODELS="$HOME/.local/share/git-model/models"
IDS=1778,377,499,258,683,11,9,4093,300

# The pocket model re-spelled as a Llama (t/lib/pocket-llama.py): its trained
# weights without q/k norms, its vocabulary as a Llama 3 tokenizer.
test_expect_success PYTHON3 'setup: Llama models from the pocket model' '
	python3 "$GM_SRC_DIR/t/lib/pocket-llama.py" "$POCKET" llama &&
	python3 "$GM_SRC_DIR/t/lib/pocket-llama.py" "$POCKET" llama-rope --llama3-rope &&
	python3 "$GM_SRC_DIR/t/lib/pocket-llama.py" "$POCKET" llama-sp --sentencepiece &&
	git infer -m llama --check >out &&
	test_grep "^ok: llama: llama, 6 layers" out
'

test_expect_success PYTHON3 'BF16 and F32 files: the logits of the safetensors model, bit for bit' '
	git infer -m llama --prompt-ids $IDS -n 0 --logits-out st.out >/dev/null &&
	for t in BF16 F32; do
		git model quantize -q --type $t -o llama-$t.gguf llama &&
		git infer -m llama-$t.gguf --prompt-ids $IDS -n 0 --logits-out $t.out >/dev/null &&
		cmp st.out $t.out || return 1
	done &&
	git infer -m llama-BF16.gguf --check >out &&
	echo "ok: llama-BF16.gguf: llama, 6 layers, hidden 256, 5.8M parameters, bf16+f32, vocab 4096" >expect &&
	test_cmp expect out
'

test_expect_success PYTHON3 'the same tokenizer and greedy continuations' '
	for p in "Once upon a time" "The capital of France is" "def f(x):  return 12345"; do
		printf "%s" "$p" | git infer -m llama --tokenize >expect &&
		printf "%s" "$p" | git infer -m llama-BF16.gguf --tokenize >actual &&
		test_cmp expect actual &&
		git infer -m llama -p "$p" -n 16 --temperature 0 --print-ids >expect &&
		git infer -m llama-BF16.gguf -p "$p" -n 16 --temperature 0 --print-ids >actual &&
		test_cmp expect actual || return 1
	done
'

# A raw prompt gets the BOS the tokenizer adds (its post-processor, and
# add_bos_token in the GGUF), as transformers and llama.cpp encode it; a
# chat's rendered template writes its own.
test_expect_success PYTHON3 'a raw prompt starts with BOS (the post-processor, add_bos_token in the GGUF)' '
	printf "Once upon a time" | git infer -m llama --tokenize >ids &&
	bos_ids=4091,$(sed "s/[][ ]//g" ids) &&
	for m in llama llama-BF16.gguf; do
		git infer -m $m -p "Once upon a time" -n 0 --logits-out raw.out >/dev/null &&
		git infer -m $m --prompt-ids $bos_ids -n 0 --logits-out bos.out >/dev/null &&
		cmp raw.out bos.out || return 1
	done &&
	git infer -m "$POCKET" -p "Once upon a time" -n 0 --logits-out qraw.out >/dev/null &&
	printf "Once upon a time" | git infer -m "$POCKET" --tokenize >qids &&
	git infer -m "$POCKET" --prompt-ids $(sed "s/[][ ]//g" qids) -n 0 --logits-out qids.out >/dev/null &&
	cmp qraw.out qids.out
'

test_expect_success PYTHON3 'llama3 rope scaling round-trips through rope_freqs.weight' '
	git model quantize -q --type BF16 -o rope.gguf llama-rope &&
	git infer -m llama-rope --prompt-ids $IDS -n 0 --logits-out rope-st.out >/dev/null &&
	git infer -m rope.gguf --prompt-ids $IDS -n 0 --logits-out rope-gguf.out >/dev/null &&
	cmp rope-st.out rope-gguf.out &&
	! cmp -s st.out rope-st.out &&
	git model info --json rope.gguf >info.json &&
	test_grep "\"llama3\"" info.json
'

test_expect_success PYTHON3 'Q8_0 and Q4_K_M files run' '
	git model quantize --type Q8_0 -o llama-Q8_0.gguf llama >out &&
	test_grep "^wrote llama-Q8_0.gguf (Q8_0, [0-9]* bytes)\$" out &&
	git model quantize -q --type Q4_K_M -o llama-Q4_K_M.gguf llama-rope &&
	git infer -m llama-Q8_0.gguf --check >out &&
	test_grep "^ok: llama-Q8_0.gguf: llama, 6 layers, .* q8_0+f32, vocab 4096\$" out &&
	git infer -m llama-Q4_K_M.gguf --check >out &&
	test_grep "^ok: llama-Q4_K_M.gguf: llama, 6 layers, .* q4_k+q6_k+f32, vocab 4096\$" out &&
	git infer -m llama-Q4_K_M.gguf --prompt-ids $IDS -n 8 --temperature 0 --print-ids >out &&
	test_line_count = 1 out
'

test_expect_success PYTHON3 'git model quantize NAME on a registered Llama' '
	git model import -q llama ll &&
	git model quantize --type Q4_K_M ll >out &&
	test_grep "^wrote ll-Q4_K_M.gguf (Q4_K_M, " out &&
	git model info ll >info &&
	test_grep "^    ll-Q4_K_M.gguf  Q4_K_M" info
'

test_expect_success PYTHON3 'a SentencePiece-style (Llama 2) tokenizer is refused with the reason' '
	test_expect_code 1 git model quantize --type Q8_0 -o sp.gguf llama-sp 2>err &&
	test_grep "not a byte-level BPE tokenizer (BPE with byte fallback, a SentencePiece vocabulary as Llama 2.s)" err &&
	test_path_is_missing sp.gguf
'

test_done
