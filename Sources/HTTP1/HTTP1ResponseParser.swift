import OutriderCore

/// What the response parser found at the front of the buffer.
public enum HTTP1ResponseEvent: Sendable {
    /// A response head. Interim 1xx heads (100, 103…) are delivered too, with framing `.none` and no
    /// `.end`; after one (other than 101) the parser expects another head. 101 is final: the caller
    /// switches to tunnelling, as it does for a 2xx answer to CONNECT.
    case head(ResponseHead, framing: BodyFraming, keepAlive: Bool)
    /// Body bytes: a range within the buffer passed to this `parse` call (not copied).
    case body(Range<Int>)
    /// The response is complete.
    case end(trailers: HTTPHeaders)
}

/// An HTTP/1.x response parser as a pure state machine, with the same calling convention as
/// `HTTP1RequestParser`. Framing depends on the request, so call `expectResponse(toMethod:)` first.
/// Errors mean the upstream broke the protocol: map them with `outriderError(source: .upstream)`.
public struct HTTP1ResponseParser: Sendable {
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
    private var requestWasHead = false
    private var requestWasConnect = false
    private var sawInterimHead = false

    /// A parser waiting for a response; framing defaults to that of a GET until `expectResponse` is called.
    public init(limits: HTTP1Limits = HTTP1Limits()) {
        self.limits = limits
        headRules = SectionRules(
            hasStartLine: true, maxBytes: limits.maxHeaderBytes, maxFieldLines: limits.maxHeaderCount,
            maxTargetLength: Int.max, tooLargeReason: "response header section too large")
    }

    /// Call before each response with the method of the request it answers:
    /// HEAD means no body whatever the headers say; a 2xx to CONNECT means no body and a tunnel.
    public mutating func expectResponse(toMethod method: String) {
        requestWasHead = method == "HEAD"
        requestWasConnect = method == "CONNECT"
    }

    /// True between responses: nothing of a next response has been consumed or scanned yet.
    public var isIdle: Bool { failure == nil && phase == .head && scanner.scanned == 0 && !sawInterimHead }

    /// Parses at most one event from the front of `buffer`; same contract as `HTTP1RequestParser.parse`.
    public mutating func parse(_ buffer: UnsafeRawBufferPointer) throws(HTTP1ParseError) -> (event: HTTP1ResponseEvent?, consumed: Int) {
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
                    resetForNextResponse()
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

    /// The upstream closed its side. For `.untilClose` framing this ends the body (`.end` with no
    /// trailers); between responses it returns nil; anywhere else the response is truncated and this
    /// throws `.badRequest("truncated response")`. Call it after `parse` has returned nil.
    public mutating func finish() throws(HTTP1ParseError) -> HTTP1ResponseEvent? {
        if let failure { throw failure }
        switch phase {
        case .head:
            if scanner.hasOnlyEmptyLines && !sawInterimHead { return nil }
        case .body:
            if decoder.state == .untilClose || decoder.isComplete {
                resetForNextResponse()
                return .end(trailers: HTTPHeaders())
            }
        }
        let error = HTTP1ParseError.badRequest("truncated response")
        failure = error
        throw error
    }

    private mutating func resetForNextResponse() {
        phase = .head
        scanner = SectionScanner()
        sawInterimHead = false
        requestWasHead = false
        requestWasConnect = false
    }

    private mutating func parseHead(_ bytes: UnsafeBufferPointer<UInt8>) throws(HTTP1ParseError) -> (event: HTTP1ResponseEvent?, consumed: Int) {
        guard let headEnd = try scanner.scan(bytes, rules: headRules) else { return (nil, 0) }
        let head = UnsafeBufferPointer(rebasing: bytes[0..<headEnd])
        let line = try parseStatusLine(head, from: scanner.sectionStart)
        var facts = FramingFacts()
        let headers = try parseFieldLines(
            head, from: line.next, expectedCount: scanner.fieldLines, collectFacts: true, facts: &facts)
        let status = line.status

        // A response carrying both cannot be framed safely in either reading (RFC 9112 §6.3 rule 3).
        if facts.hasTransferEncoding && facts.contentLength != nil {
            throw .badRequest("Content-Length with Transfer-Encoding")
        }
        let framing: BodyFraming
        if status < 200 || status == 204 || status == 304 || requestWasHead {
            framing = .none
        } else if requestWasConnect && status < 300 {
            framing = .none
        } else if facts.hasTransferEncoding {
            framing = facts.lastCodingIsChunked ? .chunked : .untilClose
        } else if let length = facts.contentLength {
            framing = .contentLength(length)
        } else {
            framing = .untilClose
        }
        // HTTP/1.0 messages with Transfer-Encoding have faulty framing (RFC 9112 §6.1): close after.
        let keepAlive = framing != .untilClose && facts.keepAlive(line.version)
            && !(line.version.minor == 0 && facts.hasTransferEncoding)

        let responseHead = ResponseHead(status: status, reason: line.reason, version: line.version, headers: headers)
        if status < 200 && status != 101 {
            // Interim: the final head follows; scan it from scratch.
            sawInterimHead = true
            scanner = SectionScanner()
        } else {
            phase = .body
            decoder = BodyDecoder(framing: framing)
        }
        return (.head(responseHead, framing: framing, keepAlive: keepAlive), headEnd)
    }
}
