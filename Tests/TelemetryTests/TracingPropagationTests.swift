import Testing
@testable import Telemetry

@Suite struct TracingW3CTests {
    let tid = "4bf92f3577b34da6a3ce929d0e0e4736"
    let sid = "00f067aa0ba902b7"

    @Test func validTraceparentParsesIdsAndSampledFlag() throws {
        let ctx = try #require(TraceContextPropagation.extract(traceparent: "00-\(tid)-\(sid)-01", tracestate: nil))
        #expect(ctx.traceID == TraceID(high: 0x4bf92f3577b34da6, low: 0xa3ce929d0e0e4736))
        #expect(ctx.spanID == SpanID(0x00f067aa0ba902b7))
        #expect(ctx.sampled)
        #expect(ctx.isRemote)
        #expect(ctx.traceState == nil)
        let unsampled = try #require(TraceContextPropagation.extract(traceparent: "00-\(tid)-\(sid)-00", tracestate: nil))
        #expect(!unsampled.sampled)
        // Only bit 0 means sampled; other flag bits are ignored.
        let other = try #require(TraceContextPropagation.extract(traceparent: "00-\(tid)-\(sid)-02", tracestate: nil))
        #expect(!other.sampled)
        let both = try #require(TraceContextPropagation.extract(traceparent: "00-\(tid)-\(sid)-03", tracestate: nil))
        #expect(both.sampled)
    }

