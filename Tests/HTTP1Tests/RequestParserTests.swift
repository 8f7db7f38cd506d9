import HTTP1
import OutriderCore
import Testing

@Suite struct RequestParsing {
    @Test func simpleGetYieldsHeadWithoutBodyThenEnd() throws {
        let result = parseRequests("GET /a/b?x=1 HTTP/1.1\r\nHost: example.com\r\nAccept:  */*  \r\n\r\n")
        #expect(result.error == nil)
        let request = try #require(result.requests.first)
        #expect(request.head.method == "GET")
        #expect(request.head.target == "/a/b?x=1")
        #expect(request.head.version == .http11)
        #expect(request.head.headers.pairs == ["Host: example.com", "Accept: */*"])
        #expect(request.framing == .none)
        #expect(request.keepAlive)
        #expect(!request.expectsContinue)
        #expect(request.upgrade == nil)
        #expect(request.trailers?.isEmpty == true)
        #expect(result.parser.isIdle)
    }

    @Test func headerValuesAreTrimmedButInnerWhitespaceKept() throws {
        let result = parseRequests("GET / HTTP/1.1\r\nHost: a\r\nX-A: \t one  two \t\r\nX-Empty:\r\n\r\n")
        let request = try #require(result.requests.first)
        #expect(request.head.headers.pairs == ["Host: a", "X-A: one  two", "X-Empty: "])
    }

    @Test func utf8HeaderValuesAreAccepted() throws {
        let result = parseRequests("GET / HTTP/1.1\r\nHost: a\r\nX-Name: Zoë ✓\r\n\r\n")
        #expect(result.requests.first?.head.headers.first("x-name") == "Zoë ✓")
    }

    @Test func contentLengthBodyIsDeliveredThenEnd() throws {
        let result = parseRequests("POST /p HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello")
        let request = try #require(result.requests.first)
        #expect(request.framing == .contentLength(5))
        #expect(request.body.text == "hello")
        #expect(request.trailers != nil)
    }

    @Test func bodyRangesPointIntoTheCallersBufferWithoutCopying() throws {
        var parser = HTTP1RequestParser()
        let bytes = Array("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabcGET".utf8)
        try bytes.withUnsafeBytes { buffer in
            let (head, headLength) = try parser.parse(buffer)
            guard case .head? = head else { Issue.record("expected head"); return }
            let rest = UnsafeRawBufferPointer(rebasing: buffer[headLength...])
            let (body, consumed) = try parser.parse(rest)
            guard case .body(let range)? = body else { Issue.record("expected body"); return }
            #expect(range == 0..<3)
            #expect(consumed == 3)
            #expect(Array(rest[range]) == Array("abc".utf8))
        }
    }

    @Test func postWithoutLengthHasNoBody() throws {
        let result = parseRequests("POST /p HTTP/1.1\r\nHost: a\r\n\r\n")
        #expect(result.requests.first?.framing == BodyFraming.none)
        #expect(result.requests.first?.trailers != nil)
    }

    @Test func pipelinedRequestsAreParsedInOrder() throws {
        let stream = "GET /1 HTTP/1.1\r\nHost: a\r\n\r\n"
            + "POST /2 HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\n\r\nabcd"
            + "PUT /3 HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nxyz\r\n0\r\n\r\n"
            + "GET /4 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"
        let result = parseRequests(stream)
        #expect(result.error == nil)
        #expect(result.requests.map(\.head.target) == ["/1", "/2", "/3", "/4"])
        #expect(result.requests.map { $0.body.text } == ["", "abcd", "xyz", ""])
        #expect(result.requests.map(\.keepAlive) == [true, true, true, false])
        #expect(result.requests.allSatisfy { $0.trailers != nil })
    }

