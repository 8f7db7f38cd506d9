"""OTLP collectors for the tracing tests: rotel (a real collector) and a scriptable receiver.

- Rotel: `rotel-agent` from the `rotel` pip package, blackhole exporter, `--debug-log traces
  --debug-log-verbosity detailed`; its stdout (the OTel debug exporter's text format) is parsed
  into span dicts.
- OTLPReceiver: a tiny http.server that answers scripted statuses (503 + Retry-After, 400…)
  and decodes what it gets with opentelemetry-proto (protobuf) or json (OTLP/JSON).

Span dicts (both sources): trace_id, span_id, parent_id ("" for a root), name, kind
("SERVER"/"CLIENT"/…), status ("UNSET"/"OK"/"ERROR"), status_message, attrs {key: value},
resource {key: value}.
"""

import json
import os
import re
import socket
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from helpers import LOCAL, free_port, kill_proc, wait_until

_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_KINDS = {0: "UNSPECIFIED", 1: "INTERNAL", 2: "SERVER", 3: "CLIENT", 4: "PRODUCER", 5: "CONSUMER"}
_STATUS = {0: "UNSET", 1: "OK", 2: "ERROR"}


def rotel_binary():
    try:
        import rotel  # noqa: PLC0415
    except ImportError as e:
        raise AssertionError("the tracing tests need `pip install rotel opentelemetry-proto` "
                             "(make test installs them): %s" % e)
    path = os.path.join(os.path.dirname(rotel.__file__), "rotel-agent")
    assert os.access(path, os.X_OK), "rotel-agent not executable at %s" % path
    return path


def _port_open(port):
    try:
        with socket.create_connection((LOCAL, port), timeout=0.2):
            return True
    except OSError:
        return False


def _rotel_value(text):
    m = re.match(r"^(Str|Int|Double|Bool|Bytes|Map|Slice|Empty)\((.*)\)$", text)
    if not m:
        return text
    kind, v = m.groups()
    if kind == "Int":
        try:
            return int(v)
        except ValueError:
            return v
    if kind == "Double":
        try:
            return float(v)
        except ValueError:
            return v
    if kind == "Bool":
        return v == "true"
    return v


def parse_rotel_output(text):
    """Debug-exporter text → span dicts. Layout (rotel 0.0.1a15):
        ResourceSpans #0 / Resource attributes: / -> k: Str(v) / ScopeSpans #0 / Span #0
        '    Trace ID       : <hex>' … '    Kind           : SPAN_KIND_SERVER'
        '    Status code    : STATUS_CODE_ERROR' / 'Attributes:' / '     -> k: Int(200)'"""
    spans = []
    resource = {}
    span = None
    section = None
    for raw in text.splitlines():
        line = _ANSI.sub("", raw).rstrip("\n")
        s = line.strip()
        if s.startswith("ResourceSpans #"):
            resource = {}
            section = "resource"
            span = None
            continue
        if s == "Resource attributes:":
            section = "resource"
            continue
        if s.startswith("ScopeSpans #"):
            section = None
            span = None
            continue
        if s.startswith("Span #"):
            span = {"trace_id": "", "span_id": "", "parent_id": "", "name": "", "kind": "",
                    "status": "UNSET", "status_message": "", "attrs": {}, "resource": resource,
                    "events": []}
            spans.append(span)
            section = None
            continue
        if s == "Attributes:":
            section = "attrs" if span is not None else "resource"
            continue
        if s.startswith("Events:") or s.startswith("SpanEvent #"):
            section = "events"
            continue
        if s.startswith("-> "):
            k, _, v = s[3:].partition(": ")
            if section == "resource" and span is None:
                resource[k] = _rotel_value(v)
            elif section == "attrs" and span is not None:
                span["attrs"][k] = _rotel_value(v)
            continue
        if span is None or ":" not in s:
            continue
        key, _, val = s.partition(":")
        key, val = key.strip(), val.strip()
        if key == "Trace ID":
            span["trace_id"] = val
        elif key == "Parent ID":
            span["parent_id"] = val
        elif key == "ID":
            span["span_id"] = val
        elif key == "Name" and section != "events":
            span["name"] = val
        elif key == "Kind":
            span["kind"] = val.replace("SPAN_KIND_", "")
        elif key == "Status code":
            span["status"] = val.replace("STATUS_CODE_", "")
        elif key == "Status message":
            span["status_message"] = val
    return spans


