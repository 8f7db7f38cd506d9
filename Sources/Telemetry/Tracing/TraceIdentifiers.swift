// Trace and span identifiers and the propagated span context. Plain Swift, no Foundation:
// these run on the request path. Callers bring their own random numbers.

/// Lowercase hex helpers shared by the tracing files.
enum TraceHex {
    static let digits: [UInt8] = Array("0123456789abcdef".utf8)

    /// Value of one lowercase hex digit, nil for anything else (uppercase included: W3C and B3
    /// both specify lowercase).
    @inline(__always)
    static func lowerValue(_ c: UInt8) -> UInt64? {
        switch c {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): return UInt64(c &- UInt8(ascii: "0"))
        case UInt8(ascii: "a")...UInt8(ascii: "f"): return UInt64(c &- UInt8(ascii: "a") &+ 10)
        default: return nil
        }
    }

    /// Parses exactly `bytes.count` (1...16) lowercase hex digits into a UInt64.
    static func parse64<C: Collection>(_ bytes: C) -> UInt64? where C.Element == UInt8 {
        if bytes.isEmpty || bytes.count > 16 { return nil }
        var v: UInt64 = 0
        for c in bytes {
            guard let d = lowerValue(c) else { return nil }
            v = (v &<< 4) | d
        }
        return v
    }

    @inline(__always)
    static func asciiLower(_ c: UInt8) -> UInt8 {
        c >= UInt8(ascii: "A") && c <= UInt8(ascii: "Z") ? c | 0x20 : c
    }

    static func append(_ v: UInt64, to out: inout [UInt8]) {
        var shift = 60
        while shift >= 0 {
            out.append(digits[Int((v >> UInt64(shift)) & 0xF)])
            shift -= 4
        }
    }

    static func string(_ values: UInt64...) -> String {
        var out: [UInt8] = []
        out.reserveCapacity(16 * values.count)
        for v in values { append(v, to: &out) }
        return String(decoding: out, as: UTF8.self)
    }
}

/// A 16-byte trace id, as two big-endian halves (`high` is the first 8 bytes on the wire).
public struct TraceID: Hashable, Sendable, CustomStringConvertible {
    public var high: UInt64
    public var low: UInt64

    public init(high: UInt64, low: UInt64) {
        self.high = high
        self.low = low
    }

    /// The invalid all-zero id.
    public static let invalid = TraceID(high: 0, low: 0)

    /// False for the all-zero id, which W3C and B3 both reject.
    public var isValid: Bool { high != 0 || low != 0 }

    /// 32 lowercase hex digits.
    public var hex: String { TraceHex.string(high, low) }

    public var description: String { hex }

    /// 32 lowercase hex digits, or 16 (the 64-bit B3 form, left-padded with zeros). Uppercase,
    /// other lengths and non-hex bytes give nil. The all-zero id parses; check `isValid`.
    public init?(hex: some StringProtocol) {
        let u = Array(hex.utf8)
        switch u.count {
        case 32:
            guard let h = TraceHex.parse64(u[0..<16]), let l = TraceHex.parse64(u[16..<32]) else { return nil }
            self.init(high: h, low: l)
        case 16:
            guard let l = TraceHex.parse64(u) else { return nil }
            self.init(high: 0, low: l)
        default:
            return nil
        }
    }

    /// The 16 bytes, big-endian, as OTLP's `trace_id`.
    public var bytes: [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(16)
        for v in [high, low] {
            var shift = 56
            while shift >= 0 { out.append(UInt8(truncatingIfNeeded: v >> UInt64(shift))); shift -= 8 }
        }
        return out
    }
}

/// An 8-byte span id.
public struct SpanID: Hashable, Sendable, CustomStringConvertible {
    public var raw: UInt64

    public init(_ raw: UInt64) { self.raw = raw }

    public static let invalid = SpanID(0)

    public var isValid: Bool { raw != 0 }

    /// 16 lowercase hex digits.
    public var hex: String { TraceHex.string(raw) }

    public var description: String { hex }

    /// Exactly 16 lowercase hex digits. The all-zero id parses; check `isValid`.
    public init?(hex: some StringProtocol) {
        let u = Array(hex.utf8)
        guard u.count == 16, let v = TraceHex.parse64(u) else { return nil }
        self.init(v)
    }

    /// The 8 bytes, big-endian, as OTLP's `span_id`.
    public var bytes: [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(8)
        var shift = 56
        while shift >= 0 { out.append(UInt8(truncatingIfNeeded: raw >> UInt64(shift))); shift -= 8 }
        return out
    }
}

/// What crosses process boundaries: ids, the sampled flag, the vendor `tracestate`.
public struct SpanContext: Sendable, Equatable {
    public var traceID: TraceID
    public var spanID: SpanID
    public var sampled: Bool
    /// Normalized `tracestate` (see `TraceContextPropagation.normalizeTracestate`), nil if none.
    public var traceState: String?
    /// True when the context was extracted from incoming headers.
    public var isRemote: Bool

    public init(traceID: TraceID, spanID: SpanID, sampled: Bool, traceState: String? = nil, isRemote: Bool = false) {
        self.traceID = traceID
        self.spanID = spanID
        self.sampled = sampled
        self.traceState = traceState
        self.isRemote = isRemote
    }

    /// Both ids non-zero.
    public var isValid: Bool { traceID.isValid && spanID.isValid }
}
