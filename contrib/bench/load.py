#!/usr/bin/env python3
"""load.py - a bounded load client for an OpenAI-compatible server on
127.0.0.1 (git infer --serve, llama-server), for contrib/bench/compare.sh.

    load.py PORT [--streams 8] [--tokens 64] [--prompt-len 16] [--seed S]
            [--ignore-eos] [--timeout 600] [--warmup]

Uses only the standard library (threads + http.client).  It asks
GET /v1/models for the model id, then
  --warmup: one request of 8 tokens, untimed (pages in, starts the workers);
  single:   one request of --tokens tokens alone (end to end: the prompt, the
            tokens, HTTP);
  stream:   the same request streamed ("stream_options": include_usage):
            its decode rate, completion tokens after the first / the time
            from the first chunk to the last (what `decode` measures for a
            tool without a server), and the time to the first chunk;
  burst:    --streams requests of --tokens tokens sent at once (each thread
            waits on a barrier, then sends), aggregate = all completion
            tokens / the time from the first send to the last answer.
Every request is POST /v1/completions with a prompt of --prompt-len token
ids (pseudo-random below 151643, different for each stream and --seed, so
no server can reuse another request's prompt), temperature 0, max_tokens
fixed; --ignore-eos adds "ignore_eos": true (llama-server's extension).
Tokens are counted from the response's usage.completion_tokens.

Prints one line of JSON: {"single_tps", "single_tokens", "stream_decode_tps",
"stream_ttft_s", "burst_tps", "burst_tokens", "burst_s", "per_stream_tokens"}.  Exits non-zero when a
request fails or a limit is passed.
"""
import argparse
import http.client
import json
import sys
import threading
import time

HOST = "127.0.0.1"  # never anything else
MAX_STREAMS = 64
MAX_TOKENS = 4096


def request(port, method, path, body, timeout):
    conn = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        data = json.dumps(body).encode() if body is not None else None
        headers = {"Content-Type": "application/json"} if data else {}
        conn.request(method, path, body=data, headers=headers)
        resp = conn.getresponse()
        text = resp.read()
        if resp.status != 200:
            raise RuntimeError("%s %s: HTTP %d: %s" % (method, path, resp.status, text[:300]))
        return json.loads(text)
    finally:
        conn.close()


def prompt_ids(seed, n):
    # the same LCG as contrib/bench/bench-forward.c
    ids = []
    for _ in range(n):
        seed = (seed * 1664525 + 1013904223) & 0xFFFFFFFF
        ids.append((seed >> 8) % 151643)
    return ids


def completion(args, model, seed, max_tokens):
    body = {"model": model, "prompt": prompt_ids(seed, args.prompt_len), "max_tokens": max_tokens,
            "temperature": 0, "stream": False}
    if args.ignore_eos:
        body["ignore_eos"] = True
    t0 = time.monotonic()
    r = request(args.port, "POST", "/v1/completions", body, args.timeout)
    t1 = time.monotonic()
    return t0, t1, int(r["usage"]["completion_tokens"])


def streamed(args, model, seed, max_tokens):
    """(time to the first chunk, decode tok/s after it, completion tokens) of one streamed request."""
    body = {"model": model, "prompt": prompt_ids(seed, args.prompt_len), "max_tokens": max_tokens,
            "temperature": 0, "stream": True, "stream_options": {"include_usage": True}}
    if args.ignore_eos:
        body["ignore_eos"] = True
    conn = http.client.HTTPConnection(HOST, args.port, timeout=args.timeout)
    try:
        t0 = time.monotonic()
        conn.request("POST", "/v1/completions", body=json.dumps(body).encode(),
                     headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        if resp.status != 200:
            raise RuntimeError("streamed POST /v1/completions: HTTP %d: %s" % (resp.status, resp.read()[:300]))
        first = last = None
        tokens = 0
        for line in resp:
            if not line.startswith(b"data: {"):
                continue
            chunk = json.loads(line[6:])
            if chunk.get("usage"):
                tokens = int(chunk["usage"]["completion_tokens"])
            if chunk.get("choices"):
                last = time.monotonic()
                first = first or last
    finally:
        conn.close()
    if first is None or tokens < 2 or last <= first:
        raise RuntimeError("streamed request: %d tokens, too few chunks to time" % tokens)
    return first - t0, (tokens - 1) / (last - first), tokens


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("port", type=int)
    ap.add_argument("--streams", type=int, default=8)
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--prompt-len", type=int, default=16)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--ignore-eos", action="store_true")
    ap.add_argument("--timeout", type=float, default=600.0, help="seconds, per request")
    ap.add_argument("--warmup", action="store_true")
    args = ap.parse_args()
    if not (1 <= args.streams <= MAX_STREAMS and 1 <= args.tokens <= MAX_TOKENS
            and 1 <= args.prompt_len <= 4096 and 0 < args.timeout <= 3600 and 0 < args.port < 65536):
        sys.exit("load.py: an argument is out of range")

    models = request(args.port, "GET", "/v1/models", None, 30)
    model = models["data"][0]["id"]
    base = args.seed * 1000
    if args.warmup:
        completion(args, model, base + 999, 8)

    t0, t1, n = completion(args, model, base + 998, args.tokens)
    single_tps, single_tokens = n / (t1 - t0), n
    ttft, stream_tps, _ = streamed(args, model, base + 997, args.tokens)

    barrier = threading.Barrier(args.streams)
    results = [None] * args.streams

    def stream(i):
        try:
            barrier.wait(timeout=60)
            results[i] = completion(args, model, base + i, args.tokens)
        except Exception as e:  # reported below, after every thread ended
            results[i] = e

    threads = [threading.Thread(target=stream, args=(i,), daemon=True) for i in range(args.streams)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(args.timeout + 120)
    errors = [r for r in results if not isinstance(r, tuple)]
    if errors:
        sys.exit("load.py: %d of %d requests failed: %s" % (len(errors), args.streams, errors[0]))
    start = min(r[0] for r in results)
    end = max(r[1] for r in results)
    tokens = [r[2] for r in results]
    print(json.dumps({"single_tps": single_tps, "single_tokens": single_tokens,
                      "stream_decode_tps": stream_tps, "stream_ttft_s": ttft,
                      "burst_tps": sum(tokens) / (end - start), "burst_tokens": sum(tokens),
                      "burst_s": end - start, "per_stream_tokens": tokens}))


if __name__ == "__main__":
    main()
