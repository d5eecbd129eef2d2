#!/bin/sh
# Benchmarks LoRA training on the CPU on a synthetic Qwen3-0.6B (bf16 random
# weights, the real shape): builds git-model and contrib/bench/bench-train,
# synthesizes the model once, then prints the median training tokens/s and
# the peak RSS.  Defaults: the issue's workload, LoRA r16 on all seven
# projections, 256-token sequences, 2 threads.
#
#   contrib/bench/run-train.sh                  # build dir: ./build
#   BUILD_DIR=/tmp/b THREADS=2 STEPS=3 TOKENS=256 contrib/bench/run-train.sh [bench-train options]
set -e
top=$(cd "$(dirname "$0")/../.." && pwd)
build=${BUILD_DIR:-$top/build}
model=${MODEL:-$build/bench-models/qwen3-0.6b}
threads=${THREADS:-2}
steps=${STEPS:-3}
tokens=${TOKENS:-256}

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
exec "$build/contrib/bench/bench-train" -t "$threads" -s "$steps" -n "$tokens" "$@" "$model"