class Rotel:
    """rotel-agent on 127.0.0.1:<port> (OTLP/HTTP); stop() and start() keep the port."""

    def __init__(self, port=None):
        self.binary = rotel_binary()
        self.port = port or free_port()
        self.grpc_port = free_port()
        self.proc = None
        self._chunks = []
        self._lock = threading.Lock()
        self._reader = None
        self.start()

    def start(self, timeout=15.0):
        self.proc = subprocess.Popen(
            [self.binary, "start", "--otlp-http-endpoint", "%s:%d" % (LOCAL, self.port),
             "--otlp-grpc-endpoint", "%s:%d" % (LOCAL, self.grpc_port),
             "--exporter", "blackhole", "--debug-log", "traces", "--debug-log-verbosity", "detailed"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        proc = self.proc
        self._reader = threading.Thread(target=self._read, args=(proc,), daemon=True)
        self._reader.start()
        if not wait_until(lambda: _port_open(self.port) or proc.poll() is not None, timeout) \
                or proc.poll() is not None:
            out = self.output()
            kill_proc(proc)
            raise AssertionError("rotel-agent did not listen on %d (rc=%r)\n%s" % (self.port, proc.poll(), out[-2000:]))

    def _read(self, proc):
        fd = proc.stdout.fileno()
        while True:
            try:
                b = os.read(fd, 65536)
            except OSError:
                break
            if not b:
                break
            with self._lock:
                self._chunks.append(b)

    def stop(self):
        if self.proc is not None:
            kill_proc(self.proc)
            if self._reader:
                self._reader.join(5)
            try:
                self.proc.stdout.close()
            except OSError:
                pass
            self.proc = None

    @property
    def endpoint(self):
        return "http://%s:%d" % (LOCAL, self.port)

    def output(self):
        with self._lock:
            return b"".join(self._chunks).decode(errors="replace")

    def spans(self):
        return parse_rotel_output(self.output())

    def wait_spans(self, pred, timeout=10.0):
        """Waits until pred(spans) is truthy; returns the spans either way."""
        deadline = time.monotonic() + timeout
        while True:
            spans = self.spans()
            if pred(spans) or time.monotonic() >= deadline:
                return spans
            time.sleep(0.05)


# ---------------------------------------------------------------------------------------------
# Scriptable OTLP/HTTP receiver
# ---------------------------------------------------------------------------------------------
def _attr_value(av):
    which = av.WhichOneof("value")
    if which is None:
        return None
    v = getattr(av, which)
    if which in ("array_value", "kvlist_value"):
        return str(v)
    return v


def decode_protobuf(body):
    from opentelemetry.proto.collector.trace.v1 import trace_service_pb2  # noqa: PLC0415
    req = trace_service_pb2.ExportTraceServiceRequest.FromString(body)
    out = []
    for rs in req.resource_spans:
        resource = {a.key: _attr_value(a.value) for a in rs.resource.attributes}
        for ss in rs.scope_spans:
            for sp in ss.spans:
                out.append({
                    "trace_id": sp.trace_id.hex(), "span_id": sp.span_id.hex(),
                    "parent_id": sp.parent_span_id.hex(), "name": sp.name,
                    "kind": _KINDS.get(sp.kind, str(sp.kind)),
                    "status": _STATUS.get(sp.status.code, str(sp.status.code)),
                    "status_message": sp.status.message,
                    "attrs": {a.key: _attr_value(a.value) for a in sp.attributes},
                    "resource": resource, "scope": ss.scope.name,
                    "start": sp.start_time_unix_nano, "end": sp.end_time_unix_nano,
                    "flags": sp.flags, "trace_state": sp.trace_state,
                })
    return out


def _json_attr(v):
    for k in ("stringValue", "boolValue", "doubleValue"):
        if k in v:
            return v[k]
    if "intValue" in v:
        return int(v["intValue"])
    return v


def decode_json(body):
    """OTLP/JSON: ids are hex, enums integers, int64 as strings or numbers."""
    req = json.loads(body)
    out = []
    for rs in req.get("resourceSpans", []):
        resource = {a["key"]: _json_attr(a.get("value", {}))
                    for a in rs.get("resource", {}).get("attributes", [])}
        for ss in rs.get("scopeSpans", []):
            for sp in ss.get("spans", []):
                st = sp.get("status", {})
                out.append({
                    "trace_id": sp.get("traceId", ""), "span_id": sp.get("spanId", ""),
                    "parent_id": sp.get("parentSpanId", ""), "name": sp.get("name", ""),
                    "kind": _KINDS.get(sp.get("kind", 0), str(sp.get("kind"))),
                    "status": _STATUS.get(st.get("code", 0), str(st.get("code"))),
                    "status_message": st.get("message", ""),
                    "attrs": {a["key"]: _json_attr(a.get("value", {})) for a in sp.get("attributes", [])},
                    "resource": resource, "scope": ss.get("scope", {}).get("name", ""),
                    "start": int(sp.get("startTimeUnixNano", 0)), "end": int(sp.get("endTimeUnixNano", 0)),
                })
    return out


class OTLPReceiver:
    """POST /v1/traces receiver. `script` is a list of (status, headers dict) used for the first
    requests in order; afterwards `fallback` (status, headers). Every request is recorded as
    (time, status answered, content-type, spans decoded or the decode error text)."""

    def __init__(self, script=(), fallback=(200, {})):
        self.script = list(script)
        self.fallback = fallback
        self.requests = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):  # quiet
                pass

            def do_POST(self):  # noqa: N802
                n = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(n) if n else b""
                ctype = self.headers.get("Content-Type", "")
                try:
                    spans = decode_json(body) if "json" in ctype else decode_protobuf(body)
                except Exception as e:  # noqa: BLE001
                    spans = "decode error: %r" % e
                with receiver.lock:
                    status, hdrs = receiver.script.pop(0) if receiver.script else receiver.fallback
                    receiver.requests.append({"time": time.monotonic(), "status": status, "path": self.path,
                                              "content_type": ctype, "spans": spans,
                                              "headers": dict(self.headers)})
                reply = b"" if status < 300 else b'{"code":3,"message":"scripted"}'
                self.send_response(status)
                for k, v in hdrs.items():
                    self.send_header(k, v)
                self.send_header("Content-Type", "application/json" if "json" in ctype or status >= 300
                                 else "application/x-protobuf")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

        self.server = ThreadingHTTPServer((LOCAL, 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05},
                                       daemon=True)
        self.thread.start()

    @property
    def endpoint(self):
        return "http://%s:%d" % (LOCAL, self.port)

    def get_requests(self):
        with self.lock:
            return list(self.requests)

    def spans(self, status=None):
        out = []
        for r in self.get_requests():
            if isinstance(r["spans"], list) and (status is None or r["status"] == status):
                out.extend(r["spans"])
        return out

    def stop(self):
        self.server.shutdown()
        self.server.server_close()
