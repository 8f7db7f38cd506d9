#!/usr/bin/env python3
"""Demo upstream for Outrider: a small threaded HTTP/1.1 server (stdlib only).

    python3 upstream.py --port 8080 --name A [--host 127.0.0.1] [--verbose]

Prints one line "listening on HOST:PORT" on stdout once it accepts connections
(--port 0 picks a free port and prints it). Quiet otherwise unless --verbose.

Endpoints (every response carries `x-upstream-name: <name>`):
  GET  /               200 "hello from <name>\\n"
  GET  /name           200 "<name>\\n"
  ANY  /echo           200 JSON {name, method, path, headers, body_length, body_sha256}
  POST /upload         200 JSON {body_length, body_sha256} (body consumed streaming)
  GET  /bytes/N        N pattern bytes, Content-Length, 64 KiB writes
  GET  /chunked/N      N pattern bytes, chunked (64 KiB chunks), trailer x-checksum: <sha256>
  GET  /delay/MS       sleeps MS milliseconds, then 200 "slept MS\\n"
  GET  /status/CODE    that status (no body for 204/304)
  GET  /ws             WebSocket echo (text/binary echoed, ping answered, close answered)
  GET  /hang           reads the request, never answers; holds the socket until the peer closes
  GET  /__count        number of requests completely received (head and whole body) so far, not
                       counting /__count itself; counted before the response is written, so a
                       client that has read a response and then asks /__count sees it. A request
                       whose body is cut off or malformed is not counted.
  GET  /__received     number of request heads received (counted on receipt of the head)
HEAD works on every endpoint (same headers, no body). Request bodies (Content-Length or
chunked, with trailers) are always consumed, streaming; `Expect: 100-continue` is answered.
The pattern byte at offset i is PATTERN[i % len(PATTERN)], PATTERN = bytes(range(256)) * 256.
"""

import argparse
import base64
import hashlib
import json
import socket
import socketserver
import struct
import sys
import threading
import time

