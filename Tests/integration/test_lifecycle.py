"""Drain (SIGTERM, POST /drain) and the admin endpoints."""

import hashlib
import json
import signal
import threading
import time

import pytest

from helpers import ConnClosed, RawConn, free_port, http_request, make_config, wait_until


def _start_slow_requests(port, n=10, path="/delay/1500"):
    results = [None] * n

    def one(i):
        try:
            with RawConn(port, timeout=15) as c:
                r = c.request("GET", path, timeout=15)
                results[i] = (r.status, r.body)
        except Exception as e:  # noqa: BLE001
            results[i] = ("error", repr(e))
    threads = [threading.Thread(target=one, args=(i,), daemon=True) for i in range(n)]
    for t in threads:
        t.start()
    return threads, results


def _drain_and_observe(p, trigger):
    """Run 10 slow requests, trigger the drain after 300 ms, watch /ready and new connections."""
    threads, results = _start_slow_requests(p.port)
    time.sleep(0.3)
    t0 = time.monotonic()
    trigger()
    ready = []
    new_conn = []
    deadline = t0 + 3.0
    while time.monotonic() < deadline and p.alive():
        try:
            r = p.admin("GET", "/ready", timeout=0.5)
            ready.append(r.status)
        except (OSError, ConnClosed, ValueError) as e:
            ready.append(type(e).__name__)
        if 0.2 < time.monotonic() - t0 < 1.2 and len(new_conn) < 3:
            try:
                r = http_request(p.port, "GET", "/name", timeout=1)
                new_conn.append(r.status)
            except (OSError, ConnClosed, ValueError) as e:
                new_conn.append(type(e).__name__)
        time.sleep(0.05)
    for t in threads:
        t.join(10)
    rc = p.wait_exit(max(0.1, t0 + 6.0 - time.monotonic()))
    exit_after = time.monotonic() - t0
    return results, ready, new_conn, rc, exit_after


def _check_drain(p, results, ready, new_conn, rc, exit_after):
    assert results == [(200, b"slept 1500\n")] * 10, "in-flight requests during drain: %r" % results
    assert 503 in ready, "/ready never returned 503 during the drain (saw %r)" % ready
    assert 200 not in ready[ready.index(503):], "/ready went back to 200 during drain: %r" % ready
    ok = {503, "ConnectionRefusedError", "ConnectionResetError", "ConnClosed", "BrokenPipeError"}
    assert new_conn and all(x in ok for x in new_conn), \
        "new connections after drain start must be refused, closed or get 503; got %r" % new_conn
    assert rc == 0, "outrider exit code %r (exited after %.1fs)\n%s" % (rc, exit_after, p.diag())
    assert exit_after < 5.0


# 15
def test_sigterm_drains_inflight_and_exits_zero(upstream, proxy):
    a = upstream("A")
    p = proxy(upstream=a)
    out = _drain_and_observe(p, lambda: p.signal(signal.SIGTERM))
    _check_drain(p, *out)


def test_post_drain_same_as_sigterm(upstream, proxy):
    a = upstream("A")
    p = proxy(upstream=a)
    box = {}

    def trigger():
        box["r"] = p.admin("POST", "/drain", timeout=2)
    out = _drain_and_observe(p, trigger)
    assert box["r"].status == 202, box["r"]
    _check_drain(p, *out)


def test_get_drain_is_400(upstream, proxy):
    a = upstream("A")
    p = proxy(upstream=a)
    r = p.admin("GET", "/drain")
    assert r.status == 400, r
    time.sleep(0.3)
    assert p.alive()
    assert p.admin("GET", "/ready").status == 200
    assert p.get("/name").status == 200


def test_sigterm_closes_idle_keepalive_connections(upstream, proxy):
    a = upstream("A")
    p = proxy(upstream=a)
    with RawConn(p.port) as c:
        assert c.request("GET", "/name").status == 200
        p.signal(signal.SIGTERM)
        assert c.wait_closed(4.0), "idle keep-alive connection not closed on drain"
    assert p.wait_exit(5) == 0, p.diag()


def test_sigterm_idle_process_exits_promptly(upstream, proxy):
    a = upstream("A")
    p = proxy(upstream=a)
    t0 = time.monotonic()
    p.signal(signal.SIGTERM)
    rc = p.wait_exit(5)
    assert rc == 0, "exit code %r\n%s" % (rc, p.diag())
    assert time.monotonic() - t0 < 3.0


def test_drain_timeout_bounds_shutdown(upstream, proxy):
    """timeouts.drain caps the wait for in-flight requests (here a request that never ends)."""
    a = upstream("A")
    p = proxy(upstream=a, timeouts={"drain": "1s"})
    c = RawConn(p.port, timeout=10)
    try:
        c.send(b"GET /hang HTTP/1.1\r\nHost: x\r\n\r\n")
        time.sleep(0.3)
        t0 = time.monotonic()
        p.signal(signal.SIGTERM)
        rc = p.wait_exit(6)
        took = time.monotonic() - t0
    finally:
        c.close()
    assert rc is not None, "outrider still running 6 s after SIGTERM with drain: 1s"
    assert took < 4.0, "drain took %.1fs with timeouts.drain 1s" % took


