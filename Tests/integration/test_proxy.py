"""Forwarding behaviour through the real binary: headers, keep-alive, pipelining, large bodies,
100-continue, bodiless responses, WebSocket, upstream failures, slowloris, access log."""

import hashlib
import os
import re
import subprocess
import threading
import time

import pytest

from helpers import (
    ConnClosed, RawConn, free_port, http_request, pattern_sha256, raw_exchange, ws_accept, ws_client_frame,
    ws_read_frame,
)

UUID_RE = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
MB = 1024 * 1024


def as_list(v):
    return v if isinstance(v, list) else ([] if v is None else [v])


# 1 ---------------------------------------------------------------------------------------------
def test_get_forwarded_body_and_status_intact(upstream, proxy):
    a = upstream("A")
    p = proxy(upstream=a)
    r = p.get("/")
    assert r.status == 200, r
    assert r.body == b"hello from A\n"
    r = p.get("/status/418")
    assert r.status == 418 and r.body == b"status 418\n", r
    r = p.get("/bytes/1000")
    assert r.status == 200 and hashlib.sha256(r.body).hexdigest() == pattern_sha256(1000)


def test_forwarding_headers_added(upstream, proxy):
    a = upstream("A")
    p = proxy(upstream=a)
    r = p.get("/echo")
    assert r.status == 200, r
    seen = r.json()["headers"]
    assert seen.get("x-forwarded-for") == "127.0.0.1", seen
    assert seen.get("x-forwarded-proto") == "http", seen
    rid = seen.get("x-request-id")
    assert rid and UUID_RE.match(rid), "X-Request-Id should be a UUID, got %r" % rid
    assert r.header("x-request-id") == rid, "response should echo the x-request-id the upstream saw"


def test_forwarded_for_appended_and_request_id_kept(upstream, proxy):
    a = upstream("A")
    p = proxy(upstream=a)
    r = p.get("/echo", headers={"X-Forwarded-For": "10.1.2.3", "X-Request-Id": "client-chosen-id-42"})
    assert r.status == 200, r
    seen = r.json()["headers"]
    xff = ", ".join(as_list(seen.get("x-forwarded-for")))
    assert [s.strip() for s in xff.split(",")] == ["10.1.2.3", "127.0.0.1"], seen
    assert seen.get("x-request-id") == "client-chosen-id-42", seen
    assert r.header("x-request-id") == "client-chosen-id-42"


def test_hop_by_hop_headers_not_forwarded(upstream, proxy):
    a = upstream("A")
    p = proxy(upstream=a)
    with RawConn(p.port) as c:
        r = c.request("GET", "/echo", [
            ("Connection", "foo, keep-alive"), ("foo", "bar"), ("Keep-Alive", "timeout=5"),
            ("TE", "deflate"), ("Proxy-Connection", "keep-alive"), ("X-Kept", "yes")])
    assert r.status == 200, r
    seen = r.json()["headers"]
    assert seen.get("x-kept") == "yes", seen
    assert "foo" not in seen, "header named by Connection was forwarded: %r" % seen
    assert "keep-alive" not in seen, seen
    assert "proxy-connection" not in seen, seen
    assert "deflate" not in ",".join(as_list(seen.get("te"))), "client TE forwarded: %r" % seen
    assert "foo" not in ",".join(as_list(seen.get("connection"))).lower(), seen


def test_http10_request(upstream, proxy):
    a = upstream("A")
    p = proxy(upstream=a)
    with RawConn(p.port) as c:
        c.send(b"GET /name HTTP/1.0\r\n\r\n")
        r = c.read_response()
        assert r.status == 200 and r.body == b"A\n", r
        assert c.wait_closed(3.0), "HTTP/1.0 without keep-alive: proxy should close"