    @Test func traceparentRoundTrips() throws {
        let header = "00-\(tid)-\(sid)-01"
        let ctx = try #require(TraceContextPropagation.extract(traceparent: header, tracestate: nil))
        #expect(TraceContextPropagation.traceparent(ctx) == header)
        var c2 = ctx
        c2.sampled = false
        #expect(TraceContextPropagation.traceparent(c2) == "00-\(tid)-\(sid)-00")
        #expect(TraceContextPropagation.traceparent(SpanContext(traceID: TraceID(high: 0, low: 1), spanID: SpanID(2), sampled: true))
                == "00-00000000000000000000000000000001-0000000000000002-01")
    }

    @Test func tracestateIsCarriedNormalizedWithAValidTraceparent() throws {
        let ctx = try #require(TraceContextPropagation.extract(traceparent: "00-\(tid)-\(sid)-01", tracestate: " congo=t61rcWkgMzE ,  rojo=00f067aa0ba902b7"))
        #expect(ctx.traceState == "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7")
        #expect(TraceContextPropagation.extract(traceparent: "00-\(tid)-\(sid)-0x", tracestate: "a=b") == nil)
    }

    @Test func uppercaseHexIsRejected() {
        #expect(TraceContextPropagation.extract(traceparent: "00-\(tid.uppercased())-\(sid)-01", tracestate: nil) == nil)
        #expect(TraceContextPropagation.extract(traceparent: "00-\(tid)-\(sid.uppercased())-01", tracestate: nil) == nil)
        #expect(TraceContextPropagation.extract(traceparent: "00-\(tid)-\(sid)-0A", tracestate: nil) == nil)
        #expect(TraceContextPropagation.extract(traceparent: "0A-\(tid)-\(sid)-01", tracestate: nil) == nil)
    }

    @Test func allZeroIdsAreRejected() {
        #expect(TraceContextPropagation.extract(traceparent: "00-\(String(repeating: "0", count: 32))-\(sid)-01", tracestate: nil) == nil)
        #expect(TraceContextPropagation.extract(traceparent: "00-\(tid)-0000000000000000-01", tracestate: nil) == nil)
    }

    @Test func versionFFIsRejected() {
        #expect(TraceContextPropagation.extract(traceparent: "ff-\(tid)-\(sid)-01", tracestate: nil) == nil)
    }

    @Test func futureVersionIsParsedLeniently() throws {
        let exact = try #require(TraceContextPropagation.extract(traceparent: "cc-\(tid)-\(sid)-01", tracestate: nil))
        #expect(exact.traceID.hex == tid)
        let longer = try #require(TraceContextPropagation.extract(traceparent: "01-\(tid)-\(sid)-01-what-the-future-holds", tracestate: "a=b"))
        #expect(longer.spanID.hex == sid)
        #expect(longer.sampled)
        #expect(longer.traceState == "a=b")
        // After 55 characters a future version must continue with "-".
        #expect(TraceContextPropagation.extract(traceparent: "01-\(tid)-\(sid)-01x", tracestate: nil) == nil)
        // Version 00 allows nothing after the flags.
        #expect(TraceContextPropagation.extract(traceparent: "00-\(tid)-\(sid)-01-", tracestate: nil) == nil)
        #expect(TraceContextPropagation.extract(traceparent: "00-\(tid)-\(sid)-01-extra", tracestate: nil) == nil)
    }

    @Test func wrongLengthsAreRejected() {
        let bad = [
            "", "00", "00-\(tid)-\(sid)", "00-\(tid)-\(sid)-1", "00-\(tid)-\(sid)-011",
            "00-\(tid.dropLast())-\(sid)-01", "00-\(tid)0-\(sid)-01", "00-\(tid)-\(sid.dropLast())-01",
            "00-\(tid)-\(sid)0-01", "0-\(tid)-\(sid)-01", "000-\(tid)-\(sid)-01",
        ]
        for b in bad {
            #expect(TraceContextPropagation.extract(traceparent: b, tracestate: nil) == nil, "\(b)")
        }
        #expect(TraceContextPropagation.extract(traceparent: nil, tracestate: "a=b") == nil)
    }

    @Test func garbageBytesAreRejectedWithoutTrapping() {
        let bad = [
            "00_\(tid)_\(sid)_01", "00-\(tid)-\(sid)-g1", "00-\(tid.replacingFirst("4", "é"))-\(sid)-01",
            String(repeating: "-", count: 55), String(repeating: "\u{0}", count: 55), String(repeating: "é", count: 28),
            "00-\(tid)-\(sid)-0\u{1F600}", "\u{FFFD}\(String(repeating: "0", count: 60))",
        ]
        for b in bad {
            #expect(TraceContextPropagation.extract(traceparent: b, tracestate: nil) == nil, "\(b)")
        }
        // A pseudo-random sweep over short byte strings: never traps.
        var x: UInt64 = 0x9E37_79B9_7F4A_7C15
        for _ in 0..<2000 {
            var s: [UInt8] = Array("00-\(tid)-\(sid)-01".utf8)
            x = x &* 6364136223846793005 &+ 1442695040888963407
            let pos = Int((x >> 33) % UInt64(s.count))
            s[pos] = UInt8(truncatingIfNeeded: x >> 13)
            let str = String(decoding: s, as: UTF8.self)
            _ = TraceContextPropagation.extract(traceparent: str, tracestate: str)
            _ = B3Propagation.extract { $0 == "b3" ? str : nil }
        }
    }

    @Test func surroundingWhitespaceIsTolerated() {
        #expect(TraceContextPropagation.extract(traceparent: " 00-\(tid)-\(sid)-01\t", tracestate: nil) != nil)
    }
}

@Suite struct TracingTracestateTests {
    @Test func validMembersAreKeptInOrderWithWhitespaceRemoved() {
        #expect(TraceContextPropagation.normalizeTracestate("rojo=00f067aa0ba902b7,congo=t61rcWkgMzE") == "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE")
        #expect(TraceContextPropagation.normalizeTracestate(" a=1 ,\tb=2\t,, ,c=3 ") == "a=1,b=2,c=3")
        #expect(TraceContextPropagation.normalizeTracestate("tenant1@sys=v, 1tenant@s_y-s*/=v w") == "tenant1@sys=v,1tenant@s_y-s*/=v w")
    }

    @Test func nilOrNothingValidGivesNil() {
        #expect(TraceContextPropagation.normalizeTracestate(nil) == nil)
        #expect(TraceContextPropagation.normalizeTracestate("") == nil)
        #expect(TraceContextPropagation.normalizeTracestate(" , ,") == nil)
        #expect(TraceContextPropagation.normalizeTracestate("Bad=1,=x,novalue=") == nil)
    }

