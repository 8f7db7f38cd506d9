// OTLP/HTTP trace export bodies (opentelemetry-proto collector/trace/v1, trace/v1, common/v1,
// resource/v1): a hand-written protobuf writer and the OTLP/JSON form, plus tolerant parsers
// for ExportTraceServiceResponse.

/// The protobuf wire format, just what the encoder needs.
struct ProtoWriter {
    var bytes: [UInt8] = []

    enum WireType: UInt64 { case varint = 0, fixed64 = 1, lengthDelimited = 2, fixed32 = 5 }

    mutating func varint(_ v: UInt64) {
        var v = v
        while v >= 0x80 {
            bytes.append(UInt8(truncatingIfNeeded: v) | 0x80)
            v >>= 7
        }
        bytes.append(UInt8(truncatingIfNeeded: v))
    }

    mutating func tag(_ field: UInt64, _ type: WireType) { varint((field << 3) | type.rawValue) }

    mutating func varintField(_ field: UInt64, _ v: UInt64) {
        tag(field, .varint)
        varint(v)
    }

    mutating func fixed64Field(_ field: UInt64, _ v: UInt64) {
        tag(field, .fixed64)
        for i in 0..<8 { bytes.append(UInt8(truncatingIfNeeded: v >> UInt64(8 * i))) }
    }

    mutating func fixed32Field(_ field: UInt64, _ v: UInt32) {
        tag(field, .fixed32)
        for i in 0..<4 { bytes.append(UInt8(truncatingIfNeeded: v >> UInt32(8 * i))) }
    }

    mutating func bytesField(_ field: UInt64, _ b: [UInt8]) {
        tag(field, .lengthDelimited)
        varint(UInt64(b.count))
        bytes.append(contentsOf: b)
    }

    mutating func stringField(_ field: UInt64, _ s: String) {
        tag(field, .lengthDelimited)
        varint(UInt64(s.utf8.count))
        bytes.append(contentsOf: s.utf8)
    }

    /// A nested message written in place: a one-byte length is reserved and the body written
    /// straight after it; only a body of 128 bytes or more moves (once) to make room for a longer
    /// length. Copying every nested message out of a temporary buffer cost an allocation per
    /// attribute and a full copy of the batch per nesting level.
    mutating func messageField(_ field: UInt64, _ build: (inout ProtoWriter) -> Void) {
        tag(field, .lengthDelimited)
        let lengthAt = bytes.count
        bytes.append(0)
        build(&self)
        let length = bytes.count - lengthAt - 1
        if length < 0x80 {
            bytes[lengthAt] = UInt8(truncatingIfNeeded: length)
            return
        }
        var prefix: [UInt8] = []
        var v = UInt64(length)
        while v >= 0x80 {
            prefix.append(UInt8(truncatingIfNeeded: v) | 0x80)
            v >>= 7
        }
        prefix.append(UInt8(truncatingIfNeeded: v))
        bytes.replaceSubrange(lengthAt..<(lengthAt + 1), with: prefix)
    }
}

public enum OTLPTraceEncoding {
    // MARK: - Protobuf

    /// An `ExportTraceServiceRequest`: one ResourceSpans (the resource's attributes) holding
    /// one ScopeSpans (`scope`) holding `spans`, in order. Proto3 defaults are omitted (empty
    /// strings, kind 0, zero times, flags 0, absent parent, unset status with no message), so the
    /// bytes are what a protobuf library would serialize; attribute values
    /// are always written (they are a oneof). Times are fixed64, flags fixed32 (field 16).
    public static func protobuf(resource: TelemetryResource, scope: InstrumentationScopeInfo, spans: [FinishedSpan]) -> [UInt8] {
        var w = ProtoWriter()
        w.bytes.reserveCapacity(256 + spans.count * 512)
        w.messageField(1) { rs in                                    // resource_spans
            rs.messageField(1) { r in                                // resource
                for a in resource.attributes { r.messageField(1) { writeKeyValue(&$0, a) } }
            }
            rs.messageField(2) { ss in                               // scope_spans
                ss.messageField(1) { s in                            // scope
                    if !scope.name.isEmpty { s.stringField(1, scope.name) }
                    if !scope.version.isEmpty { s.stringField(2, scope.version) }
                }
                for span in spans { ss.messageField(2) { writeSpan(&$0, span) } }
            }
        }
        return w.bytes
    }

