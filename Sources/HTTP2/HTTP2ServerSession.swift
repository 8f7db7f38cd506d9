import CNghttp2
import OutriderCore

/// The HTTP/2 server side of one connection, on an nghttp2 session: a state machine fed bytes
/// (`receive`) that reports events and produces output (`takeOutput`). No I/O, no filters.
/// Loop-confined: every call happens on the connection's loop thread.
///
/// Driving it from a non-blocking socket loop:
///  1. `receive(bytes)` with what was read (after TLS, or raw for h2c including the preface),
///     then handle the events in order (open streams, forward bodies, ...).
///  2. Call `sendResponseHead` / `sendData` / `sendTrailers` / `resetStream` / `consumed` whenever
///     the proxy has something: they only queue.
///  3. After any of the above, `takeOutput(into:)` and write it; then `takeEvents()` for the rare
///     stream closures found while sending.
///  4. Stop reading the socket while the written-but-unsent output is large; close when
///     `wantsClose` is true and the output is flushed.
public final class HTTP2ServerSession {
    /// Per-stream state the Swift side keeps beside nghttp2's.
    /// A request stream: the shared state plus the request's pseudo-headers.
    final class Stream: NghttpStream {
        var method: String?, path: String?, scheme: String?, authority: String?
        var headEmitted = false
    }

    private var session: OpaquePointer?
    let settings: HTTP2Settings
    private let clock: () -> UInt64
    var streams: [Int32: Stream] = [:]
    var events: [HTTP2Event] = []
    private(set) var failed = false
    private var resets: TokenBucket
    private var settingsFrames: TokenBucket
    private var pings: TokenBucket
    private var controlFrames: TokenBucket
    /// Set by a callback that found a flood or a protocol violation nghttp2 lets through: the
    /// session is already terminating (GOAWAY queued); `receive` reports it.
    private var pendingFailure: (reason: String, code: UInt32)?
    /// Highest client stream id seen on a HEADERS frame, and the odd ids the client skipped
    /// (implicitly closed, never opened): a HEADERS frame reusing one is a connection error
    /// (RFC 9113 §5.1.1), which nghttp2 cannot tell from a late frame on a forgotten stream.
    private var maxClientStreamID: Int32 = 0
    private var skippedStreamIDs: [ClosedRange<Int32>] = []

    public init(settings: HTTP2Settings = HTTP2Settings(), clock: @escaping () -> UInt64 = monotonicNanos) throws {
        let s = settings.normalized
        self.settings = s
        self.clock = clock
        let now = clock()
        resets = TokenBucket(rate: s.maxResetsPerSecond, burst: s.resetBurst, now: now)
        settingsFrames = TokenBucket(rate: s.maxSettingsPerSecond, burst: s.settingsBurst, now: now)
        pings = TokenBucket(rate: s.maxPingsPerSecond, burst: s.pingBurst, now: now)
        controlFrames = TokenBucket(rate: s.maxControlFramesPerSecond, burst: s.controlFrameBurst, now: now)

        var callbacks: OpaquePointer?
        guard nghttp2_session_callbacks_new(&callbacks) == 0, let cbs = callbacks else {
            throw OutriderError(.internalError, source: .internal, "nghttp2_session_callbacks_new failed")
        }
        defer { nghttp2_session_callbacks_del(cbs) }
        nghttp2_session_callbacks_set_on_begin_headers_callback(cbs, thunkBeginHeaders)
        nghttp2_session_callbacks_set_on_header_callback(cbs, thunkHeader)
        nghttp2_session_callbacks_set_on_frame_recv_callback(cbs, thunkFrameRecv)
        nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs, thunkDataChunk)
        nghttp2_session_callbacks_set_on_stream_close_callback(cbs, thunkStreamClose)
        nghttp2_session_callbacks_set_on_invalid_frame_recv_callback(cbs, thunkInvalidFrame)
        nghttp2_session_callbacks_set_on_frame_send_callback(cbs, thunkFrameSend)
        nghttp2_session_callbacks_set_on_begin_frame_callback(cbs, thunkBeginFrame)

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
        // nghttp2's own reset limiter (backported to 1.52 for CVE-2023-44487) is a loose backstop
        // behind ours (which counts on the injected clock).
        let rb = UInt64(max(10_000, s.resetBurst * 10)), rr = UInt64(max(1_000, s.maxResetsPerSecond * 10))
        nghttp2_option_set_stream_reset_rate_limit(option, rb, rr)

