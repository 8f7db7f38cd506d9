"""Tracing end to end: the proxy's tracing filter → OTLP exporter → a real collector (rotel),
plus a scriptable receiver for retry/reject behaviour (CONVENTIONS §3, SLIS.md).

Needs `pip install rotel opentelemetry-proto` (the Makefile installs both). The collector
outage test keeps the outage at ~10 s to bound suite time; the 30 s variant belongs to the
bench/soak runs.
"""

import json
import re
import threading
import time

import pytest

from helpers import LOCAL, RawConn, free_port, make_config, metric_value, wait_until
from otel_helpers import OTLPReceiver, Rotel

TRACEPARENT = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")
T1 = "4bf92f3577b34da6a3ce929d0e0e4736"
P1 = "00f067aa0ba902b7"


@pytest.fixture
def rotel():
    started = []

    def make():
        r = Rotel()
        started.append(r)
        return r

    yield make
    for r in started:
        r.stop()


@pytest.fixture
def receiver():
    started = []

    def make(script=(), fallback=(200, {})):
        r = OTLPReceiver(script, fallback)
        started.append(r)
        return r

    yield make
    for r in started:
        r.stop()


def tracing_proxy(proxy, up, endpoint, sampling=1.0, **exporter):
    ex = {"endpoint": endpoint, "schedule_delay": "200ms"}
    ex.update(exporter)
    filt = {"name": "tracing", "mode": "enforce", "sampling": sampling, "exporter": ex}
    return proxy(make_config(free_port(), free_port(), up.addr, filters=[filt]))


def echo(p, path="/echo", headers=None):
    h = {"User-Agent": "itest-tracing/1"}
    h.update(headers or {})
    r = p.get(path, headers=h)
    body = json.loads(r.body) if r.status == 200 and path.startswith("/echo") else None
    return r, body


def upstream_traceparent(body):
    tp = body["headers"].get("traceparent")
    assert tp, "upstream got no traceparent: %r" % body["headers"]
    m = TRACEPARENT.match(tp)
    assert m, "malformed traceparent at the upstream: %r" % tp
    return m.groups()


def by_trace(spans, trace_id):
    return [s for s in spans if s["trace_id"] == trace_id]


def pair(spans, trace_id):
    """(server, client) spans of one trace, asserting there is exactly one of each."""
    mine = by_trace(spans, trace_id)
    servers = [s for s in mine if s["kind"] == "SERVER"]
    clients = [s for s in mine if s["kind"] == "CLIENT"]
    assert len(servers) == 1 and len(clients) == 1, "trace %s: %r" % (trace_id, mine)
    return servers[0], clients[0]


def exporter_metrics(p):
    m = p.metrics()
    v = lambda name, **l: metric_value(m, name, **l) or 0.0  # noqa: E731
    return {
        "received": v("outrider_exporter_spans_received_total"),
        "exported": v("outrider_exporter_spans_exported_total"),
        "dropped": v("outrider_exporter_spans_dropped_total"),
        "queue_full": v("outrider_exporter_spans_dropped_total", reason="queue_full"),
        "rejected": v("outrider_exporter_spans_dropped_total", reason="rejected"),
        "retries_exhausted": v("outrider_exporter_spans_dropped_total", reason="retries_exhausted"),
        "depth": v("outrider_exporter_queue_depth"),
        "capacity": v("outrider_exporter_queue_capacity"),
        "retried": v("outrider_exporter_batches_retried_total"),
        "batches_ok": v("outrider_exporter_batches_total", result="ok"),
        "batches_rejected": v("outrider_exporter_batches_total", result="rejected"),
        "last_success": v("outrider_exporter_last_success_timestamp_seconds"),
        "latency_count": v("outrider_exporter_span_latency_seconds_count"),
    }


def wait_idle_and_balanced(p, timeout):
    """received == exported + dropped + queue_depth, with an empty queue."""
    def ok():
        m = exporter_metrics(p)
        return m if m["depth"] == 0 and m["received"] == m["exported"] + m["dropped"] else None
    m = wait_until(ok, timeout, interval=0.1)
    last = exporter_metrics(p)
    assert m, "exporter not idle/balanced within %ss: %r" % (timeout, last)
    return m


