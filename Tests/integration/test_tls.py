"""TLS and mTLS termination on listeners: curl and openssl s_client against a TLS listener,
client-certificate policy (require / optional / none), SPIFFE identity in
x-forwarded-client-cert, ALPN, minimum version, session resumption, handshake metrics by
reason, certificate rotation under load, and `outrider check` on TLS material.

Certificates come from the openssl CLI (tls_helpers.PKI), made once per session.
"""

import hashlib
import json
import os
import re
import struct
import shutil
import socket
import ssl
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from helpers import LOCAL, free_port, make_config, pattern_sha256, wait_until, ws_accept, ws_client_frame
from tls_helpers import PKI, TLSConn, TLSLoad, client_context, configmap_swap, curl, replace_file, s_client

HS = "outrider_tls_handshakes_total"
EVIL_XFCC = 'By=spiffe://evil/proxy;Hash=deadbeef;URI=spiffe://cluster.local/ns/default/sa/admin'
HTTP_CLOSE = b"GET /name HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"


@pytest.fixture(scope="session")
def pki(tmp_path_factory):
    return PKI(tmp_path_factory.mktemp("pki"))


def tls_config(port, admin_port, upstream_addr, tls, **sections):
    cfg = make_config(port, admin_port, upstream_addr, **sections)
    cfg["listeners"][0]["tls"] = tls
    return cfg


def start_tls_proxy(proxy, upstream, pki, **tls_extra):
    tls = {"cert": str(pki.server.cert), "key": str(pki.server.key)}
    tls.update(tls_extra)
    return proxy(tls_config(free_port(), free_port(), upstream.addr, tls))


def hs(p, result, reason=None):
    labels = {"listener": "inbound", "result": result}
    if reason:
        labels["reason"] = reason
    return p.metric(HS, **labels) or 0


def wait_metric(p, result, reason, above, timeout=3.0):
    return wait_until(lambda: hs(p, result, reason) > above, timeout)


def https(p, path, pki, *args):
    return curl("https://localhost:%d%s" % (p.port, path), "--cacert", pki.ca.cert,
                "--resolve", "localhost:%d:%s" % (p.port, LOCAL), *args)


def client_args(cert):
    return ["--cert", str(cert.cert), "--key", str(cert.key)]


def echo_headers(body):
    hdrs = json.loads(body)["headers"]
    return {k.lower(): v for k, v in hdrs.items()}


def parse_xfcc(value):
    """One XFCC element -> dict; values may be double-quoted (Subject="...")."""
    out = {}
    for m in re.finditer(r'([A-Za-z]+)=("(?:[^"\\]|\\.)*"|[^;,]*)', value):
        k, v = m.group(1), m.group(2)
        if v.startswith('"'):
            v = v[1:-1].replace('\\"', '"')
        assert k not in out or k in ("URI", "DNS"), "XFCC key %s repeated in %r" % (k, value)
        out.setdefault(k, v)
    return out


def assert_refused(rc, status, err, what):
    assert rc != 0 and status != 200, "%s: expected the TLS handshake to be refused, got curl rc=%d " \
        "HTTP %d (%s)" % (what, rc, status, err.strip())


