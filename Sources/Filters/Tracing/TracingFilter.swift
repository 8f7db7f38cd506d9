import Config
import OutriderCore
import Telemetry

/// The tracing filter's per-config-version state: sampler, exporter and counters.
final class TracingFactory: FilterFactory {
    let name = "tracing"
    let mode: FilterMode
    let settings: TracingSettings
    let sink: (any SpanSink)?
    let metrics: TracingMetrics

    init(mode: FilterMode, settings: TracingSettings, sink: (any SpanSink)?, metrics: TracingMetrics) {
        self.mode = mode; self.settings = settings; self.sink = sink; self.metrics = metrics
    }

    func makeFilter(context: StreamContext) -> (any HTTPFilter)? {
        settings.disabled ? nil : TracingFilter(factory: self)
    }
}

/// Counters of the tracing filter (prefix `outrider_tracing_`).
final class TracingMetrics: Sendable {
    let sampled: Counter
    let notSampled: Counter
    let continued: Counter
    let invalidParent: Counter
    let handedOver: Counter
    let handOverDropped: Counter
    init(_ r: MetricsRegistry) {
        let spans = r.counter("outrider_tracing_requests_total", help: "Requests seen by the tracing filter, by sampling decision.", labelNames: ["decision"])
        sampled = spans.labels("sampled")
        notSampled = spans.labels("not_sampled")
        let parent = r.counter("outrider_tracing_parent_context_total", help: "Incoming trace context: continued (valid W3C or B3) or invalid (a new trace was started).", labelNames: ["result"])
        continued = parent.labels("continued")
        invalidParent = parent.labels("invalid")
        let started = r.counter("outrider_tracing_spans_started_total", help: "Spans finished and handed to the exporter (SERVER and CLIENT), by result.", labelNames: ["result"])
        handedOver = started.labels("queued")
        handOverDropped = started.labels("queue_full")
    }
}

/// One request's tracing: continues or starts a trace, tells the upstream about it, and
/// after the response hands a SERVER span (and a CLIENT span for the upstream call) to the
/// exporter without blocking. Attributes follow the stable HTTP semantic conventions.
final class TracingFilter: HTTPFilter {
    private let factory: TracingFactory
    private var traceID = TraceID(high: 0, low: 0)
    private var serverSpanID = SpanID(0)
    private var clientSpanID = SpanID(0)
    private var parent: SpanContext?
    private var traceState: String?
    private var sampled = false
    private var method = ""
    private var target = ""
    private var userAgent: String?
    private var host: String?
    private var protocolVersion = "1.1"

    init(factory: TracingFactory) { self.factory = factory }

    func requestHead(_ head: inout RequestHead, context: StreamContext) throws -> FilterVerdict {
        let h = head.headers
        let traceparent = h.first("traceparent")
        if let ctx = TraceContextPropagation.extract(traceparent: traceparent, tracestate: h.first("tracestate")) {
            parent = ctx
            traceState = TraceContextPropagation.normalizeTracestate(ctx.traceState)
            factory.metrics.continued.increment(shard: context.shard)
        } else if let ctx = B3Propagation.extract({ h.first($0) }) {
            parent = ctx
            factory.metrics.continued.increment(shard: context.shard)
        } else if traceparent != nil || h.contains("b3") || h.contains("x-b3-traceid") {
            // Invalid context: start a new trace and drop tracestate (W3C §3.3).
            factory.metrics.invalidParent.increment(shard: context.shard)
        }
        let random = context.random
        traceID = parent?.traceID ?? TraceID(high: random.next(), low: random.nonZero())
        serverSpanID = SpanID(random.nonZero())
        clientSpanID = SpanID(random.nonZero())
        sampled = factory.settings.sampler.shouldSample(parent: parent, traceID: traceID)
        (sampled ? factory.metrics.sampled : factory.metrics.notSampled).increment(shard: context.shard)

        // The upstream's parent is our CLIENT span.
        let outgoing = SpanContext(traceID: traceID, spanID: clientSpanID, sampled: sampled, traceState: traceState)
        head.headers.set("traceparent", TraceContextPropagation.traceparent(outgoing))
        if let ts = traceState { head.headers.set("tracestate", ts) } else { head.headers.remove("tracestate") }
        if h.contains("b3") {
            head.headers.set("b3", "\(traceID.hex)-\(clientSpanID.hex)-\(sampled ? "1" : "0")-\(serverSpanID.hex)")
        }
        if h.contains("x-b3-traceid") {
            head.headers.set("x-b3-traceid", traceID.hex)
            head.headers.set("x-b3-spanid", clientSpanID.hex)
            head.headers.set("x-b3-parentspanid", serverSpanID.hex)
            head.headers.set("x-b3-sampled", sampled ? "1" : "0")
            head.headers.remove("x-b3-flags")
        }

        context.traceID = traceID.hex
        context.spanID = serverSpanID.hex
        method = head.method
        target = head.target
        userAgent = h.first("user-agent")
        host = h.first("host")
        protocolVersion = head.version.shortDescription
        return .proceed
    }

