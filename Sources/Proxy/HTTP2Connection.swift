#if canImport(Glibc)
import Glibc
#endif
import EventLoop
import HTTP1
import HTTP2
import OutriderCore
import TLS

/// One client connection speaking HTTP/2 (h2 over TLS by ALPN, or h2c with prior knowledge).
/// nghttp2 (through `HTTP2ServerSession`) does the framing; each stream is an `Exchange` like
/// an HTTP/1.1 request, with the same filter chain, upstream pool and access log. Request
/// bodies are acknowledged to the client (WINDOW_UPDATE) only once handed to the upstream,
/// so a slow upstream closes the client's window instead of growing memory.
final class HTTP2Connection: EventHandler, ClientConnection {
    let fd: Int32
    unowned let worker: Worker
    private(set) var listener: ListenerRuntime
    let peer: String
    let peerPort: UInt16
    let peerDescription: String
    let tls: TLSConnection?
    let peerCertificate: PeerCertificateInfo?
    let forwardedClientCert: String?
    var scheme: String { tls == nil ? "http" : "https" }

    let session: HTTP2ServerSession
    private var streams: [Int32: HTTP2Stream] = [:]
    private var out = ByteBuffer()
    private var cipherOut = ByteBuffer()
    private var readable = true
    private var writable = true
    private var hangupSeen = false
    private(set) var closed = false
    private(set) var isProcessingInput = false
    private var idleDeadline: UInt64 = 0
    private var closing = false

    /// Takes over `fd` from the HTTP/1.1 connection that recognised HTTP/2, with the bytes it
    /// already read (plaintext: the preface onwards).
    init(fd: Int32, worker: Worker, listener: ListenerRuntime, peer: String, peerPort: UInt16, peerDescription: String,
         tls: TLSConnection?, peerCertificate: PeerCertificateInfo?, forwardedClientCert: String?) throws {
        self.fd = fd
        self.worker = worker
        self.listener = listener
        self.peer = peer
        self.peerPort = peerPort
        self.peerDescription = peerDescription
        self.tls = tls
        self.peerCertificate = peerCertificate
        self.forwardedClientCert = forwardedClientCert
        session = try HTTP2ServerSession(settings: HTTP2Settings())
        touchIdle()
    }

    /// Starts serving: our SETTINGS, then whatever the HTTP/1.1 side had read.
    func start(initial: [UInt8]) {
        flush()   // the server connection preface (SETTINGS, connection WINDOW_UPDATE) goes first
        if !initial.isEmpty && !closed { initial.withUnsafeBytes { receive($0) } }
        if !closed { readLoop() }
    }

    // MARK: input

    func handleEvent(_ events: UInt32) {
        if events & (IOEvent.error | IOEvent.hangup) != 0 && events & IOEvent.readable == 0 {
            abort(flags: "DC", details: "downstream_reset")
            return
        }
        if events & IOEvent.writable != 0 {
            writable = true
            flush()
        }
        if events & (IOEvent.readable | IOEvent.readHangup | IOEvent.hangup | IOEvent.error) != 0 {
            if events & (IOEvent.readHangup | IOEvent.hangup) != 0 { hangupSeen = true }
            readable = true
            readLoop()
        }
    }

    private func readLoop() {
        var rounds = 0
        while readable && !closed {
            // Connection-level backpressure: while the client does not read, do not read it.
            if out.readableBytes + cipherOut.readableBytes > Watermark.high { return }
            rounds += 1
            if rounds > 16 {
                worker.loop.deferWork { [self] in readLoop() }
                return
            }
            let r: IOResult<Int>
            do { r = try Socket.read(fd, into: worker.scratch) } catch {
                abort(flags: "DC", details: "downstream_reset")
                return
            }
            switch r {
            case .wouldBlock:
                readable = false
            case .done(0):
                abort(flags: "DC", details: "downstream_closed")
                return
            case .done(let n):
                listener.stats.bytesReceived.add(UInt64(n), shard: worker.index)
                if n < worker.scratch.count && !hangupSeen { readable = false }
                let bytes = UnsafeRawBufferPointer(rebasing: worker.scratch[0..<n])
                if let tls {
                    tls.receive(bytes)
                    var plain: [UInt8] = []
                    let closeNotify: Bool
                    do { closeNotify = try tls.readAvailable(into: &plain).closeNotify } catch {
                        abort(flags: "DC", details: "tls_error")
                        return
                    }
                    // TLS may have produced records of its own (tickets, alerts) even without plaintext.
                    if plain.isEmpty { flush() } else { plain.withUnsafeBytes { receive($0) } }
                    if closeNotify {
                        abort(flags: "DC", details: "downstream_closed")
                        return
                    }
                } else {
                    receive(bytes)
                }
            }
        }
    }

    /// Feeds the session and handles what it reports, then writes once.
    private func receive(_ bytes: UnsafeRawBufferPointer) {
        isProcessingInput = true
        var events = session.receive(bytes)
        while !events.isEmpty {
            for e in events { handle(e) }
            events = session.takeEvents()
        }
        isProcessingInput = false
        for s in streams.values { s.exchange?.flushUpstream() }
        flush()
    }

