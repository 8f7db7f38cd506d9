"""HTTP/2 end to end with real clients: curl and nghttp over h2 (TLS, ALPN) and h2c (prior
knowledge, same port as HTTP/1.1), h2load under concurrency, request bodies with flow control,
and a gRPC-style exchange whose trailers pass through."""

import hashlib
import json
import shutil
import subprocess

import pytest

from helpers import free_port, make_config
from tls_helpers import PKI


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return PKI(tmp_path_factory.mktemp("pki-h2"))


def tls_proxy(proxy, upstream, pki):
    cfg = make_config(free_port(), free_port(), upstream.addr)
    cfg["listeners"][0]["tls"] = {"cert": str(pki.server.cert), "key": str(pki.server.key)}
    return proxy(cfg)


def run(argv, timeout=30):
    r = subprocess.run(argv, capture_output=True, timeout=timeout)
    return r.returncode, r.stdout, r.stderr


def test_h2c_prior_knowledge_and_http11_share_the_port(upstream, proxy):
    a = upstream("A")
    p = proxy(upstream=a)
    rc, out, err = run(["curl", "-s", "--http2-prior-knowledge", "-w", "\n%{http_version}", p.url + "/echo"])
    assert rc == 0, err
    body, version = out.rsplit(b"\n", 1)
    assert version == b"2"
    echoed = json.loads(body)
    assert echoed["headers"]["x-forwarded-proto"] == "http"
    assert "x-request-id" in echoed["headers"]
    rc, out, err = run(["curl", "-s", "-w", "\n%{http_version}", p.url + "/name"])
    assert rc == 0 and out.endswith(b"\n1.1"), (out, err)
    log = [line for line in p.access_log() if line["path"] == "/echo"]
    assert log and log[0]["protocol"] == "HTTP/2"


def test_h2_over_tls_by_alpn_with_curl_and_nghttp(upstream, proxy, pki):
    a = upstream("A")
    p = tls_proxy(proxy, a, pki)
    url = "https://localhost:%d" % p.port
    rc, out, err = run(["curl", "-s", "--http2", "--cacert", str(pki.ca.cert), "-w", "\n%{http_version}", url + "/echo"])
    assert rc == 0, err
    body, version = out.rsplit(b"\n", 1)
    assert version == b"2"
    assert json.loads(body)["headers"]["x-forwarded-proto"] == "https"
    if shutil.which("nghttp"):
        rc, out, err = run(["nghttp", "-v", "--no-verify-peer", url + "/name"])
        assert rc == 0, err
        assert b":status: 200" in out and b"A" in out


def test_h2_large_response_and_upload_respect_flow_control(upstream, proxy):
    a = upstream("A")
    p = proxy(upstream=a)
    # A client window of 64 KiB: the proxy must stream 3 MB through WINDOW_UPDATEs.
    rc, out, err = run(["nghttp", "-n", "-s", "-w", "16", "-W", "16", "-m", "3", p.url + "/bytes/3000000"], timeout=60)
    assert rc == 0, err
    assert out.count(b" 200 ") == 3, out
    data = bytes(range(256)) * 8192   # 2 MiB
    r = subprocess.run(["curl", "-s", "--http2-prior-knowledge", "--data-binary", "@-", p.url + "/upload"],
                       input=data, capture_output=True, timeout=60)
    assert r.returncode == 0, r.stderr
    j = json.loads(r.stdout)
    assert j["body_length"] == len(data) and j["body_sha256"] == hashlib.sha256(data).hexdigest()


def test_h2load_many_streams_all_succeed(upstream, proxy):
    if not shutil.which("h2load"):
        pytest.fail("h2load missing (Debian package nghttp2-client)")
    a = upstream("A")
    p = proxy(upstream=a)
    rc, out, err = run(["h2load", "-n", "2000", "-c", "8", "-m", "16", p.url + "/name"], timeout=120)
    assert rc == 0, err
    assert b"2000 succeeded, 0 failed, 0 errored" in out, out


def test_grpc_style_trailers_pass_through(upstream, proxy):
    """A response with trailers (as gRPC's grpc-status) reaches an HTTP/2 client as trailers."""
    h2 = pytest.importorskip("h2.connection")
    import socket
    import h2.config
    import h2.events
    a = upstream("A")
    p = proxy(upstream=a)
    sock = socket.create_connection(("127.0.0.1", p.port), timeout=10)
    c = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    c.initiate_connection()
    c.send_headers(1, [(":method", "POST"), (":scheme", "http"), (":path", "/chunked/1000"),
                       (":authority", "127.0.0.1"), ("te", "trailers"),
                       ("content-type", "application/grpc")], end_stream=True)
    sock.sendall(c.data_to_send())
    trailers, body, status = None, b"", None
    while trailers is None:
        data = sock.recv(65536)
        assert data, "connection closed before trailers"
        for ev in c.receive_data(data):
            if isinstance(ev, h2.events.ResponseReceived):
                status = dict(ev.headers)[b":status"]
            elif isinstance(ev, h2.events.DataReceived):
                body += ev.data
                c.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
            elif isinstance(ev, h2.events.TrailersReceived):
                trailers = dict(ev.headers)
        sock.sendall(c.data_to_send())
    sock.close()
    assert status == b"200" and len(body) == 1000
    assert trailers.get(b"x-checksum") == hashlib.sha256(body).hexdigest().encode()


def test_http11_upgrade_to_h2c_is_never_tunnelled(upstream, proxy):
    """h2c smuggling: an HTTP/1.1 `Upgrade: h2c` must not reach the workload as an upgrade."""
    from helpers import http_request
    a = upstream("A")
    p = proxy(upstream=a)
    r = http_request(p.port, "GET", "/echo", headers={"Connection": "Upgrade, HTTP2-Settings",
                                                      "Upgrade": "h2c", "HTTP2-Settings": "AAMAAABkAAQCAAAAAAIAAAAA"})
    assert r.status == 200
    seen = json.loads(r.body)["headers"]
    assert "upgrade" not in seen and "http2-settings" not in seen
    assert "upgrade" not in seen.get("connection", "").lower()
