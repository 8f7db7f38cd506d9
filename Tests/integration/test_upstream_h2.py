"""HTTP/2 to the workload (`upstream_protocol: h2`, prior knowledge) against a real HTTP/2
server (nghttpd from Debian's nghttp2-server): bodies intact, connection reuse, and gRPC-style
trailers passed through to an HTTP/2 client."""

import hashlib
import os
import shutil
import subprocess
import time

import pytest

from helpers import free_port, make_config


@pytest.fixture
def nghttpd(tmp_path):
    if not shutil.which("nghttpd"):
        pytest.fail("nghttpd missing (Debian package nghttp2-server; the Makefile installs it)")
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "index.html").write_bytes(b"hello over h2\n")
    big = os.urandom(300_000)
    (docs / "big").write_bytes(big)
    port = free_port()
    p = subprocess.Popen(["nghttpd", "--no-tls", "-d", str(docs), "--trailer", "grpc-status: 0", str(port)],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    import socket
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            break
        except OSError:
            time.sleep(0.05)
    yield "127.0.0.1:%d" % port, hashlib.sha256(big).hexdigest()
    p.kill()
    p.wait(timeout=5)


def h2_proxy(proxy, addr):
    cfg = make_config(free_port(), free_port(), addr)
    cfg["listeners"][0]["upstream_protocol"] = "h2"
    return proxy(cfg)


def test_http11_client_to_h2_workload(proxy, nghttpd):
    addr, big_sha = nghttpd
    p = h2_proxy(proxy, addr)
    r = p.get("/index.html")
    assert r.status == 200 and r.body == b"hello over h2\n"
    assert p.get("/missing").status == 404
    out = subprocess.run(["curl", "-s", p.url + "/big"], capture_output=True, timeout=30).stdout
    assert hashlib.sha256(out).hexdigest() == big_sha
    for _ in range(10):
        assert p.get("/index.html").status == 200
    # One HTTP/2 connection carries them all (pooled, one stream per request).
    assert (p.metric("outrider_upstream_connections_total", listener="inbound") or 0) <= 2


def test_grpc_style_trailers_pass_through_h2_both_sides(proxy, nghttpd):
    addr, _ = nghttpd
    p = h2_proxy(proxy, addr)
    r = subprocess.run(["nghttp", "-v", p.url + "/index.html"], capture_output=True, timeout=30)
    assert r.returncode == 0, r.stderr
    assert b"grpc-status: 0" in r.stdout, r.stdout.decode(errors="replace")[-2000:]
