#!/usr/bin/env python3
"""A stand-in for the Hugging Face Hub, for the tests (standard library only).

Serves, on 127.0.0.1:

  * git smart HTTP for the bare repositories ROOT/ORG/NAME.git, by running
    the real `git http-backend` as a CGI (clone, fetch and push), under both
    /ORG/NAME.git/... and /ORG/NAME/... (the Hub's git URLs have no .git);
  * the Git LFS Batch API at /ORG/NAME.git/info/lfs/objects/batch and the
    "basic" transfer adapter: GET (with Range: bytes=N- or N-M) and PUT at /_lfs/ORG/NAME/OID,
    POST /_lfs/ORG/NAME/verify; objects live where git-lfs keeps them in a
    bare repository, ROOT/ORG/NAME.git/lfs/objects/OID[0:2]/OID[2:4]/OID;
  * the part of the Hub API that clone uses: /api/models/ORG/NAME/revision/REV,
    /api/models/ORG/NAME/tree/REV[/PATH], /ORG/NAME/resolve/REV/PATH (302 to
    the object for LFS files, with X-Linked-Etag, X-Linked-Size, X-Repo-Commit).

Options: --root DIR, --port-file FILE (the chosen port is written there once
the server listens), --log FILE (one line per request: METHOD PATH STATUS
[range=...] [bytes=N]), --token TOKEN (every request must then carry
"Authorization: Bearer TOKEN" or basic auth with TOKEN as password; 401
otherwise), --faults FILE (JSON, re-read on every request; counters restart
when its content changes):

  {"fail_batch": K}        the first K batch requests answer 500
  {"fail_get": K}          the first K object GETs answer 500
  {"status_429": K}        the first K object GETs answer 429 (Retry-After: 0)
  {"cut": {"OID": N}}      the first GET of OID sends N body bytes, then closes
  {"cut_times": T}         ... the first T GETs instead of the first one
  {"corrupt": ["OID"]}     GETs of OID serve the content with one byte flipped
  {"missing": ["OID"]}     the batch answers a per-object 404 error for OID
  {"expire": K}            the first K download hrefs handed out are expired
                           (expires_in 0 and GET answers 403 "expired")
  {"revoke": K}            the first K download hrefs claim an hour of life, but
                           GET answers 403 "expired" (a clock skew, a revoked link)
  {"delay_ms": M}          sleep M ms per 64 KiB of object body sent
"""
import argparse
import base64
import hashlib
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

LFS_MIME = "application/vnd.git-lfs+json"
OID_RE = re.compile(r"^[0-9a-f]{64}$")
NAME_RE = r"[A-Za-z0-9][A-Za-z0-9._-]*"
POINTER_RE = re.compile(
    rb"^version https://git-lfs\.github\.com/spec/v1\n(?:ext-[0-9]-\w+ sha256:[0-9a-f]{64}\n)*"
    rb"oid sha256:([0-9a-f]{64})\nsize (0|[1-9][0-9]*)\n$")


class State:
    def __init__(self, args):
        self.root = os.path.abspath(args.root)
        self.token = args.token
        self.faults_path = args.faults
        self.log_path = args.log
        self.lock = threading.Lock()
        self.faults_text = None
        self.faults = {}
        self.counters = {}
        self.href_serial = 0
        self.expired = set()

    def load_faults(self):
        """Re-reads the fault file; a change of content restarts the counters."""
        text = ""
        if self.faults_path and os.path.exists(self.faults_path):
            with open(self.faults_path) as f:
                text = f.read()
        with self.lock:
            if text != self.faults_text:
                self.faults_text = text
                self.faults = json.loads(text) if text.strip() else {}
                self.counters = {}
                self.expired = set()
            return self.faults

    def take(self, name, limit):
        """True (and counts) while fewer than limit events named name happened."""
        with self.lock:
            n = self.counters.get(name, 0)
            if n < limit:
                self.counters[name] = n + 1
                return True
            return False

    def log(self, line):
        if not self.log_path:
            return
        with self.lock, open(self.log_path, "a") as f:
            f.write(line + "\n")


