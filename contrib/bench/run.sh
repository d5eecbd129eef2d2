#!/bin/sh
# Benchmarks the CPU forward pass on a synthetic Qwen3-0.6B (bf16 random
# weights, the real shape): builds git-model and contrib/bench/bench-forward,
# synthesizes the model once, then prints prompt and decode tok/s (medians).
#
#   contrib/bench/run.sh                  # build dir: ./build
#   BUILD_DIR=/tmp/b THREADS=2 RUNS=5 contrib/bench/run.sh [bench-forward options]
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
make -C "$build" -j"$(nproc 2>/dev/null || echo 2)" git-model/git-model bench >/dev/null
if [ ! -f "$model/model.safetensors" ]; then
	echo "synthesizing $model (1.2 GB) ..."
	"$build/git-model/git-model" synth qwen3-0.6b "$model"
fi
exec "$build/contrib/bench/bench-forward" -t "$threads" -r "$runs" "$@" "$model"
