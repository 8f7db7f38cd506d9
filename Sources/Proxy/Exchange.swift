#if canImport(Glibc)
import Glibc
#endif
import EventLoop
import Filters
import HTTP1
import OutriderCore

/// One request and its response: picks an upstream connection, forwards the request head and
/// body, relays the response back, and writes the access-log line when done. It keeps the
/// config snapshot it started with, so a reload never changes a request in flight.
final class Exchange {
    let downstream: any ExchangeDownstream
    let snapshot: ConfigSnapshot
    let listener: ListenerRuntime
    private var worker: Worker { downstream.worker }

    private var forwardHead: RequestHead
    /// This stream's filters (nil when the chain is empty: no per-stream cost then).
    private let chain: FilterChainInstance?
    private let requestFraming: BodyFraming
    private let clientVersion: HTTPVersion
    private let upgrade: String?
    private var upstream: UpstreamConnection?
    private var record = AccessLogRecord()
    /// Whether an access-log line will be written (the record is only filled in then).
    private let logging: Bool
    private let startMono: UInt64

    private var requestDone = false
    private var responseHeadSent = false
    private var finished = false
    private var retried = false
    private var upstreamKeepAlive = false
    private var responseStatus = 0
    private var upstreamSentAt: UInt64 = 0
    private var connectDeadline: UInt64 = 0
    private var responseDeadline: UInt64 = 0
    private var requestDeadline: UInt64 = 0
    private var bodyBytesIn: UInt64 = 0
    private var bodyBytesOut: UInt64 = 0
    private var tunnelDownClosed = false
    private var tunnelUpClosed = false

    init(downstream: any ExchangeDownstream, snapshot: ConfigSnapshot, listener: ListenerRuntime, head: RequestHead,
         framing: BodyFraming, clientKeepAlive: Bool, upgrade: String?, startWall: UInt64, startMono: UInt64) {
        self.downstream = downstream
        self.snapshot = snapshot
        self.listener = listener
        self.requestFraming = framing
        self.clientVersion = head.version
        self.startMono = startMono == 0 ? downstream.worker.loop.now : startMono
        // Never tunnel h2c: an HTTP/1.1 "Upgrade: h2c" would smuggle HTTP/2 past the chain.
        if let u = upgrade, !u.lowercased().contains("h2c") { self.upgrade = u } else { self.upgrade = nil }

        record.startWallNanos = startWall == 0 ? wallClockNanos() : startWall
        logging = downstream.worker.shared.accessLog.enabled
        if logging {
            // Only gathered when an access log is written: this is per-request work.
            record.method = head.method
            record.path = head.target
            record.proto = head.version == .http11 ? "HTTP/1.1" : head.version.description
            record.userAgent = head.headers.first("user-agent")
            record.authority = head.headers.first("host")
            record.upstreamCluster = listener.name
            record.listener = listener.name
            record.upstreamHost = listener.upstreamKey
            record.downstreamRemote = downstream.peerDescription
        }

        let random = downstream.worker.random
        if let id = head.headers.first("x-request-id"), !id.isEmpty { record.requestID = id } else { record.requestID = random.uuid() }
        forwardHead = head
        if snapshot.chain.isEmpty {
            chain = nil
        } else {
            let context = StreamContext(requestID: record.requestID, clientAddress: downstream.peer, clientPort: downstream.peerPort,
                                        listenerName: listener.name, serverAddress: listener.address,
                                        upstreamAddress: listener.upstream.spec, scheme: downstream.scheme, shard: downstream.worker.index,
                                        startWallNanos: record.startWallNanos, worker: downstream.worker.services)
            context.peerIdentity = downstream.peerCertificate?.spiffeID
            chain = snapshot.chain.makeInstance(context: context)
        }
        let t = snapshot.config.timeouts
        if t.request > 0 { requestDeadline = self.startMono &+ t.request }
    }

