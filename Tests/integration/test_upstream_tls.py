"""TLS and mTLS from Outrider to the workload (`upstream_tls:`), against the demo upstream
serving HTTPS and requiring a client certificate, with certificates made by the test."""

import json
import subprocess
import pytest

from helpers import free_port, make_config
from tls_helpers import PKI


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return PKI(tmp_path_factory.mktemp("pki-upstream"))


@pytest.fixture
def tls_upstream(pki, tmp_path):
    procs = []

    def start(require_client_cert=True):
        port = free_port()
        argv = ["python3", "deploy/demo/upstream.py", "--port", str(port), "--name", "S",
                "--tls-cert", str(pki.server.cert), "--tls-key", str(pki.server.key)]
        if require_client_cert:
            argv += ["--client-ca", str(pki.ca.cert)]
        p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        procs.append(p)
        line = p.stdout.readline().decode()
        assert "listening on" in line, line
        return "127.0.0.1:%d" % port

    yield start
    for p in procs:
        p.kill()
        p.wait(timeout=5)


def config(upstream_addr, upstream_tls):
    cfg = make_config(free_port(), free_port(), upstream_addr)
    cfg["listeners"][0]["upstream_tls"] = upstream_tls
    return cfg


def test_mtls_to_the_workload(proxy, pki, tls_upstream):
    addr = tls_upstream(require_client_cert=True)
    p = proxy(config(addr, {"ca": str(pki.ca.cert), "cert": str(pki.client.cert),
                            "key": str(pki.client.key), "server_name": "localhost"}))
    r = p.get("/echo")
    assert r.status == 200
    echoed = json.loads(r.body)
    assert echoed["name"] == "S"
    assert echoed["tls_client_subject"]["commonName"] == "frontend"
    # Keep-alive over TLS: many requests, few upstream connections.
    for _ in range(20):
        assert p.get("/name").status == 200
    assert (p.metric("outrider_upstream_connections_total", listener="inbound") or 0) <= 3


def test_untrusted_workload_certificate_is_refused_with_502(proxy, pki, tls_upstream):
    addr = tls_upstream(require_client_cert=False)
    p = proxy(config(addr, {"ca": str(pki.other_ca.cert), "server_name": "localhost"}))
    r = p.get("/name")
    assert r.status == 502
    entries = p.wait_access_log(lambda es: any(e.get("response_code_details") == "upstream_tls_error" for e in es))
    assert any(e.get("response_code_details") == "upstream_tls_error" for e in entries), entries


def test_upstream_tls_settings_are_validated(outrider_bin, tmp_path):
    cfg = tmp_path / "outrider.yaml"
    cfg.write_text(
        "listeners:\n"
        "  - name: inbound\n"
        "    address: 127.0.0.1:%d\n"
        "    upstream: 127.0.0.1:8443\n"
        "    upstream_tls:\n"
        "      cert: client.crt\n" % free_port())
    r = subprocess.run([outrider_bin, "check", "--config", str(cfg)], capture_output=True, text=True, timeout=30)
    assert r.returncode == 1
    assert "%s:5:" % cfg in r.stdout and "cert and key go together" in r.stdout
    assert "ca is required" in r.stdout
