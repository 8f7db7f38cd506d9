import OutriderCore

/// What the body decoder produced from the front of a buffer.
enum BodyEvent {
    case body(Range<Int>)
    case end(trailers: HTTPHeaders)
}

/// Delimits a message body (RFC 9112 §6–7): counts Content-Length bytes, decodes chunked framing,
/// or passes everything through until the connection closes. Shared by both parsers.
///
/// Data is never copied: events are ranges of the caller's buffer. Framing elements (chunk-size lines,
/// the CRLF after chunk data, the trailer section) are consumed only once complete.
struct BodyDecoder: Sendable {
    enum State: Sendable, Equatable {
        case contentLength(remaining: UInt64)
        case chunkSizeLine
        case chunkData(remaining: UInt64)
        case chunkDataEnd
        case trailers
        case untilClose
        /// The body is complete; `.end` is due on the next call.
        case endPending
        case done
    }

    private(set) var state: State
    private var chunkLineScanned = 0
    private var trailerScanner = SectionScanner()

    init(framing: BodyFraming) {
        switch framing {
        case .none, .contentLength(0): state = .endPending
        case .contentLength(let n): state = .contentLength(remaining: n)
        case .chunked: state = .chunkSizeLine
        case .untilClose: state = .untilClose
        }
    }

    /// True once the body (and trailers) have been fully received, before or after `.end` was handed out.
    var isComplete: Bool { state == .endPending || state == .done }

    mutating func decode(
        _ bytes: UnsafeBufferPointer<UInt8>, limits: HTTP1Limits
    ) throws(HTTP1ParseError) -> (event: BodyEvent?, consumed: Int) {
        let count = bytes.count
        var offset = 0
        while true {
            switch state {
            case .contentLength(let remaining):
                let available = count &- offset
                if available == 0 { return (nil, offset) }
                let n = UInt64(available) < remaining ? available : Int(remaining)
                let left = remaining &- UInt64(n)
                state = left == 0 ? .endPending : .contentLength(remaining: left)
                return (.body(offset..<(offset &+ n)), offset &+ n)

            case .untilClose:
                let available = count &- offset
                if available == 0 { return (nil, offset) }
                return (.body(offset..<count), count)

            case .endPending:
                state = .done
                return (.end(trailers: HTTPHeaders()), offset)

            case .done:
                return (nil, offset)

            case .chunkData(let remaining):
                let available = count &- offset
                if available == 0 { return (nil, offset) }
                let n = UInt64(available) < remaining ? available : Int(remaining)
                let left = remaining &- UInt64(n)
                state = left == 0 ? .chunkDataEnd : .chunkData(remaining: left)
                return (.body(offset..<(offset &+ n)), offset &+ n)

            case .chunkDataEnd:
                let available = count &- offset
                if available == 0 { return (nil, offset) }
                let b = bytes[offset]
                if b == asciiLF {
                    offset &+= 1
                } else if b == asciiCR {
                    if available < 2 { return (nil, offset) }
                    guard bytes[offset &+ 1] == asciiLF else { throw .badRequest("chunk data not followed by CRLF") }
                    offset &+= 2
                } else {
                    throw .badRequest("chunk data not followed by CRLF")
                }
                state = .chunkSizeLine

            case .chunkSizeLine:
                guard let (size, lineLength) = try scanChunkSizeLine(
                    UnsafeBufferPointer(rebasing: bytes[offset..<count]), maxLength: limits.maxChunkLineLength)
                else { return (nil, offset) }
                offset &+= lineLength
                chunkLineScanned = 0
                if size == 0 {
                    state = .trailers
                    trailerScanner = SectionScanner()
                } else {
                    state = .chunkData(remaining: size)
                }

            case .trailers:
                let section = UnsafeBufferPointer(rebasing: bytes[offset..<count])
                let rules = SectionRules(
                    hasStartLine: false, maxBytes: limits.maxTrailerBytes, maxFieldLines: limits.maxHeaderCount,
                    maxTargetLength: Int.max, tooLargeReason: "trailer section too large")
                guard let end = try trailerScanner.scan(section, rules: rules) else { return (nil, offset) }
                var unused = FramingFacts()
                let trailers = try parseFieldLines(
                    UnsafeBufferPointer(rebasing: section[0..<end]), from: 0,
                    expectedCount: trailerScanner.fieldLines, collectFacts: false, facts: &unused)
                state = .done
                return (.end(trailers: trailers), offset &+ end)
            }
        }
    }

    /// chunk-size [ chunk-ext ] CRLF (RFC 9112 §7.1). Returns nil until the whole line is present,
    /// remembering how far it looked. The size is 1*HEXDIG with at most 16 significant digits.
    private mutating func scanChunkSizeLine(
        _ bytes: UnsafeBufferPointer<UInt8>, maxLength: Int
    ) throws(HTTP1ParseError) -> (size: UInt64, lineLength: Int)? {
        let count = bytes.count
        var i = chunkLineScanned
        var contentEnd = -1
        while i < count {
            let b = bytes[i]
            if b == asciiLF { contentEnd = i; break }
            if b == asciiCR {
                if i &+ 1 >= count { break }
                guard bytes[i &+ 1] == asciiLF else { throw .badRequest("bare CR in chunk-size line") }
                contentEnd = i
                i &+= 1
                break
            }
            if i >= maxLength { throw .badRequest("chunk-size line too long") }
            i &+= 1
        }
        guard contentEnd >= 0 else {
            chunkLineScanned = i
            return nil
        }
        let lineLength = i &+ 1

        var k = 0
        var size: UInt64 = 0
        var significantDigits = 0
        while k < contentEnd {
            let b = bytes[k]
            let value: UInt8
            switch b {
            case UInt8(ascii: "0")...UInt8(ascii: "9"): value = b &- UInt8(ascii: "0")
            case UInt8(ascii: "a")...UInt8(ascii: "f"): value = b &- UInt8(ascii: "a") &+ 10
            case UInt8(ascii: "A")...UInt8(ascii: "F"): value = b &- UInt8(ascii: "A") &+ 10
            default: value = 0xFF
            }
            if value == 0xFF { break }
            if size != 0 || value != 0 { significantDigits &+= 1 }
            if significantDigits > 16 { throw .badRequest("chunk size too large") }
            size = (size << 4) | UInt64(value)
            k &+= 1
        }
        if k == 0 { throw .badRequest("invalid chunk size") }
        if k < contentEnd {
            // chunk-ext = *( BWS ";" BWS name [ BWS "=" BWS value ] ): skipped, but no control bytes.
            while k < contentEnd && isOWS(bytes[k]) { k &+= 1 }
            guard k < contentEnd, bytes[k] == asciiSemicolon else { throw .badRequest("invalid chunk size") }
            while k < contentEnd {
                if isForbiddenInFieldValue(bytes[k]) { throw .badRequest("invalid chunk extension") }
                k &+= 1
            }
        }
        return (size, lineLength)
    }
}