    /// Hop-by-hop headers out; X-Forwarded-For/-Proto and X-Request-Id in (RFC 9110 §7.6.1).
    /// One pass over the fields: this runs for every request.
    /// A client-supplied x-forwarded-client-cert is never trusted (Envoy's "sanitize"): it is
    /// dropped, and set from the verified certificate when there is one.
    private static func prepareForwardHeaders(_ h: inout HTTPHeaders, framing: BodyFraming, upgrade: String?,
                                              peer: String, scheme: String, clientCert: String?,
                                              record: inout AccessLogRecord) {
        let tokens = h.contains("connection") ? connectionTokens(h) : []
        var out: [HTTPHeaders.Field] = []
        out.reserveCapacity(h.count + 4)
        var xff: String?
        for f in h.fields {
            let n = f.name
            if isHopByHopHeader(n) { continue }
            switch n.utf8.count {
            case 6 where n.asciiCaseInsensitiveEquals("expect"):
                continue   // we answer 100-continue ourselves
            case 15 where n.asciiCaseInsensitiveEquals("x-forwarded-for"):
                xff = xff.map { $0 + ", " + f.value } ?? f.value
                continue
            case 17 where n.asciiCaseInsensitiveEquals("x-forwarded-proto"):
                continue
            case 12 where n.asciiCaseInsensitiveEquals("x-request-id"):
                continue   // re-added below with the id this exchange uses
            case 23 where n.asciiCaseInsensitiveEquals("x-forwarded-client-cert"):
                continue
            default:
                break
            }
            if !tokens.isEmpty && tokens.contains(where: { n.asciiCaseInsensitiveEquals($0) }) { continue }
            out.append(f)
        }
        if let u = upgrade {
            out.append(("connection", "upgrade"))
            out.append(("upgrade", u))
        }
        if case .chunked = framing { out.append(("transfer-encoding", "chunked")) }
        let forwardedFor = xff.map { $0 + ", " + peer } ?? peer
        out.append(("x-forwarded-for", forwardedFor))
        out.append(("x-forwarded-proto", scheme))
        out.append(("x-request-id", record.requestID))
        if let clientCert { out.append(("x-forwarded-client-cert", clientCert)) }
        record.xForwardedFor = forwardedFor
        h = HTTPHeaders(out)
    }

    // MARK: request side

    /// Runs the request-head phase of the filters, then sends the request on its way.
    func start(expectsContinue: Bool) {
        guard let chain else {
            proceed(expectsContinue: expectsContinue)
            return
        }
        var head = forwardHead
        let decision = chain.requestHead(&head)
        forwardHead = head
        handle(decision, expectsContinue: expectsContinue)
    }

    private func handle(_ decision: ChainDecision, expectsContinue: Bool) {
        switch decision {
        case .proceed:
            proceed(expectsContinue: expectsContinue)
        case .respond(let reply):
            localReply(reply, flags: reply.responseFlags)
        case .paused(let index):
            // Hold the client's bytes until the filter resumes the stream (e.g. a Redis answer).
            downstream.readPaused = true
            chain?.context.resumeHandler = { [weak self] reply in
                guard let self, !self.finished, let chain = self.chain else { return }
                chain.context.resumeHandler = nil
                if let reply {
                    self.localReply(reply, flags: reply.responseFlags)
                } else {
                    var head = self.forwardHead
                    let next = chain.requestHead(&head, from: index + 1)
                    self.forwardHead = head
                    self.handle(next, expectsContinue: expectsContinue)
                }
                if !self.finished {
                    self.downstream.readPaused = false
                    self.flushUpstream()
                    self.worker.loop.deferWork { [downstream = self.downstream] in downstream.resumeInput() }
                }
                self.downstream.flush()
            }
        }
    }

    /// The filters let the request through: build the upstream head and go.
    private func proceed(expectsContinue: Bool) {
        forwardHead.version = .http11
        Exchange.prepareForwardHeaders(&forwardHead.headers, framing: requestFraming, upgrade: upgrade,
                                       peer: downstream.peer, scheme: downstream.scheme,
                                       clientCert: downstream.forwardedClientCert, record: &record)
        if expectsContinue {
            // The filters accepted the head: now the client may send its body.
            downstream.sendContinue()
        }
        // A request with a body goes upstream once its first body bytes parse, so a request
        // whose framing breaks at once (a bad first chunk size) never reaches the workload.
        if requestFraming == .none { _ = ensureUpstream(); return }
        if let chain { bodyBufferLimit = chain.requestBodyBufferLimit() }
    }

    /// While > 0, request body bytes are held (up to this many) until the filters decide.
    private var bodyBufferLimit = 0
    private var heldBody: [UInt8] = []

    /// The filters are done with the held body: send the head and what was held.
    private func releaseHeldBody() -> UpstreamConnection? {
        bodyBufferLimit = 0
        guard let up = ensureUpstream() else { return nil }
        if !heldBody.isEmpty {
            heldBody.withUnsafeBytes { up.sendRequestBody($0) }
            heldBody = []
        }
        return up
    }

    private var upstreamStarted = false

    private func ensureUpstream() -> UpstreamConnection? {
        if !upstreamStarted {
            upstreamStarted = true
            connectUpstream()
        }
        return finished ? nil : upstream
    }

