/// Byte helpers. Rule files are read as ISO-8859-1 so every byte survives in a `String`
/// (patterns carry raw bytes ≥ 0x80); request data is kept as bytes.

extension String {
    /// One byte per scalar (the inverse of `init(latin1:)`); scalars above 0xFF are truncated.
    var latin1: Bytes {
        if !utf8.contains(where: { $0 >= 0x80 }) { return Array(utf8) }
        return unicodeScalars.map { UInt8(truncatingIfNeeded: $0.value) }
    }

    init<S: Sequence>(latin1 bytes: S) where S.Element == UInt8 {
        if let c = bytes.withContiguousStorageIfAvailable({ b -> String? in
            b.contains(where: { $0 >= 0x80 }) ? nil : String(decoding: b, as: UTF8.self)
        }), let c { self = c; return }
        var s = ""
        s.unicodeScalars.append(contentsOf: bytes.map { Unicode.Scalar($0) })
        self = s
    }

    var asciiLowercased: String {
        if !utf8.contains(where: { $0 >= 65 && $0 <= 90 }) { return self }
        var s = ""
        s.unicodeScalars.append(contentsOf: unicodeScalars.map { ($0.value >= 65 && $0.value <= 90) ? Unicode.Scalar($0.value + 32)! : $0 })
        return s
    }
    var asciiUppercased: String {
        var s = ""
        s.unicodeScalars.append(contentsOf: unicodeScalars.map { ($0.value >= 97 && $0.value <= 122) ? Unicode.Scalar($0.value - 32)! : $0 })
        return s
    }
}

@inline(__always) func lowerByte(_ c: UInt8) -> UInt8 { (c >= 65 && c <= 90) ? c | 0x20 : c }

func asciiLower(_ b: Bytes) -> Bytes {
    if !b.contains(where: { $0 >= 65 && $0 <= 90 }) { return b }
    return b.map(lowerByte)
}

/// Lowercased key as a String for case-insensitive key lookups.
func keyString(_ b: Bytes) -> String { String(latin1: asciiLower(b)) }

func hexValue(_ c: UInt8) -> UInt8? {
    switch c {
    case 48...57: return c - 48
    case 65...70: return c - 55
    case 97...102: return c - 87
    default: return nil
    }
}

func isHex(_ c: UInt8) -> Bool { hexValue(c) != nil }

/// C isspace plus what ModSecurity's whitespace transformations treat as space.
@inline(__always) func isSpaceByte(_ c: UInt8) -> Bool { c == 32 || (c >= 9 && c <= 13) }

/// Leading decimal integer like atoi (optional sign, stops at the first non-digit, 0 if none).
func parseLeadingInt(_ b: Bytes) -> Int { b.withUnsafeBufferPointer { parseLeadingInt($0) } }

func parseLeadingInt(_ b: UnsafeBufferPointer<UInt8>) -> Int {
    var i = 0
    while i < b.count, isSpaceByte(b[i]) { i += 1 }
    var neg = false
    if i < b.count, b[i] == UInt8(ascii: "-") || b[i] == UInt8(ascii: "+") { neg = b[i] == UInt8(ascii: "-"); i += 1 }
    var v = 0
    while i < b.count, b[i] >= 48, b[i] <= 57 {
        let (m, o1) = v.multipliedReportingOverflow(by: 10)
        let (a, o2) = m.addingReportingOverflow(Int(b[i] - 48))
        if o1 || o2 { return neg ? Int.min : Int.max }
        v = a; i += 1
    }
    return neg ? -v : v
}

func bytesContains(_ hay: Bytes, _ needle: Bytes) -> Bool { bytesFind(hay, needle) != nil }

func bytesFind(_ hay: Bytes, _ needle: Bytes) -> Int? {
    hay.withUnsafeBufferPointer { h in needle.withUnsafeBufferPointer { n in bytesFind(h, n) } }
}

/// The offset of the first occurrence of `n` in `h` (0 for an empty needle), or nil.
func bytesFind(_ h: UnsafeBufferPointer<UInt8>, _ n: UnsafeBufferPointer<UInt8>) -> Int? {
    if n.isEmpty { return 0 }
    if n.count > h.count { return nil }
    let first = n[0]
    let last = h.count - n.count
    var i = 0
    while i <= last {
        if h[i] == first {
            var j = 1
            while j < n.count, h[i + j] == n[j] { j += 1 }
            if j == n.count { return i }
        }
        i += 1
    }
    return nil
}

extension Int {
    /// Decimal digits (with a leading '-'), without going through String.
    var bytes: Bytes {
        // Scores, counts and lengths are mostly small: shared arrays, no allocation.
        if self >= 0 && self < Int.smallDecimals.count { return Int.smallDecimals[self] }
        return Int.decimal(self)
    }

    private static func decimal(_ n: Int) -> Bytes {
        var out = Bytes()
        var m = n.magnitude
        repeat { out.append(UInt8(48 + m % 10)); m /= 10 } while m > 0
        if n < 0 { out.append(45) }
        out.reverse()
        return out
    }

    /// The digits of 0 ..< 1024.
    private static let smallDecimals: [Bytes] = (0..<1024).map(decimal)
}
