#if canImport(Glibc)
import Glibc
#endif
import EventLoop
import HTTP1
import HTTP2
import OutriderCore
import TLS

/// One TCP connection to the workload. While an exchange holds it, response bytes go to that
/// exchange; while it idles in the pool, any input (or EOF) means the upstream closed it.
final class UpstreamConnection: EventHandler, DeferredWriter {
    let fd: Int32
    unowned let worker: Worker
    let pool: UpstreamPool
    let address: ResolvedAddress
    private(set) var connected: Bool
    private(set) var isClosed = false
    private var out = ByteBuffer()
    private var parser = HTTP1ResponseParser()
    private var pending: [UInt8] = []
    private var readable = false
    private var writable = false
    /// Set while the downstream cannot take more response bytes (backpressure).
    var readPaused = false
    var exchange: Exchange?
    var idleSince: UInt64 = 0
    /// Raw byte relay after a 101 response.
    var tunnel = false
    /// Response bytes arrived for the current request (a failure after that is not retried).
    private(set) var receivedResponseBytes = false
    /// Requests this connection carried; > 0 when taken from the pool.
    private(set) var requestsSent = 0
    private var releasePending = false
    /// TLS to the workload (nil: plaintext). `out` and `pending` hold plaintext; `cipherOut`
    /// what waits for the socket.
    private let tls: TLSConnection?
    private var cipherOut = ByteBuffer()
    /// HTTP/2 to the workload (nil: HTTP/1.1): one request per stream, the connection pooled.
    private let h2: HTTP2ClientSession?
    private var h2Stream: Int32 = 0
    private var h2GoingAway = false

    /// Starts a non-blocking connect and registers with the worker's loop.
    init(address: ResolvedAddress, worker: Worker, pool: UpstreamPool,
         tls context: TLSClientContext? = nil, serverName: String? = nil, http2: Bool = false) throws(SystemError) {
        if http2 {
            do { h2 = try HTTP2ClientSession() } catch {
                throw SystemError("HTTP/2 session for \(address.spec): \(error)", errno: EPROTO)
            }
        } else {
            h2 = nil
        }
        if let context {
            do { tls = try TLSConnection(client: context, serverName: serverName) } catch {
                throw SystemError("TLS to \(address.spec): \(error.message)", errno: EPROTO)
            }
        } else {
            tls = nil
        }
        let (fd, done) = try Socket.connect(address)
        self.fd = fd
        self.worker = worker
        self.pool = pool
        self.address = address
        connected = done
        writable = done
        Socket.setNoDelay(fd)
        do {
            try worker.loop.register(fd: fd, handler: self)
        } catch {
            Glibc.close(fd)
            throw error
        }
        // Connected at once (it happens on loopback): start the TLS handshake now, since no
        // writability event will announce the connection.
        if done, let tls { _ = tlsStep(tls) }
    }

    // MARK: exchange API

    /// Prepares for the next response to `method`, attached to `exchange`.
    func begin(_ exchange: Exchange, method: String) {
        self.exchange = exchange
        parser.expectResponse(toMethod: method)
        receivedResponseBytes = false
        readPaused = false
        requestsSent += 1
    }

    /// The request's framing toward the workload (how `sendRequestBody` frames bytes).
    private var requestFraming: BodyFraming = .none

    /// The request head, serialized for the workload (always HTTP/1.1).
    func sendRequestHead(_ head: RequestHead, framing: BodyFraming) {
        requestFraming = framing
        if let h2 {
            var h = head
            h.headers.remove("transfer-encoding")   // HTTP/2 frames the body itself
            guard let id = h2.sendRequestHead(h, scheme: tls == nil ? "http" : "https", endStream: framing == .none) else {
                worker.loop.deferWork { [self] in failed(details: "upstream_protocol_error") }
                return
            }
            h2Stream = id
            return
        }
        HTTP1Serializer.writeRequestHead(head, into: &out)
    }

    func sendRequestBody(_ bytes: UnsafeRawBufferPointer) {
        if let h2 { h2.sendData(streamID: h2Stream, bytes, endStream: false); return }
        if case .chunked = requestFraming { HTTP1Serializer.writeChunk(bytes, into: &out) } else { out.append(bytes) }
    }

