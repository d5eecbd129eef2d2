#!/bin/sh
test_description='git infer --serve against abusive clients: held and trickled connections, per-client limits, queued tokens'
. "${GM_SRC_DIR:-$(cd "$(dirname "$0")/.." && pwd)}/t/test-lib.sh"

POCKET="$TEST_MODELS/pocket-qwen3"
. "$GM_SRC_DIR/t/lib-serve.sh"

# metric NAME: a metric's value (NAME may hold labels) from the server "main"
metric () {
	curl -s "$(cat main.url)/metrics" | awk -v n="$1" '$1 == n { print $2 }'
}

# wait_metric NAME VALUE: until the metric has that value (at most 30 s: a
# loaded machine admits requests late, so no fixed sleep is enough)
wait_metric () {
	for i in $(seq 300); do
		test "$(metric "$1")" = "$2" && return 0
		sleep 0.1
	done
	echo "$1 is $(metric "$1"), not $2" >&2
	return 1
}

# A client on another loopback address (127.0.0.2: all of 127/8 is local)
# plays the attacker; the honest client connects from 127.0.0.1.
cat >abuse.py <<\PY
import socket, sys, time
# abuse.py PORT MODE N: N connections from 127.0.0.2 that misbehave; prints what happened
port, mode, n = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
def conn():
    s = socket.socket()
    s.bind(("127.0.0.2", 0))
    s.connect(("127.0.0.1", port))
    return s
def closed(s, wait):
    # True when the server closed (or reset) the connection within wait seconds
    s.settimeout(wait)
    try:
        return s.recv(4096) == b""
    except socket.timeout:
        return False
    except ConnectionError:
        return True
if mode == "hold":
    # headers announcing a body that never comes; then report how many the server kept
    socks = []
    for i in range(n):
        try:
            s = conn()
            s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                      b"Content-Length: 100\r\n\r\n")
            socks.append(s)
        except OSError:
            pass
    time.sleep(0.5)
    kept = sum(1 for s in socks if not closed(s, 0.05))
    print("kept", kept)
    sys.stdout.flush()
    time.sleep(float(sys.argv[4]) if len(sys.argv) > 4 else 3)
elif mode in ("trickle-headers", "trickle-body"):
    # one byte every 0.2 s, forever: measure when the server gives up
    s = conn()
    if mode == "trickle-headers":
        data = b"GET /v1/models HTTP/1.1\r\nHost: x\r\n" + b"X-Slow: " + b"a" * 1000
    else:
        s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  b"Content-Length: 1000\r\n\r\n")
        data = b" " * 999
    t0 = time.time()
    for b in data:
        try:
            s.sendall(bytes([b]))
        except OSError:
            break
        if closed(s, 0.2):
            break
    print("closed after %.1f s" % (time.time() - t0))
PY

test_expect_success PYTHON3 'setup: a server with short read deadlines and a small per-client limit' '
	start_server main -m "$POCKET" --threads 1 --header-timeout 2 --body-timeout 2 \
		--max-client-connections 8 --max-connections 64 &&
	port=$(sed "s/.*://" main.url) &&
	echo "$port" >port &&
	test "$(metric "gitmodel_connections_timed_out_total{phase=\"headers\"}")" = 0
'

test_expect_success PYTHON3 'one client holding 64 connections keeps at most 8, and others are served at once' '
	{ python3 abuse.py $(cat port) hold 64 4 >hold.out & } &&
	hold=$! &&
	sleep 1 &&
	start=$(date +%s) &&
	curl -s -m 10 "$(cat main.url)/v1/completions" -H "Content-Type: application/json" \
		-d "{\"model\": \"pocket-qwen3\", \"prompt\": \"Hello\", \"max_tokens\": 4, \"temperature\": 0}" >answer.json &&
	end=$(date +%s) &&
	grep "\"finish_reason\"" answer.json &&
	test $((end - start)) -le 3 &&
	wait $hold &&
	cat hold.out &&
	kept=$(sed -n "s/^kept //p" hold.out) &&
	test "$kept" -le 8 && test "$kept" -ge 1
'

test_expect_success PYTHON3 'the held connections are closed once their body is overdue' '
	test "$(metric "gitmodel_connections_timed_out_total{phase=\"body\"}")" -ge 1
'

test_expect_success PYTHON3 'headers trickled a byte at a time are cut at the header deadline' '
	python3 abuse.py $(cat port) trickle-headers 1 >th.out &&
	cat th.out &&
	secs=$(sed -n "s/^closed after \([0-9]*\)\..*/\1/p" th.out) &&
	test "$secs" -ge 1 && test "$secs" -le 4 &&
	test "$(metric "gitmodel_connections_timed_out_total{phase=\"headers\"}")" -ge 1
'

test_expect_success PYTHON3 'a body trickled a byte at a time is cut at the body deadline' '
	before=$(metric "gitmodel_connections_timed_out_total{phase=\"body\"}") &&
	python3 abuse.py $(cat port) trickle-body 1 >tb.out &&
	cat tb.out &&
	secs=$(sed -n "s/^closed after \([0-9]*\)\..*/\1/p" tb.out) &&
	test "$secs" -ge 1 && test "$secs" -le 4 &&
	test "$(metric "gitmodel_connections_timed_out_total{phase=\"body\"}")" -gt "$before"
'

test_expect_success PYTHON3 'stop the server' '
	stop_server main
'

# A long generation (EOS banned, 8 choices of 2000 tokens) keeps the only
# slot busy while the queue fills.
test_expect_success PYTHON3 'prompt tokens waiting are capped; /health and /metrics answer while generation runs' '
	start_server main -m "$POCKET" --threads 1 --parallel 1 --queue 8 --max-queued-tokens 40 &&
	url=$(cat main.url) &&
	long="{\"model\": \"pocket-qwen3\", \"prompt\": \"Once\", \"max_tokens\": 2000, \"n\": 8, \"temperature\": 1, \"logit_bias\": {\"4093\": -100, \"4091\": -100}}" &&
	{ curl -s -m 60 "$url/v1/completions" -H "Content-Type: application/json" -d "$long" >long.json & } &&
	long_pid=$! &&
	wait_metric gitmodel_requests_running 1 &&
	q="{\"model\": \"pocket-qwen3\", \"prompt\": \"one two three four five six seven eight nine ten eleven twelve\", \"max_tokens\": 1}" &&
	{ curl -s -m 60 "$url/v1/completions" -H "Content-Type: application/json" -d "$q" >q1.json & } &&
	q1_pid=$! &&
	wait_metric gitmodel_queue_depth 1 &&
	queued=$(metric gitmodel_queued_prompt_tokens) &&
	test "$queued" -gt 0 &&
	curl -s -m 10 -o q2.json -w "%{http_code}\n" "$url/v1/completions" -H "Content-Type: application/json" \
		-d "{\"model\": \"pocket-qwen3\", \"prompt\": \"$(printf "word %.0s" $(seq 40))\", \"max_tokens\": 1}" >q2.code &&
	test "$(cat q2.code)" = 429 &&
	grep "max-queued-tokens" q2.json &&
	start=$(date +%s%N) &&
	curl -s -m 2 "$url/health" | grep "\"ok\"" &&
	curl -s -m 2 "$url/metrics" | grep "^gitmodel_requests_total" &&
	end=$(date +%s%N) &&
	test $(( (end - start) / 1000000 )) -lt 1000 &&
	kill $long_pid &&
	wait $q1_pid &&
	grep "\"finish_reason\"" q1.json &&
	test "$(metric gitmodel_queued_prompt_tokens)" = 0 &&
	stop_server main
'

test_done
