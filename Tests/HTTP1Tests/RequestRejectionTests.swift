import HTTP1
import OutriderCore
import Testing

/// Every way a request is refused, with the status the client gets. Strictness here is what
/// keeps a front proxy and the workload from reading different message boundaries (smuggling).
@Suite struct RequestRejections {
    static let host = "Host: a\r\n"

    @Test func contentLengthWithTransferEncodingIs400() {
        let error = requestError("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n")
        #expect(error == .badRequest("Content-Length with Transfer-Encoding"))
        #expect(error?.status == 400)
    }

    @Test func differingContentLengthsAre400() {
        #expect(requestError("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n")
                == .badRequest("differing Content-Length values"))
        #expect(requestError("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3, 4\r\n\r\n")?.status == 400)
    }

    @Test(arguments: ["+5", "-1", "5 5", "0x10", "abc", "", "5,", " , 5", "1.0", "99999999999999999999", "4611686018427387905"])
    func malformedContentLengthIs400(_ value: String) {
        #expect(requestError("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: \(value)\r\n\r\n")?.status == 400)
    }

    @Test func largestAcceptedContentLengthIsTwoToThe62() {
        let result = parseRequests("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4611686018427387904\r\n\r\n")
        #expect(result.error == nil)
        #expect(result.requests.first?.framing == .contentLength(1 << 62))
    }

    @Test func transferEncodingInHTTP10Is400() {
        #expect(requestError("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n")
                == .badRequest("Transfer-Encoding in HTTP/1.0 request"))
    }

    @Test(arguments: ["chunked, chunked", "chunked\r\nTransfer-Encoding: chunked"])
    func chunkedTwiceIs400(_ value: String) {
        #expect(requestError("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: \(value)\r\n\r\n")?.status == 400)
    }

    @Test(arguments: ["gzip", "chunked, gzip", "", "chunked;q=1", "identity"])
    func finalCodingOtherThanChunkedIs400(_ value: String) {
        #expect(requestError("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: \(value)\r\n\r\n")?.status == 400)
    }

    @Test(arguments: ["gzip, chunked", "deflate,chunked", "gzip\r\nTransfer-Encoding: chunked"])
    func otherCodingBeforeChunkedIs501(_ value: String) {
        let error = requestError("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: \(value)\r\n\r\n")
        #expect(error?.status == 501)
    }

    @Test func transferEncodingIsCaseInsensitiveAndTrimmed() {
        let result = parseRequests("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding:  , CHUNKED \r\n\r\n0\r\n\r\n")
        #expect(result.error == nil)
        #expect(result.requests.first?.framing == .chunked)
    }

    @Test func obsFoldIs400() {
        #expect(requestError("GET / HTTP/1.1\r\nHost: a\r\nX: one\r\n two\r\n\r\n")?.status == 400)
        #expect(requestError("GET / HTTP/1.1\r\nHost: a\r\nX: one\r\n\ttwo\r\n\r\n")?.status == 400)
    }

    @Test func whitespaceBeforeColonIs400() {
        #expect(requestError("GET / HTTP/1.1\r\nHost : a\r\n\r\n")
                == .badRequest("whitespace between header name and colon"))
        #expect(requestError("GET / HTTP/1.1\r\nHost: a\r\nContent-Length\t: 0\r\n\r\n")?.status == 400)
    }

    @Test(arguments: [
        "GET / HTTP/1.1\r\nHost: a\r\n: empty\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: a\r\nX(y): z\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: a\r\nno-colon\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: a\r\nX\u{E9}: z\r\n\r\n",
    ])
    func invalidFieldNameIs400(_ request: String) {
        #expect(requestError(request)?.status == 400)
    }

    @Test(arguments: [UInt8(0x00), 0x01, 0x0B, 0x1F, 0x7F])
    func controlCharacterInValueIs400(_ control: UInt8) {
        let bytes = Array("GET / HTTP/1.1\r\nHost: a\r\nX: a".utf8) + [control] + Array("b\r\n\r\n".utf8)
        #expect(requestError(bytes) == .badRequest("invalid character in header value"))
    }

    @Test func invalidUTF8InValueIs400() {
        let bytes = Array("GET / HTTP/1.1\r\nHost: a\r\nX: a".utf8) + [0xC3, 0x28] + Array("\r\n\r\n".utf8)
        #expect(requestError(bytes) == .badRequest("invalid header value encoding"))
    }

    @Test func tooManyHeaderFieldsIs431() {
        var limits = HTTP1Limits()
        limits.maxHeaderCount = 10
        let fields = (0..<11).map { "X-\($0): v\r\n" }.joined()
        #expect(requestError("GET / HTTP/1.1\r\n" + fields + "\r\n", limits: limits)?.status == 431)
        let fitting = (0..<9).map { "X-\($0): v\r\n" }.joined()
        #expect(requestError("GET / HTTP/1.1\r\nHost: a\r\n" + fitting + "\r\n", limits: limits) == nil)
    }

    @Test func headerSectionOverTheByteLimitIs431() {
        let big = "GET / HTTP/1.1\r\nHost: a\r\nX-Big: " + String(repeating: "b", count: 70_000) + "\r\n\r\n"
        #expect(requestError(big)?.status == 431)
    }

    @Test func headerSectionExactlyAtTheByteLimitIsAccepted() {
        var limits = HTTP1Limits()
        limits.maxHeaderBytes = 64
        let prefix = "GET / HTTP/1.1\r\nHost: a\r\nX: "
        let exact = prefix + String(repeating: "v", count: 64 - prefix.utf8.count - 4) + "\r\n\r\n"
        #expect(exact.utf8.count == 64)
        #expect(requestError(exact, limits: limits) == nil)
        #expect(requestError(prefix + String(repeating: "v", count: 64 - prefix.utf8.count - 3) + "\r\n\r\n", limits: limits)?.status == 431)
    }

    @Test func overlongRequestTargetIs414() {
        let target = "/" + String(repeating: "a", count: 8_192)
        #expect(requestError("GET \(target) HTTP/1.1\r\nHost: a\r\n\r\n") == .uriTooLong)
        #expect(requestError("GET \(target.dropLast()) HTTP/1.1\r\nHost: a\r\n\r\n") == nil)
    }

    @Test func overlongRequestTargetIs414BeforeTheLineEnds() {
        var limits = HTTP1Limits()
        limits.maxURILength = 100
        let result = parseRequests("GET /" + String(repeating: "a", count: 200), limits: limits)
        #expect(result.error == .uriTooLong)
        #expect(result.error?.status == 414)
    }

    @Test(arguments: ["HTTP/2.0", "HTTP/0.9", "HTTP/3.1", "HTTP/1.2"])
    func unsupportedVersionIs505(_ version: String) {
        let error = requestError("GET / \(version)\r\nHost: a\r\n\r\n")
        #expect(error == .unsupportedVersion)
        #expect(error?.status == 505)
    }

    @Test(arguments: ["HTTP/1", "http/1.1", "HTTP/1.1 ", "HTTP/11.1", "HTTP/1.x", "HTTP/2", "HTTPS/1.1"])
    func malformedVersionIs400(_ version: String) {
        #expect(requestError("GET / \(version)\r\nHost: a\r\n\r\n")?.status == 400)
    }

    @Test(arguments: [
        "GET  / HTTP/1.1\r\n",
        "GET /  HTTP/1.1\r\n",
        "GET /a b HTTP/1.1\r\n",
        "GET\t/ HTTP/1.1\r\n",
        "GET /\t HTTP/1.1\r\n",
        "G@T / HTTP/1.1\r\n",
        " GET / HTTP/1.1\r\n",
        "GET /\r\n",
        "GET\r\n",
        "GET /caf\u{E9} HTTP/1.1\r\n",
    ])
    func malformedRequestLineIs400(_ line: String) {
        #expect(requestError(line + "Host: a\r\n\r\n")?.status == 400)
    }

    @Test func missingHostInHTTP11Is400() {
        #expect(requestError("GET / HTTP/1.1\r\n\r\n") == .badRequest("missing Host header"))
        #expect(requestError("GET / HTTP/1.0\r\n\r\n") == nil)
    }

    @Test func multipleHostHeadersAre400() {
        #expect(requestError("GET / HTTP/1.1\r\nHost: a\r\nhost: b\r\n\r\n") == .badRequest("multiple Host headers"))
    }

    @Test(arguments: ["\r\n", "5;a=\u{01}\r\nhello\r\n", "x\r\n", ";ext\r\n", "5 5\r\n", "12345678901234567\r\n"])
    func malformedChunkSizeLineIs400(_ chunk: String) {
        let request = "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n" + chunk
        #expect(requestError(request)?.status == 400)
    }

    @Test func chunkSizeWithLeadingZerosBeyondSixteenDigitsIsAccepted() {
        let request = "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n00000000000000000001\r\nx\r\n0\r\n\r\n"
        #expect(parseRequests(request).requests.first?.body.text == "x")
    }

    @Test func chunkDataNotFollowedByCRLFIs400() {
        let request = "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcd\r\n0\r\n\r\n"
        #expect(requestError(request) == .badRequest("chunk data not followed by CRLF"))
    }

    @Test func overlongChunkLineIs400() {
        let request = "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5;" + String(repeating: "e", count: 5_000)
        #expect(requestError(request) == .badRequest("chunk-size line too long"))
    }

    @Test func oversizedTrailerSectionIs431() {
        let request = "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX-T: "
            + String(repeating: "t", count: 20_000) + "\r\n\r\n"
        #expect(requestError(request)?.status == 431)
    }

    @Test func invalidTrailerFieldIs400() {
        let request = "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nBad Trailer: x\r\n\r\n"
        #expect(requestError(request)?.status == 400)
    }

    @Test func parseErrorsMapToOutriderErrors() {
        let downstream = HTTP1ParseError.headersTooLarge("too many header fields").outriderError(source: .downstream)
        #expect(downstream.kind == .headersTooLarge)
        #expect(downstream.status == 431)
        #expect(downstream.context == "too many header fields")
        #expect(HTTP1ParseError.uriTooLong.outriderError(source: .downstream).kind == .uriTooLong)
        #expect(HTTP1ParseError.unsupportedVersion.outriderError(source: .downstream).status == 505)
        #expect(HTTP1ParseError.notImplemented("x").outriderError(source: .downstream).status == 501)
        #expect(HTTP1ParseError.expectationFailed.outriderError(source: .downstream).status == 417)
        let upstream = HTTP1ParseError.badRequest("truncated response").outriderError(source: .upstream)
        #expect(upstream.kind == .upstreamProtocol)
        #expect(upstream.status == 502)
    }
}
