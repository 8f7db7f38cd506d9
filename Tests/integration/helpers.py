"""Shared helpers for the Outrider integration suite (stdlib only).

Everything here talks to 127.0.0.1 only, and every wait is bounded by a deadline.
"""

import base64
import hashlib
import http.client
import json
import os
import re
import select
import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
UPSTREAM_PY = REPO / "deploy" / "demo" / "upstream.py"
LOCAL = "127.0.0.1"

CHUNK = 64 * 1024
PATTERN = bytes(range(256)) * (CHUNK // 256)


def pattern_sha256(n):
    """sha256 of the first n bytes of the demo upstream's /bytes and /chunked pattern."""
    h = hashlib.sha256()
    while n > 0:
        k = min(n, CHUNK)
        h.update(PATTERN if k == CHUNK else PATTERN[:k])
        n -= k
    return h.hexdigest()


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((LOCAL, 0))
        return s.getsockname()[1]


def wait_until(pred, timeout, interval=0.05, desc="condition"):
    """Poll pred() until truthy or timeout; returns the last value (falsy on timeout)."""
    deadline = time.monotonic() + timeout
    val = None
    while True:
        try:
            val = pred()
        except Exception:  # noqa: BLE001 - polling through transient errors
            val = None
        if val:
            return val
        if time.monotonic() >= deadline:
            return val
        time.sleep(interval)


# ---------------------------------------------------------------------------------------------
# Minimal YAML emitter (dicts, lists, scalars) so configs can be written without PyYAML.
# ---------------------------------------------------------------------------------------------
_PLAIN = re.compile(r"^[A-Za-z0-9_./:@-][A-Za-z0-9_./:@ -]*$")
_AMBIGUOUS = {"true", "false", "yes", "no", "on", "off", "null", "~", "y", "n"}


def _scalar(v):
    if v is None:
        return "null"
    if v is True:
        return "true"
    if v is False:
        return "false"
    if isinstance(v, (int, float)):
        return str(v)
    s = str(v)
    if _PLAIN.match(s) and s.lower() not in _AMBIGUOUS and not s.endswith(" ") \
            and ": " not in s and not re.match(r"^[0-9.+-]+$", s):
        return s
    return json.dumps(s)


def to_yaml(obj, indent=0):
    pad = " " * indent
    out = []
    if isinstance(obj, dict):
        if not obj:
            return pad + "{}\n"
        for k, v in obj.items():
            if isinstance(v, dict) and v:
                out.append("%s%s:\n%s" % (pad, k, to_yaml(v, indent + 2)))
            elif isinstance(v, list) and v:
                out.append("%s%s:\n%s" % (pad, k, to_yaml(v, indent + 2)))
            elif isinstance(v, (dict, list)):
                out.append("%s%s: %s\n" % (pad, k, "{}" if isinstance(v, dict) else "[]"))
            else:
                out.append("%s%s: %s\n" % (pad, k, _scalar(v)))
        return "".join(out)
    if isinstance(obj, list):
        for item in obj:
            if isinstance(item, dict) and item:
                body = to_yaml(item, indent + 2)
                first = body[indent + 2:]  # strip the first line's indentation, put "- " instead
                out.append("%s- %s" % (pad, first))
            else:
                out.append("%s- %s\n" % (pad, _scalar(item)))
        return "".join(out)
    return pad + _scalar(obj) + "\n"


def make_config(listen_port, admin_port, upstream_addr, name="inbound", **sections):
    cfg = {
        "workers": 1,
        "admin": {"address": "%s:%d" % (LOCAL, admin_port)},
        "listeners": [{"name": name, "address": "%s:%d" % (LOCAL, listen_port),
                       "upstream": upstream_addr}],
    }
    cfg.update(sections)
    return cfg


# ---------------------------------------------------------------------------------------------
# Raw HTTP/1.1 client over a socket
# ---------------------------------------------------------------------------------------------
class Response:
    def __init__(self, status, reason, version, headers, body, trailers, raw_head):
        self.status = status
        self.reason = reason
        self.version = version
        self.headers = headers  # list of (lowercase name, value)
        self.body = body
        self.trailers = trailers
        self.raw_head = raw_head

    def header(self, name, default=None):
        name = name.lower()
        for k, v in self.headers:
            if k == name:
                return v
        return default

    def header_all(self, name):
        name = name.lower()
        return [v for k, v in self.headers if k == name]

    def json(self):
        return json.loads(self.body)

    def __repr__(self):
        return "<Response %d %r body=%r>" % (self.status, self.headers, self.body[:200])


class ConnClosed(Exception):
    """The peer closed (EOF) before a complete response was read."""


class RawConn:
    def __init__(self, port, timeout=10.0, host=LOCAL):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = bytearray()
        self.timeout = timeout
        self.eof = False

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.close()

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def send(self, data):
        if isinstance(data, str):
            data = data.encode("latin-1")
        self.sock.sendall(data)

    def _fill(self, deadline):
        if self.eof:
            raise ConnClosed("EOF")
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise socket.timeout("deadline exceeded")
        self.sock.settimeout(remaining)
        data = self.sock.recv(256 * 1024)
        if not data:
            self.eof = True
            raise ConnClosed("EOF")
        self.buf += data

    def _read_line(self, deadline, limit=1 << 20):
        while True:
            i = self.buf.find(b"\n")
            if i >= 0:
                line = bytes(self.buf[:i + 1])
                del self.buf[:i + 1]
                return line
            if len(self.buf) > limit:
                raise ValueError("line too long")
            self._fill(deadline)

    def _read_exact(self, n, deadline, sink=None):
        out = bytearray() if sink is None else None
        while n > 0:
            if not self.buf:
                self._fill(deadline)
            take = min(n, len(self.buf))
            piece = bytes(self.buf[:take])
            del self.buf[:take]
            n -= take
            if sink is None:
                out += piece
            else:
                sink(piece)
        return bytes(out) if out is not None else b""

    def read_head(self, timeout=None):
        deadline = time.monotonic() + (timeout or self.timeout)
        raw = bytearray()
        while True:
            line = self._read_line(deadline)
            raw += line
            if line in (b"\r\n", b"\n"):
                if len(raw) == len(line):  # tolerate stray empty lines before a status line
                    raw = bytearray()
                    continue
                break
        lines = bytes(raw).decode("latin-1").split("\r\n")
        status_line = lines[0]
        parts = status_line.split(" ", 2)
        version, status = parts[0], int(parts[1])
        reason = parts[2] if len(parts) > 2 else ""
        headers = []
        for l in lines[1:]:
            if not l:
                continue
            k, _, v = l.partition(":")
            headers.append((k.strip().lower(), v.strip()))
        return version, status, reason, headers, bytes(raw)

    def read_response(self, method="GET", timeout=None, sink=None, keep_interim=False):
        """Read one full response. 1xx interim responses (except 101) are skipped unless
        keep_interim, in which case the interim response itself is returned."""
        deadline = time.monotonic() + (timeout or self.timeout)
        while True:
            version, status, reason, headers, raw = self.read_head(max(0.001, deadline - time.monotonic()))
            if 100 <= status < 200 and status != 101 and not keep_interim:
                continue
            break
        resp = Response(status, reason, version, headers, b"", [], raw)
        if method == "HEAD" or status in (204, 304) or 100 <= status < 200:
            return resp
        te = ",".join(resp.header_all("transfer-encoding")).lower()
        body = bytearray()
        add = sink if sink is not None else body.extend
        if "chunked" in te:
            while True:
                line = self._read_line(deadline)
                size = int(line.split(b";")[0].strip(), 16)
                if size == 0:
                    break
                self._read_exact(size, deadline, add)
                crlf = self._read_line(deadline)
                if crlf.strip():
                    raise ValueError("missing CRLF after chunk: %r" % crlf)
            while True:
                line = self._read_line(deadline)
                if line in (b"\r\n", b"\n"):
                    break
                k, _, v = line.decode("latin-1").partition(":")
                resp.trailers.append((k.strip().lower(), v.strip()))
        elif resp.header("content-length") is not None:
            self._read_exact(int(resp.header("content-length")), deadline, add)
        else:  # delimited by close
            while True:
                try:
                    self._fill(deadline)
                except ConnClosed:
                    break
                add(bytes(self.buf))
                self.buf.clear()
        resp.body = bytes(body)
        return resp

    def request(self, method, path, headers=None, body=None, host="outrider.test", version="HTTP/1.1",
                timeout=None):
        hdrs = [("Host", host)] if host is not None else []
        hdrs += list((headers or {}).items()) if isinstance(headers, dict) else list(headers or [])
        if body is not None and not any(k.lower() in ("content-length", "transfer-encoding") for k, _ in hdrs):
            hdrs.append(("Content-Length", str(len(body))))
        head = "%s %s %s\r\n" % (method, path, version) + "".join("%s: %s\r\n" % kv for kv in hdrs) + "\r\n"
        self.send(head.encode("latin-1") + (body or b""))
        return self.read_response(method, timeout=timeout)

    def wait_closed(self, timeout=3.0):
        """True if the peer closes (EOF or reset) within timeout; extra bytes are discarded."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                self.sock.settimeout(max(0.01, deadline - time.monotonic()))
                data = self.sock.recv(65536)
            except socket.timeout:
                return False
            except (ConnectionResetError, BrokenPipeError):
                return True
            if not data:
                return True
        return False


def raw_exchange(port, data, timeout=5.0, method="GET"):
    """Send raw bytes on a new connection, return (Response, closed_after) ."""
    with RawConn(port, timeout=timeout) as c:
        c.send(data)
        resp = c.read_response(method=method, timeout=timeout)
        closed = c.wait_closed(3.0)
        return resp, closed


def http_request(port, method, path, headers=None, body=None, timeout=10.0):
    """One request on a new connection (Connection: close)."""
    hdrs = dict(headers or {})
    hdrs.setdefault("Connection", "close")
    with RawConn(port, timeout=timeout) as c:
        return c.request(method, path, hdrs, body, timeout=timeout)


# ---------------------------------------------------------------------------------------------
# WebSocket client frames
# ---------------------------------------------------------------------------------------------
WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC11B85"


def ws_accept(key):
    return base64.b64encode(hashlib.sha1(key.encode() + WS_GUID).digest()).decode()


def ws_client_frame(opcode, payload, fin=True):
    mask = os.urandom(4)
    n = len(payload)
    b0 = (0x80 if fin else 0) | opcode
    if n < 126:
        hdr = struct.pack("!BB", b0, 0x80 | n)
    elif n < 65536:
        hdr = struct.pack("!BBH", b0, 0x80 | 126, n)
    else:
        hdr = struct.pack("!BBQ", b0, 0x80 | 127, n)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return hdr + mask + masked


def ws_read_frame(conn, timeout=5.0):
    """Read one frame from a RawConn; returns (fin, opcode, payload)."""
    deadline = time.monotonic() + timeout
    b0, b1 = conn._read_exact(2, deadline)
    n = b1 & 0x7F
    if n == 126:
        n = struct.unpack("!H", conn._read_exact(2, deadline))[0]
    elif n == 127:
        n = struct.unpack("!Q", conn._read_exact(8, deadline))[0]
    mask = conn._read_exact(4, deadline) if b1 & 0x80 else None
    payload = conn._read_exact(n, deadline) if n else b""
    if mask:
        payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return bool(b0 & 0x80), b0 & 0x0F, payload


# ---------------------------------------------------------------------------------------------
# Prometheus text parsing
# ---------------------------------------------------------------------------------------------
_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)(?:\s+\S+)?\s*$")
_LABEL = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*=\s*"((?:[^"\\]|\\.)*)"\s*,?')


def parse_metrics(text):
    out = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        m = _SAMPLE.match(line)
        if not m:
            raise ValueError("unparseable metrics line: %r" % line)
        name, labels_s, value = m.groups()
        labels = {}
        if labels_s:
            for lm in _LABEL.finditer(labels_s):
                labels[lm.group(1)] = lm.group(2).replace('\\"', '"').replace("\\n", "\n").replace("\\\\", "\\")
        out[(name, frozenset(labels.items()))] = float(value)
    return out


def metric_value(metrics, name, **labels):
    """Sum of all samples named `name` whose labels include `labels`; None if none match."""
    total = None
    want = set(labels.items())
    for (n, ls), v in metrics.items():
        if n == name and want <= set(ls):
            total = (total or 0.0) + v
    return total


# ---------------------------------------------------------------------------------------------
# Processes
# ---------------------------------------------------------------------------------------------
def _read_ready_line(proc, timeout, what):
    deadline = time.monotonic() + timeout
    buf = b""
    fd = proc.stdout.fileno()
    while time.monotonic() < deadline:
        r, _, _ = select.select([fd], [], [], max(0.01, deadline - time.monotonic()))
        if not r:
            continue
        chunk = os.read(fd, 4096)
        if not chunk:
            break
        buf += chunk
        if b"\n" in buf:
            return buf.split(b"\n", 1)[0].decode()
    raise RuntimeError("%s did not print its ready line within %ss (got %r, rc=%r)"
                       % (what, timeout, buf, proc.poll()))


def kill_proc(proc, timeout=5.0):
    if proc.poll() is not None:
        return proc.returncode
    try:
        proc.terminate()
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait(5)


class Upstream:
    def __init__(self, name, port=0):
        self.name = name
        self.proc = subprocess.Popen(
            [sys.executable, str(UPSTREAM_PY), "--port", str(port), "--name", name, "--host", LOCAL],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
        try:
            line = _read_ready_line(self.proc, 10, "upstream %s" % name)
        except Exception:
            kill_proc(self.proc)
            raise
        m = re.match(r"listening on (\S+):(\d+)$", line.strip())
        assert m, "unexpected upstream ready line %r" % line
        self.port = int(m.group(2))
        self.addr = "%s:%d" % (LOCAL, self.port)
        self.url = "http://%s" % self.addr

    def count(self):
        """Requests completely received (head + whole body), counted before the response."""
        return int(http_request(self.port, "GET", "/__count").body)

    def received(self):
        """Request heads received (including ones whose body never completed)."""
        return int(http_request(self.port, "GET", "/__received").body)

    def stop(self):
        kill_proc(self.proc)
        for f in (self.proc.stdout, self.proc.stderr):
            try:
                f.close()
            except OSError:
                pass


class Proxy:
    """One `outrider run` process with its config directory, logs and admin helpers."""

    def __init__(self, binary, workdir, config, layout="plain", args=(), env=None,
                 listen_port=None, admin_port=None):
        self.binary = str(binary)
        self.workdir = Path(workdir)
        self.confdir = self.workdir / "config"
        self.confdir.mkdir(parents=True, exist_ok=True)
        self.layout = layout
        self.generation = 0
        self.config_path = self.confdir / "outrider.yaml"
        if isinstance(config, dict):
            self.port = int(config["listeners"][0]["address"].rsplit(":", 1)[1])
            self.admin_port = int(config["admin"]["address"].rsplit(":", 1)[1])
        else:
            self.port = listen_port
            self.admin_port = admin_port
        if listen_port:
            self.port = listen_port
        if admin_port:
            self.admin_port = admin_port
        self.install_config(config, initial=True)
        self.stdout_path = self.workdir / "stdout.log"
        self.stderr_path = self.workdir / "stderr.log"
        self._out = open(self.stdout_path, "wb")
        self._err = open(self.stderr_path, "wb")
        e = dict(os.environ)
        for k in list(e):
            if k.startswith("OUTRIDER_") and k != "OUTRIDER_BIN":
                del e[k]
        e.update(env or {})
        self.proc = subprocess.Popen([self.binary, "run", "--config", str(self.config_path)] + list(args),
                                     stdout=self._out, stderr=self._err, stdin=subprocess.DEVNULL,
                                     cwd=str(self.workdir), env=e)
        self.pid = self.proc.pid

    # ---- config files --------------------------------------------------------------------
    @staticmethod
    def render(config):
        return config if isinstance(config, (str, bytes)) else to_yaml(config)

    def install_config(self, config, initial=False, how=None):
        """Write a config. Plain layout: write a temp file and rename it over outrider.yaml.
        ConfigMap layout: write ..<gen>/outrider.yaml, point ..data at it by renaming a
        temporary symlink (what the kubelet does), then remove the previous generation."""
        text = self.render(config)
        data = text.encode() if isinstance(text, str) else text
        how = how or self.layout
        self.generation += 1
        if how == "plain":
            tmp = self.confdir / (".outrider.yaml.tmp%d" % self.generation)
            tmp.write_bytes(data)
            os.rename(tmp, self.config_path)
        elif how == "configmap":
            gen = "..2026_%02d" % self.generation
            gdir = self.confdir / gen
            gdir.mkdir()
            (gdir / "outrider.yaml").write_bytes(data)
            datalink = self.confdir / "..data"
            old = os.readlink(datalink) if datalink.is_symlink() else None
            tmp = self.confdir / "..data_tmp"
            os.symlink(gen, tmp)
            os.rename(tmp, datalink)
            if initial:
                os.symlink("..data/outrider.yaml", self.config_path)
            if old:
                shutil.rmtree(self.confdir / old, ignore_errors=True)
        else:
            raise ValueError(how)
        self.config_bytes = data
        return hashlib.sha256(data).hexdigest()

    # ---- lifecycle -----------------------------------------------------------------------
    def wait_ready(self, timeout=20.0):
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError("outrider exited with code %s before becoming ready\n%s"
                                     % (self.proc.returncode, self.diag()))
            try:
                r = self.admin("GET", "/ready", timeout=1.0)
                last = r.status
                if r.status == 200:
                    return
            except (OSError, ConnClosed, ValueError) as e:
                last = repr(e)
            time.sleep(0.05)
        raise AssertionError("outrider not ready within %ss (last /ready: %s)\n%s" % (timeout, last, self.diag()))

    def alive(self):
        return self.proc.poll() is None

    def stop(self, timeout=10.0):
        rc = kill_proc(self.proc, timeout)
        for f in (self._out, self._err):
            try:
                f.close()
            except OSError:
                pass
        return rc

    def signal(self, sig):
        os.kill(self.pid, sig)

    def wait_exit(self, timeout):
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    # ---- outputs -------------------------------------------------------------------------
    def stdout_text(self):
        try:
            return self.stdout_path.read_text(errors="replace")
        except OSError:
            return ""

    def stderr_text(self):
        try:
            return self.stderr_path.read_text(errors="replace")
        except OSError:
            return ""

    def diag(self):
        return "--- outrider stderr (tail) ---\n%s\n--- outrider stdout (tail) ---\n%s" % (
            self.stderr_text()[-3000:], self.stdout_text()[-2000:])

    def access_log(self):
        out = []
        for line in self.stdout_text().splitlines():
            line = line.strip()
            if not line:
                continue
            try:
                obj = json.loads(line)
            except ValueError:
                continue
            if isinstance(obj, dict):
                out.append(obj)
        return out

    def wait_access_log(self, pred, timeout=5.0):
        """Wait until pred(entries) is truthy; returns the entries."""
        deadline = time.monotonic() + timeout
        while True:
            entries = self.access_log()
            if pred(entries) or time.monotonic() >= deadline:
                return entries
            time.sleep(0.05)

    # ---- admin ---------------------------------------------------------------------------
    @property
    def url(self):
        return "http://%s:%d" % (LOCAL, self.port)

    @property
    def admin_url(self):
        return "http://%s:%d" % (LOCAL, self.admin_port)

    def admin(self, method, path, timeout=5.0, body=None):
        return http_request(self.admin_port, method, path, body=body, timeout=timeout)

    def get(self, path, headers=None, timeout=10.0):
        return http_request(self.port, "GET", path, headers=headers, timeout=timeout)

    def metrics(self):
        r = self.admin("GET", "/metrics")
        assert r.status == 200, "GET /metrics -> %d" % r.status
        return parse_metrics(r.body.decode())

    def metric(self, name, **labels):
        return metric_value(self.metrics(), name, **labels)

    def config_json(self):
        r = self.admin("GET", "/config")
        assert r.status == 200, "GET /config -> %d %r" % (r.status, r.body[:200])
        return json.loads(r.body)

    def _status_field(self, field):
        try:
            with open("/proc/%d/status" % self.pid) as f:
                for line in f:
                    if line.startswith(field + ":"):
                        return int(line.split()[1])
        except OSError:
            return None
        return None

    def rss_kb(self):
        return self._status_field("VmRSS")

    def hwm_kb(self):
        return self._status_field("VmHWM")


class LoadGen(threading.Thread):
    """Requests GET `path` in a loop, alternating a keep-alive connection and new connections.
    Records (monotonic time, mode, status or exception text, body)."""

    def __init__(self, port, path="/name", max_seconds=60.0):
        super().__init__(daemon=True)
        self.port = port
        self.path = path
        self.stop_evt = threading.Event()
        self.results = []
        self.max_seconds = max_seconds

    def run(self):
        end = time.monotonic() + self.max_seconds
        ka = None
        while not self.stop_evt.is_set() and time.monotonic() < end:
            # keep-alive request
            t = time.monotonic()
            try:
                if ka is None:
                    ka = RawConn(self.port, timeout=5)
                r = ka.request("GET", self.path, timeout=5)
                self.results.append((t, "keepalive", r.status, r.body))
                if (r.header("connection") or "").lower() == "close":
                    ka.close()
                    ka = None
            except Exception as e:  # noqa: BLE001
                self.results.append((t, "keepalive", "error: %r" % e, b""))
                if ka:
                    ka.close()
                ka = None
            # new-connection request
            t = time.monotonic()
            try:
                r = http_request(self.port, "GET", self.path, timeout=5)
                self.results.append((t, "new", r.status, r.body))
            except Exception as e:  # noqa: BLE001
                self.results.append((t, "new", "error: %r" % e, b""))
        if ka:
            ka.close()

    def stop(self):
        self.stop_evt.set()
        self.join(10)

    def failures(self):
        return [r for r in self.results if r[2] != 200]
