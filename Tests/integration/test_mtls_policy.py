"""The mtls authorization filter end to end: TLS termination with client certificates, the
SPIFFE identity handed to the filter, and the policy deciding (ALLOW/DENY, default-deny,
shadow mode), with real clients (curl) and certificates made by the test."""

import pytest

from helpers import free_port, make_config
from tls_helpers import PKI, curl

POLICY = """
rules:
  - name: deny-admin
    action: DENY
    to:
      paths: ["/admin/*"]
  - name: frontend-reads
    action: ALLOW
    from:
      principals: ["spiffe://cluster.local/ns/default/*"]
    to:
      methods: [GET]
      paths: ["/name", "/echo"]
"""


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return PKI(tmp_path_factory.mktemp("pki-mtls"))


def start(proxy, upstream, pki, tmp_path, mode="enforce"):
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)
    cfg = make_config(free_port(), free_port(), upstream.addr)
    cfg["listeners"][0]["tls"] = {"cert": str(pki.server.cert), "key": str(pki.server.key),
                                  "client_ca": str(pki.ca.cert), "client_cert": "optional"}
    cfg["filters"] = [{"name": "mtls", "mode": mode, "policy": str(policy)}]
    return proxy(cfg)


def get(p, pki, path, cert=None, method="GET"):
    args = ["--cacert", str(pki.ca.cert), "-X", method]
    if cert is not None:
        args += ["--cert", str(cert.cert), "--key", str(cert.key)]
    rc, status, body, err = curl("https://localhost:%d%s" % (p.port, path), *args)
    assert rc == 0, err
    return status, body


def decisions(p, **labels):
    return p.metric("outrider_mtls_decisions_total", **labels) or 0


def test_policy_allows_the_spiffe_identity_and_denies_the_rest(upstream, proxy, pki, tmp_path):
    a = upstream("A")
    p = start(proxy, a, pki, tmp_path)
    assert get(p, pki, "/name", pki.client)[0] == 200
    # No certificate: no identity, and a present allow list means default-deny.
    code, body = get(p, pki, "/name")
    assert code == 403 and "no allow rule matched" in body
    # Two URI SANs: a valid certificate but no SPIFFE identity (X509-SVID rule).
    assert get(p, pki, "/name", pki.client_two_uris)[0] == 403
    # Method and path outside the allow rule; DENY wins over ALLOW.
    assert get(p, pki, "/name", pki.client, method="DELETE")[0] == 403
    code, body = get(p, pki, "/admin/x", pki.client)
    assert code == 403 and "deny-admin" in body
    log = p.access_log()
    denied = [r for r in log if r["response_code"] == 403]
    assert denied and all(r["response_flags"] == "UAEX" for r in denied)
    assert decisions(p, rule="frontend-reads", result="allowed") >= 1
    assert decisions(p, rule="deny-admin", result="denied") >= 1


def test_shadow_mode_counts_but_never_blocks(upstream, proxy, pki, tmp_path):
    a = upstream("A")
    p = start(proxy, a, pki, tmp_path, mode="shadow")
    assert get(p, pki, "/name")[0] == 200
    assert get(p, pki, "/admin/x", pki.client)[0] != 403
    assert decisions(p, result="shadow_denied") >= 2
    assert (p.metric("outrider_filter_shadow_would_respond_total", filter="mtls", status="403") or 0) >= 2
