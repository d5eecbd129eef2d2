#!/bin/bash
# Side by side with llama.cpp on the same random Qwen3-0.6B bf16 weights:
# decode (2 threads, 1 thread), prompt 512 (ours in both matmul modes: git
# infer's default, fast on a CPU with AVX512_BF16 (bf16 activations, as
# llama.cpp computes a bf16 model), and precise, f32; decode also precise,
# a row of its own), and the server (its default mode, git infer's: one
# request end to end, the same request streamed: its decode rate, and 8
# concurrent streams), the two tools run alternately in one sitting,
# medians, ranges and ratios; then the server's single request as a
# fraction of our own decode.  GM_MATMUL is unset: ours runs its defaults.
#
#   contrib/bench/compare.sh [-n RUNS] [--train] [--skip-check] [--quant TYPE] LLAMA_CPP_BUILD_DIR [LLAMA_CPP_SOURCE_DIR]
#
# --quant TYPE (Q8_0, Q4_0, Q4_K_M, Q5_K_M, Q6_K...): the quantized rows
# instead (decode 2 and 1 threads, prompt 512), both tools on the same GGUF
# file, the one llama-quantize makes of the bf16 GGUF ($MODEL-TYPE.gguf, made
# once).  llama-bench runs with --poll 0 there (its threads sleep instead of
# spinning when waiting, as ours do; on a loaded machine spinning costs it
# most of its time).
#
# LLAMA_CPP_BUILD_DIR is a CMake build of llama.cpp made by the user (see
# contrib/bench/README.md, "Side by side with llama.cpp"); it must hold
# llama-bench and llama-server (in bin/ or at its top).  The source directory,
# only used to print its version, is read from the build's CMakeCache.txt when
# not given.  Nothing here is part of `make check`.
#
# Environment: BUILD_DIR (ours, default ./build), MODEL (safetensors directory,
# default $BUILD_DIR/bench-models/qwen3-0.6b), GGUF (default
# $MODEL-bf16.gguf), PYTHON (default python3), RUNS (default 5).
set -eu
unset GM_MATMUL

usage() {
	echo "usage: contrib/bench/compare.sh [-n RUNS] [--train] [--skip-check] [--quant TYPE] LLAMA_CPP_BUILD_DIR [LLAMA_CPP_SOURCE_DIR]" >&2
	exit 129
}

runs=${RUNS:-5}
train=0
check=1
quant=
while [ $# -gt 0 ]; do
	case "$1" in
	-n) [ $# -ge 2 ] || usage; runs=$2; shift 2 ;;
	--train) train=1; shift ;;
	--skip-check) check=0; shift ;;
	--quant) [ $# -ge 2 ] || usage; quant=$2; check=0; shift 2 ;;
	-h|--help) usage ;;
	-*) usage ;;
	*) break ;;
	esac
done
[ $# -ge 1 ] && [ $# -le 2 ] || usage
case "$runs" in ''|*[!0-9]*) usage ;; esac
[ "$runs" -ge 1 ] || usage

here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/../.." && pwd)
build=${BUILD_DIR:-$top/build}
model=${MODEL:-$build/bench-models/qwen3-0.6b}
gguf=${GGUF:-$model-bf16.gguf}
py=${PYTHON:-python3}
llb=$(cd "$1" && pwd)
llsrc=${2:-}

find_bin() {
	for d in "$llb/bin" "$llb"; do
		[ -x "$d/$1" ] && { echo "$d/$1"; return; }
	done
	echo "compare.sh: no $1 in $llb/bin or $llb (build it: see contrib/bench/README.md)" >&2
	exit 1
}
llama_bench=$(find_bin llama-bench)
llama_server=$(find_bin llama-server)
[ -z "$quant" ] || llama_quantize=$(find_bin llama-quantize)
if [ -z "$llsrc" ] && [ -f "$llb/CMakeCache.txt" ]; then
	llsrc=$(sed -n 's/^CMAKE_HOME_DIRECTORY:INTERNAL=//p' "$llb/CMakeCache.txt")
fi
command -v "$py" >/dev/null || { echo "compare.sh: needs $py (Debian: python3)" >&2; exit 1; }

# ---------------------------------------------------------------- build, models
if [ ! -f "$build/Makefile" ]; then
	[ -x "$top/configure" ] || (cd "$top" && ./autogen.sh)
	mkdir -p "$build"
	(cd "$build" && "$top/configure")
