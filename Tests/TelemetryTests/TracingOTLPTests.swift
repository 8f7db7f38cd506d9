import Testing
@testable import Telemetry

@Suite struct TracingOTLPTests {
    let resource = TelemetryResource(attributes: [SpanAttribute("service.name", .string("s"))])
    let scope = InstrumentationScopeInfo(name: "o", version: "1")
    var tiny: FinishedSpan {
        FinishedSpan(traceID: TraceID(high: 1, low: 2), spanID: SpanID(3), name: "n", kind: .server,
                     startUnixNano: 5, endUnixNano: 6, sampled: true)
    }

    @Test func protobufOfATinySpanMatchesHandDerivedBytes() {
        let z7: [UInt8] = [0, 0, 0, 0, 0, 0, 0]
        // Span (57 bytes)
        var span: [UInt8] = [0x0A, 0x10] + z7 + [0x01] + z7 + [0x02]   // 1: trace_id, 16 bytes
        span += [0x12, 0x08] + z7 + [0x03]                            // 2: span_id, 8 bytes
        span += [0x2A, 0x01, UInt8(ascii: "n")]                       // 5: name
        span += [0x30, 0x02]                                          // 6: kind = SERVER
        span += [0x39, 0x05] + z7                                     // 7: start, fixed64 LE
        span += [0x41, 0x06] + z7                                     // 8: end, fixed64 LE
        span += [0x85, 0x01, 0x01, 0x00, 0x00, 0x00]                  // 16: flags fixed32 = 1 (sampled)
        #expect(span.count == 57)
        // ScopeSpans: scope {name "o", version "1"} + span
        let scopeMsg: [UInt8] = [0x0A, 0x01, UInt8(ascii: "o"), 0x12, 0x01, UInt8(ascii: "1")]
        let scopeSpans: [UInt8] = [0x0A, UInt8(scopeMsg.count)] + scopeMsg + [0x12, UInt8(span.count)] + span
        #expect(scopeSpans.count == 0x43)
        // Resource: attributes { key "service.name", value { string_value "s" } }
        let kv: [UInt8] = [0x0A, 0x0C] + Array("service.name".utf8) + [0x12, 0x03, 0x0A, 0x01, UInt8(ascii: "s")]
        let resourceMsg: [UInt8] = [0x0A, UInt8(kv.count)] + kv
        let resourceSpans: [UInt8] = [0x0A, UInt8(resourceMsg.count)] + resourceMsg + [0x12, UInt8(scopeSpans.count)] + scopeSpans
        let request: [UInt8] = [0x0A, UInt8(resourceSpans.count)] + resourceSpans
        #expect(request.count == 94)
        #expect(OTLPTraceEncoding.protobuf(resource: resource, scope: scope, spans: [tiny]) == request)
    }

    @Test func protobufAttributeValuesParentStatusEventsAndFlags() {
        func kv(_ a: SpanAttribute) -> [UInt8] {
            var w = ProtoWriter()
            OTLPTraceEncoding.writeKeyValue(&w, a)
            return w.bytes
        }
        #expect(kv(SpanAttribute("k", .int(-1))) == [0x0A, 0x01, 0x6B, 0x12, 0x0B, 0x18] + [UInt8](repeating: 0xFF, count: 9) + [0x01])
        #expect(kv(SpanAttribute("k", .int(300))) == [0x0A, 0x01, 0x6B, 0x12, 0x03, 0x18, 0xAC, 0x02])
        #expect(kv(SpanAttribute("k", .bool(false))) == [0x0A, 0x01, 0x6B, 0x12, 0x02, 0x10, 0x00])
        #expect(kv(SpanAttribute("k", .string(""))) == [0x0A, 0x01, 0x6B, 0x12, 0x02, 0x0A, 0x00])
        #expect(kv(SpanAttribute("k", .double(1.0))) == [0x0A, 0x01, 0x6B, 0x12, 0x09, 0x21, 0, 0, 0, 0, 0, 0, 0xF0, 0x3F])

        var s = tiny
        s.parentSpanID = SpanID(0x0102_0304_0506_0708)
        s.traceState = "a=b"
        s.statusCode = .error
        s.statusMessage = "x"
        s.parentIsRemote = true
        s.sampled = false
        s.events = [SpanEvent(name: "e", timeUnixNano: 7)]
        var w = ProtoWriter()
        OTLPTraceEncoding.writeSpan(&w, s)
        let b = w.bytes
        #expect(b.contains(subsequence: [0x1A, 0x03, 0x61, 0x3D, 0x62]))                           // 3: trace_state
        #expect(b.contains(subsequence: [0x22, 0x08, 1, 2, 3, 4, 5, 6, 7, 8]))                      // 4: parent_span_id
        #expect(b.contains(subsequence: [0x5A, 0x0C, 0x09, 7, 0, 0, 0, 0, 0, 0, 0, 0x12, 0x01, 0x65])) // 11: event
        #expect(b.contains(subsequence: [0x7A, 0x05, 0x12, 0x01, 0x78, 0x18, 0x02]))               // 15: status
        #expect(Array(b.suffix(6)) == [0x85, 0x01, 0x00, 0x03, 0x00, 0x00])                         // flags 0x300
        #expect(s.otlpFlags == 0x300)
        s.parentIsRemote = false
        s.sampled = true
        #expect(s.otlpFlags == 0x101)
    }

