#!/usr/bin/env python3
"""Outrider benchmark harness (`make bench`).

Runs the same wrk load, one target after another (never concurrently), on 127.0.0.1 only:

  direct            a dedicated nginx (1 worker) serving a fixed 1 KiB body  -- the baseline
  nginx             nginx as reverse proxy (1 worker, upstream keepalive 64)
  haproxy           haproxy (nbthread 1, http-reuse always)
  outrider          Outrider (1 worker, no filters, access log off)
  outrider+log      Outrider with the access log written to a file
  outrider+ratelimit, outrider+tracing   the filters (see TARGETS)
  nginx+modsec      nginx + ModSecurity v3 + the CRS of filters/waf/base.conf (PL1), benign mix
  outrider+waf      Outrider's WAF with the same rules, benign mix (bench/waf/benign.lua), plus
                    full config reloads under that load (duration, failed requests)
  ... attack        the same two on an attack mix (bench/waf/attack.lua), every request blocked

For each target: requests/s, p50, p99 (wrk --latency), CPU µs per request of the proxy's
worker process(es) (utime+stime from /proc/PID/stat around the measured run), RSS idle after
start and RSS with 1,000 idle keep-alive connections open.

Output: a markdown table on stdout, also written to bench/results/latest.md (and .json).

Rows are data: append a `Target(...)` to TARGETS (for Outrider rows, `filters=` takes the YAML
list that goes under `filters:` and `extra=` any other top-level YAML).

Environment:
  OUTRIDER_BIN      Outrider binary (default <repo>/.build/release/outrider)
  BENCH_SECONDS     length of each measured wrk run (default 10)
  BENCH_WARMUP      length of the warm-up wrk run (default 2)
  BENCH_CONNS       wrk connections (default 50)
  BENCH_IDLE_CONNS  idle keep-alive connections for the memory column (default 1000)
  BENCH_TARGETS     comma list of row names to run (default: all); the direct row always runs
  BENCH_OUT         results directory (default <repo>/bench/results)
  BENCH_ENFORCE     if 1, exit 3 when an Outrider target from the issue is not met
  BENCH_REPEAT      measured runs per row; the median run (by req/s) is reported (default 1)
  BENCH_ROUNDS      passes over the whole target list, one after another (default 1): each
                    target is restarted and measured REPEAT times per pass, and its row is the
                    median run of all passes. Host speed drifts over minutes on a shared
                    machine; interleaving the targets spreads that drift over all of them
                    instead of loading it onto whichever target ran in a slow minute, which
                    matters for rows compared as ratios (Outrider+WAF vs nginx+ModSecurity)
  BENCH_SYSCALLS    if 1, also count syscalls per request per row (separate run, strace -c)

Exit codes: 0 ok; 1 a row failed (could not start, non-2xx replies, socket errors);
2 a required tool (wrk, nginx, haproxy) is missing; 3 targets not met with BENCH_ENFORCE=1.
"""
from __future__ import annotations

import dataclasses
import glob
import json
import os
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.request
from typing import Callable

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
BODY_SIZE = 1024
CLK_TCK = os.sysconf("SC_CLK_TCK")


def env_int(name: str, default: int) -> int:
    try:
        return int(os.environ.get(name, default))
    except ValueError:
        sys.exit(f"bench: {name} must be an integer")


SECONDS = env_int("BENCH_SECONDS", 10)
WARMUP = env_int("BENCH_WARMUP", 2)
CONNS = env_int("BENCH_CONNS", 50)
IDLE_CONNS = env_int("BENCH_IDLE_CONNS", 1000)
OUTRIDER_BIN = os.environ.get("OUTRIDER_BIN", os.path.join(REPO, ".build", "release", "outrider"))
OUT_DIR = os.environ.get("BENCH_OUT", os.path.join(HERE, "results"))
SYSCALLS = os.environ.get("BENCH_SYSCALLS") == "1"
REPEAT = max(1, env_int("BENCH_REPEAT", 1))
ROUNDS = max(1, env_int("BENCH_ROUNDS", 1))
# wrk's default timeout (2 s) counts nginx + ModSecurity's slowest attack replies (p99 about
# 1 s, a few over 2 s) as socket errors instead of latencies.
WRK_TIMEOUT = "10s"


def log(msg: str) -> None:
    print(f"bench: {msg}", file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------------------------
# processes


class Running:
    """A started server: the port to load, the pids whose CPU and RSS count, what to kill."""

    def __init__(self, name: str, port: int, procs: list[subprocess.Popen],
                 measured_pids: Callable[[], list[int]], logfile: str):
        self.name = name
        self.port = port
        self.procs = procs
        self.measured_pids = measured_pids
        self.logfile = logfile
        self.access_log: str | None = None  # Outrider rows logging to a file
        self.admin_port: int | None = None  # Outrider rows

    def stop(self) -> None:
        for p in self.procs:
            stop_proc(p)


STARTED: list[subprocess.Popen] = []


def spawn(argv: list[str], logfile: str, **kw) -> subprocess.Popen:
    out = open(logfile, "ab")
    p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                         start_new_session=True, **kw)
    out.close()
    STARTED.append(p)
    return p