def lfs_path(repo_dir, oid):
    return os.path.join(repo_dir, "lfs", "objects", oid[0:2], oid[2:4], oid)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"
    server_version = "hub-server/1"

    def log_message(self, fmt, *args):  # quiet: our own log is the record
        pass

    # ------------------------------------------------------------ helpers
    @property
    def st(self):
        return self.server.state

    def record(self, status, extra=""):
        self.st.log("%s %s %d%s" % (self.command, urllib.parse.urlsplit(self.path).path, status, extra))

    def send(self, status, body=b"", ctype="text/plain", headers=None):
        if isinstance(body, str):
            body = body.encode()
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)
        self.record(status)

    def send_json(self, status, obj, ctype="application/json", headers=None):
        self.send(status, json.dumps(obj), ctype, headers)

    def read_body(self):
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            out = bytearray()
            while True:
                line = self.rfile.readline()
                n = int(line.split(b";")[0].strip() or b"0", 16)
                if n == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return bytes(out)
                out += self.rfile.read(n)
                self.rfile.readline()
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def authorized(self):
        if not self.st.token:
            return True
        auth = self.headers.get("Authorization", "")
        if auth == "Bearer " + self.st.token:
            return True
        if auth.startswith("Basic "):
            try:
                user, _, pw = base64.b64decode(auth[6:]).decode().partition(":")
            except Exception:
                return False
            return pw == self.st.token
        return False

    def deny(self):
        self.send(401, "Invalid credentials: a token is required\n",
                  headers={"WWW-Authenticate": 'Basic realm="hub-server"',
                           "LFS-Authenticate": 'Basic realm="hub-server"'})

    def base_url(self):
        return "http://%s:%d" % self.server.server_address[:2]

    def repo_dir(self, org, name):
        d = os.path.join(self.st.root, org, name + ".git")
        return d if os.path.isdir(d) else None

    def git(self, repo, *args, binary=False):
        r = subprocess.run(["git", "--git-dir", repo] + list(args), capture_output=True)
        if r.returncode:
            return None
        return r.stdout if binary else r.stdout.decode()

    # ------------------------------------------------------------ routing
    def route(self):
        self.st.load_faults()
        if not self.authorized():
            return self.deny()
        path = urllib.parse.urlsplit(self.path).path
        m = re.match(r"^/(%s)/(%s?)(\.git)?/info/lfs/objects/batch$" % (NAME_RE, NAME_RE), path)
        if m and self.command == "POST":
            return self.batch(m.group(1), m.group(2))
        m = re.match(r"^/_lfs/(%s)/(%s)/([0-9a-f]{64})$" % (NAME_RE, NAME_RE), path)
        if m and self.command in ("GET", "HEAD"):
            return self.object_get(m.group(1), m.group(2), m.group(3))
        if m and self.command == "PUT":
            return self.object_put(m.group(1), m.group(2), m.group(3))
        m = re.match(r"^/_lfs/(%s)/(%s)/verify$" % (NAME_RE, NAME_RE), path)
        if m and self.command == "POST":
            return self.verify(m.group(1), m.group(2))
        m = re.match(r"^/api/models/(%s)/(%s)/revision/(.+)$" % (NAME_RE, NAME_RE), path)
        if m and self.command == "GET":
            return self.api_revision(m.group(1), m.group(2), urllib.parse.unquote(m.group(3)))
        m = re.match(r"^/api/models/(%s)/(%s)/tree/([^/]+)(?:/(.*))?$" % (NAME_RE, NAME_RE), path)
        if m and self.command == "GET":
            return self.api_tree(m.group(1), m.group(2), urllib.parse.unquote(m.group(3)), m.group(4) or "")
        m = re.match(r"^/(%s)/(%s)/resolve/([^/]+)/(.+)$" % (NAME_RE, NAME_RE), path)
        if m and self.command in ("GET", "HEAD"):
            return self.resolve(m.group(1), m.group(2), urllib.parse.unquote(m.group(3)),
                                urllib.parse.unquote(m.group(4)))
        m = re.match(r"^/(%s)/(%s?)(?:\.git)?(/(?:info/refs|git-upload-pack|git-receive-pack|HEAD|objects/.*))$"
                     % (NAME_RE, NAME_RE), path)
        if m:
            return self.git_http(m.group(1), m.group(2), m.group(3))
        self.send(404, "not found\n")

    do_GET = do_POST = do_PUT = do_HEAD = lambda self: self.route()

    # ------------------------------------------------------------ git smart HTTP
    def git_http(self, org, name, rest):
        if not self.repo_dir(org, name):
            return self.send(404, "Repository not found\n")
        body = self.read_body() if self.command == "POST" else b""
        q = urllib.parse.urlsplit(self.path).query
        env = dict(os.environ)
        env.update({
            "GIT_PROJECT_ROOT": self.st.root,
            "GIT_HTTP_EXPORT_ALL": "1",
            "PATH_INFO": "/%s/%s.git%s" % (org, name, rest),
            "QUERY_STRING": q,
            "REQUEST_METHOD": self.command,
            "CONTENT_TYPE": self.headers.get("Content-Type", ""),
            "CONTENT_LENGTH": str(len(body)),
            "REMOTE_USER": "hub-test",
            "REMOTE_ADDR": "127.0.0.1",
            "GATEWAY_INTERFACE": "CGI/1.1",
            "SERVER_PROTOCOL": "HTTP/1.0",
        })
        if self.headers.get("Git-Protocol"):
            env["GIT_PROTOCOL"] = self.headers["Git-Protocol"]
        if self.headers.get("Content-Encoding"):
            env["HTTP_CONTENT_ENCODING"] = self.headers["Content-Encoding"]
        r = subprocess.run(["git", "http-backend"], input=body, capture_output=True, env=env)
        out = r.stdout
        sep = out.find(b"\r\n\r\n")
        seplen = 4
        if sep < 0:
            sep, seplen = out.find(b"\n\n"), 2
        if sep < 0:
            return self.send(500, "git http-backend failed: %s\n" % r.stderr.decode(errors="replace"))
        status, headers = 200, []
        for line in out[:sep].decode(errors="replace").splitlines():
            k, _, v = line.partition(":")
            if k.lower() == "status":
                status = int(v.strip().split()[0])
            else:
                headers.append((k, v.strip()))
        payload = out[sep + seplen:]
        self.send_response(status)
        for k, v in headers:
            if k.lower() != "content-length":
                self.send_header(k, v)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)
        self.record(status)

    # ------------------------------------------------------------ LFS
    def batch(self, org, name):
        repo = self.repo_dir(org, name)
        if not repo:
            return self.send_json(404, {"message": "Repository not found"}, LFS_MIME)
        faults = self.st.faults
        if self.st.take("fail_batch", int(faults.get("fail_batch", 0))):
            return self.send(500, "injected failure\n")
        try:
            req = json.loads(self.read_body())
            op = req["operation"]
            objects = req["objects"]
        except Exception as e:
            return self.send_json(422, {"message": "bad batch request: %s" % e}, LFS_MIME)
        if op not in ("download", "upload"):
            return self.send_json(422, {"message": "unknown operation %r" % op}, LFS_MIME)
        base = self.base_url()
        auth = {}
        if self.st.token:
            auth = {"Authorization": "Bearer " + self.st.token}
        out = []
        for o in objects:
            oid, size = o.get("oid", ""), o.get("size", -1)
            if not OID_RE.match(str(oid)) or not isinstance(size, int) or size < 0:
                out.append({"oid": oid, "size": size, "error": {"code": 422, "message": "invalid object"}})
                continue
            path = lfs_path(repo, oid)
            have = os.path.isfile(path) and os.path.getsize(path) == size
            href = "%s/_lfs/%s/%s/%s" % (base, org, name, oid)
            if op == "download":
                if not have or oid in faults.get("missing", []):
                    out.append({"oid": oid, "size": size, "error": {"code": 404, "message": "Object does not exist"}})
                    continue
                with self.st.lock:
                    self.st.href_serial += 1
                    serial = self.st.href_serial
                expires_in = 3600
                if self.st.take("expire", int(faults.get("expire", 0))):
                    with self.st.lock:
                        self.st.expired.add(serial)
                    expires_in = 0
                elif self.st.take("revoke", int(faults.get("revoke", 0))):
                    with self.st.lock:
                        self.st.expired.add(serial)
                out.append({"oid": oid, "size": size, "authenticated": True,
                            "actions": {"download": {"href": "%s?h=%d" % (href, serial), "header": auth,
                                                     "expires_in": expires_in}}})
            else:
                if have:
                    out.append({"oid": oid, "size": size})
                else:
                    out.append({"oid": oid, "size": size, "authenticated": True,
                                "actions": {"upload": {"href": href, "header": auth, "expires_in": 3600},
                                            "verify": {"href": "%s/_lfs/%s/%s/verify" % (base, org, name),
                                                       "header": auth, "expires_in": 3600}}})
        self.send_json(200, {"transfer": "basic", "objects": out, "hash_algo": "sha256"}, LFS_MIME)

    def object_get(self, org, name, oid):
        repo = self.repo_dir(org, name)
        path = lfs_path(repo, oid) if repo else None
        faults = self.st.faults
        q = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query)
        serial = int(q.get("h", ["0"])[0])
        if serial in self.st.expired:
            return self.send(403, "Request has expired\n")
        if not path or not os.path.isfile(path):
            return self.send(404, "Object does not exist\n")
        if self.st.take("fail_get", int(faults.get("fail_get", 0))):
            return self.send(500, "injected failure\n")
        if self.st.take("status_429", int(faults.get("status_429", 0))):
            return self.send(429, "slow down\n", headers={"Retry-After": "0"})
        size = os.path.getsize(path)
        start, end, status, extra = 0, size, 200, ""
        rng = self.headers.get("Range")
        if rng:
            # "bytes=N-" (resumed downloads) or "bytes=N-M" (BitTorrent web seeds)
            m = re.match(r"^bytes=(\d+)-(\d*)$", rng)
            if not m or int(m.group(1)) > size or (m.group(2) and int(m.group(2)) < int(m.group(1))):
                return self.send(416, "bad range\n", headers={"Content-Range": "bytes */%d" % size})
            start, status = int(m.group(1)), 206
            if m.group(2):
                end = min(size, int(m.group(2)) + 1)
            extra = " range=%s" % rng
        cut = None
        cuts = faults.get("cut", {})
        if oid in cuts and self.st.take("cut:" + oid, int(faults.get("cut_times", 1))):
            cut = int(cuts[oid])
        corrupt = oid in faults.get("corrupt", [])
        delay = float(faults.get("delay_ms", 0)) / 1000.0
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(end - start))
        if status == 206:
            self.send_header("Content-Range", "bytes %d-%d/%d" % (start, end - 1, size))
        self.send_header("Accept-Ranges", "bytes")
        self.end_headers()
        if self.command == "HEAD":
            return self.record(status, extra)
        sent = 0
        with open(path, "rb") as f:
            f.seek(start)
            pos = start
            while pos < end:
                chunk = f.read(min(65536, end - pos))
                if not chunk:
                    break
                if corrupt and pos <= size // 2 < pos + len(chunk):
                    i = size // 2 - pos
                    chunk = chunk[:i] + bytes([chunk[i] ^ 0xFF]) + chunk[i + 1:]
                if cut is not None and sent + len(chunk) > cut:
                    chunk = chunk[:cut - sent]
                try:
                    self.wfile.write(chunk)
                except (BrokenPipeError, ConnectionResetError):
                    break
                sent += len(chunk)
                pos += len(chunk)
                if cut is not None and sent >= cut:
                    break
                if delay:
                    time.sleep(delay)
        self.record(status, "%s bytes=%d%s" % (extra, sent, " cut" if cut is not None else ""))
        if cut is not None:
            self.close_connection = True
            try:
                self.wfile.flush()
                self.connection.shutdown(2)
            except OSError:
                pass

    def object_put(self, org, name, oid):
        repo = self.repo_dir(org, name)
        if not repo:
            return self.send(404, "Repository not found\n")
        body = self.read_body()
        if hashlib.sha256(body).hexdigest() != oid:
            return self.send(422, "sha256 mismatch\n")
        path = lfs_path(repo, oid)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path))
        with os.fdopen(fd, "wb") as f:
            f.write(body)
        os.rename(tmp, path)
        self.send(200, "")

    def verify(self, org, name):
        repo = self.repo_dir(org, name)
        try:
            o = json.loads(self.read_body())
            oid, size = o["oid"], o["size"]
        except Exception:
            return self.send_json(422, {"message": "bad verify request"}, LFS_MIME)
        path = lfs_path(repo, oid) if repo and OID_RE.match(str(oid)) else None
        if not path or not os.path.isfile(path) or os.path.getsize(path) != size:
            return self.send_json(404, {"message": "object %s not found" % oid}, LFS_MIME)
        self.send_json(200, {"message": "ok"}, LFS_MIME)

    # ------------------------------------------------------------ Hub API
    def rev_commit(self, repo, rev):
        out = self.git(repo, "rev-parse", "--verify", "--quiet", rev + "^{commit}")
        return out.strip() if out else None

    def files(self, repo, commit, prefix=""):
        """[(path, blob, size, lfs_oid, lfs_size)] of the tree at commit."""
        out = self.git(repo, "ls-tree", "-r", "-l", "-z", commit, *([prefix] if prefix else []), binary=True)
        items = []
        for rec in (out or b"").split(b"\0"):
            if not rec:
                continue
            meta, _, path = rec.partition(b"\t")
            mode, typ, blob, size = meta.split()
            if typ != b"blob":
                continue
            size = int(size)
            lfs = None
            if size < 1024:
                content = self.git(repo, "cat-file", "blob", blob.decode(), binary=True)
                m = POINTER_RE.match(content or b"")
                if m:
                    lfs = (m.group(1).decode(), int(m.group(2)))
            items.append((path.decode(), blob.decode(), size, lfs))
        return items

    def api_revision(self, org, name, rev):
        repo = self.repo_dir(org, name)
        commit = self.rev_commit(repo, rev) if repo else None
        if not commit:
            return self.send_json(404, {"error": "Revision Not Found"})
        sib = [{"rfilename": p} for p, _, _, _ in self.files(repo, commit)]
        self.send_json(200, {"id": "%s/%s" % (org, name), "modelId": "%s/%s" % (org, name), "sha": commit,
                             "private": bool(self.st.token), "siblings": sib})

    def api_tree(self, org, name, rev, prefix):
        repo = self.repo_dir(org, name)
        commit = self.rev_commit(repo, rev) if repo else None
        if not commit:
            return self.send_json(404, {"error": "Revision Not Found"})
        out = []
        for p, blob, size, lfs in self.files(repo, commit, prefix):
            item = {"type": "file", "oid": blob, "size": lfs[1] if lfs else size, "path": p}
            if lfs:
                item["lfs"] = {"oid": lfs[0], "size": lfs[1], "pointerSize": size}
            out.append(item)
        self.send_json(200, out)

    def resolve(self, org, name, rev, path):
        repo = self.repo_dir(org, name)
        commit = self.rev_commit(repo, rev) if repo else None
        if not commit:
            return self.send_json(404, {"error": "Revision Not Found"})
        for p, blob, size, lfs in self.files(repo, commit, path):
            if p != path:
                continue
            headers = {"X-Repo-Commit": commit}
            if lfs:
                headers.update({"X-Linked-Etag": '"%s"' % lfs[0], "X-Linked-Size": str(lfs[1]),
                                "ETag": '"%s"' % lfs[0],
                                "Location": "%s/_lfs/%s/%s/%s" % (self.base_url(), org, name, lfs[0])})
                return self.send(302, "", headers=headers)
            headers["ETag"] = '"%s"' % blob
            return self.send(200, self.git(repo, "cat-file", "blob", blob, binary=True),
                             "application/octet-stream", headers)
        self.send_json(404, {"error": "Entry Not Found"})


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--root", required=True)
    ap.add_argument("--port-file", required=True)
    ap.add_argument("--log")
    ap.add_argument("--token")
    ap.add_argument("--faults")
    args = ap.parse_args()
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    server.state = State(args)
    # Never outlive the test script that started us (a killed test run
    # must not leave servers behind): exit when our parent goes away.
    parent = os.getppid()

    def watch_parent():
        while True:
            time.sleep(0.5)
            if os.getppid() != parent:
                os._exit(0)

    threading.Thread(target=watch_parent, daemon=True).start()
    tmp = args.port_file + ".tmp"
    with open(tmp, "w") as f:
        f.write("%d\n" % server.server_address[1])
    os.rename(tmp, args.port_file)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    sys.exit(main())