    @Test func jsonOfATinySpan() {
        let json = String(decoding: OTLPTraceEncoding.json(resource: resource, scope: scope, spans: [tiny]), as: UTF8.self)
        #expect(json == #"{"resourceSpans":[{"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"s"}}]},"scopeSpans":[{"scope":{"name":"o","version":"1"},"spans":[{"traceId":"00000000000000010000000000000002","spanId":"0000000000000003","flags":1,"name":"n","kind":2,"startTimeUnixNano":"5","endTimeUnixNano":"6","attributes":[],"events":[]}]}]}]}"#)
    }

    @Test func jsonValuesAreEscapedAndTyped() {
        var s = tiny
        s.parentSpanID = SpanID(0xab)
        s.attributes = [
            SpanAttribute("q\"\\\n", .string("tab\there\u{1}")), SpanAttribute("i", .int(-42)),
            SpanAttribute("d", .double(0.5)), SpanAttribute("nan", .double(.nan)), SpanAttribute("b", .bool(true)),
        ]
        s.statusCode = .error
        s.statusMessage = "boom"
        s.events = [SpanEvent(name: "ev", timeUnixNano: 18_446_744_073_709_551_615, attributes: [SpanAttribute("x", .int(1))])]
        let json = String(decoding: OTLPTraceEncoding.json(resource: resource, scope: scope, spans: [s, tiny]), as: UTF8.self)
        #expect(json.contains(#""parentSpanId":"00000000000000ab""#))
        #expect(json.contains(#"{"key":"q\"\\\n","value":{"stringValue":"tab\there\u0001"}}"#))
        #expect(json.contains(#"{"key":"i","value":{"intValue":"-42"}}"#))
        #expect(json.contains(#"{"key":"d","value":{"doubleValue":0.5}}"#))
        #expect(json.contains(#"{"key":"nan","value":{"doubleValue":"NaN"}}"#))
        #expect(json.contains(#"{"key":"b","value":{"boolValue":true}}"#))
        #expect(json.contains(#""events":[{"timeUnixNano":"18446744073709551615","name":"ev","attributes":[{"key":"x","value":{"intValue":"1"}}]}]"#))
        #expect(json.contains(#""status":{"message":"boom","code":2}"#))
        #expect(json.contains(#""code":2}},{"traceId""#))
        // Our own tolerant JSON reader accepts what we write.
        var p = TinyJSONParser(bytes: Array(json.utf8))
        #expect(p.parseDocument() != nil)
    }

    @Test func protobufResponseWithPartialSuccess() throws {
        // partial_success { rejected_spans: 3, error_message: "bad" }, plus an unknown field 7.
        let body: [UInt8] = [0x0A, 0x07, 0x08, 0x03, 0x12, 0x03, 0x62, 0x61, 0x64, 0x38, 0x01]
        let r = try #require(OTLPTraceEncoding.parseResponse(protobuf: body))
        #expect(r.rejectedSpans == 3)
        #expect(r.errorMessage == "bad")
        // Unknown fixed32 (3) and fixed64 (4) fields inside partial_success are skipped.
        let withUnknownInside: [UInt8] = [0x0A, 0x10, 0x08, 0x05, 0x1D, 1, 2, 3, 4, 0x21, 1, 2, 3, 4, 5, 6, 7, 8]
        #expect(OTLPTraceEncoding.parseResponse(protobuf: withUnknownInside).map { $0.rejectedSpans } == 5)
        let present = try #require(OTLPTraceEncoding.parseResponse(protobuf: [0x0A, 0x00]))
        #expect(present.rejectedSpans == 0 && present.errorMessage == "")
    }

