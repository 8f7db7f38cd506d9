#if canImport(Glibc)
import Glibc
#endif
import EventLoop
import HTTP1
import HTTP2
import OutriderCore
import TLS

/// One client connection speaking HTTP/1.x. It parses requests one at a time and hands each
/// to an `Exchange`, which talks to the upstream. Pipelined requests wait, unparsed, in
/// `pending` until the exchange before them has finished, so responses go out in order.
final class DownstreamConnection: EventHandler, ExchangeDownstream, ClientConnection, DeferredWriter {
    enum State {
        /// Between requests or reading a request head/body.
        case http
        /// An upgraded connection (WebSocket): raw bytes both ways.
        case tunnel
        /// Response sent with "Connection: close": write side shut, discarding input until EOF.
        case lingering
        case closed
    }

    let fd: Int32
    unowned let worker: Worker
    private(set) var listener: ListenerRuntime
    let peer: String
    let peerPort: UInt16
    /// "address:port" of the client, for the access log.
    let peerDescription: String
    /// The snapshot version `listener` was taken from.
    private var listenerVersion: Int

    private(set) var state: State = .http
    /// TLS on this connection (nil: plaintext). Ciphertext never enters `pending` or `out`:
    /// `pending` and `out` hold plaintext, `cipherOut` what waits for the socket.
    var tls: TLSConnection?
    private var cipherOut = ByteBuffer()
    /// The client's verified certificate, after a TLS handshake that had one.
    private(set) var peerCertificate: PeerCertificateInfo?
    /// "https" over TLS.
    var scheme: String { tls == nil ? "http" : "https" }
    private var parser: HTTP1RequestParser
    private var pending: [UInt8] = []
    var out = ByteBuffer()
    private var readable = false
    private var writable = true
    /// Set while the upstream cannot take more request bytes (backpressure).
    var readPaused = false
    /// How the current response body is written: as received (Content-Length), re-chunked,
    /// or delimited by closing the connection (HTTP/1.0 clients).
    private enum ResponseFraming { case none, asIs, chunked, untilClose }
    private var responseFraming: ResponseFraming = .none
    /// The HTTP version of the request being answered.
    private var requestVersion: HTTPVersion = .http11
    /// Whether the first bytes told HTTP/1.x from the HTTP/2 connection preface yet.
    private var protocolDecided = false

    /// True while a complete request waits for its response: further input stays unparsed.
    private var awaitingResponse = false
    private(set) var exchange: Exchange?
    private(set) var peerClosed = false
    /// Close once the current response is written (client asked, HTTP/1.0, draining, error).
    var closeAfterResponse = false
    private var bytesReceivedTotal: UInt64 = 0
    var bytesSentTotal: UInt64 = 0

    /// Deadline for the request head in progress (slowloris), 0 when none.
    private var headDeadline: UInt64 = 0
    /// Deadline for an idle keep-alive connection, 0 when busy.
    private var idleDeadline: UInt64 = 0
    private var lingerDeadline: UInt64 = 0
    /// Wall-clock and monotonic time the current request head started.
    private(set) var requestStartWall: UInt64 = 0
    private(set) var requestStartMono: UInt64 = 0

    init(fd: Int32, worker: Worker, listener: ListenerRuntime, peer: String, peerPort: UInt16) {
        self.fd = fd
        self.worker = worker
        self.listener = listener
        self.peer = peer
        self.peerPort = peerPort
        peerDescription = "\(peer):\(peerPort)"
        let snap = worker.snapshot
        listenerVersion = snap.version
        parser = HTTP1RequestParser(limits: snap.parserLimits)
        // A new connection must send its first request head promptly.
        headDeadline = worker.loop.now &+ nonZero(snap.config.timeouts.headerRead)
    }

    // MARK: events

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