    @Test func chunkedBodyWithExtensionsAndTrailers() throws {
        let stream = "POST /up HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
            + "5;name=value;flag\r\nhello\r\n"
            + "00006 ; ext=\"quoted\"\r\n world\r\n"
            + "A\r\n0123456789\r\n"
            + "0\r\nX-Checksum: abc\r\nX-Other:  two \r\n\r\n"
        let result = parseRequests(stream)
        #expect(result.error == nil)
        let request = try #require(result.requests.first)
        #expect(request.framing == .chunked)
        #expect(request.body.text == "hello world0123456789")
        #expect(request.trailers?.pairs == ["X-Checksum: abc", "X-Other: two"])
        #expect(result.parser.isIdle)
    }

    @Test func chunkedWithBareLFLineEndingsIsAccepted() throws {
        let result = parseRequests("POST / HTTP/1.1\nHost: a\nTransfer-Encoding: chunked\n\n2\nhi\n0\n\n")
        #expect(result.error == nil)
        #expect(result.requests.first?.body.text == "hi")
    }

    @Test func byteAtATimeFeedingEqualsOneShotFeeding() throws {
        let stream = "\r\nPOST /up?x=1 HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nExpect: 100-continue\r\n\r\n"
            + "5;e=1\r\nhello\r\n1\r\n!\r\n0\r\nT: v\r\n\r\n"
            + "GET /next HTTP/1.0\nConnection: keep-alive\n\n"
            + "PATCH /x HTTP/1.1\r\nHost: b\r\nContent-Length: 10\r\n\r\n0123456789"
        let whole = parseRequests(stream)
        #expect(whole.error == nil)
        #expect(whole.requests.count == 3)
        for pieceSize in [1, 2, 3, 7, 64] {
            let pieces = parseRequests(stream, pieceSize: pieceSize)
            #expect(pieces.error == nil)
            #expect(pieces.requests.count == whole.requests.count)
            for (a, b) in zip(pieces.requests, whole.requests) {
                #expect(a.head.method == b.head.method)
                #expect(a.head.target == b.head.target)
                #expect(a.head.version == b.head.version)
                #expect(a.head.headers.pairs == b.head.headers.pairs)
                #expect(a.framing == b.framing)
                #expect(a.keepAlive == b.keepAlive)
                #expect(a.expectsContinue == b.expectsContinue)
                #expect(a.body == b.body)
                #expect(a.trailers?.pairs == b.trailers?.pairs)
            }
        }
    }

    @Test func slowlorisHeadFedByteAtATimeCompletes() throws {
        // Each call only scans the new byte; a rescanning parser would do ~10^8 byte visits here.
        let filler = (0..<300).map { "X-Filler-\($0): \(String(repeating: "v", count: 40))\r\n" }.joined()
        let limits = { var l = HTTP1Limits(); l.maxHeaderCount = 400; return l }()
        let result = parseRequests("GET / HTTP/1.1\r\nHost: a\r\n" + filler + "\r\n", pieceSize: 1, limits: limits)
        #expect(result.error == nil)
        #expect(result.requests.first?.head.headers.count == 301)
    }

    @Test func leadingEmptyLinesBeforeRequestLineAreIgnored() throws {
        let result = parseRequests("\r\n\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n")
        #expect(result.error == nil)
        #expect(result.requests.count == 1)
    }

    @Test func tooManyLeadingEmptyLinesAreRejected() {
        #expect(requestError(String(repeating: "\r\n", count: 100) + "GET / HTTP/1.1\r\nHost: a\r\n\r\n")?.status == 400)
    }

    @Test func bareLFIsAcceptedAsLineTerminator() throws {
        let result = parseRequests("GET / HTTP/1.1\nHost: a\nX: y\n\n")
        #expect(result.error == nil)
        #expect(result.requests.first?.head.headers.pairs == ["Host: a", "X: y"])
    }

    @Test(arguments: [
        "GET / HTTP/1.1\r\nHost: a\rX: y\r\n\r\n",
        "GET /\r HTTP/1.1\r\nHost: a\r\n\r\n",
        "GET / HTTP/1.1\r\r\nHost: a\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: a\r\n\r\r\n",
    ])
    func bareCRIsRejected(_ request: String) {
        #expect(requestError(request) == .badRequest("bare CR"))
    }

