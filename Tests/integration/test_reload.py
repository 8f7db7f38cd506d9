"""Hot reload: rename over the file, ConfigMap `..data` swap, SIGHUP, bad configs kept out."""

import hashlib
import signal
import threading
import time

import pytest

from helpers import LoadGen, RawConn, free_port, make_config, wait_until


def reloads(p, result):
    return p.metric("outrider_config_reloads_total", result=result) or 0


def _swap_under_load(upstream, proxy, layout):
    a = upstream("A")
    b = upstream("B")
    p = proxy(upstream=a, layout=layout)
    ok0 = reloads(p, "ok")
    cfg0 = p.config_json()
    assert cfg0["sha256"] == hashlib.sha256(p.config_bytes).hexdigest()

    load = LoadGen(p.port, "/name", max_seconds=30)
    load.start()
    try:
        assert wait_until(lambda: len(load.results) >= 10, 5), "load generator made no progress"
        assert all(r[3] == b"A\n" for r in load.results if r[2] == 200)
        new_sha = p.install_config(make_config(p.port, p.admin_port, b.addr))
        t_swap = time.monotonic()

        def switched():
            after = [r for r in load.results if r[0] > t_swap and r[2] == 200]
            return any(r[1] == "keepalive" and r[3] == b"B\n" for r in after) and \
                any(r[1] == "new" and r[3] == b"B\n" for r in after)
        assert wait_until(switched, 5.0), "responses did not come from B within 5 s of the %s " \
            "(last: %r)\n%s" % (layout, load.results[-4:], p.diag())
        t_switched = time.monotonic()
        time.sleep(1.0)
    finally:
        load.stop()
    fails = load.failures()
    assert not fails, "%d failed requests during reload, e.g. %r" % (len(fails), fails[:5])
    late = [r for r in load.results if r[0] > t_switched + 0.2]
    assert late and all(r[3] == b"B\n" for r in late), "responses went back to A after the switch: %r" % \
        [r for r in late if r[3] != b"B\n"][:5]
    assert reloads(p, "ok") > ok0, "outrider_config_reloads_total{result=\"ok\"} did not increase"
    cfg1 = p.config_json()
    assert cfg1["sha256"] == new_sha, "/config sha256 %s != new file %s" % (cfg1["sha256"], new_sha)
    assert cfg1["version"] > cfg0["version"]
    assert cfg1["last_reload_error"] is None
    m = p.metrics()
    assert any(n == "outrider_config_info" and dict(ls).get("sha256") == new_sha for (n, ls) in m), \
        "outrider_config_info{sha256=<new sha>} missing"
    assert p.alive()


# 11
def test_reload_by_rename_under_load(upstream, proxy):
    _swap_under_load(upstream, proxy, "plain")


# 12
def test_reload_by_configmap_data_swap_under_load(upstream, proxy):
    _swap_under_load(upstream, proxy, "configmap")


def test_inflight_request_finishes_on_old_upstream(upstream, proxy):
    a = upstream("A")
    b = upstream("B")
    p = proxy(upstream=a)
    ok0 = reloads(p, "ok")
    box = {}

    def slow():
        with RawConn(p.port, timeout=10) as c:
            box["r"] = c.request("GET", "/delay/1500")
    t = threading.Thread(target=slow, daemon=True)
    t.start()
    time.sleep(0.3)
    p.install_config(make_config(p.port, p.admin_port, b.addr))
    assert wait_until(lambda: reloads(p, "ok") > ok0, 5), "reload not observed\n" + p.diag()
    assert wait_until(lambda: p.get("/name").body == b"B\n", 5)
    t.join(10)
    r = box.get("r")
    assert r is not None and r.status == 200, r
    assert r.header("x-upstream-name") == "A", "in-flight request should finish on the old upstream"


BAD_UNKNOWN_KEY = """workers: 1
admin:
  address: 127.0.0.1:{admin}
listeners:
  - name: inbound
    address: 127.0.0.1:{port}
    upstream: {up}
    bogus_key: 1
"""  # unknown key on line 8