        var sessionPtr: OpaquePointer?
        let rv = nghttp2_session_server_new2(&sessionPtr, cbs, Unmanaged.passUnretained(self).toOpaque(), option)
        guard rv == 0, let sp = sessionPtr else {
            throw OutriderError(.internalError, source: .internal, "nghttp2_session_server_new2: \(HTTP2ServerSession.describe(rv))")
        }
        session = sp

        let iv: [nghttp2_settings_entry] = [
            nghttp2_settings_entry(settings_id: Int32(NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS.rawValue), value: s.maxConcurrentStreams),
            nghttp2_settings_entry(settings_id: Int32(NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE.rawValue), value: UInt32(s.initialWindowSize)),
            nghttp2_settings_entry(settings_id: Int32(NGHTTP2_SETTINGS_MAX_FRAME_SIZE.rawValue), value: s.maxFrameSize),
            nghttp2_settings_entry(settings_id: Int32(NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE.rawValue), value: s.maxHeaderListSize),
        ]
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

    // MARK: - Input

    /// Feeds bytes read from the socket. Returns the events they caused, in order (plus any
    /// left from sending). After `.connectionError`, further input is ignored.
    public func receive(_ bytes: UnsafeRawBufferPointer) -> [HTTP2Event] {
        guard let session, !failed, let base = bytes.baseAddress, bytes.count > 0 else { return takeEvents() }
        let rv = nghttp2_session_mem_recv(session, base.assumingMemoryBound(to: UInt8.self), bytes.count)
        if let f = pendingFailure {
            fail(f.reason, code: f.code)
        } else if rv < 0 {
            let code = Int32(truncatingIfNeeded: rv)
            fail("nghttp2: \(HTTP2ServerSession.describe(code))", code: HTTP2ServerSession.goawayCode(for: code))
        }
        // A connection error nghttp2 finds itself (it queues the GOAWAY) is reported when that
        // GOAWAY is sent (onFrameSend), i.e. from takeOutput/takeEvents.
        return takeEvents()
    }

    public func receive(_ bytes: [UInt8]) -> [HTTP2Event] {
        bytes.withUnsafeBytes { receive($0) }
    }

    /// Events found outside `receive` (streams closed while output was produced). Cheap; call it
    /// after `takeOutput` and after the send calls.
    public func takeEvents() -> [HTTP2Event] {
        if events.isEmpty { return [] }
        let e = events
        events.removeAll(keepingCapacity: true)
        return e
    }

    // MARK: - Output

    /// Appends every frame ready to go (within the peer's flow-control windows) to `out`.
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

    /// Streams open in nghttp2 (requests in flight).
    public var openStreamCount: Int { streams.count }

    // MARK: - Response side

    /// Sends the response head. 1xx heads (not 101) are sent as informational; `endStream`
    /// ends the stream with the HEADERS frame (no body). Otherwise the body follows with
    /// `sendData` and optionally `sendTrailers`. Ignored for closed or unknown streams.
    public func sendResponseHead(streamID: Int32, _ head: ResponseHead, endStream: Bool) {
        guard let session, !failed, let stream = streams[streamID], !stream.localReset, !stream.hasProvider else { return }
        var fields: [(name: String, value: String)] = [(":status", String(head.status))]
        fields.append(contentsOf: HeaderFields.outbound(head.headers))
        if (100..<200).contains(head.status) {
            if head.status == 101 { return }
            _ = HeaderFields.withNV(fields) { nva, n in
                nghttp2_submit_headers(session, UInt8(NGHTTP2_FLAG_NONE.rawValue), streamID, nil, nva, n, nil)
            }
            return
        }
        let rv: Int32
        if endStream {
            stream.outboundEnded = true
            rv = HeaderFields.withNV(fields) { nva, n in nghttp2_submit_response(session, streamID, nva, n, nil) }
        } else {
            var provider = CNghttp2Shim_data_provider(thunkDataSourceRead)
            stream.hasProvider = true
            rv = HeaderFields.withNV(fields) { nva, n in nghttp2_submit_response(session, streamID, nva, n, &provider) }
        }
        if rv != 0 { stream.hasProvider = false }
    }

    /// Queues response body bytes (copied). They go out as the client's flow-control windows
    /// allow; `pendingOutboundBytes` tells how much still waits. `endStream` ends the body.
    public func sendData(streamID: Int32, _ bytes: UnsafeRawBufferPointer, endStream: Bool) {
        guard let session, !failed, let stream = streams[streamID], stream.hasProvider, !stream.outboundEnded else { return }
        stream.queue(bytes, endStream: endStream, session: session)
    }

