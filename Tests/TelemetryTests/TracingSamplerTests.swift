import Testing
@testable import Telemetry

@Suite struct TracingSamplerTests {
    let sampledParent = SpanContext(traceID: TraceID(high: 1, low: 2), spanID: SpanID(3), sampled: true, isRemote: true)
    let unsampledParent = SpanContext(traceID: TraceID(high: 1, low: 2), spanID: SpanID(3), sampled: false, isRemote: true)
    let lowID = TraceID(high: 0xFFFF_FFFF_FFFF_FFFF, low: 0)
    let highID = TraceID(high: 0, low: 0xFFFF_FFFF_FFFF_FFFF)

    @Test func parentBasedSamplersFollowTheParent() {
        for s: Sampler in [.parentBasedAlwaysOn, .parentBasedAlwaysOff, .parentBasedTraceIDRatio(0), .parentBasedTraceIDRatio(1)] {
            #expect(s.shouldSample(parent: sampledParent, traceID: highID), "\(s)")
            #expect(!s.shouldSample(parent: unsampledParent, traceID: lowID), "\(s)")
        }
    }

    @Test func parentBasedRootsUseTheirRootRule() {
        #expect(Sampler.parentBasedAlwaysOn.shouldSample(parent: nil, traceID: highID))
        #expect(!Sampler.parentBasedAlwaysOff.shouldSample(parent: nil, traceID: lowID))
        #expect(Sampler.parentBasedTraceIDRatio(0.5).shouldSample(parent: nil, traceID: lowID))
        #expect(!Sampler.parentBasedTraceIDRatio(0.5).shouldSample(parent: nil, traceID: highID))
        // An invalid (all-zero) parent counts as no parent.
        let invalid = SpanContext(traceID: .invalid, spanID: .invalid, sampled: false)
        #expect(Sampler.parentBasedAlwaysOn.shouldSample(parent: invalid, traceID: highID))
    }

    @Test func nonParentBasedSamplersIgnoreTheParent() {
        #expect(Sampler.alwaysOn.shouldSample(parent: unsampledParent, traceID: highID))
        #expect(!Sampler.alwaysOff.shouldSample(parent: sampledParent, traceID: lowID))
        #expect(!Sampler.traceIDRatio(0).shouldSample(parent: sampledParent, traceID: lowID))
    }

    @Test func ratioZeroNeverAndOneAlwaysSamples() {
        var x: UInt64 = 0x1234_5678_9ABC_DEF0
        for _ in 0..<1000 {
            x = x &* 6364136223846793005 &+ 1442695040888963407
            let id = TraceID(high: x, low: x.byteSwapped)
            #expect(Sampler.traceIDRatio(1).shouldSample(parent: nil, traceID: id))
            #expect(!Sampler.traceIDRatio(0).shouldSample(parent: nil, traceID: id))
        }
        #expect(Sampler.traceIDRatio(1).shouldSample(parent: nil, traceID: highID))
        #expect(!Sampler.traceIDRatio(0).shouldSample(parent: nil, traceID: lowID))
        // Out-of-range and NaN ratios are clamped, never trap.
        #expect(Sampler.traceIDRatio(7).shouldSample(parent: nil, traceID: highID))
        #expect(!Sampler.traceIDRatio(-1).shouldSample(parent: nil, traceID: lowID))
        #expect(!Sampler.traceIDRatio(.nan).shouldSample(parent: nil, traceID: lowID))
        #expect(Sampler.traceIDRatio(.infinity).shouldSample(parent: nil, traceID: highID))
    }

    @Test func ratioDecisionIsDeterministicOnTheLowHalf() {
        // bound for 0.5 is 2^62: low >> 1 < 2^62  <=>  low < 2^63.
        let justIn = TraceID(high: 99, low: (1 << 63) - 1)
        let justOut = TraceID(high: 99, low: 1 << 63)
        #expect(Sampler.traceIDRatio(0.5).shouldSample(parent: nil, traceID: justIn))
        #expect(!Sampler.traceIDRatio(0.5).shouldSample(parent: nil, traceID: justOut))
        // Same id, same answer; the high half does not matter.
        for high in [UInt64(0), 1, .max] {
            #expect(Sampler.traceIDRatio(0.5).shouldSample(parent: nil, traceID: TraceID(high: high, low: justIn.low)))
        }
        // Roughly the ratio over many ids.
        var x: UInt64 = 42
        var n = 0
        for _ in 0..<10_000 {
            x = x &* 6364136223846793005 &+ 1442695040888963407
            if Sampler.traceIDRatio(0.25).shouldSample(parent: nil, traceID: TraceID(high: 0, low: x)) { n += 1 }
        }
        #expect(n > 2200 && n < 2800)
    }

