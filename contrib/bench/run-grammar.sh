#!/bin/sh
# The cost of constrained decoding (a JSON Schema) per generated token on a
# synthetic Qwen3-0.6B (bf16 random weights, the real shape and 151k-token
# vocabulary): builds contrib/bench/bench-grammar, synthesizes the model once,
# runs unconstrained and constrained decodes alternately.
#
#   contrib/bench/run-grammar.sh                       # build dir: ./build
#   BUILD_DIR=/tmp/b MODEL=/work/models/qwen3-0.6b THREADS=2 RUNS=5 contrib/bench/run-grammar.sh [-d 128] [-s schema.json]
set -e
top=$(cd "$(dirname "$0")/../.." && pwd)
build=${BUILD_DIR:-$top/build}
model=${MODEL:-$build/bench-models/qwen3-0.6b}
threads=${THREADS:-2}
runs=${RUNS:-5}

if [ ! -f "$build/Makefile" ]; then
	[ -x "$top/configure" ] || (cd "$top" && ./autogen.sh)
	mkdir -p "$build"
	(cd "$build" && "$top/configure")
fi
make -C "$build" -j"$(nproc 2>/dev/null || echo 2)" git-model/git-model contrib/bench/bench-grammar >/dev/null
if [ ! -f "$model/model.safetensors" ]; then
	echo "synthesizing $model (1.2 GB) ..."
	"$build/git-model/git-model" synth qwen3-0.6b "$model"
fi
exec "$build/contrib/bench/bench-grammar" -t "$threads" -r "$runs" "$@" "$model"
