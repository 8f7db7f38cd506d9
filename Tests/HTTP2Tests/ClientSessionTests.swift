@testable import HTTP2
import OutriderCore
import Testing

/// A client session wired to a server session in memory: `pump` moves bytes both ways until
/// neither side has anything to write.
final class H2Pair {
    let client: HTTP2ClientSession
    let server: HTTP2ServerSession
    var clientEvents: [HTTP2ClientEvent] = []
    var serverEvents: [HTTP2Event] = []

    init(client c: HTTP2Settings = HTTP2Settings(), server s: HTTP2Settings = HTTP2Settings()) throws {
        client = try HTTP2ClientSession(settings: c)
        server = try HTTP2ServerSession(settings: s)
        pump()
    }

    func clientOutput() -> [UInt8] {
        var out = ByteBuffer()
        client.takeOutput(into: &out)
        clientEvents += client.takeEvents()
        return out.readableArray
    }

    func serverOutput() -> [UInt8] {
        var out = ByteBuffer()
        server.takeOutput(into: &out)
        serverEvents += server.takeEvents()
        return out.readableArray
    }

    func pump() {
        for _ in 0..<1_000 {
            let a = clientOutput(), b = serverOutput()
            if a.isEmpty && b.isEmpty { return }
            if !a.isEmpty { serverEvents += server.receive(a) }
            if !b.isEmpty { clientEvents += client.receive(b) }
        }
    }

    func takeClientEvents() -> [HTTP2ClientEvent] { defer { clientEvents = [] }; return clientEvents }
    func takeServerEvents() -> [HTTP2Event] { defer { serverEvents = [] }; return serverEvents }

    /// Request body bytes the server reported for `id` (and whether it ended).
    func serverBody(_ events: [HTTP2Event], _ id: Int32) -> (bytes: [UInt8], ended: Bool) {
        var bytes: [UInt8] = [], ended = false
        for case .requestData(let sid, let b, let end) in events where sid == id {
            bytes += b
            if end { ended = true }
        }
        return (bytes, ended)
    }

    func clientBody(_ events: [HTTP2ClientEvent], _ id: Int32) -> (bytes: [UInt8], ended: Bool) {
        var bytes: [UInt8] = [], ended = false
        for case .responseData(let sid, let b, let end) in events where sid == id {
            bytes += b
            if end { ended = true }
        }
        return (bytes, ended)
    }
}

func request(_ method: String = "GET", _ target: String = "/", host: String? = "example.com",
             _ extra: [(String, String)] = []) -> RequestHead {
    var h = HTTPHeaders()
    if let host { h.add(name: "Host", value: host) }
    for (n, v) in extra { h.add(name: n, value: v) }
    return RequestHead(method: method, target: target, version: .http11, headers: h)
}

func serverHead(_ events: [HTTP2Event]) -> (id: Int32, head: RequestHead, scheme: String?, end: Bool)? {
    for case .requestHead(let id, let head, let scheme, let end) in events { return (id, head, scheme, end) }
    return nil
}

@Suite struct ClientSession {
    @Test func handshakeCompletesWithoutEvents() throws {
        let p = try H2Pair()
        #expect(p.takeClientEvents().isEmpty)
        #expect(p.takeServerEvents().isEmpty)
        #expect(p.client.canOpenStream)
        #expect(!p.client.wantsClose)
        #expect(!p.server.wantsClose)
    }

    @Test func getWithResponseHeadAndBody() throws {
        let p = try H2Pair()
        let id = try #require(p.client.sendRequestHead(request("GET", "/hello?x=1", [("User-Agent", "t")]), scheme: "http", endStream: true))
        #expect(id == 1)
        p.pump()
        let req = try #require(serverHead(p.takeServerEvents()))
        #expect(req.id == 1 && req.end && req.scheme == "http")
        #expect(req.head.method == "GET" && req.head.target == "/hello?x=1")
        #expect(req.head.headers.first("user-agent") == "t")

        var rh = HTTPHeaders()
        rh.add(name: "content-type", value: "text/plain")
        p.server.sendResponseHead(streamID: 1, ResponseHead(status: 200, headers: rh), endStream: false)
        p.server.sendData(streamID: 1, Array("hello".utf8), endStream: true)
        p.pump()
        let events = p.takeClientEvents()
        guard case .responseHead(1, let head, false)? = events.first else { Issue.record("no head: \(events)"); return }
        #expect(head.status == 200 && head.version == .http2)
        #expect(head.headers.first("content-type") == "text/plain")
        #expect(!head.headers.contains { $0.name.hasPrefix(":") })
        let body = p.clientBody(events, 1)
        #expect(body.bytes == Array("hello".utf8) && body.ended)
        #expect(p.client.openStreamCount == 0)
    }