# ---------------------------------------------------------------------------------------------
# Server-only TLS
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("policy", ["none", "optional"])
def test_tls_without_client_cert(upstream, proxy, pki, tmp_path, policy):
    """curl --cacert with no client certificate: 200, X-Forwarded-Proto https, no XFCC, and a
    client-supplied XFCC dropped. Relative cert paths resolve against the config's directory."""
    u = upstream("A")
    if policy == "none":
        # The proxy fixture puts the config in <tmp_path>/proxy0/config: put the material there
        # and name it relatively.
        confdir = tmp_path / "proxy0" / "config"
        confdir.mkdir(parents=True)
        shutil.copy(pki.server.cert, confdir / "tls.crt")
        shutil.copy(pki.server.key, confdir / "tls.key")
        tls = {"cert": "tls.crt", "key": "tls.key"}
    else:
        tls = {"cert": str(pki.server.cert), "key": str(pki.server.key), "client_ca": str(pki.ca.cert),
               "client_cert": "optional"}
    p = proxy(tls_config(free_port(), free_port(), u.addr, tls))
    ok0 = hs(p, "ok", "full")

    rc, status, body, err = https(p, "/echo", pki, "-H", "x-forwarded-client-cert: " + EVIL_XFCC)
    assert rc == 0 and status == 200, "curl over TLS: rc=%d HTTP %d %s\n%s" % (rc, status, err, p.diag())
    h = echo_headers(body)
    assert h.get("x-forwarded-proto") == "https", "upstream saw X-Forwarded-Proto %r" % h.get("x-forwarded-proto")
    assert "x-forwarded-client-cert" not in h, \
        "no client certificate was presented, yet upstream got XFCC %r" % h["x-forwarded-client-cert"]
    assert wait_metric(p, "ok", "full", ok0), "%s{result=ok,reason=full} did not increase" % HS
    # Several XFCC lines in any case spelling: all dropped.
    with TLSConn(p.port, client_context(pki.ca.cert)) as c:
        status, _, body = c.request("/echo", headers={"X-Forwarded-Client-Cert": EVIL_XFCC,
                                                      "x-forwarded-client-cert": "URI=spiffe://evil/2"}, close=True)
    assert status == 200 and "x-forwarded-client-cert" not in echo_headers(body), body

    # By IP address (curl sends no SNI for an IP): the default certificate, valid for 127.0.0.1.
    rc, status, body, err = curl("https://%s:%d/name" % (LOCAL, p.port), "--cacert", pki.ca.cert)
    assert rc == 0 and status == 200 and body == "A\n", (rc, status, body, err)

    exp = p.metric("outrider_tls_certificate_expiry_timestamp_seconds", listener="inbound")
    assert exp == pki.server.not_after, "expiry gauge %r != notAfter %d" % (exp, pki.server.not_after)

    if policy == "optional":
        # A verified certificate under `optional` gives an identity.
        rc, status, body, err = https(p, "/echo", pki, "-H", "x-forwarded-client-cert: " + EVIL_XFCC,
                                      *client_args(pki.client))
        assert rc == 0 and status == 200, (rc, status, err)
        xfcc = echo_headers(body).get("x-forwarded-client-cert")
        assert isinstance(xfcc, str) and "evil" not in xfcc, "XFCC upstream: %r" % xfcc
        assert parse_xfcc(xfcc).get("URI") == pki.spiffe_id, xfcc
        # A presented but invalid certificate must never yield an identity: either the
        # handshake is refused, or the request goes through with no XFCC at all.
        n0 = u.count()
        rc, status, body, err = https(p, "/echo", pki, *client_args(pki.client_expired))
        if rc == 0 and status == 200:
            assert "x-forwarded-client-cert" not in echo_headers(body), \
                "an expired client certificate produced XFCC under client_cert: optional"
        else:
            assert u.count() == n0
    assert p.alive()


def test_tls_port_refuses_plaintext_and_stalled_handshakes(upstream, proxy, pki):
    u = upstream("A")
    tls = {"cert": str(pki.server.cert), "key": str(pki.server.key)}
    p = proxy(tls_config(free_port(), free_port(), u.addr, tls, timeouts={"header_read": "1s"}))
    failed0 = hs(p, "failed")

    # Plain HTTP on the TLS port: no HTTP response, connection closed, a failed handshake counted.
    with socket.create_connection((LOCAL, p.port), timeout=5) as s:
        s.sendall(b"GET /name HTTP/1.1\r\nHost: x\r\n\r\n")
        data = b""
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
        assert not data.startswith(b"HTTP/1.1 200"), data[:100]
    assert u.count() == 0
    assert wait_until(lambda: hs(p, "failed") > failed0, 3), "plaintext on a TLS port counted no failed handshake"

    # A client that connects and never finishes the handshake is closed after header_read.
    t0 = hs(p, "failed", "timeout")
    with socket.create_connection((LOCAL, p.port), timeout=6) as s:
        s.sendall(bytes.fromhex("160301"))  # half a record header, then silence
        start = time.monotonic()
        try:
            closed = s.recv(4096) == b""
        except ConnectionResetError:
            closed = True
        except socket.timeout:
            closed = False
        took = time.monotonic() - start
    assert closed and took < 5, "stalled handshake not closed (closed=%s after %.1fs)" % (closed, took)
    assert wait_metric(p, "failed", "timeout", t0), "%s{result=failed,reason=timeout} did not increase" % HS

    rc, status, _, err = https(p, "/name", pki)
    assert rc == 0 and status == 200, (rc, status, err)