    private func connectUpstream() {
        let pool = worker.pool(for: listener)
        let conn: UpstreamConnection
        if let idle = pool.take() {
            conn = idle
        } else {
            do {
                conn = try UpstreamConnection(address: listener.upstream, worker: worker, pool: pool,
                                              tls: listener.upstreamTLS, serverName: listener.upstreamServerName,
                                              http2: listener.upstreamH2)
            } catch {
                connectFailure(errno: error.errno)
                return
            }
            listener.stats.upstreamConnections.increment(shard: worker.index)
            let t = snapshot.config.timeouts.upstreamConnect
            connectDeadline = t > 0 ? worker.loop.now &+ t : 0
        }
        upstream = conn
        conn.begin(self, method: forwardHead.method)
        conn.sendRequestHead(forwardHead, framing: requestFraming)
        listener.stats.upstreamRequests.increment(shard: worker.index)
        upstreamSentAt = worker.loop.now
        if let c = chain?.context, c.upstreamStartWallNanos == 0 { c.upstreamStartWallNanos = wallClockNanos() }
        if requestFraming == .none { requestComplete() }
        // Inside a read batch the bytes go out with the batch flush; a retry has no batch.
        if !downstream.isProcessingInput { conn.flush() }
    }

    /// Writes what the last batch of client bytes produced for the upstream.
    func flushUpstream() { upstream?.flush() }

    /// The same, at the end of the loop iteration (after a batch of client input).
    func flushUpstreamAtEndOfIteration() { upstream?.flushAtEndOfIteration() }

    func requestBody(_ bytes: UnsafeRawBufferPointer) {
        guard !finished else { return }
        if let chain, case .respond(let reply) = chain.requestBody(bytes, endStream: false) {
            localReply(reply, flags: reply.responseFlags)
            return
        }
        if bodyBufferLimit > 0 {
            bodyBytesIn &+= UInt64(bytes.count)
            heldBody.append(contentsOf: bytes)
            guard heldBody.count > bodyBufferLimit else { return }
            if let chain, case .respond(let reply) = chain.requestBodyOverLimit() {
                localReply(reply, flags: reply.responseFlags)
                return
            }
            _ = releaseHeldBody()
            return
        }
        guard let up = ensureUpstream() else { return }
        bodyBytesIn &+= UInt64(bytes.count)
        up.sendRequestBody(bytes)
        if up.outputAboveHighWatermark { downstream.readPaused = true }
    }

    func requestEnd(trailers: HTTPHeaders) {
        guard !finished, requestFraming != .none else { return }
        if let chain, case .respond(let reply) = chain.requestBody(UnsafeRawBufferPointer(start: nil, count: 0), endStream: true) {
            // The whole body has been read: the connection can carry the next request (a WAF
            // that blocks on the body must not cost the client its keep-alive connection).
            requestDone = true
            localReply(reply, flags: reply.responseFlags)
            return
        }
        guard let up = bodyBufferLimit > 0 ? releaseHeldBody() : ensureUpstream() else { return }
        up.sendRequestEnd(trailers: trailers)
        requestComplete()
    }

    private func requestComplete() {
        requestDone = true
        let t = snapshot.config.timeouts.upstreamResponse
        if t > 0 && !responseHeadSent { responseDeadline = worker.loop.now &+ t }
    }

    /// The upstream took our buffered bytes: let the client send more.
    func upstreamDrained() {
        if downstream.readPaused && !finished {
            downstream.readPaused = false
            worker.loop.deferWork { [downstream] in downstream.resumeInput() }
        }
    }

    // MARK: response side

    func upstreamConnectFailed(errno e: Int32) {
        upstream = nil
        connectFailure(errno: e)
    }

    private func connectFailure(errno e: Int32) {
        let refused = e == ECONNREFUSED
        let reason = refused ? "connect_refused" : (e == ETIMEDOUT ? "connect_timeout" : "connect_failed")
        listener.stats.upstreamError(reason, shard: worker.index)
        Diagnostics.log(.debug, "upstream \(listener.upstream.spec): connect failed: errno \(e)")
        let kind: OutriderError.Kind = (refused || e != ETIMEDOUT) ? .connectRefused : .connectTimeout
        let err = OutriderError(kind, source: .upstream, "upstream \(listener.upstream.spec) unavailable")
        var reply = err.localReply
        if !refused && e != ETIMEDOUT { reply.details = "upstream_connect_failed" }
        localReply(reply, flags: "UF")
    }