    func sendRequestEnd(trailers: HTTPHeaders) {
        if let h2 {
            guard requestFraming != .none else { return }   // the head ended the stream
            if trailers.isEmpty { h2.sendData(streamID: h2Stream, UnsafeRawBufferPointer(start: nil, count: 0), endStream: true) }
            else { h2.sendTrailers(streamID: h2Stream, trailers) }
            return
        }
        if case .chunked = requestFraming { HTTP1Serializer.writeLastChunk(trailers: trailers, into: &out) }
    }

    func sendTunnelBytes(_ bytes: UnsafeRawBufferPointer) { out.append(bytes) }

    /// After a complete response: back to the pool when reusable and nothing unexpected is
    /// buffered; closed otherwise. Decided after the current read batch ends.
    func release(reusable: Bool) {
        exchange = nil
        guard reusable, !tunnel, !h2GoingAway, h2?.canOpenStream ?? true else { close(); return }
        releasePending = true
        worker.loop.deferWork { [self] in
            releasePending = false
            guard !isClosed else { return }
            if pending.isEmpty && out.isEmpty && parser.isIdle {
                let snap = worker.snapshot
                pool.put(self, maxIdle: snap.config.limits.upstreamMaxIdle, now: worker.loop.now)
            } else {
                close()
            }
        }
    }

    /// Set while this connection waits in the loop's end-of-iteration writers.
    private var writeQueued = false

    /// Writes buffered output once the loop iteration's work is done (the requests of a batch
    /// of client input go out together; see `EventLoop.writeAtEndOfIteration`).
    func flushAtEndOfIteration() {
        guard !writeQueued, !isClosed else { return }
        writeQueued = true
        worker.loop.writeAtEndOfIteration(self)
    }

    func writeDeferred() {
        writeQueued = false
        flush()
    }

    func flush() {
        guard connected, !isClosed else { return }
        h2?.takeOutput(into: &out)
        var sent: UInt64 = 0
        let ok: Bool
        if let tls {
            // Plaintext waits in `out` until the handshake is done.
            if !out.isEmpty && tls.isHandshakeComplete {
                do { try out.withReadableBytes { try tls.writePlaintext($0) } } catch {
                    failed(details: "upstream_tls_error")
                    return
                }
                out.clear()
            }
            _ = tls.takeCiphertext(into: &cipherOut)
            ok = flushBuffer(fd: fd, out: &cipherOut, writable: &writable, sent: &sent)
        } else {
            ok = flushBuffer(fd: fd, out: &out, writable: &writable, sent: &sent)
        }
        if !ok {
            failed(details: "upstream_reset")
            return
        }
        if out.readableBytes <= Watermark.low { exchange?.upstreamDrained() }
    }

    var outputAboveHighWatermark: Bool {
        out.readableBytes + cipherOut.readableBytes + (h2?.pendingOutboundBytes(streamID: h2Stream) ?? 0) > Watermark.high
    }

    func close() {
        guard !isClosed else { return }
        isClosed = true
        exchange = nil
        worker.loop.deregister(fd: fd)
        Glibc.close(fd)
        pending = []
        out.clear()
        pool.remove(self)
    }

    // MARK: events

