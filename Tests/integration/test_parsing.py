"""Request parsing rejections through the real binary, over raw sockets. Each case expects an
exact status, the connection closed afterwards, the proxy still up, and nothing reaching the
upstream."""

import pytest

from helpers import RawConn, raw_exchange

H = b"Host: x\r\n"

CASES = [
    ("cl_and_te", 400,
     b"POST /echo HTTP/1.1\r\n" + H + b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
    ("differing_content_lengths", 400,
     b"POST /echo HTTP/1.1\r\n" + H + b"Content-Length: 5\r\nContent-Length: 6\r\n\r\nhello!"),
    ("bad_chunk_size", 400,
     b"POST /echo HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n"),
    ("obs_fold", 400,
     b"GET /echo HTTP/1.1\r\n" + H + b"X-Folded: a\r\n  b\r\n\r\n"),
    ("space_before_colon", 400,
     b"GET /echo HTTP/1.1\r\n" + H + b"X-Foo : bar\r\n\r\n"),
    ("invalid_token_in_method", 400,
     b"G(T /echo HTTP/1.1\r\n" + H + b"\r\n"),
    ("missing_host_http11", 400,
     b"GET /echo HTTP/1.1\r\nX-A: b\r\n\r\n"),
    ("101_header_fields", 431,
     b"GET /echo HTTP/1.1\r\n" + H + b"".join(b"X-H-%d: v\r\n" % i for i in range(100)) + b"\r\n"),
    ("70KiB_header", 431,
     b"GET /echo HTTP/1.1\r\n" + H + b"X-Big: " + b"a" * (70 * 1024) + b"\r\n\r\n"),
    ("9000_byte_uri", 414,
     b"GET /echo?" + b"q" * 9000 + b" HTTP/1.1\r\n" + H + b"\r\n"),
    ("http_2_0_request_line", 505,
     b"GET /echo HTTP/2.0\r\n" + H + b"\r\n"),
]


# Errors found in the body, after a valid head: a streaming proxy may already have sent the head
# upstream (so outrider_upstream_requests_total may count it), but the upstream must never
# complete the request; the upstream's own served count is the check for these.
BODY_ERRORS = {"bad_chunk_size"}


@pytest.mark.parametrize("name,status,data", CASES, ids=[c[0] for c in CASES])
def test_rejected_before_upstream(upstream, proxy, name, status, data):
    a = upstream("A")
    p = proxy(upstream=a)
    # warm up: one good request (so the upstream count and metrics families exist)
    assert p.get("/name").status == 200
    count0 = a.count()
    ups0 = p.metric("outrider_upstream_requests_total", listener="inbound") or 0

    try:
        resp, closed = raw_exchange(p.port, data, timeout=5)
    except ConnectionResetError:
        pytest.fail("%s: connection reset without a readable %d response" % (name, status))
    assert resp.status == status, "%s: expected %d, got %r" % (name, status, resp)
    assert closed, "%s: protocol-error reply must close the connection" % name

    assert p.alive(), "proxy died on %s\n%s" % (name, p.diag())
    assert p.get("/name").status == 200, "proxy no longer serving after %s" % name
    assert a.count() == count0 + 1, "%s reached the upstream (count %d -> %d, 1 expected from the " \
        "follow-up request)" % (name, count0, a.count())
    ups1 = p.metric("outrider_upstream_requests_total", listener="inbound") or 0
    if name not in BODY_ERRORS:
        assert ups1 - ups0 == 1, "outrider_upstream_requests_total moved by %s (expected 1)" % (ups1 - ups0)
    lr = p.metric("outrider_local_replies_total", listener="inbound")
    assert lr and lr >= 1, "outrider_local_replies_total not incremented for %s" % name


def test_100_header_fields_accepted(upstream, proxy):
    """The limit is > 100 fields: exactly 100 (Host + 99) must pass."""
    a = upstream("A")
    p = proxy(upstream=a)
    data = b"GET /name HTTP/1.1\r\n" + H + b"".join(b"X-H-%d: v\r\n" % i for i in range(99)) + b"\r\n"
    with RawConn(p.port) as c:
        c.send(data)
        r = c.read_response()
    assert r.status == 200, r


def test_8192_byte_uri_accepted(upstream, proxy):
    a = upstream("A")
    p = proxy(upstream=a)
    path = b"/name?" + b"q" * (8192 - len(b"/name?"))
    assert len(path) == 8192
    with RawConn(p.port) as c:
        c.send(b"GET " + path + b" HTTP/1.1\r\n" + H + b"\r\n")
        r = c.read_response()
    assert r.status == 200, r


def test_many_rejections_in_a_row_keep_proxy_up(upstream, proxy):
    a = upstream("A")
    p = proxy(upstream=a)
    for _ in range(5):
        for name, status, data in CASES:
            try:
                resp, _ = raw_exchange(p.port, data, timeout=5)
                assert resp.status == status, (name, resp)
            except ConnectionResetError:
                pytest.fail("%s: reset instead of %d" % (name, status))
    assert p.alive()
    assert p.get("/name").status == 200