CHUNK = 64 * 1024
PATTERN = bytes(range(256)) * (CHUNK // 256)  # 64 KiB, so every write starts at a multiple of 256
MAX_HEAD = 256 * 1024
WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC11B85"
IDLE_TIMEOUT = 300.0  # seconds a keep-alive connection may sit idle between requests

REASONS = {
    100: "Continue", 101: "Switching Protocols", 200: "OK", 201: "Created", 202: "Accepted",
    204: "No Content", 206: "Partial Content", 301: "Moved Permanently", 302: "Found",
    304: "Not Modified", 400: "Bad Request", 401: "Unauthorized", 403: "Forbidden",
    404: "Not Found", 405: "Method Not Allowed", 408: "Request Timeout", 413: "Payload Too Large",
    429: "Too Many Requests", 500: "Internal Server Error", 502: "Bad Gateway",
    503: "Service Unavailable", 504: "Gateway Timeout",
}


class BadRequest(Exception):
    pass


class ClientGone(Exception):
    pass


class Counter:
    def __init__(self):
        self._lock = threading.Lock()
        self.value = 0

    def incr(self):
        with self._lock:
            self.value += 1


def pattern_bytes(n):
    """Yield n pattern bytes in CHUNK-sized pieces."""
    while n > 0:
        k = min(n, CHUNK)
        yield PATTERN if k == CHUNK else PATTERN[:k]
        n -= k


class Request:
    def __init__(self, method, target, version, headers):
        self.method = method
        self.target = target
        self.path = target.split("?", 1)[0]
        self.version = version
        self.headers = headers  # list of (lowercase name, value)

    def get(self, name, default=None):
        name = name.lower()
        for k, v in self.headers:
            if k == name:
                return v
        return default

    def get_all(self, name):
        name = name.lower()
        return [v for k, v in self.headers if k == name]

    def tokens(self, name):
        out = []
        for v in self.get_all(name):
            out += [t.strip().lower() for t in v.split(",") if t.strip()]
        return out

    def wants_close(self):
        conn = self.tokens("connection")
        if self.version == "HTTP/1.0":
            return "keep-alive" not in conn
        return "close" in conn


class Handler(socketserver.BaseRequestHandler):
    def setup(self):
        ctx = getattr(self.server, "ssl_context", None)
        if ctx is not None:
            # TLS (and mTLS when a client CA is given), handshake in this handler's thread.
            self.request.settimeout(10)
            self.request = ctx.wrap_socket(self.request, server_side=True)
            self.request.settimeout(None)
        self.sock = self.request
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.rfile = self.sock.makefile("rb", buffering=CHUNK)
        self.name = self.server.upstream_name
        self.verbose = self.server.verbose

    def finish(self):
        try:
            self.rfile.close()
        except OSError:
            pass

    # ---- reading -------------------------------------------------------------------------
    def read_head(self):
        """Return a Request, or None on a clean EOF before any byte."""
        self.sock.settimeout(IDLE_TIMEOUT)
        lines = []
        total = 0
        while True:
            line = self.rfile.readline(MAX_HEAD + 1)
            if not line:
                if not lines:
                    return None
                raise ClientGone()
            total += len(line)
            if total > MAX_HEAD:
                raise BadRequest("head too large")
            if line in (b"\r\n", b"\n"):
                if not lines:  # tolerate leading empty lines (RFC 9112 2.2)
                    continue
                break
            lines.append(line.rstrip(b"\r\n").decode("latin-1"))
        self.sock.settimeout(None)
        parts = lines[0].split(" ")
        if len(parts) != 3:
            raise BadRequest("bad request line")
        headers = []
        for raw in lines[1:]:
            if ":" not in raw:
                raise BadRequest("bad header line")
            k, v = raw.split(":", 1)
            headers.append((k.strip().lower(), v.strip()))
        return Request(parts[0], parts[1], parts[2], headers)

    def body_reader(self, req):
        """Yield the request body in pieces (Content-Length or chunked)."""
        te = req.tokens("transfer-encoding")
        if te:
            if te[-1] != "chunked":
                raise BadRequest("unsupported transfer-encoding")
            return self._read_chunked()
        cl = req.get("content-length")
        if cl is None:
            return iter(())
        try:
            n = int(cl)
        except ValueError:
            raise BadRequest("bad content-length")
        return self._read_length(n)

    def _read_length(self, n):
        while n > 0:
            data = self.rfile.read1(min(n, CHUNK))
            if not data:
                raise ClientGone()
            n -= len(data)
            yield data

    def _read_chunked(self):
        while True:
            line = self.rfile.readline(1024)
            if not line:
                raise ClientGone()
            if not line.endswith(b"\n"):
                raise BadRequest("chunk size line too long")
            size_s = line.split(b";", 1)[0].strip()
            try:
                size = int(size_s, 16)
            except ValueError:
                raise BadRequest("bad chunk size")
            if size == 0:
                break
            left = size
            while left > 0:
                data = self.rfile.read1(min(left, CHUNK))
                if not data:
                    raise ClientGone()
                left -= len(data)
                yield data
            if self.rfile.readline(3) not in (b"\r\n", b"\n"):
                raise BadRequest("missing CRLF after chunk")
        while True:  # trailers
            line = self.rfile.readline(MAX_HEAD)
            if not line:
                raise ClientGone()
            if line in (b"\r\n", b"\n"):
                break

    def consume_body(self, req):
        h = hashlib.sha256()
        n = 0
        for piece in self.body_reader(req):
            h.update(piece)
            n += len(piece)
        self.mark_complete(req)
        return n, h.hexdigest()

    def mark_complete(self, req):
        if not self.counted and not req.path.startswith("/__"):
            self.counted = True
            self.server.served.incr()

    # ---- writing -------------------------------------------------------------------------
    def send_head(self, code, headers, close):
        lines = ["HTTP/1.1 %d %s" % (code, REASONS.get(code, "Status"))]
        lines.append("x-upstream-name: %s" % self.name)
        for k, v in headers:
            lines.append("%s: %s" % (k, v))
        if close:
            lines.append("connection: close")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

    def respond(self, req, code, body=b"", ctype="text/plain", extra=(), close=False):
        headers = list(extra)
        no_body = code in (204, 304) or 100 <= code < 200
        if not no_body:
            headers = [("content-type", ctype), ("content-length", str(len(body)))] + headers
        head = self.send_head(code, headers, close)
        if req.method == "HEAD" or no_body:
            self.sock.sendall(head)
        else:
            self.sock.sendall(head + body)

    # ---- main loop -----------------------------------------------------------------------
    def handle(self):
        try:
            while True:
                try:
                    req = self.read_head()
                except BadRequest as e:
                    self.sock.sendall(b"HTTP/1.1 400 Bad Request\r\ncontent-length: %d\r\n"
                                      b"connection: close\r\n\r\n%s\n" % (len(str(e)) + 1, str(e).encode()))
                    return
                if req is None:
                    return
                if self.verbose:
                    print("%s %s %s" % (self.name, req.method, req.target), file=sys.stderr, flush=True)
                if req.get("expect", "").lower() == "100-continue" and req.version == "HTTP/1.1":
                    self.sock.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
                # Heads are counted on receipt; complete requests once the body is fully read
                # (see consume_body), always before the response is written.
                self.counted = False
                if not req.path.startswith("/__"):
                    self.server.received.incr()
                try:
                    keep = self.dispatch(req)
                except BadRequest as e:
                    msg = (str(e) + "\n").encode()
                    self.sock.sendall(b"HTTP/1.1 400 Bad Request\r\ncontent-length: %d\r\n"
                                      b"connection: close\r\n\r\n%s" % (len(msg), msg))
                    return
                if not keep or req.wants_close():
                    return
        except (ClientGone, ConnectionError, TimeoutError, socket.timeout, BrokenPipeError):
            return
        except OSError:
            return

    def dispatch(self, req):
        """Serve one request. Returns False when the connection must close afterwards."""
        p = req.path
        close = req.wants_close()
        if p == "/ws" and "websocket" in req.tokens("upgrade"):
            self.websocket(req)
            return False
        if p == "/hang":
            self.consume_body(req)
            self.hang()
            return False
        if p == "/echo":
            n, digest = self.consume_body(req)
            hdrs = {}
            for k, v in req.headers:
                if k in hdrs:
                    if isinstance(hdrs[k], list):
                        hdrs[k].append(v)
                    else:
                        hdrs[k] = [hdrs[k], v]
                else:
                    hdrs[k] = v
            info = {"name": self.name, "method": req.method, "path": req.target,
                    "version": req.version, "headers": hdrs, "body_length": n, "body_sha256": digest}
            getpeercert = getattr(self.sock, "getpeercert", None)
            if getpeercert is not None:
                # Served over TLS: what the proxy presented (mTLS to the workload).
                peer = getpeercert() or {}
                info["tls_client_subject"] = dict(x[0] for x in peer.get("subject", ())) or None
            body = json.dumps(info).encode() + b"\n"
            self.respond(req, 200, body, "application/json", close=close)
            return True
        if p == "/upload":
            n, digest = self.consume_body(req)
            body = json.dumps({"name": self.name, "body_length": n, "body_sha256": digest}).encode() + b"\n"
            self.respond(req, 200, body, "application/json", close=close)
            return True
        # every other endpoint ignores (but consumes) the request body
        self.consume_body(req)
        if p == "/":
            self.respond(req, 200, ("hello from %s\n" % self.name).encode(), close=close)
        elif p == "/name":
            self.respond(req, 200, ("%s\n" % self.name).encode(), close=close)
        elif p == "/__count":
            self.respond(req, 200, ("%d\n" % self.server.served.value).encode(), close=close)
        elif p == "/__received":
            self.respond(req, 200, ("%d\n" % self.server.received.value).encode(), close=close)
        elif p.startswith("/bytes/"):
            n = self.int_arg(p, "/bytes/")
            head = self.send_head(200, [("content-type", "application/octet-stream"),
                                        ("content-length", str(n))], close)
            self.sock.sendall(head)
            if req.method != "HEAD":
                for piece in pattern_bytes(n):
                    self.sock.sendall(piece)
        elif p.startswith("/chunked/"):
            n = self.int_arg(p, "/chunked/")
            head = self.send_head(200, [("content-type", "application/octet-stream"),
                                        ("transfer-encoding", "chunked"),
                                        ("trailer", "x-checksum")], close)
            self.sock.sendall(head)
            if req.method != "HEAD":
                h = hashlib.sha256()
                for piece in pattern_bytes(n):
                    h.update(piece)
                    self.sock.sendall(b"%x\r\n%s\r\n" % (len(piece), piece))
                self.sock.sendall(b"0\r\nx-checksum: %s\r\n\r\n" % h.hexdigest().encode())
        elif p.startswith("/delay/"):
            ms = self.int_arg(p, "/delay/")
            time.sleep(ms / 1000.0)
            self.respond(req, 200, ("slept %d\n" % ms).encode(), close=close)
        elif p.startswith("/status/"):
            code = self.int_arg(p, "/status/")
            if code < 200 or code > 999:
                raise BadRequest("status out of range")
            self.respond(req, code, ("status %d\n" % code).encode(), close=close)
        else:
            self.respond(req, 404, b"not found\n", close=close)
        return True

    @staticmethod
    def int_arg(path, prefix):
        try:
            return int(path[len(prefix):])
        except ValueError:
            raise BadRequest("bad number in path")

    # ---- special endpoints ---------------------------------------------------------------
    def hang(self):
        # Never answer; hold the socket until the client (or proxy) closes it.
        self.sock.settimeout(None)
        while True:
            data = self.rfile.read1(CHUNK)
            if not data:
                return

    def websocket(self, req):
        key = req.get("sec-websocket-key")
        if not key:
            raise BadRequest("missing sec-websocket-key")
        accept = base64.b64encode(hashlib.sha1(key.encode() + WS_GUID).digest()).decode()
        self.mark_complete(req)
        self.sock.sendall(self.send_head(101, [("upgrade", "websocket"), ("connection", "Upgrade"),
                                               ("sec-websocket-accept", accept)], False))
        self.sock.settimeout(IDLE_TIMEOUT)
        while True:
            hdr = self.rfile.read(2)
            if len(hdr) < 2:
                return
            b0, b1 = hdr
            fin_op = b0 & 0x8F  # FIN + opcode (RSV bits dropped)
            opcode = b0 & 0x0F
            masked = b1 & 0x80
            ln = b1 & 0x7F
            if ln == 126:
                ln = struct.unpack("!H", self.rfile.read(2))[0]
            elif ln == 127:
                ln = struct.unpack("!Q", self.rfile.read(8))[0]
            mask = self.rfile.read(4) if masked else b""
            payload = self.rfile.read(ln) if ln else b""
            if len(payload) < ln:
                return
            if masked:
                payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload)) if ln < 4096 \
                    else _unmask_fast(payload, mask)
            if opcode == 0x9:  # ping -> pong
                self.sock.sendall(ws_frame(0x8A, payload))
            elif opcode == 0xA:  # pong: ignore
                continue
            elif opcode == 0x8:  # close: answer and stop
                self.sock.sendall(ws_frame(0x88, payload[:2] if len(payload) >= 2 else b""))
                try:
                    self.sock.shutdown(socket.SHUT_WR)
                except OSError:
                    pass
                return
            else:  # text, binary, continuation: echo as-is
                self.sock.sendall(ws_frame(fin_op, payload))