    public func sendData(streamID: Int32, _ bytes: [UInt8], endStream: Bool) {
        bytes.withUnsafeBytes { sendData(streamID: streamID, $0, endStream: endStream) }
    }

    /// Ends the response with trailers after the queued body (gRPC status and friends).
    public func sendTrailers(streamID: Int32, _ trailers: HTTPHeaders) {
        guard let session, !failed, let stream = streams[streamID], stream.hasProvider, !stream.outboundEnded else { return }
        stream.finish(trailers: HeaderFields.outbound(trailers), session: session)
    }

    /// Resets a stream (RST_STREAM with `errorCode`). No `streamReset` event follows for it.
    public func resetStream(streamID: Int32, errorCode: UInt32) {
        guard let session, !failed else { return }
        if let stream = streams[streamID] {
            stream.localReset = true
            stream.closeReported = true
            stream.outbound.clear()
        }
        _ = nghttp2_submit_rst_stream(session, UInt8(NGHTTP2_FLAG_NONE.rawValue), streamID, errorCode)
    }

    /// Response bytes queued by `sendData` and not yet turned into frames.
    public func pendingOutboundBytes(streamID: Int32) -> Int {
        streams[streamID]?.outbound.readableBytes ?? 0
    }

    /// The proxy is done with `bytes` request-body bytes of a stream (the upstream took them,
    /// or they were dropped): the stream and connection windows reopen by that much.
    public func consumed(streamID: Int32, bytes: Int) {
        guard let session, !failed, bytes > 0, let stream = streams[streamID] else { return }
        stream.consume(bytes, session: session)
    }

    /// Graceful drain: GOAWAY (NO_ERROR) naming the last stream the session accepted. Streams up
    /// to it finish; newer ones are refused. `wantsClose` turns true when they are done.
    public func startGracefulShutdown() {
        guard let session, !failed, !isDraining else { return }
        isDraining = true
        let last = nghttp2_session_get_last_proc_stream_id(session)
        _ = nghttp2_submit_goaway(session, UInt8(NGHTTP2_FLAG_NONE.rawValue), last, HTTP2ErrorCode.noError, nil, 0)
    }
    private(set) var isDraining = false

    // MARK: - Failure

    func fail(_ reason: String, code: UInt32?) {
        guard !failed else { return }
        failed = true
        if let session, let code {
            _ = nghttp2_session_terminate_session(session, code)
        }
        events.append(.connectionError(reason))
    }

    static func describe(_ code: Int32) -> String {
        guard let p = nghttp2_strerror(code) else { return "error \(code)" }
        return String(cString: p)
    }

    static func goawayCode(for libError: Int32) -> UInt32 {
        switch libError {
        case NGHTTP2_ERR_FLOODED.rawValue: return HTTP2ErrorCode.enhanceYourCalm
        case NGHTTP2_ERR_CALLBACK_FAILURE.rawValue, NGHTTP2_ERR_NOMEM.rawValue: return HTTP2ErrorCode.internalError
        case NGHTTP2_ERR_HEADER_COMP.rawValue: return HTTP2ErrorCode.compressionError
        case NGHTTP2_ERR_FLOW_CONTROL.rawValue: return HTTP2ErrorCode.flowControlError
        case NGHTTP2_ERR_FRAME_SIZE_ERROR.rawValue: return HTTP2ErrorCode.frameSizeError
        default: return HTTP2ErrorCode.protocolError
        }
    }

    // MARK: - Callbacks (called by the thunks in NghttpCallbacks.swift)

    func onBeginHeaders(_ frame: UnsafePointer<nghttp2_frame>) {
        guard CNghttp2Shim_frame_type(frame) == UInt8(NGHTTP2_HEADERS.rawValue) else { return }
        let id = CNghttp2Shim_frame_stream_id(frame)
        let cat = CNghttp2Shim_headers_category(frame)
        if cat == Int32(NGHTTP2_HCAT_REQUEST.rawValue) {
            streams[id] = Stream(id: id)
        } else if let stream = streams[id] {
            // Trailers (or a non-final block): start a fresh section.
            stream.fields = HTTPHeaders()
            stream.headerBytes = 0
            stream.oversized = false
        }
    }

