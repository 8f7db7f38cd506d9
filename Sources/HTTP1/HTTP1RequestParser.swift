import OutriderCore

/// What the request parser found at the front of the buffer.
public enum HTTP1RequestEvent: Sendable {
    /// A complete request head. `framing` says how the body is delimited; `keepAlive` whether the
    /// connection may carry another request afterwards; `expectsContinue` whether the client waits for
    /// "100 Continue"; `upgrade` the Upgrade value when Connection lists "upgrade".
    case head(RequestHead, framing: BodyFraming, keepAlive: Bool, expectsContinue: Bool, upgrade: String?)
    /// Body bytes: a range within the buffer passed to this `parse` call (not copied).
    case body(Range<Int>)
    /// The message is complete; the parser is ready for the next request.
    case end(trailers: HTTPHeaders)
}

/// An HTTP/1.0–1.1 request parser as a pure state machine: no I/O, no copies of body data.
///
/// The caller owns the bytes. Call `parse` with everything received and not yet consumed, drop
/// `consumed` bytes from the front, and call again until the event is nil; then read more.
/// Heads, chunk-size lines and trailers are consumed all at once; while incomplete the parser
/// returns `(nil, 0)` for them but remembers how far it looked, so slow senders cost linear time.
/// After a throw the parser stays failed (every later call rethrows); close the connection.
public struct HTTP1RequestParser: Sendable {
    private enum Phase: Sendable {
        case head
        case body
    }

    private let limits: HTTP1Limits
    private let headRules: SectionRules
    private var phase = Phase.head
    private var scanner = SectionScanner()
    private var decoder = BodyDecoder(framing: .none)
    private var failure: HTTP1ParseError?

    /// A parser waiting for its first request.
    public init(limits: HTTP1Limits = HTTP1Limits()) {
        self.limits = limits
        headRules = SectionRules(
            hasStartLine: true, maxBytes: limits.maxHeaderBytes, maxFieldLines: limits.maxHeaderCount,
            maxTargetLength: limits.maxURILength, tooLargeReason: "request header section too large")
    }

    /// True between messages: nothing of a next request has been consumed or scanned yet.
    public var isIdle: Bool { failure == nil && phase == .head && scanner.scanned == 0 }

    /// True while a request head has started arriving but is not complete (the header-read timeout applies).
    public var isReadingHead: Bool { failure == nil && phase == .head && scanner.scanned > 0 }

    /// Parses at most one event from the front of `buffer` and returns it with the number of bytes
    /// consumed from the front. A nil event means more bytes are needed (after dropping `consumed`).
    /// Body ranges index into `buffer` and always lie within the consumed prefix.
    public mutating func parse(_ buffer: UnsafeRawBufferPointer) throws(HTTP1ParseError) -> (event: HTTP1RequestEvent?, consumed: Int) {
        if let failure { throw failure }
        let bytes = UnsafeBufferPointer(start: buffer.baseAddress?.assumingMemoryBound(to: UInt8.self), count: buffer.count)
        do throws(HTTP1ParseError) {
            switch phase {
            case .head:
                return try parseHead(bytes)
            case .body:
                let (event, consumed) = try decoder.decode(bytes, limits: limits)
                switch event {
                case .body(let range)?:
                    return (.body(range), consumed)
                case .end(let trailers)?:
                    phase = .head
                    scanner = SectionScanner()
                    return (.end(trailers: trailers), consumed)
                case nil:
                    return (nil, consumed)
                }
            }
        } catch {
            failure = error
            throw error
        }
    }

    private mutating func parseHead(_ bytes: UnsafeBufferPointer<UInt8>) throws(HTTP1ParseError) -> (event: HTTP1RequestEvent?, consumed: Int) {
        guard let headEnd = try scanner.scan(bytes, rules: headRules) else { return (nil, 0) }
        let head = UnsafeBufferPointer(rebasing: bytes[0..<headEnd])
        let line = try parseRequestLine(head, from: scanner.sectionStart, maxTargetLength: limits.maxURILength)
        var facts = FramingFacts()
        let headers = try parseFieldLines(
            head, from: line.next, expectedCount: scanner.fieldLines, collectFacts: true, facts: &facts)
        let version = line.version

        if facts.hostCount > 1 { throw .badRequest("multiple Host headers") }
        if facts.hostCount == 0 && version.minor >= 1 { throw .badRequest("missing Host header") }

        // RFC 9112 §6.1–6.3: only "chunked" as the final coding frames a request; anything
        // ambiguous is refused rather than guessed, because a guess is how smuggling starts.
        let framing: BodyFraming
        if facts.hasTransferEncoding {
            if facts.contentLength != nil { throw .badRequest("Content-Length with Transfer-Encoding") }
            if version.minor == 0 { throw .badRequest("Transfer-Encoding in HTTP/1.0 request") }
            if !facts.lastCodingIsChunked { throw .badRequest("final transfer-coding is not chunked") }
            if facts.hasOtherCoding { throw .notImplemented("transfer-coding other than chunked") }
            framing = .chunked
        } else if let length = facts.contentLength {
            framing = .contentLength(length)
        } else {
            framing = .none
        }

        var expectsContinue = false
        if facts.hasExpect && version.minor >= 1 {
            guard facts.expectIsOnlyContinue else { throw .expectationFailed }
            expectsContinue = true
        }

        let requestHead = RequestHead(method: line.method, target: line.target, version: version, headers: headers)
        phase = .body
        decoder = BodyDecoder(framing: framing)
        return (.head(requestHead, framing: framing, keepAlive: facts.keepAlive(version),
                      expectsContinue: expectsContinue, upgrade: facts.connectionUpgrade ? facts.upgrade : nil),
                headEnd)
    }
}
