import Testing
import Synchronization
@testable import Filters
import Config
import OutriderCore
import Telemetry

/// Records every span handed over (STYLE.md: RecordingSpanSink).
final class RecordingSpanSink: SpanSink {
    let spans = Mutex<[FinishedSpan]>([])
    func trySend(_ span: FinishedSpan) -> Bool { spans.withLock { $0.append(span) }; return true }
}

private func factory(_ sampler: Sampler, sink: RecordingSpanSink) -> TracingFactory {
    let resource = TelemetryResource(attributes: [])
    let settings = TracingSettings(sampler: sampler, exporter: OTLPExporterConfig(resource: resource, scope: InstrumentationScopeInfo(name: "t", version: "0")), disabled: false)
    return TracingFactory(mode: .enforce, settings: settings, sink: sink, metrics: TracingMetrics(MetricsRegistry()))
}

private func run(_ f: TracingFactory, headers: [(String, String)], status: Int = 200) throws -> (RequestHead, StreamContext) {
    let context = try makeContext()
    let filter = try #require(f.makeFilter(context: context))
    var head = RequestHead(method: "GET", target: "/items?id=7", version: .http11, headers: HTTPHeaders([("Host", "shop:8443")] + headers))
    _ = try filter.requestHead(&head, context: context)
    context.upstreamStartWallNanos = 2_000
    context.upstreamEndWallNanos = 3_000
    context.upstreamStatus = status
    filter.streamComplete(StreamOutcome(status: status, details: "via_upstream", flags: "-", localReply: false, bytesReceived: 0, bytesSent: 10, endWallNanos: 4_000), context: context)
    return (head, context)
}

@Suite struct TracingFilterTests {
    @Test func clientTraceparentIsContinuedAndUpstreamGetsTheClientSpanAsParent() throws {
        let sink = RecordingSpanSink()
        let (head, context) = try run(factory(.parentBasedAlwaysOn, sink: sink), headers: [
            ("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"), ("tracestate", "vendor=a,other=b")])
        let spans = sink.spans.withLock { $0 }
        #expect(spans.count == 2)
        let server = try #require(spans.first { $0.kind == .server })
        let client = try #require(spans.first { $0.kind == .client })
        #expect(server.traceID.hex == "4bf92f3577b34da6a3ce929d0e0e4736")
        #expect(server.parentSpanID?.hex == "00f067aa0ba902b7")
        #expect(client.parentSpanID == server.spanID)
        #expect(head.headers.first("traceparent") == "00-4bf92f3577b34da6a3ce929d0e0e4736-\(client.spanID.hex)-01")
        #expect(head.headers.first("tracestate") == "vendor=a,other=b")
        #expect(context.traceID == server.traceID.hex && context.spanID == server.spanID.hex)
        #expect(server.name == "GET")
        #expect(server.attributes.contains(SpanAttribute("url.path", .string("/items"))))
        #expect(server.attributes.contains(SpanAttribute("url.query", .string("id=7"))))
        #expect(server.attributes.contains(SpanAttribute("server.address", .string("shop"))))
        #expect(server.attributes.contains(SpanAttribute("server.port", .int(8443))))
        #expect(client.attributes.contains(SpanAttribute("url.full", .string("http://127.0.0.1:8080/items?id=7"))))
    }

    @Test func invalidTraceparentStartsANewTraceAndDropsTracestate() throws {
        let sink = RecordingSpanSink()
        let (head, _) = try run(factory(.parentBasedAlwaysOn, sink: sink), headers: [
            ("traceparent", "00-00000000000000000000000000000000-00f067aa0ba902b7-01"), ("tracestate", "vendor=a")])
        let server = try #require(sink.spans.withLock { $0 }.first { $0.kind == .server })
        #expect(server.parentSpanID == nil)
        #expect(server.traceID.isValid)
        #expect(head.headers.first("tracestate") == nil)
    }

    @Test func b3MultiHeadersAreContinued() throws {
        let sink = RecordingSpanSink()
        _ = try run(factory(.parentBasedAlwaysOn, sink: sink), headers: [
            ("X-B3-TraceId", "463ac35c9f6413ad"), ("X-B3-SpanId", "a2fb4a1d1a96d312"), ("X-B3-Sampled", "1")])
        let server = try #require(sink.spans.withLock { $0 }.first { $0.kind == .server })
        #expect(server.traceID.hex == "0000000000000000463ac35c9f6413ad")
        #expect(server.parentSpanID?.hex == "a2fb4a1d1a96d312")
    }

    @Test func unsampledParentIsFollowedAndNothingIsExported() throws {
        let sink = RecordingSpanSink()
        let (head, _) = try run(factory(.parentBasedAlwaysOn, sink: sink), headers: [
            ("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00")])
        #expect(sink.spans.withLock { $0 }.isEmpty)
        #expect(head.headers.first("traceparent")?.hasSuffix("-00") == true)
    }

    @Test func ratioZeroSamplesNoNewTraces() throws {
        let sink = RecordingSpanSink()
        _ = try run(factory(.parentBasedTraceIDRatio(0), sink: sink), headers: [])
        #expect(sink.spans.withLock { $0 }.isEmpty)
    }

    @Test func serverErrorsSetErrorStatusAndErrorType() throws {
        let sink = RecordingSpanSink()
        _ = try run(factory(.alwaysOn, sink: sink), headers: [], status: 503)
        let server = try #require(sink.spans.withLock { $0 }.first { $0.kind == .server })
        #expect(server.statusCode == .error)
        #expect(server.attributes.contains(SpanAttribute("error.type", .string("503"))))
    }

    @Test func configShapeFromTheIssueParses() throws {
        let yaml = """
        workers: 1
        admin:
          address: 127.0.0.1:15000
        listeners:
          - name: inbound
            address: 127.0.0.1:15006
            upstream: 127.0.0.1:8080
        filters:
          - name: tracing
            mode: enforce
            sampling: 1.0
            exporter:
              endpoint: http://127.0.0.1:4318
        """
        let config = try ConfigLoader.parse(text: yaml, file: "outrider.yaml", environment: [:])
        #expect(FilterRegistry.validate(config.filters, environment: [:]).isEmpty)
        let parsed = try TracingFilterBuilder.parse(config.filters[0], environment: [:], version: "t").get()
        #expect(parsed.exporter.endpoint == "http://127.0.0.1:4318/v1/traces")
        #expect(parsed.sampler == .parentBasedTraceIDRatio(1.0))
        // Environment overrides the file, as OpenTelemetry users expect.
        let env = ["OTEL_TRACES_SAMPLER": "always_off", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://127.0.0.1:9999/custom"]
        let overridden = try TracingFilterBuilder.parse(config.filters[0], environment: env, version: "t").get()
        #expect(overridden.sampler == .alwaysOff)
        #expect(overridden.exporter.endpoint == "http://127.0.0.1:9999/custom")
    }

    @Test func badTracingSettingsAreReportedWithTheirLine() throws {
        let yaml = """
        listeners:
          - name: inbound
            address: 127.0.0.1:15006
            upstream: 127.0.0.1:8080
        filters:
          - name: tracing
            sampling: 2
            exporter:
              endpoint: http://127.0.0.1:4318
              protocol: grpc
        """
        let config = try ConfigLoader.parse(text: yaml, file: "o.yaml", environment: [:])
        let errors = FilterRegistry.validate(config.filters, environment: [:]).map(\.description)
        #expect(errors.contains { $0.hasPrefix("o.yaml:7:") && $0.contains("sampling") })
        #expect(errors.contains { $0.hasPrefix("o.yaml:10:") && $0.contains("protocol") })
    }
}
