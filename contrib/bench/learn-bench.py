#!/usr/bin/env python3
# learn-bench.py - what learning while serving costs (git infer --serve --learn).
#
#   contrib/bench/learn-bench.py MODEL_DIR [--sparse DENSITY] [--examples N] [--threads N]
#                                [--learn-threads N] [--requests N] [--tokens N] [--busy N]
#
# Starts `git-infer -m MODEL_DIR --serve 127.0.0.1:0 --learn bench` (no commits: the numbers are
# the trainer's and the server's) and measures, one after the other:
#   update latency   an example posted to an idle trainer -> a version trained on it is
#                    servable (client side: POST, then GET /v1/adapters/bench until the version
#                    moves; and the server's own update_latency_s), median of 5;
#   examples/s       N examples posted at once (one pass each, --learn-epochs 1) / the time until
#                    none is pending;
#   serving cost     a greedy completion of --tokens tokens through the learning adapter, idle
#                    and while the trainer works, interleaved (idle, busy, idle, busy...):
#                    medians and their ratio.
# git-infer must be on PATH (build/git-infer).  Prints one JSON line, and a readable summary on stderr.
import argparse, json, os, re, signal, statistics, subprocess, sys, tempfile, time, urllib.request

ap = argparse.ArgumentParser()
ap.add_argument("model")
ap.add_argument("--sparse", type=float, default=0)
ap.add_argument("--examples", type=int, default=32)
ap.add_argument("--threads", type=int, default=1)
ap.add_argument("--learn-threads", type=int, default=1)
ap.add_argument("--requests", type=int, default=4)
ap.add_argument("--tokens", type=int, default=16)
ap.add_argument("--busy", type=int, default=64, help="examples posted to keep the trainer busy in each busy round")
a = ap.parse_args()

log = tempfile.NamedTemporaryFile("w+", suffix=".log", delete=False)
cmd = ["git-infer", "-m", a.model, "--serve", "127.0.0.1:0", "--threads", str(a.threads), "--learn", "bench",
       "--learn-threads", str(a.learn_threads), "--learn-epochs", "1", "--learn-commit-steps", "0",
       "--learn-commit-seconds", "0", "--learn-lr", "1e-3"]
if a.sparse:
    cmd += ["--learn-sparse", str(a.sparse)]
srv = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=log)
url = None
for _ in range(1200):
    text = open(log.name).read()
    m = re.search(r"listening on (http://[0-9.]+:[0-9]+)", text)
    if m and "serving" in text:
        url = m.group(1)
        break
    if srv.poll() is not None:
        sys.exit("git-infer ended:\n" + text)
    time.sleep(0.1)
if not url:
    sys.exit("git-infer did not start")


def call(path, body=None):
    req = urllib.request.Request(url + path, json.dumps(body).encode() if body is not None else None,
                                 {"Content-Type": "application/json"})
    return json.load(urllib.request.urlopen(req))


def state():
    return call("/v1/adapters/bench")


def example(i):
    return {"prompt": "The secret word of person %d is" % i, "completion": " zebra, said the scribe %d." % i}


def wait_idle():
    while state()["pending"]:
        time.sleep(0.02)


MODEL_ID = None


def complete():
    global MODEL_ID
    if MODEL_ID is None:
        MODEL_ID = json.load(urllib.request.urlopen(url + "/v1/models"))["data"][0]["id"]
    t = time.time()
    call("/v1/completions", {"model": MODEL_ID + ":bench", "prompt": "In the beginning God",
                             "max_tokens": a.tokens, "temperature": 0})
    return time.time() - t


try:
    # update latency: one example, idle trainer
    lat, srv_lat = [], []
    for i in range(5):
        v0 = state()["version"]
        t = time.time()
        call("/v1/adapters/bench/examples", {"examples": [example(1000 + i)]})
        while state()["version"] == v0:
            time.sleep(0.005)
        lat.append(time.time() - t)
        wait_idle()
        srv_lat.append(state()["update_latency_s"])
    # sustained examples/s
    s0 = state()
    t = time.time()
    call("/v1/adapters/bench/examples", {"examples": [example(i) for i in range(a.examples)]})
    wait_idle()
    dt = time.time() - t
    s1 = state()
    eps = a.examples / dt
    step_s = (s1["train_seconds"] - s0["train_seconds"]) / max(1, s1["steps"] - s0["steps"])
    # serving cost: idle and busy, interleaved
    complete()  # warm
    idle, busy = [], []
    for r in range(a.requests):
        wait_idle()
        idle.append(complete())
        steps_before = state()["steps"]
        call("/v1/adapters/bench/examples", {"examples": [example(5000 + 100 * r + i) for i in range(a.busy)]})
        while not state()["steps"] > steps_before:   # the trainer is at work
            time.sleep(0.01)
        busy.append(complete())
    out = {
        "model": os.path.basename(a.model.rstrip("/")), "mode": "sparse %g" % a.sparse if a.sparse else "lora",
        "threads": a.threads, "learn_threads": a.learn_threads,
        "update_latency_s": statistics.median(lat), "update_latency_server_s": statistics.median(srv_lat),
        "examples_per_s": eps, "step_s": step_s, "tokens": a.tokens,
        "serve_idle_s": statistics.median(idle), "serve_busy_s": statistics.median(busy),
        "serve_cost_ratio": statistics.median(busy) / statistics.median(idle),
        "loadavg": os.getloadavg()[0],
    }
    print(json.dumps(out))
    print("%(model)s %(mode)s: update latency %(update_latency_s).3f s (server %(update_latency_server_s).3f s), "
          "%(examples_per_s).2f examples/s (%(step_s).3f s a step of 4), a %(tokens)d-token completion "
          "%(serve_idle_s).3f s idle, %(serve_busy_s).3f s while learning (x%(serve_cost_ratio).2f); "
          "load %(loadavg).1f" % out, file=sys.stderr)
finally:
    srv.send_signal(signal.SIGTERM)
    try:
        srv.wait(timeout=60)
    except subprocess.TimeoutExpired:
        srv.kill()
    os.unlink(log.name)
