import HTTP1
import OutriderCore
import Testing

@Suite struct ResponseParsing {
    @Test func contentLengthResponseThenEnd() throws {
        let result = parseResponses("HTTP/1.1 200 OK\r\nContent-Length: 5\r\nServer: x\r\n\r\nhello")
        #expect(result.error == nil)
        let response = try #require(result.responses.first)
        #expect(response.head.status == 200)
        #expect(response.head.reason == "OK")
        #expect(response.head.headers.pairs == ["Content-Length: 5", "Server: x"])
        #expect(response.framing == .contentLength(5))
        #expect(response.keepAlive)
        #expect(response.body.text == "hello")
        #expect(response.trailers != nil)
    }

    @Test func zeroContentLengthEndsAtOnce() {
        let result = parseResponses("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
        #expect(result.responses.first?.framing == .contentLength(0))
        #expect(result.responses.first?.trailers != nil)
    }

    @Test func responseToHeadHasNoBodyDespiteContentLength() {
        let result = parseResponses("HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n", method: "HEAD")
        #expect(result.responses.first?.framing == BodyFraming.none)
        #expect(result.responses.first?.trailers != nil)
    }

    @Test(arguments: [204, 304])
    func noContentAndNotModifiedHaveNoBody(_ status: Int) {
        let result = parseResponses("HTTP/1.1 \(status) X\r\nContent-Length: 10\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nz")
        #expect(result.error == nil)
        #expect(result.responses.map(\.head.status) == [status, 200])
        #expect(result.responses.first?.framing == BodyFraming.none)
        #expect(result.responses.last?.body.text == "z")
    }

    @Test func interimResponsesPrecedeTheFinalHeadWithoutEnd() {
        let stream = "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </s.css>\r\n\r\n"
            + "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
        let result = parseResponses(stream)
        #expect(result.error == nil)
        #expect(result.responses.map(\.head.status) == [100, 103, 200])
        #expect(result.responses.map(\.framing) == [.none, .none, .contentLength(2)])
        #expect(result.responses.map { $0.trailers != nil } == [false, false, true])
        #expect(result.responses.last?.body.text == "ok")
    }

    @Test func switchingProtocolsIsFinalAndLeavesTheRestForTheTunnel() {
        var parser = HTTP1ResponseParser()
        parser.expectResponse(toMethod: "GET")
        let bytes = Array("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n\u{81}\u{05}frame".utf8)
        bytes.withUnsafeBytes { buffer in
            let head = try? parser.parse(buffer)
            guard case .head(let response, let framing, _)? = head?.event else { Issue.record("expected head"); return }
            #expect(response.status == 101)
            #expect(framing == BodyFraming.none)
            let rest = UnsafeRawBufferPointer(rebasing: buffer[(head?.consumed ?? 0)...])
            let end = try? parser.parse(rest)
            guard case .end? = end?.event else { Issue.record("expected end"); return }
            #expect(end?.consumed == 0)
        }
    }

    @Test func successfulConnectResponseHasNoBody() {
        let result = parseResponses("HTTP/1.1 200 Connection established\r\n\r\n", method: "CONNECT")
        #expect(result.responses.first?.framing == BodyFraming.none)
        #expect(result.responses.first?.trailers != nil)
        let refused = parseResponses("HTTP/1.1 403 Forbidden\r\nContent-Length: 2\r\n\r\nno", method: "CONNECT")
        #expect(refused.responses.first?.body.text == "no")
    }

    @Test func chunkedResponseWithTrailers() {
        let result = parseResponses("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nwiki\r\n5\r\npedia\r\n0\r\nX-T: 1\r\n\r\n")
        #expect(result.responses.first?.framing == .chunked)
        #expect(result.responses.first?.body.text == "wikipedia")
        #expect(result.responses.first?.trailers?.pairs == ["X-T: 1"])
    }

    @Test func transferEncodingWithoutFinalChunkedReadsUntilClose() {
        let result = parseResponses("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nzzzz", closeAtEnd: true)
        #expect(result.responses.first?.framing == .untilClose)
        #expect(result.responses.first?.keepAlive == false)
        #expect(result.finished)
    }

    @Test func bodyWithoutLengthIsReadUntilCloseAndFinishEndsIt() {
        let result = parseResponses("HTTP/1.1 200 OK\r\nConnection: keep-alive\r\n\r\nstreamed data", pieceSize: 4, closeAtEnd: true)
        #expect(result.error == nil)
        let response = result.responses.first
        #expect(response?.framing == .untilClose)
        #expect(response?.keepAlive == false)
        #expect(response?.body.text == "streamed data")
        #expect(response?.trailers?.isEmpty == true)
        #expect(result.finished)
    }

    @Test func truncatedContentLengthBodyFailsOnFinish() {
        let result = parseResponses("HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort", closeAtEnd: true)
        #expect(result.error == .badRequest("truncated response"))
        #expect(result.responses.first?.body.text == "short")
    }

    @Test func truncatedChunkedBodyAndHeadFailOnFinish() {
        #expect(parseResponses("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab", closeAtEnd: true).error
                == .badRequest("truncated response"))
        #expect(parseResponses("HTTP/1.1 200 OK\r\nContent-Le", closeAtEnd: true).error == .badRequest("truncated response"))
        #expect(parseResponses("HTTP/1.1 100 Continue\r\n\r\n", closeAtEnd: true).error == .badRequest("truncated response"))
    }