# ---------------------------------------------------------------------------------------------
def test_server_and_client_spans_reach_the_collector(rotel, upstream, proxy):
    col = rotel()
    up = upstream("A")
    p = tracing_proxy(proxy, up, col.endpoint)
    r_ok, body = echo(p)
    assert r_ok.status == 200
    trace_ok, client_id, flags = upstream_traceparent(body)
    assert flags == "01"
    r_err, _ = echo(p, "/status/503")
    assert r_err.status == 503

    spans = col.wait_spans(lambda s: len(s) >= 4, 10)
    server, client = pair(spans, trace_ok)
    # The upstream's parent is the CLIENT span, whose parent is the SERVER span (a root).
    assert client["span_id"] == client_id
    assert client["parent_id"] == server["span_id"]
    assert server["parent_id"] == ""
    assert server["name"] == "GET"
    a = server["attrs"]
    assert a["http.request.method"] == "GET"
    assert a["url.path"] == "/echo"
    assert a["url.scheme"] == "http"
    assert a["http.response.status_code"] == 200
    # From the Host header the test client sends (helpers.http_request: "outrider.test").
    assert a["server.address"] == "outrider.test"
    assert a["server.port"] in (80, p.port)
    assert a["client.address"] == LOCAL
    assert a["network.protocol.version"] == "1.1"
    assert a["user_agent.original"] == "itest-tracing/1"
    assert "error.type" not in a
    assert server["status"] == "UNSET"
    c = client["attrs"]
    assert c["http.request.method"] == "GET"
    assert c["url.full"] == "http://%s/echo" % up.addr
    assert c["server.address"] == LOCAL
    assert c["server.port"] == up.port
    assert c["http.response.status_code"] == 200
    assert server["resource"].get("service.name") == "outrider", server["resource"]

    # 503 from the upstream: server span status Error with error.type.
    other = [s for s in spans if s["trace_id"] != trace_ok]
    err_server = [s for s in other if s["kind"] == "SERVER"]
    assert len(err_server) == 1, other
    err_server = err_server[0]
    assert err_server["attrs"]["http.response.status_code"] == 503
    assert err_server["attrs"]["url.path"] == "/status/503"
    assert err_server["attrs"].get("error.type") == "503"
    assert err_server["status"] == "ERROR"
    err_client = pair(spans, err_server["trace_id"])[1]
    assert err_client["attrs"]["http.response.status_code"] == 503
    assert err_client["status"] == "ERROR"

    # Access log lines carry the server span's ids.
    entries = p.wait_access_log(lambda es: len(es) >= 2)
    ids = {(e.get("trace_id"), e.get("span_id")) for e in entries}
    assert (trace_ok, server["span_id"]) in ids, entries
    assert (err_server["trace_id"], err_server["span_id"]) in ids, entries

    m = wait_idle_and_balanced(p, 10)
    assert m["exported"] >= 4 and m["dropped"] == 0
    assert m["capacity"] > 0
    assert m["last_success"] > time.time() - 60
    assert m["latency_count"] >= 4


def test_traceparent_is_continued(rotel, upstream, proxy):
    col = rotel()
    up = upstream("A")
    p = tracing_proxy(proxy, up, col.endpoint)
    _, body = echo(p, headers={"traceparent": "00-%s-%s-01" % (T1, P1), "tracestate": "congo=t61rcWkgMzE"})
    trace, client_id, flags = upstream_traceparent(body)
    assert trace == T1 and flags == "01"
    assert client_id != P1
    assert body["headers"].get("tracestate") == "congo=t61rcWkgMzE"
    spans = col.wait_spans(lambda s: len(by_trace(s, T1)) >= 2, 10)
    server, client = pair(spans, T1)
    assert server["parent_id"] == P1
    assert client["span_id"] == client_id
    assert client["parent_id"] == server["span_id"]