    static func writeSpan(_ w: inout ProtoWriter, _ span: FinishedSpan) {
        w.bytesField(1, span.traceID.bytes)
        w.bytesField(2, span.spanID.bytes)
        if let ts = span.traceState, !ts.isEmpty { w.stringField(3, ts) }
        if let p = span.parentSpanID { w.bytesField(4, p.bytes) }
        if !span.name.isEmpty { w.stringField(5, span.name) }
        if span.kind != .unspecified { w.varintField(6, UInt64(span.kind.rawValue)) }
        if span.startUnixNano != 0 { w.fixed64Field(7, span.startUnixNano) }
        if span.endUnixNano != 0 { w.fixed64Field(8, span.endUnixNano) }
        for a in span.attributes { w.messageField(9) { writeKeyValue(&$0, a) } }
        for e in span.events {
            w.messageField(11) { ew in
                if e.timeUnixNano != 0 { ew.fixed64Field(1, e.timeUnixNano) }
                if !e.name.isEmpty { ew.stringField(2, e.name) }
                for a in e.attributes { ew.messageField(3) { writeKeyValue(&$0, a) } }
            }
        }
        if span.statusCode != .unset || !span.statusMessage.isEmpty {
            w.messageField(15) { st in
                if !span.statusMessage.isEmpty { st.stringField(2, span.statusMessage) }
                if span.statusCode != .unset { st.varintField(3, UInt64(span.statusCode.rawValue)) }
            }
        }
        let flags = span.otlpFlags
        if flags != 0 { w.fixed32Field(16, flags) }
    }

    static func writeKeyValue(_ w: inout ProtoWriter, _ a: SpanAttribute) {
        w.stringField(1, a.key)
        w.messageField(2) { v in
            switch a.value {
            case .string(let s): v.stringField(1, s)
            case .bool(let b): v.varintField(2, b ? 1 : 0)
            case .int(let i): v.varintField(3, UInt64(bitPattern: i))
            case .double(let d): v.fixed64Field(4, d.bitPattern)
            }
        }
    }

    // MARK: - JSON

    /// The OTLP/JSON form of the same request: lowerCamelCase keys, trace and span ids as
    /// lowercase hex, enums (kind, status code) as integers, 64-bit integers (times, intValue)
    /// as decimal strings, flags as a number; non-finite doubles as "NaN"/"Infinity"/
    /// "-Infinity". Absent optional fields are omitted: traceState, parentSpanId, and status
    /// when its code is unset and it has no message (as in the protobuf form).
    public static func json(resource: TelemetryResource, scope: InstrumentationScopeInfo, spans: [FinishedSpan]) -> [UInt8] {
        var o = JSONOut()
        o.raw("{\"resourceSpans\":[{\"resource\":{\"attributes\":")
        o.attributes(resource.attributes)
        o.raw("},\"scopeSpans\":[{\"scope\":{\"name\":")
        o.string(scope.name)
        o.raw(",\"version\":")
        o.string(scope.version)
        o.raw("},\"spans\":[")
        for (i, span) in spans.enumerated() {
            if i > 0 { o.raw(",") }
            o.span(span)
        }
        o.raw("]}]}]}")
        return o.bytes
    }

    // MARK: - Responses

    /// The `partial_success` of an `ExportTraceServiceResponse` (field 1: rejected_spans
    /// int64 = 1, error_message string = 2), or nil when it is absent, including an empty
    /// body, or the bytes are not a well-formed message. Unknown fields are skipped.
    public static func parseResponse(protobuf: [UInt8]) -> (rejectedSpans: Int64, errorMessage: String)? {
        var r = ProtoReader(bytes: protobuf[...])
        var result: (rejectedSpans: Int64, errorMessage: String)? = nil
        while !r.atEnd {
            guard let (field, type) = r.tag() else { return nil }
            if field == 1, type == 2 {
                guard let body = r.lengthDelimited() else { return nil }
                var inner = ProtoReader(bytes: body)
                var rejected = result?.rejectedSpans ?? 0
                var message = result?.errorMessage ?? ""
                while !inner.atEnd {
                    guard let (f, t) = inner.tag() else { return nil }
                    if f == 1, t == 0 {
                        guard let v = inner.varint() else { return nil }
                        rejected = Int64(bitPattern: v)
                    } else if f == 2, t == 2 {
                        guard let s = inner.lengthDelimited() else { return nil }
                        message = String(decoding: s, as: UTF8.self)
                    } else {
                        guard inner.skip(t) else { return nil }
                    }
                }
                result = (rejected, message)   // repeated message fields merge
            } else {
                guard r.skip(type) else { return nil }
            }
        }
        return result
    }

