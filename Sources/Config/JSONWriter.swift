/// A minimal JSON writer for GET /config. Callers build objects in order; nothing here
/// validates structure, it only guarantees every string is escaped.
enum JSONWriter {
    /// `"text"` with quotes, backslashes and control characters escaped (RFC 8259 §7).
    static func quote(_ text: String) -> String {
        var out = "\""
        out.reserveCapacity(text.utf8.count + 2)
        for scalar in text.unicodeScalars {
            switch scalar {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            case "\u{08}": out += "\\b"
            case "\u{0C}": out += "\\f"
            // U+2028/2029 are valid JSON but break JavaScript string literals.
            case "\u{2028}": out += "\\u2028"
            case "\u{2029}": out += "\\u2029"
            default:
                if scalar.value < 0x20 || scalar.value == 0x7F {
                    out += "\\u00" + hexByte(UInt8(truncatingIfNeeded: scalar.value))
                } else {
                    out.unicodeScalars.append(scalar)
                }
            }
        }
        out += "\""
        return out
    }

    private static func hexByte(_ b: UInt8) -> String {
        let digits = Array("0123456789abcdef")
        return String([digits[Int(b >> 4)], digits[Int(b & 0x0f)]])
    }

    /// A JSON number; NaN and infinities (which YAML allows) have no JSON form and become null.
    static func number(_ d: Double) -> String {
        guard d.isFinite else { return "null" }
        if d == d.rounded(), abs(d) < 1e15 { return String(Int64(d)) }
        return "\(d)"
    }

    /// Renders a `ConfigNode` as JSON (filter settings).
    static func render(_ node: ConfigNode) -> String {
        switch node.value {
        case .null: return "null"
        case let .bool(b): return b ? "true" : "false"
        case let .int(i): return String(i)
        case let .double(d): return number(d)
        case let .string(s): return quote(s)
        case let .list(items): return "[" + items.map(render).joined(separator: ",") + "]"
        case let .map(entries):
            return "{" + entries.map { quote($0.key) + ":" + render($0.value) }.joined(separator: ",") + "}"
        }
    }

    /// `{"k":v,...}` from already-rendered values, in the given order.
    static func object(_ pairs: [(String, String)]) -> String {
        "{" + pairs.map { quote($0.0) + ":" + $0.1 }.joined(separator: ",") + "}"
    }

    static func array(_ items: [String]) -> String {
        "[" + items.joined(separator: ",") + "]"
    }
}
