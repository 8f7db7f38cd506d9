// Finished-span data handed to exporters, plus the resource and instrumentation scope.

public enum SpanKind: Int, Sendable {
    case unspecified = 0, `internal` = 1, server = 2, client = 3, producer = 4, consumer = 5
}

public enum AttributeValue: Sendable, Equatable {
    case string(String)
    case int(Int64)
    case double(Double)
    case bool(Bool)
}

public struct SpanAttribute: Sendable, Equatable {
    public var key: String
    public var value: AttributeValue
    public init(_ key: String, _ value: AttributeValue) {
        self.key = key
        self.value = value
    }
}

public struct SpanEvent: Sendable, Equatable {
    public var name: String
    public var timeUnixNano: UInt64
    public var attributes: [SpanAttribute]
    public init(name: String, timeUnixNano: UInt64, attributes: [SpanAttribute] = []) {
        self.name = name
        self.timeUnixNano = timeUnixNano
        self.attributes = attributes
    }
}

public enum SpanStatusCode: Int, Sendable {
    case unset = 0, ok = 1, error = 2
}

public struct FinishedSpan: Sendable, Equatable {
    public var traceID: TraceID
    public var spanID: SpanID
    public var parentSpanID: SpanID?
    public var traceState: String?
    public var name: String
    public var kind: SpanKind
    public var startUnixNano: UInt64
    public var endUnixNano: UInt64
    public var attributes: [SpanAttribute]
    public var events: [SpanEvent]
    public var statusCode: SpanStatusCode
    public var statusMessage: String
    public var sampled: Bool
    /// Whether the parent came from another process (true for a server span whose parent was
    /// extracted from `traceparent`/B3, false for a client span under the proxy's server span),
    /// nil when unknown or there is no parent. Goes to OTLP `Span.flags` bits 8 and 9.
    public var parentIsRemote: Bool?

    public init(
        traceID: TraceID, spanID: SpanID, parentSpanID: SpanID? = nil, traceState: String? = nil,
        name: String, kind: SpanKind, startUnixNano: UInt64, endUnixNano: UInt64,
        attributes: [SpanAttribute] = [], events: [SpanEvent] = [],
        statusCode: SpanStatusCode = .unset, statusMessage: String = "", sampled: Bool = true,
        parentIsRemote: Bool? = nil
    ) {
        self.traceID = traceID
        self.spanID = spanID
        self.parentSpanID = parentSpanID
        self.traceState = traceState
        self.name = name
        self.kind = kind
        self.startUnixNano = startUnixNano
        self.endUnixNano = endUnixNano
        self.attributes = attributes
        self.events = events
        self.statusCode = statusCode
        self.statusMessage = statusMessage
        self.sampled = sampled
        self.parentIsRemote = parentIsRemote
    }

    /// OTLP `Span.flags`: bits 0-7 are the W3C trace flags (0x01 = sampled); bit 8
    /// (SPAN_FLAGS_CONTEXT_HAS_IS_REMOTE_MASK) says bit 9 (SPAN_FLAGS_CONTEXT_IS_REMOTE_MASK,
    /// the parent is remote) is known.
    public var otlpFlags: UInt32 {
        var f: UInt32 = sampled ? 0x01 : 0x00
        if let parentIsRemote {
            f |= 0x100
            if parentIsRemote { f |= 0x200 }
        }
        return f
    }
}

public struct InstrumentationScopeInfo: Sendable, Equatable {
    public var name: String
    public var version: String
    public init(name: String, version: String) {
        self.name = name
        self.version = version
    }
}

public struct TelemetryResource: Sendable, Equatable {
    public var attributes: [SpanAttribute]

    public init(attributes: [SpanAttribute]) { self.attributes = attributes }

    /// Builds the resource from the environment:
    /// - `service.name`: OTEL_SERVICE_NAME when set and non-empty, else `service.name` from
    ///   OTEL_RESOURCE_ATTRIBUTES, else `defaultServiceName`. It comes first.
    /// - then the other OTEL_RESOURCE_ATTRIBUTES pairs (`k=v,k2=v2`, spaces around keys and
    ///   values trimmed, values percent-decoded, a repeated key keeps its last value, in order
    ///   of first appearance). If any pair is malformed (no "=", empty key, bad `%XX`, decoded
    ///   bytes not UTF-8) the whole variable is discarded, as the OTel spec asks.
    /// - then `telemetry.sdk.name` = "outrider", `telemetry.sdk.language` = "swift",
    ///   `telemetry.sdk.version` = `version`, unless OTEL_RESOURCE_ATTRIBUTES set them.
    /// All values are strings.
    public static func fromEnvironment(_ env: [String: String], defaultServiceName: String, version: String) -> TelemetryResource {
        var pairs: [(String, String)] = parseResourceAttributes(env["OTEL_RESOURCE_ATTRIBUTES"]) ?? []
        var serviceName = defaultServiceName
        if let i = pairs.firstIndex(where: { $0.0 == "service.name" }) {
            serviceName = pairs[i].1
            pairs.remove(at: i)
        }
        if let s = env["OTEL_SERVICE_NAME"], !s.isEmpty { serviceName = s }
        var attrs = [SpanAttribute("service.name", .string(serviceName))]
        for (k, v) in pairs { attrs.append(SpanAttribute(k, .string(v))) }
        let sdk: [(String, String)] = [
            ("telemetry.sdk.name", "outrider"), ("telemetry.sdk.language", "swift"), ("telemetry.sdk.version", version),
        ]
        for (k, v) in sdk where !pairs.contains(where: { $0.0 == k }) {
            attrs.append(SpanAttribute(k, .string(v)))
        }
        return TelemetryResource(attributes: attrs)
    }

    /// The pairs of OTEL_RESOURCE_ATTRIBUTES, or nil when the value is malformed. Empty list
    /// members (",,", trailing ",") are skipped.
    static func parseResourceAttributes(_ raw: String?) -> [(String, String)]? {
        guard let raw else { return [] }
        var out: [(String, String)] = []
        for piece in Array(raw.utf8).split(separator: UInt8(ascii: ","), omittingEmptySubsequences: false) {
            let m = TraceContextPropagation.trimOWS(piece)
            if m.isEmpty { continue }
            guard let eq = m.firstIndex(of: UInt8(ascii: "=")) else { return nil }
            let k = TraceContextPropagation.trimOWS(m[m.startIndex..<eq])
            let v = TraceContextPropagation.trimOWS(m[(eq + 1)...])
            guard !k.isEmpty, let key = percentDecode(k), let value = percentDecode(v) else { return nil }
            if let i = out.firstIndex(where: { $0.0 == key }) {
                out[i].1 = value
            } else {
                out.append((key, value))
            }
        }
        return out
    }

    /// `%XX` (either case) decoded; nil on a truncated or non-hex escape or invalid UTF-8.
    static func percentDecode(_ s: ArraySlice<UInt8>) -> String? {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(s.count)
        var i = s.startIndex
        while i < s.endIndex {
            let c = s[i]
            if c == UInt8(ascii: "%") {
                guard s.endIndex - i >= 3,
                      let h = TraceHex.lowerValue(TraceHex.asciiLower(s[i + 1])),
                      let l = TraceHex.lowerValue(TraceHex.asciiLower(s[i + 2])) else { return nil }
                bytes.append(UInt8(truncatingIfNeeded: (h << 4) | l))
                i += 3
            } else {
                bytes.append(c)
                i += 1
            }
        }
        let str = String(decoding: bytes, as: UTF8.self)
        guard str.utf8.elementsEqual(bytes) else { return nil }
        return str
    }
}
