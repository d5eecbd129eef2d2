#!/bin/sh
# model-ci.sh - a CI job for a model repository, using only stock git and
# the git-model commands (no Python, no git-lfs, no network tools).
#
#   MODEL=hf:org/name [NAME=name] [PROMPT=text] [PUSH=1] contrib/ci/model-ci.sh
#
# 1. clones the model (LFS objects verified by sha256 on the way in),
# 2. checks the store (git model fsck) and loads and validates the model,
# 3. runs a short greedy generation as a smoke test,
# 4. with PUSH=1: records the smoke test's output in the repository
#    (ci/smoke.txt), commits it with git and publishes it with git model push.
#
# HF_ENDPOINT and HF_TOKEN reach the Hub (or a mirror) as for git model clone.
set -eu

: "${MODEL:?set MODEL to hf:ORG/NAME, a git URL or a path}"
NAME=${NAME:-$(basename "${MODEL#hf:}" | sed 's/@.*//; s/\.git$//')}
PROMPT=${PROMPT:-Hello}

git model clone -q "$MODEL" "$NAME"
git model fsck "$NAME"
git infer -m "$NAME" --check
git infer -m "$NAME" -p "$PROMPT" -n 8 --temperature 0 >smoke.txt
echo "smoke test: $(wc -c <smoke.txt) bytes generated"

if [ "${PUSH:-0}" = 1 ]; then
	dir=$(git model list --json | sed -n "s|.*\"path\": \"\\(.*/$NAME\\)\".*|\\1|p")
	mkdir -p "$dir/ci"
	cp smoke.txt "$dir/ci/smoke.txt"
	git -C "$dir" add ci/smoke.txt
	git -C "$dir" commit -q -m "ci: smoke test output"
	git model push -q "$NAME"
	echo "pushed $(git -C "$dir" rev-parse --short HEAD)"
fi
