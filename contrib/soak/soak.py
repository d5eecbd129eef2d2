#!/usr/bin/env python3
"""soak.py - a bounded soak test of `git infer --serve` (not part of make check).

    contrib/soak/soak.py [--minutes 10] [--clients 16] [--git-infer PATH] [--model DIR] [--out DIR]

Starts a server on 127.0.0.1 with the bundled pocket model and a random LoRA
adapter, then CLIENTS threads send, for MINUTES, a mix of requests:
completions and chat, streamed and not, with and without the adapter, tool
calls (tool_choice required), JSON-schema output, requests cancelled half way
(the connection closed after a few chunks) and malformed requests.  Every
greedy request is checked against the answer the same request got when the
server was idle ("wrong answers"); tool calls and JSON output are parsed and
checked against their schema; malformed requests must get a 4xx with an
OpenAI error body.  Every 5 s the server's resident memory (VmRSS) and open
file descriptors are sampled into OUT/samples.csv.

At the end it prints a report and exits non-zero on any wrong answer, crash,
unexpected status, or growth of RSS or descriptors between the first and
the last fifth of the run (after --warmup, 30 s, of warm-up) beyond 10% (RSS) or 8
(descriptors).  Run it
against an ASan or TSan build with --git-infer (see README.md).
"""
import argparse, http.client, json, os, random, signal, socket, struct, subprocess, sys, tempfile, threading, time

HERE = os.path.dirname(os.path.abspath(__file__))
TOP = os.path.dirname(os.path.dirname(HERE))


def make_lora(d, seed):
    """A random PEFT LoRA for the pocket model (r 4, q_proj and v_proj of its 6 layers)."""
    rnd = random.Random(seed)
    os.makedirs(d)
    json.dump({"peft_type": "LORA", "r": 4, "lora_alpha": 8, "target_modules": ["q_proj", "v_proj"],
               "task_type": "CAUSAL_LM", "base_model_name_or_path": "pocket-qwen3"},
              open(os.path.join(d, "adapter_config.json"), "w"))
    h, off, data = {}, 0, b""
    for l in range(6):
        for proj, out in (("q_proj", 256), ("v_proj", 128)):
            pre = "base_model.model.model.layers.%d.self_attn.%s." % (l, proj)
            for name, shape in ((pre + "lora_A.weight", [4, 256]), (pre + "lora_B.weight", [out, 4])):
                n = shape[0] * shape[1]
                h[name] = {"dtype": "F32", "shape": shape, "data_offsets": [off, off + 4 * n]}
                data += struct.pack("<%df" % n, *[rnd.gauss(0, 0.3) for _ in range(n)])
                off += 4 * n
    hb = json.dumps(h).encode()
    hb += b" " * (-len(hb) % 8)
    open(os.path.join(d, "adapter_model.safetensors"), "wb").write(struct.pack("<Q", len(hb)) + hb + data)


WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "The weather in a city",
    "parameters": {"type": "object", "properties": {
        "city": {"type": "string", "maxLength": 20},
        "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
        "required": ["city", "unit"], "additionalProperties": False}}}
PERSON = {"type": "object", "properties": {
    "name": {"type": "string", "maxLength": 16},
    "age": {"type": "integer", "minimum": 0, "maximum": 120},
    "tags": {"type": "array", "items": {"type": "string", "maxLength": 8}, "maxItems": 3}},
    "required": ["name", "age", "tags"], "additionalProperties": False}


def check_person(v):
    return (isinstance(v, dict) and set(v) == {"name", "age", "tags"} and isinstance(v["name"], str)
            and len(v["name"]) <= 16 and isinstance(v["age"], int) and 0 <= v["age"] <= 120
            and isinstance(v["tags"], list) and len(v["tags"]) <= 3
            and all(isinstance(t, str) and len(t) <= 8 for t in v["tags"]))


def check_weather_args(s):
    v = json.loads(s)
    return (isinstance(v, dict) and set(v) == {"city", "unit"} and isinstance(v["city"], str)
            and len(v["city"]) <= 20 and v["unit"] in ("celsius", "fahrenheit"))


# The first line of each report by ASan, LSan, UBSan and TSan.  UBSan and TSan
# (without halt_on_error) print and go on, so the exit status alone misses them.
SANITIZER_MARKS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "WARNING: ThreadSanitizer",
                   "ERROR: ThreadSanitizer", "runtime error:")


def sanitizer_reports(path):
    with open(path, errors="replace") as f:
        return sum(1 for line in f if any(m in line for m in SANITIZER_MARKS))