    /// The `partialSuccess` (or `partial_success`) object of an OTLP/JSON response:
    /// `rejectedSpans` as a string or a number, `errorMessage` as a string. Nil when absent or
    /// null, or the body is not JSON. Other fields are ignored.
    public static func parseResponse(json: [UInt8]) -> (rejectedSpans: Int64, errorMessage: String)? {
        var p = TinyJSONParser(bytes: json)
        guard let root = p.parseDocument(), case .object(let top) = root else { return nil }
        guard let ps = top.last(where: { $0.0 == "partialSuccess" || $0.0 == "partial_success" })?.1,
              case .object(let fields) = ps else { return nil }
        var rejected: Int64 = 0
        var message = ""
        for (k, v) in fields {
            switch k {
            case "rejectedSpans", "rejected_spans":
                switch v {
                case .string(let s): rejected = TinyJSONParser.int64(s) ?? rejected
                case .number(let s): rejected = TinyJSONParser.int64(s) ?? rejected
                default: break
                }
            case "errorMessage", "error_message":
                if case .string(let s) = v { message = s }
            default: break
            }
        }
        return (rejected, message)
    }
}

// MARK: - JSON writer

struct JSONOut {
    var bytes: [UInt8] = []

    mutating func raw(_ s: StaticString) {
        s.withUTF8Buffer { bytes.append(contentsOf: $0) }
    }

    mutating func string(_ s: String) {
        bytes.append(UInt8(ascii: "\""))
        for c in s.utf8 {
            switch c {
            case UInt8(ascii: "\""): bytes.append(contentsOf: [0x5C, 0x22])
            case UInt8(ascii: "\\"): bytes.append(contentsOf: [0x5C, 0x5C])
            case 0x0A: bytes.append(contentsOf: [0x5C, UInt8(ascii: "n")])
            case 0x0D: bytes.append(contentsOf: [0x5C, UInt8(ascii: "r")])
            case 0x09: bytes.append(contentsOf: [0x5C, UInt8(ascii: "t")])
            case 0..<0x20, 0x7F:
                bytes.append(contentsOf: Array("\\u00".utf8))
                bytes.append(TraceHex.digits[Int(c >> 4)])
                bytes.append(TraceHex.digits[Int(c & 0xF)])
            default: bytes.append(c)
            }
        }
        bytes.append(UInt8(ascii: "\""))
    }

    mutating func decimalString(_ v: UInt64) {
        bytes.append(UInt8(ascii: "\""))
        bytes.append(contentsOf: String(v).utf8)
        bytes.append(UInt8(ascii: "\""))
    }

    mutating func attributes(_ attrs: [SpanAttribute]) {
        raw("[")
        for (i, a) in attrs.enumerated() {
            if i > 0 { raw(",") }
            raw("{\"key\":")
            string(a.key)
            raw(",\"value\":{")
            switch a.value {
            case .string(let s):
                raw("\"stringValue\":")
                string(s)
            case .bool(let b):
                raw("\"boolValue\":")
                if b { raw("true") } else { raw("false") }
            case .int(let n):
                raw("\"intValue\":\"")
                bytes.append(contentsOf: String(n).utf8)
                raw("\"")
            case .double(let d):
                raw("\"doubleValue\":")
                if d.isNaN { raw("\"NaN\"") }
                else if d == .infinity { raw("\"Infinity\"") }
                else if d == -.infinity { raw("\"-Infinity\"") }
                else { bytes.append(contentsOf: d.description.utf8) }
            }
            raw("}}")
        }
        raw("]")
    }