    @Test func protobufEmptyResponseHasNoPartialSuccess() {
        #expect(OTLPTraceEncoding.parseResponse(protobuf: []) == nil)
        #expect(OTLPTraceEncoding.parseResponse(protobuf: [0x10, 0x01]) == nil)   // only an unknown field
    }

    @Test func protobufGarbageGivesNil() {
        let cases: [[UInt8]] = [
            [0xFF], [0x0A], [0x0A, 0x05, 0x08], [0x0A, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x01],
            [0x0B, 0x0C], [0x00], [0x0A, 0x02, 0x08, 0x80], Array("<html>oops</html>".utf8),
            [UInt8](repeating: 0x80, count: 20),
        ]
        for c in cases { #expect(OTLPTraceEncoding.parseResponse(protobuf: c) == nil, "\(c)") }
        var x: UInt64 = 7
        for _ in 0..<2000 {
            var b: [UInt8] = []
            for _ in 0..<Int(x % 24) {
                x = x &* 6364136223846793005 &+ 1442695040888963407
                b.append(UInt8(truncatingIfNeeded: x >> 33))
            }
            x = x &* 6364136223846793005 &+ 1442695040888963407
            _ = OTLPTraceEncoding.parseResponse(protobuf: b)
            _ = OTLPTraceEncoding.parseResponse(json: b)
        }
    }

    @Test func jsonResponseWithPartialSuccess() throws {
        let a = try #require(OTLPTraceEncoding.parseResponse(json: Array(#"{"partialSuccess":{"rejectedSpans":"2","errorMessage":"too \"old\" \u00e9"}}"#.utf8)))
        #expect(a.rejectedSpans == 2)
        #expect(a.errorMessage == "too \"old\" é")
        let b = try #require(OTLPTraceEncoding.parseResponse(json: Array(#" { "extra" : [1, {"x": null}], "partialSuccess" : { "errorMessage" : "m", "rejectedSpans" : 4 } } "#.utf8)))
        #expect(b.rejectedSpans == 4 && b.errorMessage == "m")
        let c = try #require(OTLPTraceEncoding.parseResponse(json: Array(#"{"partial_success":{"rejected_spans":"9"}}"#.utf8)))
        #expect(c.rejectedSpans == 9 && c.errorMessage == "")
        let d = try #require(OTLPTraceEncoding.parseResponse(json: Array(#"{"partialSuccess":{}}"#.utf8)))
        #expect(d.rejectedSpans == 0)
    }

    @Test func jsonEmptyResponseHasNoPartialSuccess() {
        #expect(OTLPTraceEncoding.parseResponse(json: Array("{}".utf8)) == nil)
        #expect(OTLPTraceEncoding.parseResponse(json: Array(#"{"partialSuccess":null}"#.utf8)) == nil)
        #expect(OTLPTraceEncoding.parseResponse(json: []) == nil)
    }

    @Test func jsonGarbageGivesNil() {
        for g in ["{", "{\"partialSuccess\":{\"rejectedSpans\":1", "nope", "[1,2", "{\"a\" 1}", "\"\\u12\"",
                  String(repeating: "[", count: 10_000), "{\"partialSuccess\":{\"errorMessage\":\"a\u{1}\"}}"] {
            #expect(OTLPTraceEncoding.parseResponse(json: Array(g.utf8)) == nil, "\(g.prefix(40))")
        }
    }
}

extension Array where Element == UInt8 {
    fileprivate func contains(subsequence s: [UInt8]) -> Bool {
        guard s.count <= count else { return false }
        for i in 0...(count - s.count) where self[i..<(i + s.count)].elementsEqual(s) { return true }
        return false
    }
}
