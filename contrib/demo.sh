#!/bin/sh
# The demo: builds git-model (installing what it needs), then shows the bundled
# model and a synthetic one.  Run from anywhere: contrib/demo.sh
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
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
echo "== a synthetic model with the real Qwen3 tokenizer and random weights"
echo "\$ git model synth tiny $out/tiny-qwen3 --seed 1"
git model synth tiny "$out/tiny-qwen3" --seed 1
echo "\$ git model info $out/tiny-qwen3"
git model info "$out/tiny-qwen3"
