/// A YAML node kept for a filter to parse later, with its position for file:line errors.
///
/// Scalars are typed with the YAML 1.2 core schema, not YAML 1.1: only `true`/`false` are
/// booleans, so `mode: off` or `path: no` stay strings. Quoted scalars are always strings.
public struct ConfigNode: Sendable, Equatable {
    public enum Value: Sendable, Equatable {
        case null
        case bool(Bool)
        case int(Int)
        case double(Double)
        case string(String)
        case list([ConfigNode])
        case map([(key: String, value: ConfigNode)])

        // Written by hand because tuples are not Equatable.
        public static func == (lhs: Value, rhs: Value) -> Bool {
            switch (lhs, rhs) {
            case (.null, .null): return true
            case let (.bool(a), .bool(b)): return a == b
            case let (.int(a), .int(b)): return a == b
            case let (.double(a), .double(b)): return a == b
            case let (.string(a), .string(b)): return a == b
            case let (.list(a), .list(b)): return a == b
            case let (.map(a), .map(b)):
                guard a.count == b.count else { return false }
                for (x, y) in zip(a, b) where x.key != y.key || x.value != y.value { return false }
                return true
            default: return false
            }
        }
    }

    public var value: Value
    public var file: String
    /// 1-based; 0 when built in code.
    public var line: Int
    /// 1-based; 0 when built in code.
    public var column: Int
    /// Positions of the keys of a map (a value's own position may be on a later line,
    /// e.g. a nested block map), so errors about a key point at the key.
    var keyPositions: [String: Position] = [:]

    struct Position: Sendable, Equatable {
        var line: Int
        var column: Int
    }

    public init(value: Value, file: String = "", line: Int = 0, column: Int = 0) {
        self.value = value
        self.file = file
        self.line = line
        self.column = column
    }

    // Positions of keys are derived data; two trees with equal values and node marks are equal.
    public static func == (lhs: ConfigNode, rhs: ConfigNode) -> Bool {
        lhs.value == rhs.value && lhs.file == rhs.file && lhs.line == rhs.line && lhs.column == rhs.column
    }

    /// The value for `key` when this is a map.
    public subscript(key: String) -> ConfigNode? {
        guard case let .map(entries) = value else { return nil }
        for entry in entries where entry.key == key { return entry.value }
        return nil
    }

    /// The keys of a map, in file order; empty for anything else.
    public var keys: [String] {
        guard case let .map(entries) = value else { return [] }
        return entries.map(\.key)
    }

    /// The entries of a map, in file order.
    public var mapEntries: [(key: String, value: ConfigNode)]? {
        if case let .map(entries) = value { return entries }
        return nil
    }

    /// The items of a list.
    public var listValue: [ConfigNode]? {
        if case let .list(items) = value { return items }
        return nil
    }

    public var stringValue: String? {
        if case let .string(s) = value { return s }
        return nil
    }

    public var intValue: Int? {
        if case let .int(i) = value { return i }
        return nil
    }

    /// A double, or an int converted to double.
    public var doubleValue: Double? {
        switch value {
        case let .double(d): return d
        case let .int(i): return Double(i)
        default: return nil
        }
    }

    public var boolValue: Bool? {
        if case let .bool(b) = value { return b }
        return nil
    }

    public var isNull: Bool {
        if case .null = value { return true }
        return false
    }

    /// Line of `key` in this map (falls back to the value's line, then the map's).
    public func line(ofKey key: String) -> Int {
        if let p = keyPositions[key] { return p.line }
        return self[key]?.line ?? line
    }

    /// A short name of the node's kind for "must be a …" messages.
    public var kindDescription: String {
        switch value {
        case .null: return "null"
        case .bool: return "a boolean"
        case .int: return "an integer"
        case .double: return "a number"
        case .string: return "a string"
        case .list: return "a list"
        case .map: return "a map"
        }
    }
}

// MARK: - Core-schema scalar typing

extension ConfigNode.Value {
    /// Types a plain (unquoted, untagged) scalar with the YAML 1.2 core schema.
    static func fromPlainScalar(_ s: String) -> ConfigNode.Value {
        switch s {
        case "", "~", "null", "Null", "NULL": return .null
        case "true", "True", "TRUE": return .bool(true)
        case "false", "False", "FALSE": return .bool(false)
        case ".inf", ".Inf", ".INF", "+.inf", "+.Inf", "+.INF": return .double(.infinity)
        case "-.inf", "-.Inf", "-.INF": return .double(-.infinity)
        case ".nan", ".NaN", ".NAN": return .double(.nan)
        default: break
        }
        if let i = parseCoreInt(s) { return .int(i) }
        if isCoreFloat(s), let d = Double(s) { return .double(d) }
        return .string(s)
    }

    /// `[-+]?[0-9]+`, `0o[0-7]+`, `0x[0-9a-fA-F]+`. Out-of-range integers stay strings
    /// rather than silently becoming something else.
    private static func parseCoreInt(_ s: String) -> Int? {
        let u = Array(s.utf8)
        guard !u.isEmpty else { return nil }
        if u.count > 2 && u[0] == UInt8(ascii: "0") {
            if u[1] == UInt8(ascii: "x") { return Int(String(decoding: u[2...], as: UTF8.self), radix: 16) }
            if u[1] == UInt8(ascii: "o") { return Int(String(decoding: u[2...], as: UTF8.self), radix: 8) }
        }
        var start = 0
        if u[0] == UInt8(ascii: "-") || u[0] == UInt8(ascii: "+") { start = 1 }
        guard start < u.count else { return nil }
        for c in u[start...] where c < UInt8(ascii: "0") || c > UInt8(ascii: "9") { return nil }
        return Int(s)
    }

    /// `[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?`
    private static func isCoreFloat(_ s: String) -> Bool {
        let u = Array(s.utf8)
        var i = 0
        func digits() -> Int {
            let start = i
            while i < u.count, u[i] >= UInt8(ascii: "0"), u[i] <= UInt8(ascii: "9") { i += 1 }
            return i - start
        }
        if i < u.count, u[i] == UInt8(ascii: "-") || u[i] == UInt8(ascii: "+") { i += 1 }
        var mantissa = digits()
        if i < u.count, u[i] == UInt8(ascii: ".") {
            i += 1
            mantissa += digits()
        }
        guard mantissa > 0 else { return false }
        if i < u.count, u[i] == UInt8(ascii: "e") || u[i] == UInt8(ascii: "E") {
            i += 1
            if i < u.count, u[i] == UInt8(ascii: "-") || u[i] == UInt8(ascii: "+") { i += 1 }
            guard digits() > 0 else { return false }
        }
        return i == u.count
    }
}
