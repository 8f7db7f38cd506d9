#if canImport(Glibc)
import Glibc
#endif
import Synchronization
import Testing
import OutriderCore
@testable import Telemetry

// MARK: - Fake collector

/// A blocking HTTP/1.1 server on 127.0.0.1 running on its own OS thread. It answers each
/// request with the next scripted reply (then `fallback`), keeps connections alive unless the
/// reply says `close`, and records what it received.
final class FakeCollector: @unchecked Sendable {
    struct Reply: Sendable {
        var status: Int
        var headers: [(String, String)] = []
        var body: [UInt8] = []
        var chunked = false
        var close = false
    }
    struct Request: Sendable {
        var method: String
        var path: String
        var headers: [(String, String)]
        var body: [UInt8]
        func header(_ n: String) -> String? { headers.first { $0.0.lowercased() == n.lowercased() }?.1 }
    }

    let port: UInt16
    private let listenFD: Int32
    private let state: Mutex<(script: [Reply], requests: [Request], stop: Bool)>
    private let fallback: Reply
    private var tid = pthread_t()

    /// `port` 0 picks a free one.
    init?(script: [Reply], fallback: Reply = Reply(status: 200), port: UInt16 = 0) {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { return nil }
        var one: Int32 = 1
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_port = port.bigEndian
        addr.sin_addr.s_addr = UInt32(0x7F00_0001).bigEndian
        let ok = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0
            }
        }
        guard ok, listen(fd, 16) == 0 else { close(fd); return nil }
        var bound = sockaddr_in()
        var len = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &bound) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &len) }
        }
        self.port = UInt16(bigEndian: bound.sin_port)
        self.listenFD = fd
        self.fallback = fallback
        self.state = Mutex((script, [], false))
        let me = Unmanaged.passRetained(self).toOpaque()
        pthread_create(&tid, nil, { raw in
            guard let raw else { return nil }
            let c = Unmanaged<FakeCollector>.fromOpaque(raw).takeRetainedValue()
            c.serve()
            return nil
        }, me)
    }

    var requests: [Request] { state.withLock { $0.requests } }
    var endpoint: String { "http://127.0.0.1:\(port)/v1/traces" }

    func stop() {
        state.withLock { $0.stop = true }
        pthread_join(tid, nil)
        close(listenFD)
    }

    private var stopping: Bool { state.withLock { $0.stop } }

    private func serve() {
        while !stopping {
            var p = pollfd(fd: listenFD, events: Int16(POLLIN), revents: 0)
            if poll(&p, 1, 20) <= 0 { continue }
            let c = accept(listenFD, nil, nil)
            if c < 0 { continue }
            handle(c)
            close(c)
        }
    }

    private func handle(_ c: Int32) {
        var buf: [UInt8] = []
        while !stopping {
            // Head.
            var headEnd: Int?
            while headEnd == nil {
                headEnd = OTLPHTTPClient.findHeadEnd(buf)
                if headEnd != nil { break }
                guard read(c, &buf) else { return }
            }
            guard let end = headEnd else { return }
            let head = String(decoding: buf[0..<end], as: UTF8.self)
            buf.removeFirst(end + 4)
            var lines = head.split(separator: "\r\n").map(String.init)
            let reqLine = lines.removeFirst().split(separator: " ").map(String.init)
            var headers: [(String, String)] = []
            for l in lines {
                guard let colon = l.firstIndex(of: ":") else { continue }
                headers.append((String(l[..<colon]), String(l[l.index(after: colon)...]).trimmingWhitespace()))
            }
            let cl = Int(headers.first { $0.0.lowercased() == "content-length" }?.1 ?? "0") ?? 0
            while buf.count < cl { guard read(c, &buf) else { return } }
            let body = Array(buf[0..<cl])
            buf.removeFirst(cl)
            let reply: Reply = state.withLock { st in
                st.requests.append(Request(method: reqLine.first ?? "", path: reqLine.count > 1 ? reqLine[1] : "",
                                           headers: headers, body: body))
                return st.script.isEmpty ? fallback : st.script.removeFirst()
            }
            var out = "HTTP/1.1 \(reply.status) X\r\n"
            for (k, v) in reply.headers { out += "\(k): \(v)\r\n" }
            if reply.close { out += "Connection: close\r\n" }
            var bytes: [UInt8]
            if reply.chunked {
                out += "Transfer-Encoding: chunked\r\n\r\n"
                bytes = Array(out.utf8)
                // Two chunks, then the terminator.
                let half = reply.body.count / 2
                for part in [reply.body[0..<half], reply.body[half...]] where !part.isEmpty {
                    bytes += Array(String(part.count, radix: 16).utf8) + [13, 10] + part + [13, 10]
                }
                bytes += Array("0\r\n\r\n".utf8)
            } else {
                out += "Content-Length: \(reply.body.count)\r\n\r\n"
                bytes = Array(out.utf8) + reply.body
            }
            _ = bytes.withUnsafeBytes { send(c, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            if reply.close { return }
        }
    }

    /// Reads more bytes (poll with 20 ms slices so `stop` is noticed). false on EOF/error/stop.
    private func read(_ c: Int32, _ buf: inout [UInt8]) -> Bool {
        while !stopping {
            var p = pollfd(fd: c, events: Int16(POLLIN), revents: 0)
            if poll(&p, 1, 20) <= 0 { continue }
            var chunk = [UInt8](repeating: 0, count: 65536)
            let n = recv(c, &chunk, chunk.count, 0)
            if n <= 0 { return false }
            buf += chunk[0..<n]
            return true
        }
        return false
    }
}

/// A port nothing listens on (bound, then closed).
func unusedPort() -> UInt16 {
    guard let c = FakeCollector(script: []) else { return 1 }
    let p = c.port
    c.stop()
    return p
}

// MARK: - Helpers

func testSpan(_ i: Int, endNanos: UInt64 = wallClockNanos()) -> FinishedSpan {
    FinishedSpan(traceID: TraceID(high: 1, low: UInt64(i) + 1), spanID: SpanID(UInt64(i) + 1),
                 name: "GET", kind: .server, startUnixNano: endNanos &- 1_000_000, endUnixNano: endNanos,
                 attributes: [SpanAttribute("http.request.method", .string("GET"))])
}

func testConfig(_ endpoint: String, queue: Int = 2048, batch: Int = 512, delayMs: UInt64 = 20,
                timeoutMs: UInt64 = 2000, maxRetryMs: UInt64 = 10_000) -> OTLPExporterConfig {
    OTLPExporterConfig(endpoint: endpoint, timeoutNanos: timeoutMs * 1_000_000,
                       maxQueueSize: queue, maxExportBatchSize: batch,
                       scheduleDelayNanos: delayMs * 1_000_000,
                       maxRetryElapsedNanos: maxRetryMs * 1_000_000,
                       resource: TelemetryResource(attributes: [SpanAttribute("service.name", .string("test"))]),
                       scope: InstrumentationScopeInfo(name: "outrider", version: "test"))
}

let fastRetry = ExportRetryPolicy(baseNanos: 20_000_000, capNanos: 100_000_000, jitter: 0.2)

/// Polls `cond` every 10 ms for at most `seconds`.
func eventually(_ seconds: Double = 5, _ cond: () -> Bool) -> Bool {
    let deadline = monotonicNanos() + UInt64(seconds * 1e9)
    while monotonicNanos() < deadline {
        if cond() { return true }
        usleep(10_000)
    }
    return cond()
}

/// Reads the exporter's counters back from the registry's text output, as an operator would.
struct ExporterCounts {
    var text: String
    init(_ r: MetricsRegistry) { text = r.render() }
    func value(_ series: String) -> Double {
        for line in text.split(separator: "\n") where line.hasPrefix(series + " ") {
            return Double(line.dropFirst(series.count + 1)) ?? -1
        }
        return -1
    }
    var received: Double { value("outrider_exporter_spans_received_total") }
    var exported: Double { value("outrider_exporter_spans_exported_total") }
    func dropped(_ reason: String) -> Double { value("outrider_exporter_spans_dropped_total{reason=\"\(reason)\"}") }
    var droppedAll: Double { ["queue_full", "rejected", "retries_exhausted", "shutdown"].map(dropped).reduce(0, +) }
    var depth: Double { value("outrider_exporter_queue_depth") }
    func batches(_ result: String) -> Double { value("outrider_exporter_batches_total{result=\"\(result)\"}") }
    var retried: Double { value("outrider_exporter_batches_retried_total") }
    /// received = exported + dropped + queued (+ in flight).
    var invariantHolds: Bool { received == exported + droppedAll + depth }
}

// MARK: - Exporter behaviour against the fake collector

@Suite(.serialized) struct ExporterTests {
    @Test func exportsOnSuccess() throws {
        let c = try #require(FakeCollector(script: []))
        defer { c.stop() }
        let reg = MetricsRegistry()
        var cfg = testConfig(c.endpoint, batch: 4)
        cfg.headers = [("x-api-key", "secret")]
        let e = BatchSpanExporter(config: cfg, metrics: reg, retry: fastRetry)
        e.start()
        let spans = (0..<10).map { testSpan($0) }
        for s in spans { #expect(e.trySend(s)) }
        #expect(eventually { ExporterCounts(reg).exported == 10 })
        e.shutdown(flushWithin: 1_000_000_000)
        let m = ExporterCounts(reg)
        #expect(m.received == 10)
        #expect(m.exported == 10)
        #expect(m.droppedAll == 0)
        #expect(m.depth == 0)
        #expect(m.invariantHolds)
        #expect(m.batches("ok") >= 3)   // 4 + 4 + 2
        #expect(m.value("outrider_exporter_queue_capacity") == 2048)
        #expect(m.value("outrider_exporter_last_success_timestamp_seconds") > 1_600_000_000)
        #expect(m.value("outrider_exporter_span_latency_seconds_count") == 10)
        #expect(m.value("outrider_exporter_export_duration_seconds_count") >= 3)
        let reqs = c.requests
        let first = try #require(reqs.first)
        #expect(first.method == "POST")
        #expect(first.path == "/v1/traces")
        #expect(first.header("content-type") == "application/x-protobuf")
        #expect(first.header("x-api-key") == "secret")
        #expect(first.header("host") == "127.0.0.1:\(c.port)")
        // The body is exactly what the encoder makes of the batch.
        #expect(first.body == OTLPTraceEncoding.protobuf(resource: cfg.resource, scope: cfg.scope,
                                                         spans: Array(spans[0..<4])))
    }

    @Test func jsonEncodingSendsJSON() throws {
        let c = try #require(FakeCollector(script: [.init(status: 200, headers: [("Content-Type", "application/json")], body: Array("{}".utf8))]))
        defer { c.stop() }
        let reg = MetricsRegistry()
        var cfg = testConfig(c.endpoint)
        cfg.encoding = .json
        let e = BatchSpanExporter(config: cfg, metrics: reg, retry: fastRetry)
        e.start()
        let span = testSpan(1)
        #expect(e.trySend(span))
        #expect(eventually { ExporterCounts(reg).exported == 1 })
        e.shutdown(flushWithin: 1_000_000_000)
        let req = try #require(c.requests.first)
        #expect(req.header("content-type") == "application/json")
        #expect(req.body == OTLPTraceEncoding.json(resource: cfg.resource, scope: cfg.scope, spans: [span]))
    }

    @Test func retriesAfter503WithRetryAfter() throws {
        let c = try #require(FakeCollector(script: [.init(status: 503, headers: [("Retry-After", "1")])]))
        defer { c.stop() }
        let reg = MetricsRegistry()
        let e = BatchSpanExporter(config: testConfig(c.endpoint), metrics: reg, retry: fastRetry)
        e.start()
        for i in 0..<3 { #expect(e.trySend(testSpan(i))) }
        let t0 = monotonicNanos()
        #expect(eventually { ExporterCounts(reg).exported == 3 })
        let waited = monotonicNanos() - t0
        e.shutdown(flushWithin: 1_000_000_000)
        let m = ExporterCounts(reg)
        #expect(c.requests.count == 2)
        #expect(m.retried == 1)
        #expect(m.batches("ok") == 1)
        #expect(m.droppedAll == 0)
        #expect(m.invariantHolds)
        // Retry-After: 1 was honoured rather than the 20 ms backoff.
        #expect(waited >= 900_000_000)
    }

    @Test(arguments: [400, 413, 401, 500])
    func nonRetryableStatusIsRejected(status: Int) throws {
        let c = try #require(FakeCollector(script: [.init(status: status, body: Array("nope".utf8))]))
        defer { c.stop() }
        let reg = MetricsRegistry()
        let e = BatchSpanExporter(config: testConfig(c.endpoint), metrics: reg, retry: fastRetry)
        e.start()
        for i in 0..<5 { #expect(e.trySend(testSpan(i))) }
        #expect(eventually { ExporterCounts(reg).dropped("rejected") == 5 })
        usleep(100_000)  // a (wrong) retry would have happened by now
        e.shutdown(flushWithin: 1_000_000_000)
        let m = ExporterCounts(reg)
        #expect(c.requests.count == 1)
        #expect(m.retried == 0)
        #expect(m.exported == 0)
        #expect(m.batches("rejected") == 1)
        #expect(m.invariantHolds)
    }

    @Test func partialSuccessCountsRejectedSpans() throws {
        // ExportTraceServiceResponse{partial_success{rejected_spans: 2, error_message: "bad"}}
        let body: [UInt8] = [0x0A, 0x07, 0x08, 0x02, 0x12, 0x03] + Array("bad".utf8)
        let c = try #require(FakeCollector(script: [.init(status: 200, headers: [("Content-Type", "application/x-protobuf")],
                                                          body: body, chunked: true)]))
        defer { c.stop() }
        let reg = MetricsRegistry()
        let e = BatchSpanExporter(config: testConfig(c.endpoint), metrics: reg, retry: fastRetry)
        e.start()
        for i in 0..<5 { #expect(e.trySend(testSpan(i))) }
        #expect(eventually { ExporterCounts(reg).exported == 3 })
        e.shutdown(flushWithin: 1_000_000_000)
        let m = ExporterCounts(reg)
        #expect(m.dropped("rejected") == 2)
        #expect(m.retried == 0)
        #expect(c.requests.count == 1)
        #expect(m.invariantHolds)
    }

    @Test func connectionRefusedThenCollectorAppears() throws {
        let port = unusedPort()
        let reg = MetricsRegistry()
        let e = BatchSpanExporter(config: testConfig("http://127.0.0.1:\(port)/v1/traces"), metrics: reg, retry: fastRetry)
        e.start()
        for i in 0..<4 { #expect(e.trySend(testSpan(i))) }
        #expect(eventually { ExporterCounts(reg).retried >= 2 })
        #expect(ExporterCounts(reg).depth == 4)  // the in-flight batch still counts
        let c = try #require(FakeCollector(script: [], port: port))
        defer { c.stop() }
        #expect(eventually { ExporterCounts(reg).exported == 4 })
        e.shutdown(flushWithin: 1_000_000_000)
        let m = ExporterCounts(reg)
        #expect(m.droppedAll == 0)
        #expect(m.depth == 0)
        #expect(m.invariantHolds)
    }

    @Test func keepAliveAndReconnectAfterClose() throws {
        // The second reply closes the connection; the third request must use a new one.
        let c = try #require(FakeCollector(script: [.init(status: 200), .init(status: 200, close: true), .init(status: 200)]))
        defer { c.stop() }
        let reg = MetricsRegistry()
        let e = BatchSpanExporter(config: testConfig(c.endpoint, batch: 1), metrics: reg, retry: fastRetry)
        e.start()
        for i in 0..<3 {
            #expect(e.trySend(testSpan(i)))
            #expect(eventually { ExporterCounts(reg).exported == Double(i + 1) })
        }
        e.shutdown(flushWithin: 1_000_000_000)
        let m = ExporterCounts(reg)
        #expect(m.retried == 0)
        #expect(m.batches("ok") == 3)
        #expect(c.requests.count == 3)
    }

    @Test func retriesExhaustedDropsTheBatch() throws {
        let c = try #require(FakeCollector(script: [], fallback: .init(status: 503)))
        defer { c.stop() }
        let reg = MetricsRegistry()
        let e = BatchSpanExporter(config: testConfig(c.endpoint, maxRetryMs: 300), metrics: reg, retry: fastRetry)
        e.start()
        for i in 0..<3 { #expect(e.trySend(testSpan(i))) }
        #expect(eventually { ExporterCounts(reg).dropped("retries_exhausted") == 3 })
        e.shutdown(flushWithin: 500_000_000)
        let m = ExporterCounts(reg)
        #expect(m.retried >= 2)
        #expect(m.batches("failed") == 1)
        #expect(m.exported == 0)
        #expect(m.invariantHolds)
    }

    @Test func queueOverflowDropsExactly() throws {
        let reg = MetricsRegistry()
        let c = try #require(FakeCollector(script: []))
        defer { c.stop() }
        let e = BatchSpanExporter(config: testConfig(c.endpoint, queue: 10, batch: 5), metrics: reg, retry: fastRetry)
        // Not started yet: nothing drains the queue.
        var accepted = 0
        for i in 0..<25 where e.trySend(testSpan(i)) { accepted += 1 }
        #expect(accepted == 10)
        var m = ExporterCounts(reg)
        #expect(m.received == 25)
        #expect(m.dropped("queue_full") == 15)
        #expect(m.depth == 10)
        #expect(e.queueDepth == 10)
        #expect(m.invariantHolds)
        e.start()
        #expect(eventually { ExporterCounts(reg).exported == 10 })
        e.shutdown(flushWithin: 1_000_000_000)
        m = ExporterCounts(reg)
        #expect(m.depth == 0)
        #expect(m.invariantHolds)
    }

    @Test func queueStaysBoundedDuringOutage() throws {
        let port = unusedPort()
        let reg = MetricsRegistry()
        let e = BatchSpanExporter(config: testConfig("http://127.0.0.1:\(port)/v1/traces", queue: 20, batch: 5),
                                  metrics: reg, retry: fastRetry)
        e.start()
        var accepted = 0
        for i in 0..<200 {
            if e.trySend(testSpan(i)) { accepted += 1 }
            if i % 20 == 0 { usleep(5_000) }
        }
        var m = ExporterCounts(reg)
        // Queue (20) + the batch being retried (5) at most.
        #expect(e.queueDepth <= 25)
        #expect(m.dropped("queue_full") == Double(200 - accepted))
        #expect(m.invariantHolds)
        e.shutdown(flushWithin: 200_000_000)
        m = ExporterCounts(reg)
        #expect(m.depth == 0)
        #expect(m.dropped("shutdown") == Double(accepted))
        #expect(m.invariantHolds)
    }

    @Test func shutdownFlushesQueuedSpans() throws {
        let c = try #require(FakeCollector(script: []))
        defer { c.stop() }
        let reg = MetricsRegistry()
        // A long schedule delay: only shutdown makes these go out.
        let e = BatchSpanExporter(config: testConfig(c.endpoint, delayMs: 60_000), metrics: reg, retry: fastRetry)
        e.start()
        for i in 0..<7 { #expect(e.trySend(testSpan(i))) }
        usleep(50_000)
        #expect(ExporterCounts(reg).exported == 0)
        let t0 = monotonicNanos()
        e.shutdown(flushWithin: 2_000_000_000)
        #expect(monotonicNanos() - t0 < 2_000_000_000)
        let m = ExporterCounts(reg)
        #expect(m.exported == 7)
        #expect(m.droppedAll == 0)
        #expect(m.invariantHolds)
        // After shutdown nothing is accepted, and the refusal is counted.
        #expect(!e.trySend(testSpan(99)))
        let after = ExporterCounts(reg)
        #expect(after.dropped("shutdown") == 1)
        #expect(after.invariantHolds)
    }

    @Test func shutdownDuringOutageIsBounded() throws {
        let port = unusedPort()
        let reg = MetricsRegistry()
        let e = BatchSpanExporter(config: testConfig("http://127.0.0.1:\(port)/v1/traces", batch: 4),
                                  metrics: reg, retry: ExportRetryPolicy(baseNanos: 5_000_000_000, capNanos: 5_000_000_000))
        e.start()
        for i in 0..<10 { #expect(e.trySend(testSpan(i))) }
        #expect(eventually { ExporterCounts(reg).retried >= 1 })
        let t0 = monotonicNanos()
        e.shutdown(flushWithin: 300_000_000)
        #expect(monotonicNanos() - t0 < 1_500_000_000)
        let m = ExporterCounts(reg)
        #expect(m.dropped("shutdown") == 10)
        #expect(m.depth == 0)
        #expect(m.invariantHolds)
    }

    @Test func shutdownWithoutStartDropsQueued() {
        let reg = MetricsRegistry()
        let e = BatchSpanExporter(config: testConfig("http://127.0.0.1:9/v1/traces"), metrics: reg)
        for i in 0..<3 { _ = e.trySend(testSpan(i)) }
        e.shutdown(flushWithin: 0)
        let m = ExporterCounts(reg)
        #expect(m.dropped("shutdown") == 3)
        #expect(m.invariantHolds)
    }

    @Test func registeringTwiceDoesNotDuplicateFamilies() {
        let reg = MetricsRegistry()
        let a = BatchSpanExporter(config: testConfig("http://127.0.0.1:9/v1/traces", queue: 100, batch: 10), metrics: reg)
        let b = BatchSpanExporter(config: testConfig("http://127.0.0.1:9/v1/traces", queue: 300, batch: 10), metrics: reg)
        _ = a.trySend(testSpan(1))
        _ = b.trySend(testSpan(2))
        let text = reg.render()
        #expect(reg.conflicts.isEmpty)
        for name in ["outrider_exporter_spans_received_total", "outrider_exporter_queue_depth",
                     "outrider_exporter_queue_capacity", "outrider_exporter_spans_dropped_total",
                     "outrider_exporter_export_duration_seconds", "outrider_exporter_span_latency_seconds",
                     "outrider_exporter_last_success_timestamp_seconds", "outrider_exporter_batches_total",
                     "outrider_exporter_batches_retried_total", "outrider_exporter_spans_exported_total"] {
            let headers = text.split(separator: "\n").filter { $0.hasPrefix("# TYPE \(name) ") }
            #expect(headers.count == 1, "\(name)")
        }
        // The newest exporter owns the gauges.
        #expect(ExporterCounts(reg).value("outrider_exporter_queue_capacity") == 300)
        #expect(ExporterCounts(reg).received == 2)
        a.shutdown(flushWithin: 0)
        b.shutdown(flushWithin: 0)
    }

    @Test func timeoutIsRetried() throws {
        // A collector that accepts but never answers the first request in time.
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_addr.s_addr = UInt32(0x7F00_0001).bigEndian
        _ = withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
        listen(fd, 4)
        var bound = sockaddr_in()
        var len = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &bound) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &len) } }
        defer { close(fd) }
        let reg = MetricsRegistry()
        let e = BatchSpanExporter(config: testConfig("http://127.0.0.1:\(UInt16(bigEndian: bound.sin_port))/v1/traces",
                                                     timeoutMs: 100, maxRetryMs: 400),
                                  metrics: reg, retry: fastRetry)
        e.start()
        #expect(e.trySend(testSpan(1)))
        #expect(eventually { ExporterCounts(reg).dropped("retries_exhausted") == 1 })
        e.shutdown(flushWithin: 100_000_000)
        let m = ExporterCounts(reg)
        #expect(m.retried >= 1)
        #expect(m.value("outrider_exporter_export_duration_seconds_count") >= 2)
        #expect(m.invariantHolds)
    }
}