    @Test func finishBetweenResponsesReturnsNil() throws {
        var parser = HTTP1ResponseParser()
        #expect(parser.isIdle)
        #expect(try parser.finish() == nil)
        let result = parseResponses("HTTP/1.1 204 No Content\r\n\r\n", closeAtEnd: true)
        #expect(result.error == nil)
        #expect(!result.finished)
    }

    @Test func contentLengthWithTransferEncodingIsAnUpstreamProtocolError() {
        let error = parseResponses("HTTP/1.1 200 OK\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n").error
        #expect(error == .badRequest("Content-Length with Transfer-Encoding"))
        #expect(error?.outriderError(source: .upstream).kind == .upstreamProtocol)
    }

    @Test func differingContentLengthsAreAnError() {
        #expect(parseResponses("HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n").error != nil)
    }

    @Test func http10ResponseKeepAliveFollowsConnectionToken() {
        let closing = parseResponses("HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n")
        #expect(closing.responses.first?.keepAlive == false)
        let persistent = parseResponses("HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n")
        #expect(persistent.responses.first?.keepAlive == true)
        #expect(persistent.responses.first?.head.version == .http10)
        let closed = parseResponses("HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n")
        #expect(closed.responses.first?.keepAlive == false)
    }

    @Test(arguments: ["HTTP/1.1 200\r\n", "HTTP/1.1 200 \r\n"])
    func emptyReasonIsAcceptedWithOrWithoutSpace(_ line: String) {
        let result = parseResponses(line + "Content-Length: 0\r\n\r\n")
        #expect(result.error == nil)
        #expect(result.responses.first?.head.reason == "")
    }

    @Test(arguments: ["HTTP/2.0 200 OK\r\n", "HTTP/0.9 200 OK\r\n"])
    func versionsOtherThan1xAreRejected(_ line: String) {
        #expect(parseResponses(line + "\r\n").error == .unsupportedVersion)
    }

    @Test(arguments: ["HTTP/1.1 20 OK\r\n", "HTTP/1.1 2000 OK\r\n", "HTTP/1.1 099 Low\r\n", "http/1.1 200 OK\r\n", "HTTP/1.1  200 OK\r\n", "HTTP/1.1\r\n", "ICY 200 OK\r\n"])
    func malformedStatusLineIsRejected(_ line: String) {
        #expect(parseResponses(line + "\r\n").error != nil)
    }

    @Test func badHeaderInResponseIsRejected() {
        #expect(parseResponses("HTTP/1.1 200 OK\r\nBad Header: x\r\n\r\n").error != nil)
        #expect(parseResponses("HTTP/1.1 200 OK\r\nX: a\r\n b\r\n\r\n").error != nil)
    }

    @Test func byteAtATimeFeedingEqualsOneShotFeeding() {
        let stream = "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3;x=y\r\nabc\r\n0\r\nT: 1\r\n\r\n"
            + "HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nxyz"
        let whole = parseResponses(stream)
        let bytewise = parseResponses(stream, pieceSize: 1)
        #expect(whole.error == nil && bytewise.error == nil)
        #expect(whole.responses.map(\.head.status) == bytewise.responses.map(\.head.status))
        #expect(whole.responses.map(\.body) == bytewise.responses.map(\.body))
        #expect(whole.responses.map { $0.trailers?.pairs } == bytewise.responses.map { $0.trailers?.pairs })
    }
}