    func handleEvent(_ events: UInt32) {
        if !connected {
            let err = Socket.pendingError(fd)
            if err != 0 {
                let ex = exchange
                close()
                ex?.upstreamConnectFailed(errno: err)
                return
            }
            guard events & IOEvent.writable != 0 else { return }
            connected = true
            writable = true
            if let tls { if !tlsStep(tls) { return } }   // ClientHello
            flush()
        }
        if events & (IOEvent.error | IOEvent.hangup) != 0 && events & IOEvent.readable == 0 {
            failed(details: "upstream_reset")
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

    func readLoop() {
        if let tls { readTLSLoop(tls); return }
        var rounds = 0
        while readable && !readPaused && !isClosed {
            rounds += 1
            if rounds > 16 {
                worker.loop.deferWork { [self] in readLoop() }   // strong: see DownstreamConnection.readLoop
                return
            }
            guard exchange != nil || releasePending || h2 != nil else {
                // Idle in the pool: data or EOF both mean this connection is finished.
                close()
                return
            }
            switch readThroughScratch(fd: fd, pending: &pending, scratch: worker.scratch) {
            case .wouldBlock:
                readable = false
            case .endOfStream:
                readable = false
                endOfStream()
                return
            case .failed:
                failed(details: "upstream_reset")
                return
            case .data(let bytes, _, let drained):
                if drained && !hangupSeen { readable = false }
                processBatch(bytes)
            }
        }
    }

    /// Reads ciphertext and hands the plaintext to the same processing as a plaintext connection.
    private func readTLSLoop(_ tls: TLSConnection) {
        var rounds = 0
        while readable && !readPaused && !isClosed {
            rounds += 1
            if rounds > 16 {
                worker.loop.deferWork { [self] in readLoop() }
                return
            }
            guard exchange != nil || releasePending || h2 != nil else { close(); return }
            let r: IOResult<Int>
            do { r = try Socket.read(fd, into: worker.scratch) } catch {
                failed(details: "upstream_reset")
                return
            }
            switch r {
            case .wouldBlock:
                readable = false
            case .done(0):
                readable = false
                endOfStream()
                return
            case .done(let n):
                if n < worker.scratch.count && !hangupSeen { readable = false }
                tls.receive(UnsafeRawBufferPointer(rebasing: worker.scratch[0..<n]))
                if !tlsStep(tls) { return }
            }
        }
    }

    /// Drives the handshake and decrypts what arrived; false when the connection failed.
    private func tlsStep(_ tls: TLSConnection) -> Bool {
        var plain = pending
        pending = []
        let had = plain.count
        let closeNotify: Bool
        do {
            closeNotify = try tls.readAvailable(into: &plain).closeNotify
        } catch {
            Diagnostics.log(.warn, "upstream \(address.spec): TLS: \(error.message)")
            pending = []
            failed(details: "upstream_tls_error")
            return false
        }
        flush()   // handshake records, and the request once the handshake is done
        if plain.count > had {
            plain.withUnsafeBytes { processBatch($0) }
        } else {
            pending = plain
        }
        if closeNotify && !isClosed {
            endOfStream()
            return false
        }
        return !isClosed
    }

    /// An idle pooled connection can carry another request (an HTTP/2 one may have been told
    /// GOAWAY, or be at the workload's stream limit).
    var canAcceptRequest: Bool { h2.map { !h2GoingAway && $0.canOpenStream } ?? true }

    /// After backpressure lifts: first the bytes already buffered (the socket may have nothing
    /// new, and edge-triggered epoll will not report them again), then the socket.
    func resumeInput() {
        guard !isClosed, !readPaused else { return }
        // Even with nothing buffered: the parser may owe an `.end` for a body whose last byte
        // was taken just as the pause began.
        if exchange != nil {
            let held = pending
            pending = []
            held.withUnsafeBytes { processBatch($0) }
        }
        readLoop()
    }

    /// The peer signalled EPOLLRDHUP/EPOLLHUP: keep reading until EOF is actually seen.
    private var hangupSeen = false

    /// One batch of response bytes; the client gets what it produced at the end of the loop
    /// iteration, in one write with the iteration's other output for it.
    private func processBatch(_ bytes: UnsafeRawBufferPointer) {
        let client = exchange?.downstream
        process(bytes)
        client?.flushAtEndOfIteration()
    }

    private func process(_ bytes: UnsafeRawBufferPointer) {
        var offset = 0
        defer {
            if offset < bytes.count && !isClosed {
                pending.append(contentsOf: UnsafeRawBufferPointer(rebasing: bytes[offset...]))
            }
        }
        if bytes.count > 0 { receivedResponseBytes = true }
        if let h2 {
            offset = bytes.count
            processHTTP2(h2, bytes)
            return
        }
        // Keep asking the parser even with no bytes left: an `.end` can follow the last body byte.
        while !isClosed && !readPaused {
            guard let ex = exchange else { return }
            if tunnel {
                if offset < bytes.count { ex.tunnelFromUpstream(UnsafeRawBufferPointer(rebasing: bytes[offset...])) }
                offset = bytes.count
                return
            }
            let slice = UnsafeRawBufferPointer(rebasing: bytes[offset...])
            let result: (event: HTTP1ResponseEvent?, consumed: Int)
            do {
                result = try parser.parse(slice)
            } catch {
                offset = bytes.count
                Diagnostics.log(.warn, "upstream \(address.spec): invalid response: \(error)")
                failed(details: "upstream_protocol_error")
                return
            }
            offset += result.consumed
            guard let event = result.event else {
                if result.consumed == 0 || offset >= bytes.count { return }
                continue
            }
            switch event {
            case .head(let head, let framing, let keepAlive):
                ex.upstreamResponseHead(head, framing: framing, keepAlive: keepAlive)
            case .body(let range):
                ex.upstreamResponseBody(UnsafeRawBufferPointer(rebasing: slice[range]))
            case .end(let trailers):
                ex.upstreamResponseEnd(trailers: trailers)
            }
        }
    }

    /// HTTP/2 frames from the workload, mapped onto the same exchange callbacks as HTTP/1.1.
    private func processHTTP2(_ h2: HTTP2ClientSession, _ bytes: UnsafeRawBufferPointer) {
        var events = h2.receive(bytes)
        while !events.isEmpty && !isClosed {
            for e in events { handleHTTP2(e, h2) }
            events = h2.takeEvents()
        }
        flush()   // SETTINGS/PING acknowledgements, WINDOW_UPDATEs
    }

    private func handleHTTP2(_ event: HTTP2ClientEvent, _ h2: HTTP2ClientSession) {
        switch event {
        case .responseHead(let id, let head, let endStream):
            guard id == h2Stream, let ex = exchange, head.status >= 200 else { return }
            let framing: BodyFraming
            if endStream { framing = .none }
            else if let cl = head.headers.first("content-length"), let n = UInt64(cl) { framing = .contentLength(n) }
            else { framing = .chunked }
            var h = head
            h.version = .http11
            ex.upstreamResponseHead(h, framing: framing, keepAlive: true)
            if endStream { exchange?.upstreamResponseEnd(trailers: HTTPHeaders()) }
        case .responseData(let id, let data, let endStream):
            guard id == h2Stream, let ex = exchange else {
                h2.consumed(streamID: id, bytes: data.count)
                return
            }
            if !data.isEmpty {
                data.withUnsafeBytes { ex.upstreamResponseBody($0) }
                // Reading the socket stops while the client is behind (readPaused): TCP then
                // holds the workload back, so the window can reopen at once.
                h2.consumed(streamID: id, bytes: data.count)
            }
            if endStream { exchange?.upstreamResponseEnd(trailers: HTTPHeaders()) }
        case .responseTrailers(let id, let trailers):
            guard id == h2Stream else { return }
            exchange?.upstreamResponseEnd(trailers: trailers)
        case .streamReset(let id, _):
            guard id == h2Stream, exchange != nil else { return }
            failed(details: "upstream_reset")
        case .goaway:
            h2GoingAway = true
        case .connectionError(let why):
            Diagnostics.log(.warn, "upstream \(address.spec): HTTP/2: \(why)")
            h2GoingAway = true
            failed(details: "upstream_protocol_error")
        }
    }

    private func endOfStream() {
        guard let ex = exchange else { close(); return }
        if tunnel {
            ex.tunnelUpstreamClosed()
            return
        }
        // A close-delimited body ends here; anything else is a truncated response.
        do {
            if let event = try parser.finish(), case .end(let trailers) = event {
                ex.upstreamResponseEnd(trailers: trailers)
                close()
                return
            }
        } catch {}
        failed(details: "upstream_reset")
    }

    /// A broken connection: the exchange decides whether to retry, reply 502 or abort.
    private func failed(details: String) {
        let ex = exchange
        let got = receivedResponseBytes
        close()
        ex?.upstreamFailed(details: details, receivedResponse: got)
    }
}