    func streamComplete(_ outcome: StreamOutcome, context: StreamContext) {
        guard sampled, let sink = factory.sink else { return }
        let (methodAttr, original) = Self.normalizedMethod(method)
        var path = Substring(target)
        var query: Substring?
        if let q = target.firstIndex(of: "?") { path = target[..<q]; query = target[target.index(after: q)...] }

        // SERVER span: the request as this proxy served it.
        var attrs: [SpanAttribute] = [
            SpanAttribute("http.request.method", .string(methodAttr)),
            SpanAttribute("url.path", .string(String(path))),
            SpanAttribute("url.scheme", .string(context.scheme)),
        ]
        if let original { attrs.append(SpanAttribute("http.request.method_original", .string(original))) }
        if let query { attrs.append(SpanAttribute("url.query", .string(String(query)))) }
        if outcome.status > 0 { attrs.append(SpanAttribute("http.response.status_code", .int(Int64(outcome.status)))) }
        let (serverHost, serverPort) = Self.hostAndPort(host, fallback: context.serverAddress)
        attrs.append(SpanAttribute("server.address", .string(serverHost)))
        attrs.append(SpanAttribute("server.port", .int(Int64(serverPort))))
        attrs.append(SpanAttribute("client.address", .string(context.clientAddress)))
        attrs.append(SpanAttribute("network.peer.address", .string(context.clientAddress)))
        attrs.append(SpanAttribute("network.peer.port", .int(Int64(context.clientPort))))
        attrs.append(SpanAttribute("network.protocol.version", .string(protocolVersion)))
        if let ua = userAgent { attrs.append(SpanAttribute("user_agent.original", .string(ua))) }
        attrs.append(SpanAttribute("outrider.request_id", .string(context.requestID)))
        var status = SpanStatusCode.unset
        var message = ""
        if outcome.status >= 500 {
            status = .error
            attrs.append(SpanAttribute("error.type", .string(String(outcome.status))))
            message = outcome.details
        } else if outcome.status == 0 {
            status = .error
            attrs.append(SpanAttribute("error.type", .string(outcome.details)))
            message = outcome.details
        }
        let server = FinishedSpan(traceID: traceID, spanID: serverSpanID, parentSpanID: parent?.spanID, traceState: traceState,
                                  name: methodAttr == "_OTHER" ? "HTTP" : methodAttr, kind: .server,
                                  startUnixNano: context.startWallNanos, endUnixNano: outcome.endWallNanos,
                                  attributes: attrs, events: context.spanEvents, statusCode: status, statusMessage: message,
                                  sampled: true, parentIsRemote: parent.map { _ in true })
        handOver(server, sink, context)

        // CLIENT span: the call to the workload, when one was made.
        guard context.upstreamStartWallNanos > 0 else { return }
        var c: [SpanAttribute] = [
            SpanAttribute("http.request.method", .string(methodAttr)),
            SpanAttribute("server.address", .string(context.upstreamAddress.host)),
            SpanAttribute("server.port", .int(Int64(context.upstreamAddress.port))),
            SpanAttribute("url.full", .string("http://\(context.upstreamAddress)\(target)")),
            SpanAttribute("network.protocol.version", .string("1.1")),
        ]
        var cStatus = SpanStatusCode.unset
        if let s = context.upstreamStatus {
            c.append(SpanAttribute("http.response.status_code", .int(Int64(s))))
            if s >= 400 { cStatus = .error; c.append(SpanAttribute("error.type", .string(String(s)))) }
        } else {
            cStatus = .error
            c.append(SpanAttribute("error.type", .string(outcome.details)))
        }
        let end = context.upstreamEndWallNanos > 0 ? context.upstreamEndWallNanos : outcome.endWallNanos
        let client = FinishedSpan(traceID: traceID, spanID: clientSpanID, parentSpanID: serverSpanID, traceState: traceState,
                                  name: methodAttr == "_OTHER" ? "HTTP" : methodAttr, kind: .client,
                                  startUnixNano: context.upstreamStartWallNanos, endUnixNano: end,
                                  attributes: c, statusCode: cStatus, statusMessage: cStatus == .error ? outcome.details : "",
                                  sampled: true, parentIsRemote: false)
        handOver(client, sink, context)
    }

    private func handOver(_ span: FinishedSpan, _ sink: any SpanSink, _ context: StreamContext) {
        if sink.trySend(span) { factory.metrics.handedOver.increment(shard: context.shard) }
        else { factory.metrics.handOverDropped.increment(shard: context.shard) }
    }

    private static let knownMethods: Set<String> = ["GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"]

    /// Semantic conventions: unknown methods are reported as `_OTHER` with the original kept aside.
    static func normalizedMethod(_ m: String) -> (String, String?) {
        knownMethods.contains(m) ? (m, nil) : ("_OTHER", m)
    }

    /// Host header "name[:port]" (or "[v6]:port"), falling back to the listener's address.
    static func hostAndPort(_ host: String?, fallback: SocketAddressSpec) -> (String, Int) {
        guard let host, !host.isEmpty else { return (fallback.host, Int(fallback.port)) }
        if host.hasPrefix("["), let close = host.firstIndex(of: "]") {
            let name = String(host[host.index(after: host.startIndex)..<close])
            let rest = host[host.index(after: close)...]
            if rest.hasPrefix(":"), let p = Int(rest.dropFirst()) { return (name, p) }
            return (name, Int(fallback.port))
        }
        if let colon = host.lastIndex(of: ":"), let p = Int(host[host.index(after: colon)...]) {
            return (String(host[..<colon]), p)
        }
        return (host, Int(fallback.port))
    }
}
