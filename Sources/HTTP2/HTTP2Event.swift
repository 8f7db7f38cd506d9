import OutriderCore

/// What a session reports after `receive` (and, rarely, after sending: see `takeEvents`).
public enum HTTP2Event {
    /// A request's header section. `head.target` is `:path` (`:authority` for CONNECT),
    /// `Host` carries `:authority`, cookies are joined into one field (RFC 9113 §8.2.3) and
    /// `head.headers` carries no pseudo-header. `scheme` is `:scheme` (nil for CONNECT).
    /// nghttp2 has validated it (pseudo-headers, connection-specific fields, TE, content-length).
    case requestHead(streamID: Int32, RequestHead, scheme: String?, endStream: Bool)
    /// Request body bytes. Every byte must be handed back with `consumed(streamID:bytes:)` once
    /// the upstream accepted it (or it was dropped), or the client's window stays closed.
    /// An event with no bytes and `endStream` true ends the body.
    case requestData(streamID: Int32, [UInt8], endStream: Bool)
    /// Request trailers; the request is complete after them.
    case requestTrailers(streamID: Int32, HTTPHeaders)
    /// The stream ended abnormally: the client sent RST_STREAM, or the request broke a rule of
    /// RFC 9113 (the session already sent RST_STREAM). Nothing more comes for it and anything sent
    /// on it is dropped. Not reported for streams the proxy reset itself.
    case streamReset(streamID: Int32, errorCode: UInt32)
    /// The client sent GOAWAY: finish streams up to `lastStreamID`, open no new ones.
    case goaway(lastStreamID: Int32, errorCode: UInt32)
    /// The connection is broken (bad preface, a connection error, a flood): a GOAWAY is queued.
    /// Write the pending output (`takeOutput`) and close. No further events follow.
    case connectionError(String)
}

/// Tells HTTP/2 with prior knowledge from HTTP/1.1 on one plaintext port, by the client
/// connection preface "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" (RFC 9113 §3.4).
public enum HTTP2Preface {
    public enum Classification: Sendable, Equatable {
        /// The bytes start with the whole preface.
        case http2
        /// The bytes cannot be the preface.
        case http1
        /// Fewer bytes than the preface, all matching it so far: read more.
        case needMore
    }
    public static let bytes: [UInt8] = Array("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".utf8)
    /// 24.
    public static var length: Int { bytes.count }

    public static func classify(_ input: UnsafeRawBufferPointer) -> Classification {
        let n = min(input.count, bytes.count)
        for i in 0..<n where input[i] != bytes[i] { return .http1 }
        return n == bytes.count ? .http2 : .needMore
    }
    public static func classify(_ input: [UInt8]) -> Classification {
        input.withUnsafeBytes { classify($0) }
    }
}
