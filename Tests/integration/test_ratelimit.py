"""Rate-limit filter end to end: local limits across workers, global limits shared by two
processes through a real redis-server, Redis failures, rule-file reloads.

Needs `wrk` and `redis-server` on PATH (the Makefile installs them)."""

import os
import re
import shutil
import signal
import socket
import subprocess
import threading
import time

import pytest

from helpers import LOCAL, free_port, http_request, make_config, wait_until


# ---------------------------------------------------------------------------------------------
# fixtures
# ---------------------------------------------------------------------------------------------
class RedisServer:
    """redis-server on a free loopback port, without persistence; can be killed and restarted
    on the same port."""

    def __init__(self, workdir):
        self.bin = shutil.which("redis-server")
        if not self.bin:
            pytest.fail("redis-server not on PATH (apt-get install -y redis-server)", pytrace=False)
        self.workdir = workdir
        self.port = free_port()
        self.proc = None
        self.start()

    @property
    def address(self):
        return "%s:%d" % (LOCAL, self.port)

    def start(self):
        self.proc = subprocess.Popen(
            [self.bin, "--port", str(self.port), "--bind", LOCAL, "--save", "", "--appendonly", "no",
             "--dir", str(self.workdir), "--loglevel", "warning"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
        assert wait_until(self.ping, 10), "redis-server did not answer PING on %s" % self.address

    def ping(self):
        with socket.create_connection((LOCAL, self.port), timeout=1) as s:
            s.sendall(b"PING\r\n")
            return s.recv(64).startswith(b"+PONG")

    def kill(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)

    def stop(self):
        if self.proc and self.proc.poll() is None:
            try:
                os.kill(self.proc.pid, signal.SIGCONT)
            except OSError:
                pass
        self.kill()


@pytest.fixture
def redis(tmp_path):
    started = []

    def make():
        d = tmp_path / ("redis%d" % len(started))
        d.mkdir()
        r = RedisServer(d)
        started.append(r)
        return r

    yield make
    for r in started:
        r.stop()


def need_wrk():
    w = shutil.which("wrk")
    if not w:
        pytest.fail("wrk not on PATH (apt-get install -y wrk)", pytrace=False)
    return w


_RULES_SEQ = [0]


def rl_proxy(proxy, tmp_path, upstream, rules_text, workers=2, mode="enforce", **entry):
    """A proxy with the ratelimit filter; its rule file lives in tmp_path/rlN/rules.yaml and is
    named relative to the config directory (tmp_path/proxyN/config), which exercises the
    resolution against outrider.yaml's directory. Returns (proxy, rules path)."""
    _RULES_SEQ[0] += 1
    d = tmp_path / ("rl%d" % _RULES_SEQ[0])
    d.mkdir()
    path = d / "rules.yaml"
    write_atomically(path, rules_text)
    listen, admin = free_port(), free_port()
    f = {"name": "ratelimit", "mode": mode, "rules": "../../%s/rules.yaml" % d.name}
    f.update(entry)
    cfg = make_config(listen, admin, upstream.addr, workers=workers, filters=[f], access_log={"path": "off"})
    return proxy(cfg), path


def write_atomically(path, text):
    tmp = path.parent / (".%s.tmp" % path.name)
    tmp.write_text(text)
    os.rename(tmp, path)


def allowed_total(procs, **labels):
    total = 0.0
    for p in procs:
        total += p.metric("outrider_ratelimit_requests_total", result="allowed", **labels) or 0.0
    return total


def run_wrk(port, seconds, connections=32, threads=2, path="/name"):
    return subprocess.Popen([need_wrk(), "-t%d" % threads, "-c%d" % connections, "-d%ds" % seconds,
                             "http://%s:%d%s" % (LOCAL, port, path)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def wrk_requests(output):
    m = re.search(r"(\d+) requests in", output)
    return int(m.group(1)) if m else 0


def sleep_until_wall_fraction(frac):
    """Sleep until the wall clock's fractional second is `frac` (the middle of a window)."""
    now = time.time()
    target = int(now) + frac
    if target <= now + 0.05:
        target += 1
    time.sleep(target - now)


# ---------------------------------------------------------------------------------------------
# tests
# ---------------------------------------------------------------------------------------------
def test_local_limit_holds_across_two_workers_under_wrk(upstream, proxy, tmp_path):
    limit = 400
    p, _ = rl_proxy(proxy, tmp_path, upstream("A"), """\
domain: inbound
descriptors:
  - key: remote_address
    rate_limit: {unit: second, requests_per_unit: %d}
""" % limit, workers=2)
    w = run_wrk(p.port, 8)
    time.sleep(2.0)   # past the initial burst
    a0, t0 = allowed_total([p]), time.monotonic()
    time.sleep(5.0)
    a1, t1 = allowed_total([p]), time.monotonic()
    out, _ = w.communicate(timeout=30)
    total = wrk_requests(out)
    rate = (a1 - a0) / (t1 - t0)
    limited = p.metric("outrider_ratelimit_requests_total", result="limited") or 0
    print("local: offered %d requests in 8 s; allowed rate %.1f/s for a limit of %d/s; %d limited"
          % (total, rate, limit, limited))
    assert total > 3 * limit * 8, "wrk did not offer enough load (%d requests)\n%s" % (total, out)
    assert abs(rate - limit) <= 0.05 * limit, "allowed %.1f/s, limit %d/s" % (rate, limit)
    assert limited > 0
    # A refused request carries Retry-After and the draft-03 headers; an allowed one its remaining.
    r = None
    for _ in range(limit * 3):
        r = http_request(p.port, "GET", "/name")
        if r.status == 429:
            break
    assert r is not None and r.status == 429, r
    assert int(r.header("retry-after")) >= 1
    assert r.header("x-ratelimit-limit") == "%d, %d;w=1" % (limit, limit)
    assert r.header("x-ratelimit-remaining") == "0"
    time.sleep(1.1)
    ok = http_request(p.port, "GET", "/name")
    assert ok.status == 200 and ok.header("x-ratelimit-remaining") is not None


GLOBAL_RULES = """\
domain: shared
scope: global
descriptors:
  - key: generic_key
    value: all
    rate_limit: {unit: second, requests_per_unit: %d}
"""


def test_global_limit_shared_by_two_processes_through_redis(upstream, proxy, redis, tmp_path):
    limit = 300
    rs = redis()
    up = upstream("A")
    redis_cfg = {"address": rs.address, "timeout": "250ms", "failure_mode": "allow"}
    p1, _ = rl_proxy(proxy, tmp_path, up, GLOBAL_RULES % limit, workers=2, redis=redis_cfg)
    p2, _ = rl_proxy(proxy, tmp_path, up, GLOBAL_RULES % limit, workers=2, redis=redis_cfg)
    w1 = run_wrk(p1.port, 8, connections=16, threads=1)
    w2 = run_wrk(p2.port, 8, connections=16, threads=1)
    # Fixed windows aligned to the wall clock: sample in the middle of windows, when each
    # window's quota is long used up, so the difference covers whole windows.
    time.sleep(1.5)
    sleep_until_wall_fraction(0.5)
    a0 = allowed_total([p1, p2])
    w0 = int(time.time())
    sleep_until_wall_fraction(0.5)
    time.sleep(3.0)
    sleep_until_wall_fraction(0.5)
    a1 = allowed_total([p1, p2])
    windows = int(time.time()) - w0
    out1, _ = w1.communicate(timeout=30)
    out2, _ = w2.communicate(timeout=30)
    got = a1 - a0
    want = limit * windows
    per = [allowed_total([p]) for p in (p1, p2)]
    errors = sum((p.metric("outrider_ratelimit_redis_errors_total") or 0) for p in (p1, p2))
    print("global: %d windows, allowed %d in total (p1 %d, p2 %d over the run) for %d; offered %d + %d; redis errors %d"
          % (windows, got, per[0], per[1], want, wrk_requests(out1), wrk_requests(out2), errors))
    assert windows >= 3
    assert abs(got - want) <= 0.05 * want, "allowed %d over %d windows of %d" % (got, windows, limit)
    assert per[0] > 0 and per[1] > 0, "both processes must have allowed some"
    assert (p1.metric("outrider_ratelimit_redis_latency_seconds_count") or 0) > 0


def _prober(port, results, stop):
    while not stop.is_set():
        t = time.monotonic()
        try:
            r = http_request(port, "GET", "/name", timeout=5)
            results.append((t, time.monotonic() - t, r.status))
        except Exception as e:  # noqa: BLE001
            results.append((t, time.monotonic() - t, "error %r" % e))
        time.sleep(0.005)


def test_redis_down_or_slow_uses_failure_mode_without_stalling_and_recovers(upstream, proxy, redis, tmp_path):
    rs = redis()
    up = upstream("A")
    timeout = 0.05
    rules = GLOBAL_RULES % 20
    common = {"address": rs.address, "timeout": "50ms", "max_backoff": "300ms"}
    allow, _ = rl_proxy(proxy, tmp_path, up, rules, workers=2, redis=dict(common, failure_mode="allow"))
    deny, _ = rl_proxy(proxy, tmp_path, up, rules.replace("shared", "shared_deny"), workers=2, redis=dict(common, failure_mode="deny"))

    def phase(seconds):
        res_a, res_d, stop = [], [], threading.Event()
        ts = [threading.Thread(target=_prober, args=(allow.port, res_a, stop), daemon=True),
              threading.Thread(target=_prober, args=(deny.port, res_d, stop), daemon=True)]
        for t in ts:
            t.start()
        time.sleep(seconds)
        stop.set()
        for t in ts:
            t.join(10)
        return res_a, res_d

    up_a, up_d = phase(1.5)
    assert any(r[2] == 429 for r in up_a) and any(r[2] == 200 for r in up_a), "limit not applied with Redis up"

    # Killed: connection refused. allow → 200, deny → 429, both at once.
    rs.kill()
    time.sleep(0.2)
    down_a, down_d = phase(2.0)
    worst_a = max(r[1] for r in down_a)
    worst_d = max(r[1] for r in down_d)
    print("redis killed: allow mode %d requests, all 200: %s, slowest %.1f ms; deny mode %d requests, slowest %.1f ms"
          % (len(down_a), all(r[2] == 200 for r in down_a), worst_a * 1e3, len(down_d), worst_d * 1e3))
    assert down_a and all(r[2] == 200 for r in down_a), [r for r in down_a if r[2] != 200][:5]
    assert down_d and all(r[2] == 429 for r in down_d), [r for r in down_d if r[2] != 429][:5]
    assert worst_a < timeout + 0.25 and worst_d < timeout + 0.25, "a request stalled beyond the timeout"
    assert (allow.metric("outrider_ratelimit_failure_mode_total", decision="allowed") or 0) > 0
    assert (deny.metric("outrider_ratelimit_failure_mode_total", decision="denied") or 0) > 0
    assert (allow.metric("outrider_ratelimit_redis_errors_total") or 0) > 0

    # Back on the same port: the limit applies again once the workers reconnect.
    rs.start()
    t_back = time.monotonic()

    def limiting_again():
        got = [http_request(allow.port, "GET", "/name").status for _ in range(40)]
        return 429 in got and 200 in got
    assert wait_until(limiting_again, 5.0, interval=0.1), "no recovery after Redis came back"
    recovery = time.monotonic() - t_back
    assert (allow.metric("outrider_ratelimit_redis_connects_total", result="ok") or 0) >= 2

    # Slow (stopped): every check times out after 50 ms, then the connection is dropped and the
    # next requests fail fast; nothing waits much beyond the timeout.
    os.kill(rs.proc.pid, signal.SIGSTOP)
    try:
        slow_a, slow_d = phase(1.5)
    finally:
        os.kill(rs.proc.pid, signal.SIGCONT)
    worst_slow = max(r[1] for r in slow_a + slow_d)
    print("slowest during stop:", sorted(((round(r[1]*1e3, 1), round(r[0]-slow_a[0][0], 3), r[2]) for r in slow_a + slow_d), reverse=True)[:8])
    print("redis back after %.2f s; redis stopped: slowest request %.1f ms (timeout 50 ms), timeouts %s"
          % (recovery, worst_slow * 1e3, allow.metric("outrider_ratelimit_redis_errors_total", reason="timeout")))
    assert all(r[2] == 200 for r in slow_a) and all(r[2] == 429 for r in slow_d)
    assert worst_slow < timeout + 0.25, "a request stalled beyond the timeout (%.3f s)" % worst_slow
    assert (allow.metric("outrider_ratelimit_redis_errors_total", reason="timeout") or 0) > 0
    assert allow.alive() and deny.alive()


def _statuses(p, n):
    return [http_request(p.port, "GET", "/name") for _ in range(n)]


def test_rule_file_change_applies_without_restart_and_broken_file_keeps_old_rules(upstream, proxy, tmp_path):
    rules = """\
domain: inbound
descriptors:
  - key: remote_address
    rate_limit: {unit: minute, requests_per_unit: %d}
"""
    p, path = rl_proxy(proxy, tmp_path, upstream("A"), rules % 3, workers=1)
    got = _statuses(p, 4)
    assert [r.status for r in got] == [200, 200, 200, 429], [r.status for r in got]
    assert got[3].header("x-ratelimit-limit") == "3, 3;w=60"
    assert got[0].header("x-ratelimit-remaining") == "2"

    ok0 = p.metric("outrider_config_reloads_total", result="ok") or 0
    write_atomically(path, rules % 1000)
    assert wait_until(lambda: http_request(p.port, "GET", "/name").status == 200, 5.0), \
        "new rule file not applied within 5 s\n%s" % p.diag()
    assert (p.metric("outrider_config_reloads_total", result="ok") or 0) > ok0
    r = http_request(p.port, "GET", "/name")
    assert r.header("x-ratelimit-limit") == "1000, 1000;w=60"

    failed0 = p.metric("outrider_config_reloads_total", result="failed") or 0
    write_atomically(path, (rules % 5).replace("unit: minute", "unit: fortnight"))
    assert wait_until(lambda: (p.metric("outrider_config_reloads_total", result="failed") or 0) > failed0, 5.0), \
        "broken rule file was not rejected\n%s" % p.diag()
    err = p.config_json()["last_reload_error"] or ""
    assert "rules.yaml:4" in err and "unit" in err, err
    after = _statuses(p, 10)
    assert all(x.status == 200 for x in after), "old rules (1000/min) must stay"
    assert after[-1].header("x-ratelimit-limit") == "1000, 1000;w=60"
    assert p.alive()


def test_shadow_mode_counts_but_never_refuses(upstream, proxy, tmp_path):
    p, _ = rl_proxy(proxy, tmp_path, upstream("A"), """\
domain: trial
descriptors:
  - key: path_prefix
    value: /
    rate_limit: {unit: minute, requests_per_unit: 2}
""", workers=1, mode="shadow")
    got = _statuses(p, 5)
    assert all(r.status == 200 for r in got)
    assert p.metric("outrider_ratelimit_requests_total", result="shadow_limited") == 3
    assert p.metric("outrider_ratelimit_requests_total", result="allowed") == 2