    @Test func invalidMembersAreDropped() {
        let raw = [
            "Upper=1",          // uppercase key
            "1abc=1",           // simple key must start with a letter
            "a b=1",            // space in key
            "ok=1",
            "k=v,x",            // "x" has no "="
            "v=trailing ",      // value ends with a space (trimmed as OWS, so valid) — see below
            "e=a=b",            // "=" in value
            "t@=1", "@s=1", "t@1s=1", "t@sssssssssssssss=1", // bad multi-tenant keys
            "ctl=a\u{7}b", "hi=ü",
            "k\(String(repeating: "a", count: 256))=1", // key 257 chars
            "v=\(String(repeating: "x", count: 257))",  // value 257 chars
            "m=\(String(repeating: "x", count: 256))",  // value 256 chars: valid
        ].joined(separator: ",")
        #expect(TraceContextPropagation.normalizeTracestate(raw)
                == "ok=1,k=v,v=trailing,m=\(String(repeating: "x", count: 256))")
    }

    @Test func duplicateKeysKeepTheFirst() {
        #expect(TraceContextPropagation.normalizeTracestate("a=1,b=2,a=3,b=4,c=5") == "a=1,b=2,c=5")
    }

    @Test func atMost32MembersAreKept() {
        let members = (0..<40).map { "k\($0)=v\($0)" }
        let out = TraceContextPropagation.normalizeTracestate(members.joined(separator: ","))
        #expect(out == members.prefix(32).joined(separator: ","))
        // Invalid members do not count toward the cap.
        let mixed = (0..<40).map { "K\($0)=x,k\($0)=v" }.joined(separator: ",")
        #expect(TraceContextPropagation.normalizeTracestate(mixed)?.split(separator: ",").count == 32)
    }

    @Test func longTracestateDropsLargeMembersFirstThenFromTheRight() throws {
        let big = "big=\(String(repeating: "b", count: 150))"   // 154 chars
        let smalls = (0..<20).map { "s\(String(format2: $0))=\(String(repeating: "v", count: 20))" } // 24 chars each
        // 20 * 24 + 19 commas = 499; plus big = 654 > 512: dropping big alone suffices.
        let raw = ([smalls[0], big] + smalls.dropFirst()).joined(separator: ",")
        #expect(TraceContextPropagation.normalizeTracestate(raw) == smalls.joined(separator: ","))

        // Without large members, drop from the right until it fits.
        let many = (0..<30).map { "s\(String(format2: $0))=\(String(repeating: "v", count: 20))" } // 30*25-1 = 749
        let out = try #require(TraceContextPropagation.normalizeTracestate(many.joined(separator: ",")))
        #expect(out.utf8.count <= 512)
        #expect(out == many.prefix(20).joined(separator: ","))   // 20*25-1 = 499; 21 would be 524

        // Two large members, only one needs to go: the right-most large one is dropped.
        let big2 = "bb=\(String(repeating: "c", count: 200))"
        let big1 = "ba=\(String(repeating: "c", count: 200))"
        let raw2 = [big1, "x=1", big2, "y=2"].joined(separator: ",") // 203+4+203+4 = 414 fits
        #expect(TraceContextPropagation.normalizeTracestate(raw2) == raw2)
        let big3 = "bc=\(String(repeating: "c", count: 200))"
        let raw3 = [big1, "x=1", big2, "y=2", big3].joined(separator: ",") // 618
        #expect(TraceContextPropagation.normalizeTracestate(raw3) == [big1, "x=1", big2, "y=2"].joined(separator: ","))
    }

    @Test func aSingleMemberLongerThan512IsDropped() {
        let huge = "k\(String(repeating: "a", count: 255))=\(String(repeating: "v", count: 256))" // 513 chars
        #expect(TraceContextPropagation.normalizeTracestate(huge) == nil)
        #expect(TraceContextPropagation.normalizeTracestate("a=1,\(huge)") == "a=1")
    }
}

@Suite struct TracingB3Tests {
    static func lookup(_ h: [String: String]) -> (String) -> String? {
        let lower = Dictionary(h.map { ($0.key.lowercased(), $0.value) }, uniquingKeysWith: { a, _ in a })
        return { lower[$0.lowercased()] }
    }

    @Test func singleHeaderWithAllFields() throws {
        let ctx = try #require(B3Propagation.extract(Self.lookup(["b3": "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1-05e3ac9a4f6e3b90"])))
        #expect(ctx.traceID.hex == "80f198ee56343ba864fe8b2a57d3eff7")
        #expect(ctx.spanID.hex == "e457b5a2e4d86bd1")
        #expect(ctx.sampled)
        #expect(ctx.isRemote)
        #expect(ctx.traceState == nil)
    }

