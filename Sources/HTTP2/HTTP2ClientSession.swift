import CNghttp2
import OutriderCore

/// What a client session reports after `receive` (and, rarely, after sending: see `takeEvents`).
public enum HTTP2ClientEvent {
    /// A response header section: `head.status` is `:status`, `head.headers` carries no
    /// pseudo-header, `head.version` is `.http2`. 1xx heads come first (interim, `endStream` false),
    /// then the final one; `endStream` true means no body follows.
    case responseHead(streamID: Int32, ResponseHead, endStream: Bool)
    /// Response body bytes. Hand them back with `consumed(streamID:bytes:)` once the downstream took
    /// them, or the server's window stays closed. No bytes and `endStream` true ends the body.
    case responseData(streamID: Int32, [UInt8], endStream: Bool)
    /// Response trailers (gRPC status and friends); the response is complete after them.
    case responseTrailers(streamID: Int32, HTTPHeaders)
    /// The stream ended before its response did: the server sent RST_STREAM, the response broke a
    /// rule of RFC 9113 (the session reset it), or a GOAWAY refused it (REFUSED_STREAM: never
    /// processed, safe to retry). Not reported for streams reset with `resetStream`.
    case streamReset(streamID: Int32, errorCode: UInt32)
    /// The server sent GOAWAY: streams up to `lastStreamID` may finish; no new stream opens.
    case goaway(lastStreamID: Int32, errorCode: UInt32)
    /// The connection is broken: a GOAWAY is queued. Write the pending output and close; every
    /// stream still open is lost. No further events follow.
    case connectionError(String)
}

/// The HTTP/2 client side of one upstream connection, on an nghttp2 session: the mirror of
/// `HTTP2ServerSession`. No I/O; loop-confined.
///
/// Driving it:
///  1. After `init`, `takeOutput(into:)` and write it (client preface + SETTINGS).
///  2. `sendRequestHead` (then `sendData` / `sendTrailers`) per request: they only queue. Check
///     `canOpenStream` first.
///  3. After any send call, `takeOutput(into:)`, write it, then `takeEvents()`.
///  4. `receive(bytes)` with what was read; handle the events; `takeOutput` again (SETTINGS ACKs,
///     WINDOW_UPDATEs, request data the new window lets through).
///  5. `consumed(streamID:bytes:)` as response bytes reach the downstream client.
///  6. Close when `wantsClose` is true and the output is flushed.
public final class HTTP2ClientSession {
    /// A request this client sent: the shared state plus the response's status.
    final class Stream: NghttpStream {
        var status: Int?
        var finalHeadReceived = false
    }

    private var session: OpaquePointer?
    let settings: HTTP2Settings
    var streams: [Int32: Stream] = [:]
    var events: [HTTP2ClientEvent] = []
    private(set) var failed = false
    private(set) var goawayReceived = false
    private(set) var isDraining = false

    public init(settings: HTTP2Settings = HTTP2Settings()) throws {
        let s = settings.normalized
        self.settings = s

        var callbacks: OpaquePointer?
        guard nghttp2_session_callbacks_new(&callbacks) == 0, let cbs = callbacks else {
            throw OutriderError(.internalError, source: .internal, "nghttp2_session_callbacks_new failed")
        }
        defer { nghttp2_session_callbacks_del(cbs) }
        nghttp2_session_callbacks_set_on_begin_headers_callback(cbs, clientThunkBeginHeaders)
        nghttp2_session_callbacks_set_on_header_callback(cbs, clientThunkHeader)
        nghttp2_session_callbacks_set_on_frame_recv_callback(cbs, clientThunkFrameRecv)
        nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs, clientThunkDataChunk)
        nghttp2_session_callbacks_set_on_stream_close_callback(cbs, clientThunkStreamClose)
        nghttp2_session_callbacks_set_on_invalid_frame_recv_callback(cbs, clientThunkInvalidFrame)
        nghttp2_session_callbacks_set_on_frame_send_callback(cbs, clientThunkFrameSend)

        var optionPtr: OpaquePointer?
        guard nghttp2_option_new(&optionPtr) == 0, let option = optionPtr else {
            throw OutriderError(.internalError, source: .internal, "nghttp2_option_new failed")
        }
        defer { nghttp2_option_del(option) }
        // Flow control follows the proxy: windows reopen only through `consumed`.
        nghttp2_option_set_no_auto_window_update(option, 1)
        nghttp2_option_set_max_settings(option, s.maxSettingsEntries)
        nghttp2_option_set_max_outbound_ack(option, s.maxOutboundAcks)
        nghttp2_option_set_max_continuations(option, s.maxContinuationFrames)
        // HTTP messaging checks stay on (nghttp2's default): :status, content-length vs DATA,
        // no pseudo-headers in trailers, no connection-specific fields.

