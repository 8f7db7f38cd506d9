import HTTP1
import OutriderCore
import Testing

@Suite struct Serializing {
    @Test func requestHeadRoundTripsThroughTheParser() throws {
        var headers = HTTPHeaders()
        headers.add(name: "Host", value: "svc.local:8080")
        headers.add(name: "X-Trace", value: "a b\tc")
        headers.add(name: "Content-Length", value: "2")
        let head = RequestHead(method: "POST", target: "/p?q=1", version: .http10, headers: headers)
        var out = ByteBuffer()
        HTTP1Serializer.writeRequestHead(head, into: &out)
        #expect(out.readableArray.text == "POST /p?q=1 HTTP/1.1\r\nHost: svc.local:8080\r\nX-Trace: a b\tc\r\nContent-Length: 2\r\n\r\n")
        out.append("ok")
        let parsed = parseRequests(out.readableArray)
        let request = try #require(parsed.requests.first)
        #expect(request.head.method == "POST")
        #expect(request.head.target == "/p?q=1")
        #expect(request.head.version == .http11)
        #expect(request.head.headers.pairs == headers.pairs)
        #expect(request.body.text == "ok")
    }

    @Test func responseHeadUsesGivenReasonOrTheStandardOne() {
        var out = ByteBuffer()
        HTTP1Serializer.writeResponseHead(ResponseHead(status: 404, headers: HTTPHeaders([("Content-Length", "0")])), into: &out)
        #expect(out.readableArray.text == "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
        out.clear()
        HTTP1Serializer.writeResponseHead(ResponseHead(status: 200, reason: "Fine", version: .http10), into: &out)
        #expect(out.readableArray.text == "HTTP/1.1 200 Fine\r\n\r\n")
    }

    @Test func responseHeadRoundTripsThroughTheParser() throws {
        var out = ByteBuffer()
        let head = ResponseHead(status: 201, reason: "Created", headers: HTTPHeaders([("Location", "/x"), ("Content-Length", "0")]))
        HTTP1Serializer.writeResponseHead(head, into: &out)
        let parsed = parseResponses(out.readableArray.text)
        let response = try #require(parsed.responses.first)
        #expect(response.head.status == 201)
        #expect(response.head.reason == "Created")
        #expect(response.head.headers.pairs == head.headers.pairs)
    }

    @Test func chunksAndLastChunkParseBackAsTheSameBody() throws {
        var out = ByteBuffer()
        out.append("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n")
        let payload = [UInt8](repeating: 0x61, count: 300)
        payload.withUnsafeBytes { HTTP1Serializer.writeChunk($0, into: &out) }
        Array("tail".utf8).withUnsafeBytes { HTTP1Serializer.writeChunk($0, into: &out) }
        HTTP1Serializer.writeLastChunk(trailers: HTTPHeaders([("X-Sum", "42")]), into: &out)
        #expect(out.readableArray.text.contains("\r\n12c\r\n"))
        let request = try #require(parseRequests(out.readableArray).requests.first)
        #expect(request.body == payload + Array("tail".utf8))
        #expect(request.trailers?.pairs == ["X-Sum: 42"])
    }

    @Test func emptyChunkWritesNothing() {
        var out = ByteBuffer()
        [UInt8]().withUnsafeBytes { HTTP1Serializer.writeChunk($0, into: &out) }
        #expect(out.isEmpty)
    }

    @Test func lastChunkWithoutTrailers() {
        var out = ByteBuffer()
        HTTP1Serializer.writeLastChunk(trailers: HTTPHeaders(), into: &out)
        #expect(out.readableArray.text == "0\r\n\r\n")
    }

    @Test func lineBreaksInFieldValuesCannotInjectHeaders() throws {
        var out = ByteBuffer()
        let head = RequestHead(method: "GET", target: "/", version: .http11,
                               headers: HTTPHeaders([("Host", "a"), ("X-Evil", "v\r\nInjected: yes")]))
        HTTP1Serializer.writeRequestHead(head, into: &out)
        let request = try #require(parseRequests(out.readableArray).requests.first)
        #expect(request.head.headers.pairs == ["Host: a", "X-Evil: v  Injected: yes"])
    }
}

@Suite struct HopByHopHeaders {
    @Test func removesTheFixedSetAndEveryNameListedInConnection() {
        var headers = HTTPHeaders([
            ("Host", "a"), ("Connection", "keep-alive, X-Session-Hint"), ("Keep-Alive", "timeout=5"),
            ("Proxy-Connection", "close"), ("TE", "trailers"), ("Trailer", "X-Sum"), ("Transfer-Encoding", "chunked"),
            ("Upgrade", "h2c"), ("x-session-hint", "1"), ("Content-Type", "text/plain"), ("Connection", " , Upgrade"),
        ])
        removeHopByHopHeaders(&headers)
        #expect(headers.pairs == ["Host: a", "Content-Type: text/plain"])
    }

    @Test func connectionTokensAreLowercasedAndTrimmed() {
        let headers = HTTPHeaders([("Connection", " Close ,X-A"), ("connection", "Upgrade")])
        #expect(connectionTokens(headers) == ["close", "x-a", "upgrade"])
        #expect(hopByHopHeaderNames.contains("transfer-encoding"))
        #expect(isHopByHopHeader("Keep-Alive"))
        #expect(!isHopByHopHeader("Content-Length"))
    }
}
