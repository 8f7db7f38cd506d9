// Byte classes and small comparisons over raw bytes. Everything here works on
// UnsafeBufferPointer<UInt8> indices so the parsers never build Strings they do not keep.

@usableFromInline let asciiCR: UInt8 = 0x0D
@usableFromInline let asciiLF: UInt8 = 0x0A
@usableFromInline let asciiSP: UInt8 = 0x20
@usableFromInline let asciiHTAB: UInt8 = 0x09
@usableFromInline let asciiColon: UInt8 = 0x3A
@usableFromInline let asciiComma: UInt8 = 0x2C
@usableFromInline let asciiSemicolon: UInt8 = 0x3B
@usableFromInline let asciiDEL: UInt8 = 0x7F

// tchar (RFC 9110 §5.6.2) as a 128-bit mask: a table lookup without an array (no bounds check, no lazy global).
private let tcharMaskLow: UInt64 = {
    var mask: UInt64 = 0
    for byte in UInt8(0)..<64 where isTcharSlow(byte) { mask |= 1 << UInt64(byte) }
    return mask
}()
private let tcharMaskHigh: UInt64 = {
    var mask: UInt64 = 0
    for byte in UInt8(64)..<128 where isTcharSlow(byte) { mask |= 1 << UInt64(byte - 64) }
    return mask
}()

private func isTcharSlow(_ b: UInt8) -> Bool {
    switch b {
    case UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"):
        return true
    default:
        return "!#$%&'*+-.^_`|~".utf8.contains(b)
    }
}

/// Precomputed masks copied into a struct so the hot loops read two registers instead of lazy globals.
struct TcharTable: Sendable {
    let low: UInt64
    let high: UInt64
    static let shared = TcharTable(low: tcharMaskLow, high: tcharMaskHigh)

    @inline(__always)
    func contains(_ b: UInt8) -> Bool {
        if b < 64 { return (low >> UInt64(b)) & 1 == 1 }
        if b < 128 { return (high >> UInt64(b &- 64)) & 1 == 1 }
        return false
    }
}

@inline(__always)
func isOWS(_ b: UInt8) -> Bool { b == asciiSP || b == asciiHTAB }

@inline(__always)
func isDigit(_ b: UInt8) -> Bool { b &- UInt8(ascii: "0") < 10 }

/// Control characters a field value may not hold (RFC 9110 §5.5): everything below SP except HTAB, and DEL.
@inline(__always)
func isForbiddenInFieldValue(_ b: UInt8) -> Bool { (b < asciiSP && b != asciiHTAB) || b == asciiDEL }

/// Whether bytes[start..<end] equals `lowercaseLiteral`, ignoring ASCII case of letters only
/// (a plain `| 0x20` would also fold CR into "-").
@inline(__always)
func equalsIgnoringCase(_ bytes: UnsafeBufferPointer<UInt8>, _ start: Int, _ end: Int, _ lowercaseLiteral: StaticString) -> Bool {
    let n = lowercaseLiteral.utf8CodeUnitCount
    guard end &- start == n else { return false }
    let literal = lowercaseLiteral.utf8Start
    var k = 0
    while k < n {
        let c = bytes[start &+ k], l = literal[k]
        if c != l {
            let isLetter = l &- UInt8(ascii: "a") < 26
            if !isLetter || (c | 0x20) != l { return false }
        }
        k &+= 1
    }
    return true
}

/// Calls `body` with each comma-separated element of bytes[start..<end], OWS trimmed (possibly empty).
@inline(__always)
func forEachListElement<E: Error>(
    _ bytes: UnsafeBufferPointer<UInt8>, _ start: Int, _ end: Int,
    _ body: (_ elementStart: Int, _ elementEnd: Int) throws(E) -> Void
) throws(E) {
    var elementStart = start
    var i = start
    while true {
        if i == end || bytes[i] == asciiComma {
            var s = elementStart, e = i
            while s < e && isOWS(bytes[s]) { s &+= 1 }
            while e > s && isOWS(bytes[e &- 1]) { e &-= 1 }
            try body(s, e)
            if i == end { return }
            elementStart = i &+ 1
        }
        i &+= 1
    }
}

@inline(__always)
func makeString(_ bytes: UnsafeBufferPointer<UInt8>, _ start: Int, _ end: Int) -> String {
    String(decoding: UnsafeBufferPointer(rebasing: bytes[start..<end]), as: UTF8.self)
}