# 2 ---------------------------------------------------------------------------------------------
def test_keepalive_reuse_with_curl(upstream, proxy):
    a = upstream("A")
    p = proxy(upstream=a)
    lbl = {"listener": "inbound"}
    m0 = p.metrics()
    from helpers import metric_value
    down0 = metric_value(m0, "outrider_downstream_connections_total", **lbl) or 0
    up0 = metric_value(m0, "outrider_upstream_connections_total", **lbl) or 0
    urls = [p.url + "/name"] * 50
    out = subprocess.run(["curl", "-s", "--max-time", "20"] + urls, capture_output=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert out.stdout == b"A\n" * 50
    m1 = p.metrics()
    down = (metric_value(m1, "outrider_downstream_connections_total", **lbl) or 0) - down0
    up = (metric_value(m1, "outrider_upstream_connections_total", **lbl) or 0) - up0
    assert down == 1, "50 requests on one curl connection: downstream connections +%s" % down
    assert up <= 2, "upstream keep-alive pool should be reused: +%s upstream connections" % up
    assert metric_value(m1, "outrider_upstream_requests_total", **lbl) >= 50


# 3 ---------------------------------------------------------------------------------------------
def test_pipelined_requests_answered_in_order(upstream, proxy):
    a = upstream("A")
    p = proxy(upstream=a)
    with RawConn(p.port) as c:
        c.send(b"GET /delay/300 HTTP/1.1\r\nHost: x\r\n\r\n"
               b"GET /name HTTP/1.1\r\nHost: x\r\n\r\n"
               b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        bodies = [c.read_response(timeout=10).body for _ in range(3)]
    assert bodies == [b"slept 300\n", b"A\n", b"hello from A\n"]


def test_pipelined_post_bodies(upstream, proxy):
    a = upstream("A")
    p = proxy(upstream=a)
    with RawConn(p.port) as c:
        c.send(b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello"
               b"POST /upload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
               b"GET /name HTTP/1.1\r\nHost: x\r\n\r\n")
        rs = [c.read_response(timeout=10) for _ in range(3)]
    assert rs[0].json()["body_sha256"] == hashlib.sha256(b"hello").hexdigest()
    assert rs[1].json()["body_sha256"] == hashlib.sha256(b"abc").hexdigest()
    assert rs[2].body == b"A\n"


# 4 ---------------------------------------------------------------------------------------------
def test_large_bodies_streamed_with_bounded_memory(upstream, proxy):
    a = upstream("A")
    p = proxy(upstream=a)
    size = 100 * MB

    phases = {}
    t = time.monotonic()
    # 100 MB chunked upload, 64 KiB chunks from a generator
    h = hashlib.sha256()
    with RawConn(p.port, timeout=120) as c:
        c.send(b"POST /upload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
        block = os.urandom(64 * 1024)
        sent = 0
        i = 0
        while sent < size:
            piece = bytes([i & 0xFF]) + block[1:]
            i += 1
            h.update(piece)
            c.send(b"%x\r\n%s\r\n" % (len(piece), piece))
            sent += len(piece)
        c.send(b"0\r\n\r\n")
        r = c.read_response(timeout=60)
        assert r.status == 200, r
        assert r.json() == {"name": "A", "body_length": size, "body_sha256": h.hexdigest()}
        phases["chunked upload"] = time.monotonic() - t
        t = time.monotonic()

        # 100 MB Content-Length download on the same connection
        c.send(b"GET /bytes/%d HTTP/1.1\r\nHost: x\r\n\r\n" % size)
        dh = hashlib.sha256()
        n = [0]

        def sink(piece):
            dh.update(piece)
            n[0] += len(piece)
        r = c.read_response(timeout=120, sink=sink)
        assert r.status == 200 and n[0] == size
        assert dh.hexdigest() == pattern_sha256(size)
        phases["content-length download"] = time.monotonic() - t
        t = time.monotonic()

        # 100 MB chunked download
        c.send(b"GET /chunked/%d HTTP/1.1\r\nHost: x\r\n\r\n" % size)
        ch = hashlib.sha256()
        n[0] = 0

        def sink2(piece):
            ch.update(piece)
            n[0] += len(piece)
        try:
            r = c.read_response(timeout=30, sink=sink2)
        except (ConnClosed, OSError) as e:
            pytest.fail("chunked download: %d of %d body bytes, then %r before the last chunk "
                        "(terminating chunk/trailers not forwarded?)" % (n[0], size, e))
        assert r.status == 200 and n[0] == size
        assert ch.hexdigest() == pattern_sha256(size)
        phases["chunked download"] = time.monotonic() - t

    # loopback moves 100 MB in well under a second; 20 s means a stall, not slowness
    slow = {k: round(v, 1) for k, v in phases.items() if v > 20}
    assert not slow, "100 MB transfers stalled: %r (seconds)" % slow
    hwm = p.hwm_kb()
    assert hwm is not None
    assert hwm < 64 * 1024, "outrider peak RSS (VmHWM) %d kB >= 64 MB: bodies are being buffered" % hwm


def test_curl_upload_from_stdin(upstream, proxy):
    a = upstream("A")
    p = proxy(upstream=a)
    data = os.urandom(8 * MB)
    out = subprocess.run(["curl", "-s", "--max-time", "30", "-T", "-", p.url + "/upload"],
                         input=data, capture_output=True, timeout=40)
    assert out.returncode == 0, out.stderr
    import json
    j = json.loads(out.stdout)
    assert j["body_length"] == len(data) and j["body_sha256"] == hashlib.sha256(data).hexdigest()


def test_chunked_response_trailers_forwarded(upstream, proxy):
    a = upstream("A")
    p = proxy(upstream=a)
    with RawConn(p.port) as c:
        c.send(b"GET /chunked/200000 HTTP/1.1\r\nHost: x\r\nTE: trailers\r\n\r\n")
        try:
            r = c.read_response(timeout=5)
        except (ConnClosed, OSError) as e:
            pytest.fail("chunked response never completed (%r): last chunk + trailers not forwarded" % e)
    assert r.status == 200 and hashlib.sha256(r.body).hexdigest() == pattern_sha256(200000)
    assert ("x-checksum", pattern_sha256(200000)) in r.trailers, \
        "trailer x-checksum not forwarded (trailers=%r, headers=%r)" % (r.trailers, r.headers)


# 5 ---------------------------------------------------------------------------------------------
def test_expect_100_continue_curl(upstream, proxy, tmp_path):
    a = upstream("A")
    p = proxy(upstream=a)
    data = os.urandom(2 * MB)
    f = tmp_path / "body.bin"
    f.write_bytes(data)
    t0 = time.monotonic()
    out = subprocess.run(["curl", "-s", "--max-time", "30", "--expect100-timeout", "10",
                          "-H", "Expect: 100-continue", "--data-binary", "@%s" % f,
                          "-w", "\n%{http_code}", p.url + "/upload"],
                         capture_output=True, timeout=40)
    elapsed = time.monotonic() - t0
    assert out.returncode == 0, out.stderr
    body, code = out.stdout.rsplit(b"\n", 1)
    assert code == b"200"
    import json
    j = json.loads(body)
    assert j["body_length"] == len(data) and j["body_sha256"] == hashlib.sha256(data).hexdigest()
    assert elapsed < 5, "curl waited %.1fs: proxy did not send/forward 100 Continue" % elapsed


def test_expect_100_continue_raw(upstream, proxy):
    a = upstream("A")
    p = proxy(upstream=a)
    body = b"x" * 1000
    with RawConn(p.port) as c:
        c.send(b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\nExpect: 100-continue\r\n\r\n")
        interim = c.read_response(keep_interim=True, timeout=5)
        assert interim.status == 100, interim
        c.send(body)
        r = c.read_response()
        assert r.status == 200 and r.json()["body_sha256"] == hashlib.sha256(body).hexdigest()
        # connection still usable
        r = c.request("GET", "/name")
        assert r.body == b"A\n"


# 6 ---------------------------------------------------------------------------------------------
def test_head_204_304_have_no_body_and_keepalive_continues(upstream, proxy):
    a = upstream("A")
    p = proxy(upstream=a)
    with RawConn(p.port) as c:
        r = c.request("HEAD", "/bytes/5000")
        assert r.status == 200 and r.header("content-length") == "5000", r
        r = c.request("HEAD", "/chunked/5000")
        assert r.status == 200, r
        r = c.request("GET", "/status/204")
        assert r.status == 204, r
        r = c.request("GET", "/status/304")
        assert r.status == 304, r
        # If any of the above leaked body bytes, this response would be garbled.
        r = c.request("GET", "/name")
        assert r.status == 200 and r.body == b"A\n", r
        assert c.buf == b"", "stray bytes after responses: %r" % bytes(c.buf)
        c.sock.settimeout(0.3)
        try:
            extra = c.sock.recv(100)
        except OSError:
            extra = b""
        assert extra == b"", "stray bytes after responses: %r" % extra


# 7 ---------------------------------------------------------------------------------------------
def test_websocket_echo(upstream, proxy):
    a = upstream("A")
    p = proxy(upstream=a)
    key = "dGhlIHNhbXBsZSBub25jZQ=="
    with RawConn(p.port) as c:
        c.send("GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
               "Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n\r\n" % key)
        r = c.read_response()
        assert r.status == 101, r
        assert r.header("sec-websocket-accept") == ws_accept(key)
        assert (r.header("upgrade") or "").lower() == "websocket"
        msgs = [(0x1, b"hello"), (0x2, bytes(range(256)) * 2), (0x1, "x" * 70000)]
        for op, payload in msgs:
            payload = payload.encode() if isinstance(payload, str) else payload
            c.send(ws_client_frame(op, payload))
            fin, rop, rp = ws_read_frame(c)
            assert fin and rop == op and rp == payload
        c.send(ws_client_frame(0x8, b"\x03\xe8bye"))
        fin, rop, rp = ws_read_frame(c)
        assert rop == 0x8 and rp[:2] == b"\x03\xe8"
        assert c.wait_closed(3.0), "tunnel should close after the close handshake"


# 8 ---------------------------------------------------------------------------------------------
def test_502_when_upstream_refuses(proxy):
    dead = "127.0.0.1:%d" % free_port()
    p = proxy(upstream=dead)
    r = p.get("/name")
    assert r.status == 502, r
    log = p.wait_access_log(lambda es: any(e.get("response_code") == 502 for e in es))
    e = [e for e in log if e.get("response_code") == 502]
    assert e, "no access log line for the 502:\n%s" % p.stdout_text()[-2000:]
    assert e[-1].get("response_code_details") == "upstream_connect_refused", e[-1]
    assert e[-1].get("response_flags") == "UF", e[-1]
    assert (p.metric("outrider_upstream_errors_total", reason="connect_refused") or 0) >= 1
    assert p.alive()


def test_504_on_upstream_response_timeout(upstream, proxy):
    a = upstream("A")
    p = proxy(upstream=a, timeouts={"upstream_response": "500ms"})
    t0 = time.monotonic()
    r = p.get("/hang", timeout=10)
    dt = time.monotonic() - t0
    assert r.status == 504, r
    assert 0.4 <= dt < 3.0, "504 after %.2fs with upstream_response 500ms" % dt
    assert (p.metric("outrider_upstream_errors_total", reason="response_timeout") or 0) >= 1
    log = p.wait_access_log(lambda es: any(e.get("response_code") == 504 for e in es))
    e = [e for e in log if e.get("response_code") == 504]
    assert e and e[-1].get("response_flags") == "UT", e
    # the proxy still serves
    assert p.get("/name").status == 200


# 9 ---------------------------------------------------------------------------------------------
def test_slowloris_gets_408_while_others_are_served(upstream, proxy):
    a = upstream("A")
    p = proxy(upstream=a, timeouts={"header_read": "1s"})
    slow = RawConn(p.port, timeout=10)
    partial = b"GET /name HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 100
    stop = threading.Event()

    def trickle():
        for b in partial:
            if stop.is_set():
                return
            try:
                slow.sock.send(bytes([b]))
            except OSError:
                return
            time.sleep(0.1)
    t = threading.Thread(target=trickle, daemon=True)
    t0 = time.monotonic()
    t.start()
    results = []
    try:
        with RawConn(p.port) as fast:
            for _ in range(20):
                r = fast.request("GET", "/name", timeout=5)
                results.append(r.status)
                time.sleep(0.02)
        try:
            r = slow.read_response(timeout=5)
        except ConnectionResetError:
            pytest.fail("slow connection reset without a readable 408 "
                        "(proxy should half-close / linger before closing)")
        got = time.monotonic() - t0
        closed = slow.wait_closed(3.0)
        closed_at = time.monotonic() - t0
    finally:
        stop.set()
        slow.close()
        t.join(5)
    assert results == [200] * 20
    assert r.status == 408, r
    assert 0.8 <= got < 2.5, "408 after %.2fs with header_read 1s" % got
    assert closed and closed_at < 3.5, "connection not closed after 408 (%.2fs)" % closed_at
    log = p.wait_access_log(lambda es: any(e.get("response_code") == 408 for e in es))
    assert any(e.get("response_code_details") == "header_timeout" for e in log), log[-3:]


# 18 --------------------------------------------------------------------------------------------
ACCESS_KEYS = {"start_time", "method", "path", "protocol", "response_code", "response_flags",
               "response_code_details", "bytes_received", "bytes_sent", "duration",
               "upstream_service_time", "x_forwarded_for", "user_agent", "request_id", "authority",
               "upstream_host", "upstream_cluster", "downstream_remote_address", "listener"}


def test_access_log_one_json_line_per_request(upstream, proxy):
    a = upstream("A")
    p = proxy(upstream=a)
    seen_ids = []
    with RawConn(p.port) as c:
        for i in range(3):
            r = c.request("GET", "/echo?i=%d" % i, {"User-Agent": "itest/1"})
            assert r.status == 200
            seen_ids.append(r.json()["headers"]["x-request-id"])
    r = p.get("/status/404")
    assert r.status == 404
    log = p.wait_access_log(lambda es: len(es) >= 4)
    lines = [l for l in p.stdout_text().splitlines() if l.strip()]
    assert len(lines) == 4 and len(log) == 4, "expected 4 JSON lines on stdout, got:\n%s" % "\n".join(lines)
    for e in log:
        missing = ACCESS_KEYS - set(e)
        assert not missing, "access log line lacks %s: %r" % (sorted(missing), e)
    for i, (e, rid) in enumerate(zip(log[:3], seen_ids)):
        assert e["method"] == "GET"
        assert e["path"].startswith("/echo")
        assert e["response_code"] == 200
        assert e["response_code_details"] == "via_upstream"
        assert e["response_flags"] == "-"
        assert e["request_id"] == rid, "access log request_id %r != upstream saw %r" % (e["request_id"], rid)
        assert e["user_agent"] == "itest/1"
        assert e["authority"] == "outrider.test"
        assert e["upstream_host"] == a.addr
        assert e["upstream_cluster"] == "inbound" and e["listener"] == "inbound"
        assert e["downstream_remote_address"].startswith("127.0.0.1")
        assert isinstance(e["bytes_sent"], int) and e["bytes_sent"] > 0
        assert e["protocol"] in ("HTTP/1.1",)
    assert log[3]["response_code"] == 404