def stop_proc(p: subprocess.Popen) -> None:
    """SIGTERM the process group we created for p, then SIGKILL after 3 s."""
    if p.poll() is None:
        try:
            os.killpg(p.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            p.wait(timeout=3)
        except subprocess.TimeoutExpired:
            pass
    try:  # the group may hold children (nginx workers) even when the leader is gone
        os.killpg(p.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        p.wait(timeout=3)
    except subprocess.TimeoutExpired:
        pass


def stop_all() -> None:
    for p in reversed(STARTED):
        stop_proc(p)
    STARTED.clear()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def children(pid: int) -> list[int]:
    out = []
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            out = [int(x) for x in f.read().split()]
    except OSError:
        pass
    return out


def descendants(pid: int) -> list[int]:
    out, todo = [], [pid]
    while todo:
        for c in children(todo.pop()):
            out.append(c)
            todo.append(c)
    return out


def cpu_ticks(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14, 15)
    return total


def rss_kib(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
    return total


def http_get(port: int, path: str = "/", timeout: float = 2.0) -> tuple[int, bytes]:
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def wait_until(cond: Callable[[], bool], timeout: float, what: str, proc: subprocess.Popen | None,
               logfile: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise StartError(f"{what}: process exited with {proc.returncode}", logfile)
        try:
            if cond():
                return
        except OSError:
            pass
        time.sleep(0.05)
    raise StartError(f"{what}: not ready after {timeout:.0f}s", logfile)


class StartError(Exception):
    def __init__(self, msg: str, logfile: str):
        super().__init__(msg)
        self.logfile = logfile


def port_serves_body(port: int) -> bool:
    status, body = http_get(port)
    return status == 200 and len(body) == BODY_SIZE


# ----------------------------------------------------------------------------------------------
# targets


@dataclasses.dataclass
class Target:
    name: str
    start: Callable[["Context", "Target"], Running]
    note: str = ""
    filters: str | None = None   # YAML list under `filters:` (Outrider rows); None means []
    extra: str | None = None     # other top-level YAML (Outrider rows), e.g. a tracing section
    access_log: str = "off"      # Outrider: "off" or "file"
    primary: bool = False        # the row the targets are checked against
    collector: bool = False      # start a real OTLP collector (rotel, blackhole exporter); {collector} in filters
    script: str | None = None    # wrk Lua script (bench/waf/*.lua) for the request mix; None: GET /
    expect_blocked: bool = False # every request must be refused (attack rows): non-2xx is the expected result
    reload_probe: bool = False   # Outrider: also time full config reloads (POST /reload) under this load


@dataclasses.dataclass
class Context:
    tmp: str
    upstream_port: int = 0


NGINX_COMMON = """\
worker_processes 1;
worker_rlimit_nofile 65536;
daemon off;
master_process on;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 8192; multi_accept off; }}
http {{
    access_log off;
    default_type text/plain;
    client_body_temp_path {prefix}/client_body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    keepalive_requests 100000000;
    keepalive_timeout 300s;
{body}
}}
"""


def start_nginx(ctx: Context, name: str, http_body: str, main: str = "") -> tuple[subprocess.Popen, str, str]:
    prefix = os.path.join(ctx.tmp, name)
    os.makedirs(prefix, exist_ok=True)
    conf = os.path.join(prefix, "nginx.conf")
    with open(conf, "w") as f:
        f.write(main + NGINX_COMMON.format(prefix=prefix, body=textwrap.indent(http_body, "    ")))
    logfile = os.path.join(prefix, "stderr.log")
    p = spawn(["nginx", "-p", prefix, "-c", conf, "-e", os.path.join(prefix, "error.log")], logfile)
    return p, logfile, prefix


def nginx_workers(master: subprocess.Popen) -> Callable[[], list[int]]:
    return lambda: children(master.pid)


def start_upstream(ctx: Context) -> Running:
    port = free_port()
    body = "x" * BODY_SIZE
    server = f"""\
server {{
    listen 127.0.0.1:{port} backlog=4096;
    location / {{ return 200 "{body}"; }}
}}"""
    p, logfile, _ = start_nginx(ctx, "upstream", server)
    wait_until(lambda: port_serves_body(port) and len(children(p.pid)) == 1, 10,
               "upstream nginx", p, logfile)
    ctx.upstream_port = port
    return Running("direct", port, [p], nginx_workers(p), logfile)


def start_direct(ctx: Context, t: Target) -> Running:
    # The upstream itself, already running; stopping it is done at the very end.
    r = Running(t.name, ctx.upstream_port, [], UPSTREAM.measured_pids, UPSTREAM.logfile)
    return r


def nginx_proxy_conf(ctx: Context, port: int, server_extra: str = "") -> str:
    """nginx as a reverse proxy to the upstream with keep-alive; `server_extra` adds directives
    to the server block (the ModSecurity row's)."""
    return f"""\
upstream app {{
    server 127.0.0.1:{ctx.upstream_port};
    keepalive 64;
}}
server {{
    listen 127.0.0.1:{port} backlog=4096;
{server_extra}    location / {{
        proxy_pass http://app;
        proxy_http_version 1.1;
        proxy_set_header Connection "";
    }}
}}"""


def start_nginx_proxy(ctx: Context, t: Target) -> Running:
    port = free_port()
    conf = nginx_proxy_conf(ctx, port)
    p, logfile, _ = start_nginx(ctx, "nginx-proxy", conf)
    wait_until(lambda: port_serves_body(port) and len(children(p.pid)) == 1, 10,
               "nginx proxy", p, logfile)
    return Running(t.name, port, [p], nginx_workers(p), logfile)


MODSEC_MODULE = "/usr/lib/nginx/modules/ngx_http_modsecurity_module.so"
WAF_BASE = os.path.join(REPO, "filters", "waf", "base.conf")


def modsec_rules(prefix: str) -> str:
    """The same rule set Outrider loads (filters/waf/base.conf: engine settings, PL1, Debian's CRS
    3.3.4), written for ModSecurity v3.0.9, which has no IncludeOptional and resolves relative
    includes against the working directory; audit log as in modsecurity.conf-recommended."""
    out = []
    for line in open(WAF_BASE):
        m = re.match(r"^(Include|IncludeOptional)\s+(\S+)\s*$", line)
        if m:
            path = m.group(2)
            if not os.path.isabs(path):
                path = os.path.join(os.path.dirname(WAF_BASE), path)
            if m.group(1) == "IncludeOptional" and not glob.glob(path):
                continue
            line = f"Include {path}\n"
        out.append(line)
    out.append("SecAuditEngine RelevantOnly\n")
    out.append("SecAuditLogRelevantStatus \"^(?:5|4(?!04))\"\n")
    out.append("SecAuditLogParts ABIJDEFHZ\n")
    out.append("SecAuditLogType Serial\n")
    out.append(f"SecAuditLog {prefix}/modsec_audit.log\n")
    path = os.path.join(prefix, "modsecurity.conf")
    with open(path, "w") as f:
        f.writelines(out)
    return path


def start_nginx_modsec(ctx: Context, t: Target) -> Running:
    if not os.path.exists(MODSEC_MODULE):
        raise StartError(f"{MODSEC_MODULE} missing (apt-get install libnginx-mod-http-modsecurity)", "")
    port = free_port()
    prefix = os.path.join(ctx.tmp, re.sub(r"[^A-Za-z0-9_.-]", "_", t.name))
    os.makedirs(prefix, exist_ok=True)
    rules = modsec_rules(prefix)
    conf = nginx_proxy_conf(ctx, port, f"    modsecurity on;\n    modsecurity_rules_file {rules};\n")
    p, logfile, _ = start_nginx(ctx, os.path.basename(prefix), conf, main=f"load_module {MODSEC_MODULE};\n")
    wait_until(lambda: port_serves_body(port) and len(children(p.pid)) == 1, 60,
               "nginx + ModSecurity", p, logfile)
    return Running(t.name, port, [p], nginx_workers(p), logfile)


def start_haproxy(ctx: Context, t: Target) -> Running:
    port = free_port()
    d = os.path.join(ctx.tmp, "haproxy")
    os.makedirs(d, exist_ok=True)
    conf = os.path.join(d, "haproxy.cfg")
    with open(conf, "w") as f:
        f.write(f"""\
global
    nbthread 1
    maxconn 8192
    pidfile {d}/haproxy.pid

defaults
    mode http
    option http-keep-alive
    http-reuse always
    timeout connect 5s
    timeout client 60s
    timeout server 60s
    timeout http-keep-alive 300s

frontend fe
    bind 127.0.0.1:{port}
    default_backend be

backend be
    server app 127.0.0.1:{ctx.upstream_port}
""")
    logfile = os.path.join(d, "stderr.log")
    p = spawn(["haproxy", "-db", "-f", conf], logfile)  # -db: foreground, single process
    wait_until(lambda: port_serves_body(port), 10, "haproxy", p, logfile)
    return Running(t.name, port, [p], lambda: [p.pid], logfile)


def outrider_config(ctx: Context, t: Target, port: int, admin: int, d: str) -> str:
    access = "off" if t.access_log == "off" else os.path.join(d, "access.log")
    subst = {"repo": REPO, "tmp": d}
    if t.filters:
        filters = "filters:\n" + textwrap.indent(textwrap.dedent(t.filters).strip("\n").format(**subst), "  ") + "\n"
    else:
        filters = "filters: []\n"
    extra = textwrap.dedent(t.extra).strip("\n").format(**subst) + "\n" if t.extra else ""
    return (f"workers: 1\n"
            f"admin:\n  address: 127.0.0.1:{admin}\n"
            f"listeners:\n"
            f"  - name: inbound\n"
            f"    address: 127.0.0.1:{port}\n"
            f"    upstream: 127.0.0.1:{ctx.upstream_port}\n"
            f"access_log: {{path: {access}}}\n"
            f"{filters}{extra}")


def start_outrider(ctx: Context, t: Target) -> Running:
    if not (os.path.isfile(OUTRIDER_BIN) and os.access(OUTRIDER_BIN, os.X_OK)):
        raise StartError(f"OUTRIDER_BIN {OUTRIDER_BIN} is not an executable file", "")
    port, admin = free_port(), free_port()
    d = os.path.join(ctx.tmp, re.sub(r"[^A-Za-z0-9_.-]", "_", t.name))
    os.makedirs(d, exist_ok=True)
    extra_procs: list[subprocess.Popen] = []
    if t.collector:
        cport, gport = free_port(), free_port()
        agent = rotel_agent()
        clog = os.path.join(d, "collector.log")
        cp = spawn([agent, "start", "--otlp-http-endpoint", f"127.0.0.1:{cport}",
                    "--otlp-grpc-endpoint", f"127.0.0.1:{gport}", "--exporter", "blackhole"], clog)
        extra_procs.append(cp)
        wait_until(lambda: port_open(cport), 15, f"{t.name} collector", cp, clog)
        t = dataclasses.replace(t, filters=(t.filters or "").replace("{collector}", str(cport)))
    conf = os.path.join(d, "outrider.yaml")
    with open(conf, "w") as f:
        f.write(outrider_config(ctx, t, port, admin, d))
    logfile = os.path.join(d, "stderr.log")
    chk = subprocess.run([OUTRIDER_BIN, "check", "--config", conf], capture_output=True, text=True,
                         timeout=30)
    if chk.returncode != 0:
        with open(logfile, "w") as f:
            f.write(f"$ outrider check --config {conf}\n{chk.stdout}{chk.stderr}\n--- config ---\n")
            f.write(open(conf).read())
        raise StartError(f"`outrider check` rejected the config (exit {chk.returncode})", logfile)
    env = {k: v for k, v in os.environ.items()
           if k not in ("OUTRIDER_WORKERS", "OUTRIDER_ADMIN_ADDRESS", "OUTRIDER_LOG_LEVEL")}
    env["OUTRIDER_LOG_LEVEL"] = "warn"
    p = spawn([OUTRIDER_BIN, "run", "--config", conf], logfile, env=env)
    wait_until(lambda: http_get(admin, "/ready")[0] == 200, 15, f"{t.name} /ready", p, logfile)
    wait_until(lambda: port_serves_body(port), 5, f"{t.name} proxying", p, logfile)
    r = Running(t.name, port, [p] + extra_procs, lambda: [p.pid] + descendants(p.pid), logfile)
    r.admin_port = admin
    if t.access_log != "off":
        r.access_log = os.path.join(d, "access.log")
    return r


# The WAF filter of the outrider+waf rows: the rules nginx+modsec loads too.
WAF_FILTER = """
  - name: waf
    mode: enforce
    rules:
      - {repo}/filters/waf/base.conf
    audit_log: {tmp}/waf-audit.log
"""

# The rows, in order. Add a row by appending one entry, e.g.
#   Target("outrider+ratelimit", start_outrider, filters="""
#       - name: ratelimit
#         rules: {repo}/filters/ratelimit/default.yaml
#   """),
# ({repo} is the repository root, {tmp} the row's temp dir.)
TARGETS: list[Target] = [
    Target("direct", start_direct, note="upstream nginx, no proxy"),
    Target("nginx", start_nginx_proxy, note="1 worker, keepalive 64"),
    Target("haproxy", start_haproxy, note="nbthread 1, http-reuse always"),
    Target("outrider", start_outrider, note="1 worker, no filters, access log off", primary=True),
    Target("outrider+log", start_outrider, note="access log to a file", access_log="file"),
    Target("outrider+ratelimit", start_outrider, note="local limit that never triggers", filters="""
  - name: ratelimit
    mode: enforce
    rules: {repo}/filters/ratelimit/examples/never-triggers.yaml
"""),
    Target("nginx+modsec", start_nginx_modsec, script="benign.lua",
           note="nginx + ModSecurity v3 + CRS 3.3.4 PL1 (filters/waf/base.conf), benign mix"),
    Target("outrider+waf", start_outrider, script="benign.lua", reload_probe=True,
           note="WAF: the same rules, enforce, audit log to a file; benign mix", filters=WAF_FILTER),
    Target("nginx+modsec attack", start_nginx_modsec, script="attack.lua", expect_blocked=True,
           note="nginx + ModSecurity, attack mix (every request blocked)"),
    Target("outrider+waf attack", start_outrider, script="attack.lua", expect_blocked=True,
           note="Outrider WAF, attack mix (every request blocked)", filters=WAF_FILTER),
    Target("outrider+tracing", start_outrider, collector=True,
           note="tracing filter, sampling 100%, exporting to a real collector (rotel)", filters="""
  - name: tracing
    mode: enforce
    sampling: 1.0
    exporter:
      endpoint: http://127.0.0.1:{collector}
"""),
]


def rotel_agent() -> str:
    """The collector binary shipped by the `rotel` package on PyPI."""
    try:
        import rotel  # type: ignore
    except ImportError as e:
        raise StartError("the tracing row needs `pip install rotel`", "") from e
    return os.path.join(os.path.dirname(rotel.__file__), "rotel-agent")


def port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False

UPSTREAM: Running  # set in main()
LOAD_AT_START = ""
BUSY_AT_START = False

# ----------------------------------------------------------------------------------------------
# load and measurements

UNIT_US = {"us": 1.0, "ms": 1e3, "s": 1e6, "m": 60e6, "h": 3600e6}


def parse_time_us(s: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m|h)", s.strip())
    if not m:
        raise ValueError(f"unparsable wrk time {s!r}")
    return float(m.group(1)) * UNIT_US[m.group(2)]


@dataclasses.dataclass
class WrkResult:
    rps: float
    requests: int
    p50_us: float
    p99_us: float
    non2xx: int
    socket_errors: int
    raw: str


def parse_wrk(out: str) -> WrkResult:
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    reqs = re.search(r"(\d+) requests in", out)
    p50 = re.search(r"^\s+50%\s+(\S+)", out, re.M)
    p99 = re.search(r"^\s+99%\s+(\S+)", out, re.M)
    if not (rps and reqs and p50 and p99):
        raise ValueError("could not parse wrk output:\n" + out)
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    return WrkResult(float(rps.group(1)), int(reqs.group(1)), parse_time_us(p50.group(1)),
                     parse_time_us(p99.group(1)), int(non2xx.group(1)) if non2xx else 0,
                     sum(int(x) for x in sock.groups()) if sock else 0, out)


def wrk_argv(port: int, seconds: int, script: str | None = None) -> list[str]:
    argv = ["wrk", "-t1", f"-c{CONNS}", f"-d{seconds}s", "--timeout", WRK_TIMEOUT, "--latency"]
    if script:
        argv += ["-s", os.path.join(HERE, "waf", script)]
    return argv + [f"http://127.0.0.1:{port}/"]


def wrk(port: int, seconds: int, script: str | None = None) -> WrkResult:
    argv = wrk_argv(port, seconds, script)
    r = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 30)
    if r.returncode != 0:
        raise RuntimeError(f"wrk exited {r.returncode}: {r.stderr.strip()}")
    return parse_wrk(r.stdout)


def read_response(sock: socket.socket) -> int:
    """Read one HTTP/1.1 response with a Content-Length body; return the status code."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed before the response head")
        buf += chunk
    head, rest = buf.split(b"\r\n\r\n", 1)
    status = int(head.split(b" ", 2)[1])
    m = re.search(rb"(?im)^content-length:\s*(\d+)\s*$", head)
    if not m:
        raise ConnectionError("response without Content-Length")
    need = int(m.group(1)) - len(rest)
    while need > 0:
        chunk = sock.recv(min(need, 65536))
        if not chunk:
            raise ConnectionError("closed in the body")
        need -= len(chunk)
    return status


def open_idle_connections(port: int, n: int) -> list[socket.socket]:
    socks = []
    try:
        for _ in range(n):
            s = socket.create_connection(("127.0.0.1", port), timeout=5)
            socks.append(s)
            s.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: outrider-bench\r\n\r\n")
            status = read_response(s)
            if status != 200:
                raise ConnectionError(f"status {status}")
    except Exception:
        for s in socks:
            s.close()
        raise
    return socks


def metric(port: int, name: str) -> float | None:
    status, body = http_get(port, "/metrics")
    if status != 200:
        return None
    m = re.search(rb"(?m)^" + re.escape(name.encode()) + rb"(?:\{[^}]*\})? ([0-9.eE+-]+)$", body)
    return float(m.group(1)) if m else None


def reload_under_load(running: Running, t: Target, reloads: int = 4) -> str:
    """Full config reloads (every rule file re-read and recompiled) while wrk runs the row's
    load: each reload's duration from outrider_config_reload_duration_seconds, and whether any
    request failed meanwhile."""
    admin = running.admin_port
    seconds = 2 + 2 * reloads
    w = subprocess.Popen(wrk_argv(running.port, seconds, t.script), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    durations = []
    try:
        time.sleep(1.5)
        for _ in range(reloads):
            before = metric(admin, "outrider_config_version") or 0
            req = urllib.request.Request(f"http://127.0.0.1:{admin}/reload", method="POST")
            urllib.request.urlopen(req, timeout=5).read()
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and (metric(admin, "outrider_config_version") or 0) <= before:
                time.sleep(0.05)
            if (metric(admin, "outrider_config_version") or 0) <= before:
                return "reload under load: a reload did not complete within 10 s"
            durations.append(metric(admin, "outrider_config_reload_duration_seconds") or 0.0)
            time.sleep(1.5)
    finally:
        out, _ = w.communicate(timeout=seconds + 30)
    res = parse_wrk(out)
    failed = res.socket_errors + (0 if t.expect_blocked else res.non2xx)
    return (f"reload under load: {len(durations)} full reloads, longest {max(durations) * 1000:.0f} ms "
            f"(mean {sum(durations) / len(durations) * 1000:.0f} ms); {res.requests:,} requests meanwhile, "
            f"{failed} failed")


def count_syscalls(running: Running, seconds: int = 3) -> dict[str, float] | None:
    """A separate short run under `strace -c -f`: syscalls per request (strace slows the target,
    so this never overlaps the measured run)."""
    if shutil.which("strace") is None:
        log("BENCH_SYSCALLS=1 but strace is missing (apt-get install -y strace)")
        return None
    argv = ["strace", "-c", "-f", "-U", "name,calls,errors"]
    for pid in running.measured_pids():
        argv += ["-p", str(pid)]
    st = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(0.5)
        res = wrk(running.port, seconds)
    finally:
        st.send_signal(signal.SIGINT)
        err = st.communicate(timeout=10)[1]
    out: dict[str, float] = {}
    for line in err.splitlines():
        f = line.split()
        if len(f) >= 2 and f[1].isdigit() and not f[0].startswith("-"):
            out[f[0]] = int(f[1]) / max(res.requests, 1)
            if len(f) >= 3 and f[2].isdigit() and int(f[2]):
                out[f[0] + " (errors)"] = int(f[2]) / max(res.requests, 1)
    return out


@dataclasses.dataclass
class Row:
    target: Target
    rps: float | None = None
    p50_us: float | None = None
    p99_us: float | None = None
    cpu_us: float | None = None
    rss_idle_kib: int | None = None
    rss_conns_kib: int | None = None
    syscalls: dict[str, float] | None = None  # BENCH_SYSCALLS=1: syscalls per request, by name
    reload: str | None = None  # reload_probe rows: what the reloads under load showed
    error: str | None = None
    # Every measured run of every round: (wrk result, CPU µs per request).
    runs: list = dataclasses.field(default_factory=list)


def measure(ctx: Context, t: Target, row: Row | None = None, rnd: int = 0) -> Row:
    """Measures `t` (REPEAT runs) and adds the runs to `row` (a new row in the first round;
    the later rounds only add runs: memory, reloads and syscalls are measured once)."""
    first = row is None
    row = row if row is not None else Row(t)
    log(f"--- {t.name}: starting" + (f" (round {rnd + 1}/{ROUNDS})" if ROUNDS > 1 else ""))
    running = None
    try:
        running = t.start(ctx, t)
        time.sleep(0.5)
        pids = running.measured_pids()
        if not pids:
            raise RuntimeError("no worker process found")
        if first:
            row.rss_idle_kib = rss_kib(pids)
        log(f"{t.name}: warm-up {WARMUP}s")
        served = wrk(running.port, WARMUP, t.script).requests
        runs = row.runs
        for i in range(REPEAT):
            before = cpu_ticks(pids)
            log(f"{t.name}: measuring {SECONDS}s, {CONNS} connections"
                + (f" (run {i + 1}/{REPEAT})" if REPEAT > 1 else ""))
            res = wrk(running.port, SECONDS, t.script)
            after = cpu_ticks(pids)
            runs.append((res, (after - before) / CLK_TCK * 1e6 / max(res.requests, 1)))
            served += res.requests
            if t.expect_blocked:
                if res.non2xx < res.requests or res.socket_errors:
                    row.error = (f"{res.requests - res.non2xx} of {res.requests} attack requests not blocked, "
                                 f"{res.socket_errors} socket errors")
            elif res.non2xx or res.socket_errors:
                row.error = f"{res.non2xx} non-2xx replies, {res.socket_errors} socket errors"
        ordered = sorted(runs, key=lambda x: x[0].rps)
        res, row.cpu_us = ordered[len(ordered) // 2]  # the median run by req/s, of every round so far
        row.rps, row.p50_us, row.p99_us = res.rps, res.p50_us, res.p99_us
        if not first:
            log(f"{t.name}: {row.rps:,.0f} req/s (median of {len(runs)} runs so far)")
            return row
        if running.access_log is not None:
            size = os.path.getsize(running.access_log) if os.path.exists(running.access_log) else 0
            log(f"{t.name}: access log {size / 1e6:.1f} MB ({size / max(served, 1):.0f} B/request)")
            if size == 0:
                row.error = "access log file is empty"
        if t.reload_probe and running.admin_port:
            row.reload = reload_under_load(running, t)
            log(f"{t.name}: {row.reload}")
        log(f"{t.name}: {IDLE_CONNS} idle keep-alive connections")
        socks = open_idle_connections(running.port, IDLE_CONNS)
        try:
            time.sleep(0.5)
            row.rss_conns_kib = rss_kib(running.measured_pids())
        finally:
            for s in socks:
                s.close()
        if SYSCALLS:
            row.syscalls = count_syscalls(running)
        log(f"{t.name}: {row.rps:,.0f} req/s p50 {fmt_us(row.p50_us)} p99 {fmt_us(row.p99_us)} "
            f"cpu {row.cpu_us:.1f} us/req rss {fmt_kib(row.rss_idle_kib)} / {fmt_kib(row.rss_conns_kib)}")
    except StartError as e:
        row.error = str(e)
        log(f"{t.name}: FAILED: {e}")
        if e.logfile and os.path.exists(e.logfile):
            with open(e.logfile, errors="replace") as f:
                tail = f.read()[-2000:]
            if tail.strip():
                log(f"{t.name}: log tail ({e.logfile}):\n{tail}")
    except Exception as e:  # noqa: BLE001 - one failed row must not stop the others
        row.error = f"{type(e).__name__}: {e}"
        log(f"{t.name}: FAILED: {row.error}")
    finally:
        if running is not None:
            running.stop()
    return row


# ----------------------------------------------------------------------------------------------
# report


def fmt_us(v: float | None) -> str:
    if v is None:
        return "–"
    return f"{v:.0f} µs" if v < 1000 else f"{v / 1000:.2f} ms"


def fmt_kib(v: int | None) -> str:
    return "–" if v is None else f"{v / 1024:.1f} MB"


def report(rows: list[Row]) -> tuple[str, dict, bool]:
    by = {r.target.name: r for r in rows}
    direct = by.get("direct")
    conns_label = "1k" if IDLE_CONNS == 1000 else str(IDLE_CONNS)
    lines = [
        f"# Outrider benchmark — {time.strftime('%Y-%m-%d %H:%M:%S %Z')}",
        "",
        f"`wrk -t1 -c{CONNS} -d{SECONDS}s --timeout {WRK_TIMEOUT} --latency` on 127.0.0.1 after a {WARMUP} s warm-up"
        + (f", median of {REPEAT * ROUNDS} runs" if REPEAT * ROUNDS > 1 else "")
        + (f" ({ROUNDS} interleaved passes over the targets)" if ROUNDS > 1 else "") + "; "
        f"{BODY_SIZE} B body from a 1-worker nginx upstream; one target at a time. "
        f"CPU µs/req: utime+stime of the proxy worker(s) / requests. "
        f"RSS: VmRSS (MB = 2^20 B) idle after start, and with {IDLE_CONNS} idle keep-alive connections. "
        f"Host: {os.cpu_count()} CPUs, {os.uname().release}; load average at start {LOAD_AT_START}"
        + (" — other work was running, numbers are noisy." if BUSY_AT_START else "."),
        "",
        f"| target | req/s | ×direct | p50 | p99 | CPU µs/req | RSS idle | RSS {conns_label} conns |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        if r.rps is None:
            lines.append(f"| {r.target.name} | failed: {r.error} | | | | | | |")
            continue
        x = f"{r.rps / direct.rps:.2f}×" if direct and direct.rps else "–"
        name = r.target.name + (" ⚠" if r.error else "")
        lines.append(f"| {name} | {r.rps:,.0f} | {x} | {fmt_us(r.p50_us)} | {fmt_us(r.p99_us)} | "
                     f"{r.cpu_us:.1f} | {fmt_kib(r.rss_idle_kib)} | {fmt_kib(r.rss_conns_kib)} |")
    lines.append("")
    if any(r.syscalls for r in rows):
        lines.append("Syscalls per request (separate 3 s run under strace -c):")
        lines.append("")
        for r in rows:
            if r.syscalls:
                top = sorted(((v, k) for k, v in r.syscalls.items() if v >= 0.05 and not k.startswith("total")),
                             reverse=True)
                lines.append(f"- {r.target.name}: total {r.syscalls.get('total', 0):.2f} — "
                             + ", ".join(f"{k} {v:.2f}" for v, k in top))
        lines.append("")
    for r in rows:
        if r.reload:
            lines.append(f"- {r.target.name}: {r.reload}")
    for r in rows:
        if r.error and r.rps is not None:
            lines.append(f"⚠ {r.target.name}: {r.error}")
    checks: list[tuple[str, bool | None]] = []
    prim = next((r for r in rows if r.target.primary), None)
    ng, ha = by.get("nginx"), by.get("haproxy")
    if prim is not None and prim.rps is not None:
        best = max([x.rps for x in (ng, ha) if x and x.rps] or [0])
        ratio = f" ({prim.rps / best:.2f}× the better of nginx/haproxy; aim 1.2×)" if best else ""
        checks.append((f"throughput ≥ nginx and haproxy{ratio}", prim.rps >= best if best else None))
        checks.append((f"CPU ≤ 12 µs/request ({prim.cpu_us:.1f})", prim.cpu_us <= 12))
        if ng and ng.p99_us:
            checks.append((f"p99 ≤ nginx's ({fmt_us(prim.p99_us)} vs {fmt_us(ng.p99_us)})",
                           prim.p99_us <= ng.p99_us))
        checks.append((f"RSS idle < 12 MB ({fmt_kib(prim.rss_idle_kib)})",
                       prim.rss_idle_kib is not None and prim.rss_idle_kib < 12 * 1024))
        checks.append((f"RSS with {IDLE_CONNS} connections < 40 MB ({fmt_kib(prim.rss_conns_kib)})",
                       prim.rss_conns_kib is not None and prim.rss_conns_kib < 40 * 1024))
        rl = by.get("outrider+ratelimit")
        if rl and rl.rps:
            checks.append((f"ratelimit ≥ 95% of no-filter throughput ({rl.rps / prim.rps:.2f}×)",
                           rl.rps >= 0.95 * prim.rps))
        for mix in ("", " attack"):
            ow, nm = by.get("outrider+waf" + mix), by.get("nginx+modsec" + mix)
            if ow and ow.rps and nm and nm.rps:
                what = "attack" if mix else "benign"
                checks.append((f"WAF ≥ 10× nginx+ModSecurity, {what} mix ({ow.rps / nm.rps:.1f}×; aim 20×)",
                               ow.rps >= 10 * nm.rps))
                checks.append((f"WAF p99 < nginx+ModSecurity's, {what} mix ({fmt_us(ow.p99_us)} vs {fmt_us(nm.p99_us)})",
                               ow.p99_us < nm.p99_us))
        ow = by.get("outrider+waf")
        if ow and ow.rss_conns_kib:
            checks.append((f"WAF RSS < 60 MB ({fmt_kib(max(ow.rss_idle_kib or 0, ow.rss_conns_kib))})",
                           max(ow.rss_idle_kib or 0, ow.rss_conns_kib) < 60 * 1024))
        tr = by.get("outrider+tracing")
        if tr and tr.rps:
            checks.append((f"tracing ≥ 90% of no-filter throughput ({tr.rps / prim.rps:.2f}×)",
                           tr.rps >= 0.9 * prim.rps))
        lines.append("Targets (issue), for the `" + prim.target.name + "` row: " + "; ".join(
            f"{desc}: {'met' if ok else ('n/a' if ok is None else 'NOT MET')}" for desc, ok in checks) + ".")
    elif prim is not None:
        lines.append(f"Targets (issue): not evaluated — the `{prim.target.name}` row did not run "
                     f"({prim.error}).")
    all_met = bool(checks) and all(ok for _, ok in checks)
    data = {
        "time": time.time(), "load_average_at_start": LOAD_AT_START, "repeat": REPEAT, "rounds": ROUNDS, "seconds": SECONDS, "connections": CONNS, "idle_connections": IDLE_CONNS,
        "rows": [{"target": r.target.name, "note": r.target.note, "rps": r.rps, "p50_us": r.p50_us,
                  "p99_us": r.p99_us, "cpu_us_per_request": r.cpu_us,
                  "rss_idle_kib": r.rss_idle_kib, "rss_1k_conns_kib": r.rss_conns_kib,
                  "syscalls_per_request": r.syscalls, "error": r.error,
                  "runs_rps": [round(x[0].rps, 1) for x in r.runs]} for r in rows],
        "targets": [{"check": d, "met": ok} for d, ok in checks],
    }
    return "\n".join(lines) + "\n", data, all_met


# ----------------------------------------------------------------------------------------------


def check_tools() -> None:
    missing = [t for t in ("wrk", "nginx", "haproxy") if shutil.which(t) is None]
    if missing:
        print(f"bench: missing tools: {' '.join(missing)} "
              f"(apt-get install -y wrk nginx-light haproxy)", file=sys.stderr)
        sys.exit(2)


def raise_nofile() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 65536 if hard == resource.RLIM_INFINITY else min(hard, 65536)
    if soft < want:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
        except (ValueError, OSError):
            pass
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if soft < IDLE_CONNS + 64:
        log(f"warning: RLIMIT_NOFILE {soft} is low for {IDLE_CONNS} connections")


def on_sigterm(signum, frame):
    raise KeyboardInterrupt


def main() -> int:
    global UPSTREAM
    check_tools()
    raise_nofile()
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even if started with SIGINT ignored
    signal.signal(signal.SIGTERM, on_sigterm)
    signal.signal(signal.SIGHUP, on_sigterm)
    wanted = {x.strip() for x in os.environ.get("BENCH_TARGETS", "").split(",") if x.strip()}
    targets = [t for t in TARGETS if not wanted or t.name in wanted or t.name == "direct"]
    unknown = wanted - {t.name for t in TARGETS}
    if unknown:
        log(f"unknown BENCH_TARGETS: {', '.join(sorted(unknown))}; known: "
            f"{', '.join(t.name for t in TARGETS)}")
        return 2
    global LOAD_AT_START, BUSY_AT_START
    load1 = os.getloadavg()[0]
    LOAD_AT_START = f"{load1:.2f}"
    BUSY_AT_START = load1 > 0.5
    if BUSY_AT_START:
        log(f"warning: load average {load1:.2f}: something else is running; numbers will be noisy")
    tmp = tempfile.mkdtemp(prefix="outrider-bench-")
    os.chmod(tmp, 0o755)  # nginx workers may run as nobody
    ctx = Context(tmp)
    rows: list[Row] = []
    try:
        try:
            UPSTREAM = start_upstream(ctx)
        except StartError as e:
            log(f"upstream nginx failed: {e}")
            if os.path.exists(e.logfile):
                log(open(e.logfile, errors="replace").read()[-2000:])
            return 1
        log(f"upstream nginx on 127.0.0.1:{ctx.upstream_port}; outrider binary {OUTRIDER_BIN}")
        for t in targets:
            rows.append(measure(ctx, t))
        for rnd in range(1, ROUNDS):
            for i, t in enumerate(targets):
                measure(ctx, t, rows[i], rnd)
    except KeyboardInterrupt:
        log("interrupted; stopping everything")
        return 130
    finally:
        stop_all()
        shutil.rmtree(tmp, ignore_errors=True)
    md, data, all_met = report(rows)
    print(md, end="")
    os.makedirs(OUT_DIR, exist_ok=True)
    with open(os.path.join(OUT_DIR, "latest.md"), "w") as f:
        f.write(md)
    with open(os.path.join(OUT_DIR, "latest.json"), "w") as f:
        json.dump(data, f, indent=2)
        f.write("\n")
    log(f"wrote {os.path.join(OUT_DIR, 'latest.md')}")
    if any(r.error for r in rows):
        return 1
    if os.environ.get("BENCH_ENFORCE") == "1" and not all_met:
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
