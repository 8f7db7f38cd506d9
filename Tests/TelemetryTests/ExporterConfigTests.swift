import Testing
@testable import Telemetry

private func base() -> OTLPExporterConfig {
    OTLPExporterConfig(resource: TelemetryResource(attributes: []),
                       scope: InstrumentationScopeInfo(name: "outrider", version: "0"))
}

@Suite struct ExporterConfigTests {
    @Test func defaultsFollowTheSDK() {
        let c = base()
        #expect(c.endpoint == "http://localhost:4318/v1/traces")
        #expect(c.encoding == .protobuf)
        #expect(c.maxQueueSize == 2048)
        #expect(c.maxExportBatchSize == 512)
        #expect(c.scheduleDelayNanos == 5_000_000_000)
        #expect(c.timeoutNanos == 10_000_000_000)
        #expect(c.maxRetryElapsedNanos == 60_000_000_000)
        #expect(c.validate().isEmpty)
    }

    @Test func endpointVariables() {
        var (c, errors, _) = OTLPExporterConfig.applyingEnvironment(base(), ["OTEL_EXPORTER_OTLP_ENDPOINT": "http://10.0.0.1:4318"])
        #expect(c.endpoint == "http://10.0.0.1:4318/v1/traces")
        #expect(errors.isEmpty)
        (c, errors, _) = OTLPExporterConfig.applyingEnvironment(base(), ["OTEL_EXPORTER_OTLP_ENDPOINT": "http://10.0.0.1:4318/otlp/"])
        #expect(c.endpoint == "http://10.0.0.1:4318/otlp/v1/traces")
        (c, errors, _) = OTLPExporterConfig.applyingEnvironment(base(), [
            "OTEL_EXPORTER_OTLP_ENDPOINT": "http://10.0.0.1:4318",
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://10.0.0.2:9999/custom",
        ])
        #expect(c.endpoint == "http://10.0.0.2:9999/custom")
        #expect(errors.isEmpty)
        (c, errors, _) = OTLPExporterConfig.applyingEnvironment(base(), ["OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "https://collector:4318/v1/traces"])
        #expect(errors.count == 1)
        #expect(errors.first?.contains("https endpoints need the TLS work") == true)
        #expect(errors.first?.hasPrefix("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") == true)
        #expect(c.validate().contains { $0.contains("https endpoints need the TLS work") })
    }

    @Test func protocolVariables() {
        var (c, errors, _) = OTLPExporterConfig.applyingEnvironment(base(), ["OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"])
        #expect(c.encoding == .json)
        #expect(errors.isEmpty)
        (c, errors, _) = OTLPExporterConfig.applyingEnvironment(base(), [
            "OTEL_EXPORTER_OTLP_PROTOCOL": "http/json", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/protobuf",
        ])
        #expect(c.encoding == .protobuf)
        (c, errors, _) = OTLPExporterConfig.applyingEnvironment(base(), ["OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"])
        #expect(c.encoding == .protobuf)
        #expect(errors.count == 1)
        #expect(errors.first?.contains("grpc") == true)
        (_, errors, _) = OTLPExporterConfig.applyingEnvironment(base(), ["OTEL_EXPORTER_OTLP_PROTOCOL": "thrift"])
        #expect(errors.count == 1)
    }

    @Test func headersArePercentDecodedAndSpecificWins() {
        let (c, errors, warnings) = OTLPExporterConfig.applyingEnvironment(base(), [
            "OTEL_EXPORTER_OTLP_HEADERS": "api-key=a%20b%3Dc, tenant = t1 ,broken,x=%zz",
            "OTEL_EXPORTER_OTLP_TRACES_HEADERS": "Tenant=t2",
        ])
        #expect(errors.isEmpty)
        #expect(warnings.count == 2)  // "broken" and the bad escape
        #expect(c.headers.count == 2)
        #expect(c.headers[0] == ("api-key", "a b=c"))
        #expect(c.headers[1] == ("Tenant", "t2"))
        // Header injection through a decoded CR/LF is refused.
        let (d, _, w2) = OTLPExporterConfig.applyingEnvironment(base(), ["OTEL_EXPORTER_OTLP_HEADERS": "a=b%0D%0AEvil: 1"])
        #expect(d.headers.isEmpty)
        #expect(w2.count == 1)
    }

    @Test func timeoutsAndBatchProcessor() {
        var (c, errors, warnings) = OTLPExporterConfig.applyingEnvironment(base(), [
            "OTEL_EXPORTER_OTLP_TIMEOUT": "3000",
            "OTEL_BSP_MAX_QUEUE_SIZE": "100", "OTEL_BSP_MAX_EXPORT_BATCH_SIZE": "50",
            "OTEL_BSP_SCHEDULE_DELAY": "200",
        ])
        #expect(errors.isEmpty)
        #expect(warnings.isEmpty)
        #expect(c.timeoutNanos == 3_000_000_000)
        #expect(c.maxQueueSize == 100)
        #expect(c.maxExportBatchSize == 50)
        #expect(c.scheduleDelayNanos == 200_000_000)
        (c, errors, _) = OTLPExporterConfig.applyingEnvironment(base(), [
            "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT": "7000", "OTEL_BSP_EXPORT_TIMEOUT": "5000",
        ])
        #expect(c.timeoutNanos == 5_000_000_000)
        (c, errors, _) = OTLPExporterConfig.applyingEnvironment(base(), [
            "OTEL_EXPORTER_OTLP_TIMEOUT": "soon", "OTEL_BSP_MAX_QUEUE_SIZE": "-1",
            "OTEL_BSP_SCHEDULE_DELAY": "99999999999999999999",
        ])
        #expect(errors.count == 3)
        #expect(c == base())
        (c, _, warnings) = OTLPExporterConfig.applyingEnvironment(base(), ["OTEL_BSP_MAX_QUEUE_SIZE": "10"])
        #expect(c.maxExportBatchSize == 10)
        #expect(warnings.count == 1)
    }

    @Test func compression() {
        var (_, errors, warnings) = OTLPExporterConfig.applyingEnvironment(base(), ["OTEL_EXPORTER_OTLP_COMPRESSION": "gzip"])
        #expect(errors.isEmpty)
        #expect(warnings == ["OTEL_EXPORTER_OTLP_COMPRESSION=gzip: gzip not supported yet; exporting uncompressed"])
        (_, errors, warnings) = OTLPExporterConfig.applyingEnvironment(base(), ["OTEL_EXPORTER_OTLP_TRACES_COMPRESSION": "none"])
        #expect(errors.isEmpty && warnings.isEmpty)
        (_, errors, _) = OTLPExporterConfig.applyingEnvironment(base(), ["OTEL_EXPORTER_OTLP_COMPRESSION": "zstd"])
        #expect(errors.count == 1)
    }

    @Test func equalityComparesHeaders() {
        var a = base(), b = base()
        a.headers = [("k", "v")]
        #expect(a != b)
        b.headers = [("k", "v")]
        #expect(a == b)
    }

    @Test func tracesURLFromBase() {
        #expect(OTLPExporterConfig.tracesURL(fromBase: "http://127.0.0.1:4318") == "http://127.0.0.1:4318/v1/traces")
        #expect(OTLPExporterConfig.tracesURL(fromBase: "http://127.0.0.1:4318/") == "http://127.0.0.1:4318/v1/traces")
        #expect(OTLPExporterConfig.tracesURL(fromBase: "http://127.0.0.1:4318/custom/path") == "http://127.0.0.1:4318/custom/path")
    }

    @Test func endpointParsing() throws {
        let a = try OTLPEndpoint.parse("http://127.0.0.1:4318/v1/traces").get()
        #expect(a.host == "127.0.0.1" && a.port == 4318 && a.path == "/v1/traces" && a.hostHeader == "127.0.0.1:4318")
        let b = try OTLPEndpoint.parse("http://localhost").get()
        #expect(b.host == "127.0.0.1" && b.port == 80 && b.path == "/" && b.hostHeader == "localhost")
        let c = try OTLPEndpoint.parse("http://[::1]:4318/x?y=1").get()
        #expect(c.host == "::1" && c.port == 4318 && c.path == "/x?y=1")
        for bad in ["ftp://x", "http://", "http://h:0/", "http://h:70000/", "http://h:abc/", "http://[::1/",
                    "http://u:p@h/", "https://h/", "http://h/a b", "127.0.0.1:4318"] {
            #expect(throws: OTLPEndpoint.ParseError.self, "\(bad)") { try OTLPEndpoint.parse(bad).get() }
        }
    }

    @Test func retryAfterParsing() {
        let now: UInt64 = 784_111_777 * 1_000_000_000  // Sun, 06 Nov 1994 08:49:37 GMT
        #expect(parseRetryAfter("1", nowWallNanos: now) == 1_000_000_000)
        #expect(parseRetryAfter(" 120 ", nowWallNanos: now) == 120_000_000_000)
        #expect(parseRetryAfter("Sun, 06 Nov 1994 08:49:47 GMT", nowWallNanos: now) == 10_000_000_000)
        #expect(parseRetryAfter("Sun, 06 Nov 1994 08:49:00 GMT", nowWallNanos: now) == 0)
        #expect(parseRetryAfter("99999999999999999999", nowWallNanos: now) == nil)
        #expect(parseRetryAfter("18446744073709551615", nowWallNanos: now) == UInt64.max)
        #expect(parseRetryAfter("-1", nowWallNanos: now) == nil)
        #expect(parseRetryAfter("soon", nowWallNanos: now) == nil)
        #expect(parseIMFFixdate("Thu, 01 Jan 1970 00:00:00 GMT") == 0)
        #expect(parseIMFFixdate("Thu, 31 Xyz 1970 00:00:00 GMT") == nil)
    }

    @Test func backoffGrowsWithJitterAndCap() {
        let p = ExportRetryPolicy.default
        #expect(p.delay(attempt: 1, unit: 0.5) == 500_000_000)
        #expect(p.delay(attempt: 2, unit: 0.5) == 1_000_000_000)
        #expect(p.delay(attempt: 1, unit: 0) == 400_000_000)
        #expect(p.delay(attempt: 1, unit: 1) == 600_000_000)
        #expect(p.delay(attempt: 10, unit: 0.5) == 30_000_000_000)
        #expect(p.delay(attempt: 1000, unit: 0.5) == 30_000_000_000)
        #expect(p.delay(attempt: Int.max, unit: .nan) >= 24_000_000_000)
    }

    @Test func classification() {
        typealias R = OTLPHTTPClient.Response
        func cls(_ status: Int, _ headers: [(String, String)] = []) -> ExportOutcome {
            classifyExport(.success(R(status: status, headers: headers, body: [])), encoding: .protobuf, nowWallNanos: 0)
        }
        #expect(cls(200) == .accepted(rejected: 0, message: ""))
        #expect(cls(202) == .accepted(rejected: 0, message: ""))
        for s in [429, 502, 503, 504] { #expect(cls(s) == .retryable(retryAfterNanos: nil, reason: "HTTP \(s)")) }
        #expect(cls(503, [("retry-after", "2")]) == .retryable(retryAfterNanos: 2_000_000_000, reason: "HTTP 503"))
        for s in [400, 401, 403, 404, 413, 500, 501, 301] { #expect(cls(s) == .rejected(status: s)) }
        if case .retryable = classifyExport(.failure(.timeout), encoding: .protobuf, nowWallNanos: 0) {} else {
            Issue.record("timeouts must be retried")
        }
        // Garbage 2xx bodies are still a success.
        let junk = classifyExport(.success(R(status: 200, headers: [], body: [0xFF, 0xFF, 0xFF])), encoding: .protobuf, nowWallNanos: 0)
        if case .accepted = junk {} else { Issue.record("junk 2xx body: \(junk)") }
        let negative = classifyExport(.success(R(status: 200, headers: [("content-type", "application/json")],
                                                 body: Array(#"{"partialSuccess":{"rejectedSpans":"-5"}}"#.utf8))),
                                      encoding: .json, nowWallNanos: 0)
        if case .accepted(let r, _) = negative { #expect(r >= 0) } else { Issue.record("\(negative)") }
    }

    @Test func responseHeadParsing() {
        #expect(OTLPHTTPClient.parseHead(Array("HTTP/1.1 200 OK\r\nA: b\r\nbad line\r\nC:d".utf8))?.0 == 200)
        #expect(OTLPHTTPClient.parseHead(Array("HTTP/1.1 2000 OK".utf8)) == nil)
        #expect(OTLPHTTPClient.parseHead(Array("HTTP/1.1 abc OK".utf8)) == nil)
        #expect(OTLPHTTPClient.parseHead(Array("SSH-2.0".utf8)) == nil)
        #expect(OTLPHTTPClient.parseHead([]) == nil)
    }
}