BAD_ADDRESS = """workers: 1
admin:
  address: 127.0.0.1:{admin}
listeners:
  - name: inbound
    address: 127.0.0.1:{port}
    upstream: 127.0.0.1:notaport
"""  # bad address on line 7

BAD_YAML = """workers: 1
admin:
  address: 127.0.0.1:{admin}
listeners:
  - name: inbound
    address: 127.0.0.1:{port}
    upstream: [unclosed
"""


# 13
@pytest.mark.parametrize("layout", ["plain", "configmap"])
def test_bad_config_rejected_old_keeps_serving(upstream, proxy, layout):
    a = upstream("A")
    b = upstream("B")
    p = proxy(upstream=a, layout=layout)
    sha0 = p.config_json()["sha256"]
    fmt = dict(admin=p.admin_port, port=p.port, up=b.addr)

    for text, line in ((BAD_UNKNOWN_KEY, 8), (BAD_ADDRESS, 7), (BAD_YAML, None)):
        failed0 = reloads(p, "failed")
        p.install_config(text.format(**fmt))
        assert wait_until(lambda: reloads(p, "failed") > failed0, 5), \
            "outrider_config_reloads_total{result=\"failed\"} did not increase\n" + p.diag()
        assert p.get("/name").body == b"A\n", "a rejected config must not change routing"
        cj = p.config_json()
        assert cj["sha256"] == sha0, "/config should still describe the old config"
        err = cj["last_reload_error"]
        assert err, "/config last_reload_error empty after a failed reload"
        if line is not None:
            assert "outrider.yaml:%d:" % line in err, "last_reload_error lacks file:line: %r" % err
            assert "outrider.yaml:%d:" % line in p.stderr_text(), "stderr lacks file:line error"
        assert p.alive()

    ok0 = reloads(p, "ok")
    new_sha = p.install_config(make_config(p.port, p.admin_port, b.addr))
    assert wait_until(lambda: reloads(p, "ok") > ok0, 5), "good config after bad ones not reloaded\n" + p.diag()
    assert wait_until(lambda: p.get("/name").body == b"B\n", 5)
    assert p.config_json()["sha256"] == new_sha


# 14
def test_sighup_reloads_even_if_unchanged(upstream, proxy):
    a = upstream("A")
    p = proxy(upstream=a)
    ok0 = reloads(p, "ok")
    v0 = p.config_json()["version"]
    p.signal(signal.SIGHUP)
    assert wait_until(lambda: reloads(p, "ok") > ok0, 5), "SIGHUP did not count a reload\n" + p.diag()
    assert p.alive()
    assert p.get("/name").body == b"A\n"
    assert p.config_json()["version"] >= v0


def test_sighup_picks_up_in_place_edit(upstream, proxy):
    """An in-place write is not an atomic move (the watcher may ignore it); SIGHUP must apply it."""
    a = upstream("A")
    b = upstream("B")
    p = proxy(upstream=a)
    from helpers import to_yaml
    p.config_path.write_text(to_yaml(make_config(p.port, p.admin_port, b.addr)))
    p.signal(signal.SIGHUP)
    assert wait_until(lambda: p.get("/name").body == b"B\n", 5), "SIGHUP did not apply the edited file"


def test_listener_address_change_needs_restart(upstream, proxy):
    a = upstream("A")
    b = upstream("B")
    p = proxy(upstream=a)
    other = free_port()
    ok0 = reloads(p, "ok")
    failed0 = reloads(p, "failed")
    p.install_config(make_config(other, p.admin_port, b.addr))
    assert wait_until(lambda: reloads(p, "ok") > ok0 or reloads(p, "failed") > failed0, 5), \
        "reload not observed\n" + p.diag()
    assert p.alive()
    r = p.get("/name")
    assert r.status == 200, "old listener address must keep serving until restart"
    assert "restart" in p.stderr_text().lower(), "expected a warning that the address change needs a restart"
