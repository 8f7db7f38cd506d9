import OutriderCore

/// Content-Length values above this are refused: no real body is that large, and it keeps
/// every later addition far from overflow.
let maxContentLength: UInt64 = 1 << 62

/// What the header fields say about framing and connection handling, gathered in the same pass
/// that builds `HTTPHeaders`, so no field is looked up by name afterwards.
struct FramingFacts {
    var hostCount = 0
    var contentLength: UInt64?
    var hasTransferEncoding = false
    var chunkedCount = 0
    var lastCodingIsChunked = false
    var hasOtherCoding = false
    var connectionClose = false
    var connectionKeepAlive = false
    var connectionUpgrade = false
    var hasExpect = false
    var expectIsOnlyContinue = true
    var upgrade: String?

    /// Keep-alive per RFC 9112 §9.3: 1.1 persists unless "close"; 1.0 only with "keep-alive".
    func keepAlive(_ version: HTTPVersion) -> Bool {
        if connectionClose { return false }
        return version.minor >= 1 || connectionKeepAlive
    }
}

/// Offset of the LF ending the line that starts at `start`, and where the line's content ends (before CR).
/// The section scanner guarantees an LF before the section end and no CR that is not followed by LF.
@inline(__always)
func findLineEnd(_ bytes: UnsafeBufferPointer<UInt8>, from start: Int) -> (contentEnd: Int, next: Int) {
    var i = start
    while i < bytes.count && bytes[i] != asciiLF { i &+= 1 }
    var contentEnd = i
    if contentEnd > start && bytes[contentEnd &- 1] == asciiCR { contentEnd &-= 1 }
    return (contentEnd, i &+ 1)
}

/// Parses field lines from `start` up to and including the section's final empty line.
/// With `collectFacts`, framing-relevant fields are interpreted into `facts` (heads); trailers skip that.
func parseFieldLines(
    _ bytes: UnsafeBufferPointer<UInt8>, from start: Int, expectedCount: Int,
    collectFacts: Bool, facts: inout FramingFacts
) throws(HTTP1ParseError) -> HTTPHeaders {
    let tchar = TcharTable.shared
    var headers = HTTPHeaders()
    headers.reserveCapacity(expectedCount)
    var i = start
    let count = bytes.count
    while i < count {
        let first = bytes[i]
        if first == asciiLF { break }
        if first == asciiCR { break }
        if isOWS(first) { throw .badRequest("obs-fold line folding") }

        let nameStart = i
        var j = i
        while j < count && tchar.contains(bytes[j]) { j &+= 1 }
        guard j < count else { throw .badRequest("invalid header line") }
        let nameEnd = j
        if bytes[j] != asciiColon {
            if j > i && isOWS(bytes[j]) { throw .badRequest("whitespace between header name and colon") }
            throw .badRequest("invalid header name")
        }
        if nameEnd == nameStart { throw .badRequest("empty header name") }
        j &+= 1
        while j < count && isOWS(bytes[j]) { j &+= 1 }
        let valueStart = j
        var valueEnd = j
        var orOfBytes: UInt8 = 0
        var terminator: UInt8 = 0
        while j < count {
            let b = bytes[j]
            if b > asciiSP && b != asciiDEL {
                orOfBytes |= b
                j &+= 1
                valueEnd = j
                continue
            }
            if isOWS(b) { j &+= 1; continue }
            if b == asciiLF || b == asciiCR { terminator = b; break }
            throw .badRequest("invalid character in header value")
        }
        if terminator == asciiCR {
            guard j &+ 1 < count, bytes[j &+ 1] == asciiLF else { throw .badRequest("bare CR") }
            i = j &+ 2
        } else if terminator == asciiLF {
            i = j &+ 1
        } else {
            throw .badRequest("invalid header line")
        }

        let name = makeString(bytes, nameStart, nameEnd)
        let value: String
        if orOfBytes & 0x80 != 0 {
            guard let valid = String(validating: UnsafeBufferPointer(rebasing: bytes[valueStart..<valueEnd]), as: UTF8.self) else {
                throw .badRequest("invalid header value encoding")
            }
            value = valid
        } else {
            value = makeString(bytes, valueStart, valueEnd)
        }
        if collectFacts {
            try interpret(bytes, nameStart: nameStart, nameEnd: nameEnd,
                          valueStart: valueStart, valueEnd: valueEnd, value: value, into: &facts)
        }
        headers.add(name: name, value: value)
    }
    return headers
}