def _ws_read_frame(sock, deadline):
    buf = b""

    def need(n):
        nonlocal buf
        while len(buf) < n:
            sock.settimeout(max(0.01, deadline - time.monotonic()))
            chunk = sock.recv(65536)
            if not chunk:
                raise ConnectionError("EOF in WebSocket frame")
            buf += chunk
        out, buf = buf[:n], buf[n:]
        return out
    b0, b1 = need(2)
    n = b1 & 0x7F
    if n == 126:
        n = struct.unpack("!H", need(2))[0]
    elif n == 127:
        n = struct.unpack("!Q", need(8))[0]
    return b0 & 0x0F, need(n)


def test_tls_large_bodies_chunked_and_websocket(upstream, proxy, pki, tmp_path):
    """Bulk data both ways through the TLS record layer, a chunked response with trailers, and
    an upgraded (tunnelled) WebSocket connection over TLS."""
    u = upstream("A")
    p = start_tls_proxy(proxy, u, pki)
    n = 8 * 1024 * 1024 + 12345
    out = tmp_path / "big.bin"
    rc = subprocess.run(["curl", "-sS", "--max-time", "20", "--cacert", str(pki.ca.cert), "--resolve",
                         "localhost:%d:%s" % (p.port, LOCAL), "-o", str(out),
                         "https://localhost:%d/bytes/%d" % (p.port, n)], capture_output=True, timeout=30)
    assert rc.returncode == 0, rc.stderr
    got = out.read_bytes()
    assert len(got) == n and hashlib.sha256(got).hexdigest() == pattern_sha256(n), \
        "GET /bytes/%d over TLS: got %d bytes, or the content differs" % (n, len(got))

    rc, status, body, err = https(p, "/chunked/%d" % (3 * 1024 * 1024 + 7), pki, "-o", str(out))
    assert rc == 0 and status == 200, err
    assert hashlib.sha256(out.read_bytes()).hexdigest() == pattern_sha256(3 * 1024 * 1024 + 7)

    up = tmp_path / "up.bin"
    data = os.urandom(6 * 1024 * 1024 + 3)
    up.write_bytes(data)
    rc, status, body, err = https(p, "/upload", pki, "--data-binary", "@" + str(up),
                                  "-H", "Content-Type: application/octet-stream")
    assert rc == 0 and status == 200, err
    j = json.loads(body)
    assert j["body_length"] == len(data) and j["body_sha256"] == hashlib.sha256(data).hexdigest(), j

    # Many concurrent handshakes and keep-alive requests.
    ctx = client_context(pki.ca.cert)

    def worker(i):
        with TLSConn(p.port, ctx, timeout=10) as c:
            return [c.request("/name", close=(k == 2))[0] for k in range(3)]
    with ThreadPoolExecutor(max_workers=40) as ex:
        statuses = [s for r in ex.map(worker, range(80)) for s in r]
    assert statuses == [200] * 240, "concurrent TLS clients: %r" % [s for s in statuses if s != 200][:5]

    # WebSocket over TLS.
    key = "dGhlIHNhbXBsZSBub25jZQ=="
    with TLSConn(p.port, client_context(pki.ca.cert)) as c:
        c.sock.sendall(("GET /ws HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                        "Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n\r\n" % key).encode())
        deadline = time.monotonic() + 5
        head = b""
        while b"\r\n\r\n" not in head:
            c.sock.settimeout(max(0.01, deadline - time.monotonic()))
            chunk = c.sock.recv(1)
            assert chunk, "EOF before the 101: %r" % head
            head += chunk
        assert head.startswith(b"HTTP/1.1 101"), head
        assert ws_accept(key).encode() in head, head
        for payload in (b"hello over tls", os.urandom(200 * 1024)):
            c.sock.sendall(ws_client_frame(0x2, payload))
            op, echoed = _ws_read_frame(c.sock, time.monotonic() + 5)
            assert op == 0x2 and echoed == payload, (op, len(echoed), len(payload))
    assert p.alive()


# ---------------------------------------------------------------------------------------------
# mTLS
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("tls_max", ["1.3", "1.2"])
def test_mtls_require(upstream, proxy, pki, tls_max):
    u = upstream("A")
    p = start_tls_proxy(proxy, u, pki, client_ca=str(pki.ca.cert), client_cert="require")

    def echo(*args):  # every curl in this test capped at tls_max
        return https(p, "/echo", pki, "--tls-max", tls_max, *args)

    # No certificate: refused, reason no_client_cert, nothing reaches the upstream.
    m0 = hs(p, "failed", "no_client_cert")
    rc, status, _, err = echo()
    assert_refused(rc, status, err, "no client certificate")
    assert wait_metric(p, "failed", "no_client_cert", m0), "%s{reason=no_client_cert} did not increase" % HS
    assert u.count() == 0

    # A valid SPIFFE client: 200, XFCC in Envoy's format; the client's own XFCC is dropped.
    ok0 = hs(p, "ok", "full")
    rc, status, body, err = echo("-H", "x-forwarded-client-cert: " + EVIL_XFCC,
                                  *client_args(pki.client))
    assert rc == 0 and status == 200, "valid client cert: rc=%d HTTP %d %s\n%s" % (rc, status, err, p.diag())
    h = echo_headers(body)
    xfcc = h.get("x-forwarded-client-cert")
    assert isinstance(xfcc, str), "expected exactly one XFCC header upstream, got %r" % (xfcc,)
    assert "evil" not in xfcc and "admin" not in xfcc, "client-supplied XFCC leaked upstream: %r" % xfcc
    el = parse_xfcc(xfcc)
    assert el.get("Hash") == pki.client.sha256, "XFCC Hash %r != sha256(DER) %s (%r)" % (
        el.get("Hash"), pki.client.sha256, xfcc)
    assert el.get("URI") == pki.spiffe_id, "XFCC URI %r (%r)" % (el.get("URI"), xfcc)
    assert el.get("Subject") == pki.client.subject, "XFCC Subject %r != %r" % (el.get("Subject"), pki.client.subject)
    assert h.get("x-forwarded-proto") == "https"
    assert wait_metric(p, "ok", "full", ok0)

    # Expired client certificate: refused, reason expired.
    m0 = hs(p, "failed", "expired")
    n0 = u.count()
    rc, status, _, err = echo(*client_args(pki.client_expired))
    assert_refused(rc, status, err, "expired client certificate")
    assert wait_metric(p, "failed", "expired", m0), "%s{reason=expired} did not increase" % HS

    # A certificate from another CA: refused, reason unknown_ca.
    m0 = hs(p, "failed", "unknown_ca")
    rc, status, _, err = echo(*client_args(pki.client_other_ca))
    assert_refused(rc, status, err, "client certificate from another CA")
    assert wait_metric(p, "failed", "unknown_ca", m0), "%s{reason=unknown_ca} did not increase" % HS
    assert u.count() == n0, "a refused client reached the upstream"

    # Two URI SANs: a valid certificate (handshake ok) but no single SPIFFE identity.
    rc, status, body, err = echo(*client_args(pki.client_two_uris))
    assert rc == 0 and status == 200, "two-URI client cert: rc=%d HTTP %d %s" % (rc, status, err)
    xfcc = echo_headers(body).get("x-forwarded-client-cert")
    assert isinstance(xfcc, str), "verified client cert but no XFCC: %r" % (xfcc,)
    el = parse_xfcc(xfcc)
    assert el.get("Hash") == pki.client_two_uris.sha256, xfcc
    assert "URI" not in el and "spiffe://" not in xfcc, \
        "a certificate with two URI SANs must carry no identity, XFCC was %r" % xfcc
    assert p.alive()


@pytest.mark.parametrize("version", ["1.2", "1.3"])
def test_mtls_resumed_session_keeps_identity(upstream, proxy, pki, version):
    """A resumed session (with client verification on) succeeds and still carries the
    client's identity (the peer certificate comes from the session)."""
    u = upstream("A")
    p = start_tls_proxy(proxy, u, pki, client_ca=str(pki.ca.cert), client_cert="require")
    v = ssl.TLSVersion.TLSv1_2 if version == "1.2" else ssl.TLSVersion.TLSv1_3
    ctx = client_context(pki.ca.cert, cert=pki.client, min_version=v, max_version=v)
    r0 = hs(p, "ok", "resumed")
    with TLSConn(p.port, ctx) as c:
        status, _, body = c.request("/echo", close=True)
        assert status == 200
        assert parse_xfcc(echo_headers(body)["x-forwarded-client-cert"]).get("URI") == pki.spiffe_id
        session = c.sock.session
    assert session is not None
    with TLSConn(p.port, ctx, session=session) as c:
        reused = c.sock.session_reused
        status, _, body = c.request("/echo", close=True)
    assert reused, "TLS %s session not resumed under mTLS" % version
    assert status == 200
    xfcc = echo_headers(body).get("x-forwarded-client-cert")
    assert isinstance(xfcc, str), "resumed session lost the client identity (no XFCC)"
    el = parse_xfcc(xfcc)
    assert el.get("URI") == pki.spiffe_id and el.get("Hash") == pki.client.sha256, xfcc
    assert wait_metric(p, "ok", "resumed", r0)


# ---------------------------------------------------------------------------------------------
# openssl s_client: ALPN, versions, resumption
# ---------------------------------------------------------------------------------------------
def test_alpn_selects_h2_or_http11_and_min_version(upstream, proxy, pki):
    u = upstream("A")
    p12 = start_tls_proxy(proxy, u, pki)
    p13 = start_tls_proxy(proxy, u, pki, min_version="1.3")
    ca = ["-CAfile", pki.ca.cert, "-verify_return_error"]

    rc, out = s_client(p12.port, "-alpn", "h2,http/1.1", *ca)
    assert "ALPN protocol: h2" in out, "s_client -alpn h2,http/1.1 (the server prefers h2):\n%s" % out
    assert "Verify return code: 0 (ok)" in out, out
    rc, out = s_client(p12.port, "-alpn", "http/1.1", *ca)
    assert "ALPN protocol: http/1.1" in out, "s_client -alpn http/1.1:\n%s" % out
    rc, out = s_client(p12.port, "-tls1_2", *ca, stdin=HTTP_CLOSE)
    assert re.search(r"New, TLSv1\.2,", out), "default listener refused TLS 1.2:\n%s" % out

    f0 = hs(p13, "failed", "protocol_version")
    rc, out = s_client(p13.port, "-tls1_2", *ca)
    assert rc != 0 and not re.search(r"New, TLSv1\.2,", out), "min_version 1.3 accepted TLS 1.2:\n%s" % out
    assert wait_metric(p13, "failed", "protocol_version", f0), "%s{reason=protocol_version} did not increase" % HS
    rc, out = s_client(p13.port, "-tls1_3", "-alpn", "http/1.1", *ca)
    assert re.search(r"New, TLSv1\.3,", out) and "ALPN protocol: http/1.1" in out, out


def test_session_resumption_s_client(upstream, proxy, pki, tmp_path):
    u = upstream("A")
    p = start_tls_proxy(proxy, u, pki)
    ca = ["-CAfile", pki.ca.cert, "-verify_return_error", "-ign_eof"]
    r0 = hs(p, "ok", "resumed")
    for flag, name in (("-tls1_3", "TLSv1.3"), ("-tls1_2", "TLSv1.2")):
        sess = tmp_path / ("sess%s.pem" % name)
        rc, out = s_client(p.port, flag, "-sess_out", sess, *ca, stdin=HTTP_CLOSE)
        assert re.search(r"New, %s," % re.escape(name), out) and "HTTP/1.1 200" in out, out
        assert sess.is_file() and sess.stat().st_size > 0, "no session saved (%s)" % name
        rc, out = s_client(p.port, flag, "-sess_in", sess, *ca, stdin=HTTP_CLOSE)
        assert re.search(r"Reused, %s," % re.escape(name), out), "%s session not reused:\n%s" % (name, out)
        assert "HTTP/1.1 200" in out, out
    assert wait_until(lambda: hs(p, "ok", "resumed") >= r0 + 2, 3), \
        "%s{result=ok,reason=resumed} went %s -> %s, expected +2" % (HS, r0, hs(p, "ok", "resumed"))


# ---------------------------------------------------------------------------------------------
# Rotation
# ---------------------------------------------------------------------------------------------
def _peer_label(pki):
    return {pki.server.serial: "v1", pki.server_renewed.serial: "v2", pki.server_newkey.serial: "v3"}


@pytest.mark.parametrize("layout", ["plain", "configmap"])
def test_certificate_rotation_under_load(upstream, proxy, pki, tmp_path, layout):
    """plain: a renewed certificate (same key) renamed over tls.crt; configmap: a new cert+key
    pair swapped in with ..data. Then a key that matches no certificate: rejected, old kept."""
    u = upstream("A")
    certdir = tmp_path / "certs"
    certdir.mkdir()
    old = pki.server
    if layout == "plain":
        shutil.copy(old.cert, certdir / "tls.crt")
        shutil.copy(old.key, certdir / "tls.key")
        new = pki.server_renewed
    else:
        configmap_swap(certdir, {"tls.crt": old.cert, "tls.key": old.key}, 1)
        new = pki.server_newkey
    tls = {"cert": str(certdir / "tls.crt"), "key": str(certdir / "tls.key")}
    p = proxy(tls_config(free_port(), free_port(), u.addr, tls))
    labels = _peer_label(pki)
    ok_reloads0 = p.metric("outrider_config_reloads_total", result="ok") or 0
    failed_reloads0 = p.metric("outrider_config_reloads_total", result="failed") or 0
    gauge = lambda: p.metric("outrider_tls_certificate_expiry_timestamp_seconds", listener="inbound")  # noqa: E731
    assert gauge() == old.not_after

    ctx = client_context(pki.ca.cert)
    established = TLSConn(p.port, ctx, timeout=5)
    load = TLSLoad(p.port, ctx, max_seconds=40)
    try:
        status, _, _ = established.request("/name")
        assert status == 200 and established.peer()[0] == old.serial
        load.start()
        assert wait_until(lambda: len(load.results) >= 10, 5), "TLS load made no progress: %r" % load.results[-3:]
        assert all(r[1] == old.serial for r in load.seen_since(0))

        # Rotate.
        if layout == "plain":
            replace_file(new.cert, certdir / "tls.crt")
        else:
            configmap_swap(certdir, {"tls.crt": new.cert, "tls.key": new.key}, 2)
        t_rot = time.monotonic()
        assert wait_until(lambda: any(r[1] == new.serial for r in load.seen_since(t_rot)), 5.0), \
            "new handshakes still see %s 5 s after rotation (last: %r)\n%s" % (
                [labels.get(r[1]) for r in load.results[-5:]], load.results[-3:], p.diag())
        t_new = time.monotonic()
        assert wait_until(lambda: len(load.seen_since(t_new + 0.2)) >= 5, 5)
        back = [r for r in load.seen_since(t_new + 0.2) if r[1] != new.serial]
        assert not back, "handshakes went back to the old certificate: %r" % back[:3]
        assert wait_until(lambda: gauge() == new.not_after, 3), \
            "expiry gauge %r, expected the new notAfter %d" % (gauge(), new.not_after)
        assert (p.metric("outrider_config_reloads_total", result="ok") or 0) > ok_reloads0
        assert (p.metric("outrider_config_reloads_total", result="failed") or 0) == failed_reloads0, \
            "an atomic rotation produced a failed reload: %r" % p.config_json().get("last_reload_error")

        # The connection established before the rotation is untouched.
        status, _, body = established.request("/name")
        assert status == 200 and body == b"A\n", (status, body)
        assert established.peer()[0] == old.serial

        # A key that matches no certificate: reload refused, the current material keeps serving.
        if layout == "plain":
            replace_file(pki.stray_key, certdir / "tls.key")
        else:
            configmap_swap(certdir, {"tls.crt": new.cert, "tls.key": pki.stray_key}, 3)
        t_bad = time.monotonic()
        assert wait_until(lambda: (p.metric("outrider_config_reloads_total", result="failed") or 0)
                          > failed_reloads0, 5), "a mismatched key did not count a failed reload\n%s" % p.diag()
        err = p.config_json().get("last_reload_error")
        assert err and "listener 'inbound'" in err and "tls" in err, "last_reload_error: %r" % err
        tls_line = _tls_line(p.config_bytes.decode())
        assert re.search(r":(%d|%d):" % (tls_line, tls_line + 2), err), \
            "last_reload_error should name the tls line (%d) or its key line: %r" % (tls_line, err)
        assert wait_until(lambda: len(load.seen_since(t_bad + 0.3)) >= 10, 5)
        after = load.seen_since(t_bad)
        assert after and all(r[1] == new.serial for r in after), \
            "after a rejected key the served certificate changed: %r" % [labels.get(r[1]) for r in after][:10]
        assert gauge() == new.not_after

        # Putting the right key back recovers: a successful reload, the error cleared.
        ok1 = p.metric("outrider_config_reloads_total", result="ok") or 0
        if layout == "plain":
            replace_file(new.key, certdir / "tls.key")
        else:
            configmap_swap(certdir, {"tls.crt": new.cert, "tls.key": new.key}, 4)
        assert wait_until(lambda: (p.metric("outrider_config_reloads_total", result="ok") or 0) > ok1, 5), \
            "restoring the matching key did not reload\n%s" % p.diag()
        assert p.config_json().get("last_reload_error") is None, p.config_json().get("last_reload_error")
        t_fix = time.monotonic()
        assert wait_until(lambda: len(load.seen_since(t_fix)) >= 3, 5)
        assert all(r[1] == new.serial for r in load.seen_since(t_fix))
    finally:
        load.stop()
        established.close()
    fails = load.failures()
    assert not fails, "%d of %d TLS requests failed during rotation, e.g. %r" % (
        len(fails), len(load.results), fails[:5])
    assert len(load.results) >= 20
    assert p.alive()


def test_client_ca_bundle_rotation(upstream, proxy, pki, tmp_path):
    """Replacing the CA bundle changes which client certificates new handshakes accept."""
    u = upstream("A")
    certdir = tmp_path / "certs"
    certdir.mkdir()
    shutil.copy(pki.ca.cert, certdir / "ca.crt")
    p = start_tls_proxy(proxy, u, pki, client_ca=str(certdir / "ca.crt"), client_cert="require")
    rc, status, _, err = https(p, "/name", pki, *client_args(pki.client))
    assert rc == 0 and status == 200, err
    rc, status, _, err = https(p, "/name", pki, *client_args(pki.client_other_ca))
    assert_refused(rc, status, err, "other-CA client before the CA rotation")

    replace_file(pki.other_ca.cert, certdir / "ca.crt")

    def other_accepted():
        rc, status, _, _ = https(p, "/name", pki, *client_args(pki.client_other_ca))
        return rc == 0 and status == 200
    assert wait_until(other_accepted, 5, interval=0.2), \
        "a client of the new CA bundle still refused 5 s after the bundle was replaced\n%s" % p.diag()
    rc, status, _, err = https(p, "/name", pki, *client_args(pki.client))
    assert_refused(rc, status, err, "client of the removed CA after the CA rotation")


def _tls_line(text):
    for i, line in enumerate(text.splitlines(), 1):
        if line.strip() == "tls:":
            return i
    raise AssertionError("no tls: line in %r" % text)


# ---------------------------------------------------------------------------------------------
# outrider check
# ---------------------------------------------------------------------------------------------
CHECK_CONFIG = """workers: 1
admin:
  address: 127.0.0.1:15000
listeners:
  - name: inbound
    address: 127.0.0.1:15006
    upstream: 127.0.0.1:8080
    tls:
      cert: tls.crt
      key: tls.key
      client_ca: ca.crt
      client_cert: require
      min_version: "1.2"
"""  # tls: is line 8, key: line 10


def test_check_validates_tls_material(outrider_bin, pki, tmp_path):
    d = tmp_path / "conf"
    d.mkdir()
    f = d / "outrider.yaml"
    f.write_text(CHECK_CONFIG)
    shutil.copy(pki.server.cert, d / "tls.crt")
    shutil.copy(pki.server.key, d / "tls.key")
    shutil.copy(pki.ca.cert, d / "ca.crt")

    def check():
        # From another working directory: relative paths resolve against the config's directory.
        return subprocess.run([str(outrider_bin), "check", "--config", str(f)], capture_output=True,
                              text=True, timeout=20, cwd=str(tmp_path), stdin=subprocess.DEVNULL)
    r = check()
    assert r.returncode == 0, "valid TLS material refused: %s%s" % (r.stdout, r.stderr)

    shutil.copy(pki.stray_key, d / "tls.key")
    r = check()
    out = r.stdout + r.stderr
    assert r.returncode == 1, "mismatched key: exit %d\n%s" % (r.returncode, out)
    m = re.search(r"%s:(\d+):[^\n]*listener 'inbound': tls: [^\n]*does not match" % re.escape(str(f)), out)
    assert m, "expected '%s:<line>: listener 'inbound': tls: ... does not match ...', got:\n%s" % (f, out)
    assert int(m.group(1)) in (8, 10), "line %s is neither the tls: line (8) nor key: (10):\n%s" % (m.group(1), out)

    shutil.copy(pki.server.key, d / "tls.key")
    os.remove(d / "ca.crt")
    r = check()
    out = r.stdout + r.stderr
    assert r.returncode == 1 and re.search(r"%s:\d+:[^\n]*ca\.crt" % re.escape(str(f)), out), \
        "missing client_ca file: exit %d\n%s" % (r.returncode, out)