def per_minute(samples):
    """The first sample of each minute of the run, and the last sample."""
    out, seen = [], set()
    for s in samples:
        if int(s[0] // 60) not in seen:
            seen.add(int(s[0] // 60))
            out.append(s)
    if samples and out[-1] is not samples[-1]:
        out.append(samples[-1])
    return out


class Soak:
    def __init__(self, a):
        self.a = a
        self.lock = threading.Lock()
        self.counts = {}
        self.failures = []
        self.reference = {}
        self.stop = False

    def count(self, key):
        with self.lock:
            self.counts[key] = self.counts.get(key, 0) + 1

    def fail(self, what):
        with self.lock:
            self.failures.append(what)
            if len(self.failures) <= 20:
                print("FAIL:", what, file=sys.stderr)

    def post(self, path, body, timeout=120):
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        c.request("POST", path, data, {"Content-Type": "application/json"})
        r = c.getresponse()
        out = r.read()
        c.close()
        return r.status, out

    # ------------------------------------------------------------ requests
    def greedy(self, rnd):
        i = rnd.randrange(6)
        adapter = rnd.random() < 0.5
        stream = rnd.random() < 0.5
        chat = rnd.random() < 0.5
        model = "pocket-qwen3" + (":soak" if adapter else "")
        if chat:
            body = {"model": model, "messages": [{"role": "user", "content": "Tell me about king %d." % i}],
                    "max_tokens": 24, "temperature": 0}
            path = "/v1/chat/completions"
        else:
            body = {"model": model, "prompt": "Once upon a time, king %d" % i, "max_tokens": 24, "temperature": 0}
            path = "/v1/completions"
        key = (path, i, adapter)
        text = self.request_text(path, body, stream, chat)
        if text is None:
            return
        with self.lock:
            ref = self.reference.setdefault(key, text)
        if ref != text:
            self.fail("wrong answer for %s (stream %s): %r, not %r" % (key, stream, text, ref))
        self.count("greedy")

    def request_text(self, path, body, stream, chat):
        if not stream:
            st, out = self.post(path, body)
            if st != 200:
                self.fail("%s answered %d: %s" % (path, st, out[:200]))
                return None
            ch = json.loads(out)["choices"][0]
            return ch["message"]["content"] if chat else ch["text"]
        body = dict(body, stream=True)
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=120)
        c.request("POST", path, json.dumps(body).encode(), {"Content-Type": "application/json"})
        r = c.getresponse()
        if r.status != 200:
            self.fail("%s (stream) answered %d" % (path, r.status))
            return None
        text, done = "", False
        for line in r:
            line = line.strip()
            if not line.startswith(b"data: "):
                continue
            if line == b"data: [DONE]":
                done = True
                break
            ch = json.loads(line[6:])["choices"]
            if ch:
                text += (ch[0].get("delta", {}).get("content") or "") if chat else ch[0].get("text", "")
        c.close()
        if not done:
            self.fail("%s: the stream ended without [DONE]" % path)
            return None
        return text

    def sampled(self, rnd):
        body = {"model": "pocket-qwen3", "prompt": "The", "max_tokens": rnd.randrange(1, 64),
                "temperature": 0.9, "top_p": 0.95, "seed": rnd.randrange(1 << 30)}
        st, out = self.post("/v1/completions", body)
        if st != 200 or "choices" not in json.loads(out):
            self.fail("sampled completion answered %d" % st)
        self.count("sampled")

    def tools(self, rnd):
        body = {"model": "pocket-qwen3", "messages": [{"role": "user", "content": "Weather in Paris?"}],
                "tools": [WEATHER], "tool_choice": "required", "parallel_tool_calls": False, "max_tokens": 96,
                "temperature": 0.8, "seed": rnd.randrange(1 << 30)}
        st, out = self.post("/v1/chat/completions", body)
        if st != 200:
            self.fail("tools request answered %d: %s" % (st, out[:200]))
            return
        ch = json.loads(out)["choices"][0]
        if ch["finish_reason"] == "length":
            self.count("tools_truncated")
            return
        calls = ch["message"].get("tool_calls") or []
        if ch["finish_reason"] != "tool_calls" or not calls:
            self.fail("tool_choice required gave no call: %s" % out[:300])
            return
        for call in calls:
            try:
                ok = call["function"]["name"] == "get_weather" and check_weather_args(call["function"]["arguments"])
            except (ValueError, KeyError, TypeError):
                ok = False
            if not ok:
                self.fail("an invalid tool call: %r" % call)
        self.count("tools")

    def schema(self, rnd):
        body = {"model": "pocket-qwen3", "messages": [{"role": "user", "content": "A person, as JSON."}],
                "response_format": {"type": "json_schema", "json_schema": {"name": "person", "schema": PERSON,
                                                                           "strict": True}},
                "max_tokens": 128, "temperature": 1.0, "seed": rnd.randrange(1 << 30)}
        st, out = self.post("/v1/chat/completions", body)
        if st != 200:
            self.fail("json_schema request answered %d: %s" % (st, out[:200]))
            return
        ch = json.loads(out)["choices"][0]
        if ch["finish_reason"] == "length":
            self.count("schema_truncated")
            return
        try:
            ok = check_person(json.loads(ch["message"]["content"]))
        except ValueError:
            ok = False
        if not ok:
            self.fail("output not valid for its schema: %r" % ch["message"]["content"])
        self.count("schema")

    def cancel(self, rnd):
        body = {"model": "pocket-qwen3", "prompt": "Long ago", "max_tokens": 1000, "stream": True,
                "temperature": 1, "logit_bias": {"4093": -100, "4091": -100}}
        s = socket.create_connection(("127.0.0.1", self.port), timeout=60)
        data = json.dumps(body).encode()
        s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  b"Content-Length: %d\r\n\r\n" % len(data) + data)
        got = b""
        while got.count(b"data: ") < rnd.randrange(1, 8):
            d = s.recv(4096)
            if not d:
                break
            got += d
        s.close()
        self.count("cancelled")

    def malformed(self, rnd):
        bodies = [b"{not json", b"[]", json.dumps({"model": "pocket-qwen3", "prompt": 5}).encode(),
                  json.dumps({"model": "pocket-qwen3", "messages": "hi"}).encode(),
                  json.dumps({"model": "nosuch", "prompt": "x"}).encode(),
                  json.dumps({"model": "pocket-qwen3", "prompt": "x", "max_tokens": -3}).encode(),
                  json.dumps({"model": "pocket-qwen3", "prompt": "x", "temperature": "hot"}).encode(),
                  json.dumps({"model": "pocket-qwen3", "messages": [{"role": "user", "content": "x"}],
                              "response_format": {"type": "json_schema",
                                                  "json_schema": {"schema": {"type": "object",
                                                                             "patternProperties": {}}}}}).encode()]
        b = rnd.choice(bodies)
        path = rnd.choice(["/v1/completions", "/v1/chat/completions"])
        st, out = self.post(path, b)
        try:
            err = json.loads(out)["error"]["message"]
        except (ValueError, KeyError, TypeError):
            err = None
        if not (400 <= st < 500) or not err:
            self.fail("malformed request %r to %s answered %d: %s" % (b[:60], path, st, out[:200]))
        self.count("malformed")

    def get(self, path, timeout=60):
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        c.request("GET", path)
        r = c.getresponse()
        out = r.read()
        c.close()
        return r.status, out

    def probe(self, rnd):
        """The read-only endpoints while generation runs (they take the scheduler's and the stats' locks)."""
        what = rnd.choice(["/health", "/metrics", "/v1/models", "/v1/stats", "/v1/stats/stream", "/nosuch"])
        if what == "/v1/stats/stream":
            # a dashboard that reads a few samples and leaves
            c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
            c.request("GET", what)
            r = c.getresponse()
            n = rnd.randrange(1, 4)
            if r.status == 200:
                for line in r:
                    if line.startswith(b"data: ") and json.loads(line[6:]).get("object") == "server.stats":
                        n -= 1
                        if not n:
                            break
            elif r.status != 429:  # at most GM_STATS_MAX_STREAMS at once
                self.fail("GET %s answered %d" % (what, r.status))
            c.close()
            self.count("probe")
            return
        st, out = self.get(what)
        if what == "/nosuch":
            ok = st == 404 and "error" in json.loads(out)
        elif what == "/metrics":
            ok = st == 200 and b"gitmodel_requests_total" in out
        elif what == "/v1/models":
            ok = st == 200 and {"pocket-qwen3", "pocket-qwen3:soak"} <= {m["id"] for m in json.loads(out)["data"]}
        else:
            ok = st == 200 and (json.loads(out).get("status") == "ok" if what == "/health"
                                else json.loads(out).get("object") == "server.stats")
        if not ok:
            self.fail("GET %s answered %d: %s" % (what, st, out[:200]))
        self.count("probe")

    def client(self, seed):
        rnd = random.Random(seed)
        kinds = [(self.greedy, 30), (self.sampled, 15), (self.tools, 15), (self.schema, 15),
                 (self.cancel, 10), (self.malformed, 15), (self.probe, 10)]
        total = sum(w for _, w in kinds)
        while not self.stop:
            x = rnd.randrange(total)
            for fn, w in kinds:
                if x < w:
                    break
                x -= w
            try:
                fn(rnd)
            except (OSError, http.client.HTTPException) as e:
                if not self.stop:
                    self.fail("%s: %s" % (fn.__name__, e))

    # ------------------------------------------------------------ the run
    def sample(self, pid, out):
        status = open("/proc/%d/status" % pid).read()
        rss = int(status.split("VmRSS:")[1].split()[0])
        fds = len(os.listdir("/proc/%d/fd" % pid))
        out.append((time.time() - self.t0, rss, fds))

    def run(self):
        a = self.a
        os.makedirs(a.out, exist_ok=True)
        lora = os.path.join(tempfile.mkdtemp(prefix="soak-"), "soak")
        make_lora(lora, 7)
        log = open(os.path.join(a.out, "server.log"), "w")
        srv = subprocess.Popen([a.git_infer, "-m", a.model, "--serve", "127.0.0.1:0", "--parallel", "4",
                                "--threads", str(a.threads), "--adapter", "soak=" + lora],
                               stdout=log, stderr=subprocess.PIPE, text=True)
        for line in srv.stderr:
            log.write(line)
            if "serving" in line:
                break
            if "listening on http://" in line:
                self.port = int(line.split("listening on http://")[1].split()[0].rsplit(":", 1)[1])
        logger = threading.Thread(target=lambda: [log.write(l) for l in srv.stderr], daemon=True)
        logger.start()
        self.t0 = time.time()
        samples = []
        # references while idle
        for i in range(6):
            for adapter in (False, True):
                self.greedy(random.Random(1000 + i * 2 + adapter))
        threads = [threading.Thread(target=self.client, args=(s,)) for s in range(a.clients)]
        for t in threads:
            t.start()
        end = self.t0 + a.minutes * 60
        while time.time() < end and srv.poll() is None:
            self.sample(srv.pid, samples)
            time.sleep(5)
        self.stop = True
        for t in threads:
            t.join(180)
        crashed = srv.poll() is not None
        if not crashed:
            self.sample(srv.pid, samples)
            srv.send_signal(signal.SIGTERM)
            try:
                code = srv.wait(60)
            except subprocess.TimeoutExpired:
                srv.kill()
                code = "killed after 60 s"
            if code != 0:
                self.fail("the server exited with %s after SIGTERM" % code)
        else:
            self.fail("the server died during the run (exit %s)" % srv.returncode)
        with open(os.path.join(a.out, "samples.csv"), "w") as f:
            f.write("seconds,rss_kib,fds\n")
            for t, r, d in samples:
                f.write("%.0f,%d,%d\n" % (t, r, d))
        # the first 30 s warm up (the model's pages, the prefix cache and the stats rings fill);
        # under a sanitizer longer (ASan's quarantine, TSan's shadow and history fill: README.md)
        warm = [s for s in samples if s[0] >= a.warmup] or samples
        n = len(warm)
        first, last = warm[: max(1, n // 5)], warm[-max(1, n // 5):]
        rss0 = sum(s[1] for s in first) / len(first)
        rss1 = sum(s[1] for s in last) / len(last)
        fd0, fd1 = max(s[2] for s in first), max(s[2] for s in last)
        if rss1 > rss0 * 1.10:
            self.fail("RSS grew from %.0f to %.0f KiB" % (rss0, rss1))
        if fd1 > fd0 + 8:
            self.fail("descriptors grew from %d to %d" % (fd0, fd1))
        logger.join(60)  # the sanitizers report leaks and races as the server exits
        log.close()
        nreports = sanitizer_reports(os.path.join(a.out, "server.log"))
        if nreports:
            self.fail("%d sanitizer report(s) in %s" % (nreports, os.path.join(a.out, "server.log")))
        print("started %s UTC" % time.strftime("%Y-%m-%d %H:%M", time.gmtime(self.t0)))
        print("soak: %.1f min, %d clients, %s, growth measured after %.0f s"
              % (a.minutes, a.clients, a.git_infer, a.warmup))
        print("requests: " + ", ".join("%s %d" % kv for kv in sorted(self.counts.items())))
        print("RSS (KiB): first fifth %.0f, last fifth %.0f, max %d; descriptors: %d -> %d, max %d"
              % (rss0, rss1, max(s[1] for s in samples), fd0, fd1, max(s[2] for s in samples)))
        print("RSS curve (every 5 s, KiB): " + " ".join(str(s[1]) for s in samples))
        print("RSS and descriptors every minute (KiB/fds): " + " ".join(
            "%d:%d/%d" % (t // 60, r, d) for t, r, d in per_minute(samples)))
        print("sanitizer reports in server.log: %d" % nreports)
        print("failures: %d" % len(self.failures))
        return 1 if self.failures else 0


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--minutes", type=float, default=10)
    p.add_argument("--clients", type=int, default=16)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--warmup", type=float, default=30,
                   help="seconds left out before RSS and descriptors are compared (default 30)")
    p.add_argument("--git-infer", default=os.path.join(TOP, "build", "git-infer", "git-infer"))
    p.add_argument("--model", default=os.path.join(TOP, "contrib", "models", "pocket-qwen3"))
    p.add_argument("--out", default="soak-out")
    sys.exit(Soak(p.parse_args()).run())


if __name__ == "__main__":
    main()