    @Test func singleHeaderSixteenHexTraceIdIsLeftPadded() throws {
        let ctx = try #require(B3Propagation.extract(Self.lookup(["b3": "64fe8b2a57d3eff7-e457b5a2e4d86bd1-1"])))
        #expect(ctx.traceID == TraceID(high: 0, low: 0x64fe8b2a57d3eff7))
        #expect(ctx.traceID.hex == "000000000000000064fe8b2a57d3eff7")
    }

    @Test func singleHeaderSamplingStates() throws {
        let base = "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1"
        #expect(try #require(B3Propagation.extract(Self.lookup(["b3": base + "-0"]))).sampled == false)
        #expect(try #require(B3Propagation.extract(Self.lookup(["b3": base + "-d"]))).sampled == true)
        // Deferred: no decision, not sampled (as OTel's B3 propagators do).
        #expect(try #require(B3Propagation.extract(Self.lookup(["b3": base]))).sampled == false)
        #expect(B3Propagation.samplingDecision(Self.lookup(["b3": base])) == nil)
        #expect(B3Propagation.samplingDecision(Self.lookup(["b3": base + "-d"])) == true)
        #expect(B3Propagation.extract(Self.lookup(["b3": base + "-x"])) == nil)
        #expect(B3Propagation.extract(Self.lookup(["b3": base + "-1-bad"])) == nil)
        #expect(B3Propagation.extract(Self.lookup(["b3": base + "-1-05e3ac9a4f6e3b90-more"])) == nil)
    }

    @Test func singleHeaderDenyAloneCarriesNoContextButADecision() {
        #expect(B3Propagation.extract(Self.lookup(["b3": "0"])) == nil)
        #expect(B3Propagation.samplingDecision(Self.lookup(["b3": "0"])) == false)
        #expect(B3Propagation.samplingDecision(Self.lookup(["b3": "1"])) == true)
        #expect(B3Propagation.samplingDecision(Self.lookup(["b3": "d"])) == true)
        #expect(B3Propagation.samplingDecision(Self.lookup([:])) == nil)
    }

    @Test func singleHeaderInvalidIdsAreRejected() {
        for v in [
            "80F198EE56343BA864FE8B2A57D3EFF7-e457b5a2e4d86bd1-1", // uppercase
            "00000000000000000000000000000000-e457b5a2e4d86bd1-1", // zero trace id
            "80f198ee56343ba864fe8b2a57d3eff7-0000000000000000-1", // zero span id
            "80f198ee56343ba864fe8b2a57d3ef-e457b5a2e4d86bd1-1",   // 30 hex
            "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86b-1",   // 14 hex
            "", "-", "--", "80f198ee56343ba864fe8b2a57d3eff7",
        ] {
            #expect(B3Propagation.extract(Self.lookup(["b3": v])) == nil, "\(v)")
        }
    }