    private func handle(_ event: HTTP2Event) {
        switch event {
        case .requestHead(let id, let head, _, let endStream):
            startStream(id, head, endStream: endStream)
        case .requestData(let id, let data, let endStream):
            guard let s = streams[id] else {
                if !data.isEmpty { session.consumed(streamID: id, bytes: data.count) }
                return
            }
            s.requestData(data, endStream: endStream)
        case .requestTrailers(let id, let trailers):
            streams[id]?.requestTrailers(trailers)
        case .streamReset(let id, _):
            if let s = streams.removeValue(forKey: id) { s.clientReset() }
        case .goaway:
            closing = true
        case .connectionError(let why):
            Diagnostics.log(.debug, "HTTP/2 connection from \(peerDescription): \(why)")
            closing = true
            for s in Array(streams.values) { s.clientReset() }
            streams.removeAll()
        }
    }

    private func startStream(_ id: Int32, _ head: RequestHead, endStream: Bool) {
        let snap = worker.currentSnapshot()
        if let l = snap.listeners[listener.name] { listener = l }
        // The upstream is spoken to in HTTP/1.1: a body without a length goes chunked.
        let framing: BodyFraming
        if endStream {
            framing = .none
        } else if let cl = head.headers.first("content-length"), let n = UInt64(cl) {
            framing = n == 0 ? .none : .contentLength(n)
        } else {
            framing = .chunked
        }
        let stream = HTTP2Stream(id: id, connection: self)
        streams[id] = stream
        idleDeadline = 0
        let now = worker.loop.now
        let ex = Exchange(downstream: stream, snapshot: snap, listener: listener, head: head, framing: framing,
                          clientKeepAlive: true, upgrade: nil, startWall: wallClockNanos(), startMono: now)
        stream.exchange = ex
        ex.start(expectsContinue: false)
    }

    func streamFinished(_ id: Int32) {
        streams[id] = nil
        if streams.isEmpty { touchIdle() }
    }

    // MARK: output

    func flush() {
        guard !closed else { return }
        session.takeOutput(into: &out)
        var sent: UInt64 = 0
        let ok: Bool
        if let tls {
            if !out.isEmpty {
                do { try out.withReadableBytes { try tls.writePlaintext($0) } } catch {
                    abort(flags: "DC", details: "tls_write_failed")
                    return
                }
                out.clear()
            }
            _ = tls.takeCiphertext(into: &cipherOut)
            ok = flushBuffer(fd: fd, out: &cipherOut, writable: &writable, sent: &sent)
        } else {
            ok = flushBuffer(fd: fd, out: &out, writable: &writable, sent: &sent)
        }
        if sent > 0 { listener.stats.bytesSent.add(sent, shard: worker.index) }
        if !ok {
            abort(flags: "DC", details: "downstream_write_failed")
            return
        }
        // Streams whose upstream waits for the client to read: resume the ones that drained.
        for s in streams.values where s.exchange != nil && !s.outputAboveHighWatermark {
            s.exchange?.downstreamDrained()
        }
        if out.isEmpty && cipherOut.isEmpty {
            if session.wantsClose || (closing && streams.isEmpty) { close() }
            else if readable { worker.loop.deferWork { [self] in readLoop() } }
        }
    }

    var outputBytes: Int { out.readableBytes + cipherOut.readableBytes }

    // MARK: lifecycle

    private func touchIdle() {
        let t = worker.snapshot.config.timeouts.idle
        idleDeadline = t > 0 ? worker.loop.now &+ t : 0
    }

    func checkDeadlines(now: UInt64) {
        guard !closed else { return }
        for s in Array(streams.values) { s.exchange?.checkDeadlines(now: now) }
        if streams.isEmpty && idleDeadline != 0 && now >= idleDeadline {
            // Idle: say goodbye properly, then close once it is written.
            session.startGracefulShutdown()
            closing = true
            flush()
        }
    }

    func drain() {
        closing = true
        session.startGracefulShutdown()
        flush()
    }

    func abort(flags: String, details: String) {
        guard !closed else { return }
        let all = Array(streams.values)
        streams.removeAll()
        for s in all { s.exchange?.abort(flags: flags, details: details) }
        close()
    }

    private func close() {
        guard !closed else { return }
        closed = true
        worker.loop.deregister(fd: fd)
        Glibc.close(fd)
        out.clear()
        cipherOut.clear()
        worker.connectionClosed(self)
    }
}

/// One HTTP/2 stream as an exchange sees its client.
final class HTTP2Stream: ExchangeDownstream {
    let id: Int32
    unowned let connection: HTTP2Connection
    var exchange: Exchange?
    /// Request DATA received while the exchange could not take it (a filter paused the
    /// stream, or the upstream is behind). Bounded by the stream's flow-control window, which
    /// stays closed for these bytes until they are delivered.
    private var held: [[UInt8]] = []
    private var heldEnd = false
    private var heldTrailers: HTTPHeaders?