    func onHeader(_ frame: UnsafePointer<nghttp2_frame>, name: UnsafeRawBufferPointer, value: UnsafeRawBufferPointer) {
        let id = CNghttp2Shim_frame_stream_id(frame)
        guard let stream = streams[id], !stream.oversized else { return }
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
        if !stream.headEmitted, n.utf8.first == UInt8(ascii: ":") {
            switch n {
            case ":method": stream.method = v
            case ":path": stream.path = v
            case ":scheme": stream.scheme = v
            case ":authority": stream.authority = v
            default: break  // nghttp2 rejects unknown pseudo-headers before this matters
            }
            return
        }
        stream.fields.add(name: n, value: v)
    }

    func onDataChunk(streamID: Int32, _ data: UnsafeRawBufferPointer) {
        guard let session else { return }
        guard let stream = streams[streamID], stream.headEmitted, !stream.localReset, !stream.closeReported else {
            // Nobody will consume these: give the window back now.
            _ = nghttp2_session_consume(session, streamID, data.count)
            return
        }
        stream.unconsumed += data.count
        if case .requestData(let sid, var bytes, false)? = events.last, sid == streamID {
            events.removeLast()
            bytes.append(contentsOf: data)
            events.append(.requestData(streamID: sid, bytes, endStream: false))
        } else {
            events.append(.requestData(streamID: streamID, Array(data), endStream: false))
        }
    }

    func onFrameRecv(_ frame: UnsafePointer<nghttp2_frame>) {
        let type = UInt32(CNghttp2Shim_frame_type(frame))
        let flags = CNghttp2Shim_frame_flags(frame)
        let id = CNghttp2Shim_frame_stream_id(frame)
        let endStream = flags & UInt8(NGHTTP2_FLAG_END_STREAM.rawValue) != 0
        let ack = flags & UInt8(NGHTTP2_FLAG_ACK.rawValue) != 0
        switch type {
        case NGHTTP2_HEADERS.rawValue:
            guard let stream = streams[id] else { return }
            if endStream { stream.remoteEnded = true }
            if !stream.headEmitted {
                if stream.oversized {
                    rejectOversizedRequest(stream, endStream: endStream)
                    return
                }
                stream.headEmitted = true
                events.append(.requestHead(streamID: id, makeHead(stream), scheme: stream.scheme, endStream: endStream))
            } else if !stream.closeReported {
                if stream.oversized {
                    resetStream(streamID: id, errorCode: HTTP2ErrorCode.enhanceYourCalm)
                    events.append(.streamReset(streamID: id, errorCode: HTTP2ErrorCode.enhanceYourCalm))
                    return
                }
                events.append(.requestTrailers(streamID: id, stream.fields))
            }
            stream.fields = HTTPHeaders()
        case NGHTTP2_DATA.rawValue:
            if !endStream && CNghttp2Shim_frame_length(frame) == 0 { limitControlFrame() }
            guard endStream, let stream = streams[id] else { return }
            stream.remoteEnded = true
            guard stream.headEmitted, !stream.closeReported else { return }
            if case .requestData(let sid, let bytes, false)? = events.last, sid == id {
                events.removeLast()
                events.append(.requestData(streamID: id, bytes, endStream: true))
            } else {
                events.append(.requestData(streamID: id, [], endStream: true))
            }
        case NGHTTP2_RST_STREAM.rawValue:
            if !resets.take(now: clock()) {
                terminateNow("too many RST_STREAM frames (rapid reset)", code: HTTP2ErrorCode.enhanceYourCalm)
            }
        case NGHTTP2_SETTINGS.rawValue:
            if !ack && !settingsFrames.take(now: clock()) {
                terminateNow("too many SETTINGS frames", code: HTTP2ErrorCode.enhanceYourCalm)
            }
        case NGHTTP2_PING.rawValue:
            if !ack && !pings.take(now: clock()) {
                terminateNow("too many PING frames", code: HTTP2ErrorCode.enhanceYourCalm)
            }
        case NGHTTP2_PRIORITY.rawValue, NGHTTP2_WINDOW_UPDATE.rawValue:
            limitControlFrame()
        case NGHTTP2_GOAWAY.rawValue:
            events.append(.goaway(lastStreamID: CNghttp2Shim_goaway_last_stream_id(frame),
                                  errorCode: CNghttp2Shim_goaway_error_code(frame)))
        default:
            break
        }
    }

