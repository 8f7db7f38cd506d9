import CNghttp2
import OutriderCore

/// The byte pump both sessions (server and client) share: nghttp2 serializes frames, we copy
/// them out for the socket.
enum NghttpOutput {
    /// Appends every frame nghttp2 has ready (within the peer's flow-control windows) to `out`.
    /// Returns nghttp2's error code when serializing failed, nil when all output was taken.
    /// Bounded so a misbehaving session can never spin the loop forever.
    static func drain(_ session: OpaquePointer, into out: inout ByteBuffer) -> Int32? {
        for _ in 0..<1_000_000 {
            var data: UnsafePointer<UInt8>?
            let n = nghttp2_session_mem_send(session, &data)
            if n < 0 { return Int32(truncatingIfNeeded: n) }
            guard n > 0, let data else { return nil }
            out.append(UnsafeRawBufferPointer(start: data, count: n))
        }
        return nil
    }

    /// True once the session has nothing left to read or write.
    static func wantsClose(_ session: OpaquePointer?) -> Bool {
        guard let session else { return true }
        return nghttp2_session_want_read(session) == 0 && nghttp2_session_want_write(session) == 0
    }
}