    @Test func http10KeepAliveRequiresToken() throws {
        let result = parseRequests("GET /a HTTP/1.0\r\n\r\nGET /b HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n")
        #expect(result.requests.map(\.keepAlive) == [false, true])
        #expect(result.requests.first?.head.version == .http10)
    }

    @Test func http11ConnectionCloseTokenInAListDisablesKeepAlive() {
        let result = parseRequests("GET / HTTP/1.1\r\nHost: a\r\nConnection: foo, CLOSE\r\n\r\n")
        #expect(result.requests.first?.keepAlive == false)
    }

    @Test func expect100ContinueIsReported() {
        let result = parseRequests("PUT / HTTP/1.1\r\nHost: a\r\nExpect: 100-Continue\r\nContent-Length: 1\r\n\r\nx")
        #expect(result.requests.first?.expectsContinue == true)
    }

    @Test func otherExpectationIsRejectedWith417() {
        let error = requestError("PUT / HTTP/1.1\r\nHost: a\r\nExpect: 200-ok\r\n\r\n")
        #expect(error == .expectationFailed)
        #expect(error?.status == 417)
    }

    @Test func expectIsIgnoredOnHTTP10() {
        let result = parseRequests("PUT / HTTP/1.0\r\nExpect: whatever\r\n\r\n")
        #expect(result.error == nil)
        #expect(result.requests.first?.expectsContinue == false)
    }

    @Test func upgradeIsReportedOnlyWithConnectionUpgradeToken() {
        let upgraded = parseRequests("GET /ws HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, Upgrade\r\nUpgrade: websocket\r\n\r\n")
        #expect(upgraded.requests.first?.upgrade == "websocket")
        let plain = parseRequests("GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\n\r\n")
        #expect(plain.requests.first?.upgrade == nil)
    }

    @Test func identicalDuplicatedContentLengthIsAccepted() {
        let repeated = parseRequests("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc")
        #expect(repeated.error == nil)
        #expect(repeated.requests.first?.framing == .contentLength(3))
        let listed = parseRequests("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3, 3\r\n\r\nabc")
        #expect(listed.error == nil)
        #expect(listed.requests.first?.body.text == "abc")
    }

    @Test func errorsAreStickyAfterAThrow() {
        var parser = HTTP1RequestParser()
        let bad = Array("GET / HTTP/1.1\r\nHost: a\r\nBad Name: x\r\n\r\n".utf8)
        let good = Array("GET / HTTP/1.1\r\nHost: a\r\n\r\n".utf8)
        #expect(throws: HTTP1ParseError.self) { try bad.withUnsafeBytes { _ = try parser.parse($0) } }
        #expect(throws: HTTP1ParseError.self) { try good.withUnsafeBytes { _ = try parser.parse($0) } }
    }

    @Test func idleAndReadingHeadTrackTheHeadPhase() throws {
        var parser = HTTP1RequestParser()
        #expect(parser.isIdle && !parser.isReadingHead)
        let partial = Array("GET / HT".utf8)
        let (event, consumed) = try partial.withUnsafeBytes { try parser.parse($0) }
        #expect(event == nil && consumed == 0)
        #expect(!parser.isIdle && parser.isReadingHead)
        let full = Array("GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\n\r\n".utf8)
        let head = try full.withUnsafeBytes { try parser.parse($0) }
        #expect(head.consumed == full.count)
        #expect(!parser.isIdle && !parser.isReadingHead)
    }

    @Test func headTooLargeIsDetectedBeforeTheHeadCompletes() throws {
        var limits = HTTP1Limits()
        limits.maxHeaderBytes = 1_000
        let unterminated = "GET / HTTP/1.1\r\nHost: a\r\nX-Long: " + String(repeating: "a", count: 2_000)
        #expect(parseRequests(unterminated, limits: limits).error?.status == 431)
    }
}