    @Test func headOnlyResponseEndsWithHead() throws {
        let p = try H2Pair()
        let id = try #require(p.client.sendRequestHead(request("GET", "/"), scheme: "https", endStream: true))
        p.pump()
        #expect(serverHead(p.takeServerEvents())?.scheme == "https")
        p.server.sendResponseHead(streamID: id, ResponseHead(status: 204), endStream: true)
        p.pump()
        let events = p.takeClientEvents()
        #expect(events.count == 1)
        guard case .responseHead(id, let head, true)? = events.first else { Issue.record("\(events)"); return }
        #expect(head.status == 204)
    }

    @Test func interimHeadThenFinal() throws {
        let p = try H2Pair()
        let id = try #require(p.client.sendRequestHead(request("POST", "/", [("expect", "100-continue")]), scheme: "http", endStream: false))
        p.pump()
        p.server.sendResponseHead(streamID: id, ResponseHead(status: 100), endStream: false)
        p.pump()
        var events = p.takeClientEvents()
        guard case .responseHead(id, let interim, false)? = events.first else { Issue.record("\(events)"); return }
        #expect(interim.status == 100)
        p.client.sendData(streamID: id, Array("x".utf8), endStream: true)
        p.pump()
        #expect(p.serverBody(p.takeServerEvents(), id) == (Array("x".utf8), true))
        p.server.sendResponseHead(streamID: id, ResponseHead(status: 201), endStream: true)
        p.pump()
        events = p.takeClientEvents()
        guard case .responseHead(id, let final, true)? = events.first else { Issue.record("\(events)"); return }
        #expect(final.status == 201)
    }

    @Test func postBodyLargerThanWindowFlowsOnlyWhenServerConsumes() throws {
        var ss = HTTP2Settings()
        ss.initialWindowSize = 16_384
        ss.connectionWindowSize = 65_535
        let p = try H2Pair(server: ss)
        let body = (0..<100_000).map { UInt8(truncatingIfNeeded: $0 &* 7) }
        let id = try #require(p.client.sendRequestHead(request("POST", "/up", [("content-length", "100000")]), scheme: "http", endStream: false))
        p.client.sendData(streamID: id, body, endStream: true)
        p.pump()
        var got = p.serverBody(p.takeServerEvents(), id)
        #expect(got.bytes.count == 16_384)
        #expect(!got.ended)
        #expect(p.client.pendingOutboundBytes(streamID: id) == 100_000 - 16_384)
        // Nothing consumed: stalled.
        p.pump()
        #expect(p.takeServerEvents().isEmpty)
        #expect(p.client.pendingOutboundBytes(streamID: id) == 100_000 - 16_384)
        // The proxy consumes what it got: the rest flows.
        var all = got.bytes
        for _ in 0..<100 where !got.ended {
            p.server.consumed(streamID: id, bytes: got.bytes.count)
            p.pump()
            got = p.serverBody(p.takeServerEvents(), id)
            all += got.bytes
        }
        #expect(got.ended)
        #expect(all == body)
        #expect(p.client.pendingOutboundBytes(streamID: id) == 0)
    }