fi
make -C "$build" -j"$(nproc 2>/dev/null || echo 2)" git-model/git-model git-infer/git-infer bench >/dev/null
git_model=$build/git-model/git-model
git_infer=$build/git-infer/git-infer
bench_forward=$build/contrib/bench/bench-forward

if [ ! -f "$model/model.safetensors" ]; then
	echo "synthesizing $model (1.2 GB) ..."
	"$git_model" synth qwen3-0.6b "$model"
fi
if [ ! -f "$gguf" ]; then
	echo "writing $gguf (the same weights as GGUF, 1.2 GB) ..."
	"$py" "$here/qwen3-gguf.py" "$model" "$gguf"
fi

poll=
ours_model=$model
if [ -n "$quant" ]; then
	qgguf=$model-$quant.gguf
	if [ ! -f "$qgguf" ]; then
		echo "writing $qgguf (llama-quantize $quant) ..."
		"$llama_quantize" "$gguf" "$qgguf" "$quant" >/dev/null 2>&1 ||
			{ echo "compare.sh: llama-quantize $quant failed" >&2; exit 1; }
	fi
	gguf=$qgguf
	ours_model=$qgguf
	poll="--poll 0"
fi

tmp=$(mktemp -d "${TMPDIR:-/tmp}/gm-compare.XXXXXX")
server_pid=
cleanup() {
	if [ -n "$server_pid" ]; then
		kill "$server_pid" 2>/dev/null || true
		wait "$server_pid" 2>/dev/null || true
	fi
	rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---------------------------------------------------------------- the machine
echo "== machine"
date -u '+date: %Y-%m-%d %H:%M UTC'
echo "cpu: $(lscpu 2>/dev/null | sed -n 's/^Model name: *//p' | head -1)," \
	"family $(lscpu 2>/dev/null | sed -n 's/^CPU family: *//p' | head -1)," \
	"model $(lscpu 2>/dev/null | sed -n 's/^Model: *//p' | head -1)"
echo "cpus: $(nproc) online; flags: $(grep -m1 -o -w -E 'avx2|avx512f|avx512bw|avx512_vnni|avx512_bf16|avx512_vp2intersect|amx_bf16|amx_tile' /proc/cpuinfo | sort -u | tr '\n' ' ')"
echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "git-model: $(git -C "$top" describe --always --dirty 2>/dev/null || echo unknown)"
llver=$("$llama_server" --version 2>&1 | grep -m1 '^version' || true)
echo "llama.cpp: ${llver:-unknown}${llsrc:+, source $llsrc}$( [ -n "$llsrc" ] && git -C "$llsrc" rev-parse --short HEAD 2>/dev/null | sed 's/^/ commit /')"
echo "model: $model, $gguf"
echo

# ---------------------------------------------------------------- helpers
free_port() {
	"$py" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# wait_health PORT: until GET /health answers 200 (the model is loaded), 120 s at most
wait_health() {
	"$py" - "$1" <<'EOF'
import http.client, sys, time
deadline = time.monotonic() + 120
while time.monotonic() < deadline:
    try:
        c = http.client.HTTPConnection("127.0.0.1", int(sys.argv[1]), timeout=5)
        c.request("GET", "/health")
        if c.getresponse().status == 200:
            sys.exit(0)
    except OSError:
        pass
    time.sleep(0.3)
sys.exit("compare.sh: the server did not become healthy in 120 s")
EOF
}

stop_server() {
	kill "$server_pid" 2>/dev/null || true
	wait "$server_pid" 2>/dev/null || true
	server_pid=
}

# start_server ours|llama PORT
start_server() {
	if [ "$1" = ours ]; then
		"$git_infer" -m "$model" --serve "127.0.0.1:$2" --parallel 8 --threads 2 --ctx 256 \
			>"$tmp/server-$1.log" 2>&1 &
	else
		# -c is the context of all slots together: 8 x 256
		"$llama_server" -m "$gguf" --host 127.0.0.1 --port "$2" -np 8 -t 2 -c 2048 \
			>"$tmp/server-$1.log" 2>&1 &
	fi
	server_pid=$!
	wait_health "$2" || { cat "$tmp/server-$1.log" >&2; exit 1; }
}

# record NAME VALUE: one sample of one row
record() {
	[ -n "$2" ] || { echo "compare.sh: no number for $1" >&2; exit 1; }
	echo "$2" >>"$tmp/$1"
}

# bench-forward: prints "| prompt N | tok/s | ..." and "| decode N (after 16) | tok/s | ..."
ours_forward() { # THREADS PROMPT DECODE ROW_WANTED(prompt|decode); GM_MATMUL from the environment
	"$bench_forward" -t "$1" -r 1 -p "$2" -d "$3" "$ours_model" >"$tmp/bf.out"
	awk -F'|' -v w="$4" '$2 ~ "^ *" w " " { gsub(/ /, "", $3); print $3 }' "$tmp/bf.out"
}

# llama-bench: one test, its tok/s
theirs_bench() { # THREADS PROMPT GEN DEPTH
	# shellcheck disable=SC2086
	"$llama_bench" -m "$gguf" -t "$1" -p "$2" -n "$3" -d "$4" -r 1 $poll -o json >"$tmp/lb.json" 2>"$tmp/lb.err" ||
		{ cat "$tmp/lb.err" >&2; exit 1; }
	"$py" -c 'import json, sys; print("%.2f" % json.load(open(sys.argv[1]))[0]["avg_ts"])' "$tmp/lb.json"
}

# server_load ours|llama RUN: starts the server, runs load.py, stops it
server_load() {
	local port extra=
	port=$(free_port)
	start_server "$1" "$port"
	[ "$1" = llama ] && extra=--ignore-eos
	# Every run sends the same prompts (seed 1; each server starts afresh, so
	# nothing is cached across runs): llama-server answers 500 when random
	# weights generate bytes that are not UTF-8, which some prompts provoke.
	"$py" "$here/load.py" "$port" --warmup --streams 8 --tokens 64 --seed 1 $extra >"$tmp/load.json" ||
		{ stop_server; cat "$tmp/server-$1.log" >&2; exit 1; }
	stop_server
	"$py" - "$tmp/load.json" "$tmp" "$1" <<'EOF'
import json, sys
r = json.load(open(sys.argv[1]))
d, who = sys.argv[2], sys.argv[3]
open("%s/single.%s" % (d, who), "a").write("%.2f\n" % r["single_tps"])
open("%s/stream.%s" % (d, who), "a").write("%.2f\n" % r["stream_decode_tps"])
open("%s/burst.%s" % (d, who), "a").write("%.2f\n" % r["burst_tps"])
open("%s/tokens.%s" % (d, who), "a").write("%d %s\n" % (r["single_tokens"], r["per_stream_tokens"]))
EOF
}

# ---------------------------------------------------------------- same weights, same tokens?
if [ "$check" = 1 ]; then
	echo "== same model: greedy token ids after a 16-token prompt (8 tokens)"
	ids=$("$py" -c 'import sys; sys.path.insert(0, sys.argv[1]); import importlib; l = importlib.import_module("load"); print(",".join(map(str, l.prompt_ids(7, 16))))' "$here")
	echo "prompt ids: $ids"
	ours_ids=$("$git_infer" -m "$model" --prompt-ids "$ids" --print-ids --temperature 0 -n 8 --threads 2 2>/dev/null | tr -d ' \n')
	port=$(free_port)
	start_server llama "$port"
	theirs_ids=$("$py" - "$port" "$ids" <<'EOF'
import http.client, json, sys
c = http.client.HTTPConnection("127.0.0.1", int(sys.argv[1]), timeout=300)
body = {"prompt": [int(x) for x in sys.argv[2].split(",")], "n_predict": 8, "temperature": 0, "top_k": 1,
        "ignore_eos": True, "return_tokens": True, "cache_prompt": False}
c.request("POST", "/completion", body=json.dumps(body), headers={"Content-Type": "application/json"})
r = json.loads(c.getresponse().read())
print(",".join(str(t) for t in r["tokens"]))
EOF
)
	stop_server
	echo "git infer:    $ours_ids"
	echo "llama-server: $theirs_ids"
	if [ "$ours_ids" = "$theirs_ids" ]; then
		echo "identical"
	else
		echo "DIFFERENT: the two do not compute the same model; the timings below compare different work" >&2
		exit 1
	fi
	echo
fi

# ---------------------------------------------------------------- timings
# Each run does every workload once per tool; which tool goes first alternates
# from run to run, so a drift of the machine's speed hurts both alike.
echo "== runs: $runs (ours and llama.cpp alternating; load average at start $(cut -d' ' -f1-3 /proc/loadavg))"
for r in $(seq 1 "$runs"); do
	if [ $((r % 2)) = 1 ]; then order="ours llama"; else order="llama ours"; fi
	for who in $order; do
		if [ "$who" = ours ]; then
			v=$(ours_forward 2 1 128 decode); record decode2.ours "$v"
			if [ -z "$quant" ]; then # the other mode
				v=$(GM_MATMUL=precise ours_forward 2 1 128 decode); record decode2precise.ours "$v"
			fi
		else
			v=$(theirs_bench 2 0 128 16); record decode2.llama "$v"; record decode2precise.llama "$v"
		fi
	done
	for who in $order; do
		if [ "$who" = ours ]; then
			v=$(ours_forward 1 1 128 decode); record decode1.ours "$v"
		else
			v=$(theirs_bench 1 0 128 16); record decode1.llama "$v"
		fi
	done
	for who in $order; do
		if [ "$who" = ours ]; then
			v=$(ours_forward 2 512 1 prompt); record prompt.ours "$v"
			if [ -z "$quant" ]; then # (the mode applies to bf16 weights only)
				v=$(GM_MATMUL=precise ours_forward 2 512 1 prompt); record promptprecise.ours "$v"
			fi
		else
			v=$(theirs_bench 2 512 0 0); record prompt.llama "$v"; record promptprecise.llama "$v"
		fi
	done
	if [ -z "$quant" ]; then
		for who in $order; do
			server_load "$who" "$r"
		done
	fi
	echo "run $r/$runs done, load average $(cut -d' ' -f1-3 /proc/loadavg)"
done
echo

# ---------------------------------------------------------------- the table
"$py" - "$tmp" "$runs" "$quant" <<'EOF'
import os, statistics, sys
d, runs, quant = sys.argv[1], int(sys.argv[2]), sys.argv[3]
rows = [("decode", "decode 128 tokens after 16, 2 threads (tok/s)", "decode2"),
        ("decode", "decode 128 tokens after 16, 2 threads, --matmul precise (f32) (tok/s)",
         "decode2precise"),
        ("decode", "decode 128 tokens after 16, 1 thread (tok/s)", "decode1"),
        ("prompt", "prompt 512 tokens, 2 threads, our default matmul (fast: bf16 activations, as llama.cpp) "
         "(tok/s)", "prompt"),
        ("prompt", "prompt 512 tokens, 2 threads, --matmul precise (f32) (tok/s)", "promptprecise"),
        ("server", "server (its default mode), 1 request of 64 tokens, --parallel 8 / -np 8 (tok/s)",
         "single"),
        ("server", "server, the same request streamed: decode rate after the first token (tok/s)", "stream"),
        ("server", "server, 8 concurrent requests of 64 tokens, aggregate (tok/s)", "burst")]

def read(name):
    with open("%s/%s" % (d, name)) as f:
        return [float(x) for x in f.read().split()]

def num(x):
    return "%.1f" % x if x >= 10 else "%.2f" % x

def cell(v):
    return "%s (%s-%s)" % (num(statistics.median(v)), num(min(v)), num(max(v)))

if quant:
    rows = [(w, "%s, %s" % (label.replace(", our default matmul (fast: bf16 activations, as llama.cpp)", ""), quant),
             key) for w, label, key in rows if w != "server" and key not in ("promptprecise", "decode2precise")]
print("| workload | git-model | llama.cpp | ratio |")
print("| --- | --- | --- | --- |")
for _, label, key in rows:
    a, b = read(key + ".ours"), read(key + ".llama")
    print("| %s | %s | %s | %.2f |" % (label, cell(a), cell(b), statistics.median(a) / statistics.median(b)))
print()
print("medians of %d runs (min-max); ratio = git-model median / llama.cpp median" % runs)
if not quant:
    for dkey, dwhat in (("decode2", "decode 2 threads (the same mode)"),):
        dec = statistics.median(read(dkey + ".ours"))
        for key, what in (("single", "1 request end to end (its 16-token prompt, HTTP)"),
                          ("stream", "1 request streamed, decode rate")):
            print("git-model server, %s / git-model %s: %.2f" % (what, dwhat, statistics.median(read(key + ".ours")) / dec))
for who, name in (("ours", "git-model"), ("llama", "llama.cpp")):
    if not os.path.exists("%s/tokens.%s" % (d, who)):
        continue
    with open("%s/tokens.%s" % (d, who)) as f:
        print("completion tokens per run (single, 8 streams), %s: %s" % (name, "; ".join(f.read().split("\n")[:-1])))
EOF
echo "load average at end: $(cut -d' ' -f1-3 /proc/loadavg)"

if [ "$train" = 1 ]; then
	echo
	echo "== training (contrib/bench/run-train.sh; git-model only)"
	BUILD_DIR=$build MODEL=$model "$here/run-train.sh"
fi
