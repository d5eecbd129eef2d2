#!/bin/sh
# The demo: builds git-model (installing what it needs), then runs the bundled
# model (text streamed on the CPU) and shows a synthetic one.  Run from anywhere: contrib/demo.sh
set -e
top=$(cd "$(dirname "$0")/.." && pwd)
sh "$top/contrib/build.sh" >/dev/null
b="$top/build"
PATH="$b/git-model:$b/git-infer:$b/git-train:$b/git-adapter:$PATH"
export PATH
MANPATH="$top/man:"
export MANPATH

echo "== the bundled demo model (a 5.8M-parameter Qwen3 trained on the King James Bible and fortunes)"
echo "\$ git model info contrib/models/pocket-qwen3"
git model info "$top/contrib/models/pocket-qwen3"
echo
echo "\$ git infer -m contrib/models/pocket-qwen3 --check"
git infer -m "$top/contrib/models/pocket-qwen3" --check
echo
echo "== text, streamed token by token (greedy: the same every time)"
echo "\$ git infer -m contrib/models/pocket-qwen3 -p \"And it came to pass\" -n 48 --temperature 0"
git infer -m "$top/contrib/models/pocket-qwen3" -p "And it came to pass" -n 48 --temperature 0
echo
echo "== sampled with the model's generation_config.json (seeded: reproducible), with the speed (-v)"
echo "\$ git infer -m contrib/models/pocket-qwen3 -p \"Blessed are the\" -n 48 --seed 7 -v"
git infer -m "$top/contrib/models/pocket-qwen3" -p "Blessed are the" -n 48 --seed 7 -v
echo
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
echo "== a synthetic model with the real Qwen3 tokenizer and random weights"
echo "\$ git model synth tiny $out/tiny-qwen3 --seed 1"
git model synth tiny "$out/tiny-qwen3" --seed 1
echo "\$ git model info $out/tiny-qwen3"
git model info "$out/tiny-qwen3"
echo
echo "== fine-tuning: a LoRA learns a pattern (a king, a city, a sum of gold) from 300 lines, 24 held out"
awk -v f="$out/kings.jsonl" -v g="$out/kings-eval.jsonl" 'BEGIN { split("Jerusalem Babylon Nineveh Tyre Sidon Gaza Hebron Jericho", c, " ");
	split("Abner Boaz Caleb Dan Eli Gad Hur Ira", p, " ");
	for (i = 0; i < 324; i++) { j = i < 300 ? i : (i - 300) * 13;
		printf "{\"text\": \"In the %d year the king of %s gave %s %d talents of gold, and %s was glad.\"}\n",
			j % 40 + 1, c[j % 8 + 1], p[int(j / 8) % 8 + 1], (j * 7) % 90 + 10, p[int(j / 8) % 8 + 1] > (i < 300 ? f : g) } }'
head -n 2 "$out/kings.jsonl"
echo
echo "== the model as a git repository: registered by name, weights in Git LFS (a scratch registry here)"
GIT_MODEL_REGISTRY="$out/registry.db" GIT_MODEL_HOME="$out/models"
export GIT_MODEL_REGISTRY GIT_MODEL_HOME
echo "\$ git model import contrib/models/pocket-qwen3 pocket"
git model import "$top/contrib/models/pocket-qwen3" pocket
echo "\$ git model list"
git model list
echo
echo "== fine-tuning on branch train/kings: checkpoints and the result are commits"
echo "\$ git train -m pocket --adapter kings --data kings.jsonl --eval-data kings-eval.jsonl \\"
echo "      --steps 60 --checkpoint-every 30 --lr 2e-3 --rank 8 --alpha 16"
git train -m pocket --adapter kings --data "$out/kings.jsonl" --eval-data "$out/kings-eval.jsonl" \
	--steps 60 --checkpoint-every 30 --lr 2e-3 --rank 8 --alpha 16
echo "\$ git log --oneline --decorate train/kings"
git -C "$out/models/pocket" log --oneline --decorate train/kings
echo "\$ git adapter list pocket"
git adapter list pocket
echo
echo "\$ git infer -m pocket -p \"In the 12 year the king of\" -n 20 --temperature 0"
git infer -m pocket -p "In the 12 year the king of" -n 20 --temperature 0
echo
echo "\$ git infer -m pocket -p \"In the 12 year the king of\" -n 20 --temperature 0 --adapter kings"
git infer -m pocket -p "In the 12 year the king of" -n 20 --temperature 0 --adapter kings
echo
echo "== the adapter folded into the weights, on a new branch; run straight from the object store"
echo "   (the merged weights are rounded to bf16 once, so a close greedy choice may differ)"
echo "\$ git adapter merge -m pocket kings --into merged/kings"
git adapter merge -m pocket kings --into merged/kings
echo "\$ git infer -m pocket@merged/kings -p \"In the 12 year the king of\" -n 20 --temperature 0"
git infer -m pocket@merged/kings -p "In the 12 year the king of" -n 20 --temperature 0
echo