    private func limitControlFrame() {
        if !controlFrames.take(now: clock()) {
            terminateNow("too many control frames", code: HTTP2ErrorCode.enhanceYourCalm)
        }
    }

    /// Queues GOAWAY with `code` right away; nghttp2 ignores the rest of the input.
    private func terminateNow(_ reason: String, code: UInt32) {
        guard let session, pendingFailure == nil else { return }
        pendingFailure = (reason, code)
        _ = nghttp2_session_terminate_session(session, code)
    }

    /// Every frame header, before nghttp2 processes the frame: the checks nghttp2 1.52 lacks.
    func onBeginFrame(type: UInt8, streamID: Int32) {
        switch UInt32(type) {
        case NGHTTP2_HEADERS.rawValue where streamID > 0 && streamID & 1 == 1:
            if streamID > maxClientStreamID {
                let expected = maxClientStreamID == 0 ? 1 : maxClientStreamID &+ 2
                if streamID > expected {
                    skippedStreamIDs.append(expected...(streamID - 2))
                    if skippedStreamIDs.count > 64 { skippedStreamIDs.removeFirst() }
                }
                maxClientStreamID = streamID
            } else if skippedStreamIDs.contains(where: { $0.contains(streamID) }) {
                terminateNow("HEADERS on stream \(streamID), below a stream already opened", code: HTTP2ErrorCode.protocolError)
            }
        case NGHTTP2_PRIORITY.rawValue where streamID == 0:
            // RFC 9113 §6.3: PRIORITY on stream 0 is a connection error (nghttp2 ignores it).
            terminateNow("PRIORITY on stream 0", code: HTTP2ErrorCode.protocolError)
        default:
            break
        }
    }

    func onInvalidFrame(_ frame: UnsafePointer<nghttp2_frame>, libError: Int32) {
        let id = CNghttp2Shim_frame_stream_id(frame)
        guard id != 0, let stream = streams[id], stream.headEmitted, !stream.closeReported else { return }
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
        // A GOAWAY with an error that nghttp2 queued itself (a connection error found while
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
            // Body bytes the proxy will never consume: return them to the connection window.
            _ = nghttp2_session_consume_connection(session, stream.unconsumed)
        }
        if stream.headEmitted && !stream.closeReported && !stream.localReset {
            let clean = errorCode == HTTP2ErrorCode.noError && stream.remoteEnded && stream.outboundEnded && stream.outbound.isEmpty
            if !clean {
                events.append(.streamReset(streamID: streamID, errorCode: errorCode))
            }
        }
    }

    func readData(streamID: Int32, into buf: UnsafeMutablePointer<UInt8>, length: Int, flags: UnsafeMutablePointer<UInt32>) -> Int {
        guard let stream = streams[streamID] else { return Int(NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE.rawValue) }
        return stream.readData(session: session, into: buf, length: length, flags: flags)
    }

    // MARK: - Helpers

    private func makeHead(_ stream: Stream) -> RequestHead {
        var headers = HTTPHeaders()
        headers.reserveCapacity(stream.fields.count + 1)
        if let authority = stream.authority {
            headers.add(name: "host", value: authority)
        }
        var cookies: [String] = []
        for f in stream.fields {
            if f.name == "cookie" { cookies.append(f.value); continue }
            if f.name == "host" && stream.authority != nil { continue }
            headers.add(name: f.name, value: f.value)
        }
        if !cookies.isEmpty { headers.add(name: "cookie", value: cookies.joined(separator: "; ")) }
        let method = stream.method ?? "GET"
        let target = method == "CONNECT" ? (stream.authority ?? "") : (stream.path ?? "/")
        return RequestHead(method: method, target: target, version: .http2, headers: headers)
    }

    /// A request header section over `maxHeaderListSize`: answer 431 (RFC 9113 §10.5.1) and stop
    /// the upload if the request has a body.
    private func rejectOversizedRequest(_ stream: Stream, endStream: Bool) {
        guard let session else { return }
        stream.fields = HTTPHeaders()
        stream.headEmitted = false
        stream.closeReported = true
        stream.localReset = true
        let fields: [(name: String, value: String)] = [(":status", "431"), ("content-length", "0")]
        _ = HeaderFields.withNV(fields) { nva, n in nghttp2_submit_response(session, stream.id, nva, n, nil) }
        if !endStream {
            _ = nghttp2_submit_rst_stream(session, UInt8(NGHTTP2_FLAG_NONE.rawValue), stream.id, HTTP2ErrorCode.noError)
        }
    }
}