# 16 --------------------------------------------------------------------------------------------
METRIC_NAMES = [
    "outrider_downstream_connections_total", "outrider_downstream_connections_active",
    "outrider_downstream_requests_total", "outrider_downstream_bytes_received_total",
    "outrider_downstream_bytes_sent_total", "outrider_local_replies_total",
    "outrider_upstream_connections_total", "outrider_upstream_requests_total",
    "outrider_upstream_errors_total", "outrider_config_reloads_total", "outrider_config_version",
    "outrider_config_info", "outrider_server_state", "process_cpu_seconds_total",
    "process_resident_memory_bytes", "process_open_fds", "process_start_time_seconds",
    "outrider_build_info",
    "outrider_downstream_request_duration_seconds_bucket",
    "outrider_downstream_request_duration_seconds_sum",
    "outrider_downstream_request_duration_seconds_count",
]


def test_admin_ready_healthz(upstream, proxy):
    a = upstream("A")
    p = proxy(upstream=a)
    r = p.admin("GET", "/ready")
    assert r.status == 200 and b"LIVE" in r.body, r
    r = p.admin("GET", "/healthz")
    assert r.status == 200, r
    r = p.admin("GET", "/no-such-endpoint")
    assert r.status == 404, r


def test_admin_metrics_has_every_name(upstream, proxy):
    a = upstream("A")
    dead = free_port()
    lp, ap, lp2 = free_port(), free_port(), free_port()
    cfg = make_config(lp, ap, a.addr)
    cfg["listeners"].append({"name": "dead", "address": "127.0.0.1:%d" % lp2, "upstream": "127.0.0.1:%d" % dead})
    p = proxy(cfg)
    # traffic: 2xx, a local 400, a 502 with an upstream error; and one reload
    assert p.get("/name").status == 200
    assert http_request(p.port, "GET", "/x", headers={"Bad Header": "1"}).status == 400
    assert http_request(lp2, "GET", "/name").status == 502
    ok0 = p.metric("outrider_config_reloads_total", result="ok") or 0
    p.signal(signal.SIGHUP)
    wait_until(lambda: (p.metric("outrider_config_reloads_total", result="ok") or 0) > ok0, 5)

    text = p.admin("GET", "/metrics").body.decode()
    m = p.metrics()
    names = {n for (n, _) in m}
    missing = [n for n in METRIC_NAMES if n not in names]
    assert not missing, "metrics missing: %s\n%s" % (missing, text[:3000])
    assert "# TYPE outrider_downstream_request_duration_seconds histogram" in text

    from helpers import metric_value as mv
    assert mv(m, "outrider_server_state") == 1
    assert mv(m, "outrider_downstream_requests_total", listener="inbound", code_class="2xx") >= 1
    assert mv(m, "outrider_downstream_requests_total", listener="inbound", code_class="4xx") >= 1
    assert mv(m, "outrider_downstream_requests_total", listener="dead", code_class="5xx") >= 1
    assert mv(m, "outrider_upstream_errors_total", listener="dead", reason="connect_refused") >= 1
    assert any(n == "outrider_local_replies_total" and dict(ls).get("listener") == "inbound" and "details" in dict(ls)
               for (n, ls) in m), "outrider_local_replies_total{listener,details} missing"
    sha = hashlib.sha256(p.config_bytes).hexdigest()
    assert any(n == "outrider_config_info" and dict(ls).get("sha256") == sha for (n, ls) in m)
    assert any(n == "outrider_build_info" and "version" in dict(ls) for (n, ls) in m)
    assert mv(m, "process_resident_memory_bytes") > 1e6
    assert mv(m, "process_open_fds") > 3
    assert abs(mv(m, "process_start_time_seconds") - time.time()) < 120
    assert mv(m, "outrider_downstream_connections_active", listener="inbound") is not None


def test_admin_config_json(upstream, proxy):
    a = upstream("A")
    p = proxy(upstream=a)
    j = p.config_json()
    for k in ("version", "path", "sha256", "loaded_at", "last_reload_error", "config"):
        assert k in j, "/config lacks %r: %r" % (k, j)
    assert isinstance(j["version"], int) and j["version"] >= 1, j
    assert j["path"].endswith("outrider.yaml"), j
    assert j["sha256"] == hashlib.sha256(p.config_bytes).hexdigest(), j
    assert j["last_reload_error"] is None, j
    assert isinstance(j["config"], dict), j
    assert j["config"]["listeners"][0]["upstream"] == a.addr, j["config"]
    from helpers import metric_value
    mv = metric_value(p.metrics(), "outrider_config_version")
    assert mv == j["version"], "outrider_config_version %r != /config version %r\n%s" % (mv, j, p.diag())


def test_admin_address_env_override(upstream, proxy):
    a = upstream("A")
    ap = free_port()
    cfg = make_config(free_port(), free_port(), a.addr)
    p = proxy(cfg, env={"OUTRIDER_ADMIN_ADDRESS": "127.0.0.1:%d" % ap}, admin_port=ap)
    r = p.admin("GET", "/ready")
    assert r.status == 200


def test_readiness_503_while_draining_reported_in_metrics(upstream, proxy):
    a = upstream("A")
    p = proxy(upstream=a)
    threads, results = _start_slow_requests(p.port, n=1, path="/delay/1500")
    time.sleep(0.3)
    p.signal(signal.SIGTERM)
    state = wait_until(lambda: p.metric("outrider_server_state") == 2, 1.0, interval=0.02)
    for t in threads:
        t.join(10)
    assert state, "outrider_server_state never reported 2 (draining)"
    assert p.wait_exit(5) == 0
