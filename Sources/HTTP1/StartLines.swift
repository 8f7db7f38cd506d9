import OutriderCore

/// request-line = method SP request-target SP HTTP-version (RFC 9112 §3), parsed strictly:
/// exactly one SP between parts, a target of visible ASCII only, a version of exactly "HTTP/" DIGIT "." DIGIT.
/// Returns the offset of the first field line.
func parseRequestLine(
    _ bytes: UnsafeBufferPointer<UInt8>, from start: Int, maxTargetLength: Int
) throws(HTTP1ParseError) -> (method: String, target: String, version: HTTPVersion, next: Int) {
    let tchar = TcharTable.shared
    let count = bytes.count
    var i = start
    while i < count && tchar.contains(bytes[i]) { i &+= 1 }
    guard i > start, i < count, bytes[i] == asciiSP else { throw .badRequest("invalid method") }
    let method = makeString(bytes, start, i)

    i &+= 1
    let targetStart = i
    while i < count {
        let b = bytes[i]
        if b > asciiSP && b < asciiDEL { i &+= 1 } else { break }
    }
    let targetEnd = i
    if targetEnd &- targetStart > maxTargetLength { throw .uriTooLong }
    guard i < count else { throw .badRequest("malformed request-line") }
    switch bytes[i] {
    case asciiSP:
        if targetEnd == targetStart { throw .badRequest("empty request-target") }
    case asciiCR, asciiLF:
        throw .badRequest("malformed request-line")
    default:
        throw .badRequest("invalid character in request-target")
    }
    let target = makeString(bytes, targetStart, targetEnd)

    let (contentEnd, next) = findLineEnd(bytes, from: i &+ 1)
    let version = try parseVersion(bytes, i &+ 1, contentEnd)
    guard version.major == 1 && version.minor <= 1 else { throw .unsupportedVersion }
    return (method, target, version, next)
}

/// "HTTP/" DIGIT "." DIGIT, case-sensitive (RFC 9112 §2.3); anything else is malformed.
@inline(__always)
private func parseVersion(_ bytes: UnsafeBufferPointer<UInt8>, _ start: Int, _ end: Int) throws(HTTP1ParseError) -> HTTPVersion {
    guard end &- start == 8,
          bytes[start] == UInt8(ascii: "H"), bytes[start &+ 1] == UInt8(ascii: "T"),
          bytes[start &+ 2] == UInt8(ascii: "T"), bytes[start &+ 3] == UInt8(ascii: "P"),
          bytes[start &+ 4] == UInt8(ascii: "/"), isDigit(bytes[start &+ 5]),
          bytes[start &+ 6] == UInt8(ascii: "."), isDigit(bytes[start &+ 7])
    else { throw .badRequest("malformed HTTP version") }
    return HTTPVersion(major: Int(bytes[start &+ 5] &- UInt8(ascii: "0")), minor: Int(bytes[start &+ 7] &- UInt8(ascii: "0")))
}

/// status-line = HTTP-version SP 3DIGIT SP [reason-phrase] (RFC 9112 §4). A missing SP before an
/// empty reason is tolerated; reason bytes that are not UTF-8 are repaired (the reason is informational).
func parseStatusLine(
    _ bytes: UnsafeBufferPointer<UInt8>, from start: Int
) throws(HTTP1ParseError) -> (status: Int, reason: String, version: HTTPVersion, next: Int) {
    let (contentEnd, next) = findLineEnd(bytes, from: start)
    guard contentEnd &- start >= 12 else { throw .badRequest("malformed status-line") }
    let version = try parseVersion(bytes, start, start &+ 8)
    guard version.major == 1 else { throw .unsupportedVersion }
    var i = start &+ 8
    guard bytes[i] == asciiSP else { throw .badRequest("malformed status-line") }
    i &+= 1
    var status = 0
    for _ in 0..<3 {
        let d = bytes[i]
        guard isDigit(d) else { throw .badRequest("malformed status code") }
        status = status &* 10 &+ Int(d &- UInt8(ascii: "0"))
        i &+= 1
    }
    guard status >= 100 else { throw .badRequest("malformed status code") }
    var reason = ""
    if i < contentEnd {
        guard bytes[i] == asciiSP else { throw .badRequest("malformed status-line") }
        i &+= 1
        var k = i
        while k < contentEnd {
            if isForbiddenInFieldValue(bytes[k]) { throw .badRequest("invalid character in reason phrase") }
            k &+= 1
        }
        reason = makeString(bytes, i, contentEnd)
    }
    return (status, reason, version, next)
}