@pytest.mark.parametrize("bad", [
    "00-00000000000000000000000000000000-%s-01" % P1,    # all-zero trace id
    "00-%s-0000000000000000-01" % T1,                     # all-zero span id
    "00-%s-%s-01" % (T1.upper(), P1),                     # uppercase hex
    "garbage",
])
def test_invalid_traceparent_starts_a_new_trace(rotel, upstream, proxy, bad):
    col = rotel()
    up = upstream("A")
    p = tracing_proxy(proxy, up, col.endpoint)
    _, body = echo(p, headers={"traceparent": bad, "tracestate": "congo=t61rcWkgMzE"})
    trace, client_id, _ = upstream_traceparent(body)
    assert trace not in (T1, "0" * 32)
    assert "tracestate" not in body["headers"], "tracestate must be dropped with an invalid parent"
    spans = col.wait_spans(lambda s: len(by_trace(s, trace)) >= 2, 10)
    server, client = pair(spans, trace)
    assert server["parent_id"] == ""
    assert client["span_id"] == client_id


def test_b3_single_and_multi_are_continued(rotel, upstream, proxy):
    col = rotel()
    up = upstream("A")
    p = tracing_proxy(proxy, up, col.endpoint)
    _, body = echo(p, headers={"b3": "%s-%s-1" % (T1, P1)})
    trace, client_id, flags = upstream_traceparent(body)
    assert trace == T1 and flags == "01"
    b3 = body["headers"].get("b3", "")
    assert b3.startswith("%s-%s-1" % (T1, client_id)), b3

    t2 = "a" * 16  # 64-bit B3 trace id, left-padded to 128 bits
    _, body2 = echo(p, headers={"X-B3-TraceId": t2, "X-B3-SpanId": P1, "X-B3-Sampled": "1"})
    trace2, client2, _ = upstream_traceparent(body2)
    assert trace2 == "0" * 16 + t2
    assert body2["headers"].get("x-b3-traceid") in (t2, trace2)
    assert body2["headers"].get("x-b3-spanid") == client2

    spans = col.wait_spans(lambda s: len(by_trace(s, T1)) >= 2 and len(by_trace(s, trace2)) >= 2, 10)
    s1, c1 = pair(spans, T1)
    assert s1["parent_id"] == P1 and c1["span_id"] == client_id
    s2, c2 = pair(spans, trace2)
    assert s2["parent_id"] == P1 and c2["span_id"] == client2


def test_sampling_zero_follows_a_sampled_parent_only(rotel, upstream, proxy):
    col = rotel()
    up = upstream("A")
    p = tracing_proxy(proxy, up, col.endpoint, sampling=0.0)
    unsampled = []
    for _ in range(5):
        _, body = echo(p)
        trace, _, flags = upstream_traceparent(body)
        assert flags == "00", "a new trace at sampling 0.0 must not be sampled"
        unsampled.append(trace)
    _, body = echo(p, headers={"traceparent": "00-%s-%s-01" % (T1, P1)})
    assert upstream_traceparent(body)[2] == "01"
    _, body = echo(p, headers={"traceparent": "00-%s-%s-00" % ("b" * 32, P1)})
    assert upstream_traceparent(body)[2] == "00"
    spans = col.wait_spans(lambda s: len(by_trace(s, T1)) >= 2, 10)
    pair(spans, T1)
    time.sleep(0.6)  # three schedule delays: anything else queued would have arrived
    spans = col.spans()
    assert {s["trace_id"] for s in spans} == {T1}, spans