/// Reads the fields that decide framing, persistence and expectations (RFC 9112 §6, §9; RFC 9110 §10.1.1).
@inline(__always)
private func interpret(
    _ bytes: UnsafeBufferPointer<UInt8>, nameStart: Int, nameEnd: Int,
    valueStart: Int, valueEnd: Int, value: String, into facts: inout FramingFacts
) throws(HTTP1ParseError) {
    switch nameEnd &- nameStart {
    case 4:
        if equalsIgnoringCase(bytes, nameStart, nameEnd, "host") { facts.hostCount &+= 1 }
    case 6:
        if equalsIgnoringCase(bytes, nameStart, nameEnd, "expect") {
            facts.hasExpect = true
            if !equalsIgnoringCase(bytes, valueStart, valueEnd, "100-continue") { facts.expectIsOnlyContinue = false }
        }
    case 7:
        if equalsIgnoringCase(bytes, nameStart, nameEnd, "upgrade") {
            if let earlier = facts.upgrade { facts.upgrade = earlier + ", " + value } else { facts.upgrade = value }
        }
    case 10:
        if equalsIgnoringCase(bytes, nameStart, nameEnd, "connection") {
            forEachListElement(bytes, valueStart, valueEnd) { (s: Int, e: Int) in
                if equalsIgnoringCase(bytes, s, e, "close") { facts.connectionClose = true }
                else if equalsIgnoringCase(bytes, s, e, "keep-alive") { facts.connectionKeepAlive = true }
                else if equalsIgnoringCase(bytes, s, e, "upgrade") { facts.connectionUpgrade = true }
            }
        }
    case 14:
        if equalsIgnoringCase(bytes, nameStart, nameEnd, "content-length") {
            try forEachListElement(bytes, valueStart, valueEnd) { (s: Int, e: Int) throws(HTTP1ParseError) in
                if s == e { throw .badRequest("invalid Content-Length") }
                var length: UInt64 = 0
                var k = s
                while k < e {
                    let d = bytes[k]
                    guard isDigit(d) else { throw .badRequest("invalid Content-Length") }
                    guard length <= maxContentLength / 10 else { throw .badRequest("Content-Length too large") }
                    length = length &* 10 &+ UInt64(d &- UInt8(ascii: "0"))
                    k &+= 1
                }
                if length > maxContentLength { throw .badRequest("Content-Length too large") }
                if let earlier = facts.contentLength, earlier != length {
                    throw .badRequest("differing Content-Length values")
                }
                facts.contentLength = length
            }
        }
    case 17:
        if equalsIgnoringCase(bytes, nameStart, nameEnd, "transfer-encoding") {
            facts.hasTransferEncoding = true
            let tchar = TcharTable.shared
            try forEachListElement(bytes, valueStart, valueEnd) { (s: Int, e: Int) throws(HTTP1ParseError) in
                if s == e { return }  // empty list elements are allowed (RFC 9110 §5.6.1)
                if equalsIgnoringCase(bytes, s, e, "chunked") {
                    facts.chunkedCount &+= 1
                    if facts.chunkedCount > 1 { throw .badRequest("chunked applied more than once") }
                    facts.lastCodingIsChunked = true
                } else {
                    var k = s
                    while k < e {
                        guard tchar.contains(bytes[k]) else { throw .badRequest("invalid Transfer-Encoding") }
                        k &+= 1
                    }
                    facts.hasOtherCoding = true
                    facts.lastCodingIsChunked = false
                }
            }
        }
    default:
        break
    }
}