    @Test func responseLargerThanWindowStallsUntilClientConsumes() throws {
        var cs = HTTP2Settings()
        cs.initialWindowSize = 16_384
        cs.connectionWindowSize = 65_535
        let p = try H2Pair(client: cs)
        let id = try #require(p.client.sendRequestHead(request(), scheme: "http", endStream: true))
        p.pump()
        _ = p.takeServerEvents()
        let body = (0..<50_000).map { UInt8(truncatingIfNeeded: $0) }
        p.server.sendResponseHead(streamID: id, ResponseHead(status: 200), endStream: false)
        p.server.sendData(streamID: id, body, endStream: true)
        p.pump()
        var events = p.takeClientEvents()
        var got = p.clientBody(events, id)
        #expect(got.bytes.count == 16_384)
        p.pump()
        #expect(p.takeClientEvents().isEmpty)
        #expect(p.server.pendingOutboundBytes(streamID: id) == 50_000 - 16_384)
        var all = got.bytes
        for _ in 0..<100 where !got.ended {
            p.client.consumed(streamID: id, bytes: got.bytes.count)
            p.pump()
            events = p.takeClientEvents()
            got = p.clientBody(events, id)
            all += got.bytes
        }
        #expect(got.ended)
        #expect(all == body)
    }

    @Test func grpcStyleTrailersBothWays() throws {
        let p = try H2Pair()
        let id = try #require(p.client.sendRequestHead(
            request("POST", "/pkg.Svc/Call", [("content-type", "application/grpc"), ("te", "trailers")]),
            scheme: "http", endStream: false))
        p.client.sendData(streamID: id, [0, 0, 0, 0, 2, 8, 1], endStream: false)
        var rt = HTTPHeaders()
        rt.add(name: "x-req-trailer", value: "1")
        p.client.sendTrailers(streamID: id, rt)
        p.pump()
        let sev = p.takeServerEvents()
        let req = try #require(serverHead(sev))
        #expect(req.head.headers.first("te") == "trailers")
        #expect(p.serverBody(sev, id).bytes == [0, 0, 0, 0, 2, 8, 1])
        #expect(sev.contains { if case .requestTrailers(id, let t) = $0 { return t.first("x-req-trailer") == "1" } else { return false } })

        var rh = HTTPHeaders()
        rh.add(name: "content-type", value: "application/grpc")
        p.server.sendResponseHead(streamID: id, ResponseHead(status: 200, headers: rh), endStream: false)
        p.server.sendData(streamID: id, [0, 0, 0, 0, 1, 9], endStream: false)
        var tr = HTTPHeaders()
        tr.add(name: "grpc-status", value: "0")
        tr.add(name: "grpc-message", value: "ok")
        p.server.sendTrailers(streamID: id, tr)
        p.pump()
        let events = p.takeClientEvents()
        guard case .responseHead(id, _, false)? = events.first else { Issue.record("\(events)"); return }
        let body = p.clientBody(events, id)
        #expect(body.bytes == [0, 0, 0, 0, 1, 9] && !body.ended)
        guard case .responseTrailers(id, let trailers)? = events.last else { Issue.record("no trailers: \(events)"); return }
        #expect(trailers.first("grpc-status") == "0")
        #expect(trailers.first("grpc-message") == "ok")
        #expect(!events.contains { if case .streamReset = $0 { return true } else { return false } })
        #expect(p.client.openStreamCount == 0)
    }

    @Test func serverResetBecomesStreamReset() throws {
        let p = try H2Pair()
        let id = try #require(p.client.sendRequestHead(request("POST", "/"), scheme: "http", endStream: false))
        p.pump()
        _ = p.takeServerEvents()
        p.server.resetStream(streamID: id, errorCode: HTTP2ErrorCode.cancel)
        p.pump()
        let events = p.takeClientEvents()
        guard case .streamReset(id, let code)? = events.first else { Issue.record("\(events)"); return }
        #expect(code == HTTP2ErrorCode.cancel)
        #expect(events.count == 1)
        // Sending on it is ignored.
        p.client.sendData(streamID: id, [1, 2, 3], endStream: true)
        p.pump()
        #expect(p.takeServerEvents().isEmpty)
        #expect(p.client.canOpenStream)
    }

    @Test func clientResetReachesServerWithoutLocalEvent() throws {
        let p = try H2Pair()
        let id = try #require(p.client.sendRequestHead(request("POST", "/"), scheme: "http", endStream: false))
        p.pump()
        _ = p.takeServerEvents()
        p.client.resetStream(streamID: id, errorCode: HTTP2ErrorCode.cancel)
        p.pump()
        #expect(p.takeClientEvents().isEmpty)
        let sev = p.takeServerEvents()
        #expect(sev.contains { if case .streamReset(id, HTTP2ErrorCode.cancel) = $0 { return true } else { return false } })
    }

    @Test func goawayStopsNewStreamsAndRefusesUnprocessedOnes() throws {
        let p = try H2Pair()
        let first = try #require(p.client.sendRequestHead(request(), scheme: "http", endStream: true))
        p.pump()
        _ = p.takeServerEvents()
        p.server.startGracefulShutdown()
        // Stream 3 is queued on the client while the server's GOAWAY (last stream 1) arrives.
        let second = try #require(p.client.sendRequestHead(request(), scheme: "http", endStream: true))
        #expect(second == 3)
        let goawayBytes = p.serverOutput()
        let events = p.client.receive(goawayBytes)
        guard case .goaway(let last, let code)? = events.first else { Issue.record("\(events)"); return }
        #expect(last == first && code == HTTP2ErrorCode.noError)
        // The queued HEADERS of stream 3 is refused when the client next writes (nghttp2 drops it
        // in mem_send): reported from takeOutput/takeEvents, so the lead can retry it elsewhere.
        let out = p.clientOutput()
        let refused = events + p.takeClientEvents()
        #expect(refused.contains { if case .streamReset(3, HTTP2ErrorCode.refusedStream) = $0 { return true } else { return false } })
        p.serverEvents += p.server.receive(out)
        #expect(p.client.openStreamCount == 1)
        #expect(!p.client.canOpenStream)
        #expect(p.client.sendRequestHead(request(), scheme: "http", endStream: true) == nil)
        // Stream 1 still completes.
        p.server.sendResponseHead(streamID: first, ResponseHead(status: 200), endStream: true)
        p.pump()
        let rest = p.takeClientEvents()
        #expect(rest.contains { if case .responseHead(1, _, true) = $0 { return true } else { return false } })
        #expect(p.client.wantsClose)
    }

    @Test func connectionSpecificHeadersAreStripped() throws {
        let p = try H2Pair()
        let id = try #require(p.client.sendRequestHead(request("GET", "/", [
            ("Connection", "keep-alive, X-Hop"), ("Keep-Alive", "timeout=5"), ("Proxy-Connection", "keep-alive"),
            ("Transfer-Encoding", "chunked"), ("Upgrade", "h2c"), ("HTTP2-Settings", "AAMAAABkAAQAAP__"),
            ("X-Hop", "1"), ("TE", "trailers"), ("X-Keep", "yes"),
        ]), scheme: "http", endStream: true))
        p.pump()
        let sev = p.takeServerEvents()
        let req = try #require(serverHead(sev), "server refused the request: \(sev)")
        #expect(req.id == id)
        let names = Set(req.head.headers.map { $0.name })
        for banned in ["connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade", "http2-settings", "x-hop"] {
            #expect(!names.contains(banned), "\(banned) was forwarded")
        }
        #expect(req.head.headers.first("te") == "trailers")
        #expect(req.head.headers.first("x-keep") == "yes")
    }

    @Test func teOtherThanTrailersIsDropped() throws {
        let fields = HTTP2ClientSession.requestFields(request("GET", "/", [("TE", "gzip")]), scheme: "http")
        #expect(!fields.contains { $0.name == "te" })
    }

    @Test func hostBecomesAuthority() throws {
        let fields = HTTP2ClientSession.requestFields(request("GET", "/a?b", host: "svc.local:8080"), scheme: "http")
        #expect(fields.map { $0.name } == [":method", ":scheme", ":authority", ":path"])
        #expect(fields[2].value == "svc.local:8080" && fields[3].value == "/a?b")

        let p = try H2Pair()
        _ = try #require(p.client.sendRequestHead(request("GET", "/a?b", host: "svc.local:8080"), scheme: "http", endStream: true))
        p.pump()
        let req = try #require(serverHead(p.takeServerEvents()))
        #expect(req.head.headers.values("host") == ["svc.local:8080"])
        #expect(req.head.target == "/a?b")
    }

    @Test func absoluteFormTargetAndConnect() throws {
        let abs = HTTP2ClientSession.requestFields(request("GET", "http://u@other.example:81?q=1", host: "ignored"), scheme: "http")
        #expect(abs.first { $0.name == ":authority" }?.value == "other.example:81")
        #expect(abs.first { $0.name == ":path" }?.value == "/?q=1")
        let noHost = HTTP2ClientSession.requestFields(request("GET", "/x", host: nil), scheme: "https")
        #expect(!noHost.contains { $0.name == ":authority" })
        let connect = HTTP2ClientSession.requestFields(request("CONNECT", "db:5432", host: "db:5432"), scheme: "http")
        #expect(connect.map { $0.name } == [":method", ":authority"])
    }

    @Test func canOpenStreamFollowsServerMaxConcurrentStreams() throws {
        var ss = HTTP2Settings()
        ss.maxConcurrentStreams = 1
        let p = try H2Pair(server: ss)
        #expect(p.client.canOpenStream)
        let id = try #require(p.client.sendRequestHead(request(), scheme: "http", endStream: true))
        #expect(!p.client.canOpenStream)
        p.pump()
        p.server.sendResponseHead(streamID: id, ResponseHead(status: 200), endStream: true)
        p.pump()
        #expect(p.client.canOpenStream)
    }

    @Test func garbageFromServerIsConnectionError() throws {
        let p = try H2Pair()
        _ = p.client.sendRequestHead(request(), scheme: "http", endStream: true)
        p.pump()
        let events = p.client.receive(Array("HTTP/1.1 200 OK\r\n\r\nxxxxxxxxxxxxxxxxxxxxxxxxxxxxx".utf8))
        var out = ByteBuffer()
        p.client.takeOutput(into: &out)
        let all = events + p.client.takeEvents()
        #expect(all.contains { if case .connectionError = $0 { return true } else { return false } })
        #expect(!p.client.canOpenStream)
        #expect(p.client.sendRequestHead(request(), scheme: "http", endStream: true) == nil)
    }

    @Test func gracefulShutdownFromClient() throws {
        let p = try H2Pair()
        p.client.startGracefulShutdown()
        p.pump()
        #expect(!p.client.canOpenStream)
        #expect(p.takeServerEvents().contains { if case .goaway = $0 { return true } else { return false } })
        #expect(p.client.wantsClose)
    }

    @Test func contentLengthMismatchResetsStream() throws {
        let p = try H2Pair()
        let id = try #require(p.client.sendRequestHead(request(), scheme: "http", endStream: true))
        p.pump()
        _ = p.takeServerEvents()
        var rh = HTTPHeaders()
        rh.add(name: "content-length", value: "10")
        p.server.sendResponseHead(streamID: id, ResponseHead(status: 200, headers: rh), endStream: false)
        p.server.sendData(streamID: id, [1, 2, 3], endStream: true)
        p.pump()
        let events = p.takeClientEvents()
        #expect(events.contains { if case .streamReset(id, HTTP2ErrorCode.protocolError) = $0 { return true } else { return false } })
        #expect(!events.contains { if case .responseData(_, _, true) = $0 { return true } else { return false } })
        #expect(!events.contains { if case .connectionError = $0 { return true } else { return false } })
        #expect(p.client.canOpenStream)
    }

    @Test func oversizedResponseHeadResetsStream() throws {
        var cs = HTTP2Settings()
        cs.maxHeaderListSize = 1_024
        let p = try H2Pair(client: cs)
        let id = try #require(p.client.sendRequestHead(request(), scheme: "http", endStream: true))
        p.pump()
        _ = p.takeServerEvents()
        var rh = HTTPHeaders()
        rh.add(name: "x-big", value: String(repeating: "a", count: 2_000))
        p.server.sendResponseHead(streamID: id, ResponseHead(status: 200, headers: rh), endStream: true)
        p.pump()
        let events = p.takeClientEvents()
        #expect(events.count == 1)
        #expect(events.contains { if case .streamReset(id, HTTP2ErrorCode.enhanceYourCalm) = $0 { return true } else { return false } })
        #expect(p.client.canOpenStream)
    }
}
