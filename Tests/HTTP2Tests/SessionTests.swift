@testable import HTTP2
import OutriderCore
import Testing

@Suite struct Preface {
    @Test func classifiesPrefaceHTTP1AndPartialInput() {
        #expect(HTTP2Preface.classify(HTTP2Preface.bytes) == .http2)
        #expect(HTTP2Preface.classify(HTTP2Preface.bytes + [0, 0, 0]) == .http2)
        #expect(HTTP2Preface.classify(Array("PRI * HT".utf8)) == .needMore)
        #expect(HTTP2Preface.classify([]) == .needMore)
        #expect(HTTP2Preface.classify(Array("GET / HTTP/1.1\r\n".utf8)) == .http1)
        #expect(HTTP2Preface.classify(Array("PRI * HTTP/1.1\r\n\r\n".utf8)) == .http1)
        #expect(HTTP2Preface.length == 24)
    }
}

@Suite struct Handshake {
    @Test func serverSendsSettingsAckAndConnectionWindowUpdate() throws {
        let c = try H2Client()
        let frames = c.handshake()
        let settings = try #require(frames.first { $0.type == FT.settings && $0.flags & FF.ack == 0 })
        #expect(settings.settings[0x3] == 100)          // MAX_CONCURRENT_STREAMS
        #expect(settings.settings[0x4] == 1 << 20)      // INITIAL_WINDOW_SIZE
        #expect(settings.settings[0x6] == UInt32(64 * 1024))    // MAX_HEADER_LIST_SIZE
        #expect(frames.contains { $0.type == FT.settings && $0.flags & FF.ack != 0 })
        let wu = try #require(frames.first { $0.type == FT.windowUpdate && $0.stream == 0 })
        #expect(wu.windowIncrement == UInt32((2 << 20) - 65_535))
        #expect(!c.server.wantsClose)
        #expect(c.takeEvents().isEmpty)
    }

    @Test func pingIsAcknowledgedWithSamePayload() throws {
        let c = try H2Client()
        c.handshake()
        c.send(frame(FT.ping, 0, 0, [1, 2, 3, 4, 5, 6, 7, 8]))
        let ack = try #require(c.read().first { $0.type == FT.ping })
        #expect(ack.flags & FF.ack != 0)
        #expect(ack.payload == [1, 2, 3, 4, 5, 6, 7, 8])
    }

    @Test func badPrefaceGetsGoawayProtocolErrorAndClose() throws {
        let c = try H2Client()
        c.send(Array("GET / HTTP/1.1\r\nHost: x\r\n\r\n".utf8))
        let frames = c.read()
        let goaway = try #require(frames.first { $0.type == FT.goaway })
        #expect(goaway.errorCode == HTTP2ErrorCode.protocolError)
        #expect(c.takeEvents().contains { $0.isConnectionError })
        #expect(c.server.wantsClose)
    }

    @Test func windowUpdateOfZeroOnConnectionIsProtocolError() throws {
        let c = try H2Client()
        c.handshake()
        c.send(frame(FT.windowUpdate, 0, 0, u32(0)))
        let goaway = try #require(c.read().first { $0.type == FT.goaway })
        #expect(goaway.errorCode == HTTP2ErrorCode.protocolError)
        #expect(c.takeEvents().contains { $0.isConnectionError })
    }

    @Test func unknownFrameTypesAreIgnored() throws {
        let c = try H2Client()
        c.handshake()
        c.send(frame(0xfa, 0, 0, [1, 2, 3]))
        c.request(1)
        #expect(c.read().allSatisfy { $0.type != FT.goaway })
        let events = c.takeEvents()
        #expect(events.count == 1)
        if case .requestHead(1, _, _, true)? = events.first {} else { Issue.record("no request head: \(events)") }
    }
}