    func upstreamResponseHead(_ head: ResponseHead, framing: BodyFraming, keepAlive: Bool) {
        guard !finished else { return }
        responseDeadline = 0
        if head.status == 101 {
            guard let u = upgrade else {
                upstreamFailed(details: "upstream_protocol_error", receivedResponse: true)
                return
            }
            startTunnel(head, upgrade: u)
            return
        }
        if head.status < 200 { return }   // interim responses: 100-continue was answered by us
        record.upstreamServiceMillis = Double(worker.loop.now &- upstreamSentAt) / 1e6
        var r = head
        if let chain {
            chain.context.upstreamStatus = head.status
            if case .respond(let reply) = chain.responseHead(&r) {
                // A filter replaces the upstream's answer: its body is not wanted, nor the connection.
                localReply(reply, flags: reply.responseFlags)
                return
            }
        }
        responseStatus = r.status
        upstreamKeepAlive = keepAlive
        removeHopByHopHeaders(&r.headers)
        if worker.draining { downstream.closeAfterResponse = true }
        if !r.headers.contains("x-request-id") { r.headers.add(name: "x-request-id", value: record.requestID) }
        downstream.sendResponseHead(r, framing: framing)
        responseHeadSent = true
    }

    func upstreamResponseBody(_ bytes: UnsafeRawBufferPointer) {
        guard !finished, responseHeadSent, let up = upstream else { return }
        bodyBytesOut &+= UInt64(bytes.count)
        chain?.responseBody(bytes, endStream: false)
        downstream.sendResponseBody(bytes)
        if downstream.outputAboveHighWatermark { up.readPaused = true }
    }

    func upstreamResponseEnd(trailers: HTTPHeaders) {
        guard !finished, responseHeadSent else { return }
        downstream.sendResponseEnd(trailers: trailers)
        if let c = chain?.context { c.upstreamEndWallNanos = wallClockNanos() }
        let reusable = upstreamKeepAlive && requestDone
        if let up = upstream {
            upstream = nil
            up.release(reusable: reusable)
        }
        finish(status: responseStatus, flags: "-", details: "via_upstream", local: false)
    }

    /// The client's socket drained below the low watermark: read more from the upstream.
    func downstreamDrained() {
        guard let up = upstream, up.readPaused, !finished else { return }
        up.readPaused = false
        worker.loop.deferWork { [up] in up.resumeInput() }
    }

    func upstreamFailed(details: String, receivedResponse: Bool) {
        guard !finished else { return }
        let wasReused = (upstream?.requestsSent ?? 0) > 1
        upstream = nil
        // A pooled connection the upstream closed just as we reused it: retry once on a fresh
        // one, but only when no body was involved and nothing came back.
        if wasReused && !retried && !receivedResponse && requestFraming == .none && !responseHeadSent && upgrade == nil {
            retried = true
            connectUpstream()
            return
        }
        let reason = details == "upstream_protocol_error" ? "protocol" : "reset"
        listener.stats.upstreamError(reason, shard: worker.index)
        if responseHeadSent || tunnelActive {
            // Part of the response is out: the only honest signal left is closing the connection.
            finish(status: responseStatus, flags: "UC", details: details, local: false)
            downstream.abort(flags: "UC", details: details)
            return
        }
        let kind: OutriderError.Kind = reason == "protocol" ? .upstreamProtocol : .upstreamReset
        var reply = OutriderError(kind, source: .upstream, "upstream \(listener.upstream.spec) closed the connection").localReply
        reply.details = details
        localReply(reply, flags: "UC")
    }

    // MARK: tunnel (Upgrade)

    private var tunnelActive = false

    private func startTunnel(_ head: ResponseHead, upgrade u: String) {
        guard let up = upstream else { return }
        responseStatus = 101
        record.upstreamServiceMillis = Double(worker.loop.now &- upstreamSentAt) / 1e6
        var r = head
        r.version = .http11
        removeHopByHopHeaders(&r.headers)
        r.headers.add(name: "connection", value: "upgrade")
        r.headers.add(name: "upgrade", value: head.headers.first("upgrade") ?? u)
        downstream.sendUpgradeHead(r)
        responseHeadSent = true
        tunnelActive = true
        up.tunnel = true
        downstream.flush()
        downstream.enterTunnel()
    }

    func tunnelFromDownstream(_ bytes: UnsafeRawBufferPointer) {
        guard let up = upstream else { return }
        bodyBytesIn &+= UInt64(bytes.count)
        up.sendTunnelBytes(bytes)
        if up.outputAboveHighWatermark { downstream.readPaused = true }
    }

    func tunnelFromUpstream(_ bytes: UnsafeRawBufferPointer) {
        guard let up = upstream else { return }
        bodyBytesOut &+= UInt64(bytes.count)
        downstream.sendTunnelBytes(bytes)
        if downstream.outputAboveHighWatermark { up.readPaused = true }
    }