    /// Reads while there is input and nothing holds us back. Bounded per call for fairness:
    /// the rest continues in a deferred callback.
    func readLoop() {
        if let tls { readTLSLoop(tls); return }
        var rounds = 0
        while readable && !readPaused && state != .closed {
            if awaitingResponse && pending.count >= 64 * 1024 { return }   // enough pipelined input buffered
            rounds += 1
            if rounds > 16 {
                // Strong capture: a weak reference would give the object a side table and slow
                // every retain/release of it. readLoop checks for .closed itself.
                worker.loop.deferWork { [self] in readLoop() }
                return
            }
            switch readThroughScratch(fd: fd, pending: &pending, scratch: worker.scratch) {
            case .wouldBlock:
                readable = false
            case .endOfStream:
                readable = false
                peerClosed = true
                onPeerClosed()
                return
            case .failed:
                readable = false
                abort(flags: "DC", details: "downstream_reset")
                return
            case .data(let bytes, let fresh, let drained):
                bytesReceivedTotal &+= UInt64(fresh)
                listener.stats.bytesReceived.add(UInt64(fresh), shard: worker.index)
                // A short read drained the socket: the next arrival raises a new edge, so the
                // read that would only say EAGAIN is skipped (not when a FIN may be pending).
                if drained && !hangupSeen { readable = false }
                processBatch(bytes)
            }
        }
    }

