"""SNI: a TLS listener serves the certificate the client asks for by name (`tls.sni`), the
default certificate otherwise; both rotate like the config."""

import socket
import ssl

import pytest

from helpers import free_port, make_config
from tls_helpers import PKI


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return PKI(tmp_path_factory.mktemp("pki-sni"))


def peer_cn(port, ca, server_name):
    ctx = ssl.create_default_context(cafile=str(ca))
    ctx.check_hostname = False
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        with ctx.wrap_socket(raw, server_hostname=server_name) as s:
            subject = dict(x[0] for x in s.getpeercert()["subject"])
            return subject["commonName"]


def test_sni_picks_the_certificate_by_name(upstream, proxy, pki):
    api = pki.ca.issue("api", "api-cert", sans=["DNS:api.example.com"], serial=0x7001, days=20)
    a = upstream("A")
    cfg = make_config(free_port(), free_port(), a.addr)
    cfg["listeners"][0]["tls"] = {
        "cert": str(pki.server.cert), "key": str(pki.server.key),
        "sni": [{"server_name": "api.example.com", "cert": str(api.cert), "key": str(api.key)}],
    }
    p = proxy(cfg)
    assert peer_cn(p.port, pki.ca.cert, "api.example.com") == "api-cert"
    assert peer_cn(p.port, pki.ca.cert, "localhost") == "outrider-v1"
    assert p.metric("outrider_tls_handshakes_total", listener="inbound", result="ok") >= 2