        var sessionPtr: OpaquePointer?
        let rv = nghttp2_session_client_new2(&sessionPtr, cbs, Unmanaged.passUnretained(self).toOpaque(), option)
        guard rv == 0, let sp = sessionPtr else {
            throw OutriderError(.internalError, source: .internal, "nghttp2_session_client_new2: \(HTTP2ServerSession.describe(rv))")
        }
        session = sp

        var iv: [nghttp2_settings_entry] = [
            nghttp2_settings_entry(settings_id: Int32(NGHTTP2_SETTINGS_ENABLE_PUSH.rawValue), value: 0),
            nghttp2_settings_entry(settings_id: Int32(NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE.rawValue), value: UInt32(s.initialWindowSize)),
            nghttp2_settings_entry(settings_id: Int32(NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE.rawValue), value: s.maxHeaderListSize),
        ]
        if s.maxFrameSize != 16_384 {
            iv.append(nghttp2_settings_entry(settings_id: Int32(NGHTTP2_SETTINGS_MAX_FRAME_SIZE.rawValue), value: s.maxFrameSize))
        }
        let srv = iv.withUnsafeBufferPointer { nghttp2_submit_settings(sp, UInt8(NGHTTP2_FLAG_NONE.rawValue), $0.baseAddress, $0.count) }
        guard srv == 0 else {
            throw OutriderError(.internalError, source: .internal, "nghttp2_submit_settings: \(HTTP2ServerSession.describe(srv))")
        }
        if s.connectionWindowSize > 65_535 {
            _ = nghttp2_session_set_local_window_size(sp, UInt8(NGHTTP2_FLAG_NONE.rawValue), 0, s.connectionWindowSize)
        }
    }

    deinit {
        if let session { nghttp2_session_del(session) }
    }

    // MARK: - Requests

    /// Starts a request: `:method`, `:scheme`, `:authority` (from the Host header, which is then
    /// dropped; or from an absolute-form target), `:path` (`head.target`; CONNECT carries only
    /// `:method` and `:authority`). Connection-specific fields are removed (RFC 9113 §8.2.2;
    /// `te: trailers` kept). With `endStream` false the body follows with `sendData` and
    /// optionally `sendTrailers`. Returns the stream id, or nil if no stream can be opened
    /// (GOAWAY received or sent, session failed, stream ids spent).
    public func sendRequestHead(_ head: RequestHead, scheme: String, endStream: Bool) -> Int32? {
        guard let session, !failed, !goawayReceived, nghttp2_session_check_request_allowed(session) != 0 else { return nil }
        let fields = HTTP2ClientSession.requestFields(head, scheme: scheme)
        let stream: Int32
        if endStream {
            stream = HeaderFields.withNV(fields) { nva, n in nghttp2_submit_request(session, nil, nva, n, nil, nil) }
        } else {
            var provider = CNghttp2Shim_data_provider(clientThunkDataSourceRead)
            stream = HeaderFields.withNV(fields) { nva, n in nghttp2_submit_request(session, nil, nva, n, &provider, nil) }
        }
        guard stream > 0 else { return nil }
        let s = Stream(id: stream)
        s.outboundEnded = endStream
        s.hasProvider = !endStream
        streams[stream] = s
        return stream
    }

    /// Queues request body bytes (copied). They go out as the server's flow-control windows allow;
    /// `pendingOutboundBytes` tells how much still waits. `endStream` ends the body.
    public func sendData(streamID: Int32, _ bytes: UnsafeRawBufferPointer, endStream: Bool) {
        guard let session, !failed, let stream = streams[streamID], stream.hasProvider, !stream.outboundEnded, !stream.localReset else { return }
        stream.queue(bytes, endStream: endStream, session: session)
    }

    public func sendData(streamID: Int32, _ bytes: [UInt8], endStream: Bool) {
        bytes.withUnsafeBytes { sendData(streamID: streamID, $0, endStream: endStream) }
    }

    /// Ends the request with trailers after the queued body. Empty trailers (after removing
    /// what HTTP/2 forbids) just end the body.
    public func sendTrailers(streamID: Int32, _ trailers: HTTPHeaders) {
        guard let session, !failed, let stream = streams[streamID], stream.hasProvider, !stream.outboundEnded, !stream.localReset else { return }
        let fields = HeaderFields.outbound(trailers)
        stream.finish(trailers: fields.isEmpty ? nil : fields, session: session)
    }

    /// Resets a stream (RST_STREAM with `errorCode`). No `streamReset` event follows for it; any
    /// response data still arriving is dropped (and its window returned).
    public func resetStream(streamID: Int32, errorCode: UInt32) {
        guard let session, !failed else { return }
        if let stream = streams[streamID] {
            stream.localReset = true
            stream.closeReported = true
            stream.outbound.clear()
            if stream.unconsumed > 0 {
                _ = nghttp2_session_consume(session, streamID, stream.unconsumed)
                stream.unconsumed = 0
            }
        }
        _ = nghttp2_submit_rst_stream(session, UInt8(NGHTTP2_FLAG_NONE.rawValue), streamID, errorCode)
    }

    /// Request bytes queued by `sendData` and not yet turned into frames.
    public func pendingOutboundBytes(streamID: Int32) -> Int {
        streams[streamID]?.outbound.readableBytes ?? 0
    }

    /// The proxy handed `bytes` of response data to the downstream: the stream and connection
    /// windows reopen by that much. Until then the server's window stays closed (backpressure).
    public func consumed(streamID: Int32, bytes: Int) {
        guard let session, !failed, bytes > 0, let stream = streams[streamID] else { return }
        stream.consume(bytes, session: session)
    }

    /// True when a new request may start now: no GOAWAY received or sent, not failed, stream ids
    /// left, and fewer streams in flight than the server's SETTINGS_MAX_CONCURRENT_STREAMS.
    public var canOpenStream: Bool {
        guard let session, !failed, !goawayReceived, !isDraining, nghttp2_session_check_request_allowed(session) != 0 else { return false }
        let maxStreams = nghttp2_session_get_remote_settings(session, NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS)
        return UInt64(streams.count) < UInt64(maxStreams)
    }

    /// Streams opened and not yet closed.
    public var openStreamCount: Int { streams.count }

    /// Graceful close (e.g. an idle pooled connection): GOAWAY (NO_ERROR); streams in flight
    /// finish, no new one opens; `wantsClose` turns true when they are done.
    public func startGracefulShutdown() {
        guard let session, !failed, !isDraining else { return }
        isDraining = true
        _ = nghttp2_submit_goaway(session, UInt8(NGHTTP2_FLAG_NONE.rawValue), 0, HTTP2ErrorCode.noError, nil, 0)
    }

    // MARK: - Input

    /// Feeds bytes read from the socket. Returns the events they caused, in order (plus any left
    /// from sending). After `.connectionError`, further input is ignored.
    public func receive(_ bytes: UnsafeRawBufferPointer) -> [HTTP2ClientEvent] {
        guard let session, !failed, let base = bytes.baseAddress, bytes.count > 0 else { return takeEvents() }
        let rv = nghttp2_session_mem_recv(session, base.assumingMemoryBound(to: UInt8.self), bytes.count)
        if rv < 0 {
            let code = Int32(truncatingIfNeeded: rv)
            fail("nghttp2: \(HTTP2ServerSession.describe(code))", code: HTTP2ServerSession.goawayCode(for: code))
        }
        return takeEvents()
    }

    public func receive(_ bytes: [UInt8]) -> [HTTP2ClientEvent] {
        bytes.withUnsafeBytes { receive($0) }
    }

    /// Events found outside `receive` (streams closed while output was produced).
    public func takeEvents() -> [HTTP2ClientEvent] {
        if events.isEmpty { return [] }
        let e = events
        events.removeAll(keepingCapacity: true)
        return e
    }

    // MARK: - Output

    /// Appends every frame ready to go (within the server's flow-control windows) to `out`.
    public func takeOutput(into out: inout ByteBuffer) {
        guard let session else { return }
        // After a failure the session still has its GOAWAY to send: drain once more.
        while let code = NghttpOutput.drain(session, into: &out) {
            if failed { return }
            fail("nghttp2 send: \(HTTP2ServerSession.describe(code))", code: HTTP2ErrorCode.internalError)
        }
    }

    /// True once there is nothing left to read or write: close the connection after flushing.
    public var wantsClose: Bool { NghttpOutput.wantsClose(session) }

    // MARK: - Failure

    func fail(_ reason: String, code: UInt32?) {
        guard !failed else { return }
        failed = true
        if let session, let code {
            _ = nghttp2_session_terminate_session(session, code)
        }
        events.append(.connectionError(reason))
    }

    // MARK: - Callbacks (called by the thunks in NghttpClientCallbacks.swift)

    func onBeginHeaders(_ frame: UnsafePointer<nghttp2_frame>) {
        guard CNghttp2Shim_frame_type(frame) == UInt8(NGHTTP2_HEADERS.rawValue) else { return }
        guard let stream = streams[CNghttp2Shim_frame_stream_id(frame)] else { return }
        // A response head, the final head after 1xx, or trailers: a fresh section each time.
        stream.fields = HTTPHeaders()
        stream.status = nil
        stream.headerBytes = 0
        stream.oversized = false
    }

    func onHeader(_ frame: UnsafePointer<nghttp2_frame>, name: UnsafeRawBufferPointer, value: UnsafeRawBufferPointer) {
        let id = CNghttp2Shim_frame_stream_id(frame)
        guard let stream = streams[id], !stream.oversized, !stream.closeReported else { return }
        let size = name.count &+ value.count &+ 32
        stream.headerBytes = stream.headerBytes &+ size
        if stream.headerBytes > Int(settings.maxHeaderListSize) {
            // Stop keeping fields (HPACK bomb bound); nghttp2 keeps decoding for HPACK state.
            stream.oversized = true
            stream.fields = HTTPHeaders()
            return
        }
        let n = String(decoding: name, as: UTF8.self)
        let v = String(decoding: value, as: UTF8.self)
        if n.utf8.first == UInt8(ascii: ":") {
            // nghttp2 allows only :status, once, in a response head (none in trailers).
            if n == ":status" { stream.status = Int(v) }
            return
        }
        stream.fields.add(name: n, value: v)
    }

    func onDataChunk(streamID: Int32, _ data: UnsafeRawBufferPointer) {
        guard let session else { return }
        guard let stream = streams[streamID], stream.finalHeadReceived, !stream.localReset, !stream.closeReported else {
            // Nobody will consume these: give the window back now.
            _ = nghttp2_session_consume(session, streamID, data.count)
            return
        }
        stream.unconsumed += data.count
        if case .responseData(let sid, var bytes, false)? = events.last, sid == streamID {
            events.removeLast()
            bytes.append(contentsOf: data)
            events.append(.responseData(streamID: sid, bytes, endStream: false))
        } else {
            events.append(.responseData(streamID: streamID, Array(data), endStream: false))
        }
    }

    func onFrameRecv(_ frame: UnsafePointer<nghttp2_frame>) {
        let type = UInt32(CNghttp2Shim_frame_type(frame))
        let flags = CNghttp2Shim_frame_flags(frame)
        let id = CNghttp2Shim_frame_stream_id(frame)
        let endStream = flags & UInt8(NGHTTP2_FLAG_END_STREAM.rawValue) != 0
        switch type {
        case NGHTTP2_HEADERS.rawValue:
            guard let stream = streams[id], !stream.closeReported, !stream.localReset else { return }
            if endStream { stream.remoteEnded = true }
            if stream.oversized {
                // Over maxHeaderListSize: give up on the stream.
                resetStream(streamID: id, errorCode: HTTP2ErrorCode.enhanceYourCalm)
                events.append(.streamReset(streamID: id, errorCode: HTTP2ErrorCode.enhanceYourCalm))
                return
            }
            let fields = stream.fields
            stream.fields = HTTPHeaders()
            if !stream.finalHeadReceived {
                let status = stream.status ?? 0
                let interim = (100..<200).contains(status)
                if !interim { stream.finalHeadReceived = true }
                let head = ResponseHead(status: status, reason: "", version: .http2, headers: fields)
                events.append(.responseHead(streamID: id, head, endStream: endStream && !interim))
            } else {
                events.append(.responseTrailers(streamID: id, fields))
            }
        case NGHTTP2_DATA.rawValue:
            guard endStream, let stream = streams[id] else { return }
            stream.remoteEnded = true
            guard stream.finalHeadReceived, !stream.closeReported, !stream.localReset else { return }
            if case .responseData(let sid, let bytes, false)? = events.last, sid == id {
                events.removeLast()
                events.append(.responseData(streamID: id, bytes, endStream: true))
            } else {
                events.append(.responseData(streamID: id, [], endStream: true))
            }
        case NGHTTP2_GOAWAY.rawValue:
            goawayReceived = true
            events.append(.goaway(lastStreamID: CNghttp2Shim_goaway_last_stream_id(frame),
                                  errorCode: CNghttp2Shim_goaway_error_code(frame)))
        default:
            break
        }
    }

    func onInvalidFrame(_ frame: UnsafePointer<nghttp2_frame>, libError: Int32) {
        let id = CNghttp2Shim_frame_stream_id(frame)
        guard id != 0, let stream = streams[id], !stream.closeReported, !stream.localReset else { return }
        let code: UInt32
        switch libError {
        case NGHTTP2_ERR_FLOW_CONTROL.rawValue: code = HTTP2ErrorCode.flowControlError
        case NGHTTP2_ERR_STREAM_CLOSED.rawValue: code = HTTP2ErrorCode.streamClosed
        case NGHTTP2_ERR_REFUSED_STREAM.rawValue: code = HTTP2ErrorCode.refusedStream
        default: code = HTTP2ErrorCode.protocolError
        }
        stream.closeReported = true
        stream.outbound.clear()
        events.append(.streamReset(streamID: id, errorCode: code))
    }

    func onFrameSend(_ frame: UnsafePointer<nghttp2_frame>) {
        // A GOAWAY with an error nghttp2 queued itself (a connection error found while
        // receiving): report it once it is on its way.
        guard CNghttp2Shim_frame_type(frame) == UInt8(NGHTTP2_GOAWAY.rawValue) else { return }
        let code = CNghttp2Shim_goaway_error_code(frame)
        if code != HTTP2ErrorCode.noError && !failed {
            failed = true
            events.append(.connectionError("connection error: GOAWAY \(code) sent"))
        }
    }

    func onStreamClose(streamID: Int32, errorCode: UInt32) {
        guard let stream = streams.removeValue(forKey: streamID) else { return }
        if stream.unconsumed > 0, let session {
            // Response bytes the proxy will never consume: return them to the connection window.
            _ = nghttp2_session_consume_connection(session, stream.unconsumed)
        }
        if !stream.closeReported && !stream.localReset {
            // A complete response is a clean end even if the server then reset the upload
            // (RST_STREAM NO_ERROR, RFC 9113 §8.1).
            let clean = stream.remoteEnded && errorCode == HTTP2ErrorCode.noError
            if !clean {
                events.append(.streamReset(streamID: streamID, errorCode: errorCode))
            }
        }
    }

    func readData(streamID: Int32, into buf: UnsafeMutablePointer<UInt8>, length: Int, flags: UnsafeMutablePointer<UInt32>) -> Int {
        guard let stream = streams[streamID] else { return Int(NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE.rawValue) }
        return stream.readData(session: session, into: buf, length: length, flags: flags)
    }

    // MARK: - Request header block

    /// The pseudo-headers and fields of a request (RFC 9113 §8.3.1).
    static func requestFields(_ head: RequestHead, scheme: String) -> [(name: String, value: String)] {
        let method = head.method
        var authority = head.headers.first("host").map(trimmedOWS)
        var path = head.target
        if method == "CONNECT" {
            let a = head.target.isEmpty ? (authority ?? "") : head.target
            return [(":method", method), (":authority", a)] + regularFields(head.headers)
        }
        // Absolute-form (RFC 9112 §3.2.2): the target's authority wins over Host.
        if let (a, p) = splitAbsolute(head.target) {
            if !a.isEmpty { authority = a }
            path = p
        }
        if path.isEmpty { path = method == "OPTIONS" ? "*" : "/" }
        var out: [(name: String, value: String)] = [(":method", method), (":scheme", scheme)]
        if let authority, !authority.isEmpty { out.append((":authority", authority)) }
        out.append((":path", path))
        return out + regularFields(head.headers)
    }

    private static func regularFields(_ headers: HTTPHeaders) -> [(name: String, value: String)] {
        HeaderFields.outbound(headers).filter { $0.name != "host" }
    }

    /// "http://a.b:8080/x?y" → ("a.b:8080", "/x?y"); nil if not absolute-form.
    private static func splitAbsolute(_ target: String) -> (String, String)? {
        let u = target.utf8
        guard u.first != UInt8(ascii: "/"), let colon = u.firstIndex(of: UInt8(ascii: ":")) else { return nil }
        let afterColon = u[colon...].dropFirst()
        guard afterColon.starts(with: "//".utf8) else { return nil }
        let rest = afterColon.dropFirst(2)
        let end = rest.firstIndex(where: { $0 == UInt8(ascii: "/") || $0 == UInt8(ascii: "?") || $0 == UInt8(ascii: "#") }) ?? rest.endIndex
        var authority = Substring(target[rest.startIndex..<end])
        // Drop userinfo (RFC 9110 §4.2.4: not sent).
        if let at = authority.lastIndex(of: "@") { authority = authority[authority.index(after: at)...] }
        var path = String(target[end...])
        if let hash = path.firstIndex(of: "#") { path = String(path[..<hash]) }
        if path.first == "?" { path = "/" + path }
        if path.isEmpty { path = "/" }
        return (String(authority), path)
    }

    private static func trimmedOWS(_ s: String) -> String {
        String(s.drop(while: { $0 == " " || $0 == "\t" }).reversed().drop(while: { $0 == " " || $0 == "\t" }).reversed())
    }
}