def _unmask_fast(payload, mask):
    n = len(payload)
    m = (mask * (n // 4 + 1))[:n]
    return (int.from_bytes(payload, "big") ^ int.from_bytes(m, "big")).to_bytes(n, "big")


def ws_frame(b0, payload):
    n = len(payload)
    if n < 126:
        hdr = struct.pack("!BB", b0, n)
    elif n < 65536:
        hdr = struct.pack("!BBH", b0, 126, n)
    else:
        hdr = struct.pack("!BBQ", b0, 127, n)
    return hdr + payload


class Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 1024
    block_on_close = False

    def __init__(self, addr, name, verbose):
        self.upstream_name = name
        self.verbose = verbose
        self.served = Counter()
        self.received = Counter()
        super().__init__(addr, Handler)

    def handle_error(self, request, client_address):
        if self.verbose:
            super().handle_error(request, client_address)


def main():
    ap = argparse.ArgumentParser(description="Outrider demo upstream")
    ap.add_argument("--port", type=int, default=8080)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--name", default="A")
    ap.add_argument("--verbose", action="store_true", help="log one line per request to stderr")
    ap.add_argument("--tls-cert", help="serve HTTPS with this certificate (PEM)")
    ap.add_argument("--tls-key", help="the certificate's key (PEM)")
    ap.add_argument("--client-ca", help="require client certificates signed by this CA (mTLS)")
    args = ap.parse_args()
    srv = Server((args.host, args.port), args.name, args.verbose)
    if args.tls_cert:
        import ssl
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(args.tls_cert, args.tls_key)
        if args.client_ca:
            ctx.load_verify_locations(args.client_ca)
            ctx.verify_mode = ssl.CERT_REQUIRED
        srv.ssl_context = ctx
    host, port = srv.server_address[:2]
    print("listening on %s:%d" % (host, port), flush=True)
    try:
        srv.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    finally:
        srv.server_close()


if __name__ == "__main__":
    main()