def test_collector_outage_does_not_hurt_requests(rotel, upstream, proxy):
    """Collector down ~10 s under load: request latency unaffected, memory bounded, spans
    delivered after the restart, and every span accounted for."""
    col = rotel()
    up = upstream("A")
    p = tracing_proxy(proxy, up, col.endpoint, max_queue_size=2048, max_export_batch_size=512)
    conn = RawConn(p.port, timeout=5)

    def run(seconds):
        lat = []
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            t = time.perf_counter()
            r = conn.request("GET", "/name", timeout=5)
            lat.append(time.perf_counter() - t)
            assert r.status == 200
        return lat

    run(1.0)
    assert wait_until(lambda: exporter_metrics(p)["exported"] > 0, 10)
    rss_before = p.rss_kb()
    col.stop()
    rss_samples = []
    sampler_stop = threading.Event()

    def sample_rss():
        while not sampler_stop.wait(0.25):
            rss_samples.append(p.rss_kb() or 0)
    th = threading.Thread(target=sample_rss, daemon=True)
    th.start()
    lat = run(10.0)
    sampler_stop.set()
    th.join(2)
    lat.sort()
    p99 = lat[int(len(lat) * 0.99) - 1]
    assert p99 < 0.050, "p99 during the outage %.1f ms (n=%d)" % (p99 * 1000, len(lat))
    m = exporter_metrics(p)
    assert m["retried"] > 0, m
    assert m["depth"] <= m["capacity"] + 512, m
    # Queue bound (2048 spans + a batch) keeps RSS growth small whatever the outage length.
    assert max(rss_samples) - rss_before < 64 * 1024, (rss_before, max(rss_samples))

    col.start()
    # Spans queued during the outage are delivered once the collector is back (the batch in
    # backoff waits at most one backoff step, ≤ 30 s)…
    exported_before = m["exported"]
    assert wait_until(lambda: exporter_metrics(p)["exported"] > exported_before
                      and exporter_metrics(p)["depth"] == 0, 45, interval=0.2), exporter_metrics(p)
    # …and new spans flow again (sent now: the full queue dropped spans during the outage).
    marker = []
    for _ in range(5):
        _, body = echo(p)
        marker.append(upstream_traceparent(body)[0])
    conn.close()
    spans = col.wait_spans(lambda s: all(len(by_trace(s, t)) >= 2 for t in marker), 10)
    for t in marker:
        pair(spans, t)
    m = wait_idle_and_balanced(p, 10)
    assert m["queue_full"] > 0, "a 10 s outage at this load should overflow the queue: %r" % m


def test_retry_after_503_then_delivered(receiver, upstream, proxy):
    rcv = receiver(script=[(503, {"Retry-After": "1"})])
    up = upstream("A")
    p = tracing_proxy(proxy, up, rcv.endpoint)
    _, body = echo(p)
    trace = upstream_traceparent(body)[0]
    assert wait_until(lambda: len(by_trace(rcv.spans(200), trace)) >= 2, 15), rcv.get_requests()
    reqs = rcv.get_requests()
    assert reqs[0]["status"] == 503 and reqs[1]["status"] == 200
    assert reqs[1]["time"] - reqs[0]["time"] >= 0.9, "Retry-After: 1 not honoured"
    assert reqs[0]["path"] == "/v1/traces"
    assert reqs[0]["content_type"] == "application/x-protobuf"
    m = wait_idle_and_balanced(p, 10)
    assert m["retried"] >= 1 and m["dropped"] == 0
    pair(rcv.spans(200), trace)


def test_400_is_not_retried(receiver, upstream, proxy):
    rcv = receiver(fallback=(400, {}))
    up = upstream("A")
    p = tracing_proxy(proxy, up, rcv.endpoint)
    for _ in range(3):
        echo(p)
    m = wait_idle_and_balanced(p, 10)
    time.sleep(1.0)  # a wrong retry would show up here
    m = exporter_metrics(p)
    assert m["rejected"] >= 6, m
    assert m["retried"] == 0, m
    assert m["exported"] == 0, m
    assert len(rcv.get_requests()) == m["batches_rejected"], (rcv.get_requests(), m)


def test_json_protocol_and_headers(receiver, upstream, proxy):
    rcv = receiver()
    up = upstream("A")
    p = tracing_proxy(proxy, up, rcv.endpoint, protocol="http/json", headers={"x-tenant": "t1"})
    _, body = echo(p, headers={"traceparent": "00-%s-%s-01" % (T1, P1)})
    client_id = upstream_traceparent(body)[1]
    assert wait_until(lambda: len(by_trace(rcv.spans(), T1)) >= 2, 10), rcv.get_requests()
    req = rcv.get_requests()[0]
    assert req["content_type"] == "application/json"
    assert {k.lower(): v for k, v in req["headers"].items()}.get("x-tenant") == "t1"
    server, client = pair(rcv.spans(), T1)   # hex ids decode to the same values
    assert server["parent_id"] == P1 and client["span_id"] == client_id