    @Test func multiHeaders() throws {
        let ctx = try #require(B3Propagation.extract(Self.lookup([
            "X-B3-TraceId": "463ac35c9f6413ad48485a3953bb6124", "X-B3-SpanId": "a2fb4a1d1a96d312",
            "X-B3-ParentSpanId": "0020000000000001", "X-B3-Sampled": "1",
        ])))
        #expect(ctx.traceID.hex == "463ac35c9f6413ad48485a3953bb6124")
        #expect(ctx.spanID.hex == "a2fb4a1d1a96d312")
        #expect(ctx.sampled)
        let short = try #require(B3Propagation.extract(Self.lookup([
            "x-b3-traceid": "48485a3953bb6124", "x-b3-spanid": "a2fb4a1d1a96d312", "x-b3-sampled": "true",
        ])))
        #expect(short.traceID == TraceID(high: 0, low: 0x48485a3953bb6124))
        #expect(short.sampled)
        let denied = try #require(B3Propagation.extract(Self.lookup([
            "X-B3-TraceId": "48485a3953bb6124", "X-B3-SpanId": "a2fb4a1d1a96d312", "X-B3-Sampled": "0",
        ])))
        #expect(!denied.sampled)
        #expect(try #require(B3Propagation.extract(Self.lookup([
            "X-B3-TraceId": "48485a3953bb6124", "X-B3-SpanId": "a2fb4a1d1a96d312", "X-B3-Sampled": "false",
        ]))).sampled == false)
        #expect(B3Propagation.extract(Self.lookup(["X-B3-TraceId": "48485a3953bb6124"])) == nil)
        #expect(B3Propagation.extract(Self.lookup(["X-B3-TraceId": "48485a3953bb612", "X-B3-SpanId": "a2fb4a1d1a96d312"])) == nil)
        #expect(B3Propagation.samplingDecision(Self.lookup(["X-B3-Sampled": "0"])) == false)
    }

    @Test func multiHeaderDebugFlagMeansSampled() throws {
        let ctx = try #require(B3Propagation.extract(Self.lookup([
            "X-B3-TraceId": "463ac35c9f6413ad48485a3953bb6124", "X-B3-SpanId": "a2fb4a1d1a96d312", "X-B3-Flags": "1",
        ])))
        #expect(ctx.sampled)
        #expect(B3Propagation.samplingDecision(Self.lookup(["X-B3-Flags": "1", "X-B3-Sampled": "0"])) == true)
    }

    @Test func singleHeaderWinsOverMultiAndInvalidSingleFallsBack() throws {
        let both = try #require(B3Propagation.extract(Self.lookup([
            "b3": "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1",
            "X-B3-TraceId": "463ac35c9f6413ad48485a3953bb6124", "X-B3-SpanId": "a2fb4a1d1a96d312",
        ])))
        #expect(both.spanID.hex == "e457b5a2e4d86bd1")
        let fallback = try #require(B3Propagation.extract(Self.lookup([
            "b3": "garbage",
            "X-B3-TraceId": "463ac35c9f6413ad48485a3953bb6124", "X-B3-SpanId": "a2fb4a1d1a96d312",
        ])))
        #expect(fallback.spanID.hex == "a2fb4a1d1a96d312")
    }
}

@Suite struct TracingIdentifierTests {
    @Test func hexRoundTripsAndValidity() throws {
        let t = try #require(TraceID(hex: "0af7651916cd43dd8448eb211c80319c"))
        #expect(t.hex == "0af7651916cd43dd8448eb211c80319c")
        #expect(t.high == 0x0af7651916cd43dd && t.low == 0x8448eb211c80319c)
        #expect(t.bytes == [0x0a, 0xf7, 0x65, 0x19, 0x16, 0xcd, 0x43, 0xdd, 0x84, 0x48, 0xeb, 0x21, 0x1c, 0x80, 0x31, 0x9c])
        #expect(TraceID(hex: "8448eb211c80319c") == TraceID(high: 0, low: 0x8448eb211c80319c))
        #expect(TraceID(hex: "0AF7651916CD43DD8448EB211C80319C") == nil)
        #expect(TraceID(hex: "0af7651916cd43dd8448eb211c80319") == nil)
        #expect(TraceID(hex: String(repeating: "0", count: 32))?.isValid == false)
        #expect(TraceID(high: 0, low: 1).isValid)
        let s = try #require(SpanID(hex: "b7ad6b7169203331"))
        #expect(s.raw == 0xb7ad6b7169203331 && s.hex == "b7ad6b7169203331")
        #expect(s.bytes == [0xb7, 0xad, 0x6b, 0x71, 0x69, 0x20, 0x33, 0x31])
        #expect(SpanID(hex: "b7ad6b716920333") == nil)
        #expect(SpanID(hex: "b7ad6b71692033zz") == nil)
        #expect(SpanID(0).isValid == false)
        #expect(SpanID(1).hex == "0000000000000001")
    }
}

extension String {
    fileprivate func replacingFirst(_ a: Character, _ b: Character) -> String {
        guard let i = firstIndex(of: a) else { return self }
        var s = self
        s.replaceSubrange(i...i, with: String(b))
        return s
    }

    /// Two-digit zero-padded decimal (no Foundation).
    fileprivate init(format2 n: Int) {
        self = n < 10 ? "0\(n)" : "\(n)"
    }
}