    mutating func span(_ span: FinishedSpan) {
        raw("{\"traceId\":")
        string(span.traceID.hex)
        raw(",\"spanId\":")
        string(span.spanID.hex)
        if let ts = span.traceState, !ts.isEmpty {
            raw(",\"traceState\":")
            string(ts)
        }
        if let p = span.parentSpanID {
            raw(",\"parentSpanId\":")
            string(p.hex)
        }
        raw(",\"flags\":")
        bytes.append(contentsOf: String(span.otlpFlags).utf8)
        raw(",\"name\":")
        string(span.name)
        raw(",\"kind\":")
        bytes.append(contentsOf: String(span.kind.rawValue).utf8)
        raw(",\"startTimeUnixNano\":")
        decimalString(span.startUnixNano)
        raw(",\"endTimeUnixNano\":")
        decimalString(span.endUnixNano)
        raw(",\"attributes\":")
        attributes(span.attributes)
        raw(",\"events\":[")
        for (i, e) in span.events.enumerated() {
            if i > 0 { raw(",") }
            raw("{\"timeUnixNano\":")
            decimalString(e.timeUnixNano)
            raw(",\"name\":")
            string(e.name)
            raw(",\"attributes\":")
            attributes(e.attributes)
            raw("}")
        }
        raw("]")
        if span.statusCode != .unset || !span.statusMessage.isEmpty {
            raw(",\"status\":{")
            if !span.statusMessage.isEmpty {
                raw("\"message\":")
                string(span.statusMessage)
                raw(",")
            }
            raw("\"code\":")
            bytes.append(contentsOf: String(span.statusCode.rawValue).utf8)
            raw("}")
        }
        raw("}")
    }
}

// MARK: - Protobuf reader

struct ProtoReader {
    var bytes: ArraySlice<UInt8>

    var atEnd: Bool { bytes.isEmpty }

    mutating func varint() -> UInt64? {
        var v: UInt64 = 0
        var shift: UInt64 = 0
        while let b = bytes.first {
            bytes = bytes.dropFirst()
            if shift < 64 { v |= UInt64(b & 0x7F) &<< shift }
            if b & 0x80 == 0 { return v }
            shift += 7
            if shift >= 70 { return nil }
        }
        return nil
    }

    /// (field number, wire type); nil on a truncated tag or field number 0.
    mutating func tag() -> (UInt64, UInt64)? {
        guard let t = varint(), t >> 3 != 0 else { return nil }
        return (t >> 3, t & 7)
    }

    mutating func lengthDelimited() -> ArraySlice<UInt8>? {
        guard let n = varint(), n <= UInt64(bytes.count) else { return nil }
        let len = Int(n)
        let out = bytes.prefix(len)
        bytes = bytes.dropFirst(len)
        return out
    }

    mutating func fixed(_ n: Int) -> Bool {
        guard bytes.count >= n else { return false }
        bytes = bytes.dropFirst(n)
        return true
    }

    /// Skips one value of `type`; false for groups (3, 4), unknown types, or truncation.
    mutating func skip(_ type: UInt64) -> Bool {
        switch type {
        case 0: return varint() != nil
        case 1: return fixed(8)
        case 2: return lengthDelimited() != nil
        case 5: return fixed(4)
        default: return false
        }
    }
}

// MARK: - Tiny JSON reader (responses only)

indirect enum TinyJSON {
    case object([(String, TinyJSON)])
    case array([TinyJSON])
    case string(String)
    case number(String)
    case bool(Bool)
    case null
}

struct TinyJSONParser {
    let bytes: [UInt8]
    var i = 0
    var depth = 0
    static let maxDepth = 64

    init(bytes: [UInt8]) { self.bytes = bytes }

    mutating func parseDocument() -> TinyJSON? {
        // Skip a UTF-8 byte order mark.
        if bytes.starts(with: [0xEF, 0xBB, 0xBF]) { i = 3 }
        guard let v = value() else { return nil }
        ws()
        return i == bytes.count ? v : nil
    }

    mutating func ws() {
        while i < bytes.count, bytes[i] == 0x20 || bytes[i] == 0x09 || bytes[i] == 0x0A || bytes[i] == 0x0D { i += 1 }
    }

    mutating func literal(_ s: StaticString) -> Bool {
        let n = s.utf8CodeUnitCount
        guard bytes.count - i >= n else { return false }
        let ok = s.withUTF8Buffer { buf in
            var j = 0
            while j < n { if bytes[i + j] != buf[j] { return false }; j += 1 }
            return true
        }
        if ok { i += n }
        return ok
    }