@Suite struct Requests {
    @Test func headersBecomeRequestHeadWithHostAndJoinedCookies() throws {
        let c = try H2Client()
        c.handshake()
        c.request(1, path: "/a?b=1", extra: [("cookie", "a=1"), ("user-agent", "t"), ("cookie", "b=2")])
        let events = c.takeEvents()
        guard case .requestHead(let id, let head, let scheme, let end)? = events.first else {
            Issue.record("expected requestHead, got \(events)"); return
        }
        #expect(id == 1 && end && scheme == "http")
        #expect(head.method == "GET" && head.target == "/a?b=1" && head.version == .http2)
        #expect(head.headers.first("host") == "example.com")
        #expect(head.headers.values("cookie") == ["a=1; b=2"])
        #expect(head.headers.first("user-agent") == "t")
        #expect(!head.headers.contains { $0.name.hasPrefix(":") })
    }

    @Test func bodyDataAndTrailersArriveInOrder() throws {
        let c = try H2Client()
        c.handshake()
        c.request(1, method: "POST", extra: [("te", "trailers")], endStream: false)
        c.send(frame(FT.data, 0, 1, Array("hello ".utf8)) + frame(FT.data, 0, 1, Array("world".utf8)))
        c.send(c.headersFrame(1, [("grpc-status", "0")], endStream: true))
        let events = c.takeEvents()
        #expect(events.count == 3)
        if case .requestHead(1, let head, _, false)? = events.first { #expect(head.method == "POST") } else { Issue.record("\(events)") }
        if case .requestData(1, let bytes, false) = events[1] { #expect(bytes == Array("hello world".utf8)) } else { Issue.record("\(events)") }
        if case .requestTrailers(1, let t) = events[2] { #expect(t.first("grpc-status") == "0") } else { Issue.record("\(events)") }
    }

    @Test func endStreamOnDataEndsTheBody() throws {
        let c = try H2Client()
        c.handshake()
        c.request(1, method: "POST", endStream: false)
        c.send(frame(FT.data, FF.endStream, 1, [1, 2, 3]))
        let events = c.takeEvents()
        if case .requestData(1, let b, true) = events.last { #expect(b == [1, 2, 3]) } else { Issue.record("\(events)") }
    }

    @Test func invalidPseudoHeaderResetsStreamWithProtocolError() throws {
        let c = try H2Client()
        c.handshake()
        c.send(c.headersFrame(1, [(":method", "GET"), (":scheme", "http"), (":path", "/"), (":foo", "x")], endStream: true))
        let rst = try #require(c.read().first { $0.type == FT.rstStream })
        #expect(rst.stream == 1 && rst.errorCode == HTTP2ErrorCode.protocolError)
        #expect(c.takeEvents().isEmpty)
    }

    @Test func missingPathResetsStream() throws {
        let c = try H2Client()
        c.handshake()
        c.send(c.headersFrame(1, [(":method", "GET"), (":scheme", "http")], endStream: true))
        let rst = try #require(c.read().first { $0.type == FT.rstStream })
        #expect(rst.errorCode == HTTP2ErrorCode.protocolError)
    }

    @Test func connectionSpecificHeaderResetsStream() throws {
        let c = try H2Client()
        c.handshake()
        c.request(1, extra: [("connection", "keep-alive")])
        let rst = try #require(c.read().first { $0.type == FT.rstStream })
        #expect(rst.errorCode == HTTP2ErrorCode.protocolError)
        #expect(c.takeEvents().isEmpty)
    }

    @Test func uppercaseHeaderNameResetsStream() throws {
        let c = try H2Client()
        c.handshake()
        c.request(1, extra: [("X-Upper", "1")])
        let rst = try #require(c.read().first { $0.type == FT.rstStream })
        #expect(rst.errorCode == HTTP2ErrorCode.protocolError)
    }

    @Test func contentLengthMismatchResetsStreamAfterHead() throws {
        let c = try H2Client()
        c.handshake()
        c.request(1, method: "POST", extra: [("content-length", "10")], endStream: false)
        c.send(frame(FT.data, FF.endStream, 1, [1, 2, 3]))
        let rst = try #require(c.read().first { $0.type == FT.rstStream })
        #expect(rst.errorCode == HTTP2ErrorCode.protocolError)
        let events = c.takeEvents()
        #expect(events.contains { if case .streamReset(1, HTTP2ErrorCode.protocolError) = $0 { true } else { false } })
    }

    @Test func clientResetIsReported() throws {
        let c = try H2Client()
        c.handshake()
        c.request(1, method: "POST", endStream: false)
        c.send(frame(FT.rstStream, 0, 1, u32(HTTP2ErrorCode.cancel)))
        _ = c.read()
        let events = c.takeEvents()
        #expect(events.contains { if case .streamReset(1, HTTP2ErrorCode.cancel) = $0 { true } else { false } })
        #expect(c.server.openStreamCount == 0)
    }

    @Test func dataOnClosedStreamIsStreamClosed() throws {
        let c = try H2Client()
        c.handshake()
        c.request(1)
        _ = c.takeEvents()
        c.server.sendResponseHead(streamID: 1, ResponseHead(status: 204), endStream: true)
        _ = c.read()
        c.send(frame(FT.data, 0, 1, [1, 2, 3]))
        let frames = c.read()
        let err = try #require(frames.first { $0.type == FT.rstStream || $0.type == FT.goaway })
        #expect(err.errorCode == HTTP2ErrorCode.streamClosed)
    }

    @Test func headersOnASkippedLowerStreamIDIsConnectionError() throws {
        let c = try H2Client()
        c.handshake()
        c.request(5)
        c.request(3)
        let goaway = try #require(c.read().first { $0.type == FT.goaway })
        #expect(goaway.errorCode == HTTP2ErrorCode.protocolError)
        #expect(c.takeEvents().contains { $0.isConnectionError })
    }

    @Test func priorityForAnIdleStreamThenLowerHeadersIsServed() throws {
        let c = try H2Client()
        c.handshake()
        c.send(frame(FT.priority, 0, 3, u32(0) + [255]))
        c.request(1)
        #expect(!c.read().contains { $0.type == FT.goaway })
        if case .requestHead(1, _, _, _)? = c.takeEvents().first {} else { Issue.record("stream 1 not served") }
    }

    @Test func priorityOnStreamZeroIsConnectionError() throws {
        let c = try H2Client()
        c.handshake()
        c.send(frame(FT.priority, 0, 0, u32(0) + [255]))
        let goaway = try #require(c.read().first { $0.type == FT.goaway })
        #expect(goaway.errorCode == HTTP2ErrorCode.protocolError)
    }

    @Test func clientGoawayIsReported() throws {
        let c = try H2Client()
        c.handshake()
        c.send(frame(FT.goaway, 0, 0, u32(0) + u32(HTTP2ErrorCode.noError)))
        let events = c.takeEvents()
        if case .goaway(0, 0)? = events.first {} else { Issue.record("\(events)") }
    }
}

@Suite struct Responses {
    @Test func headDataTrailersRoundTripWithConnectionHeadersRemoved() throws {
        let c = try H2Client()
        c.handshake()
        c.request(1)
        _ = c.takeEvents()
        var h = HTTPHeaders()
        h.add(name: "Content-Type", value: "application/grpc")
        h.add(name: "Connection", value: "close, X-Hop")
        h.add(name: "X-Hop", value: "1")
        h.add(name: "Transfer-Encoding", value: "chunked")
        h.add(name: "Keep-Alive", value: "timeout=5")
        h.add(name: "X-Keep", value: " padded ")
        c.server.sendResponseHead(streamID: 1, ResponseHead(status: 200, headers: h), endStream: false)
        c.server.sendData(streamID: 1, Array("body".utf8), endStream: false)
        var t = HTTPHeaders()
        t.add(name: "Grpc-Status", value: "0")
        c.server.sendTrailers(streamID: 1, t)
        let frames = c.read().filter { $0.stream == 1 }
        #expect(frames.map(\.type) == [FT.headers, FT.data, FT.headers])
        let head = c.fields(of: frames[0])
        #expect(head.map(\.name) == [":status", "content-type", "x-keep"])
        #expect(head.first?.value == "200")
        #expect(head.last?.value == "padded")
        #expect(frames[1].payload == Array("body".utf8))
        #expect(frames[1].flags & FF.endStream == 0)
        #expect(frames[2].flags & FF.endStream != 0)
        #expect(c.fields(of: frames[2]).map(\.name) == ["grpc-status"])
        #expect(c.takeEvents().isEmpty)
        #expect(c.server.openStreamCount == 0)
    }

    @Test func dataQueuedBeforeTheHeadIsSentIsDeferredThenResumed() throws {
        let c = try H2Client()
        c.handshake()
        c.request(1)
        c.server.sendResponseHead(streamID: 1, ResponseHead(status: 200), endStream: false)
        #expect(c.read().filter { $0.stream == 1 }.map(\.type) == [FT.headers])
        c.server.sendData(streamID: 1, Array("late".utf8), endStream: true)
        let frames = c.read().filter { $0.stream == 1 }
        #expect(frames.map(\.type) == [FT.data])
        #expect(frames.first?.flags == FF.endStream)
    }

    @Test func informationalHeadPrecedesFinalResponse() throws {
        let c = try H2Client()
        c.handshake()
        c.request(1, method: "POST", extra: [("expect", "100-continue")], endStream: false)
        c.server.sendResponseHead(streamID: 1, ResponseHead(status: 100), endStream: false)
        c.server.sendResponseHead(streamID: 1, ResponseHead(status: 200), endStream: true)
        let frames = c.read().filter { $0.stream == 1 }
        #expect(frames.count == 2)
        #expect(c.fields(of: frames[0]).first?.value == "100")
        #expect(c.fields(of: frames[1]).first?.value == "200")
    }

    @Test func responseRespectsClientFlowControlAndReportsPendingBytes() throws {
        let c = try H2Client()
        c.handshake(settings: [(0x4, 10)])   // INITIAL_WINDOW_SIZE 10
        c.request(1)
        c.server.sendResponseHead(streamID: 1, ResponseHead(status: 200), endStream: false)
        c.server.sendData(streamID: 1, [UInt8](repeating: 7, count: 100), endStream: true)
        var frames = c.read().filter { $0.type == FT.data }
        #expect(frames.map(\.payload.count) == [10])
        #expect(c.server.pendingOutboundBytes(streamID: 1) == 90)
        c.send(frame(FT.windowUpdate, 0, 1, u32(1000)))
        frames = c.read().filter { $0.type == FT.data }
        #expect(frames.map(\.payload.count) == [90])
        #expect(frames.last?.flags == FF.endStream)
        #expect(c.server.pendingOutboundBytes(streamID: 1) == 0)
    }

    @Test func resetStreamSendsRstAndReportsNothing() throws {
        let c = try H2Client()
        c.handshake()
        c.request(1, method: "POST", endStream: false)
        _ = c.takeEvents()
        c.server.resetStream(streamID: 1, errorCode: HTTP2ErrorCode.internalError)
        let rst = try #require(c.read().first { $0.type == FT.rstStream })
        #expect(rst.stream == 1 && rst.errorCode == HTTP2ErrorCode.internalError)
        #expect(c.takeEvents().isEmpty)
    }
}

@Suite struct FlowControl {
    @Test func windowReopensOnlyWhenTheProxyConsumes() throws {
        let c = try H2Client()
        c.handshake()
        c.request(1, method: "POST", endStream: false)
        let chunk = [UInt8](repeating: 1, count: 16_384)
        for _ in 0..<40 { c.send(frame(FT.data, 0, 1, chunk)) }   // 640 KiB < 1 MiB stream window
        var received = 0
        for e in c.takeEvents() { if case .requestData(1, let b, _) = e { received += b.count } }
        #expect(received == 40 * 16_384)
        #expect(!c.read().contains { $0.type == FT.windowUpdate && $0.stream == 1 })
        c.server.consumed(streamID: 1, bytes: received)
        let wu = try #require(c.read().first { $0.type == FT.windowUpdate && $0.stream == 1 })
        #expect(wu.windowIncrement == UInt32(received))
    }

    @Test func sendingPastTheStreamWindowIsFlowControlError() throws {
        let c = try H2Client()
        c.handshake()
        c.request(1, method: "POST", endStream: false)
        let chunk = [UInt8](repeating: 1, count: 16_384)
        for _ in 0..<65 { c.send(frame(FT.data, 0, 1, chunk)) }   // 1,064,960 > 1 MiB
        let err = try #require(c.read().first { $0.type == FT.rstStream || $0.type == FT.goaway })
        #expect(err.errorCode == HTTP2ErrorCode.flowControlError)
    }

    @Test func bytesOfAResetStreamReturnToTheConnectionWindow() throws {
        let c = try H2Client()
        c.handshake()
        c.request(1, method: "POST", endStream: false)
        let chunk = [UInt8](repeating: 1, count: 16_384)
        for _ in 0..<70 { c.send(frame(FT.data, 0, 1, chunk)) }   // 1.1 MiB... stream 1 errors past 1 MiB
        _ = c.read()
        // Stream 3 can still use the connection: its window was given back when stream 1 closed.
        c.request(3, method: "POST", endStream: false)
        for _ in 0..<60 { c.send(frame(FT.data, 0, 3, chunk)) }
        let frames = c.read()
        #expect(!frames.contains { $0.type == FT.goaway })
        #expect(!frames.contains { $0.type == FT.rstStream && $0.stream == 3 })
    }
}

@Suite struct Drain {
    @Test func gracefulShutdownSendsGoawayWithLastStreamAndClosesWhenDone() throws {
        let c = try H2Client()
        c.handshake()
        c.request(1)
        _ = c.takeEvents()
        c.server.startGracefulShutdown()
        let goaway = try #require(c.read().first { $0.type == FT.goaway })
        #expect(goaway.errorCode == HTTP2ErrorCode.noError)
        #expect(goaway.goawayLastStream == 1)
        #expect(!c.server.wantsClose)
        // A newer stream is ignored; stream 1 still completes.
        c.request(3)
        #expect(c.takeEvents().isEmpty)
        c.server.sendResponseHead(streamID: 1, ResponseHead(status: 200), endStream: true)
        _ = c.read()
        #expect(c.server.wantsClose)
    }
}

@Suite struct Abuse {
    @Test func rapidResetGetsGoawayEnhanceYourCalm() throws {
        let clock = FakeClock()
        let c = try H2Client(clock: clock)
        c.handshake()
        var stream: Int32 = 1
        var bytes: [UInt8] = []
        for _ in 0..<500 {
            bytes += c.headersFrame(stream, [(":method", "GET"), (":scheme", "http"), (":path", "/"), (":authority", "a")], endStream: true)
            bytes += frame(FT.rstStream, 0, stream, u32(HTTP2ErrorCode.cancel))
            stream += 2
        }
        c.send(bytes)
        let goaway = try #require(c.read().first { $0.type == FT.goaway })
        #expect(goaway.errorCode == HTTP2ErrorCode.enhanceYourCalm)
        #expect(c.takeEvents().contains { $0.isConnectionError })
        #expect(c.server.wantsClose)
    }

    @Test func resetsWithinTheRateAreFine() throws {
        let clock = FakeClock()
        let c = try H2Client(clock: clock)
        c.handshake()
        var stream: Int32 = 1
        for _ in 0..<10 {
            for _ in 0..<100 {
                c.request(stream)
                c.send(frame(FT.rstStream, 0, stream, u32(HTTP2ErrorCode.cancel)))
                stream += 2
            }
            clock.advance(seconds: 1)
        }
        #expect(!c.read().contains { $0.type == FT.goaway })
        #expect(!c.takeEvents().contains { $0.isConnectionError })
    }

    @Test func oversizedHeaderListGets431() throws {
        var s = HTTP2Settings()
        s.maxHeaderListSize = 4096
        let c = try H2Client(settings: s)
        c.handshake()
        let big = String(repeating: "x", count: 3000)
        c.request(1, extra: [("x-a", big), ("x-b", big)])
        let frames = c.read().filter { $0.stream == 1 }
        let head = try #require(frames.first { $0.type == FT.headers })
        #expect(c.fields(of: head).first?.value == "431")
        #expect(head.flags & FF.endStream != 0)
        #expect(c.takeEvents().isEmpty)
        // The connection still works.
        c.request(3)
        if case .requestHead(3, _, _, _)? = c.takeEvents().first {} else { Issue.record("stream 3 not served") }
    }

    @Test func hpackBombIsBoundedByTheHeaderListLimit() throws {
        let c = try H2Client()
        c.handshake()
        // One 4000-byte field enters the dynamic table, then ~1 byte indexed references repeat it.
        var block = c.encoder.encode([(":method", "GET"), (":scheme", "http"), (":path", "/"), (":authority", "a")])
        // Literal with incremental indexing, new name: "x-bomb: bbbb…" (4,038 bytes of table).
        block += [0x40] + hpackInt(6, prefix: 7) + Array("x-bomb".utf8) + hpackInt(4000, prefix: 7) + [UInt8](repeating: 0x62, count: 4000)
        // Indexed field 62 (the newest dynamic entry): one byte decoding to 4,038 bytes.
        block += [UInt8](repeating: 0x80 | 62, count: 2000)
        #expect(block.count < 16_384)
        c.send(frame(FT.headers, FF.endStream | FF.endHeaders, 1, block))
        let frames = c.read()
        let head = try #require(frames.first { $0.type == FT.headers && $0.stream == 1 })
        #expect(c.fields(of: head).first?.value == "431")
        #expect(c.takeEvents().isEmpty)
    }

    @Test func continuationFloodIsAConnectionError() throws {
        let c = try H2Client()
        c.handshake()
        var bytes = c.headersFrame(1, [(":method", "GET"), (":scheme", "http"), (":path", "/")], endStream: true, endHeaders: false)
        for _ in 0..<100 { bytes += frame(FT.continuation, 0, 1, c.encoder.encode([("x", "y")])) }
        c.send(bytes)
        let goaway = try #require(c.read().first { $0.type == FT.goaway })
        #expect(goaway.errorCode != HTTP2ErrorCode.noError)
        #expect(c.takeEvents().contains { $0.isConnectionError })
    }

    @Test func pingFloodGetsEnhanceYourCalm() throws {
        let c = try H2Client(clock: FakeClock())
        c.handshake()
        var bytes: [UInt8] = []
        for _ in 0..<1000 { bytes += frame(FT.ping, 0, 0, [0, 0, 0, 0, 0, 0, 0, 0]) }
        c.send(bytes)
        let goaway = try #require(c.read().first { $0.type == FT.goaway })
        #expect(goaway.errorCode == HTTP2ErrorCode.enhanceYourCalm)
    }

    @Test func settingsFloodGetsEnhanceYourCalm() throws {
        let c = try H2Client(clock: FakeClock())
        c.handshake()
        var bytes: [UInt8] = []
        for _ in 0..<1000 { bytes += settingsFrame([(0x4, 65535)]) }
        c.send(bytes)
        let goaway = try #require(c.read().first { $0.type == FT.goaway })
        #expect(goaway.errorCode == HTTP2ErrorCode.enhanceYourCalm)
    }

    /// Past the acknowledged limit nghttp2 answers with a connection error (PROTOCOL_ERROR),
    /// which RFC 9113 §5.1.2 allows (a stream error is the minimum) and h2spec 5.1.2 expects.
    @Test func streamsOverTheConcurrencyLimitAreRefused() throws {
        var s = HTTP2Settings()
        s.maxConcurrentStreams = 2
        let c = try H2Client(settings: s)
        c.handshake()
        c.request(1); c.request(3); c.request(5)
        let frames = c.read()
        let err = try #require(frames.first { $0.type == FT.rstStream || $0.type == FT.goaway }, "\(frames)")
        #expect(err.errorCode == HTTP2ErrorCode.protocolError || err.errorCode == HTTP2ErrorCode.refusedStream)
        let heads = c.takeEvents().filter { if case .requestHead = $0 { true } else { false } }
        #expect(heads.count == 2)
    }

    @Test func garbageNeverCrashes() throws {
        var rng = SystemRandomNumberGenerator()
        for _ in 0..<200 {
            let c = try H2Client()
            c.handshake()
            var junk: [UInt8] = []
            for _ in 0..<Int.random(in: 1...400, using: &rng) { junk.append(UInt8.random(in: 0...255, using: &rng)) }
            c.send(junk)
            _ = c.read()
            c.server.sendResponseHead(streamID: 1, ResponseHead(status: 200), endStream: false)
            c.server.sendData(streamID: 1, [1], endStream: true)
            c.server.consumed(streamID: 1, bytes: 1 << 40)
            _ = c.read()
        }
    }
}