    init(id: Int32, connection: HTTP2Connection) {
        self.id = id
        self.connection = connection
    }

    var worker: Worker { connection.worker }
    var peer: String { connection.peer }
    var peerPort: UInt16 { connection.peerPort }
    var peerDescription: String { connection.peerDescription }
    var scheme: String { connection.scheme }
    var peerCertificate: PeerCertificateInfo? { connection.peerCertificate }
    var forwardedClientCert: String? { connection.forwardedClientCert }
    var isProcessingInput: Bool { connection.isProcessingInput }
    var closeAfterResponse: Bool = false
    var readPaused: Bool = false

    // MARK: request side

    func requestData(_ data: [UInt8], endStream: Bool) {
        if readPaused || !held.isEmpty {
            if !data.isEmpty { held.append(data) }
            if endStream { heldEnd = true }
            return
        }
        deliver(data)
        if endStream { end(trailers: HTTPHeaders()) }
    }

    func requestTrailers(_ trailers: HTTPHeaders) {
        if readPaused || !held.isEmpty { heldTrailers = trailers; heldEnd = true; return }
        end(trailers: trailers)
    }

    private func deliver(_ data: [UInt8]) {
        guard !data.isEmpty else { return }
        data.withUnsafeBytes { exchange?.requestBody($0) }
        connection.session.consumed(streamID: id, bytes: data.count)
    }

    private func end(trailers: HTTPHeaders) {
        exchange?.requestEnd(trailers: trailers)
    }

    func resumeInput() {
        guard !readPaused else { return }
        while !held.isEmpty && !readPaused {
            deliver(held.removeFirst())
        }
        if held.isEmpty && heldEnd && !readPaused {
            heldEnd = false
            end(trailers: heldTrailers ?? HTTPHeaders())
            heldTrailers = nil
        }
        exchange?.flushUpstream()
        connection.flush()
    }

    func clientReset() {
        let ex = exchange
        exchange = nil
        ex?.abort(flags: "DC", details: "stream_reset_by_client")
    }

    // MARK: response side

    func sendContinue() {}

    func sendResponseHead(_ head: ResponseHead, framing: BodyFraming) {
        var r = head
        r.version = .http2
        connection.session.sendResponseHead(streamID: id, r, endStream: false)
    }

    func sendResponseBody(_ bytes: UnsafeRawBufferPointer) {
        connection.session.sendData(streamID: id, bytes, endStream: false)
    }

    func sendResponseEnd(trailers: HTTPHeaders) {
        if trailers.isEmpty {
            connection.session.sendData(streamID: id, UnsafeRawBufferPointer(start: nil, count: 0), endStream: true)
        } else {
            connection.session.sendTrailers(streamID: id, trailers)
        }
    }

    func sendLocalReply(_ reply: LocalReply, requestID: String?) {
        var head = ResponseHead(status: reply.status, version: .http2, headers: reply.headers)
        head.headers.add(name: "content-type", value: "text/plain; charset=utf-8")
        head.headers.add(name: "content-length", value: String(reply.body.utf8.count))
        if let requestID, !head.headers.contains("x-request-id") { head.headers.add(name: "x-request-id", value: requestID) }
        connection.session.sendResponseHead(streamID: id, head, endStream: false)
        let body = Array(reply.body.utf8)
        // No RST_STREAM even when the body is still coming: nghttp2 would send the reset ahead
        // of the queued reply. Body bytes that arrive later are acknowledged and dropped.
        body.withUnsafeBytes { connection.session.sendData(streamID: id, $0, endStream: true) }
    }

    var outputAboveHighWatermark: Bool {
        connection.session.pendingOutboundBytes(streamID: id) > Watermark.high || connection.outputBytes > Watermark.high
    }

    func flush() { connection.flush() }
    /// nghttp2 already gathers a session's frames into one output: written now.
    func flushAtEndOfIteration() { connection.flush() }

    // Upgrades do not exist in HTTP/2 (the exchange never starts a tunnel for a stream).
    func sendUpgradeHead(_ head: ResponseHead) {}
    func enterTunnel() {}
    func sendTunnelBytes(_ bytes: UnsafeRawBufferPointer) {}

    func finishStats(status: Int, details: String?, durationNanos: UInt64) {
        let stats = connection.listener.stats
        stats.request(status: status, shard: worker.index)
        stats.duration.observe(Double(durationNanos) / 1e9, shard: worker.index)
        if let d = details { stats.localReply(d, shard: worker.index) }
    }

    func exchangeFinished() {
        exchange = nil
        held.removeAll()
        connection.streamFinished(id)
        connection.flush()
    }

    func abort(flags: String, details: String) {
        exchange = nil
        connection.session.resetStream(streamID: id, errorCode: HTTP2ErrorCode.internalError)
        connection.streamFinished(id)
        connection.flush()
    }
}