    /// Reads ciphertext, decrypts it, and processes the plaintext like a plaintext connection.
    private func readTLSLoop(_ tls: TLSConnection) {
        var rounds = 0
        while readable && !readPaused && state != .closed {
            if awaitingResponse && pending.count >= 64 * 1024 { return }
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
                readable = false
                peerClosed = true
                onPeerClosed()
                return
            case .done(let n):
                bytesReceivedTotal &+= UInt64(n)
                listener.stats.bytesReceived.add(UInt64(n), shard: worker.index)
                if n < worker.scratch.count && !hangupSeen { readable = false }
                tls.receive(UnsafeRawBufferPointer(rebasing: worker.scratch[0..<n]))
                if !decrypt(tls) { return }
            }
        }
    }

    /// Drains the plaintext TLS has for us and processes it (after any plaintext still pending).
    /// Returns false when the connection ended (handshake failure or close_notify).
    private func decrypt(_ tls: TLSConnection) -> Bool {
        var plain = pending
        pending = []
        let had = plain.count
        let closeNotify: Bool
        do {
            let r = try tls.readAvailable(into: &plain)
            if r.handshakeCompleted { handshakeCompleted(tls) }
            closeNotify = r.closeNotify
        } catch {
            handshakeFailed(error)
            return false
        }
        flush()   // handshake records, alerts
        if plain.count > had || (!plain.isEmpty && !awaitingResponse) {
            plain.withUnsafeBytes { processBatch($0) }
        } else {
            pending = plain
        }
        if closeNotify {
            peerClosed = true
            onPeerClosed()
            return false
        }
        return state != .closed
    }

    /// The x-forwarded-client-cert element for this connection's verified client, if any.
    private(set) var forwardedClientCert: String?

    /// Hands the socket (and TLS state) to an HTTP/2 connection; this object retires.
    private func switchToHTTP2(initial: [UInt8]) {
        let h2: HTTP2Connection
        do {
            h2 = try HTTP2Connection(fd: fd, worker: worker, listener: listener, peer: peer, peerPort: peerPort,
                                     peerDescription: peerDescription, tls: tls, peerCertificate: peerCertificate,
                                     forwardedClientCert: forwardedClientCert)
        } catch {
            Diagnostics.log(.error, "cannot start HTTP/2 for \(peerDescription): \(error)")
            close()
            return
        }
        // TLS bytes already encrypted for the client go out first.
        flush()
        state = .closed
        pending = []
        worker.loop.replaceHandler(fd: fd, with: h2)
        worker.connectionHandedOver(from: self, to: h2)
        h2.start(initial: initial)
    }

    private func handshakeCompleted(_ tls: TLSConnection) {
        peerCertificate = tls.peer
        if let peer = tls.peer {
            let leaf = listener.tls?.leafCertificate
            forwardedClientCert = XFCC.element(peer: peer, by: leaf?.spiffeID ?? leaf?.uriSANs.first, includeCert: false)
        }
        listener.stats.tlsHandshake(ok: true, reason: tls.sessionReused ? "resumed" : "full", shard: worker.index)
    }

    private func handshakeFailed(_ error: TLSError) {
        listener.stats.tlsHandshake(ok: false, reason: error.reason.rawValue, shard: worker.index)
        Diagnostics.log(.debug, "TLS handshake from \(peerDescription) failed: \(error.message)")
        flush()   // the alert tells the client why
        close()
    }

    /// True while a batch of input is being processed: its output is written afterwards, at the
    /// end of the loop iteration.
    private(set) var isProcessingInput = false
    /// The peer signalled EPOLLRDHUP/EPOLLHUP: keep reading until EOF is actually seen.
    private var hangupSeen = false

    /// One batch of input; what it produced goes out at the end of the loop iteration, one
    /// write per direction with whatever else the iteration produced for the same sockets.
    private func processBatch(_ bytes: UnsafeRawBufferPointer) {
        isProcessingInput = true
        process(bytes)
        isProcessingInput = false
        exchange?.flushUpstreamAtEndOfIteration()
        flushAtEndOfIteration()
    }

    /// Processes bytes (pending + fresh); whatever cannot be used yet is kept in `pending`.
    private func process(_ bytes: UnsafeRawBufferPointer) {
        var offset = 0
        defer {
            if offset < bytes.count && state != .closed {
                pending.append(contentsOf: UnsafeRawBufferPointer(rebasing: bytes[offset...]))
            }
        }
        switch state {
        case .closed:
            return
        case .lingering:
            offset = bytes.count   // discard
            return
        case .tunnel:
            exchange?.tunnelFromDownstream(bytes)
            offset = bytes.count
            return
        case .http:
            break
        }
        if !protocolDecided {
            // One port serves HTTP/1.1 and HTTP/2 (h2c with prior knowledge, or h2 chosen by ALPN):
            // the connection preface tells them apart.
            switch HTTP2Preface.classify(bytes) {
            case .needMore:
                return   // all of it stays pending
            case .http2:
                offset = bytes.count
                switchToHTTP2(initial: Array(bytes))
                return
            case .http1:
                protocolDecided = true
            }
        }
        // Keep asking the parser even with no bytes left: an `.end` can follow the last body byte.
        while !awaitingResponse && state == .http && !readPaused {
            if exchange == nil && parser.isIdle {
                if offset >= bytes.count { break }
                // First byte of a new request: the header-read clock starts now.
                idleDeadline = 0
                if headDeadline == 0 { headDeadline = worker.loop.now &+ nonZero(worker.snapshot.config.timeouts.headerRead) }
                if requestStartMono == 0 { requestStartMono = worker.loop.now; requestStartWall = wallClockNanos() }
            }
            let slice = UnsafeRawBufferPointer(rebasing: bytes[offset...])
            let result: (event: HTTP1RequestEvent?, consumed: Int)
            do {
                result = try parser.parse(slice)
            } catch {
                offset = bytes.count
                protocolError(error)
                return
            }
            offset += result.consumed
            guard let event = result.event else {
                if result.consumed == 0 || offset >= bytes.count { break }
                continue
            }
            switch event {
            case .head(let head, let framing, let keepAlive, let expectsContinue, let upgrade):
                headDeadline = 0
                startExchange(head, framing: framing, keepAlive: keepAlive, expectsContinue: expectsContinue, upgrade: upgrade)
            case .body(let range):
                exchange?.requestBody(UnsafeRawBufferPointer(rebasing: slice[range]))
            case .end(let trailers):
                // An exchange that already answered (a local reply) needs no wait.
                if let ex = exchange {
                    awaitingResponse = true
                    ex.requestEnd(trailers: trailers)
                }
            }
        }
    }

    // MARK: exchanges

    private func startExchange(_ head: RequestHead, framing: BodyFraming, keepAlive: Bool, expectsContinue: Bool, upgrade: String?) {
        let snap = worker.currentSnapshot()
        if snap.version != listenerVersion {
            listenerVersion = snap.version
            if let l = snap.listeners[listener.name] { listener = l }
        }
        if !keepAlive || worker.draining { closeAfterResponse = true }
        requestVersion = head.version
        let ex = Exchange(downstream: self, snapshot: snap, listener: listener, head: head, framing: framing,
                          clientKeepAlive: keepAlive, upgrade: upgrade, startWall: requestStartWall, startMono: requestStartMono)
        exchange = ex
        ex.start(expectsContinue: expectsContinue)
    }

    /// Called by the exchange once its response is fully written (or it failed).
    func exchangeFinished() {
        exchange = nil
        awaitingResponse = false
        readPaused = false
        requestStartMono = 0
        if state == .tunnel { state = .http }
        if closeAfterResponse || peerClosed {
            closeGracefully()
            return
        }
        let t = worker.snapshot.config.timeouts
        idleDeadline = t.idle > 0 ? worker.loop.now &+ t.idle : 0
        headDeadline = 0
        // Pipelined bytes, or bytes that arrived while we waited, are parsed now.
        if !pending.isEmpty || readable {
            worker.loop.deferWork { [self] in resumeInput() }
        }
    }

    /// Processes buffered input, then reads more. Used after backpressure lifts and between
    /// pipelined requests (edge-triggered epoll will not report bytes we already know about).
    func resumeInput() {
        guard state != .closed, !readPaused else { return }
        // Even with nothing buffered: the parser may owe an `.end` for a body whose last byte
        // was taken just as the pause began.
        if (!pending.isEmpty || exchange != nil) && !awaitingResponse && state == .http {
            let held = pending
            pending = []
            held.withUnsafeBytes { processBatch($0) }
        }
        if peerClosed && exchange == nil && state == .http {
            closeGracefully()
            return
        }
        readLoop()
    }

    func enterTunnel() {
        state = .tunnel
        awaitingResponse = false
        if !pending.isEmpty {
            let held = pending
            pending = []
            held.withUnsafeBytes { exchange?.tunnelFromDownstream($0) }
            exchange?.flushUpstream()
        }
    }

    private func onPeerClosed() {
        switch state {
        case .closed: return
        case .lingering: close()
        case .tunnel: exchange?.tunnelDownstreamClosed()
        case .http:
            if let ex = exchange {
                if awaitingResponse {
                    // Half-close after a complete request is legal: answer, then close.
                    closeAfterResponse = true
                } else {
                    ex.abort(flags: "DC", details: "downstream_closed_mid_request")
                }
            } else if !pending.isEmpty {
                // A complete request may still be buffered (sent together with the FIN).
                closeAfterResponse = true
                let held = pending
                pending = []
                held.withUnsafeBytes { processBatch($0) }
                if exchange == nil { close() }
            } else {
                close()
            }
        }
    }

    // MARK: output

    func sendContinue() { out.append("HTTP/1.1 100 Continue\r\n\r\n") }

    /// HTTP/1.1 framing of the response: Content-Length bodies go as they are; chunked and
    /// close-delimited ones are re-chunked for HTTP/1.1 clients and close-delimited for 1.0.
    func sendResponseHead(_ head: ResponseHead, framing: BodyFraming) {
        var r = head
        r.version = .http11
        switch framing {
        case .none:
            responseFraming = .none
        case .contentLength:
            responseFraming = .asIs
        case .chunked, .untilClose:
            if requestVersion == .http11 {
                responseFraming = .chunked
                r.headers.add(name: "transfer-encoding", value: "chunked")
            } else {
                responseFraming = .untilClose
                closeAfterResponse = true
            }
        }
        if closeAfterResponse {
            r.headers.add(name: "connection", value: "close")
        } else if requestVersion == .http10 {
            r.headers.add(name: "connection", value: "keep-alive")
        }
        HTTP1Serializer.writeResponseHead(r, into: &out)
    }

    func sendResponseBody(_ bytes: UnsafeRawBufferPointer) {
        switch responseFraming {
        case .chunked: HTTP1Serializer.writeChunk(bytes, into: &out)
        case .asIs, .untilClose: out.append(bytes)
        case .none: return
        }
    }

    func sendResponseEnd(trailers: HTTPHeaders) {
        if responseFraming == .chunked { HTTP1Serializer.writeLastChunk(trailers: trailers, into: &out) }
    }

    func sendUpgradeHead(_ head: ResponseHead) {
        var r = head
        r.version = .http11
        HTTP1Serializer.writeResponseHead(r, into: &out)
    }

    func sendTunnelBytes(_ bytes: UnsafeRawBufferPointer) { out.append(bytes) }


    /// Set while this connection waits in the loop's end-of-iteration writers.
    private var writeQueued = false

    /// Writes buffered output once the loop iteration's work is done (one write for all the
    /// responses of a batch; see `EventLoop.writeAtEndOfIteration`).
    func flushAtEndOfIteration() {
        guard !writeQueued, state != .closed else { return }
        writeQueued = true
        worker.loop.writeAtEndOfIteration(self)
    }

    func writeDeferred() {
        writeQueued = false
        flush()
    }

    /// Writes buffered output; on success below the low watermark, resumes a paused upstream.
    func flush() {
        guard state != .closed else { return }
        var sent: UInt64 = 0
        let ok: Bool
        if let tls {
            // Encrypt what the exchange wrote, then send ciphertext.
            if !out.isEmpty && tls.isHandshakeComplete {
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
        if sent > 0 {
            bytesSentTotal &+= sent
            listener.stats.bytesSent.add(sent, shard: worker.index)
        }
        if !ok {
            abort(flags: "DC", details: "downstream_write_failed")
            return
        }
        if out.readableBytes + cipherOut.readableBytes <= Watermark.low { exchange?.downstreamDrained() }
        if out.isEmpty && cipherOut.isEmpty && state == .lingering && lingerDeadline == 0 { startLinger() }
    }

    var outputAboveHighWatermark: Bool { out.readableBytes + cipherOut.readableBytes > Watermark.high }

    /// Sends a local reply for the current exchange or for a request that never became one.
    func sendLocalReply(_ reply: LocalReply, requestID: String?) {
        var head = ResponseHead(status: reply.status, reason: reasonPhrase(reply.status), version: .http11, headers: reply.headers)
        head.headers.add(name: "content-type", value: "text/plain; charset=utf-8")
        head.headers.add(name: "content-length", value: String(reply.body.utf8.count))
        if let id = requestID, !head.headers.contains("x-request-id") { head.headers.add(name: "x-request-id", value: id) }
        if reply.closeConnection || closeAfterResponse || worker.draining {
            closeAfterResponse = true
            head.headers.add(name: "connection", value: "close")
        }
        HTTP1Serializer.writeResponseHead(head, into: &out)
        out.append(reply.body)
    }

    /// A request that could not be parsed: reply (when nothing was sent yet) and close.
    private func protocolError(_ error: HTTP1ParseError) {
        let oe = error.outriderError(source: .downstream)
        var reply = oe.localReply
        reply.closeConnection = true
        closeAfterResponse = true
        if let ex = exchange {
            ex.failFromDownstream(reply, flags: "DPE")
            return
        }
        // No exchange yet: the head itself was bad. Log it like any request.
        replyWithoutExchange(reply)
        Diagnostics.log(.debug, "downstream \(peer):\(peerPort): \(oe.context) → \(reply.status)")
    }

    /// Answers, access-logs and closes when no exchange exists (bad head, header timeout).
    private func replyWithoutExchange(_ reply: LocalReply) {
        closeAfterResponse = true
        var rec = AccessLogRecord()
        rec.startWallNanos = requestStartWall == 0 ? wallClockNanos() : requestStartWall
        rec.method = "-"
        rec.path = "-"
        rec.proto = "HTTP/1.1"
        rec.responseCode = reply.status
        rec.responseFlags = "DPE"
        rec.details = reply.details
        rec.requestID = worker.random.uuid()
        rec.upstreamCluster = listener.name
        rec.listener = listener.name
        rec.downstreamRemote = peerDescription
        rec.bytesReceived = bytesReceivedTotal
        let start = requestStartMono == 0 ? worker.loop.now : requestStartMono
        rec.durationMillis = Double(worker.loop.now &- start) / 1e6
        sendLocalReply(reply, requestID: rec.requestID)
        rec.bytesSent = UInt64(out.readableBytes)
        finishStats(status: reply.status, details: reply.details, durationNanos: worker.loop.now &- start)
        worker.log(rec)
        closeGracefully()
    }

    func finishStats(status: Int, details: String?, durationNanos: UInt64) {
        listener.stats.request(status: status, shard: worker.index)
        listener.stats.duration.observe(Double(durationNanos) / 1e9, shard: worker.index)
        if let d = details { listener.stats.localReply(d, shard: worker.index) }
    }

    // MARK: closing

    /// Flushes what is buffered, then shuts the write side and waits briefly for the client's
    /// FIN, so a reply is not destroyed by a reset caused by unread input.
    func closeGracefully() {
        guard state != .closed else { return }
        awaitingResponse = false
        state = .lingering
        if let tls, tls.isHandshakeComplete {
            flush()            // plaintext still in `out` goes before the close_notify
            tls.shutdown()
        }
        flush()
    }

    private func startLinger() {
        Socket.shutdownWrite(fd)
        lingerDeadline = worker.loop.now &+ 2_000_000_000
        if peerClosed { close(); return }
        readable = true
        readLoop()
    }

    /// Closes the socket now.
    func close() {
        guard state != .closed else { return }
        state = .closed
        if let ex = exchange {
            exchange = nil
            ex.abort(flags: "DC", details: "downstream_closed")
        }
        worker.loop.deregister(fd: fd)
        Glibc.close(fd)
        pending = []
        out.clear()
        worker.connectionClosed(self)
    }

    /// Tears down the connection and any exchange on it.
    func abort(flags: String, details: String) {
        guard state != .closed else { return }
        if let ex = exchange {
            exchange = nil
            ex.abort(flags: flags, details: details)
        }
        close()
    }

    /// Drain: idle connections close now; busy ones close after their response.
    func drain() {
        closeAfterResponse = true
        if exchange == nil && state == .http && pending.isEmpty { closeGracefully() }
    }

    // MARK: deadlines

    func checkDeadlines(now: UInt64) {
        switch state {
        case .closed: return
        case .lingering:
            if lingerDeadline != 0 && now >= lingerDeadline { close() }
            return
        case .tunnel, .http:
            break
        }
        if let ex = exchange {
            ex.checkDeadlines(now: now)
            return
        }
        if headDeadline != 0 && now >= headDeadline {
            if let tls, !tls.isHandshakeComplete {
                listener.stats.tlsHandshake(ok: false, reason: "timeout", shard: worker.index)
                close()
            } else if parser.isIdle && pending.isEmpty && requestStartMono == 0 {
                // Connected but never sent a byte: close quietly, like an idle timeout.
                close()
            } else {
                headerTimeout()
            }
            return
        }
        if idleDeadline != 0 && now >= idleDeadline && pending.isEmpty && parser.isIdle {
            close()
        }
    }

    private func headerTimeout() {
        var reply = OutriderError(.headerTimeout, source: .downstream, "request head not received in time").localReply
        reply.closeConnection = true
        replyWithoutExchange(reply)
    }
}

@inline(__always)
func nonZero(_ v: UInt64) -> UInt64 { v == 0 ? UInt64.max / 4 : v }
