"""Certificates and TLS clients for the TLS/mTLS integration tests (openssl CLI + stdlib only).

Every certificate is made by the `openssl` command line (OpenSSL 3.0 is enough): a CA signs
leaves with `openssl ca`, which takes explicit -startdate/-enddate, so an already-expired
certificate needs no clock games.
"""

import datetime
import hashlib
import os
import re
import shutil
import socket
import ssl
import subprocess
import threading
import time
from pathlib import Path

LOCAL = "127.0.0.1"

_CA_CNF = """[ ca ]
default_ca = local
[ local ]
dir = {dir}
database = $dir/index.txt
new_certs_dir = $dir/newcerts
serial = $dir/serial
default_md = sha256
policy = anything
unique_subject = no
copy_extensions = none
email_in_dn = no
[ anything ]
commonName = optional
organizationName = optional
"""


def openssl(*args, input=None, timeout=20):
    r = subprocess.run(["openssl"] + [str(a) for a in args], input=input, capture_output=True,
                       timeout=timeout)
    if r.returncode != 0:
        raise RuntimeError("openssl %s failed (%d): %s" % (" ".join(map(str, args)), r.returncode,
                                                           r.stderr.decode(errors="replace")))
    return r.stdout


def _utc(dt):
    return dt.strftime("%Y%m%d%H%M%SZ")


def new_key(path):
    openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", path)
    return Path(path)


class Cert:
    """A certificate file and its key file, with what the tests compare against."""

    def __init__(self, cert, key):
        self.cert = Path(cert)
        self.key = Path(key)
        pem = self.cert.read_text()
        self.der = ssl.PEM_cert_to_DER_cert(pem)
        self.sha256 = hashlib.sha256(self.der).hexdigest()
        out = openssl("x509", "-in", self.cert, "-noout", "-serial", "-enddate", "-subject",
                      "-nameopt", "RFC2253").decode()
        self.serial = int(re.search(r"serial=([0-9A-Fa-f]+)", out).group(1), 16)
        end = re.search(r"notAfter=(.+)", out).group(1).strip()
        self.not_after = int(datetime.datetime.strptime(end, "%b %d %H:%M:%S %Y %Z")
                             .replace(tzinfo=datetime.timezone.utc).timestamp())
        self.subject = re.search(r"subject=(.*)", out).group(1).strip()


class CA:
    """A self-signed CA that signs leaves with `openssl ca` (explicit validity dates)."""

    def __init__(self, root, name):
        self.dir = Path(root) / name
        (self.dir / "newcerts").mkdir(parents=True)
        (self.dir / "index.txt").write_text("")
        (self.dir / "serial").write_text("1000\n")
        self.cnf = self.dir / "ca.cnf"
        self.cnf.write_text(_CA_CNF.format(dir=self.dir))
        self.key = new_key(self.dir / "ca.key")
        self.cert = self.dir / "ca.crt"
        openssl("req", "-x509", "-new", "-key", self.key, "-out", self.cert, "-days", "30",
                "-subj", "/O=Outrider Tests/CN=%s" % name,
                "-addext", "basicConstraints=critical,CA:TRUE",
                "-addext", "keyUsage=critical,keyCertSign,cRLSign")

    def issue(self, name, cn, *, sans=(), usage="serverAuth", key=None, serial=None,
              days=10, start=None, end=None):
        """Sign a leaf. sans: list like ["DNS:localhost", "IP:127.0.0.1", "URI:spiffe://x/y"].
        key: reuse an existing key file (renewal with the same key). start/end: datetimes."""
        out = self.dir / name
        out.mkdir(parents=True, exist_ok=True)
        keyp = out / "tls.key"
        if key:
            shutil.copy(key, keyp)
        else:
            new_key(keyp)
        csr = out / "req.csr"
        openssl("req", "-new", "-key", keyp, "-out", csr, "-subj", "/O=Outrider Tests/CN=%s" % cn)
        ext = out / "ext.cnf"
        lines = ["[ leaf ]", "basicConstraints = critical,CA:FALSE",
                 "keyUsage = critical,digitalSignature,keyEncipherment",
                 "extendedKeyUsage = %s" % usage]
        if sans:
            lines.append("subjectAltName = " + ",".join(sans))
        ext.write_text("\n".join(lines) + "\n")
        now = datetime.datetime.now(datetime.timezone.utc)
        start = start or (now - datetime.timedelta(minutes=5))
        end = end or (now + datetime.timedelta(days=days))
        if serial is not None:
            (self.dir / "serial").write_text("%X\n" % serial)
        certp = out / "tls.crt"
        openssl("ca", "-batch", "-config", self.cnf, "-cert", self.cert, "-keyfile", self.key,
                "-preserveDN", "-notext", "-md", "sha256", "-in", csr,
                "-out", certp, "-extfile", ext, "-extensions", "leaf",
                "-startdate", _utc(start), "-enddate", _utc(end))
        return Cert(certp, keyp)


