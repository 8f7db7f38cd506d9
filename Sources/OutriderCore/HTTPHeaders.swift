/// An ordered list of header fields, as received. Names keep their original case;
/// look-ups compare names ASCII-case-insensitively (RFC 9110 §5.1).
public struct HTTPHeaders: Sendable, Sequence {
    public typealias Field = (name: String, value: String)
    public private(set) var fields: [Field]

    public init() { fields = [] }
    public init(_ fields: [Field]) { self.fields = fields }

    public var count: Int { fields.count }
    public var isEmpty: Bool { fields.isEmpty }
    public func makeIterator() -> IndexingIterator<[Field]> { fields.makeIterator() }

    public mutating func add(name: String, value: String) { fields.append((name, value)) }
    public mutating func reserveCapacity(_ n: Int) { fields.reserveCapacity(n) }

    /// First value for `name`, or nil.
    public func first(_ name: String) -> String? {
        for f in fields where f.name.asciiCaseInsensitiveEquals(name) { return f.value }
        return nil
    }
    /// Every value for `name`, in order.
    public func values(_ name: String) -> [String] {
        fields.compactMap { $0.name.asciiCaseInsensitiveEquals(name) ? $0.value : nil }
    }
    public func contains(_ name: String) -> Bool { first(name) != nil }

    /// Removes every field named `name`.
    public mutating func remove(_ name: String) {
        fields.removeAll { $0.name.asciiCaseInsensitiveEquals(name) }
    }
    /// Removes every field whose name satisfies `predicate` (names as received).
    public mutating func removeAll(where predicate: (String) -> Bool) {
        fields.removeAll { predicate($0.name) }
    }
    /// Replaces every field named `name` by one field with `value`.
    public mutating func set(_ name: String, _ value: String) {
        remove(name)
        fields.append((name, value))
    }
}

extension String {
    /// ASCII case-insensitive comparison; header names and tokens are ASCII.
    @inlinable
    public func asciiCaseInsensitiveEquals(_ other: String) -> Bool {
        // Different lengths never match; for native strings the count is O(1).
        guard utf8.count == other.utf8.count else { return false }
        var a = self.utf8.makeIterator()
        var b = other.utf8.makeIterator()
        while true {
            let x = a.next(), y = b.next()
            switch (x, y) {
            case (nil, nil): return true
            case (nil, _), (_, nil): return false
            case let (x?, y?):
                if x == y { continue }
                if (x | 0x20) != (y | 0x20) { return false }
                let l = x | 0x20
                if l < UInt8(ascii: "a") || l > UInt8(ascii: "z") { return false }
            }
        }
    }

    /// ASCII lowercase copy (header names, tokens).
    public var asciiLowercased: String {
        var needs = false
        for c in utf8 where c >= UInt8(ascii: "A") && c <= UInt8(ascii: "Z") { needs = true; break }
        if !needs { return self }
        return String(decoding: utf8.map { ($0 >= 65 && $0 <= 90) ? $0 | 0x20 : $0 }, as: UTF8.self)
    }
}
