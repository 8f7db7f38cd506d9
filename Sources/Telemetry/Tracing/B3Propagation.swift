// Zipkin B3 propagation, single and multi header (openzipkin/b3-propagation).

public enum B3Propagation {
    /// Extracts a context from `b3: {TraceId}-{SpanId}[-{SamplingState}[-{ParentSpanId}]]`
    /// (TraceId 16 or 32 lowercase hex, a 16-hex one left-padded with zeros; SamplingState
    /// 1, 0 or d = debug ⇒ sampled) or, when that header is absent or invalid, from the multi
    /// headers X-B3-TraceId, X-B3-SpanId, X-B3-Sampled (1|0|true|false), X-B3-Flags (1 = debug ⇒
    /// sampled). `header` looks names up case-insensitively (the caller's job). An absent
    /// sampling state (deferred) gives `sampled == false`, as OpenTelemetry's B3 propagators do.
    /// A lone sampling state ("b3: 0") carries no ids and gives nil; see `samplingDecision`.
    /// All-zero ids are invalid. The parent span id, when present, must be 16 hex in the single
    /// form and is otherwise ignored (the proxy's span becomes the child of SpanId).
    public static func extract(_ header: (String) -> String?) -> SpanContext? {
        if let single = header("b3"), let ctx = parseSingle(single) { return ctx }
        return parseMulti(header)
    }

    /// The sampling decision the headers carry even without ids: "b3: 0" (deny), "b3: 1",
    /// "b3: d", or the sampling field of a full single header; otherwise X-B3-Flags: 1 (debug ⇒
    /// true) or X-B3-Sampled. Nil when none is given (deferred). Lets a caller that got nil from
    /// `extract` still honour a deny when it starts a new trace.
    public static func samplingDecision(_ header: (String) -> String?) -> Bool? {
        if let single = header("b3") {
            let u = Array(TraceContextPropagation.trimOWS(Array(single.utf8)))
            if u.count == 1 { return samplingState(u[...]) ?? nil }
            if let ctx = parseSingle(single) {
                let parts = u.split(separator: UInt8(ascii: "-"), omittingEmptySubsequences: false)
                return parts.count >= 3 ? ctx.sampled : nil
            }
        }
        return multiSampled(header)
    }

    // MARK: - Single header

    /// Returns .some(decision) for "1"/"d" (true) and "0" (false), nil for anything else.
    private static func samplingState(_ s: ArraySlice<UInt8>) -> Bool?? {
        guard s.count == 1, let c = s.first else { return nil }
        switch c {
        case UInt8(ascii: "1"), UInt8(ascii: "d"): return .some(true)
        case UInt8(ascii: "0"): return .some(false)
        default: return nil
        }
    }

    static func parseSingle(_ value: String) -> SpanContext? {
        let u = Array(TraceContextPropagation.trimOWS(Array(value.utf8)))
        let parts = u.split(separator: UInt8(ascii: "-"), omittingEmptySubsequences: false)
        guard parts.count >= 2, parts.count <= 4 else { return nil }
        guard let traceID = traceID(parts[0]), let sid = spanID(parts[1]) else { return nil }
        var sampled = false
        if parts.count >= 3 {
            guard let s = samplingState(parts[2]), let decision = s else { return nil }
            sampled = decision
        }
        if parts.count == 4 {
            guard spanID(parts[3]) != nil else { return nil }
        }
        return SpanContext(traceID: traceID, spanID: sid, sampled: sampled, traceState: nil, isRemote: true)
    }

    // MARK: - Multi header

    static func parseMulti(_ header: (String) -> String?) -> SpanContext? {
        guard let t = header("X-B3-TraceId"), let s = header("X-B3-SpanId") else { return nil }
        guard let traceID = traceID(TraceContextPropagation.trimOWS(Array(t.utf8))),
              let sid = spanID(TraceContextPropagation.trimOWS(Array(s.utf8))) else { return nil }
        let sampled = multiSampled(header) ?? false
        return SpanContext(traceID: traceID, spanID: sid, sampled: sampled, traceState: nil, isRemote: true)
    }

    private static func multiSampled(_ header: (String) -> String?) -> Bool? {
        if let f = header("X-B3-Flags"), Array(TraceContextPropagation.trimOWS(Array(f.utf8))) == [UInt8(ascii: "1")] {
            return true
        }
        guard let s = header("X-B3-Sampled") else { return nil }
        switch Array(TraceContextPropagation.trimOWS(Array(s.utf8))) {
        case Array("1".utf8), Array("true".utf8): return true
        case Array("0".utf8), Array("false".utf8): return false
        default: return nil
        }
    }

    // MARK: - Ids

    private static func traceID(_ s: ArraySlice<UInt8>) -> TraceID? {
        let id: TraceID
        switch s.count {
        case 32:
            let a = s.startIndex
            guard let h = TraceHex.parse64(s[a..<(a + 16)]), let l = TraceHex.parse64(s[(a + 16)...]) else { return nil }
            id = TraceID(high: h, low: l)
        case 16:
            guard let l = TraceHex.parse64(s) else { return nil }
            id = TraceID(high: 0, low: l)
        default:
            return nil
        }
        return id.isValid ? id : nil
    }

    private static func spanID(_ s: ArraySlice<UInt8>) -> SpanID? {
        guard s.count == 16, let v = TraceHex.parse64(s), v != 0 else { return nil }
        return SpanID(v)
    }
}