class PKI:
    """Everything the suite needs, generated once per session."""

    def __init__(self, root):
        root = Path(root)
        self.root = root
        self.ca = CA(root, "ca")
        self.other_ca = CA(root, "other-ca")
        server_sans = ["DNS:localhost", "IP:127.0.0.1"]
        self.server = self.ca.issue("server", "outrider-v1", sans=server_sans, serial=0x5001, days=20)
        # Renewal with the same key (single-file rotation), and a new key pair (two-file rotation).
        self.server_renewed = self.ca.issue("server-renewed", "outrider-v2", sans=server_sans,
                                            key=self.server.key, serial=0x5002, days=25)
        self.server_newkey = self.ca.issue("server-newkey", "outrider-v3", sans=server_sans,
                                           serial=0x5003, days=15)
        self.stray_key = new_key(root / "stray.key")  # matches no certificate
        self.spiffe_id = "spiffe://cluster.local/ns/default/sa/frontend"
        self.client = self.ca.issue("client", "frontend", sans=["URI:" + self.spiffe_id],
                                    usage="clientAuth")
        self.client_two_uris = self.ca.issue(
            "client-two-uris", "ambiguous",
            sans=["URI:spiffe://cluster.local/ns/default/sa/one",
                  "URI:spiffe://cluster.local/ns/default/sa/two"], usage="clientAuth")
        past = datetime.datetime(2020, 1, 1, tzinfo=datetime.timezone.utc)
        self.client_expired = self.ca.issue(
            "client-expired", "expired", sans=["URI:spiffe://cluster.local/ns/default/sa/old"],
            usage="clientAuth", start=past, end=past + datetime.timedelta(days=30))
        self.client_other_ca = self.other_ca.issue(
            "client-other", "intruder", sans=["URI:spiffe://cluster.local/ns/default/sa/intruder"],
            usage="clientAuth")


# ---------------------------------------------------------------------------------------------
# Clients
# ---------------------------------------------------------------------------------------------
def curl(url, *args, timeout=15):
    """curl with the response body on stdout and '\\n%{http_code}' appended; returns
    (returncode, http_code or 0, body text, stderr)."""
    cmd = ["curl", "-sS", "--max-time", "10", "-w", "\n%{http_code}"] + [str(a) for a in args] + [url]
    r = subprocess.run(cmd, capture_output=True, timeout=timeout, stdin=subprocess.DEVNULL)
    out = r.stdout.decode(errors="replace")
    body, _, code = out.rpartition("\n")
    try:
        status = int(code)
    except ValueError:
        status = 0
    return r.returncode, status, body, r.stderr.decode(errors="replace")


def s_client(port, *args, stdin=b"", timeout=15):
    """openssl s_client to 127.0.0.1:port (SNI localhost); returns (rc, stdout+stderr text)."""
    cmd = ["openssl", "s_client", "-connect", "%s:%d" % (LOCAL, port), "-servername", "localhost"] + \
        [str(a) for a in args]
    r = subprocess.run(cmd, input=stdin, capture_output=True, timeout=timeout)
    return r.returncode, r.stdout.decode(errors="replace") + r.stderr.decode(errors="replace")