    mutating func value() -> TinyJSON? {
        ws()
        guard i < bytes.count else { return nil }
        switch bytes[i] {
        case UInt8(ascii: "{"):
            guard depth < TinyJSONParser.maxDepth else { return nil }
            depth += 1
            defer { depth -= 1 }
            i += 1
            var fields: [(String, TinyJSON)] = []
            ws()
            if i < bytes.count, bytes[i] == UInt8(ascii: "}") { i += 1; return .object(fields) }
            while true {
                ws()
                guard let k = string() else { return nil }
                ws()
                guard i < bytes.count, bytes[i] == UInt8(ascii: ":") else { return nil }
                i += 1
                guard let v = value() else { return nil }
                fields.append((k, v))
                ws()
                guard i < bytes.count else { return nil }
                if bytes[i] == UInt8(ascii: ",") { i += 1; continue }
                if bytes[i] == UInt8(ascii: "}") { i += 1; return .object(fields) }
                return nil
            }
        case UInt8(ascii: "["):
            guard depth < TinyJSONParser.maxDepth else { return nil }
            depth += 1
            defer { depth -= 1 }
            i += 1
            var items: [TinyJSON] = []
            ws()
            if i < bytes.count, bytes[i] == UInt8(ascii: "]") { i += 1; return .array(items) }
            while true {
                guard let v = value() else { return nil }
                items.append(v)
                ws()
                guard i < bytes.count else { return nil }
                if bytes[i] == UInt8(ascii: ",") { i += 1; continue }
                if bytes[i] == UInt8(ascii: "]") { i += 1; return .array(items) }
                return nil
            }
        case UInt8(ascii: "\""):
            return string().map { .string($0) }
        case UInt8(ascii: "t"): return literal("true") ? .bool(true) : nil
        case UInt8(ascii: "f"): return literal("false") ? .bool(false) : nil
        case UInt8(ascii: "n"): return literal("null") ? .null : nil
        default:
            let start = i
            while i < bytes.count {
                let c = bytes[i]
                let isNum = (c >= UInt8(ascii: "0") && c <= UInt8(ascii: "9")) || c == UInt8(ascii: "-")
                    || c == UInt8(ascii: "+") || c == UInt8(ascii: ".") || c == UInt8(ascii: "e") || c == UInt8(ascii: "E")
                guard isNum else { break }
                i += 1
            }
            guard i > start else { return nil }
            return .number(String(decoding: bytes[start..<i], as: UTF8.self))
        }
    }

    mutating func hex4() -> UInt32? {
        guard bytes.count - i >= 4 else { return nil }
        var v: UInt32 = 0
        for j in 0..<4 {
            guard let d = TraceHex.lowerValue(TraceHex.asciiLower(bytes[i + j])) else { return nil }
            v = (v << 4) | UInt32(d)
        }
        i += 4
        return v
    }

    mutating func string() -> String? {
        guard i < bytes.count, bytes[i] == UInt8(ascii: "\"") else { return nil }
        i += 1
        var out: [UInt8] = []
        while i < bytes.count {
            let c = bytes[i]
            i += 1
            switch c {
            case UInt8(ascii: "\""):
                return String(decoding: out, as: UTF8.self)
            case UInt8(ascii: "\\"):
                guard i < bytes.count else { return nil }
                let e = bytes[i]
                i += 1
                switch e {
                case UInt8(ascii: "\""), UInt8(ascii: "\\"), UInt8(ascii: "/"): out.append(e)
                case UInt8(ascii: "b"): out.append(0x08)
                case UInt8(ascii: "f"): out.append(0x0C)
                case UInt8(ascii: "n"): out.append(0x0A)
                case UInt8(ascii: "r"): out.append(0x0D)
                case UInt8(ascii: "t"): out.append(0x09)
                case UInt8(ascii: "u"):
                    guard var u = hex4() else { return nil }
                    if u >= 0xD800, u < 0xDC00, bytes.count - i >= 6,
                       bytes[i] == UInt8(ascii: "\\"), bytes[i + 1] == UInt8(ascii: "u") {
                        let save = i
                        i += 2
                        if let lo = hex4(), lo >= 0xDC00, lo < 0xE000 {
                            u = 0x10000 + ((u - 0xD800) << 10) + (lo - 0xDC00)
                        } else {
                            i = save
                        }
                    }
                    let scalar = Unicode.Scalar(u) ?? "\u{FFFD}"
                    out.append(contentsOf: String(Character(scalar)).utf8)
                default:
                    return nil
                }
            default:
                if c < 0x20 { return nil }
                out.append(c)
            }
        }
        return nil
    }

    /// An integer from a JSON number or numeric string ("12", "-3", "1e2", "5.0"); nil when
    /// not an integral value in Int64 range.
    static func int64(_ s: String) -> Int64? {
        if let v = Int64(s) { return v }
        guard let d = Double(s), d.isFinite, d == d.rounded(),
              d >= -9_223_372_036_854_775_808.0, d < 9_223_372_036_854_775_808.0 else { return nil }
        return Int64(d)
    }
}
