import CNghttp2
import OutriderCore

/// What a stream keeps in both sessions (server and client): its header section being received,
/// the body it sends (bytes queued by the proxy, the end, optional trailers, and whether
/// nghttp2's data source is parked waiting for more), and received body bytes the proxy has not
/// consumed yet (flow-control credit). Each session subclasses it with its own head fields.
class NghttpStream {
    final let id: Int32
    // Header section being received.
    final var fields = HTTPHeaders()
    final var headerBytes = 0
    final var oversized = false
    final var remoteEnded = false
    /// Body received, handed to the proxy and not yet consumed (returned to the windows later).
    final var unconsumed = 0
    // Body sent.
    final var outbound = ByteBuffer()
    final var outboundEnded = false
    final var trailers: [(name: String, value: String)]?
    final var hasProvider = false
    final var deferred = false
    final var localReset = false
    final var closeReported = false

    init(id: Int32) { self.id = id }

    /// Queues body bytes (copied); `endStream` ends the body.
    final func queue(_ bytes: UnsafeRawBufferPointer, endStream: Bool, session: OpaquePointer) {
        if bytes.count > 0 { outbound.append(bytes) }
        if endStream { outboundEnded = true }
        resume(session)
    }

    /// Ends the body with trailers (nil: no trailers) after what is queued.
    final func finish(trailers t: [(name: String, value: String)]?, session: OpaquePointer) {
        trailers = t
        outboundEnded = true
        resume(session)
    }

    /// Wakes the data source if nghttp2 parked it for lack of bytes.
    private func resume(_ session: OpaquePointer) {
        guard deferred else { return }
        deferred = false
        _ = nghttp2_session_resume_data(session, id)
    }

    /// The proxy is done with `bytes` received body bytes: the windows reopen by that much.
    final func consume(_ bytes: Int, session: OpaquePointer) {
        let n = min(bytes, unconsumed)
        guard n > 0 else { return }
        unconsumed -= n
        _ = nghttp2_session_consume(session, id, n)
    }

    /// nghttp2's data source read: copies up to `length` queued bytes into `buf`; at the end sets
    /// EOF (submitting trailers if any); parks the source (DEFERRED) when nothing is queued yet.
    final func readData(session: OpaquePointer?, into buf: UnsafeMutablePointer<UInt8>, length: Int,
                        flags: UnsafeMutablePointer<UInt32>) -> Int {
        let n = min(length, outbound.readableBytes)
        if n > 0 {
            outbound.withReadableBytes { src in
                if let s = src.baseAddress { buf.update(from: s.assumingMemoryBound(to: UInt8.self), count: n) }
            }
            outbound.consume(n)
        }
        if outbound.isEmpty && outboundEnded {
            flags.pointee |= NGHTTP2_DATA_FLAG_EOF.rawValue
            if let t = trailers, let session {
                flags.pointee |= NGHTTP2_DATA_FLAG_NO_END_STREAM.rawValue
                trailers = nil
                let rv = HeaderFields.withNV(t) { nva, count in nghttp2_submit_trailer(session, id, nva, count) }
                if rv != 0 { return Int(NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE.rawValue) }
            }
            return n
        }
        if n == 0 {
            deferred = true
            return Int(NGHTTP2_ERR_DEFERRED.rawValue)
        }
        return n
    }
}