def client_context(ca_file, cert=None, min_version=None, max_version=None):
    ctx = ssl.create_default_context(cafile=str(ca_file))
    ctx.check_hostname = True
    if cert is not None:
        ctx.load_cert_chain(str(cert.cert), str(cert.key))
    if min_version:
        ctx.minimum_version = min_version
    if max_version:
        ctx.maximum_version = max_version
    return ctx


def _read_http_response(sock, deadline):
    buf = b""
    while b"\r\n\r\n" not in buf:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("EOF before response head (%r)" % buf[:200])
        buf += chunk
    head, _, body = buf.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    headers = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        headers[k.strip().lower()] = v.strip()
    n = int(headers.get("content-length", "0"))
    while len(body) < n:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("EOF in body")
        body += chunk
    return status, headers, body[:n]


class TLSConn:
    """One TLS connection (Python ssl) for keep-alive HTTP/1.1 requests."""

    def __init__(self, port, ctx, session=None, timeout=5.0):
        raw = socket.create_connection((LOCAL, port), timeout=timeout)
        try:
            self.sock = ctx.wrap_socket(raw, server_hostname="localhost", session=session)
        except Exception:
            raw.close()
            raise
        self.timeout = timeout

    def peer(self):
        """(serial number, subject CN) of the certificate the server presented."""
        cert = self.sock.getpeercert()
        cn = dict(x[0] for x in cert["subject"]).get("commonName")
        return int(cert["serialNumber"], 16), cn

    def request(self, path, headers=None, close=False):
        hdrs = {"Host": "localhost"}
        hdrs.update(headers or {})
        if close:
            hdrs["Connection"] = "close"
        req = "GET %s HTTP/1.1\r\n%s\r\n" % (path, "".join("%s: %s\r\n" % kv for kv in hdrs.items()))
        self.sock.sendall(req.encode())
        return _read_http_response(self.sock, time.monotonic() + self.timeout)

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.close()


class TLSLoad(threading.Thread):
    """New TLS connection per request in a loop; records (t, peer certificate serial or None,
    status or error text)."""

    def __init__(self, port, ctx, path="/name", max_seconds=60.0):
        super().__init__(daemon=True)
        self.port, self.ctx, self.path = port, ctx, path
        self.stop_evt = threading.Event()
        self.results = []
        self.max_seconds = max_seconds

    def run(self):
        end = time.monotonic() + self.max_seconds
        while not self.stop_evt.is_set() and time.monotonic() < end:
            t = time.monotonic()
            try:
                with TLSConn(self.port, self.ctx) as c:
                    peer = c.peer()[0]
                    status, _, _ = c.request(self.path, close=True)
                self.results.append((t, peer, status))
            except Exception as e:  # noqa: BLE001
                self.results.append((t, None, "error: %r" % e))

    def stop(self):
        self.stop_evt.set()
        self.join(10)

    def failures(self):
        return [r for r in self.results if r[2] != 200]

    def seen_since(self, t0):
        return [r for r in self.results if r[0] >= t0 and r[2] == 200]


def configmap_swap(certdir, files, gen):
    """Kubelet-style update: write ..<gen>/ with `files` {name: source path}, point ..data at it
    by renaming a temporary symlink, create name -> ..data/name links if missing, and remove
    the previous generation."""
    certdir = Path(certdir)
    gdir = certdir / ("..gen_%02d" % gen)
    gdir.mkdir()
    for name, src in files.items():
        shutil.copy(src, gdir / name)
    datalink = certdir / "..data"
    old = os.readlink(datalink) if datalink.is_symlink() else None
    tmp = certdir / "..data_tmp"
    os.symlink(gdir.name, tmp)
    os.rename(tmp, datalink)
    for name in files:
        if not (certdir / name).is_symlink():
            os.symlink("..data/" + name, certdir / name)
    if old:
        shutil.rmtree(certdir / old, ignore_errors=True)


def replace_file(src, dst):
    """Write a copy next to dst, then rename it over dst (atomic replacement)."""
    dst = Path(dst)
    tmp = dst.with_name("." + dst.name + ".tmp")
    shutil.copy(src, tmp)
    os.rename(tmp, dst)