    @Test func environmentParsing() {
        #expect(Sampler.fromEnvironment(sampler: nil, argument: "0.5") == .success(nil))
        #expect(Sampler.fromEnvironment(sampler: "", argument: nil) == .success(nil))
        #expect(Sampler.fromEnvironment(sampler: "always_on", argument: nil) == .success(.alwaysOn))
        #expect(Sampler.fromEnvironment(sampler: "always_off", argument: "junk") == .success(.alwaysOff))
        #expect(Sampler.fromEnvironment(sampler: "parentbased_always_on", argument: nil) == .success(.parentBasedAlwaysOn))
        #expect(Sampler.fromEnvironment(sampler: " ParentBased_Always_Off ", argument: nil) == .success(.parentBasedAlwaysOff))
        #expect(Sampler.fromEnvironment(sampler: "traceidratio", argument: "0.25") == .success(.traceIDRatio(0.25)))
        #expect(Sampler.fromEnvironment(sampler: "traceidratio", argument: nil) == .success(.traceIDRatio(1)))
        #expect(Sampler.fromEnvironment(sampler: "parentbased_traceidratio", argument: " 0 ") == .success(.parentBasedTraceIDRatio(0)))
        #expect(Sampler.fromEnvironment(sampler: "parentbased_traceidratio", argument: "") == .success(.parentBasedTraceIDRatio(1)))
    }

    @Test func environmentErrors() {
        for (s, a) in [("traceidratio", "abc"), ("traceidratio", "1.5"), ("traceidratio", "-0.1"),
                       ("traceidratio", "nan"), ("traceidratio", "inf"), ("parentbased_traceidratio", "0x1p-2"),
                       ("sometimes", nil), ("jaeger_remote", nil), ("xray", nil)] as [(String, String?)] {
            guard case .failure(let e) = Sampler.fromEnvironment(sampler: s, argument: a) else {
                Issue.record("\(s) \(a ?? "nil") should fail")
                continue
            }
            #expect(!e.message.isEmpty)
        }
    }
}

@Suite struct TracingResourceTests {
    func value(_ r: TelemetryResource, _ key: String) -> String? {
        for a in r.attributes where a.key == key {
            if case .string(let s) = a.value { return s }
        }
        return nil
    }

    @Test func defaultsWithEmptyEnvironment() {
        let r = TelemetryResource.fromEnvironment([:], defaultServiceName: "outrider", version: "0.3.0")
        #expect(r.attributes == [
            SpanAttribute("service.name", .string("outrider")),
            SpanAttribute("telemetry.sdk.name", .string("outrider")),
            SpanAttribute("telemetry.sdk.language", .string("swift")),
            SpanAttribute("telemetry.sdk.version", .string("0.3.0")),
        ])
    }

    @Test func serviceNameVariableWinsOverResourceAttributes() {
        let env = ["OTEL_SERVICE_NAME": "edge", "OTEL_RESOURCE_ATTRIBUTES": "service.name=other,deployment.environment=prod"]
        let r = TelemetryResource.fromEnvironment(env, defaultServiceName: "outrider", version: "1")
        #expect(value(r, "service.name") == "edge")
        #expect(r.attributes.filter { $0.key == "service.name" }.count == 1)
        #expect(value(r, "deployment.environment") == "prod")
        #expect(r.attributes.first?.key == "service.name")
    }

    @Test func resourceAttributesServiceNameBeatsTheDefault() {
        let r = TelemetryResource.fromEnvironment(["OTEL_RESOURCE_ATTRIBUTES": "service.name=billing", "OTEL_SERVICE_NAME": ""],
                                                  defaultServiceName: "outrider", version: "1")
        #expect(value(r, "service.name") == "billing")
    }

    @Test func valuesArePercentDecodedAndTrimmed() {
        let env = ["OTEL_RESOURCE_ATTRIBUTES": " team = a%20b%2Cc%3d ,note=caf%C3%A9,, host.name=h1 "]
        let r = TelemetryResource.fromEnvironment(env, defaultServiceName: "outrider", version: "1")
        #expect(value(r, "team") == "a b,c=")
        #expect(value(r, "note") == "café")
        #expect(value(r, "host.name") == "h1")
        #expect(r.attributes.map(\.key) == ["service.name", "team", "note", "host.name",
                                            "telemetry.sdk.name", "telemetry.sdk.language", "telemetry.sdk.version"])
    }

    @Test func malformedResourceAttributesAreDiscardedWhole() {
        for bad in ["a=1,b", "a=%zz", "a=%4", "=x", "a=%FF"] {
            let r = TelemetryResource.fromEnvironment(["OTEL_RESOURCE_ATTRIBUTES": bad], defaultServiceName: "outrider", version: "1")
            #expect(r.attributes.count == 4, "\(bad)")
            #expect(value(r, "a") == nil)
        }
    }
}