    func tunnelDownstreamClosed() {
        tunnelDownClosed = true
        if let up = upstream { up.flush(); Socket.shutdownWrite(up.fd) }
        if tunnelUpClosed { endTunnel() }
    }

    func tunnelUpstreamClosed() {
        tunnelUpClosed = true
        downstream.flush()
        if tunnelDownClosed { endTunnel() } else {
            // The workload ended the session: finish writing to the client, then close.
            endTunnel()
        }
    }

    private func endTunnel() {
        if let up = upstream { upstream = nil; up.close() }
        downstream.closeAfterResponse = true
        finish(status: 101, flags: "-", details: "via_upstream", local: false)
    }

    // MARK: failure and completion

    /// The client sent something invalid mid-request (e.g. a bad chunk size).
    func failFromDownstream(_ reply: LocalReply, flags: String) {
        guard !finished else { return }
        if let up = upstream { upstream = nil; up.close() }
        if responseHeadSent {
            finish(status: responseStatus, flags: flags, details: reply.details, local: false)
            downstream.abort(flags: flags, details: reply.details)
        } else {
            localReply(reply, flags: flags)
        }
    }

    /// Sends a local reply (when no response head went out yet) and finishes.
    private func localReply(_ reply: LocalReply, flags: String) {
        if let up = upstream { upstream = nil; up.close() }
        guard !responseHeadSent else {
            finish(status: responseStatus, flags: flags, details: reply.details, local: false)
            downstream.abort(flags: flags, details: reply.details)
            return
        }
        // An unread body would have to be drained first: close instead (a bodyless request is
        // complete, so its connection stays usable).
        if !requestDone && requestFraming != .none { downstream.closeAfterResponse = true }
        downstream.sendLocalReply(reply, requestID: record.requestID)
        bodyBytesOut &+= UInt64(reply.body.utf8.count)
        responseHeadSent = true
        finish(status: reply.status, flags: flags, details: reply.details, local: true)
        downstream.flushAtEndOfIteration()
    }

    /// The downstream went away or the worker is shutting down.
    func abort(flags: String, details: String) {
        guard !finished else { return }
        if let up = upstream { upstream = nil; up.close() }
        finish(status: responseHeadSent ? responseStatus : 0, flags: flags, details: details, local: false)
    }

    func checkDeadlines(now: UInt64) {
        guard !finished else { return }
        if connectDeadline != 0, let up = upstream, !up.connected, now >= connectDeadline {
            upstream = nil
            up.close()
            listener.stats.upstreamError("connect_timeout", shard: worker.index)
            localReply(OutriderError(.connectTimeout, source: .upstream, "upstream \(listener.upstream.spec) did not accept the connection in time").localReply, flags: "UF")
            return
        }
        if responseDeadline != 0 && now >= responseDeadline && !responseHeadSent {
            listener.stats.upstreamError("response_timeout", shard: worker.index)
            localReply(OutriderError(.upstreamTimeout, source: .upstream, "upstream \(listener.upstream.spec) did not answer in time").localReply, flags: "UT")
            return
        }
        if requestDeadline != 0 && now >= requestDeadline && !tunnelActive {
            if requestDone {
                listener.stats.upstreamError("response_timeout", shard: worker.index)
                localReply(OutriderError(.upstreamTimeout, source: .upstream, "request timeout").localReply, flags: "UT")
            } else {
                localReply(OutriderError(.requestTimeout, source: .downstream, "request not received in time").localReply, flags: "DPE")
            }
        }
    }

    private func finish(status: Int, flags: String, details: String, local: Bool) {
        guard !finished else { return }
        finished = true
        if let up = upstream { upstream = nil; up.close() }
        let now = worker.loop.now
        record.responseCode = status
        record.responseFlags = flags
        record.details = details
        record.durationMillis = Double(now &- startMono) / 1e6
        // Body bytes, as Envoy counts them (local replies count their body).
        record.bytesReceived = bodyBytesIn
        record.bytesSent = bodyBytesOut
        downstream.finishStats(status: status, details: local ? details : nil, durationNanos: now &- startMono)
        if let chain {
            let c = chain.context
            if c.upstreamStartWallNanos > 0 && c.upstreamEndWallNanos == 0 { c.upstreamEndWallNanos = wallClockNanos() }
            chain.streamComplete(StreamOutcome(status: status, details: details, flags: flags, localReply: local,
                                               bytesReceived: bodyBytesIn, bytesSent: bodyBytesOut, endWallNanos: wallClockNanos()))
            record.traceID = c.traceID
            record.spanID = c.spanID
        }
        if logging { worker.log(record) }
        downstream.exchangeFinished()
    }
}
